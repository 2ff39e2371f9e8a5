//! One partition at this member, moving through cluster.md's handoff (partition p from A to B):
//!
//! 1. B reads p from its stored offset without claiming it until it lags the end by at most
//!    `ready_max_lag` (`CatchingUp`); A applies and serves p meanwhile.
//! 2. B claims p and stops applying it at Y (`Claiming`, held); A, seeing the claim, pauses p
//!    at Z (`HandingOff`, held).
//! 3. Both apply p up to X = max(Y, Z) and no further; A announces X once there (settled), and B
//!    serves p at X (`Serving`, held at X while A still lists p).
//! 4. A keeps serving p at X for a grace (members that have not heard B yet forward to A), then
//!    drops it.
//! 5. B applies p again once A's entry no longer lists it.
//!
//! A partition with no member serving it (its server died, the whole set restarted) is taken
//! over (`TakingOver`) and served only once applied up to the end the broker gives after the
//! takeover. Every wait is bounded by `handoff_timeout`; a claim given up, withdrawn or whose
//! claimant died unpauses the server. The decisions are pure: time, entries and ingest's
//! report come in a [`View`].

use super::{ClusterTiming, Entry, Limit, ReadReport, HANDOFF_GRACE, RETRY_CLAIM};
use std::collections::BTreeMap;
use std::time::Instant;

/// One partition at this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part {
    /// Ingest reads the partition anew (from the stored offset) when this changes.
    pub gen: u64,
    pub phase: Phase,
    /// When this member read it anew: ends reported before that are not its.
    pub since: Instant,
    /// A claim given up is not made again before this.
    pub retry_after: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    /// Step 1: reading to catch up, not claimed.
    CatchingUp,
    /// Steps 2–3 at the claimant: held at Y (`held`), then applying up to X (`target`).
    Claiming {
        from: String,
        since: Instant,
        held: Option<i64>,
        target: Option<i64>,
    },
    /// No member serves it: served once applied up to the end the broker lists after `since`.
    TakingOver {
        since: Instant,
        listed_end: Option<i64>,
    },
    /// Answering for it. `hold`: the member it came from still lists it, so it stays at X.
    Serving { hold: Option<(String, i64)> },
    /// Steps 2–4 at the server: paused at Z (`held`), applied up to X (`target`), and since
    /// `taken` the claimant serves it (the grace).
    HandingOff {
        to: String,
        since: Instant,
        held: Option<i64>,
        target: Option<i64>,
        taken: Option<Instant>,
    },
}

impl Phase {
    pub fn serves(&self) -> bool {
        matches!(self, Phase::Serving { .. } | Phase::HandingOff { .. })
    }

    /// How far ingest may apply the partition in this phase.
    pub fn limit(&self) -> Limit {
        match self {
            Phase::CatchingUp | Phase::TakingOver { .. } | Phase::Serving { hold: None } => {
                Limit::None
            }
            Phase::Serving { hold: Some((_, x)) } => Limit::At(*x),
            Phase::Claiming { target, .. } | Phase::HandingOff { target, .. } => {
                target.map_or(Limit::Here, Limit::At)
            }
        }
    }
}

impl Part {
    pub fn new(gen: u64) -> Part {
        Part {
            gen,
            phase: Phase::CatchingUp,
            since: Instant::now(),
            retry_after: None,
        }
    }

    fn with(self, phase: Phase) -> Option<Part> {
        Some(Part { phase, ..self })
    }
}

/// What one decision about one partition sees.
pub(super) struct View<'a> {
    pub me: &'a str,
    pub partition: i32,
    /// This member is the partition's owner (rendezvous over the live, non-leaving members).
    pub owns: bool,
    pub owner: Option<&'a str>,
    /// Live members' entries, this one excluded.
    pub live: &'a BTreeMap<String, Entry>,
    /// Ingest's report of the partition, when it answers to the current plan.
    pub report: Option<&'a ReadReport>,
    pub now: Instant,
    pub timing: &'a ClusterTiming,
}

impl View<'_> {
    /// Ingest's report for this reading of the partition.
    fn report_of(&self, part: &Part) -> Option<&ReadReport> {
        self.report.filter(|r| r.gen == part.gen)
    }

    /// Where ingest stopped, once everything it handed to apply is applied (under `Here`).
    fn held_at(&self, part: &Part) -> Option<i64> {
        let r = self.report_of(part)?;
        let applied = r.applied?;
        (r.dispatched.is_none_or(|d| d == applied)).then_some(applied)
    }

    /// True once ingest has applied the partition up to `x`.
    fn applied_to(&self, part: &Part, x: i64) -> bool {
        self.report_of(part)
            .and_then(|r| r.applied)
            .is_some_and(|a| a >= x)
    }

    /// Whether this member has caught up with the partition's end, as reported since it began
    /// reading it.
    fn caught_up(&self, part: &Part) -> bool {
        let Some(r) = self.report_of(part) else {
            return false;
        };
        match (r.applied, r.end) {
            (Some(applied), Some((end, at))) => {
                at > part.since && end - applied <= self.timing.ready_max_lag
            }
            _ => false,
        }
    }

    fn serving(&self, url: &str) -> bool {
        self.live
            .get(url)
            .is_some_and(|e| e.serving.contains(&self.partition))
    }

    /// A live member (not this one) serving the partition; one not handing it over first.
    fn server(&self) -> Option<&str> {
        let p = self.partition;
        let servers = || self.live.values().filter(move |e| e.serving.contains(&p));
        servers()
            .find(|e| !e.releasing.contains_key(&p))
            .or_else(|| servers().next())
            .map(|e| e.url.as_str())
    }

    fn expired(&self, since: Instant) -> bool {
        self.now.duration_since(since) > self.timing.handoff_timeout
    }
}

/// The partition's next state at this member (`None`: it leaves this member).
pub(super) fn step(part: Part, v: &View<'_>) -> Option<Part> {
    if v.owns {
        as_owner(part, v)
    } else {
        as_other(part, v)
    }
}

fn as_owner(part: Part, v: &View<'_>) -> Option<Part> {
    match part.phase.clone() {
        Phase::CatchingUp => {
            let may_claim = part.retry_after.is_none_or(|at| v.now >= at);
            if !may_claim || !v.caught_up(&part) {
                return Some(part);
            }
            let phase = match v.server() {
                Some(from) => Phase::Claiming {
                    from: from.to_owned(),
                    since: v.now,
                    held: None,
                    target: None,
                },
                None => Phase::TakingOver {
                    since: v.now,
                    listed_end: None,
                },
            };
            part.with(phase)
        }
        Phase::Claiming {
            from,
            since,
            held,
            target,
        } => {
            if !v.serving(&from) {
                return part.with(match v.server() {
                    // It went to another member meanwhile: claim it from that one.
                    Some(other) => Phase::Claiming {
                        from: other.to_owned(),
                        since: v.now,
                        held,
                        target: None,
                    },
                    // Its server died, or left without handing it over: no announced position.
                    None => {
                        tracing::info!(
                            partition = v.partition,
                            from,
                            "taking over a partition whose server went"
                        );
                        Phase::TakingOver {
                            since: v.now,
                            listed_end: None,
                        }
                    }
                });
            }
            if v.expired(since) {
                tracing::warn!(
                    partition = v.partition,
                    from,
                    "a claim timed out; trying again later"
                );
                return Some(Part {
                    phase: Phase::CatchingUp,
                    retry_after: Some(v.now + RETRY_CLAIM),
                    ..part
                });
            }
            let held = held.or_else(|| v.held_at(&part));
            let release = v.live[&from].releasing.get(&v.partition);
            let target = target.or_else(|| {
                release
                    .filter(|r| held.is_some() && r.to == v.me && r.settled)
                    .map(|r| r.at)
            });
            if let Some(x) = target {
                if v.applied_to(&part, x) {
                    tracing::info!(
                        partition = v.partition,
                        from,
                        at = x,
                        "serving a partition handed over"
                    );
                    return part.with(Phase::Serving {
                        hold: Some((from, x)),
                    });
                }
            }
            part.with(Phase::Claiming {
                from,
                since,
                held,
                target,
            })
        }
        Phase::TakingOver { since, listed_end } => {
            if let Some(from) = v.server() {
                // Someone serves it after all (it came back): it must hand it over.
                return part.with(Phase::Claiming {
                    from: from.to_owned(),
                    since: v.now,
                    held: None,
                    target: None,
                });
            }
            let fresh_end = v
                .report_of(&part)
                .and_then(|r| r.end)
                .filter(|(_, at)| *at >= since + v.timing.stats_interval)
                .map(|(end, _)| end);
            match (listed_end, fresh_end) {
                (Some(listed), Some(fetched)) if v.applied_to(&part, listed.max(fetched)) => {
                    tracing::info!(
                        partition = v.partition,
                        at = listed.max(fetched),
                        "serving a partition taken over"
                    );
                    part.with(Phase::Serving { hold: None })
                }
                _ => Some(part),
            }
        }
        Phase::Serving {
            hold: Some((from, _)),
        } => {
            if v.serving(&from) {
                Some(part)
            } else {
                part.with(Phase::Serving { hold: None })
            }
        }
        Phase::Serving { hold: None } => Some(part),
        // Ownership came back (the claimant died or left): serve on.
        Phase::HandingOff { .. } => part.with(Phase::Serving { hold: None }),
    }
}

fn as_other(part: Part, v: &View<'_>) -> Option<Part> {
    match part.phase.clone() {
        // Not served here: nothing to hand over.
        Phase::CatchingUp | Phase::Claiming { .. } | Phase::TakingOver { .. } => None,
        Phase::Serving { .. } => {
            let claim = v
                .owner
                .and_then(|o| v.live.get(o))
                .filter(|e| e.claims.contains_key(&v.partition));
            match claim {
                Some(claimant) => part.with(Phase::HandingOff {
                    to: claimant.url.clone(),
                    since: v.now,
                    held: None,
                    target: None,
                    taken: None,
                }),
                None => Some(part),
            }
        }
        Phase::HandingOff {
            to,
            since,
            held,
            target,
            taken,
        } => {
            let claimant = v.live.get(&to);
            let claim = claimant.and_then(|e| e.claims.get(&v.partition)).copied();
            let takes_it = claimant.is_some_and(|e| e.serving.contains(&v.partition));
            if takes_it {
                let taken = taken.unwrap_or(v.now);
                if v.now.duration_since(taken) >= HANDOFF_GRACE {
                    tracing::info!(partition = v.partition, to, "partition handed over");
                    return None;
                }
                return part.with(Phase::HandingOff {
                    to,
                    since,
                    held,
                    target,
                    taken: Some(taken),
                });
            }
            if claim.is_none() || v.expired(since) {
                tracing::info!(
                    partition = v.partition,
                    to,
                    "a handoff was given up; serving on"
                );
                return part.with(Phase::Serving { hold: None });
            }
            let held = held.or_else(|| v.held_at(&part));
            let target = target.or_else(|| Some(held?.max(claim?)));
            part.with(Phase::HandingOff {
                to,
                since,
                held,
                target,
                taken,
            })
        }
    }
}
