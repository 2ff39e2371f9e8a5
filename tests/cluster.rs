//! Shards (cluster.md): instances of one set divide a topic's partitions and forward queries to
//! the owner. Every shard answers every step as a single instance fed the same events; a member
//! joining takes its share and one leaving cleanly hands it back, with no 503 and no wrong
//! answer; a member killed is replaced within seconds, with only correct answers or 503s
//! meanwhile, never 1244007 for a step that exists.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use stepview::events::Event;
use stepview::simulate::{self, Workload};

const PARTITIONS: i32 = 8;

/// Every step of the workload with the query asked of it.
fn queries(events: &[Event]) -> Vec<(i64, String)> {
    steps_of(events)
        .into_iter()
        .map(|(job, step)| {
            let q = format!(
                "bk_scope_type=biz&bk_scope_id=2&job_instance_id={job}&step_instance_id={step}&max_host_num_per_group=3"
            );
            (step, q)
        })
        .collect()
}

/// An answer: (HTTP status, body with `total_time` cleared and no request id).
async fn ask(client: &reqwest::Client, base: &str, query: &str) -> (u16, Value) {
    let resp = client
        .get(format!("{base}/api/v3/get_step_instance_status?{query}"))
        .send()
        .await;
    let Ok(resp) = resp else {
        return (0, Value::Null);
    };
    let status = resp.status().as_u16();
    let mut body: Value = resp.json().await.unwrap_or(Value::Null);
    if body["data"].is_object() {
        body["data"] = without_total_time(body["data"].take());
    }
    body["job_request_id"] = Value::Null;
    (status, body)
}

/// The expected answers, from a single instance fed the same events.
async fn expected(events: &[Event], qs: &[(i64, String)]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.http.auth = stepview::http::AuthMode::Off;
    let single = TestService::start(config).await;
    single.apply(events);
    let mut out = Vec::new();
    for (_, q) in qs {
        out.push(ask(&single.client, &single.base, q).await.1);
    }
    out
}

/// Asks every shard every query once; how many answers were right, and the wrong ones (a 503
/// only where `unavailable_ok`).
async fn round(
    client: &reqwest::Client,
    shards: &[&Shard],
    qs: &[(i64, String)],
    want: &[Value],
    unavailable_ok: bool,
) -> (usize, Vec<String>) {
    let (mut right, mut wrong) = (0, Vec::new());
    for shard in shards {
        for ((step, q), want) in qs.iter().zip(want) {
            let (status, body) = ask(client, &shard.base, q).await;
            if status == 200 && &body == want {
                right += 1;
            } else if status == 503 && unavailable_ok {
                assert_eq!(body["code"], 1240002);
            } else if status == 0 && unavailable_ok {
                // Not listening yet (starting).
            } else {
                wrong.push(format!("{} step {step}: {status} {body}", shard.base));
            }
        }
    }
    (right, wrong)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_divide_the_partitions_and_answer_every_step_through_joins_leaves_and_kills() {
    let topic = new_topic("shards", PARTITIONS).await;
    let events = simulate::generate(&Workload {
        jobs: 6,
        steps_per_job: 3,
        hosts: 60,
        batches: 2,
        first_job_id: 1,
        ..Workload::default()
    });
    produce(&topic, &events, 0).await;
    let qs = queries(&events);
    let want = expected(&events, &qs).await;
    let set = unique_name("set");
    let client = reqwest::Client::new();

    // Three shards: each, once settled, answers every step as a single instance does.
    let shards: Vec<Shard> = (0..3)
        .map(|_| Shard::start(brokers(), &topic, &set, &[]))
        .collect();
    let all: Vec<&Shard> = shards.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (right, wrong) = round(&client, &all, &qs, &want, true).await;
        assert!(wrong.is_empty(), "wrong answers while settling: {wrong:#?}");
        // Settled: each partition read by one shard only (each first reads all, alone).
        let mut read = 0;
        for s in &all {
            read += partitions_read(&client, &s.base).await;
        }
        if right == all.len() * qs.len() && read == PARTITIONS as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {right} right answers"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut forwarded = 0.0;
    for s in &all {
        forwarded += metric_at(
            &client,
            &s.base,
            r#"stepview_http_forwarded_total{outcome="ok"}"#,
        )
        .await;
        assert_eq!(
            metric_at(&client, &s.base, "stepview_cluster_members").await,
            2.0
        );
    }
    assert!(forwarded > 0.0, "no answer was forwarded");
    // The job API gathers a job's steps from every shard.
    let job = client
        .get(format!(
            "{}/api/v3/get_job_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id=1",
            shards[0].base
        ))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let ids: Vec<i64> = job["data"]["step_instance_list"]
        .as_array()
        .unwrap_or_else(|| panic!("{job}"))
        .iter()
        .map(|s| s["step_instance_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [101, 102, 103]);

    // A fourth joins while clients ask: it takes its share, with no 503 and no wrong answer.
    let fourth = Shard::start(brokers(), &topic, &set, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, wrong) = round(&client, &all, &qs, &want, false).await;
        assert!(wrong.is_empty(), "while a member joined: {wrong:#?}");
        let served = metric_at(&client, &fourth.base, "stepview_ready").await;
        let members = metric_at(&client, &all[0].base, "stepview_cluster_members").await;
        let (right, _) = round(&client, &[&fourth], &qs, &want, true).await;
        if served == 1.0 && members == 3.0 && right == qs.len() {
            break;
        }
        assert!(Instant::now() < deadline, "the fourth never took its share");
    }
    // It leaves cleanly (SIGTERM): its share goes back, again with no 503.
    fourth.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, wrong) = round(&client, &all, &qs, &want, false).await;
        assert!(wrong.is_empty(), "while a member left: {wrong:#?}");
        if metric_at(&client, &all[0].base, "stepview_cluster_members").await == 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the fourth never left");
    }
    drop(fourth);

    // One is killed: within seconds its partitions have new owners; meanwhile only right
    // answers or 503s, never a wrong one (1244007 for an existing step included).
    shards[2].signal(libc::SIGKILL);
    let survivors = [&shards[0], &shards[1]];
    let killed = Instant::now();
    let recovered = loop {
        let (right, wrong) = round(&client, &survivors, &qs, &want, true).await;
        assert!(wrong.is_empty(), "after a kill: {wrong:#?}");
        if right == survivors.len() * qs.len() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("all answers right again {recovered:?} after the kill");
    let (right, wrong) = round(&client, &survivors, &qs, &want, false).await;
    assert!(wrong.is_empty() && right == survivors.len() * qs.len());
}

/// A topic of `PARTITIONS` partitions holding a small workload; its events.
async fn small_topic(prefix: &str) -> (String, Vec<Event>) {
    let topic = new_topic(prefix, PARTITIONS).await;
    let events = simulate::generate(&Workload {
        jobs: 8,
        steps_per_job: 2,
        hosts: 10,
        first_job_id: 1,
        ..Workload::default()
    });
    produce(&topic, &events, 0).await;
    (topic, events)
}

/// Waits until `base` answers every query with 200.
async fn serving(client: &reqwest::Client, base: &str, qs: &[(i64, String)]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    'all: loop {
        for (_, q) in qs {
            if ask(client, base, q).await.0 != 200 {
                assert!(Instant::now() < deadline, "{base} never served {q}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue 'all;
            }
        }
        return;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_polls_and_streams_end_when_their_partition_moves_and_when_the_shard_stops() {
    let (topic, events) = small_topic("moving").await;
    let qs = queries(&events);
    let set = unique_name("moving-set");
    let a = Shard::start(brokers(), &topic, &set, &[]);
    let client = reqwest::Client::new();
    serving(&client, &a.base, &qs).await;
    // A step whose partition the member about to join will own.
    let (b_port, (step, q)) = loop {
        let port = free_port();
        let b = format!("http://127.0.0.1:{port}");
        let moving = qs.iter().find(|(step, _)| {
            let p = stepview::kafka::Partitioner::Murmur2.partition(*step, PARTITIONS);
            stepview::cluster::owners::owner(p, [a.base.as_str(), b.as_str()]) == Some(b.as_str())
        });
        if let Some(found) = moving {
            break (port, found.clone());
        }
    };
    let url = format!("{}/api/v3/get_step_instance_status?{q}", a.base);
    let first = client.get(&url).send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let held = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move {
            let started = Instant::now();
            let resp = client
                .get(&url)
                .header("If-None-Match", etag)
                .header("Prefer", "wait=60")
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), started.elapsed())
        }
    });
    let stream = tokio::spawn({
        let client = client.clone();
        let url = format!("{}/api/v3/watch_step_instance_status?{q}", a.base);
        async move {
            let started = Instant::now();
            let mut resp = client.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut events = 0;
            while let Ok(Some(chunk)) = resp.chunk().await {
                events += usize::from(chunk.starts_with(b"id:"));
            }
            (events, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = Shard::start_in(
        tempfile::tempdir().unwrap(),
        b_port,
        brokers(),
        &topic,
        &set,
        &[],
    );
    let (status, waited) = held.await.unwrap();
    assert_eq!(
        status, 304,
        "step {step}: a held poll answered when its partition moved"
    );
    assert!(
        waited < Duration::from_secs(40),
        "held {waited:?}, not ended by the move"
    );
    let (events, lasted) = tokio::time::timeout(Duration::from_secs(40), stream)
        .await
        .expect("the stream outlived its partition's move")
        .unwrap();
    assert!(events >= 1 && lasted < Duration::from_secs(40));
    // Asked again, the new owner answers (through either member).
    serving(&client, &b.base, &qs).await;
    serving(&client, &a.base, &qs).await;

    // A shard alone stops at once on SIGTERM, even with a stream open.
    drop(b);
    let (topic, events) = small_topic("lone").await;
    let qs = queries(&events);
    let lone = Shard::start(brokers(), &topic, &unique_name("lone-set"), &[]);
    serving(&client, &lone.base, &qs).await;
    let open = client
        .get(format!(
            "{}/api/v3/watch_step_instance_status?{}",
            lone.base, qs[0].1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let mut lone = lone;
    let started = Instant::now();
    lone.signal(libc::SIGTERM);
    let exited = tokio::task::spawn_blocking(move || {
        let status = lone.child.wait().unwrap();
        (status, lone)
    })
    .await
    .unwrap();
    assert!(exited.0.success(), "{:?}", exited.0);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a lone shard took {:?} to stop",
        started.elapsed()
    );
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_forwarded_to_a_hung_owner_gets_503_within_its_deadline() {
    let (topic, events) = small_topic("hung").await;
    let qs = queries(&events);
    let set = unique_name("hung-set");
    let timeout = ["--query-timeout-ms", "1000"];
    let a = Shard::start(brokers(), &topic, &set, &timeout);
    let b = Shard::start(brokers(), &topic, &set, &timeout);
    let client = reqwest::Client::new();
    serving(&client, &a.base, &qs).await;
    serving(&client, &b.base, &qs).await;
    // A step that a forwards to b.
    let deadline = Instant::now() + Duration::from_secs(30);
    let q = 'found: loop {
        for (_, q) in &qs {
            let resp = client
                .get(format!("{}/api/v3/get_step_instance_status?{q}", a.base))
                .send()
                .await
                .unwrap();
            if resp.headers().contains_key("x-stepview-forwarded") {
                break 'found q.clone();
            }
        }
        assert!(Instant::now() < deadline, "a forwarded nothing");
    };
    b.signal(libc::SIGSTOP);
    let started = Instant::now();
    let (status, body) = ask(&client, &a.base, &q).await;
    let took = started.elapsed();
    b.signal(libc::SIGCONT);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], 1240002);
    // 1 s of query time + 2 s: not forever.
    assert!(took < Duration::from_secs(6), "took {took:?}");
}
