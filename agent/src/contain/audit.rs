//! Audit records on the alert stream.
//!
//! Every containment record becomes an [`Alert`] of the built-in rule
//! [`AUDIT_RULE_ID`] whose event is of kind `containment`: it is then
//! spooled, numbered, exported over OTLP, streamed to gRPC subscribers and
//! printed exactly like a detection, so a SIEM needs no second channel to
//! learn what the agent did. Subscribers select audit records with the rule
//! id filter.

use crate::model::{
    Alert, Container, ContainmentAudit, Event, EventKindName, K8s, K8sNamespace, Pod, RuleRef,
    Severity,
};

use super::action::{ActionRecord, Outcome, Trigger};

/// Rule id of audit alerts.
pub const AUDIT_RULE_ID: &str = "containment-action";

/// How loud an audit record is: a failed action needs a human; a
/// successful one is a notable change on the node; dry runs and refusals
/// are informational.
pub fn severity(outcome: Outcome) -> Severity {
    match outcome {
        Outcome::Failed => Severity::High,
        Outcome::Succeeded => Severity::Medium,
        Outcome::DryRun | Outcome::Refused => Severity::Low,
    }
}

/// The audit section of a record.
pub fn section(r: &ActionRecord) -> ContainmentAudit {
    let (trigger, rule_id, alert_seq, identity) = match &r.triggered_by {
        Trigger::Rule { rule, alert_seq } => ("rule", Some(rule.clone()), Some(*alert_seq), None),
        Trigger::Kernel { rule } => ("kernel", Some(rule.clone()), None, None),
        Trigger::Client { identity } => ("client", None, None, Some(identity.clone())),
        Trigger::Agent => ("agent", None, None, None),
    };
    ContainmentAudit {
        id: r.id.clone(),
        action: r.action.as_str().to_string(),
        outcome: r.outcome.as_str().to_string(),
        dry_run: r.dry_run,
        release: r.release,
        message: r.message.clone(),
        refusal: r.refusal.clone(),
        trigger: trigger.to_string(),
        rule_id,
        alert_seq,
        identity,
        reason: r.reason.clone(),
        target: r.target.describe(),
    }
}

/// The alert carrying `r`. `context` is the event that triggered the action
/// (rule triggers): its process, container and pod sections are kept so the
/// audit alert is attributed like the detection. Without it the sections
/// are filled from the record's target.
pub fn to_alert(r: &ActionRecord, host_name: &str, context: Option<&Event>) -> Alert {
    let mut ev = Event::new(EventKindName::Containment, r.time);
    match context {
        Some(c) => {
            ev.host = c.host.clone();
            ev.process = c.process.clone();
            ev.container = c.container.clone();
            ev.k8s = c.k8s.clone();
        }
        None => {
            ev.host.name = host_name.to_string();
            let t = &r.target;
            if let Some(p) = &t.process {
                ev.process.pid = p.pid;
            }
            if let Some(id) = &t.container_id {
                ev.container = Some(Container {
                    id: id.clone(),
                    ..Default::default()
                });
            }
            if let Some((ns, pod)) = t.pod_ref() {
                ev.k8s = Some(K8s {
                    pod: Pod {
                        name: pod.to_string(),
                        uid: t.pod_uid.clone().unwrap_or_default(),
                        labels: t.labels.clone(),
                        ..Default::default()
                    },
                    namespace: Some(K8sNamespace {
                        name: ns.to_string(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        }
    }
    let audit = section(r);
    let message = format!(
        "{} {} ({}): {}",
        r.action,
        r.outcome.as_str(),
        r.triggered_by.describe(),
        r.message
    );
    ev.containment = Some(audit);
    Alert {
        seq: 0,
        time: r.time,
        severity: severity(r.outcome),
        rule: RuleRef {
            id: AUDIT_RULE_ID.to_string(),
            name: "Containment action".to_string(),
            tags: vec!["containment".to_string()],
        },
        message,
        event: ev,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contain::{ActionKind, ProcessRef, Target};

    fn record(trigger: Trigger, outcome: Outcome) -> ActionRecord {
        ActionRecord {
            id: "node-1:7".into(),
            time: "2026-11-22T08:00:00Z".parse().unwrap(),
            action: ActionKind::KillProcess,
            target: Target {
                namespace: Some("shop".into()),
                pod: Some("web-1".into()),
                pod_uid: Some("u-1".into()),
                container_id: Some("c".repeat(64)),
                process: Some(ProcessRef {
                    pid: 42,
                    start_ticks: 9,
                }),
                ..Default::default()
            },
            triggered_by: trigger,
            reason: "why".into(),
            dry_run: false,
            outcome,
            message: "killed pid 42 (SIGKILL through a pidfd)".into(),
            refusal: None,
            release: false,
            restored: false,
        }
    }

    #[test]
    fn rule_triggered_record_becomes_an_alert() {
        let r = record(
            Trigger::Rule {
                rule: "reverse-shell".into(),
                alert_seq: 11,
            },
            Outcome::Succeeded,
        );
        let a = to_alert(&r, "node-1", None);
        assert_eq!(a.rule.id, AUDIT_RULE_ID);
        assert_eq!(a.severity, Severity::Medium);
        assert_eq!(a.event.kind(), EventKindName::Containment);
        assert_eq!(
            a.message,
            "kill-process succeeded (rule reverse-shell (alert 11)): killed pid 42 (SIGKILL through a pidfd)"
        );
        let c = a.event.containment.as_ref().unwrap();
        assert_eq!(c.trigger, "rule");
        assert_eq!(c.rule_id.as_deref(), Some("reverse-shell"));
        assert_eq!(c.alert_seq, Some(11));
        assert_eq!(c.identity, None);
        assert_eq!(c.target, "pod shop/web-1 container cccccccccccc pid 42");
        assert_eq!(a.event.process.pid, 42);
        assert_eq!(a.event.container.as_ref().unwrap().id, "c".repeat(64));
        let k = a.event.k8s.as_ref().unwrap();
        assert_eq!(k.pod.name, "web-1");
        assert_eq!(k.namespace.as_ref().unwrap().name, "shop");
        // The JSON round-trips through the schema (deny_unknown_fields).
        let json = serde_json::to_string(&a).unwrap();
        let back: Alert = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn client_and_kernel_triggers() {
        let a = to_alert(
            &record(
                Trigger::Client {
                    identity: "cn=alice".into(),
                },
                Outcome::Refused,
            ),
            "n",
            None,
        );
        let c = a.event.containment.unwrap();
        assert_eq!(
            (c.trigger.as_str(), c.identity.as_deref(), c.rule_id),
            ("client", Some("cn=alice"), None)
        );
        assert_eq!(a.severity, Severity::Low);
        let a = to_alert(
            &record(Trigger::Kernel { rule: "k".into() }, Outcome::Failed),
            "n",
            None,
        );
        assert_eq!(a.severity, Severity::High);
        let c = a.event.containment.unwrap();
        assert_eq!(
            (c.trigger.as_str(), c.rule_id.as_deref()),
            ("kernel", Some("k"))
        );
    }

    #[test]
    fn context_event_sections_are_kept() {
        let mut ctx = Event::new(EventKindName::Exec, "2026-11-22T08:00:00Z".parse().unwrap());
        ctx.process.pid = 5;
        ctx.process.executable.path = "/bin/sh".into();
        ctx.host.name = "node-9".into();
        let a = to_alert(
            &record(Trigger::Kernel { rule: "k".into() }, Outcome::Succeeded),
            "n",
            Some(&ctx),
        );
        assert_eq!(a.event.process.pid, 5);
        assert_eq!(a.event.process.executable.path, "/bin/sh");
        assert_eq!(a.event.host.name, "node-9");
        assert_eq!(a.event.container, None);
    }
}
