//! Operating surface: `/healthz`, `/readyz` across catching up and failing applies, and the
//! metrics that must follow.

mod common;

use common::*;
use std::time::{Duration, Instant};
use stepview::ingest::kafka::{ensure_topics, DEFAULT_PARTITIONS};
use stepview::simulate::{self, Workload};
use stepview::store::keys::RowKey;

async fn readyz(svc: &TestService) -> (u16, String) {
    let resp = svc
        .client
        .get(format!("{}/readyz", svc.base))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn metric(svc: &TestService, series: &str) -> Option<f64> {
    let text = svc.scrape().await;
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

/// Polls `/readyz` until it answers `status`; returns what it said on the way.
async fn wait_readyz(svc: &TestService, status: u16, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let (s, text) = readyz(svc).await;
        if seen.last() != Some(&text) {
            seen.push(text);
        }
        if s == status {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {status}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_catching_up_and_failing_applies() {
    let topic = unique_topic("ready");
    let group = unique_topic("g");
    let events = simulate::generate(&Workload {
        jobs: 2,
        steps_per_job: 3,
        hosts: 2000,
        ..Workload::default()
    });
    ensure_topics(brokers(), &[&topic], DEFAULT_PARTITIONS)
        .await
        .unwrap();
    let messages = simulate::to_messages(&events);
    let producing = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || {
            simulate::produce(brokers(), &topic, &messages, 0, false)
        })
    };
    producing.await.unwrap().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.kafka.brokers = brokers().to_owned();
    config.kafka.topic = topic.clone();
    config.kafka.group_id = group;
    config.kafka.batch_max = 100;
    config.kafka.ready_max_lag = 0;
    let svc = TestService::start(config).await;

    // Alive at once; ready only when every partition has caught up.
    let alive = svc
        .client
        .get(format!("{}/healthz", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(alive.status(), 200);
    let (status, text) = readyz(&svc).await;
    assert_eq!(
        (status, text.as_str()),
        (503, "not ready: catching up with the topic\n")
    );
    assert_eq!(metric(&svc, "stepview_ready").await, Some(0.0));
    wait_readyz(&svc, 200, Duration::from_secs(120)).await;
    assert_eq!(metric(&svc, "stepview_ready").await, Some(1.0));
    let rows = events
        .iter()
        .filter_map(|e| match e {
            stepview::events::Event::StepTargets(t) => Some(t.hosts.len()),
            _ => None,
        })
        .sum::<usize>();
    assert_eq!(
        metric(&svc, "stepview_index_hosts").await,
        Some(rows as f64)
    );
    assert_eq!(metric(&svc, "stepview_index_steps").await, Some(6.0));
    assert!(metric(&svc, "stepview_index_memory_bytes").await.unwrap() > rows as f64);

    // Damage one stored host row on disk (its head still reads, the rest does not), restart, and
    // send an event for that host: applying fails, and readiness says so.
    let config = svc.stop().await;
    let victim = events
        .iter()
        .find_map(|e| match e {
            stepview::events::Event::HostResult(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    {
        let cfs = ["steps", "hosts", "logs", "meta"];
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs).unwrap();
        let key = RowKey::of_event(
            victim.step_instance_id,
            victim.execute_count,
            victim.batch,
            victim.bk_host_id,
        );
        // status 9 (zigzag 18), empty tag, then nothing: a truncated row.
        db.put_cf(db.cf_handle("hosts").unwrap(), key.to_bytes(), [18u8, 0])
            .unwrap();
    }
    let svc = TestService::start(config).await;
    wait_readyz(&svc, 200, Duration::from_secs(60)).await;
    let mut newer = victim.clone();
    newer.version += 10;
    let message = simulate::to_messages(&[stepview::events::Event::HostResult(newer)]);
    let topic2 = topic.clone();
    tokio::task::spawn_blocking(move || simulate::produce(brokers(), &topic2, &message, 0, false))
        .await
        .unwrap()
        .unwrap();
    let seen = wait_readyz(&svc, 503, Duration::from_secs(60)).await;
    assert_eq!(seen.last().unwrap(), "not ready: applying events fails\n");
    assert!(metric(&svc, "stepview_apply_failures_total").await.unwrap() >= 1.0);
    // Other steps are still answered from what is stored.
    let other = events
        .iter()
        .find_map(|e| match e {
            stepview::events::Event::Step(s) if s.step_instance_id != victim.step_instance_id => {
                Some(s.clone())
            }
            _ => None,
        })
        .unwrap();
    let q = format!(
        "bk_scope_type=biz&bk_scope_id=2&job_instance_id={}&step_instance_id={}&max_host_num_per_group=1",
        other.job_instance_id, other.step_instance_id
    );
    assert_eq!(svc.get(&q).await.1["code"], 0);
    // And a stop during the retries is still clean.
    svc.stop().await;
}
