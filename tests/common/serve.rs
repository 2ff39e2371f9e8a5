//! `stepview serve` on a real broker, as an operator runs it: a process, its lag as `/metrics`
//! reports it, and the digest a replay of the same topic gives.

use super::{brokers, test_config};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use stepview::config::Config;

/// A config that consumes `topic` on the shared test broker as `group`.
pub fn kafka_config(dir: &std::path::Path, topic: &str, group: &str) -> Config {
    let mut c = test_config(dir);
    c.kafka.brokers = brokers().to_owned();
    c.kafka.topic = topic.to_owned();
    c.kafka.group_id = group.to_owned();
    c.kafka.batch_max = 500;
    c
}

/// Replays `topic` into a fresh directory; the events read and the digest.
pub async fn replay_digest(topic: &str) -> (u64, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = kafka_config(dir.path(), topic, "unused");
    tokio::task::spawn_blocking(move || {
        let views = stepview::service::Views::open(&cfg).unwrap();
        let s = stepview::ingest::replay::replay(&cfg.kafka, &views.sink, false).unwrap();
        (s.messages, views.store.digest().unwrap())
    })
    .await
    .unwrap()
}

/// `stepview serve` on `dir`, consuming `topic` from `brokers`, authentication off, with
/// `settings` flags.
pub fn spawn_serve(
    dir: &std::path::Path,
    brokers: &str,
    topic: &str,
    port: u16,
    settings: &[&str],
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_stepview"))
        .args(["serve", "--auth", "false"])
        .args(settings)
        .args(["--data-dir", dir.to_str().unwrap(), "--brokers", brokers])
        .args(["--topic", topic, "--listen", &format!("127.0.0.1:{port}")])
        .env("STEPVIEW_LOG", "warn")
        .spawn()
        .unwrap()
}

/// Per-partition consumer lag as `/metrics` reports it, once all `partitions` have a figure.
pub async fn reported_lag(port: u16, partitions: usize) -> Option<HashMap<String, i64>> {
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
    (lag.len() == partitions).then_some(lag)
}

/// Waits (up to two minutes) until the instance on `port` lags by nothing on all `partitions`.
pub async fn wait_lag_zero(port: u16, partitions: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lag = reported_lag(port, partitions).await;
        if lag.as_ref().is_some_and(|l| l.values().all(|v| *v == 0)) {
            return;
        }
        assert!(Instant::now() < deadline, "did not catch up: lag {lag:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
