//! Behind BlueKing's API gateway (gateway.md): the gateway's `X-Bkapi-JWT`, checked as the spec
//! says with keys this test generates; every refusal in its list answered 401 (1240005); an
//! unlisted app or a narrow app's other scope 403; the modes; key rotation by SIGHUP; bk-job's
//! backend paths answered like the `/api/v3/` routes; the gateway's resource files agreeing
//! with the router; the gateway's request id as `job_request_id`; shards forwarding the JWT to
//! an owner that judges it again.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use stepview::cluster::owners::owner;
use stepview::http::{AuthMode, GatewayConfig};

const GATEWAY: &str = "bk-job";

/// An RSA key pair made with openssl: (private key PEM, public key file).
fn key_pair(dir: &Path, name: &str) -> (Vec<u8>, PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .output()
        .expect("openssl (ops/test.sh installs it)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .output()
        .unwrap();
    assert!(out.status.success());
    (std::fs::read(&private).unwrap(), public)
}

fn now_s() -> i64 {
    stepview::now_ms() / 1000
}

/// The claims bk-apigateway writes, for `app` (verified) and user `admin`, valid for 5 minutes.
fn claims(app: &str) -> Value {
    json!({
        "app": {"bk_app_code": app, "verified": true},
        "user": {"bk_username": "admin", "verified": true},
        "iss": "APIGW",
        "exp": now_s() + 300,
        "nbf": now_s() - 10,
    })
}

fn token(key: &[u8], kid: &str, alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let key = match alg {
        Algorithm::HS512 | Algorithm::HS256 => EncodingKey::from_secret(key),
        _ => EncodingKey::from_rsa_pem(key).unwrap(),
    };
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn gateway_config(keys: &[PathBuf]) -> GatewayConfig {
    GatewayConfig {
        name: GATEWAY.into(),
        public_key_files: keys.to_vec(),
        algorithm: stepview::http::GatewayAlgorithm::RS512,
        issuer: None,
    }
}

async fn service(mode: AuthMode, gateways: Vec<GatewayConfig>) -> (tempfile::TempDir, TestService) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.http.auth = mode;
    config.gateways = gateways;
    let svc = TestService::start(config).await;
    svc.apply(&[
        step(101, 1, 3, 0, 1),
        targets(101, 0, &[(1, 0, "10.0.0.1"), (2, 0, "10.0.0.2")]),
        stepview::events::Event::HostResult(result(101, 0, 0, 1, 9, "", 1)),
        log(101, 0, 0, 1, 0, "hello\n"),
    ]);
    (dir, svc)
}

fn with_jwt(token: &str) -> Vec<(&'static str, String)> {
    vec![("X-Bkapi-JWT", token.to_owned())]
}

/// GET `path?query` with `headers`: the status and the body.
async fn get(
    svc: &TestService,
    path: &str,
    query: &str,
    headers: &[(&str, String)],
) -> (u16, Value) {
    let mut req = svc.client.get(format!("{}{path}?{query}", svc.base));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// An answer without what differs between two equal ones.
fn plain(mut v: Value) -> Value {
    v["job_request_id"] = Value::Null;
    if v["data"].is_object() {
        v["data"]["total_time"] = Value::Null;
    }
    v
}

const STATUS: &str = "/api/v3/get_step_instance_status";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_tokens_are_checked_as_the_spec_says() {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = key_pair(keys.path(), "gateway");
    let (other_private, _) = key_pair(keys.path(), "other");
    let (_dir, svc) = service(
        AuthMode::Both,
        vec![gateway_config(std::slice::from_ref(&public))],
    )
    .await;
    let query = q(101, "max_host_num_per_group=10");

    // Accepted: the same answer as with the app's secret.
    let good = token(&private, GATEWAY, Algorithm::RS512, &claims(APP));
    let (status, by_jwt) = get(&svc, STATUS, &query, &with_jwt(&good)).await;
    assert_eq!(status, 200, "{by_jwt}");
    let (_, by_secret) = svc.get(&query).await;
    assert_eq!(plain(by_jwt), plain(by_secret));
    // Older gateways' field names, and no `bk_` user name.
    let old = json!({"app": {"app_code": APP, "verified": true}, "user": {"username": "u"}, "exp": now_s() + 60});
    let (status, _) = get(
        &svc,
        STATUS,
        &query,
        &with_jwt(&token(&private, GATEWAY, Algorithm::RS512, &old)),
    )
    .await;
    assert_eq!(status, 200);

    // Every refusal: 401, code 1240005.
    let mut expired = claims(APP);
    expired["exp"] = json!(now_s() - 120);
    let mut early = claims(APP);
    early["nbf"] = json!(now_s() + 120);
    let mut unverified = claims(APP);
    unverified["app"]["verified"] = json!(false);
    let mut empty_app = claims(APP);
    empty_app["app"]["bk_app_code"] = json!("");
    let mut no_exp = claims(APP);
    no_exp.as_object_mut().unwrap().remove("exp");
    let pem_text = std::fs::read(&public).unwrap();
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": GATEWAY})),
        b64(&claims(APP))
    );
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let mut evil = claims(APP);
        evil["app"]["bk_app_code"] = json!(BIZ2_APP);
        format!("{}.{}.{}", parts[0], b64(&evil), parts[2])
    };
    let refused = [
        (
            "expired",
            token(&private, GATEWAY, Algorithm::RS512, &expired),
        ),
        (
            "not yet valid",
            token(&private, GATEWAY, Algorithm::RS512, &early),
        ),
        (
            "no exp",
            token(&private, GATEWAY, Algorithm::RS512, &no_exp),
        ),
        (
            "another key",
            token(&other_private, GATEWAY, Algorithm::RS512, &claims(APP)),
        ),
        (
            "unknown kid",
            token(&private, "someone-else", Algorithm::RS512, &claims(APP)),
        ),
        (
            "unverified app",
            token(&private, GATEWAY, Algorithm::RS512, &unverified),
        ),
        (
            "empty app",
            token(&private, GATEWAY, Algorithm::RS512, &empty_app),
        ),
        ("alg none", none),
        // The classic: an HMAC "signed" with the public key's PEM text as its secret.
        (
            "HS512 forgery",
            token(&pem_text, GATEWAY, Algorithm::HS512, &claims(APP)),
        ),
        (
            "RS256 where RS512 is configured",
            token(&private, GATEWAY, Algorithm::RS256, &claims(APP)),
        ),
        ("tampered payload", tampered),
        ("garbage", "not.a.token".into()),
        ("two parts", "abc.def".into()),
    ];
    for (why, bad) in &refused {
        // A valid secret beside it does not help: a request with a JWT is judged by it alone.
        let headers = [
            ("X-Bkapi-JWT", bad.clone()),
            ("X-Bkapi-Authorization", auth_header(APP, SECRET)),
        ];
        let (status, body) = get(&svc, STATUS, &query, &headers).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (401, Some(1240005)),
            "{why}: {body}"
        );
    }
    // An empty header counts as absent: the secret then decides.
    let headers = [
        ("X-Bkapi-JWT", String::new()),
        ("X-Bkapi-Authorization", auth_header(APP, SECRET)),
    ];
    assert_eq!(get(&svc, STATUS, &query, &headers).await.0, 200);

    // An app the configuration does not list, and a narrow app's other scope: 403.
    let stranger = token(&private, GATEWAY, Algorithm::RS512, &claims("stranger"));
    let (status, body) = get(&svc, STATUS, &query, &with_jwt(&stranger)).await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (403, Some(9900403)),
        "{body}"
    );
    let narrow = token(&private, GATEWAY, Algorithm::RS512, &claims(BIZ2_APP));
    let other_scope = query.replace("bk_scope_id=2", "bk_scope_id=3");
    let (status, body) = get(&svc, STATUS, &other_scope, &with_jwt(&narrow)).await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (403, Some(9900403)),
        "{body}"
    );
    assert_eq!(get(&svc, STATUS, &query, &with_jwt(&narrow)).await.0, 200);

    // The gateway's request id is the answer's when the caller sent none of its own.
    let mut headers = with_jwt(&good);
    headers.push(("X-Bkapi-Request-Id", "gw-req-42".into()));
    let (_, body) = get(&svc, STATUS, &query, &headers).await;
    assert_eq!(body["job_request_id"], "gw-req-42");
    headers.push(("X-Request-Id", "mine".into()));
    let (_, body) = get(&svc, STATUS, &query, &headers).await;
    assert_eq!(body["job_request_id"], "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_mode_takes_nothing_but_the_gateways_tokens() {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = key_pair(keys.path(), "gateway");
    let (_dir, svc) = service(AuthMode::Gateway, vec![gateway_config(&[public])]).await;
    let query = q(101, "");
    let (status, body) = svc.get(&query).await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (401, Some(1240005)),
        "a secret alone: {body}"
    );
    let good = token(&private, GATEWAY, Algorithm::RS512, &claims(APP));
    assert_eq!(get(&svc, STATUS, &query, &with_jwt(&good)).await.0, 200);
    // The live page says it needs another mode.
    let (status, page) = svc.get_path("/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("http.auth") && !page.contains("bk_app_secret"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bk_jobs_backend_paths_answer_like_the_api_routes() {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = key_pair(keys.path(), "gateway");
    let (_dir, svc) = service(AuthMode::Gateway, vec![gateway_config(&[public])]).await;
    let jwt = with_jwt(&token(&private, GATEWAY, Algorithm::RS512, &claims(APP)));
    let job = format!("bk_scope_type=biz&bk_scope_id=2&job_instance_id={JOB}");
    for (api, query) in [
        ("get_step_instance_status", q(101, "")),
        ("get_job_instance_status", job.clone()),
        ("get_job_instance_ip_log", q(101, "bk_host_id=1")),
    ] {
        let ours = get(&svc, &format!("/api/v3/{api}"), &query, &jwt).await;
        let bk_jobs = get(
            &svc,
            &format!("/api/job/v3/job-execute/{api}"),
            &query,
            &jwt,
        )
        .await;
        assert_eq!(
            (ours.0, plain(ours.1)),
            (bk_jobs.0, plain(bk_jobs.1)),
            "{api}"
        );
    }
    let body = json!({"bk_scope_type": "biz", "bk_scope_id": "2", "job_instance_id": JOB,
                      "step_instance_id": 101, "host_id_list": [1, 2]});
    let mut answers = Vec::new();
    for path in [
        "/api/v3/batch_get_job_instance_ip_log",
        "/api/job/v3/job-execute/batch_get_job_instance_ip_log",
    ] {
        let resp = svc
            .client
            .post(format!("{}{path}", svc.base))
            .header("X-Bkapi-JWT", &jwt[0].1)
            .json(&body)
            .send()
            .await
            .unwrap();
        answers.push(plain(resp.json::<Value>().await.unwrap()));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(
        answers[0]["data"]["script_task_logs"][0]["log_content"],
        "hello\n"
    );
    // The watch route too (its first event).
    let resp = svc
        .client
        .get(format!(
            "{}/api/job/v3/job-execute/watch_step_instance_status?{}",
            svc.base,
            q(101, "")
        ))
        .header("X-Bkapi-JWT", &jwt[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
}

#[tokio::test]
async fn the_gateway_resource_files_agree_with_the_router() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("support-files/bk-api-gateway");
    let resources = std::fs::read_to_string(root.join("resources.yaml")).unwrap();
    assert_eq!(
        resources,
        stepview::http::routes::gateway_resources(),
        "resources.yaml is generated: stepview gateway-resources > support-files/bk-api-gateway/resources.yaml"
    );
    assert!(std::fs::read_to_string(root.join("definition.yaml"))
        .unwrap()
        .contains("spec_version: 2"));
    // Every backend path the resources name is a route of this method here (not 404 or 405),
    // and is listed in /openapi.json.
    let (_dir, svc) = service(AuthMode::AppSecret, Vec::new()).await;
    let openapi: Value = serde_json::from_str(&svc.get_path("/openapi.json").await.1).unwrap();
    for op in &stepview::http::routes::OPERATIONS {
        assert!(
            resources.contains(&format!("path: {}\n", op.backend)),
            "{}",
            op.name
        );
        let url = format!("{}{}", svc.base, op.backend);
        let req = match op.method {
            "post" => svc.client.post(&url),
            _ => svc.client.get(&url),
        };
        let status = req.send().await.unwrap().status().as_u16();
        assert_eq!(
            status, 401,
            "{} {}: an API route that wants credentials",
            op.method, op.backend
        );
        assert!(
            openapi["paths"][op.backend][op.method].is_object(),
            "{} missing from /openapi.json",
            op.backend
        );
    }
}

/// The key files named at start are read again on SIGHUP, all or nothing; a key file that does
/// not parse stops the start, naming the file.
#[test]
fn keys_rotate_on_sighup_and_a_broken_file_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (old_private, old_public) = key_pair(dir.path(), "old");
    let (new_private, new_public) = key_pair(dir.path(), "new");
    let rotating = dir.path().join("rotating.pub");
    std::fs::copy(&old_public, &rotating).unwrap();
    let config = dir.path().join("stepview.toml");
    let write_config = |keys: &[&Path]| {
        let files: Vec<String> = keys
            .iter()
            .map(|k| format!("{:?}", k.display().to_string()))
            .collect();
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[http]\nauth = \"gateway\"\n[[apps]]\ncode = \"{APP}\"\nscopes = [\"*\"]\n\
                 [[gateways]]\nname = \"{GATEWAY}\"\npublic_key_files = [{}]\n",
                dir.path().join("data").display().to_string(),
                files.join(", ")
            ),
        )
        .unwrap();
    };
    // A key file that does not parse: the start fails, naming it.
    let broken = dir.path().join("broken.pub");
    std::fs::write(&broken, "not a key").unwrap();
    write_config(&[&old_public, &broken]);
    let out = Command::new(env!("CARGO_BIN_EXE_stepview"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.pub"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    write_config(&[&old_public, &rotating]);
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepview"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("STEPVIEW_LOG", "warn")
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ask = |private: &[u8]| {
        let jwt = token(private, GATEWAY, Algorithm::RS512, &claims(APP));
        rt.block_on(async {
            for _ in 0..100 {
                let resp = client
                    .get(format!("{base}{STATUS}?{}", q(101, "")))
                    .header("X-Bkapi-JWT", &jwt)
                    .send()
                    .await;
                if let Ok(resp) = resp {
                    return resp.status().as_u16();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("stepview never listened");
        })
    };
    let hangup = |child: &std::process::Child| {
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
        std::thread::sleep(Duration::from_millis(500));
    };
    // The step is not there: a token that is taken gets 200 with 1244007; a refused one 401.
    assert_eq!(ask(&old_private), 200);
    assert_eq!(ask(&new_private), 401);
    // The new key is put in place of the rotating one: after SIGHUP both work.
    std::fs::copy(&new_public, &rotating).unwrap();
    hangup(&child);
    assert_eq!(ask(&old_private), 200, "the old key still works");
    assert_eq!(ask(&new_private), 200, "the new key works");
    // A broken file: the keys stay as they were, and the process lives on.
    std::fs::write(&rotating, "garbage").unwrap();
    hangup(&child);
    assert_eq!(ask(&new_private), 200, "a broken file kept the old keys");
    let metrics = rt.block_on(scrape_at(&client, &base));
    assert_eq!(
        metric_value(
            &metrics,
            r#"stepview_gateway_key_reloads_total{outcome="reloaded"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"stepview_gateway_key_reloads_total{outcome="kept"}"#
        ),
        Some(1.0)
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Shards (cluster.md) forward a request with its JWT, and the owner judges it again: shard A
/// takes the first key only, shard B both. A token of the first key is answered by A for every
/// step (B's steps forwarded); a token of the second key is refused by A for every step and
/// never forwarded, while B answers its own steps and forwards A's, which A refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_forward_the_jwt_and_the_owner_judges_it_again() {
    const PARTITIONS: i32 = 4;
    const FORWARDED: &str = "x-stepview-forwarded";
    let keys = tempfile::tempdir().unwrap();
    let (first_private, first_public) = key_pair(keys.path(), "first");
    let (second_private, second_public) = key_pair(keys.path(), "second");
    let config = |name: &str, key_files: &[&Path]| {
        let files: Vec<String> = key_files
            .iter()
            .map(|k| format!("{:?}", k.display().to_string()))
            .collect();
        let path = keys.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[http]\nauth = \"gateway\"\n[[apps]]\ncode = \"{APP}\"\nscopes = [\"*\"]\n\
                 [[gateways]]\nname = \"{GATEWAY}\"\npublic_key_files = [{}]\n",
                files.join(", ")
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let config_a = config("a.toml", &[&first_public]);
    let config_b = config("b.toml", &[&first_public, &second_public]);

    let topic = new_topic("gateway-shards", PARTITIONS).await;
    let events = stepview::simulate::generate(&stepview::simulate::Workload {
        jobs: 8,
        steps_per_job: 2,
        hosts: 5,
        first_job_id: 1,
        ..Default::default()
    });
    produce(&topic, &events, 0).await;
    let set = unique_name("gateway-set");
    // Rendezvous hashing gives one of two members all four partitions one time in eight; this
    // test needs each to own some, so it picks ports that divide them.
    let (port_a, port_b) = loop {
        let ports = (free_port(), free_port());
        let urls = [ports.0, ports.1].map(|port| format!("http://127.0.0.1:{port}"));
        let owners: std::collections::BTreeSet<&str> = (0..PARTITIONS)
            .filter_map(|p| owner(p, urls.iter().map(String::as_str)))
            .collect();
        if ports.0 != ports.1 && owners.len() == 2 {
            break ports;
        }
    };
    let start = |port, config: &str| {
        let dir = tempfile::tempdir().unwrap();
        Shard::start_in(dir, port, brokers(), &topic, &set, &["--config", config])
    };
    let mut a = start(port_a, &config_a);
    let mut b = start(port_b, &config_b);

    let client = reqwest::Client::new();
    let first = token(&first_private, GATEWAY, Algorithm::RS512, &claims(APP));
    let second = token(&second_private, GATEWAY, Algorithm::RS512, &claims(APP));
    let queries: Vec<String> = steps_of(&events)
        .into_iter()
        .map(|(job, step)| {
            format!("bk_scope_type=biz&bk_scope_id=2&job_instance_id={job}&step_instance_id={step}")
        })
        .collect();
    // (status, API code, forwarded) of `query` asked of `base` with `jwt`.
    let ask = |base: String, query: String, jwt: String| {
        let client = client.clone();
        async move {
            let resp = client
                .get(format!("{base}{STATUS}?{query}"))
                .header("X-Bkapi-JWT", jwt)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let forwarded = resp.headers().contains_key(FORWARDED);
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body["code"].as_i64(), forwarded)
        }
    };

    // The two divide the partitions, and A answers every step with the first key.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let owned_by_b = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the shards never divided the partitions: {last} (A {:?}, B {:?})",
            a.child.try_wait(),
            b.child.try_wait()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (read_a, read_b) = (
            partitions_read(&client, &a.base).await,
            partitions_read(&client, &b.base).await,
        );
        last = format!("A reads {read_a} partitions, B {read_b}");
        if read_a == 0 || read_b == 0 || read_a + read_b != PARTITIONS as usize {
            continue;
        }
        let mut owned_by_b = Vec::new();
        let mut answers = Vec::new();
        for query in &queries {
            let (status, code, forwarded) = ask(a.base.clone(), query.clone(), first.clone()).await;
            answers.push((status, code));
            if forwarded {
                owned_by_b.push(query.clone());
            }
        }
        let all_answered = answers.iter().all(|(status, _)| *status == 200);
        last += &format!(", A answers {answers:?}, {} forwarded", owned_by_b.len());
        if all_answered && !owned_by_b.is_empty() && owned_by_b.len() < queries.len() {
            break owned_by_b;
        }
    };

    for query in &queries {
        let of_b = owned_by_b.contains(query);
        // A refuses the second key itself: nothing it cannot verify leaves it.
        assert_eq!(
            ask(a.base.clone(), query.clone(), second.clone()).await,
            (401, Some(1240005), false),
            "{query}"
        );
        // B answers its own steps with the second key; A, their owner, refuses B's forwards.
        let want = if of_b {
            (200, Some(0), false)
        } else {
            (401, Some(1240005), true)
        };
        assert_eq!(
            ask(b.base.clone(), query.clone(), second.clone()).await,
            want,
            "{query}"
        );
    }
}
