//! Replay: rebuild every view from the topic's earliest retained offset into a data directory,
//! reading each partition up to the high watermark first reported after the replay starts. Bad
//! events are counted, not dead-lettered again (the live service did that). Progress and
//! throughput are shown.

use super::kafka::read::{decode_batch, poll_batch, BatchLimit};
use super::Sink;
use crate::kafka::KafkaSettings;
use crate::kafka::{admin, consumer_config, WatermarkContext, Watermarks};
use crate::shutdown::Shutdown;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct ReplaySummary {
    pub messages: u64,
    pub bad: u64,
    pub seconds: f64,
}

/// Where one partition's replay stands.
struct Progress {
    /// Next offset to apply; `None` until the partition's low watermark is known.
    next: Option<i64>,
    /// The high watermark first reported after assignment: replay stops there.
    end: Option<i64>,
}

impl Progress {
    fn done(&self) -> bool {
        matches!((self.next, self.end), (Some(next), Some(end)) if next >= end)
    }
}

pub fn replay(cfg: &KafkaSettings, sink: &Sink, show_progress: bool) -> Result<ReplaySummary> {
    let group = format!("stepview-replay-{}", hex::encode(rand::random::<[u8; 6]>()));
    let consumer: BaseConsumer<WatermarkContext> = consumer_config(cfg, &group, 100)
        .create_with_context(WatermarkContext(Watermarks::new(&cfg.topic)))
        .context("cannot create Kafka consumer")?;
    let partitions = admin::partitions(consumer.client(), &cfg.topic, Duration::from_secs(10))
        .with_context(|| {
            format!(
                "cannot read the partitions of {} from {}",
                cfg.topic, cfg.brokers
            )
        })?;
    // A resumed replay continues from what the directory already holds.
    let stored = sink.applier.resume_offsets(&cfg.topic)?;
    let mut tpl = TopicPartitionList::new();
    let mut pending: BTreeMap<i32, Progress> = BTreeMap::new();
    for p in partitions {
        let next = stored.get(&p).copied();
        tpl.add_partition_offset(
            &cfg.topic,
            p,
            next.map_or(Offset::Beginning, Offset::Offset),
        )?;
        pending.insert(p, Progress { next, end: None });
    }
    consumer.assign(&tpl)?;
    let bar = if show_progress {
        ProgressBar::new(0)
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
    let never = Shutdown::new();
    let mut summary = ReplaySummary {
        messages: 0,
        bad: 0,
        seconds: 0.0,
    };
    let mut idle_since = Instant::now();
    while !pending.is_empty() {
        let mut msgs = poll_batch(&consumer, BatchLimit::of(cfg));
        for (p, progress) in pending.iter_mut().filter(|(_, pr)| pr.end.is_none()) {
            if let Some((low, high)) = consumer.context().0.get(*p) {
                let next = *progress.next.get_or_insert(low);
                progress.end = Some(high);
                bar.inc_length(high.saturating_sub(next).max(0) as u64);
            }
        }
        // Messages past a partition's end arrived after the replay began: not ours to apply.
        msgs.retain(|m| {
            pending
                .get(&m.partition())
                .is_some_and(|pr| pr.end.is_none_or(|end| m.offset() < end))
        });
        if msgs.is_empty() {
            // Nothing fetched: the consumer's position (which skips transaction markers and
            // compacted gaps) says whether a partition is at its end.
            if let Ok(positions) = consumer.position() {
                for e in positions.elements_for_topic(&cfg.topic) {
                    if let (Offset::Offset(at), Some(pr)) =
                        (e.offset(), pending.get_mut(&e.partition()))
                    {
                        pr.next = Some(pr.next.map_or(at, |n| n.max(at)));
                    }
                }
            }
            pending.retain(|_, pr| !pr.done());
            // Retention may have removed the tail end; give up on silence rather than hang.
            anyhow::ensure!(
                pending.is_empty() || idle_since.elapsed() < Duration::from_secs(30),
                "no messages for 30 s with {} partition(s) short of their end",
                pending.len()
            );
            continue;
        }
        idle_since = Instant::now();
        let (decoded, bad) = decode_batch(&msgs, None);
        for (_, reason) in &bad {
            sink.record_bad(reason);
        }
        sink.record_cuts(&decoded.cuts);
        sink.apply(&decoded.as_batch(), &never);
        summary.messages += msgs.len() as u64;
        summary.bad += bad.len() as u64;
        bar.inc(msgs.len() as u64);
        for o in &decoded.offsets {
            if let Some(pr) = pending.get_mut(&o.partition) {
                pr.next = Some(o.next);
            }
        }
        pending.retain(|_, pr| !pr.done());
    }
    bar.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
