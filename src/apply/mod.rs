//! Folds events into the views: the only writer of the store (it holds the `StoreWriter`) and
//! of the index's groups.
//!
//! One call applies one batch as one RocksDB WriteBatch, together with the consumer offsets the
//! batch advances to and the clocks of its steps and jobs, and only then updates the in-memory
//! index of the steps that are in memory (or being loaded), and wakes their waiters. In three
//! parts, along its seams:
//!
//! - [`fold`]: what the batch changes, from the prior state it reads: pure (the meaning of each
//!   event kind lives there).
//! - [`commit`]: encoding, the atomic write, publishing to the index, waking watchers.
//! - [`expire`]: retention's deletes, written the same way.
//!
//! Must not: read Kafka or answer queries.

mod commit;
mod expire;
pub mod fold;

pub use expire::Expired;
pub use fold::ApplyStats;

use crate::events::{Event, Subject};
use crate::index::Index;
use crate::store::clock::{Clock, Position};
use crate::store::keys::RowKey;
use crate::store::row::HostRow;
use crate::store::{Store, StoreBatch, StoreWriter};
use crate::watch::Watches;
use anyhow::Result;
use fold::{LogChunk, Prior, Stored};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// Where the next message of a partition starts, stored with the state it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOffset {
    pub topic: String,
    pub partition: i32,
    pub next: i64,
}

/// Events to apply together, with where they come from.
pub struct Batch<'a> {
    pub events: &'a [Event],
    /// Each event's position in its topic; `None` for events from no topic (files, tests),
    /// which the store numbers in the order they are applied.
    pub positions: Option<&'a [Position]>,
    /// When the events were produced (their broker time): their steps' retention clock.
    pub times: Times<'a>,
    /// The offsets the batch advances its partitions to, stored with it.
    pub offsets: &'a [SourceOffset],
}

impl<'a> Batch<'a> {
    /// Events from no topic, produced now.
    pub fn local(events: &'a [Event]) -> Batch<'a> {
        Batch {
            events,
            positions: None,
            times: Times::All(crate::now_ms()),
            offsets: &[],
        }
    }
}

/// When a batch's events were produced (Unix ms): a step's retention counts from its newest.
#[derive(Debug, Clone, Copy)]
pub enum Times<'a> {
    /// Each event's own (its message's broker time).
    Each(&'a [i64]),
    /// One for all of them.
    All(i64),
}

impl Times<'_> {
    fn of(&self, i: usize) -> i64 {
        match self {
            Times::Each(times) => times[i],
            Times::All(at) => *at,
        }
    }
}

pub struct Applier {
    store: StoreWriter,
    index: Arc<Index>,
    watches: Arc<Watches>,
    /// Batches and expiry passes write one at a time.
    writing: Mutex<()>,
}

impl Applier {
    pub fn new(store: StoreWriter, index: Arc<Index>, watches: Arc<Watches>) -> Applier {
        Applier {
            store,
            index,
            watches,
            writing: Mutex::new(()),
        }
    }

    /// Where each partition of `topic` resumes: the offsets stored with the views.
    pub fn resume_offsets(&self, topic: &str) -> Result<HashMap<i32, i64>> {
        Ok(self
            .store
            .reader()
            .offsets()?
            .into_iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, partition, next)| (partition, next))
            .collect())
    }

    /// Applies a batch's events in order, and records its offsets, atomically; then wakes the
    /// waiters of the steps it changed.
    pub fn apply(&self, batch: &Batch<'_>) -> Result<ApplyStats> {
        let _writing = self.writing.lock();
        if let Times::Each(times) = batch.times {
            anyhow::ensure!(times.len() == batch.events.len(), "a time per event");
        }
        let mut store_batch = StoreBatch::default();
        let positions = self.positions(batch, &mut store_batch)?;
        let prior = Prior::read(batch.events, self.store.reader())?;
        let changes = fold::fold(prior, batch.events, &positions, batch.times);
        self.commit(store_batch, &changes, batch.offsets)?;
        Ok(changes.stats)
    }

    /// Flushes memtables to disk (a clean shutdown; the WAL alone would also do).
    pub fn flush(&self) -> Result<()> {
        let _writing = self.writing.lock();
        self.store.flush()
    }

    /// Each event's position: the batch's own, or the next of the store's local sequence.
    fn positions(&self, batch: &Batch<'_>, store_batch: &mut StoreBatch) -> Result<Vec<Position>> {
        if let Some(positions) = batch.positions {
            anyhow::ensure!(
                positions.len() == batch.events.len(),
                "a position per event"
            );
            return Ok(positions.to_vec());
        }
        let first = self.store.reader().local_sequence()?;
        let next = first + batch.events.len() as i64;
        self.store.put_local_sequence(store_batch, next);
        Ok((first..next)
            .map(|offset| Position {
                partition: Position::LOCAL,
                offset,
            })
            .collect())
    }
}

/// The store, as a fold reads it.
impl Stored for Store {
    fn clocks(&self, subjects: &[Subject]) -> Result<Vec<Option<Clock>>> {
        self.get_clocks(subjects)
    }

    fn rows(&self, keys: &[RowKey]) -> Result<Vec<Option<HostRow>>> {
        self.get_rows(keys)
    }

    fn logs_exist(&self, chunks: &[LogChunk]) -> Result<Vec<bool>> {
        Store::logs_exist(self, chunks)
    }

    fn job_versions(&self, ids: &[i64]) -> Result<Vec<Option<i64>>> {
        Ok(self
            .get_jobs(ids)?
            .into_iter()
            .map(|j| j.map(|j| j.version))
            .collect())
    }

    fn step_versions(&self, ids: &[i64]) -> Result<Vec<Option<i64>>> {
        Ok(self
            .get_steps(ids)?
            .into_iter()
            .map(|s| s.map(|s| s.version))
            .collect())
    }
}
