//! Shards on this machine (cluster.md): the cost of forwarding, and ingest with 1, 2 and 3
//! shards. On 2 cores every shard, the broker and the clients share the same CPUs: this shows
//! what forwarding costs, not how shards scale (the README says what N shards give on N
//! machines).
//!
//! 1. A capped query answered by the shard that serves the step, against the same query sent
//!    to another shard (which forwards it): p50 / p99 of each, same run.
//! 2. Events per second from a topic of 8 partitions, consumed by 1, 2 and 3 shards.
//!
//! Needs a broker: `ops/broker.sh start`, then `cargo bench --bench cluster`
//! (STEPVIEW_BENCH_BROKERS=host:port).

mod common;

use common::{unique_name, Shard};
use std::time::{Duration, Instant};
use stepview::kafka::KafkaSettings;
use stepview::simulate::{self, Workload};

const PARTITIONS: i32 = 8;

fn metrics(client: &reqwest::Client, rt: &tokio::runtime::Runtime, base: &str) -> String {
    rt.block_on(async {
        match client.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    })
}

/// Sum over the shards of a per-partition series, and how many partitions report it.
fn per_partition(text: &[String], name: &str) -> (f64, usize) {
    let values: Vec<f64> = text
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (values.iter().sum(), values.len())
}

fn topic_with(rt: &tokio::runtime::Runtime, brokers: &str, events: usize) -> (String, usize) {
    let topic = unique_name("bench-shards");
    let settings = KafkaSettings {
        brokers: brokers.to_owned(),
        ..KafkaSettings::default()
    };
    rt.block_on(stepview::kafka::ensure_topics(
        &settings,
        &[&topic],
        PARTITIONS,
    ))
    .unwrap_or_else(|e| panic!("{e:#} — start a broker with ops/broker.sh start"));
    let hosts = (events / 30).max(10);
    let messages = simulate::to_messages(&simulate::generate(&Workload {
        jobs: 4,
        steps_per_job: 3,
        hosts,
        first_job_id: 1,
        ..Workload::default()
    }));
    simulate::produce(
        &stepview::kafka::KafkaSettings::of(brokers, &topic),
        &messages,
        0,
        false,
    )
    .unwrap();
    (topic, messages.len())
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() {
    let brokers =
        std::env::var("STEPVIEW_BENCH_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();

    // Ingest: the same topic consumed by 1, 2 and 3 shards, timed to every partition's end.
    let mut rates = Vec::new();
    for n in 1..=3 {
        let (topic, events) = topic_with(&rt, &brokers, 120_000);
        let set = unique_name("bench");
        let launched = Instant::now();
        let shards: Vec<Shard> = (0..n)
            .map(|_| Shard::start(&brokers, &topic, &set, &[]))
            .collect();
        // Timed from the first applied event: starting and settling are not throughput.
        let mut started: Option<Instant> = None;
        let took = loop {
            let texts: Vec<String> = shards
                .iter()
                .map(|s| metrics(&client, &rt, &s.base))
                .collect();
            let (applied, _) = per_partition(&texts, "stepview_last_applied_offset{");
            if applied > 0.0 {
                started.get_or_insert_with(Instant::now);
            }
            let Some(started) = started else {
                assert!(
                    launched.elapsed() < Duration::from_secs(60),
                    "nothing applied"
                );
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let (lag, reporting) = per_partition(&texts, "stepview_consumer_lag_messages{");
            // Every partition read once, nothing left, every event applied.
            if reporting == PARTITIONS as usize
                && lag == 0.0
                && applied + PARTITIONS as f64 >= events as f64
            {
                break started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "never caught up"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let rate = events as f64 / took.as_secs_f64();
        eprintln!(
            "  {n} shard(s): {events} events in {:.2} s",
            took.as_secs_f64()
        );
        rates.push((n, rate));
    }

    // Forwarding: two shards; each step asked of its own shard and of the other.
    let (topic, _) = topic_with(&rt, &brokers, 60_000);
    let set = unique_name("bench");
    let shards = [
        Shard::start(&brokers, &topic, &set, &[]),
        Shard::start(&brokers, &topic, &set, &[]),
    ];
    std::thread::sleep(Duration::from_secs(8)); // settled: each reads its share
    let steps: Vec<(i64, i64)> = (1..=4)
        .flat_map(|job| (1..=3).map(move |s| (job, job * 100 + s)))
        .collect();
    let ask = |base: &str, job: i64, step: i64| -> (f64, bool) {
        rt.block_on(async {
            let url = format!("{base}/api/v3/get_step_instance_status?bk_scope_type=biz&bk_scope_id=2&job_instance_id={job}&step_instance_id={step}&max_host_num_per_group=100");
            let t = Instant::now();
            let resp = client.get(url).send().await.unwrap();
            let forwarded = resp.headers().contains_key("x-stepview-forwarded");
            let body = resp.bytes().await.unwrap();
            assert!(body.starts_with(br#"{"result":true"#), "{}", String::from_utf8_lossy(&body));
            (t.elapsed().as_secs_f64() * 1e6, forwarded)
        })
    };
    let (mut local, mut forwarded) = (Vec::new(), Vec::new());
    for _ in 0..150 {
        for (job, step) in &steps {
            for shard in &shards {
                let (us, was_forwarded) = ask(&shard.base, *job, *step);
                if was_forwarded {
                    forwarded.push(us);
                } else {
                    local.push(us);
                }
            }
        }
    }
    println!("cluster benchmark: shards of one set on this machine (2 cores shared by all)");
    for (n, rate) in &rates {
        println!("ingest, {n} shard(s), topic of {PARTITIONS} partitions: {rate:>9.0} events/s");
    }
    println!(
        "capped query (cap 100) answered locally: p50 {:.0} µs, p99 {:.0} µs over {}",
        percentile(&mut local, 0.5),
        percentile(&mut local, 0.99),
        local.len()
    );
    println!(
        "the same, forwarded to the owner      : p50 {:.0} µs, p99 {:.0} µs over {} ({:.2} × local at p50)",
        percentile(&mut forwarded, 0.5),
        percentile(&mut forwarded, 0.99),
        forwarded.len(),
        percentile(&mut forwarded, 0.5) / percentile(&mut local, 0.5)
    );
}
