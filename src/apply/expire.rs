//! Expiry (retention): deleting the views of steps and jobs past their time, the same way as a
//! batch (the applier is the only writer), leaving a tombstone that drops their late events.

use super::Applier;
use crate::events::Subject;
use crate::store::clock::Clock;
use crate::store::StoreBatch;
use anyhow::Result;

/// What one expiry pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Steps whose views were deleted.
    pub steps: u64,
    /// Jobs whose records were deleted.
    pub jobs: u64,
    /// Tombstones of steps expired more than a retention period ago, forgotten.
    pub tombstones: u64,
}

impl Applier {
    /// Deletes the views of every step (and job) that `judged` says this instance may judge and
    /// whose last event is older than `keep_ms` at `now_ms`, leaving a tombstone that drops its
    /// late events, and forgets tombstones older than `keep_ms` too. RocksDB drops the data in
    /// compaction (range deletes): a pass costs one small write per step, whatever its size.
    pub fn expire(
        &self,
        now_ms: i64,
        keep_ms: i64,
        judged: impl Fn(Subject) -> bool,
    ) -> Result<Expired> {
        let _writing = self.writing.lock();
        let older = |ms: i64| ms.checked_add(keep_ms).is_some_and(|until| until < now_ms);
        let (mut expiring, mut forgotten) = (Vec::new(), Vec::new());
        self.store
            .reader()
            .for_each_clock(|subject, clock| match clock {
                Clock::Live { last_event_ms, .. } if older(last_event_ms) && judged(subject) => {
                    expiring.push(subject)
                }
                Clock::Expired { at_ms } if older(at_ms) => forgotten.push(subject),
                _ => {}
            })?;
        let mut done = Expired::default();
        for subjects in expiring.chunks(1000) {
            let steps: Vec<i64> = subjects
                .iter()
                .filter_map(|s| match s {
                    Subject::Step(id) => Some(*id),
                    Subject::Job(_) => None,
                })
                .collect();
            let records = self.store.reader().get_steps(&steps)?;
            let mut batch = StoreBatch::default();
            for (step, record) in steps.iter().zip(&records) {
                let job = record.as_ref().map(|r| r.job_instance_id);
                self.store.delete_step(&mut batch, *step, job);
            }
            for subject in subjects {
                if let Subject::Job(job) = subject {
                    self.store.delete_job(&mut batch, *job);
                }
                let clock = Clock::Expired { at_ms: now_ms };
                self.store.put_clock(&mut batch, *subject, clock);
            }
            let (stripes, _) = self.index.lock_steps(&steps);
            self.store.write(batch)?;
            for step in &steps {
                self.index.forget(*step);
            }
            drop(stripes);
            done.steps += steps.len() as u64;
            done.jobs += (subjects.len() - steps.len()) as u64;
        }
        if !forgotten.is_empty() {
            let mut batch = StoreBatch::default();
            for subject in &forgotten {
                self.store.delete_clock(&mut batch, *subject);
            }
            self.store.write(batch)?;
            done.tombstones = forgotten.len() as u64;
        }
        Ok(done)
    }
}
