fn main() -> std::process::ExitCode {
    stepview::cli::main()
}
