//! Scope on every route (api.md, "Authentication"; cluster.md, "Forwarding"): an app allowed
//! only `biz:2` asks every route of `/openapi.json`, and the routes between members, for a
//! `biz:3` job, step and host, naming its own scope or the other one. Nothing of them may appear
//! in any answer, and asking must not load the other scope's step into memory (which would tell
//! by time and by what it pushes out that it exists).

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use stepview::events::{Event, JobEvent, ScopeType};

/// The other scope's job, step and hosts, and what marks them in any text.
const OTHER_JOB: i64 = 2;
const OTHER_STEP: i64 = 201;
const OTHER_HOSTS: [i64; 3] = [31, 32, 33];
const MARKERS: [&str; 3] = ["SECRET", "10.99.3.", "agent-3"];

fn other_scope() -> Vec<Event> {
    let Event::Step(mut s) = step(OTHER_STEP, 1, 3, 0, 1) else {
        unreachable!()
    };
    s.job_instance_id = OTHER_JOB;
    s.bk_scope_id = "3".into();
    s.name = "SECRET step".into();
    let Event::StepTargets(mut t) = targets(
        OTHER_STEP,
        0,
        &[
            (31, 0, "10.99.3.1"),
            (32, 0, "10.99.3.2"),
            (33, 0, "10.99.3.3"),
        ],
    ) else {
        unreachable!()
    };
    t.job_instance_id = OTHER_JOB;
    let mut events = vec![
        Event::Job(JobEvent {
            job_instance_id: OTHER_JOB,
            bk_scope_type: ScopeType::Biz,
            bk_scope_id: "3".into(),
            name: "SECRET job".into(),
            status: 3,
            create_time: 1_700_000_000_000,
            start_time: Some(1_700_000_001_000),
            end_time: Some(1_700_000_002_000),
            total_time: None,
            version: 1,
        }),
        Event::Step(s),
        Event::StepTargets(t),
    ];
    for host in OTHER_HOSTS {
        let mut r = result(OTHER_STEP, 0, 0, host, 9, "SECRET tag", 1);
        r.job_instance_id = OTHER_JOB;
        events.push(Event::HostResult(r));
        events.push(log(OTHER_STEP, 0, 0, host, 0, "SECRET output\n"));
    }
    events
}

/// Our own scope's job 1 with step 101, so that routes have something legitimate beside.
fn own_scope() -> Vec<Event> {
    vec![
        step(101, 1, 2, 0, 1),
        targets(101, 0, &[(1, 0, "10.0.2.1")]),
        Event::HostResult(result(101, 0, 0, 1, 9, "", 1)),
        log(101, 0, 0, 1, 0, "own output\n"),
    ]
}

/// Every (method, path) of the OpenAPI document.
fn documented_routes(openapi: &Value) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for (path, ops) in openapi["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if method == "get" || method == "post" {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// The ways to ask for the other scope: naming our scope with its ids, or naming its scope.
fn asks() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for scope in ["2", "3"] {
        for (job, step) in [(OTHER_JOB, OTHER_STEP), (JOB, OTHER_STEP), (OTHER_JOB, 101)] {
            let query = format!(
                "bk_scope_type=biz&bk_scope_id={scope}&job_instance_id={job}&step_instance_id={step}\
                 &bk_host_id=31&return_ip_result=true&max_host_num_per_group=5&search_ip=10.99"
            );
            let body = json!({
                "bk_scope_type": "biz", "bk_scope_id": scope, "job_instance_id": job,
                "step_instance_id": step, "host_id_list": OTHER_HOSTS,
            });
            out.push((query, body));
        }
    }
    out
}

/// Asks `base` every route for the other scope as `BIZ2_APP`; panics naming any answer that
/// shows anything of it. Returns how many requests were made.
async fn ask_everything(client: &reqwest::Client, base: &str) -> usize {
    let openapi: Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let auth = auth_header(BIZ2_APP, SECRET);
    let mut asked = 0;
    for (method, path) in documented_routes(&openapi) {
        for (query, body) in asks() {
            let url = format!("{base}{path}?{query}");
            let req = match method.as_str() {
                "POST" => client.post(&url).json(&body),
                _ => client.get(&url),
            };
            let resp = req
                .header("X-Bkapi-Authorization", &auth)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            // An event stream that opened would show its first event within this time.
            let text = match tokio::time::timeout(Duration::from_secs(2), resp.text()).await {
                Ok(t) => t.unwrap_or_default(),
                Err(_) => panic!("{method} {path}?{query}: a stream stayed open ({status})"),
            };
            for marker in MARKERS {
                assert!(
                    !text.contains(marker),
                    "{method} {path}?{query} showed {marker:?}: {status} {text}"
                );
            }
            for host in OTHER_HOSTS {
                assert!(
                    !text.contains(&format!("\"bk_host_id\":{host}")),
                    "{method} {path}?{query} showed host {host}: {text}"
                );
            }
            if path.starts_with("/api/") {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let code = v["code"].as_i64();
                assert!(
                    matches!(code, Some(1244006 | 1244007 | 9900403))
                        || (code == Some(0) && !text.contains(&OTHER_STEP.to_string())),
                    "{method} {path}?{query}: {status} {text}"
                );
            }
            asked += 1;
        }
    }
    asked
}

#[tokio::test]
async fn an_app_reads_nothing_of_another_scope_on_any_route() {
    let dir = tempfile::tempdir().unwrap();
    let svc = TestService::start(test_config(dir.path())).await;
    svc.apply(&own_scope());
    svc.apply(&other_scope());
    let loads_before = svc
        .metric("stepview_index_loads_total")
        .await
        .unwrap_or(0.0);

    let asked = ask_everything(&svc.client, &svc.base).await;
    assert!(asked >= 6 * 11, "only {asked} requests");

    // Asking never loaded the other scope's step: it is not in memory.
    let loads = svc
        .metric("stepview_index_loads_total")
        .await
        .unwrap_or(0.0);
    let (status, _) = svc.get(&q(101, "")).await;
    assert_eq!(status, 200);
    let own_loaded = svc
        .metric("stepview_index_loads_total")
        .await
        .unwrap_or(0.0);
    assert_eq!(loads, loads_before, "the other scope's step was loaded");
    assert_eq!(
        own_loaded,
        loads_before + 1.0,
        "our own step loads as usual"
    );

    // The same app reads its own scope; an app allowed everything reads the other one.
    let (_, own) = svc
        .get_with(
            &q(101, ""),
            &[("X-Bkapi-Authorization", &auth_header(BIZ2_APP, SECRET))],
        )
        .await;
    assert_eq!(own["code"], 0, "{own}");
    let other = format!(
        "bk_scope_type=biz&bk_scope_id=3&job_instance_id={OTHER_JOB}&step_instance_id={OTHER_STEP}"
    );
    let (_, all) = svc.get(&other).await;
    assert_eq!(all["data"]["name"], "SECRET step", "{all}");

    // There is no route between members on a single instance.
    let (status, _) = svc
        .get_path("/internal/v1/job_steps?job_instance_id=2")
        .await;
    assert_eq!(status, 404);
}

/// A shard with authentication on: the app's config, written where the shard reads it.
fn shard_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("stepview.toml");
    let apps: String = test_config(dir)
        .apps
        .iter()
        .map(|a| {
            format!(
                "[[apps]]\ncode = \"{}\"\nsecret_sha256 = \"{}\"\nscopes = {:?}\n",
                a.code,
                a.secret_sha256.as_deref().unwrap_or_default(),
                a.scopes
            )
        })
        .collect();
    std::fs::write(&path, apps).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shard_every_route_and_the_members_route_keep_the_scope() {
    let topic = new_topic("scope", 4).await;
    let mut events = own_scope();
    events.extend(other_scope());
    produce(&topic, &events, 0).await;
    let config_dir = tempfile::tempdir().unwrap();
    let config = shard_config(config_dir.path());
    let set = unique_name("scope-set");
    let shard = Shard::start(
        brokers(),
        &topic,
        &set,
        &["--config", config.to_str().unwrap()],
    );
    let client = reqwest::Client::new();
    // Serving: our own step answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let resp = client
            .get(format!(
                "{}/api/v3/get_step_instance_status?{}",
                shard.base,
                q(101, "")
            ))
            .header("X-Bkapi-Authorization", auth_header(BIZ2_APP, SECRET))
            .send()
            .await;
        if let Ok(resp) = resp {
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            if v["code"] == 0 {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shard never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ask_everything(&client, &shard.base).await;

    // The route between members: refused unsigned, signed with another secret, or too old;
    // signed properly it still keeps the app's scope.
    let part = "/internal/v1/job_steps";
    let all_partitions = "partitions=0,1,2,3";
    let ask_part = |query: String, headers: Vec<(&'static str, String)>| {
        let mut req = client.get(format!("{}{part}?{query}", shard.base));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let query = |scope: &str| {
        format!(
            "bk_scope_type=biz&bk_scope_id={scope}&job_instance_id={OTHER_JOB}&return_ip_result=true&{all_partitions}"
        )
    };
    let signed = |secret: &str, query: &str, app: &str, time_ms: i64| {
        let file = config_dir.path().join("secret");
        std::fs::write(&file, secret).unwrap();
        let key = stepview::cluster::secret::MembersSecret::load(Some(&file)).unwrap();
        let signature = key.request_signature(&stepview::cluster::secret::SignedRequest {
            method: "GET",
            path: part,
            query,
            body: b"",
            time_ms,
            app,
        });
        vec![
            ("x-stepview-app", app.to_owned()),
            ("x-stepview-time", time_ms.to_string()),
            ("x-stepview-signature", signature),
        ]
    };
    let now = stepview::now_ms();
    let (status, text) = ask_part(query("3"), Vec::new()).await;
    assert_eq!(status, 401, "unsigned: {text}");
    let forged = signed(
        "another secret of thirty-two bytes or more",
        &query("3"),
        BIZ2_APP,
        now,
    );
    let (status, text) = ask_part(query("3"), forged).await;
    assert_eq!(status, 401, "another secret: {text}");
    let stale = signed(SHARD_SECRET, &query("3"), APP, now - 60_000);
    let (status, text) = ask_part(query("3"), stale).await;
    assert_eq!(status, 401, "a minute old: {text}");
    let narrow = signed(SHARD_SECRET, &query("3"), BIZ2_APP, now);
    let (status, text) = ask_part(query("3"), narrow).await;
    assert_eq!(status, 403, "another scope: {text}");
    let own_scope_other_job = signed(SHARD_SECRET, &query("2"), BIZ2_APP, now);
    let (status, text) = ask_part(query("2"), own_scope_other_job).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"], json!([]), "the other scope's steps: {text}");
    let wide = signed(SHARD_SECRET, &query("3"), APP, now);
    let (status, text) = ask_part(query("3"), wide).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("SECRET step"),
        "an app allowed it reads it: {text}"
    );
}
