//! The index holds what is being read within its byte budget: steps are loaded on their first
//! query (once, however many ask), the least recently used leave, apply never loads, nothing is
//! loaded at start, and every answer is what the contract says whatever is in memory.

mod common;

use common::*;
use std::time::{Duration, Instant};
use stepview::events::{Event, ScopeType};
use stepview::query::{Cancel, StepQuery};
use stepview::simulate::{self, Workload};

/// 67 jobs × 3 steps of 2 000 hosts (two rolling batches, retries): ~200 steps.
fn workload() -> Vec<Event> {
    simulate::generate(&Workload {
        jobs: 67,
        steps_per_job: 3,
        hosts: 2000,
        batches: 2,
        first_job_id: 1,
        ..Workload::default()
    })
}

/// A shape of query: its parameters, and the model's (batch, cap, status).
type Shape = (&'static str, Option<i32>, Option<usize>, Option<i64>);

/// The shapes of query the test asks of every step.
const SHAPES: [Shape; 4] = [
    ("max_host_num_per_group=3", None, Some(3), None),
    ("batch=1&max_host_num_per_group=5", Some(1), Some(5), None),
    ("status=9&max_host_num_per_group=2", None, Some(2), Some(9)),
    ("", None, None, None),
];

/// Asks every step every shape and checks each answer against the model; also that the index
/// stays within its budget after each answer.
async fn check_all(svc: &TestService, events: &[Event], steps: &[(i64, i64)], budget: f64) {
    for (job, step) in steps {
        for (extra, batch, cap, status) in SHAPES {
            let query = format!(
                "bk_scope_type=biz&bk_scope_id=2&job_instance_id={job}&step_instance_id={step}&{extra}"
            );
            let data = svc.data(&query).await;
            let expected = model_groups(events, *step, None, batch, cap, status).unwrap();
            assert_eq!(groups(&data), expected, "{query}");
        }
        let used = svc.metric("stepview_index_memory_bytes").await.unwrap();
        assert!(
            used <= budget,
            "index estimate {used} over its budget {budget}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_answers_as_the_model_says_loaded_evicted_reloaded_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    // All ~200 steps take well over the 2 MiB budget (8 to 12.5 bytes per host row), so steps
    // keep leaving and coming back.
    config.index.memory_mb = stepview::settings::Mebibytes(2);
    let budget = (2 << 20) as f64;
    let svc = TestService::start(config).await;
    let mut events = workload();
    for batch in events.chunks(5000) {
        svc.apply(batch);
    }
    // Apply never loads: nothing is in memory until a query asks.
    assert_eq!(svc.metric("stepview_index_steps").await, Some(0.0));
    let steps = steps_of(&events);
    assert!(steps.len() >= 200);
    check_all(&svc, &events, &steps, budget).await;
    let loads = svc.metric("stepview_index_loads_total").await.unwrap();
    let evictions = svc.metric("stepview_index_evictions_total").await.unwrap();
    assert!(evictions > 0.0, "the budget never made a step leave");
    assert!(loads >= steps.len() as f64);

    // Backwards: the steps evicted first are loaded again.
    let backwards: Vec<_> = steps.iter().rev().copied().collect();
    check_all(&svc, &events, &backwards, budget).await;
    assert!(svc.metric("stepview_index_loads_total").await.unwrap() > loads);

    // Events for steps in memory and out of it: every answer follows.
    let (first, last) = (steps[0].1, steps[steps.len() - 1].1);
    let more: Vec<Event> = [first, last]
        .iter()
        .flat_map(|step| {
            (1000..1100)
                .map(move |host| Event::HostResult(result(*step, 0, 0, host, 104, "late", 1_000)))
        })
        .collect();
    svc.apply(&more);
    events.extend(more);
    check_all(&svc, &events, &steps, budget).await;

    // After a restart: ready at once (nothing to load), and the same answers.
    let config = svc.stop().await;
    let started = Instant::now();
    let svc = TestService::start(config).await;
    svc.wait_readyz(200, Duration::from_secs(5)).await;
    eprintln!("ready {:?} after the restart", started.elapsed());
    assert_eq!(svc.metric("stepview_index_steps").await, Some(0.0));
    check_all(&svc, &events, &steps, budget).await;
}

#[test]
fn many_first_queries_of_one_cold_step_load_it_once_and_loads_racing_apply_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.index.memory_mb = stepview::settings::Mebibytes(1); // about 8 of the 12 steps (~10 bytes per host)
    let views = stepview::service::Views::open(&config).unwrap();
    let mut events = simulate::generate(&Workload {
        jobs: 4,
        steps_per_job: 3,
        hosts: 12_000,
        first_job_id: 1,
        ..Workload::default()
    });
    views
        .sink
        .applier
        .apply(&stepview::apply::Batch::local(&events))
        .unwrap();
    let steps = steps_of(&events);
    let query = |(job, step): (i64, i64)| StepQuery {
        scope_type: ScopeType::Biz,
        scope_id: "2".into(),
        job_instance_id: job,
        step_instance_id: step,
        execute_count: None,
        batch: None,
        max_host_num_per_group: Some(4),
        keyword: None,
        search_ip: None,
        status: None,
        tag: None,
    };
    let answer_groups = |q: &StepQuery| {
        let a = views.reader().answer(q, &Cancel::default()).unwrap();
        a.groups
            .iter()
            .map(|g| {
                let hosts = g.hosts.iter().map(|h| h.bk_host_id).collect();
                (
                    i64::from(g.status),
                    g.tag.clone(),
                    g.host_size as i64,
                    hosts,
                )
            })
            .collect::<Vec<_>>()
    };

    // 32 threads ask for the same cold step at once: one load.
    let cold = query(steps[0]);
    let barrier = std::sync::Barrier::new(32);
    let answers: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    answer_groups(&cold)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(views.index.figures().loads, 1);
    assert!(answers.windows(2).all(|w| w[0] == w[1]));

    // Queries load and evict while apply changes those steps.
    let changes: Vec<Vec<Event>> = (0..40)
        .map(|round| {
            steps
                .iter()
                .flat_map(|(_, step)| {
                    (0..20).map(move |i| {
                        let mut r = result(*step, 0, 0, 1000 + (round * 20 + i) % 6000, 9, "", 0);
                        r.status = [9, 104, 7][(round as usize + i as usize) % 3];
                        r.tag = Some(format!("round{}", round % 4));
                        r.version = 100 + round;
                        Event::HostResult(r)
                    })
                })
                .collect()
        })
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for batch in &changes {
                views
                    .sink
                    .applier
                    .apply(&stepview::apply::Batch::local(batch))
                    .unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        for t in 0..4 {
            let (steps, done) = (&steps, &done);
            let answer_groups = &answer_groups;
            s.spawn(move || {
                // At least one pass over every step (loading all cannot fit): evictions race
                // with apply whatever the timing.
                let mut i = t;
                while !done.load(std::sync::atomic::Ordering::SeqCst) || i < t + steps.len() {
                    answer_groups(&query(steps[i % steps.len()]));
                    i += 1;
                }
            });
        }
    });
    events.extend(changes.into_iter().flatten());
    assert!(views.index.figures().evictions > 0);
    for step in &steps {
        let expected = model_groups(&events, step.1, None, None, Some(4), None).unwrap();
        assert_eq!(answer_groups(&query(*step)), expected, "step {step:?}");
    }
}
