//! Writing what a fold decided: every change encoded once, written as one WriteBatch with the
//! offsets the batch advances to, then made visible. The batch's steps stay locked in the index,
//! and the retries it changes write-locked, from before the store write until the index has the
//! batch, so that a query sees a retry's groups and rows both before or both after; the steps'
//! positions are set last (an answer reads its position first), and then their waiters wake.

use super::fold::Changes;
use super::{Applier, SourceOffset};
use crate::store::StoreBatch;
use anyhow::Result;
use std::collections::BTreeMap;

impl Applier {
    pub(super) fn commit(
        &self,
        mut batch: StoreBatch,
        changes: &Changes<'_>,
        offsets: &[SourceOffset],
    ) -> Result<()> {
        let store = &self.store;
        for job in &changes.new_jobs {
            store.put_job(&mut batch, job);
        }
        for step in &changes.new_steps {
            store.put_step(&mut batch, step);
            store.put_job_step(&mut batch, step.job_instance_id, step.step_instance_id);
        }
        for (subject, clock) in &changes.clocks {
            store.put_clock(&mut batch, *subject, *clock);
        }
        // Each changed row encoded once, for the store and any hot copy.
        let encoded: Vec<Vec<u8>> = changes.rows.iter().map(|c| c.row.to_bytes()).collect();
        for (change, bytes) in changes.rows.iter().zip(&encoded) {
            store.put_row(&mut batch, change.key, bytes);
        }
        for (key, log) in &changes.logs {
            store.put_log(&mut batch, *key, log.offset, &log.content);
        }
        for o in offsets {
            store.put_offset(&mut batch, &o.topic, o.partition, o.next);
        }

        let (stripes, targets) = self.index.lock_steps(&changes.steps);
        let retries = self.index.retries_for_update(
            &targets,
            changes
                .rows
                .iter()
                .map(|c| (c.key.step, c.key.execute_count))
                .collect(),
        );
        let mut locked: BTreeMap<(i64, i32), _> =
            retries.iter().map(|(id, r)| (*id, r.write())).collect();
        if !batch.is_empty() {
            store.write(batch)?;
        }

        // The store holds the batch now; make it visible to queries.
        for step in &changes.new_steps {
            let record = (*step).clone();
            self.index
                .set_record(&targets[&step.step_instance_id], record);
        }
        for (change, bytes) in changes.rows.iter().zip(&encoded) {
            let key = change.key;
            let before = change.before.as_ref().map(|(s, t)| (*s, t.as_str()));
            let now = (change.row.status, change.row.tag.as_str());
            let retry = locked.get_mut(&(key.step, key.execute_count));
            self.index
                .place(&targets[&key.step], retry, key, before, now, bytes);
        }
        drop(locked);
        // The position last, once what it stands for is visible (an answer reads it first).
        for (step, at) in &changes.changed_at {
            self.index.set_changed_at(&targets[step], *at);
        }
        drop(stripes);
        for (step, at) in &changes.changed_at {
            self.watches.changed(*step, *at);
        }
        if let Some(step) = changes.steps.first() {
            self.index.enforce_budget(*step);
        }
        Ok(())
    }
}
