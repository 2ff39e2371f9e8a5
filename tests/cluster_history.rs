//! The history test of cluster.md ("Shown by tests"): while events stream in (hosts moving
//! 5 → 7 → 9, versions rising), a member joins, one leaves with SIGTERM and comes back, one is
//! SIGKILLed; four clients poll random members without ETags and record what they saw. No
//! client sees a step's position go down, a host's status go back, or a step it has seen
//! answered 1244007; every answer is a 200 or a 503. Once every member is ready and every
//! partition served, every member answers every step and job as one instance fed the same topic.

mod common;

use common::*;
use rand::Rng;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stepview::events::{
    Event, HostResult, JobEvent, ScopeType, StepEvent, StepTargets, TargetHost,
};

const PARTITIONS: i32 = 8;
const JOBS: i64 = 12;
const STEPS_PER_JOB: i64 = 3;
const HOSTS: i64 = 8;

fn step_id(job: i64, n: i64) -> i64 {
    job * 100 + n
}

fn step_event(job: i64, step: i64, status: i32, version: i64) -> Event {
    Event::Step(StepEvent {
        job_instance_id: job,
        step_instance_id: step,
        bk_scope_type: ScopeType::Biz,
        bk_scope_id: "2".into(),
        name: format!("step {step}"),
        step_type: 1,
        status,
        execute_count: 0,
        create_time: 1_700_000_000_000,
        start_time: Some(1_700_000_001_000),
        end_time: (status == 3).then_some(1_700_000_100_000),
        total_time: None,
        step_order: Some((step % 100) as i32),
        version,
    })
}

fn job_event(job: i64, status: i32, version: i64) -> Event {
    Event::Job(JobEvent {
        job_instance_id: job,
        bk_scope_type: ScopeType::Biz,
        bk_scope_id: "2".into(),
        name: format!("job {job}"),
        status,
        create_time: 1_700_000_000_000,
        start_time: Some(1_700_000_001_000),
        end_time: (status == 3).then_some(1_700_000_100_000),
        total_time: None,
        version,
    })
}

fn host_result(job: i64, step: i64, host: i64, status: i32, version: i64) -> Event {
    Event::HostResult(HostResult {
        job_instance_id: job,
        step_instance_id: step,
        execute_count: 0,
        batch: 0,
        bk_host_id: host,
        ip: None,
        ipv6: None,
        bk_agent_id: None,
        bk_cloud_id: None,
        bk_cloud_name: None,
        status,
        tag: None,
        exit_code: (status == 9).then_some(0),
        error_code: 0,
        start_time: Some(1_700_000_002_000),
        end_time: (status == 9).then_some(1_700_000_003_000),
        total_time: (status == 9).then_some(1_000),
        version,
        log_execute_count: None,
    })
}

/// Each step's life, in order: it starts with its hosts waiting (5), each host runs (7) and
/// succeeds (9), the step ends; the job starts with its first step and ends with its last. The
/// steps' lives are interleaved, so that every partition keeps receiving events throughout.
fn workload() -> Vec<Event> {
    let mut lives: Vec<Vec<Event>> = Vec::new();
    for job in 1..=JOBS {
        for n in 1..=STEPS_PER_JOB {
            let step = step_id(job, n);
            let mut life = Vec::new();
            if n == 1 {
                life.push(job_event(job, 2, 1));
            }
            life.push(step_event(job, step, 2, 1));
            life.push(Event::StepTargets(StepTargets {
                job_instance_id: job,
                step_instance_id: step,
                execute_count: 0,
                chunk: 0,
                chunk_count: 1,
                hosts: (1..=HOSTS)
                    .map(|h| TargetHost {
                        bk_host_id: h,
                        batch: 0,
                        ip: Some(format!("10.0.{job}.{h}")),
                        ipv6: None,
                        bk_agent_id: None,
                        bk_cloud_id: Some(0),
                        bk_cloud_name: None,
                    })
                    .collect(),
            }));
            for h in 1..=HOSTS {
                life.push(host_result(job, step, h, 7, 1));
            }
            for h in 1..=HOSTS {
                life.push(host_result(job, step, h, 9, 2));
            }
            life.push(step_event(job, step, 3, 2));
            if n == STEPS_PER_JOB {
                life.push(job_event(job, 3, 2));
            }
            lives.push(life);
        }
    }
    let mut events = Vec::new();
    let longest = lives.iter().map(Vec::len).max().unwrap();
    for i in 0..longest {
        for life in &lives {
            if let Some(e) = life.get(i) {
                events.push(e.clone());
            }
        }
    }
    events
}

/// What one client has seen of one step.
#[derive(Default)]
struct Seen {
    position: Option<(i64, i64)>,
    hosts: HashMap<i64, i64>,
}

/// The order of host statuses as a step runs.
fn rank(status: i64) -> i64 {
    match status {
        5 => 0,
        7 => 1,
        9 => 2,
        other => panic!("unexpected host status {other}"),
    }
}

fn query(step: i64) -> String {
    format!(
        "bk_scope_type=biz&bk_scope_id=2&job_instance_id={}&step_instance_id={step}&max_host_num_per_group=100",
        step / 100
    )
}

/// One client: polls random live members for random steps until `stop`; returns how many
/// answers it checked, or the first thing it saw go wrong.
async fn client(
    members: Arc<Mutex<Vec<String>>>,
    steps: Vec<i64>,
    stop: Arc<AtomicBool>,
) -> Result<usize, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut seen: HashMap<i64, Seen> = HashMap::new();
    let mut checked = 0;
    while !stop.load(Ordering::Relaxed) {
        let (base, step) = {
            let members = members.lock().unwrap();
            let mut rng = rand::rng();
            let base = members[rng.random_range(0..members.len())].clone();
            (base, steps[rng.random_range(0..steps.len())])
        };
        let url = format!("{base}/api/v3/get_step_instance_status?{}", query(step));
        let Ok(resp) = http.get(&url).send().await else {
            continue; // a member that is down does not answer at all
        };
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Ok(body) = resp.json::<Value>().await else {
            continue; // the member went down mid-answer
        };
        let code = body["code"].as_i64().unwrap_or(-1);
        let s = seen.entry(step).or_default();
        match (status, code) {
            (503, 1240002) => {}
            (200, 1244007) if s.position.is_none() => {}
            (200, 1244007) => {
                return Err(format!(
                    "{base}: step {step} answered 1244007 after it was seen"
                ));
            }
            (200, 0) => {
                let etag = etag.ok_or(format!("{base}: no ETag"))?;
                let inner = etag.trim_start_matches("W/\"").trim_end_matches('"');
                let (p, o) = inner.rsplit_once('-').ok_or("ETag format")?;
                let at = (p.parse::<i64>().unwrap(), o.parse::<i64>().unwrap());
                if let Some(before) = s.position {
                    if before.0 == at.0 && at.1 < before.1 {
                        return Err(format!(
                            "{base}: step {step} went back from {before:?} to {at:?}"
                        ));
                    }
                }
                s.position = Some(at);
                for group in body["data"]["step_result_group_list"].as_array().unwrap() {
                    for host in group["host_result_list"].as_array().unwrap() {
                        let id = host["bk_host_id"].as_i64().unwrap();
                        let r = rank(host["status"].as_i64().unwrap());
                        let before = s.hosts.insert(id, r).unwrap_or(0);
                        if r < before {
                            return Err(format!(
                                "{base}: step {step} host {id} went back from rank {before} to {r}"
                            ));
                        }
                    }
                }
            }
            other => return Err(format!("{base}: step {step} answered {other:?}: {body}")),
        }
        checked += 1;
    }
    Ok(checked)
}

/// An answer without what differs between equal answers (request id, running times).
async fn answer(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let Ok(resp) = http.get(url).send().await else {
        return (0, Value::Null);
    };
    let status = resp.status().as_u16();
    let mut v: Value = resp.json().await.unwrap_or(Value::Null);
    v["job_request_id"] = Value::Null;
    if v["data"].is_object() {
        v["data"]["total_time"] = Value::Null;
        if v["data"]["job_instance"].is_object() {
            v["data"]["job_instance"]["total_time"] = Value::Null;
        }
        if let Some(steps) = v["data"]["step_instance_list"].as_array_mut() {
            for s in steps {
                s["total_time"] = Value::Null;
            }
        }
    }
    (status, v)
}

fn urls(base: &str, steps: &[i64]) -> Vec<String> {
    let mut out: Vec<String> = steps
        .iter()
        .map(|s| format!("{base}/api/v3/get_step_instance_status?{}", query(*s)))
        .collect();
    for job in 1..=JOBS {
        out.push(format!(
            "{base}/api/v3/get_job_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id={job}&return_ip_result=true"
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_sees_a_step_go_back_through_joins_leaves_returns_and_kills() {
    let topic = new_topic("history", PARTITIONS).await;
    let events = workload();
    let steps: Vec<i64> = (1..=JOBS)
        .flat_map(|j| (1..=STEPS_PER_JOB).map(move |n| step_id(j, n)))
        .collect();
    let set = unique_name("history-set");
    let start = |extra: &[&str]| Shard::start(brokers(), &topic, &set, extra);

    // Three members, settled before anything streams.
    let mut a = Some(start(&[]));
    let mut b = Some(start(&[]));
    let mut c = Some(start(&[]));
    let members = Arc::new(Mutex::new(
        [&a, &b, &c]
            .iter()
            .map(|s| s.as_ref().unwrap().base.clone())
            .collect::<Vec<_>>(),
    ));
    let http = reqwest::Client::new();
    let first: Vec<String> = members.lock().unwrap().clone();
    wait_ready(&http, &first).await;

    // Events stream in over ~30 s while four clients poll.
    let producing = {
        let (events, topic) = (events.clone(), topic.clone());
        let rate = (events.len() as u64 / 30).max(1);
        tokio::spawn(async move { produce(&topic, &events, rate).await })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(client(
                Arc::clone(&members),
                steps.clone(),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let churn_started = Instant::now();
    let at =
        |secs: u64| tokio::time::sleep_until((churn_started + Duration::from_secs(secs)).into());

    // A member joins.
    at(4).await;
    let d = start(&[]);
    members.lock().unwrap().push(d.base.clone());
    // One leaves cleanly, and comes back on its own data directory.
    at(10).await;
    let b_base = b.as_ref().unwrap().base.clone();
    members.lock().unwrap().retain(|m| *m != b_base);
    let (b_dir, b_port) = tokio::task::spawn_blocking({
        let b = b.take().unwrap();
        move || b.stop()
    })
    .await
    .unwrap();
    at(15).await;
    b = Some(Shard::start_in(b_dir, b_port, brokers(), &topic, &set, &[]));
    members.lock().unwrap().push(b_base);
    // One is killed.
    at(21).await;
    let c_base = c.as_ref().unwrap().base.clone();
    c.as_ref().unwrap().signal(libc::SIGKILL);
    members.lock().unwrap().retain(|m| *m != c_base);
    drop(c.take());

    producing.await.unwrap();
    let live: Vec<String> = members.lock().unwrap().clone();
    wait_ready(&http, &live).await;
    // The clients go on until every member answers every step.
    let deadline = Instant::now() + Duration::from_secs(90);
    'settling: loop {
        for base in &live {
            for url in urls(base, &steps) {
                if answer(&http, &url).await.0 != 200 {
                    assert!(Instant::now() < deadline, "{url} never answered");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'settling;
                }
            }
        }
        break;
    }
    stop.store(true, Ordering::Relaxed);
    let mut checked = 0;
    for client in clients {
        checked += client.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(checked > 200, "the clients checked only {checked} answers");

    // Every member answers every step and job as one instance fed the same topic.
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.http.auth = stepview::http::AuthMode::Off;
    config.kafka = kafka_settings(&topic);
    config.kafka.ready_max_lag = 0;
    let single = TestService::start(config).await;
    single.wait_readyz(200, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let want: Vec<(u16, Value)> = loop {
        let mut want = Vec::new();
        for url in urls(&single.base, &steps) {
            want.push(answer(&http, &url).await);
        }
        let finished = want.iter().all(|(s, v)| *s == 200 && v["code"] == 0)
            && want
                .iter()
                .filter(|(_, v)| v["data"]["job_instance"].is_object())
                .all(|(_, v)| v["data"]["finished"] == true);
        if finished {
            break want;
        }
        assert!(
            Instant::now() < deadline,
            "the single instance never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for base in &live {
        for (url, want) in urls(base, &steps).iter().zip(&want) {
            assert_eq!(&answer(&http, url).await, want, "{url}");
        }
    }
    drop((a.take(), b.take(), d));
}

/// Waits until every member's `/readyz` answers 200.
async fn wait_ready(http: &reqwest::Client, members: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    for base in members {
        loop {
            let ok = http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "{base} never ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
