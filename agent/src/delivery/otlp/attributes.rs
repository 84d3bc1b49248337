//! Mapping alerts to OpenTelemetry log records.
//!
//! | Picket | OTLP |
//! |---|---|
//! | event JSON (`process.pid`, `k8s.pod.name`, ...) | log attributes with the same dotted keys (the model already uses semantic-convention names) |
//! | `k8s.pod.labels.<k>` / `k8s.namespace.labels.<k>` | `k8s.pod.label.<k>` / `k8s.namespace.label.<k>` (semantic conventions) |
//! | event `time` | `time_unix_nano` |
//! | alert `time` | `observed_time_unix_nano` |
//! | `seq`, `rule.id`, `rule.name`, `rule.tags` | `picket.alert.seq`, `picket.rule.id`, `picket.rule.name`, `picket.rule.tags` |
//! | severity | `severity_number`: info 9 (INFO), low 10 (INFO2), medium 13 (WARN), high 17 (ERROR), critical 21 (FATAL); `severity_text` = the name |
//! | message | `body` (string) |
//! | — | `event_name` = `picket.alert` (gaps: `picket.gap`) |
//!
//! Integers beyond `i64::MAX` become strings (OTLP ints are signed 64-bit).

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use serde_json::Value;

use crate::delivery::spool::Gap;
use crate::model::{Alert, Severity};

pub fn severity_number(s: Severity) -> SeverityNumber {
    match s {
        Severity::Info => SeverityNumber::Info,
        Severity::Low => SeverityNumber::Info2,
        Severity::Medium => SeverityNumber::Warn,
        Severity::High => SeverityNumber::Error,
        Severity::Critical => SeverityNumber::Fatal,
    }
}

pub fn string(s: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

pub fn int(i: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(i)),
    }
}

fn u64_value(u: u64) -> AnyValue {
    i64::try_from(u).map_or_else(|_| string(u.to_string()), int)
}

pub fn kv(key: impl Into<String>, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..Default::default()
    }
}

/// A JSON value as an OTLP value (objects become key-value lists).
fn any(v: &Value) -> Option<AnyValue> {
    let value = match v {
        Value::Null => return None,
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                any_value::Value::IntValue(i)
            } else if let Some(u) = n.as_u64() {
                return Some(u64_value(u));
            } else {
                any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Array(a) => any_value::Value::ArrayValue(ArrayValue {
            values: a.iter().filter_map(any).collect(),
        }),
        Value::Object(o) => any_value::Value::KvlistValue(KeyValueList {
            values: o
                .iter()
                .filter_map(|(k, v)| any(v).map(|v| kv(k.clone(), v)))
                .collect(),
        }),
    };
    Some(AnyValue { value: Some(value) })
}

/// Semantic-convention names of label maps.
fn label_prefix(path: &str) -> Option<&'static str> {
    match path {
        "k8s.pod.labels" => Some("k8s.pod.label"),
        "k8s.namespace.labels" => Some("k8s.namespace.label"),
        _ => None,
    }
}

/// Flattens nested objects into dotted keys; arrays stay arrays.
pub fn flatten(prefix: &str, v: &Value, out: &mut Vec<KeyValue>) {
    match v {
        Value::Object(o) => {
            let label = label_prefix(prefix);
            for (k, v) in o {
                let key = match (label, prefix.is_empty()) {
                    (Some(l), _) => format!("{l}.{k}"),
                    (None, true) => k.clone(),
                    (None, false) => format!("{prefix}.{k}"),
                };
                if label.is_some() {
                    if let Some(v) = any(v) {
                        out.push(kv(key, v));
                    }
                } else {
                    flatten(&key, v, out);
                }
            }
        }
        other => {
            if let Some(v) = any(other) {
                out.push(kv(prefix, v));
            }
        }
    }
}

fn nanos(t: jiff::Timestamp) -> u64 {
    u64::try_from(t.as_nanosecond()).unwrap_or(0)
}

/// The log record of an alert.
pub fn alert_record(a: &Alert) -> LogRecord {
    let mut attributes = vec![
        kv("picket.alert.seq", u64_value(a.seq)),
        kv("picket.rule.id", string(a.rule.id.clone())),
        kv("picket.rule.name", string(a.rule.name.clone())),
        kv(
            "picket.rule.tags",
            AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: a.rule.tags.iter().map(|t| string(t.clone())).collect(),
                })),
            },
        ),
    ];
    if let Ok(Value::Object(mut o)) = serde_json::to_value(&a.event) {
        // The event time is the record's timestamp, not an attribute.
        o.remove("time");
        flatten("", &Value::Object(o), &mut attributes);
    }
    LogRecord {
        time_unix_nano: nanos(a.event.time),
        observed_time_unix_nano: nanos(a.time),
        severity_number: severity_number(a.severity) as i32,
        severity_text: a.severity.as_str().to_owned(),
        body: Some(string(a.message.clone())),
        attributes,
        event_name: "picket.alert".into(),
        ..Default::default()
    }
}

/// The log record that tells the collector alerts were dropped.
pub fn gap_record(g: &Gap, now: jiff::Timestamp) -> LogRecord {
    LogRecord {
        time_unix_nano: nanos(now),
        observed_time_unix_nano: nanos(now),
        severity_number: SeverityNumber::Warn as i32,
        severity_text: "warn".into(),
        body: Some(string(format!(
            "picket: {} alerts (seq {}..={}) were dropped from the full spool before export",
            g.count, g.from_seq, g.to_seq
        ))),
        attributes: vec![
            kv("picket.gap.count", u64_value(g.count)),
            kv("picket.gap.from_seq", u64_value(g.from_seq)),
            kv("picket.gap.to_seq", u64_value(g.to_seq)),
        ],
        event_name: "picket.gap".into(),
        ..Default::default()
    }
}

/// The log record of a raw (enriched) event: the same attribute names as
/// the event inside an alert record, severity INFO.
pub fn event_record(ev: &crate::model::Event) -> LogRecord {
    let mut attributes = Vec::new();
    if let Ok(Value::Object(mut o)) = serde_json::to_value(ev) {
        o.remove("time");
        flatten("", &Value::Object(o), &mut attributes);
    }
    let what = if ev.process.executable.path.is_empty() {
        ev.process.pid.to_string()
    } else {
        ev.process.executable.path.clone()
    };
    LogRecord {
        time_unix_nano: nanos(ev.time),
        observed_time_unix_nano: nanos(jiff::Timestamp::now()),
        severity_number: SeverityNumber::Info as i32,
        severity_text: "info".into(),
        body: Some(string(format!("{} {what}", ev.kind()))),
        attributes,
        event_name: "picket.event".into(),
        ..Default::default()
    }
}
