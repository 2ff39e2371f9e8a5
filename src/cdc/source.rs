//! Debezium's topics and envelopes (cdc.md, "Input"): which input topic holds which bk-job
//! table (`<prefix>.<database>.<table>`, and the daily log collections by a regular
//! expression), and the change event's operation and row.
//!
//! Owns: topic names and the envelope. Must not: know what a row means.

use super::settings::CdcSettings;
use anyhow::{Context, Result};
use serde::Deserialize;

/// The bk-job tables (and log collections) the translator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Application,
    TaskInstance,
    StepInstance,
    ScriptResults,
    FileResults,
    /// Before bk-job 3.9: results keyed by `host_id`.
    ScriptAgentResults,
    FileAgentResults,
    ScriptLog,
}

impl Table {
    pub const ALL: [Table; 8] = [
        Table::Application,
        Table::TaskInstance,
        Table::StepInstance,
        Table::ScriptResults,
        Table::FileResults,
        Table::ScriptAgentResults,
        Table::FileAgentResults,
        Table::ScriptLog,
    ];

    /// The table's name (the log collections: `job_log_script`), also its metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Table::Application => "application",
            Table::TaskInstance => "task_instance",
            Table::StepInstance => "step_instance",
            Table::ScriptResults => "gse_script_execute_obj_task",
            Table::FileResults => "gse_file_execute_obj_task",
            Table::ScriptAgentResults => "gse_script_agent_task",
            Table::FileAgentResults => "gse_file_agent_task",
            Table::ScriptLog => "job_log_script",
        }
    }

    pub fn from_label(label: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.label() == label)
    }

    /// A small number for stored keys.
    pub fn code(self) -> u8 {
        Table::ALL.iter().position(|t| *t == self).unwrap_or(0) as u8
    }
}

/// Which topic is which table.
pub struct Topics {
    tables: Vec<(String, Table)>,
    logs: regex::Regex,
}

impl Topics {
    pub fn new(cfg: &CdcSettings) -> Result<Topics> {
        let tables = Table::ALL
            .into_iter()
            .filter(|t| *t != Table::ScriptLog)
            .map(|t| {
                let db = match t {
                    Table::Application => &cfg.manage_database,
                    _ => &cfg.execute_database,
                };
                (format!("{}.{db}.{}", cfg.topic_prefix, t.label()), t)
            })
            .collect();
        let logs = regex::Regex::new(&cfg.log_topics).with_context(|| {
            format!(
                "cdc.log_topics {:?} is not a regular expression",
                cfg.log_topics
            )
        })?;
        Ok(Topics { tables, logs })
    }

    pub fn table(&self, topic: &str) -> Option<Table> {
        self.tables
            .iter()
            .find(|(name, _)| name == topic)
            .map(|(_, t)| *t)
            .or_else(|| self.logs.is_match(topic).then_some(Table::ScriptLog))
    }

    /// The table topics' names (for the operator's log line).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tables.iter().map(|(n, _)| n.as_str())
    }
}

/// What a change event did to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `c`, and `r` (a snapshot row), and `u`: the row as it is now.
    Upsert,
    /// `d` (bk-job's archiving), and `t` (truncate).
    Delete,
}

#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(default = "none")]
    after: Option<T>,
    op: String,
}

fn none<T>() -> Option<T> {
    None
}

/// A change event's operation and, for an upsert, the row after it. `T` is the table's row
/// (MongoDB's: `String`, the document as extended JSON).
pub fn envelope<'a, T: Deserialize<'a>>(value: &'a [u8]) -> Result<(Op, Option<T>), String> {
    let e: Envelope<T> =
        serde_json::from_slice(value).map_err(|e| format!("not a Debezium change event: {e}"))?;
    match e.op.as_str() {
        "c" | "r" | "u" => match e.after {
            Some(after) => Ok((Op::Upsert, Some(after))),
            None => Err(format!("op {:?} without \"after\"", e.op)),
        },
        "d" | "t" => Ok((Op::Delete, None)),
        other => Err(format!("unknown op {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_name_tables_and_log_collections_by_pattern() {
        let topics = Topics::new(&CdcSettings::default()).unwrap();
        assert_eq!(
            topics.table("bkjob.job_execute.gse_script_execute_obj_task"),
            Some(Table::ScriptResults)
        );
        assert_eq!(
            topics.table("bkjob.job_manage.application"),
            Some(Table::Application)
        );
        assert_eq!(
            topics.table("bkjob.joblog.job_log_script_2026_12_02"),
            Some(Table::ScriptLog)
        );
        assert_eq!(topics.table("bkjob.job_execute.operation_log"), None);
        for t in Table::ALL {
            assert_eq!(Table::from_label(t.label()), Some(t));
        }
    }

    #[test]
    fn envelopes_of_every_op() {
        let row = |s: &str| envelope::<serde_json::Value>(s.as_bytes());
        assert_eq!(
            row(r#"{"before":null,"after":{"id":1},"op":"r"}"#)
                .unwrap()
                .0,
            Op::Upsert
        );
        assert_eq!(
            row(r#"{"before":{"id":1},"after":null,"op":"d"}"#).unwrap(),
            (Op::Delete, None)
        );
        assert!(row(r#"{"after":null,"op":"u"}"#)
            .unwrap_err()
            .contains("without"));
        assert!(row(r#"{"after":{},"op":"x"}"#)
            .unwrap_err()
            .contains("unknown op"));
        assert!(row("nope")
            .unwrap_err()
            .contains("not a Debezium change event"));
    }
}
