//! Alerts: a rule matched an event.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::Event;

/// Rule severity, ordered from least to most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Self::Info),
            "low" => Some(Self::Low),
            "medium" => Some(Self::Medium),
            "high" => Some(Self::High),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `rule.*` in an alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleRef {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// An alert: the rule, the rendered message and the full event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// Sequence number assigned by the spool (0 until spooled).
    #[serde(default)]
    pub seq: u64,
    /// Time the alert was raised.
    pub time: Timestamp,
    pub severity: Severity,
    pub rule: RuleRef,
    /// The rule's `output` template rendered with the event's fields.
    pub message: String,
    pub event: Event,
}
