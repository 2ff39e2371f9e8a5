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

use super::dead_letter::DeadLetters;
use super::read::{decode_batch, poll_batch, BatchLimit, DecodedBatch};
use crate::apply::SourceOffset;
use crate::cluster::{Cluster, Limit, ReadPlan, ReadReport};
use crate::ingest::Sink;
use crate::kafka::KafkaSettings;
use crate::kafka::{admin, consumer_config, WatermarkContext, Watermarks};
use crate::shutdown::Shutdown;
use crate::telemetry::ingest::{PartitionApplied, PartitionLag, PartitionLeft};
use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::{Duration, Instant};

/// How often the topic's partition list is read again (partitions added later are picked up).
const PARTITIONS_EVERY: Duration = Duration::from_secs(10);
/// How often lag and readiness are reported.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often librdkafka reports partition ends (the watermarks of fetch responses). A shard's
/// takeover waits for one reported after it began (`cluster::ClusterTiming::stats_interval`).
pub const STATS_EVERY: Duration = Duration::from_millis(500);
/// How often a shard tells the cluster where its partitions stand (and when the plan changes).
const CLUSTER_REPORT_EVERY: Duration = Duration::from_millis(50);

/// Thread names, as `top -H` and profilers show them: the caller of [`run`] is the fetcher.
pub const FETCHER_THREAD: &str = "ingest-fetch";
pub const APPLIER_THREAD: &str = "ingest-apply";

/// Consumes the events topic until `shutdown`; then finishes the batch in hand. Runs on a thread
/// of its own (librdkafka and RocksDB calls block). A shard (`cluster`) reads the partitions the
/// cluster's plan gives it, up to where the plan says, and dead-letters events that sit in
/// another partition than their key's. An error (the applier thread panicked, a client could
/// not be made) means ingest has stopped for good.
pub fn run(
    cfg: &KafkaSettings,
    sink: &Sink,
    cluster: Option<&Cluster>,
    shutdown: &Shutdown,
) -> Result<()> {
    let stats_ms = STATS_EVERY.as_millis() as u32;
    let consumer: BaseConsumer<WatermarkContext> = consumer_config(cfg, &cfg.group_id, stats_ms)
        .create_with_context(WatermarkContext(Watermarks::new(&cfg.topic)))
        .context("cannot create the Kafka consumer")?;
    let dead_letters = DeadLetters::new(cfg, std::sync::Arc::clone(&sink.telemetry))?;
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
            topic_partitions: None,
            parts: BTreeMap::new(),
            followed: None,
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

/// One partition being read.
struct Reading {
    /// The cluster's decision it follows (0 for a single instance).
    gen: u64,
    /// The next offset applied, stored with the views (`None`: nothing stored, the log start).
    applied: Option<i64>,
    /// The next offset after everything handed to the applier (`None`: nothing since assigned).
    dispatched: Option<i64>,
    /// The limit as the plan gave it, and where it stops: messages at or past `stop` wait.
    limit: Limit,
    stop: Option<i64>,
    /// Unassigned because it reached `stop`; assigned again where it stopped when the limit
    /// moves on.
    held: bool,
}

impl Reading {
    /// Where it stands: past everything handed to apply.
    fn position(&self) -> Option<i64> {
        self.dispatched.or(self.applied)
    }
}

/// The fetching side: what is assigned, where each partition stands, what is in flight.
struct Fetcher<'a> {
    cfg: &'a KafkaSettings,
    sink: &'a Sink,
    cluster: Option<&'a Cluster>,
    consumer: &'a BaseConsumer<WatermarkContext>,
    /// The topic's partitions, once read; and when to read them again.
    topic_partitions: Option<(BTreeSet<i32>, Instant)>,
    parts: BTreeMap<i32, Reading>,
    /// The plan version and topic partitions last followed.
    followed: Option<(u64, BTreeSet<i32>)>,
    /// Batches handed to the applier and not yet reported applied.
    in_flight: usize,
    applied: Receiver<Vec<SourceOffset>>,
}

impl Fetcher<'_> {
    fn run(&mut self, to_apply: &SyncSender<DecodedBatch>, dlq: &DeadLetters, stop: &Shutdown) {
        let limit = BatchLimit::of(self.cfg);
        let mut report_at = Instant::now();
        let mut cluster_report_at = Instant::now();
        while !stop.is_triggered() {
            self.take_applied();
            self.read_topic_partitions();
            let version = self.follow(stop);
            let mut msgs = poll_batch(self.consumer, limit);
            let mut reached = BTreeSet::new();
            msgs.retain(|m| self.admit(m, &mut reached));
            for p in reached {
                self.hold(p);
            }
            if !msgs.is_empty() {
                let (batch, bad) = decode_batch(&msgs, self.cluster);
                if !bad.is_empty() && !dlq.send(&bad, stop) {
                    return; // stopping: the batch is read again after restart
                }
                for (_, reason) in &bad {
                    self.sink.record_bad(reason);
                }
                self.sink.record_cuts(&batch.cuts);
                for o in &batch.offsets {
                    if let Some(r) = self.parts.get_mut(&o.partition) {
                        r.dispatched = Some(o.next);
                    }
                }
                if to_apply.send(batch).is_err() {
                    return; // the applier is gone: stopping, or it panicked
                }
                self.in_flight += 1;
            }
            if let (Some(cluster), Some(version)) = (self.cluster, version) {
                if Instant::now() >= cluster_report_at {
                    cluster.report(version, self.cluster_report());
                    cluster_report_at = Instant::now() + CLUSTER_REPORT_EVERY;
                }
            }
            if Instant::now() >= report_at {
                self.report();
                report_at = Instant::now() + REPORT_EVERY;
            }
        }
    }

    /// Reads the topic's partition list when it is due (at start, the topic may not be there
    /// yet: again in a second).
    fn read_topic_partitions(&mut self) {
        if self
            .topic_partitions
            .as_ref()
            .is_some_and(|(_, next)| Instant::now() < *next)
        {
            return;
        }
        let listed = admin::partitions(self.consumer.client(), &self.cfg.topic, REPORT_EVERY * 5);
        let (known, next) = match listed {
            Ok(ids) => {
                let ids: BTreeSet<i32> = ids.into_iter().collect();
                if let Some(cluster) = self.cluster {
                    cluster.set_partitions(ids.len() as i32);
                }
                (ids, Instant::now() + PARTITIONS_EVERY)
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot list the topic's partitions; trying again"
                );
                let known = self.topic_partitions.take().map(|(k, _)| k);
                (known.unwrap_or_default(), Instant::now() + REPORT_EVERY)
            }
        };
        self.topic_partitions = Some((known, next));
    }

    /// Whether a polled message goes to apply: its partition is read and not held, it is not one
    /// already handed on, and it is below its partition's stop (else the partition is `reached`).
    fn admit(&self, m: &BorrowedMessage<'_>, reached: &mut BTreeSet<i32>) -> bool {
        let Some(r) = self.parts.get(&m.partition()) else {
            return false;
        };
        if r.held || r.position().is_some_and(|at| m.offset() < at) {
            return false;
        }
        if r.stop.is_some_and(|stop| m.offset() >= stop) {
            reached.insert(m.partition());
            return false;
        }
        true
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
                if let Some(r) = self.parts.get_mut(&o.partition) {
                    r.applied = Some(o.next);
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

    /// Follows what should be read: every partition of the topic, or the cluster's plan. New
    /// partitions (and those the plan reads anew) start at their stored offset; limits move
    /// stops, and a held partition whose stop moved on is assigned again where it stopped.
    /// Returns the plan version followed.
    fn follow(&mut self, stop: &Shutdown) -> Option<u64> {
        let topic: BTreeSet<i32> = self
            .topic_partitions
            .as_ref()
            .map(|(ids, _)| ids.clone())
            .unwrap_or_default();
        let (version, wanted): (u64, BTreeMap<i32, ReadPlan>) = match self.cluster {
            Some(cluster) => {
                let (version, plan) = cluster.plan();
                let plan = plan
                    .into_iter()
                    .filter(|(p, _)| topic.contains(p))
                    .collect();
                (version, plan)
            }
            None => {
                let all = ReadPlan {
                    gen: 0,
                    limit: Limit::None,
                };
                (0, topic.iter().map(|p| (*p, all)).collect())
            }
        };
        if self.followed.as_ref() == Some(&(version, topic.clone())) {
            return Some(version);
        }
        if let Err(e) = self.follow_plan(&wanted, stop) {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot change the assigned partitions; trying again"
            );
            return None;
        }
        self.followed = Some((version, topic));
        Some(version)
    }

    fn follow_plan(&mut self, wanted: &BTreeMap<i32, ReadPlan>, stop: &Shutdown) -> Result<()> {
        let topic = self.cfg.topic.clone();
        let gone: Vec<i32> = self
            .parts
            .iter()
            .filter(|(p, r)| wanted.get(p).is_none_or(|w| w.gen != r.gen))
            .map(|(p, _)| *p)
            .collect();
        let new: Vec<i32> = wanted
            .iter()
            .filter(|(p, w)| self.parts.get(p).is_none_or(|r| r.gen != w.gen))
            .map(|(p, _)| *p)
            .collect();
        if !gone.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for p in &gone {
                if self.parts.get(p).is_some_and(|r| !r.held) {
                    tpl.add_partition(&topic, *p);
                }
            }
            if tpl.count() > 0 {
                self.consumer.incremental_unassign(&tpl)?;
            }
            for p in &gone {
                self.parts.remove(p);
                self.consumer.context().0.forget(*p);
                PartitionLeft {
                    topic: &topic,
                    partition: *p,
                }
                .emit(&self.sink.telemetry);
            }
        }
        if !new.is_empty() {
            // Read anew from what the store holds: everything handed to apply is applied first.
            self.drain(stop);
            let stored = self.sink.applier.resume_offsets(&topic)?;
            let mut tpl = TopicPartitionList::new();
            for p in &new {
                let at = stored.get(p).copied();
                tpl.add_partition_offset(&topic, *p, at.map_or(Offset::Beginning, Offset::Offset))?;
                let reading = Reading {
                    gen: wanted[p].gen,
                    applied: at,
                    dispatched: at,
                    limit: Limit::None,
                    stop: None,
                    held: false,
                };
                self.parts.insert(*p, reading);
            }
            self.consumer.incremental_assign(&tpl)?;
        }
        if !gone.is_empty() || !new.is_empty() {
            tracing::info!(added = ?new, removed = ?gone, read = ?self.parts.keys().collect::<Vec<_>>(), "partitions assigned");
        }
        let mut resumed = TopicPartitionList::new();
        for (p, plan) in wanted {
            let low = self.consumer.context().0.ends(*p).map(|e| e.low);
            let Some(r) = self.parts.get_mut(p) else {
                continue;
            };
            if r.limit != plan.limit {
                r.limit = plan.limit;
                r.stop = match plan.limit {
                    Limit::None => None,
                    Limit::Here => Some(r.position().or(low).unwrap_or(0)),
                    Limit::At(x) => Some(x),
                };
            }
            let more = match (r.stop, r.position()) {
                (None, _) | (_, None) => true,
                (Some(stop), Some(at)) => stop > at,
            };
            if r.held && more {
                let at = r.position().map_or(Offset::Beginning, Offset::Offset);
                resumed.add_partition_offset(&topic, *p, at)?;
                r.held = false;
            }
        }
        if resumed.count() > 0 {
            self.consumer.incremental_assign(&resumed)?;
        }
        Ok(())
    }

    /// Stops fetching a partition that reached its stop.
    fn hold(&mut self, p: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.cfg.topic, p);
        match self.consumer.incremental_unassign(&tpl) {
            Ok(()) => {
                self.consumer.context().0.forget(p);
                if let Some(r) = self.parts.get_mut(&p) {
                    r.held = true;
                }
            }
            Err(e) => tracing::warn!(partition = p, error = %e, "cannot pause a partition"),
        }
    }

    /// Where each partition stands, for the cluster.
    fn cluster_report(&self) -> BTreeMap<i32, ReadReport> {
        let watermarks = &self.consumer.context().0;
        self.parts
            .iter()
            .map(|(p, r)| {
                let ends = watermarks.ends(*p);
                let low = ends.map(|e| e.low);
                let report = ReadReport {
                    gen: r.gen,
                    applied: r.applied.or(low),
                    dispatched: r.position().or(low),
                    end: ends.map(|e| (e.high, e.reported)),
                };
                (*p, report)
            })
            .collect()
    }

    /// Lag per partition, and to readiness: when every end was last seen, and whether every
    /// partition is within `ready_max_lag`. Held partitions (a shard's handoff) are not fetched
    /// from for a moment: they count as caught up.
    fn report(&self) {
        let watermarks = &self.consumer.context().0;
        let mut ends_seen: Option<Instant> = None;
        let mut all_seen = true;
        let mut max_lag = 0;
        for (p, r) in self.parts.iter().filter(|(_, r)| !r.held) {
            let Some(ends) = watermarks.ends(*p) else {
                all_seen = false;
                continue;
            };
            if r.applied.is_some_and(|n| n < ends.low) {
                tracing::error!(
                    partition = p,
                    next = r.applied.unwrap_or(0),
                    log_start = ends.low,
                    "the topic dropped events that were never applied (its retention is \
                     shorter than the time stepview was behind); reading on from the log start"
                );
            }
            let next = r.applied.unwrap_or(ends.low).max(ends.low);
            let lag = (ends.high - next).max(0);
            PartitionLag {
                topic: &self.cfg.topic,
                partition: *p,
                lag,
            }
            .emit(&self.sink.telemetry);
            max_lag = max_lag.max(lag);
            ends_seen = Some(ends_seen.map_or(ends.seen, |s| s.min(ends.seen)));
        }
        let ends_seen = match ends_seen {
            Some(seen) if all_seen => Some(seen),
            // Every partition read is held, or none is read (a shard with nothing of its own
            // right now): nothing to catch up with.
            None if all_seen && (self.cluster.is_some() || !self.parts.is_empty()) => {
                Some(Instant::now())
            }
            _ => None,
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
            PartitionApplied {
                topic: &o.topic,
                partition: o.partition,
                last_offset: o.next - 1,
                at_ms: batch.timestamps.get(&o.partition).copied(),
            }
            .emit(&sink.telemetry);
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
