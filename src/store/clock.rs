//! The stored clock of a step or job: where the last event that changed it sits in the topic
//! (what a step's answers' ETag says), when its last event was applied (what retention counts
//! from), or, once it has expired, when that happened (a tombstone, so that late events for it
//! are dropped).
//!
//! A step has a clock from its first event until its tombstone is forgotten, which is after its
//! rows are deleted: apply relies on this to skip reading rows of steps without one.

/// Where an event sits in its source: a Kafka partition and offset, the same on every instance
/// that reads the same topic, and ordered (all of a step's events share a partition). Events from
/// no topic (files, tests) have partition -1 and a sequence number the store keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

impl Position {
    /// The partition of events that come from no topic.
    pub const LOCAL: i32 = -1;

    /// The weak ETag this position is (api.md, "Watching a step").
    pub fn etag(self) -> String {
        format!("W/\"{}-{}\"", self.partition, self.offset)
    }

    /// The position an ETag names; `None` for anything else.
    pub fn of_etag(etag: &str) -> Option<Position> {
        let inner = etag
            .trim()
            .strip_prefix("W/")?
            .strip_prefix('"')?
            .strip_suffix('"')?;
        let (partition, offset) = inner.rsplit_once('-')?;
        Some(Position {
            partition: partition.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    }

    /// True when this position is past `seen` in the same partition, or in another one (a
    /// position of another topic layout cannot be compared: anything is news).
    pub fn is_newer_than(self, seen: Position) -> bool {
        self.partition != seen.partition || self.offset > seen.offset
    }
}

/// A step's or job's clock, one per step or job that ever had an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Live {
        /// The broker time (ms) of the last event applied to it.
        last_event_ms: i64,
        /// The position of the last event that changed what its answers show.
        changed_at: Position,
    },
    /// It expired at this time (ms); its views are gone.
    Expired { at_ms: i64 },
}

impl Clock {
    pub fn encode(self) -> Vec<u8> {
        match self {
            Clock::Live {
                last_event_ms,
                changed_at,
            } => [
                &[0u8][..],
                &last_event_ms.to_be_bytes(),
                &changed_at.partition.to_be_bytes(),
                &changed_at.offset.to_be_bytes(),
            ]
            .concat(),
            Clock::Expired { at_ms } => [&[1u8][..], &at_ms.to_be_bytes()].concat(),
        }
    }

    pub fn decode(bytes: &[u8]) -> Option<Clock> {
        let i64_at = |at: usize| Some(i64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        match (bytes.first()?, bytes.len()) {
            (0, 21) => Some(Clock::Live {
                last_event_ms: i64_at(1)?,
                changed_at: Position {
                    partition: i32::from_be_bytes(bytes[9..13].try_into().ok()?),
                    offset: i64_at(13)?,
                },
            }),
            (1, 9) => Some(Clock::Expired { at_ms: i64_at(1)? }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let changed_at = Position {
            partition: 3,
            offset: i64::MAX,
        };
        for clock in [
            Clock::Live {
                last_event_ms: -5,
                changed_at,
            },
            Clock::Expired { at_ms: i64::MAX },
        ] {
            assert_eq!(Clock::decode(&clock.encode()), Some(clock));
        }
        assert_eq!(Clock::decode(&[0; 8]), None);
        assert_eq!(Clock::decode(&[2; 9]), None);
    }

    #[test]
    fn etags_round_trip_and_order_within_a_partition() {
        let p = Position {
            partition: -1,
            offset: 42,
        };
        assert_eq!(p.etag(), "W/\"-1-42\"");
        assert_eq!(Position::of_etag(&p.etag()), Some(p));
        assert_eq!(Position::of_etag("\"-1-42\""), None, "weak only");
        assert_eq!(Position::of_etag("W/\"x\""), None);
        let later = Position { offset: 43, ..p };
        assert!(later.is_newer_than(p) && !p.is_newer_than(later) && !p.is_newer_than(p));
        assert!(Position {
            partition: 2,
            offset: 1
        }
        .is_newer_than(p));
    }
}
