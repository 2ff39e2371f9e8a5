//! Query cost on a step of 100 000 hosts in ~20 (status, tag) groups, in process:
//! capped answers (`max_host_num_per_group=100`) p50/p99, the first capped query of the step
//! when it is not in memory (it is loaded), the full uncapped answer rendered to JSON, and the
//! index memory per host (measured by a counting allocator for a step loaded from the store;
//! estimated, as `/metrics` does, for a step that apply builds while its hosts finish in random
//! order). A baseline measured in the same
//! run: a plain RocksDB range scan of the step's rows, which any answer that reads rows instead
//! of an index would pay.
//!
//! `cargo bench --bench query`

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;
use stepview::config::Config;
use stepview::events::{Event, HostResult, ScopeType, StepEvent, StepTargets, TargetHost};
use stepview::index::Index;
use stepview::query::{Cancel, Reader, StepQuery};
use stepview::service::Views;

/// The service binary's allocator (src/main.rs), counting live bytes.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const HOSTS: i64 = 100_000;
const STEP: i64 = 77;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn workload() -> Vec<Event> {
    let mut events = vec![Event::Step(StepEvent {
        job_instance_id: 1,
        step_instance_id: STEP,
        bk_scope_type: ScopeType::Biz,
        bk_scope_id: "2".into(),
        name: "bench".into(),
        step_type: 1,
        status: 2,
        execute_count: 0,
        create_time: 1,
        start_time: Some(2),
        end_time: None,
        total_time: None,
        step_order: None,
        version: 1,
    })];
    for chunk in (1..=HOSTS).collect::<Vec<_>>().chunks(10_000) {
        events.push(Event::StepTargets(StepTargets {
            job_instance_id: 1,
            step_instance_id: STEP,
            execute_count: 0,
            chunk: 0,
            chunk_count: 1,
            hosts: chunk
                .iter()
                .map(|h| TargetHost {
                    bk_host_id: *h,
                    batch: 0,
                    ip: Some(format!("10.{}.{}.{}", h >> 16, (h >> 8) & 255, h & 255)),
                    ipv6: None,
                    bk_agent_id: Some(format!("agent-{h}")),
                    bk_cloud_id: Some(0),
                    bk_cloud_name: Some("Default Area".into()),
                })
                .collect(),
        }));
    }
    // ~20 groups: 5 statuses × 4 tags.
    for h in 1..=HOSTS {
        let status = [9, 104, 101, 403, 7][(h % 5) as usize];
        events.push(Event::HostResult(HostResult {
            job_instance_id: 1,
            step_instance_id: STEP,
            execute_count: 0,
            batch: 0,
            bk_host_id: h,
            ip: None,
            ipv6: None,
            bk_agent_id: None,
            bk_cloud_id: None,
            bk_cloud_name: None,
            status,
            tag: Some(format!("tag{}", (h / 5) % 4)),
            exit_code: Some(0),
            error_code: 0,
            start_time: Some(10),
            end_time: Some(20),
            total_time: Some(10),
            version: 1,
            log_execute_count: None,
        }));
    }
    events
}

/// The index of a step resident while apply folds the workload with its host results in random
/// order (hosts finish in any order): estimated bytes per host at the end, and at the peak.
fn index_built_by_apply() -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let views = Views::open(&config).unwrap();
    let mut events = workload();
    let mut results = events.split_off(1 + (HOSTS as usize).div_ceil(10_000));
    results.shuffle(&mut StdRng::seed_from_u64(7));
    let apply = |events: &[Event]| {
        views
            .sink
            .applier
            .apply(&stepview::apply::Batch::local(events))
            .unwrap();
    };
    apply(&events[..1]);
    views
        .index
        .step(STEP, &views.store, |_| true)
        .unwrap()
        .unwrap();
    apply(&events[1..]);
    let mut peak = 0;
    for batch in results.chunks(5000) {
        apply(batch);
        peak = peak.max(views.index.figures().bytes);
    }
    let end = views.index.figures().bytes;
    (end as f64 / HOSTS as f64, peak as f64 / HOSTS as f64)
}

fn query(cap: Option<i32>) -> StepQuery {
    StepQuery {
        scope_type: ScopeType::Biz,
        scope_id: "2".into(),
        job_instance_id: 1,
        step_instance_id: STEP,
        execute_count: None,
        batch: None,
        max_host_num_per_group: cap,
        keyword: None,
        search_ip: None,
        status: None,
        tag: None,
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let views = Views::open(&config).unwrap();
    eprintln!("loading a step of {HOSTS} hosts …");
    for batch in workload().chunks(5000) {
        views
            .sink
            .applier
            .apply(&stepview::apply::Batch::local(batch))
            .unwrap();
    }
    views.sink.applier.flush().unwrap();

    // Index memory: load the step into an empty index and count what it allocates.
    let fresh = || Index::new(usize::MAX, 0);
    let index = fresh();
    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    index.step(STEP, &views.store, |_| true).unwrap().unwrap();
    let load_s = started.elapsed().as_secs_f64();
    let index_bytes = LIVE.load(Ordering::Relaxed) - before;
    let estimated_bytes = index.estimated_bytes();
    drop(index);
    let (applied_per_host, applied_peak_per_host) = index_built_by_apply();

    // Capped answers, polled repeatedly as UIs do: warm (rows of the answer kept hot in the
    // index after the first poll) and cold (an index without hot rows: every row from RocksDB);
    // and the first query of the step when it is not in memory at all (loaded, then answered).
    let capped = query(Some(100));
    let never = Cancel::default();
    // A reader of the same store through another (empty) index.
    let with_index = |index: Index| {
        Reader::new(
            std::sync::Arc::new(index),
            views.store.clone(),
            std::sync::Arc::clone(&views.watches),
        )
    };
    let first_queries: Vec<f64> = {
        let mut lat: Vec<f64> = (0..50)
            .map(|_| {
                let reader = with_index(fresh());
                let t = Instant::now();
                std::hint::black_box(reader.answer(&capped, &never).unwrap());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        lat
    };
    let cold = with_index(fresh());
    let warm = views.reader();
    let groups = warm.answer(&capped, &never).unwrap().groups.len();
    let time_capped = |reader: &Reader| {
        let mut lat = Vec::new();
        for _ in 0..2000 {
            let t = Instant::now();
            let a = reader.answer(&capped, &never).unwrap();
            std::hint::black_box(&a);
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        lat
    };
    let lat = time_capped(&warm);
    let cold = time_capped(&cold);

    let full = query(None);
    let mut full_ms = Vec::new();
    let mut scan_ms = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let a = warm.answer(&full, &never).unwrap();
        let hosts: usize = a.groups.iter().map(|g| g.hosts.len()).sum();
        assert_eq!(hosts as i64, HOSTS);
        // Rendered once, as an answer too large for the answer cache is.
        let body =
            stepview::http::render::RenderedStep::of(a, stepview::http::i18n::Lang::Zh, false)
                .body("bench", 0);
        std::hint::black_box(body);
        full_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let rows = views.store.snapshot().rows_in(STEP, 0, None).unwrap();
        assert_eq!(rows.len() as i64, HOSTS);
        scan_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    full_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    scan_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());

    println!("query benchmark: one step, {HOSTS} hosts, {groups} groups, in process");
    println!("capped (max_host_num_per_group=100): p50 {:.1} µs, p99 {:.1} µs over {} queries (target p99 ≤ 100 µs)",
        percentile(&lat, 0.5), percentile(&lat, 0.99), lat.len());
    println!(
        "  same, cold (no hot rows: RocksDB) : p50 {:.1} µs, p99 {:.1} µs",
        percentile(&cold, 0.5),
        percentile(&cold, 0.99)
    );
    println!(
        "full uncapped answer as JSON        : median {:.1} ms (target ≤ 100 ms)",
        percentile(&full_ms, 0.5)
    );
    println!(
        "baseline: range scan of all rows    : median {:.1} ms",
        percentile(&scan_ms, 0.5)
    );
    println!(
        "ratio capped p50 / baseline scan    : {:.4}",
        percentile(&lat, 0.5) / 1e3 / percentile(&scan_ms, 0.5)
    );
    println!(
        "index memory                        : {} bytes, {:.1} bytes per host (target ≤ 16)",
        index_bytes,
        index_bytes as f64 / HOSTS as f64
    );
    println!(
        "index memory as /metrics estimates  : {} bytes ({:.2} × measured)",
        estimated_bytes,
        estimated_bytes as f64 / index_bytes as f64
    );
    println!(
        "index built by apply, hosts finishing in random order (estimate): {applied_per_host:.1} bytes per host at the end, {applied_peak_per_host:.1} at the peak"
    );
    println!(
        "first query, step not in memory     : p50 {:.1} ms, p99 {:.1} ms over {} (target p99 ≤ 50 ms); the load alone {:.1} ms, {:.2} M rows/s",
        percentile(&first_queries, 0.5),
        percentile(&first_queries, 0.99),
        first_queries.len(),
        load_s * 1e3,
        HOSTS as f64 / load_s / 1e6
    );
}
