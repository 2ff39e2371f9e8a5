//! The `[cluster]` settings: the shard set this instance joins, if any.

use crate::kafka::Partitioner;
use crate::settings::Millis;
use std::path::PathBuf;

/// Shards (`[cluster]`, cluster.md): an empty `name` means not a shard (a replica reads every
/// partition).
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterSettings {
    /// The shard set this instance joins (instances of one set divide the partitions); empty:
    /// not a shard, it reads every partition.
    #[arg(
        id = "name",
        long = "cluster",
        env = "STEPVIEW_CLUSTER",
        default_value = ""
    )]
    pub name: String,
    /// This instance's URL as the other shards reach it, e.g. http://10.0.0.5:8080; required
    /// with a shard set.
    #[arg(long, env = "STEPVIEW_ADVERTISE", default_value = "")]
    pub advertise: String,
    /// The producers' partitioner: murmur2 (Kafka's default for keyed messages) or consistent
    /// (librdkafka's CRC32).
    #[arg(
        long,
        env = "STEPVIEW_PARTITIONER",
        value_enum,
        default_value = "murmur2"
    )]
    pub partitioner: Partitioner,
    /// A file holding the members' secret (at least 32 bytes, the same on every shard); unset:
    /// the STEPVIEW_CLUSTER_SECRET environment variable. The secret itself is never a flag.
    #[arg(long = "cluster-secret-file", env = "STEPVIEW_CLUSTER_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Longest any step of a partition's handoff waits before it is given up, ms.
    #[arg(long, env = "STEPVIEW_HANDOFF_TIMEOUT_MS", default_value = "10000", value_parser = at_least_a_second)]
    pub handoff_timeout_ms: Millis,
    /// Members-topic entries written longer ago than this (by this instance's clock) are
    /// ignored, ms: old entries cannot be replayed to keep a dead member alive.
    #[arg(long, env = "STEPVIEW_MAX_SKEW_MS", default_value = "30000", value_parser = at_least_a_second)]
    pub max_skew_ms: Millis,
}

fn at_least_a_second(s: &str) -> Result<Millis, String> {
    match s.parse::<Millis>()? {
        ms if ms.0 < 1000 => Err("must be at least 1000".into()),
        ms => Ok(ms),
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

impl ClusterSettings {
    /// True when this instance is a shard.
    pub fn is_shard(&self) -> bool {
        !self.name.is_empty()
    }
}
