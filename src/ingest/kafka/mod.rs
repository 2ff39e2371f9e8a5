//! Kafka as a source of events: the live source, and the parts it shares with replay.
//!
//! - [`read`]: consumer settings, partition ends, batches bounded by count and bytes, decoding
//!   (shared with replay).
//! - [`source`]: the live source: self-assigned partitions, the reader and applier threads,
//!   offsets committed for lag tools, lag and readiness reports.
//! - [`dead_letter`]: writing bad messages to the dead-letter topic.
//! - [`admin`]: creating topics, listing partitions.

pub mod admin;
pub mod dead_letter;
pub mod read;
pub mod source;

pub use admin::{ensure_topics, DEFAULT_PARTITIONS};
pub use read::{consumer_config, WatermarkContext, Watermarks};
pub use source::run;
