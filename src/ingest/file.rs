//! JSON-lines files as a source: one event per line, applied in batches. For loading fixtures,
//! demos without a broker, and tests of the core. Bad lines are reported with their line number
//! and reason, and skipped; the file itself keeps them. Events are taken as produced now (for
//! retention).

use super::Sink;
use crate::apply::Batch;
use crate::events::decode;
use crate::shutdown::Shutdown;
use anyhow::{Context, Result};
use std::io::BufRead;
use std::path::Path;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileLoad {
    pub applied: u64,
    pub bad: u64,
}

pub fn load(sink: &Sink, path: &Path, batch_max: usize) -> Result<FileLoad> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let never = Shutdown::new();
    let mut result = FileLoad::default();
    let mut batch = Vec::with_capacity(batch_max);
    for (n, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match decode(&line) {
            Ok((event, cuts)) => {
                sink.record_cuts(&[cuts]);
                batch.push(event);
            }
            Err(bad) => {
                eprintln!("{}:{}: bad event, skipped: {bad}", path.display(), n + 1);
                sink.record_bad(&bad);
                result.bad += 1;
            }
        }
        if batch.len() >= batch_max {
            sink.apply(&Batch::local(&batch), &never);
            result.applied += batch.len() as u64;
            batch.clear();
        }
    }
    sink.apply(&Batch::local(&batch), &never);
    result.applied += batch.len() as u64;
    Ok(result)
}
