//! Operating surface: `/healthz`, `/readyz` across catching up and failing applies, and the
//! metrics that must follow.

mod common;

use common::*;
use std::time::Duration;
use stepview::simulate::{self, Workload};
use stepview::store::keys::RowKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_catching_up_and_failing_applies() {
    let topic = unique_name("ready");
    let group = unique_name("g");
    let events = simulate::generate(&Workload {
        jobs: 2,
        steps_per_job: 3,
        hosts: 2000,
        ..Workload::default()
    });
    create_topic(&topic).await;
    let messages = simulate::to_messages(&events);
    let producing = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || {
            simulate::produce(
                &stepview::kafka::KafkaSettings::of(brokers(), &topic),
                &messages,
                0,
                false,
            )
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
    let (status, text) = svc.get_path("/readyz").await;
    assert_eq!(
        (status, text.as_str()),
        (503, "not ready: catching up with the topic\n")
    );
    assert_eq!(svc.metric("stepview_ready").await, Some(0.0));
    svc.wait_readyz(200, Duration::from_secs(120)).await;
    assert_eq!(svc.metric("stepview_ready").await, Some(1.0));
    let rows = events
        .iter()
        .filter_map(|e| match e {
            stepview::events::Event::StepTargets(t) => Some(t.hosts.len()),
            _ => None,
        })
        .sum::<usize>();
    // Steps are in memory once queried (nothing is loaded before).
    assert_eq!(svc.metric("stepview_index_steps").await, Some(0.0));
    for (job, step) in steps_of(&events) {
        let q = format!(
            "bk_scope_type=biz&bk_scope_id=2&job_instance_id={job}&step_instance_id={step}&max_host_num_per_group=0"
        );
        assert_eq!(svc.get(&q).await.1["code"], 0);
    }
    assert_eq!(svc.metric("stepview_index_hosts").await, Some(rows as f64));
    assert_eq!(svc.metric("stepview_index_steps").await, Some(6.0));
    assert_eq!(svc.metric("stepview_index_loads_total").await, Some(6.0));
    assert!(svc.metric("stepview_index_memory_bytes").await.unwrap() > rows as f64);

    // Requests are counted by route, HTTP status and API code; RocksDB, build and process
    // figures are exposed.
    let q = "bk_scope_type=biz&bk_scope_id=2&job_instance_id=1&step_instance_id=101";
    svc.get(q).await;
    svc.get_path(&format!("/api/v3/system/get_step_instance_status?{q}"))
        .await;
    let text = svc.scrape().await;
    let requests = |route: &str, status: u16, code: i64| {
        let series = format!(
            "stepview_http_requests_total{{code=\"{code}\",route=\"{route}\",status=\"{status}\"}}"
        );
        metric_value(&text, &series)
    };
    // The six loading queries above, and this one.
    assert_eq!(
        requests("/api/v3/get_step_instance_status", 200, 0),
        Some(7.0)
    );
    assert_eq!(
        requests("/api/v3/system/get_step_instance_status", 401, 1240005),
        Some(1.0)
    );
    let route = "route=\"/api/v3/get_step_instance_status\"";
    let latency = format!("stepview_http_request_duration_seconds_count{{{route}}}");
    assert_eq!(metric_value(&text, &latency), Some(7.0));
    let rocksdb = |property: &str| {
        metric_value(
            &text,
            &format!("stepview_rocksdb{{property=\"{property}\"}}"),
        )
        .unwrap()
    };
    assert!(rocksdb("estimate_keys") >= rows as f64);
    assert!(rocksdb("block_cache_usage_bytes") > 0.0);
    assert_eq!(rocksdb("write_stopped"), 0.0);
    for series in [
        "live_sst_bytes",
        "pending_compaction_bytes",
        "delayed_write_rate",
    ] {
        rocksdb(series);
    }
    let version = env!("CARGO_PKG_VERSION");
    let build = format!("stepview_build_info{{version=\"{version}\"}}");
    assert_eq!(metric_value(&text, &build), Some(1.0));
    assert!(metric_value(&text, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(metric_value(&text, "process_open_fds").unwrap() > 0.0);
    assert!(metric_value(&text, "process_cpu_seconds_total").is_some());

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
        let cfs = [
            "steps",
            "hosts",
            "logs",
            "jobs",
            "job_steps",
            "meta",
            "clocks",
        ];
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
    svc.wait_readyz(200, Duration::from_secs(60)).await;
    let mut newer = victim.clone();
    newer.version += 10;
    let message = simulate::to_messages(&[stepview::events::Event::HostResult(newer)]);
    let topic2 = topic.clone();
    tokio::task::spawn_blocking(move || {
        simulate::produce(
            &stepview::kafka::KafkaSettings::of(brokers(), &topic2),
            &message,
            0,
            false,
        )
    })
    .await
    .unwrap()
    .unwrap();
    let seen = svc.wait_readyz(503, Duration::from_secs(60)).await;
    // What fails, in the store's words, and that it is being retried.
    let last = seen.last().unwrap();
    assert!(
        last.starts_with(
            "not ready: applying events fails, and is retried until it succeeds: corrupt host row"
        ),
        "{last}"
    );
    assert!(svc.metric("stepview_apply_failures_total").await.unwrap() >= 1.0);
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
