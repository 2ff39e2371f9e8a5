//! The `stepview` command line: flags and environment variables over the config file, and one
//! function per subcommand that calls the library.
//!
//! Precedence of settings: flag > environment variable > config file > built-in default.

use crate::config::Config;
use crate::ingest::{file, kafka, replay};
use crate::retention;
use crate::service::{self, Views};
use crate::simulate::{self, Workload};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "stepview",
    version,
    about = "Event-sourced step status views for BlueKing Job"
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "STEPVIEW_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume events from Kafka and answer get_step_instance_status over HTTP.
    #[command(after_help = SETTINGS_HELP)]
    Serve(Settings),
    /// Apply JSON-lines event files to a data directory (no Kafka).
    Load {
        #[command(flatten)]
        settings: Settings,
        /// Files with one event per line.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Rebuild every view from the topic's earliest retained offset into a data directory.
    Replay(Settings),
    /// Print a content digest of a data directory's views (equal digests: equal views).
    Digest {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// Produce a realistic workload of jobs to Kafka (or to a JSON-lines file).
    Simulate {
        #[command(flatten)]
        workload: Workload,
        /// Kafka bootstrap servers.
        #[arg(long, env = "STEPVIEW_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Events topic.
        #[arg(long, env = "STEPVIEW_KAFKA_TOPIC", default_value = "bkjob.gse.events")]
        topic: String,
        /// Events per second (0 = as fast as the broker takes them).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Write the events to this JSON-lines file instead of Kafka.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the SHA-256 of an app secret, for `secret_sha256` in the config file.
    HashSecret { secret: String },
}

const SETTINGS_HELP: &str = "\
Precedence: flag > environment variable > config file (--config) > default.
The apps that may call the API are set in the config file only, as [[apps]] tables with
`code`, `secret_sha256` (`stepview hash-secret SECRET`) and `scopes` (\"biz:2\", \"biz_set:*\",
\"*\"); see ops/stepview.example.toml. Logging: STEPVIEW_LOG (tracing filter, default info).";

/// Every service setting; each overrides the config file when given.
#[derive(clap::Args, Clone)]
struct Settings {
    /// TOML config file (see README, "Configuration").
    #[arg(long, env = "STEPVIEW_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the RocksDB views [default: data].
    #[arg(long, env = "STEPVIEW_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "STEPVIEW_LISTEN")]
    listen: Option<SocketAddr>,
    /// Require X-Bkapi-Authorization (false switches authentication off) [default: true].
    #[arg(long, env = "STEPVIEW_AUTH")]
    auth: Option<bool>,
    /// Most expensive queries (uncapped, search_ip, keyword) computed at once; 0 = one per
    /// CPU core [default: 0].
    #[arg(long, env = "STEPVIEW_MAX_EXPENSIVE_QUERIES")]
    max_expensive_queries: Option<usize>,
    /// Longest a query may take, waiting for its turn included, before a 503, ms
    /// [default: 10000].
    #[arg(long, env = "STEPVIEW_QUERY_TIMEOUT_MS")]
    query_timeout_ms: Option<u64>,
    /// Memory for rendered answers kept until their step changes, MiB; 0 = none [default: 32].
    #[arg(long, env = "STEPVIEW_ANSWER_CACHE_MB")]
    answer_cache_mb: Option<usize>,
    /// Kafka bootstrap servers; empty = do not consume [default: empty].
    #[arg(long, env = "STEPVIEW_KAFKA_BROKERS")]
    brokers: Option<String>,
    /// Events topic [default: bkjob.gse.events].
    #[arg(long, env = "STEPVIEW_KAFKA_TOPIC")]
    topic: Option<String>,
    /// Dead-letter topic [default: <topic>.dlq].
    #[arg(long, env = "STEPVIEW_KAFKA_DLQ_TOPIC")]
    dlq_topic: Option<String>,
    /// Consumer group id [default: stepview].
    #[arg(long, env = "STEPVIEW_KAFKA_GROUP_ID")]
    group_id: Option<String>,
    /// Most events applied in one RocksDB WriteBatch [default: 5000].
    #[arg(long, env = "STEPVIEW_BATCH_MAX")]
    batch_max: Option<usize>,
    /// A batch also closes once its messages reach this many MiB [default: 32].
    #[arg(long, env = "STEPVIEW_BATCH_MAX_MB")]
    batch_max_mb: Option<usize>,
    /// Ready once every partition lags by at most this many events [default: 1000].
    #[arg(long, env = "STEPVIEW_READY_MAX_LAG")]
    ready_max_lag: Option<i64>,
    /// RocksDB block cache, shared by all column families, MiB [default: 256].
    #[arg(long, env = "STEPVIEW_BLOCK_CACHE_MB")]
    block_cache_mb: Option<usize>,
    /// RocksDB write-buffer budget (memtables), MiB [default: 256].
    #[arg(long, env = "STEPVIEW_WRITE_BUFFER_MB")]
    write_buffer_mb: Option<usize>,
    /// Days a step is kept after its last event; 0 = forever [default: 30].
    #[arg(long, env = "STEPVIEW_RETENTION_DAYS")]
    retention_days: Option<u32>,
    /// Memory for the steps held in memory (estimated), MiB [default: 256].
    #[arg(long, env = "STEPVIEW_INDEX_MEMORY_MB")]
    index_memory_mb: Option<usize>,
    /// Memory for the rows of the steps that capped queries poll, MiB; 0 = none [default: 32].
    #[arg(long, env = "STEPVIEW_HOT_ROWS_MB")]
    hot_rows_mb: Option<usize>,
    /// Shard set to join (instances of one set divide the partitions); empty = read every
    /// partition [default: empty].
    #[arg(long, env = "STEPVIEW_CLUSTER")]
    cluster: Option<String>,
    /// This instance's URL as the other shards reach it, e.g. http://10.0.0.5:8080.
    #[arg(long, env = "STEPVIEW_ADVERTISE")]
    advertise: Option<String>,
    /// A file holding the members' secret (at least 32 bytes, the same on every shard); unset:
    /// the STEPVIEW_CLUSTER_SECRET environment variable. The secret itself is never a flag.
    #[arg(long, env = "STEPVIEW_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Longest any step of a partition's handoff waits before it is given up, ms
    /// [default: 10000].
    #[arg(long, env = "STEPVIEW_HANDOFF_TIMEOUT_MS")]
    handoff_timeout_ms: Option<u64>,
    /// The producers' partitioner: murmur2 (Kafka's default) or consistent [default: murmur2].
    #[arg(long, env = "STEPVIEW_PARTITIONER", value_parser = parse_partitioner)]
    partitioner: Option<crate::cluster::owners::Partitioner>,
}

impl Settings {
    fn resolve(self) -> Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.listen {
            c.http.listen = v;
        }
        if let Some(v) = self.auth {
            c.http.auth = v;
        }
        if let Some(v) = self.max_expensive_queries {
            c.http.max_expensive_queries = v;
        }
        if let Some(v) = self.query_timeout_ms {
            c.http.query_timeout_ms = v;
        }
        if let Some(v) = self.answer_cache_mb {
            c.http.answer_cache_mb = v;
        }
        if let Some(v) = self.brokers {
            c.kafka.brokers = v;
        }
        if let Some(v) = self.topic {
            c.kafka.topic = v;
        }
        if self.dlq_topic.is_some() {
            c.kafka.dlq_topic = self.dlq_topic;
        }
        if let Some(v) = self.group_id {
            c.kafka.group_id = v;
        }
        if let Some(v) = self.batch_max {
            c.kafka.batch_max = v;
        }
        if let Some(v) = self.batch_max_mb {
            c.kafka.batch_max_mb = v;
        }
        if let Some(v) = self.ready_max_lag {
            c.kafka.ready_max_lag = v;
        }
        if let Some(v) = self.block_cache_mb {
            c.store.block_cache_mb = v;
        }
        if let Some(v) = self.write_buffer_mb {
            c.store.write_buffer_mb = v;
        }
        if let Some(v) = self.retention_days {
            c.store.retention_days = v;
        }
        if let Some(v) = self.index_memory_mb {
            c.index.memory_mb = v;
        }
        if let Some(v) = self.hot_rows_mb {
            c.index.hot_rows_mb = v;
        }
        if let Some(v) = self.cluster {
            c.cluster.name = v;
        }
        if let Some(v) = self.advertise {
            c.cluster.advertise = v;
        }
        if let Some(v) = self.partitioner {
            c.cluster.partitioner = v;
        }
        if self.cluster_secret_file.is_some() {
            c.cluster.secret_file = self.cluster_secret_file;
        }
        if let Some(v) = self.handoff_timeout_ms {
            c.cluster.handoff_timeout_ms = v;
        }
        c.validate()?;
        Ok(c)
    }
}

fn parse_partitioner(s: &str) -> Result<crate::cluster::owners::Partitioner, String> {
    crate::cluster::owners::Partitioner::parse(s)
        .ok_or_else(|| format!("{s:?}: murmur2 or consistent"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STEPVIEW_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(settings) => runtime()?.block_on(service::serve(settings.resolve()?)),
        Command::Load { settings, files } => {
            let config = settings.resolve()?;
            let views = Views::open(&config)?;
            for path in files {
                let r = file::load(&views.sink, &path, config.kafka.batch_max)?;
                println!(
                    "{}: {} events applied, {} bad",
                    path.display(),
                    r.applied,
                    r.bad
                );
            }
            Ok(())
        }
        Command::Replay(settings) => {
            let config = settings.resolve()?;
            anyhow::ensure!(
                !config.kafka.brokers.is_empty(),
                "replay needs --brokers (or STEPVIEW_KAFKA_BROKERS)"
            );
            let views = Views::open(&config)?;
            let s = replay::replay(&config.kafka, &views.sink, true)?;
            // The retention rule, as the live service applies it.
            let expired = retention::sweep(&views.sink, &config.store, |_| true)?;
            views.store.flush()?;
            println!(
                "replayed {} events ({} bad) from {} in {:.1} s: {:.0} events/s; {} steps past \
                 retention; digest {}",
                s.messages,
                s.bad,
                config.kafka.topic,
                s.seconds,
                s.messages as f64 / s.seconds.max(1e-9),
                expired.steps,
                views.store.digest()?
            );
            Ok(())
        }
        Command::Digest { data_dir } => {
            anyhow::ensure!(
                data_dir.is_dir(),
                "{} is not a data directory",
                data_dir.display()
            );
            let store = crate::store::Store::open(&data_dir, &Default::default())?;
            println!("{}", store.digest()?);
            Ok(())
        }
        Command::Simulate {
            workload,
            brokers,
            topic,
            rate,
            out,
        } => {
            let events = simulate::generate(&workload);
            let messages = simulate::to_messages(&events);
            match out {
                Some(path) => {
                    let mut text = Vec::new();
                    for (_, v) in &messages {
                        text.extend_from_slice(v);
                        text.push(b'\n');
                    }
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    println!("wrote {} events to {}", messages.len(), path.display());
                }
                None => {
                    let kafka_config = crate::config::KafkaConfig {
                        brokers: brokers.clone(),
                        ..Default::default()
                    };
                    runtime()?.block_on(kafka::ensure_topics(
                        &kafka_config,
                        &[&topic],
                        kafka::DEFAULT_PARTITIONS,
                    ))?;
                    simulate::produce(&brokers, &topic, &messages, rate, true)?;
                    println!(
                        "produced {} events of {} jobs × {} steps × {} hosts to {topic}",
                        messages.len(),
                        workload.jobs,
                        workload.steps_per_job,
                        workload.hosts
                    );
                }
            }
            Ok(())
        }
        Command::HashSecret { secret } => {
            use sha2::Digest;
            println!("{}", hex::encode(sha2::Sha256::digest(secret.as_bytes())));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_environment_beats_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stepview.toml");
        std::fs::write(
            &file,
            "[kafka]\ntopic = \"from-file\"\nbatch_max = 100\nready_max_lag = 5\n",
        )
        .unwrap();
        // The only test that sets STEPVIEW_* variables.
        std::env::set_var("STEPVIEW_BATCH_MAX", "200");
        std::env::set_var("STEPVIEW_READY_MAX_LAG", "6");
        let cli = Cli::try_parse_from([
            "stepview",
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--batch-max",
            "300",
        ])
        .unwrap();
        std::env::remove_var("STEPVIEW_BATCH_MAX");
        std::env::remove_var("STEPVIEW_READY_MAX_LAG");
        let Command::Serve(settings) = cli.command else {
            panic!("not serve")
        };
        let config = settings.resolve().unwrap();
        assert_eq!(config.kafka.batch_max, 300);
        assert_eq!(config.kafka.ready_max_lag, 6);
        assert_eq!(config.kafka.topic, "from-file");
        assert_eq!(config.kafka.group_id, Config::default().kafka.group_id);
        let zero = Cli::try_parse_from(["stepview", "serve", "--batch-max", "0"]).unwrap();
        let Command::Serve(settings) = zero.command else {
            panic!("not serve")
        };
        let err = settings.resolve().unwrap_err().to_string();
        assert!(err.contains("batch_max"), "{err}");
    }
}
