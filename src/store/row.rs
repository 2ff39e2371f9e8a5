//! The stored form of one host row (one host, for one step, retry and batch), and its compact
//! binary encoding. Status and tag come first so that an index rebuild can read them alone.

use super::keys::RowKey;
use crate::events::HostInfo;
use std::borrow::Borrow;
use std::sync::Arc;

/// One identity field (ip, agent, cloud …) with the rank of the event that set it, so that merging
/// is independent of arrival order: 0 never set, 1 set by `step_targets`, `version + 2` set by a
/// `host_result` of that version. A higher rank wins; equal ranks keep the larger value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranked<T> {
    pub value: Option<T>,
    pub rank: u64,
}

impl<T: Ord> Ranked<T> {
    /// Offers `value` at `rank`; absent values offer nothing ("absent = keep what is known").
    /// Copies the value only when it wins.
    fn offer<V>(&mut self, value: Option<&V>, rank: u64) -> bool
    where
        V: ?Sized + Ord + ToOwned<Owned = T>,
        T: Borrow<V>,
    {
        let Some(v) = value else { return false };
        let current = self.value.as_ref().map(|c| c.borrow());
        let wins = rank > self.rank || (rank == self.rank && current < Some(v));
        if wins {
            self.value = Some(v.to_owned());
            self.rank = rank;
        }
        wins
    }
}

pub const RANK_TARGETS: u64 = 1;

pub fn result_rank(version: i64) -> u64 {
    version as u64 + 2
}

impl Ranked<&str> {
    fn to_owned_field(&self) -> Ranked<String> {
        Ranked {
            value: self.value.map(str::to_owned),
            rank: self.rank,
        }
    }
}

/// Who and where the host is. `S` is `String` in a row being changed, `&str` in a row read in
/// place ([`RowView`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity<S = String> {
    pub ip: Ranked<S>,
    pub ipv6: Ranked<S>,
    pub bk_agent_id: Ranked<S>,
    pub bk_cloud_id: Ranked<i64>,
    pub bk_cloud_name: Ranked<S>,
}

impl Identity {
    /// Merges what `info` carries at `rank`; true when anything changed.
    pub fn merge(&mut self, info: &HostInfo<'_>, rank: u64) -> bool {
        let a = self.ip.offer(info.ip, rank);
        let b = self.ipv6.offer(info.ipv6, rank);
        let c = self.bk_agent_id.offer(info.bk_agent_id, rank);
        let d = self.bk_cloud_id.offer(info.bk_cloud_id.as_ref(), rank);
        let e = self.bk_cloud_name.offer(info.bk_cloud_name, rank);
        a | b | c | d | e
    }
}

/// Host status of a row that only `step_targets` has named.
pub const STATUS_WAITING: i32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow<S = String> {
    pub status: i32,
    pub tag: S,
    /// Version of the `host_result` this row holds; `None` while only targets named the host.
    pub version: Option<i64>,
    pub exit_code: Option<i32>,
    /// GSE's error code for the host task (0: none).
    pub error_code: i32,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub total_time: Option<i64>,
    /// The earlier retry whose script output this row shows (a host that a "retry failed" copied
    /// with its old result); `None`: its own retry's. Never the row's own `execute_count`.
    pub log_execute_count: Option<i32>,
    pub identity: Identity<S>,
}

/// A row read in place from its encoded bytes (no allocation): what answers render.
pub type RowView<'a> = HostRow<&'a str>;

impl<S> HostRow<S> {
    /// The row (the host's, in the same batch) whose log chunks are this row's output, `key`
    /// being this row's.
    pub fn output_key(&self, key: RowKey) -> RowKey {
        RowKey {
            execute_count: self.log_execute_count.unwrap_or(key.execute_count),
            ..key
        }
    }
}

/// An encoded row, checked once, shared by answers and hot rows; read through [`StoredRow::view`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow(Arc<[u8]>);

impl StoredRow {
    /// `None` when `bytes` is not an encoded row.
    pub fn new(bytes: &[u8]) -> Option<StoredRow> {
        RowView::decode_view(bytes)?;
        Some(StoredRow(Arc::from(bytes)))
    }

    /// Bytes that `HostRow::encode` wrote (so not checked again).
    pub fn of_encoding(encoded: &[u8]) -> StoredRow {
        debug_assert!(RowView::decode_view(encoded).is_some());
        StoredRow(Arc::from(encoded))
    }

    pub fn view(&self) -> RowView<'_> {
        RowView::decode_view(&self.0).expect("checked when the StoredRow was made")
    }

    pub fn encoded_len(&self) -> usize {
        self.0.len()
    }
}

impl HostRow {
    pub fn waiting() -> HostRow {
        HostRow {
            status: STATUS_WAITING,
            tag: String::new(),
            version: None,
            exit_code: None,
            error_code: 0,
            start_time: None,
            end_time: None,
            total_time: None,
            log_execute_count: None,
            identity: Identity::default(),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, zigzag(self.status.into()));
        put_bytes(out, self.tag.as_bytes());
        // The optional integers: one byte saying which are present, then the present ones.
        let id = &self.identity;
        let optionals = [
            self.version,
            self.exit_code.map(i64::from),
            self.start_time,
            self.end_time,
            self.total_time,
            id.bk_cloud_id.value,
            (self.error_code != 0).then_some(i64::from(self.error_code)),
            // The last bit: rows written before format 3 never set it (format.rs).
            self.log_execute_count.map(i64::from),
        ];
        let present = optionals
            .iter()
            .enumerate()
            .fold(0u8, |bits, (i, v)| bits | (u8::from(v.is_some()) << i));
        out.push(present);
        for v in optionals.into_iter().flatten() {
            put_varint(out, zigzag(v));
        }
        put_ranked_str(out, &id.ip);
        put_ranked_str(out, &id.ipv6);
        put_ranked_str(out, &id.bk_agent_id);
        put_varint(out, id.bk_cloud_id.rank);
        put_ranked_str(out, &id.bk_cloud_name);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode(&mut out);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<HostRow> {
        RowView::decode_view(bytes).map(|v| v.to_owned_row())
    }
}

impl<'a> RowView<'a> {
    /// The one decoder of the row encoding.
    pub fn decode_view(bytes: &'a [u8]) -> Option<RowView<'a>> {
        let mut r = Reader(bytes);
        let (status, tag) = r.head()?;
        let present = r.take(1)?[0];
        let mut optionals = [None; 8];
        for (i, slot) in optionals.iter_mut().enumerate() {
            if present & (1 << i) != 0 {
                *slot = Some(unzigzag(r.varint()?));
            }
        }
        let [version, exit_code, start, end, total, bk_cloud_id, error_code, log_execute_count] =
            optionals;
        let row = HostRow {
            status,
            tag,
            version,
            exit_code: exit_code.map(|v| v as i32),
            error_code: error_code.map_or(0, |v| v as i32),
            start_time: start,
            end_time: end,
            total_time: total,
            log_execute_count: log_execute_count.map(|v| v as i32),
            identity: Identity {
                ip: r.ranked_str()?,
                ipv6: r.ranked_str()?,
                bk_agent_id: r.ranked_str()?,
                bk_cloud_id: Ranked {
                    value: bk_cloud_id,
                    rank: r.varint()?,
                },
                bk_cloud_name: r.ranked_str()?,
            },
        };
        r.0.is_empty().then_some(row)
    }

    pub fn to_owned_row(&self) -> HostRow {
        let id = &self.identity;
        HostRow {
            status: self.status,
            tag: self.tag.to_owned(),
            version: self.version,
            exit_code: self.exit_code,
            error_code: self.error_code,
            start_time: self.start_time,
            end_time: self.end_time,
            total_time: self.total_time,
            log_execute_count: self.log_execute_count,
            identity: Identity {
                ip: id.ip.to_owned_field(),
                ipv6: id.ipv6.to_owned_field(),
                bk_agent_id: id.bk_agent_id.to_owned_field(),
                bk_cloud_id: id.bk_cloud_id.clone(),
                bk_cloud_name: id.bk_cloud_name.to_owned_field(),
            },
        }
    }
}

/// Reads only status and tag of an encoded row (index rebuild).
pub fn decode_head(bytes: &[u8]) -> Option<(i32, &str)> {
    Reader(bytes).head()
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_ranked_str(out: &mut Vec<u8>, f: &Ranked<String>) {
    put_varint(out, f.rank);
    match &f.value {
        None => put_varint(out, 0),
        Some(s) => {
            put_varint(out, s.len() as u64 + 1);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for (i, &b) in self.0.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.0 = &self.0[i + 1..];
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn head(&mut self) -> Option<(i32, &'a str)> {
        let status = unzigzag(self.varint()?) as i32;
        let len = self.varint()? as usize;
        let tag = std::str::from_utf8(self.take(len)?).ok()?;
        Some((status, tag))
    }

    fn ranked_str(&mut self) -> Option<Ranked<&'a str>> {
        let rank = self.varint()?;
        let len = self.varint()? as usize;
        let value = if len == 0 {
            None
        } else {
            Some(std::str::from_utf8(self.take(len - 1)?).ok()?)
        };
        Some(Ranked { value, rank })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_extremes() {
        let mut row = HostRow::waiting();
        row.status = -3;
        row.tag = "标签".into();
        row.version = Some(i64::MAX);
        row.exit_code = Some(i32::MIN);
        row.error_code = -7;
        row.start_time = Some(i64::MIN);
        row.total_time = Some(0);
        row.log_execute_count = Some(i32::MAX);
        row.identity.ip = Ranked {
            value: Some("10.0.0.1".into()),
            rank: u64::MAX,
        };
        row.identity.bk_cloud_id = Ranked {
            value: Some(-1),
            rank: 1,
        };
        row.identity.bk_cloud_name = Ranked {
            value: Some(String::new()),
            rank: 3,
        };
        let bytes = row.to_bytes();
        assert_eq!(HostRow::decode(&bytes), Some(row));
        assert_eq!(decode_head(&bytes), Some((-3, "标签")));
        assert_eq!(HostRow::decode(&bytes[..bytes.len() - 1]), None);
    }
}
