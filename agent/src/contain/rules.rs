//! From detection rules to containment: which `kill-process` rules the
//! kernel can decide on its own, and the action requests an alert asks for.
//!
//! A rule's `kill-process` runs in the kernel (SIGKILL at exec, before the
//! program's first instruction) when the whole rule reduces to what the
//! kernel maps can express: exec events only, no exceptions, and a
//! condition that is a conjunction of an executable test
//! (`process.executable.path == / in [...]`, or `startswith "/dir/"`) and
//! optionally `container.id exists`. Every other `kill-process` rule kills
//! from user space, through a pidfd, when its alert arrives.

use std::{collections::BTreeSet, path::Path};

use crate::{
    model::{Alert, Event},
    rules::{
        Action, Mode, Rule, RuleSet,
        expr::{Cond, Test},
    },
};

use super::{
    action::{ActionKind, ActionRequest, ProcessRef, Target, Trigger},
    kill_rules::{ExeMatch, KillRuleSpec, KillScope},
};

/// The kill rules the kernel enforces, and why the others are not.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelKillPlan {
    pub specs: Vec<KillRuleSpec>,
    /// Ids of the rules in `specs` (their alerts need no user-space kill).
    pub in_kernel: BTreeSet<String>,
    /// `(rule id, reason)` for `kill-process` rules left to user space.
    pub user_space: Vec<(String, String)>,
}

/// Splits the `kill-process` rules of `set` between the kernel and user
/// space. `allow_host`: whether rules that also match host processes may
/// run in the kernel (otherwise they stay in user space, where the safety
/// layer refuses host targets one by one).
pub fn plan_kernel_kills(set: &RuleSet, allow_host: bool) -> KernelKillPlan {
    let mut plan = KernelKillPlan::default();
    for rule in set.rules() {
        if !rule.enabled
            || rule.mode == Mode::Shadow
            || !rule.actions.contains(&Action::KillProcess)
        {
            continue;
        }
        match kernel_specs(rule, allow_host) {
            Ok(specs) => {
                plan.in_kernel.insert(rule.id.to_string());
                plan.specs.extend(specs);
            }
            Err(why) => plan.user_space.push((rule.id.to_string(), why)),
        }
    }
    plan
}

/// The kernel form of one rule, or why it has none.
pub fn kernel_specs(rule: &Rule, allow_host: bool) -> Result<Vec<KillRuleSpec>, String> {
    use crate::model::EventKindName;
    if rule.events != [EventKindName::Exec] {
        return Err("it applies to events other than exec".into());
    }
    if !rule.exceptions().is_empty() {
        return Err("it has exceptions, which the kernel cannot evaluate".into());
    }
    let conjuncts: Vec<&Cond> = match rule.condition() {
        Cond::And(items) => items.iter().collect(),
        c => vec![c],
    };
    let mut exes: Option<Vec<ExeMatch>> = None;
    let mut in_container = false;
    for c in conjuncts {
        match c {
            Cond::Const(true) => {}
            Cond::Pred(p) if !p.negate && &*p.field == "container.id" => match p.test {
                Test::Exists => in_container = true,
                _ => return Err("it compares container.id with values".into()),
            },
            Cond::Pred(p) if !p.negate && &*p.field == "process.executable.path" => {
                if exes.is_some() {
                    return Err("it tests process.executable.path twice".into());
                }
                let list = match &p.test {
                    Test::StrIn(set) => {
                        let mut v: Vec<&str> = set.items();
                        v.sort_unstable();
                        v.into_iter().map(|s| ExeMatch::Exact(s.into())).collect()
                    }
                    Test::Prefix(prefixes) => {
                        let mut v = Vec::new();
                        for pre in prefixes.iter() {
                            let Some(dir) = pre.strip_suffix('/') else {
                                return Err(format!(
                                    "its executable prefix {pre:?} does not end with '/' (the kernel matches whole directories)"
                                ));
                            };
                            v.push(ExeMatch::Under(dir.to_string()));
                        }
                        v
                    }
                    _ => {
                        return Err(
                            "it tests process.executable.path with an operator other than ==, in or startswith"
                                .into(),
                        );
                    }
                };
                exes = Some(list);
            }
            Cond::Pred(p) => {
                return Err(format!(
                    "its condition tests {}{}, which the kernel cannot evaluate",
                    if p.negate { "the negation of " } else { "" },
                    p.field
                ));
            }
            _ => {
                return Err(
                    "its condition is not a conjunction of simple tests (or / not / macros the kernel cannot evaluate)"
                        .into(),
                );
            }
        }
    }
    let Some(exes) = exes else {
        return Err("its condition does not test process.executable.path".into());
    };
    let scope = if in_container {
        KillScope::AnyContainer
    } else if allow_host {
        KillScope::Anywhere
    } else {
        return Err("it also matches host processes (no `container.id exists`) and containment.allow_host is off".into());
    };
    Ok(exes
        .into_iter()
        .map(|exe| KillRuleSpec {
            id: rule.id.to_string(),
            exe: Some(exe),
            argv_prefix: Vec::new(),
            scope: scope.clone(),
            dry_run: false,
        })
        .collect())
}

/// What an alert's event says about the target of an action.
pub fn target_of(ev: &Event, cgroup_root: &Path) -> Target {
    let mut t = Target {
        process: ProcessRef::from_exec_id(&ev.process.exec_id),
        ..Default::default()
    };
    if let Some(c) = &ev.container {
        t.container_id = Some(c.id.clone());
        let rel = ev.process.linux.cgroup.trim_start_matches('/');
        if !rel.is_empty() && !rel.split('/').any(|c| c == ".." || c == ".") {
            t.cgroup = Some(cgroup_root.join(rel));
        }
    }
    if let Some(k) = &ev.k8s {
        if !k.pod.uid.is_empty() {
            t.pod_uid = Some(k.pod.uid.clone());
        }
        if let Some(ns) = &k.namespace
            && !k.pod.name.is_empty()
        {
            t.namespace = Some(ns.name.clone());
            t.pod = Some(k.pod.name.clone());
            t.labels = k.pod.labels.clone();
        }
    }
    t
}

/// The containment requests of an alert: one per action of its rule,
/// except a `kill-process` the kernel already carried out.
pub fn requests_for(
    alert: &Alert,
    actions: &[Action],
    in_kernel: bool,
    cgroup_root: &Path,
) -> Vec<ActionRequest> {
    let mut out = Vec::new();
    let target = target_of(&alert.event, cgroup_root);
    for a in actions {
        let kind = match a {
            Action::Alert => continue,
            Action::KillProcess if in_kernel => continue,
            Action::KillProcess => ActionKind::KillProcess,
            Action::BlockEgress => ActionKind::BlockEgress,
            Action::IsolatePod => ActionKind::IsolatePod,
            Action::DeletePod => ActionKind::DeletePod,
            Action::KillContainer => ActionKind::KillContainer,
        };
        let mut req = ActionRequest::new(
            kind,
            target.clone(),
            Trigger::Rule {
                rule: alert.rule.id.clone(),
                alert_seq: alert.seq,
            },
        );
        req.reason = alert.message.clone();
        out.push(req);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Container, EventKindName, K8s, K8sNamespace, Pod};

    fn set(yaml: &str) -> RuleSet {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.yaml");
        std::fs::write(&p, yaml).unwrap();
        RuleSet::load(&[&p]).unwrap_or_else(|d| panic!("{}", crate::rules::diagnostics::render(&d)))
    }

    fn rule(id: &str, events: &str, cond: &str, extra: &str) -> String {
        format!(
            "  - id: {id}\n    name: {id}\n    description: d\n    severity: high\n    events: [{events}]\n    condition: '{cond}'\n    output: o\n    tags: [T1059]\n    actions: [alert, kill-process]\n{extra}"
        )
    }

    #[test]
    fn kernel_decidable_rules_are_compiled() {
        let s = set(&format!(
            "lists:\n  miners: [/usr/bin/xmrig, /opt/m]\nrules:\n{}{}{}",
            rule(
                "exact",
                "exec",
                "container.id exists and process.executable.path in miners",
                ""
            ),
            rule(
                "under",
                "exec",
                "process.executable.path startswith \"/tmp/\" and container.id exists",
                ""
            ),
            rule("host", "exec", "process.executable.path == \"/bin/nc\"", ""),
        ));
        let plan = plan_kernel_kills(&s, false);
        assert_eq!(
            plan.specs,
            vec![
                KillRuleSpec {
                    id: "exact".into(),
                    exe: Some(ExeMatch::Exact("/opt/m".into())),
                    argv_prefix: vec![],
                    scope: KillScope::AnyContainer,
                    dry_run: false
                },
                KillRuleSpec {
                    id: "exact".into(),
                    exe: Some(ExeMatch::Exact("/usr/bin/xmrig".into())),
                    argv_prefix: vec![],
                    scope: KillScope::AnyContainer,
                    dry_run: false
                },
                KillRuleSpec {
                    id: "under".into(),
                    exe: Some(ExeMatch::Under("/tmp".into())),
                    argv_prefix: vec![],
                    scope: KillScope::AnyContainer,
                    dry_run: false
                },
            ]
        );
        assert_eq!(
            plan.in_kernel,
            BTreeSet::from(["exact".to_string(), "under".to_string()])
        );
        assert_eq!(
            plan.user_space,
            vec![(
                "host".to_string(),
                "it also matches host processes (no `container.id exists`) and containment.allow_host is off".to_string()
            )]
        );
        let plan = plan_kernel_kills(&s, true);
        assert_eq!(plan.specs[3].scope, KillScope::Anywhere);
        assert!(plan.user_space.is_empty());
    }

    #[test]
    fn other_rules_stay_in_user_space_with_a_reason() {
        let s = set(&format!(
            "rules:\n{}{}{}{}{}",
            rule(
                "args",
                "exec",
                "process.executable.path == \"/bin/sh\" and process.command_line contains \"-i\"",
                ""
            ),
            rule("connect", "connect", "container.id exists", ""),
            rule(
                "or",
                "exec",
                "process.executable.path == \"/a\" or process.executable.path == \"/b\"",
                ""
            ),
            rule(
                "prefix",
                "exec",
                "process.executable.path startswith \"/tmp\" and container.id exists",
                ""
            ),
            rule(
                "except",
                "exec",
                "process.executable.path == \"/a\" and container.id exists",
                "    exceptions:\n      - name: e\n        field: k8s.namespace.name\n        operator: in\n        values: [x]\n"
            ),
        ));
        let plan = plan_kernel_kills(&s, true);
        assert!(plan.specs.is_empty(), "{:?}", plan.specs);
        let reasons: Vec<(&str, &str)> = plan
            .user_space
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (
                    "args",
                    "its condition tests process.command_line, which the kernel cannot evaluate"
                ),
                ("connect", "it applies to events other than exec"),
                (
                    "or",
                    "its condition is not a conjunction of simple tests (or / not / macros the kernel cannot evaluate)"
                ),
                (
                    "prefix",
                    "its executable prefix \"/tmp\" does not end with '/' (the kernel matches whole directories)"
                ),
                (
                    "except",
                    "it has exceptions, which the kernel cannot evaluate"
                ),
            ]
        );
    }

    #[test]
    fn requests_from_an_alert() {
        let mut ev = Event::new(EventKindName::Exec, "2026-11-22T08:00:00Z".parse().unwrap());
        ev.process.exec_id = "node-1:5000:42".into();
        ev.process.linux.cgroup = "/kubepods/besteffort/podu-1/cri-containerd-abc.scope".into();
        ev.container = Some(Container {
            id: "abc".into(),
            ..Default::default()
        });
        ev.k8s = Some(K8s {
            pod: Pod {
                name: "web-1".into(),
                uid: "u-1".into(),
                ..Default::default()
            },
            namespace: Some(K8sNamespace {
                name: "shop".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let alert = Alert {
            seq: 9,
            time: ev.time,
            severity: crate::model::Severity::High,
            rule: crate::model::RuleRef {
                id: "r".into(),
                name: "R".into(),
                tags: vec![],
            },
            message: "msg".into(),
            event: ev,
        };
        let root = Path::new("/sys/fs/cgroup");
        let reqs = requests_for(
            &alert,
            &[Action::Alert, Action::KillProcess, Action::KillContainer],
            false,
            root,
        );
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].action, ActionKind::KillProcess);
        assert_eq!(
            reqs[0].target.process,
            Some(ProcessRef {
                pid: 42,
                start_ticks: 5000
            })
        );
        assert_eq!(
            reqs[1].target.cgroup.as_deref(),
            Some(Path::new(
                "/sys/fs/cgroup/kubepods/besteffort/podu-1/cri-containerd-abc.scope"
            ))
        );
        assert_eq!(reqs[1].target.pod_ref(), Some(("shop", "web-1")));
        assert_eq!(reqs[1].target.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(
            reqs[1].trigger,
            Trigger::Rule {
                rule: "r".into(),
                alert_seq: 9
            }
        );
        assert_eq!(reqs[1].reason, "msg");
        // The kernel already killed: only the container action remains.
        let reqs = requests_for(
            &alert,
            &[Action::KillProcess, Action::KillContainer],
            true,
            root,
        );
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].action, ActionKind::KillContainer);
        // A hostile cgroup path never escapes the root.
        let mut a2 = alert.clone();
        a2.event.process.linux.cgroup = "/../../etc".into();
        assert_eq!(target_of(&a2.event, root).cgroup, None);
    }
}
