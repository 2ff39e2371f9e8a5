//! The members topic (`<topic>.members`, compacted, one partition): this instance's entry,
//! keyed by its URL, written on every change and at least every second, and a tombstone on a
//! clean shutdown; every other member's entry heard as it comes. Every record carries the MAC
//! of the members' secret; a record without a valid one is ignored and counted. The topic is
//! read from its end: a live member writes again within a second, so nothing older is needed
//! (and a broker that never compacts does not make start-up slower).

use super::secret::RECORD_MAC_HEADER;
use super::{Cluster, Entry};
use crate::kafka::KafkaSettings;
use crate::kafka::{admin, client_config};
use crate::shutdown::Shutdown;
use crate::telemetry::cluster::RecordIgnored;
use crate::telemetry::Telemetry;
use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// How often ownership is decided again; the entry is written when it changes, and at least
/// every second.
const TICK: Duration = Duration::from_millis(100);
const REFRESH: Duration = Duration::from_secs(1);

pub fn topic(cfg: &KafkaSettings) -> String {
    format!("{}.members", cfg.topic)
}

/// Publishes this instance's entry and hears the others' until `shutdown`, then leaves with a
/// tombstone. `dropped` is told the partitions this instance has stopped serving. An error
/// means membership has stopped for good (the service then stops: a supervisor restarts it).
pub fn run(
    cfg: &KafkaSettings,
    cluster: &Cluster,
    telemetry: &Telemetry,
    dropped: impl Fn(&[i32]),
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
            ("fetch.wait.max.ms", "20"),
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
    let mut published: Option<(Entry, Instant)> = None;
    let mut next_tick = Instant::now();
    while !shutdown.is_triggered() {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
            if let Err(ignored) = hear(cluster, &m) {
                ignored.emit(telemetry);
            }
        }
        if Instant::now() < next_tick {
            continue;
        }
        next_tick = Instant::now() + TICK;
        for p in cluster.ends_wanted() {
            // Fresh from the broker, at the moment of the takeover (cluster.md).
            match consumer.fetch_watermarks(&cfg.topic, p, Duration::from_secs(2)) {
                Ok((_, end)) => cluster.listed_end(p, end),
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot list a partition's end")
                }
            }
        }
        let (entry, left) = cluster.tick(crate::now_ms());
        if !left.is_empty() {
            tracing::info!(partitions = ?left, "partitions no longer served here");
            dropped(&left);
        }
        let changed = published.as_ref().is_none_or(|(last, at)| {
            last.serving != entry.serving
                || last.claims != entry.claims
                || last.releasing != entry.releasing
                || last.progress.keys().ne(entry.progress.keys())
                || last.leaving != entry.leaving
                || at.elapsed() >= REFRESH
        });
        if changed {
            let value = serde_json::to_vec(&entry).expect("entries serialize");
            publish(&producer, &topic, cluster, Some(&value));
            published = Some((entry, Instant::now()));
        }
        producer.poll(Duration::ZERO);
    }
    // Leaving cleanly: the others take over at once instead of after the TTL.
    publish(&producer, &topic, cluster, None);
    let _ = producer.flush(Duration::from_secs(5));
    Ok(())
}

/// Writes this instance's entry (a tombstone when `value` is `None`), signed.
fn publish(producer: &BaseProducer, topic: &str, cluster: &Cluster, value: Option<&[u8]>) {
    let mac = cluster
        .secret
        .record_mac(cluster.me.as_bytes(), value.unwrap_or_default());
    let headers = OwnedHeaders::new().insert(Header {
        key: RECORD_MAC_HEADER,
        value: Some(&mac[..]),
    });
    let mut record = BaseRecord::<str, [u8]>::to(topic)
        .key(&cluster.me)
        .headers(headers);
    if let Some(value) = value {
        record = record.payload(value);
    }
    if let Err((e, _)) = producer.send(record) {
        tracing::warn!(error = %e, "cannot write this instance's members entry");
    }
}

/// Takes one record of the members topic; why it was ignored, if it was.
fn hear(cluster: &Cluster, m: &impl Message) -> Result<(), RecordIgnored> {
    let key = m.key().ok_or(RecordIgnored::Malformed)?;
    let value = m.payload();
    let entry = match value {
        None => None,
        Some(v) => Some(serde_json::from_slice::<Entry>(v).map_err(|_| RecordIgnored::Malformed)?),
    };
    // Another shard set on the same topic signs with its own secret.
    if entry.as_ref().is_some_and(|e| e.cluster != cluster.name) {
        return Err(RecordIgnored::OtherSet);
    }
    let mac = m
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == RECORD_MAC_HEADER))
        .and_then(|h| h.value)
        .ok_or(RecordIgnored::Unsigned)?;
    if !cluster
        .secret
        .record_signed(key, value.unwrap_or_default(), mac)
    {
        return Err(RecordIgnored::BadSignature);
    }
    let url = std::str::from_utf8(key).map_err(|_| RecordIgnored::Malformed)?;
    if cluster.heard(url, entry, crate::now_ms()) {
        Ok(())
    } else {
        Err(RecordIgnored::Stale)
    }
}
