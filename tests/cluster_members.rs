//! Who may be a member (cluster.md): records of the members topic written without the members'
//! secret, in the right format, for URLs of listeners that record every connection, written every
//! half second for ten seconds, draw no request to any of them; forged tombstones evict nobody;
//! and the shards' answers stay right all the while.

mod common;

use common::*;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepview::cluster::Entry;
use stepview::simulate::{self, Workload};

const PARTITIONS: i32 = 4;

/// A listener that counts the connections made to it.
async fn trap() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    (url, hits)
}

/// An entry as a member writes it, claiming to serve every partition.
fn forged_entry(url: &str, set: &str, seq: u64) -> Vec<u8> {
    let entry = Entry {
        url: url.into(),
        cluster: set.into(),
        incarnation: "f0f0f0f0f0f0f0f0".into(),
        seq,
        at_ms: stepview::now_ms(),
        leaving: false,
        serving: (0..PARTITIONS).collect(),
        claims: (0..PARTITIONS).map(|p| (p, i64::MAX / 2)).collect(),
        releasing: BTreeMap::new(),
        progress: BTreeMap::new(),
    };
    serde_json::to_vec(&entry).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_members_draw_no_request_and_evict_nobody() {
    let topic = new_topic("forged", PARTITIONS).await;
    let events = simulate::generate(&Workload {
        jobs: 4,
        steps_per_job: 2,
        hosts: 20,
        first_job_id: 1,
        ..Workload::default()
    });
    produce(&topic, &events, 0).await;
    let queries: Vec<String> = steps_of(&events)
        .into_iter()
        .map(|(job, step)| {
            format!("bk_scope_type=biz&bk_scope_id=2&job_instance_id={job}&step_instance_id={step}&max_host_num_per_group=5")
        })
        .collect();
    let set = unique_name("forged-set");
    let shards = [
        Shard::start(brokers(), &topic, &set, &[]),
        Shard::start(brokers(), &topic, &set, &[]),
    ];
    let http = reqwest::Client::new();
    let ask = |base: String, q: String| {
        let http = http.clone();
        async move {
            // Not listening yet: no answer.
            let Ok(resp) = http
                .get(format!("{base}/api/v3/get_step_instance_status?{q}"))
                .send()
                .await
            else {
                return (0, Value::Null);
            };
            let status = resp.status().as_u16();
            let mut v: Value = resp.json().await.unwrap_or(Value::Null);
            v["job_request_id"] = Value::Null;
            v["data"]["total_time"] = Value::Null;
            (status, v)
        }
    };
    // Settled: both answer every step alike.
    let deadline = Instant::now() + Duration::from_secs(60);
    let want: Vec<Value> = 'settled: loop {
        let mut want = Vec::new();
        for q in &queries {
            let (sa, a) = ask(shards[0].base.clone(), q.clone()).await;
            let (sb, b) = ask(shards[1].base.clone(), q.clone()).await;
            if sa != 200 || sb != 200 || a["code"] != 0 || a != b {
                assert!(Instant::now() < deadline, "never settled: {a} / {b}");
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue 'settled;
            }
            want.push(a);
        }
        break want;
    };

    // Six listeners, forged as members every half second for ten seconds, unsigned and signed
    // with another secret; and forged tombstones of both real members.
    let mut traps = Vec::new();
    for _ in 0..6 {
        traps.push(trap().await);
    }
    let forging = {
        let (urls, set, topic) = (
            traps.iter().map(|(u, _)| u.clone()).collect::<Vec<_>>(),
            set.clone(),
            format!("{topic}.members"),
        );
        let real: Vec<String> = shards.iter().map(|s| s.base.clone()).collect();
        tokio::task::spawn_blocking(move || {
            let producer: BaseProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", brokers())
                .create()
                .unwrap();
            let wrong_mac = [7u8; 32];
            let started = Instant::now();
            let mut seq = 1_000_000;
            while started.elapsed() < Duration::from_secs(10) {
                for (i, url) in urls.iter().enumerate() {
                    seq += 1;
                    let value = forged_entry(url, &set, seq);
                    let mut record = BaseRecord::<str, [u8]>::to(&topic).key(url).payload(&value);
                    if i % 2 == 1 {
                        let headers = OwnedHeaders::new().insert(Header {
                            key: "stepview-mac",
                            value: Some(&wrong_mac[..]),
                        });
                        record = record.headers(headers);
                    }
                    producer.send(record).unwrap();
                }
                for url in &real {
                    producer
                        .send(BaseRecord::<str, [u8]>::to(&topic).key(url))
                        .unwrap();
                }
                producer.flush(Duration::from_secs(5)).unwrap();
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    // All the while, and a little after, every answer stays right.
    let until = Instant::now() + Duration::from_secs(12);
    let mut rounds = 0;
    while Instant::now() < until {
        for (q, want) in queries.iter().zip(&want) {
            for shard in &shards {
                let (status, got) = ask(shard.base.clone(), q.clone()).await;
                assert_eq!((status, &got), (200, want), "{} {q}", shard.base);
            }
        }
        rounds += 1;
    }
    forging.await.unwrap();
    assert!(rounds > 3, "only {rounds} rounds of queries");
    for (url, hits) in &traps {
        assert_eq!(hits.load(Ordering::SeqCst), 0, "{url} drew requests");
    }
    for shard in &shards {
        let text = http
            .get(format!("{}/metrics", shard.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            metric_value(&text, "stepview_cluster_members"),
            Some(1.0),
            "{}: the other real member was evicted or a forged one counted",
            shard.base
        );
        let ignored: BTreeSet<&str> = ["unsigned", "bad_signature"]
            .into_iter()
            .filter(|r| {
                metric_value(
                    &text,
                    &format!("stepview_cluster_records_ignored_total{{reason=\"{r}\"}}"),
                )
                .is_some_and(|n| n > 0.0)
            })
            .collect();
        assert_eq!(
            ignored.len(),
            2,
            "{}: ignored records not counted",
            shard.base
        );
    }
}
