//! The `[cdc]` settings: where Debezium's topics are, the translator's own state, and its
//! operating surface. The output topic, brokers and librdkafka properties are `[kafka]`'s.

use crate::settings::Millis;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The translator from bk-job's change events (`[cdc]`, `stepview cdc`).
#[derive(Debug, Clone, clap::Args)]
pub struct CdcSettings {
    /// Debezium's topic prefix (its `topic.prefix`): input topics are `<prefix>.<database>.<table>`.
    #[arg(
        long = "cdc-topic-prefix",
        env = "STEPVIEW_CDC_TOPIC_PREFIX",
        default_value = "bkjob"
    )]
    pub topic_prefix: String,
    /// bk-job's job-manage database (the `application` table).
    #[arg(
        long = "cdc-manage-database",
        env = "STEPVIEW_CDC_MANAGE_DATABASE",
        default_value = "job_manage"
    )]
    pub manage_database: String,
    /// bk-job's job-execute database (jobs, steps and results).
    #[arg(
        long = "cdc-execute-database",
        env = "STEPVIEW_CDC_EXECUTE_DATABASE",
        default_value = "job_execute"
    )]
    pub execute_database: String,
    /// Regular expression of the topics of the daily script-log collections (Debezium's
    /// MongoDB connector); new ones are picked up as they appear.
    #[arg(
        long = "cdc-log-topics",
        env = "STEPVIEW_CDC_LOG_TOPICS",
        default_value = r"^bkjob\.joblog\.job_log_script_[0-9_]+$"
    )]
    pub log_topics: String,
    /// Raise by one when Debezium's topics are recreated or re-partitioned: versions are
    /// `epoch × 2^48 + offset`, so that every change after it wins over every change before.
    #[arg(long = "cdc-epoch", env = "STEPVIEW_CDC_EPOCH", default_value = "0", value_parser = clap::value_parser!(u16).range(0..32768))]
    pub epoch: u16,
    /// Directory of the translator's own RocksDB (its state and input offsets).
    #[arg(
        long = "cdc-state-dir",
        env = "STEPVIEW_CDC_STATE_DIR",
        default_value = "cdc-state"
    )]
    pub state_dir: PathBuf,
    /// Dead-letter topic for change events that cannot be translated.
    #[arg(
        long = "cdc-dead-letter-topic",
        env = "STEPVIEW_CDC_DEAD_LETTER_TOPIC",
        default_value = "bkjob.cdc.dlq"
    )]
    pub dead_letter_topic: String,
    /// Listen address of the translator's /metrics, /healthz and /readyz.
    #[arg(
        long = "cdc-listen",
        env = "STEPVIEW_CDC_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub metrics_listen: SocketAddr,
    /// Most change events translated in one batch (one round of acknowledgements, one
    /// WriteBatch).
    #[arg(long = "cdc-batch-changes", env = "STEPVIEW_CDC_BATCH_CHANGES", default_value = "10000", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_changes: u32,
    /// Ready once every input partition lags by at most this many change events.
    #[arg(long = "cdc-ready-max-behind", env = "STEPVIEW_CDC_READY_MAX_BEHIND", default_value = "1000", value_parser = clap::value_parser!(i64).range(0..))]
    pub ready_max_behind: i64,
    /// How often the broker's topics are listed, for new log collections and changed
    /// partition counts, ms.
    #[arg(
        long = "cdc-topic-refresh-ms",
        env = "STEPVIEW_CDC_TOPIC_REFRESH_MS",
        default_value = "5000"
    )]
    pub topic_refresh_ms: Millis,
}

impl Default for CdcSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}
