//! Memory a client can make the service spend: held long-polls keep their position, not their
//! answer; large answers are rendered and written in a turn, and a reader too slow to take its
//! body by the deadline loses it (and its turn). Each case runs a `stepview serve` process of its
//! own and bounds its resident memory, measured from /proc (the bounds are stated in the
//! README, "Limits").

mod common;

use common::*;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use stepview::events::Event;
use stepview::simulate::{self, Workload};

/// A `stepview serve` of a loaded data directory, with no broker; killed when dropped.
struct Server {
    child: Child,
    base: String,
    port: u16,
}

impl Server {
    fn start(events: &[Event], dir: &Path, flags: &[&str]) -> Server {
        let file = dir.join("events.jsonl");
        let mut text = Vec::new();
        for e in events {
            text.extend_from_slice(&e.to_json());
            text.push(b'\n');
        }
        std::fs::write(&file, text).unwrap();
        let data = dir.join("data");
        let loaded = Command::new(env!("CARGO_BIN_EXE_stepview"))
            .args([
                "load",
                "--data-dir",
                data.to_str().unwrap(),
                file.to_str().unwrap(),
            ])
            .env("STEPVIEW_LOG", "error")
            .output()
            .unwrap();
        assert!(
            loaded.status.success(),
            "{}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        std::fs::remove_file(&file).unwrap();
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_stepview"))
            .args([
                "serve",
                "--auth",
                "false",
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(flags)
            .env("STEPVIEW_LOG", "warn")
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
        }
    }

    /// Resident memory now, MiB.
    fn rss_mib(&self) -> f64 {
        status_mib(&self.child.id().to_string(), "VmRSS")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This process may hold as many connections as the case opens.
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// Most resident memory 1 000 held uncapped polls of a 100 000-host step may add (measured: see
/// the README); each would add its ~24 MB answer if it kept it.
const HELD_POLLS_MIB: f64 = 16.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_held_uncapped_polls_keep_no_answers() {
    raise_open_files();
    let dir = tempfile::tempdir().unwrap();
    let events = simulate::generate(&Workload {
        jobs: 1,
        steps_per_job: 1,
        hosts: 100_000,
        first_job_id: 1,
        ..Workload::default()
    });
    let (job, step) = steps_of(&events)[0];
    let server = Server::start(&events, dir.path(), &[]);
    let url = format!(
        "{}/api/v3/get_step_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id={job}&step_instance_id={step}&execute_count=0",
        server.base
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let first = http.get(&url).send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let answer = first.bytes().await.unwrap();
    assert!(
        answer.len() > 10 << 20,
        "an uncapped answer of 100 000 hosts: {}",
        String::from_utf8_lossy(&answer[..answer.len().min(300)])
    );
    let before = server.rss_mib();

    let held: Vec<_> = (0..1000)
        .map(|_| {
            let (http, url, etag) = (http.clone(), url.clone(), etag.clone());
            // Cut off when the server stops below.
            tokio::spawn(async move {
                http.get(&url)
                    .header("If-None-Match", etag)
                    .header("Prefer", "wait=30")
                    .send()
                    .await
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = http
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metric_value(&text, "stepview_http_watching") == Some(1000.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the polls were never all held");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let added = server.rss_mib() - before;
    eprintln!("1000 held uncapped polls: RSS {before:.0} MiB -> +{added:.1} MiB");
    assert!(added < HELD_POLLS_MIB, "held polls added {added:.1} MiB");
    drop(server);
    for poll in held {
        let _ = poll.await;
    }
}

/// Most resident memory ten slow readers of 60-MiB log answers may add, with two turns for
/// expensive queries (measured: see the README); without turns held while writing, each would
/// add its answer.
const SLOW_READERS_MIB: f64 = 400.0;

/// A script step of 500 hosts with 120 KiB of output each: 60 MiB asked at once.
fn big_logs() -> Vec<Event> {
    let mut events = vec![step(101, 1, 2, 0, 1)];
    let hosts: Vec<(i64, i32, String)> = (1..=500)
        .map(|h| (h, 0, format!("10.0.{}.{}", h / 256, h % 256)))
        .collect();
    let refs: Vec<(i64, i32, &str)> = hosts
        .iter()
        .map(|(h, b, ip)| (*h, *b, ip.as_str()))
        .collect();
    events.push(targets(101, 0, &refs));
    let chunk = "x".repeat(60 << 10);
    for h in 1..=500 {
        events.push(log(101, 0, 0, h, 0, &chunk));
        events.push(log(101, 0, 0, h, chunk.len() as i64, &chunk));
    }
    events
}

#[test]
fn ten_slow_readers_of_60_mib_log_answers_hold_two_turns_at_most() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &big_logs(),
        dir.path(),
        &["--max-expensive-queries", "2", "--query-timeout-ms", "4000"],
    );
    let body = serde_json::json!({
        "bk_scope_type": "biz", "bk_scope_id": "2", "job_instance_id": JOB,
        "step_instance_id": 101, "host_id_list": (1..=500).collect::<Vec<i64>>(),
    })
    .to_string();
    let request = format!(
        "POST /api/v3/batch_get_job_instance_ip_log HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let before = server.rss_mib();
    // Ten readers that take a few KiB a second.
    let readers: Vec<_> = (0..10)
        .map(|_| {
            let (port, request) = (server.port, request.clone());
            std::thread::spawn(move || {
                let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                socket.write_all(request.as_bytes()).unwrap();
                let mut taken = 0;
                let mut buf = [0u8; 4096];
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(12) {
                    match socket.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => taken += n,
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                taken
            })
        })
        .collect();
    let mut most = before;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(13) {
        most = most.max(server.rss_mib());
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in readers {
        r.join().unwrap();
    }
    let added = most - before;
    eprintln!("10 slow readers of 60-MiB answers: RSS {before:.0} MiB -> peak +{added:.1} MiB");
    assert!(
        added < SLOW_READERS_MIB,
        "slow readers added {added:.1} MiB"
    );
    // The service is still there, and answers.
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
