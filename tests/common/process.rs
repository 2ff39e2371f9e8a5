//! A process's memory as /proc reports it. The tests (`tests/common`) and the benchmarks
//! (`benches/common`, which includes this file) share it.

/// A field of `/proc/<pid>/status` given in kB (`VmRSS`, `VmHWM` …), in MiB; `pid` may be
/// `self`.
pub fn status_mib(pid: &str, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib / 1024.0
}
