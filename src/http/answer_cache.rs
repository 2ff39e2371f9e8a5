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
use super::render::RenderedStep;
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
    entries: Option<Cache<Key, Arc<RenderedStep>, ByBytes>>,
    /// Larger answers of running steps are not kept (uncapped answers of big steps, which
    /// change with every batch, would push out many polls).
    most_bytes_per_entry: usize,
    /// Answers of finished steps may take up to this much: they change no more (unless the
    /// step is retried), and their uncapped answers are the ones polled whole.
    most_bytes_per_finished: usize,
    telemetry: Arc<Telemetry>,
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
/// About what one host of an answer renders to (benches/http: 169 KB for 600 hosts): answers
/// estimated larger than an entry may be are not rendered for keeping.
const HOST_JSON_BYTES: usize = 300;

impl AnswerCache {
    /// A cache of at most `bytes` of answers (0: off), reporting its outcomes to `telemetry`.
    pub fn new(bytes: usize, telemetry: Arc<Telemetry>) -> AnswerCache {
        let entries = (bytes > 0)
            .then(|| Cache::with_weighter(bytes / TYPICAL_ENTRY_BYTES + 16, bytes as u64, ByBytes));
        AnswerCache {
            entries,
            most_bytes_per_entry: bytes / 16,
            most_bytes_per_finished: bytes / 2,
            telemetry,
        }
    }

    /// The kept answer to `q` in `lang` if its step has not changed since (memory only: the
    /// step's position in the index).
    pub fn get(&self, reader: &Reader, q: &StepQuery, lang: Lang) -> Option<Arc<RenderedStep>> {
        let kept = self.entries.as_ref()?.get(&KeyRef(q, lang))?;
        let unchanged = reader.position_of(q.step_instance_id) == Some(kept.position);
        unchanged.then(|| {
            AnswerLookup::Hit.emit(&self.telemetry);
            kept
        })
    }

    /// A fresh answer to `q` in `lang`, rendered and kept unless it is too large to keep.
    pub fn render(&self, q: StepQuery, lang: Lang, answer: StepAnswer) -> Arc<RenderedStep> {
        let Some(entries) = &self.entries else {
            return Arc::new(RenderedStep::of(answer, lang, false));
        };
        AnswerLookup::Miss.emit(&self.telemetry);
        let hosts: usize = answer.groups.iter().map(|g| g.hosts.len()).sum();
        let most_bytes = if is_finished(answer.step.status) {
            self.most_bytes_per_finished
        } else {
            self.most_bytes_per_entry
        };
        let keep = hosts * HOST_JSON_BYTES <= most_bytes;
        let rendered = Arc::new(RenderedStep::of(answer, lang, keep));
        let key = (q, lang);
        // The first answer kept at a position stays: while apply places a batch, before it
        // moves the step's position, answers read at the same position may differ, and one
        // computed earlier but finished later must not replace a newer one.
        let first = entries
            .get(&key)
            .is_none_or(|kept| kept.position != rendered.position);
        if keep && first && rendered.weight() <= most_bytes {
            entries.insert(key, Arc::clone(&rendered));
        }
        rendered
    }
}
