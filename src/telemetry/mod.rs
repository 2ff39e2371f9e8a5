//! Telemetry: what happens inside stepview, as typed events (vector's `src/internal_events/`).
//! Each event's `emit` writes its log line and its metric together; label values live in the
//! event types, and the series themselves are private to this module. One registry holds them,
//! exposed as Prometheus text.
//!
//! - [`ingest`]: batches applied, events dead-lettered or cut, partitions' lag, expiry.
//! - [`http`]: requests answered, queries abandoned, the answer cache, forwarding.
//! - [`cluster`]: members-topic records ignored.
//! - [`store`]: RocksDB operations that failed, checkpoints made.
//! - [`cdc`]: the translator's own (`stepview cdc`, a process of its own, its own registry).
//!
//! Owns: metric names, labels, buckets and the log lines that go with them. Must not: compute
//! anything a part does not report; the gauges read at scrape time come as [`ViewFigures`],
//! running values that cost the same to read whatever the views hold.

pub mod cdc;
pub mod cluster;
pub mod http;
pub mod ingest;
pub mod store;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Figures of the index, read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexFigures {
    pub steps: usize,
    pub hosts: i64,
    /// Estimated bytes of the resident steps: what `budget` bounds.
    pub bytes: usize,
    pub budget: usize,
    pub hot_rows: usize,
    pub hot_bytes: usize,
    pub loads: u64,
    pub evictions: u64,
}

/// What the store's checkpoints cost, read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckpointFigures {
    pub count: usize,
    /// Bytes of their files (each file once, however many checkpoints link it).
    pub bytes: u64,
    /// Bytes of the files the live store no longer has: what the checkpoints alone keep on
    /// disk.
    pub pinned_bytes: u64,
    /// When the newest was made, Unix ms.
    pub last_unix_ms: Option<i64>,
}

/// Figures of the views, read at scrape time (see `query::Reader::figures`).
pub struct ViewFigures {
    pub index: IndexFigures,
    /// Live members of this shard set, when it is a shard.
    pub members: Option<usize>,
    /// RocksDB figures by label (`store::Store::figures`).
    pub rocksdb: Vec<(&'static str, i64)>,
    /// The checkpoints', when this store makes them.
    pub checkpoints: Option<CheckpointFigures>,
}

/// One held long-poll or open event stream, counted while it lives.
pub struct Watching(IntGauge);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The registry and every series; the events in this module's children report to them.
pub struct Telemetry {
    registry: Registry,
    events: IntCounterVec,
    dead_letters: IntCounterVec,
    dead_letters_unwritable: IntCounter,
    strings_cut: IntCounterVec,
    apply_batch_events: Histogram,
    apply_duration: Histogram,
    apply_failures: IntCounter,
    consumer_lag: IntGaugeVec,
    last_offset: IntGaugeVec,
    last_event_time: IntGaugeVec,
    expired_steps: IntCounter,
    forgotten_tombstones: IntCounter,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    queries_abandoned: IntCounterVec,
    answer_cache: IntCounterVec,
    watching: IntGauge,
    forwarded: IntCounterVec,
    forward_duration: Histogram,
    members_ignored: IntCounterVec,
    gateway_key_reloads: IntCounterVec,
    /// At most one log line per this long about ignored members-topic records.
    members_ignored_logged: parking_lot::Mutex<(Option<std::time::Instant>, u64)>,
    members: IntGauge,
    ready: IntGauge,
    index_steps: IntGauge,
    index_hosts: IntGauge,
    index_memory: IntGauge,
    index_budget: IntGauge,
    index_loads: IntCounter,
    index_evictions: IntCounter,
    hot_rows: IntGauge,
    hot_row_bytes: IntGauge,
    rocksdb: IntGaugeVec,
    store_errors: IntCounterVec,
    checkpoints_made: IntCounter,
    checkpoints: IntGauge,
    checkpoint_bytes: IntGaugeVec,
    checkpoint_last: IntGauge,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

/// Registers series on one registry.
struct Series<'a>(&'a Registry);

impl Series<'_> {
    fn add<T: Collector + Clone + 'static>(&self, c: T) -> T {
        self.0
            .register(Box::new(c.clone()))
            .expect("metric names are unique");
        c
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid"))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid"))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts).expect("valid"))
    }
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let registry = Registry::new();
        let s = Series(&registry);
        s.gauges("stepview_build_info", "Build information.", &["version"])
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric names are unique");
        Telemetry {
            // A handle on the same registry the series are in.
            registry: registry.clone(),
            events: s.counters(
                "stepview_events_total",
                "Events consumed, by kind and outcome (applied, unchanged, expired, dead_letter).",
                &["kind", "outcome"],
            ),
            dead_letters: s.counters(
                "stepview_dead_letters_total",
                "Messages written to the dead-letter topic, by reason.",
                &["reason"],
            ),
            dead_letters_unwritable: s.counter(
                "stepview_dead_letters_unwritable_total",
                "Bad messages the dead-letter topic refused even as headers only (they remain \
                 in the source topic only).",
            ),
            strings_cut: s.counters(
                "stepview_event_strings_cut_total",
                "Event string fields longer than their bound, cut to it (events.md), by field.",
                &["field"],
            ),
            apply_batch_events: s.histogram(
                "stepview_apply_batch_events",
                "Events per applied batch.",
                &[1.0, 10.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0],
            ),
            apply_duration: s.histogram(
                "stepview_apply_duration_seconds",
                "Time to apply one batch (decode excluded), WriteBatch included.",
                &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0],
            ),
            apply_failures: s.counter(
                "stepview_apply_failures_total",
                "Attempts to apply a batch that failed (the batch is retried until it applies).",
            ),
            consumer_lag: s.gauges(
                "stepview_consumer_lag_messages",
                "High watermark minus next offset to apply, per partition.",
                &["topic", "partition"],
            ),
            last_offset: s.gauges(
                "stepview_last_applied_offset",
                "Offset of the last applied message, per partition.",
                &["topic", "partition"],
            ),
            last_event_time: s.gauges(
                "stepview_last_applied_event_timestamp_ms",
                "Kafka timestamp of the last applied message, per partition.",
                &["topic", "partition"],
            ),
            expired_steps: s.counter(
                "stepview_retention_expired_steps_total",
                "Steps deleted because their last event is older than store.retention_days.",
            ),
            forgotten_tombstones: s.counter(
                "stepview_retention_tombstones_forgotten_total",
                "Expired steps forgotten a retention period after they expired.",
            ),
            http_requests: s.counters(
                "stepview_http_requests_total",
                "HTTP requests, by route, HTTP status and API code.",
                &["route", "status", "code"],
            ),
            http_duration: s.add(
                HistogramVec::new(
                    HistogramOpts::new("stepview_http_request_duration_seconds", "HTTP latency.")
                        .buckets(vec![
                            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                            0.25, 1.0,
                        ]),
                    &["route"],
                )
                .expect("valid"),
            ),
            queries_abandoned: s.counters(
                "stepview_http_queries_abandoned_total",
                "Queries not answered: busy (no turn for an expensive query in time), timeout, \
                 client_gone.",
                &["reason"],
            ),
            answer_cache: s.counters(
                "stepview_http_answer_cache_total",
                "Status answers by where they came from: hit (rendered before, the step \
                 unchanged since) or miss (queried and rendered).",
                &["outcome"],
            ),
            watching: s.gauge(
                "stepview_http_watching",
                "Held long-polls and open event streams (api.md, Watching a step).",
            ),
            forwarded: s.counters(
                "stepview_http_forwarded_total",
                "Requests about partitions other shards serve: ok (forwarded and answered), \
                 error (the owner did not answer), unavailable (no live member serves the \
                 partition).",
                &["outcome"],
            ),
            forward_duration: s.histogram(
                "stepview_http_forward_duration_seconds",
                "Time to the forwarded answer's headers.",
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
                ],
            ),
            members_ignored: s.counters(
                "stepview_cluster_records_ignored_total",
                "Members-topic records ignored, by reason: unsigned or bad_signature (written \
                 without the members' secret), malformed, stale (older than the newest heard \
                 from that member, or written longer ago than cluster.max_skew_ms), other_set.",
                &["reason"],
            ),
            members_ignored_logged: parking_lot::Mutex::new((None, 0)),
            gateway_key_reloads: s.counters(
                "stepview_gateway_key_reloads_total",
                "SIGHUP reloads of the API gateways' public keys: reloaded, kept (a file did not \
                 parse: the old keys stay), no_gateways.",
                &["outcome"],
            ),
            members: s.gauge(
                "stepview_cluster_members",
                "Live members of this shard set heard from (this one excluded).",
            ),
            ready: s.gauge("stepview_ready", "1 when /readyz answers ready."),
            index_steps: s.gauge(
                "stepview_index_steps",
                "Steps held in memory (loaded on first query, evicted least recently used).",
            ),
            index_hosts: s.gauge("stepview_index_hosts", "Host rows indexed in memory."),
            index_memory: s.gauge(
                "stepview_index_memory_bytes",
                "Estimated heap bytes of the steps held in memory (hot rows apart): what \
                 index.memory_mb bounds.",
            ),
            index_budget: s.gauge(
                "stepview_index_memory_budget_bytes",
                "index.memory_mb, in bytes: what stepview_index_memory_bytes stays within (hot \
                 rows apart).",
            ),
            index_loads: s.counter(
                "stepview_index_loads_total",
                "Steps loaded into memory from RocksDB on their first query.",
            ),
            index_evictions: s.counter(
                "stepview_index_evictions_total",
                "Steps evicted from memory (least recently used) to stay within index.memory_mb.",
            ),
            hot_rows: s.gauge(
                "stepview_index_hot_rows",
                "Rows kept in memory for the retries that capped queries poll.",
            ),
            hot_row_bytes: s.gauge(
                "stepview_index_hot_rows_bytes",
                "Estimated bytes of the hot rows (within index.hot_rows_mb).",
            ),
            rocksdb: s.gauges(
                "stepview_rocksdb",
                "RocksDB figures, by property (live_sst_bytes, block_cache_usage_bytes, \
                 estimate_keys, pending_compaction_bytes, write_stopped, delayed_write_rate, \
                 background_errors).",
                &["property"],
            ),
            store_errors: s.counters(
                "stepview_store_errors_total",
                "RocksDB operations that failed, by operation (write, read, flush, checkpoint) \
                 and kind (no_space, io, corruption, busy, other).",
                &["op", "kind"],
            ),
            checkpoints_made: s.counter(
                "stepview_checkpoints_made_total",
                "Checkpoints of the store made on request.",
            ),
            checkpoints: s.gauge(
                "stepview_checkpoints",
                "Checkpoints kept under store.checkpoint_dir.",
            ),
            checkpoint_bytes: s.gauges(
                "stepview_checkpoints_bytes",
                "Bytes of the checkpoints' files: all of them (each file once), and pinned: \
                 those the live store no longer has, which only the checkpoints keep on disk.",
                &["files"],
            ),
            checkpoint_last: s.gauge(
                "stepview_checkpoint_last_timestamp_seconds",
                "When the newest checkpoint kept was made, Unix seconds (0: none).",
            ),
        }
    }

    /// Counts a held request or open stream until the guard drops.
    pub fn watching(&self) -> Watching {
        self.watching.inc();
        Watching(self.watching.clone())
    }

    /// The text exposition, with the scrape-time gauges refreshed.
    pub fn render(&self, views: &ViewFigures, ready: bool) -> String {
        self.ready.set(i64::from(ready));
        if let Some(n) = views.members {
            self.members.set(n as i64);
        }
        let index = &views.index;
        self.index_steps.set(index.steps as i64);
        self.index_hosts.set(index.hosts);
        self.index_memory.set(index.bytes as i64);
        self.index_budget.set(index.budget as i64);
        self.hot_rows.set(index.hot_rows as i64);
        self.hot_row_bytes.set(index.hot_bytes as i64);
        // Counted by the index; exposed as counters.
        self.index_loads
            .inc_by(index.loads.saturating_sub(self.index_loads.get()));
        self.index_evictions
            .inc_by(index.evictions.saturating_sub(self.index_evictions.get()));
        for (label, value) in &views.rocksdb {
            self.rocksdb.with_label_values(&[label]).set(*value);
        }
        if let Some(c) = &views.checkpoints {
            self.checkpoints.set(c.count as i64);
            self.checkpoint_bytes
                .with_label_values(&["all"])
                .set(c.bytes as i64);
            self.checkpoint_bytes
                .with_label_values(&["pinned"])
                .set(c.pinned_bytes as i64);
            self.checkpoint_last
                .set(c.last_unix_ms.map_or(0, |ms| ms / 1000));
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("exposition is UTF-8")
    }
}
