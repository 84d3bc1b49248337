//! Containment requests and their audit records.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A containment action, from the least to the most disruptive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// SIGKILL one process (pidfd, no pid-reuse race).
    KillProcess,
    /// Deny connect/sendmsg from the pod's cgroup (in the kernel).
    BlockEgress,
    /// Label the pod and select it with a deny-all NetworkPolicy.
    IsolatePod,
    /// Delete the pod through the API server.
    DeletePod,
    /// Kill every process of the container's (or pod's) cgroup.
    KillContainer,
}

impl ActionKind {
    pub const ALL: &'static [ActionKind] = &[
        Self::KillProcess,
        Self::BlockEgress,
        Self::IsolatePod,
        Self::DeletePod,
        Self::KillContainer,
    ];

    /// The name used in rules (`actions:`), metrics and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KillProcess => "kill-process",
            Self::BlockEgress => "block-egress",
            Self::IsolatePod => "isolate-pod",
            Self::DeletePod => "delete-pod",
            Self::KillContainer => "kill-container",
        }
    }

    /// Parses a rule action name. `alert` is not a containment action (`None`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == s)
    }

    /// Whether the action can be lifted by a release.
    pub fn releasable(self) -> bool {
        matches!(self, Self::BlockEgress | Self::IsolatePod)
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One process, named so that a reused pid can never be confused with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22, the
    /// middle part of an exec id).
    pub start_ticks: u64,
}

impl ProcessRef {
    /// From an exec id `node:start_ticks:pid`.
    pub fn from_exec_id(exec_id: &str) -> Option<Self> {
        let mut it = exec_id.rsplitn(3, ':');
        let pid = it.next()?.parse().ok()?;
        let start_ticks = it.next()?.parse().ok()?;
        it.next()?;
        Some(Self { pid, start_ticks })
    }
}

/// What an action applies to. Which fields are needed depends on the action:
/// pod actions need `namespace`/`pod`, cgroup actions need `cgroup`,
/// kill-process needs `process`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Pod UID: deletes are made conditional on it (a recreated pod with the
    /// same name is never deleted by mistake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Pod labels, for protected-label checks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// cgroup v2 directory of the container (or of the pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRef>,
}

impl Target {
    /// `namespace/name` of the pod, if both are known.
    pub fn pod_ref(&self) -> Option<(&str, &str)> {
        Some((self.namespace.as_deref()?, self.pod.as_deref()?))
    }

    /// A short human description for logs and events.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((ns, p)) = self.pod_ref() {
            parts.push(format!("pod {ns}/{p}"));
        }
        if let Some(c) = &self.container_id {
            parts.push(format!("container {}", &c[..c.len().min(12)]));
        }
        if let Some(p) = &self.process {
            parts.push(format!("pid {}", p.pid));
        }
        if parts.is_empty()
            && let Some(c) = &self.cgroup
        {
            parts.push(format!("cgroup {}", c.display()));
        }
        if parts.is_empty() {
            "(no target)".into()
        } else {
            parts.join(" ")
        }
    }
}

/// Who asked for the action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Trigger {
    /// A rule matched (the rule engine requested the action from an alert).
    Rule {
        rule: String,
        /// Spool sequence number of the alert (0 if not spooled yet).
        alert_seq: u64,
    },
    /// A compiled kill rule fired in the kernel.
    Kernel { rule: String },
    /// An incident responder through the API (authenticated identity).
    Client { identity: String },
    /// The agent itself, reconciling state a previous agent left (restart).
    Agent,
}

impl Trigger {
    pub fn rule(&self) -> Option<&str> {
        match self {
            Self::Rule { rule, .. } | Self::Kernel { rule } => Some(rule),
            Self::Client { .. } | Self::Agent => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Rule { rule, alert_seq } => format!("rule {rule} (alert {alert_seq})"),
            Self::Kernel { rule } => format!("kernel rule {rule}"),
            Self::Client { identity } => format!("client {identity}"),
            Self::Agent => "the agent (restart reconciliation)".to_string(),
        }
    }
}

/// Destinations of a block-egress action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EgressScope {
    /// Everything.
    #[default]
    All,
    /// Everything except DNS (port 53), to the listed resolvers only when
    /// the list is not empty.
    AllExceptDns { resolvers: Vec<IpAddr> },
    /// Only these destinations.
    Destinations(Vec<Destination>),
}

/// An address prefix and an optional port (0 = any).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub addr: IpAddr,
    pub prefix_len: u8,
    #[serde(default)]
    pub port: u16,
}

/// A request to act.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    pub action: ActionKind,
    pub target: Target,
    pub trigger: Trigger,
    #[serde(default)]
    pub reason: String,
    /// Report what would be done and do nothing (the global switch also
    /// applies).
    #[serde(default)]
    pub dry_run: bool,
    /// For block-egress.
    #[serde(default)]
    pub egress: EgressScope,
    /// For delete-pod; `None` = the engine's default.
    #[serde(default)]
    pub grace_period_seconds: Option<u32>,
}

impl ActionRequest {
    pub fn new(action: ActionKind, target: Target, trigger: Trigger) -> Self {
        Self {
            action,
            target,
            trigger,
            reason: String::new(),
            dry_run: false,
            egress: EgressScope::All,
            grace_period_seconds: None,
        }
    }
}

/// How an action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    DryRun,
    /// Not attempted: a safety check said no (`message` says which).
    Refused,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::DryRun => "dry_run",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// The audit record of one action (also sent on the alert stream).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Unique per agent run: `<node>:<boot-unique counter>`.
    pub id: String,
    pub time: Timestamp,
    pub action: ActionKind,
    pub target: Target,
    pub triggered_by: Trigger,
    #[serde(default)]
    pub reason: String,
    pub dry_run: bool,
    pub outcome: Outcome,
    /// What was (or would have been) done, or why not.
    pub message: String,
    /// Machine-readable refusal reason (`protected_namespace`, `rate_limited_rule`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Whether this record lifts an earlier action (`picket release`).
    #[serde(default)]
    pub release: bool,
    /// Whether this record is an action of an earlier agent that this one
    /// found and keeps in force (restart reconciliation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restored: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_round_trip() {
        for a in ActionKind::ALL {
            assert_eq!(ActionKind::parse(a.as_str()), Some(*a));
            assert_eq!(
                serde_json::to_string(a).unwrap(),
                format!("\"{}\"", a.as_str())
            );
        }
        assert_eq!(ActionKind::parse("alert"), None);
        assert_eq!(ActionKind::parse("isolate"), None);
    }

    #[test]
    fn process_ref_from_exec_id() {
        assert_eq!(
            ProcessRef::from_exec_id("node-1:123456:42"),
            Some(ProcessRef {
                pid: 42,
                start_ticks: 123456
            })
        );
        assert_eq!(
            ProcessRef::from_exec_id("a:b:c:7:9"),
            Some(ProcessRef {
                pid: 9,
                start_ticks: 7
            })
        );
        assert_eq!(ProcessRef::from_exec_id("123:42"), None);
        assert_eq!(ProcessRef::from_exec_id("n:x:42"), None);
        assert_eq!(ProcessRef::from_exec_id(""), None);
    }

    #[test]
    fn trigger_json_shape() {
        let t = Trigger::Rule {
            rule: "r1".into(),
            alert_seq: 7,
        };
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::json!({"type": "rule", "rule": "r1", "alert_seq": 7})
        );
        let t = Trigger::Client {
            identity: "CN=alice".into(),
        };
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::json!({"type": "client", "identity": "CN=alice"})
        );
    }
}
