//! Ingest from a real Kafka-protocol broker: end to end, dead letters, replay, replicas, a frozen
//! broker, memory under large events, and crash safety under SIGKILL.

mod common;

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use stepview::events::Event;
use stepview::kafka::KafkaSettings;
use stepview::kafka::{consumer_config, WatermarkContext, Watermarks, DEFAULT_PARTITIONS};
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

async fn produce_messages(topic: &str, messages: Vec<(String, Vec<u8>)>) {
    create_topic(topic).await;
    let settings = kafka_settings(topic);
    tokio::task::spawn_blocking(move || simulate::produce(&settings, &messages, 0, false).unwrap())
        .await
        .unwrap();
}

/// High watermark per partition of `topic`, as fetch responses report it (what stepview uses).
fn high_watermarks(topic: &str) -> HashMap<i32, i64> {
    let c: BaseConsumer<WatermarkContext> =
        consumer_config(&kafka_settings(topic), &unique_name("wm"), 100)
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

/// A consumer of `topic` from its start (dead letters, committed offsets).
fn reader_of(topic: &str, group: &str) -> BaseConsumer {
    let c: BaseConsumer = consumer_config(&kafka_settings(topic), group, 1000)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..DEFAULT_PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    c
}

fn dlq_reader(dlq: &str) -> BaseConsumer {
    reader_of(dlq, &unique_name("dlq-reader"))
}

/// A dead letter: its headers, key and payload.
type DeadLetter = (HashMap<String, String>, Option<Vec<u8>>, Option<Vec<u8>>);

/// Dead letters of `dlq`, until `n` are read.
fn read_dead_letters(dlq: &str, n: usize) -> Vec<DeadLetter> {
    let consumer = dlq_reader(dlq);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < n && Instant::now() < deadline {
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
            seen.push((
                headers,
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
            ));
        }
    }
    assert_eq!(seen.len(), n, "dead letters in {dlq}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumed_views_equal_directly_applied_ones_and_replay() {
    let topic = unique_name("e2e");
    let events = workload(10, 300);
    produce_messages(&topic, simulate::to_messages(&events)).await;

    let live_dir = tempfile::tempdir().unwrap();
    let group = unique_name("g");
    let live = TestService::start(kafka_config(live_dir.path(), &topic, &group)).await;
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
    assert_eq!(
        replay_digest(&topic).await,
        (events.len() as u64, live_digest)
    );

    // Metrics follow from the workload: every event counted once, by kind and outcome.
    let text = live.scrape().await;
    let counted: f64 = text
        .lines()
        .filter(|l| l.starts_with("stepview_events_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(counted as usize, events.len(), "{text}");
    // Per partition: the last applied offset is the topic's last, with its event time.
    let high = high_watermarks(&topic);
    for (p, high) in &high {
        let labels = format!("{{partition=\"{p}\",topic=\"{topic}\"}}");
        let last = metric_value(&text, &format!("stepview_last_applied_offset{labels}"));
        let time = metric_value(
            &text,
            &format!("stepview_last_applied_event_timestamp_ms{labels}"),
        );
        if *high > 0 {
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

    // Offsets are committed under the group id, for lag tools (resuming reads RocksDB's).
    let committed = tokio::task::spawn_blocking({
        let (topic, group) = (topic.clone(), group.clone());
        move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let c = reader_of(&topic, &group);
                let tpl = c.committed(Duration::from_secs(10)).unwrap();
                let got: HashMap<i32, i64> = tpl
                    .elements_for_topic(&topic)
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect();
                if got.len() == high.values().filter(|h| **h > 0).count()
                    || Instant::now() > deadline
                {
                    return (got, high);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    })
    .await
    .unwrap();
    let (got, high) = committed;
    for (p, h) in high.iter().filter(|(_, h)| **h > 0) {
        assert_eq!(got.get(p), Some(h), "committed offset of partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_go_to_the_dead_letter_topic_and_the_rest_is_applied() {
    let topic = unique_name("dlq");
    let good = workload(20, 20);
    let valid_log = br#"{"kind":"host_log","step_instance_id":2001,"execute_count":0,"bk_host_id":1,"offset":0,"content":"x"}"#;
    let bad: Vec<(&str, &str, Vec<u8>)> = vec![
        ("not_json", "2001", b"\xff\xfenot json".to_vec()),
        ("unknown_kind", "2001", br#"{"kind":"host_deleted","step_instance_id":2001}"#.to_vec()),
        ("schema", "2001", br#"{"kind":"host_log","step_instance_id":2001,"execute_count":0,"offset":0,"content":"x"}"#.to_vec()),
        ("schema", "2001", br#"{"kind":"host_result","job_instance_id":20,"step_instance_id":2001,"execute_count":0,"bk_host_id":1,"status":"9","version":1}"#.to_vec()),
        ("out_of_range", "2001", br#"{"kind":"host_log","step_instance_id":2001,"execute_count":-1,"bk_host_id":1,"offset":0,"content":"x"}"#.to_vec()),
        ("out_of_range", "2001", format!(r#"{{"kind":"step","job_instance_id":20,"step_instance_id":2001,"bk_scope_type":"biz","bk_scope_id":"{}","name":"s","type":1,"status":2,"execute_count":0,"create_time":1,"version":1}}"#, "7".repeat(300)).into_bytes()),
        ("wrong_key", "02001", valid_log.to_vec()),
        ("wrong_key", "2002", valid_log.to_vec()),
        ("too_large", "2001", {
            let mut v = br#"{"kind":"host_log","step_instance_id":2001,"execute_count":0,"bk_host_id":1,"offset":0,"content":""#.to_vec();
            v.extend(std::iter::repeat_n(b'a', (1 << 20) + 10));
            v.extend(b"\"}");
            v
        }),
    ];
    // A burst of bad events, sent to the dead-letter topic together.
    let burst = 300;
    // Bad events first and in the middle: the good ones after them must still be applied.
    let mut messages = simulate::to_messages(&good[..good.len() / 2]);
    for (_, key, value) in &bad {
        messages.push((key.to_string(), value.clone()));
    }
    for i in 0..burst {
        messages.push(("2001".to_owned(), format!("burst {i}").into_bytes()));
    }
    messages.extend(simulate::to_messages(&good[good.len() / 2..]));
    produce_messages(&topic, messages).await;

    let dir = tempfile::tempdir().unwrap();
    let svc = TestService::start(kafka_config(dir.path(), &topic, &unique_name("g"))).await;
    wait_consumed(&[&svc], &topic).await;
    let direct_dir = tempfile::tempdir().unwrap();
    let direct = TestService::start(test_config(direct_dir.path())).await;
    direct.apply(&good);
    assert_eq!(
        svc.views.store.digest().unwrap(),
        direct.views.store.digest().unwrap()
    );

    // Every bad message is in the DLQ, unchanged, with its reason and source.
    let seen = read_dead_letters(&format!("{topic}.dlq"), bad.len() + burst);
    for (headers, _, _) in &seen {
        assert_eq!(headers["stepview-source-topic"], topic);
        assert!(headers["stepview-source-offset"].parse::<i64>().is_ok());
        assert!(headers["stepview-source-partition"].parse::<i32>().is_ok());
        assert!(!headers.contains_key("stepview-truncated-from-bytes"));
    }
    for (label, key, value) in &bad {
        let (headers, k, _) = seen
            .iter()
            .find(|(_, k, v)| v.as_deref() == Some(value) && k.as_deref() == Some(key.as_bytes()))
            .expect("original key and bytes in the DLQ");
        let reason = &headers["stepview-error"];
        assert!(reason.starts_with(label), "{reason} for {label}");
        assert_eq!(k.as_deref(), Some(key.as_bytes()));
    }
    // Counted by reason.
    let text = svc.scrape().await;
    for (reason, n) in [
        ("schema", 2.0),
        ("too_large", 1.0),
        ("wrong_key", 2.0),
        ("out_of_range", 2.0),
        ("not_json", 1.0 + burst as f64),
    ] {
        let series = format!("stepview_dead_letters_total{{reason=\"{reason}\"}}");
        assert_eq!(metric_value(&text, &series), Some(n), "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_the_topic_refuses_are_cut_until_they_fit_and_nothing_stalls() {
    let topic = unique_name("dlq-cut");
    let good = workload(25, 20);
    let padded = |bytes: usize| {
        let mut v = b"not json ".to_vec();
        v.resize(bytes, b'x');
        v
    };
    // The dead-letter producer takes at most 4 000 bytes (librdkafka refuses larger ones
    // itself, as a broker's limit would): one message far over it, one just over it (under
    // the 1 MiB event limit, so it is cut from its own size, not to 1 MiB), one that fits.
    let bad = [padded(900_000), padded(3_990), padded(1_000)];
    let mut messages = simulate::to_messages(&good[..good.len() / 2]);
    for value in &bad {
        messages.push(("2501".to_owned(), value.clone()));
    }
    messages.extend(simulate::to_messages(&good[good.len() / 2..]));
    produce_messages(&topic, messages).await;

    let dir = tempfile::tempdir().unwrap();
    let mut config = kafka_config(dir.path(), &topic, &unique_name("g"));
    config
        .kafka
        .dlq_producer
        .insert("message.max.bytes".into(), "4000".into());
    let svc = TestService::start(config).await;
    wait_consumed(&[&svc], &topic).await;
    let direct_dir = tempfile::tempdir().unwrap();
    let direct = TestService::start(test_config(direct_dir.path())).await;
    direct.apply(&good);
    assert_eq!(
        svc.views.store.digest().unwrap(),
        direct.views.store.digest().unwrap(),
        "every good event after the refused ones was applied"
    );
    let seen = read_dead_letters(&format!("{topic}.dlq"), bad.len());
    for original in &bad {
        let cut_from = original.len().to_string();
        let (headers, _, payload) = seen
            .iter()
            .find(|(h, _, p)| match h.get("stepview-truncated-from-bytes") {
                Some(n) => *n == cut_from,
                None => p.as_deref() == Some(&original[..]),
            })
            .unwrap_or_else(|| panic!("no dead letter for {} bytes", original.len()));
        let payload = payload.as_deref().unwrap_or_default();
        assert!(original.starts_with(payload), "a prefix of the original");
        if original.len() < 2000 {
            assert_eq!(payload, &original[..], "what fits is sent unchanged");
        } else {
            assert!(
                !payload.is_empty() && payload.len() < 4000,
                "cut to fit: {} bytes",
                payload.len()
            );
        }
        assert!(headers["stepview-error"].starts_with("not_json"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_read_every_partition_and_agree() {
    let topic = unique_name("replicas");
    let events = workload(30, 100);
    create_topic(&topic).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Same group id or not, each replica reads every partition: no group protocol.
    let group = unique_name("g");
    let a = TestService::start(kafka_config(dir_a.path(), &topic, &group)).await;
    let b = TestService::start(kafka_config(dir_b.path(), &topic, &group)).await;
    produce_messages(&topic, simulate::to_messages(&events)).await;
    wait_consumed(&[&a], &topic).await;
    wait_consumed(&[&b], &topic).await;

    let direct_dir = tempfile::tempdir().unwrap();
    let direct = TestService::start(test_config(direct_dir.path())).await;
    direct.apply(&events);
    let qs = queries(&events);
    let expected = answers(&direct, &qs).await;
    assert_eq!(answers(&a, &qs).await, expected);
    assert_eq!(answers(&b, &qs).await, expected);
    let digest = direct.views.store.digest().unwrap();
    assert_eq!(a.views.store.digest().unwrap(), digest);
    assert_eq!(b.views.store.digest().unwrap(), digest);
}

/// Runs `stepview serve` as its own process (so that it can be killed), with small batches.
/// `stepview serve` with small batches (several per second at these rates).
fn spawn_serve_small_batches(
    dir: &std::path::Path,
    brokers: &str,
    topic: &str,
    port: u16,
) -> std::process::Child {
    spawn_serve(dir, brokers, topic, port, &["--batch-max", "200"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_sigterm_at_random_moments_lose_nothing_and_apply_nothing_twice() {
    use rand::Rng;
    let topic = unique_name("crash");
    // Several steps of 1 500 hosts.
    let events = workload(40, 1500);
    create_topic(&topic).await;
    // Events keep arriving while the service is killed or stopped and restarted.
    let producer = {
        let (topic, messages) = (topic.clone(), simulate::to_messages(&events));
        tokio::task::spawn_blocking(move || {
            simulate::produce(
                &stepview::kafka::KafkaSettings::of(brokers(), &topic),
                &messages,
                1200,
                false,
            )
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut rng = rand::rng();
    for round in 0..20 {
        let mut child = spawn_serve_small_batches(dir.path(), brokers(), &topic, port);
        let wait = rng.random_range(800..3000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if round % 4 != 3 {
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
    let mut child = spawn_serve_small_batches(dir.path(), brokers(), &topic, port);
    wait_lag_zero(port, DEFAULT_PARTITIONS as usize).await;
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());

    // The views equal a clean replay's, and the stored offsets are the topic's ends.
    let store = stepview::store::Store::open_read_only(dir.path()).unwrap();
    let (_, replayed) = replay_digest(&topic).await;
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

/// The sizes of the (status, tag) groups of a step, as the API answers them.
async fn group_sizes(base: &str, step: i64) -> Result<Vec<(i64, i64)>, String> {
    let url = format!(
        "{base}/api/v3/get_step_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id={JOB}&step_instance_id={step}&max_host_num_per_group=0"
    );
    let body: serde_json::Value = reqwest::get(url)
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if body["code"] != 0 {
        return Err(body.to_string());
    }
    Ok(groups(&body["data"])
        .into_iter()
        .map(|(status, _, size, _)| (status, size))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_makes_the_service_unready_and_nothing_is_lost() {
    let broker = Broker::start();
    let topic = unique_name("freeze");
    let settings = KafkaSettings {
        brokers: broker.addr.clone(),
        ..kafka_settings(&topic)
    };
    stepview::kafka::ensure_topics(&settings, &[&topic], DEFAULT_PARTITIONS)
        .await
        .unwrap();
    let hosts: Vec<(i64, i32, &str)> = (1..=40).map(|h| (h, 0, "10.0.0.1")).collect();
    let send = |events: Vec<Event>| {
        let (addr, topic) = (broker.addr.clone(), topic.clone());
        tokio::task::spawn_blocking(move || {
            simulate::produce(
                &stepview::kafka::KafkaSettings::of(&addr, &topic),
                &simulate::to_messages(&events),
                0,
                false,
            )
        })
    };
    send(vec![step(900, 1, 2, 0, 1), targets(900, 0, &hosts)])
        .await
        .unwrap()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn_serve_small_batches(dir.path(), &broker.addr, &topic, port);
    let base = format!("http://127.0.0.1:{port}");
    let readyz = || async {
        match reqwest::get(format!("{base}/readyz")).await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while readyz().await != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(group_sizes(&base, 900).await.unwrap(), vec![(5, 40)]);

    let finished = |hosts: std::ops::RangeInclusive<i64>| -> Vec<Event> {
        hosts
            .map(|h| Event::HostResult(result(900, 0, 0, h, 9, "", 2)))
            .collect()
    };
    broker.signal(libc::SIGSTOP);
    let frozen_at = Instant::now();
    // Produced while the broker is frozen: delivered once it is back.
    let during = send(finished(1..=20));
    let mut went_unready = false;
    let mut slowest = Duration::ZERO;
    while frozen_at.elapsed() < Duration::from_secs(30) {
        let asked = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(1), group_sizes(&base, 900)).await;
        slowest = slowest.max(asked.elapsed());
        assert_eq!(
            answer.expect("a query answered within 1 s"),
            Ok(vec![(5, 40)])
        );
        went_unready |= readyz().await == 503;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        went_unready,
        "/readyz stayed 200 while the broker was frozen"
    );
    eprintln!("slowest query while frozen: {slowest:?}");
    broker.signal(libc::SIGCONT);
    during.await.unwrap().unwrap();
    send(finished(21..=40)).await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sizes = group_sizes(&base, 900).await;
        if sizes == Ok(vec![(9, 40)]) && readyz().await == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every event appeared after the broker came back: {sizes:?}, /readyz {}",
            readyz().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_bounded_by_bytes_so_large_events_keep_memory_low() {
    let topic = unique_name("big-logs");
    let chunk = "x".repeat(900_000);
    let events: Vec<Event> = std::iter::once(step(950, 1, 2, 0, 1))
        .chain((0..400).map(|i| log(950, 0, 0, 1 + i % 40, (i / 40) * 900_000, &chunk)))
        .collect();
    produce_messages(&topic, simulate::to_messages(&events)).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Default settings: without a byte budget, 5 000 events per batch would be 4.5 GB of logs.
    let mut child = spawn_serve(dir.path(), brokers(), &topic, port, &[]);
    wait_lag_zero(port, DEFAULT_PARTITIONS as usize).await;
    let peak = status_mib(&child.id().to_string(), "VmHWM");
    eprintln!("peak RSS while ingesting 400 log chunks of 900 KB: {peak:.0} MiB");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(peak < 600.0, "peak RSS {peak:.0} MiB");
    let store = stepview::store::Store::open_read_only(dir.path()).unwrap();
    let mut chunks = 0;
    store
        .snapshot()
        .for_each_log_chunk(950, 0, None, |_, _, content| {
            assert_eq!(content.len(), 900_000);
            chunks += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(chunks, 400);
}
