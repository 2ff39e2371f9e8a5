//! A key's partition as the producers compute it (events.md, "Partitioning"): librdkafka's own
//! functions, not a re-derivation.

use rdkafka::bindings::{rd_kafka_msg_partitioner_consistent, rd_kafka_msg_partitioner_murmur2};

/// The producers' partitioner (events.md, "Partitioning").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Partitioner {
    /// Kafka's default for keyed messages (the Java client's; librdkafka's `murmur2_random`).
    #[default]
    Murmur2,
    /// librdkafka's `consistent`: CRC32 of the key.
    Consistent,
}

impl Partitioner {
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
}
