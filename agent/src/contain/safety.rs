//! What makes containment safe to turn on: protected scopes, dry-run and
//! rate limits.
//!
//! Protected scopes are refused unless the configuration explicitly allows
//! them; the agent never acts on itself. Rate limits are token buckets per
//! rule, per namespace and global: a request must find a token in every
//! bucket that applies, and takes one from each only if all have one, so a
//! refusal never consumes budget.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::action::{ActionKind, ActionRequest};

/// A token bucket's shape: `burst` actions at once, refilled at `per` /
/// `burst` per token (i.e. `burst` actions per `per` sustained).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub per: Duration,
}

impl Rate {
    pub const fn new(burst: u32, per: Duration) -> Self {
        Self { burst, per }
    }
}

/// Safety configuration.
#[derive(Debug, Clone)]
pub struct SafetyConfig {
    /// Global dry-run: every action is only reported.
    pub dry_run: bool,
    /// Namespaces never acted on (default: `kube-system`).
    pub protected_namespaces: BTreeSet<String>,
    /// Pod labels that protect a pod: `key` (any value) or `key=value`.
    pub protected_labels: Vec<(String, Option<String>)>,
    /// Allow acting on processes outside containers (no pod, no container).
    pub allow_host: bool,
    /// The agent's own pod (`namespace`, `name`), never acted on.
    pub own_pod: Option<(String, String)>,
    /// The agent's own cgroup, never acted on (nor its ancestors: killing
    /// an ancestor would kill the agent).
    pub own_cgroup: Option<PathBuf>,
    /// The agent's pid.
    pub own_pid: u32,
    pub per_rule: Option<Rate>,
    pub per_namespace: Option<Rate>,
    pub global: Option<Rate>,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            dry_run: false,
            protected_namespaces: BTreeSet::from(["kube-system".to_string()]),
            protected_labels: Vec::new(),
            allow_host: false,
            own_pod: None,
            own_cgroup: own_cgroup_v2(
                Path::new("/proc/self/cgroup"),
                &crate::contain::cgroup_v2_root(),
            ),
            own_pid: std::process::id(),
            per_rule: Some(Rate::new(5, Duration::from_secs(60))),
            per_namespace: Some(Rate::new(10, Duration::from_secs(60))),
            global: Some(Rate::new(30, Duration::from_secs(60))),
        }
    }
}

/// The agent's cgroup v2 directory from `/proc/self/cgroup` (`0::/path`).
pub fn own_cgroup_v2(proc_self_cgroup: &Path, v2_root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(proc_self_cgroup).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(v2_root.join(rel.trim_start_matches('/')))
}

/// Why a request was refused (also the metric label).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("namespace {0} is protected")]
    ProtectedNamespace(String),
    #[error("pod label {0} is protected")]
    ProtectedLabel(String),
    #[error("the target is the agent's own pod")]
    OwnPod,
    #[error("the target is the agent's own process")]
    OwnProcess,
    #[error("the target cgroup contains the agent")]
    OwnCgroup,
    #[error("cgroup {0} is protected (its pod or owner was not known when the kernel refused)")]
    ProtectedCgroup(u64),
    #[error(
        "the target is a host process (not in a container) and acting on the host is not allowed"
    )]
    Host,
    #[error("rate limit of rule {0} reached")]
    RateLimitedRule(String),
    #[error("rate limit of namespace {0} reached")]
    RateLimitedNamespace(String),
    #[error("global rate limit reached")]
    RateLimitedGlobal,
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(
        "the pod of cgroup id {0} is not known (the pod watch has not delivered it): not killed, fail-closed"
    )]
    PodUnknown(u64),
}

impl Refusal {
    pub fn label(&self) -> &'static str {
        match self {
            Self::ProtectedNamespace(_) => "protected_namespace",
            Self::ProtectedLabel(_) => "protected_label",
            Self::OwnPod => "own_pod",
            Self::OwnProcess => "own_process",
            Self::OwnCgroup => "own_cgroup",
            Self::ProtectedCgroup(_) => "protected_cgroup",
            Self::Host => "host",
            Self::RateLimitedRule(_) => "rate_limited_rule",
            Self::RateLimitedNamespace(_) => "rate_limited_namespace",
            Self::RateLimitedGlobal => "rate_limited_global",
            Self::Invalid(_) => "invalid",
            Self::PodUnknown(_) => "pod_unknown",
        }
    }
}

/// Checks that the request names what its action needs.
pub fn validate(req: &ActionRequest) -> Result<(), Refusal> {
    let t = &req.target;
    let need = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(Refusal::Invalid(format!("{} needs {what}", req.action)))
        }
    };
    match req.action {
        ActionKind::KillProcess => need(t.process.is_some(), "a process (pid and start time)"),
        ActionKind::BlockEgress | ActionKind::KillContainer => {
            need(t.cgroup.is_some(), "the container's cgroup")
        }
        ActionKind::IsolatePod | ActionKind::DeletePod => {
            need(t.pod_ref().is_some(), "a pod (namespace/name)")
        }
    }
}

/// Protected-scope check: `Ok` if the request may act on its target.
pub fn check_protection(cfg: &SafetyConfig, req: &ActionRequest) -> Result<(), Refusal> {
    let t = &req.target;
    if let Some(p) = &t.process
        && p.pid == cfg.own_pid
    {
        return Err(Refusal::OwnProcess);
    }
    if let (Some(own), Some(target)) = (&cfg.own_cgroup, &t.cgroup)
        && own.starts_with(target)
    {
        return Err(Refusal::OwnCgroup);
    }
    if let (Some((ons, opod)), Some((ns, pod))) = (&cfg.own_pod, t.pod_ref())
        && ons == ns
        && opod == pod
    {
        return Err(Refusal::OwnPod);
    }
    if let Some(ns) = &t.namespace
        && cfg.protected_namespaces.contains(ns)
    {
        return Err(Refusal::ProtectedNamespace(ns.clone()));
    }
    for (k, v) in &cfg.protected_labels {
        if let Some(val) = t.labels.get(k)
            && v.as_ref().is_none_or(|v| v == val)
        {
            return Err(Refusal::ProtectedLabel(match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            }));
        }
    }
    let in_container = t.pod.is_some() || t.pod_uid.is_some() || t.container_id.is_some();
    if !in_container && !cfg.allow_host {
        return Err(Refusal::Host);
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: Rate, now: Instant) {
        let per_token = rate.per.as_secs_f64() / f64::from(rate.burst.max(1));
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        if per_token > 0.0 {
            self.tokens = (self.tokens + elapsed / per_token).min(f64::from(rate.burst));
        } else {
            self.tokens = f64::from(rate.burst);
        }
        self.last = now;
    }
}

/// Token buckets per rule, per namespace and global.
#[derive(Debug)]
pub struct RateLimiter {
    per_rule: Option<Rate>,
    per_namespace: Option<Rate>,
    global: Option<Rate>,
    rules: BTreeMap<String, Bucket>,
    namespaces: BTreeMap<String, Bucket>,
    global_bucket: Option<Bucket>,
}

impl RateLimiter {
    pub fn new(cfg: &SafetyConfig) -> Self {
        Self {
            per_rule: cfg.per_rule,
            per_namespace: cfg.per_namespace,
            global: cfg.global,
            rules: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            global_bucket: None,
        }
    }

    /// Takes one token from every bucket that applies, or none and says
    /// which bucket is empty. With `peek`, only checks (dry-run).
    pub fn acquire(
        &mut self,
        rule: Option<&str>,
        namespace: Option<&str>,
        now: Instant,
        peek: bool,
    ) -> Result<(), Refusal> {
        fn slot<'a>(
            map: &'a mut BTreeMap<String, Bucket>,
            key: &str,
            rate: Rate,
            now: Instant,
        ) -> &'a mut Bucket {
            let b = map.entry(key.to_string()).or_insert_with(|| Bucket {
                tokens: f64::from(rate.burst),
                last: now,
            });
            b.refill(rate, now);
            b
        }
        if let (Some(rate), Some(rule)) = (self.per_rule, rule)
            && slot(&mut self.rules, rule, rate, now).tokens < 1.0
        {
            return Err(Refusal::RateLimitedRule(rule.to_string()));
        }
        if let (Some(rate), Some(ns)) = (self.per_namespace, namespace)
            && slot(&mut self.namespaces, ns, rate, now).tokens < 1.0
        {
            return Err(Refusal::RateLimitedNamespace(ns.to_string()));
        }
        if let Some(rate) = self.global {
            let g = self.global_bucket.get_or_insert_with(|| Bucket {
                tokens: f64::from(rate.burst),
                last: now,
            });
            g.refill(rate, now);
            if g.tokens < 1.0 {
                return Err(Refusal::RateLimitedGlobal);
            }
        }
        if peek {
            return Ok(());
        }
        if let Some(rule) = rule
            && let Some(b) = self.rules.get_mut(rule)
        {
            b.tokens -= 1.0;
        }
        if let Some(ns) = namespace
            && let Some(b) = self.namespaces.get_mut(ns)
        {
            b.tokens -= 1.0;
        }
        if let Some(g) = &mut self.global_bucket {
            g.tokens -= 1.0;
        }
        Ok(())
    }

    /// Drops buckets that are full again (bounded memory with many rules
    /// and namespaces).
    pub fn prune(&mut self, now: Instant) {
        if let Some(rate) = self.per_rule {
            self.rules.retain(|_, b| {
                b.refill(rate, now);
                b.tokens < f64::from(rate.burst)
            });
        }
        if let Some(rate) = self.per_namespace {
            self.namespaces.retain(|_, b| {
                b.refill(rate, now);
                b.tokens < f64::from(rate.burst)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contain::action::{ProcessRef, Target, Trigger};

    fn cfg() -> SafetyConfig {
        SafetyConfig {
            own_pod: Some(("picket".into(), "picket-abc".into())),
            own_cgroup: Some(PathBuf::from("/sys/fs/cgroup/kubepods/podA/ctr1")),
            own_pid: 4242,
            protected_labels: vec![
                ("critical".into(), None),
                ("tier".into(), Some("db".into())),
            ],
            ..SafetyConfig::default()
        }
    }

    fn req(action: ActionKind, ns: &str, pod: &str) -> ActionRequest {
        ActionRequest::new(
            action,
            Target {
                namespace: Some(ns.into()),
                pod: Some(pod.into()),
                cgroup: Some(PathBuf::from(format!("/sys/fs/cgroup/kubepods/{pod}"))),
                ..Default::default()
            },
            Trigger::Rule {
                rule: "r".into(),
                alert_seq: 1,
            },
        )
    }

    #[test]
    fn protected_scopes_are_refused() {
        let c = cfg();
        assert_eq!(
            check_protection(&c, &req(ActionKind::DeletePod, "default", "web")),
            Ok(())
        );
        assert_eq!(
            check_protection(&c, &req(ActionKind::DeletePod, "kube-system", "coredns")),
            Err(Refusal::ProtectedNamespace("kube-system".into()))
        );
        assert_eq!(
            check_protection(&c, &req(ActionKind::IsolatePod, "picket", "picket-abc")),
            Err(Refusal::OwnPod)
        );
        let mut r = req(ActionKind::KillContainer, "default", "podA");
        assert_eq!(
            check_protection(&c, &r),
            Err(Refusal::OwnCgroup),
            "the pod cgroup holds the agent"
        );
        r.target.cgroup = Some(PathBuf::from("/sys/fs/cgroup/kubepods/podA/ctr2"));
        assert_eq!(check_protection(&c, &r), Ok(()), "a sibling container");
        let mut r = req(ActionKind::KillProcess, "default", "web");
        r.target.process = Some(ProcessRef {
            pid: 4242,
            start_ticks: 1,
        });
        assert_eq!(check_protection(&c, &r), Err(Refusal::OwnProcess));
        let mut r = req(ActionKind::DeletePod, "default", "db");
        r.target.labels.insert("tier".into(), "db".into());
        assert_eq!(
            check_protection(&c, &r),
            Err(Refusal::ProtectedLabel("tier=db".into()))
        );
        r.target.labels.insert("tier".into(), "web".into());
        assert_eq!(check_protection(&c, &r), Ok(()));
        r.target.labels.insert("critical".into(), "".into());
        assert_eq!(
            check_protection(&c, &r),
            Err(Refusal::ProtectedLabel("critical".into()))
        );
    }

    #[test]
    fn host_processes_need_explicit_allowance() {
        let mut c = cfg();
        let host = ActionRequest::new(
            ActionKind::KillProcess,
            Target {
                process: Some(ProcessRef {
                    pid: 10,
                    start_ticks: 5,
                }),
                ..Default::default()
            },
            Trigger::Client {
                identity: "alice".into(),
            },
        );
        assert_eq!(check_protection(&c, &host), Err(Refusal::Host));
        c.allow_host = true;
        assert_eq!(check_protection(&c, &host), Ok(()));
        c.protected_namespaces.clear();
        assert_eq!(
            check_protection(&c, &req(ActionKind::DeletePod, "kube-system", "x")),
            Ok(()),
            "explicitly unprotected"
        );
    }

    #[test]
    fn validation_names_missing_target_parts() {
        let r = ActionRequest::new(
            ActionKind::IsolatePod,
            Target::default(),
            Trigger::Client {
                identity: "a".into(),
            },
        );
        assert_eq!(
            validate(&r),
            Err(Refusal::Invalid(
                "isolate-pod needs a pod (namespace/name)".into()
            ))
        );
        let r = ActionRequest::new(
            ActionKind::BlockEgress,
            Target::default(),
            Trigger::Client {
                identity: "a".into(),
            },
        );
        assert_eq!(
            validate(&r),
            Err(Refusal::Invalid(
                "block-egress needs the container's cgroup".into()
            ))
        );
    }

    #[test]
    fn rate_limits_stop_the_n_plus_first_and_refill() {
        let c = SafetyConfig {
            per_rule: Some(Rate::new(3, Duration::from_secs(30))),
            per_namespace: Some(Rate::new(4, Duration::from_secs(60))),
            global: Some(Rate::new(5, Duration::from_secs(60))),
            ..cfg()
        };
        let mut rl = RateLimiter::new(&c);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rl.acquire(Some("r1"), Some("a"), t0, false), Ok(()));
        }
        assert_eq!(
            rl.acquire(Some("r1"), Some("a"), t0, false),
            Err(Refusal::RateLimitedRule("r1".into()))
        );
        // Another rule, same namespace: the namespace has one token left.
        assert_eq!(rl.acquire(Some("r2"), Some("a"), t0, false), Ok(()));
        assert_eq!(
            rl.acquire(Some("r2"), Some("a"), t0, false),
            Err(Refusal::RateLimitedNamespace("a".into()))
        );
        // Another namespace: the global bucket has one token left.
        assert_eq!(rl.acquire(Some("r3"), Some("b"), t0, false), Ok(()));
        assert_eq!(
            rl.acquire(Some("r3"), Some("c"), t0, false),
            Err(Refusal::RateLimitedGlobal)
        );
        // Refusals consumed nothing: r3 still has 2 of 3 tokens once the global refills.
        // 12 s later the global bucket (5 per 60 s) has one token again.
        let t1 = t0 + Duration::from_secs(12);
        assert_eq!(rl.acquire(Some("r3"), Some("c"), t1, false), Ok(()));
        assert_eq!(
            rl.acquire(Some("r3"), Some("c"), t1, false),
            Err(Refusal::RateLimitedGlobal)
        );
        // Peeking never consumes.
        let t2 = t1 + Duration::from_secs(12);
        for _ in 0..5 {
            assert_eq!(rl.acquire(Some("r4"), Some("d"), t2, true), Ok(()));
        }
        assert_eq!(rl.acquire(Some("r4"), Some("d"), t2, false), Ok(()));
        assert_eq!(
            rl.acquire(Some("r4"), Some("d"), t2, false),
            Err(Refusal::RateLimitedGlobal)
        );
    }

    #[test]
    fn reads_own_cgroup() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("cgroup");
        std::fs::write(&f, "12:memory:/x\n0::/kubepods/podA/ctr1\n").unwrap();
        assert_eq!(
            own_cgroup_v2(&f, Path::new("/sys/fs/cgroup")),
            Some(PathBuf::from("/sys/fs/cgroup/kubepods/podA/ctr1"))
        );
        std::fs::write(&f, "12:memory:/x\n").unwrap();
        assert_eq!(own_cgroup_v2(&f, Path::new("/sys/fs/cgroup")), None);
    }
}
