//! Key layout. Big-endian fixed-width integers, so that byte order is numeric order and one step /
//! retry / batch is one contiguous key range: `step(8) execute_count(4) batch(4) host(8)`, and a
//! log chunk is its row key followed by `offset(8)`. Ids and counts are validated non-negative.

use crate::events::{HostLog, HostResult, StepTargets, Subject, TargetHost};

pub const ROW_KEY_LEN: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    pub step: i64,
    pub execute_count: i32,
    pub batch: i32,
    pub host: i64,
}

impl RowKey {
    pub fn of_event(step: i64, execute_count: i32, batch: i32, host: i64) -> RowKey {
        RowKey {
            step,
            execute_count,
            batch,
            host,
        }
    }

    pub fn of_target(e: &StepTargets, h: &TargetHost) -> RowKey {
        RowKey::of_event(e.step_instance_id, e.execute_count, h.batch, h.bk_host_id)
    }

    pub fn of_result(e: &HostResult) -> RowKey {
        RowKey::of_event(e.step_instance_id, e.execute_count, e.batch, e.bk_host_id)
    }

    pub fn of_log(e: &HostLog) -> RowKey {
        RowKey::of_event(e.step_instance_id, e.execute_count, e.batch, e.bk_host_id)
    }

    pub fn to_bytes(self) -> [u8; ROW_KEY_LEN] {
        let mut k = [0u8; ROW_KEY_LEN];
        k[..8].copy_from_slice(&self.step.to_be_bytes());
        k[8..12].copy_from_slice(&self.execute_count.to_be_bytes());
        k[12..16].copy_from_slice(&self.batch.to_be_bytes());
        k[16..].copy_from_slice(&self.host.to_be_bytes());
        k
    }

    pub fn from_bytes(k: &[u8]) -> Option<RowKey> {
        if k.len() < ROW_KEY_LEN {
            return None;
        }
        let int = |r: std::ops::Range<usize>| -> [u8; 8] {
            let mut b = [0u8; 8];
            b[8 - r.len()..].copy_from_slice(&k[r]);
            b
        };
        Some(RowKey {
            step: i64::from_be_bytes(int(0..8)),
            execute_count: u64::from_be_bytes(int(8..12)) as i32,
            batch: u64::from_be_bytes(int(12..16)) as i32,
            host: i64::from_be_bytes(int(16..24)),
        })
    }

    pub fn log_key(self, offset: i64) -> [u8; ROW_KEY_LEN + 8] {
        let mut k = [0u8; ROW_KEY_LEN + 8];
        k[..ROW_KEY_LEN].copy_from_slice(&self.to_bytes());
        k[ROW_KEY_LEN..].copy_from_slice(&offset.to_be_bytes());
        k
    }
}

/// The key prefix of one step's retry (all batches), or of one batch of it.
pub fn retry_prefix(step: i64, execute_count: i32, batch: Option<i32>) -> Vec<u8> {
    let mut p = Vec::with_capacity(16);
    p.extend_from_slice(&step.to_be_bytes());
    p.extend_from_slice(&execute_count.to_be_bytes());
    if let Some(b) = batch {
        p.extend_from_slice(&b.to_be_bytes());
    }
    p
}

pub fn step_key(step: i64) -> [u8; 8] {
    step.to_be_bytes()
}

/// The key of a step's or job's clock: a kind byte, then the id.
pub fn clock_key(subject: Subject) -> [u8; 9] {
    let (kind, id) = match subject {
        Subject::Step(id) => (b'S', id),
        Subject::Job(id) => (b'J', id),
    };
    let mut k = [kind; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

pub fn subject_of_clock_key(k: &[u8]) -> Option<Subject> {
    let id = i64::from_be_bytes(k.get(1..9)?.try_into().ok()?);
    match (k.len(), k[0]) {
        (9, b'S') => Some(Subject::Step(id)),
        (9, b'J') => Some(Subject::Job(id)),
        _ => None,
    }
}

/// The key of a (job, step) pair: a job's steps are one key range.
pub fn job_step_key(job: i64, step: i64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&job.to_be_bytes());
    k[8..].copy_from_slice(&step.to_be_bytes());
    k
}

/// The key range [start, end) that holds everything of a step (or job) in any column family keyed
/// by its id first. Ids are positive, so `id + 1` as an unsigned number is past all of them.
pub fn id_range(id: i64) -> ([u8; 8], [u8; 8]) {
    (id.to_be_bytes(), (id as u64 + 1).to_be_bytes())
}

pub fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    format!("offset/{topic}/{partition}").into_bytes()
}

pub const OFFSET_PREFIX: &[u8] = b"offset/";

/// The next position of events from no topic (files, tests).
pub const LOCAL_SEQUENCE_KEY: &[u8] = b"local-sequence";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically_and_round_trip() {
        let a = RowKey {
            step: 1,
            execute_count: 0,
            batch: 2,
            host: 300,
        };
        let b = RowKey {
            step: 1,
            execute_count: 0,
            batch: 10,
            host: 5,
        };
        assert!(a.to_bytes() < b.to_bytes());
        assert_eq!(RowKey::from_bytes(&b.to_bytes()), Some(b));
        assert!(a.to_bytes().starts_with(&retry_prefix(1, 0, Some(2))));
        assert!(a.log_key(7).starts_with(&a.to_bytes()));
        let (start, end) = id_range(1);
        let key = a.to_bytes();
        assert!(start[..] <= key[..8] && key[..8] < end[..]);
        let (_, end) = id_range(i64::MAX);
        assert!(i64::MAX.to_be_bytes() < end);
        for subject in [Subject::Step(7), Subject::Job(i64::MAX)] {
            assert_eq!(subject_of_clock_key(&clock_key(subject)), Some(subject));
        }
    }
}
