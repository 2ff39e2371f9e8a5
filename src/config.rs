//! Service configuration: one struct, read from a TOML file, then overridden by environment
//! variables and flags (precedence: flag > environment > file > default; see `cli`).
//!
//! Owns: setting names, defaults and their documentation. Must not: open anything.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub kafka: KafkaConfig,
    pub store: StoreConfig,
    /// Apps allowed to call the API (api.md, "Authentication").
    pub apps: Vec<AppConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Authentication is on unless this is set to false explicitly.
    pub auth: bool,
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
    /// Ready once every partition's lag is at most this many messages.
    pub ready_max_lag: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub block_cache_mb: usize,
    pub write_buffer_mb: usize,
    /// Most rows kept in memory for the retries that capped queries poll (0: none).
    pub hot_rows: usize,
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
            apps: Vec::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            auth: true,
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
            ready_max_lag: 1000,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            block_cache_mb: 256,
            write_buffer_mb: 256,
            hot_rows: 200_000,
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

impl StoreConfig {
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
        assert_eq!(example.store.hot_rows, defaults.store.hot_rows);
        assert!(!example.apps.is_empty());
        let typo = toml::from_str::<Config>("[kafka]\nbroker = \"x\"\n").unwrap_err();
        assert!(typo.to_string().contains("broker"), "{typo}");
    }
}
