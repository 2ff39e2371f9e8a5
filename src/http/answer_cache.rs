//! Rendered `get_step_instance_status` answers, kept while their step stays where it was: a
//! repeated poll between two changes of a step costs a lookup and a copy of bytes instead of a
//! query and a rendering. An entry serves while its step is in memory at the position it was
//! read at; every change of a step moves its position, and a step that leaves memory (evicted,
//! expired, handed to another shard) serves nothing from here until it is read again.
//!
//! Owns: the entries, within `http.answer_cache_mb`, and their hit and miss counts. Must not:
//! decide answers (`query` does), keep a failed one, or change what a client receives: a hit is
//! the same body the query would give (`RenderedStep` writes the per-request parts).

use super::i18n::Lang;
use super::render::{RenderedStep, HOST_JSON_BYTES};
use crate::query::{is_finished, Reader, StepAnswer, StepQuery};
use crate::telemetry::http::AnswerLookup;
use crate::telemetry::Telemetry;
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};
use std::sync::Arc;

type Key = (StepQuery, Lang);

/// A key to look up without copying the query: hashes as [`Key`] does (a tuple's fields in
/// order), so that a poll that hits allocates nothing.
#[derive(Hash)]
struct KeyRef<'a>(&'a StepQuery, Lang);

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self.0 == key.0 && self.1 == key.1
    }
}

pub struct AnswerCache {
    /// `None`: the cache is off (`http.answer_cache_mb = 0`).
    tiers: Option<Tiers>,
    telemetry: Arc<Telemetry>,
}

/// Half the budget for the answers polls ask for (capped ones, mostly), in shards that many
/// threads reach at once; half for large answers of finished steps, in one shard (a shard keeps
/// only what fits in it: a sharded cache never keeps an entry of more than its shard's share).
struct Tiers {
    polls: Cache<Key, Arc<RenderedStep>, ByBytes>,
    /// Answers up to this many bytes go to `polls`; larger answers of running steps are not
    /// kept (uncapped answers of big steps, which change with every batch, would push out
    /// many polls).
    most_bytes_per_poll: usize,
    large: Cache<Key, Arc<RenderedStep>, ByBytes>,
    /// Answers of finished steps up to this many bytes go to `large`: they change no more
    /// (unless the step is retried), and their uncapped answers are the ones polled whole.
    most_bytes_per_large: usize,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<Key, Arc<RenderedStep>> for ByBytes {
    fn weight(&self, _: &Key, answer: &Arc<RenderedStep>) -> u64 {
        answer.weight() as u64
    }
}

/// A guess of a typical entry's size, for the cache's initial table.
const TYPICAL_ENTRY_BYTES: usize = 16 << 10;
/// Shards of the polls' tier.
const POLL_SHARDS: usize = 8;
/// The share of a shard one entry may take (the cache keeps a small part of each shard for
/// entries just added).
const ENTRY_SHARE: f64 = 0.9;

fn cache(
    bytes: usize,
    shards: usize,
    typical_entry: usize,
) -> Cache<Key, Arc<RenderedStep>, ByBytes> {
    let options = quick_cache::OptionsBuilder::new()
        .estimated_items_capacity(bytes / typical_entry + 16)
        .weight_capacity(bytes as u64)
        .shards(shards)
        .build()
        .expect("every option set");
    Cache::with_options(options, ByBytes, Default::default(), Default::default())
}

impl AnswerCache {
    /// A cache of at most `bytes` of answers (0: off), reporting its outcomes to `telemetry`.
    pub fn new(bytes: usize, telemetry: Arc<Telemetry>) -> AnswerCache {
        let tiers = (bytes > 0).then(|| {
            let half = bytes / 2;
            Tiers {
                polls: cache(half, POLL_SHARDS, TYPICAL_ENTRY_BYTES),
                most_bytes_per_poll: (half as f64 / POLL_SHARDS as f64 * ENTRY_SHARE) as usize,
                large: cache(half, 1, half),
                most_bytes_per_large: (half as f64 * ENTRY_SHARE) as usize,
            }
        });
        AnswerCache { tiers, telemetry }
    }

    /// The kept answer to `q` in `lang` if its step has not changed since (memory only: the
    /// step's position in the index).
    pub fn get(&self, reader: &Reader, q: &StepQuery, lang: Lang) -> Option<Arc<RenderedStep>> {
        let tiers = self.tiers.as_ref()?;
        let key = KeyRef(q, lang);
        let kept = tiers.polls.get(&key).or_else(|| tiers.large.get(&key))?;
        let unchanged = reader.position_of(q.step_instance_id) == Some(kept.position);
        unchanged.then(|| {
            AnswerLookup::Hit.emit(&self.telemetry);
            kept
        })
    }

    /// A fresh answer to `q` in `lang`, rendered and kept unless it is too large to keep.
    pub fn render(&self, q: StepQuery, lang: Lang, answer: StepAnswer) -> Arc<RenderedStep> {
        let Some(tiers) = &self.tiers else {
            return Arc::new(RenderedStep::of(answer, lang, false));
        };
        AnswerLookup::Miss.emit(&self.telemetry);
        let hosts: usize = answer.groups.iter().map(|g| g.hosts.len()).sum();
        let estimate = hosts * HOST_JSON_BYTES;
        let finished = is_finished(answer.step.status);
        let keep = estimate <= tiers.most_bytes_per_poll
            || (finished && estimate <= tiers.most_bytes_per_large);
        let rendered = Arc::new(RenderedStep::of(answer, lang, keep));
        let weight = rendered.weight();
        let tier = if weight <= tiers.most_bytes_per_poll {
            &tiers.polls
        } else if finished && weight <= tiers.most_bytes_per_large {
            &tiers.large
        } else {
            return rendered;
        };
        let key = (q, lang);
        // The first answer kept at a position stays: while apply places a batch, before it
        // moves the step's position, answers read at the same position may differ, and one
        // computed earlier but finished later must not replace a newer one.
        let first = tier
            .get(&key)
            .is_none_or(|kept| kept.position != rendered.position);
        if keep && first {
            tier.insert(key, Arc::clone(&rendered));
        }
        rendered
    }
}
