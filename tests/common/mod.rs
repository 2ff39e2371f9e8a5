//! Shared test setup: a real stepview (RocksDB in a temp dir, axum on 127.0.0.1:0) driven over
//! HTTP, and a real Kafka-protocol broker process for the tests that need one.

#![allow(dead_code, unused_imports)] // each test file uses its own part of this module

mod process;
mod serve;
mod shard;
mod unique;

pub use process::status_mib;
pub use serve::{kafka_config, replay_digest, reported_lag, spawn_serve, wait_lag_zero};
pub use shard::{Shard, SHARD_SECRET};
pub use unique::{free_port, unique_name};

use serde_json::Value;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use stepview::config::Config;
use stepview::events::Event;
use stepview::http::AppConfig;
use stepview::kafka::KafkaSettings;
use stepview::service::{self, Views};
use tokio::sync::oneshot;

pub const APP: &str = "test-app";
pub const SECRET: &str = "test-secret";
/// An app that may read only `biz:2`.
pub const BIZ2_APP: &str = "biz2-app";

pub fn auth_header(app: &str, secret: &str) -> String {
    format!(r#"{{"bk_app_code":"{app}","bk_app_secret":"{secret}","bk_username":"admin"}}"#)
}

pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut c = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.store.block_cache_mb = stepview::settings::Mebibytes(16);
    c.store.write_buffer_mb = stepview::settings::Mebibytes(32);
    c.apps = vec![
        AppConfig {
            code: APP.into(),
            secret_sha256: Some(sha256_hex(SECRET)),
            scopes: vec!["*".into()],
        },
        AppConfig {
            code: BIZ2_APP.into(),
            secret_sha256: Some(sha256_hex(SECRET)),
            scopes: vec!["biz:2".into()],
        },
    ];
    c
}

/// A running service in this process, on its own data directory.
pub struct TestService {
    pub config: Config,
    pub views: Views,
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub client: reqwest::Client,
}

impl TestService {
    pub async fn start(config: Config) -> TestService {
        let views = Views::open(&config).expect("open views");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let task = {
            let (views, config) = (views.clone(), config.clone());
            tokio::spawn(async move {
                service::run(views, &config, listener, async {
                    let _ = rx.await;
                })
                .await
            })
        };
        TestService {
            config,
            views,
            base,
            stop: Some(tx),
            task: Some(task),
            client: reqwest::Client::new(),
        }
    }

    pub fn apply(&self, events: &[Event]) {
        self.views
            .sink
            .applier
            .apply(&stepview::apply::Batch::local(events))
            .expect("apply");
    }

    pub async fn stop(mut self) -> Config {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
        let config = self.config.clone();
        drop(self);
        config
    }

    /// Stops and starts again on the same data directory.
    pub async fn restart(self) -> TestService {
        let config = self.stop().await;
        TestService::start(config).await
    }

    /// GET the API with `query` and the test app's credentials; the status and the JSON body.
    pub async fn get(&self, query: &str) -> (u16, Value) {
        self.get_with(
            query,
            &[("X-Bkapi-Authorization", &auth_header(APP, SECRET))],
        )
        .await
    }

    pub async fn get_with(&self, query: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        self.request("get_step_instance_status", query, headers)
            .await
    }

    /// GET another API route (`/api/v3/{api}`) with the test app's credentials.
    pub async fn get_with_route(&self, api: &str, query: &str) -> (u16, Value) {
        let auth = auth_header(APP, SECRET);
        self.request(api, query, &[("X-Bkapi-Authorization", &auth)])
            .await
    }

    async fn request(&self, api: &str, query: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self
            .client
            .get(format!("{}/api/v3/{api}?{query}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = resp.json().await.expect("JSON body");
        assert_eq!(ct.as_deref(), Some("application/json; charset=utf-8"));
        (status, body)
    }

    /// GET `path` (no credentials): the status and the body as text.
    pub async fn get_path(&self, path: &str) -> (u16, String) {
        let resp = self.client.get(format!("{}{path}", self.base)).send().await;
        let resp = resp.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// The Prometheus exposition of `/metrics`.
    pub async fn scrape(&self) -> String {
        self.get_path("/metrics").await.1
    }

    /// The value of one series (name with its labels, as exposed), if it is exposed.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.scrape().await, series)
    }

    /// Polls `/readyz` until it answers `status`; returns what it said on the way.
    pub async fn wait_readyz(&self, status: u16, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let (s, text) = self.get_path("/readyz").await;
            if seen.last() != Some(&text) {
                seen.push(text);
            }
            if s == status {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never answered {status}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `data` of a successful answer (panics with the body otherwise).
    pub async fn data(&self, query: &str) -> Value {
        let (status, body) = self.get(query).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["code"], 0, "{body}");
        body["data"].clone()
    }
}

/// A Kafka-protocol broker for the tests: `STEPVIEW_TEST_BROKERS` when set (the README's test
/// command starts one), else a `tansu` process started here on a free port.
pub fn brokers() -> &'static str {
    static BROKERS: OnceLock<String> = OnceLock::new();
    BROKERS.get_or_init(|| {
        if let Ok(b) = std::env::var("STEPVIEW_TEST_BROKERS") {
            return b;
        }
        // The broker dies with the test process: PR_SET_PDEATHSIG fires when the spawning
        // *thread* ends, so spawn it from a thread that lives as long as the process.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let broker = Broker::start();
            tx.send(broker.addr.clone()).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().unwrap()
    })
}

/// A `tansu` broker process of a test's own (for tests that freeze or stop their broker);
/// killed when dropped.
pub struct Broker {
    pub addr: String,
    child: std::process::Child,
}

impl Broker {
    /// Starts a broker on a free port and waits until it accepts connections. Call it from a
    /// thread that outlives the broker (not from `spawn_blocking`).
    pub fn start() -> Broker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let mut cmd = std::process::Command::new("tansu");
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("tansu not found: run ops/broker.sh install, or set STEPVIEW_TEST_BROKERS");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Broker {
            addr: format!("127.0.0.1:{port}"),
            child,
        }
    }

    /// Sends `signal` (SIGSTOP, SIGCONT …) to the broker process.
    pub fn signal(&self, signal: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kafka settings for `topic` on the shared test broker.
pub fn kafka_settings(topic: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: brokers().to_owned(),
        topic: topic.to_owned(),
        ..KafkaSettings::default()
    }
}

/// Creates `topic` (with the default partition count) on the shared test broker.
pub async fn create_topic(topic: &str) {
    let settings = kafka_settings(topic);
    stepview::kafka::ensure_topics(&settings, &[topic], stepview::kafka::DEFAULT_PARTITIONS)
        .await
        .unwrap();
}

/// A new topic named after `prefix`, of `partitions` partitions, on the shared test broker.
pub async fn new_topic(prefix: &str, partitions: i32) -> String {
    let topic = unique_name(prefix);
    stepview::kafka::ensure_topics(&kafka_settings(&topic), &[&topic], partitions)
        .await
        .unwrap();
    topic
}

/// How many partitions the instance at `base` reads (its per-partition lag series; 0 while it
/// does not listen).
pub async fn partitions_read(client: &reqwest::Client, base: &str) -> usize {
    scrape_at(client, base)
        .await
        .lines()
        .filter(|l| l.starts_with("stepview_consumer_lag_messages{"))
        .count()
}

/// Produces `events` to `topic` on the shared test broker (keyed as events.md says), at `rate`
/// events a second (0: at once), and returns once the broker has them all.
pub async fn produce(topic: &str, events: &[Event], rate: u64) {
    let (messages, settings) = (
        stepview::simulate::to_messages(events),
        kafka_settings(topic),
    );
    tokio::task::spawn_blocking(move || {
        stepview::simulate::produce(&settings, &messages, rate, false).unwrap()
    })
    .await
    .unwrap();
}

/// The `/metrics` exposition of the instance at `base` (empty while it does not answer).
pub async fn scrape_at(client: &reqwest::Client, base: &str) -> String {
    match client.get(format!("{base}/metrics")).send().await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A series' value at `base` (0 when it is not exposed, or the instance not listening yet).
pub async fn metric_at(client: &reqwest::Client, base: &str, series: &str) -> f64 {
    metric_value(&scrape_at(client, base).await, series).unwrap_or(0.0)
}

/// The value of one series in a Prometheus exposition, if it is there.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

/// An answer's `data` with `total_time` cleared: for a running step it is "now − start", which
/// moves between two otherwise equal answers.
/// An answer without what differs from one request to the next: the request id, and the
/// running time of whatever is still running (no `end_time`).
pub fn settled(mut answer: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(o) => {
                if o.get("end_time").is_some_and(Value::is_null) && o.contains_key("total_time") {
                    o.insert("total_time".into(), Value::Null);
                }
                o.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    answer["job_request_id"] = Value::Null;
    walk(&mut answer);
    answer
}

pub fn without_total_time(mut data: Value) -> Value {
    data["total_time"] = Value::Null;
    data
}

/// Every (job, step) that has a `step` event in `events`, in order, once each.
pub fn steps_of(events: &[Event]) -> Vec<(i64, i64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Step(s) => Some((s.job_instance_id, s.step_instance_id)),
            _ => None,
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

// Event builders: the fields a test cares about, sensible values for the rest.

pub const JOB: i64 = 1;

pub fn step(id: i64, step_type: i32, status: i32, execute_count: i32, version: i64) -> Event {
    Event::Step(stepview::events::StepEvent {
        job_instance_id: JOB,
        step_instance_id: id,
        bk_scope_type: stepview::events::ScopeType::Biz,
        bk_scope_id: "2".into(),
        name: format!("step {id}"),
        step_type,
        status,
        execute_count,
        create_time: 1_700_000_000_000,
        start_time: Some(1_700_000_001_000),
        end_time: (status == 3 || status == 4).then_some(1_700_000_011_000),
        total_time: None,
        step_order: None,
        version,
    })
}

/// Targets of one retry: (host id, batch, ip).
pub fn targets(step: i64, execute_count: i32, hosts: &[(i64, i32, &str)]) -> Event {
    Event::StepTargets(stepview::events::StepTargets {
        job_instance_id: JOB,
        step_instance_id: step,
        execute_count,
        chunk: 0,
        chunk_count: 1,
        hosts: hosts
            .iter()
            .map(|(id, batch, ip)| stepview::events::TargetHost {
                bk_host_id: *id,
                batch: *batch,
                ip: Some(ip.to_string()),
                ipv6: None,
                bk_agent_id: Some(format!("agent-{id}")),
                bk_cloud_id: Some(0),
                bk_cloud_name: Some("Default Area".into()),
            })
            .collect(),
    })
}

pub fn result(
    step: i64,
    execute_count: i32,
    batch: i32,
    host: i64,
    status: i32,
    tag: &str,
    version: i64,
) -> stepview::events::HostResult {
    stepview::events::HostResult {
        job_instance_id: JOB,
        step_instance_id: step,
        execute_count,
        batch,
        bk_host_id: host,
        ip: None,
        ipv6: None,
        bk_agent_id: None,
        bk_cloud_id: None,
        bk_cloud_name: None,
        status,
        tag: (!tag.is_empty()).then(|| tag.to_owned()),
        exit_code: (status == 9).then_some(0),
        error_code: 0,
        start_time: Some(1_700_000_002_000),
        end_time: (status != 7).then_some(1_700_000_003_000),
        total_time: (status != 7).then_some(1_000),
        version,
        log_execute_count: None,
    }
}

pub fn log(
    step: i64,
    execute_count: i32,
    batch: i32,
    host: i64,
    offset: i64,
    content: &str,
) -> Event {
    Event::HostLog(stepview::events::HostLog {
        step_instance_id: step,
        execute_count,
        batch,
        bk_host_id: host,
        offset,
        content: content.into(),
    })
}

/// The query string naming `step` in scope biz:2, job `JOB`, plus `extra`.
pub fn q(step: i64, extra: &str) -> String {
    let base =
        format!("bk_scope_type=biz&bk_scope_id=2&job_instance_id={JOB}&step_instance_id={step}");
    if extra.is_empty() {
        base
    } else {
        format!("{base}&{extra}")
    }
}

/// Groups of an answer as (status, tag, host_size, [host ids listed]).
pub type Groups = Vec<(i64, String, i64, Vec<i64>)>;

/// The groups of an answer's `data`.
pub fn groups(data: &Value) -> Groups {
    data["step_result_group_list"]
        .as_array()
        .expect("group list")
        .iter()
        .map(|g| {
            (
                g["result_type"].as_i64().unwrap(),
                g["tag"].as_str().unwrap().to_owned(),
                g["host_size"].as_i64().unwrap(),
                g["host_result_list"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| h["bk_host_id"].as_i64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

/// A model of api.md's grouping, folded straight from events: what `groups()` of an answer must
/// be for `step` with these parameters (independent of stepview's index and store). `None` when
/// the step has no `step` event.
pub fn model_groups(
    events: &[Event],
    step: i64,
    execute_count: Option<i32>,
    batch: Option<i32>,
    cap: Option<usize>,
    status: Option<i64>,
) -> Option<Groups> {
    use std::collections::BTreeMap;
    /// (version, status, tag) of a row; version `None`: named by targets only.
    type Row = (Option<i64>, i64, String);
    let mut record: Option<(i64, i32)> = None; // (version, execute_count)
    let mut rows: BTreeMap<(i32, i32, i64), Row> = BTreeMap::new(); // by (retry, batch, host)
    for e in events {
        match e {
            Event::Step(s)
                if s.step_instance_id == step && record.is_none_or(|(v, _)| s.version > v) =>
            {
                record = Some((s.version, s.execute_count));
            }
            Event::StepTargets(t) if t.step_instance_id == step => {
                for h in &t.hosts {
                    rows.entry((t.execute_count, h.batch, h.bk_host_id))
                        .or_insert((None, 5, String::new()));
                }
            }
            Event::HostResult(r) if r.step_instance_id == step => {
                let row = rows
                    .entry((r.execute_count, r.batch, r.bk_host_id))
                    .or_insert((None, 5, String::new()));
                if row.0.is_none_or(|v| r.version > v) {
                    *row = (
                        Some(r.version),
                        r.status.into(),
                        r.tag.clone().unwrap_or_default(),
                    );
                }
            }
            _ => {}
        }
    }
    let (_, latest) = record?;
    let ec = execute_count.unwrap_or(latest);
    let mut groups: BTreeMap<(i64, String), Vec<(i64, i32)>> = BTreeMap::new();
    for ((row_ec, row_batch, host), (_, status, tag)) in &rows {
        if *row_ec == ec && batch.is_none_or(|b| b == *row_batch) {
            groups
                .entry((*status, tag.clone()))
                .or_default()
                .push((*host, *row_batch));
        }
    }
    Some(
        groups
            .into_iter()
            .map(|((s, tag), mut hosts)| {
                hosts.sort();
                let listed = if status.is_none_or(|want| want == s) {
                    hosts
                        .iter()
                        .take(cap.unwrap_or(usize::MAX))
                        .map(|h| h.0)
                        .collect()
                } else {
                    Vec::new()
                };
                (s, tag, hosts.len() as i64, listed)
            })
            .collect(),
    )
}
