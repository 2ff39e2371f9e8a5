//! Prometheus metrics: one registry, the series every part reports to, and the text exposition.
//!
//! Owns: metric names, labels and buckets. Must not: compute anything a part does not report;
//! the gauges read at scrape time come as [`ViewFigures`], running values that cost the same to
//! read whatever the views hold.

use crate::health::Health;
use crate::index::IndexFigures;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Figures of the views, read at scrape time (see `query::Reader::figures`).
pub struct ViewFigures {
    pub index: IndexFigures,
    /// Live members of this shard set, when it is a shard.
    pub members: Option<usize>,
    /// RocksDB figures by label.
    pub rocksdb: Vec<(&'static str, i64)>,
}

/// One held long-poll or open event stream, counted while it lives.
pub struct Watching(IntGauge);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub struct Metrics {
    registry: Registry,
    watching: IntGauge,
    pub events: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub dead_letters_unwritable: IntCounter,
    pub strings_cut: IntCounterVec,
    pub queries_abandoned: IntCounterVec,
    pub answer_cache: IntCounterVec,
    pub expired_steps: IntCounter,
    pub forwarded: IntCounterVec,
    pub forward_duration: Histogram,
    pub members_ignored: IntCounterVec,
    members: IntGauge,
    pub forgotten_tombstones: IntCounter,
    index_budget: IntGauge,
    index_loads: IntCounter,
    index_evictions: IntCounter,
    pub apply_batch_events: Histogram,
    pub apply_duration: Histogram,
    pub apply_failures: IntCounter,
    pub consumer_lag: IntGaugeVec,
    pub last_offset: IntGaugeVec,
    pub last_event_time: IntGaugeVec,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    index_steps: IntGauge,
    ready: IntGauge,
    index_hosts: IntGauge,
    index_memory: IntGauge,
    hot_rows: IntGauge,
    hot_row_bytes: IntGauge,
    rocksdb: IntGaugeVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid"),
            )
        };
        let events = counter(
            "stepview_events_total",
            "Events consumed, by kind and outcome (applied, unchanged, dead_letter).",
            &["kind", "outcome"],
        );
        let dead_letters = counter(
            "stepview_dead_letters_total",
            "Messages written to the dead-letter topic, by reason.",
            &["reason"],
        );
        let dead_letters_unwritable = register(
            &r,
            IntCounter::new(
                "stepview_dead_letters_unwritable_total",
                "Bad messages the dead-letter topic refused even as headers only (they remain \
                 in the source topic only).",
            )
            .expect("valid"),
        );
        let strings_cut = counter(
            "stepview_event_strings_cut_total",
            "Event string fields longer than their bound, cut to it (events.md), by field.",
            &["field"],
        );
        let queries_abandoned = counter(
            "stepview_http_queries_abandoned_total",
            "Queries not answered: busy (no turn for an expensive query in time), timeout, \
             client_gone.",
            &["reason"],
        );
        let answer_cache = counter(
            "stepview_http_answer_cache_total",
            "Status answers by where they came from: hit (rendered before, the step unchanged \
             since) or miss (queried and rendered).",
            &["outcome"],
        );
        let forwarded = counter(
            "stepview_http_forwarded_total",
            "Requests about partitions other shards serve: ok (forwarded and answered), error \
             (the owner did not answer), unavailable (no live member serves the partition).",
            &["outcome"],
        );
        let members_ignored = counter(
            "stepview_cluster_records_ignored_total",
            "Members-topic records ignored, by reason: unsigned or bad_signature (written \
             without the members' secret), malformed, stale (older than the newest heard from \
             that member, or written longer ago than cluster.max_skew_ms), other_set.",
            &["reason"],
        );
        let forward_duration = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "stepview_http_forward_duration_seconds",
                    "Time to the forwarded answer's headers.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
                ]),
            )
            .expect("valid"),
        );
        let members = register(
            &r,
            IntGauge::new(
                "stepview_cluster_members",
                "Live members of this shard set heard from (this one excluded).",
            )
            .expect("valid"),
        );
        let plain_counter =
            |name: &str, help: &str| register(&r, IntCounter::new(name, help).expect("valid"));
        let expired_steps = plain_counter(
            "stepview_retention_expired_steps_total",
            "Steps deleted because their last event is older than store.retention_days.",
        );
        let forgotten_tombstones = plain_counter(
            "stepview_retention_tombstones_forgotten_total",
            "Expired steps forgotten a retention period after they expired.",
        );
        let index_loads = plain_counter(
            "stepview_index_loads_total",
            "Steps loaded into memory from RocksDB on their first query.",
        );
        let index_evictions = plain_counter(
            "stepview_index_evictions_total",
            "Steps evicted from memory (least recently used) to stay within index.memory_mb.",
        );
        let index_budget = register(
            &r,
            IntGauge::new(
                "stepview_index_memory_budget_bytes",
                "index.memory_mb, in bytes: what stepview_index_memory_bytes stays within (hot \
                 rows apart).",
            )
            .expect("valid"),
        );
        let apply_failures = register(
            &r,
            IntCounter::new(
                "stepview_apply_failures_total",
                "Attempts to apply a batch that failed (the batch is retried until it applies).",
            )
            .expect("valid"),
        );
        let apply_batch_events = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new("stepview_apply_batch_events", "Events per applied batch.")
                    .buckets(vec![
                        1.0, 10.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
                    ]),
            )
            .expect("valid"),
        );
        let apply_duration = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "stepview_apply_duration_seconds",
                    "Time to apply one batch (decode excluded), WriteBatch included.",
                )
                .buckets(vec![
                    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
                ]),
            )
            .expect("valid"),
        );
        let consumer_lag = gauge(
            "stepview_consumer_lag_messages",
            "High watermark minus next offset to apply, per partition.",
            &["topic", "partition"],
        );
        let last_offset = gauge(
            "stepview_last_applied_offset",
            "Offset of the last applied message, per partition.",
            &["topic", "partition"],
        );
        let last_event_time = gauge(
            "stepview_last_applied_event_timestamp_ms",
            "Kafka timestamp of the last applied message, per partition.",
            &["topic", "partition"],
        );
        let http_requests = counter(
            "stepview_http_requests_total",
            "HTTP requests, by route, HTTP status and API code.",
            &["route", "status", "code"],
        );
        let http_duration = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new("stepview_http_request_duration_seconds", "HTTP latency.")
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 1.0,
                    ]),
                &["route"],
            )
            .expect("valid"),
        );
        let index_steps = register(
            &r,
            IntGauge::new(
                "stepview_index_steps",
                "Steps held in memory (loaded on first query, evicted least recently used).",
            )
            .expect("valid"),
        );
        let ready = register(
            &r,
            IntGauge::new("stepview_ready", "1 when /readyz answers ready.").expect("valid"),
        );
        let index_hosts = register(
            &r,
            IntGauge::new("stepview_index_hosts", "Host rows indexed in memory.").expect("valid"),
        );
        let index_memory = register(
            &r,
            IntGauge::new(
                "stepview_index_memory_bytes",
                "Estimated heap bytes of the steps held in memory (hot rows apart): what \
                 index.memory_mb bounds.",
            )
            .expect("valid"),
        );
        let hot_rows = register(
            &r,
            IntGauge::new(
                "stepview_index_hot_rows",
                "Rows kept in memory for the retries that capped queries poll.",
            )
            .expect("valid"),
        );
        let watching = register(
            &r,
            IntGauge::new(
                "stepview_http_watching",
                "Held long-polls and open event streams (api.md, Watching a step).",
            )
            .expect("valid"),
        );
        let hot_row_bytes = register(
            &r,
            IntGauge::new(
                "stepview_index_hot_rows_bytes",
                "Estimated bytes of the hot rows (within index.hot_rows_mb).",
            )
            .expect("valid"),
        );
        let rocksdb = gauge(
            "stepview_rocksdb",
            "RocksDB figures, by property (live_sst_bytes, block_cache_usage_bytes, \
             estimate_keys, pending_compaction_bytes, write_stopped, delayed_write_rate).",
            &["property"],
        );
        let build = gauge("stepview_build_info", "Build information.", &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("metric names are unique");
        Metrics {
            registry: r,
            watching,
            events,
            dead_letters,
            dead_letters_unwritable,
            strings_cut,
            queries_abandoned,
            answer_cache,
            expired_steps,
            forwarded,
            forward_duration,
            members_ignored,
            members,
            forgotten_tombstones,
            index_budget,
            index_loads,
            index_evictions,
            apply_batch_events,
            apply_duration,
            apply_failures,
            consumer_lag,
            last_offset,
            last_event_time,
            http_requests,
            http_duration,
            index_steps,
            ready,
            index_hosts,
            index_memory,
            hot_rows,
            hot_row_bytes,
            rocksdb,
        }
    }

    /// Counts a held request or open stream until the guard drops.
    pub fn watching(&self) -> Watching {
        self.watching.inc();
        Watching(self.watching.clone())
    }

    /// Removes the per-partition series of a partition this instance no longer reads.
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        let labels = [topic, &partition.to_string()];
        for gauge in [&self.consumer_lag, &self.last_offset, &self.last_event_time] {
            let _ = gauge.remove_label_values(&labels);
        }
    }

    /// The text exposition, with the scrape-time gauges refreshed.
    pub fn render(&self, views: &ViewFigures, health: &Health) -> String {
        self.ready.set(i64::from(health.readiness().is_ok()));
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
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("exposition is UTF-8")
    }
}
