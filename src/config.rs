//! The service's configuration: the sections each part declares (`[http]`, `[kafka]`,
//! `[store]`, `[index]`, `[cluster]`, `[cdc]`), the top-level `data_dir`, and the file-only tables
//! (`[[apps]]`, `[kafka.client]`, `[kafka.dlq_producer]`). Precedence: flag > environment >
//! file > default (`settings`); the example config file and the README's table are generated
//! from the declarations (`stepview settings`), and tested to be.
//!
//! Owns: assembling the sections, the file-only tables, and the checks that span sections.
//! Must not: open anything.

use crate::cdc::CdcSettings;
use crate::cluster::ClusterSettings;
use crate::http::{AppConfig, GatewayConfig, HttpSettings};
use crate::index::IndexSettings;
use crate::kafka::KafkaSettings;
use crate::settings::{self, Described, Section};
use crate::store::StoreSettings;
use anyhow::{Context, Result};
use clap::{Args, Command};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Directory of the RocksDB views.
    #[arg(long, env = "STEPVIEW_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub http: HttpSettings,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    #[command(flatten)]
    pub store: StoreSettings,
    #[command(flatten)]
    pub index: IndexSettings,
    #[command(flatten)]
    pub cluster: ClusterSettings,
    #[command(flatten)]
    pub cdc: CdcSettings,
    /// Apps allowed to call the API (config file only: `[[apps]]`).
    #[arg(skip)]
    pub apps: Vec<AppConfig>,
    /// API gateways whose JWTs are taken (config file only: `[[gateways]]`).
    #[arg(skip)]
    pub gateways: Vec<GatewayConfig>,
}

/// The tables of the config file that are not flags: maps and lists of their own.
#[derive(Debug, Default, Deserialize)]
struct FileOnly {
    #[serde(default)]
    apps: Vec<AppConfig>,
    #[serde(default)]
    gateways: Vec<GatewayConfig>,
    #[serde(default)]
    kafka: KafkaFileOnly,
}

#[derive(Debug, Default, Deserialize)]
struct KafkaFileOnly {
    #[serde(default)]
    client: BTreeMap<String, String>,
    #[serde(default)]
    dlq_producer: BTreeMap<String, String>,
}

/// Paths of the file-only tables (`settings::file_under_flags` leaves them to us).
const FILE_ONLY: [&str; 4] = ["apps", "gateways", "kafka.client", "kafka.dlq_producer"];

/// The top level's own settings (not its sections').
fn top_level(command: Command) -> Command {
    let data_dir = Config::augment_args(Command::new("config"))
        .get_arguments()
        .find(|a| a.get_id() == "data_dir")
        .cloned()
        .expect("data_dir is declared");
    command.arg(data_dir)
}

/// The sections, in the order the docs list them.
fn sections() -> [Section; 7] {
    [
        Section {
            table: "",
            args: top_level,
        },
        Section {
            table: "http",
            args: HttpSettings::augment_args,
        },
        Section {
            table: "kafka",
            args: KafkaSettings::augment_args,
        },
        Section {
            table: "store",
            args: StoreSettings::augment_args,
        },
        Section {
            table: "index",
            args: IndexSettings::augment_args,
        },
        Section {
            table: "cluster",
            args: ClusterSettings::augment_args,
        },
        Section {
            table: "cdc",
            args: CdcSettings::augment_args,
        },
    ]
}

impl Default for Config {
    fn default() -> Self {
        settings::defaults()
    }
}

/// A config file, read: its values become the defaults of a command's settings.
pub struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let table = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(ConfigFile {
            path: path.to_owned(),
            table,
        })
    }

    /// `command` (one that flattens [`Config`]) with this file's values as its defaults.
    pub fn under_flags(&self, command: Command) -> Result<Command> {
        settings::file_under_flags(command, &sections(), &self.table, &FILE_ONLY)
            .with_context(|| format!("invalid config file {}", self.path.display()))
    }

    /// Fills in what only the file can say (apps, librdkafka properties).
    pub fn complete(&self, config: &mut Config) -> Result<()> {
        let only: FileOnly = toml::Value::Table(self.only_tables())
            .try_into()
            .with_context(|| format!("invalid config file {}", self.path.display()))?;
        config.apps = only.apps;
        config.gateways = only.gateways;
        config.kafka.client = only.kafka.client;
        config.kafka.dlq_producer = only.kafka.dlq_producer;
        Ok(())
    }

    /// The file's file-only tables.
    fn only_tables(&self) -> toml::Table {
        let mut only = toml::Table::new();
        for table in ["apps", "gateways"] {
            if let Some(list) = self.table.get(table) {
                only.insert(table.into(), list.clone());
            }
        }
        if let Some(toml::Value::Table(kafka)) = self.table.get("kafka") {
            let maps: toml::Table = kafka
                .iter()
                .filter(|(k, _)| *k == "client" || *k == "dlq_producer")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            only.insert("kafka".into(), toml::Value::Table(maps));
        }
        only
    }
}

impl Config {
    /// The settings of a config file alone (no flags, no environment), over the defaults.
    pub fn from_file(path: &Path) -> Result<Config> {
        let file = ConfigFile::read(path)?;
        let command = Config::augment_args(Command::new("config")).mut_args(|a| a.env(None));
        let matches = file
            .under_flags(command)?
            .try_get_matches_from(["config"])?;
        let mut config: Config = settings::section(&matches)?;
        file.complete(&mut config)?;
        Ok(config)
    }

    /// Rejects settings that parse but cannot work together (each setting's own range is
    /// checked where it is declared).
    pub fn validate(&self) -> Result<()> {
        if self.cluster.is_shard() {
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
        }
        Ok(())
    }

    /// Every setting, as declared.
    pub fn describe() -> Vec<Described> {
        settings::describe(&sections())
    }

    /// The example config file (`ops/stepview.example.toml`): every setting at its default,
    /// with its doc, environment variable and flag.
    pub fn example_toml() -> String {
        let mut out = String::from(
            "# stepview configuration, generated by `stepview settings` from the settings' \
             declarations.\n# Every setting can also be given by environment variable or \
             flag (precedence: flag >\n# environment > this file > default).\n",
        );
        let mut table = String::new();
        for d in Config::describe() {
            let (section, key) = d.path.rsplit_once('.').unwrap_or(("", &d.path));
            if section != table {
                out.push_str(&format!("\n[{section}]\n"));
                table = section.to_owned();
            }
            out.push_str(&format!("\n# {}\n", wrap(&d.doc, "# ")));
            out.push_str(&format!("# {}\n", via(&d)));
            match &d.default {
                Some(v) => out.push_str(&format!("{key} = {}\n", toml_value(v))),
                None => out.push_str(&format!("# {key} = …\n")),
            }
            if d.path == "kafka.ready_max_lag" {
                out.push_str(KAFKA_FILE_ONLY);
            }
        }
        out.push_str(APPS_FILE_ONLY);
        out.push_str(GATEWAYS_FILE_ONLY);
        out
    }

    /// The README's table of settings.
    pub fn markdown_table() -> String {
        let mut out =
            String::from("| setting | env / flag | default | what |\n|---|---|---|---|\n");
        for d in Config::describe() {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                d.path,
                via(&d),
                d.default
                    .as_deref()
                    .map_or("unset".into(), |v| format!("`{v}`")),
                d.doc
            ));
        }
        out.push_str(
            "| `[kafka.client]`, `[kafka.dlq_producer]` | file only | none | librdkafka \
             properties for every Kafka client (security, timeouts …; they win over \
             stepview's own), and for the dead-letter producer only |\n\
             | `[[apps]]` | file only | none: every request gets 401 | the apps that may call \
             the API: `code`, `secret_sha256`, `scopes` |\n\
             | `[[gateways]]` | file only | none: no JWT is taken | the API gateways whose \
             `X-Bkapi-JWT` is taken: `name` (the tokens' `kid`), `public_key_files`, \
             `algorithm`, `issuer` |\n",
        );
        out
    }
}

fn via(d: &Described) -> String {
    let env = d.env.as_deref().map(|e| format!("`{e}`"));
    let flag = d.flag.as_deref().map(|f| format!("`{f}`"));
    [env, flag]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" / ")
}

fn toml_value(v: &str) -> String {
    let bare =
        v == "true" || v == "false" || (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
    if bare {
        v.to_owned()
    } else {
        format!("{v:?}")
    }
}

/// `text` in lines of at most 96 characters, each after the first starting with `prefix`.
fn wrap(text: &str, prefix: &str) -> String {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.len() + word.len() + 1 > 96 - prefix.len() {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines.join(&format!("\n{prefix}"))
}

const KAFKA_FILE_ONLY: &str = "
# librdkafka properties for every Kafka client (file only), e.g. for a secured cluster:
# [kafka.client]
# \"security.protocol\" = \"SASL_SSL\"
# \"sasl.mechanisms\" = \"SCRAM-SHA-512\"
# \"sasl.username\" = \"stepview\"
# \"sasl.password\" = \"…\"
# and for the dead-letter producer only: [kafka.dlq_producer]
";

const APPS_FILE_ONLY: &str = "
# Apps that may call the API (file only). secret_sha256 = `stepview hash-secret SECRET`; the
# example below opens nothing until you put your own app's hash in it.
# scopes: \"biz:2\", \"biz_set:*\", \"biz:*\" or \"*\".
[[apps]]
code = \"bk-job\"
secret_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"
scopes = [\"biz:2\"]
";

const GATEWAYS_FILE_ONLY: &str = "
# API gateways whose X-Bkapi-JWT is taken (file only; with http.auth = \"gateway\" or \"both\").
# name: the gateway's name, as its tokens' kid header says. public_key_files: its public keys
# (PEM); a token verifies against any of them, so a rotation lists the old and the new key, and
# SIGHUP reloads them. algorithm: RS512 (BlueKing's) or RS256. issuer: when set, the tokens' iss.
# [[gateways]]
# name = \"bk-job\"
# public_key_files = [\"/etc/stepview/bk-job-apigw.pub\"]
# algorithm = \"RS512\"
# issuer = \"APIGW\"
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_the_declarations_and_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/stepview.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            Config::example_toml(),
            "ops/stepview.example.toml is generated: stepview settings > ops/stepview.example.toml"
        );
        let example = Config::from_file(&path).unwrap();
        let defaults = Config::default();
        assert_eq!(
            format!("{:?}", example.http),
            format!("{:?}", defaults.http)
        );
        assert_eq!(
            format!("{:?}", example.store),
            format!("{:?}", defaults.store)
        );
        assert_eq!(
            format!("{:?}", example.index),
            format!("{:?}", defaults.index)
        );
        assert_eq!(
            format!("{:?}", example.cluster),
            format!("{:?}", defaults.cluster)
        );
        assert_eq!(example.kafka.batch_max, defaults.kafka.batch_max);
        assert_eq!(example.data_dir, defaults.data_dir);
        assert!(!example.apps.is_empty());
    }

    #[test]
    fn the_readme_lists_every_setting_as_declared() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
                .unwrap();
        assert!(
            readme.contains(&Config::markdown_table()),
            "the README's settings table is generated: stepview settings --markdown"
        );
    }

    #[test]
    fn a_file_key_that_names_no_setting_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[kafka]\nbroker = \"x\"\n").unwrap();
        let e = format!("{:#}", Config::from_file(&path).unwrap_err());
        assert!(e.contains("kafka.broker"), "{e}");
        std::fs::write(&path, "[kafka]\nbatch_max = 0\n").unwrap();
        let e = format!("{:#}", Config::from_file(&path).unwrap_err());
        assert!(e.contains("batch_max") || e.contains("batch-max"), "{e}");
        std::fs::write(&path, "[kafka.client]\n\"security.protocol\" = \"SSL\"\n[[apps]]\ncode = \"a\"\nsecret_sha256 = \"00\"\nscopes = [\"*\"]\n").unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.kafka.client["security.protocol"], "SSL");
        assert_eq!(c.apps[0].code, "a");
    }
}
