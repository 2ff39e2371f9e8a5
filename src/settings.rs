//! How a setting is declared, once: as a field of a section struct (`[http]`, `[kafka]` …) that
//! derives `clap::Args`, with its doc (the help), its flag, its environment variable, its
//! default and its unit (the field's type: [`Mebibytes`], [`Millis`], [`Days`]). A config file's
//! values become the defaults of those arguments, so that precedence is flag > environment >
//! file > built-in default, and a file key that names no setting is an error. The example config
//! file and the README's table are generated from the same declarations (and tested to be).
//!
//! Owns: the units, layering a file under flags and environment, and describing the settings.
//! Must not: know any section (each lives with the part it configures; `config` assembles
//! them). Secrets are never declared here: they come from files or the environment only.

use anyhow::{bail, Context, Result};
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A size in MiB, as an operator writes it; components take [`Mebibytes::bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mebibytes(pub u64);

impl Mebibytes {
    pub fn bytes(self) -> usize {
        usize::try_from(self.0 << 20).unwrap_or(usize::MAX)
    }
}

/// A duration in milliseconds, as an operator writes it; components take
/// [`Millis::duration`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub u64);

impl Millis {
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }

    pub fn as_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

/// A number of days (0 has a meaning of its own where a setting says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Days(pub u32);

impl Days {
    /// The days in ms; `None` for 0.
    pub fn millis(self) -> Option<i64> {
        (self.0 > 0).then(|| i64::from(self.0) * 86_400_000)
    }
}

macro_rules! unit {
    ($unit:ident, $inner:ty) => {
        impl FromStr for $unit {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                s.trim()
                    .parse::<$inner>()
                    .map($unit)
                    .map_err(|_| format!("{s:?} is not a whole number"))
            }
        }

        impl fmt::Display for $unit {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}
unit!(Mebibytes, u64);
unit!(Millis, u64);
unit!(Days, u32);

/// A section's settings at their built-in defaults (no flag, environment or file).
pub fn defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(Command::new("defaults")).mut_args(|a| a.env(None));
    let matches = command
        .try_get_matches_from(["defaults"])
        .expect("every setting has a default or is optional");
    T::from_arg_matches(&matches).expect("defaults parse")
}

/// A section of the settings: its table in the config file (`""`: the top level) and its
/// arguments.
pub struct Section {
    pub table: &'static str,
    pub args: fn(Command) -> Command,
}

impl Section {
    /// The ids of the section's settings (their names in the config file).
    fn ids(&self) -> Vec<String> {
        (self.args)(Command::new(self.table))
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect()
    }
}

/// Gives `command` the values of the config file `file` as the defaults of its arguments (file
/// over built-in default, under environment and flags). Tables of `file_only` (maps of their
/// own, like `kafka.client`) are left for the caller. A key that names no setting is refused.
pub fn file_under_flags(
    mut command: Command,
    sections: &[Section],
    file: &toml::Table,
    file_only: &[&str],
) -> Result<Command> {
    for (key, value) in file {
        let section = sections.iter().find(|s| s.table == key.as_str());
        match (section, value) {
            (Some(section), toml::Value::Table(table)) if !section.table.is_empty() => {
                command = set_defaults(command, section, table, file_only)?;
            }
            _ if file_only.contains(&key.as_str()) => {}
            _ => {
                let top = sections
                    .iter()
                    .find(|s| s.table.is_empty())
                    .context("a top-level section")?;
                let mut one = toml::Table::new();
                one.insert(key.clone(), value.clone());
                command = set_defaults(command, top, &one, file_only)?;
            }
        }
    }
    Ok(command)
}

fn set_defaults(
    mut command: Command,
    section: &Section,
    table: &toml::Table,
    file_only: &[&str],
) -> Result<Command> {
    let ids = section.ids();
    for (key, value) in table {
        let path = match section.table {
            "" => key.clone(),
            t => format!("{t}.{key}"),
        };
        if file_only.contains(&path.as_str()) {
            continue;
        }
        if !ids.contains(key) {
            bail!("unknown setting {path:?} (`stepview serve --help` lists them)");
        }
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                value.to_string()
            }
            _ => bail!("setting {path:?} takes a string, a number or a boolean"),
        };
        command = command.mut_arg(key, |a| a.default_value(text));
    }
    Ok(command)
}

/// One setting, as the docs list it.
pub struct Described {
    /// Its name in the config file (`kafka.batch_max`).
    pub path: String,
    pub flag: Option<String>,
    pub env: Option<String>,
    pub default: Option<String>,
    pub doc: String,
}

/// Every setting of `sections`, in declaration order.
pub fn describe(sections: &[Section]) -> Vec<Described> {
    let mut out = Vec::new();
    for section in sections {
        let command = (section.args)(Command::new(section.table));
        for arg in command.get_arguments() {
            out.push(described(section.table, arg));
        }
    }
    out
}

fn described(table: &str, arg: &Arg) -> Described {
    let id = arg.get_id().to_string();
    let default: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    Described {
        path: if table.is_empty() {
            id
        } else {
            format!("{table}.{id}")
        },
        flag: arg.get_long().map(|l| format!("--{l}")),
        env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
        default: (!default.is_empty()).then(|| default.join(",")),
        doc: arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string().replace('\n', " "))
            .unwrap_or_default(),
    }
}

/// Parses `matches` into a section after layering (used by `config`).
pub fn section<T: FromArgMatches>(matches: &ArgMatches) -> Result<T> {
    T::from_arg_matches(matches).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Args)]
    struct Demo {
        /// A size.
        #[arg(
            long = "demo-size",
            env = "STEPVIEW_TEST_DEMO_SIZE",
            default_value = "8"
        )]
        size_mb: Mebibytes,
        /// A time.
        #[arg(long = "demo-wait", default_value = "250")]
        wait_ms: Millis,
    }

    #[test]
    fn units_convert_where_they_are_declared() {
        assert_eq!(Mebibytes(3).bytes(), 3 << 20);
        assert_eq!(Millis(1500).duration(), Duration::from_millis(1500));
        assert_eq!(Days(0).millis(), None);
        assert_eq!(Days(2).millis(), Some(2 * 86_400_000));
        assert!("x".parse::<Mebibytes>().is_err());
    }

    #[test]
    fn a_file_sits_between_the_flags_and_the_defaults_and_names_only_settings() {
        let sections = [Section {
            table: "demo",
            args: Demo::augment_args,
        }];
        let file: toml::Table = toml::from_str("[demo]\nsize_mb = 16\nwait_ms = 500\n").unwrap();
        let command = Demo::augment_args(Command::new("t"));
        let command = file_under_flags(command, &sections, &file, &[]).unwrap();
        let m = command
            .try_get_matches_from(["t", "--demo-wait", "750"])
            .unwrap();
        let demo: Demo = section(&m).unwrap();
        assert_eq!((demo.size_mb, demo.wait_ms), (Mebibytes(16), Millis(750)));
        let d: Demo = defaults();
        assert_eq!((d.size_mb, d.wait_ms), (Mebibytes(8), Millis(250)));

        let typo: toml::Table = toml::from_str("[demo]\nsize = 1\n").unwrap();
        let command = Demo::augment_args(Command::new("t"));
        let e = file_under_flags(command, &sections, &typo, &[]).unwrap_err();
        assert!(e.to_string().contains("demo.size"), "{e}");
        let described = describe(&sections);
        assert_eq!(described[0].path, "demo.size_mb");
        assert_eq!(described[0].env.as_deref(), Some("STEPVIEW_TEST_DEMO_SIZE"));
        assert_eq!(described[0].default.as_deref(), Some("8"));
        assert_eq!(described[0].doc, "A size");
    }
}
