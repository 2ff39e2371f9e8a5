//! The `stepview` command line, as a user runs it: simulate to a file, load it, digest it; the
//! helper commands; JSON logs; and settings that cannot work are refused with a message.

mod common;

use common::*;
use std::process::{Command, Output};
use stepview::service::Views;
use stepview::simulate::{self, Workload};

fn stepview(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stepview"))
        .args(args)
        .env("STEPVIEW_LOG", "error")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn simulate_load_and_digest_agree_with_applying_the_same_workload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let data = dir.path().join("data");
    let (file_arg, data_arg) = (file.to_str().unwrap(), data.to_str().unwrap());
    let flags = [
        "--jobs",
        "1",
        "--steps-per-job",
        "2",
        "--hosts",
        "50",
        "--start-ms",
        "1",
    ];
    let mut simulate_args = vec!["simulate", "--out", file_arg];
    simulate_args.extend(flags);
    let wrote = stdout(&stepview(&simulate_args));
    let events = simulate::generate(&Workload {
        jobs: 1,
        steps_per_job: 2,
        hosts: 50,
        start_ms: Some(1),
        ..Workload::default()
    });
    assert!(
        wrote.contains(&format!("wrote {} events", events.len())),
        "{wrote}"
    );

    let loaded = stdout(&stepview(&["load", "--data-dir", data_arg, file_arg]));
    assert!(
        loaded.contains(&format!("{} events applied, 0 bad", events.len())),
        "{loaded}"
    );
    let digest = stdout(&stepview(&["digest", data_arg]));

    let direct = tempfile::tempdir().unwrap();
    let views = Views::open(&test_config(direct.path())).unwrap();
    views
        .sink
        .applier
        .apply(&stepview::apply::Batch::local(&events))
        .unwrap();
    assert_eq!(digest.trim(), views.store.digest().unwrap());
}

#[test]
fn json_logs_carry_the_request_id_and_never_a_secret() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cret-that-must-not-leak";
    let digest = stdout(&stepview(&["hash-secret", secret]));
    let config = dir.path().join("stepview.toml");
    let app = format!(
        "[[apps]]\ncode = \"app\"\nsecret_sha256 = \"{}\"\nscopes = [\"*\"]\n",
        digest.trim()
    );
    std::fs::write(&config, app).unwrap();
    let port = free_port();
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_stepview"))
        .args(["--log-json", "serve", "--config", config.to_str().unwrap()])
        .args(["--data-dir", data.to_str().unwrap(), "--listen", &listen])
        .env("STEPVIEW_LOG", "info,stepview::http=debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stream = (0..100)
        .find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::net::TcpStream::connect(&listen).ok()
        })
        .expect("stepview listens");
    let auth = format!(r#"{{"bk_app_code":"app","bk_app_secret":"{secret}"}}"#);
    write!(
        stream,
        "GET /api/v3/get_step_instance_status?{} HTTP/1.1\r\nHost: x\r\nX-Request-Id: req-json-1\r\nX-Bkapi-Authorization: {auth}\r\nConnection: close\r\n\r\n",
        q(1, "")
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.contains("req-json-1"), "{response}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let logs = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["request_id"] == "req-json-1"),
        "{logs}"
    );
    assert!(!logs.contains(secret), "{logs}");
}

#[test]
fn helper_commands_and_refused_settings() {
    use sha2::Digest;
    let hashed = stdout(&stepview(&["hash-secret", "demo-secret"]));
    assert_eq!(
        hashed.trim(),
        hex::encode(sha2::Sha256::digest(b"demo-secret"))
    );

    let missing = stepview(&["digest", "/no/such/dir"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not a data directory"));

    let zero = stepview(&["serve", "--batch-max", "0"]);
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("batch-max"));
}

#[test]
fn when_ingest_stops_for_good_the_service_exits_non_zero_saying_why() {
    // A librdkafka property that does not exist: the Kafka clients cannot be made, so ingest
    // cannot run; serving on as if all were well would report views that never change.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stepview.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbrokers = {:?}\n\
             [kafka.client]\n\"no.such.property\" = \"1\"\n",
            dir.path().join("data"),
            brokers()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stepview"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("STEPVIEW_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ingest stopped for good"), "{stderr}");
    assert!(stderr.contains("no.such.property"), "{stderr}");
}

#[test]
fn docker_compose_ships_no_working_secret() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    assert!(
        !compose.contains("stepview.example.toml"),
        "mounts the example config"
    );
    assert!(
        compose.contains("${STEPVIEW_APP_SECRET:?"),
        "the secret must come from the environment"
    );
    // The example config's app opens nothing: no secret hashes to all zeros.
    let example =
        stepview::config::Config::from_file(&root.join("ops/stepview.example.toml")).unwrap();
    assert!(example.apps.iter().all(|a| a
        .secret_sha256
        .as_deref()
        .unwrap_or("0")
        .bytes()
        .all(|b| b == b'0')));
}
