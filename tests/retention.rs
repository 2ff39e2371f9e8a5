//! Retention (architecture.md, "Running for months"): a step is kept for `store.retention_days`
//! after the broker time of its last event, then it answers like a missing step; its late events
//! are dropped; replay applies the same rule.

mod common;

use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::time::Duration;
use stepview::apply::Batch;
use stepview::events::Event;
use stepview::retention;

const DAY_MS: i64 = 86_400_000;

/// A finished script step of three hosts.
fn finished_step(step: i64) -> Vec<Event> {
    let hosts = [(1, 0, "10.0.0.1"), (2, 0, "10.0.0.2"), (3, 0, "10.0.0.3")];
    let mut events = vec![step_event(step, 3), targets(step, 0, &hosts)];
    for h in 1..=3 {
        events.push(Event::HostResult(result(step, 0, 0, h, 9, "", 1)));
        events.push(log(step, 0, 0, h, 0, "done\n"));
    }
    events
}

fn step_event(id: i64, status: i32) -> Event {
    step(id, 1, status, 0, 1)
}

#[tokio::test]
async fn steps_past_retention_are_gone_and_their_late_events_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    // No sweeps of the service's own while the test sets the scene; it sweeps itself below.
    config.store.retention_days = stepview::settings::Days(0);
    let svc = TestService::start(config).await;
    let now = stepview::now_ms();
    let apply_at = |events: &[Event], at_ms: i64| {
        let batch = Batch {
            times: stepview::apply::Times::All(at_ms),
            ..Batch::local(events)
        };
        svc.views.sink.applier.apply(&batch).unwrap();
    };
    apply_at(&finished_step(11), now - 40 * DAY_MS); // expired
    apply_at(&finished_step(12), now - 10 * DAY_MS); // recent
                                                     // Running for 40 days, with an event today: a step still receiving events never expires.
    apply_at(
        &[step_event(13, 2), targets(13, 0, &[(1, 0, "10.0.0.1")])],
        now - 40 * DAY_MS,
    );
    apply_at(&[Event::HostResult(result(13, 0, 0, 1, 7, "", 1))], now);
    for step in [11, 12, 13] {
        assert_eq!(
            svc.get(&q(step, "")).await.1["code"],
            0,
            "step {step} before"
        );
    }

    let expired = svc.views.sink.expire(now, 30 * DAY_MS, |_| true).unwrap();
    assert_eq!(expired.steps, 1);
    assert_eq!(svc.get(&q(11, "")).await.1["code"], 1244007);
    assert_eq!(
        svc.get(&q(12, "max_host_num_per_group=1")).await.1["code"],
        0
    );
    assert_eq!(svc.get(&q(13, "")).await.1["code"], 0);
    // Its rows and logs are gone from the store too.
    let snapshot = svc.views.store.snapshot();
    assert!(snapshot.rows_in(11, 0, None).unwrap().is_empty());
    let mut chunks = 0;
    snapshot
        .for_each_log_chunk(11, 0, None, |_, _, _| {
            chunks += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(chunks, 0);
    assert_eq!(
        svc.metric("stepview_retention_expired_steps_total").await,
        Some(1.0)
    );

    // A late event for the expired step is dropped and counted; the step stays gone.
    let late = [Event::HostResult(result(11, 0, 0, 1, 104, "", 9))];
    let never = stepview::shutdown::Shutdown::new();
    assert!(svc.views.sink.apply(&Batch::local(&late), &never));
    assert_eq!(svc.get(&q(11, "")).await.1["code"], 1244007);
    let dropped = r#"stepview_events_total{kind="host_result",outcome="expired"}"#;
    assert_eq!(svc.metric(dropped).await, Some(1.0));

    // A sweep a retention period later forgets the tombstone; nothing else changes.
    let later = svc
        .views
        .sink
        .expire(now + 31 * DAY_MS, 30 * DAY_MS, |_| true)
        .unwrap();
    assert_eq!(later.tombstones, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_applies_the_same_rule_as_the_live_service() {
    let topic = unique_name("retention");
    create_topic(&topic).await;
    let now = stepview::now_ms();
    // Old events carry their old broker timestamps.
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    for (step, at) in [(21, now - 40 * DAY_MS), (22, now - 2 * DAY_MS)] {
        for e in finished_step(step) {
            let (key, value) = (step.to_string(), e.to_json());
            producer
                .send(
                    BaseRecord::<str, [u8]>::to(&topic)
                        .key(&key)
                        .payload(&value)
                        .timestamp(at),
                )
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let live_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(live_dir.path());
    config.kafka.brokers = brokers().to_owned();
    config.kafka.topic = topic.clone();
    config.kafka.ready_max_lag = 0;
    let live = TestService::start(config.clone()).await;
    live.wait_readyz(200, Duration::from_secs(60)).await;
    retention::sweep(&live.views.sink, &config.store, |_| true).unwrap();
    assert_eq!(live.get(&q(21, "")).await.1["code"], 1244007);
    assert_eq!(live.get(&q(22, "")).await.1["code"], 0);

    let replay_dir = tempfile::tempdir().unwrap();
    let mut replay_config = config.clone();
    replay_config.data_dir = replay_dir.path().to_owned();
    let digest = tokio::task::spawn_blocking(move || {
        let views = stepview::service::Views::open(&replay_config).unwrap();
        stepview::ingest::replay::replay(&replay_config.kafka, &views.sink, false).unwrap();
        let expired = retention::sweep(&views.sink, &replay_config.store, |_| true).unwrap();
        assert_eq!(expired.steps, 1);
        views.store.digest().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(digest, live.views.store.digest().unwrap());
}

/// A step's clock is the broker time of its own newest event: produced in one batch with
/// fresh ones, a 40-day-old finished step goes at the first sweep, as soon as the service has
/// caught up; a 2-day-old one and a running one with a fresh event stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_expires_by_its_own_last_event_whatever_arrives_with_it() {
    // One partition: the three steps' events come in one batch.
    let topic = new_topic("clock", 1).await;
    let now = stepview::now_ms();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let send = |event: &Event, at: i64| {
        let (key, value) = (event.key_id().to_string(), event.to_json());
        producer
            .send(
                BaseRecord::<str, [u8]>::to(&topic)
                    .key(&key)
                    .payload(&value)
                    .timestamp(at),
            )
            .unwrap();
    };
    for e in finished_step(31) {
        send(&e, now - 40 * DAY_MS);
    }
    for e in finished_step(32) {
        send(&e, now - 2 * DAY_MS);
    }
    send(&step_event(33, 2), now - 40 * DAY_MS);
    send(&targets(33, 0, &[(1, 0, "10.0.0.1")]), now - 40 * DAY_MS);
    send(&Event::HostResult(result(33, 0, 0, 1, 7, "", 1)), now);
    producer.flush(Duration::from_secs(30)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.kafka.brokers = brokers().to_owned();
    config.kafka.topic = topic.clone();
    config.kafka.ready_max_lag = 0;
    let svc = TestService::start(config).await;
    svc.wait_readyz(200, Duration::from_secs(60)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while svc.get(&q(31, "")).await.1["code"] != 1244007 {
        assert!(
            std::time::Instant::now() < deadline,
            "a 40-day-old step was still answered: it took the clock of what came with it"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(svc.get(&q(32, "")).await.1["code"], 0);
    assert_eq!(svc.get(&q(33, "")).await.1["code"], 0);
}
