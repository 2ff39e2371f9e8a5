//! Watching a step instead of polling it (api.md): ETags, 304, held long-polls woken by apply,
//! server-sent events from the first event to `end`, and the same ETag on two instances fed the
//! same topic.

mod common;

use common::*;
use std::time::{Duration, Instant};
use stepview::events::Event;

const AUTH: &str = "X-Bkapi-Authorization";

fn url(svc: &TestService, route: &str, query: &str) -> String {
    format!("{}/api/v3/{route}?{query}", svc.base)
}

/// A GET of the status route with these headers: status, ETag and the response.
async fn get(svc: &TestService, query: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = svc
        .client
        .get(url(svc, "get_step_instance_status", query))
        .header(AUTH, auth_header(APP, SECRET));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn etag(resp: &reqwest::Response) -> String {
    resp.headers()["etag"].to_str().unwrap().to_owned()
}

async fn running_step(svc: &TestService, id: i64) {
    svc.apply(&[
        step(id, 1, 2, 0, 1),
        targets(id, 0, &[(1, 0, "10.0.0.1"), (2, 0, "10.0.0.2")]),
    ]);
}

#[tokio::test]
async fn etags_change_with_the_step_and_a_client_that_has_it_gets_304() {
    let (_dir, svc) = service().await;
    running_step(&svc, 100).await;
    let first = get(&svc, &q(100, ""), &[]).await;
    assert_eq!(first.status(), 200);
    let tag = etag(&first);
    assert!(tag.starts_with("W/\""), "{tag}");
    // api.md's two, and Accept-Encoding: a client that asks gets the answer gzipped.
    assert_eq!(
        first.headers()["vary"],
        "Blueking-Language, Accept-Language, Accept-Encoding"
    );
    // Unchanged: the same ETag (another query shape too), and 304 with no body.
    assert_eq!(
        etag(&get(&svc, &q(100, "max_host_num_per_group=1"), &[]).await),
        tag
    );
    let same = get(&svc, &q(100, ""), &[("If-None-Match", &tag)]).await;
    assert_eq!(same.status(), 304);
    assert_eq!(etag(&same), tag);
    assert!(same.bytes().await.unwrap().is_empty());
    // A change moves it; an event that changes nothing does not.
    svc.apply(&[Event::HostResult(result(100, 0, 0, 1, 9, "", 1))]);
    let changed = get(&svc, &q(100, ""), &[("If-None-Match", &tag)]).await;
    assert_eq!(changed.status(), 200);
    let tag2 = etag(&changed);
    assert_ne!(tag2, tag);
    svc.apply(&[Event::HostResult(result(100, 0, 0, 1, 9, "", 1))]); // a duplicate
    assert_eq!(etag(&get(&svc, &q(100, ""), &[]).await), tag2);
    // total_time of a running step moves without changing the ETag: it is weak.
    assert_eq!(etag(&get(&svc, &q(100, ""), &[]).await), tag2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_long_poll_is_answered_when_the_step_changes_or_304_after_its_wait() {
    let (_dir, svc) = service().await;
    running_step(&svc, 101).await;
    let tag = etag(&get(&svc, &q(101, ""), &[]).await);

    // Nothing changes: 304 after the wait, saying the wait was applied.
    let t = Instant::now();
    let idle = get(
        &svc,
        &q(101, ""),
        &[("If-None-Match", &tag), ("Prefer", "wait=1")],
    )
    .await;
    assert_eq!(idle.status(), 304);
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(idle.headers()["preference-applied"], "wait=1");

    // A change while held: answered with it at once.
    let held = tokio::spawn({
        let (client, url, tag) = (
            svc.client.clone(),
            url(&svc, "get_step_instance_status", &q(101, "")),
            tag.clone(),
        );
        async move {
            let resp = client
                .get(url)
                .header(AUTH, auth_header(APP, SECRET))
                .header("If-None-Match", tag)
                .header("Prefer", "wait=30")
                .send()
                .await
                .unwrap();
            (
                Instant::now(),
                resp.status(),
                resp.json::<serde_json::Value>().await.unwrap(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(svc.metric("stepview_http_watching").await, Some(1.0));
    svc.apply(&[Event::HostResult(result(101, 0, 0, 2, 104, "", 1))]);
    let applied = Instant::now();
    let (answered, status, body) = held.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        answered - applied < Duration::from_secs(1),
        "{:?}",
        answered - applied
    );
    assert_eq!(groups(&body["data"])[0].0, 5);
    assert_eq!(groups(&body["data"])[1], (104, String::new(), 1, vec![2]));

    // Errors are answered at once, never held.
    let t = Instant::now();
    let bad = get(
        &svc,
        "bk_scope_type=biz",
        &[("If-None-Match", &tag), ("Prefer", "wait=30")],
    )
    .await;
    assert_eq!(bad.status(), 200);
    assert_eq!(
        bad.json::<serde_json::Value>().await.unwrap()["code"],
        1240003
    );
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_does_not_exist_yet_is_waited_for() {
    let (_dir, svc) = service().await;
    let waiting = tokio::spawn({
        let (client, url) = (
            svc.client.clone(),
            url(&svc, "get_step_instance_status", &q(102, "")),
        );
        async move {
            let resp = client
                .get(url)
                .header(AUTH, auth_header(APP, SECRET))
                .header("Prefer", "wait=30")
                .send()
                .await
                .unwrap();
            resp.json::<serde_json::Value>().await.unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    running_step(&svc, 102).await;
    let body = waiting.await.unwrap();
    assert_eq!(body["code"], 0, "{body}");
    // And one that never comes: 1244007 after the wait.
    let t = Instant::now();
    let gone = get(&svc, &q(103, ""), &[("Prefer", "wait=1")]).await;
    assert_eq!(
        gone.json::<serde_json::Value>().await.unwrap()["code"],
        1244007
    );
    assert!(t.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_waiters_are_released_by_one_change_while_others_are_answered() {
    let (_dir, svc) = service().await;
    running_step(&svc, 104).await;
    running_step(&svc, 105).await;
    let tag = etag(&get(&svc, &q(104, ""), &[]).await);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1000)
        .build()
        .unwrap();
    let waiters: Vec<_> = (0..1000)
        .map(|_| {
            let (client, url, tag) = (
                client.clone(),
                url(
                    &svc,
                    "get_step_instance_status",
                    &q(104, "max_host_num_per_group=1"),
                ),
                tag.clone(),
            );
            tokio::spawn(async move {
                let resp = client
                    .get(url)
                    .header(AUTH, auth_header(APP, SECRET))
                    .header("If-None-Match", tag)
                    .header("Prefer", "wait=60")
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), Instant::now())
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while svc.metric("stepview_http_watching").await != Some(1000.0) {
        assert!(Instant::now() < deadline, "not all waiters are held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The service keeps answering others meanwhile.
    let t = Instant::now();
    assert_eq!(
        svc.data(&q(105, "max_host_num_per_group=1")).await["step_instance_id"],
        105
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    svc.apply(&[Event::HostResult(result(104, 0, 0, 1, 9, "", 1))]);
    let applied = Instant::now();
    let mut slowest = Duration::ZERO;
    for w in waiters {
        let (status, at) = w.await.unwrap();
        assert_eq!(status, 200);
        slowest = slowest.max(at - applied);
    }
    eprintln!("1 000 waiters released; the last {slowest:?} after the change");
    assert_eq!(svc.metric("stepview_http_watching").await, Some(0.0));
}

/// Server-sent events read from a response, as (event, id, data) until `n` are read.
async fn read_events(resp: &mut reqwest::Response, n: usize) -> Vec<(String, String, String)> {
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap();
        let Some(chunk) = chunk else { break };
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = v.trim().to_owned();
                }
            }
            if !event.is_empty() {
                events.push((event, id, data));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_runs_from_the_first_answer_to_end() {
    let (_dir, svc) = service().await;
    running_step(&svc, 106).await;
    let watch = url(
        &svc,
        "watch_step_instance_status",
        &q(106, "max_host_num_per_group=5"),
    );
    let mut resp = svc
        .client
        .get(&watch)
        .header(AUTH, auth_header(APP, SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let first = read_events(&mut resp, 1).await;
    assert_eq!(first[0].0, "status");
    let body: serde_json::Value = serde_json::from_str(&first[0].2).unwrap();
    assert_eq!(
        groups(&body["data"]),
        vec![(5, String::new(), 2, vec![1, 2])]
    );
    assert_eq!(first[0].1, etag(&get(&svc, &q(106, ""), &[]).await));

    // Changes arrive; the step finishing ends the stream.
    svc.apply(&[Event::HostResult(result(106, 0, 0, 1, 9, "", 1))]);
    let next = read_events(&mut resp, 1).await;
    let body: serde_json::Value = serde_json::from_str(&next[0].2).unwrap();
    assert_eq!(groups(&body["data"])[1], (9, String::new(), 1, vec![1]));
    svc.apply(&[
        Event::HostResult(result(106, 0, 0, 2, 9, "", 1)),
        step(106, 1, 3, 0, 2),
    ]);
    let last = read_events(&mut resp, 2).await;
    assert_eq!(last[0].0, "status");
    assert_eq!(
        last[1],
        ("end".into(), String::new(), "{\"finished\":true}".into())
    );
    assert!(
        resp.chunk().await.unwrap().is_none(),
        "the stream closes after end"
    );

    // A reconnect at the last position of a finished step: 204, so EventSource stops.
    let again = svc
        .client
        .get(&watch)
        .header(AUTH, auth_header(APP, SECRET))
        .header("Last-Event-ID", &last[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 204);
    // Errors before the stream are the usual envelope.
    let missing = svc
        .client
        .get(url(&svc, "watch_step_instance_status", &q(999, "")))
        .header(AUTH, auth_header(APP, SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(
        missing.json::<serde_json::Value>().await.unwrap()["code"],
        1244007
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_fed_the_same_topic_give_the_same_etag_and_a_lagging_one_never_goes_back() {
    let topic = unique_name("etag");
    create_topic(&topic).await;
    let events = vec![
        step(107, 1, 2, 0, 1),
        targets(107, 0, &[(1, 0, "10.0.0.1")]),
        Event::HostResult(result(107, 0, 0, 1, 9, "", 1)),
    ];
    produce(&topic, &events, 0).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = |dir: &std::path::Path, group: &str| {
        let mut c = test_config(dir);
        c.kafka.brokers = brokers().to_owned();
        c.kafka.topic = topic.clone();
        c.kafka.group_id = group.to_owned();
        c.kafka.ready_max_lag = 0;
        c
    };
    let a = TestService::start(config(dir_a.path(), "group-a")).await;
    let b = TestService::start(config(dir_b.path(), "group-b")).await;
    a.wait_readyz(200, Duration::from_secs(60)).await;
    b.wait_readyz(200, Duration::from_secs(60)).await;
    let tag_a = etag(&get(&a, &q(107, ""), &[]).await);
    let tag_b = etag(&get(&b, &q(107, ""), &[]).await);
    assert_eq!(tag_a, tag_b);
    // A client that already saw a later position (from an instance ahead of this one) gets 304
    // with its own ETag: never an older answer.
    let (partition, offset) = tag_a
        .trim_start_matches("W/\"")
        .trim_end_matches('"')
        .rsplit_once('-')
        .unwrap();
    let ahead = format!("W/\"{partition}-{}\"", offset.parse::<i64>().unwrap() + 5);
    let resp = get(&a, &q(107, ""), &[("If-None-Match", &ahead)]).await;
    assert_eq!(resp.status(), 304);
    assert_eq!(etag(&resp), ahead);
}

async fn service() -> (tempfile::TempDir, TestService) {
    let dir = tempfile::tempdir().unwrap();
    let svc = TestService::start(test_config(dir.path())).await;
    (dir, svc)
}
