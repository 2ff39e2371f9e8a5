//! The handoff as members run it: `Cluster`s exchange their own entries, each with a model of
//! ingest that follows its plan over a log that keeps growing; at every round no partition is
//! served anywhere behind where it was served before (what a client polling random members
//! would see go backwards), and in the end every partition is served by its owner alone.

use super::*;
use std::collections::BTreeMap;

const PARTITIONS: i32 = 6;

fn timing() -> ClusterTiming {
    ClusterTiming {
        ready_max_lag: 0,
        handoff_timeout: Duration::from_secs(3),
        max_skew_ms: 30_000,
        stats_interval: Duration::from_millis(5),
    }
}

/// One member: its cluster state and a model of its ingest and store.
struct Member {
    cluster: Cluster,
    /// The store's offsets (survive a new reading of a partition).
    stored: BTreeMap<i32, i64>,
    /// Per partition read: (gen, applied, stop).
    reading: BTreeMap<i32, (u64, i64, Option<i64>)>,
    alive: bool,
    /// Applies at most this many messages per round and partition (a slow member lags).
    speed: i64,
    /// Hears nothing (its own entries included) while set: cut off from the members topic.
    deaf: bool,
}

impl Member {
    fn new(url: &str, speed: i64) -> Member {
        let mut cluster = Cluster::new(
            "set",
            url,
            crate::kafka::Partitioner::Murmur2,
            MembersSecret::of(&[9; 32]),
            timing(),
        );
        cluster.started = Instant::now() - LISTEN_FIRST;
        cluster.set_partitions(PARTITIONS);
        Member {
            cluster,
            stored: BTreeMap::new(),
            reading: BTreeMap::new(),
            alive: true,
            speed,
            deaf: false,
        }
    }

    /// Ingest follows the plan and applies what the log holds, up to each stop.
    fn ingest(&mut self, log: &BTreeMap<i32, i64>) {
        let (version, plan) = self.cluster.plan();
        self.reading
            .retain(|p, (gen, ..)| plan.get(p).is_some_and(|w| w.gen == *gen));
        let mut reports = BTreeMap::new();
        for (p, want) in &plan {
            let stored = self.stored.get(p).copied().unwrap_or(0);
            let (_, applied, stop) = self.reading.entry(*p).or_insert((want.gen, stored, None));
            *stop = match want.limit {
                Limit::None => None,
                Limit::Here => Some(stop.unwrap_or(*applied).min(*applied)),
                Limit::At(x) => Some(x),
            };
            let end = log[p];
            let until = stop.map_or(end, |s| s.min(end));
            if *applied < until {
                *applied = (*applied + self.speed).min(until);
            }
            self.stored.insert(*p, *applied);
            let report = ReadReport {
                gen: want.gen,
                applied: Some(*applied),
                dispatched: Some(*applied),
                end: Some((end, Instant::now())),
            };
            reports.insert(*p, report);
        }
        self.cluster.report(version, reports);
    }

    fn position(&self, p: i32) -> Option<i64> {
        self.reading.get(&p).map(|(_, applied, _)| *applied)
    }
}

struct Set {
    members: Vec<Member>,
    log: BTreeMap<i32, i64>,
    /// Per partition, the highest position any member served it at.
    served: BTreeMap<i32, i64>,
}

impl Set {
    fn new(members: Vec<Member>) -> Set {
        Set {
            members,
            log: (0..PARTITIONS).map(|p| (p, 0)).collect(),
            served: BTreeMap::new(),
        }
    }

    /// One round: events arrive, ingest follows, members decide and hear each other; then the
    /// check that nothing is served behind where it was.
    fn round(&mut self) {
        for end in self.log.values_mut() {
            *end += 3;
        }
        let log = self.log.clone();
        let mut entries = Vec::new();
        for m in self.members.iter_mut().filter(|m| m.alive) {
            m.ingest(&log);
            // What the members thread asks the broker for a takeover.
            for p in m.cluster.ends_wanted() {
                m.cluster.listed_end(p, log[&p]);
            }
            let (entry, _) = m.cluster.tick(crate::now_ms());
            entries.push(entry);
        }
        for m in self.members.iter().filter(|m| m.alive && !m.deaf) {
            for e in &entries {
                m.cluster.heard(&e.url, Some(e.clone()), crate::now_ms());
            }
        }
        self.check();
        std::thread::sleep(Duration::from_millis(10));
    }

    fn check(&mut self) {
        for p in 0..PARTITIONS {
            let serving: Vec<(&str, i64)> = self
                .members
                .iter()
                .filter(|m| m.alive && m.cluster.serves(p))
                .map(|m| (m.cluster.me.as_str(), m.position(p).expect("served: read")))
                .collect();
            let Some(lowest) = serving.iter().map(|(_, at)| *at).min() else {
                continue;
            };
            let before = self.served.get(&p).copied().unwrap_or(0);
            assert!(
                lowest >= before,
                "partition {p} served at {lowest} after {before}: {serving:?}"
            );
            let highest = serving.iter().map(|(_, at)| *at).max().unwrap();
            self.served.insert(p, highest);
        }
    }

    /// Rounds until every partition is served by its owner alone, and by nobody else.
    fn settle(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.round();
            if self.settled() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never settled: {}",
                self.describe()
            );
        }
    }

    fn settled(&self) -> bool {
        let live: Vec<&Member> = self.members.iter().filter(|m| m.alive).collect();
        (0..PARTITIONS).all(|p| {
            let owner = owners::owner(p, live.iter().map(|m| m.cluster.me.as_str()));
            let serving: Vec<&str> = live
                .iter()
                .filter(|m| m.cluster.serves(p))
                .map(|m| m.cluster.me.as_str())
                .collect();
            serving == [owner.unwrap()]
                && live
                    .iter()
                    .filter(|m| m.cluster.me != owner.unwrap())
                    .all(|m| !m.reading.contains_key(&p))
        })
    }

    fn describe(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.alive)
            .map(|m| {
                let state = m.cluster.state.lock();
                format!("{}: {:?}", m.cluster.me, state.parts)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[test]
fn alone_a_member_serves_every_partition_once_caught_up() {
    let mut set = Set::new(vec![Member::new("http://a", 100)]);
    set.round();
    assert_eq!(
        set.members[0].cluster.route(0),
        Route::Moving,
        "not before it caught up"
    );
    set.settle(Duration::from_secs(5));
    assert_eq!(set.members[0].cluster.route(3), Route::Local);
}

#[test]
fn joining_and_leaving_members_hand_partitions_over_without_going_back() {
    let mut set = Set::new(vec![Member::new("http://a", 100)]);
    set.settle(Duration::from_secs(5));
    // A slow member joins: it catches up without claiming, then takes its share.
    set.members.push(Member::new("http://b", 40));
    set.members.push(Member::new("http://c", 100));
    set.settle(Duration::from_secs(20));
    let b_owns: Vec<i32> = (0..PARTITIONS)
        .filter(|p| set.members[1].cluster.serves(*p))
        .collect();
    assert!(!b_owns.is_empty(), "b took nothing: {}", set.describe());
    assert_eq!(
        set.members[0].cluster.route(b_owns[0]),
        Route::Forward("http://b".into())
    );
    // b leaves cleanly: its partitions go back, handed over.
    set.members[1].cluster.leave();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !set.members[1].cluster.handed_off() {
        set.round();
        assert!(
            Instant::now() < deadline,
            "b never handed off: {}",
            set.describe()
        );
    }
    set.members[1].alive = false;
    set.settle(Duration::from_secs(20));
}

#[test]
fn a_dead_members_partitions_are_taken_over_at_a_fresh_end() {
    let mut set = Set::new(vec![
        Member::new("http://a", 100),
        Member::new("http://b", 100),
    ]);
    set.settle(Duration::from_secs(10));
    set.members[1].alive = false;
    let deadline = Instant::now() + MEMBER_TTL + Duration::from_secs(10);
    loop {
        set.round();
        if set.settled() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never took over: {}",
            set.describe()
        );
    }
}

#[test]
fn a_member_that_stops_hearing_itself_answers_for_nothing_and_comes_back_through_a_handoff() {
    let mut set = Set::new(vec![
        Member::new("http://a", 100),
        Member::new("http://b", 100),
    ]);
    set.settle(Duration::from_secs(10));
    set.members[1].deaf = true;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(0..PARTITIONS).all(|p| set.members[1].cluster.route(p) == Route::Moving) {
        set.round();
        assert!(Instant::now() < deadline, "never fenced");
    }
    // The others take its partitions meanwhile (it is dead to them).
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(0..PARTITIONS).all(|p| set.members[0].cluster.serves(p)) {
        set.round();
        assert!(
            Instant::now() < deadline,
            "a never took over: {}",
            set.describe()
        );
    }
    // It hears again: it takes its share back by handoffs, never serving behind.
    set.members[1].deaf = false;
    set.settle(Duration::from_secs(20));
}

#[test]
fn a_claim_whose_claimant_dies_unpauses_the_server() {
    let mut set = Set::new(vec![Member::new("http://a", 100)]);
    set.settle(Duration::from_secs(5));
    set.members.push(Member::new("http://b", 100));
    // Until b claims something and a pauses it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let paused = loop {
        set.round();
        let (_, plan) = set.members[0].cluster.plan();
        if let Some((p, _)) = plan.iter().find(|(_, w)| w.limit != Limit::None) {
            break *p;
        }
        assert!(
            Instant::now() < deadline,
            "b never claimed: {}",
            set.describe()
        );
    };
    set.members[1].alive = false;
    let deadline = Instant::now() + MEMBER_TTL + Duration::from_secs(5);
    loop {
        set.round();
        let (_, plan) = set.members[0].cluster.plan();
        if plan[&paused].limit == Limit::None && set.members[0].cluster.serves(paused) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a stayed paused: {}",
            set.describe()
        );
    }
}

#[test]
fn old_or_foreign_entries_are_not_heard() {
    let a = Member::new("http://a", 1);
    let b = Member::new("http://b", 1);
    let (entry, _) = b.cluster.tick(crate::now_ms());
    assert!(a
        .cluster
        .heard("http://b", Some(entry.clone()), crate::now_ms()));
    assert!(
        !a.cluster
            .heard("http://b", Some(entry.clone()), crate::now_ms()),
        "the same entry again is a replay"
    );
    let (newer, _) = b.cluster.tick(crate::now_ms());
    assert!(a
        .cluster
        .heard("http://b", Some(newer.clone()), crate::now_ms()));
    let mut old = newer.clone();
    old.seq += 1;
    old.at_ms -= 60_000;
    assert!(
        !a.cluster.heard("http://b", Some(old), crate::now_ms()),
        "written too long ago"
    );
    let mut other = newer.clone();
    other.cluster = "other".into();
    other.seq += 5;
    assert!(!a.cluster.heard("http://b", Some(other), crate::now_ms()));
    let mut elsewhere = newer;
    elsewhere.seq += 6;
    assert!(
        !a.cluster
            .heard("http://x", Some(elsewhere), crate::now_ms()),
        "an entry under another member's key"
    );
    assert_eq!(a.cluster.live_members(), ["http://b"]);
}
