use std::time::Instant;
use stepview::config::Config;
use stepview::events::{Event, HostResult, ScopeType, StepEvent, StepTargets, TargetHost};
use stepview::query::{answer, StepQuery};
use stepview::service::Views;
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
            start_time: Some(10),
            end_time: Some(20),
            total_time: Some(10),
            version: 1,
        }));
    }
    events
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
    for batch in workload().chunks(5000) {
        views.sink.applier.apply(batch, &[]).unwrap();
    }
    views.store.flush().unwrap();
    let full = query(None);
    for _ in 0..5 {
        let t = Instant::now();
        let rows = views.store.rows_in(STEP, 0, None).unwrap();
        let scan = t.elapsed().as_millis();
        drop(rows);
        let t = Instant::now();
        let a = answer(&views.index, &views.store, &full).unwrap();
        let ans = t.elapsed().as_millis();
        let t = Instant::now();
        let body = stepview::http::render::success(&a, stepview::http::i18n::Lang::Zh, "x", 0);
        let render = t.elapsed().as_millis();
        let t = Instant::now();
        drop(a);
        let dropt = t.elapsed().as_millis();
        println!(
            "scan {scan} ms, answer {ans} ms, render {render} ms ({} bytes), drop {dropt} ms",
            body.len()
        );
    }
}
