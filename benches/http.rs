//! HTTP throughput with keep-alive: `get_step_instance_status` of a 100 000-host step at
//! `max_host_num_per_group` 1 and 100, served by the `stepview serve` binary (from its answer
//! cache, as repeated polls of an unchanged step are, and with the cache off, as polls that each
//! follow a change are), each against a baseline measured in the same run: the same bytes as a
//! static body, served by the same HTTP stack (axum on a multi-threaded tokio runtime) with no
//! work behind it. The ratio is how much of the machine's HTTP capacity for that many bytes an
//! answer leaves.
//!
//! Then the full uncapped answer (24 MB), polled over one keep-alive connection by Python's
//! `requests` (the client kind bk-job's users script with), each poll timed until its last byte
//! is read: uncompressed against the same bytes as a static body, and gzip as `requests` asks
//! by default (bytes on the wire, and the time to read and decompress them).
//!
//! Then the same repeated polls as a caller behind BlueKing's API gateway makes them (the
//! gateway's JWT in `X-Bkapi-JWT`, RS512) against the same polls with an app's secret, same run
//! (gateway.md: within 10%).
//!
//! Driven by wrk (one thread, 32 connections; BENCH_SECONDS=10 each). `benches/http.sh`
//! installs wrk when it is missing and runs this; or `cargo bench --bench http`.

mod common;

use common::free_port;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const CONNECTIONS: &str = "32";

/// What wrk reports for one URL.
struct Rate {
    per_second: f64,
    p50: String,
    p99: String,
}

fn wrk(url: &str, seconds: u64, header: Option<&str>) -> Rate {
    let out = Command::new("wrk")
        .args(["-t1", "-c", CONNECTIONS, "--latency"])
        .arg(format!("-d{seconds}s"))
        .args(header.map(|h| ["-H", h]).into_iter().flatten())
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
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let caps = [1u32, 100];
    // Answers served from the answer cache (a repeated poll of an unchanged step), then with the
    // cache off: every answer queried and rendered, as when each poll follows a change.
    let mut measured = Vec::new();
    let mut bodies = Vec::new();
    for extra in [&[][..], &["--answer-cache-mb", "0"][..]] {
        let (_service, api) = serve(&rt, &client, data, extra);
        let url = |cap: u32| format!("{api}&max_host_num_per_group={cap}");
        if bodies.is_empty() {
            for cap in caps {
                let body = rt.block_on(async { client.get(url(cap)).send().await?.bytes().await });
                bodies.push((cap, body.unwrap().to_vec()));
            }
        }
        measured.push(caps.map(|cap| wrk(&url(cap), seconds, None)));
    }
    let uncapped = uncapped_polls(&rt, &client, data);
    let statics = static_server(&rt, &bodies);
    let baselines = caps.map(|cap| wrk(&format!("{statics}/static/{cap}"), seconds, None));
    let credentials = behind_the_gateway(&rt, &client, data, work.path(), seconds);

    println!(
        "HTTP benchmark: one step of 100 000 hosts, wrk -t1 -c{CONNECTIONS}, {seconds} s each, \
         keep-alive"
    );
    for (i, (cap, body)) in bodies.iter().enumerate() {
        let (cached, uncached, baseline) = (&measured[0][i], &measured[1][i], &baselines[i]);
        println!("cap {cap:>3} ({:>7} bytes):", body.len());
        for (what, rate) in [
            ("repeated poll (answer cache)", cached),
            ("every poll after a change   ", uncached),
            ("static body, same bytes     ", baseline),
        ] {
            println!(
                "  {what} {:>8.0} req/s (p50 {}, p99 {}); ratio to static {:.2}",
                rate.per_second,
                rate.p50,
                rate.p99,
                rate.per_second / baseline.per_second
            );
        }
    }
    uncapped.print();
    println!("repeated polls with credentials (answer cache), mode both:");
    for (cap, [secret, jwt]) in caps.iter().zip(&credentials) {
        for (what, rate) in [("app secret", secret), ("gateway JWT", jwt)] {
            println!(
                "  cap {cap:>3} {what:<12} {:>8.0} req/s (p50 {}, p99 {})",
                rate.per_second, rate.p50, rate.p99
            );
        }
        println!(
            "  cap {cap:>3} JWT / secret: {:.2}",
            jwt.per_second / secret.per_second
        );
    }
    println!(
        "targets (architecture.md): ≥ 20 000 req/s at cap 1; at cap 100 ≥ 0.8 × the static body; \
         the uncapped answer ≤ 20 ms; the JWT within 10% of the secret (gateway.md)"
    );
}

/// Polls of the uncapped answer, each measured by Python's `requests` (and the repeated ones
/// and the static body by a Rust client too, reqwest: what the server side costs): ms per poll.
struct Uncapped {
    bytes: usize,
    first: f64,
    cached: Vec<f64>,
    statics: Vec<f64>,
    gzip_bytes: usize,
    gzip: Vec<f64>,
    uncached: Vec<f64>,
    rust_cached: Vec<f64>,
    rust_statics: Vec<f64>,
}

/// Times `polls` GETs of `url` by reqwest over one keep-alive connection, each body read whole.
fn rust_polls(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    url: &str,
    polls: usize,
) -> Vec<f64> {
    (0..polls)
        .map(|_| {
            let started = Instant::now();
            let body = rt
                .block_on(async { client.get(url).send().await?.bytes().await })
                .unwrap();
            assert!(body.starts_with(b"{"));
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

const UNCAPPED_POLLS: usize = 30;

/// Times `polls` GETs of `url` over one keep-alive session of Python's `requests`, reading each
/// body whole (decompressed when it is coded); `headers` as a Python dict literal. The ms per
/// poll and the bytes on the wire of the last.
fn python_polls(url: &str, polls: usize, headers: &str) -> (Vec<f64>, usize) {
    let script = format!(
        "import json, time, requests\n\
         s = requests.Session()\n\
         times, wire = [], 0\n\
         for _ in range({polls}):\n\
         \x20   t = time.perf_counter()\n\
         \x20   r = s.get({url:?}, headers={headers})\n\
         \x20   body = r.content\n\
         \x20   times.append((time.perf_counter() - t) * 1000)\n\
         \x20   assert r.status_code == 200 and body.startswith(b'{{'), r.status_code\n\
         \x20   wire = int(r.headers.get('Content-Length', len(body)))\n\
         print(json.dumps([times, wire]))\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 with requests (apt-get install python3-requests): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("timings")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The uncapped answer of the 100 000-host step: its first poll (read and rendered, then kept:
/// the step has finished), repeated polls, a static body of the same bytes, the same polls with
/// gzip, and with the answer cache off (every poll rendered whole, as after a change).
fn uncapped_polls(rt: &tokio::runtime::Runtime, client: &reqwest::Client, data: &str) -> Uncapped {
    let identity = "{'Accept-Encoding': 'identity'}";
    let (_service, api) = serve(rt, client, data, &[]);
    let (first, bytes) = python_polls(&api, 1, identity);
    let (cached, _) = python_polls(&api, UNCAPPED_POLLS, identity);
    let (gzip, gzip_bytes) = python_polls(&api, UNCAPPED_POLLS, "{}");
    let body = rt
        .block_on(async { client.get(&api).send().await?.bytes().await })
        .unwrap();
    let rust_cached = rust_polls(rt, client, &api, UNCAPPED_POLLS);
    let statics = format!("{}/static/0", static_server(rt, &[(0, body.to_vec())]));
    let rust_statics = rust_polls(rt, client, &statics, UNCAPPED_POLLS);
    let (statics, _) = python_polls(&statics, UNCAPPED_POLLS, identity);
    drop(_service);
    let (_service, api) = serve(rt, client, data, &["--answer-cache-mb", "0"]);
    let (uncached, _) = python_polls(&api, UNCAPPED_POLLS / 3, identity);
    Uncapped {
        bytes,
        first: first[0],
        cached,
        statics,
        gzip_bytes,
        gzip,
        uncached,
        rust_cached,
        rust_statics,
    }
}

impl Uncapped {
    fn print(&self) {
        let statics = median(self.statics.clone());
        println!(
            "uncapped ({} bytes), Python requests, one keep-alive session, {UNCAPPED_POLLS} polls, \
             medians:",
            self.bytes
        );
        println!(
            "  first poll (read, rendered, kept)   {:>7.1} ms",
            self.first
        );
        for (what, polls) in [
            ("repeated poll (answer cache)      ", &self.cached),
            ("every poll after a change (no cache)", &self.uncached),
            ("static body, same bytes           ", &self.statics),
        ] {
            let m = median(polls.clone());
            println!(
                "  {what} {m:>7.1} ms; {:.2}× the static body's time",
                m / statics
            );
        }
        println!(
            "  gzip (requests' default), answer cache {:>7.1} ms, {} bytes on the wire ({:.1}× smaller)",
            median(self.gzip.clone()),
            self.gzip_bytes,
            self.bytes as f64 / self.gzip_bytes as f64
        );
        let (cached, statics) = (
            median(self.rust_cached.clone()),
            median(self.rust_statics.clone()),
        );
        println!(
            "  the same by reqwest (Rust): repeated poll {cached:.1} ms, static body {statics:.1} ms \
             ({:.2}×)",
            cached / statics
        );
    }
}

/// Repeated polls at each cap with an app's secret, then with a gateway's JWT, against one
/// `stepview serve` in `both` mode (keys made with openssl, a token signed RS512).
fn behind_the_gateway(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    data: &str,
    work: &std::path::Path,
    seconds: u64,
) -> [[Rate; 2]; 2] {
    let (private, public) = (work.join("gateway.key"), work.join("gateway.pub"));
    let openssl = |args: &[&str]| {
        assert!(Command::new("openssl")
            .args(args)
            .status()
            .unwrap()
            .success());
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-pubout",
        "-in",
        private.to_str().unwrap(),
        "-out",
        public.to_str().unwrap(),
    ]);
    let secret_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"bench-secret"))
    };
    let config = work.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nauth = \"both\"\n[[apps]]\ncode = \"bench\"\nsecret_sha256 = \"{secret_hash}\"\n\
             scopes = [\"*\"]\n[[gateways]]\nname = \"bk-job\"\npublic_key_files = [{:?}]\n",
            public.display().to_string()
        ),
    )
    .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS512);
    header.kid = Some("bk-job".into());
    let exp = stepview::now_ms() / 1000 + 3600;
    let claims = serde_json::json!({
        "app": {"bk_app_code": "bench", "verified": true},
        "user": {"bk_username": "admin", "verified": true},
        "iss": "APIGW", "exp": exp,
    });
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&private).unwrap()).unwrap();
    let jwt = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let (_service, api) = serve(rt, client, data, &["--config", config.to_str().unwrap()]);
    let secret = r#"X-Bkapi-Authorization: {"bk_app_code":"bench","bk_app_secret":"bench-secret"}"#;
    let jwt = format!("X-Bkapi-JWT: {jwt}");
    [1u32, 100].map(|cap| {
        let url = format!("{api}&max_host_num_per_group={cap}");
        [
            wrk(&url, seconds, Some(secret)),
            wrk(&url, seconds, Some(&jwt)),
        ]
    })
}

/// Starts `stepview serve` on `data` with `extra` flags; the service and its status URL.
fn serve(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    data: &str,
    extra: &[&str],
) -> (Service, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let auth: &[&str] = if extra.contains(&"--config") {
        &[]
    } else {
        &["--auth", "false"]
    };
    let service = Service(
        stepview(&["serve", "--data-dir", data])
            .args(auth)
            .args(["--listen", &listen])
            .args(extra)
            .spawn()
            .unwrap(),
    );
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
    (service, api)
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
