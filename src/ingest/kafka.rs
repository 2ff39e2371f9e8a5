//! The Kafka source: a consumer group on the events topic, with exactly-once effect.
//!
//! Each batch of messages is decoded; bad ones are written to the dead-letter topic (and
//! delivered) before the batch's offsets may pass them; then state and the next offset of every
//! partition go into one RocksDB WriteBatch (`apply`). On assignment every partition is sought to
//! the offset stored in RocksDB, not to the group's committed one; commits to Kafka follow, for
//! lag tooling only.
//!
//! Partition ends (for lag, readiness and replay) come from the watermarks that fetch responses
//! carry, read from librdkafka's statistics, not from ListOffsets requests: they cost nothing
//! extra, and Tansu 0.6 answers ListOffsets(latest) with the last batch's base offset + 1.

use super::Sink;
use crate::apply::SourceOffset;
use crate::config::KafkaConfig;
use crate::events::{decode, BadEvent, BadReason, Event, MAX_EVENT_BYTES};
use crate::store::Store;
use anyhow::{Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, Statistics, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// Partitions a topic gets when stepview creates it.
pub const DEFAULT_PARTITIONS: i32 = 4;

/// Largest message the dead-letter producer sends (events over stepview's 1 MiB limit included).
const DLQ_MESSAGE_MAX_BYTES: &str = "67108864";

/// Creates the topics that do not exist yet.
pub async fn ensure_topics(brokers: &str, topics: &[&str], partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("cannot create Kafka admin client")?;
    // Every topic may carry messages over the event limit: the events topic receives them
    // from producers, the dead-letter topic must take them unchanged.
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            NewTopic::new(t, partitions, TopicReplication::Fixed(1))
                .set("max.message.bytes", DLQ_MESSAGE_MAX_BYTES)
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &opts).await.with_context(|| {
        format!("cannot reach Kafka at {brokers} (is the broker running? ops/broker.sh start)")
    })? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Consumer settings shared by the group consumer and replay; `stats_ms` is how often
/// librdkafka reports the watermarks (see [`Watermarks`]).
pub fn consumer_config(brokers: &str, group_id: &str, stats_ms: u32) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("statistics.interval.ms", stats_ms.to_string())
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.partition.eof", "false")
        // Freshness: a fetch that finds nothing new returns after 10 ms rather than 500. Kafka
        // answers a waiting fetch as soon as data arrives anyway; brokers that do not (Tansu)
        // would otherwise add up to half a second between an event and its view.
        .set("fetch.wait.max.ms", "10");
    c
}

/// Low and high watermark per partition of one topic, as the latest fetch responses reported
/// them; a partition appears once it has been fetched from.
pub struct Watermarks {
    topic: String,
    seen: parking_lot::Mutex<HashMap<i32, (i64, i64)>>,
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
        let mut seen = self.seen.lock();
        for (p, s) in &topic.partitions {
            if *p >= 0 && s.hi_offset >= 0 {
                seen.insert(*p, (s.lo_offset.max(0), s.hi_offset));
            }
        }
    }

    /// (low, high) of `partition`, if known yet.
    pub fn get(&self, partition: i32) -> Option<(i64, i64)> {
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

/// Up to `max` messages: waits up to 100 ms for the first, then takes what is already fetched.
pub fn poll_batch<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    max: usize,
) -> Vec<BorrowedMessage<'_>> {
    let mut msgs = Vec::new();
    let mut wait = Duration::from_millis(100);
    while msgs.len() < max {
        match consumer.poll(wait) {
            Some(Ok(m)) => msgs.push(m),
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => break,
        }
        wait = Duration::ZERO;
    }
    msgs
}

/// What a batch of messages decodes to (the bad ones are returned beside it, with their
/// messages, for the dead-letter topic).
pub struct Decoded {
    pub events: Vec<Event>,
    /// Per partition, the offset after the batch's last message.
    pub offsets: Vec<SourceOffset>,
    /// Per partition, the Kafka timestamp (ms) of the batch's last message.
    pub timestamps: BTreeMap<i32, i64>,
}

pub type BadMessages<'m> = Vec<(&'m BorrowedMessage<'m>, BadEvent)>;

pub fn decode_batch<'m>(msgs: &'m [BorrowedMessage<'m>]) -> (Decoded, BadMessages<'m>) {
    let mut events = Vec::with_capacity(msgs.len());
    let mut bad = Vec::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut timestamps = BTreeMap::new();
    for m in msgs {
        let after = next.entry(m.partition()).or_default();
        *after = (*after).max(m.offset() + 1);
        if let Some(ts) = m.timestamp().to_millis() {
            timestamps.insert(m.partition(), ts);
        }
        let decoded = match m.payload() {
            Some(p) => decode(p),
            None => Err(BadEvent {
                reason: BadReason::NotJson,
                detail: "message has no value".into(),
            }),
        };
        match decoded {
            Ok(e) => events.push(e),
            Err(b) => bad.push((m, b)),
        }
    }
    let topic = msgs.first().map_or("", |m| m.topic());
    let offsets = next
        .into_iter()
        .map(|(partition, next)| SourceOffset {
            topic: topic.to_owned(),
            partition,
            next,
        })
        .collect();
    let decoded = Decoded {
        events,
        offsets,
        timestamps,
    };
    (decoded, bad)
}

/// Seeks assigned partitions to the offsets stored with the views (the durability rule), and
/// records watermarks.
struct GroupContext {
    store: Arc<Store>,
    topic: String,
    assigned: parking_lot::Mutex<Option<BTreeSet<i32>>>,
    watermarks: Watermarks,
}

impl ClientContext for GroupContext {
    fn stats(&self, stats: Statistics) {
        self.watermarks.record(&stats);
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let stored = stored_offsets(&self.store, &self.topic);
                let mut seeded = TopicPartitionList::new();
                let mut partitions = BTreeSet::new();
                for e in tpl.elements_for_topic(&self.topic) {
                    let offset = stored
                        .get(&e.partition())
                        .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                    let _ = seeded.add_partition_offset(&self.topic, e.partition(), offset);
                    partitions.insert(e.partition());
                }
                tracing::info!(?partitions, "partitions assigned");
                if let Err(e) = consumer.assign(&seeded) {
                    tracing::error!(error = %e, "assign failed");
                }
                *self.assigned.lock() = Some(partitions);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!("partitions revoked");
                // Unknown until the next assignment: neither "caught up" nor anything to apply.
                *self.assigned.lock() = None;
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => tracing::error!(error = ?other, "rebalance error"),
        }
    }
}

pub fn stored_offsets(store: &Store, topic: &str) -> HashMap<i32, i64> {
    match store.offsets() {
        Ok(all) => all
            .into_iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, p, o)| (p, o))
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read stored offsets");
            HashMap::new()
        }
    }
}

/// Consumes the events topic until `stop` is set; then finishes the batch in hand and leaves the
/// group. Runs on a thread of its own (librdkafka and RocksDB calls block).
pub fn run(
    cfg: &KafkaConfig,
    sink: &Sink,
    store: Arc<Store>,
    rt: Handle,
    stop: &AtomicBool,
) -> Result<()> {
    let context = GroupContext {
        store: Arc::clone(&store),
        topic: cfg.topic.clone(),
        assigned: parking_lot::Mutex::new(None),
        watermarks: Watermarks::new(&cfg.topic),
    };
    let consumer: BaseConsumer<GroupContext> = consumer_config(&cfg.brokers, &cfg.group_id, 1000)
        .create_with_context(context)
        .context("cannot create Kafka consumer")?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("message.timeout.ms", "30000")
        // An over-limit event must reach the DLQ unchanged, so allow what the broker took.
        .set("message.max.bytes", DLQ_MESSAGE_MAX_BYTES)
        .create()
        .context("cannot create Kafka producer for the dead-letter topic")?;
    consumer
        .subscribe(&[&cfg.topic])
        .with_context(|| format!("cannot subscribe to {}", cfg.topic))?;
    let dlq = cfg.dlq();
    // Two threads, so that decoding the next batch overlaps applying this one: this one polls,
    // decodes, dead-letters and commits; the applier applies, one batch in flight at most.
    let (to_apply, applying) = std::sync::mpsc::sync_channel::<Decoded>(1);
    let (to_commit, applied) = std::sync::mpsc::channel::<Vec<SourceOffset>>();
    std::thread::scope(|scope| {
        let applier = scope.spawn(move || apply_batches(applying, to_commit, sink, stop));
        let mut last_lag_check: Option<Instant> = None;
        while !stop.load(Ordering::SeqCst) {
            commit(&consumer, applied.try_iter());
            let mut msgs = poll_batch(&consumer, cfg.batch_max);
            if !msgs.is_empty() {
                let assigned = consumer
                    .context()
                    .assigned
                    .lock()
                    .clone()
                    .unwrap_or_default();
                // Messages of partitions revoked while the batch was gathered belong to another
                // member now; the next owner reads them from the stored offsets.
                msgs.retain(|m| assigned.contains(&m.partition()));
                let (decoded, bad) = decode_batch(&msgs);
                let dead_lettered = bad
                    .iter()
                    .all(|(m, bad)| dead_letter(&producer, &dlq, m, bad, &rt, stop));
                if !dead_lettered {
                    break; // stopping: the batch is read again after restart
                }
                for (_, reason) in &bad {
                    sink.record_bad(reason);
                }
                if to_apply.send(decoded).is_err() {
                    break; // the applier gave up: stopping
                }
            }
            if last_lag_check.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                report_lag(&consumer, cfg, sink, &store);
                last_lag_check = Some(Instant::now());
            }
        }
        // The batch in hand is finished before the group is left.
        drop(to_apply);
        let _ = applier.join();
        commit(&consumer, applied.try_iter());
    });
    tracing::info!("consumer stopping: leaving the group");
    consumer.unsubscribe();
    Ok(())
}

/// The applier thread: applies decoded batches in order (each with its offsets, atomically)
/// until the channel closes or stopping makes a failing batch give up.
fn apply_batches(
    batches: std::sync::mpsc::Receiver<Decoded>,
    applied: std::sync::mpsc::Sender<Vec<SourceOffset>>,
    sink: &Sink,
    stop: &AtomicBool,
) {
    for batch in batches {
        if !sink.apply(&batch.events, &batch.offsets, stop) {
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

/// Commits applied offsets to Kafka, for lag tooling only (resuming reads RocksDB's).
fn commit(consumer: &BaseConsumer<GroupContext>, applied: impl Iterator<Item = Vec<SourceOffset>>) {
    let mut tpl = TopicPartitionList::new();
    for o in applied.flatten() {
        let _ = tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.next));
    }
    if tpl.count() == 0 {
        return;
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(error = %e, "offset commit to Kafka failed (lag tooling only)");
    }
}

/// Writes the original message to the DLQ with the reason and source in headers, retrying until
/// the broker has it.
fn dead_letter(
    producer: &FutureProducer,
    dlq: &str,
    m: &BorrowedMessage<'_>,
    bad: &BadEvent,
    rt: &Handle,
    stop: &AtomicBool,
) -> bool {
    let reason = bad.to_string();
    let partition = m.partition().to_string();
    let offset = m.offset().to_string();
    let payload = m.payload().unwrap_or_default();
    tracing::warn!(partition, offset, %reason, "bad event sent to the dead-letter topic");
    // Cut only when the dead-letter topic refuses the whole message: a stalled partition would
    // lose more than the tail of one bad message. The header says how long it was.
    let mut cut: Option<usize> = None;
    let original_len = payload.len().to_string();
    loop {
        let mut fields = vec![
            ("stepview-error", reason.as_str()),
            ("stepview-source-topic", m.topic()),
            ("stepview-source-partition", partition.as_str()),
            ("stepview-source-offset", offset.as_str()),
        ];
        if cut.is_some() {
            fields.push(("stepview-truncated-from-bytes", original_len.as_str()));
        }
        let headers = fields
            .into_iter()
            .fold(OwnedHeaders::new(), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value),
                })
            });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq).headers(headers);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if m.payload().is_some() {
            record = record.payload(&payload[..cut.unwrap_or(payload.len())]);
        }
        match rt.block_on(producer.send(record, Duration::from_secs(30))) {
            Ok(_) => return true,
            Err((e, _)) => {
                let too_large = matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::MessageSizeTooLarge)
                );
                if too_large && cut.is_none() {
                    tracing::error!(error = %e, "the dead-letter topic refuses the whole message; sending its first MiB");
                    cut = Some(payload.len().min(MAX_EVENT_BYTES));
                    continue;
                }
                tracing::error!(error = %e, "cannot write to the dead-letter topic; retrying");
                if stop.load(Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

fn report_lag(
    consumer: &BaseConsumer<GroupContext>,
    cfg: &KafkaConfig,
    sink: &Sink,
    store: &Store,
) {
    let Some(assigned) = consumer.context().assigned.lock().clone() else {
        return; // not in the group yet
    };
    let stored = stored_offsets(store, &cfg.topic);
    let mut max_lag = 0;
    for p in assigned {
        let Some((low, high)) = consumer.context().watermarks.get(p) else {
            return; // not fetched from yet: unknown lag, so do not claim to be caught up
        };
        let next = stored.get(&p).copied().unwrap_or(low).max(low);
        let lag = (high - next).max(0);
        sink.metrics
            .consumer_lag
            .with_label_values(&[&cfg.topic, &p.to_string()])
            .set(lag);
        max_lag = max_lag.max(lag);
    }
    if max_lag <= cfg.ready_max_lag {
        sink.health.set_caught_up();
    }
}
