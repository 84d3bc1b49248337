//! Server-side filters of the alert and event streams.

use std::collections::BTreeMap;

use crate::model::{Alert, Event, EventKindName, Severity};

/// Which alerts a consumer wants. Empty lists match everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertFilter {
    pub min_severity: Option<Severity>,
    pub namespaces: Vec<String>,
    pub rule_ids: Vec<String>,
    /// Every label must be present on the pod with this value.
    pub pod_labels: BTreeMap<String, String>,
}

/// Which live events a consumer wants.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFilter {
    pub kinds: Vec<EventKindName>,
    pub namespaces: Vec<String>,
    pub pod_labels: BTreeMap<String, String>,
}

fn namespace(ev: &Event) -> Option<&str> {
    ev.k8s.as_ref()?.namespace.as_ref().map(|n| n.name.as_str())
}

fn place_matches(ev: &Event, namespaces: &[String], labels: &BTreeMap<String, String>) -> bool {
    if !namespaces.is_empty() && !namespace(ev).is_some_and(|ns| namespaces.iter().any(|n| n == ns))
    {
        return false;
    }
    if labels.is_empty() {
        return true;
    }
    let Some(k8s) = ev.k8s.as_ref() else {
        return false;
    };
    labels.iter().all(|(k, v)| k8s.pod.labels.get(k) == Some(v))
}

impl AlertFilter {
    pub fn matches(&self, a: &Alert) -> bool {
        self.min_severity.is_none_or(|min| a.severity >= min)
            && (self.rule_ids.is_empty() || self.rule_ids.contains(&a.rule.id))
            && place_matches(&a.event, &self.namespaces, &self.pod_labels)
    }
}

impl EventFilter {
    pub fn matches(&self, ev: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&ev.kind()))
            && place_matches(ev, &self.namespaces, &self.pod_labels)
    }
}

/// Parses `key=value` (CLI `--label`).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}
