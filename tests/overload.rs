//! Nothing a client sends can stall or starve the service: expensive queries run a few at a
//! time on the blocking pool, with a deadline, and stop when their client goes away; `/healthz`
//! and cheap queries stay fast meanwhile; `/metrics` can be closed to strangers.

mod common;

use common::*;
use std::time::{Duration, Instant};
use stepview::events::Event;

const BIG: i64 = 700;
const SMALL: i64 = 701;

/// A step of `hosts` hosts, each with a result and (for script steps) `log_bytes` of output.
fn big_step(id: i64, hosts: i64, log_bytes: usize) -> Vec<Event> {
    let ips: Vec<String> = (0..hosts)
        .map(|h| format!("10.{}.{}.{}", h >> 16, (h >> 8) & 0xff, h & 0xff))
        .collect();
    let mut events = vec![step(id, 1, 2, 0, 1)];
    for chunk in (1..=hosts).collect::<Vec<_>>().chunks(10_000) {
        let targets_of: Vec<(i64, i32, &str)> = chunk
            .iter()
            .map(|h| (*h, 0, ips[*h as usize - 1].as_str()))
            .collect();
        events.push(targets(id, 0, &targets_of));
    }
    let output = "line of output\n".repeat(log_bytes / 15 + 1);
    for h in 1..=hosts {
        let status = [9, 9, 9, 104, 7][h as usize % 5];
        events.push(Event::HostResult(result(id, 0, 0, h, status, "", 1)));
        if log_bytes > 0 {
            events.push(log(id, 0, 0, h, 0, &output[..log_bytes]));
        }
    }
    events
}

async fn service_with(
    f: impl FnOnce(&mut stepview::config::Config),
) -> (tempfile::TempDir, TestService) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    f(&mut config);
    let svc = TestService::start(config).await;
    (dir, svc)
}

fn p95(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() - 1) * 95 / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_capped_queries_stay_fast_while_16_clients_scan_a_30000_host_step() {
    let (_dir, svc) = service_with(|_| {}).await;
    for batch in big_step(BIG, 30_000, 0).chunks(5000) {
        svc.apply(batch);
    }
    svc.apply(&big_step(SMALL, 100, 0));
    let scan = q(BIG, "search_ip=10.&max_host_num_per_group=50");
    let capped = q(SMALL, "max_host_num_per_group=10");
    let full = svc.data(&scan).await;
    let sizes: i64 = groups(&full).iter().map(|g| g.2).sum();
    assert_eq!(sizes, 30_000, "the scan matches every host");

    let until = Instant::now() + Duration::from_secs(8);
    let scanners: Vec<_> = (0..16)
        .map(|_| {
            let (client, url) = (
                svc.client.clone(),
                format!("{}/api/v3/get_step_instance_status?{scan}", svc.base),
            );
            tokio::spawn(async move {
                let mut answered = 0;
                while Instant::now() < until {
                    let resp = client
                        .get(&url)
                        .header("X-Bkapi-Authorization", auth_header(APP, SECRET))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    let body: serde_json::Value = resp.json().await.unwrap();
                    assert_eq!(body["code"], 0, "{body}");
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut health, mut cheap) = (Vec::new(), Vec::new());
    while Instant::now() < until {
        let t = Instant::now();
        assert_eq!(svc.get_path("/healthz").await.0, 200);
        health.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(svc.get(&capped).await.1["code"], 0);
        cheap.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut scans = 0;
    for s in scanners {
        scans += s.await.unwrap();
    }
    let (health, cheap) = (p95(health), p95(cheap));
    eprintln!(
        "{scans} full scans; /healthz p95 {health:?}; capped query of another step p95 {cheap:?}"
    );
    assert!(scans >= 16, "every scanner was answered");
    assert!(
        health < Duration::from_millis(250),
        "/healthz p95 {health:?}"
    );
    assert!(
        cheap < Duration::from_millis(250),
        "capped query p95 {cheap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_its_deadline_is_answered_503_and_stopped() {
    let (_dir, svc) =
        service_with(|c| c.http.query_timeout_ms = stepview::settings::Millis(1)).await;
    for batch in big_step(BIG, 20_000, 2_000).chunks(5000) {
        svc.apply(batch);
    }
    let resp = svc
        .client
        .get(format!(
            "{}/api/v3/get_step_instance_status?{}",
            svc.base,
            q(BIG, "keyword=never-there")
        ))
        .header("X-Bkapi-Authorization", auth_header(APP, SECRET))
        .header("Blueking-Language", "en")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 1240002);
    assert_eq!(body["result"], false);
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("within 1 ms"), "{message}");
    let series = r#"stepview_http_queries_abandoned_total{reason="timeout"}"#;
    assert_eq!(svc.metric(series).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_stops_its_scan_and_frees_its_turn() {
    // One turn for expensive queries: if a scan whose client left kept it, the next would wait.
    let (_dir, svc) = service_with(|c| c.http.max_expensive_queries = 1).await;
    for batch in big_step(BIG, 30_000, 8_000).chunks(2000) {
        svc.apply(batch);
    }
    // The impatient client asks another keyword than the timed scan below, whose answer the
    // answer cache will hold.
    let url = format!(
        "{}/api/v3/get_step_instance_status?{}",
        svc.base,
        q(BIG, "keyword=also-never-there")
    );
    // The full keyword scan of 240 MB of output, timed once to the end.
    let t = Instant::now();
    let (_, body) = svc.get(&q(BIG, "keyword=never-there")).await;
    let full = t.elapsed();
    assert_eq!(body["code"], 0);
    // Now a client that gives up after 50 ms: its scan stops, and the one turn is free again.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let gone = impatient
        .get(&url)
        .header("X-Bkapi-Authorization", auth_header(APP, SECRET))
        .send()
        .await;
    assert!(gone.is_err(), "the client timed out");
    let series = r#"stepview_http_queries_abandoned_total{reason="client_gone"}"#;
    let deadline = Instant::now() + Duration::from_secs(5);
    while svc.metric(series).await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the server never saw the client go"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = Instant::now();
    let (_, body) = svc
        .get(&q(BIG, "search_ip=10.0.0.1&max_host_num_per_group=1"))
        .await;
    assert_eq!(body["code"], 0);
    eprintln!(
        "full keyword scan {full:?}; a search right after a client left: {:?}",
        t.elapsed()
    );
    assert!(
        t.elapsed() < full,
        "the next expensive query waited for the abandoned scan ({:?} vs {full:?})",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_answer_to_an_expensive_query_waits_for_no_turn() {
    // One turn for expensive queries, and four keyword scans queued for it.
    let (_dir, svc) = service_with(|c| c.http.max_expensive_queries = 1).await;
    for batch in big_step(BIG, 30_000, 8_000).chunks(2000) {
        svc.apply(batch);
    }
    let kept = q(BIG, "search_ip=10.0.0.1&max_host_num_per_group=1");
    let (_, first) = svc.get(&kept).await; // computed in a turn, then kept
    assert_eq!(first["code"], 0);
    let scans: Vec<_> = (0..4)
        .map(|i| {
            let (client, base) = (svc.client.clone(), svc.base.clone());
            let url = format!(
                "{base}/api/v3/get_step_instance_status?{}",
                q(BIG, &format!("keyword=never-there-{i}"))
            );
            tokio::spawn(async move {
                let resp = client
                    .get(url)
                    .header("X-Bkapi-Authorization", auth_header(APP, SECRET))
                    .send()
                    .await
                    .unwrap();
                resp.status().as_u16()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let hits = r#"stepview_http_answer_cache_total{outcome="hit"}"#;
    let before = svc.metric(hits).await.unwrap_or(0.0);
    let (_, again) = svc.get(&kept).await;
    assert!(
        scans.iter().any(|s| !s.is_finished()),
        "the kept answer came only after every queued scan"
    );
    assert_eq!(
        without_total_time(again["data"].clone()),
        without_total_time(first["data"].clone())
    );
    assert_eq!(svc.metric(hits).await, Some(before + 1.0));
    for scan in scans {
        assert_eq!(scan.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn metrics_can_require_a_bearer_token() {
    use sha2::Digest;
    let token_hash = hex::encode(sha2::Sha256::digest(b"scrape-token"));
    let (_dir, svc) = service_with(|c| c.http.metrics_token_sha256 = Some(token_hash)).await;
    let (status, _) = svc.get_path("/metrics").await;
    assert_eq!(status, 401);
    let url = format!("{}/metrics", svc.base);
    let wrong = svc
        .client
        .get(&url)
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = svc
        .client
        .get(&url)
        .bearer_auth("scrape-token")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("stepview_index_hosts"));
    // The probes stay open.
    assert_eq!(svc.get_path("/healthz").await.0, 200);
}
