//! Kafka as a source of events: the live source, and the parts it shares with replay.
//!
//! - [`read`]: batches bounded by count and bytes, and decoding them (shared with replay).
//! - [`source`]: the live source: self-assigned partitions (or a shard's plan), the reader and
//!   applier threads, offsets committed for lag tools, lag and readiness reports.
//! - [`dead_letter`]: writing bad messages to the dead-letter topic.

pub mod dead_letter;
pub mod read;
pub mod source;

pub use source::run;
