//! The containment engine: one entry point ([`Containment::execute`]) for
//! actions requested by rules (from alerts) and by incident responders (the
//! gRPC API / `picket contain`), with the safety checks in front and an
//! audit record (plus a Kubernetes Event on the pod) behind every action.

use std::{
    collections::{BTreeSet, VecDeque},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use agent_common::enforce::enforce_action;
use aya::maps::{MapData, RingBuf};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    action::{ActionKind, ActionRecord, ActionRequest, Outcome, Target, Trigger},
    cgroups,
    kernel::{KernelEnforcer, KernelKill, Reconciled, decode_record},
    kill_rules::{KillRuleSpec, KillScope},
    kube::KubeActions,
    metrics::{ACTIONS, ActionLabels, LOSSES, LossLabels, REFUSALS, RefusalLabels},
    procs,
    safety::{self, RateLimiter, Refusal, SafetyConfig},
    scopes::{self, Attributed, PodFacts, Scan},
};

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct ContainmentConfig {
    pub safety: SafetyConfig,
    /// This node (record ids, Event source).
    pub node_name: String,
    pub proc_root: PathBuf,
    /// cgroup v2 mount point (pod cgroups are searched below it).
    pub cgroup_root: PathBuf,
    /// Grace period of delete-pod when the request gives none.
    pub delete_grace_period_seconds: u32,
    /// How long kill-container waits for the cgroup to be empty.
    pub kill_wait: Duration,
    /// Records kept for `ListActions`.
    pub history: usize,
}

impl Default for ContainmentConfig {
    fn default() -> Self {
        Self {
            safety: SafetyConfig::default(),
            node_name: String::new(),
            proc_root: PathBuf::from("/proc"),
            cgroup_root: cgroups::cgroup_v2_root(),
            delete_grace_period_seconds: 30,
            kill_wait: Duration::from_secs(5),
            history: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContainError {
    #[error("no Kubernetes API access (host mode): {0} is not possible")]
    NoKube(ActionKind),
    #[error("the containment programs are not loaded: {0} is not possible")]
    NoKernel(ActionKind),
    #[error("pod {0} not found")]
    PodNotFound(String),
    #[error(transparent)]
    Kube(#[from] super::kube::KubeError),
    #[error(transparent)]
    Kernel(#[from] super::kernel::KernelError),
    #[error(transparent)]
    Kill(#[from] procs::KillError),
    #[error("{0}")]
    Other(String),
}

/// How long a kill the kernel left to user space (pod not cleared yet)
/// waits for the pod watch to deliver the pod.
const UNKNOWN_POD_WAIT: Duration = Duration::from_secs(3);

/// The request a recorded block was placed for (a placeholder naming the
/// cgroup for blocks recorded without one).
fn restored_request(r: &super::persist::BlockRecord) -> ActionRequest {
    r.request.clone().unwrap_or_else(|| {
        ActionRequest::new(
            ActionKind::BlockEgress,
            Target {
                cgroup: Some(r.path.clone()),
                ..Default::default()
            },
            Trigger::Agent,
        )
    })
}

/// The containment engine. Cheap to share (`Arc`); every method takes `&self`.
pub struct Containment {
    cfg: ContainmentConfig,
    limiter: Mutex<RateLimiter>,
    kernel: Option<Mutex<KernelEnforcer>>,
    kube: Option<KubeActions>,
    audit: Option<mpsc::Sender<ActionRecord>>,
    history: Mutex<VecDeque<ActionRecord>>,
    /// Pods this agent isolated (for release).
    isolated: Mutex<BTreeSet<(String, String)>>,
    /// The cgroup facts last written to the kernel, and what explains
    /// kernel records (see [`scopes`]).
    scopes: Mutex<ScopeState>,
    seq: AtomicU64,
}

/// The latest join of the cgroup hierarchy with the pod cache.
#[derive(Debug, Default)]
struct ScopeState {
    /// What the kernel was last told (`None` before the first write).
    written: Option<Scan>,
    /// Relative paths of the container roots the kernel knows.
    root_rels: Vec<String>,
    attributed: std::collections::HashMap<u64, Attributed>,
    pods: std::collections::HashMap<String, PodFacts>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Containment {
    pub fn new(cfg: ContainmentConfig) -> Self {
        Self {
            limiter: Mutex::new(RateLimiter::new(&cfg.safety)),
            cfg,
            kernel: None,
            kube: None,
            audit: None,
            history: Mutex::new(VecDeque::new()),
            isolated: Mutex::new(BTreeSet::new()),
            scopes: Mutex::new(ScopeState::default()),
            seq: AtomicU64::new(0),
        }
    }

    /// Enables the kernel actions (kill rules, block-egress). Tells the
    /// kernel which cgroups hold containers and which are protected (the
    /// agent's own; pods are added by [`Self::sync_scopes`]).
    pub fn with_kernel(mut self, k: KernelEnforcer) -> Result<Self, ContainError> {
        self.kernel = Some(Mutex::new(k));
        self.sync_scopes(Vec::new())?;
        Ok(self)
    }

    /// Walks the cgroup hierarchy, joins it with `pods` (the pod cache of
    /// this node) and writes the container roots and protected cgroups to
    /// the kernel when they changed. Returns whether they changed.
    /// Blocking (directory walk): call from a blocking context.
    pub fn sync_scopes(&self, pods: Vec<PodFacts>) -> Result<bool, ContainError> {
        let walk = scopes::walk(&self.cfg.cgroup_root);
        if walk.truncated {
            warn!(root = %self.cfg.cgroup_root.display(), "cgroup hierarchy larger than the containment walk bound; some containers are unknown to the kernel");
        }
        let own = scopes::own_cgroup_id(
            self.cfg.safety.own_cgroup.as_ref(),
            &self.cfg.cgroup_root,
            &walk,
        );
        if own.is_none() && self.cfg.safety.own_cgroup.is_some() {
            tracing::debug!(
                "the agent's cgroup contains the container roots: in the kernel only the agent's own process is protected"
            );
        }
        let scan = Scan::compute(&walk, &pods, &self.cfg.safety, own);
        let mut st = lock(&self.scopes);
        st.root_rels = walk
            .kubepods
            .iter()
            .map(|(_, r)| r.clone())
            .chain(
                walk.attributed
                    .values()
                    .filter(|a| a.container_id.is_some())
                    .map(|a| a.rel.clone()),
            )
            .collect();
        st.attributed = walk.attributed;
        st.pods = pods.into_iter().map(|p| (p.uid.clone(), p)).collect();
        if st.written.as_ref() == Some(&scan) {
            return Ok(false);
        }
        if let Some(k) = &self.kernel {
            let mut k = lock(k);
            // With the pod watch, pods are fail-closed in the kernel until
            // cleared (see `set_pod_gate`); host mode has no pods to clear.
            if self.kube.is_some() {
                k.set_pod_gate(scan.pod_roots.clone(), scan.cleared.clone());
            } else {
                k.set_pod_gate(Vec::new(), Vec::new());
            }
            k.set_cgroup_facts(scan.roots.clone(), scan.protected.keys().copied().collect())?;
        }
        info!(
            container_roots = scan.roots.len(),
            protected = scan.protected.len(),
            "kernel containment scopes updated"
        );
        st.written = Some(scan);
        Ok(true)
    }

    /// Whether the kernel's kill rules cover the cgroup at `rel` (relative
    /// to the v2 root, as events carry it): a container root the kernel
    /// knows is `rel` or one of its ancestors.
    pub fn kernel_covers(&self, rel: &str) -> bool {
        let rel = format!("/{}", rel.trim_start_matches('/'));
        lock(&self.scopes).root_rels.iter().any(|r| {
            rel == *r || (rel.starts_with(r.as_str()) && rel.as_bytes().get(r.len()) == Some(&b'/'))
        })
    }

    /// Container, pod and cgroup of a cgroup id, from the last walk (one
    /// fresh walk on a miss: the cgroup may be newer than the last scan).
    fn attribute(&self, cgroup_id: u64, t: &mut Target) {
        let known = lock(&self.scopes).attributed.contains_key(&cgroup_id);
        if !known {
            let walk = scopes::walk(&self.cfg.cgroup_root);
            lock(&self.scopes).attributed.extend(walk.attributed);
        }
        let st = lock(&self.scopes);
        let Some(a) = st.attributed.get(&cgroup_id) else {
            return;
        };
        t.cgroup = Some(self.cfg.cgroup_root.join(a.rel.trim_start_matches('/')));
        t.container_id = a.container_id.clone();
        t.pod_uid = a.pod_uid.clone();
        if let Some(p) = a.pod_uid.as_ref().and_then(|u| st.pods.get(u)) {
            t.namespace = Some(p.namespace.clone());
            t.pod = Some(p.name.clone());
            t.labels = p.labels.clone();
        }
    }

    /// Why the kernel refused for a task in cgroup `id`: the protection of
    /// the cgroup or of its nearest protected ancestor (by path).
    fn protection_of(&self, id: u64, target: &Target) -> Refusal {
        let st = lock(&self.scopes);
        let Some(scan) = st.written.as_ref() else {
            return Refusal::ProtectedCgroup(id);
        };
        if let Some(r) = scan.protected.get(&id) {
            return r.clone();
        }
        let path = target.cgroup.as_deref();
        let mut best: Option<(usize, &Refusal)> = None;
        for (pid, r) in &scan.protected {
            let anc = match st.attributed.get(pid) {
                Some(a) => self.cfg.cgroup_root.join(a.rel.trim_start_matches('/')),
                None if *r == Refusal::OwnCgroup => match &self.cfg.safety.own_cgroup {
                    Some(p) => p.clone(),
                    None => continue,
                },
                None => continue,
            };
            if path.is_some_and(|p| p.starts_with(&anc)) {
                let depth = anc.components().count();
                if best.is_none_or(|(d, _)| depth > d) {
                    best = Some((depth, r));
                }
            }
        }
        best.map_or(Refusal::ProtectedCgroup(id), |(_, r)| r.clone())
    }

    /// Replaces the container roots and protected cgroups the kernel uses
    /// (tests and non-Kubernetes layouts).
    pub fn set_kernel_cgroups(
        &self,
        container_roots: Vec<u64>,
        protected: Vec<u64>,
    ) -> Result<(), ContainError> {
        let k = self
            .kernel
            .as_ref()
            .ok_or(ContainError::NoKernel(ActionKind::KillProcess))?;
        lock(k).set_cgroup_facts(container_roots, protected)?;
        lock(&self.scopes).written = None;
        Ok(())
    }

    /// Enables the pod actions (isolate, delete) and Events.
    pub fn with_kube(mut self, k: KubeActions) -> Self {
        self.kube = Some(k);
        // The next walk writes the pod gate even if nothing else changed.
        lock(&self.scopes).written = None;
        self
    }

    /// Every record is also sent here (the alert stream / spool).
    pub fn with_audit(mut self, tx: mpsc::Sender<ActionRecord>) -> Self {
        self.audit = Some(tx);
        self
    }

    pub fn config(&self) -> &ContainmentConfig {
        &self.cfg
    }

    /// Installs the in-kernel kill-process rules. The safety layer applies:
    /// global dry-run makes every rule dry-run, and rules scoped `Anywhere`
    /// (host processes included) are refused unless `allow_host`.
    pub fn install_kill_rules(&self, rules: &[KillRuleSpec]) -> Result<(), ContainError> {
        let k = self
            .kernel
            .as_ref()
            .ok_or(ContainError::NoKernel(ActionKind::KillProcess))?;
        let mut rules = rules.to_vec();
        for r in &mut rules {
            if r.scope == KillScope::Anywhere && !self.cfg.safety.allow_host {
                REFUSALS
                    .get_or_create(&RefusalLabels {
                        action: "kill-process",
                        reason: "host",
                    })
                    .inc();
                warn!(rule = %r.id, "kill rule scoped to every process refused: acting on host processes is not allowed");
                return Err(ContainError::Other(format!(
                    "rule {}: {}",
                    r.id,
                    Refusal::Host
                )));
            }
            r.dry_run |= self.cfg.safety.dry_run;
        }
        lock(k).install_kill_rules(&rules)?;
        info!(rules = rules.len(), "in-kernel kill rules installed");
        Ok(())
    }

    /// Executes one action and returns its audit record (also sent to the
    /// audit channel, kept for `ListActions` and posted as an Event).
    pub async fn execute(&self, mut req: ActionRequest) -> ActionRecord {
        let dry_run = self.cfg.safety.dry_run || req.dry_run;
        if let Err(e) = self.resolve_target(&mut req).await {
            return self
                .finish(
                    &req,
                    dry_run,
                    Outcome::Failed,
                    e.to_string(),
                    None,
                    false,
                    false,
                )
                .await;
        }
        let checks = safety::validate(&req)
            .and_then(|()| safety::check_protection(&self.cfg.safety, &req))
            .and_then(|()| {
                lock(&self.limiter).acquire(
                    req.trigger.rule(),
                    req.target.namespace.as_deref(),
                    Instant::now(),
                    dry_run,
                )
            });
        if let Err(r) = checks {
            return self
                .finish(
                    &req,
                    dry_run,
                    Outcome::Refused,
                    r.to_string(),
                    Some(r),
                    false,
                    false,
                )
                .await;
        }
        if dry_run {
            let msg = format!("dry run: would {} {}", req.action, req.target.describe());
            return self
                .finish(&req, dry_run, Outcome::DryRun, msg, None, false, false)
                .await;
        }
        match self.perform(&req).await {
            Ok(msg) => {
                self.finish(&req, dry_run, Outcome::Succeeded, msg, None, false, true)
                    .await
            }
            Err(e) => {
                self.finish(
                    &req,
                    dry_run,
                    Outcome::Failed,
                    e.to_string(),
                    None,
                    false,
                    true,
                )
                .await
            }
        }
    }

    /// Lifts block-egress and isolation on `target` (only `action` when
    /// given). Lifting is never rate limited nor refused for protection.
    pub async fn release(
        &self,
        mut target: Target,
        action: Option<ActionKind>,
        trigger: Trigger,
        reason: String,
        dry_run: bool,
    ) -> Vec<ActionRecord> {
        let dry_run = self.cfg.safety.dry_run || dry_run;
        let mut out = Vec::new();
        let kinds: Vec<ActionKind> = match action {
            Some(a) => vec![a],
            None => vec![ActionKind::BlockEgress, ActionKind::IsolatePod],
        };
        for kind in kinds {
            let mut req = ActionRequest::new(kind, target.clone(), trigger.clone());
            req.reason = reason.clone();
            if let Err(e) = self.resolve_target(&mut req).await {
                // Releasing everything: a kind whose target part cannot be
                // found (no cgroup on this node) has nothing to lift.
                if action.is_some() {
                    out.push(
                        self.finish(
                            &req,
                            dry_run,
                            Outcome::Failed,
                            e.to_string(),
                            None,
                            true,
                            false,
                        )
                        .await,
                    );
                }
                continue;
            }
            target = req.target.clone();
            let rec = match self.lift(&req, dry_run).await {
                Ok(None) => continue, // nothing of this kind to lift
                Ok(Some(msg)) if dry_run => {
                    self.finish(&req, true, Outcome::DryRun, msg, None, true, false)
                        .await
                }
                Ok(Some(msg)) => {
                    self.finish(&req, false, Outcome::Succeeded, msg, None, true, true)
                        .await
                }
                Err(e) => {
                    self.finish(
                        &req,
                        dry_run,
                        Outcome::Failed,
                        e.to_string(),
                        None,
                        true,
                        true,
                    )
                    .await
                }
            };
            out.push(rec);
        }
        out
    }

    /// Reconciles the egress blocks a previous agent left (pins and
    /// records, see [`super::persist`]) with this agent's programs.
    /// Synchronous and quick: call it at start, before any new block; then
    /// hand the result to [`Self::record_reconciled`].
    pub fn reconcile_blocks(&self) -> Vec<Reconciled> {
        let Some(k) = &self.kernel else {
            return Vec::new();
        };
        match lock(k).reconcile() {
            Ok(r) => r,
            Err(e) => {
                LOSSES
                    .get_or_create(&LossLabels {
                        what: "containment_state_read",
                    })
                    .inc();
                tracing::error!(error = %e, "containment state not reconciled: pinned blocks of the previous agent are left as they are (remove them with `picket purge-containment`)");
                Vec::new()
            }
        }
    }

    /// Turns what [`Self::reconcile_blocks`] did into audit records (kept
    /// for `ListActions`, flagged `restored`).
    pub async fn record_reconciled(&self, items: Vec<Reconciled>) -> Vec<ActionRecord> {
        let mut out = Vec::new();
        for item in items {
            let rec = match item {
                Reconciled::Restored { record, id, note } => {
                    let mut req = restored_request(&record);
                    req.target.cgroup = Some(record.path.clone());
                    let msg = format!(
                        "restored after an agent restart: egress of cgroup {} (id {id}) blocked since {}: {:?}; {note}",
                        record.path.display(),
                        record.placed_at,
                        record.scope
                    );
                    self.finish_with(
                        &req,
                        false,
                        Outcome::Succeeded,
                        msg,
                        None,
                        false,
                        false,
                        true,
                    )
                    .await
                }
                Reconciled::Failed { record, error } => {
                    let req = restored_request(&record);
                    let msg = format!(
                        "recorded egress block on cgroup {} could not be put back in force after an agent restart: {error}",
                        record.path.display()
                    );
                    self.finish_with(&req, false, Outcome::Failed, msg, None, false, false, true)
                        .await
                }
                Reconciled::Gone { record } => {
                    let mut req = restored_request(&record);
                    req.trigger = Trigger::Agent;
                    let msg = format!(
                        "recorded egress block on cgroup {} dropped: the cgroup is gone",
                        record.path.display()
                    );
                    self.finish_with(
                        &req,
                        false,
                        Outcome::Succeeded,
                        msg,
                        None,
                        true,
                        false,
                        false,
                    )
                    .await
                }
                Reconciled::Stale { cgroup_id, pins } => {
                    let req = ActionRequest::new(
                        ActionKind::BlockEgress,
                        Target::default(),
                        Trigger::Agent,
                    );
                    let msg = format!(
                        "stale egress block on cgroup id {cgroup_id} lifted: no record of it (pins removed: {})",
                        pins.iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    self.finish_with(
                        &req,
                        false,
                        Outcome::Succeeded,
                        msg,
                        None,
                        true,
                        false,
                        false,
                    )
                    .await
                }
            };
            out.push(rec);
        }
        out
    }

    /// Records the isolations found on this node's pods (the quarantine
    /// label this or an earlier agent placed), so `ListActions` shows them
    /// and `release` knows them after a restart.
    pub async fn restore_isolations(&self, pods: &[PodFacts]) -> Vec<ActionRecord> {
        let mut out = Vec::new();
        for p in pods {
            if p.labels
                .get(super::kube::QUARANTINE_LABEL)
                .map(String::as_str)
                != Some("true")
            {
                continue;
            }
            let key = (p.namespace.clone(), p.name.clone());
            if !lock(&self.isolated).insert(key) {
                continue;
            }
            let target = Target {
                namespace: Some(p.namespace.clone()),
                pod: Some(p.name.clone()),
                pod_uid: Some(p.uid.clone()),
                labels: p.labels.clone(),
                ..Default::default()
            };
            let req = ActionRequest::new(ActionKind::IsolatePod, target, Trigger::Agent);
            let msg = format!(
                "restored after an agent restart: pod {}/{} carries {}=true (isolated)",
                p.namespace,
                p.name,
                super::kube::QUARANTINE_LABEL
            );
            out.push(
                self.finish_with(
                    &req,
                    false,
                    Outcome::Succeeded,
                    msg,
                    None,
                    false,
                    false,
                    true,
                )
                .await,
            );
        }
        out
    }

    /// The most recent records, newest last (at most `limit`).
    pub fn list_actions(&self, limit: usize) -> Vec<ActionRecord> {
        let h = lock(&self.history);
        h.iter()
            .skip(h.len().saturating_sub(limit))
            .cloned()
            .collect()
    }

    /// Turns a kernel kill record into an audit record, with the container
    /// and pod of the killed (or spared) process.
    pub async fn kernel_kill(&self, k: KernelKill) -> ActionRecord {
        let rule = k
            .rule_id
            .clone()
            .unwrap_or_else(|| format!("kernel-rule-{}", k.rule_index));
        let mut target = Target {
            process: Some(super::action::ProcessRef {
                pid: k.pid,
                start_ticks: procs::start_ticks(&self.cfg.proc_root, k.pid).unwrap_or(0),
            }),
            ..Default::default()
        };
        self.attribute(k.cgroup_id, &mut target);
        let mut req = ActionRequest::new(ActionKind::KillProcess, target, Trigger::Kernel { rule });
        req.reason = format!("executable {} ({})", k.executable, k.comm);
        let cgroup = format!("cgroup id {}", k.cgroup_id);
        let mut refusal = None;
        let (outcome, msg, dry) = match k.action {
            enforce_action::KILLED => (
                Outcome::Succeeded,
                format!(
                    "killed pid {} at exec of {} in {cgroup}",
                    k.pid, k.executable
                ),
                false,
            ),
            enforce_action::DENIED => (
                Outcome::Succeeded,
                format!(
                    "{DENIED_EXEC} of {} by pid {} in {cgroup} (BPF LSM: the program never ran, \
                     execve failed with EPERM)",
                    k.executable, k.pid
                ),
                false,
            ),
            enforce_action::DRY_RUN => (
                Outcome::DryRun,
                format!(
                    "dry run: would kill pid {} at exec of {} in {cgroup}",
                    k.pid, k.executable
                ),
                true,
            ),
            enforce_action::REFUSED_UNKNOWN_POD => {
                return self.kill_unknown_pod(k.cgroup_id, req).await;
            }
            enforce_action::REFUSED_PROTECTED => {
                let r = self.protection_of(k.cgroup_id, &req.target);
                let msg = format!(
                    "not killed in the kernel: pid {} at exec of {} in {cgroup}: {r}",
                    k.pid, k.executable
                );
                refusal = Some(r);
                (Outcome::Refused, msg, false)
            }
            _ => (
                Outcome::Failed,
                format!(
                    "bpf_send_signal failed ({}) for pid {} at exec of {}",
                    k.signal_ret, k.pid, k.executable
                ),
                false,
            ),
        };
        let attempted = outcome != Outcome::Refused && !dry;
        self.finish(&req, dry, outcome, msg, refusal, false, attempted)
            .await
    }

    /// The kernel spared a process because its pod was not cleared yet
    /// (fail-closed): wait for the pod watch (up to [`UNKNOWN_POD_WAIT`]),
    /// then decide like the user-space path (protection, rate limits; a
    /// pidfd kill that checks the process start time). A pod that stays
    /// unknown is not killed.
    async fn kill_unknown_pod(&self, cgroup_id: u64, mut req: ActionRequest) -> ActionRecord {
        let deadline = Instant::now() + UNKNOWN_POD_WAIT;
        while req.target.namespace.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
            self.attribute(cgroup_id, &mut req.target);
        }
        if req.target.namespace.is_none() {
            let r = Refusal::PodUnknown(cgroup_id);
            let msg = format!("not killed: {r}");
            return self
                .finish(&req, false, Outcome::Refused, msg, Some(r), false, false)
                .await;
        }
        req.reason = format!(
            "{} (killed from user space: the kernel did not know the pod yet)",
            req.reason
        );
        self.execute(req).await
    }

    /// Reads kernel kill records until the ring's fd fails. Spawn it with the
    /// ring from [`KernelEnforcer::take_records`].
    pub async fn run_kernel_records(
        self: Arc<Self>,
        ring: RingBuf<MapData>,
    ) -> std::io::Result<()> {
        // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd
        // owns the ring, and `as_raw_fd` always returns that fd.
        let mut fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)
        }
        .map_err(std::io::Error::from)?;
        loop {
            let mut guard = fd.readable_mut().await?;
            // Readiness is cleared before draining, not after: a record
            // submitted while we drain wakes us again instead of waiting
            // for the next kill.
            guard.clear_ready();
            let mut kills = Vec::new();
            {
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    let rule_id = |i: u32| {
                        self.kernel
                            .as_ref()
                            .and_then(|k| lock(k).rule_id(i).map(str::to_string))
                    };
                    match decode_record(&item, rule_id) {
                        Some(k) => kills.push(k),
                        None => {
                            LOSSES
                                .get_or_create(&LossLabels {
                                    what: "undecodable_kernel_record",
                                })
                                .inc();
                            warn!(len = item.len(), "undecodable containment record skipped");
                        }
                    }
                }
            }
            drop(guard);
            for k in kills {
                self.kernel_kill(k).await;
            }
        }
    }

    /// Fills in the pod's UID and labels from the API server (for the
    /// protected-label check and conditional deletes) and the cgroup of the
    /// pod from its UID when the action needs one.
    async fn resolve_target(&self, req: &mut ActionRequest) -> Result<(), ContainError> {
        let t = &mut req.target;
        // The pod cache (the watch) first: no API round trip for this
        // node's pods.
        if t.pod_uid.is_none()
            && let Some((ns, pod)) = t.pod_ref()
        {
            let st = lock(&self.scopes);
            if let Some(p) = st
                .pods
                .values()
                .find(|p| p.namespace == ns && p.name == pod)
            {
                t.pod_uid = Some(p.uid.clone());
                t.labels = p.labels.clone();
            }
        }
        let cached = t
            .pod_uid
            .as_ref()
            .is_some_and(|u| lock(&self.scopes).pods.contains_key(u));
        if let (Some(kube), Some((ns, pod))) = (&self.kube, t.pod_ref())
            && !cached
            && (t.pod_uid.is_none() || t.labels.is_empty())
        {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            match kube.pod_info(&ns, &pod).await? {
                Some((uid, labels)) => {
                    if t.pod_uid.as_ref().is_some_and(|u| *u != uid) {
                        return Err(ContainError::PodNotFound(format!(
                            "{ns}/{pod} with uid {}",
                            t.pod_uid.as_deref().unwrap_or("")
                        )));
                    }
                    t.pod_uid = Some(uid);
                    t.labels = labels;
                }
                None => return Err(ContainError::PodNotFound(format!("{ns}/{pod}"))),
            }
        }
        let needs_cgroup = matches!(
            req.action,
            ActionKind::BlockEgress | ActionKind::KillContainer
        );
        if needs_cgroup
            && t.cgroup.is_none()
            && let Some(uid) = &t.pod_uid
        {
            t.cgroup = cgroups::find_pod_cgroup(&self.cfg.cgroup_root, uid);
            if t.cgroup.is_none() {
                return Err(ContainError::Other(format!(
                    "pod uid {uid} has no cgroup on this node"
                )));
            }
        }
        Ok(())
    }

    async fn perform(&self, req: &ActionRequest) -> Result<String, ContainError> {
        let t = &req.target;
        match req.action {
            ActionKind::KillProcess => {
                let p = t
                    .process
                    .as_ref()
                    .ok_or_else(|| ContainError::Other("no process".into()))?;
                procs::kill_process(&self.cfg.proc_root, p)?;
                Ok(format!("killed pid {} (SIGKILL through a pidfd)", p.pid))
            }
            ActionKind::KillContainer => {
                let cg = t
                    .cgroup
                    .clone()
                    .ok_or_else(|| ContainError::Other("no cgroup".into()))?;
                let wait = self.cfg.kill_wait;
                let cg2 = cg.clone();
                let (method, n) =
                    tokio::task::spawn_blocking(move || procs::kill_cgroup(&cg2, wait))
                        .await
                        .map_err(|e| ContainError::Other(format!("kill task: {e}")))??;
                Ok(format!(
                    "killed {n} processes of cgroup {} ({method:?})",
                    cg.display()
                ))
            }
            ActionKind::BlockEgress => {
                let k = self
                    .kernel
                    .as_ref()
                    .ok_or(ContainError::NoKernel(req.action))?;
                let cg = t
                    .cgroup
                    .as_ref()
                    .ok_or_else(|| ContainError::Other("no cgroup".into()))?;
                let id = lock(k).block_egress_for(cg, &req.egress, Some(req))?;
                Ok(format!(
                    "egress of cgroup {} (id {id}) blocked: {:?}",
                    cg.display(),
                    req.egress
                ))
            }
            ActionKind::IsolatePod => {
                let kube = self.kube.as_ref().ok_or(ContainError::NoKube(req.action))?;
                let (ns, pod) = t
                    .pod_ref()
                    .ok_or_else(|| ContainError::Other("no pod".into()))?;
                let created = kube.isolate(ns, pod).await?;
                lock(&self.isolated).insert((ns.to_string(), pod.to_string()));
                Ok(format!(
                    "pod {ns}/{pod} labeled {}=true; NetworkPolicy {} {}",
                    super::kube::QUARANTINE_LABEL,
                    super::kube::QUARANTINE_POLICY,
                    if created {
                        "created"
                    } else {
                        "already present"
                    }
                ))
            }
            ActionKind::DeletePod => {
                let kube = self.kube.as_ref().ok_or(ContainError::NoKube(req.action))?;
                let (ns, pod) = t
                    .pod_ref()
                    .ok_or_else(|| ContainError::Other("no pod".into()))?;
                let grace = req
                    .grace_period_seconds
                    .unwrap_or(self.cfg.delete_grace_period_seconds);
                kube.delete(ns, pod, t.pod_uid.as_deref(), grace).await?;
                Ok(format!("pod {ns}/{pod} deleted (grace period {grace}s)"))
            }
        }
    }

    /// Lifts one releasable action; `Ok(None)` when there was nothing to lift.
    async fn lift(
        &self,
        req: &ActionRequest,
        dry_run: bool,
    ) -> Result<Option<String>, ContainError> {
        let t = &req.target;
        match req.action {
            ActionKind::BlockEgress => {
                let (Some(k), Some(cg)) = (self.kernel.as_ref(), t.cgroup.as_ref()) else {
                    return Ok(None);
                };
                // Every block on the pod, whoever placed it: a responder's
                // on the pod cgroup, a rule's on one container's cgroup
                // below it.
                let mut k = lock(k);
                let found: Vec<(u64, PathBuf)> = k
                    .egress_blocks()
                    .filter(|(_, b)| b.path.starts_with(cg))
                    .map(|(id, b)| (id, b.path.clone()))
                    .collect();
                if found.is_empty() {
                    return Ok(None);
                }
                if !dry_run {
                    for (id, _) in &found {
                        k.release_egress(*id)?;
                    }
                }
                let paths: Vec<String> =
                    found.iter().map(|(_, p)| p.display().to_string()).collect();
                Ok(Some(format!(
                    "egress block{} lifted: {}",
                    if found.len() == 1 { "" } else { "s" },
                    paths.join(", ")
                )))
            }
            ActionKind::IsolatePod => {
                let (Some(kube), Some((ns, pod))) = (self.kube.as_ref(), t.pod_ref()) else {
                    return Ok(None);
                };
                let key = (ns.to_string(), pod.to_string());
                let known = lock(&self.isolated).contains(&key)
                    || t.labels
                        .get(super::kube::QUARANTINE_LABEL)
                        .is_some_and(|v| v == "true");
                if !known {
                    return Ok(None);
                }
                if !dry_run {
                    kube.unisolate(ns, pod).await?;
                    lock(&self.isolated).remove(&key);
                }
                Ok(Some(format!(
                    "pod {ns}/{pod}: label {} removed",
                    super::kube::QUARANTINE_LABEL
                )))
            }
            other => Err(ContainError::Other(format!("{other} cannot be released"))),
        }
    }

    /// Builds, counts, logs, keeps and sends the record; posts the Event.
    /// `attempted`: the action was tried (an Event is posted for its
    /// success or failure); false for refusals, dry-runs and targets that
    /// could not be resolved.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        req: &ActionRequest,
        dry_run: bool,
        outcome: Outcome,
        message: String,
        refusal: Option<Refusal>,
        release: bool,
        attempted: bool,
    ) -> ActionRecord {
        self.finish_with(
            req, dry_run, outcome, message, refusal, release, attempted, false,
        )
        .await
    }

    /// [`Self::finish`]; `restored` marks the record of an earlier agent's
    /// action kept in force by this one.
    #[allow(clippy::too_many_arguments)]
    async fn finish_with(
        &self,
        req: &ActionRequest,
        dry_run: bool,
        outcome: Outcome,
        message: String,
        refusal: Option<Refusal>,
        release: bool,
        attempted: bool,
        restored: bool,
    ) -> ActionRecord {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let rec = ActionRecord {
            id: format!("{}:{}:{n}", self.cfg.node_name, std::process::id()),
            time: jiff::Timestamp::now(),
            action: req.action,
            target: req.target.clone(),
            triggered_by: req.trigger.clone(),
            reason: req.reason.clone(),
            dry_run,
            outcome,
            message,
            refusal: refusal.as_ref().map(|r| r.label().to_string()),
            release,
            restored,
        };
        ACTIONS
            .get_or_create(&ActionLabels {
                action: req.action.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
        if let Some(r) = &refusal {
            REFUSALS
                .get_or_create(&RefusalLabels {
                    action: req.action.as_str(),
                    reason: r.label(),
                })
                .inc();
        }
        let (action, target, by) = (
            req.action.as_str(),
            req.target.describe(),
            req.trigger.describe(),
        );
        match outcome {
            Outcome::Succeeded | Outcome::DryRun => {
                info!(id = %rec.id, action, target, triggered_by = by, outcome = outcome.as_str(), release, restored, message = %rec.message, "containment action")
            }
            Outcome::Refused | Outcome::Failed => {
                warn!(id = %rec.id, action, target, triggered_by = by, outcome = outcome.as_str(), release, restored, message = %rec.message, "containment action not done")
            }
        }
        // A Kubernetes Event is a write: none for dry-runs and refusals.
        if attempted
            && matches!(outcome, Outcome::Succeeded | Outcome::Failed)
            && let (Some(kube), Some((ns, pod))) = (&self.kube, req.target.pod_ref())
        {
            let verb = if release {
                format!("release-{action}")
            } else {
                action.to_string()
            };
            let msg = format!(
                "{} by {}: {}{}",
                outcome.as_str(),
                by,
                rec.message,
                if rec.reason.is_empty() {
                    String::new()
                } else {
                    format!(" (reason: {})", rec.reason)
                }
            );
            if let Err(e) = kube
                .event(
                    ns,
                    pod,
                    req.target.pod_uid.as_deref(),
                    !release,
                    &verb,
                    &msg,
                )
                .await
            {
                LOSSES
                    .get_or_create(&LossLabels {
                        what: "kubernetes_event",
                    })
                    .inc();
                warn!(error = %e, id = %rec.id, "posting the containment Event failed");
            }
        }
        {
            let mut h = lock(&self.history);
            h.push_back(rec.clone());
            while h.len() > self.cfg.history.max(1) {
                h.pop_front();
            }
        }
        if let Some(tx) = &self.audit
            && let Err(e) = tx.try_send(rec.clone())
        {
            LOSSES
                .get_or_create(&LossLabels {
                    what: "audit_record",
                })
                .inc();
            warn!(error = %e, id = %rec.id, "containment audit record not delivered to the alert stream");
        }
        rec
    }
}

/// How the message of a kernel record of a denied exec (BPF LSM) starts.
pub const DENIED_EXEC: &str = "denied exec";
