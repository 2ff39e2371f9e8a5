//! The `stepview` command line, as a user runs it: simulate to a file, load it, digest it; the
//! helper commands; and settings that cannot work are refused with a message.

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
    views.sink.applier.apply(&events, &[]).unwrap();
    assert_eq!(digest.trim(), views.store.digest().unwrap());
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
    assert!(String::from_utf8_lossy(&zero.stderr).contains("batch_max"));
}
