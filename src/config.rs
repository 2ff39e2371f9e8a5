//! Service configuration: one struct, read from a TOML file, then overridden by environment
//! variables and flags (precedence: flag > environment > file > default; see `cli`).
//!
//! Owns: setting names, defaults and their documentation. Must not: open anything.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub kafka: KafkaConfig,
    pub store: StoreConfig,
    pub index: IndexConfig,
    pub cluster: ClusterConfig,
    /// Apps allowed to call the API (api.md, "Authentication").
    pub apps: Vec<AppConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Authentication is on unless this is set to false explicitly.
    pub auth: bool,
    /// Most expensive queries (uncapped answers, `search_ip`, `keyword`) computed at once;
    /// more wait for a turn. 0: one per CPU core.
    pub max_expensive_queries: usize,
    /// How long a query may take, waiting for its turn included, before it is answered 503.
    pub query_timeout_ms: u64,
    /// Hex SHA-256 of the bearer token `/metrics` requires; unset: `/metrics` is open.
    pub metrics_token_sha256: Option<String>,
    /// Memory for rendered answers kept until their step changes, MiB (0: none).
    pub answer_cache_mb: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers; empty means "do not consume" (serve what is stored).
    pub brokers: String,
    pub topic: String,
    /// Dead-letter topic; default `<topic>.dlq`.
    pub dlq_topic: Option<String>,
    pub group_id: String,
    /// Most messages applied in one WriteBatch.
    pub batch_max: usize,
    /// A batch also closes once its messages reach this many MiB.
    pub batch_max_mb: usize,
    /// Ready once every partition's lag is at most this many messages.
    pub ready_max_lag: i64,
    /// librdkafka properties for every Kafka client (security.protocol, sasl.* …); they win
    /// over stepview's own choices.
    pub client: BTreeMap<String, String>,
    /// librdkafka properties for the dead-letter producer only, applied last.
    pub dlq_producer: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub block_cache_mb: usize,
    pub write_buffer_mb: usize,
    /// Days a step is kept after its last event (0: forever).
    pub retention_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// Memory for the steps held in memory, MiB (estimated); the least recently used leave.
    pub memory_mb: usize,
    /// Memory for the rows of the retries that capped queries poll, MiB (0: none).
    pub hot_rows_mb: usize,
}

/// Shards (cluster.md): empty `name` = not a shard (a replica reads every partition).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The shard set this instance belongs to; instances of one set divide the partitions.
    pub name: String,
    /// This instance's URL as the others reach it, e.g. `http://10.0.0.5:8080`.
    pub advertise: String,
    /// The producers' partitioner: `murmur2` (Kafka's default) or `consistent` (CRC32).
    pub partitioner: crate::cluster::owners::Partitioner,
    /// A file holding the members' secret (at least 32 bytes, the same on every member);
    /// unset: the `STEPVIEW_CLUSTER_SECRET` environment variable. Required with `name`.
    pub secret_file: Option<PathBuf>,
    /// Longest any step of a partition's handoff waits before it is given up, ms.
    pub handoff_timeout_ms: u64,
    /// Members-topic entries written longer ago than this (by this instance's clock) are
    /// ignored, ms: old entries cannot be replayed to keep a dead member alive.
    pub max_skew_ms: i64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: String::new(),
            advertise: String::new(),
            partitioner: Default::default(),
            secret_file: None,
            handoff_timeout_ms: 10_000,
            max_skew_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub code: String,
    /// Hex SHA-256 of the app's secret; the secret itself is never stored.
    pub secret_sha256: String,
    /// `biz:2`, `biz_set:*`, `biz:*` or `*`.
    pub scopes: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            http: HttpConfig::default(),
            kafka: KafkaConfig::default(),
            store: StoreConfig::default(),
            index: IndexConfig::default(),
            cluster: ClusterConfig::default(),
            apps: Vec::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            auth: true,
            max_expensive_queries: 0,
            query_timeout_ms: 10_000,
            metrics_token_sha256: None,
            answer_cache_mb: 32,
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            topic: "bkjob.gse.events".into(),
            dlq_topic: None,
            group_id: "stepview".into(),
            batch_max: 5000,
            batch_max_mb: 32,
            ready_max_lag: 1000,
            client: BTreeMap::new(),
            dlq_producer: BTreeMap::new(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            block_cache_mb: 256,
            write_buffer_mb: 256,
            retention_days: 30,
        }
    }
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            memory_mb: 256,
            hot_rows_mb: 32,
        }
    }
}

impl KafkaConfig {
    pub fn dlq(&self) -> String {
        self.dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.topic))
    }
}

impl HttpConfig {
    /// `max_expensive_queries`, with 0 resolved to the CPU cores.
    pub fn expensive_query_slots(&self) -> usize {
        match self.max_expensive_queries {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

impl StoreConfig {
    /// How long a step is kept after its last event, in ms; `None`: forever.
    pub fn retention_ms(&self) -> Option<i64> {
        (self.retention_days > 0).then(|| i64::from(self.retention_days) * 86_400_000)
    }

    pub fn options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            block_cache_bytes: self.block_cache_mb << 20,
            write_buffer_bytes: self.write_buffer_mb << 20,
        }
    }
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Rejects settings that parse but cannot work.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.kafka.batch_max >= 1,
            "kafka.batch_max must be at least 1"
        );
        anyhow::ensure!(
            self.kafka.batch_max_mb >= 1,
            "kafka.batch_max_mb must be at least 1"
        );
        anyhow::ensure!(
            self.http.query_timeout_ms >= 1,
            "http.query_timeout_ms must be at least 1"
        );
        if !self.cluster.name.is_empty() {
            anyhow::ensure!(
                self.cluster.advertise.starts_with("http://")
                    || self.cluster.advertise.starts_with("https://"),
                "cluster.advertise must be this instance's URL as the others reach it \
                 (http://HOST:PORT) when cluster.name is set"
            );
            anyhow::ensure!(
                !self.kafka.brokers.is_empty(),
                "a shard (cluster.name) must read Kafka: set kafka.brokers"
            );
            anyhow::ensure!(
                self.cluster.handoff_timeout_ms >= 1000,
                "cluster.handoff_timeout_ms must be at least 1000"
            );
            anyhow::ensure!(
                self.cluster.max_skew_ms >= 1000,
                "cluster.max_skew_ms must be at least 1000"
            );
        }
        if let Some(token) = &self.http.metrics_token_sha256 {
            anyhow::ensure!(
                token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
                "http.metrics_token_sha256 must be 64 hex digits (stepview hash-secret TOKEN)"
            );
        }
        anyhow::ensure!(
            self.kafka.ready_max_lag >= 0,
            "kafka.ready_max_lag must be at least 0"
        );
        anyhow::ensure!(
            !self.kafka.topic.is_empty(),
            "kafka.topic must not be empty"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_states_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/stepview.example.toml");
        let example = Config::from_file(&path).unwrap();
        let defaults = Config::default();
        assert_eq!(example.http.auth, defaults.http.auth);
        assert_eq!(example.kafka.topic, defaults.kafka.topic);
        assert_eq!(example.kafka.batch_max, defaults.kafka.batch_max);
        assert_eq!(example.kafka.ready_max_lag, defaults.kafka.ready_max_lag);
        assert_eq!(example.store.block_cache_mb, defaults.store.block_cache_mb);
        assert_eq!(
            example.store.write_buffer_mb,
            defaults.store.write_buffer_mb
        );
        assert_eq!(example.index.hot_rows_mb, defaults.index.hot_rows_mb);
        assert_eq!(example.index.memory_mb, defaults.index.memory_mb);
        assert_eq!(example.store.retention_days, defaults.store.retention_days);
        assert_eq!(example.kafka.batch_max_mb, defaults.kafka.batch_max_mb);
        assert_eq!(
            example.http.max_expensive_queries,
            defaults.http.max_expensive_queries
        );
        assert_eq!(
            example.http.query_timeout_ms,
            defaults.http.query_timeout_ms
        );
        assert_eq!(example.http.answer_cache_mb, defaults.http.answer_cache_mb);
        assert!(!example.apps.is_empty());
        let typo = toml::from_str::<Config>("[kafka]\nbroker = \"x\"\n").unwrap_err();
        assert!(typo.to_string().contains("broker"), "{typo}");
    }
}
