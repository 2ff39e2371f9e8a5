//! `stepview cdc` fed by real row changes (cdc.md, "Shown by"): bk-job's tables in MariaDB
//! written as bk-job writes them, the binlog read by a standard replication client and sent as
//! Debezium change events (snapshot rows first), script-output chunks as MongoDB-connector
//! events (tests/cdc/). The translator and a service run here; every step's answer must equal
//! bk-job's own query over the same tables (the oracle).

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The private MariaDB `ops/test.sh` starts (ops/mariadb.sh).
fn mariadb() -> String {
    std::env::var("STEPVIEW_TEST_MARIADB").expect(
        "STEPVIEW_TEST_MARIADB is unset: run ops/test.sh, or start ops/mariadb.sh and set it \
         to 127.0.0.1:13306",
    )
}

/// Runs one harness command; panics with its output when it fails.
fn harness(script: &str, args: &[&str]) -> String {
    let path = format!("{}/tests/cdc/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (status, tag, sorted host ids) of each group, sorted.
fn groups(list: &Value, status: &str, hosts: &str) -> Vec<(i64, String, Vec<i64>)> {
    let mut out: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut ids: Vec<i64> = g[hosts]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["bk_host_id"].as_i64().unwrap())
                .collect();
            ids.sort();
            (
                g[status].as_i64().unwrap(),
                g["tag"].as_str().unwrap_or("").to_owned(),
                ids,
            )
        })
        .collect();
    out.sort();
    out
}

struct StopOnDrop(stepview::shutdown::Shutdown);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_steps_answer_through_the_translator_equals_bk_jobs_own_query() {
    let mysql = mariadb();
    let brokers = brokers();
    let prefix = unique_name("bkjob");
    let work = tempfile::tempdir().unwrap();
    let logs = work.path().join("logs.jsonl");
    let position = work.path().join("position.json");
    let (logs, position) = (logs.to_str().unwrap(), position.to_str().unwrap());
    let common_args = ["--brokers", brokers, "--prefix", &prefix];
    harness("bkjob.py", &["setup", "--mysql", &mysql]);
    harness(
        "bkjob.py",
        &["write", "--mysql", &mysql, "--phase", "1", "--logs", logs],
    );
    let mut args = vec!["snapshot", "--mysql", &mysql, "--state", position];
    args.extend(common_args);
    harness("debezium.py", &args);
    harness(
        "bkjob.py",
        &["write", "--mysql", &mysql, "--phase", "2", "--logs", logs],
    );
    let mut args = vec!["binlog", "--mysql", &mysql, "--state", position];
    args.extend(common_args);
    harness("debezium.py", &args);
    let mut args = vec!["logs", "--logs", logs, "--state", position];
    args.extend(common_args);
    harness("debezium.py", &args);
    let oracle: Value = serde_json::from_str(&harness(
        "bkjob.py",
        &["oracle", "--mysql", &mysql, "--logs", logs],
    ))
    .unwrap();

    let events = new_topic("cdc-events", 4).await;
    let mut config = test_config(&work.path().join("views"));
    config.kafka = kafka_settings(&events);
    config.cdc.topic_prefix = prefix.clone();
    config.cdc.log_topics = format!(
        "^{}\\.joblog\\.job_log_script_[0-9_]+$",
        prefix.replace('.', "\\.")
    );
    config.cdc.state_dir = work.path().join("cdc");
    config.cdc.dead_letter_topic = format!("{events}.cdc.dlq");
    config.cdc.topic_refresh_ms = stepview::settings::Millis(500);
    let stop = stepview::shutdown::Shutdown::new();
    // A failed assertion stops the translator too, so that the test ends with its message.
    let _stop_on_panic = StopOnDrop(stop.clone());
    let translator = tokio::task::spawn_blocking({
        let (config, stop) = (config.clone(), stop.clone());
        move || {
            stepview::cdc::run::run(
                &config,
                Arc::new(stepview::telemetry::cdc::CdcTelemetry::new()),
                Arc::new(stepview::cdc::ops::Readiness::default()),
                stop,
            )
        }
    });
    let svc = TestService::start(config).await;

    let steps = oracle["steps"].as_array().unwrap();
    assert!(steps.len() >= 10, "the harness wrote too little: {oracle}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut different = Vec::new();
        for s in steps {
            let mut q = format!(
                "bk_scope_type={}&bk_scope_id={}&job_instance_id={}&step_instance_id={}&execute_count={}",
                s["bk_scope_type"].as_str().unwrap(),
                s["bk_scope_id"].as_str().unwrap(),
                s["job_instance_id"],
                s["step_instance_id"],
                s["execute_count"]
            );
            if !s["batch"].is_null() {
                q.push_str(&format!("&batch={}", s["batch"]));
            }
            let (status, body) = svc.get(&q).await;
            let got = (status == 200 && body["code"] == 0).then(|| {
                groups(
                    &body["data"]["step_result_group_list"],
                    "result_type",
                    "host_result_list",
                )
            });
            let want = groups(&s["groups"], "status", "hosts");
            if got.as_ref() != Some(&want) {
                different.push(format!(
                    "{q}: got {got:?} ({status} {}), bk-job says {want:?}",
                    body["message"]
                ));
            }
        }
        if different.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "answers differ from bk-job's own query:\n{}",
            different.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.trigger();
    translator.await.unwrap().unwrap();
    svc.stop().await;
}
