//! Substring searches over a retry's rows and script output (`search_ip`, `keyword`), read from
//! one RocksDB snapshot, checking every few hundred rows whether the caller still wants them. A
//! row's output is that of the retry it shows (`log_execute_count`), which may be an earlier one.

use super::{Cancel, GroupAnswer, HostAnswer, QueryError, StepQuery, CHECK_EVERY};
use crate::index::GroupKey;
use crate::store::keys::RowKey;
use crate::store::row::StoredRow;
use crate::store::StoreSnapshot;
use std::collections::{btree_map, BTreeMap, BTreeSet, HashSet};

/// Rows scanned from `snapshot` and filtered by `search_ip` / `keyword`; the groups of `known`
/// stay in the answer even when the filters empty them.
pub(super) fn by_scan(
    snapshot: &StoreSnapshot<'_>,
    q: &StepQuery,
    execute_count: i32,
    known: BTreeSet<GroupKey>,
    cancel: &Cancel,
) -> Result<Vec<GroupAnswer>, QueryError> {
    let step = q.step_instance_id;
    // Per retry whose output rows show, the rows of it whose output has the keyword: each such
    // retry's chunks are searched once, when a row first needs them.
    let mut keyword_hits: BTreeMap<i32, HashSet<RowKey>> = BTreeMap::new();
    let mut output_has_keyword = |keyword: &str, output: RowKey| -> Result<bool, QueryError> {
        let hits = match keyword_hits.entry(output.execute_count) {
            btree_map::Entry::Occupied(hits) => hits.into_mut(),
            btree_map::Entry::Vacant(slot) => slot.insert(hosts_with_output(
                snapshot,
                step,
                output.execute_count,
                q.batch,
                keyword,
                cancel,
            )?),
        };
        Ok(hits.contains(&output))
    };
    let ip_needle = q.search_ip.as_deref();
    let ipv6_needle = ip_needle.map(str::to_lowercase);
    let mut groups: BTreeMap<GroupKey, Vec<(RowKey, StoredRow)>> =
        known.into_iter().map(|k| (k, Vec::new())).collect();
    let mut seen = 0usize;
    // Why the scan stopped early, when it did.
    let mut stopped: Option<QueryError> = None;
    let scanned = snapshot.for_each_row_in(step, execute_count, q.batch, |key, row| {
        seen += 1;
        if seen.is_multiple_of(CHECK_EVERY) && cancel.check().is_err() {
            stopped = Some(QueryError::Cancelled);
            anyhow::bail!("cancelled");
        }
        let view = row.view();
        if let Some(needle) = ip_needle {
            let ip_hit = view.identity.ip.value.is_some_and(|ip| ip.contains(needle));
            let ipv6_hit = view.identity.ipv6.value.is_some_and(|v6| {
                let needle = ipv6_needle.as_deref().expect("set with ip_needle");
                v6.to_lowercase().contains(needle)
            });
            if !ip_hit && !ipv6_hit {
                return Ok(());
            }
        }
        if let Some(keyword) = &q.keyword {
            match output_has_keyword(keyword, view.output_key(key)) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => {
                    stopped = Some(e);
                    anyhow::bail!("keyword search stopped");
                }
            }
        }
        let group = GroupKey {
            status: view.status,
            tag: view.tag.into(),
        };
        groups.entry(group).or_default().push((key, row));
        Ok(())
    });
    if let Some(e) = stopped {
        return Err(e);
    }
    scanned?;
    let cap = q.cap();
    Ok(groups
        .into_iter()
        .map(|(group, mut hosts)| {
            let host_size = hosts.len();
            if q.selects(&group) {
                hosts.sort_by_key(|(k, _)| (k.host, k.batch));
                hosts.truncate(cap);
            } else {
                hosts.clear();
            }
            GroupAnswer {
                status: group.status,
                tag: group.tag.to_string(),
                host_size,
                hosts: hosts
                    .into_iter()
                    .map(|(k, row)| HostAnswer {
                        bk_host_id: k.host,
                        row,
                    })
                    .collect(),
            }
        })
        .collect())
}

/// The rows of one retry whose captured output contains `keyword`, case-insensitively. Each
/// row's chunks are read in offset order and searched as they come, keeping only the needle's
/// length of what came before, so that a match may span chunk boundaries; a gap in the offsets
/// breaks a match.
fn hosts_with_output(
    snapshot: &StoreSnapshot<'_>,
    step: i64,
    execute_count: i32,
    batch: Option<i32>,
    keyword: &str,
    cancel: &Cancel,
) -> Result<HashSet<RowKey>, QueryError> {
    let mut hits = HashSet::new();
    let mut finder = Finder::new(keyword);
    let mut current: Option<RowKey> = None;
    let mut end = 0i64;
    let mut seen = 0usize;
    let mut cancelled = false;
    let scanned =
        snapshot.for_each_log_chunk(step, execute_count, batch, |row, offset, content| {
            seen += 1;
            if seen.is_multiple_of(CHECK_EVERY) && cancel.check().is_err() {
                cancelled = true;
                anyhow::bail!("cancelled");
            }
            if current != Some(row) {
                current = Some(row);
                finder.restart();
                end = offset;
            }
            if hits.contains(&row) {
                return Ok(());
            }
            if offset > end {
                // A gap: what is before it cannot join what is after it.
                finder.restart();
                end = offset;
            }
            // Chunks may overlap (a producer resent part of the output): skip what is known.
            let skip = usize::try_from(end - offset).unwrap_or(usize::MAX);
            if skip < content.len() {
                if finder.feed(&content[skip..]) {
                    hits.insert(row);
                }
                end = offset.saturating_add(content.len() as i64);
            }
            Ok(())
        });
    if cancelled {
        return Err(QueryError::Cancelled);
    }
    scanned?;
    Ok(hits)
}

/// Case-insensitive search for a needle in text that arrives in pieces: each piece is lowered
/// and searched with the end of the one before (one needle's length less a byte), and no more
/// is kept.
struct Finder {
    needle: String,
    /// The lowered end of what came before.
    window: String,
    /// An unfinished UTF-8 sequence at the end of the last piece.
    pending: Vec<u8>,
}

impl Finder {
    fn new(needle: &str) -> Finder {
        Finder {
            needle: needle.to_lowercase(),
            window: String::new(),
            pending: Vec::new(),
        }
    }

    fn restart(&mut self) {
        self.window.clear();
        self.pending.clear();
    }

    /// Reads one more piece; true once the needle was found in what was read since the last
    /// restart.
    fn feed(&mut self, piece: &[u8]) -> bool {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(piece);
        // Keep a sequence cut at the end for the next piece; anything else invalid is read as
        // U+FFFD, which no needle contains.
        let complete = match std::str::from_utf8(&bytes) {
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            _ => bytes.len(),
        };
        self.pending = bytes.split_off(complete);
        self.window
            .push_str(&String::from_utf8_lossy(&bytes).to_lowercase());
        if self.window.contains(&self.needle) {
            return true;
        }
        let keep = self.needle.len().saturating_sub(1);
        if self.window.len() > keep {
            let mut start = self.window.len() - keep;
            while !self.window.is_char_boundary(start) {
                start -= 1;
            }
            self.window.drain(..start);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finds(needle: &str, pieces: &[&[u8]]) -> bool {
        let mut f = Finder::new(needle);
        pieces.iter().any(|p| f.feed(p))
    }

    #[test]
    fn finds_across_pieces_case_insensitively_keeping_little() {
        assert!(finds("error", &[b"all fine, then ER", b"ROR: disk"]));
        assert!(finds("ÉTÉ", &["l'é".as_bytes(), "té".as_bytes()]));
        assert!(!finds("error", &[b"err", b"xor"]));
        // A multi-byte character cut between pieces still matches.
        let text = "日志错误";
        let bytes = text.as_bytes();
        assert!(finds("志错", &[&bytes[..4], &bytes[4..]]));
        let mut f = Finder::new("needle");
        f.feed(&vec![b'x'; 1 << 20]);
        assert!(f.window.len() < 6, "keeps {} bytes", f.window.len());
        f.restart();
        assert!(!f.feed(b"dle"), "a restart forgets what came before");
    }
}
