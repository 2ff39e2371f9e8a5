//! End-to-end ingest through a real broker, and freshness.
//!
//! 1. Throughput: stepview's Kafka source (decode, dead-letter check, apply, offsets in the same
//!    WriteBatch) reading a topic, against a bare librdkafka consumer reading the same topic in the
//!    same run, and against the same bare consumer writing each payload to RocksDB (the floor of
//!    any consumer that keeps what it reads). Medians of 3 runs each, and the ratios.
//! 2. Freshness: with events streaming at a steady rate, the time from producing a probe event to
//!    seeing it in a query answer, against the time a bare consumer with the same fetch settings
//!    receives it in the same run. p50 / p99.
//!
//! Needs a broker: `ops/broker.sh start`, then
//! `cargo bench --bench ingest` (or STEPVIEW_BENCH_BROKERS=host:port).

/// The service binary's allocator (src/main.rs), so that figures are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use common::unique_name;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use stepview::config::Config;
use stepview::events::{decode, Event, ScopeType};
use stepview::ingest::kafka::source;
use stepview::kafka::KafkaSettings;
use stepview::kafka::{self, consumer_config, DEFAULT_PARTITIONS};
use stepview::query::{Cancel, StepQuery};
use stepview::service::Views;
use stepview::shutdown::Shutdown;
use stepview::simulate::{self, Workload};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Events/s of a bare consumer reading `n` events of `topic`; with `persist`, it also writes each
/// payload to RocksDB (WAL on, one WriteBatch per 5 000 messages or whenever nothing is waiting).
fn bare_consume(brokers: &str, topic: &str, n: usize, persist: bool) -> f64 {
    let settings = KafkaSettings {
        brokers: brokers.to_owned(),
        ..KafkaSettings::default()
    };
    let c: BaseConsumer = consumer_config(&settings, &unique_name("bench-bare"), 1000)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..DEFAULT_PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = persist.then(|| rocksdb::DB::open_default(dir.path()).unwrap());
    let mut batch = rocksdb::WriteBatch::default();
    let write = |batch: &mut rocksdb::WriteBatch| {
        if let (Some(db), false) = (&db, batch.is_empty()) {
            db.write(std::mem::take(batch)).unwrap();
        }
    };
    // Timed from the first message, as stepview's run is (connection setup is not throughput).
    let mut first: Option<Instant> = None;
    let mut seen = 0;
    while seen < n {
        let wait = if batch.is_empty() {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        match c.poll(wait) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                if persist {
                    let mut key = m.partition().to_be_bytes().to_vec();
                    key.extend(m.offset().to_be_bytes());
                    batch.put(key, m.payload().unwrap_or_default());
                    if batch.len() >= 5000 {
                        write(&mut batch);
                    }
                } else {
                    std::hint::black_box(m.payload());
                }
                seen += 1;
            }
            _ => write(&mut batch),
        }
    }
    write(&mut batch);
    (n - 1) as f64 / first.unwrap().elapsed().as_secs_f64()
}

/// Clock ticks per second in /proc (USER_HZ).
const TICKS: f64 = 100.0;

/// The CPU seconds (user + system) a /proc `stat` line of a process or thread reports.
fn cpu_seconds_in(stat: &str) -> f64 {
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let (utime, stime): (f64, f64) = (fields[11].parse().unwrap(), fields[12].parse().unwrap());
    (utime + stime) / TICKS
}

/// CPU seconds used so far by the whole machine (busy time over all cores: the broker's too)
/// and by this process (stepview's threads, when it is the one running).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let all: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap())
        .collect();
    let busy = all.iter().sum::<f64>() - all[3] - all[4]; // but idle and iowait
    let own = std::fs::read_to_string("/proc/self/stat").unwrap();
    (busy / TICKS, cpu_seconds_in(&own))
}

/// CPU seconds used so far by this process's threads, by part: stepview's fetcher and applier,
/// librdkafka's threads, RocksDB's background threads, and the rest (this benchmark's own).
fn thread_cpu_seconds() -> BTreeMap<&'static str, f64> {
    let mut parts = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let part = match comm.trim() {
            source::FETCHER_THREAD => "fetch + decode",
            source::APPLIER_THREAD => "apply",
            c if c.starts_with("rdk:") => "librdkafka",
            c if c.starts_with("rocksdb:") => "rocksdb background",
            _ => "other",
        };
        *parts.entry(part).or_default() += cpu_seconds_in(&stat);
    }
    parts
}

struct Running {
    views: Views,
    shutdown: Shutdown,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

fn start_stepview(brokers: &str, topic: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    config.kafka.brokers = brokers.to_owned();
    config.kafka.topic = topic.to_owned();
    config.kafka.group_id = unique_name("bench-group");
    let views = Views::open(&config).unwrap();
    let shutdown = Shutdown::new();
    let thread = {
        let (sink, shutdown) = (views.sink.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name(source::FETCHER_THREAD.into())
            .spawn(move || source::run(&config.kafka, &sink, None, &shutdown))
            .unwrap()
    };
    Running {
        views,
        shutdown,
        thread,
        _dir: dir,
    }
}

impl Running {
    fn stored(&self, topic: &str) -> i64 {
        self.views
            .store
            .offsets()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, _, o)| o)
            .sum()
    }

    fn stop(self) {
        self.shutdown.trigger();
        self.thread.join().unwrap().unwrap();
    }
}

fn main() {
    let brokers =
        std::env::var("STEPVIEW_BENCH_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = unique_name("bench-ingest");
    let settings = KafkaSettings {
        brokers: brokers.clone(),
        ..KafkaSettings::default()
    };
    rt.block_on(kafka::ensure_topics(
        &settings,
        &[&topic],
        DEFAULT_PARTITIONS,
    ))
    .unwrap_or_else(|e| panic!("{e:#} — start a broker with ops/broker.sh start"));
    let hosts = std::env::var("BENCH_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8000);
    let events = simulate::generate(&Workload {
        jobs: 4,
        steps_per_job: 3,
        hosts,
        batches: 2,
        ..Workload::default()
    });
    let n = events.len();
    eprintln!("producing {n} events to {topic} …");
    simulate::produce(
        &stepview::kafka::KafkaSettings::of(&brokers, &topic),
        &simulate::to_messages(&events),
        0,
        true,
    )
    .unwrap();

    let (mut bare, mut persisting, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    let (mut machine_cores, mut stepview_cores) = (Vec::new(), Vec::new());
    let mut part_cores: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for run in 1..=3 {
        bare.push(bare_consume(&brokers, &topic, n, false));
        persisting.push(bare_consume(&brokers, &topic, n, true));
        let s = start_stepview(&brokers, &topic);
        // Timed from the first applied batch: connecting is not throughput.
        let (t0, at_t0) = loop {
            let stored = s.stored(&topic);
            if stored > 0 {
                break (Instant::now(), stored);
            }
            std::thread::sleep(Duration::from_micros(500));
        };
        let (cpu_t0, threads_t0) = (cpu_seconds(), thread_cpu_seconds());
        while s.stored(&topic) < n as i64 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (cpu, threads, wall) = (
            cpu_seconds(),
            thread_cpu_seconds(),
            t0.elapsed().as_secs_f64(),
        );
        ours.push((n as i64 - at_t0) as f64 / wall);
        machine_cores.push((cpu.0 - cpu_t0.0) / wall);
        stepview_cores.push((cpu.1 - cpu_t0.1) / wall);
        for (part, seconds) in threads {
            let before = threads_t0.get(part).copied().unwrap_or(0.0);
            part_cores
                .entry(part)
                .or_default()
                .push((seconds - before) / wall);
        }
        s.stop();
        eprintln!(
            "  run {run}/3: bare {:.0}/s, bare + RocksDB {:.0}/s, stepview {:.0}/s",
            bare.last().unwrap(),
            persisting.last().unwrap(),
            ours.last().unwrap()
        );
    }
    let (b, p, o) = (median(bare), median(persisting), median(ours));
    println!("ingest benchmark: {n} events through the local broker");
    println!("bare librdkafka consumer        : {b:>10.0} events/s (median of 3)");
    println!(
        "bare consumer + RocksDB writes  : {p:>10.0} events/s (payloads as they come, WAL on)"
    );
    println!("stepview ingest                 : {o:>10.0} events/s (median of 3)");
    println!(
        "ratio stepview / bare           : {:>10.2} (target ≥ 0.9)",
        o / b
    );
    println!(
        "ratio bare + RocksDB / bare     : {:>10.2} (any consumer that keeps what it reads)",
        p / b
    );
    println!("ratio stepview / bare + RocksDB : {:>10.2}", o / p);
    println!(
        "CPU while stepview ingests       : {:.2} cores busy of {} (broker included), stepview's \
         threads {:.2} (medians)",
        median(machine_cores),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        median(stepview_cores)
    );
    let parts: Vec<String> = part_cores
        .into_iter()
        .map(|(part, cores)| format!("{part} {:.2}", median(cores)))
        .collect();
    println!("  by thread (cores, medians)    : {}", parts.join(", "));

    // Freshness under a steady 10 000 events/s.
    let live_topic = unique_name("bench-fresh");
    rt.block_on(kafka::ensure_topics(
        &settings,
        &[&live_topic],
        DEFAULT_PARTITIONS,
    ))
    .unwrap();
    let s = start_stepview(&brokers, &live_topic);
    let stream = simulate::to_messages(&simulate::generate(&Workload {
        jobs: 10,
        steps_per_job: 3,
        hosts: 2000,
        first_job_id: 1000,
        ..Workload::default()
    }));
    let seconds = (stream.len() / 10_000).max(5);
    let background = {
        let (brokers, live_topic) = (brokers.clone(), live_topic.clone());
        std::thread::spawn(move || {
            simulate::produce(
                &stepview::kafka::KafkaSettings::of(&brokers, &live_topic),
                &stream,
                10_000,
                false,
            )
            .unwrap()
        })
    };
    let probe_step = 999_999;
    let bare_seen = BareWatcher::start(&brokers, &live_topic, probe_step);
    std::thread::sleep(Duration::from_secs(3)); // let the consumers connect
    let (producer, mut latencies, mut bare_latencies) =
        (probe_producer(&brokers), Vec::new(), Vec::new());
    let send = |event: &stepview::events::Event| {
        producer
            .send(
                rdkafka::producer::BaseRecord::to(&live_topic)
                    .key(&probe_step.to_string())
                    .payload(&event.to_json()),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    };
    send(&simulate::probe_step(1, probe_step));
    // Watched as a UI would: the probe step's answer, groups only, through the query reader.
    let reader = s.views.reader();
    let watch = StepQuery {
        scope_type: ScopeType::Biz,
        scope_id: "2".into(),
        job_instance_id: 1,
        step_instance_id: probe_step,
        execute_count: None,
        batch: None,
        max_host_num_per_group: Some(0),
        keyword: None,
        search_ip: None,
        status: None,
        tag: None,
    };
    for version in 1..=(seconds as i64 * 10) {
        let probe = simulate::probe(1, probe_step, version);
        let t = Instant::now();
        send(&probe);
        // Timed from the send call (rdkafka's flush() waits in 100 ms steps, which would time the
        // client, not the pipeline); delivery reports are served by the poll in the loop below.
        // Visible = in the answer a query gets.
        let want = format!("v{version}");
        loop {
            let visible = reader
                .answer(&watch, &Cancel::default())
                .is_ok_and(|a| a.groups.iter().any(|g| g.tag == want));
            if visible {
                break;
            }
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_micros(200));
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        bare_latencies.push(bare_seen.wait_for(version).duration_since(t).as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(80));
    }
    background.join().unwrap();
    s.stop();
    bare_seen.stop();
    let fetch_wait = consumer_config(&settings, "-", 1000)
        .get("fetch.wait.max.ms")
        .unwrap_or("librdkafka's default")
        .to_owned();
    let added = percentiles(
        latencies
            .iter()
            .zip(&bare_latencies)
            .map(|(o, b)| o - b)
            .collect(),
    );
    let (ours, bare) = (percentiles(latencies), percentiles(bare_latencies));
    println!(
        "freshness at 10000 events/s, fetch.wait.max.ms = {fetch_wait} for both, {} probes:",
        ours.len()
    );
    println!(
        "bare consumer: produce → consumed p50 {:>5.1} ms, p99 {:>5.1} ms",
        pct(&bare, 0.5),
        pct(&bare, 0.99)
    );
    println!(
        "stepview     : produce → visible  p50 {:>5.1} ms, p99 {:>5.1} ms (target p99 ≤ 10 ms)",
        pct(&ours, 0.5),
        pct(&ours, 0.99)
    );
    println!(
        "stepview's own part (visible − consumed, per probe): p50 {:>5.1} ms, p99 {:>5.1} ms",
        pct(&added, 0.5),
        pct(&added, 0.99)
    );
}

fn percentiles(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// The baseline for freshness: a bare librdkafka consumer (stepview's consumer settings) that
/// notes when each probe version reaches it.
struct BareWatcher {
    seen: Arc<(Mutex<HashMap<i64, Instant>>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl BareWatcher {
    fn start(brokers: &str, topic: &str, probe_step: i64) -> BareWatcher {
        let settings = KafkaSettings {
            brokers: brokers.to_owned(),
            ..KafkaSettings::default()
        };
        let c: BaseConsumer = consumer_config(&settings, &unique_name("bench-bare-fresh"), 1000)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..DEFAULT_PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::End).unwrap();
        }
        c.assign(&tpl).unwrap();
        let seen = Arc::new((Mutex::new(HashMap::new()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let key = probe_step.to_string();
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    let at = Instant::now();
                    if m.key() != Some(key.as_bytes()) {
                        continue;
                    }
                    if let Some(Ok((Event::HostResult(h), _))) = m.payload().map(decode) {
                        seen.0.lock().unwrap().insert(h.version, at);
                        seen.1.notify_all();
                    }
                }
            })
        };
        BareWatcher { seen, stop, thread }
    }

    fn wait_for(&self, version: i64) -> Instant {
        let (seen, arrived) = &*self.seen;
        let mut seen = seen.lock().unwrap();
        loop {
            if let Some(at) = seen.get(&version) {
                return *at;
            }
            seen = arrived.wait(seen).unwrap();
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

fn probe_producer(brokers: &str) -> rdkafka::producer::BaseProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()
        .unwrap()
}
