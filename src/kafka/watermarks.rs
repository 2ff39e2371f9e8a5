//! Partition ends as fetch responses report them (librdkafka's statistics), not from
//! ListOffsets requests: they cost nothing extra, and Tansu 0.6 answers ListOffsets(latest) with
//! the last batch's base offset + 1. The same statistics say when the broker a partition is
//! fetched from last answered, which is how readiness notices an outage.

use rdkafka::consumer::ConsumerContext;
use rdkafka::{ClientContext, Statistics};
use std::collections::HashMap;
use std::time::{Duration, Instant};

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
