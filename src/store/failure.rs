//! RocksDB failures as an operator needs them: which store, which operation, a kind to count
//! and alert on, and RocksDB's own words (the file, "No space left on device").
//!
//! A full disk needs no restart: RocksDB 10 sorts an out-of-space error by where it happened. In
//! the WAL, the MANIFEST or a flush it is a hard error: writes fail, reads go on, and the
//! `SstFileManager` RocksDB creates at open polls the free space every 5 s and resumes the
//! database in place (`DB::Resume`: it flushes, switches the WAL and clears the error) once the
//! write can go through. In a compaction it is a soft error: writes go on, compactions wait for
//! room. stepview retries the batch in hand meanwhile (nothing of it is written until it all
//! is), so nothing is lost or applied twice, and the store is never reopened under queries.

use std::fmt;
use std::path::Path;

/// What the store was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Write,
    Read,
    Flush,
    Checkpoint,
}

impl StoreOp {
    pub fn label(self) -> &'static str {
        match self {
            StoreOp::Write => "write",
            StoreOp::Read => "read",
            StoreOp::Flush => "flush",
            StoreOp::Checkpoint => "checkpoint",
        }
    }
}

/// The kinds of failure an operator tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The disk (or its quota) is full: RocksDB resumes by itself once there is room.
    NoSpace,
    /// Any other I/O error.
    Io,
    /// Data on disk does not read back as written.
    Corruption,
    /// Busy, timed out, try again.
    Busy,
    Other,
}

impl StoreErrorKind {
    pub fn label(self) -> &'static str {
        match self {
            StoreErrorKind::NoSpace => "no_space",
            StoreErrorKind::Io => "io",
            StoreErrorKind::Corruption => "corruption",
            StoreErrorKind::Busy => "busy",
            StoreErrorKind::Other => "other",
        }
    }

    /// RocksDB's message names the error's code first (as `rocksdb::Error::kind` reads it), and
    /// an out-of-space subcode, or the OS's ENOSPC text, after it.
    fn of(message: &str) -> StoreErrorKind {
        if message.contains("No space left on device")
            || message.contains("NoSpace")
            || message.contains("space limit")
        {
            return StoreErrorKind::NoSpace;
        }
        match message.split(':').next().unwrap_or("") {
            "IO error" => StoreErrorKind::Io,
            "Corruption" => StoreErrorKind::Corruption,
            "Resource busy" | "Operation timed out" | "Operation failed. Try again." => {
                StoreErrorKind::Busy
            }
            _ => StoreErrorKind::Other,
        }
    }
}

/// A failed RocksDB operation: the error `Store` returns, and what `/readyz` and the log say.
#[derive(Debug)]
pub struct StoreFailure {
    pub op: StoreOp,
    pub kind: StoreErrorKind,
    /// The data directory.
    pub dir: String,
    /// RocksDB's message.
    pub message: String,
}

impl StoreFailure {
    pub fn new(op: StoreOp, dir: &Path, error: &rocksdb::Error) -> StoreFailure {
        StoreFailure {
            op,
            kind: StoreErrorKind::of(error.as_ref()),
            dir: dir.display().to_string(),
            message: error.as_ref().to_owned(),
        }
    }
}

impl fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the store (RocksDB in {}) cannot {}: ",
            self.dir,
            self.op.label()
        )?;
        match self.kind {
            StoreErrorKind::NoSpace => write!(
                f,
                "no space left on its disk; it resumes by itself within seconds of there being \
                 room ({})",
                self.message
            ),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for StoreFailure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_space_is_told_apart_from_other_errors() {
        let kind = StoreErrorKind::of;
        assert_eq!(
            kind("IO error: No space left on device: While appending to file: /d/000012.log: No space left on device"),
            StoreErrorKind::NoSpace
        );
        assert_eq!(
            kind("IO error: No such file or directory: While open a file for random read: /d/000009.sst"),
            StoreErrorKind::Io
        );
        assert_eq!(
            kind("Corruption: block checksum mismatch"),
            StoreErrorKind::Corruption
        );
        assert_eq!(kind("Resource busy: "), StoreErrorKind::Busy);
        assert_eq!(kind("Invalid argument: x"), StoreErrorKind::Other);
    }
}
