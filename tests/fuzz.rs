//! Fuzzing what strangers control: the bytes of an event (the decoder, then apply) and the
//! parameters and headers of a request (the whole HTTP path, in process). No panic, no 5xx, and
//! every rejected event has a reason.
//!
//! A short run is part of the tests; `PROPTEST_CASES=1000000 cargo test --release --test fuzz`
//! runs a million cases of each property.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use proptest::prelude::*;
use std::sync::{Arc, OnceLock};
use stepview::events::{check_key, decode, Event};
use stepview::http::{self, AnswerCache, AppState, Auth, QueryLimits};
use stepview::service::Views;
use stepview::simulate::{self, Workload};
use tower::ServiceExt;

/// Valid events of every kind, as producers write them: the seeds that mutations start from.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let events = simulate::generate(&Workload {
            jobs: 1,
            steps_per_job: 3,
            hosts: 3,
            ..Workload::default()
        });
        events.iter().map(Event::to_json).collect()
    })
}

/// Views holding a small workload, shared by every case.
fn views() -> &'static Views {
    static VIEWS: OnceLock<Views> = OnceLock::new();
    VIEWS.get_or_init(|| {
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        let views = Views::open(&test_config(dir.path())).unwrap();
        let events = simulate::generate(&Workload {
            jobs: 1,
            steps_per_job: 3,
            hosts: 50,
            ..Workload::default()
        });
        views
            .sink
            .applier
            .apply(&stepview::apply::Batch::local(&events))
            .unwrap();
        views
    })
}

/// A mutation of a valid event: bytes flipped, cut, inserted or repeated, or a value swapped
/// for an extreme one.
fn mutated_event() -> impl Strategy<Value = Vec<u8>> {
    let extremes = prop::sample::select(vec![
        "-1",
        "0",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "1e400",
        "null",
        "\"\"",
        "[]",
        "{}",
        "true",
        "\"\\ud800\"",
        "\"\\u0000\"",
    ]);
    (
        prop::sample::select((0..seeds().len()).collect::<Vec<_>>()),
        any::<prop::sample::Index>(),
        prop_oneof![
            any::<u8>().prop_map(|b| vec![b]),
            prop::collection::vec(any::<u8>(), 0..16),
            extremes.prop_map(|s| s.as_bytes().to_vec()),
        ],
        0usize..4,
        0usize..24,
    )
        .prop_map(|(seed, at, insert, how, cut)| {
            let mut v = seeds()[seed].clone();
            let at = at.index(v.len() + 1);
            match how {
                0 => {
                    v.splice(at..(at + insert.len()).min(v.len()), insert);
                }
                1 => {
                    v.splice(at..at, insert);
                }
                2 => {
                    v.drain(at..(at + cut).min(v.len()));
                }
                _ => {
                    // The value after the `at`-th colon replaced by an extreme.
                    if let Some(colon) = v[at.min(v.len())..].iter().position(|b| *b == b':') {
                        let start = at + colon + 1;
                        let end = v[start..]
                            .iter()
                            .position(|b| *b == b',' || *b == b'}')
                            .map_or(v.len(), |e| start + e);
                        v.splice(start..end, insert);
                    }
                }
            }
            v
        })
}

fn check_event(bytes: &[u8], key: &[u8]) -> Result<(), TestCaseError> {
    match decode(bytes) {
        Ok((event, _)) => {
            let _ = check_key(&event, Some(key));
            // Whatever the decoder accepts, apply must take without panicking.
            views()
                .sink
                .applier
                .apply(&stepview::apply::Batch::local(&[event]))
                .unwrap();
        }
        Err(bad) => prop_assert!(!bad.detail.is_empty(), "a reason for {bytes:?}"),
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_bytes_decode_or_are_rejected_with_a_reason(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        key in prop::collection::vec(any::<u8>(), 0..24),
    ) {
        check_event(&bytes, &key)?;
    }

    #[test]
    fn mutated_events_decode_or_are_rejected_with_a_reason(bytes in mutated_event()) {
        check_event(&bytes, b"101")?;
    }
}

fn router() -> axum::Router {
    static ROUTER: OnceLock<axum::Router> = OnceLock::new();
    ROUTER
        .get_or_init(|| {
            let views = views();
            let config = test_config(std::path::Path::new("unused"));
            views.sink.health.set_stored_only();
            http::router(Arc::new(AppState {
                reader: views.reader(),
                auth: Auth::new(stepview::http::AuthMode::AppSecret, &config.apps, &[]).unwrap(),
                telemetry: Arc::clone(&views.sink.telemetry),
                health: Arc::clone(&views.sink.health),
                limits: QueryLimits::new(2, std::time::Duration::from_secs(10)),
                answers: Arc::new(AnswerCache::new(1 << 20, Arc::clone(&views.sink.telemetry))),
                metrics_token: None,
                admin_token: Some([7; 32]),
                cluster: None,
                forwarder: None,
                shutdown: stepview::shutdown::Shutdown::new(),
            }))
        })
        .clone()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

/// A parameter value: sensible, extreme, or any string at all.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "0",
            "1",
            "-1",
            "2",
            "biz",
            "biz_set",
            "101",
            "102",
            "104",
            "9",
            "5",
            "9223372036854775807",
            "-9223372036854775808",
            "99999999999999999999",
            "1.5",
            " 1",
            "1 ",
            "+1",
            "0x10",
            "10.0.",
            "fd00::",
            "ERROR",
            "b",
            "%",
            "\u{0}",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
        "[0-9a-zA-Z.:%-]{0,80}",
    ]
}

fn query_string() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec![
        "bk_scope_type",
        "bk_scope_id",
        "job_instance_id",
        "step_instance_id",
        "execute_count",
        "batch",
        "max_host_num_per_group",
        "keyword",
        "search_ip",
        "status",
        "tag",
        "other",
    ]);
    prop::collection::vec((names, value()), 0..12).prop_map(|pairs| {
        // Mostly a query about a real step, with the fuzzed pairs first (the first counts).
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (name, value) in pairs {
            s.append_pair(name, &value);
        }
        s.append_pair("bk_scope_type", "biz");
        s.append_pair("bk_scope_id", "2");
        s.append_pair("job_instance_id", "1");
        s.append_pair("step_instance_id", "101");
        s.finish()
    })
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,64}",
        Just(auth_header(APP, SECRET)),
        Just(auth_header(BIZ2_APP, SECRET)),
        Just("{\"bk_app_code\":".to_owned()),
        Just("en".to_owned()),
    ]
}

proptest! {
    #[test]
    fn no_request_gets_a_5xx_and_every_answer_is_the_json_envelope(
        query in query_string(),
        raw in "[ -~]{0,64}",
        use_raw in any::<bool>(),
        auth in header_value(),
        lang in header_value(),
        request_id in header_value(),
        route in prop::sample::select(vec![
            "/api/v3/get_step_instance_status",
            "/api/v3/system/get_step_instance_status",
        ]),
    ) {
        let query = if use_raw { raw.replace(['#', ' '], "") } else { query };
        let Ok(request) = Request::get(format!("{route}?{query}"))
            .header("X-Bkapi-Authorization", auth)
            .header("Blueking-Language", lang)
            .header("X-Request-Id", request_id)
            .body(Body::empty())
        else {
            return Ok(()); // not a valid request line: the HTTP parser refuses it first
        };
        let (status, body) = runtime().block_on(async {
            let resp = router().oneshot(request).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            (status, body)
        });
        prop_assert!(!status.is_server_error(), "{status} for {query}");
        prop_assert!(status == StatusCode::OK || status.is_client_error());
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        prop_assert!(json["code"].is_i64() && json["result"].is_boolean(), "{json}");
    }
}
