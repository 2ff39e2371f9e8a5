//! The live source: reads every partition of the events topic, with exactly-once effect.
//!
//! stepview assigns its partitions to itself (architecture.md, "Durability"): no group session
//! that a broker outage or a slow batch could time out, so ingest simply resumes when the broker
//! answers again. Every partition starts at the offset stored with the views in RocksDB (or the
//! earliest retained one); partitions added to the topic later are picked up. Offsets are also
//! committed under `group_id`, for lag tools only.
//!
//! Two threads, so that decoding the next batch overlaps applying this one: the fetcher polls,
//! decodes, dead-letters, commits and reports; the applier applies, one batch in flight at
//! most. Before the assignment changes, what is in flight is applied first, so that a partition
//! is only ever sought to the offset that the store holds.

use super::admin;
use super::dead_letter::DeadLetters;
use super::read::{
    consumer_config, decode_batch, poll_batch, BatchLimit, DecodedBatch, WatermarkContext,
    Watermarks,
};
use crate::apply::SourceOffset;
use crate::cluster::{Cluster, Progress};
use crate::config::KafkaConfig;
use crate::ingest::Sink;
use crate::shutdown::Shutdown;
use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::{Duration, Instant};

/// How often the topic's partition list is read again (partitions added later are picked up).
const PARTITIONS_EVERY: Duration = Duration::from_secs(10);
/// How often lag and readiness are reported (librdkafka's statistics come as often).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Thread names, as `top -H` and profilers show them: the caller of [`run`] is the fetcher.
pub const FETCHER_THREAD: &str = "ingest-fetch";
pub const APPLIER_THREAD: &str = "ingest-apply";

/// Consumes the events topic until `shutdown`; then finishes the batch in hand. Runs on a thread
/// of its own (librdkafka and RocksDB calls block). A shard (`cluster`) reads the partitions the
/// cluster gives it, and dead-letters events that sit in another partition than their key's. An
/// error (the applier thread panicked, a client could not be made) means ingest has stopped for
/// good.
pub fn run(
    cfg: &KafkaConfig,
    sink: &Sink,
    cluster: Option<&Cluster>,
    shutdown: &Shutdown,
) -> Result<()> {
    let consumer: BaseConsumer<WatermarkContext> = consumer_config(cfg, &cfg.group_id, 1000)
        .create_with_context(WatermarkContext(Watermarks::new(&cfg.topic)))
        .context("cannot create the Kafka consumer")?;
    let dead_letters = DeadLetters::new(cfg, std::sync::Arc::clone(&sink.metrics))?;
    let (to_apply, applying) = std::sync::mpsc::sync_channel::<DecodedBatch>(1);
    let (to_fetcher, applied) = std::sync::mpsc::channel::<Vec<SourceOffset>>();
    std::thread::scope(|scope| {
        let applier = std::thread::Builder::new()
            .name(APPLIER_THREAD.into())
            .spawn_scoped(scope, || {
                apply_batches(applying, to_fetcher, sink, shutdown)
            })
            .context("cannot start the applier thread")?;
        let mut fetcher = Fetcher {
            cfg,
            sink,
            cluster,
            consumer: &consumer,
            positions: BTreeMap::new(),
            in_flight: 0,
            applied,
        };
        fetcher.run(&to_apply, &dead_letters, shutdown);
        // The batch in hand is finished (or given up, when stopping) before the fetcher goes.
        drop(to_apply);
        let joined = applier.join();
        fetcher.take_applied();
        joined.map_err(applier_panicked)
    })?;
    tracing::info!("Kafka source stopped");
    Ok(())
}

/// A panic of the applier thread, as the error that stops ingest (and the process).
fn applier_panicked(panic: Box<dyn std::any::Any + Send>) -> anyhow::Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    anyhow::anyhow!("the applier thread panicked: {what}")
}

/// The fetching side: what is assigned, where each partition stands, what is in flight.
struct Fetcher<'a> {
    cfg: &'a KafkaConfig,
    sink: &'a Sink,
    cluster: Option<&'a Cluster>,
    consumer: &'a BaseConsumer<WatermarkContext>,
    /// Per read partition, the next offset to apply (`None`: nothing stored, the log start).
    positions: BTreeMap<i32, Option<i64>>,
    /// Batches handed to the applier and not yet reported applied.
    in_flight: usize,
    applied: Receiver<Vec<SourceOffset>>,
}

impl Fetcher<'_> {
    fn run(&mut self, to_apply: &SyncSender<DecodedBatch>, dlq: &DeadLetters, stop: &Shutdown) {
        let limit = BatchLimit::of(self.cfg);
        let mut read_partitions_at = Instant::now();
        let mut report_at = Instant::now();
        while !stop.is_triggered() {
            self.take_applied();
            if Instant::now() >= read_partitions_at {
                // Until the list could be read (at start, the topic may not be there yet):
                // again in a second.
                // A shard follows the cluster's decisions, which change by the second.
                let wait = if self.follow_partitions(stop) && self.cluster.is_none() {
                    PARTITIONS_EVERY
                } else {
                    REPORT_EVERY / 4
                };
                read_partitions_at = Instant::now() + wait;
            }
            let mut msgs = poll_batch(self.consumer, limit);
            msgs.retain(|m| self.positions.contains_key(&m.partition()));
            if !msgs.is_empty() {
                let (batch, bad) = decode_batch(&msgs, self.cluster);
                if !bad.is_empty() && !dlq.send(&bad, stop) {
                    return; // stopping: the batch is read again after restart
                }
                for (_, reason) in &bad {
                    self.sink.record_bad(reason);
                }
                self.sink.record_cuts(&batch.cuts);
                if to_apply.send(batch).is_err() {
                    return; // the applier is gone: stopping, or it panicked
                }
                self.in_flight += 1;
            }
            if Instant::now() >= report_at {
                self.report();
                report_at = Instant::now() + REPORT_EVERY;
            }
        }
    }

    /// Takes the applier's reports so far.
    fn take_applied(&mut self) {
        let reports: Vec<Vec<SourceOffset>> = self.applied.try_iter().collect();
        self.settle(reports);
    }

    /// Waits until every batch handed to the applier is applied (or stopping gives up on them).
    fn drain(&mut self, stop: &Shutdown) {
        while self.in_flight > 0 && !stop.is_triggered() {
            match self.applied.recv_timeout(Duration::from_millis(100)) {
                Ok(offsets) => self.settle(vec![offsets]),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Applied batches: positions move on, and are committed for lag tools.
    fn settle(&mut self, reports: Vec<Vec<SourceOffset>>) {
        let mut tpl = TopicPartitionList::new();
        for offsets in reports {
            self.in_flight -= 1;
            for o in offsets {
                if let Some(at) = self.positions.get_mut(&o.partition) {
                    *at = Some(o.next);
                    let _ = tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.next));
                }
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "offset commit to Kafka failed (lag tooling only)");
            }
        }
    }

    /// Reads the topic's partitions and assigns the ones not read yet, each from its stored
    /// offset; true once the list was read.
    fn follow_partitions(&mut self, stop: &Shutdown) -> bool {
        let mut wanted: BTreeSet<i32> =
            match admin::partitions(self.consumer.client(), &self.cfg.topic, REPORT_EVERY * 5) {
                Ok(ids) => ids.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "cannot list the topic's partitions; trying again"
                    );
                    return false;
                }
            };
        if let Some(cluster) = self.cluster {
            cluster.set_partitions(wanted.len() as i32);
            wanted = wanted.intersection(&cluster.reading()).copied().collect();
        }
        let read: BTreeSet<i32> = self.positions.keys().copied().collect();
        let added: Vec<i32> = wanted.difference(&read).copied().collect();
        let removed: Vec<i32> = read.difference(&wanted).copied().collect();
        if added.is_empty() && removed.is_empty() {
            return true;
        }
        self.drain(stop);
        if let Err(e) = self.reassign(&added, &removed) {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot change the assigned partitions; trying again"
            );
            return false;
        }
        tracing::info!(?added, ?removed, read = ?self.positions.keys().collect::<Vec<_>>(), "partitions assigned");
        true
    }

    fn reassign(&mut self, added: &[i32], removed: &[i32]) -> Result<()> {
        let topic = &self.cfg.topic;
        if !removed.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for p in removed {
                tpl.add_partition(topic, *p);
            }
            self.consumer.incremental_unassign(&tpl)?;
            for p in removed {
                self.positions.remove(p);
                self.sink.metrics.forget_partition(topic, *p);
            }
        }
        if !added.is_empty() {
            let stored = self.sink.applier.resume_offsets(topic)?;
            let mut tpl = TopicPartitionList::new();
            for p in added {
                let at = stored.get(p).copied();
                tpl.add_partition_offset(topic, *p, at.map_or(Offset::Beginning, Offset::Offset))?;
                self.positions.insert(*p, at);
            }
            self.consumer.incremental_assign(&tpl)?;
        }
        Ok(())
    }

    /// Lag per partition, and to readiness: when every end was last seen, and whether every
    /// partition is within `ready_max_lag`.
    fn report(&self) {
        let watermarks = &self.consumer.context().0;
        let mut ends_seen: Option<Instant> = None;
        let mut all_seen = !self.positions.is_empty();
        let mut max_lag = 0;
        for (p, next) in &self.positions {
            let Some(ends) = watermarks.ends(*p) else {
                all_seen = false;
                continue;
            };
            if next.is_some_and(|n| n < ends.low) {
                tracing::error!(
                    partition = p,
                    next = next.unwrap_or(0),
                    log_start = ends.low,
                    "the topic dropped events that were never applied (its retention is \
                     shorter than the time stepview was behind); reading on from the log start"
                );
            }
            let next = next.unwrap_or(ends.low).max(ends.low);
            let lag = (ends.high - next).max(0);
            if let Some(cluster) = self.cluster {
                let progress = Progress {
                    next,
                    end: ends.high,
                };
                cluster.report_progress(*p, progress);
            }
            self.sink
                .metrics
                .consumer_lag
                .with_label_values(&[&self.cfg.topic, &p.to_string()])
                .set(lag);
            max_lag = max_lag.max(lag);
            ends_seen = Some(ends_seen.map_or(ends.seen, |s| s.min(ends.seen)));
        }
        let ends_seen = ends_seen.filter(|_| all_seen);
        // A shard reading no partition right now has nothing to catch up with.
        let ends_seen = match (self.positions.is_empty(), self.cluster) {
            (true, Some(_)) => Some(Instant::now()),
            _ => ends_seen,
        };
        self.sink
            .health
            .report_source(ends_seen, max_lag <= self.cfg.ready_max_lag);
    }
}

/// The applier thread: applies decoded batches in order (each with its offsets, atomically)
/// until the channel closes or stopping makes a failing batch give up.
fn apply_batches(
    batches: Receiver<DecodedBatch>,
    applied: Sender<Vec<SourceOffset>>,
    sink: &Sink,
    shutdown: &Shutdown,
) {
    for batch in batches {
        if !sink.apply(&batch.as_batch(), shutdown) {
            return;
        }
        for o in &batch.offsets {
            let labels = [o.topic.as_str(), &o.partition.to_string()];
            let metrics = &sink.metrics;
            metrics
                .last_offset
                .with_label_values(&labels)
                .set(o.next - 1);
            if let Some(ts) = batch.timestamps.get(&o.partition) {
                metrics.last_event_time.with_label_values(&labels).set(*ts);
            }
        }
        let _ = applied.send(batch.offsets);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_applier_panic_becomes_an_error_that_says_what() {
        let panic = std::thread::spawn(|| panic!("corrupt row {}", 7))
            .join()
            .unwrap_err();
        let e = super::applier_panicked(panic).to_string();
        assert!(e.contains("applier thread panicked: corrupt row 7"), "{e}");
    }
}
