//! Checkpoints of the live store: RocksDB's checkpoint (the memtables flushed, then hard links to
//! the immutable files: about a second whatever the size), each a complete data directory with
//! its consumer offsets, in a new directory under the checkpoint directory. The newest `keep`
//! stay. The place is fixed by configuration, never by a request; it is checked at open (on the
//! data directory's filesystem, since hard links cannot cross one, and outside it) and created
//! 0700 with the first checkpoint.
//!
//! A checkpoint pins the files it links: compaction cannot free them while it exists. The
//! figures say how much.

use crate::telemetry::CheckpointFigures;
use anyhow::{bail, Context, Result};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

const PREFIX: &str = "checkpoint-";

/// Where checkpoints go and how many stay.
#[derive(Debug, Clone)]
pub struct CheckpointPlace {
    pub dir: PathBuf,
    pub keep: usize,
}

/// The checkpoints of one store: made one at a time.
pub struct Checkpoints {
    dir: PathBuf,
    keep: usize,
    data_dir: PathBuf,
    making: Mutex<()>,
}

/// A checkpoint just made.
#[derive(Debug, Clone)]
pub struct CheckpointMade {
    pub name: String,
    pub path: PathBuf,
    pub took: Duration,
    /// Its resume offsets: (topic, partition, next offset).
    pub offsets: Vec<(String, i32, i64)>,
    pub files: usize,
    pub bytes: u64,
    /// The older checkpoints removed to keep `keep`.
    pub removed: Vec<String>,
}

impl Checkpoints {
    /// Checks `place` for the store at `data_dir` (which exists): what of it exists yet is on
    /// the data directory's filesystem, and neither contains the other.
    pub fn prepare(place: &CheckpointPlace, data_dir: &Path) -> Result<Checkpoints> {
        if place.keep == 0 {
            bail!("store.checkpoint_keep must be at least 1");
        }
        let data_dir = data_dir.canonicalize()?;
        let (existing, dir) = resolve(&place.dir)?;
        if dir.starts_with(&data_dir) || data_dir.starts_with(&dir) {
            bail!(
                "store.checkpoint_dir {} and data_dir {} must not contain one another: put the \
                 checkpoints beside the data directory, on the same filesystem",
                dir.display(),
                data_dir.display()
            );
        }
        if std::fs::metadata(&existing)?.dev() != std::fs::metadata(&data_dir)?.dev() {
            bail!(
                "store.checkpoint_dir {} is not on the filesystem of data_dir {}: a checkpoint \
                 hard-links the store's files, which only works within one filesystem",
                dir.display(),
                data_dir.display()
            );
        }
        Ok(Checkpoints {
            dir,
            keep: place.keep,
            data_dir,
            making: Mutex::new(()),
        })
    }

    /// Makes a checkpoint with `create` (RocksDB's, into the path it is given), then removes
    /// the oldest beyond `keep`; `offsets_of` reads the new one's offsets.
    pub(super) fn make(
        &self,
        create: impl FnOnce(&Path) -> Result<()>,
        offsets_of: impl FnOnce(&Path) -> Result<Vec<(String, i32, i64)>>,
    ) -> Result<CheckpointMade> {
        let _one_at_a_time = self.making.lock();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| {
                format!(
                    "cannot create the checkpoint directory {} (store.checkpoint_dir)",
                    self.dir.display()
                )
            })?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        let started = std::time::Instant::now();
        let (name, path) = loop {
            let name = format!("{PREFIX}{}", utc_name(crate::now_ms()));
            let path = self.dir.join(&name);
            if !path.exists() {
                break (name, path);
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        create(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        let took = started.elapsed();
        let offsets = offsets_of(&path)?;
        let (files, bytes) = files_of(&path)?
            .iter()
            .fold((0, 0), |(n, b), m| (n + 1, b + m.size()));
        let mut names = self.names()?;
        let mut removed = Vec::new();
        while names.len() > self.keep {
            let oldest = names.remove(0);
            std::fs::remove_dir_all(self.dir.join(&oldest))
                .with_context(|| format!("cannot remove the old checkpoint {oldest}"))?;
            removed.push(oldest);
        }
        Ok(CheckpointMade {
            name,
            path,
            took,
            offsets,
            files,
            bytes,
            removed,
        })
    }

    /// The checkpoints' names, oldest first (the names sort by time).
    fn names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(PREFIX) && unix_ms_of(n).is_some())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Their count and cost on disk (a listing of the directories: a few dozen files each).
    pub fn figures(&self) -> CheckpointFigures {
        let Ok(names) = self.names() else {
            return CheckpointFigures::default();
        };
        let live: HashSet<u64> = files_of(&self.data_dir)
            .unwrap_or_default()
            .iter()
            .map(|m| m.ino())
            .collect();
        let mut seen = HashSet::new();
        let (mut bytes, mut pinned_bytes) = (0, 0);
        for name in &names {
            for m in files_of(&self.dir.join(name)).unwrap_or_default() {
                if seen.insert(m.ino()) {
                    bytes += m.size();
                    if !live.contains(&m.ino()) {
                        pinned_bytes += m.size();
                    }
                }
            }
        }
        CheckpointFigures {
            count: names.len(),
            bytes,
            pinned_bytes,
            last_unix_ms: names.last().and_then(|n| unix_ms_of(n)),
        }
    }
}

/// `path` made absolute through its nearest existing ancestor (symbolic links resolved there):
/// (that ancestor, the whole path).
fn resolve(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let path = std::path::absolute(path)?;
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        rest.push(existing.file_name().context("no existing ancestor")?);
        existing = existing.parent().context("no existing ancestor")?;
    }
    let existing = existing.canonicalize()?;
    let whole = rest.iter().rev().fold(existing.clone(), |p, c| p.join(c));
    Ok((existing, whole))
}

/// The metadata of the files in `dir`.
fn files_of(dir: &Path) -> Result<Vec<std::fs::Metadata>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .collect())
}

/// `20261202T153000.123Z`: a name that sorts by time and reads as one.
fn utc_name(unix_ms: i64) -> String {
    let (days, ms) = (
        unix_ms.div_euclid(86_400_000),
        unix_ms.rem_euclid(86_400_000),
    );
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The Unix ms a checkpoint's name says.
fn unix_ms_of(name: &str) -> Option<i64> {
    let s = name.strip_prefix(PREFIX)?.as_bytes();
    if s.len() != 20 || s[8] != b'T' || s[15] != b'.' || s[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        std::str::from_utf8(&s[r]).ok()?.parse().ok()
    };
    let days = days_from_civil(num(0..4)?, num(4..6)?, num(6..8)?);
    let ms = ((num(9..11)? * 60 + num(11..13)?) * 60 + num(13..15)?) * 1000 + num(16..19)?;
    Some(days * 86_400_000 + ms)
}

/// Howard Hinnant's civil-date algorithms (proleptic Gregorian, days since 1970-01-01).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_as_their_time_and_sort_by_it() {
        for ms in [0, 1_764_633_600_123, 1_796_225_220_816, 951_782_400_000] {
            let name = format!("{PREFIX}{}", utc_name(ms));
            assert_eq!(unix_ms_of(&name), Some(ms), "{name}");
        }
        assert_eq!(utc_name(1_764_633_600_123), "20251202T000000.123Z");
        assert_eq!(utc_name(951_782_400_000), "20000229T000000.000Z");
        assert!(utc_name(1_764_633_600_123) < utc_name(1_796_225_220_816));
        assert_eq!(unix_ms_of("checkpoint-latest"), None);
    }
}
