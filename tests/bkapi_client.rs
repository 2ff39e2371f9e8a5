//! stepview called as a BlueKing SaaS calls bk-job: with BlueKing's own Python toolkit for API
//! clients (`bkapi-client-core` from PyPI, installed by ops/test.sh), for
//! `get_step_instance_status` and `batch_get_job_instance_ip_log`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_built_with_bkapi_client_core_reads_steps_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let svc = TestService::start(test_config(dir.path())).await;
    svc.apply(&[
        step(101, 1, 3, 0, 1),
        targets(101, 0, &[(1, 0, "10.0.0.1"), (2, 0, "10.0.0.2")]),
        stepview::events::Event::HostResult(result(101, 0, 0, 1, 9, "", 1)),
        log(101, 0, 0, 1, 0, "hello from host 1\n"),
    ]);
    let step_query = json!({"bk_scope_type": "biz", "bk_scope_id": "2", "job_instance_id": JOB,
                            "step_instance_id": 101});
    let batch = json!({"bk_scope_type": "biz", "bk_scope_id": "2", "job_instance_id": JOB,
                       "step_instance_id": 101, "host_id_list": [1, 2]});
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/bkapi_client.py");
    let base = svc.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args([
                &base,
                APP,
                SECRET,
                &step_query.to_string(),
                &batch.to_string(),
            ])
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "bkapi-client-core (ops/test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let status = &answers[0];
    assert_eq!(status["code"], 0, "{status}");
    assert_eq!(status["data"]["step_instance_id"], 101);
    let groups = groups(&status["data"]);
    assert_eq!(
        groups,
        [
            (5, String::new(), 1, vec![2]),
            (9, String::new(), 1, vec![1])
        ]
    );
    let logs = &answers[1];
    assert_eq!(logs["code"], 0, "{logs}");
    assert_eq!(
        logs["data"]["script_task_logs"][0]["log_content"],
        "hello from host 1\n"
    );
    assert_eq!(logs["data"]["script_task_logs"][1]["log_content"], "");
}
