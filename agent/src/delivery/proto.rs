//! The generated gRPC code (`gen/`, from `proto/` by `cargo xtask codegen`)
//! and the conversions between it and the model.
//!
//! The full event crosses the wire as a `google.protobuf.Struct` built from
//! the serde JSON of [`Event`], so the API carries exactly the JSON schema's
//! fields by construction; the typed envelope fields are derived from the same
//! event here and nowhere else.

use prost_types::value::Kind;
use serde_json::{Map, Number, Value};

use super::filter::{AlertFilter, EventFilter};
use crate::model::{Alert, Event, EventKindName, RuleRef, Severity};

/// Generated messages, clients and servers of package `picket.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod pb {
    include!("gen/picket.v1.rs");
}

/// Largest integer a Struct's double holds exactly (2^53).
const MAX_EXACT: u64 = 1 << 53;

/// Conversion failures (hostile or mismatched peers).
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("invalid timestamp: {0}")]
    Time(String),
    #[error("event does not match the schema: {0}")]
    Schema(serde_json::Error),
    #[error("unknown severity {0}")]
    Severity(i32),
    #[error("unknown event kind {0:?}")]
    Kind(String),
}

pub fn severity_to_pb(s: Severity) -> pb::Severity {
    match s {
        Severity::Info => pb::Severity::Info,
        Severity::Low => pb::Severity::Low,
        Severity::Medium => pb::Severity::Medium,
        Severity::High => pb::Severity::High,
        Severity::Critical => pb::Severity::Critical,
    }
}

/// `None` for UNSPECIFIED; an error for numbers outside the enum.
pub fn severity_from_pb(v: i32) -> Result<Option<Severity>, ConvertError> {
    match pb::Severity::try_from(v) {
        Ok(pb::Severity::Unspecified) => Ok(None),
        Ok(pb::Severity::Info) => Ok(Some(Severity::Info)),
        Ok(pb::Severity::Low) => Ok(Some(Severity::Low)),
        Ok(pb::Severity::Medium) => Ok(Some(Severity::Medium)),
        Ok(pb::Severity::High) => Ok(Some(Severity::High)),
        Ok(pb::Severity::Critical) => Ok(Some(Severity::Critical)),
        Err(_) => Err(ConvertError::Severity(v)),
    }
}

pub fn timestamp_to_pb(t: jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

pub fn timestamp_from_pb(t: &prost_types::Timestamp) -> Result<jiff::Timestamp, ConvertError> {
    jiff::Timestamp::new(t.seconds, t.nanos).map_err(|e| ConvertError::Time(e.to_string()))
}

/// JSON to a protobuf Value; integers beyond ±2^53 become decimal strings.
pub fn json_to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                if u <= MAX_EXACT {
                    Kind::NumberValue(u as f64)
                } else {
                    Kind::StringValue(u.to_string())
                }
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() <= MAX_EXACT {
                    Kind::NumberValue(i as f64)
                } else {
                    Kind::StringValue(i.to_string())
                }
            } else {
                Kind::NumberValue(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn json_to_struct(o: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: o
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

/// A protobuf Value back to JSON; whole doubles become integers.
pub fn value_to_json(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(f)) => {
            if f.fract() == 0.0 && f.abs() <= MAX_EXACT as f64 {
                if *f >= 0.0 {
                    Value::from(*f as u64)
                } else {
                    Value::from(*f as i64)
                }
            } else {
                Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
    }
}

pub fn struct_to_json(s: &prost_types::Struct) -> Map<String, Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

/// Turns decimal strings of more than 15 digits back into numbers (the
/// inverse of the 2^53 rule), for a second decoding attempt.
fn restore_big_ints(v: &mut Value) {
    match v {
        Value::String(s) if s.len() > 15 && s.len() <= 20 => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(u) = s.parse::<u64>() {
                    *v = Value::from(u);
                } else if let Ok(i) = s.parse::<i64>() {
                    *v = Value::from(i);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(restore_big_ints),
        Value::Object(o) => o.values_mut().for_each(restore_big_ints),
        _ => {}
    }
}

/// The envelope fields derived from `ev`.
pub fn summary(ev: &Event) -> pb::EventSummary {
    let k8s = ev.k8s.as_ref();
    pb::EventSummary {
        kind: ev.kind().as_str().to_owned(),
        namespace: k8s
            .and_then(|k| k.namespace.as_ref())
            .map(|n| n.name.clone())
            .unwrap_or_default(),
        pod: k8s.map(|k| k.pod.name.clone()).unwrap_or_default(),
        node: k8s
            .and_then(|k| k.node.as_ref())
            .map(|n| n.name.clone())
            .unwrap_or_else(|| ev.host.name.clone()),
        container_id: ev
            .container
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default(),
        pid: ev.process.pid,
        executable: ev.process.executable.path.clone(),
    }
}

pub fn event_to_pb(ev: &Event) -> pb::Event {
    let event = match serde_json::to_value(ev) {
        Ok(Value::Object(o)) => Some(json_to_struct(&o)),
        // Serializing a model type cannot fail; keep the envelope regardless.
        _ => None,
    };
    pb::Event {
        time: Some(timestamp_to_pb(ev.time)),
        summary: Some(summary(ev)),
        event,
    }
}

pub fn alert_to_pb(a: &Alert) -> pb::Alert {
    pb::Alert {
        seq: a.seq,
        time: Some(timestamp_to_pb(a.time)),
        severity: severity_to_pb(a.severity) as i32,
        rule: Some(pb::RuleRef {
            id: a.rule.id.clone(),
            name: a.rule.name.clone(),
            tags: a.rule.tags.clone(),
        }),
        message: a.message.clone(),
        event: Some(event_to_pb(&a.event)),
    }
}

/// Decodes the event carried in `pb` back into the model type.
pub fn event_from_pb(pb: &pb::Event) -> Result<Event, ConvertError> {
    let s = pb
        .event
        .as_ref()
        .ok_or(ConvertError::Missing("event.event"))?;
    let json = Value::Object(struct_to_json(s));
    match serde_json::from_value::<Event>(json.clone()) {
        Ok(ev) => Ok(ev),
        Err(first) => {
            let mut fixed = json;
            restore_big_ints(&mut fixed);
            serde_json::from_value(fixed).map_err(|_| ConvertError::Schema(first))
        }
    }
}

pub fn alert_from_pb(pb: &pb::Alert) -> Result<Alert, ConvertError> {
    let rule = pb.rule.as_ref().ok_or(ConvertError::Missing("rule"))?;
    Ok(Alert {
        seq: pb.seq,
        time: timestamp_from_pb(pb.time.as_ref().ok_or(ConvertError::Missing("time"))?)?,
        severity: severity_from_pb(pb.severity)?.ok_or(ConvertError::Severity(pb.severity))?,
        rule: RuleRef {
            id: rule.id.clone(),
            name: rule.name.clone(),
            tags: rule.tags.clone(),
        },
        message: pb.message.clone(),
        event: event_from_pb(pb.event.as_ref().ok_or(ConvertError::Missing("event"))?)?,
    })
}

pub fn alert_filter_from_pb(f: Option<&pb::AlertFilter>) -> Result<AlertFilter, ConvertError> {
    let Some(f) = f else {
        return Ok(AlertFilter::default());
    };
    Ok(AlertFilter {
        min_severity: severity_from_pb(f.min_severity)?,
        namespaces: f.namespaces.clone(),
        rule_ids: f.rule_ids.clone(),
        pod_labels: f
            .pod_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

pub fn event_filter_from_pb(f: Option<&pb::EventFilter>) -> Result<EventFilter, ConvertError> {
    let Some(f) = f else {
        return Ok(EventFilter::default());
    };
    let kinds = f
        .kinds
        .iter()
        .map(|k| EventKindName::parse(k).ok_or_else(|| ConvertError::Kind(k.clone())))
        .collect::<Result<_, _>>()?;
    Ok(EventFilter {
        kinds,
        namespaces: f.namespaces.clone(),
        pod_labels: f
            .pod_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKindName, K8s, K8sNamespace, Pod};

    #[test]
    fn alert_round_trips_through_proto_with_big_integers() {
        let mut ev = Event::new(
            EventKindName::Exec,
            "2026-01-02T03:04:05.123456789Z".parse().unwrap(),
        );
        ev.event.ktime_ns = (1 << 60) + 7;
        ev.process.pid = 42;
        ev.k8s = Some(K8s {
            pod: Pod {
                name: "web".into(),
                uid: "u1".into(),
                ..Default::default()
            },
            namespace: Some(K8sNamespace {
                name: "prod".into(),
                labels: Default::default(),
            }),
            ..Default::default()
        });
        let a = Alert {
            seq: 9,
            time: ev.time,
            severity: Severity::High,
            rule: RuleRef {
                id: "r1".into(),
                name: "R".into(),
                tags: vec!["t".into()],
            },
            message: "m".into(),
            event: ev,
        };
        let pb = alert_to_pb(&a);
        let ktime = &pb.event.as_ref().unwrap().event.as_ref().unwrap().fields["event"];
        let Some(Kind::StructValue(meta)) = &ktime.kind else {
            panic!("event meta")
        };
        assert_eq!(
            meta.fields["ktime_ns"].kind,
            Some(Kind::StringValue("1152921504606846983".into()))
        );
        assert_eq!(
            pb.event
                .as_ref()
                .unwrap()
                .summary
                .as_ref()
                .unwrap()
                .namespace,
            "prod"
        );
        assert_eq!(alert_from_pb(&pb).unwrap(), a);
    }
}
