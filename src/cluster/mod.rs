//! Shards (cluster.md): instances of one shard set divide the topic's partitions through a
//! compacted members topic; there is no coordinator of our own and no consumer-group protocol.
//! Every instance computes the owner of each partition from the members it has heard from in the
//! last 3 s, by rendezvous hashing; a partition's new owner reads it and serves it once caught
//! up, and the old owner keeps serving it until it sees that. Any instance answers any query:
//! its own partitions' from its views, the others' by forwarding to the member serving them.
//!
//! Owns: membership, ownership, handoff, and where a query goes. Must not: read or write views
//! (ingest reads what [`Cluster::reading`] says; `http` forwards what [`Cluster::route`] says).
//!
//! - [`owners`]: the producers' partitioner and rendezvous hashing.
//! - [`members`]: the members topic: publishing this instance's entry, hearing the others'.

pub mod members;
pub mod owners;

use owners::Partitioner;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A member not heard from for this long is dead.
pub const MEMBER_TTL: Duration = Duration::from_secs(3);

/// How long a member keeps serving a partition after its new owner announced it: long enough
/// for every other member to have heard the announcement (they may still forward to the old
/// owner meanwhile).
const HANDOFF_GRACE: Duration = Duration::from_millis(1500);

/// How long a starting member listens before it claims partitions: long enough to hear every
/// live member (each writes every second), so that it takes its share, not everything.
const LISTEN_FIRST: Duration = Duration::from_millis(1200);

/// What a member publishes about itself (the value of its entry in the members topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub url: String,
    pub cluster: String,
    /// The partitions it answers for.
    pub serving: BTreeSet<i32>,
    /// Per partition it reads: the next offset applied and the end offset last seen.
    pub progress: BTreeMap<i32, Progress>,
    /// Shutting down: it owns nothing, and serves until the new owners do.
    #[serde(default)]
    pub leaving: bool,
    pub at_ms: i64,
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
    /// No live member serves the partition right now (it is moving): 503, try again.
    Moving,
}

pub struct Cluster {
    pub name: String,
    /// This instance's URL, its key in the members topic.
    pub me: String,
    pub partitioner: Partitioner,
    ready_max_lag: i64,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// This instance is shutting down cleanly.
    leaving: bool,
    /// The topic's partition count (0 until ingest has read it).
    partitions: i32,
    /// Other members' latest entries, and when each was heard.
    members: HashMap<String, (Entry, Instant)>,
    reading: BTreeSet<i32>,
    serving: BTreeSet<i32>,
    progress: BTreeMap<i32, Progress>,
    /// Partitions whose new owner serves them, since when (left after the grace).
    taken_over: HashMap<i32, Instant>,
}

impl Cluster {
    pub fn new(name: &str, me: &str, partitioner: Partitioner, ready_max_lag: i64) -> Cluster {
        Cluster {
            name: name.to_owned(),
            me: me.to_owned(),
            partitioner,
            ready_max_lag,
            started: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    /// The partition of a step (or job) id; `None` until the partition count is known.
    pub fn partition_of(&self, id: i64) -> Option<i32> {
        let partitions = self.state.lock().partitions;
        (partitions > 0).then(|| self.partitioner.partition(id, partitions))
    }

    /// Ingest tells the topic's partition count.
    pub fn set_partitions(&self, partitions: i32) {
        self.state.lock().partitions = partitions;
    }

    /// The partitions ingest should read now.
    pub fn reading(&self) -> BTreeSet<i32> {
        self.state.lock().reading.clone()
    }

    pub fn serves(&self, partition: i32) -> bool {
        self.state.lock().serving.contains(&partition)
    }

    /// Ingest tells where a partition it reads stands.
    pub fn report_progress(&self, partition: i32, progress: Progress) {
        self.state.lock().progress.insert(partition, progress);
    }

    /// An entry heard from the members topic (`None`: the member left cleanly).
    pub fn heard(&self, url: &str, entry: Option<Entry>) {
        let mut state = self.state.lock();
        match entry {
            Some(entry) if url != self.me && entry.cluster == self.name => {
                state
                    .members
                    .insert(url.to_owned(), (entry, Instant::now()));
            }
            Some(_) => {}
            None => {
                state.members.remove(url);
            }
        }
    }

    /// Where a query about `partition` goes: here when this instance serves it, else to a live
    /// member that does (its owner first).
    pub fn route(&self, partition: i32) -> Route {
        let state = self.state.lock();
        if state.serving.contains(&partition) {
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
        let by = owner
            .filter(serving)
            .or_else(|| live.keys().copied().find(serving));
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

    /// True once a leaving instance reads and serves nothing.
    pub fn handed_off(&self) -> bool {
        let state = self.state.lock();
        state.leaving && state.reading.is_empty()
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

    /// Decides, about once a second, what to read and serve: the partitions this instance owns
    /// are read, and served once caught up; a partition it no longer owns is read and served
    /// until its new owner says it serves it, then left. Returns this instance's entry and the
    /// partitions just left (their steps leave memory).
    pub fn tick(&self, now_ms: i64) -> (Entry, Vec<i32>) {
        let mut state = self.state.lock();
        state
            .members
            .retain(|_, (_, heard)| heard.elapsed() <= MEMBER_TTL * 10);
        let mut left = Vec::new();
        if state.partitions > 0 && self.started.elapsed() >= LISTEN_FIRST {
            let owners: Vec<(i32, String)> = {
                let live = state.live();
                let me = (!state.leaving).then_some(self.me.as_str());
                let candidates: Vec<&str> = live
                    .iter()
                    .filter(|(_, e)| !e.leaving)
                    .map(|(url, _)| *url)
                    .chain(me)
                    .collect();
                (0..state.partitions)
                    .filter_map(|p| {
                        owners::owner(p, candidates.iter().copied()).map(|o| (p, o.to_owned()))
                    })
                    .collect()
            };
            for (p, owner) in owners {
                let caught_up = state
                    .progress
                    .get(&p)
                    .is_some_and(|pr| pr.end - pr.next <= self.ready_max_lag);
                if owner == self.me {
                    state.reading.insert(p);
                    state.taken_over.remove(&p);
                    if caught_up {
                        state.serving.insert(p);
                    }
                } else if state.reading.contains(&p) {
                    let taken_over = state
                        .live()
                        .get(owner.as_str())
                        .is_some_and(|e| e.serving.contains(&p));
                    let since =
                        taken_over.then(|| *state.taken_over.entry(p).or_insert_with(Instant::now));
                    if since.is_some_and(|at| at.elapsed() >= HANDOFF_GRACE) {
                        state.reading.remove(&p);
                        state.serving.remove(&p);
                        state.progress.remove(&p);
                        state.taken_over.remove(&p);
                        left.push(p);
                    } else if caught_up {
                        // Still ours to serve until the new owner is ready (or if it died).
                        state.serving.insert(p);
                    }
                }
            }
        }
        let entry = Entry {
            url: self.me.clone(),
            cluster: self.name.clone(),
            serving: state.serving.clone(),
            progress: state
                .progress
                .iter()
                .filter(|(p, _)| state.reading.contains(p))
                .map(|(p, pr)| (*p, *pr))
                .collect(),
            leaving: state.leaving,
            at_ms: now_ms,
        };
        (entry, left)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(url: &str, serving: &[i32]) -> Entry {
        Entry {
            url: url.into(),
            cluster: "set".into(),
            serving: serving.iter().copied().collect(),
            progress: BTreeMap::new(),
            leaving: false,
            at_ms: 0,
        }
    }

    /// A member that has listened long enough to claim partitions.
    fn settled(url: &str, partitions: i32) -> Cluster {
        let mut c = Cluster::new("set", url, Partitioner::Murmur2, 0);
        c.started = Instant::now() - LISTEN_FIRST;
        c.set_partitions(partitions);
        c
    }

    fn caught_up(c: &Cluster, partitions: impl IntoIterator<Item = i32>) {
        for p in partitions {
            c.report_progress(p, Progress { next: 10, end: 10 });
        }
    }

    #[test]
    fn a_new_owner_serves_once_caught_up_and_the_old_one_until_then() {
        let a = settled("http://a", 8);
        a.tick(0);
        assert_eq!(a.reading().len(), 8, "alone, it reads every partition");
        assert_eq!(
            a.route(0),
            Route::Moving,
            "and serves none before catching up"
        );
        caught_up(&a, 0..8);
        let (entry, _) = a.tick(0);
        assert_eq!(entry.serving.len(), 8);
        assert_eq!(a.route(3), Route::Local);

        // b joins: what b owns stays with a until b says it serves it.
        a.heard("http://b", Some(member("http://b", &[])));
        a.tick(0);
        let b_owns: Vec<i32> = (0..8)
            .filter(|p| owners::owner(*p, ["http://a", "http://b"]) == Some("http://b"))
            .collect();
        assert!(!b_owns.is_empty());
        assert!(
            b_owns.iter().all(|p| a.serves(*p)),
            "a keeps serving while b catches up"
        );
        a.heard("http://b", Some(member("http://b", &b_owns)));
        let (entry, left) = a.tick(0);
        assert!(
            left.is_empty(),
            "a serves on for the grace, while the others hear of b"
        );
        assert_eq!(entry.serving.len(), 8);
        std::thread::sleep(HANDOFF_GRACE);
        a.heard("http://b", Some(member("http://b", &b_owns)));
        let (entry, left) = a.tick(0);
        assert_eq!(left, b_owns);
        assert!(b_owns.iter().all(|p| !entry.serving.contains(p)));
        assert_eq!(a.route(b_owns[0]), Route::Forward("http://b".into()));

        // b leaves cleanly: a owns everything again, and serves each once caught up.
        a.heard("http://b", None);
        a.tick(0);
        assert_eq!(a.route(b_owns[0]), Route::Moving);
        caught_up(&a, b_owns.iter().copied());
        a.tick(0);
        assert_eq!(a.route(b_owns[0]), Route::Local);
    }

    #[test]
    fn a_leaving_member_serves_until_the_others_have_taken_over() {
        let a = settled("http://a", 4);
        a.heard("http://b", Some(member("http://b", &[])));
        a.tick(0);
        caught_up(&a, 0..4);
        let (entry, _) = a.tick(0);
        let mine = entry.serving.clone();
        assert!(!mine.is_empty());
        a.leave();
        let (entry, left) = a.tick(0);
        assert!(entry.leaving && left.is_empty() && entry.serving == mine);
        assert!(!a.handed_off());
        a.heard("http://b", Some(member("http://b", &[0, 1, 2, 3])));
        a.tick(0);
        std::thread::sleep(HANDOFF_GRACE);
        a.heard("http://b", Some(member("http://b", &[0, 1, 2, 3])));
        a.tick(0);
        assert!(a.handed_off());
    }

    #[test]
    fn a_starting_member_listens_before_claiming_partitions() {
        let a = Cluster::new("set", "http://a", Partitioner::Murmur2, 0);
        a.set_partitions(4);
        a.tick(0);
        assert!(a.reading().is_empty());
    }

    #[test]
    fn members_of_another_set_are_ignored() {
        let a = settled("http://a", 4);
        let mut other = member("http://x", &[0, 1, 2, 3]);
        other.cluster = "other".into();
        a.heard("http://x", Some(other));
        a.tick(0);
        assert_eq!(a.reading().len(), 4);
        assert!(a.live_members().is_empty());
    }
}
