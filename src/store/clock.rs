//! The stored form of a step's retention clock: when its last event was applied, or, once it has
//! expired, when that happened (a tombstone, so that late events for it are dropped).

/// A step's retention clock, one per step that ever had an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepClock {
    /// The broker time (ms) of the last event applied to the step.
    Live { last_event_ms: i64 },
    /// The step expired at this time (ms); its views are gone.
    Expired { at_ms: i64 },
}

impl StepClock {
    pub fn encode(self) -> [u8; 9] {
        let (tag, ms) = match self {
            StepClock::Live { last_event_ms } => (0, last_event_ms),
            StepClock::Expired { at_ms } => (1, at_ms),
        };
        let mut out = [tag; 9];
        out[1..].copy_from_slice(&ms.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<StepClock> {
        let ms = i64::from_be_bytes(bytes.get(1..9)?.try_into().ok()?);
        match (bytes.len(), bytes[0]) {
            (9, 0) => Some(StepClock::Live { last_event_ms: ms }),
            (9, 1) => Some(StepClock::Expired { at_ms: ms }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for clock in [
            StepClock::Live { last_event_ms: -5 },
            StepClock::Expired { at_ms: i64::MAX },
        ] {
            assert_eq!(StepClock::decode(&clock.encode()), Some(clock));
        }
        assert_eq!(StepClock::decode(&[0; 8]), None);
        assert_eq!(StepClock::decode(&[2; 9]), None);
    }
}
