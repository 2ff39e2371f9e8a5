//! Shards (cluster.md): instances of one shard set divide the topic's partitions through a
//! compacted members topic; there is no coordinator of our own and no consumer-group protocol.
//! Every instance computes the owner of each partition from the members it has heard from in the
//! last 3 s, by rendezvous hashing. Any instance answers any query: its own partitions' from its
//! views, the others' by forwarding to the member serving them.
//!
//! No step ever goes backwards: a partition moves by the handoff of cluster.md, decided here one
//! partition at a time (`handoff`), and ingest reads what [`Cluster::plan`] says, up to where it
//! says. A member that stops hearing its own entry is fenced: it answers 503 for everything and
//! serves nothing until it has taken its partitions again.
//!
//! Owns: membership, ownership, handoff, fencing, and where a query goes. Must not: read or
//! write views (ingest follows the plan; `http` forwards what [`Cluster::route`] says).
//!
//! - [`owners`]: the producers' partitioner and rendezvous hashing.
//! - [`handoff`]: one partition's phase at this member, and the next one.
//! - [`members`]: the members topic: publishing this instance's entry, hearing the others'.
//! - [`secret`]: the members' secret: signed records and signed member-to-member requests.
//! - [`settings`]: the `[cluster]` section.

mod handoff;
pub mod members;
pub mod owners;
pub mod secret;
pub mod settings;

pub use settings::ClusterSettings;

use crate::kafka::Partitioner;
use handoff::{Part, Phase, View};
use parking_lot::Mutex;
use secret::MembersSecret;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A member not heard from for this long is dead.
pub const MEMBER_TTL: Duration = Duration::from_secs(3);

/// A member that has not heard its own entry for this long answers for nothing (cluster.md,
/// "Fencing"): the others are about to declare it dead.
pub const FENCE_AFTER: Duration = Duration::from_secs(2);

/// How long a member keeps serving a partition after its new owner announced it: long enough
/// for every other member to have heard the announcement (they may still forward to the old
/// owner meanwhile).
const HANDOFF_GRACE: Duration = Duration::from_millis(1500);

/// How long a starting member listens before it claims partitions: long enough to hear every
/// live member (each writes every second), so that it takes its share, not everything.
const LISTEN_FIRST: Duration = Duration::from_millis(1200);

/// A withdrawn claim is made again after this long at the earliest.
const RETRY_CLAIM: Duration = Duration::from_secs(1);

/// What a member publishes about itself (the value of its entry in the members topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub url: String,
    pub cluster: String,
    /// Random per process start; with `seq`, old entries cannot be replayed.
    pub incarnation: String,
    pub seq: u64,
    pub at_ms: i64,
    /// Shutting down (it serves until the new owners do), or fenced (it serves nothing): either
    /// way it owns nothing.
    #[serde(default)]
    pub leaving: bool,
    /// The partitions it answers for.
    pub serving: BTreeSet<i32>,
    /// Partitions it claims from the member serving them, each held at this position (Y).
    #[serde(default)]
    pub claims: BTreeMap<i32, i64>,
    /// Partitions it is handing over: to whom, and where it stands.
    #[serde(default)]
    pub releasing: BTreeMap<i32, Release>,
    /// Per partition it reads: the next offset applied and the end offset last seen.
    #[serde(default)]
    pub progress: BTreeMap<i32, Progress>,
}

/// A partition being handed over: the claimant it goes to, the position the releasing member
/// has applied it to, and whether that is where both meet (X = max(Y, Z)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub to: String,
    pub at: i64,
    pub settled: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub next: i64,
    pub end: i64,
}

/// Where a query about a partition goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Local,
    Forward(String),
    /// No live member serves the partition right now (it is moving), or this member is fenced:
    /// 503, try again.
    Moving,
}

/// How far ingest may apply a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Everything.
    None,
    /// Nothing more than what it has handed to apply already (its position when it saw this).
    Here,
    /// Messages below this offset.
    At(i64),
}

/// What ingest should read of one partition: since which decision (a new `gen` means "start
/// again from the stored offset"), and how far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    pub gen: u64,
    pub limit: Limit,
}

/// Where ingest stands on one partition it reads, as of a plan version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadReport {
    pub gen: u64,
    /// The next offset applied (stored with the views).
    pub applied: Option<i64>,
    /// The next offset after everything handed to apply.
    pub dispatched: Option<i64>,
    /// The partition's end, as a fetch response reported it, and when that report came.
    pub end: Option<(i64, Instant)>,
}

/// Timing of the handoff (cluster.md): set once per process.
#[derive(Debug, Clone, Copy)]
pub struct ClusterTiming {
    /// A partition is claimed once this instance lags its end by at most this many messages.
    pub ready_max_lag: i64,
    /// Longest any step of a handoff waits before it is given up.
    pub handoff_timeout: Duration,
    /// Entries written longer ago than this by the receiver's clock are ignored.
    pub max_skew_ms: i64,
    /// How often ingest's partition ends are refreshed (a fresh end is one reported after a
    /// takeover by at least this much).
    pub stats_interval: Duration,
}

pub struct Cluster {
    pub name: String,
    /// This instance's URL, its key in the members topic.
    pub me: String,
    pub partitioner: Partitioner,
    pub secret: MembersSecret,
    /// This process's incarnation (a random id).
    pub incarnation: String,
    timing: ClusterTiming,
    started: Instant,
    state: Mutex<State>,
    /// Bumped whenever this member stops serving a partition: held requests and streams wake,
    /// look again and end if their step's partition is no longer served here.
    dropped: tokio::sync::watch::Sender<u64>,
}

struct State {
    /// This instance is shutting down cleanly.
    leaving: bool,
    /// The topic's partition count (0 until ingest has read it).
    partitions: i32,
    /// Other members' latest entries, and when each was heard.
    members: HashMap<String, (Entry, Instant)>,
    /// The newest (incarnation, seq) heard per member, kept after it leaves: old entries are not
    /// heard again.
    newest: HashMap<String, (String, u64)>,
    /// When this member last heard its own entry back (its start, before the first).
    heard_self: Instant,
    fenced: bool,
    parts: BTreeMap<i32, Part>,
    /// Bumped at every change of what ingest should read; ingest echoes it in its reports.
    plan_version: u64,
    reports: BTreeMap<i32, ReadReport>,
    /// The plan version ingest's reports answer to.
    reported_version: u64,
    next_gen: u64,
    seq: u64,
}

impl Cluster {
    pub fn new(
        name: &str,
        me: &str,
        partitioner: Partitioner,
        secret: MembersSecret,
        timing: ClusterTiming,
    ) -> Cluster {
        Cluster {
            name: name.to_owned(),
            me: me.to_owned(),
            partitioner,
            secret,
            incarnation: hex::encode(rand::random::<[u8; 8]>()),
            timing,
            started: Instant::now(),
            state: Mutex::new(State {
                leaving: false,
                partitions: 0,
                members: HashMap::new(),
                newest: HashMap::new(),
                heard_self: Instant::now(),
                fenced: false,
                parts: BTreeMap::new(),
                plan_version: 0,
                reports: BTreeMap::new(),
                reported_version: 0,
                next_gen: 1,
                seq: 0,
            }),
            dropped: tokio::sync::watch::channel(0).0,
        }
    }

    /// The partition of a step (or job) id; `None` until the partition count is known.
    pub fn partition_of(&self, id: i64) -> Option<i32> {
        let partitions = self.state.lock().partitions;
        (partitions > 0).then(|| self.partitioner.partition(id, partitions))
    }

    /// The topic's partition count (0 until ingest has read it).
    pub fn partitions(&self) -> i32 {
        self.state.lock().partitions
    }

    /// Ingest tells the topic's partition count.
    pub fn set_partitions(&self, partitions: i32) {
        self.state.lock().partitions = partitions;
    }

    /// What ingest should read now, with the plan's version (to echo in its reports).
    pub fn plan(&self) -> (u64, BTreeMap<i32, ReadPlan>) {
        let state = self.state.lock();
        let plan = state
            .parts
            .iter()
            .map(|(p, part)| {
                let plan = ReadPlan {
                    gen: part.gen,
                    limit: part.phase.limit(),
                };
                (*p, plan)
            })
            .collect();
        (state.plan_version, plan)
    }

    /// Ingest tells where the partitions it reads stand, having followed plan `version`.
    pub fn report(&self, version: u64, reports: BTreeMap<i32, ReadReport>) {
        let mut state = self.state.lock();
        state.reports = reports;
        state.reported_version = version;
    }

    /// Whether this member answers for `partition` now.
    pub fn serves(&self, partition: i32) -> bool {
        let state = self.state.lock();
        !state.fenced
            && state
                .parts
                .get(&partition)
                .is_some_and(|p| p.phase.serves())
    }

    /// Whether steps of `partition` may expire here: it is served here and read to within
    /// `ready_max_lag` of its end (retention judges steps by their last event; one still queued
    /// would be missed).
    pub fn caught_up(&self, partition: i32) -> bool {
        let state = self.state.lock();
        let serving = state
            .parts
            .get(&partition)
            .is_some_and(|p| p.phase.serves());
        let lag_ok = state.reports.get(&partition).is_some_and(|r| {
            matches!((r.applied, r.end), (Some(a), Some((end, _))) if end - a <= self.timing.ready_max_lag)
        });
        !state.fenced && serving && lag_ok
    }

    /// A receiver that changes whenever this member stops serving a partition.
    pub fn dropped(&self) -> tokio::sync::watch::Receiver<u64> {
        self.dropped.subscribe()
    }

    /// An entry heard from the members topic, its signature already checked (`None`: a
    /// tombstone, the member left cleanly). Entries of other sets, older than the newest heard
    /// from the same member and incarnation, or written too long ago are ignored; false then.
    pub fn heard(&self, url: &str, entry: Option<Entry>, now_ms: i64) -> bool {
        let mut state = self.state.lock();
        let Some(entry) = entry else {
            if url != self.me {
                state.members.remove(url);
            }
            return true;
        };
        if entry.cluster != self.name || entry.url != url {
            return false;
        }
        if now_ms - entry.at_ms > self.timing.max_skew_ms {
            return false;
        }
        let newer = state
            .newest
            .get(url)
            .is_none_or(|(inc, seq)| *inc != entry.incarnation || entry.seq > *seq);
        if !newer {
            return false;
        }
        state
            .newest
            .insert(url.to_owned(), (entry.incarnation.clone(), entry.seq));
        if url == self.me {
            if entry.incarnation == self.incarnation {
                state.heard_self = Instant::now();
            }
            return true;
        }
        state
            .members
            .insert(url.to_owned(), (entry, Instant::now()));
        true
    }

    /// Where a query about `partition` goes: here when this instance serves it, else to a live
    /// member that does (its owner first, then one not handing it over).
    pub fn route(&self, partition: i32) -> Route {
        let state = self.state.lock();
        if state.fenced {
            return Route::Moving;
        }
        if state
            .parts
            .get(&partition)
            .is_some_and(|p| p.phase.serves())
        {
            return Route::Local;
        }
        let live = state.live();
        let owner = owners::owner(
            partition,
            live.iter().filter(|(_, e)| !e.leaving).map(|(url, _)| *url),
        );
        let serving = |url: &&str| {
            live.get(url)
                .is_some_and(|e| e.serving.contains(&partition))
        };
        let settled = |url: &&str| {
            live.get(url)
                .is_some_and(|e| !e.releasing.contains_key(&partition))
        };
        let mut servers: Vec<&str> = live.keys().copied().filter(serving).collect();
        servers.sort_unstable();
        let by = owner
            .filter(serving)
            .or_else(|| servers.iter().copied().find(settled))
            .or_else(|| servers.first().copied());
        match by {
            Some(url) => Route::Forward(url.to_owned()),
            None => Route::Moving,
        }
    }

    /// Starts a clean departure: this instance owns nothing from now on, and keeps serving each
    /// partition until its new owner does ([`Cluster::handed_off`] then says so).
    pub fn leave(&self) {
        self.state.lock().leaving = true;
    }

    /// True once a leaving instance serves nothing, or no live member is left to take over.
    pub fn handed_off(&self) -> bool {
        let state = self.state.lock();
        let nobody_left = state.live().values().all(|e| e.leaving);
        state.leaving && (state.parts.is_empty() || nobody_left)
    }

    /// Live members heard from, this one excluded.
    pub fn live_members(&self) -> Vec<String> {
        self.state
            .lock()
            .live()
            .keys()
            .map(|u| u.to_string())
            .collect()
    }

    /// Partitions taken over with no announced position that still need the end listed by
    /// the broker (the members thread asks it, then calls [`Cluster::listed_end`]).
    pub fn ends_wanted(&self) -> Vec<i32> {
        self.state
            .lock()
            .parts
            .iter()
            .filter(|(_, part)| {
                matches!(
                    part.phase,
                    Phase::TakingOver {
                        listed_end: None,
                        ..
                    }
                )
            })
            .map(|(p, _)| *p)
            .collect()
    }

    /// The end of `partition` as the broker listed it (ListOffsets) for a takeover.
    pub fn listed_end(&self, partition: i32, end: i64) {
        if let Some(part) = self.state.lock().parts.get_mut(&partition) {
            if let Phase::TakingOver { listed_end, .. } = &mut part.phase {
                listed_end.get_or_insert(end);
            }
        }
    }

    /// Decides, a few times a second, what to read, hold and serve (`handoff`), and returns this
    /// instance's entry and the partitions it has just stopped serving (their steps leave
    /// memory).
    pub fn tick(&self, now_ms: i64) -> (Entry, Vec<i32>) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let now = Instant::now();
        state
            .members
            .retain(|_, (_, heard)| heard.elapsed() <= MEMBER_TTL * 10);
        let before: BTreeMap<i32, (u64, Limit, bool)> = state
            .parts
            .iter()
            .map(|(p, part)| (*p, (part.gen, part.phase.limit(), part.phase.serves())))
            .collect();

        let fenced = state.heard_self.elapsed() > FENCE_AFTER;
        if fenced && !state.fenced {
            tracing::warn!(
                "this member has not heard its own entry for {} ms: answering 503 for every \
                 partition until it has taken them again",
                state.heard_self.elapsed().as_millis()
            );
            for part in state.parts.values_mut() {
                part.phase = Phase::CatchingUp;
            }
        }
        state.fenced = fenced;

        if state.partitions > 0 && self.started.elapsed() >= LISTEN_FIRST {
            let live = state.live_owned();
            let me = (!state.leaving && !fenced).then_some(self.me.as_str());
            let candidates: Vec<&str> = live
                .iter()
                .filter(|(_, e)| !e.leaving)
                .map(|(url, _)| url.as_str())
                .chain(me)
                .collect();
            for p in 0..state.partitions {
                let owner = owners::owner(p, candidates.iter().copied());
                let view = View {
                    me: &self.me,
                    partition: p,
                    owns: owner == Some(self.me.as_str()),
                    owner,
                    live: &live,
                    report: state
                        .reports
                        .get(&p)
                        .filter(|_| state.reported_version >= state.plan_version),
                    now,
                    timing: &self.timing,
                };
                let part = state.parts.remove(&p);
                let next = match part {
                    None if view.owns => Some(Part::new(state.next_gen)),
                    None => None,
                    Some(part) => handoff::step(part, &view),
                };
                if let Some(next) = &next {
                    if next.gen == state.next_gen {
                        state.next_gen += 1;
                    }
                }
                if let Some(next) = next {
                    state.parts.insert(p, next);
                }
            }
        }

        let after: BTreeMap<i32, (u64, Limit, bool)> = state
            .parts
            .iter()
            .map(|(p, part)| (*p, (part.gen, part.phase.limit(), part.phase.serves())))
            .collect();
        if before != after {
            state.plan_version += 1;
        }
        let was_serving = |p: &i32| before.get(p).is_some_and(|(_, _, s)| *s);
        let dropped: Vec<i32> = before
            .keys()
            .filter(|p| was_serving(p))
            .filter(|p| !after.get(p).is_some_and(|(_, _, s)| *s))
            .copied()
            .collect();
        if !dropped.is_empty() {
            self.dropped.send_modify(|n| *n += 1);
        }
        state.seq += 1;
        let entry = self.entry(state, now_ms);
        (entry, dropped)
    }

    fn entry(&self, state: &State, now_ms: i64) -> Entry {
        let mut entry = Entry {
            url: self.me.clone(),
            cluster: self.name.clone(),
            incarnation: self.incarnation.clone(),
            seq: state.seq,
            at_ms: now_ms,
            // A fenced member that can still write tells the others to take its partitions.
            leaving: state.leaving || state.fenced,
            serving: BTreeSet::new(),
            claims: BTreeMap::new(),
            releasing: BTreeMap::new(),
            progress: BTreeMap::new(),
        };
        for (p, part) in &state.parts {
            let report = state.reports.get(p).filter(|r| r.gen == part.gen);
            if part.phase.serves() && !state.fenced {
                entry.serving.insert(*p);
            }
            match &part.phase {
                Phase::Claiming { held: Some(y), .. } => {
                    entry.claims.insert(*p, *y);
                }
                Phase::HandingOff {
                    to,
                    target: Some(x),
                    ..
                } => {
                    if let Some(at) = report.and_then(|r| r.applied) {
                        let release = Release {
                            to: to.clone(),
                            at,
                            settled: at == *x,
                        };
                        entry.releasing.insert(*p, release);
                    }
                }
                _ => {}
            }
            if let Some(r) = report {
                if let (Some(next), Some((end, _))) = (r.applied, r.end) {
                    entry.progress.insert(*p, Progress { next, end });
                }
            }
        }
        entry
    }
}

impl State {
    fn live(&self) -> HashMap<&str, &Entry> {
        self.members
            .iter()
            .filter(|(_, (_, heard))| heard.elapsed() <= MEMBER_TTL)
            .map(|(url, (e, _))| (url.as_str(), e))
            .collect()
    }

    fn live_owned(&self) -> BTreeMap<String, Entry> {
        self.live()
            .into_iter()
            .map(|(url, e)| (url.to_owned(), e.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
