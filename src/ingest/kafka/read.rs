//! Reading a topic, shared by the live source and replay: batches bounded by count and bytes,
//! and decoding a batch.

use crate::apply::{Batch, SourceOffset, Times};
use crate::cluster::Cluster;
use crate::events::{self, BadEvent, BadReason, Cuts, Event};
use crate::kafka::KafkaSettings;
use crate::store::clock::Position;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;
use std::collections::BTreeMap;
use std::time::Duration;

/// How much one batch may hold: it closes at `events` messages or once its payloads reach
/// `bytes` (so one batch holds at most `bytes` plus one message).
#[derive(Debug, Clone, Copy)]
pub struct BatchLimit {
    pub events: usize,
    pub bytes: usize,
}

impl BatchLimit {
    pub fn of(cfg: &KafkaSettings) -> BatchLimit {
        BatchLimit {
            events: cfg.batch_max as usize,
            bytes: cfg.batch_max_mb.bytes(),
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
