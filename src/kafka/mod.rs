//! Kafka, as every part of stepview talks to it: the `[kafka]` settings, clients made with the
//! operator's own librdkafka properties, topic administration, the producers' partitioner, and
//! partition ends as fetch responses report them. The ground floor: it knows nothing of events,
//! views or shards (vector's `src/kafka.rs` is the model).
//!
//! - [`settings`]: the `[kafka]` section.
//! - [`client`]: client and consumer configuration.
//! - [`admin`]: creating topics, listing partitions.
//! - [`partitioner`]: a key's partition, as producers compute it.
//! - [`watermarks`]: partition ends from librdkafka's statistics.

pub mod admin;
pub mod client;
pub mod partitioner;
pub mod settings;
pub mod watermarks;

pub use admin::{ensure_members_topic, ensure_topics, partitions, DEFAULT_PARTITIONS};
pub use client::{client_config, consumer_config};
pub use partitioner::Partitioner;
pub use settings::KafkaSettings;
pub use watermarks::{PartitionEnds, WatermarkContext, Watermarks};
