//! Apply throughput: decode → index → RocksDB WriteBatch (WAL on), on one thread.
//!
//! `cargo bench --bench apply` prints medians over runs of a simulated workload, next to a
//! baseline measured in the same run: bare RocksDB WriteBatches of the same number of host-row
//! sized puts (the write cost every design pays), so the ratio shows what our logic adds.

/// The service binary's allocator (src/main.rs), so that figures are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;
use stepview::config::Config;
use stepview::events::decode;
use stepview::service::Views;
use stepview::simulate::{generate, Workload};

const BATCH: usize = 5000;
const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Page faults this process has taken so far (minor: pages the kernel had to map and clear).
fn page_faults() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // minflt, the 8th field after the command name (which is in parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[7].parse().unwrap()
}

fn open(dir: &std::path::Path) -> Views {
    let c = Config {
        data_dir: dir.to_owned(),
        ..Config::default()
    };
    Views::open(&c).unwrap()
}

fn main() {
    let hosts = std::env::var("BENCH_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let w = Workload {
        jobs: 4,
        steps_per_job: 3,
        hosts,
        batches: 3,
        ..Workload::default()
    };
    let events = generate(&w);
    let messages: Vec<Vec<u8>> = events.iter().map(|e| e.to_json()).collect();
    let n = messages.len();
    println!("apply benchmark: {n} events ({} jobs × {} steps × {hosts} hosts), batches of {BATCH}, {RUNS} runs", w.jobs, w.steps_per_job);

    let (mut decode_rates, mut apply_rates, mut total_rates, mut baseline_rates) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut faults_per_event = Vec::new();
    for run in 1..=RUNS {
        let dir = tempfile::tempdir().unwrap();
        let views = open(dir.path());
        let t = Instant::now();
        let decoded: Vec<_> = messages.iter().map(|m| decode(m).unwrap().0).collect();
        let decode_s = t.elapsed().as_secs_f64();
        let (t, faults) = (Instant::now(), page_faults());
        for batch in decoded.chunks(BATCH) {
            views
                .sink
                .applier
                .apply(&stepview::apply::Batch::local(batch))
                .unwrap();
        }
        let apply_s = t.elapsed().as_secs_f64();
        faults_per_event.push((page_faults() - faults) / n as f64);
        decode_rates.push(n as f64 / decode_s);
        apply_rates.push(n as f64 / apply_s);
        total_rates.push(n as f64 / (decode_s + apply_s));

        // Baseline: the same number of ~60-byte puts in WriteBatches of the same size.
        let bdir = tempfile::tempdir().unwrap();
        let db = rocksdb::DB::open_default(bdir.path()).unwrap();
        let t = Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
            let mut wb = rocksdb::WriteBatch::default();
            for i in chunk {
                wb.put((*i as u64).to_be_bytes(), [7u8; 60]);
            }
            db.write(wb).unwrap();
        }
        baseline_rates.push(n as f64 / t.elapsed().as_secs_f64());
        eprintln!(
            "  run {run}/{RUNS}: decode+apply {:.0} events/s",
            total_rates.last().unwrap()
        );
    }
    let total = median(total_rates);
    let baseline = median(baseline_rates);
    println!(
        "decode only          : {:>10.0} events/s (median)",
        median(decode_rates)
    );
    println!(
        "apply only           : {:>10.0} events/s (median)",
        median(apply_rates)
    );
    println!(
        "page faults in apply : {:>10.3} per event (median; RocksDB's freed memory is kept, see Store::open)",
        median(faults_per_event)
    );
    println!("decode + apply       : {:>10.0} events/s (median)", total);
    println!(
        "baseline bare puts   : {:>10.0} puts/s   (median)",
        baseline
    );
    println!("ratio apply/baseline : {:>10.2}", total / baseline);
    println!(
        "target (architecture.md) ≥ 500000 events/s: {}",
        if total >= 500_000.0 { "met" } else { "NOT met" }
    );
}
