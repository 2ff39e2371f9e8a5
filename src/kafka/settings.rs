//! The `[kafka]` settings: where events come from, and how they are read.

use crate::settings::Mebibytes;
use std::collections::BTreeMap;

/// Kafka (`[kafka]`).
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaSettings {
    /// Kafka bootstrap servers; empty: do not consume (serve what is stored).
    #[arg(long, env = "STEPVIEW_KAFKA_BROKERS", default_value = "")]
    pub brokers: String,
    /// The events topic.
    #[arg(long, env = "STEPVIEW_KAFKA_TOPIC", default_value = "bkjob.gse.events", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub topic: String,
    /// Dead-letter topic; unset: `<topic>.dlq`.
    #[arg(long, env = "STEPVIEW_KAFKA_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// Consumer group id (offsets are committed under it for lag tools only).
    #[arg(long, env = "STEPVIEW_KAFKA_GROUP_ID", default_value = "stepview")]
    pub group_id: String,
    /// Most events applied in one RocksDB WriteBatch.
    #[arg(long, env = "STEPVIEW_BATCH_MAX", default_value = "5000", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_max: u32,
    /// A batch also closes once its messages reach this many MiB.
    #[arg(long, env = "STEPVIEW_BATCH_MAX_MB", default_value = "32", value_parser = at_least_one_mib)]
    pub batch_max_mb: Mebibytes,
    /// Ready once every partition lags by at most this many events.
    #[arg(long, env = "STEPVIEW_READY_MAX_LAG", default_value = "1000", value_parser = clap::value_parser!(i64).range(0..))]
    pub ready_max_lag: i64,
    /// librdkafka properties for every Kafka client (`security.protocol`, `sasl.*` …); they win
    /// over stepview's own. Config file only: `[kafka.client]`.
    #[arg(skip)]
    pub client: BTreeMap<String, String>,
    /// librdkafka properties for the dead-letter producer only, applied last. Config file
    /// only: `[kafka.dlq_producer]`.
    #[arg(skip)]
    pub dlq_producer: BTreeMap<String, String>,
}

fn at_least_one_mib(s: &str) -> Result<Mebibytes, String> {
    match s.parse::<Mebibytes>()? {
        Mebibytes(0) => Err("must be at least 1".into()),
        mib => Ok(mib),
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

impl KafkaSettings {
    /// The dead-letter topic.
    pub fn dlq(&self) -> String {
        self.dlq_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.topic))
    }

    /// The settings of a client of `brokers` reading `topic`, the rest at their defaults.
    pub fn of(brokers: &str, topic: &str) -> KafkaSettings {
        KafkaSettings {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            ..KafkaSettings::default()
        }
    }
}
