//! The translator's own RocksDB (cdc.md, "Versions, order and exactly-once effect"): what it
//! knows (each app's scope, each step's job, scope, hosts and the retry whose targets it sent,
//! where each host's log chunks were placed), the changes waiting for what they need, its input
//! offsets and partition counts, and the epoch. A batch's changes to all of them go into one
//! WriteBatch, written after the broker acknowledged the batch's output ([`State::commit`]).
//!
//! Owns: the stored layout and the caches over it. Must not: translate, or talk to Kafka.

use crate::events::{ScopeType, TargetHost};
use anyhow::{Context, Result};
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::path::Path;
use std::sync::Arc;

/// Steps and log hosts kept in memory (each of the two generations holds up to this many).
const CACHED: usize = 20_000;

/// What an app stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub scope_type: ScopeType,
    pub scope_id: String,
}

/// What the translator knows of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    pub job: i64,
    pub scope: Scope,
    pub rolling: bool,
    /// The retry whose `step_targets` were sent last (non-rolling steps).
    pub targets_sent_for: Option<i32>,
    /// From `target_servers`, sorted by `bk_host_id`.
    pub hosts: Vec<TargetHost>,
}

impl StepInfo {
    pub fn host(&self, bk_host_id: i64) -> Option<&TargetHost> {
        self.hosts
            .binary_search_by_key(&bk_host_id, |h| h.bk_host_id)
            .ok()
            .map(|i| &self.hosts[i])
    }
}

/// Where one host's log chunks (of one step, retry and batch) were placed: their starts and
/// chunk ids, and the host's last known byte.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogHost {
    pub end: i64,
    pub chunks: Vec<(i64, String)>,
}

/// Which log host: step, retry, batch, host.
pub type LogKey = (i64, i32, i32, i64);

/// What a waiting change needs before it can be translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Need {
    App(i64),
    Step(i64),
}

impl Need {
    fn key(self) -> [u8; 10] {
        let (tag, id) = match self {
            Need::App(id) => (b'a', id),
            Need::Step(id) => (b's', id),
        };
        let mut k = [0u8; 10];
        k[0] = b'w';
        k[1] = tag;
        k[2..].copy_from_slice(&id.to_be_bytes());
        k
    }
}

/// A change kept until what it needs arrives: where it came from, its version, and the message
/// value as it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub version: i64,
    pub value: String,
}

/// A two-generation cache: lookups promote from the old generation; when the new one is full
/// (checked only at commit, so that everything a batch wrote is still cached) it becomes the
/// old one.
struct Generations<K, V> {
    hot: HashMap<K, V>,
    cold: HashMap<K, V>,
}

impl<K: Eq + Hash + Copy, V> Generations<K, V> {
    fn new() -> Self {
        Generations {
            hot: HashMap::new(),
            cold: HashMap::new(),
        }
    }

    fn get(&mut self, k: &K) -> Option<&V> {
        if !self.hot.contains_key(k) {
            let v = self.cold.remove(k)?;
            self.hot.insert(*k, v);
        }
        self.hot.get(k)
    }

    fn insert(&mut self, k: K, v: V) {
        self.cold.remove(&k);
        self.hot.insert(k, v);
    }

    fn rotate(&mut self) {
        if self.hot.len() > CACHED {
            self.cold = std::mem::take(&mut self.hot);
        }
    }
}

/// The translator's state, with a batch's changes pending until [`State::commit`].
pub struct State {
    db: DB,
    dir: String,
    epoch: u16,
    apps: HashMap<i64, Scope>,
    steps: Generations<i64, Arc<StepInfo>>,
    logs: Generations<LogKey, LogHost>,
    partition_counts: HashMap<String, i32>,
    offsets: HashMap<(String, i32), i64>,
    waiting: usize,
    /// Waiting changes added in the pending batch, by key (a batch may release what it kept).
    pending_waits: BTreeMap<Vec<u8>, Waiting>,
    pending: WriteBatch,
}

fn step_key(id: i64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b's';
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn app_key(id: i64) -> [u8; 9] {
    let mut k = step_key(id);
    k[0] = b'a';
    k
}

fn log_key((step, execute_count, batch, host): LogKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(b'l');
    k.extend_from_slice(&step.to_be_bytes());
    k.extend_from_slice(&execute_count.to_be_bytes());
    k.extend_from_slice(&batch.to_be_bytes());
    k.extend_from_slice(&host.to_be_bytes());
    k
}

fn topic_key(tag: u8, topic: &str, partition: Option<i32>) -> Vec<u8> {
    let mut k = vec![tag];
    k.extend_from_slice(topic.as_bytes());
    if let Some(p) = partition {
        k.push(0);
        k.extend_from_slice(&p.to_be_bytes());
    }
    k
}

const EPOCH_KEY: &[u8] = b"epoch";

impl State {
    /// Opens (or creates) the state at `dir` for `epoch`, which may only grow: versions are
    /// `epoch × 2^48 + offset`, and a lower epoch would make new versions lose to old ones.
    pub fn open(dir: &Path, epoch: u16) -> Result<State> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir)
            .with_context(|| format!("cannot open the translator's state at {}", dir.display()))?;
        let stored = db
            .get(EPOCH_KEY)?
            .map(|v| u16::from_be_bytes(v.as_slice().try_into().unwrap_or_default()));
        if let Some(stored) = stored {
            anyhow::ensure!(
                epoch >= stored,
                "cdc.epoch is {epoch} but the state at {} was written at epoch {stored}: the \
                 epoch may only grow (set cdc.epoch = {stored}, or higher if Debezium's topics \
                 were recreated or re-partitioned)",
                dir.display()
            );
        }
        let mut state = State {
            dir: dir.display().to_string(),
            epoch,
            apps: HashMap::new(),
            steps: Generations::new(),
            logs: Generations::new(),
            partition_counts: HashMap::new(),
            offsets: HashMap::new(),
            waiting: 0,
            pending_waits: BTreeMap::new(),
            pending: WriteBatch::default(),
            db,
        };
        let raised = stored.is_some_and(|s| epoch > s);
        for item in state.db.iterator(IteratorMode::Start) {
            let (k, v) = item?;
            match k.first() {
                Some(b'a') if k.len() == 9 => {
                    let id = i64::from_be_bytes(k[1..].try_into()?);
                    state.apps.insert(id, serde_json::from_slice(&v)?);
                }
                Some(b'w') => state.waiting += 1,
                Some(b'o') => {
                    let (topic, partition) = split_topic_key(&k)?;
                    let offset = i64::from_be_bytes(v.as_ref().try_into()?);
                    state.offsets.insert((topic, partition), offset);
                }
                // A raised epoch forgets the partition counts: they are recorded again as
                // they are now.
                Some(b'p') if !raised => {
                    let topic = String::from_utf8(k[1..].to_vec())?;
                    let count = i32::from_be_bytes(v.as_ref().try_into()?);
                    state.partition_counts.insert(topic, count);
                }
                Some(b'p') => state.pending.delete(&k),
                _ => {}
            }
        }
        state.pending.put(EPOCH_KEY, epoch.to_be_bytes());
        state.commit()?;
        Ok(state)
    }

    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// The version of the change at `offset` of its input partition.
    pub fn version(&self, offset: i64) -> i64 {
        (i64::from(self.epoch) << 48) + offset
    }

    pub fn app(&self, id: i64) -> Option<&Scope> {
        self.apps.get(&id)
    }

    /// Records an app's scope; true when it is new to the translator.
    pub fn set_app(&mut self, id: i64, scope: Scope) -> bool {
        if self.apps.get(&id) == Some(&scope) {
            return false;
        }
        self.pending.put(
            app_key(id),
            serde_json::to_vec(&scope).expect("scopes serialize"),
        );
        self.apps.insert(id, scope).is_none()
    }

    pub fn step(&mut self, id: i64) -> Result<Option<Arc<StepInfo>>> {
        if let Some(info) = self.steps.get(&id) {
            return Ok(Some(info.clone()));
        }
        let Some(bytes) = self.db.get_pinned(step_key(id))? else {
            return Ok(None);
        };
        let info: Arc<StepInfo> = Arc::new(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("the stored state of step {id} does not parse"))?,
        );
        self.steps.insert(id, info.clone());
        Ok(Some(info))
    }

    pub fn set_step(&mut self, id: i64, info: StepInfo) {
        self.pending.put(
            step_key(id),
            serde_json::to_vec(&info).expect("step state serializes"),
        );
        self.steps.insert(id, Arc::new(info));
    }

    pub fn log_host(&mut self, key: LogKey) -> Result<LogHost> {
        if let Some(host) = self.logs.get(&key) {
            return Ok(host.clone());
        }
        Ok(match self.db.get_pinned(log_key(key))? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => LogHost::default(),
        })
    }

    pub fn set_log_host(&mut self, key: LogKey, host: LogHost) {
        self.pending.put(
            log_key(key),
            serde_json::to_vec(&host).expect("log placement serializes"),
        );
        self.logs.insert(key, host);
    }

    /// Keeps a change until `need` arrives.
    pub fn wait(&mut self, need: Need, table: u8, change: Waiting) {
        let mut key = need.key().to_vec();
        key.push(table);
        key.extend_from_slice(&change.partition.to_be_bytes());
        key.extend_from_slice(&change.version.to_be_bytes());
        self.pending.put(
            &key,
            serde_json::to_vec(&change).expect("waiting changes serialize"),
        );
        if self.pending_waits.insert(key, change).is_none() {
            self.waiting += 1;
        }
    }

    /// Takes the changes waiting for `need` (stored, and kept earlier in this batch).
    pub fn release(&mut self, need: Need) -> Result<Vec<Waiting>> {
        let prefix = need.key();
        let mut out = Vec::new();
        let mut keys = Vec::new();
        let iter = self
            .db
            .iterator(IteratorMode::From(&prefix, Direction::Forward));
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(serde_json::from_slice(&v)?);
            keys.push(k.to_vec());
        }
        let pending: Vec<Vec<u8>> = self
            .pending_waits
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in pending {
            if let Some(w) = self.pending_waits.remove(&k) {
                if !keys.contains(&k) {
                    out.push(w);
                    keys.push(k);
                }
            }
        }
        for k in &keys {
            self.pending.delete(k);
        }
        self.waiting -= keys.len().min(self.waiting);
        Ok(out)
    }

    /// Changes waiting for what they need.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Where reading `topic`'s `partition` goes on (the next offset), if it was ever read.
    pub fn offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.offsets.get(&(topic.to_owned(), partition)).copied()
    }

    pub fn set_offset(&mut self, topic: &str, partition: i32, next: i64) {
        self.pending
            .put(topic_key(b'o', topic, Some(partition)), next.to_be_bytes());
        self.offsets.insert((topic.to_owned(), partition), next);
    }

    /// The partition count recorded for `topic` at this epoch.
    pub fn partition_count(&self, topic: &str) -> Option<i32> {
        self.partition_counts.get(topic).copied()
    }

    pub fn set_partition_count(&mut self, topic: &str, count: i32) {
        self.pending
            .put(topic_key(b'p', topic, None), count.to_be_bytes());
        self.partition_counts.insert(topic.to_owned(), count);
    }

    /// Writes the pending batch (one WriteBatch: state, waiting changes and offsets together).
    pub fn commit(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.pending);
        self.db
            .write(batch)
            .with_context(|| format!("cannot write the translator's state at {}", self.dir))?;
        self.pending_waits.clear();
        self.steps.rotate();
        self.logs.rotate();
        Ok(())
    }
}

fn split_topic_key(k: &[u8]) -> Result<(String, i32)> {
    let body = &k[1..];
    anyhow::ensure!(body.len() >= 5, "short offset key");
    let (topic, rest) = body.split_at(body.len() - 5);
    Ok((
        String::from_utf8(topic.to_vec())?,
        i32::from_be_bytes(rest[1..].try_into()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(id: &str) -> Scope {
        Scope {
            scope_type: ScopeType::Biz,
            scope_id: id.into(),
        }
    }

    fn waiting(offset: i64) -> Waiting {
        Waiting {
            topic: "bkjob.job_execute.step_instance".into(),
            partition: 1,
            offset,
            version: offset,
            value: format!("{{\"n\":{offset}}}"),
        }
    }

    #[test]
    fn state_survives_a_reopen_and_the_epoch_only_grows() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = State::open(dir.path(), 1).unwrap();
            assert!(s.set_app(2, scope("2")));
            s.set_offset("bkjob.job_execute.step_instance", 2, 41);
            s.set_partition_count("bkjob.job_execute.step_instance", 3);
            s.wait(Need::App(3), 1, waiting(7));
            s.commit().unwrap();
        }
        let s = State::open(dir.path(), 1).unwrap();
        assert_eq!(s.app(2), Some(&scope("2")));
        assert_eq!(s.offset("bkjob.job_execute.step_instance", 2), Some(41));
        assert_eq!(
            s.partition_count("bkjob.job_execute.step_instance"),
            Some(3)
        );
        assert_eq!(s.waiting(), 1);
        assert_eq!(s.version(5), (1 << 48) + 5);
        drop(s);
        let e = State::open(dir.path(), 0).err().unwrap().to_string();
        assert!(e.contains("may only grow"), "{e}");
        let raised = State::open(dir.path(), 2).unwrap();
        assert_eq!(
            raised.partition_count("bkjob.job_execute.step_instance"),
            None,
            "a raised epoch records the partition counts again"
        );
        assert_eq!(
            raised.offset("bkjob.job_execute.step_instance", 2),
            Some(41)
        );
    }

    #[test]
    fn waiting_changes_are_released_once_whether_stored_or_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(dir.path(), 0).unwrap();
        s.wait(Need::Step(9), 3, waiting(1));
        s.commit().unwrap();
        s.wait(Need::Step(9), 3, waiting(2));
        s.wait(Need::Step(10), 3, waiting(3));
        assert_eq!(s.waiting(), 3);
        let released = s.release(Need::Step(9)).unwrap();
        assert_eq!(
            released.iter().map(|w| w.offset).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(s.waiting(), 1);
        s.commit().unwrap();
        assert!(s.release(Need::Step(9)).unwrap().is_empty());
        drop(s);
        let mut s = State::open(dir.path(), 0).unwrap();
        assert_eq!(s.waiting(), 1);
        assert_eq!(s.release(Need::Step(10)).unwrap()[0].offset, 3);
    }
}
