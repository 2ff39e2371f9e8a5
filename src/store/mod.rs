//! The durable views in RocksDB: job and step records, host rows, script-output chunks, the
//! steps and jobs' clocks, a job's steps, and consumer offsets, one column family each. The
//! store is the truth; everything in memory derives from it.
//!
//! Two handles: [`Store`] reads (queries, loads, digests: as many as like), [`StoreWriter`]
//! writes, and there is one, which the applier holds: "apply is the only writer" is a type.
//!
//! Owns: the on-disk layout (`keys`, `row`, `clock`) and its version (`format`), RocksDB tuning
//! (all its memory in one block cache: data, index and filter blocks and the write buffers),
//! atomic batch writes, what a failure tells the operator (`failure`), and checkpoints
//! (`checkpoint`). Must not: decide what an event means (that is `apply`) or hold query logic
//! (that is `query`).

pub mod checkpoint;
pub mod clock;
pub mod failure;
pub mod format;
pub mod keys;
pub mod row;
pub mod settings;

pub use checkpoint::{CheckpointMade, CheckpointPlace};
pub use failure::StoreFailure;
pub use settings::StoreSettings;

use crate::events::{JobEvent, StepEvent, Subject};
use crate::telemetry::store::{CheckpointMade as CheckpointMadeEvent, StoreFailed};
use crate::telemetry::{CheckpointFigures, Telemetry};
use anyhow::{Context, Result};
use checkpoint::Checkpoints;
use clock::Clock;
use failure::StoreOp;
use keys::{RowKey, LOCAL_SEQUENCE_KEY, OFFSET_PREFIX, ROW_KEY_LEN};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Direction, IteratorMode, Options,
    ReadOptions, WriteBatch, WriteBufferManager, DB,
};
use row::{HostRow, StoredRow};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const CF_STEPS: &str = "steps";
const CF_HOSTS: &str = "hosts";
const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";
const CF_CLOCKS: &str = "clocks";
const CF_JOBS: &str = "jobs";
const CF_JOB_STEPS: &str = "job_steps";
/// Column families that hold views (the digest covers these, not the consumer offsets or the
/// clocks).
const VIEW_CFS: [&str; 5] = [CF_STEPS, CF_HOSTS, CF_LOGS, CF_JOBS, CF_JOB_STEPS];
const ALL_CFS: [&str; 7] = [
    CF_STEPS,
    CF_HOSTS,
    CF_LOGS,
    CF_JOBS,
    CF_JOB_STEPS,
    CF_META,
    CF_CLOCKS,
];

/// Memory bounds for RocksDB (one block cache and one write-buffer budget shared by all column
/// families), and where checkpoints go (`None`: this store makes none).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub block_cache_bytes: usize,
    pub write_buffer_bytes: usize,
    pub checkpoints: Option<CheckpointPlace>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 256 << 20,
            checkpoints: None,
        }
    }
}

/// The views, to read: what queries, loads and digests take (a handle; cheap to clone).
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    cache: Cache,
    dir: Arc<PathBuf>,
    telemetry: Arc<Telemetry>,
    checkpoints: Option<Arc<Checkpoints>>,
}

/// One atomic write: state changes and consumer offsets together (the durability rule).
#[derive(Default)]
pub struct StoreBatch {
    batch: WriteBatch,
}

impl StoreBatch {
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

impl Store {
    /// Opens (or creates) the store at `path` and settles its format (`format`): a handle to
    /// read it, and the one to write it. Failures are reported to `telemetry`.
    pub fn open(
        path: &Path,
        opts: &StoreOptions,
        telemetry: &Arc<Telemetry>,
    ) -> Result<(Store, StoreWriter)> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create data directory {}", path.display()))?;
        let checkpoints = opts
            .checkpoints
            .as_ref()
            .map(|place| Checkpoints::prepare(place, path).map(Arc::new))
            .transpose()?;
        keep_freed_c_memory(opts.write_buffer_bytes);
        let cache = Cache::new_lru_cache(opts.block_cache_bytes);
        let wbm = WriteBufferManager::new_write_buffer_manager_with_cache(
            opts.write_buffer_bytes,
            false,
            cache.clone(),
        );
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_write_buffer_manager(&wbm);
        db_opts.increase_parallelism(2);
        db_opts.set_max_background_jobs(2);
        let cf = |name: &str| {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_bloom_filter(10.0, false);
            // Queries read rows by point lookups: a hash index inside each data block saves
            // the binary search.
            table.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
            // Index and filter blocks live in the block cache (pinned for the newest files),
            // not beside it in every table reader: RocksDB's memory stays within the cache
            // whatever the history size.
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            o.set_write_buffer_size(64 << 20);
            ColumnFamilyDescriptor::new(name, o)
        };
        let cfs = ALL_CFS.map(cf);
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).with_context(|| {
            format!(
                "cannot open RocksDB at {} (is another stepview using it?)",
                path.display()
            )
        })?;
        let store = Store {
            db: Arc::new(db),
            cache,
            dir: Arc::new(path.to_owned()),
            telemetry: Arc::clone(telemetry),
            checkpoints,
        };
        format::settle(&store.db, path, store.cf(CF_META), &store.all_cfs())?;
        let writer = StoreWriter {
            store: store.clone(),
        };
        Ok((store, writer))
    }

    /// Opens the store at `path` to read only (a digest of a copy or a checkpoint): nothing is
    /// written to it, so nothing is migrated; a format it cannot read as it is is refused.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let cache = Cache::new_lru_cache(64 << 20);
        let cfs = ALL_CFS.map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors_read_only(&Options::default(), path, cfs, false)
            .with_context(|| format!("cannot open RocksDB at {} to read", path.display()))?;
        let store = Store {
            db: Arc::new(db),
            cache,
            dir: Arc::new(path.to_owned()),
            telemetry: Arc::new(Telemetry::new()),
            checkpoints: None,
        };
        format::check_readable(&store.db, path, store.cf(CF_META), &store.all_cfs())?;
        Ok(store)
    }

    fn all_cfs(&self) -> Vec<&rocksdb::ColumnFamily> {
        ALL_CFS.iter().map(|name| self.cf(name)).collect()
    }

    /// `error` as a [`StoreFailure`] of `op`, counted and logged.
    fn failed(&self, op: StoreOp, error: rocksdb::Error) -> anyhow::Error {
        let failure = StoreFailure::new(op, &self.dir, &error);
        StoreFailed {
            op: failure.op.label(),
            kind: failure.kind.label(),
            dir: &failure.dir,
            message: &failure.message,
        }
        .emit(&self.telemetry);
        failure.into()
    }

    /// Makes a checkpoint (`checkpoint`): a complete data directory of this moment, offsets
    /// included, under `store.checkpoint_dir`.
    pub fn checkpoint(&self) -> Result<CheckpointMade> {
        let checkpoints = self
            .checkpoints
            .as_ref()
            .context("this store makes no checkpoints")?;
        let made = checkpoints.make(
            |path| {
                rocksdb::checkpoint::Checkpoint::new(&self.db)
                    .and_then(|c| c.create_checkpoint(path))
                    .map_err(|e| self.failed(StoreOp::Checkpoint, e))
            },
            |path| Store::open_read_only(path)?.offsets(),
        )?;
        CheckpointMadeEvent {
            name: &made.name,
            took: made.took,
            files: made.files,
            bytes: made.bytes,
            removed: &made.removed,
        }
        .emit(&self.telemetry);
        Ok(made)
    }

    /// What the checkpoints cost, when this store makes them.
    pub fn checkpoint_figures(&self) -> Option<CheckpointFigures> {
        self.checkpoints.as_ref().map(|c| c.figures())
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    /// The next position of events from no topic.
    pub fn local_sequence(&self) -> Result<i64> {
        let value = self
            .db
            .get_cf(self.cf(CF_META), LOCAL_SEQUENCE_KEY)
            .map_err(|e| self.failed(StoreOp::Read, e))?;
        match value {
            None => Ok(0),
            Some(v) => Ok(i64::from_be_bytes(
                v.as_slice().try_into().context("corrupt local sequence")?,
            )),
        }
    }

    /// The step records of `ids`.
    pub fn get_steps(&self, ids: &[i64]) -> Result<Vec<Option<StepEvent>>> {
        self.multi_get(
            CF_STEPS,
            ids,
            |id| keys::step_key(*id),
            |_, v| decode_step(v),
        )
    }

    /// The job records of `ids`.
    pub fn get_jobs(&self, ids: &[i64]) -> Result<Vec<Option<JobEvent>>> {
        self.multi_get(
            CF_JOBS,
            ids,
            |id| keys::step_key(*id),
            |_, v| serde_json::from_slice(v).context("corrupt job record"),
        )
    }

    /// The steps of `job`, by id.
    pub fn job_steps(&self, job: i64) -> Result<Vec<i64>> {
        let mut steps = Vec::new();
        let it = self.db.raw_iterator_cf(self.cf(CF_JOB_STEPS));
        scan_prefix(self, it, &keys::step_key(job), |k, _| {
            let step = k.get(8..16).context("corrupt job step key")?;
            steps.push(i64::from_be_bytes(step.try_into()?));
            Ok(())
        })?;
        Ok(steps)
    }

    /// The clocks of `subjects`.
    pub fn get_clocks(&self, subjects: &[Subject]) -> Result<Vec<Option<Clock>>> {
        self.multi_get(
            CF_CLOCKS,
            subjects,
            |s| keys::clock_key(*s),
            |_, v| Clock::decode(v).context("corrupt clock"),
        )
    }

    /// Visits every step's and job's clock (one entry each, small beside a step's rows).
    pub fn for_each_clock(&self, mut f: impl FnMut(Subject, Clock)) -> Result<()> {
        let it = self.db.raw_iterator_cf(self.cf(CF_CLOCKS));
        scan_prefix(self, it, &[], |k, v| {
            let subject = keys::subject_of_clock_key(k).context("corrupt clock key")?;
            f(subject, Clock::decode(v).context("corrupt clock")?);
            Ok(())
        })
    }

    /// The rows at `keys`, decoded to be changed (apply).
    pub fn get_rows(&self, keys: &[RowKey]) -> Result<Vec<Option<HostRow>>> {
        self.multi_get_rows(keys, HostRow::decode)
    }

    /// The rows at `keys`, as stored (answers).
    pub fn get_stored_rows(&self, keys: &[RowKey]) -> Result<Vec<Option<StoredRow>>> {
        self.multi_get_rows(keys, StoredRow::new)
    }

    fn multi_get_rows<T>(
        &self,
        keys: &[RowKey],
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<Option<T>>> {
        self.multi_get(
            CF_HOSTS,
            keys,
            |k| k.to_bytes(),
            |k, v| decode(v).with_context(|| format!("corrupt host row {k:?}")),
        )
    }

    /// Like `get_stored_rows`, by one scan of the retry (or batch) that holds all `keys`:
    /// cheaper per row when many of its rows are wanted.
    pub fn get_stored_rows_by_scan(
        &self,
        step: i64,
        execute_count: i32,
        batch: Option<i32>,
        keys: &[RowKey],
    ) -> Result<Vec<Option<StoredRow>>> {
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_unstable_by_key(|&i| keys[i]);
        let mut wanted = order.into_iter().peekable();
        let mut rows: Vec<Option<StoredRow>> = vec![None; keys.len()];
        self.for_each_row_in(step, execute_count, batch, |key, v| {
            while wanted.next_if(|&i| keys[i] < key).is_some() {}
            if let Some(i) = wanted.next_if(|&i| keys[i] == key) {
                rows[i] = Some(StoredRow::new(v).context("corrupt host row")?);
            }
            Ok(())
        })?;
        Ok(rows)
    }

    /// Whether each of `chunks` (a row and an offset) is stored.
    pub fn logs_exist(&self, chunks: &[(RowKey, i64)]) -> Result<Vec<bool>> {
        let found = self.multi_get(CF_LOGS, chunks, |(k, o)| k.log_key(*o), |_, _| Ok(()))?;
        Ok(found.into_iter().map(|f| f.is_some()).collect())
    }

    /// One batched multi-get of `keys` (encoded by `encode`), each value found decoded by
    /// `decode`; in the order of `keys`. RocksDB wants the keys sorted; sorting their positions
    /// here is cheaper than letting it sort its own key contexts.
    fn multi_get<K: Ord, T, const N: usize>(
        &self,
        cf: &str,
        keys: &[K],
        encode: impl Fn(&K) -> [u8; N],
        decode: impl Fn(&K, &[u8]) -> Result<T>,
    ) -> Result<Vec<Option<T>>> {
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_unstable_by(|&a, &b| keys[a].cmp(&keys[b]));
        let raw: Vec<[u8; N]> = order.iter().map(|&i| encode(&keys[i])).collect();
        let values = self.db.batched_multi_get_cf(self.cf(cf), &raw, true);
        let mut out: Vec<Option<T>> = std::iter::repeat_with(|| None).take(keys.len()).collect();
        for (value, &i) in values.into_iter().zip(&order) {
            if let Some(v) = value.map_err(|e| self.failed(StoreOp::Read, e))? {
                out[i] = Some(decode(&keys[i], &v)?);
            }
        }
        Ok(out)
    }

    /// Visits the encoded rows of one step's retry (or one batch of it), in key order.
    fn for_each_row_in(
        &self,
        step: i64,
        execute_count: i32,
        batch: Option<i32>,
        f: impl FnMut(RowKey, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let it = self.db.raw_iterator_cf(self.cf(CF_HOSTS));
        visit_rows(self, it, &keys::retry_prefix(step, execute_count, batch), f)
    }

    /// A consistent view of the store at this moment, for answers that read rows and logs
    /// together.
    pub fn snapshot(&self) -> StoreSnapshot<'_> {
        StoreSnapshot {
            store: self,
            snapshot: self.db.snapshot(),
        }
    }

    /// The stored resume offsets: (topic, partition, next offset).
    pub fn offsets(&self) -> Result<Vec<(String, i32, i64)>> {
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(OFFSET_PREFIX, Direction::Forward),
        );
        for item in it {
            let (k, v) = item.map_err(|e| self.failed(StoreOp::Read, e))?;
            let Some(rest) = k.strip_prefix(OFFSET_PREFIX) else {
                break;
            };
            let rest = std::str::from_utf8(rest).context("corrupt offset key")?;
            let (topic, partition) = rest.rsplit_once('/').context("corrupt offset key")?;
            let next = i64::from_be_bytes(v.as_ref().try_into().context("corrupt offset")?);
            out.push((topic.to_owned(), partition.parse()?, next));
        }
        Ok(out)
    }

    /// SHA-256 over every view key and value in order: equal digests mean equal views.
    pub fn digest(&self) -> Result<String> {
        let mut h = Sha256::new();
        for name in VIEW_CFS {
            h.update(name.as_bytes());
            for item in self.db.iterator_cf(self.cf(name), IteratorMode::Start) {
                let (k, v) = item.map_err(|e| self.failed(StoreOp::Read, e))?;
                h.update((k.len() as u64).to_be_bytes());
                h.update(&k);
                h.update((v.len() as u64).to_be_bytes());
                h.update(&v);
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    /// RocksDB's figures for `/metrics`, by label: properties of each column family summed,
    /// the database's own, and the block cache's usage.
    pub fn figures(&self) -> Vec<(&'static str, i64)> {
        let per_family = [
            ("live_sst_bytes", "rocksdb.live-sst-files-size"),
            ("estimate_keys", "rocksdb.estimate-num-keys"),
            (
                "pending_compaction_bytes",
                "rocksdb.estimate-pending-compaction-bytes",
            ),
        ]
        .map(|(label, property)| (label, self.property_sum(property) as i64));
        let whole_db = [
            ("write_stopped", "rocksdb.is-write-stopped"),
            ("delayed_write_rate", "rocksdb.actual-delayed-write-rate"),
            ("background_errors", "rocksdb.background-errors"),
        ]
        .map(|(label, property)| {
            let value = self.db.property_int_value(property).ok().flatten();
            (label, value.unwrap_or(0) as i64)
        });
        per_family
            .into_iter()
            .chain(whole_db)
            .chain([("block_cache_usage_bytes", self.cache.get_usage() as i64)])
            .collect()
    }

    /// A RocksDB integer property summed over the column families.
    fn property_sum(&self, name: &str) -> u64 {
        ALL_CFS
            .iter()
            .filter_map(|cf| {
                self.db
                    .property_int_value_cf(self.cf(cf), name)
                    .ok()
                    .flatten()
            })
            .sum()
    }
}

/// The only way to change the views: the applier holds it (there is one per open store).
pub struct StoreWriter {
    store: Store,
}

impl StoreWriter {
    /// The views as they stand, to read.
    pub fn reader(&self) -> &Store {
        &self.store
    }

    pub fn put_step(&self, b: &mut StoreBatch, step: &StepEvent) {
        let value = serde_json::to_vec(step).expect("steps serialize");
        b.batch.put_cf(
            self.store.cf(CF_STEPS),
            keys::step_key(step.step_instance_id),
            value,
        );
    }

    /// Stores a row encoded by `HostRow::encode`.
    pub fn put_row(&self, b: &mut StoreBatch, key: RowKey, encoded: &[u8]) {
        b.batch
            .put_cf(self.store.cf(CF_HOSTS), key.to_bytes(), encoded);
    }

    pub fn put_log(&self, b: &mut StoreBatch, key: RowKey, offset: i64, content: &str) {
        b.batch.put_cf(
            self.store.cf(CF_LOGS),
            key.log_key(offset),
            content.as_bytes(),
        );
    }

    /// Records `next` as the offset to resume `topic`/`partition` from.
    pub fn put_offset(&self, b: &mut StoreBatch, topic: &str, partition: i32, next: i64) {
        b.batch.put_cf(
            self.store.cf(CF_META),
            keys::offset_key(topic, partition),
            next.to_be_bytes(),
        );
    }

    pub fn put_local_sequence(&self, b: &mut StoreBatch, next: i64) {
        b.batch.put_cf(
            self.store.cf(CF_META),
            LOCAL_SEQUENCE_KEY,
            next.to_be_bytes(),
        );
    }

    /// Sets the clock of a step or job.
    pub fn put_clock(&self, b: &mut StoreBatch, subject: Subject, clock: Clock) {
        b.batch.put_cf(
            self.store.cf(CF_CLOCKS),
            keys::clock_key(subject),
            clock.encode(),
        );
    }

    pub fn delete_clock(&self, b: &mut StoreBatch, subject: Subject) {
        b.batch
            .delete_cf(self.store.cf(CF_CLOCKS), keys::clock_key(subject));
    }

    pub fn put_job(&self, b: &mut StoreBatch, job: &JobEvent) {
        let value = serde_json::to_vec(job).expect("jobs serialize");
        b.batch.put_cf(
            self.store.cf(CF_JOBS),
            keys::step_key(job.job_instance_id),
            value,
        );
    }

    /// Records that `step` belongs to `job` (a job's steps are listed from these).
    pub fn put_job_step(&self, b: &mut StoreBatch, job: i64, step: i64) {
        b.batch.put_cf(
            self.store.cf(CF_JOB_STEPS),
            keys::job_step_key(job, step),
            [],
        );
    }

    /// Deletes every view of `step` (its record, rows and logs, and its place in `job`), by
    /// range deletes: RocksDB drops the data in compaction, and the write costs the same for 10
    /// rows or a million.
    pub fn delete_step(&self, b: &mut StoreBatch, step: i64, job: Option<i64>) {
        let (start, end) = keys::id_range(step);
        for name in [CF_STEPS, CF_HOSTS, CF_LOGS] {
            b.batch.delete_range_cf(self.store.cf(name), start, end);
        }
        if let Some(job) = job {
            b.batch
                .delete_cf(self.store.cf(CF_JOB_STEPS), keys::job_step_key(job, step));
        }
    }

    /// Deletes a job's record and its list of steps (the steps expire on their own).
    pub fn delete_job(&self, b: &mut StoreBatch, job: i64) {
        let (start, end) = keys::id_range(job);
        b.batch
            .delete_cf(self.store.cf(CF_JOBS), keys::step_key(job));
        b.batch
            .delete_range_cf(self.store.cf(CF_JOB_STEPS), start, end);
    }

    pub fn write(&self, b: StoreBatch) -> Result<()> {
        self.store
            .db
            .write(b.batch)
            .map_err(|e| self.store.failed(StoreOp::Write, e))
    }

    /// Flushes memtables to SST files (graceful shutdown; the WAL alone would also do).
    pub fn flush(&self) -> Result<()> {
        for name in ALL_CFS {
            self.store
                .db
                .flush_cf(self.store.cf(name))
                .map_err(|e| self.store.failed(StoreOp::Flush, e))?;
        }
        Ok(())
    }
}

/// The store at one moment: what scans that combine rows and logs read.
pub struct StoreSnapshot<'a> {
    store: &'a Store,
    snapshot: rocksdb::Snapshot<'a>,
}

impl StoreSnapshot<'_> {
    /// The record of `step`, if it has one.
    pub fn step(&self, step: i64) -> Result<Option<StepEvent>> {
        let value = self
            .snapshot
            .get_cf(self.store.cf(CF_STEPS), keys::step_key(step))
            .map_err(|e| self.store.failed(StoreOp::Read, e))?;
        value.map(|v| decode_step(&v)).transpose()
    }

    /// The clock of `step`, if it has one.
    pub fn clock(&self, step: i64) -> Result<Option<Clock>> {
        let value = self
            .snapshot
            .get_cf(
                self.store.cf(CF_CLOCKS),
                keys::clock_key(Subject::Step(step)),
            )
            .map_err(|e| self.store.failed(StoreOp::Read, e))?;
        value
            .map(|v| Clock::decode(&v).context("corrupt step clock"))
            .transpose()
    }

    /// Visits the key, status and tag of every row of `step` (all retries), in key order: what
    /// the in-memory index of a step is built from.
    pub fn for_each_row_head(&self, step: i64, mut f: impl FnMut(RowKey, i32, &str)) -> Result<()> {
        let mut ro = ReadOptions::default();
        ro.fill_cache(false);
        let it = self
            .snapshot
            .raw_iterator_cf_opt(self.store.cf(CF_HOSTS), ro);
        visit_rows(self.store, it, &keys::step_key(step), |key, v| {
            let (status, tag) = row::decode_head(v).context("corrupt host row")?;
            f(key, status, tag);
            Ok(())
        })
    }

    /// Visits the rows of one step's retry (or one batch of it), in key order; `f` may stop the
    /// scan with an error.
    pub fn for_each_row_in(
        &self,
        step: i64,
        execute_count: i32,
        batch: Option<i32>,
        mut f: impl FnMut(RowKey, StoredRow) -> Result<()>,
    ) -> Result<()> {
        let it = self.snapshot.raw_iterator_cf(self.store.cf(CF_HOSTS));
        visit_rows(
            self.store,
            it,
            &keys::retry_prefix(step, execute_count, batch),
            |key, v| f(key, StoredRow::new(v).context("corrupt host row")?),
        )
    }

    /// Every row of one step's retry (or one batch of it), in key order.
    pub fn rows_in(
        &self,
        step: i64,
        execute_count: i32,
        batch: Option<i32>,
    ) -> Result<Vec<(RowKey, StoredRow)>> {
        let mut rows = Vec::new();
        self.for_each_row_in(step, execute_count, batch, |key, row| {
            rows.push((key, row));
            Ok(())
        })?;
        Ok(rows)
    }

    /// Visits the stored output chunks of one row, in offset order.
    pub fn for_each_log_chunk_of(
        &self,
        row: RowKey,
        mut f: impl FnMut(i64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let it = self.snapshot.raw_iterator_cf(self.store.cf(CF_LOGS));
        scan_prefix(self.store, it, &row.to_bytes(), |k, v| {
            let offset =
                i64::from_be_bytes(k[ROW_KEY_LEN..].try_into().context("corrupt log key")?);
            f(offset, v)
        })
    }

    /// Visits the stored output chunks of one step's retry (or one batch of it), in (row,
    /// offset) order; `f` may stop the scan with an error.
    pub fn for_each_log_chunk(
        &self,
        step: i64,
        execute_count: i32,
        batch: Option<i32>,
        mut f: impl FnMut(RowKey, i64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let it = self.snapshot.raw_iterator_cf(self.store.cf(CF_LOGS));
        scan_prefix(
            self.store,
            it,
            &keys::retry_prefix(step, execute_count, batch),
            |k, v| {
                let key = RowKey::from_bytes(k).context("corrupt log key")?;
                let offset =
                    i64::from_be_bytes(k[ROW_KEY_LEN..].try_into().context("corrupt log key")?);
                f(key, offset, v)
            },
        )
    }
}

/// RocksDB allocates through glibc's malloc (Rust code through mimalloc), and by default glibc
/// maps every block above 128 KiB on its own and trims freed memory at once: each batch's
/// multi-get contexts, each WriteBatch and each memtable's arena came back as fresh pages, and
/// page faults took 8% of apply. Blocks up to 32 MiB come from the heap instead, and up to the
/// memtable budget of freed memory stays for the next memtable to reuse.
fn keep_freed_c_memory(write_buffer_bytes: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc allocator parameters; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(
            libc::M_TRIM_THRESHOLD,
            write_buffer_bytes.try_into().unwrap_or(libc::c_int::MAX),
        );
    }
}

fn decode_step(bytes: &[u8]) -> Result<StepEvent> {
    serde_json::from_slice(bytes).context("corrupt step record")
}

fn visit_rows(
    store: &Store,
    it: rocksdb::DBRawIterator<'_>,
    prefix: &[u8],
    mut f: impl FnMut(RowKey, &[u8]) -> Result<()>,
) -> Result<()> {
    scan_prefix(store, it, prefix, |k, v| {
        f(RowKey::from_bytes(k).context("corrupt host row key")?, v)
    })
}

/// Visits every entry under `prefix`, in key order, until `f` fails.
fn scan_prefix(
    store: &Store,
    mut it: rocksdb::DBRawIterator<'_>,
    prefix: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    it.seek(prefix);
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if !k.starts_with(prefix) {
            break;
        }
        f(k, v)?;
        it.next();
    }
    it.status().map_err(|e| store.failed(StoreOp::Read, e))
}
