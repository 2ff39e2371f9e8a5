//! Applying is idempotent and order tolerant (events.md, "Ordering, duplicates and replays"):
//! any shuffle of a set of events, with duplicates, gives the same stored state and answers.
//! The fold alone (pure) is checked over many more cases, in memory; the whole path through
//! RocksDB over fewer.

mod common;

use common::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::collections::HashSet;
use stepview::apply::fold::{fold, LogChunk, Prior, Stored};
use stepview::apply::{Batch, Times};
use stepview::events::Subject;
use stepview::events::{Event, ScopeType};
use stepview::query::{Cancel, StepQuery};
use stepview::service::Views;
use stepview::store::clock::{Clock, Position};
use stepview::store::keys::RowKey;
use stepview::store::row::HostRow;

/// A set of events over a small domain, so that they collide often: two steps, two retries, two
/// batches, four hosts. At most one event per (row, version) and per (step, version), as
/// producers guarantee; every other collision is allowed.
fn event_set() -> impl Strategy<Value = Vec<Event>> {
    let result = (
        1i64..=2,
        0i32..=1,
        0i32..=1,
        1i64..=4,
        prop::sample::select(vec![5, 7, 9, 104, 403]),
        prop::sample::select(vec!["", "a", "b"]),
        0i64..=3,
        prop::option::of(prop::sample::select(vec!["10.0.0.1", "10.0.0.2"])),
        prop::option::of(0i32..=1),
    )
        .prop_map(|(s, ec, b, h, status, tag, v, ip, log_ec)| {
            let mut r = result(s, ec, b, h, status, tag, v);
            r.ip = ip.map(str::to_owned);
            r.log_execute_count = log_ec;
            Event::HostResult(r)
        });
    let step_event = (1i64..=2, 0i32..=1, 0i64..=3, 1i32..=4)
        .prop_map(|(s, ec, v, status)| step(s, 1, status, ec, v));
    let target = (
        1i64..=2,
        0i32..=1,
        prop::collection::vec((1i64..=4, 0i32..=1), 1..4),
    )
        .prop_map(|(s, ec, hosts)| {
            let hosts: Vec<(i64, i32, &str)> =
                hosts.into_iter().map(|(h, b)| (h, b, "10.9.9.9")).collect();
            targets(s, ec, &hosts)
        });
    let chunk = (1i64..=2, 0i32..=1, 0i32..=1, 1i64..=4, 0i64..=3)
        .prop_map(|(s, ec, b, h, o)| log(s, ec, b, h, o * 4, &format!("c{o}h{h}")));
    prop::collection::vec(
        prop_oneof![3 => result, 1 => step_event, 1 => target, 1 => chunk],
        1..40,
    )
    .prop_map(|events| {
        let mut seen = HashSet::new();
        events
            .into_iter()
            .filter(|e| match e {
                Event::HostResult(r) => seen.insert(format!(
                    "r{}/{}/{}/{}/{}",
                    r.step_instance_id, r.execute_count, r.batch, r.bk_host_id, r.version
                )),
                Event::Step(s) => seen.insert(format!("s{}/{}", s.step_instance_id, s.version)),
                _ => true,
            })
            .collect()
    })
}

fn queries() -> Vec<StepQuery> {
    let mut out = Vec::new();
    for step in 1..=2 {
        for (execute_count, batch, cap, search_ip, keyword) in [
            (None, None, None, None, None),
            (Some(0), Some(1), Some(1), None, None),
            (Some(1), None, Some(0), Some("10.0.0".to_owned()), None),
            (Some(0), None, None, None, Some("C1H".to_owned())),
            // Rows of retry 1 may show retry 0's output.
            (Some(1), None, None, None, Some("c0".to_owned())),
        ] {
            out.push(StepQuery {
                scope_type: ScopeType::Biz,
                scope_id: "2".into(),
                job_instance_id: JOB,
                step_instance_id: step,
                execute_count,
                batch,
                max_host_num_per_group: cap,
                keyword,
                search_ip,
                status: None,
                tag: None,
            });
        }
    }
    out
}

/// The digest of the views, and a rendering of every query's answer.
fn outcome(events: &[Event], batch_size: usize) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let views = Views::open(&test_config(dir.path())).unwrap();
    for batch in events.chunks(batch_size) {
        views.sink.applier.apply(&Batch::local(batch)).unwrap();
    }
    let answers = queries()
        .iter()
        .map(|q| match views.reader().answer(q, &Cancel::default()) {
            Ok(a) => format!(
                "{} {:?}",
                a.execute_count,
                a.groups
                    .iter()
                    .map(|g| {
                        let hosts: Vec<_> =
                            g.hosts.iter().map(|h| (h.bk_host_id, h.view())).collect();
                        (g.status, g.tag.clone(), g.host_size, format!("{hosts:?}"))
                    })
                    .collect::<Vec<_>>()
            ),
            Err(e) => e.to_string(),
        })
        .collect();
    (views.store.digest().unwrap(), answers)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_shuffle_with_duplicates_gives_the_same_state(
        events in event_set(),
        seed in any::<u64>(),
        batch_a in 1usize..8,
        batch_b in 1usize..8,
    ) {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut shuffled = events.clone();
        shuffled.extend(events.iter().take(events.len() / 2).cloned());
        shuffled.shuffle(&mut rng);
        let expected = outcome(&events, batch_a);
        prop_assert_eq!(outcome(&shuffled, batch_b), expected);
    }
}

/// The views as a model in memory: what a fold reads, and what its changes write.
#[derive(Default, Debug, PartialEq, Eq)]
struct Memory {
    jobs: BTreeMap<i64, i64>,
    steps: BTreeMap<i64, (i64, String)>,
    rows: BTreeMap<RowKey, HostRow>,
    logs: BTreeMap<LogChunk, String>,
    clocks: BTreeMap<Subject, Clock>,
    next: i64,
}

impl Stored for Memory {
    fn clocks(&self, subjects: &[Subject]) -> anyhow::Result<Vec<Option<Clock>>> {
        Ok(subjects
            .iter()
            .map(|s| self.clocks.get(s).copied())
            .collect())
    }

    fn rows(&self, keys: &[RowKey]) -> anyhow::Result<Vec<Option<HostRow>>> {
        Ok(keys.iter().map(|k| self.rows.get(k).cloned()).collect())
    }

    fn logs_exist(&self, chunks: &[LogChunk]) -> anyhow::Result<Vec<bool>> {
        Ok(chunks.iter().map(|c| self.logs.contains_key(c)).collect())
    }

    fn job_versions(&self, ids: &[i64]) -> anyhow::Result<Vec<Option<i64>>> {
        Ok(ids.iter().map(|id| self.jobs.get(id).copied()).collect())
    }

    fn step_versions(&self, ids: &[i64]) -> anyhow::Result<Vec<Option<i64>>> {
        Ok(ids
            .iter()
            .map(|id| self.steps.get(id).map(|s| s.0))
            .collect())
    }
}

impl Memory {
    /// Folds `events` as one batch and writes the changes; how many events changed a view.
    fn apply(&mut self, events: &[Event]) -> u64 {
        let positions: Vec<Position> = (0..events.len() as i64)
            .map(|i| Position {
                partition: 0,
                offset: self.next + i,
            })
            .collect();
        self.next += events.len() as i64;
        let prior = Prior::read(events, self).unwrap();
        let changes = fold(prior, events, &positions, Times::All(1));
        for job in &changes.new_jobs {
            self.jobs.insert(job.job_instance_id, job.version);
        }
        for step in &changes.new_steps {
            let record = serde_json::to_string(step).unwrap();
            self.steps
                .insert(step.step_instance_id, (step.version, record));
        }
        for change in changes.rows {
            self.rows.insert(change.key, change.row);
        }
        for (key, log) in &changes.logs {
            self.logs.insert((*key, log.offset), log.content.clone());
        }
        for (subject, clock) in changes.clocks {
            self.clocks.insert(subject, clock);
        }
        changes.stats.changed.values().sum()
    }

    /// The views, without the clocks (their positions say which event came last).
    fn views(self) -> Memory {
        Memory {
            clocks: BTreeMap::new(),
            next: 0,
            ..self
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000)
    ))]

    /// Any shuffle of a set of events, with duplicates, in any batches, folds to the same views;
    /// folding any of them again changes nothing.
    #[test]
    fn the_fold_is_order_independent_and_idempotent(
        events in event_set(),
        seed in any::<u64>(),
        batch_a in 1usize..8,
        batch_b in 1usize..8,
    ) {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut shuffled = events.clone();
        shuffled.extend(events.iter().take(events.len() / 2).cloned());
        shuffled.shuffle(&mut rng);
        let (mut a, mut b) = (Memory::default(), Memory::default());
        for batch in events.chunks(batch_a) {
            a.apply(batch);
        }
        for batch in shuffled.chunks(batch_b) {
            b.apply(batch);
        }
        for batch in shuffled.chunks(batch_a) {
            prop_assert_eq!(b.apply(batch), 0, "applied again, a batch changed something");
        }
        prop_assert_eq!(b.views(), a.views());
    }
}

#[test]
fn log_execute_count_is_the_newest_results_and_its_own_retry_is_none() {
    let result_with = |version, log_execute_count| {
        let mut r = result(1, 1, 0, 7, 9, "", version);
        r.log_execute_count = log_execute_count;
        Event::HostResult(r)
    };
    let key = RowKey::of_event(1, 1, 0, 7);
    let mut views = Memory::default();
    let mut shown_after = |event| {
        views.apply(&[event]);
        views.rows[&key].log_execute_count
    };
    assert_eq!(shown_after(result_with(2, Some(0))), Some(0));
    assert_eq!(
        shown_after(result_with(1, None)),
        Some(0),
        "an older result"
    );
    assert_eq!(
        shown_after(result_with(3, None)),
        None,
        "a newer one without"
    );
    assert_eq!(shown_after(result_with(4, Some(0))), Some(0));
    assert_eq!(shown_after(result_with(5, Some(1))), None, "its own retry");
}

#[test]
fn targets_never_downgrade_a_host_with_a_result() {
    let dir = tempfile::tempdir().unwrap();
    let views = Views::open(&test_config(dir.path())).unwrap();
    let a = Event::HostResult(result(1, 0, 0, 7, 9, "ok", 3));
    let t = targets(1, 0, &[(7, 0, "10.0.0.7")]);
    views
        .sink
        .applier
        .apply(&Batch::local(&[step(1, 1, 2, 0, 1), a, t]))
        .unwrap();
    let rows = views.store.snapshot().rows_in(1, 0, None).unwrap();
    assert_eq!(rows.len(), 1);
    let row = rows[0].1.view();
    assert_eq!((row.status, row.tag), (9, "ok"));
    // The target's identity fills what the result did not carry.
    assert_eq!(row.identity.ip.value, Some("10.0.0.7"));
    // An older version changes nothing.
    let stats = views
        .sink
        .applier
        .apply(&Batch::local(&[Event::HostResult(result(
            1, 0, 0, 7, 7, "", 2,
        ))]))
        .unwrap();
    assert_eq!(stats.unchanged.get("host_result"), Some(&1));
    assert_eq!(
        views.store.snapshot().rows_in(1, 0, None).unwrap()[0]
            .1
            .view()
            .status,
        9
    );
}

#[test]
fn offsets_are_stored_with_the_state_they_follow() {
    let dir = tempfile::tempdir().unwrap();
    let views = Views::open(&test_config(dir.path())).unwrap();
    let offset = |p, next| stepview::apply::SourceOffset {
        topic: "t".into(),
        partition: p,
        next,
    };
    views
        .sink
        .applier
        .apply(&Batch {
            offsets: &[offset(0, 10), offset(3, 4)],
            ..Batch::local(&[step(1, 1, 2, 0, 1)])
        })
        .unwrap();
    views
        .sink
        .applier
        .apply(&Batch {
            offsets: &[offset(0, 12)],
            ..Batch::local(&[])
        })
        .unwrap();
    let mut stored = views.store.offsets().unwrap();
    stored.sort();
    assert_eq!(
        stored,
        vec![("t".to_owned(), 0, 12), ("t".to_owned(), 3, 4)]
    );
}

/// Queries running while batches move hosts between groups see, for every group, rows of that
/// group only and as many as its size: never a batch half in the store and half in the index.
#[test]
fn concurrent_queries_never_see_a_batch_half_applied() {
    let dir = tempfile::tempdir().unwrap();
    let views = Views::open(&test_config(dir.path())).unwrap();
    let hosts: Vec<(i64, i32, &str)> = (1..=200).map(|h| (h, 0, "10.0.0.1")).collect();
    views
        .sink
        .applier
        .apply(&Batch::local(&[step(1, 1, 2, 0, 1), targets(1, 0, &hosts)]))
        .unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for version in 1..=300i64 {
                let status = if version % 2 == 0 { 9 } else { 7 };
                let batch: Vec<Event> = (1..=200)
                    .map(|h| Event::HostResult(result(1, 0, 0, h, status, "", version)))
                    .collect();
                views.sink.applier.apply(&Batch::local(&batch)).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut checked = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) || checked == 0 {
            for cap in [None, Some(5)] {
                let q = StepQuery {
                    max_host_num_per_group: cap,
                    ..queries()[0].clone()
                };
                let q = StepQuery {
                    step_instance_id: 1,
                    ..q
                };
                let a = views.reader().answer(&q, &Cancel::default()).unwrap();
                assert_eq!(a.groups.iter().map(|g| g.host_size).sum::<usize>(), 200);
                for g in &a.groups {
                    for host in &g.hosts {
                        let row = host.view();
                        assert_eq!((row.status, row.tag), (g.status, g.tag.as_str()));
                    }
                    if cap.is_none() {
                        assert_eq!(g.hosts.len(), g.host_size);
                    }
                }
                checked += 1;
            }
        }
    });
}
