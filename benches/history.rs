//! A long history: restart time and memory with tens of millions of stored host rows.
//!
//! For each size in BENCH_ROWS (default 10 000 000 and 100 000 000: steps of 100 000 hosts), a
//! data directory is filled through apply (each step's targets, then results for a tenth of its
//! hosts), then `stepview serve` is started on it and timed from spawn to `/readyz` 200 (target
//! ≤ 5 s, and flat in the size). With the largest, every step is queried (each is loaded into the
//! 256 MiB index and older ones leave) while the process's peak RSS is read (target ≤ 1 GiB with
//! ≥ 50 M rows stored); the baseline in the same run is its RSS right after start. At each
//! size a checkpoint is made through `POST /admin/checkpoint` of the running instance, against
//! `cp -a` of the same directory (what a backup without checkpoints costs), same run.
//!
//! `cargo bench --bench history` (BENCH_ROWS=1000000,10000000 for a quicker run; the directories
//! go under BENCH_DIR, default the system's temporary directory, and are removed afterwards).

/// The service binary's allocator (src/main.rs), so that figures are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use common::{free_port, status_mib};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use stepview::config::Config;
use stepview::events::{Event, HostResult, ScopeType, StepEvent, StepTargets, TargetHost};
use stepview::service::Views;

const HOSTS_PER_STEP: i64 = 100_000;
const ADMIN_TOKEN: &str = "the history benchmark's admin token";

fn step_events(step: i64) -> Vec<Event> {
    let mut events = vec![Event::Step(StepEvent {
        job_instance_id: step,
        step_instance_id: step,
        bk_scope_type: ScopeType::Biz,
        bk_scope_id: "2".into(),
        name: format!("step {step}"),
        step_type: 1,
        status: 3,
        execute_count: 0,
        create_time: 1,
        start_time: Some(2),
        end_time: Some(3),
        total_time: None,
        step_order: None,
        version: 1,
    })];
    for chunk in (1..=HOSTS_PER_STEP).collect::<Vec<_>>().chunks(10_000) {
        events.push(Event::StepTargets(StepTargets {
            job_instance_id: step,
            step_instance_id: step,
            execute_count: 0,
            chunk: 0,
            chunk_count: 10,
            hosts: chunk
                .iter()
                .map(|h| TargetHost {
                    bk_host_id: *h,
                    batch: 0,
                    ip: Some(format!("10.{}.{}.{}", h >> 16, (h >> 8) & 0xff, h & 0xff)),
                    ipv6: None,
                    bk_agent_id: Some(format!("0200000000{h:010}")),
                    bk_cloud_id: Some(0),
                    bk_cloud_name: Some("Default Area".into()),
                })
                .collect(),
        }));
    }
    for h in (1..=HOSTS_PER_STEP).step_by(10) {
        events.push(Event::HostResult(HostResult {
            job_instance_id: step,
            step_instance_id: step,
            execute_count: 0,
            batch: 0,
            bk_host_id: h,
            ip: None,
            ipv6: None,
            bk_agent_id: None,
            bk_cloud_id: None,
            bk_cloud_name: None,
            status: [9, 9, 9, 104, 1][(h / 10 % 5) as usize],
            tag: None,
            exit_code: Some(0),
            error_code: 0,
            start_time: Some(2),
            end_time: Some(3),
            total_time: Some(1),
            version: 1,
            log_execute_count: None,
        }));
    }
    events
}

fn fill(dir: &std::path::Path, rows: i64) -> usize {
    let config = Config {
        data_dir: dir.to_owned(),
        ..Config::default()
    };
    let views = Views::open(&config).unwrap();
    let steps = (rows / HOSTS_PER_STEP).max(1) as usize;
    let started = Instant::now();
    for step in 1..=steps as i64 {
        for batch in step_events(step).chunks(5000) {
            views
                .sink
                .applier
                .apply(&stepview::apply::Batch::local(batch))
                .unwrap();
        }
        if step % 50 == 0 || step as usize == steps {
            let done = step * HOSTS_PER_STEP;
            eprint!(
                "\r  {done} / {} rows stored ({:.0} rows/s)",
                steps as i64 * HOSTS_PER_STEP,
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!();
    views.sink.applier.flush().unwrap();
    steps
}

/// The service binary under test, copied at start: a build during the run (the target
/// directory is shared) cannot swap it mid-way.
fn binary() -> &'static std::path::Path {
    static COPY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let copy = std::env::temp_dir().join(format!("stepview-bench-{}", std::process::id()));
        std::fs::copy(env!("CARGO_BIN_EXE_stepview"), &copy).unwrap();
        copy
    })
}

fn serve(dir: &std::path::Path, checkpoints: &std::path::Path, port: u16) -> Child {
    use sha2::Digest;
    Command::new(binary())
        .args([
            "serve",
            "--auth",
            "false",
            "--data-dir",
            dir.to_str().unwrap(),
        ])
        .args(["--checkpoint-dir", checkpoints.to_str().unwrap()])
        .args([
            "--admin-token-sha256",
            &hex::encode(sha2::Sha256::digest(ADMIN_TOKEN)),
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("STEPVIEW_LOG", "warn")
        .spawn()
        .unwrap()
}

fn get(url: &str) -> Option<(u16, String)> {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.parse().ok()?, body.to_owned()))
}

/// A checkpoint of the instance on `port`, and how long the request took.
fn checkpoint(port: u16) -> (Duration, serde_json::Value) {
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sf", "-X", "POST", "-H"])
        .arg(format!("Authorization: Bearer {ADMIN_TOKEN}"))
        .arg(format!("http://127.0.0.1:{port}/admin/checkpoint"))
        .output()
        .unwrap();
    assert!(out.status.success(), "checkpoint refused");
    (
        started.elapsed(),
        serde_json::from_slice(&out.stdout).unwrap(),
    )
}

/// How long `cp -a` of `dir` takes (the copy is removed).
fn copy_time(dir: &std::path::Path) -> Duration {
    let copy = tempfile::tempdir_in(dir.parent().unwrap()).unwrap();
    let started = Instant::now();
    let status = Command::new("cp")
        .arg("-a")
        .arg(dir)
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    started.elapsed()
}

/// Bytes of the files under `dir`.
fn walk_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                walk_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

fn main() {
    let sizes: Vec<i64> = std::env::var("BENCH_ROWS")
        .unwrap_or_else(|_| "10000000,100000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("BENCH_ROWS: numbers of rows"))
        .collect();
    let base = std::env::var("BENCH_DIR").map_or_else(|_| std::env::temp_dir(), Into::into);
    binary();
    let mut restarts = Vec::new();
    let mut checkpoints = Vec::new();
    let mut largest = None;
    for rows in &sizes {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let checkpoint_dir = tempfile::tempdir_in(&base).unwrap();
        eprintln!("filling a data directory with {rows} host rows …");
        let steps = fill(dir.path(), *rows);
        let port = free_port();
        let started = Instant::now();
        let mut child = serve(dir.path(), checkpoint_dir.path(), port);
        let ready = loop {
            if get(&format!("http://127.0.0.1:{port}/readyz")).is_some_and(|(c, _)| c == 200) {
                break started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(120), "never ready");
            std::thread::sleep(Duration::from_millis(5));
        };
        restarts.push((*rows, ready));
        let (took, made) = checkpoint(port);
        checkpoints.push((*rows, took, made, copy_time(dir.path())));
        if Some(rows) == sizes.iter().max() {
            largest = Some((dir, steps, port, child));
        } else {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    let (dir, steps, port, mut child) = largest.unwrap();
    let (start_rss, _) = rss_and_peak_mib(child.id());
    eprintln!("querying all {steps} steps (each loaded into the index) …");
    let mut first_query = Vec::new();
    for step in 1..=steps as i64 {
        let url = format!(
            "http://127.0.0.1:{port}/api/v3/get_step_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id={step}&step_instance_id={step}&max_host_num_per_group=100"
        );
        let t = Instant::now();
        let (code, body) = get(&url).unwrap();
        first_query.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(code == 200 && body.contains("\"code\":0"), "{body}");
    }
    let metrics = get(&format!("http://127.0.0.1:{port}/metrics")).unwrap().1;
    let metric = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let (rss, peak) = rss_and_peak_mib(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    let disk: u64 = walk_bytes(dir.path());
    drop(dir);
    let _ = std::fs::remove_file(binary());

    println!(
        "history benchmark: steps of {HOSTS_PER_STEP} hosts, stepview serve on the stored views"
    );
    for (rows, ready) in &restarts {
        println!(
            "restart to ready with {rows:>11} stored host rows: {:>7.1} ms (target ≤ 5 s, flat)",
            ready.as_secs_f64() * 1e3
        );
    }
    for (rows, took, made, copy) in &checkpoints {
        println!(
            "checkpoint with {rows:>11} stored host rows: {:>7.1} ms over HTTP ({} files, {:.0} \
             MiB linked, none copied); cp -a of the directory {:>7.1} ms: {:.3}× of it",
            took.as_secs_f64() * 1e3,
            made["files"],
            made["bytes"].as_f64().unwrap() / 1048576.0,
            copy.as_secs_f64() * 1e3,
            took.as_secs_f64() / copy.as_secs_f64()
        );
    }
    first_query.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (largest_rows, _) = restarts.iter().max_by_key(|(r, _)| *r).unwrap();
    println!(
        "first query of each of {steps} steps over HTTP (load + cap 100): p50 {:.1} ms, p99 {:.1} ms",
        first_query[first_query.len() / 2],
        first_query[(first_query.len() - 1) * 99 / 100]
    );
    println!(
        "RSS with {largest_rows} rows stored, every step queried once: now {rss:.0} MiB, peak {peak:.0} MiB (target ≤ 1024); right after start: {start_rss:.0} MiB"
    );
    println!(
        "disk: {:.1} GiB for {largest_rows} host rows: {:.0} bytes per row",
        disk as f64 / (1u64 << 30) as f64,
        disk as f64 / *largest_rows as f64
    );
    println!(
        "index estimate {:.0} MiB of its {:.0} MiB budget, {} loads, {} evictions",
        metric("stepview_index_memory_bytes") / 1048576.0,
        metric("stepview_index_memory_budget_bytes") / 1048576.0,
        metric("stepview_index_loads_total"),
        metric("stepview_index_evictions_total")
    );
}

/// Resident and peak resident memory of a process, MiB.
fn rss_and_peak_mib(pid: u32) -> (f64, f64) {
    let pid = pid.to_string();
    (status_mib(&pid, "VmRSS"), status_mib(&pid, "VmHWM"))
}
