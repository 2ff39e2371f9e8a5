//! Realistic event streams, as bk-job and GSE would produce them: jobs of several steps (script,
//! file, SQL) over N hosts, target chunks, rolling batches, retries of failed hosts, host
//! transitions 5 → 7 → 9 / 101 / 104 / 403 / 1, `job_success` / `job_fail` tags, script output in
//! chunks, and on request duplicates and reordered versions.
//!
//! Owns: workload generation (deterministic for a seed) and producing it to Kafka. Must not: apply
//! anything itself; tests and benchmarks apply generated events through `apply`.

use crate::events::{
    Event, HostLog, HostResult, JobEvent, ScopeType, StepEvent, StepTargets, TargetHost,
};
use crate::kafka::{client_config, KafkaSettings};
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct Workload {
    /// Jobs to simulate.
    #[arg(long, default_value_t = 3)]
    pub jobs: usize,
    /// Steps per job (script, file and SQL steps in turn).
    #[arg(long, default_value_t = 3)]
    pub steps_per_job: usize,
    /// Target hosts per step.
    #[arg(long, default_value_t = 1000)]
    pub hosts: usize,
    /// Rolling batches per step (1 = no rolling).
    #[arg(long, default_value_t = 1)]
    pub batches: i32,
    /// First job instance id; step ids are job id × 100 + step number.
    #[arg(long, default_value_t = 1)]
    pub first_job_id: i64,
    /// bk_scope_id of every job (scope type biz).
    #[arg(long, default_value = "2")]
    pub biz: String,
    /// Fraction of events sent twice.
    #[arg(long, default_value_t = 0.0)]
    pub duplicates: f64,
    /// Fraction of hosts whose final result is produced before their "running" one.
    #[arg(long, default_value_t = 0.0)]
    pub reorder: f64,
    /// Random seed: the same seed gives the same events.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Time of the first event, Unix ms (default: now).
    #[arg(long)]
    pub start_ms: Option<i64>,
}

impl Default for Workload {
    /// The flags' defaults, with a fixed start time so that the events are reproducible.
    fn default() -> Self {
        use clap::{Args, FromArgMatches};
        let cmd = Workload::augment_args(clap::Command::new("simulate"));
        let mut w = Workload::from_arg_matches(&cmd.get_matches_from(["simulate"]))
            .expect("defaults parse");
        w.start_ms = Some(1_764_300_000_000);
        w
    }
}

const STEP_TYPES: [i32; 3] = [1, 2, 4];
const TARGET_CHUNK: usize = 1000;

pub fn step_id(job: i64, step_no: usize) -> i64 {
    job * 100 + step_no as i64 + 1
}

/// Host id, IPv4 and (for every third host) IPv6 of target host `h`.
fn host_identity(h: usize) -> (i64, String, Option<String>) {
    let id = 1000 + h as i64;
    let ip = format!("10.{}.{}.{}", (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff);
    let ipv6 = h.is_multiple_of(3).then(|| format!("FD00::{h:X}"));
    (id, ip, ipv6)
}

/// Every event of the workload, in the order a producer would send them: each job started, its
/// steps interleaved with the other jobs' (as concurrent jobs would), each job ended.
pub fn generate(w: &Workload) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(w.seed);
    let t0 = w.start_ms.unwrap_or_else(crate::now_ms);
    let mut per_step: Vec<Vec<Event>> = Vec::new();
    let mut out = Vec::new();
    let mut ends = Vec::new();
    for j in 0..w.jobs {
        let job = w.first_job_id + j as i64;
        let started = t0 + (j * w.steps_per_job) as i64 * 5_000;
        let mut record = JobEvent {
            job_instance_id: job,
            bk_scope_type: ScopeType::Biz,
            bk_scope_id: w.biz.clone(),
            name: format!("deploy release {job}"),
            status: 2,
            create_time: started - 2_000,
            start_time: Some(started),
            end_time: None,
            total_time: None,
            version: 1,
        };
        out.push(Event::Job(record.clone()));
        let mut failed = false;
        let mut ended = started;
        for s in 0..w.steps_per_job {
            let start = t0 + (j * w.steps_per_job + s) as i64 * 5_000;
            let events = step_events(w, &mut rng, job, s, start);
            if let Some(Event::Step(last)) = events.last() {
                failed |= last.status != 3;
                ended = ended.max(last.end_time.unwrap_or(started));
            }
            per_step.push(events);
        }
        record.status = if failed { 4 } else { 3 };
        record.end_time = Some(ended);
        record.total_time = Some(ended - started);
        record.version = 2;
        ends.push(Event::Job(record));
    }
    // Interleave steps in runs, as concurrent jobs would.
    let mut cursors = vec![0usize; per_step.len()];
    let total = out.len() + per_step.iter().map(Vec::len).sum::<usize>();
    while out.len() < total {
        for (events, cursor) in per_step.iter().zip(cursors.iter_mut()) {
            let end = (*cursor + 64).min(events.len());
            out.extend_from_slice(&events[*cursor..end]);
            *cursor = end;
        }
    }
    out.extend(ends);
    if w.duplicates > 0.0 {
        let n = out.len();
        for i in 0..n {
            if rng.random_bool(w.duplicates.min(1.0)) {
                let copy = out[i].clone();
                let at = rng.random_range(i..=out.len());
                out.insert(at, copy);
            }
        }
    }
    out
}

fn step_events(w: &Workload, rng: &mut StdRng, job: i64, step_no: usize, start: i64) -> Vec<Event> {
    let step_type = STEP_TYPES[step_no % STEP_TYPES.len()];
    let step = step_id(job, step_no);
    let mut events = Vec::new();
    let mut meta = StepEvent {
        job_instance_id: job,
        step_instance_id: step,
        bk_scope_type: ScopeType::Biz,
        bk_scope_id: w.biz.clone(),
        name: format!(
            "{} {}",
            ["run script", "push files", "run SQL"][step_no % 3],
            step_no + 1
        ),
        step_type,
        status: 2,
        execute_count: 0,
        create_time: start - 1_000,
        start_time: Some(start),
        end_time: None,
        total_time: None,
        step_order: Some(step_no as i32),
        version: 1,
    };
    events.push(Event::Step(meta.clone()));
    let batch_of = |h: usize| {
        if w.batches > 1 {
            1 + (h as i32 % w.batches)
        } else {
            0
        }
    };
    let mut failed: Vec<usize> = Vec::new();
    let mut end = start;
    for execute_count in 0..2 {
        let hosts: Vec<usize> = if execute_count == 0 {
            (0..w.hosts).collect()
        } else {
            failed.clone()
        };
        if execute_count == 1 {
            if hosts.is_empty() || !rng.random_bool(0.5) {
                break;
            }
            meta.execute_count = 1;
            meta.status = 2;
            meta.version += 1;
            events.push(Event::Step(meta.clone()));
        }
        for (chunk_no, chunk) in hosts.chunks(TARGET_CHUNK).enumerate() {
            events.push(Event::StepTargets(StepTargets {
                job_instance_id: job,
                step_instance_id: step,
                execute_count,
                chunk: chunk_no as i32,
                chunk_count: hosts.len().div_ceil(TARGET_CHUNK) as i32,
                hosts: chunk
                    .iter()
                    .map(|&h| {
                        let (id, ip, ipv6) = host_identity(h);
                        TargetHost {
                            bk_host_id: id,
                            batch: batch_of(h),
                            ip: Some(ip),
                            ipv6,
                            bk_agent_id: Some(format!("0200000000{id:010}")),
                            bk_cloud_id: Some(0),
                            bk_cloud_name: Some("Default Area".into()),
                        }
                    })
                    .collect(),
            }));
        }
        failed.clear();
        for &h in &hosts {
            let (id, _, _) = host_identity(h);
            let began = start + rng.random_range(50..2_000);
            let took = rng.random_range(200..60_000);
            end = end.max(began + took);
            let (status, exit_code) = match rng.random_range(0..100) {
                0..=84 => (9, Some(0)),
                85..=92 if step_type != 2 => (104, Some(rng.random_range(1..128))),
                85..=92 => (202, None),
                93..=95 => (if step_type == 2 { 310 } else { 101 }, None),
                96..=97 => (403, None),
                _ => (1, None),
            };
            if status != 9 {
                failed.push(h);
            }
            let tag = match (step_type != 2, status) {
                (true, 9) if rng.random_bool(0.5) => Some("job_success".to_owned()),
                (true, 104) => Some("job_fail".to_owned()),
                _ => None,
            };
            let result = |status, version, end: Option<i64>, tag, exit_code| {
                Event::HostResult(HostResult {
                    job_instance_id: job,
                    step_instance_id: step,
                    execute_count,
                    batch: batch_of(h),
                    bk_host_id: id,
                    ip: None,
                    ipv6: None,
                    bk_agent_id: None,
                    bk_cloud_id: None,
                    bk_cloud_name: None,
                    status,
                    tag,
                    exit_code,
                    // GSE's own code for a failed task; 0 while running and on success.
                    error_code: if matches!(status, 7 | 9) {
                        0
                    } else {
                        1000 + status
                    },
                    start_time: Some(began),
                    end_time: end,
                    total_time: end.map(|e| e - began),
                    version,
                    log_execute_count: None,
                })
            };
            let running = result(7, 1, None, None, None);
            let done = result(status, 2, Some(began + took), tag, exit_code);
            let mut host_events = vec![running];
            if step_type != 2 {
                let mut offset = 0i64;
                for line in script_output(h, execute_count, status, exit_code) {
                    host_events.push(Event::HostLog(HostLog {
                        step_instance_id: step,
                        execute_count,
                        batch: batch_of(h),
                        bk_host_id: id,
                        offset,
                        content: line.clone(),
                    }));
                    offset += line.len() as i64;
                }
            }
            host_events.push(done);
            if w.reorder > 0.0 && rng.random_bool(w.reorder.min(1.0)) {
                host_events.reverse();
            }
            events.extend(host_events);
        }
    }
    meta.status = if failed.is_empty() { 3 } else { 4 };
    meta.end_time = Some(end);
    meta.total_time = Some(end - start);
    meta.version += 1;
    events.push(Event::Step(meta));
    events
}

fn script_output(h: usize, execute_count: i32, status: i32, exit_code: Option<i32>) -> Vec<String> {
    let mut lines = vec![
        format!("[retry {execute_count}] checking disk on host-{h}\n"),
        format!("/dev/vda1 {}% used\n", 20 + h % 70),
    ];
    lines.push(match status {
        9 => "deploy ok\n".to_owned(),
        104 => format!(
            "error: service failed to start, exit {}\n",
            exit_code.unwrap_or(1)
        ),
        _ => "interrupted\n".to_owned(),
    });
    lines
}

#[derive(Default)]
struct DeliveryCount {
    failed: AtomicU64,
}

impl ClientContext for DeliveryCount {}

impl ProducerContext for DeliveryCount {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            tracing::error!(error = %e, "delivery failed");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Produces raw values keyed by step id, at most `rate` per second (0 = as fast as possible).
pub fn produce(
    kafka: &KafkaSettings,
    messages: &[(String, Vec<u8>)],
    rate: u64,
    show_progress: bool,
) -> Result<()> {
    let topic = kafka.topic.as_str();
    let producer: ThreadedProducer<DeliveryCount> = client_config(
        kafka,
        &[
            ("linger.ms", "5"),
            ("enable.idempotence", "true"),
            // Kafka's default partitioner for keyed messages, as events.md asks of producers.
            ("partitioner", "murmur2_random"),
            // Above the 1 MiB event limit, so that tests can send over-limit events for the DLQ.
            ("message.max.bytes", "4194304"),
        ],
    )
    .create_with_context(DeliveryCount::default())
    .context("cannot create Kafka producer")?;
    let bar = if show_progress {
        ProgressBar::new(messages.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "simulate [{elapsed_precise}] {wide_bar} {pos}/{len} events ({per_sec})",
        )
        .expect("valid template"),
    );
    let started = Instant::now();
    for (i, (key, value)) in messages.iter().enumerate() {
        if rate > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let mut record = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(value.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    if !matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        anyhow::bail!("cannot produce to {topic} at {}: {e}", kafka.brokers);
                    }
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        bar.inc(1);
    }
    producer
        .flush(Duration::from_secs(60))
        .context("producer flush timed out")?;
    bar.finish_and_clear();
    let failed = producer.context().failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} events were not delivered to {topic}");
    Ok(())
}

/// The record of a freshness probe's step (script, running, in scope biz 2).
pub fn probe_step(job: i64, step: i64) -> Event {
    Event::Step(StepEvent {
        job_instance_id: job,
        step_instance_id: step,
        bk_scope_type: ScopeType::Biz,
        bk_scope_id: "2".into(),
        name: "freshness probe".into(),
        step_type: 1,
        status: 2,
        execute_count: 0,
        create_time: 0,
        start_time: None,
        end_time: None,
        total_time: None,
        step_order: None,
        version: 1,
    })
}

/// A freshness probe: host 1 of `step` finished, with the tag `v<version>`, so that whoever
/// watches can tell this version from the ones before it.
pub fn probe(job: i64, step: i64, version: i64) -> Event {
    Event::HostResult(HostResult {
        job_instance_id: job,
        step_instance_id: step,
        execute_count: 0,
        batch: 0,
        bk_host_id: 1,
        ip: None,
        ipv6: None,
        bk_agent_id: None,
        bk_cloud_id: None,
        bk_cloud_name: None,
        status: 9,
        tag: Some(format!("v{version}")),
        exit_code: None,
        error_code: 0,
        start_time: None,
        end_time: None,
        total_time: None,
        version,
        log_execute_count: None,
    })
}

/// The Kafka messages of a list of events: key = step id (job id for a job), value = the
/// event's JSON.
pub fn to_messages(events: &[Event]) -> Vec<(String, Vec<u8>)> {
    events
        .iter()
        .map(|e| (e.key_id().to_string(), e.to_json()))
        .collect()
}
