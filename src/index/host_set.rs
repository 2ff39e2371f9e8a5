//! A group's hosts: a set of `bk_host_id`s in ascending order, in sorted runs ("chunks") of at
//! most [`CHUNK`] ids, so that a host costs about its 8 bytes (a B-tree set cost 20) while an
//! insert or removal moves at most one chunk's ids.
//!
//! Owns: the ids' order and their exact heap bytes (every change returns its delta, which the
//! index budget adds up). Must not: know about groups, steps or the budget.

/// Most ids in a chunk: 1 KiB, one allocation size class.
const CHUNK: usize = 128;
/// A chunk's header in the outer vector.
const CHUNK_HEADER: usize = std::mem::size_of::<Vec<i64>>();

#[derive(Debug, Default)]
pub struct HostSet {
    /// Non-empty, each sorted, and every id of a chunk below every id of the next.
    chunks: Vec<Vec<i64>>,
    len: usize,
}

impl HostSet {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ids, ascending.
    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        self.chunks.iter().flatten().copied()
    }

    /// Heap bytes held: what the deltas of `insert` and `remove` add up to.
    pub fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * CHUNK_HEADER
            + self.chunks.iter().map(|c| c.capacity() * 8).sum::<usize>()
    }

    /// The chunk that holds `host` or would: the first whose last id is not below it, else the
    /// last chunk.
    fn chunk_of(&self, host: i64) -> usize {
        let i = self.chunks.partition_point(|c| c[c.len() - 1] < host);
        i.min(self.chunks.len().saturating_sub(1))
    }

    /// Adds `host`; whether it was new, and the heap bytes this added.
    pub fn insert(&mut self, host: i64) -> (bool, i64) {
        let before = self.chunks.capacity() * CHUNK_HEADER;
        if self.chunks.is_empty() {
            self.chunks.push(vec![host]);
            self.len = 1;
            return (true, self.heap_bytes() as i64);
        }
        let i = self.chunk_of(host);
        let pos = match self.chunks[i].binary_search(&host) {
            Ok(_) => return (false, 0),
            Err(pos) => pos,
        };
        self.len += 1;
        let chunk_before = self.chunks[i].capacity() * 8;
        let mut after = 0;
        if self.chunks[i].len() < CHUNK {
            insert_at(&mut self.chunks[i], pos, host);
            after += self.chunks[i].capacity() * 8;
        } else if pos == CHUNK {
            // Past the end of a full chunk, so of the last one: ids mostly arrive ascending
            // (targets, loads): start a new chunk and leave this one full.
            self.chunks.push(vec![host]);
            after += chunk_before + self.chunks[i + 1].capacity() * 8;
        } else {
            // Split a full chunk in two halves that hold what they need (split_off gives the
            // right one its exact size) and take the new id in one of them.
            let mut right = self.chunks[i].split_off(CHUNK / 2);
            self.chunks[i].shrink_to_fit();
            if pos <= CHUNK / 2 {
                insert_at(&mut self.chunks[i], pos, host);
            } else {
                insert_at(&mut right, pos - CHUNK / 2, host);
            }
            after += self.chunks[i].capacity() * 8 + right.capacity() * 8;
            self.chunks.insert(i + 1, right);
        }
        let outer = (self.chunks.capacity() * CHUNK_HEADER) as i64 - before as i64;
        (true, outer + after as i64 - chunk_before as i64)
    }

    /// Takes `host` out; whether it was there, and the heap bytes this freed.
    pub fn remove(&mut self, host: i64) -> (bool, i64) {
        if self.chunks.is_empty() {
            return (false, 0);
        }
        let i = self.chunk_of(host);
        let Ok(pos) = self.chunks[i].binary_search(&host) else {
            return (false, 0);
        };
        self.len -= 1;
        // Only the chunk and its neighbours change: their bytes, and the outer vector's.
        let (lo, hi) = (i.saturating_sub(1), (i + 1).min(self.chunks.len() - 1));
        let bytes = |chunks: &[Vec<i64>], outer: usize| {
            (outer * CHUNK_HEADER + chunks.iter().map(|c| c.capacity() * 8).sum::<usize>()) as i64
        };
        let before = bytes(&self.chunks[lo..=hi], self.chunks.capacity());
        self.chunks[i].remove(pos);
        let mut gone = 0;
        if self.chunks[i].is_empty() {
            self.chunks.remove(i);
            gone = 1;
        } else {
            // A draining chunk gives back what it no longer uses (at least half of its
            // capacity stays in use).
            let chunk = &mut self.chunks[i];
            if chunk.capacity() >= 2 * chunk.len() + CHUNK / 8 {
                chunk.shrink_to(chunk.len() + CHUNK / 16);
            }
            if chunk.len() < CHUNK / 4 {
                // Merge a thin chunk into a neighbour that has room, so that removals in any
                // order keep chunks at least a quarter full on average.
                let fits = |j: usize| self.chunks[i].len() + self.chunks[j].len() <= CHUNK;
                let pair = if i + 1 < self.chunks.len() && fits(i + 1) {
                    Some(i)
                } else if i > 0 && fits(i - 1) {
                    Some(i - 1)
                } else {
                    None
                };
                if let Some(left) = pair {
                    let right = self.chunks.remove(left + 1);
                    self.chunks[left].extend(right);
                    gone = 1;
                }
            }
        }
        if self.chunks.is_empty() {
            self.chunks = Vec::new();
        }
        let after = bytes(&self.chunks[lo..hi + 1 - gone], self.chunks.capacity());
        (true, before - after)
    }
}

/// Inserts into a chunk that has room, growing it by an eighth of a chunk at most (Vec would
/// double it): chunks that fill in random order stay about nine tenths full, and none holds
/// more than [`CHUNK`] ids' room.
fn insert_at(chunk: &mut Vec<i64>, pos: usize, host: i64) {
    if chunk.len() == chunk.capacity() {
        chunk.reserve_exact(chunk.len().clamp(1, CHUNK / 8).min(CHUNK - chunk.len()));
    }
    chunk.insert(pos, host);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A deterministic id sequence (xorshift) so failures reproduce.
    fn ids(seed: u64, n: usize, range: i64) -> Vec<i64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % range as u64) as i64 - range / 2
            })
            .collect()
    }

    /// Every operation agrees with a B-tree set, and the byte deltas add up to the heap bytes.
    fn check_against_model(inserts: &[i64], removals: &[i64]) {
        let mut set = HostSet::default();
        let mut model = BTreeSet::new();
        let mut bytes = 0i64;
        for &h in inserts {
            let (new, added) = set.insert(h);
            assert_eq!(new, model.insert(h), "insert {h}");
            bytes += added;
            assert_eq!(bytes, set.heap_bytes() as i64);
        }
        assert!(set.iter().eq(model.iter().copied()));
        for &h in removals {
            let (was, freed) = set.remove(h);
            assert_eq!(was, model.remove(&h), "remove {h}");
            bytes -= freed;
            assert_eq!(bytes, set.heap_bytes() as i64);
            assert_eq!(set.len(), model.len());
        }
        assert!(set.iter().eq(model.iter().copied()));
        assert!(set
            .chunks
            .iter()
            .all(|c| !c.is_empty() && c.len() <= CHUNK && c.capacity() <= CHUNK));
    }

    #[test]
    fn random_order_matches_a_btree_set() {
        let inserts = ids(7, 20_000, 30_000);
        check_against_model(&inserts, &ids(11, 30_000, 30_000));
    }

    #[test]
    fn ascending_inserts_fill_chunks() {
        let inserts: Vec<i64> = (0..10_000).collect();
        check_against_model(&inserts, &[]);
        let mut set = HostSet::default();
        inserts.iter().for_each(|h| {
            set.insert(*h);
        });
        let per_host = set.heap_bytes() as f64 / set.len() as f64;
        assert!(per_host < 8.5, "{per_host} bytes per host");
    }

    #[test]
    fn emptied_set_holds_nothing() {
        let inserts = ids(3, 5_000, 1 << 40);
        let mut set = HostSet::default();
        inserts.iter().for_each(|h| {
            set.insert(*h);
        });
        inserts.iter().for_each(|h| {
            set.remove(*h);
        });
        assert!(set.is_empty());
        assert_eq!(set.heap_bytes(), 0);
        check_against_model(&inserts, &inserts);
    }

    #[test]
    fn removals_in_any_order_keep_chunks_dense() {
        let inserts: Vec<i64> = (0..50_000).collect();
        let removals: Vec<i64> = ids(5, 40_000, 50_000)
            .into_iter()
            .map(|h| h + 25_000)
            .collect();
        let mut set = HostSet::default();
        inserts.iter().for_each(|h| {
            set.insert(*h);
        });
        removals.iter().for_each(|h| {
            set.remove(*h);
        });
        let thin = set
            .chunks
            .windows(2)
            .filter(|w| w[0].len() + w[1].len() <= CHUNK / 4)
            .count();
        assert_eq!(thin, 0, "adjacent chunks both thin");
        check_against_model(&inserts, &removals);
    }
}
