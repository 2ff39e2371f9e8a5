//! Reading a topic, shared by the live source and replay: consumer settings, partition ends as
//! fetch responses report them, batches bounded by count and bytes, and decoding a batch.
//!
//! Partition ends come from the watermarks that fetch responses carry, read from librdkafka's
//! statistics, not from ListOffsets requests: they cost nothing extra, and Tansu 0.6 answers
//! ListOffsets(latest) with the last batch's base offset + 1. The same statistics say when the
//! broker a partition is fetched from last answered, which is how readiness notices an outage.

use crate::apply::{Batch, SourceOffset, Times};
use crate::cluster::Cluster;
use crate::config::KafkaConfig;
use crate::events::{self, BadEvent, BadReason, Cuts, Event};
use crate::store::clock::Position;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientContext, Message, Statistics};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A client of `cfg`'s brokers: `defaults` (stepview's choices for this client), then the
/// operator's own librdkafka properties (`kafka.client`: security, timeouts …), which win.
pub fn client_config(cfg: &KafkaConfig, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (key, value) in defaults {
        c.set(*key, *value);
    }
    for (key, value) in &cfg.client {
        c.set(key, value);
    }
    c
}

/// Consumer settings shared by the live source and replay; `stats_ms` is how often librdkafka
/// reports the watermarks (see [`Watermarks`]). Partitions are assigned, never subscribed: the
/// group id only names where offsets are committed for lag tools.
pub fn consumer_config(cfg: &KafkaConfig, group_id: &str, stats_ms: u32) -> ClientConfig {
    let stats_ms = stats_ms.to_string();
    client_config(
        cfg,
        &[
            ("statistics.interval.ms", &stats_ms),
            ("group.id", group_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            // A stored offset below the log start (retention dropped events not yet applied)
            // goes on from the log start; the source reports it.
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            // Freshness: a fetch that finds nothing new returns after 1 ms rather than 500.
            // Kafka answers a waiting fetch as soon as data arrives anyway; brokers that do not
            // (Tansu) hold every fetch for its whole wait, which the event then waits too
            // (benches/ingest at 10 000 events/s, produce → visible p99: 24.6 ms at 10, 11.2
            // at 2, 10.7–11.8 at 1). The price is idle fetches: at 1 ms, 1.4% of a core for
            // stepview and 11% for a local Tansu (5.5% at 10). Against Kafka, where it buys
            // nothing, `kafka.client."fetch.wait.max.ms"` can raise it.
            ("fetch.wait.max.ms", "1"),
            // What librdkafka prefetches, over all partitions: with batches bounded by bytes
            // too, this bounds what ingest holds in memory (events are at most 1 MiB).
            ("queued.max.messages.kbytes", "32768"),
            // Once that much waits, librdkafka pauses fetching for this long (1 s by default):
            // a consumer that drains the queue in 100 ms would then sit idle for 900.
            ("fetch.queue.backoff.ms", "5"),
        ],
    )
}

/// How much one batch may hold: it closes at `events` messages or once its payloads reach
/// `bytes` (so one batch holds at most `bytes` plus one message).
#[derive(Debug, Clone, Copy)]
pub struct BatchLimit {
    pub events: usize,
    pub bytes: usize,
}

impl BatchLimit {
    pub fn of(cfg: &KafkaConfig) -> BatchLimit {
        BatchLimit {
            events: cfg.batch_max,
            bytes: cfg.batch_max_mb << 20,
        }
    }
}

/// Up to `limit` of messages: waits up to 100 ms for the first, then takes what is already
/// fetched.
pub fn poll_batch<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    limit: BatchLimit,
) -> Vec<BorrowedMessage<'_>> {
    let mut msgs = Vec::new();
    let mut bytes = 0;
    let mut wait = Duration::from_millis(100);
    while msgs.len() < limit.events && bytes < limit.bytes {
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                bytes += m.payload_len() + m.key().map_or(0, <[u8]>::len);
                msgs.push(m);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => break,
        }
        wait = Duration::ZERO;
    }
    msgs
}

/// Where a partition's log starts and ends, as the latest fetch response reported, when the
/// broker it is fetched from last answered, and when librdkafka reported this.
#[derive(Debug, Clone, Copy)]
pub struct PartitionEnds {
    pub low: i64,
    pub high: i64,
    pub seen: Instant,
    pub reported: Instant,
}

/// The ends of every partition of one topic that is being fetched from. A partition that is not
/// (unassigned, or never assigned) has none: librdkafka keeps reporting the last end it knew of
/// such a partition, which would look current.
pub struct Watermarks {
    topic: String,
    seen: parking_lot::Mutex<HashMap<i32, PartitionEnds>>,
}

impl Watermarks {
    pub fn new(topic: &str) -> Watermarks {
        Watermarks {
            topic: topic.to_owned(),
            seen: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    fn record(&self, stats: &Statistics) {
        let Some(topic) = stats.topics.get(&self.topic) else {
            return;
        };
        let now = Instant::now();
        // When each connected broker last sent us anything: with fetches waiting at most
        // 10 ms, a broker that answers at all answers every few milliseconds.
        let answered: HashMap<i32, Instant> = stats
            .brokers
            .values()
            .filter(|b| b.state == "UP" && b.rxidle >= 0)
            .map(|b| {
                let idle = Duration::from_micros(b.rxidle as u64);
                (b.nodeid, now.checked_sub(idle).unwrap_or(now))
            })
            .collect();
        let mut seen = self.seen.lock();
        for (p, s) in &topic.partitions {
            let Some(at) = answered.get(&s.broker) else {
                continue; // not fetched from, or its broker is not answering
            };
            if *p >= 0 && s.hi_offset >= 0 && s.fetch_state == "active" {
                let ends = PartitionEnds {
                    low: s.lo_offset.max(0),
                    high: s.hi_offset,
                    seen: *at,
                    reported: now,
                };
                seen.insert(*p, ends);
            }
        }
    }

    /// Forgets a partition no longer fetched from (its next ends are those of its next fetch).
    pub fn forget(&self, partition: i32) {
        self.seen.lock().remove(&partition);
    }

    /// (low, high) of `partition`, if known yet.
    pub fn get(&self, partition: i32) -> Option<(i64, i64)> {
        self.ends(partition).map(|e| (e.low, e.high))
    }

    pub fn ends(&self, partition: i32) -> Option<PartitionEnds> {
        self.seen.lock().get(&partition).copied()
    }
}

/// A consumer context that only records watermarks (replay, benchmarks, tests).
pub struct WatermarkContext(pub Watermarks);

impl ClientContext for WatermarkContext {
    fn stats(&self, stats: Statistics) {
        self.0.record(&stats);
    }
}

impl ConsumerContext for WatermarkContext {}

/// What a batch of messages decodes to (the bad ones are returned beside it, with their
/// messages, for the dead-letter topic).
pub struct DecodedBatch {
    pub events: Vec<Event>,
    /// Where each event sits in the topic.
    pub positions: Vec<Position>,
    /// Per partition, the offset after the batch's last message.
    pub offsets: Vec<SourceOffset>,
    /// Per partition, the Kafka timestamp (ms) of the batch's last message.
    pub timestamps: BTreeMap<i32, i64>,
    /// When each event was produced: its message's broker timestamp (now, if it has none).
    pub times: Vec<i64>,
    /// The string fields cut to their bounds, one entry per event that had any.
    pub cuts: Vec<Cuts>,
}

impl DecodedBatch {
    /// What apply takes.
    pub fn as_batch(&self) -> Batch<'_> {
        Batch {
            events: &self.events,
            positions: Some(&self.positions),
            times: Times::Each(&self.times),
            offsets: &self.offsets,
        }
    }
}

pub type BadMessages<'m> = Vec<(&'m BorrowedMessage<'m>, BadEvent)>;

/// Decodes `msgs`, each checked against its message key (events.md, "Topic and keys") and, for
/// a shard, against the partition its key maps to ("Partitioning").
pub fn decode_batch<'m>(
    msgs: &'m [BorrowedMessage<'m>],
    cluster: Option<&Cluster>,
) -> (DecodedBatch, BadMessages<'m>) {
    let mut batch = DecodedBatch {
        events: Vec::with_capacity(msgs.len()),
        positions: Vec::with_capacity(msgs.len()),
        offsets: Vec::new(),
        timestamps: BTreeMap::new(),
        times: Vec::with_capacity(msgs.len()),
        cuts: Vec::new(),
    };
    let now_ms = crate::now_ms();
    let mut bad = Vec::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for m in msgs {
        let after = next.entry(m.partition()).or_default();
        *after = (*after).max(m.offset() + 1);
        let ts = m.timestamp().to_millis();
        if let Some(ts) = ts {
            batch.timestamps.insert(m.partition(), ts);
        }
        let decoded = match m.payload() {
            Some(p) => events::decode(p),
            None => Err(BadEvent {
                reason: BadReason::NotJson,
                detail: "message has no value".into(),
            }),
        }
        .and_then(|(event, cuts)| {
            events::check_key(&event, m.key())?;
            if let Some(expected) = cluster.and_then(|c| c.partition_of(event.key_id())) {
                events::check_partition(expected, m.partition())?;
            }
            Ok((event, cuts))
        });
        match decoded {
            Ok((event, cuts)) => {
                if !cuts.is_empty() {
                    batch.cuts.push(cuts);
                }
                batch.events.push(event);
                batch.positions.push(Position {
                    partition: m.partition(),
                    offset: m.offset(),
                });
                batch.times.push(ts.unwrap_or(now_ms));
            }
            Err(b) => bad.push((m, b)),
        }
    }
    let topic = msgs.first().map_or("", |m| m.topic());
    batch.offsets = next
        .into_iter()
        .map(|(partition, next)| SourceOffset {
            topic: topic.to_owned(),
            partition,
            next,
        })
        .collect();
    (batch, bad)
}
