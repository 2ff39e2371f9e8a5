//! Who owns what: a key's partition by the producers' partitioner (librdkafka's own functions),
//! and a partition's owner by rendezvous hashing over the live members' URLs.

use rdkafka::bindings::{rd_kafka_msg_partitioner_consistent, rd_kafka_msg_partitioner_murmur2};
use serde::Deserialize;

/// The producers' partitioner (events.md, "Partitioning").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioner {
    /// Kafka's default for keyed messages (the Java client's; librdkafka's `murmur2_random`).
    #[default]
    Murmur2,
    /// librdkafka's `consistent`: CRC32 of the key.
    Consistent,
}

impl Partitioner {
    pub fn parse(s: &str) -> Option<Partitioner> {
        match s {
            "murmur2" => Some(Partitioner::Murmur2),
            "consistent" => Some(Partitioner::Consistent),
            _ => None,
        }
    }

    /// The partition of a message keyed by `id` in decimal, among `partitions`.
    pub fn partition(self, id: i64, partitions: i32) -> i32 {
        let key = id.to_string();
        let function = match self {
            Partitioner::Murmur2 => rd_kafka_msg_partitioner_murmur2,
            Partitioner::Consistent => rd_kafka_msg_partitioner_consistent,
        };
        // SAFETY: both functions read only `key` (and never the topic handle or opaques, which
        // may be null: rdkafka_msg.c).
        unsafe {
            function(
                std::ptr::null(),
                key.as_ptr().cast(),
                key.len(),
                partitions,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        }
    }
}

/// The owner of `partition` among `members` (URLs): the highest rendezvous hash. Every instance
/// computes the same from the same members; a member joining or leaving moves only its share.
pub fn owner<'a>(partition: i32, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    members
        .into_iter()
        .max_by_key(|url| (weight(partition, url), *url))
}

/// FNV-1a over the URL and the partition, then a 64-bit finalizer (splitmix64): stable across
/// versions and machines, unlike the standard library's hasher.
fn weight(partition: i32, url: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes().chain(partition.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_as_kafka_and_librdkafka_producers_do() {
        // (murmur2(key) & 0x7fffffff) % n, with Kafka's Java murmur2 (Utils.murmur2), computed
        // independently: "42" → 0x18e59c6c, "101" → 0x880346c2, "179600684401" → 0x99a12986.
        assert_eq!(Partitioner::Murmur2.partition(42, 8), 4);
        assert_eq!(Partitioner::Murmur2.partition(101, 8), 2);
        assert_eq!(Partitioner::Murmur2.partition(179_600_684_401, 12), 10);
        for id in [1i64, 101, 179_600_684_401] {
            for n in [1, 4, 8, 12] {
                let p = Partitioner::Murmur2.partition(id, n);
                assert!((0..n).contains(&p));
                assert!((0..n).contains(&Partitioner::Consistent.partition(id, n)));
            }
        }
    }

    #[test]
    fn a_member_joining_moves_only_its_share() {
        let three = ["http://a:1", "http://b:1", "http://c:1"];
        let four = ["http://a:1", "http://b:1", "http://c:1", "http://d:1"];
        let (mut moved, mut to_d) = (0, 0);
        for p in 0..64 {
            let before = owner(p, three).unwrap();
            let after = owner(p, four).unwrap();
            if before != after {
                moved += 1;
                to_d += usize::from(after == "http://d:1");
            }
        }
        assert_eq!(
            moved, to_d,
            "only partitions that go to the new member move"
        );
        assert!((8..=24).contains(&moved), "about a quarter moves: {moved}");
        assert_eq!(owner(3, Vec::<&str>::new()), None);
    }
}
