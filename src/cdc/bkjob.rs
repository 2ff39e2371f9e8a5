//! bk-job's rows and documents as Debezium delivers them (cdc.md, "Input"): the columns the
//! translator reads of each table, the hosts of `step_instance.target_servers`, and a script-log
//! chunk of MongoDB. Numbers arrive as JSON integers, booleans (Debezium's TINYINT(1)
//! converter) or MongoDB extended JSON (`$numberLong`, `$numberInt`): [`Int`] takes them all.
//!
//! Owns: parsing. Must not: decide what a row becomes (that is `translate`).

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// An integer column, in whichever form it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Int(pub i64);

impl Int {
    pub fn i32(self) -> i32 {
        i32::try_from(self.0).unwrap_or(if self.0 < 0 { i32::MIN } else { i32::MAX })
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Int, D::Error> {
        #[derive(Clone, Copy)]
        struct IntVisitor;
        impl<'de> Visitor<'de> for IntVisitor {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer (a number, a boolean, or {\"$numberLong\": \"…\"})")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int, E> {
                if v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(Int(v as i64))
                } else {
                    Err(E::custom(format!("{v} is not a whole number")))
                }
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Int, E> {
                Ok(Int(i64::from(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int, E> {
                v.parse()
                    .map(Int)
                    .map_err(|_| E::custom(format!("{v:?} is not an integer")))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Int, A::Error> {
                let mut value = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "$numberLong" | "$numberInt" | "$numberDouble" => {
                            let text: Cow<'de, str> = map.next_value()?;
                            value = Some(self.visit_str::<A::Error>(&text)?);
                        }
                        other => {
                            return Err(de::Error::custom(format!(
                                "{other:?}: not an extended-JSON number"
                            )))
                        }
                    }
                }
                value.ok_or_else(|| de::Error::custom("an empty object is not a number"))
            }
        }
        d.deserialize_any(IntVisitor)
    }
}

/// `job_manage.application`: an app and the scope it stands for.
#[derive(Debug, Deserialize)]
pub struct ApplicationRow<'a> {
    pub app_id: Int,
    #[serde(borrow, default)]
    pub bk_scope_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub bk_scope_id: Option<Cow<'a, str>>,
    /// Before the scope columns: 1 a business, 2 and 3 business sets (bk-job's own migration
    /// fills the scope from it).
    #[serde(default)]
    pub app_type: Option<Int>,
}

/// `job_execute.task_instance`: a job.
#[derive(Debug, Deserialize)]
pub struct TaskInstanceRow<'a> {
    pub id: Int,
    pub app_id: Int,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default)]
    pub status: Option<Int>,
    #[serde(default)]
    pub create_time: Option<Int>,
    #[serde(default)]
    pub start_time: Option<Int>,
    #[serde(default)]
    pub end_time: Option<Int>,
    #[serde(default)]
    pub total_time: Option<Int>,
}

/// `job_execute.step_instance`: a step, with its targets.
#[derive(Debug, Deserialize)]
pub struct StepInstanceRow<'a> {
    pub id: Int,
    pub task_instance_id: Int,
    pub app_id: Int,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(rename = "type")]
    pub step_type: Int,
    #[serde(default)]
    pub status: Option<Int>,
    #[serde(default)]
    pub execute_count: Option<Int>,
    #[serde(default)]
    pub create_time: Option<Int>,
    #[serde(default)]
    pub start_time: Option<Int>,
    #[serde(default)]
    pub end_time: Option<Int>,
    #[serde(default)]
    pub total_time: Option<Int>,
    #[serde(default)]
    pub step_order: Option<Int>,
    #[serde(default)]
    pub rolling_config_id: Option<Int>,
    /// JSON written once, at insert (`ExecuteTargetDTO`).
    #[serde(borrow, default)]
    pub target_servers: Option<Cow<'a, str>>,
}

/// A row of `gse_script_execute_obj_task`, `gse_file_execute_obj_task` or their pre-3.9
/// `*_agent_task` forms: one target's result for one retry and batch.
#[derive(Debug, Deserialize)]
pub struct ResultRow<'a> {
    pub step_instance_id: Int,
    pub execute_count: Int,
    /// For hosts a "retry failed" copied: the retry whose output they show.
    #[serde(default)]
    pub actual_execute_count: Option<Int>,
    #[serde(default)]
    pub batch: Option<Int>,
    /// `"1:<bk_host_id>"` for a host, `"2:…"` for a container (3.9 and later).
    #[serde(borrow, default)]
    pub execute_obj_id: Option<Cow<'a, str>>,
    /// The pre-3.9 tables' key.
    #[serde(default)]
    pub host_id: Option<Int>,
    /// File rows: 1 a target (download side), 0 the upload side.
    #[serde(default)]
    pub mode: Option<Int>,
    #[serde(default)]
    pub status: Option<Int>,
    #[serde(borrow, default)]
    pub tag: Option<Cow<'a, str>>,
    #[serde(default)]
    pub exit_code: Option<Int>,
    #[serde(default)]
    pub error_code: Option<Int>,
    #[serde(default)]
    pub start_time: Option<Int>,
    #[serde(default)]
    pub end_time: Option<Int>,
    #[serde(default)]
    pub total_time: Option<Int>,
}

/// Which target a result row or log chunk is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Host(i64),
    Container,
}

/// Parses bk-job's execute object id (`"1:<bk_host_id>"`, `"2:<container>"`).
pub fn execute_object(id: &str) -> Option<Target> {
    match id.split_once(':')? {
        ("1", host) => host.parse().ok().map(Target::Host),
        ("2", _) => Some(Target::Container),
        _ => None,
    }
}

impl ResultRow<'_> {
    pub fn target(&self) -> Option<Target> {
        match (&self.execute_obj_id, self.host_id) {
            (Some(id), _) => execute_object(id),
            (None, Some(host)) => Some(Target::Host(host.0)),
            (None, None) => None,
        }
    }
}

/// `step_instance.target_servers` (`ExecuteTargetDTO`): `executeObjects` from 3.9 on, `ipList`
/// before.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetServers {
    #[serde(default)]
    pub execute_objects: Option<Vec<ExecuteObject>>,
    #[serde(default)]
    pub ip_list: Option<Vec<HostDto>>,
}

#[derive(Debug, Deserialize)]
pub struct ExecuteObject {
    /// 1 a host, 2 a container.
    #[serde(rename = "type", default)]
    pub kind: Option<Int>,
    #[serde(default)]
    pub host: Option<HostDto>,
}

/// bk-job's `HostDTO`, as Jackson writes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostDto {
    #[serde(default)]
    pub host_id: Option<Int>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub ipv6: Option<String>,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub cloud_area_id: Option<Int>,
    #[serde(default)]
    pub bk_cloud_name: Option<String>,
}

impl TargetServers {
    /// The hosts, and how many containers were among the targets.
    pub fn hosts(self) -> (Vec<HostDto>, usize) {
        match self.execute_objects {
            Some(objects) if !objects.is_empty() => {
                let mut containers = 0;
                let hosts = objects
                    .into_iter()
                    .filter_map(|o| match (o.kind.map(|k| k.0), o.host) {
                        (Some(2), _) | (_, None) => {
                            containers += 1;
                            None
                        }
                        (_, Some(host)) => Some(host),
                    })
                    .collect();
                (hosts, containers)
            }
            _ => (self.ip_list.unwrap_or_default(), 0),
        }
    }
}

/// A script-log chunk of `joblog.job_log_script_<date>` (one document per chunk, insert-only).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogChunk {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub step_id: Int,
    pub execute_count: Int,
    #[serde(default)]
    pub batch: Option<Int>,
    #[serde(default)]
    pub execute_object_id: Option<String>,
    #[serde(default)]
    pub host_id: Option<Int>,
    #[serde(default)]
    pub content: String,
    /// The END of the chunk, in UTF-8 bytes of the host's output.
    pub offset: Int,
}

impl LogChunk {
    pub fn target(&self) -> Option<Target> {
        match (&self.execute_object_id, self.host_id) {
            (Some(id), _) => execute_object(id),
            (None, Some(host)) => Some(Target::Host(host.0)),
            (None, None) => None,
        }
    }
}

/// A MongoDB `_id`: `{"$oid": "<24 hex digits>"}`, or whatever else a document chose (kept as
/// its JSON text: it only orders and identifies chunks).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectId(pub String);

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ObjectId, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Ok(ObjectId(match &value {
            serde_json::Value::Object(o) if o.len() == 1 => match o.get("$oid") {
                Some(serde_json::Value::String(hex)) => hex.clone(),
                _ => value.to_string(),
            },
            serde_json::Value::String(s) => s.clone(),
            _ => value.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_arrive_in_every_form_debezium_and_mongodb_use() {
        let parse = |s: &str| serde_json::from_str::<Int>(s).map(|i| i.0);
        assert_eq!(parse("42").unwrap(), 42);
        assert_eq!(parse("true").unwrap(), 1);
        assert_eq!(
            parse(r#"{"$numberLong": "20000000001"}"#).unwrap(),
            20_000_000_001
        );
        assert_eq!(parse(r#"{"$numberInt": "7"}"#).unwrap(), 7);
        assert!(parse(r#"{"$date": "7"}"#).is_err());
        assert!(parse("1.5").is_err());
        assert!(parse(r#""x""#).is_err());
    }

    #[test]
    fn targets_of_both_generations_and_containers() {
        let new: TargetServers = serde_json::from_str(
            r#"{"executeObjects":[{"type":1,"resourceId":5,"host":{"hostId":5,"ip":"10.0.0.5","cloudAreaId":0,"agentId":"a5"}},
                {"type":2,"resourceId":9,"container":{"id":9}}]}"#,
        )
        .unwrap();
        let (hosts, containers) = new.hosts();
        assert_eq!((hosts.len(), containers), (1, 1));
        assert_eq!(hosts[0].host_id, Some(Int(5)));
        let old: TargetServers =
            serde_json::from_str(r#"{"ipList":[{"hostId":7,"ip":"10.0.0.7","cloudAreaId":2}]}"#)
                .unwrap();
        let (hosts, containers) = old.hosts();
        assert_eq!(
            (hosts[0].host_id, hosts[0].cloud_area_id, containers),
            (Some(Int(7)), Some(Int(2)), 0)
        );
        assert_eq!(execute_object("1:123"), Some(Target::Host(123)));
        assert_eq!(execute_object("2:abc"), Some(Target::Container));
        assert_eq!(execute_object("x"), None);
    }
}
