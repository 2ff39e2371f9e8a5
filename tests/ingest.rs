//! Ingest from a real Kafka-protocol broker: end to end, dead letters, replay, consumer groups,
//! and crash safety under SIGKILL.

mod common;

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use stepview::config::Config;
use stepview::events::Event;
use stepview::ingest::kafka::{
    consumer_config, ensure_topics, WatermarkContext, Watermarks, DEFAULT_PARTITIONS,
};
use stepview::simulate::{self, Workload};

fn workload(first_job_id: i64, hosts: usize) -> Vec<Event> {
    simulate::generate(&Workload {
        jobs: 2,
        steps_per_job: 3,
        hosts,
        batches: 2,
        first_job_id,
        duplicates: 0.02,
        reorder: 0.1,
        ..Workload::default()
    })
}

async fn produce(topic: &str, messages: Vec<(String, Vec<u8>)>) {
    ensure_topics(brokers(), &[topic], DEFAULT_PARTITIONS)
        .await
        .unwrap();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        simulate::produce(brokers(), &topic, &messages, 0, false).unwrap()
    })
    .await
    .unwrap();
}

/// High watermark per partition of `topic`, as fetch responses report it (what stepview uses).
fn high_watermarks(topic: &str) -> HashMap<i32, i64> {
    let c: BaseConsumer<WatermarkContext> = consumer_config(brokers(), &unique_topic("wm"), 100)
        .create_with_context(WatermarkContext(Watermarks::new(topic)))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..DEFAULT_PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::End).unwrap();
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let known: Option<HashMap<i32, i64>> = (0..DEFAULT_PARTITIONS)
            .map(|p| c.context().0.get(p).map(|(_, high)| (p, high)))
            .collect();
        if let Some(known) = known {
            return known;
        }
        assert!(
            Instant::now() < deadline,
            "no watermarks reported for {topic}"
        );
        let _ = c.poll(Duration::from_millis(50));
    }
}

/// Waits until the stored offsets of these services together reach every high watermark.
async fn wait_consumed(services: &[&TestService], topic: &str) {
    let high = high_watermarks(topic);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut stored: HashMap<i32, i64> = HashMap::new();
        for svc in services {
            for (t, p, next) in svc.views.store.offsets().unwrap() {
                if t == topic {
                    let e = stored.entry(p).or_default();
                    *e = (*e).max(next);
                }
            }
        }
        if high
            .iter()
            .all(|(p, h)| *h == 0 || stored.get(p) == Some(h))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not consumed in time: stored {stored:?}, high {high:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kafka_config(dir: &std::path::Path, topic: &str, group: &str) -> Config {
    let mut c = test_config(dir);
    c.kafka.brokers = brokers().to_owned();
    c.kafka.topic = topic.to_owned();
    c.kafka.group_id = group.to_owned();
    c.kafka.batch_max = 500;
    c
}

/// Queries over every step of the workload, of several shapes.
fn queries(events: &[Event]) -> Vec<String> {
    let mut steps: Vec<(i64, i64, i32)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Step(s) => Some((s.job_instance_id, s.step_instance_id, s.step_type)),
            _ => None,
        })
        .collect();
    steps.sort();
    steps.dedup();
    let mut out = Vec::new();
    for (job, step, ty) in steps {
        let base = format!(
            "bk_scope_type=biz&bk_scope_id=2&job_instance_id={job}&step_instance_id={step}"
        );
        out.push(base.clone());
        out.push(format!("{base}&max_host_num_per_group=3&batch=2"));
        out.push(format!("{base}&execute_count=0&search_ip=10.0.0.1"));
        if ty != 2 {
            out.push(format!("{base}&keyword=ERROR&max_host_num_per_group=5"));
        }
    }
    out
}

async fn answers(svc: &TestService, queries: &[String]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for q in queries {
        out.push(without_total_time(svc.data(q).await));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumed_views_equal_directly_applied_ones_and_replay() {
    let topic = unique_topic("e2e");
    let events = workload(10, 300);
    produce(&topic, simulate::to_messages(&events)).await;

    let live_dir = tempfile::tempdir().unwrap();
    let live = TestService::start(kafka_config(live_dir.path(), &topic, &unique_topic("g"))).await;
    let direct_dir = tempfile::tempdir().unwrap();
    let direct = TestService::start(test_config(direct_dir.path())).await;
    direct.apply(&events);
    wait_consumed(&[&live], &topic).await;

    let qs = queries(&events);
    assert!(qs.len() > 20);
    assert_eq!(answers(&live, &qs).await, answers(&direct, &qs).await);
    let live_digest = live.views.store.digest().unwrap();
    assert_eq!(live_digest, direct.views.store.digest().unwrap());

    // Replay into a fresh directory gives the same views.
    let replay_dir = tempfile::tempdir().unwrap();
    let cfg = kafka_config(replay_dir.path(), &topic, "unused");
    let replayed = tokio::task::spawn_blocking(move || {
        let views = stepview::service::Views::open(&cfg).unwrap();
        let s =
            stepview::ingest::replay::replay(&cfg.kafka, &views.sink, &views.store, false).unwrap();
        (s.messages, views.store.digest().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(replayed, (events.len() as u64, live_digest));

    // Metrics follow from the workload: every event counted once, by kind and outcome.
    let text = live.scrape().await;
    let counted: f64 = text
        .lines()
        .filter(|l| l.starts_with("stepview_events_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(counted as usize, events.len(), "{text}");
    // Per partition: the last applied offset is the topic's last, with its event time.
    for (p, high) in high_watermarks(&topic) {
        let labels = format!("{{partition=\"{p}\",topic=\"{topic}\"}}");
        let last = metric_value(&text, &format!("stepview_last_applied_offset{labels}"));
        let time = metric_value(
            &text,
            &format!("stepview_last_applied_event_timestamp_ms{labels}"),
        );
        if high > 0 {
            assert_eq!(last, Some((high - 1) as f64), "partition {p}");
            assert!(time.is_some_and(|t| t > 1.6e12), "partition {p}: {time:?}");
        }
    }
    let batches = metric_value(&text, "stepview_apply_batch_events_count").unwrap();
    let applied = metric_value(&text, "stepview_apply_batch_events_sum").unwrap();
    assert!(
        batches >= 1.0 && applied == events.len() as f64,
        "{batches} {applied}"
    );
    assert_eq!(
        metric_value(&text, "stepview_apply_duration_seconds_count"),
        Some(batches)
    );
    // Ready once a lag report (every second) has seen every partition caught up.
    live.wait_readyz(200, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_go_to_the_dead_letter_topic_and_the_rest_is_applied() {
    let topic = unique_topic("dlq");
    let good = workload(20, 20);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("not_json", b"\xff\xfenot json".to_vec()),
        ("unknown_kind", br#"{"kind":"host_deleted","step_instance_id":2001}"#.to_vec()),
        ("schema", br#"{"kind":"host_log","step_instance_id":2001,"execute_count":0,"offset":0,"content":"x"}"#.to_vec()),
        ("schema", br#"{"kind":"host_result","job_instance_id":20,"step_instance_id":2001,"execute_count":0,"bk_host_id":1,"status":"9","version":1}"#.to_vec()),
        ("out_of_range", br#"{"kind":"host_log","step_instance_id":2001,"execute_count":-1,"bk_host_id":1,"offset":0,"content":"x"}"#.to_vec()),
        ("too_large", {
            let mut v = br#"{"kind":"host_log","step_instance_id":2001,"execute_count":0,"bk_host_id":1,"offset":0,"content":""#.to_vec();
            v.extend(std::iter::repeat_n(b'a', (1 << 20) + 10));
            v.extend(b"\"}");
            v
        }),
    ];
    // Bad events first and in the middle: the good ones after them must still be applied.
    let mut messages = simulate::to_messages(&good[..good.len() / 2]);
    for (_, value) in &bad {
        messages.push(("2001".to_owned(), value.clone()));
    }
    messages.extend(simulate::to_messages(&good[good.len() / 2..]));
    produce(&topic, messages).await;

    let dir = tempfile::tempdir().unwrap();
    let svc = TestService::start(kafka_config(dir.path(), &topic, &unique_topic("g"))).await;
    wait_consumed(&[&svc], &topic).await;
    let direct_dir = tempfile::tempdir().unwrap();
    let direct = TestService::start(test_config(direct_dir.path())).await;
    direct.apply(&good);
    assert_eq!(
        svc.views.store.digest().unwrap(),
        direct.views.store.digest().unwrap()
    );

    // Every bad message is in the DLQ, unchanged, with its reason and source.
    let dlq = format!("{topic}.dlq");
    let consumer: BaseConsumer = consumer_config(brokers(), &unique_topic("dlq-reader"), 1000)
        .create()
        .unwrap();
    consumer.subscribe(&[&dlq]).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < bad.len() && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers: HashMap<String, String> = m
                .headers()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                    )
                })
                .collect();
            assert_eq!(headers["stepview-source-topic"], topic);
            assert!(headers["stepview-source-offset"].parse::<i64>().is_ok());
            assert!(headers["stepview-source-partition"].parse::<i32>().is_ok());
            assert_eq!(m.key(), Some(&b"2001"[..]));
            seen.push((
                headers["stepview-error"].clone(),
                m.payload().unwrap().to_vec(),
            ));
        }
    }
    assert_eq!(seen.len(), bad.len(), "{seen:?}");
    for (label, value) in &bad {
        let (reason, _) = seen
            .iter()
            .find(|(_, v)| v == value)
            .expect("original bytes in the DLQ");
        assert!(reason.starts_with(label), "{reason} for {label}");
    }
    // Counted by reason: two schema errors, one of each other kind.
    let text = svc.scrape().await;
    for (reason, n) in [("schema", 2.0), ("too_large", 1.0), ("not_json", 1.0)] {
        let series = format!("stepview_dead_letters_total{{reason=\"{reason}\"}}");
        assert_eq!(metric_value(&text, &series), Some(n), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_one_group_share_the_partitions_and_together_hold_everything() {
    let topic = unique_topic("group");
    let group = unique_topic("g");
    let events = workload(30, 100);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    ensure_topics(brokers(), &[&topic], DEFAULT_PARTITIONS)
        .await
        .unwrap();
    let a = TestService::start(kafka_config(dir_a.path(), &topic, &group)).await;
    let b = TestService::start(kafka_config(dir_b.path(), &topic, &group)).await;
    // Let both join before the events arrive, so that the group has settled on two members.
    tokio::time::sleep(Duration::from_secs(8)).await;
    produce(&topic, simulate::to_messages(&events)).await;
    wait_consumed(&[&a, &b], &topic).await;

    let direct_dir = tempfile::tempdir().unwrap();
    let direct = TestService::start(test_config(direct_dir.path())).await;
    direct.apply(&events);
    let (mut from_a, mut from_b) = (0, 0);
    for q in queries(&events) {
        let expected = answers(&direct, std::slice::from_ref(&q)).await;
        // The step's owner answers it completely; the other does not know it.
        let (code_a, code_b) = (
            a.get(&q).await.1["code"].clone(),
            b.get(&q).await.1["code"].clone(),
        );
        if code_a == 0 {
            assert_eq!(answers(&a, std::slice::from_ref(&q)).await, expected, "{q}");
            from_a += 1;
        }
        if code_b == 0 {
            assert_eq!(answers(&b, std::slice::from_ref(&q)).await, expected, "{q}");
            from_b += 1;
        }
        assert!(code_a == 0 || code_b == 0, "nobody holds {q}");
    }
    assert!(
        from_a > 0 && from_b > 0,
        "partitions were not shared: {from_a} / {from_b}"
    );
}

/// Runs `stepview serve` as its own process (so that it can be killed).
fn spawn_serve(dir: &std::path::Path, topic: &str, group: &str, port: u16) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_stepview"))
        .args(["serve", "--auth", "false", "--batch-max", "200"])
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--brokers",
            brokers(),
            "--topic",
            topic,
        ])
        .args([
            "--group-id",
            group,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("STEPVIEW_LOG", "warn")
        .spawn()
        .unwrap()
}

/// Per-partition consumer lag as `/metrics` reports it, once every partition has a figure.
async fn reported_lag(port: u16) -> Option<HashMap<String, i64>> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let lag: HashMap<String, i64> = text
        .lines()
        .filter(|l| l.starts_with("stepview_consumer_lag_messages{"))
        .map(|l| {
            let p = l
                .split("partition=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned();
            (p, l.rsplit(' ').next().unwrap().parse().unwrap())
        })
        .collect();
    (lag.len() == DEFAULT_PARTITIONS as usize).then_some(lag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_sigterm_at_random_moments_lose_nothing_and_apply_nothing_twice() {
    use rand::Rng;
    let topic = unique_topic("crash");
    let events = workload(40, 600);
    ensure_topics(brokers(), &[&topic], DEFAULT_PARTITIONS)
        .await
        .unwrap();
    // Events keep arriving while the service is killed or stopped and restarted.
    let producer = {
        let (topic, messages) = (topic.clone(), simulate::to_messages(&events));
        tokio::task::spawn_blocking(move || {
            simulate::produce(brokers(), &topic, &messages, 1500, false)
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut rng = rand::rng();
    for round in 0..5 {
        // A new group each time, so that no dead member holds partitions until its session
        // times out: where to resume comes from RocksDB alone, which is what is under test.
        let mut child = spawn_serve(dir.path(), &topic, &unique_topic("g"), port);
        let wait = rng.random_range(1500..5000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if round % 2 == 0 {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            eprintln!("round {round}: SIGKILL after {wait} ms");
        } else {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            assert!(
                child.wait().unwrap().success(),
                "SIGTERM must stop the service cleanly"
            );
            eprintln!("round {round}: SIGTERM after {wait} ms");
        }
    }
    producer.await.unwrap().unwrap();
    // A last run to the end (lag 0 on every partition), stopped by SIGTERM.
    let mut child = spawn_serve(dir.path(), &topic, &unique_topic("g"), port);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lag = reported_lag(port).await;
        if lag.as_ref().is_some_and(|l| l.values().all(|v| *v == 0)) {
            break;
        }
        assert!(Instant::now() < deadline, "did not catch up: lag {lag:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());

    // The views equal a clean replay's, and the stored offsets are the topic's ends.
    let store = stepview::store::Store::open(dir.path(), &Default::default()).unwrap();
    let replay_dir = tempfile::tempdir().unwrap();
    let cfg = kafka_config(replay_dir.path(), &topic, "unused");
    let replayed = tokio::task::spawn_blocking(move || {
        let views = stepview::service::Views::open(&cfg).unwrap();
        stepview::ingest::replay::replay(&cfg.kafka, &views.sink, &views.store, false).unwrap();
        views.store.digest().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(store.digest().unwrap(), replayed);
    let mut stored: Vec<(i32, i64)> = store
        .offsets()
        .unwrap()
        .into_iter()
        .filter(|(t, _, _)| *t == topic)
        .map(|(_, p, o)| (p, o))
        .collect();
    stored.sort();
    let mut expected: Vec<(i32, i64)> = high_watermarks(&topic)
        .into_iter()
        .filter(|(_, h)| *h > 0)
        .collect();
    expected.sort();
    assert_eq!(stored, expected);
}
