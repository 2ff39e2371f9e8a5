//! The query API over HTTP: every rule and every error row of api.md.

mod common;

use common::*;
use serde_json::{json, Value};
use stepview::events::Event;

async fn service() -> (tempfile::TempDir, TestService) {
    let dir = tempfile::tempdir().unwrap();
    let svc = TestService::start(test_config(dir.path())).await;
    (dir, svc)
}

fn hr(e: stepview::events::HostResult) -> Event {
    Event::HostResult(e)
}

#[tokio::test]
async fn the_api_docs_example_comes_back_field_for_field() {
    let (_dir, svc) = service().await;
    let mut events = vec![
        step(200, 1, 3, 0, 1),
        targets(
            200,
            0,
            &[
                (101, 0, "127.0.0.1"),
                (102, 0, "127.0.0.2"),
                (103, 0, "127.0.0.3"),
                (104, 0, "127.0.0.4"),
            ],
        ),
    ];
    for (host, tag) in [(101, "tag1"), (103, "tag1"), (102, "tag2"), (104, "tag2")] {
        events.push(hr(result(200, 0, 0, host, 9, tag, 1)));
    }
    svc.apply(&events);
    let (status, body) = svc.get(&q(200, "max_host_num_per_group=1")).await;
    assert_eq!(status, 200);
    let host = |id: i64, ip: &str, tag: &str| {
        json!({"bk_host_id": id, "ip": ip, "ipv6": null, "bk_agent_id": format!("agent-{id}"),
               "bk_cloud_id": 0, "bk_cloud_name": "Default Area", "status": 9,
               "status_desc": "执行成功", "tag": tag, "exit_code": 0,
               "start_time": 1_700_000_002_000i64, "end_time": 1_700_000_003_000i64, "total_time": 1000})
    };
    let expected = json!({
        "result": true, "code": 0, "message": "", "job_request_id": body["job_request_id"],
        "data": {
            "step_instance_id": 200, "execute_count": 0, "name": "step 200", "type": 1, "status": 3,
            "create_time": 1_700_000_000_000i64, "start_time": 1_700_000_001_000i64,
            "end_time": 1_700_000_011_000i64, "total_time": 10_000,
            "step_result_group_list": [
                {"result_type": 9, "result_type_desc": "执行成功", "tag": "tag1", "host_size": 2,
                 "host_result_list": [host(101, "127.0.0.1", "tag1")]},
                {"result_type": 9, "result_type_desc": "执行成功", "tag": "tag2", "host_size": 2,
                 "host_result_list": [host(102, "127.0.0.2", "tag2")]}
            ]
        }
    });
    assert_eq!(body, expected);
    let id = body["job_request_id"].as_str().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
}

/// A step of hosts 1..=6 in two batches, spread over groups of several statuses and tags.
async fn mixed_step(svc: &TestService) {
    let hosts: Vec<(i64, i32, &str)> = vec![
        (1, 1, "10.0.0.1"),
        (2, 1, "10.0.0.2"),
        (3, 1, "10.0.1.3"),
        (4, 2, "10.0.1.4"),
        (5, 2, "192.168.0.5"),
        (6, 2, "10.0.0.6"),
        (1, 2, "10.0.0.1"),
    ];
    let mut events = vec![step(300, 1, 2, 0, 1), targets(300, 0, &hosts)];
    for (host, batch, status, tag) in [
        (6, 2, 9, "b"),
        (1, 2, 9, "b"),
        (1, 1, 9, "b"),
        (2, 1, 9, "a"),
        (3, 1, 104, ""),
        (4, 2, 9, "B"),
    ] {
        events.push(hr(result(300, 0, batch, host, status, tag, 1)));
    }
    svc.apply(&events);
}

#[tokio::test]
async fn groups_by_status_then_tag_bytes_and_hosts_by_id_then_batch() {
    let (_dir, svc) = service().await;
    mixed_step(&svc).await;
    let data = svc.data(&q(300, "")).await;
    assert_eq!(
        groups(&data),
        vec![
            (5, "".into(), 1, vec![5]),
            (9, "B".into(), 1, vec![4]),
            (9, "a".into(), 1, vec![2]),
            (9, "b".into(), 3, vec![1, 1, 6]),
            (104, "".into(), 1, vec![3]),
        ]
    );
    let b = &data["step_result_group_list"][3]["host_result_list"];
    assert_eq!(b[0]["bk_host_id"], 1);
    assert_eq!(b[1]["bk_host_id"], 1);
    assert_eq!(
        data["step_result_group_list"][0]["result_type_desc"],
        "等待执行"
    );
    assert_eq!(
        data["step_result_group_list"][4]["result_type_desc"],
        "脚本返回码非零"
    );
}

#[tokio::test]
async fn host_size_is_counted_before_the_cap_and_cap_zero_lists_nothing() {
    let (_dir, svc) = service().await;
    mixed_step(&svc).await;
    let data = svc.data(&q(300, "max_host_num_per_group=2")).await;
    assert_eq!(groups(&data)[3], (9, "b".into(), 3, vec![1, 1]));
    let data = svc.data(&q(300, "max_host_num_per_group=0")).await;
    for (_, _, size, hosts) in groups(&data) {
        assert!(size > 0);
        assert!(hosts.is_empty());
    }
}

#[tokio::test]
async fn status_and_tag_select_groups_without_removing_any() {
    let (_dir, svc) = service().await;
    mixed_step(&svc).await;
    let sizes = |d: &Value| groups(d).iter().map(|g| g.2).collect::<Vec<_>>();
    let all = svc.data(&q(300, "")).await;
    let by_status = svc.data(&q(300, "status=9")).await;
    assert_eq!(sizes(&by_status), sizes(&all));
    let listed: Vec<_> = groups(&by_status).into_iter().map(|g| g.3.len()).collect();
    assert_eq!(listed, vec![0, 1, 1, 3, 0]);
    let by_tag = svc.data(&q(300, "tag=b")).await;
    let listed: Vec<_> = groups(&by_tag).into_iter().map(|g| g.3.len()).collect();
    assert_eq!(listed, vec![0, 0, 0, 3, 0]);
    // Both must match: status 104 with tag b matches no group, and every group stays.
    let none = svc.data(&q(300, "status=104&tag=b")).await;
    assert_eq!(sizes(&none), sizes(&all));
    assert!(groups(&none).iter().all(|g| g.3.is_empty()));
    let both = svc
        .data(&q(300, "status=9&tag=a&max_host_num_per_group=5"))
        .await;
    let listed: Vec<_> = groups(&both).into_iter().map(|g| g.3).collect();
    assert_eq!(listed, vec![vec![], vec![], vec![2], vec![], vec![]]);
}

#[tokio::test]
async fn batch_selects_rows_and_only_its_groups_are_listed() {
    let (_dir, svc) = service().await;
    mixed_step(&svc).await;
    // As bk-job's SQL: the groups of batch 1's rows only (5 "" and 9 "B" have hosts in batch 2
    // only, so they are not listed).
    let data = svc.data(&q(300, "batch=1")).await;
    assert_eq!(
        groups(&data),
        vec![
            (9, "a".into(), 1, vec![2]),
            (9, "b".into(), 1, vec![1]),
            (104, "".into(), 1, vec![3]),
        ]
    );
    // With a cap and without, from the index and from a scan, the same answer.
    let capped = svc.data(&q(300, "batch=2&max_host_num_per_group=10")).await;
    let scanned = svc.data(&q(300, "batch=2&search_ip=.")).await;
    assert_eq!(groups(&capped), groups(&scanned));
    assert_eq!(
        groups(&capped),
        vec![
            (5, "".into(), 1, vec![5]),
            (9, "B".into(), 1, vec![4]),
            (9, "b".into(), 2, vec![1, 6]),
        ]
    );
    // A search that empties a group of the batch keeps it, with host_size 0; groups of other
    // batches still do not appear.
    let searched = svc.data(&q(300, "batch=2&search_ip=192.168.")).await;
    assert_eq!(
        groups(&searched),
        vec![
            (5, "".into(), 1, vec![5]),
            (9, "B".into(), 0, vec![]),
            (9, "b".into(), 0, vec![]),
        ]
    );
    // A batch with no rows: no groups.
    let empty = svc.data(&q(300, "batch=7")).await;
    assert_eq!(groups(&empty), vec![]);
}

#[tokio::test]
async fn execute_count_defaults_to_the_latest_retry_and_is_echoed() {
    let (_dir, svc) = service().await;
    svc.apply(&[
        step(400, 1, 2, 0, 1),
        targets(400, 0, &[(1, 0, "10.0.0.1"), (2, 0, "10.0.0.2")]),
        hr(result(400, 0, 0, 1, 9, "", 1)),
        hr(result(400, 0, 0, 2, 104, "", 1)),
    ]);
    let data = svc.data(&q(400, "")).await;
    assert_eq!(data["execute_count"], 0);
    // Retry 1 of the failed host; host 1 "successful last time".
    svc.apply(&[
        step(400, 1, 2, 1, 2),
        targets(400, 1, &[(1, 0, "10.0.0.1"), (2, 0, "10.0.0.2")]),
        hr(result(400, 1, 0, 1, 3, "", 1)),
        hr(result(400, 1, 0, 2, 7, "", 1)),
    ]);
    let data = svc.data(&q(400, "")).await;
    assert_eq!(data["execute_count"], 1);
    assert_eq!(
        groups(&data),
        vec![(3, "".into(), 1, vec![1]), (7, "".into(), 1, vec![2])]
    );
    let old = svc.data(&q(400, "execute_count=0")).await;
    assert_eq!(old["execute_count"], 0);
    assert_eq!(
        groups(&old),
        vec![(9, "".into(), 1, vec![1]), (104, "".into(), 1, vec![2])]
    );
    let none = svc.data(&q(400, "execute_count=5")).await;
    assert_eq!(none["execute_count"], 5);
    assert_eq!(none["step_result_group_list"], json!([]));
}

#[tokio::test]
async fn search_ip_matches_ipv4_substrings_and_ipv6_case_insensitively() {
    let (_dir, svc) = service().await;
    let mut with_v6 = result(500, 0, 0, 3, 9, "", 1);
    with_v6.ipv6 = Some("FD00::ABCD".into());
    svc.apply(&[
        step(500, 1, 2, 0, 1),
        targets(
            500,
            0,
            &[
                (1, 0, "10.0.0.1"),
                (2, 0, "10.0.1.20"),
                (3, 0, "172.16.0.3"),
            ],
        ),
        hr(with_v6),
    ]);
    let ids = |d: &Value| groups(d).into_iter().flat_map(|g| g.3).collect::<Vec<_>>();
    assert_eq!(ids(&svc.data(&q(500, "search_ip=10.0.")).await), vec![1, 2]);
    assert_eq!(ids(&svc.data(&q(500, "search_ip=.20")).await), vec![2]);
    assert_eq!(
        ids(&svc.data(&q(500, "search_ip=fd00::abc")).await),
        vec![3]
    );
    let miss = svc.data(&q(500, "search_ip=192.168")).await;
    // Groups stay, with nothing in them.
    assert_eq!(
        groups(&miss),
        vec![(5, "".into(), 0, vec![]), (9, "".into(), 0, vec![])]
    );
}

#[tokio::test]
async fn keyword_searches_output_case_insensitively_across_chunks() {
    let (_dir, svc) = service().await;
    svc.apply(&[
        step(600, 1, 2, 0, 1),
        targets(
            600,
            0,
            &[(1, 0, "10.0.0.1"), (2, 0, "10.0.0.2"), (3, 1, "10.0.0.3")],
        ),
        log(600, 0, 0, 1, 0, "starting\nDeploy "),
        log(600, 0, 0, 1, 16, "FAILED: disk full\n"),
        log(600, 0, 0, 2, 0, "deploy ok\n"),
        // A retransmitted, overlapping chunk and a duplicate offset change nothing.
        log(600, 0, 0, 2, 0, "something else entirely"),
        log(600, 0, 1, 3, 0, "deploy fai"),
        log(600, 0, 1, 3, 100, "led later"),
    ]);
    let ids = |d: &Value| groups(d).into_iter().flat_map(|g| g.3).collect::<Vec<_>>();
    assert_eq!(
        ids(&svc.data(&q(600, "keyword=deploy%20failed")).await),
        vec![1]
    );
    assert_eq!(
        ids(&svc.data(&q(600, "keyword=DEPLOY")).await),
        vec![1, 2, 3]
    );
    assert_eq!(
        ids(&svc.data(&q(600, "keyword=else")).await),
        Vec::<i64>::new()
    );
    assert_eq!(
        ids(&svc.data(&q(600, "keyword=deploy&batch=1")).await),
        vec![3]
    );
    // Output of another retry does not count.
    assert_eq!(
        ids(&svc.data(&q(600, "keyword=deploy&execute_count=1")).await),
        Vec::<i64>::new()
    );
    let data = svc
        .data(&q(600, "keyword=disk&max_host_num_per_group=0"))
        .await;
    assert_eq!(groups(&data), vec![(5, "".into(), 1, vec![])]);
}

#[tokio::test]
async fn keyword_searches_the_output_of_the_retry_a_row_names() {
    let (_dir, svc) = service().await;
    // Retry 1 of a "retry failed": host 2 had succeeded and was copied, naming retry 0's output;
    // host 1 ran again.
    let mut copied = result(610, 1, 0, 2, 9, "", 1);
    copied.log_execute_count = Some(0);
    svc.apply(&[
        step(610, 1, 2, 1, 2),
        hr(result(610, 0, 0, 1, 104, "", 1)),
        hr(result(610, 0, 0, 2, 9, "", 1)),
        hr(result(610, 1, 0, 1, 9, "", 1)),
        hr(copied),
        log(610, 0, 0, 1, 0, "deploy failed\n"),
        log(610, 0, 0, 2, 0, "deploy ok\n"),
        log(610, 1, 0, 1, 0, "deploy ok again\n"),
        // Host 2's chunks of retry 1: not what its row shows while it names retry 0.
        log(610, 1, 0, 2, 0, "stray\n"),
    ]);
    let ids = |d: &Value| groups(d).into_iter().flat_map(|g| g.3).collect::<Vec<_>>();
    let found = |extra: &'static str| {
        let svc = &svc;
        async move { ids(&svc.data(&q(610, extra)).await) }
    };
    assert_eq!(found("keyword=deploy%20ok").await, vec![1, 2]);
    assert_eq!(
        found("keyword=deploy%20ok&execute_count=1").await,
        vec![1, 2]
    );
    assert_eq!(found("keyword=again").await, vec![1]);
    assert_eq!(found("keyword=stray").await, Vec::<i64>::new());
    // Retry 0's own rows: its groups in status order (9, then 104).
    assert_eq!(found("keyword=deploy&execute_count=0").await, vec![2, 1]);
    assert_eq!(found("keyword=ok&batch=1").await, Vec::<i64>::new());

    // A newer result without the field: the row shows its own retry's output again.
    svc.apply(&[hr(result(610, 1, 0, 2, 9, "", 2))]);
    assert_eq!(found("keyword=stray").await, vec![2]);
    assert_eq!(found("keyword=deploy%20ok").await, vec![1]);
}

#[tokio::test]
async fn keyword_on_a_file_step_is_a_parameter_error() {
    let (_dir, svc) = service().await;
    svc.apply(&[step(601, 2, 2, 0, 1), step(602, 4, 2, 0, 1)]);
    let (status, body) = svc.get(&q(601, "keyword=x")).await;
    assert_eq!(status, 200);
    assert_eq!(body["code"], 1241005);
    assert_eq!(body["result"], false);
    assert_eq!(body["data"], Value::Null);
    assert!(
        body["message"].as_str().unwrap().contains("keyword"),
        "{body}"
    );
    // SQL steps are script steps.
    assert_eq!(svc.get(&q(602, "keyword=x")).await.1["code"], 0);
}

#[tokio::test]
async fn a_step_with_targets_only_is_one_waiting_group() {
    let (_dir, svc) = service().await;
    svc.apply(&[
        step(700, 1, 2, 0, 1),
        targets(700, 0, &[(7, 0, "10.0.0.7"), (3, 0, "10.0.0.3")]),
    ]);
    let data = svc.data(&q(700, "")).await;
    assert_eq!(groups(&data), vec![(5, "".into(), 2, vec![3, 7])]);
    let h = &data["step_result_group_list"][0]["host_result_list"][0];
    assert_eq!(h["status_desc"], "等待执行");
    assert_eq!(h["start_time"], Value::Null);
    assert_eq!(h["total_time"], Value::Null);
    assert_eq!(h["exit_code"], Value::Null);
    // A step with no rows at all answers an empty list.
    svc.apply(&[step(701, 1, 1, 0, 1)]);
    assert_eq!(
        svc.data(&q(701, "")).await["step_result_group_list"],
        json!([])
    );
}

#[tokio::test]
async fn step_total_time_runs_while_running_and_is_null_before_start() {
    let (_dir, svc) = service().await;
    let now = stepview::now_ms();
    let mut running = step(800, 1, 2, 0, 1);
    if let Event::Step(s) = &mut running {
        s.start_time = Some(now - 5_000);
    }
    let mut not_started = step(801, 1, 1, 0, 1);
    if let Event::Step(s) = &mut not_started {
        s.start_time = None;
    }
    svc.apply(&[running, not_started]);
    let data = svc.data(&q(800, "")).await;
    let total = data["total_time"].as_i64().unwrap();
    assert!((5_000..60_000).contains(&total), "{total}");
    assert_eq!(data["end_time"], Value::Null);
    let data = svc.data(&q(801, "")).await;
    assert_eq!(data["start_time"], Value::Null);
    assert_eq!(data["total_time"], Value::Null);
}

#[tokio::test]
async fn a_repeated_poll_comes_from_the_answer_cache_until_the_step_changes() {
    let (_dir, svc) = service().await;
    let mut running = step(900, 1, 2, 0, 1);
    if let Event::Step(s) = &mut running {
        s.start_time = Some(stepview::now_ms() - 5_000);
    }
    svc.apply(&[
        running,
        targets(900, 0, &[(1, 0, "10.0.0.1"), (2, 0, "10.0.0.2")]),
    ]);
    let query = q(900, "max_host_num_per_group=10");
    let hit = r#"stepview_http_answer_cache_total{outcome="hit"}"#;
    let hits = || async { svc.metric(hit).await.unwrap_or(0.0) };
    let (_, first) = svc.get(&query).await;
    let before = hits().await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (_, second) = svc.get(&query).await;
    assert_eq!(hits().await, before + 1.0);
    // The same answer but for what is per request: its id, and the running step's total_time.
    assert_ne!(first["job_request_id"], second["job_request_id"]);
    let total = |b: &Value| b["data"]["total_time"].as_i64().unwrap();
    assert!(total(&second) > total(&first));
    assert_eq!(
        without_total_time(first["data"].clone()),
        without_total_time(second["data"].clone())
    );

    // A change is seen by the next poll (not a hit), and that answer is kept in turn.
    svc.apply(&[hr(result(900, 0, 0, 1, 9, "", 2))]);
    let (_, changed) = svc.get(&query).await;
    assert_eq!(hits().await, before + 1.0);
    let statuses: Vec<i64> = changed["data"]["step_result_group_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["result_type"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, vec![5, 9]);
    let (_, again) = svc.get(&query).await;
    assert_eq!(hits().await, before + 2.0);
    assert_eq!(
        without_total_time(changed["data"].clone()),
        without_total_time(again["data"].clone())
    );
}

/// Targets of retry 0 of `step`: hosts 1..=`hosts` in batch 0, each with its own IP.
fn many_targets(step: i64, hosts: i64) -> Event {
    let ips: Vec<(i64, i32, String)> = (1..=hosts)
        .map(|h| (h, 0, format!("10.0.{}.{}", h / 256, h % 256)))
        .collect();
    let hosts: Vec<(i64, i32, &str)> = ips.iter().map(|(h, b, ip)| (*h, *b, ip.as_str())).collect();
    targets(step, 0, &hosts)
}

/// A GET of the status route with `accept_encoding` (if any) and a fixed request id: the
/// response's status, `Content-Encoding`, `Vary` and body, decoded when it says gzip or zstd
/// (its `Content-Length` checked against the bytes on the wire).
async fn get_coded(
    svc: &TestService,
    query: &str,
    accept_encoding: Option<&str>,
) -> (u16, Option<String>, String, Vec<u8>) {
    use std::io::Read;
    let mut req = svc
        .client
        .get(format!(
            "{}/api/v3/get_step_instance_status?{query}",
            svc.base
        ))
        .header("X-Bkapi-Authorization", auth_header(APP, SECRET))
        .header("X-Request-Id", "the-same-request");
    if let Some(value) = accept_encoding {
        req = req.header("Accept-Encoding", value);
    }
    let resp = req.send().await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (status, coding, vary) = (
        resp.status().as_u16(),
        header("content-encoding"),
        header("vary").unwrap_or_default(),
    );
    let length = header("content-length");
    let wire = resp.bytes().await.unwrap().to_vec();
    if let Some(length) = length {
        assert_eq!(length.parse::<usize>().unwrap(), wire.len());
    }
    let body = match coding.as_deref() {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&wire[..])
                .read_to_end(&mut out)
                .expect("a valid gzip body");
            out
        }
        Some("zstd") => zstd::stream::decode_all(&wire[..]).expect("a valid zstd stream"),
        _ => return (status, coding, vary, wire),
    };
    assert!(
        wire.len() * 4 < body.len(),
        "{} -> {}",
        body.len(),
        wire.len()
    );
    (status, coding, vary, body)
}

#[tokio::test]
async fn answers_are_compressed_for_clients_that_ask_and_only_for_them() {
    let (_dir, svc) = service().await;
    // 950 finished (its uncapped answer is kept), 951 running (rendered for each request).
    for (id, status) in [(950, 3), (951, 2)] {
        svc.apply(&[step(id, 1, status, 0, 1), many_targets(id, 3000)]);
        let results: Vec<Event> = (1..=3000)
            .filter(|h| id == 950 || h % 2 == 0)
            .map(|h| hr(result(id, 0, 0, h, if h % 7 == 0 { 4 } else { 9 }, "", 2)))
            .collect();
        svc.apply(&results);
    }
    let hit = r#"stepview_http_answer_cache_total{outcome="hit"}"#;
    for id in [950, 951] {
        let query = q(id, "");
        let (status, coding, vary, plain) = get_coded(&svc, &query, None).await;
        assert_eq!((status, coding), (200, None));
        assert!(vary.contains("Accept-Encoding"), "{vary}");
        let plain: Value = serde_json::from_slice(&plain).unwrap();
        let listed: usize = plain["data"]["step_result_group_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["host_result_list"].as_array().unwrap().len())
            .sum();
        assert_eq!(listed, 3000);
        for (asked, coded) in [
            ("gzip", "gzip"),
            ("br;q=1, gzip;q=0.5", "gzip"),
            ("*", "gzip"),
            ("gzip, deflate, br, zstd", "zstd"),
            ("zstd;q=0.9, gzip;q=1", "gzip"),
        ] {
            let hits = svc.metric(hit).await.unwrap_or(0.0);
            let (status, coding, vary, body) = get_coded(&svc, &query, Some(asked)).await;
            assert_eq!((status, coding.as_deref()), (200, Some(coded)), "{asked}");
            assert!(vary.contains("Accept-Encoding"), "{vary}");
            let body: Value = serde_json::from_slice(&body).unwrap();
            if id == 950 {
                // The kept answer: byte for byte the same JSON, from the cache.
                assert_eq!(body, plain);
                assert_eq!(svc.metric(hit).await.unwrap_or(0.0), hits + 1.0);
            } else {
                assert_eq!(
                    without_total_time(body["data"].clone()),
                    without_total_time(plain["data"].clone())
                );
                assert_eq!(body["job_request_id"], "the-same-request");
            }
        }
        for refused in ["gzip;q=0", "identity", "br", "gzip;q=0, *", "zstd;q=0"] {
            let (status, coding, _, body) = get_coded(&svc, &query, Some(refused)).await;
            assert_eq!((status, coding), (200, None), "{refused}");
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                without_total_time(body["data"].clone()),
                without_total_time(plain["data"].clone())
            );
        }
    }
    // Small bodies (an error) are sent as they are.
    let (status, coding, _, _) = get_coded(&svc, &q(999, ""), Some("gzip")).await;
    assert_eq!((status, coding), (200, None));
}

/// A large answer (3 000 hosts, ~0.8 MB, over what one of the polls' shards of a 4-MiB cache
/// takes) is kept when its step has finished, and not while it runs.
#[tokio::test]
async fn large_answers_of_finished_steps_are_kept_and_of_running_steps_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.http.answer_cache_mb = stepview::settings::Mebibytes(4);
    let svc = TestService::start(config).await;
    for (id, status) in [(960, 3), (961, 2)] {
        svc.apply(&[step(id, 1, status, 0, 1), many_targets(id, 3000)]);
    }
    let hit = r#"stepview_http_answer_cache_total{outcome="hit"}"#;
    for (id, kept) in [(960, true), (961, false)] {
        let (_, first) = svc.get(&q(id, "")).await;
        let listed = first["data"]["step_result_group_list"][0]["host_result_list"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(listed, 3000);
        let hits = svc.metric(hit).await.unwrap_or(0.0);
        let (_, again) = svc.get(&q(id, "")).await;
        assert_eq!(
            svc.metric(hit).await.unwrap_or(0.0),
            hits + f64::from(u8::from(kept)),
            "step {id}"
        );
        assert_eq!(
            without_total_time(first["data"].clone()),
            without_total_time(again["data"].clone())
        );
    }
}

#[tokio::test]
async fn another_scope_or_job_answers_like_a_missing_step() {
    let (_dir, svc) = service().await;
    svc.apply(&[step(900, 1, 2, 0, 1)]);
    let strip = |mut b: Value| {
        b["job_request_id"] = Value::Null;
        b
    };
    let missing = strip(svc.get(&q(999, "")).await.1);
    assert_eq!(missing["code"], 1244007);
    assert_eq!(missing["message"], "作业步骤实例不存在");
    for query in [
        "bk_scope_type=biz&bk_scope_id=3&job_instance_id=1&step_instance_id=900",
        "bk_scope_type=biz_set&bk_scope_id=2&job_instance_id=1&step_instance_id=900",
        "bk_scope_type=biz&bk_scope_id=2&job_instance_id=2&step_instance_id=900",
    ] {
        let (status, body) = svc.get(query).await;
        assert_eq!(status, 200);
        assert_eq!(strip(body), missing, "{query}");
    }
}

#[tokio::test]
async fn results_before_their_step_event_appear_once_it_arrives() {
    let (_dir, svc) = service().await;
    svc.apply(&[
        hr(result(950, 0, 0, 1, 9, "", 1)),
        log(950, 0, 0, 1, 0, "early"),
    ]);
    assert_eq!(svc.get(&q(950, "")).await.1["code"], 1244007);
    svc.apply(&[step(950, 1, 2, 0, 1)]);
    let data = svc.data(&q(950, "keyword=EARLY")).await;
    assert_eq!(groups(&data), vec![(9, "".into(), 1, vec![1])]);
}

#[tokio::test]
async fn manual_confirmation_steps_are_unsupported() {
    let (_dir, svc) = service().await;
    svc.apply(&[step(960, 3, 7, 0, 1)]);
    let (status, body) = svc.get(&q(960, "")).await;
    assert_eq!((status, body["code"].clone()), (200, json!(1241003)));
    assert_eq!(body["message"], "不支持的操作");
}

async fn error_of(svc: &TestService, query: &str, lang: &str) -> (u16, i64, String) {
    let auth = auth_header(APP, SECRET);
    let (status, body) = svc
        .get_with(
            query,
            &[
                ("X-Bkapi-Authorization", &auth),
                ("Blueking-Language", lang),
            ],
        )
        .await;
    assert_eq!(body["result"], false, "{query}: {body}");
    assert_eq!(body["data"], Value::Null);
    (
        status,
        body["code"].as_i64().unwrap(),
        body["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn bad_parameters_get_the_documented_code_and_name_the_parameter() {
    let (_dir, svc) = service().await;
    svc.apply(&[step(10, 1, 2, 0, 1)]);
    let full = "bk_scope_type=biz&bk_scope_id=2&job_instance_id=1&step_instance_id=10";
    let without = |name: &str| {
        full.split('&')
            .filter(|p| !p.starts_with(&format!("{name}=")))
            .collect::<Vec<_>>()
            .join("&")
    };
    for name in [
        "bk_scope_type",
        "bk_scope_id",
        "job_instance_id",
        "step_instance_id",
    ] {
        let (status, code, msg) = error_of(&svc, &without(name), "en").await;
        assert_eq!((status, code), (200, 1240003), "{name}");
        assert!(
            msg.starts_with("Bad Request: ") && msg.contains(name),
            "{msg}"
        );
        // An empty value is "not given".
        let empty = format!("{}&{name}=", without(name));
        assert_eq!(error_of(&svc, &empty, "en").await.1, 1240003);
        let (_, _, zh) = error_of(&svc, &without(name), "zh").await;
        assert!(zh.starts_with("错误的请求：") && zh.contains(name), "{zh}");
    }
    let cases: &[(&str, i64, &str)] = &[
        ("job_instance_id=abc", 1240003, "job_instance_id"),
        ("step_instance_id=1.5", 1240003, "step_instance_id"),
        (
            "step_instance_id=99999999999999999999",
            1240003,
            "step_instance_id",
        ),
        ("execute_count=-1", 1240003, "execute_count"),
        ("execute_count=2147483648", 1240003, "execute_count"),
        ("batch=x", 1240003, "batch"),
        (
            "max_host_num_per_group=-3",
            1240003,
            "max_host_num_per_group",
        ),
        ("status=6", 1240003, "status"),
        ("status=nine", 1240003, "status"),
        ("tag=", 0, ""),
        ("keyword=", 0, ""),
        ("bk_scope_type=tenant", 1241005, "bk_scope_type"),
    ];
    for (extra, code, name) in cases {
        // Later duplicates do not override the parameter given first.
        let query = format!("{extra}&{full}");
        let auth = auth_header(APP, SECRET);
        let (_, body) = svc
            .get_with(
                &query,
                &[
                    ("X-Bkapi-Authorization", &auth),
                    ("Blueking-Language", "en"),
                ],
            )
            .await;
        assert_eq!(body["code"], *code, "{extra}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(name),
            "{extra}: {body}"
        );
    }
    let long = |name: &str, n: usize| format!("{full}&{name}={}", "x".repeat(n));
    for (name, max) in [("keyword", 1024), ("search_ip", 64), ("tag", 256)] {
        assert_eq!(svc.get(&long(name, max)).await.1["code"], 0, "{name}");
        let (_, code, msg) = error_of(&svc, &long(name, max + 1), "en").await;
        assert_eq!(code, 1240003);
        assert!(msg.contains(name), "{msg}");
    }
    let (_, code, msg) = error_of(
        &svc,
        &full.replace("job_instance_id=1", "job_instance_id=0"),
        "en",
    )
    .await;
    assert_eq!(
        (code, msg.as_str()),
        (1240003, "Job instance id must be a positive number")
    );
    let (_, code, msg) = error_of(
        &svc,
        &full.replace("step_instance_id=10", "step_instance_id=-4"),
        "zh",
    )
    .await;
    assert_eq!((code, msg.as_str()), (1240003, "步骤实例ID必须为正整数"));
    let (_, code, msg) = error_of(&svc, &full.replace("biz", "host"), "en").await;
    assert_eq!(
        (code, msg.as_str()),
        (1241005, "Invalid request parameter [bk_scope_type]")
    );
}

#[tokio::test]
async fn authentication_and_scope_permission() {
    let (_dir, svc) = service().await;
    svc.apply(&[step(20, 1, 2, 0, 1)]);
    let query = q(20, "");
    for header in [
        None,
        Some("not json".to_owned()),
        Some(auth_header(APP, "wrong")),
        Some(auth_header("no-such-app", SECRET)),
        Some(r#"{"bk_app_code":"test-app"}"#.to_owned()),
    ] {
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| vec![("X-Bkapi-Authorization", h), ("Blueking-Language", "en")])
            .unwrap_or_else(|| vec![("Blueking-Language", "en")]);
        let (status, body) = svc.get_with(&query, &headers).await;
        assert_eq!(status, 401, "{header:?}");
        assert_eq!(body["code"], 1240005);
        assert_eq!(body["message"], "Authentication failed");
    }
    let biz2 = auth_header(BIZ2_APP, SECRET);
    let (status, body) = svc
        .get_with(&query, &[("X-Bkapi-Authorization", &biz2)])
        .await;
    assert_eq!((status, body["code"].clone()), (200, json!(0)));
    let other = "bk_scope_type=biz&bk_scope_id=3&job_instance_id=1&step_instance_id=20";
    let (status, body) = svc
        .get_with(other, &[("X-Bkapi-Authorization", &biz2)])
        .await;
    assert_eq!((status, body["code"].clone()), (403, json!(9900403)));
    assert_eq!(body["message"], "权限不足");
}

#[tokio::test]
async fn authentication_can_be_switched_off_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.http.auth = stepview::http::AuthMode::Off;
    let svc = TestService::start(config).await;
    svc.apply(&[step(21, 1, 2, 0, 1)]);
    let (status, body) = svc.get_with(&q(21, ""), &[]).await;
    assert_eq!((status, body["code"].clone()), (200, json!(0)));
}

#[tokio::test]
async fn language_and_request_id_headers() {
    let (_dir, svc) = service().await;
    svc.apply(&[step(30, 1, 2, 0, 1), targets(30, 0, &[(1, 0, "10.0.0.1")])]);
    let auth = auth_header(APP, SECRET);
    let desc = |b: &Value| b["data"]["step_result_group_list"][0]["result_type_desc"].clone();
    for (headers, expected) in [
        (vec![("Blueking-Language", "EN")], "Waiting"),
        (vec![("Blueking-Language", "en-US")], "Waiting"),
        (vec![("Accept-Language", "en-GB,en;q=0.9")], "Waiting"),
        (
            vec![("Blueking-Language", "zh-cn"), ("Accept-Language", "en")],
            "等待执行",
        ),
        (vec![("Blueking-Language", "fr")], "等待执行"),
        (vec![], "等待执行"),
    ] {
        let mut h = headers.clone();
        h.push(("X-Bkapi-Authorization", &auth));
        let (_, body) = svc.get_with(&q(30, ""), &h).await;
        assert_eq!(desc(&body), expected, "{headers:?}");
    }
    let resp = svc
        .client
        .get(format!(
            "{}/api/v3/system/get_step_instance_status?{}",
            svc.base,
            q(30, "")
        ))
        .header("X-Bkapi-Authorization", &auth)
        .header("X-Request-Id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "req-42");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["job_request_id"], "req-42");
    assert_eq!(body["code"], 0);
}

#[tokio::test]
async fn restart_on_the_same_data_directory_gives_the_same_answers() {
    let (_dir, svc) = service().await;
    mixed_step(&svc).await;
    svc.apply(&[log(300, 0, 1, 1, 0, "hello")]);
    let queries = [
        q(300, ""),
        q(300, "batch=2&max_host_num_per_group=1"),
        q(300, "keyword=HELLO"),
        q(300, "search_ip=10.0.1"),
    ];
    // The step is running: its total_time moves; the rest must not.
    let mut before = Vec::new();
    for query in &queries {
        before.push(without_total_time(svc.data(query).await));
    }
    let svc = svc.restart().await;
    for (query, expected) in queries.iter().zip(before) {
        assert_eq!(
            without_total_time(svc.data(query).await),
            expected,
            "{query}"
        );
    }
}

#[tokio::test]
async fn a_polled_step_shows_every_update_to_the_rows_it_returned() {
    let (_dir, svc) = service().await;
    svc.apply(&[
        step(40, 1, 3, 0, 1),
        targets(
            40,
            0,
            &[(1, 0, "10.0.0.1"), (2, 0, "10.0.0.2"), (3, 0, "10.0.0.3")],
        ),
        hr(result(40, 0, 0, 1, 7, "", 1)),
    ]);
    let polled = q(40, "max_host_num_per_group=2");
    let host = |d: &Value, group: usize, i: usize| {
        d["step_result_group_list"][group]["host_result_list"][i].clone()
    };
    let first = svc.data(&polled).await;
    assert_eq!(host(&first, 1, 0)["exit_code"], Value::Null);
    // Same group, new fields (the row is kept hot after the poll above).
    let mut running = result(40, 0, 0, 1, 7, "", 2);
    running.exit_code = Some(3);
    running.ip = Some("10.9.9.9".into());
    svc.apply(&[hr(running)]);
    let second = svc.data(&polled).await;
    assert_eq!(host(&second, 1, 0)["exit_code"], 3);
    assert_eq!(host(&second, 1, 0)["ip"], "10.9.9.9");
    // A move to another group, and a new host in the polled one.
    svc.apply(&[
        hr(result(40, 0, 0, 2, 9, "", 1)),
        hr(result(40, 0, 0, 1, 9, "", 3)),
    ]);
    let third = svc.data(&polled).await;
    assert_eq!(
        groups(&third),
        vec![(5, "".into(), 1, vec![3]), (9, "".into(), 2, vec![1, 2])]
    );
    assert_eq!(host(&third, 1, 0)["ip"], "10.9.9.9");
    assert_eq!(host(&third, 1, 1)["status"], 9);
    // The same answers as a service that never served a poll.
    let restarted = svc.restart().await;
    assert_eq!(restarted.data(&polled).await, third);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_too() {
    let (_dir, svc) = service().await;
    let resp = svc
        .client
        .get(format!("{}/api/v3/get_step_instance_statuz", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["result"].clone(), body["code"].clone()),
        (json!(false), json!(1240003))
    );
    let resp = svc
        .client
        .post(format!(
            "{}/api/v3/get_step_instance_status?{}",
            svc.base,
            q(1, "")
        ))
        .header("Blueking-Language", "en")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Bad Request: this API takes GET only");
}

#[tokio::test]
async fn hot_rows_stay_within_their_byte_budget_and_answers_do_not_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.index.hot_rows_mb = stepview::settings::Mebibytes(1);
    let svc = TestService::start(config).await;
    // Rows of ~100 bytes: one step's 5 000 fit in 1 MiB, two steps' do not.
    let ips: Vec<String> = (0..5000)
        .map(|h| format!("10.1.{}.{}", h / 256, h % 256))
        .collect();
    let hosts: Vec<(i64, i32, &str)> = ips
        .iter()
        .enumerate()
        .map(|(h, ip)| (h as i64 + 1, 0, ip.as_str()))
        .collect();
    svc.apply(&[step(50, 1, 3, 0, 1), targets(50, 0, &hosts)]);
    svc.apply(&[step(51, 1, 3, 0, 1), targets(51, 0, &hosts)]);
    let (a, b) = (
        q(50, "max_host_num_per_group=5000"),
        q(51, "max_host_num_per_group=5000"),
    );
    let first_a = svc.data(&a).await;
    assert_eq!(svc.metric("stepview_index_hot_rows").await, Some(5000.0));
    // The other step's rows would pass the budget: the least recently polled step's go.
    let first_b = svc.data(&b).await;
    assert_eq!(svc.metric("stepview_index_hot_rows").await, Some(5000.0));
    assert_eq!(svc.data(&a).await, first_a);
    assert_eq!(svc.data(&b).await, first_b);
    assert_eq!(svc.metric("stepview_index_hot_rows").await, Some(5000.0));
}
