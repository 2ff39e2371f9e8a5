//! Shards (cluster.md): instances of one set divide a topic's partitions and forward queries to
//! the owner. Every shard answers every step as a single instance fed the same events; a member
//! joining takes its share and one leaving cleanly hands it back, with no 503 and no wrong
//! answer; a member killed is replaced within seconds, with only correct answers or 503s
//! meanwhile, never 1244007 for a step that exists.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use stepview::config::KafkaConfig;
use stepview::events::Event;
use stepview::simulate::{self, Workload};

const PARTITIONS: i32 = 8;

struct Shard {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Shard {
    fn start(topic: &str, set: &str) -> Shard {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_stepview"))
            .args(["serve", "--auth", "false", "--ready-max-lag", "0"])
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .args(["--brokers", brokers(), "--topic", topic])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--cluster", set, "--advertise", &base])
            .env("STEPVIEW_LOG", "warn")
            .spawn()
            .unwrap();
        Shard {
            child,
            base,
            _dir: dir,
        }
    }

    fn signal(&self, signal: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every step of the workload with the query asked of it.
fn queries(events: &[Event]) -> Vec<(i64, String)> {
    steps_of(events)
        .into_iter()
        .map(|(job, step)| {
            let q = format!(
                "bk_scope_type=biz&bk_scope_id=2&job_instance_id={job}&step_instance_id={step}&max_host_num_per_group=3"
            );
            (step, q)
        })
        .collect()
}

/// An answer: (HTTP status, body with `total_time` cleared and no request id).
async fn ask(client: &reqwest::Client, base: &str, query: &str) -> (u16, Value) {
    let resp = client
        .get(format!("{base}/api/v3/get_step_instance_status?{query}"))
        .send()
        .await;
    let Ok(resp) = resp else {
        return (0, Value::Null);
    };
    let status = resp.status().as_u16();
    let mut body: Value = resp.json().await.unwrap_or(Value::Null);
    if body["data"].is_object() {
        body["data"] = without_total_time(body["data"].take());
    }
    body["job_request_id"] = Value::Null;
    (status, body)
}

/// The expected answers, from a single instance fed the same events.
async fn expected(events: &[Event], qs: &[(i64, String)]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.http.auth = false;
    let single = TestService::start(config).await;
    single.apply(events);
    let mut out = Vec::new();
    for (_, q) in qs {
        out.push(ask(&single.client, &single.base, q).await.1);
    }
    out
}

/// Asks every shard every query once; how many answers were right, and the wrong ones (a 503
/// only where `unavailable_ok`).
async fn round(
    client: &reqwest::Client,
    shards: &[&Shard],
    qs: &[(i64, String)],
    want: &[Value],
    unavailable_ok: bool,
) -> (usize, Vec<String>) {
    let (mut right, mut wrong) = (0, Vec::new());
    for shard in shards {
        for ((step, q), want) in qs.iter().zip(want) {
            let (status, body) = ask(client, &shard.base, q).await;
            if status == 200 && &body == want {
                right += 1;
            } else if status == 503 && unavailable_ok {
                assert_eq!(body["code"], 1240002);
            } else if status == 0 && unavailable_ok {
                // Not listening yet (starting).
            } else {
                wrong.push(format!("{} step {step}: {status} {body}", shard.base));
            }
        }
    }
    (right, wrong)
}

/// How many partitions a shard reads (its per-partition lag series).
async fn partitions_read(client: &reqwest::Client, base: &str) -> usize {
    let text = match client.get(format!("{base}/metrics")).send().await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .filter(|l| l.starts_with("stepview_consumer_lag_messages{"))
        .count()
}

/// A series' value on a shard (0 when it is not there, or the shard not listening yet).
async fn metric_of(client: &reqwest::Client, base: &str, series: &str) -> f64 {
    let text = match client.get(format!("{base}/metrics")).send().await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    metric_value(&text, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_divide_the_partitions_and_answer_every_step_through_joins_leaves_and_kills() {
    let topic = unique_name("shards");
    let settings = KafkaConfig {
        brokers: brokers().to_owned(),
        ..KafkaConfig::default()
    };
    stepview::ingest::kafka::ensure_topics(&settings, &[&topic], PARTITIONS)
        .await
        .unwrap();
    let events = simulate::generate(&Workload {
        jobs: 6,
        steps_per_job: 3,
        hosts: 60,
        batches: 2,
        first_job_id: 1,
        ..Workload::default()
    });
    let messages = simulate::to_messages(&events);
    let t = topic.clone();
    tokio::task::spawn_blocking(move || simulate::produce(brokers(), &t, &messages, 0, false))
        .await
        .unwrap()
        .unwrap();
    let qs = queries(&events);
    let want = expected(&events, &qs).await;
    let set = unique_name("set");
    let client = reqwest::Client::new();

    // Three shards: each, once settled, answers every step as a single instance does.
    let shards: Vec<Shard> = (0..3).map(|_| Shard::start(&topic, &set)).collect();
    let all: Vec<&Shard> = shards.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (right, wrong) = round(&client, &all, &qs, &want, true).await;
        assert!(wrong.is_empty(), "wrong answers while settling: {wrong:#?}");
        // Settled: each partition read by one shard only (each first reads all, alone).
        let mut read = 0;
        for s in &all {
            read += partitions_read(&client, &s.base).await;
        }
        if right == all.len() * qs.len() && read == PARTITIONS as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {right} right answers"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut forwarded = 0.0;
    for s in &all {
        forwarded += metric_of(
            &client,
            &s.base,
            r#"stepview_http_forwarded_total{outcome="ok"}"#,
        )
        .await;
        assert_eq!(
            metric_of(&client, &s.base, "stepview_cluster_members").await,
            2.0
        );
    }
    assert!(forwarded > 0.0, "no answer was forwarded");
    // The job API gathers a job's steps from every shard.
    let job = client
        .get(format!(
            "{}/api/v3/get_job_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id=1",
            shards[0].base
        ))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let ids: Vec<i64> = job["data"]["step_instance_list"]
        .as_array()
        .unwrap_or_else(|| panic!("{job}"))
        .iter()
        .map(|s| s["step_instance_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [101, 102, 103]);

    // A fourth joins while clients ask: it takes its share, with no 503 and no wrong answer.
    let fourth = Shard::start(&topic, &set);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, wrong) = round(&client, &all, &qs, &want, false).await;
        assert!(wrong.is_empty(), "while a member joined: {wrong:#?}");
        let served = metric_of(&client, &fourth.base, "stepview_ready").await;
        let members = metric_of(&client, &all[0].base, "stepview_cluster_members").await;
        let (right, _) = round(&client, &[&fourth], &qs, &want, true).await;
        if served == 1.0 && members == 3.0 && right == qs.len() {
            break;
        }
        assert!(Instant::now() < deadline, "the fourth never took its share");
    }
    // It leaves cleanly (SIGTERM): its share goes back, again with no 503.
    fourth.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, wrong) = round(&client, &all, &qs, &want, false).await;
        assert!(wrong.is_empty(), "while a member left: {wrong:#?}");
        if metric_of(&client, &all[0].base, "stepview_cluster_members").await == 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the fourth never left");
    }
    drop(fourth);

    // One is killed: within seconds its partitions have new owners; meanwhile only right
    // answers or 503s, never a wrong one (1244007 for an existing step included).
    shards[2].signal(libc::SIGKILL);
    let survivors = [&shards[0], &shards[1]];
    let killed = Instant::now();
    let recovered = loop {
        let (right, wrong) = round(&client, &survivors, &qs, &want, true).await;
        assert!(wrong.is_empty(), "after a kill: {wrong:#?}");
        if right == survivors.len() * qs.len() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("all answers right again {recovered:?} after the kill");
    let (right, wrong) = round(&client, &survivors, &qs, &want, false).await;
    assert!(wrong.is_empty() && right == survivors.len() * qs.len());
}
