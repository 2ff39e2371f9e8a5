//! The `stepview` command line: flags and environment variables over the config file, and one
//! function per subcommand that calls the library.
//!
//! Precedence of settings: flag > environment variable > config file > built-in default.

use crate::config::{Config, ConfigFile};
use crate::ingest::{file, replay};
use crate::kafka;
use crate::retention;
use crate::service::{self, Views};
use crate::simulate::{self, Workload};
use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
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
    /// Translate Debezium's change events of bk-job's tables into events on the events topic
    /// (a process of its own; `[cdc]` settings, `/metrics` on cdc.metrics_listen).
    #[command(after_help = SETTINGS_HELP)]
    Cdc(Settings),
    /// Rebuild every view from the topic's earliest retained offset into a data directory.
    Replay(Settings),
    /// Print a content digest of a data directory's views (equal digests: equal views). It only
    /// reads: run it on a checkpoint (POST /admin/checkpoint) while the instance runs on.
    Digest {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// Produce a realistic workload of jobs to Kafka (or to a JSON-lines file), with the
    /// service's Kafka settings (`[kafka.client]` included).
    Simulate {
        #[command(flatten)]
        workload: Workload,
        #[command(flatten)]
        settings: Settings,
        /// Events per second (0 = as fast as the broker takes them).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Write the events to this JSON-lines file instead of Kafka.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the SHA-256 of an app secret, for `secret_sha256` in the config file.
    HashSecret { secret: String },
    /// Print an example config file with every setting at its default (or, with --markdown,
    /// the README's table of settings).
    Settings {
        #[arg(long)]
        markdown: bool,
    },
    /// Print the API gateway's resources for stepview's operations, in bk-job's format
    /// (support-files/bk-api-gateway/resources.yaml).
    GatewayResources,
}

impl Command {
    /// The subcommand's name and config file, when it takes settings and was given one.
    fn config_file(&self) -> Option<(&'static str, PathBuf)> {
        let (name, settings) = match self {
            Command::Serve(s) => ("serve", s),
            Command::Load { settings, .. } => ("load", settings),
            Command::Replay(s) => ("replay", s),
            Command::Cdc(s) => ("cdc", s),
            Command::Simulate { settings, .. } => ("simulate", settings),
            Command::Digest { .. }
            | Command::HashSecret { .. }
            | Command::Settings { .. }
            | Command::GatewayResources => return None,
        };
        settings.config.clone().map(|path| (name, path))
    }

    fn config_mut(&mut self) -> Option<&mut Config> {
        match self {
            Command::Serve(s) | Command::Replay(s) | Command::Cdc(s) => Some(&mut s.service),
            Command::Load { settings, .. } | Command::Simulate { settings, .. } => {
                Some(&mut settings.service)
            }
            Command::Digest { .. }
            | Command::HashSecret { .. }
            | Command::Settings { .. }
            | Command::GatewayResources => None,
        }
    }
}

const SETTINGS_HELP: &str = "\
Precedence: flag > environment variable > config file (--config) > default.
The apps that may call the API are set in the config file only, as [[apps]] tables with
`code`, `secret_sha256` (`stepview hash-secret SECRET`) and `scopes` (\"biz:2\", \"biz_set:*\",
\"*\"); `stepview settings` prints an example file with every setting. Logging: STEPVIEW_LOG
(tracing filter, default info).";

/// Every service setting, over the config file when one is given.
#[derive(clap::Args, Clone)]
struct Settings {
    /// TOML config file (`stepview settings` prints one with every setting).
    #[arg(long, env = "STEPVIEW_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    service: Config,
}

impl Settings {
    fn resolve(self) -> Result<Config> {
        self.service.validate()?;
        Ok(self.service)
    }
}

/// The command line as given, with a config file's values under its flags and environment.
fn parse(argv: Vec<OsString>) -> Result<Cli, clap::Error> {
    let cli = Cli::try_parse_from(&argv)?;
    let Some((name, path)) = cli.command.config_file() else {
        return Ok(cli);
    };
    let file = ConfigFile::read(&path).map_err(file_error)?;
    let mut command = Cli::command();
    let layered = command
        .find_subcommand(name)
        .cloned()
        .map(|sub| file.under_flags(sub))
        .transpose()
        .map_err(file_error)?;
    if let Some(layered) = layered {
        command = command.mut_subcommand(name, |_| layered);
    }
    let matches = command.try_get_matches_from(&argv)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let Some(config) = cli.command.config_mut() {
        file.complete(config).map_err(file_error)?;
    }
    Ok(cli)
}

fn file_error(e: anyhow::Error) -> clap::Error {
    clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e:#}\n"))
}

pub fn main() -> ExitCode {
    let cli = match parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
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
        Command::Cdc(settings) => runtime()?.block_on(crate::cdc::serve(settings.resolve()?)),
        Command::Load { settings, files } => {
            let config = settings.resolve()?;
            let views = Views::open(&config)?;
            for path in files {
                let r = file::load(&views.sink, &path, config.kafka.batch_max as usize)?;
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
            views.sink.applier.flush()?;
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
            let store = crate::store::Store::open_read_only(&data_dir)?;
            println!("{}", store.digest()?);
            Ok(())
        }
        Command::Simulate {
            workload,
            settings,
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
                    let kafka = settings.resolve()?.kafka;
                    anyhow::ensure!(
                        !kafka.brokers.is_empty(),
                        "simulate needs --brokers (or STEPVIEW_KAFKA_BROKERS, or kafka.brokers \
                         in --config), or --out FILE"
                    );
                    runtime()?.block_on(kafka::ensure_topics(
                        &kafka,
                        &[&kafka.topic],
                        kafka::DEFAULT_PARTITIONS,
                    ))?;
                    simulate::produce(&kafka, &messages, rate, true)?;
                    println!(
                        "produced {} events of {} jobs × {} steps × {} hosts to {}",
                        messages.len(),
                        workload.jobs,
                        workload.steps_per_job,
                        workload.hosts,
                        kafka.topic
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
        Command::GatewayResources => {
            print!("{}", crate::http::routes::gateway_resources());
            Ok(())
        }
        Command::Settings { markdown } => {
            match markdown {
                true => print!("{}", Config::markdown_table()),
                false => print!("{}", Config::example_toml()),
            }
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
        let args = |extra: &[&str]| -> Vec<OsString> {
            let mut args = vec!["stepview", "serve", "--config", file.to_str().unwrap()];
            args.extend(extra);
            args.into_iter().map(OsString::from).collect()
        };
        let cli = parse(args(&["--batch-max", "300"]));
        let defaults_only = parse(vec!["stepview".into(), "serve".into()]);
        std::env::remove_var("STEPVIEW_BATCH_MAX");
        std::env::remove_var("STEPVIEW_READY_MAX_LAG");
        let Command::Serve(settings) = cli.unwrap().command else {
            panic!("not serve")
        };
        let config = settings.resolve().unwrap();
        assert_eq!(config.kafka.batch_max, 300, "flag over environment");
        assert_eq!(config.kafka.ready_max_lag, 6, "environment over file");
        assert_eq!(config.kafka.topic, "from-file", "file over default");
        assert_eq!(config.kafka.group_id, Config::default().kafka.group_id);
        let Command::Serve(settings) = defaults_only.unwrap().command else {
            panic!("not serve")
        };
        assert_eq!(settings.resolve().unwrap().kafka.batch_max, 200);
        let err = parse(args(&["--batch-max", "0"]))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("batch-max"), "{err}");
    }

    #[test]
    fn no_secret_is_ever_a_flag() {
        for setting in Config::describe() {
            let flag = setting.flag.unwrap_or_default();
            assert!(
                !flag.contains("secret") || flag.ends_with("-file"),
                "{flag} would put a secret on the command line"
            );
        }
    }
}
