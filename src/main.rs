/// mimalloc, not glibc's malloc: apply allocates and frees small objects per event, and glibc's
/// malloc with its page faults took a fifth of decode + apply (benches/apply.rs: 440k → 520k
/// events/s). The in-process benchmarks declare the same.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    stepview::cli::main()
}
