//! The sibling APIs (siblings.md) against what the spec says, field for field: a job's status
//! with its steps in order, hosts' output by id and by cloud + ip, and the error rules.

mod common;

use common::*;
use serde_json::{json, Value};
use stepview::events::{Event, JobEvent, ScopeType};

const JOB_ID: i64 = 500;

fn job_event(id: i64, scope_id: &str, status: i32, version: i64) -> Event {
    Event::Job(JobEvent {
        job_instance_id: id,
        bk_scope_type: ScopeType::Biz,
        bk_scope_id: scope_id.into(),
        name: format!("job {id}"),
        status,
        create_time: 1_700_000_000_000,
        start_time: Some(1_700_000_001_000),
        end_time: (status == 3).then_some(1_700_000_009_000),
        total_time: None,
        version,
    })
}

/// A step of `JOB_ID` with its place in the job.
fn job_step(id: i64, step_type: i32, order: Option<i32>) -> Event {
    let Event::Step(mut s) = step(id, step_type, 2, 0, 1) else {
        unreachable!()
    };
    s.job_instance_id = JOB_ID;
    s.step_order = order;
    Event::Step(s)
}

fn targets_of(step: i64, hosts: &[(i64, i32, &str)]) -> Event {
    let Event::StepTargets(mut t) = targets(step, 0, hosts) else {
        unreachable!()
    };
    t.job_instance_id = JOB_ID;
    Event::StepTargets(t)
}

fn result_of(step: i64, batch: i32, host: i64, status: i32, error_code: i32) -> Event {
    let mut r = result(step, 0, batch, host, status, "", 1);
    r.job_instance_id = JOB_ID;
    r.error_code = error_code;
    Event::HostResult(r)
}

/// Job 500: a script step (order 2) of hosts 1 and 2 (host 2 in batches 1 and 2), a file step
/// (order 1), an SQL step without an order; output with an overlap and a gap.
async fn scene(svc: &TestService) {
    svc.apply(&[
        job_event(JOB_ID, "2", 2, 1),
        job_step(5001, 1, Some(2)),
        job_step(5002, 2, Some(1)),
        job_step(5003, 4, None),
        targets_of(
            5001,
            &[(1, 1, "10.0.0.1"), (2, 1, "10.0.0.2"), (2, 2, "10.0.0.2")],
        ),
        targets_of(5002, &[(1, 0, "10.0.0.1")]),
        result_of(5001, 1, 1, 9, 0),
        result_of(5001, 1, 2, 104, 7),
        log(5001, 0, 1, 1, 0, "hello "),
        log(5001, 0, 1, 1, 3, "lo world\n"),
        log(5001, 0, 1, 1, 100, "tail"),
        log(5001, 0, 1, 2, 0, "batch one\n"),
        log(5001, 0, 2, 2, 0, "batch two\n"),
    ]);
}

async fn call(svc: &TestService, api: &str, query: &str) -> Value {
    let (_, body) = svc.get_with_route(api, query).await;
    body
}

fn base(extra: &str) -> String {
    format!("bk_scope_type=biz&bk_scope_id=2&job_instance_id={JOB_ID}{extra}")
}

#[tokio::test]
async fn job_status_lists_steps_by_order_with_their_hosts() {
    let (_dir, svc) = service().await;
    scene(&svc).await;
    let body = call(&svc, "get_job_instance_status", &base("")).await;
    assert_eq!(body["code"], 0, "{body}");
    let data = &body["data"];
    assert_eq!(data["finished"], false);
    assert_eq!(
        data["job_instance"],
        json!({"job_instance_id": JOB_ID, "bk_scope_type": "biz", "bk_scope_id": "2",
               "name": "job 500", "status": 2, "create_time": 1_700_000_000_000i64,
               "start_time": 1_700_000_001_000i64, "end_time": null,
               "total_time": data["job_instance"]["total_time"]})
    );
    let ids: Vec<i64> = data["step_instance_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step_instance_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [5002, 5001, 5003], "by step_order, then those without");
    let first = &data["step_instance_list"][0];
    assert_eq!(first["type"], 2);
    assert_eq!(first["execute_count"], 0);
    assert!(first.get("step_ip_result_list").is_none());

    let body = call(
        &svc,
        "get_job_instance_status",
        &base("&return_ip_result=true"),
    )
    .await;
    let hosts = &body["data"]["step_instance_list"][1]["step_ip_result_list"];
    let listed: Vec<(i64, i64, i64)> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["bk_host_id"].as_i64().unwrap(),
                h["status"].as_i64().unwrap(),
                h["error_code"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [(1, 9, 0), (2, 104, 7), (2, 5, 0)],
        "by host, then batch"
    );
    assert_eq!(
        hosts[0],
        json!({"bk_host_id": 1, "ip": "10.0.0.1", "bk_cloud_id": 0, "status": 9, "tag": "",
               "exit_code": 0, "error_code": 0, "start_time": 1_700_000_002_000i64,
               "end_time": 1_700_000_003_000i64, "total_time": 1000})
    );

    // Finished: the job's status says so (12, terminate failed, counts for jobs).
    svc.apply(&[job_event(JOB_ID, "2", 12, 2)]);
    let body = call(&svc, "get_job_instance_status", &base("")).await;
    assert_eq!(body["data"]["finished"], true);
}

#[tokio::test]
async fn a_missing_job_and_one_in_another_scope_answer_alike() {
    let (_dir, svc) = service().await;
    scene(&svc).await;
    svc.apply(&[job_event(600, "3", 2, 1)]);
    let missing = call(
        &svc,
        "get_job_instance_status",
        "bk_scope_type=biz&bk_scope_id=2&job_instance_id=999",
    )
    .await;
    let other = call(
        &svc,
        "get_job_instance_status",
        "bk_scope_type=biz&bk_scope_id=2&job_instance_id=600",
    )
    .await;
    assert_eq!(missing["code"], 1244006);
    assert_eq!(other["code"], 1244006);
    assert_eq!(missing["message"], other["message"]);
    assert_eq!(missing["message"], "作业实例不存在");
    let bad = call(
        &svc,
        "get_job_instance_status",
        &base("&return_ip_result=maybe"),
    )
    .await;
    assert_eq!(bad["code"], 1240003);
    assert!(bad["message"]
        .as_str()
        .unwrap()
        .contains("return_ip_result"));
}

#[tokio::test]
async fn ip_log_by_host_id_and_by_cloud_and_ip() {
    let (_dir, svc) = service().await;
    scene(&svc).await;
    let of_5001 = "&step_instance_id=5001";
    let by_id = call(
        &svc,
        "get_job_instance_ip_log",
        &base(&format!("{of_5001}&bk_host_id=1")),
    )
    .await;
    assert_eq!(
        by_id["data"],
        json!({"log_type": 1, "bk_host_id": 1, "ip": "10.0.0.1", "bk_cloud_id": 0,
               "log_content": "hello world\ntail"}),
        "chunks in offset order, the overlap once, the gap left out"
    );
    let by_ip = call(
        &svc,
        "get_job_instance_ip_log",
        &base(&format!("{of_5001}&bk_cloud_id=0&ip=10.0.0.1")),
    )
    .await;
    assert_eq!(by_ip["data"], by_id["data"]);
    // The host's lowest batch by default; another by `batch`.
    let host2 = call(
        &svc,
        "get_job_instance_ip_log",
        &base(&format!("{of_5001}&bk_host_id=2")),
    )
    .await;
    assert_eq!(host2["data"]["log_content"], "batch one\n");
    let batch2 = call(
        &svc,
        "get_job_instance_ip_log",
        &base(&format!("{of_5001}&bk_host_id=2&batch=2")),
    )
    .await;
    assert_eq!(batch2["data"]["log_content"], "batch two\n");
    // Not a target: success, no output (as bk-job).
    let unknown = call(
        &svc,
        "get_job_instance_ip_log",
        &base(&format!("{of_5001}&bk_host_id=77")),
    )
    .await;
    assert_eq!(unknown["code"], 0);
    assert_eq!(unknown["data"]["log_content"], "");
    assert_eq!(unknown["data"]["bk_host_id"], 77);
    // A file step: no file-transfer logs in the events.
    let file = call(
        &svc,
        "get_job_instance_ip_log",
        &base("&step_instance_id=5002&bk_host_id=1"),
    )
    .await;
    assert_eq!(file["data"]["log_type"], 2);
    assert_eq!(file["data"]["file_logs"], json!([]));
    // Errors: no host named; a step of another job; an unknown job.
    let no_host = call(&svc, "get_job_instance_ip_log", &base(of_5001)).await;
    assert_eq!(no_host["code"], 1240003);
    assert!(no_host["message"]
        .as_str()
        .unwrap()
        .contains("bk_host_id or ip"));
    svc.apply(&[job_event(501, "2", 2, 1), step(6001, 1, 2, 0, 1)]);
    let wrong_job = call(
        &svc,
        "get_job_instance_ip_log",
        &base("&step_instance_id=6001&bk_host_id=1"),
    )
    .await;
    assert_eq!(wrong_job["code"], 1244007);
    let no_job = call(
        &svc,
        "get_job_instance_ip_log",
        "bk_scope_type=biz&bk_scope_id=2&job_instance_id=9999&step_instance_id=5001&bk_host_id=1",
    )
    .await;
    assert_eq!(no_job["code"], 1244006);
    let other_scope = call(
        &svc,
        "get_job_instance_ip_log",
        &format!("bk_scope_type=biz&bk_scope_id=3&job_instance_id={JOB_ID}&step_instance_id=5001&bk_host_id=1"),
    )
    .await;
    assert_eq!(other_scope["code"], 1244006);
}

/// A result of a host of step 5001 in retry 1, batch 1.
fn retry_1_result(host: i64, status: i32, version: i64, log_execute_count: Option<i32>) -> Event {
    let mut r = result(5001, 1, 1, host, status, "", version);
    r.job_instance_id = JOB_ID;
    r.log_execute_count = log_execute_count;
    Event::HostResult(r)
}

/// Step 5001 retried ("retry failed", execute_count 1): host 1, which had succeeded, copied with
/// `log_execute_count` 0; host 2 run again, with output of its own.
fn retried_with_a_copied_host() -> Vec<Event> {
    let Event::Step(mut retried) = job_step(5001, 1, Some(2)) else {
        unreachable!()
    };
    retried.execute_count = 1;
    retried.version = 2;
    vec![
        Event::Step(retried),
        retry_1_result(1, 9, 1, Some(0)),
        retry_1_result(2, 9, 1, None),
        log(5001, 1, 1, 2, 0, "second try\n"),
        // Host 1's chunks of retry 1: not what its row shows while it names retry 0.
        log(5001, 1, 1, 1, 0, "own retry\n"),
    ]
}

/// `get_job_instance_ip_log`'s output of a host of step 5001.
async fn ip_log_content(svc: &TestService, extra: &str) -> String {
    let query = base(&format!("&step_instance_id=5001&{extra}"));
    let body = call(svc, "get_job_instance_ip_log", &query).await;
    body["data"]["log_content"].as_str().unwrap().to_owned()
}

/// `batch_get_job_instance_ip_log`'s output of hosts 1 and 2 of step 5001.
async fn batch_log_contents(svc: &TestService) -> Vec<(i64, String)> {
    let body = format!(
        r#"{{"bk_scope_type":"biz","bk_scope_id":"2","job_instance_id":{JOB_ID},"step_instance_id":5001,"host_id_list":[1,2]}}"#
    );
    let (_, answer) = batch(svc, &body).await;
    answer["data"]["script_task_logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let content = l["log_content"].as_str().unwrap().to_owned();
            (l["bk_host_id"].as_i64().unwrap(), content)
        })
        .collect()
}

#[tokio::test]
async fn a_host_a_retry_copied_shows_the_output_of_the_retry_it_names() {
    let (_dir, svc) = service().await;
    scene(&svc).await;
    svc.apply(&retried_with_a_copied_host());
    let retry_0 = "hello world\ntail";
    for asked in ["", "&execute_count=1&batch=1", "&execute_count=0"] {
        let content = ip_log_content(&svc, &format!("bk_host_id=1{asked}")).await;
        assert_eq!(content, retry_0, "{asked}");
    }
    // Without the field a row shows its own retry's output.
    assert_eq!(ip_log_content(&svc, "bk_host_id=2").await, "second try\n");
    assert_eq!(
        batch_log_contents(&svc).await,
        [(1, retry_0.to_owned()), (2, "second try\n".to_owned())]
    );

    // A newer result without the field (the host ran in this retry after all): its own output.
    svc.apply(&[retry_1_result(1, 104, 2, None)]);
    assert_eq!(ip_log_content(&svc, "bk_host_id=1").await, "own retry\n");
    assert_eq!(
        batch_log_contents(&svc).await[0],
        (1, "own retry\n".to_owned())
    );
}

async fn batch(svc: &TestService, body: &str) -> (u16, Value) {
    let resp = svc
        .client
        .post(format!("{}/api/v3/batch_get_job_instance_ip_log", svc.base))
        .header("X-Bkapi-Authorization", auth_header(APP, SECRET))
        .header("Blueking-Language", "en")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn batch_logs_in_the_order_asked_with_limits() {
    let (_dir, svc) = service().await;
    scene(&svc).await;
    let head = format!(
        r#""bk_scope_type":"biz","bk_scope_id":"2","job_instance_id":{JOB_ID},"step_instance_id":5001"#
    );
    let (status, body) = batch(&svc, &format!(r#"{{{head},"host_id_list":[2,77,1]}}"#)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"],
        json!({"log_type": 1, "job_instance_id": JOB_ID, "step_instance_id": 5001,
               "script_task_logs": [
                   {"bk_host_id": 2, "ip": "10.0.0.2", "bk_cloud_id": 0,
                    "log_content": "batch one\nbatch two\n"},
                   {"bk_host_id": 1, "ip": "10.0.0.1", "bk_cloud_id": 0,
                    "log_content": "hello world\ntail"}]}),
        "in the order asked, a non-target left out, batches joined"
    );
    let (_, by_ip) = batch(
        &svc,
        &format!(r#"{{{head},"ip_list":[{{"bk_cloud_id":0,"ip":"10.0.0.1"}}]}}"#),
    )
    .await;
    assert_eq!(by_ip["data"]["script_task_logs"][0]["bk_host_id"], 1);
    let file_head = head.replace("5001", "5002");
    let (_, file) = batch(&svc, &format!(r#"{{{file_head},"host_id_list":[1]}}"#)).await;
    assert_eq!(file["data"]["file_task_logs"], json!([]));

    let too_many: Vec<String> = (1..=501).map(|i| i.to_string()).collect();
    let (_, body) = batch(
        &svc,
        &format!(r#"{{{head},"host_id_list":[{}]}}"#, too_many.join(",")),
    )
    .await;
    assert_eq!(body["code"], 1240003);
    assert_eq!(
        body["message"],
        "Bad Request: host_id_list takes at most 500 entries"
    );
    let (status, body) = batch(&svc, "{not json").await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(1240003)));
    assert!(body["message"].as_str().unwrap().contains("JSON"));
    let (_, body) = batch(&svc, &format!("{{{head}}}")).await;
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("host_id_list or ip_list"));
    // GET on the batch route, and no credentials.
    let get = svc
        .client
        .get(format!("{}/api/v3/batch_get_job_instance_ip_log", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let anonymous = svc
        .client
        .post(format!("{}/api/v3/batch_get_job_instance_ip_log", svc.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn batch_logs_over_64_mib_are_refused_with_what_to_change() {
    let (_dir, svc) = service().await;
    scene(&svc).await;
    let mib = "x".repeat(1 << 20);
    let chunks: Vec<Event> = (0..65)
        .map(|i| log(5001, 0, 1, 1, 200 + i * (1 << 20), &mib))
        .collect();
    for c in chunks.chunks(8) {
        svc.apply(c);
    }
    let head = format!(
        r#""bk_scope_type":"biz","bk_scope_id":"2","job_instance_id":{JOB_ID},"step_instance_id":5001"#
    );
    let (_, body) = batch(&svc, &format!(r#"{{{head},"host_id_list":[1]}}"#)).await;
    assert_eq!(body["code"], 1240003);
    assert!(
        body["message"].as_str().unwrap().contains("64 MiB"),
        "{body}"
    );
}

async fn service() -> (tempfile::TempDir, TestService) {
    let dir = tempfile::tempdir().unwrap();
    let svc = TestService::start(test_config(dir.path())).await;
    (dir, svc)
}
