//! The store's format version: a key in the store itself (never a side file that can drift
//! from it), settled at every open before anything reads the views.
//!
//! The versions, oldest first. **A change to what is stored or how (keys, values, column
//! families) bumps [`FORMAT_VERSION`], adds its line here, and comes with a migration in
//! [`migrate_one`] or a refusal there** (README, "Contributing"). `tests/store_format.rs` opens
//! data directories written by versions 1 and 2 and checks their answers and digests.
//!
//! 1. Everything written before the version key existed (no key).
//! 2. The store records its format version (`format-version` in the meta column family, a
//!    big-endian u32).
//! 3. A host row may say which earlier retry's output it shows (`log_execute_count`: the last
//!    bit of the row's optionals byte, set only then). Rows of 1 and 2 never set it and read as
//!    they are, so 2 → 3 only writes the key; the bump keeps a version-2 build, which would
//!    misread such a row, away from a version-3 store.

use anyhow::{bail, Context, Result};
use rocksdb::{WriteBatch, DB};
use std::path::Path;

/// The format this build writes.
pub const FORMAT_VERSION: u32 = 3;

const VERSION_KEY: &[u8] = b"format-version";

/// The store's format: the key's value; with no key, 1 when anything is stored and `None` for a
/// new store.
fn stored(
    db: &DB,
    meta: &rocksdb::ColumnFamily,
    cfs: &[&rocksdb::ColumnFamily],
) -> Result<Option<u32>> {
    if let Some(v) = db
        .get_cf(meta, VERSION_KEY)
        .context("cannot read the store's format version")?
    {
        let bytes: [u8; 4] = v
            .as_slice()
            .try_into()
            .context("corrupt format version key")?;
        return Ok(Some(u32::from_be_bytes(bytes)));
    }
    let holds_data = cfs.iter().any(|cf| {
        db.iterator_cf(*cf, rocksdb::IteratorMode::Start)
            .next()
            .is_some()
    });
    Ok(holds_data.then_some(1))
}

/// Brings the store at `path` to [`FORMAT_VERSION`]: a new store gets it; an older one is
/// migrated a version at a time, each migration's last WriteBatch writing the version it
/// reaches; a newer one, or one too old to migrate, is refused with what to do.
pub(super) fn settle(
    db: &DB,
    path: &Path,
    meta: &rocksdb::ColumnFamily,
    cfs: &[&rocksdb::ColumnFamily],
) -> Result<u32> {
    let mut version = match stored(db, meta, cfs)? {
        None => {
            write_version(db, meta, WriteBatch::default(), FORMAT_VERSION)?;
            return Ok(FORMAT_VERSION);
        }
        Some(v) => v,
    };
    refuse_newer(version, path)?;
    while version < FORMAT_VERSION {
        let from = version;
        version = migrate_one(db, path, meta, from)?;
        tracing::info!(
            dir = %path.display(),
            from,
            to = version,
            "store format migrated"
        );
    }
    Ok(version)
}

/// Checks that a store opened read-only (a digest) can be read as it is: no migration can run
/// there. Every version so far has the same views; a version that changes them must refuse the
/// older ones here.
pub(super) fn check_readable(
    db: &DB,
    path: &Path,
    meta: &rocksdb::ColumnFamily,
    cfs: &[&rocksdb::ColumnFamily],
) -> Result<()> {
    match stored(db, meta, cfs)? {
        Some(version) => refuse_newer(version, path),
        None => Ok(()),
    }
}

fn refuse_newer(version: u32, path: &Path) -> Result<()> {
    if version > FORMAT_VERSION {
        bail!(
            "the store at {dir} is in format version {version}, newer than this stepview ({}) \
             knows (up to {FORMAT_VERSION}): run the stepview release that wrote it, or a newer \
             one; or, to go back to this release, {}",
            env!("CARGO_PKG_VERSION"),
            replay_instead(path),
            dir = path.display()
        );
    }
    Ok(())
}

/// The exact commands that rebuild a store in this build's format from the topic.
fn replay_instead(path: &Path) -> String {
    let dir = path.display();
    format!(
        "rebuild the views from the topic with this one: `stepview replay --config <your config> \
         --data-dir {dir}.v{FORMAT_VERSION}`, then start it with `--data-dir {dir}.v{FORMAT_VERSION}` \
         (the topic must still hold every event of the steps you keep)"
    )
}

/// One migration, from `from` to the next version; the version it reached.
fn migrate_one(db: &DB, path: &Path, meta: &rocksdb::ColumnFamily, from: u32) -> Result<u32> {
    match from {
        // 1 → 2: the views are unchanged; the store starts recording its version. 2 → 3: the
        // rows stored read as rows without a log_execute_count.
        1 | 2 => {
            write_version(db, meta, WriteBatch::default(), from + 1)?;
            Ok(from + 1)
        }
        _ => bail!(
            "the store at {dir} is in format version {from}, which this stepview ({}) cannot \
             migrate: {}",
            env!("CARGO_PKG_VERSION"),
            replay_instead(path),
            dir = path.display()
        ),
    }
}

/// Writes `batch` (a migration's last) with the version it reaches, atomically.
fn write_version(
    db: &DB,
    meta: &rocksdb::ColumnFamily,
    mut batch: WriteBatch,
    version: u32,
) -> Result<()> {
    batch.put_cf(meta, VERSION_KEY, version.to_be_bytes());
    db.write(batch)
        .context("cannot record the store's format version")
}
