//! The translator's loop: finds the input topics (and new daily log collections as they
//! appear), reads a batch of change events from where its state says, translates them, has the
//! broker acknowledge every event and dead letter, then stores state and offsets in one
//! WriteBatch. A crash between the acknowledgement and the WriteBatch translates some changes
//! again, with the same versions: apply ignores the duplicates. A changed partition count stops
//! it (cdc.md, "Versions, order and exactly-once effect").
//!
//! Owns: the order of those steps. Must not: map rows (`translate`) or lay out state (`state`).

use super::ops::Readiness;
use super::output::{DeadLetter, Output};
use super::source::{Table, Topics};
use super::state::{Need, State, Waiting};
use super::translate::{translate, Change, Outcome, Untranslatable};
use super::CdcSettings;
use crate::config::Config;
use crate::events::Event;
use crate::kafka::consumer_config;
use crate::shutdown::Shutdown;
use crate::telemetry::cdc::{
    BatchTranslated, CatchingUp, CdcTelemetry, ChangeDeadLettered, InputLag, InputsFound,
    PartitionCountChanged,
};
use anyhow::{Context, Result};
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientContext, Message, Statistics};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often lag and readiness are reported, and progress logged while far behind.
const REPORT_EVERY: Duration = Duration::from_secs(1);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Partition ends of every input partition, from librdkafka's statistics (as
/// `kafka::watermarks` explains, not ListOffsets).
#[derive(Default)]
struct InputEnds(Mutex<HashMap<(String, i32), (i64, i64)>>);

impl ClientContext for InputEnds {
    fn stats(&self, stats: Statistics) {
        let mut ends = self.0.lock();
        for (topic, t) in &stats.topics {
            for (p, s) in &t.partitions {
                if *p >= 0 && s.hi_offset >= 0 {
                    ends.insert((topic.clone(), *p), (s.lo_offset.max(0), s.hi_offset));
                }
            }
        }
    }
}

impl ConsumerContext for InputEnds {}

/// Runs the translator until `shutdown`.
pub fn run(
    config: &Config,
    telemetry: Arc<CdcTelemetry>,
    readiness: Arc<Readiness>,
    shutdown: Shutdown,
) -> Result<()> {
    let cfg = &config.cdc;
    let consumer: BaseConsumer<InputEnds> = consumer_config(&config.kafka, "stepview-cdc", 1000)
        .create_with_context(InputEnds::default())
        .context("cannot create the Kafka consumer")?;
    let mut work = Work {
        state: State::open(&cfg.state_dir, cfg.epoch)?,
        topics: Topics::new(cfg)?,
        output: Output::new(
            &config.kafka,
            config.cluster.partitioner,
            &cfg.dead_letter_topic,
        )?,
        telemetry,
        events: Vec::new(),
        dead_letters: Vec::new(),
        outcomes: HashMap::new(),
        containers: 0,
    };
    tracing::info!(
        state = work.state.dir(),
        epoch = cfg.epoch,
        tables = ?work.topics.names().collect::<Vec<_>>(),
        logs = cfg.log_topics,
        events = config.kafka.topic,
        "translating bk-job's change events"
    );
    let mut reader = Reader {
        consumer,
        assigned: BTreeSet::new(),
        stopped: None,
        cfg: cfg.clone(),
    };
    let mut next_refresh = Instant::now();
    let mut next_report = Instant::now();
    let mut progress = (Instant::now(), 0u64);
    while !shutdown.is_triggered() {
        if Instant::now() >= next_refresh {
            reader.refresh(&mut work)?;
            next_refresh = Instant::now() + cfg.topic_refresh_ms.duration();
        }
        if Instant::now() >= next_report {
            let behind = reader.report(&work, &readiness);
            if behind > cfg.ready_max_behind && progress.0.elapsed() >= PROGRESS_EVERY {
                let per_second = progress.1 as f64 / progress.0.elapsed().as_secs_f64();
                CatchingUp { behind, per_second }.emit(&work.telemetry);
                progress = (Instant::now(), 0);
            }
            next_report = Instant::now() + REPORT_EVERY;
        }
        if reader.stopped.is_some() {
            shutdown.sleep(REPORT_EVERY);
            continue;
        }
        let messages = reader.poll(cfg.batch_changes as usize);
        if messages.is_empty() {
            continue;
        }
        let started = Instant::now();
        let mut next_offsets: HashMap<(&str, i32), i64> = HashMap::new();
        for m in &messages {
            work.message(m)?;
            next_offsets.insert((m.topic(), m.partition()), m.offset() + 1);
        }
        if !work.deliver(&shutdown)? {
            break; // stopping: nothing of this batch is stored, so it is translated again
        }
        for ((topic, partition), next) in next_offsets {
            work.state.set_offset(topic, partition, next);
        }
        work.commit(started)?;
        progress.1 += messages.len() as u64;
    }
    Ok(())
}

/// The consumer and what it reads.
struct Reader {
    consumer: BaseConsumer<InputEnds>,
    assigned: BTreeSet<(String, i32)>,
    /// Why translation stopped for good (a changed partition count).
    stopped: Option<String>,
    cfg: CdcSettings,
}

impl Reader {
    /// Lists the broker's topics: assigns partitions not read yet (from their stored offsets,
    /// or the beginning), and checks partition counts against the recorded ones.
    fn refresh(&mut self, work: &mut Work) -> Result<()> {
        let metadata = match self.consumer.fetch_metadata(None, Duration::from_secs(10)) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the broker's topics; trying again");
                return Ok(());
            }
        };
        let mut new = TopicPartitionList::new();
        let mut found = Vec::new();
        for topic in metadata.topics() {
            let name = topic.name();
            if topic.error().is_some() || work.topics.table(name).is_none() {
                continue;
            }
            let count = topic.partitions().len() as i32;
            match work.state.partition_count(name) {
                None => work.state.set_partition_count(name, count),
                Some(was) if was != count => {
                    PartitionCountChanged {
                        topic: name,
                        was,
                        now: count,
                        epoch: self.cfg.epoch,
                    }
                    .emit(&work.telemetry);
                    self.stopped = Some(format!(
                        "{name} had {was} partitions and has {count}: restart with cdc.epoch = {}",
                        u32::from(self.cfg.epoch) + 1
                    ));
                    return Ok(());
                }
                Some(_) => {}
            }
            for p in topic.partitions() {
                if self.assigned.insert((name.to_owned(), p.id())) {
                    let offset = work
                        .state
                        .offset(name, p.id())
                        .map_or(Offset::Beginning, Offset::Offset);
                    new.add_partition_offset(name, p.id(), offset)?;
                    found.push(format!("{name}/{}", p.id()));
                }
            }
        }
        work.state.commit()?;
        if new.count() > 0 {
            self.consumer
                .incremental_assign(&new)
                .context("cannot assign the input partitions")?;
            InputsFound { topics: &found }.emit(&work.telemetry);
        }
        Ok(())
    }

    /// Reports lag and readiness; returns how many change events are not translated yet.
    fn report(&self, work: &Work, readiness: &Readiness) -> i64 {
        let ends = self.consumer.context().0.lock();
        let mut lags = Vec::with_capacity(self.assigned.len());
        let mut unknown = None;
        for (topic, partition) in &self.assigned {
            match ends.get(&(topic.clone(), *partition)) {
                Some((low, high)) => {
                    let next = work
                        .state
                        .offset(topic, *partition)
                        .unwrap_or(*low)
                        .max(*low);
                    lags.push((topic.as_str(), *partition, (high - next).max(0)));
                }
                None => unknown = Some(format!("{topic}/{partition}")),
            }
        }
        let behind: i64 = lags.iter().map(|(_, _, lag)| lag).sum();
        let worst = lags.iter().map(|(_, _, lag)| *lag).max().unwrap_or(0);
        let why_not = if let Some(stopped) = &self.stopped {
            Some(format!("stopped: {stopped}"))
        } else if self.assigned.is_empty() {
            Some(format!(
                "no input topic found yet ({}.<database>.<table>, as Debezium's topic.prefix)",
                self.cfg.topic_prefix
            ))
        } else if let Some(p) = unknown {
            Some(format!("no fetch response yet from {p}"))
        } else if worst > self.cfg.ready_max_behind {
            Some(format!(
                "{behind} change events behind (a partition more than {})",
                self.cfg.ready_max_behind
            ))
        } else {
            None
        };
        InputLag {
            lags: &lags,
            ready: why_not.is_none(),
        }
        .emit(&work.telemetry);
        readiness.set(why_not);
        behind
    }

    /// Up to `max` messages: waits up to 100 ms for the first, then takes what is there.
    fn poll(&self, max: usize) -> Vec<BorrowedMessage<'_>> {
        let mut messages = Vec::new();
        let mut wait = Duration::from_millis(100);
        while messages.len() < max {
            match self.consumer.poll(wait) {
                Some(Ok(m)) => messages.push(m),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Kafka consumer error");
                    break;
                }
                None => break,
            }
            wait = Duration::ZERO;
        }
        messages
    }
}

/// A batch in the making, and what it is made with.
struct Work {
    state: State,
    topics: Topics,
    output: Output,
    telemetry: Arc<CdcTelemetry>,
    events: Vec<Event>,
    dead_letters: Vec<DeadLetter>,
    outcomes: HashMap<(&'static str, &'static str), u64>,
    containers: u64,
}

impl Work {
    fn message(&mut self, m: &BorrowedMessage<'_>) -> Result<()> {
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let Some(table) = self.topics.table(topic) else {
            self.dead_letter(
                topic,
                None,
                partition,
                offset,
                m.payload(),
                "no bk-job table is read from this topic".into(),
            );
            return Ok(());
        };
        let version = self.state.version(offset);
        let change = Change {
            table,
            version,
            value: m.payload(),
        };
        match translate(&change, &mut self.state, &mut self.events)? {
            Ok(Outcome::Waiting(need)) => {
                self.count(table, "waiting");
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                self.state.wait(
                    need,
                    table.code(),
                    Waiting {
                        topic: topic.to_owned(),
                        partition,
                        offset,
                        version,
                        value,
                    },
                );
                Ok(())
            }
            outcome => self.settle(table, topic, partition, offset, change.value, outcome),
        }
    }

    /// Counts an outcome; releases what it made ready, and dead-letters what cannot be
    /// translated.
    fn settle(
        &mut self,
        table: Table,
        topic: &str,
        partition: i32,
        offset: i64,
        value: Option<&[u8]>,
        outcome: Result<Outcome, Untranslatable>,
    ) -> Result<()> {
        match outcome {
            Ok(Outcome::Emitted {
                released,
                containers,
            }) => {
                self.count(table, "emitted");
                self.containers += containers as u64;
                if let Some(need) = released {
                    self.release(need)?;
                }
            }
            Ok(Outcome::Skipped(skip)) => self.count(table, skip.label()),
            Ok(Outcome::Waiting(_)) => unreachable!("kept by the caller"),
            Err(Untranslatable(reason)) => {
                self.dead_letter(topic, Some(table), partition, offset, value, reason)
            }
        }
        Ok(())
    }

    /// Translates the changes that waited for `need` (and those they release in turn).
    fn release(&mut self, need: Need) -> Result<()> {
        let mut needs = vec![need];
        while let Some(need) = needs.pop() {
            for w in self.state.release(need)? {
                let Some(table) = self.topics.table(&w.topic) else {
                    continue; // its topic is no longer read (the settings changed)
                };
                let change = Change {
                    table,
                    version: w.version,
                    value: Some(w.value.as_bytes()),
                };
                match translate(&change, &mut self.state, &mut self.events)? {
                    Ok(Outcome::Waiting(again)) => {
                        self.count(table, "waiting");
                        self.state.wait(again, table.code(), w.clone());
                    }
                    Ok(Outcome::Emitted {
                        released,
                        containers,
                    }) => {
                        self.count(table, "emitted");
                        self.containers += containers as u64;
                        needs.extend(released);
                    }
                    outcome => {
                        let value = w.value.as_bytes();
                        self.settle(table, &w.topic, w.partition, w.offset, Some(value), outcome)?
                    }
                }
            }
        }
        Ok(())
    }

    fn count(&mut self, table: Table, outcome: &'static str) {
        *self.outcomes.entry((table.label(), outcome)).or_default() += 1;
    }

    fn dead_letter(
        &mut self,
        topic: &str,
        table: Option<Table>,
        partition: i32,
        offset: i64,
        value: Option<&[u8]>,
        reason: String,
    ) {
        ChangeDeadLettered {
            table: table.map_or("unknown", Table::label),
            topic,
            partition,
            offset,
            reason: &reason,
        }
        .emit(&self.telemetry);
        self.dead_letters.push(DeadLetter {
            topic: topic.to_owned(),
            partition,
            offset,
            value: value.map(<[u8]>::to_vec),
            reason,
        });
    }

    fn deliver(&mut self, shutdown: &Shutdown) -> Result<bool> {
        self.output
            .deliver(&self.events, &self.dead_letters, &self.telemetry, shutdown)
    }

    /// Stores the batch's state and offsets, and reports it.
    fn commit(&mut self, started: Instant) -> Result<()> {
        self.state.commit()?;
        let mut kinds: HashMap<&'static str, u64> = HashMap::new();
        for e in &self.events {
            *kinds.entry(e.kind()).or_default() += 1;
        }
        let outcomes: Vec<_> = self.outcomes.drain().collect();
        let events: Vec<_> = kinds.into_iter().collect();
        BatchTranslated {
            outcomes: &outcomes,
            events: &events,
            containers: std::mem::take(&mut self.containers),
            waiting: self.state.waiting(),
            took: started.elapsed(),
        }
        .emit(&self.telemetry);
        self.events.clear();
        self.dead_letters.clear();
        Ok(())
    }
}
