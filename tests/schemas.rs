//! The JSON Schemas in `schemas/` and the Rust decoder agree on every sample: valid ones are
//! accepted by both, each kind of bad event in events.md is rejected by both.

use serde_json::{json, Value};
use stepview::events::{decode, Bounded};

const KINDS: [&str; 5] = ["job", "step", "step_targets", "host_result", "host_log"];

fn validator() -> jsonschema::Validator {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let mut opts = jsonschema::options();
    for kind in KINDS {
        let schema = read(&format!("{kind}.schema.json"));
        let id = schema["$id"].as_str().unwrap().to_owned();
        opts = opts.with_resource(id, jsonschema::Resource::from_contents(schema).unwrap());
    }
    opts.build(&read("event.schema.json")).unwrap()
}

fn with(base: &Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut v = base.clone();
    f(v.as_object_mut().unwrap());
    v
}

#[test]
fn schemas_and_decoder_agree() {
    let step = json!({"kind":"step","job_instance_id":1,"step_instance_id":2,"bk_scope_type":"biz",
        "bk_scope_id":"2","name":"s","type":1,"status":2,"execute_count":0,"create_time":1,
        "start_time":null,"version":0});
    let targets = json!({"kind":"step_targets","job_instance_id":1,"step_instance_id":2,
        "execute_count":0,"chunk":0,"chunk_count":1,
        "hosts":[{"bk_host_id":101,"ip":"127.0.0.1","bk_cloud_id":0,"bk_cloud_name":"Default Area"},
                 {"bk_host_id":102,"batch":2,"ipv6":null}]});
    let result = json!({"kind":"host_result","job_instance_id":1,"step_instance_id":2,
        "execute_count":0,"bk_host_id":101,"status":9,"tag":"tag1","exit_code":0,
        "start_time":1,"end_time":2,"total_time":1,"version":3,"a_future_field":[1,2]});
    let log = json!({"kind":"host_log","step_instance_id":2,"execute_count":0,"bk_host_id":101,
        "offset":0,"content":"hello\n"});
    let job = json!({"kind":"job","job_instance_id":1,"bk_scope_type":"biz","bk_scope_id":"2",
        "name":"deploy","status":2,"create_time":1,"start_time":2,"end_time":null,"version":1});

    let valid = vec![
        ("step", step.clone()),
        ("step_targets", targets.clone()),
        ("host_result", result.clone()),
        (
            "host_result without optionals",
            json!({"kind":"host_result","job_instance_id":1,
            "step_instance_id":2,"execute_count":0,"bk_host_id":1,"status":5,"version":0}),
        ),
        (
            "host_result null tag",
            with(&result, |o| {
                o.insert("tag".into(), Value::Null);
            }),
        ),
        ("host_log", log.clone()),
        ("job", job.clone()),
        (
            "step with its order",
            with(&step, |o| {
                o.insert("step_order".into(), json!(3));
            }),
        ),
        (
            "host_result with GSE's error code",
            with(&result, |o| {
                o.insert("error_code".into(), json!(-1));
            }),
        ),
        (
            "host_result copied by a retry, showing an earlier retry's output",
            with(&result, |o| {
                o.insert("execute_count".into(), json!(1));
                o.insert("log_execute_count".into(), json!(0));
            }),
        ),
        (
            "host_result null log_execute_count",
            with(&result, |o| {
                o.insert("log_execute_count".into(), Value::Null);
            }),
        ),
        (
            "display strings over their bounds (cut, not refused)",
            with(&result, |o| {
                o.insert("tag".into(), json!("x".repeat(300)));
                o.insert("ip".into(), json!("1".repeat(300)));
            }),
        ),
        (
            "biz_set scope",
            with(&step, |o| {
                o.insert("bk_scope_type".into(), json!("biz_set"));
            }),
        ),
        (
            "empty hosts",
            with(&targets, |o| {
                o.insert("hosts".into(), json!([]));
            }),
        ),
    ];
    let invalid = vec![
        (
            "unknown kind",
            json!({"kind":"host_deleted","step_instance_id":2}),
        ),
        (
            "no kind",
            with(&log, |o| {
                o.remove("kind");
            }),
        ),
        (
            "missing required",
            with(&result, |o| {
                o.remove("version");
            }),
        ),
        (
            "missing status",
            with(&result, |o| {
                o.remove("status");
            }),
        ),
        (
            "missing content",
            with(&log, |o| {
                o.remove("content");
            }),
        ),
        (
            "missing hosts",
            with(&targets, |o| {
                o.remove("hosts");
            }),
        ),
        (
            "host without id",
            with(&targets, |o| {
                o.insert("hosts".into(), json!([{"ip":"1.1.1.1"}]));
            }),
        ),
        (
            "wrong type",
            with(&result, |o| {
                o.insert("status".into(), json!("9"));
            }),
        ),
        (
            "wrong type name",
            with(&step, |o| {
                o.insert("name".into(), json!(5));
            }),
        ),
        (
            "null required",
            with(&step, |o| {
                o.insert("execute_count".into(), Value::Null);
            }),
        ),
        (
            "zero step id",
            with(&result, |o| {
                o.insert("step_instance_id".into(), json!(0));
            }),
        ),
        (
            "negative host id",
            with(&log, |o| {
                o.insert("bk_host_id".into(), json!(-4));
            }),
        ),
        (
            "negative execute_count",
            with(&result, |o| {
                o.insert("execute_count".into(), json!(-1));
            }),
        ),
        (
            "negative batch",
            with(&result, |o| {
                o.insert("batch".into(), json!(-1));
            }),
        ),
        (
            "negative log_execute_count",
            with(&result, |o| {
                o.insert("log_execute_count".into(), json!(-1));
            }),
        ),
        (
            "log_execute_count of the wrong type",
            with(&result, |o| {
                o.insert("log_execute_count".into(), json!("0"));
            }),
        ),
        (
            "negative offset",
            with(&log, |o| {
                o.insert("offset".into(), json!(-1));
            }),
        ),
        (
            "negative version",
            with(&step, |o| {
                o.insert("version".into(), json!(-1));
            }),
        ),
        (
            "int32 overflow",
            with(&result, |o| {
                o.insert("execute_count".into(), json!(1u64 << 31));
            }),
        ),
        (
            "bad scope type",
            with(&step, |o| {
                o.insert("bk_scope_type".into(), json!("tenant"));
            }),
        ),
        (
            "job without a name",
            with(&job, |o| {
                o.remove("name");
            }),
        ),
        (
            "job id zero",
            with(&job, |o| {
                o.insert("job_instance_id".into(), json!(0));
            }),
        ),
        (
            "negative step order",
            with(&step, |o| {
                o.insert("step_order".into(), json!(-1));
            }),
        ),
        (
            "scope id too long",
            with(&step, |o| {
                o.insert("bk_scope_id".into(), json!("9".repeat(257)));
            }),
        ),
        (
            "chunk_count zero",
            with(&targets, |o| {
                o.insert("chunk_count".into(), json!(0));
            }),
        ),
        (
            "too many hosts",
            with(&targets, |o| {
                o.insert(
                    "hosts".into(),
                    Value::Array((1..=10_001).map(|i| json!({"bk_host_id": i})).collect()),
                );
            }),
        ),
        ("not an object", json!([1, 2])),
        ("a string", json!("step")),
    ];
    let v = validator();
    for (name, sample) in &valid {
        let bytes = serde_json::to_vec(sample).unwrap();
        assert!(v.is_valid(sample), "schema rejects valid sample {name}");
        assert!(
            decode(&bytes).is_ok(),
            "decoder rejects valid sample {name}: {:?}",
            decode(&bytes)
        );
    }
    for (name, sample) in &invalid {
        let bytes = serde_json::to_vec(sample).unwrap();
        assert!(!v.is_valid(sample), "schema accepts invalid sample {name}");
        assert!(
            decode(&bytes).is_err(),
            "decoder accepts invalid sample {name}"
        );
    }
    // What JSON Schema cannot say, the decoder still rejects: bytes that are not JSON at all, and
    // a chunk index past chunk_count (a relation between two fields).
    assert!(decode(b"{\"kind\":\"step\",").is_err());
    assert!(decode(
        &serde_json::to_vec(&with(&targets, |o| {
            o.insert("chunk".into(), json!(1));
        }))
        .unwrap()
    )
    .is_err());
}

/// Every `x-stepview-cut-at-bytes` in the schemas is the decoder's bound for that field, and every
/// bound of the decoder is stated in the schemas.
#[test]
fn schemas_state_the_decoders_string_bounds() {
    fn collect(v: &Value, out: &mut Vec<(String, u64)>) {
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                if let Some(n) = prop.get("x-stepview-cut-at-bytes").and_then(Value::as_u64) {
                    out.push((name.clone(), n));
                }
                collect(prop, out);
            }
        }
        if let Some(items) = v.get("items") {
            collect(items, out);
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut stated = Vec::new();
    for kind in KINDS {
        let text = std::fs::read_to_string(dir.join(format!("{kind}.schema.json"))).unwrap();
        collect(&serde_json::from_str(&text).unwrap(), &mut stated);
    }
    for (field, n) in &stated {
        let bound = Bounded::ALL
            .into_iter()
            .find(|b| b.field() == field)
            .unwrap_or_else(|| panic!("{field} has no bound in the decoder"));
        assert_eq!(bound.max_bytes() as u64, *n, "{field}");
    }
    for bound in Bounded::ALL {
        assert!(
            stated.iter().any(|(f, _)| f == bound.field()),
            "{} is not stated in schemas/",
            bound.field()
        );
    }
}
