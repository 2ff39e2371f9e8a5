//! Checkpoints of a live instance (architecture.md, "Storage operations"). Taken on the admin's
//! request while events stream in, a checkpoint is a complete data directory with its offsets:
//! its digest, read while the instance runs on, equals the views of exactly the events before
//! those offsets; a replica started on a copy applies only the events after them and then
//! answers every step like the live instance. The route wants the admin token (an app's
//! credentials are not admin rights), keeps the newest `store.checkpoint_keep`, creates its
//! directories 0700, and reports what the checkpoints cost in `/metrics`.

mod common;

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use stepview::events::Event;
use stepview::simulate::{self, Workload};

const PARTITIONS: i32 = 4;
const ADMIN_TOKEN: &str = "an admin token for the tests";

async fn make_checkpoint(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = client.post(format!("{base}/admin/checkpoint"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let resp = request.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// `stepview digest` of `dir`, as a process.
fn digest_of(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_stepview"))
        .arg("digest")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The messages of each partition of `topic` before its offset in `until`, as JSON lines.
fn messages_before(topic: &str, until: &[(i32, i64)]) -> String {
    let consumer: BaseConsumer =
        stepview::kafka::consumer_config(&kafka_settings(topic), &unique_name("prefix"), 1000)
            .create()
            .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, _) in until {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut lines = String::new();
    let mut wanted: i64 = until.iter().map(|(_, next)| next).sum();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while wanted > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{wanted} messages unread"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        let next = until
            .iter()
            .find(|(p, _)| *p == message.partition())
            .unwrap()
            .1;
        if message.offset() < next {
            lines.push_str(std::str::from_utf8(message.payload().unwrap()).unwrap());
            lines.push('\n');
            wanted -= 1;
        }
    }
    lines
}

/// Every step's full answer and every job's, from the instance at `base`.
async fn every_answer(client: &reqwest::Client, base: &str, events: &[Event]) -> Vec<Value> {
    let mut out = Vec::new();
    let steps = steps_of(events);
    let mut jobs: Vec<i64> = steps.iter().map(|(job, _)| *job).collect();
    jobs.dedup();
    let scope = "bk_scope_type=biz&bk_scope_id=2";
    let asks = steps
        .iter()
        .map(|(job, step)| {
            format!(
                "get_step_instance_status?{scope}&job_instance_id={job}&step_instance_id={step}"
            )
        })
        .chain(jobs.iter().map(|job| {
            format!("get_job_instance_status?{scope}&job_instance_id={job}&return_ip_result=true")
        }));
    for ask in asks {
        let resp = client
            .get(format!("{base}/api/v3/{ask}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{ask}");
        out.push(settled(resp.json().await.unwrap()));
    }
    out
}

/// The sum of `stepview_events_total` over its kinds and outcomes.
async fn events_counted(client: &reqwest::Client, base: &str) -> f64 {
    scrape_at(client, base)
        .await
        .lines()
        .filter(|l| l.starts_with("stepview_events_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..600 {
        if let Ok(resp) = client.get(format!("{base}/readyz")).send().await {
            if resp.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_taken_while_events_stream_in_is_a_replica_that_resumes_from_its_offsets() {
    let topic = new_topic("checkpoint", PARTITIONS).await;
    let events = simulate::generate(&Workload {
        jobs: 12,
        steps_per_job: 3,
        hosts: 60,
        batches: 2,
        first_job_id: 1,
        ..Workload::default()
    });
    let (before, during) = events.split_at(events.len() / 3);
    produce(&topic, before, 0).await;

    let work = tempfile::tempdir().unwrap();
    let (live_dir, checkpoints) = (work.path().join("live"), work.path().join("checkpoints"));
    let live_port = free_port();
    let flags = [
        "--admin-token-sha256",
        &sha256_hex(ADMIN_TOKEN),
        "--checkpoint-dir",
        checkpoints.to_str().unwrap(),
        "--ready-max-lag",
        "0",
    ];
    let mut live = spawn_serve(&live_dir, brokers(), &topic, live_port, &flags);
    let live_base = format!("http://127.0.0.1:{live_port}");
    let client = reqwest::Client::new();
    wait_ready(&client, &live_base).await;

    // The rest streams in while the checkpoint is taken.
    let streaming = tokio::spawn({
        let (topic, during) = (topic.clone(), during.to_vec());
        async move { produce(&topic, &during, 4000).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, made) = make_checkpoint(&client, &live_base, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{made}");
    eprintln!("checkpoint: {made}");
    let path = Path::new(made["path"].as_str().unwrap()).to_owned();
    assert_eq!(path.parent().unwrap(), checkpoints.canonicalize().unwrap());
    for dir in [&checkpoints, &path] {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    let offsets: Vec<(i32, i64)> = made["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(o["topic"], topic.as_str());
            (
                o["partition"].as_i64().unwrap() as i32,
                o["next_offset"].as_i64().unwrap(),
            )
        })
        .collect();
    let applied_before: i64 = offsets.iter().map(|(_, next)| next).sum();
    assert!(
        applied_before >= before.len() as i64 && applied_before < events.len() as i64,
        "taken while events streamed in: {applied_before} of {} applied",
        events.len()
    );

    // Its digest, read while the instance runs on, is the views of exactly the events before
    // its offsets.
    let checkpoint_digest = digest_of(&path);
    assert!(
        live.try_wait().unwrap().is_none(),
        "the live instance runs on"
    );
    let prefix = work.path().join("prefix.jsonl");
    std::fs::write(&prefix, messages_before(&topic, &offsets)).unwrap();
    let loaded = work.path().join("loaded");
    let load = Command::new(env!("CARGO_BIN_EXE_stepview"))
        .args(["load", "--data-dir"])
        .arg(&loaded)
        .arg(&prefix)
        .output()
        .unwrap();
    assert!(load.status.success());
    assert_eq!(checkpoint_digest, digest_of(&loaded));

    // A replica on a copy resumes from the checkpoint's offsets.
    streaming.await.unwrap();
    wait_lag_zero(live_port, PARTITIONS as usize).await;
    let replica_dir = work.path().join("replica");
    std::fs::create_dir(&replica_dir).unwrap();
    for entry in std::fs::read_dir(&path).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), replica_dir.join(entry.file_name())).unwrap();
    }
    let replica_port = free_port();
    let mut replica = spawn_serve(
        &replica_dir,
        brokers(),
        &topic,
        replica_port,
        &["--ready-max-lag", "0"],
    );
    let replica_base = format!("http://127.0.0.1:{replica_port}");
    wait_ready(&client, &replica_base).await;
    wait_lag_zero(replica_port, PARTITIONS as usize).await;
    assert_eq!(
        events_counted(&client, &replica_base).await,
        (events.len() as i64 - applied_before) as f64,
        "the replica applied only the events after the checkpoint"
    );
    assert_eq!(
        every_answer(&client, &replica_base, &events).await,
        every_answer(&client, &live_base, &events).await
    );
    for child in [&mut live, &mut replica] {
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(digest_of(&replica_dir), digest_of(&live_dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_route_wants_the_admin_token_and_keeps_the_newest() {
    let work = tempfile::tempdir().unwrap();
    let checkpoints = work.path().join("checkpoints");
    let mut config = test_config(&work.path().join("data"));
    config.http.admin_token_sha256 = Some(sha256_hex(ADMIN_TOKEN));
    config.store.checkpoint_dir = Some(checkpoints.clone());
    config.store.checkpoint_keep = 2;
    let svc = TestService::start(config).await;
    svc.apply(&simulate::generate(&Workload {
        jobs: 1,
        steps_per_job: 2,
        hosts: 20,
        ..Workload::default()
    }));

    // Refused without the admin token: none, another, an app's credentials.
    assert_eq!(make_checkpoint(&svc.client, &svc.base, None).await.0, 401);
    assert_eq!(
        make_checkpoint(&svc.client, &svc.base, Some("guess"))
            .await
            .0,
        401
    );
    let as_app = svc
        .client
        .post(format!("{}/admin/checkpoint", svc.base))
        .header("X-Bkapi-Authorization", auth_header(APP, SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(as_app.status(), 401);
    assert_eq!(
        as_app.headers()["www-authenticate"],
        "Bearer",
        "says what it wants"
    );
    let got = svc
        .client
        .get(format!("{}/admin/checkpoint", svc.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 405);
    assert!(!checkpoints.exists(), "nothing made");

    // Three made; the newest two stay.
    let mut names = Vec::new();
    for _ in 0..3 {
        let (status, made) = make_checkpoint(&svc.client, &svc.base, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 200, "{made}");
        assert!(made["bytes"].as_u64().unwrap() > 0 && made["files"].as_u64().unwrap() > 0);
        names.push(made["name"].as_str().unwrap().to_owned());
        if names.len() == 3 {
            assert_eq!(made["removed"], serde_json::json!([names[0]]));
        }
    }
    let mut kept: Vec<String> = std::fs::read_dir(&checkpoints)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept, names[1..]);
    let digest = svc.views.store.digest().unwrap();
    for name in &kept {
        assert_eq!(digest_of(&checkpoints.join(name)), digest);
    }
    assert_eq!(svc.metric("stepview_checkpoints").await, Some(2.0));
    assert!(
        svc.metric("stepview_checkpoints_bytes{files=\"all\"}")
            .await
            .unwrap()
            > 0.0
    );
    let last = svc
        .metric("stepview_checkpoint_last_timestamp_seconds")
        .await
        .unwrap();
    assert!(
        (stepview::now_ms() as f64 / 1000.0 - last).abs() < 60.0,
        "{last}"
    );
    assert_eq!(
        svc.metric("stepview_checkpoints_made_total").await,
        Some(3.0)
    );
    svc.stop().await;

    // Without an admin token configured, nobody may.
    let other = tempfile::tempdir().unwrap();
    let svc = TestService::start(test_config(other.path())).await;
    let (status, body) = make_checkpoint(&svc.client, &svc.base, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 403);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("http.admin_token_sha256"));
}

#[test]
fn a_checkpoint_directory_inside_the_data_directory_is_refused_at_start() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_stepview"))
        .args([
            "serve",
            "--auth",
            "off",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .arg("--checkpoint-dir")
        .arg(data.join("checkpoints"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("store.checkpoint_dir") && stderr.contains("must not contain"),
        "{stderr}"
    );
}
