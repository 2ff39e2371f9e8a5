//! HTTP throughput with keep-alive: `get_step_instance_status` of a 100 000-host step at
//! `max_host_num_per_group` 1 and 100, served by the `stepview serve` binary, each against a
//! baseline measured in the same run: the same bytes as a static body, served by the same HTTP
//! stack (axum on a multi-threaded tokio runtime) with no work behind it. The ratio is how much
//! of the machine's HTTP capacity for that many bytes an answer leaves.
//!
//! Driven by wrk (one thread, 32 connections; BENCH_SECONDS=10 each). `benches/http.sh`
//! installs wrk when it is missing and runs this; or `cargo bench --bench http`.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

const CONNECTIONS: &str = "32";

/// What wrk reports for one URL.
struct Rate {
    per_second: f64,
    p50: String,
    p99: String,
}

fn wrk(url: &str, seconds: u64) -> Rate {
    let out = Command::new("wrk")
        .args(["-t1", "-c", CONNECTIONS, "--latency"])
        .arg(format!("-d{seconds}s"))
        .arg(url)
        .output()
        .expect("wrk not found: benches/http.sh installs it (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    assert!(
        !text.contains("Non-2xx"),
        "errors while benchmarking {url}: {text}"
    );
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {label} in wrk's report: {text}"))
    };
    Rate {
        per_second: field("Requests/sec:").parse().unwrap(),
        p50: field("50%"),
        p99: field("99%"),
    }
}

fn stepview(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stepview"));
    c.args(args).env("STEPVIEW_LOG", "warn");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let work = tempfile::tempdir().unwrap();
    let (events, data) = (work.path().join("events.jsonl"), work.path().join("data"));
    let (events, data) = (events.to_str().unwrap(), data.to_str().unwrap());
    eprintln!("generating and loading one step of 100 000 hosts …");
    let ok = stepview(&["simulate", "--jobs", "1", "--steps-per-job", "1"])
        .args(["--hosts", "100000", "--out", events])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
        && stepview(&["load", "--data-dir", data, events])
            .status()
            .unwrap()
            .success();
    assert!(ok, "generating or loading the step failed");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _service = Service(
        stepview(&["serve", "--auth", "false", "--data-dir", data])
            .args(["--listen", &listen])
            .spawn()
            .unwrap(),
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    let started = Instant::now();
    while rt
        .block_on(client.get(format!("{base}/healthz")).send())
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "stepview did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let api = format!(
        "{base}/api/v3/get_step_instance_status?bk_scope_type=biz&bk_scope_id=2\
         &job_instance_id=1&step_instance_id=101&execute_count=0"
    );
    let answer = |cap: u32| -> Vec<u8> {
        let url = format!("{api}&max_host_num_per_group={cap}");
        let body = rt.block_on(async { client.get(&url).send().await?.bytes().await });
        body.unwrap().to_vec()
    };
    let bodies = [(1, answer(1)), (100, answer(100))];
    let statics = static_server(&rt, &bodies);

    println!(
        "HTTP benchmark: one step of 100 000 hosts, wrk -t1 -c{CONNECTIONS}, {seconds} s each, \
         keep-alive"
    );
    for (cap, body) in &bodies {
        let query = wrk(&format!("{api}&max_host_num_per_group={cap}"), seconds);
        let baseline = wrk(&format!("{statics}/static/{cap}"), seconds);
        println!(
            "cap {cap:>3} ({:>7} bytes): stepview {:>8.0} req/s (p50 {}, p99 {}); static body \
             {:>8.0} req/s (p50 {}, p99 {}); ratio {:.2}",
            body.len(),
            query.per_second,
            query.p50,
            query.p99,
            baseline.per_second,
            baseline.p50,
            baseline.p99,
            query.per_second / baseline.per_second
        );
    }
    println!(
        "targets (architecture.md): ≥ 20 000 req/s at cap 1; at cap 100 ≥ 0.5 × the static body"
    );
}

/// Serves each body at `/static/<cap>` as stepview serves answers (axum, JSON content type, a
/// multi-threaded runtime); its base URL.
fn static_server(rt: &tokio::runtime::Runtime, bodies: &[(u32, Vec<u8>)]) -> String {
    use axum::http::header::CONTENT_TYPE;
    let mut router = axum::Router::new();
    for (cap, body) in bodies {
        let body = axum::body::Bytes::from(body.clone());
        router = router.route(
            &format!("/static/{cap}"),
            axum::routing::get(move || {
                let body = body.clone();
                async move { ([(CONTENT_TYPE, "application/json; charset=utf-8")], body) }
            }),
        );
    }
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}
