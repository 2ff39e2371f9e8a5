//! stepview: event-sourced step status views for BlueKing Job.
//!
//! GSE host results arrive as events on Kafka; stepview folds them into materialized views in
//! RocksDB plus in-memory group indexes, and answers `get_step_instance_status` (and three
//! sibling APIs) from them.
//!
//! # Layout
//!
//! Data flows one way: `ingest` → `apply` → `store` / `index` → `query` → `http`. From the ground
//! floor up:
//!
//! - [`events`]: the five event kinds (`job`, `step`, `step_targets`, `host_result`, `host_log`),
//!   decoding and validation (mirrored by `schemas/`).
//! - [`settings`]: how a setting is declared once (doc, default, unit, flag, environment) and a
//!   config file layered under flags; each part declares its own section.
//! - [`telemetry`]: typed events whose `emit` logs and counts together; the Prometheus registry.
//! - [`kafka`]: Kafka as every part talks to it: settings, clients, admin, the producers'
//!   partitioner, partition watermarks.
//! - [`store`]: RocksDB column families for jobs, steps, host rows, logs, clocks, a job's steps
//!   and offsets; a read handle for everyone and one `StoreWriter`, held by `apply`; the format
//!   version settled at open (`format`), failures told in RocksDB's words (`failure`), and
//!   checkpoints of the live store (`checkpoint`).
//! - [`index`]: the steps being read, in memory within a byte budget: their (status, tag) groups
//!   (`groups`), which steps are resident (`residency`: loaded on first query, least recently used
//!   evicted), and the rows of polled answers (`hot_rows`).
//! - [`watch`]: who waits for which step to change; apply wakes them.
//! - [`apply`]: the only writer: a pure `fold` of events into changes, their `commit` (one
//!   WriteBatch with the offsets, then the index, then the waiters), and `expire`.
//! - [`cluster`]: shards: the signed members topic, who owns which partition, the handoff that
//!   moves one without ever going back, fencing, and where a query goes.
//! - [`ingest`]: sources of events: the Kafka source (self-assigned partitions, or a shard's
//!   plan; dead-letter topic), replay and JSON-lines files; all hand batches to `apply` (through
//!   `ingest::Sink`).
//! - [`retention`]: when steps expire (apply deletes them).
//! - [`query`]: the semantics of the APIs over index and store; `query::Reader` is the one door
//!   to the views for `http`.
//! - [`http`]: axum routes; every API request admitted first (authentication, parameters, scope)
//!   and then answered here or forwarded; language, the JSON envelope; every view read on the
//!   blocking pool, expensive queries bounded while rendered and written; rendered answers kept
//!   until their step changes; signed routes between shards; the operator's checkpoint route.
//! - [`health`] says whether this instance is ready (`/readyz`).
//! - [`cdc`]: `stepview cdc`, a process of its own that turns Debezium's change events of
//!   bk-job's tables into events on the events topic: fed by an unmodified bk-job.
//! - [`simulate`]: realistic event streams for demos, tests and benchmarks.
//! - [`service`]: wires the parts into the running service; [`shutdown`]: the stop signal they
//!   all watch.
//! - [`config`], [`cli`]: the configuration assembled from every part's section, and the
//!   `stepview` command line.

pub mod apply;
pub mod cdc;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod events;
pub mod health;
pub mod http;
pub mod index;
pub mod ingest;
pub mod kafka;
pub mod query;
pub mod retention;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod simulate;
pub mod store;
pub mod telemetry;
pub mod watch;

/// The wall clock as events carry times: Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
