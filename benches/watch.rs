//! Held long-polls at scale (api.md, "Watching a step"; architecture.md's target: ≥ 10 000 held
//! at once over 100 steps, a change delivered to its waiters p99 ≤ 50 ms after it is applied).
//!
//! The service runs in this process (so that a change's apply time is known exactly); the
//! waiters are a child process of plain HTTP/1.1 connections (each process then stays within
//! its open-files limit), 100 per step. A change is one step's: the steps change one after
//! another (BENCH_ROUNDS passes), and each of its waiters' answers is timed from the moment apply
//! was called; the waiters ask again at once with the new ETag. Then a burst: one batch changes
//! every step, and all 10 000 waiters are answered at once. Prints the server's memory per held
//! request (RSS growth while they are held) and change → delivered p50 / p99 for both.
//!
//! `cargo bench --bench watch` (BENCH_WAITERS=10000, BENCH_ROUNDS=2).

/// The service binary's allocator (src/main.rs), so that figures are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use common::status_mib;
use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stepview::apply::Batch;
use stepview::config::Config;
use stepview::events::{Event, HostResult, ScopeType, StepEvent, StepTargets, TargetHost};
use stepview::http::AppConfig;
use stepview::service::{self, Views};

const STEPS: i64 = 100;
const AUTH: &str =
    r#"{"bk_app_code":"bench","bk_app_secret":"bench-secret","bk_username":"bench"}"#;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn path(step: i64) -> String {
    format!("/api/v3/get_step_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id=1&step_instance_id={step}&max_host_num_per_group=1")
}

/// The waiters: `n` connections over the steps, each holding a request until it had `answers`
/// answers; prints `held` once all are sent, then the step and wall time (µs) of every answer.
async fn waiters(addr: String, n: usize, answers: usize) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let step = 1 + (i as i64 % STEPS);
                let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
                let mut stream = tokio::io::BufStream::new(stream);
                let mut etag = String::new();
                let mut received = Vec::new();
                let ask = |etag: &str| {
                    let conditional = if etag.is_empty() {
                        String::new()
                    } else {
                        format!("If-None-Match: {etag}\r\nPrefer: wait=60\r\n")
                    };
                    format!(
                        "GET {} HTTP/1.1\r\nHost: bench\r\nX-Bkapi-Authorization: {AUTH}\r\n{conditional}\r\n",
                        path(step)
                    )
                };
                // The first ask gets the current ETag; every later one is held.
                for round in 0..=answers {
                    stream.write_all(ask(&etag).as_bytes()).await.unwrap();
                    stream.flush().await.unwrap();
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        stream.read_line(&mut line).await.unwrap();
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        } else if lower.starts_with("etag:") {
                            etag = line[5..].trim().to_owned();
                        }
                    }
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).await.unwrap();
                    if round > 0 {
                        received.push((step, wall_us()));
                    }
                }
                received
            })
        })
        .collect();
    // All asked once (ETags known) and held: tell the service side.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("held");
    let mut out = std::io::stdout().lock();
    for t in tasks {
        for (step, at) in t.await.unwrap() {
            writeln!(out, "{step} {at}").unwrap();
        }
    }
}

fn workload() -> Vec<Event> {
    let mut events = Vec::new();
    for step in 1..=STEPS {
        events.push(Event::Step(StepEvent {
            job_instance_id: 1,
            step_instance_id: step,
            bk_scope_type: ScopeType::Biz,
            bk_scope_id: "2".into(),
            name: format!("step {step}"),
            step_type: 1,
            status: 2,
            execute_count: 0,
            create_time: 1,
            start_time: Some(2),
            end_time: None,
            total_time: None,
            step_order: None,
            version: 1,
        }));
        events.push(Event::StepTargets(StepTargets {
            job_instance_id: 1,
            step_instance_id: step,
            execute_count: 0,
            chunk: 0,
            chunk_count: 1,
            hosts: (1..=50)
                .map(|h| TargetHost {
                    bk_host_id: h,
                    batch: 0,
                    ip: Some(format!("10.0.0.{h}")),
                    ipv6: None,
                    bk_agent_id: None,
                    bk_cloud_id: Some(0),
                    bk_cloud_name: None,
                })
                .collect(),
        }));
    }
    events
}

/// A change to each of `steps`: host `round` finished.
fn changes(steps: std::ops::RangeInclusive<i64>, round: i64) -> Vec<Event> {
    steps
        .map(|step| {
            Event::HostResult(HostResult {
                job_instance_id: 1,
                step_instance_id: step,
                execute_count: 0,
                batch: 0,
                bk_host_id: 1 + round % 50,
                ip: None,
                ipv6: None,
                bk_agent_id: None,
                bk_cloud_id: None,
                bk_cloud_name: None,
                status: 9,
                tag: Some(format!("round{round}")),
                exit_code: Some(0),
                error_code: 0,
                start_time: Some(2),
                end_time: Some(3),
                total_time: Some(1),
                version: 10 + round,
                log_execute_count: None,
            })
        })
        .collect()
}

fn main() {
    let n = env_or("BENCH_WAITERS", 10_000) as usize;
    let rounds = env_or("BENCH_ROUNDS", 2) as usize;
    service::raise_open_files_limit();
    if let Ok(addr) = std::env::var("BENCH_WAITERS_OF") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(waiters(addr, n, rounds + 1));
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    config.apps = vec![AppConfig {
        code: "bench".into(),
        secret_sha256: Some({
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(b"bench-secret"))
        }),
        scopes: vec!["*".into()],
    }];
    let views = Views::open(&config).unwrap();
    views
        .sink
        .applier
        .apply(&Batch::local(&workload()))
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let (views, config) = (views.clone(), config.clone());
        rt.spawn(async move {
            service::run(views, &config, listener, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let held = || {
        let text = views.sink.telemetry.render(&views.reader().figures(), true);
        text.lines()
            .find_map(|l| l.strip_prefix("stepview_http_watching "))
            .map_or(0, |v| v.trim().parse::<f64>().unwrap() as usize)
    };
    let wait_held = |want: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while held() < want {
            assert!(Instant::now() < deadline, "only {} of {want} held", held());
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    std::thread::sleep(Duration::from_millis(200));
    let before = status_mib("self", "VmRSS");
    eprintln!("starting {n} waiters over {STEPS} steps …");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("BENCH_WAITERS_OF", &addr)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "held");
    wait_held(n);
    let during = status_mib("self", "VmRSS");

    // (step, when apply was called): waiters are woken inside apply, once the change is visible.
    let mut applied_at: Vec<(i64, u64)> = Vec::new();
    let mut apply = |steps: std::ops::RangeInclusive<i64>, round: i64| {
        for step in steps.clone() {
            applied_at.push((step, wall_us()));
        }
        views
            .sink
            .applier
            .apply(&Batch::local(&changes(steps, round)))
            .unwrap();
    };
    for round in 0..rounds as i64 {
        for step in 1..=STEPS {
            wait_held(n);
            apply(step..=step, round);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    wait_held(n);
    let burst_from = wall_us();
    apply(1..=STEPS, rounds as i64);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    child.wait().unwrap();
    let _ = stop.send(());
    rt.block_on(server).unwrap().unwrap();

    // Each answer belongs to the last change of its step applied before it.
    let (mut one, mut burst): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for line in rest.lines() {
        let (step, at) = line.trim().split_once(' ').unwrap();
        let (step, at): (i64, u64) = (step.parse().unwrap(), at.parse().unwrap());
        let applied = applied_at
            .iter()
            .rev()
            .find(|(s, a)| *s == step && *a <= at)
            .unwrap()
            .1;
        let ms = (at - applied) as f64 / 1e3;
        if applied >= burst_from {
            burst.push(ms);
        } else {
            one.push(ms);
        }
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[((v.len() - 1) as f64 * p) as usize]
    };
    println!(
        "watch benchmark: {n} held long-polls over {STEPS} steps ({} per step)",
        n / STEPS as usize
    );
    println!(
        "memory: {before:.0} MiB before, {during:.0} MiB with {n} held: {:.1} KiB per held request",
        (during - before) * 1024.0 / n as f64
    );
    println!(
        "one step changes (its {} waiters answered): p50 {:.1} ms, p99 {:.1} ms over {} answers (target p99 ≤ 50 ms)",
        n / STEPS as usize,
        pct(&mut one, 0.5),
        pct(&mut one, 0.99),
        one.len()
    );
    println!(
        "every step at once (all {n} answered): p50 {:.1} ms, p99 {:.1} ms",
        pct(&mut burst, 0.5),
        pct(&mut burst, 0.99)
    );
}
