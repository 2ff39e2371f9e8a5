//! stepview: event-sourced step status views for BlueKing Job.
//!
//! GSE host results arrive as events on Kafka; stepview folds them into materialized views in
//! RocksDB plus in-memory group indexes, and answers `get_step_instance_status` from them.
//!
//! # Layout
//!
//! Data flows one way: `ingest` → `apply` → `store` / `index` → `query` → `http`.
//!
//! - [`events`]: the four event kinds, decoding and validation (mirrored by `schemas/`).
//! - [`ingest`]: sources of events: the Kafka source (self-assigned partitions, dead-letter
//!   topic), replay and JSON-lines files; all hand batches to `apply` (through `ingest::Sink`).
//! - [`apply`]: the only writer; folds events idempotently into store and index.
//! - [`store`]: RocksDB column families for steps, host rows, logs and offsets.
//! - [`index`]: the steps being read, in memory within a byte budget (loaded on first query,
//!   least recently used evicted): per retry / batch the (status, tag) groups of hosts (in
//!   compact sorted chunks, `index::host_set`), and the rows of polled answers ("hot rows").
//! - [`retention`]: when steps expire (apply deletes them).
//! - [`watch`]: who waits for which step to change; apply wakes them.
//! - [`cluster`]: shards: the signed members topic, who owns which partition, the handoff that
//!   moves one without ever going back, fencing, and where a query goes.
//! - [`query`]: the semantics of the API over index and store; `query::Reader` is the one door
//!   to the views for `http`.
//! - [`http`]: axum routes; every API request admitted first (authentication, parameters, scope)
//!   and then answered here or forwarded; language, the JSON envelope; every view read on the
//!   blocking pool, expensive queries bounded while rendered and written; rendered answers kept
//!   until their step changes; signed routes between shards.
//! - [`metrics`], [`health`]: Prometheus exposition, readiness.
//! - [`simulate`]: realistic event streams for demos, tests and benchmarks.
//! - [`service`]: wires the parts into the running service; [`shutdown`]: the stop signal they
//!   all watch.
//! - [`config`], [`cli`]: settings and the `stepview` command line.

pub mod apply;
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
