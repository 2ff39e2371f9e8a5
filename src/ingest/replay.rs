//! Replay: rebuild every view from the topic's earliest retained offset into a data directory,
//! reading each partition up to the high watermark seen at start. Bad events are counted, not
//! dead-lettered again (the live service did that). Progress and throughput are shown.

use super::kafka::{consumer_config, decode_batch, stored_offsets};
use super::Sink;
use crate::config::KafkaConfig;
use crate::store::Store;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct ReplaySummary {
    pub messages: u64,
    pub bad: u64,
    pub seconds: f64,
}

pub fn replay(
    cfg: &KafkaConfig,
    sink: &Sink,
    store: &Store,
    show_progress: bool,
) -> Result<ReplaySummary> {
    let group = format!("stepview-replay-{}", hex::encode(rand::random::<[u8; 6]>()));
    let consumer: BaseConsumer = consumer_config(&cfg.brokers, &group)
        .create()
        .context("cannot create Kafka consumer")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(&cfg.topic), timeout)
        .with_context(|| format!("cannot read metadata of {} from {}", cfg.topic, cfg.brokers))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == cfg.topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic {} has no partitions (does it exist?)",
        cfg.topic
    );
    // A resumed replay continues from what the directory already holds.
    let stored = stored_offsets(store, &cfg.topic);
    let mut end: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    let mut total = 0u64;
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(&cfg.topic, p, timeout)?;
        let start = stored.get(&p).copied().unwrap_or(low).max(low);
        if start < high {
            end.insert(p, high);
            total += (high - start) as u64;
            tpl.add_partition_offset(&cfg.topic, p, Offset::Offset(start))?;
        }
    }
    consumer.assign(&tpl)?;
    let bar = if show_progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replay [{elapsed_precise}] {wide_bar} {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    let started = Instant::now();
    let never = AtomicBool::new(false);
    let mut summary = ReplaySummary {
        messages: 0,
        bad: 0,
        seconds: 0.0,
    };
    let mut idle_since = Instant::now();
    while !end.is_empty() {
        let mut msgs = Vec::new();
        let mut wait = Duration::from_millis(200);
        while msgs.len() < cfg.batch_max {
            match consumer.poll(wait) {
                Some(Ok(m)) => msgs.push(m),
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                None => break,
            }
            wait = Duration::ZERO;
        }
        if msgs.is_empty() {
            // Retention may have removed the tail end; give up on silence rather than hang.
            anyhow::ensure!(
                idle_since.elapsed() < Duration::from_secs(30),
                "no messages for 30 s with {} partition(s) short of their end",
                end.len()
            );
            continue;
        }
        idle_since = Instant::now();
        msgs.retain(|m| {
            end.get(&m.partition())
                .is_some_and(|high| m.offset() < *high)
        });
        let decoded = decode_batch(&msgs);
        for (_, bad) in &decoded.bad {
            sink.record_bad(bad);
        }
        sink.apply(&decoded.events, &decoded.offsets, &never);
        summary.messages += msgs.len() as u64;
        summary.bad += decoded.bad.len() as u64;
        bar.inc(msgs.len() as u64);
        for o in &decoded.offsets {
            if end.get(&o.partition).is_some_and(|high| o.next >= *high) {
                end.remove(&o.partition);
            }
        }
    }
    bar.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
