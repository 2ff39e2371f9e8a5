//! Load: 200 concurrent HTTP clients query (capped, uncapped, search_ip) while events stream in
//! at 10 000 per second through the local broker, for 60 s. Prints errors (must be 0), query
//! latency p50 / p99 by kind, and freshness (a probe event produced → visible through the API).
//!
//! Needs a broker: `ops/broker.sh start`, then `cargo bench --bench load`
//! (STEPVIEW_BENCH_BROKERS=host:port, BENCH_SECONDS=60, BENCH_CLIENTS=200). Clients, broker and
//! service share the machine's cores: the figures are for all of them together.

/// The service binary's allocator (src/main.rs), so that figures are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use common::unique_name;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepview::config::Config;
use stepview::http::AppConfig;
use stepview::kafka::KafkaSettings;
use stepview::kafka::{self, DEFAULT_PARTITIONS};
use stepview::service::{self, Views};
use stepview::simulate::{self, Workload};

const SECRET: &str = "bench-secret";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[derive(Clone, Copy)]
enum Kind {
    Capped,
    Uncapped,
    Search,
}

/// The step ids of a workload's jobs (steps of 2 000 hosts).
fn step_ids(first_job: i64, jobs: usize) -> Vec<i64> {
    (0..jobs as i64)
        .flat_map(|j| (0..3).map(move |s| simulate::step_id(first_job + j, s)))
        .collect()
}

fn main() {
    let brokers =
        std::env::var("STEPVIEW_BENCH_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let seconds = env_or("BENCH_SECONDS", 60);
    let clients = env_or("BENCH_CLIENTS", 200) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let topic = unique_name("bench-load");
    let settings = KafkaSettings {
        brokers: brokers.clone(),
        topic: topic.clone(),
        ..KafkaSettings::default()
    };
    rt.block_on(kafka::ensure_topics(
        &settings,
        &[&topic],
        DEFAULT_PARTITIONS,
    ))
    .unwrap_or_else(|e| panic!("{e:#} — start a broker with ops/broker.sh start"));

    // What is there before the load starts: 10 jobs × 3 steps × 2 000 hosts.
    let preload = simulate::generate(&Workload {
        jobs: 10,
        steps_per_job: 3,
        hosts: 2000,
        batches: 2,
        ..Workload::default()
    });
    eprintln!("producing {} events to preload …", preload.len());
    simulate::produce(
        &stepview::kafka::KafkaSettings::of(&brokers, &topic),
        &simulate::to_messages(&preload),
        0,
        true,
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        kafka: settings,
        ..Config::default()
    };
    config.apps = vec![AppConfig {
        code: "bench".into(),
        secret_sha256: Some({
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(SECRET.as_bytes()))
        }),
        scopes: vec!["*".into()],
    }];
    let views = Views::open(&config).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let (views, config) = (views.clone(), config.clone());
        rt.spawn(async move {
            service::run(views, &config, listener, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let auth = r#"{"bk_app_code":"bench","bk_app_secret":"bench-secret","bk_username":"bench"}"#;
    eprintln!("waiting for stepview to be ready …");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let ok = client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "stepview never became ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    // The stream during the load: new jobs at 10 000 events/s.
    let stream = simulate::to_messages(&simulate::generate(&Workload {
        jobs: (seconds as usize * 10_000 / 13_000).max(1),
        steps_per_job: 3,
        hosts: 1000,
        first_job_id: 5000,
        ..Workload::default()
    }));
    let producing = {
        let (brokers, topic) = (brokers.clone(), topic.clone());
        std::thread::spawn(move || {
            simulate::produce(
                &stepview::kafka::KafkaSettings::of(&brokers, &topic),
                &stream,
                10_000,
                false,
            )
        })
    };

    let steps = Arc::new(step_ids(1, 10));
    let until = Instant::now() + Duration::from_secs(seconds);
    let errors = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, base, steps, errors) =
                (client.clone(), base.clone(), Arc::clone(&steps), Arc::clone(&errors));
            rt.spawn(async move {
                let mut lat: Vec<(usize, f64)> = Vec::new();
                let mut i = c;
                while Instant::now() < until {
                    i += 1;
                    let step = steps[i % steps.len()];
                    let job = step / 100;
                    let kind = match i % 20 {
                        0 => Kind::Uncapped,
                        1 => Kind::Search,
                        _ => Kind::Capped,
                    };
                    let extra = match kind {
                        Kind::Capped => "&max_host_num_per_group=20",
                        Kind::Uncapped => "",
                        Kind::Search => "&search_ip=10.0.3&max_host_num_per_group=20",
                    };
                    let url = format!(
                        "{base}/api/v3/get_step_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id={job}&step_instance_id={step}{extra}"
                    );
                    let t = Instant::now();
                    let ok = match client
                        .get(&url)
                        .header("X-Bkapi-Authorization", auth)
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 200 => r
                            .json::<serde_json::Value>()
                            .await
                            .is_ok_and(|b| b["code"] == 0),
                        _ => false,
                    };
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    lat.push((kind as usize, t.elapsed().as_secs_f64() * 1e3));
                }
                lat
            })
        })
        .collect();

    // Freshness probes through the API, ten a second.
    let freshness = {
        let (client, base, brokers, topic) =
            (client.clone(), base.clone(), brokers.clone(), topic.clone());
        rt.spawn(async move {
            let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("linger.ms", "0")
                .set("partitioner", "murmur2_random")
                .create()
                .unwrap();
            let probe_step = 999_999i64;
            let meta = simulate::to_messages(&[simulate::probe_step(9999, probe_step)]);
            let send = |key: String, value: Vec<u8>| {
                let producer = producer.clone();
                let topic = topic.clone();
                async move {
                    producer
                        .send(
                            rdkafka::producer::FutureRecord::to(&topic)
                                .key(&key)
                                .payload(&value),
                            Duration::from_secs(5),
                        )
                        .await
                        .map_err(|(e, _)| e)
                        .unwrap();
                }
            };
            send(meta[0].0.clone(), meta[0].1.clone()).await;
            let mut lat = Vec::new();
            let mut version = 0;
            while Instant::now() + Duration::from_millis(500) < until {
                version += 1;
                let probe = simulate::probe(9999, probe_step, version);
                let t = Instant::now();
                send(probe_step.to_string(), probe.to_json()).await;
                let url = format!(
                    "{base}/api/v3/get_step_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id=9999&step_instance_id={probe_step}&max_host_num_per_group=0&tag=v{version}"
                );
                let want = format!("\"tag\":\"v{version}\"");
                loop {
                    let body = client
                        .get(&url)
                        .header("X-Bkapi-Authorization", auth)
                        .send()
                        .await
                        .unwrap()
                        .text()
                        .await
                        .unwrap();
                    if body.contains(&want) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            lat
        })
    };

    let mut by_kind: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for t in tasks {
        for (kind, ms) in rt.block_on(t).unwrap() {
            by_kind[kind].push(ms);
        }
    }
    let mut fresh = rt.block_on(freshness).unwrap();
    producing.join().unwrap().unwrap();
    let _ = stop_tx.send(());
    rt.block_on(server).unwrap().unwrap();

    let total: usize = by_kind.iter().map(Vec::len).sum();
    println!(
        "load benchmark: {clients} clients for {seconds} s while 10 000 events/s stream in ({} steps preloaded)",
        steps.len()
    );
    println!(
        "requests: {total} ({:.0}/s), errors: {} (must be 0)",
        total as f64 / seconds as f64,
        errors.load(Ordering::Relaxed)
    );
    for (i, name) in [
        "capped (20/group)",
        "uncapped (2000 hosts)",
        "search_ip + cap",
    ]
    .iter()
    .enumerate()
    {
        let v = &mut by_kind[i];
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "  {name:<22}: {:>7} requests, p50 {:>7.1} ms, p99 {:>7.1} ms",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.99)
        );
    }
    fresh.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "freshness (probe produced → visible through the API): p50 {:.1} ms, p99 {:.1} ms over {} probes",
        percentile(&fresh, 0.5),
        percentile(&fresh, 0.99),
        fresh.len()
    );
}
