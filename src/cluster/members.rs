//! The members topic (`<topic>.members`, compacted, one partition): this instance's entry,
//! keyed by its URL, written every second and on every change, and a tombstone on a clean
//! shutdown; every other member's entry heard as it comes. The topic is read from its end: a
//! live member writes again within a second, so nothing older is needed (and a broker that never
//! compacts does not make start-up slower).

use super::{Cluster, Entry};
use crate::config::KafkaConfig;
use crate::ingest::kafka::admin;
use crate::ingest::kafka::read::client_config;
use crate::shutdown::Shutdown;
use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// How often ownership is decided again; the entry is written when it changes, and at least
/// every second.
const TICK: Duration = Duration::from_millis(250);
const REFRESH: Duration = Duration::from_secs(1);

pub fn topic(cfg: &KafkaConfig) -> String {
    format!("{}.members", cfg.topic)
}

/// Publishes this instance's entry and hears the others' until `shutdown`, then leaves with a
/// tombstone. `left` is told the partitions this instance has handed off.
pub fn run(
    cfg: &KafkaConfig,
    cluster: &Cluster,
    left: impl Fn(&[i32]),
    shutdown: &Shutdown,
) -> Result<()> {
    let topic = topic(cfg);
    let producer: BaseProducer = client_config(cfg, &[("linger.ms", "0")])
        .create()
        .context("cannot create the members topic's producer")?;
    let consumer: BaseConsumer = client_config(
        cfg,
        &[
            ("group.id", "stepview-members"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "latest"),
            ("fetch.wait.max.ms", "50"),
        ],
    )
    .create()
    .context("cannot create the members topic's consumer")?;
    let partitions = loop {
        match admin::partitions(consumer.client(), &topic, Duration::from_secs(5)) {
            Ok(p) => break p,
            Err(e) if !shutdown.sleep(REFRESH) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot read the members topic; trying again"
                );
            }
            Err(_) => return Ok(()),
        }
    };
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(&topic, p, Offset::End)?;
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let mut published: Option<(Entry, Instant)> = None;
    let mut next_tick = Instant::now();
    while !shutdown.is_triggered() {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            let url = m.key().map(String::from_utf8_lossy);
            let entry = m.payload().map(serde_json::from_slice::<Entry>);
            // At start the topic's end may come with a few entries of the past: only entries
            // written in the last TTL count as signs of life.
            let stale = started.elapsed() < super::MEMBER_TTL
                && m.timestamp()
                    .to_millis()
                    .is_some_and(|t| crate::now_ms() - t > super::MEMBER_TTL.as_millis() as i64);
            match (url, entry) {
                (Some(url), Some(Ok(entry))) if !stale => cluster.heard(&url, Some(entry)),
                (Some(url), None) => cluster.heard(&url, None),
                _ => {}
            }
        }
        if Instant::now() < next_tick {
            continue;
        }
        next_tick = Instant::now() + TICK;
        let (entry, handed_off) = cluster.tick(crate::now_ms());
        if !handed_off.is_empty() {
            tracing::info!(partitions = ?handed_off, "partitions handed off to their new owners");
            left(&handed_off);
        }
        let changed = published.as_ref().is_none_or(|(last, at)| {
            last.serving != entry.serving
                || last.progress.keys().ne(entry.progress.keys())
                || at.elapsed() >= REFRESH
        });
        if changed {
            let value = serde_json::to_vec(&entry).expect("entries serialize");
            let record = BaseRecord::<str, [u8]>::to(&topic)
                .key(&cluster.me)
                .payload(&value);
            if let Err((e, _)) = producer.send(record) {
                tracing::warn!(error = %e, "cannot write this instance's members entry");
            }
            published = Some((entry, Instant::now()));
        }
        producer.poll(Duration::ZERO);
    }
    // Leaving cleanly: the others take over at once instead of after the TTL.
    let tombstone = BaseRecord::<str, [u8]>::to(&topic).key(&cluster.me);
    if producer.send(tombstone).is_ok() {
        let _ = producer.flush(Duration::from_secs(5));
    }
    Ok(())
}
