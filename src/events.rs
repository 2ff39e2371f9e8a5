//! The event model: typed forms of the five event kinds of `spec/events.md`, and the decoder that
//! turns a Kafka message value into one of them or into a reason why it is bad.
//!
//! Owns: field types, required fields, ranges and the size limit. Must not: touch the store or the
//! index, or decide what an event does to a view (that is `apply`). `schemas/` holds the same rules
//! as JSON Schema; `tests/schemas.rs` keeps the two in agreement.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Largest accepted message value, in bytes (events.md: "at most 1 MiB").
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// Most hosts one `step_targets` chunk may carry.
pub const MAX_TARGET_HOSTS: usize = 10_000;
/// Longest `bk_scope_id`, in bytes: an identity, so a longer one is a bad event.
pub const MAX_SCOPE_ID_BYTES: usize = 256;

/// One decoded, validated event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Job(JobEvent),
    Step(StepEvent),
    StepTargets(StepTargets),
    HostResult(HostResult),
    HostLog(HostLog),
}

/// What an event is about: a job (its record), or a step (everything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    Job(i64),
    Step(i64),
}

impl Subject {
    /// The job's or step's id: what its events are keyed (and partitioned) by.
    pub fn id(self) -> i64 {
        match self {
            Subject::Job(id) | Subject::Step(id) => id,
        }
    }
}

impl Event {
    /// The job or step this event belongs to; its id, in decimal, is the Kafka message key.
    pub fn subject(&self) -> Subject {
        match self {
            Event::Job(e) => Subject::Job(e.job_instance_id),
            Event::Step(e) => Subject::Step(e.step_instance_id),
            Event::StepTargets(e) => Subject::Step(e.step_instance_id),
            Event::HostResult(e) => Subject::Step(e.step_instance_id),
            Event::HostLog(e) => Subject::Step(e.step_instance_id),
        }
    }

    /// The id the message key must be.
    pub fn key_id(&self) -> i64 {
        self.subject().id()
    }

    /// The `kind` string, as on the wire (used as a metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Job(_) => "job",
            Event::Step(_) => "step",
            Event::StepTargets(_) => "step_targets",
            Event::HostResult(_) => "host_result",
            Event::HostLog(_) => "host_log",
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events always serialize")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeType {
    Biz,
    BizSet,
}

impl ScopeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeType::Biz => "biz",
            ScopeType::BizSet => "biz_set",
        }
    }

    pub fn parse(s: &str) -> Option<ScopeType> {
        match s {
            "biz" => Some(ScopeType::Biz),
            "biz_set" => Some(ScopeType::BizSet),
            _ => None,
        }
    }
}

/// `job`: job metadata and job-level status, last-writer-wins by `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job_instance_id: i64,
    pub bk_scope_type: ScopeType,
    pub bk_scope_id: String,
    pub name: String,
    pub status: i32,
    pub create_time: i64,
    #[serde(default)]
    pub start_time: Option<i64>,
    #[serde(default)]
    pub end_time: Option<i64>,
    #[serde(default)]
    pub total_time: Option<i64>,
    pub version: i64,
}

/// `step`: step metadata and step-level status, last-writer-wins by `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    pub job_instance_id: i64,
    pub step_instance_id: i64,
    pub bk_scope_type: ScopeType,
    pub bk_scope_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub step_type: i32,
    pub status: i32,
    pub execute_count: i32,
    pub create_time: i64,
    #[serde(default)]
    pub start_time: Option<i64>,
    #[serde(default)]
    pub end_time: Option<i64>,
    #[serde(default)]
    pub total_time: Option<i64>,
    /// The step's place in its job.
    #[serde(default)]
    pub step_order: Option<i32>,
    pub version: i64,
}

/// Where a host is and which agent runs on it, borrowed from an event. Every field optional:
/// events may carry only part. (The event structs hold these fields inline rather than through
/// `#[serde(flatten)]`, which would make serde buffer every event of the hottest kinds.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostInfo<'a> {
    pub ip: Option<&'a str>,
    pub ipv6: Option<&'a str>,
    pub bk_agent_id: Option<&'a str>,
    pub bk_cloud_id: Option<i64>,
    pub bk_cloud_name: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetHost {
    pub bk_host_id: i64,
    #[serde(default)]
    pub batch: i32,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub ipv6: Option<String>,
    #[serde(default)]
    pub bk_agent_id: Option<String>,
    #[serde(default)]
    pub bk_cloud_id: Option<i64>,
    #[serde(default)]
    pub bk_cloud_name: Option<String>,
}

/// `step_targets`: one chunk of the hosts a retry runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTargets {
    pub job_instance_id: i64,
    pub step_instance_id: i64,
    pub execute_count: i32,
    pub chunk: i32,
    pub chunk_count: i32,
    pub hosts: Vec<TargetHost>,
}

/// `host_result`: one host's result for one retry and batch, last-writer-wins by `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostResult {
    pub job_instance_id: i64,
    pub step_instance_id: i64,
    pub execute_count: i32,
    #[serde(default)]
    pub batch: i32,
    pub bk_host_id: i64,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub ipv6: Option<String>,
    #[serde(default)]
    pub bk_agent_id: Option<String>,
    #[serde(default)]
    pub bk_cloud_id: Option<i64>,
    #[serde(default)]
    pub bk_cloud_name: Option<String>,
    pub status: i32,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// GSE's error code for the host task.
    #[serde(default)]
    pub error_code: i32,
    #[serde(default)]
    pub start_time: Option<i64>,
    #[serde(default)]
    pub end_time: Option<i64>,
    #[serde(default)]
    pub total_time: Option<i64>,
    pub version: i64,
    /// The retry whose script output this row shows (bk-job's `actual_execute_count` for hosts a
    /// "retry failed" copied into a later retry); absent: the row's own `execute_count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_execute_count: Option<i32>,
}

/// `host_log`: a chunk of a host's script output, keyed by byte `offset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostLog {
    pub step_instance_id: i64,
    pub execute_count: i32,
    #[serde(default)]
    pub batch: i32,
    pub bk_host_id: i64,
    pub offset: i64,
    pub content: String,
}

/// `info()` for the event structs that carry a host's identity fields inline.
macro_rules! impl_host_info {
    ($($event:ty),*) => {$(
        impl $event {
            pub fn info(&self) -> HostInfo<'_> {
                HostInfo {
                    ip: self.ip.as_deref(),
                    ipv6: self.ipv6.as_deref(),
                    bk_agent_id: self.bk_agent_id.as_deref(),
                    bk_cloud_id: self.bk_cloud_id,
                    bk_cloud_name: self.bk_cloud_name.as_deref(),
                }
            }
        }
    )*};
}

impl_host_info!(TargetHost, HostResult);

/// Why a message was not applied. The text goes into the DLQ header `stepview-error`; the
/// `reason` is a short fixed label for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEvent {
    pub reason: BadReason,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadReason {
    TooLarge,
    NotJson,
    UnknownKind,
    /// A required field missing, a field of the wrong type.
    Schema,
    OutOfRange,
    /// The message key is not the event's canonical decimal id.
    WrongKey,
    /// The message sits in another partition than its key maps to (a shard could not find it).
    Misrouted,
}

impl BadReason {
    pub fn label(self) -> &'static str {
        match self {
            BadReason::TooLarge => "too_large",
            BadReason::NotJson => "not_json",
            BadReason::UnknownKind => "unknown_kind",
            BadReason::Schema => "schema",
            BadReason::OutOfRange => "out_of_range",
            BadReason::WrongKey => "wrong_key",
            BadReason::Misrouted => "misrouted",
        }
    }
}

impl std::fmt::Display for BadEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.label(), self.detail)
    }
}

fn bad(reason: BadReason, detail: impl Into<String>) -> BadEvent {
    BadEvent {
        reason,
        detail: detail.into(),
    }
}

/// Decodes and validates one message value; display strings over their bounds are cut (and
/// reported in the `Cuts`).
pub fn decode(bytes: &[u8]) -> Result<(Event, Cuts), BadEvent> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(bad(
            BadReason::TooLarge,
            format!(
                "{} bytes, over the {} byte limit",
                bytes.len(),
                MAX_EVENT_BYTES
            ),
        ));
    }
    // The whole message is checked once here (serde_json would check only the strings it
    // reads, not those it skips); the parses below then read a `str` and check nothing again.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| bad(BadReason::NotJson, format!("not valid UTF-8: {e}")))?;
    let kind = match leading_kind(text) {
        Some(kind) => Cow::Borrowed(kind),
        None => probe_kind(text)?,
    };
    let mut event = match kind.as_ref() {
        "job" => Event::Job(parse(text)?),
        "step" => Event::Step(parse(text)?),
        "step_targets" => Event::StepTargets(parse(text)?),
        "host_result" => Event::HostResult(parse(text)?),
        "host_log" => Event::HostLog(parse(text)?),
        other => {
            return Err(bad(
                BadReason::UnknownKind,
                format!("unknown kind {other:?}"),
            ))
        }
    };
    validate(&event)?;
    let cuts = cut_to_bounds(&mut event);
    Ok((event, cuts))
}

/// Checks the Kafka message key against the event (events.md, "Topic and keys"): it must be
/// the event's id in canonical decimal, or the event would sit in another partition (and on
/// another shard) than the rest of its step.
pub fn check_key(event: &Event, key: Option<&[u8]>) -> Result<(), BadEvent> {
    let id = event.key_id();
    if key.is_some_and(|k| is_decimal_of(k, id)) {
        return Ok(());
    }
    let shown = match key {
        None => "no key".to_owned(),
        Some(k) => {
            let k = String::from_utf8_lossy(&k[..k.len().min(40)]);
            format!("key {k:?}")
        }
    };
    Err(bad(
        BadReason::WrongKey,
        format!("message has {shown}, not the event's id \"{id}\""),
    ))
}

/// Checks, for a shard, that a message sits in the partition its key maps to (events.md,
/// "Partitioning"): elsewhere, queries routed by the key would never find it.
pub fn check_partition(expected: i32, actual: i32) -> Result<(), BadEvent> {
    if expected == actual {
        return Ok(());
    }
    Err(bad(
        BadReason::Misrouted,
        format!(
            "in partition {actual}, but its key maps to partition {expected} with the cluster's \
             partitioner (produce with Kafka's default partitioner, murmur2)"
        ),
    ))
}

/// `key` is `id` written in decimal, with no sign, padding or leading zero.
fn is_decimal_of(key: &[u8], id: i64) -> bool {
    if key.first().is_none_or(|&b| b == b'0') || !key.iter().all(u8::is_ascii_digit) {
        return false;
    }
    key.iter().try_fold(0i64, |n, &d| {
        n.checked_mul(10)?.checked_add(i64::from(d - b'0'))
    }) == Some(id)
}

/// A display string with a bound (events.md, "Topic and keys"): a longer value is cut to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounded {
    Name,
    Ip,
    Ipv6,
    AgentId,
    CloudName,
    Tag,
}

impl Bounded {
    pub const ALL: [Bounded; 6] = [
        Bounded::Name,
        Bounded::Ip,
        Bounded::Ipv6,
        Bounded::AgentId,
        Bounded::CloudName,
        Bounded::Tag,
    ];

    pub fn field(self) -> &'static str {
        match self {
            Bounded::Name => "name",
            Bounded::Ip => "ip",
            Bounded::Ipv6 => "ipv6",
            Bounded::AgentId => "bk_agent_id",
            Bounded::CloudName => "bk_cloud_name",
            Bounded::Tag => "tag",
        }
    }

    pub fn max_bytes(self) -> usize {
        match self {
            Bounded::Name => 1024,
            Bounded::Ipv6 => 64,
            Bounded::Ip | Bounded::AgentId | Bounded::CloudName | Bounded::Tag => 256,
        }
    }
}

/// Which bounded fields of an event were cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cuts(u8);

impl Cuts {
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn fields(self) -> impl Iterator<Item = &'static str> {
        Bounded::ALL
            .into_iter()
            .filter(move |b| self.0 & (1 << *b as u8) != 0)
            .map(Bounded::field)
    }

    fn bound(&mut self, field: Bounded, value: Option<&mut String>) {
        let Some(value) = value else { return };
        let max = field.max_bytes();
        if value.len() > max {
            let end = (0..=max)
                .rev()
                .find(|&i| value.is_char_boundary(i))
                .unwrap_or(0);
            value.truncate(end);
            self.0 |= 1 << field as u8;
        }
    }
}

fn cut_to_bounds(event: &mut Event) -> Cuts {
    let mut cuts = Cuts::default();
    fn host(
        cuts: &mut Cuts,
        ip: &mut Option<String>,
        ipv6: &mut Option<String>,
        agent: &mut Option<String>,
        cloud: &mut Option<String>,
    ) {
        cuts.bound(Bounded::Ip, ip.as_mut());
        cuts.bound(Bounded::Ipv6, ipv6.as_mut());
        cuts.bound(Bounded::AgentId, agent.as_mut());
        cuts.bound(Bounded::CloudName, cloud.as_mut());
    }
    match event {
        Event::Job(e) => cuts.bound(Bounded::Name, Some(&mut e.name)),
        Event::Step(e) => cuts.bound(Bounded::Name, Some(&mut e.name)),
        Event::StepTargets(e) => {
            for h in &mut e.hosts {
                host(
                    &mut cuts,
                    &mut h.ip,
                    &mut h.ipv6,
                    &mut h.bk_agent_id,
                    &mut h.bk_cloud_name,
                );
            }
        }
        Event::HostResult(e) => {
            host(
                &mut cuts,
                &mut e.ip,
                &mut e.ipv6,
                &mut e.bk_agent_id,
                &mut e.bk_cloud_name,
            );
            cuts.bound(Bounded::Tag, e.tag.as_mut());
        }
        Event::HostLog(_) => {}
    }
    cuts
}

/// `kind` when it is the object's first member, as producers write it: read from the front
/// without a parse. The full parse that follows still checks the whole document.
fn leading_kind(text: &str) -> Option<&str> {
    let rest = text.trim_ascii_start().strip_prefix('{')?;
    let rest = rest.trim_ascii_start().strip_prefix("\"kind\"")?;
    let rest = rest.trim_ascii_start().strip_prefix(':')?;
    let rest = rest.trim_ascii_start().strip_prefix('"')?;
    let kind = &rest[..rest.find('"')?];
    // An escaped kind is left to the parser.
    (!kind.contains('\\')).then_some(kind)
}

/// `kind` wherever it is: a pass that reads only `kind` and skips every other member, so that
/// the second pass can go straight into the right struct without buffering the document.
fn probe_kind(text: &str) -> Result<Cow<'_, str>, BadEvent> {
    #[derive(Deserialize)]
    struct KindProbe<'a> {
        #[serde(borrow)]
        kind: Option<Cow<'a, str>>,
    }
    let probe: KindProbe = serde_json::from_str(text)
        .map_err(|e| bad(BadReason::NotJson, format!("not a JSON object: {e}")))?;
    probe
        .kind
        .ok_or_else(|| bad(BadReason::Schema, "missing field `kind`"))
}

fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, BadEvent> {
    serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => bad(BadReason::Schema, e.to_string()),
        _ => bad(BadReason::NotJson, format!("not a JSON object: {e}")),
    })
}

fn check(ok: bool, field: &str, rule: &str) -> Result<(), BadEvent> {
    if ok {
        Ok(())
    } else {
        Err(bad(
            BadReason::OutOfRange,
            format!("`{field}` must be {rule}"),
        ))
    }
}

fn check_id(v: i64, field: &str) -> Result<(), BadEvent> {
    check(v >= 1, field, ">= 1")
}

fn check_non_negative(v: i64, field: &str) -> Result<(), BadEvent> {
    check(v >= 0, field, ">= 0")
}

fn check_scope_id(scope_id: &str) -> Result<(), BadEvent> {
    check(
        scope_id.len() <= MAX_SCOPE_ID_BYTES,
        "bk_scope_id",
        "at most 256 bytes",
    )
}

fn validate(event: &Event) -> Result<(), BadEvent> {
    match event {
        Event::Job(e) => {
            check_id(e.job_instance_id, "job_instance_id")?;
            check_scope_id(&e.bk_scope_id)?;
            check_non_negative(e.version, "version")
        }
        Event::Step(e) => {
            check_id(e.job_instance_id, "job_instance_id")?;
            check_id(e.step_instance_id, "step_instance_id")?;
            check_scope_id(&e.bk_scope_id)?;
            check_non_negative(e.execute_count.into(), "execute_count")?;
            check(e.step_order.is_none_or(|o| o >= 0), "step_order", ">= 0")?;
            check_non_negative(e.version, "version")
        }
        Event::StepTargets(e) => {
            check_id(e.job_instance_id, "job_instance_id")?;
            check_id(e.step_instance_id, "step_instance_id")?;
            check_non_negative(e.execute_count.into(), "execute_count")?;
            check(e.chunk_count >= 1, "chunk_count", ">= 1")?;
            check(
                e.chunk >= 0 && e.chunk < e.chunk_count,
                "chunk",
                ">= 0 and < chunk_count",
            )?;
            check(
                e.hosts.len() <= MAX_TARGET_HOSTS,
                "hosts",
                "at most 10000 hosts",
            )?;
            for h in &e.hosts {
                check_id(h.bk_host_id, "hosts[].bk_host_id")?;
                check_non_negative(h.batch.into(), "hosts[].batch")?;
            }
            Ok(())
        }
        Event::HostResult(e) => {
            check_id(e.job_instance_id, "job_instance_id")?;
            check_id(e.step_instance_id, "step_instance_id")?;
            check_non_negative(e.execute_count.into(), "execute_count")?;
            check_non_negative(e.batch.into(), "batch")?;
            check_id(e.bk_host_id, "bk_host_id")?;
            check_non_negative(e.version, "version")?;
            check(
                e.log_execute_count.is_none_or(|c| c >= 0),
                "log_execute_count",
                ">= 0",
            )
        }
        Event::HostLog(e) => {
            check_id(e.step_instance_id, "step_instance_id")?;
            check_non_negative(e.execute_count.into(), "execute_count")?;
            check_non_negative(e.batch.into(), "batch")?;
            check_id(e.bk_host_id, "bk_host_id")?;
            check_non_negative(e.offset, "offset")?;
            check(
                e.offset.checked_add(e.content.len() as i64).is_some(),
                "offset",
                "such that offset + content length fits in an int64",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_kind_and_rejects_with_reasons() {
        let ok = br#"{"kind":"host_log","step_instance_id":1,"execute_count":0,"bk_host_id":2,"offset":0,"content":"hi","extra":{"x":1}}"#;
        assert!(matches!(decode(ok), Ok((Event::HostLog(_), _))));
        let unknown = br#"{"kind":"host_gone","step_instance_id":1}"#;
        assert_eq!(decode(unknown).unwrap_err().reason, BadReason::UnknownKind);
        let missing = br#"{"kind":"host_log","step_instance_id":1,"execute_count":0,"offset":0,"content":"hi"}"#;
        let err = decode(missing).unwrap_err();
        assert_eq!(err.reason, BadReason::Schema);
        assert!(err.detail.contains("bk_host_id"), "{}", err.detail);
        let range = br#"{"kind":"host_log","step_instance_id":0,"execute_count":0,"bk_host_id":2,"offset":0,"content":"hi"}"#;
        assert_eq!(decode(range).unwrap_err().reason, BadReason::OutOfRange);
        assert_eq!(decode(b"\xff\xfe").unwrap_err().reason, BadReason::NotJson);
        let truncated = br#"{"kind":"host_log","step_instance_id":1,"#;
        assert_eq!(decode(truncated).unwrap_err().reason, BadReason::NotJson);
        let bad_utf8_in_unknown_field = b"{\"kind\":\"host_log\",\"x\":\"\xff\"}";
        assert_eq!(
            decode(bad_utf8_in_unknown_field).unwrap_err().reason,
            BadReason::NotJson
        );
        let kind_last = br#"{"step_instance_id":1,"execute_count":0,"bk_host_id":2,"offset":0,"content":"hi","kind":"host_log"}"#;
        assert!(matches!(decode(kind_last), Ok((Event::HostLog(_), _))));
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        assert_eq!(decode(&big).unwrap_err().reason, BadReason::TooLarge);
    }

    #[test]
    fn display_strings_are_cut_at_a_character_boundary_and_scope_ids_refused() {
        let long_name = "名".repeat(400); // 1 200 bytes
        let step = format!(
            r#"{{"kind":"step","job_instance_id":1,"step_instance_id":2,"bk_scope_type":"biz","bk_scope_id":"2","name":"{long_name}","type":1,"status":2,"execute_count":0,"create_time":1,"version":1}}"#
        );
        let (event, cuts) = decode(step.as_bytes()).unwrap();
        let Event::Step(s) = event else { panic!() };
        assert_eq!(s.name.len(), 1023, "341 whole characters of 3 bytes");
        assert_eq!(cuts.fields().collect::<Vec<_>>(), ["name"]);
        let scope = step.replace(
            r#""bk_scope_id":"2""#,
            &format!(r#""bk_scope_id":"{}""#, "9".repeat(257)),
        );
        assert_eq!(
            decode(scope.as_bytes()).unwrap_err().reason,
            BadReason::OutOfRange
        );

        let result = format!(
            r#"{{"kind":"host_result","job_instance_id":1,"step_instance_id":2,"execute_count":0,"bk_host_id":3,"status":9,"version":1,"ip":"{}","ipv6":"{}","tag":"{}"}}"#,
            "1".repeat(300),
            "f".repeat(65),
            "t".repeat(256)
        );
        let (event, cuts) = decode(result.as_bytes()).unwrap();
        let Event::HostResult(r) = event else {
            panic!()
        };
        assert_eq!(
            (
                r.ip.unwrap().len(),
                r.ipv6.unwrap().len(),
                r.tag.unwrap().len()
            ),
            (256, 64, 256)
        );
        assert_eq!(cuts.fields().collect::<Vec<_>>(), ["ip", "ipv6"]);
    }

    #[test]
    fn the_message_key_must_be_the_canonical_step_id() {
        let (event, _) = decode(
            br#"{"kind":"host_log","step_instance_id":42,"execute_count":0,"bk_host_id":2,"offset":0,"content":"hi"}"#,
        )
        .unwrap();
        assert!(check_key(&event, Some(b"42")).is_ok());
        for key in [
            &b"042"[..],
            b"43",
            b"+42",
            b" 42",
            b"42 ",
            b"",
            b"99999999999999999999",
        ] {
            let err = check_key(&event, Some(key)).unwrap_err();
            assert_eq!(err.reason, BadReason::WrongKey, "{key:?}");
        }
        assert!(check_key(&event, None)
            .unwrap_err()
            .detail
            .contains("no key"));
    }
}
