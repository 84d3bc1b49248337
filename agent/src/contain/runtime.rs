//! Containment inside `picket run`: the engine over the loaded programs,
//! the in-kernel kill rules kept in step with the rule set, rule actions
//! carried out when their alerts fire, and every audit record turned into
//! an alert for the spool and the output.

use std::{
    collections::{BTreeSet, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{info, warn};

use crate::{
    agent::Agent,
    k8s::K8sEnricher,
    model::{Alert, Event},
    rules::Engine,
};

use super::{
    action::{ActionRecord, Trigger},
    audit,
    config::ContainmentFileConfig,
    engine::Containment,
    kernel::KernelEnforcer,
    kube::KubeActions,
    persist::Store,
    rules::{plan_kernel_kills, requests_for},
    scopes::PodFacts,
};

/// How often the cgroup hierarchy is walked for new containers and pod
/// cgroups (pod-cache changes trigger a walk at once as well). New
/// containers reach the kernel's scope within this period; until then an
/// in-kernel rule's alert falls back to a user-space kill (see `on_alert`).
const RESCAN: Duration = Duration::from_millis(500);
/// How long a kernel kill record waits for the alert of the same exec, to
/// carry its process, container and pod context.
const CONTEXT_WAIT: Duration = Duration::from_secs(3);
/// Alerts of in-kernel rules kept for that correlation.
const RECENT_ALERTS: usize = 512;

type Recent = Arc<Mutex<VecDeque<(u32, String, Event)>>>;

fn pod_facts(k8s: &K8sEnricher) -> Vec<PodFacts> {
    k8s.live_pods()
        .iter()
        .map(|p| PodFacts {
            uid: p.uid.clone(),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            labels: p.labels.clone(),
        })
        .collect()
}

/// Keeps the kernel's container roots and protected cgroups in step with
/// the hierarchy and the pod cache.
async fn sync_scopes(engine: Arc<Containment>, k8s: Arc<K8sEnricher>) {
    let mut updates = k8s.subscribe();
    loop {
        let (e, pods) = (engine.clone(), pod_facts(&k8s));
        match tokio::task::spawn_blocking(move || e.sync_scopes(pods)).await {
            Ok(Err(err)) => warn!(error = %err, "kernel containment scopes not updated"),
            Err(err) => warn!(error = %err, "kernel containment scope walk failed"),
            Ok(Ok(_)) => {}
        }
        match &mut updates {
            Some(rx) => {
                tokio::select! {
                    r = rx.changed() => if r.is_err() { updates = None },
                    () = tokio::time::sleep(RESCAN) => {}
                }
            }
            None => tokio::time::sleep(RESCAN).await,
        }
    }
}

/// The event of the alert that made the kernel act on `pid` (rule `rule`),
/// waiting up to [`CONTEXT_WAIT`] for it.
async fn alert_context(recent: &Recent, pid: u32, rule: &str) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + CONTEXT_WAIT;
    loop {
        let hit = recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .find(|(p, r, _)| *p == pid && r == rule)
            .map(|(_, _, e)| e.clone());
        if hit.is_some() || tokio::time::Instant::now() >= deadline {
            return hit;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Audit alerts waiting for the output (beyond it, records are counted
/// as lost by the engine's audit channel).
const AUDIT_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    #[error("in-kernel containment: {0}")]
    Kernel(#[from] super::engine::ContainError),
}

/// Containment as `picket run` drives it.
pub struct RunContainment {
    engine: Arc<Containment>,
    /// Rules whose `kill-process` the kernel carries out.
    in_kernel: Arc<RwLock<BTreeSet<String>>>,
    alerts_tx: mpsc::Sender<Alert>,
    host_name: String,
    cgroup_root: PathBuf,
    /// Alerts of in-kernel rules, for the context of kernel kill records.
    recent: Recent,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RunContainment {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Installs the kernel form of the current rules' kill-process actions.
fn install(engine: &Containment, rules: &Engine, in_kernel: &RwLock<BTreeSet<String>>) {
    let plan = plan_kernel_kills(&rules.rules(), engine.config().safety.allow_host);
    for (rule, why) in &plan.user_space {
        info!(rule = %rule, reason = %why, "kill-process runs from user space (after the alert) for this rule");
    }
    let ids = match engine.install_kill_rules(&plan.specs) {
        Ok(()) => plan.in_kernel,
        Err(e) => {
            warn!(error = %e, "in-kernel kill rules not installed; every kill-process rule kills from user space after its alert");
            BTreeSet::new()
        }
    };
    *in_kernel.write().unwrap_or_else(|p| p.into_inner()) = ids;
}

impl RunContainment {
    /// Starts containment over `agent`'s programs. A missing kernel piece
    /// (containment maps, BTF) disables only the kernel actions, with a
    /// warning; without `kube` the pod actions are refused with a reason.
    /// Returns the engine and the stream of audit alerts.
    pub fn start(
        file: &ContainmentFileConfig,
        node_name: &str,
        agent: &mut Agent,
        k8s: Arc<K8sEnricher>,
        rules: Arc<Engine>,
        btf_path: &std::path::Path,
    ) -> Result<(Self, mpsc::Receiver<Alert>), StartError> {
        let kube = k8s.client();
        let cfg = file.engine_config(node_name)?;
        let cgroup_root = cfg.cgroup_root.clone();
        let (audit_tx, mut audit_rx) = mpsc::channel::<ActionRecord>(AUDIT_QUEUE);
        let (alerts_tx, alerts_rx) = mpsc::channel(AUDIT_QUEUE);
        let mut engine = Containment::new(cfg);
        let mut records = None;
        let btf = crate::btf::Btf::from_file(btf_path)
            .map_err(|e| warn!(error = %e, "kernel BTF unreadable: in-kernel argv kill conditions are disabled"))
            .ok();
        match KernelEnforcer::take(agent.sensor_mut().ebpf_mut(), btf.as_ref()) {
            Ok(mut k) => {
                records = k.take_records();
                // Blocks outlive the agent (pinned and recorded); without
                // the store they end with it, which is said loudly.
                match Store::open(file.persist()) {
                    Ok(store) => k.set_store(store),
                    Err(e) => tracing::error!(
                        error = %e,
                        "containment state cannot be persisted: egress blocks will be lifted when this agent stops"
                    ),
                }
                engine = engine.with_kernel(k)?;
            }
            Err(e) => warn!(
                error = %e,
                "in-kernel containment unavailable: kill-process runs from user space only, block-egress is refused"
            ),
        }
        if let Some(client) = kube {
            engine = engine.with_kube(KubeActions::new(client, node_name));
        } else {
            info!("no Kubernetes API: isolate-pod and delete-pod are refused");
        }
        let engine = Arc::new(engine.with_audit(audit_tx));
        // Before any new block (and before the agent reports ready): blocks
        // of the previous agent move to this one with no window.
        let reconciled = engine.reconcile_blocks();
        let in_kernel = Arc::new(RwLock::new(BTreeSet::new()));
        let mut tasks = Vec::new();
        {
            let (e, pods) = (engine.clone(), k8s.clone());
            tasks.push(tokio::spawn(async move {
                e.record_reconciled(reconciled).await;
                // Isolations live in the API server: re-read them from the
                // pod cache once it has its first full list.
                if pods.enabled() {
                    while !pods.wait_synced(Duration::from_secs(30)).await {}
                    e.restore_isolations(&pod_facts(&pods)).await;
                }
            }));
        }
        if let Some(ring) = records {
            let e = engine.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(err) = e.run_kernel_records(ring).await {
                    warn!(error = %err, "kernel containment records reader stopped");
                }
            }));
            tasks.push(tokio::spawn(sync_scopes(engine.clone(), k8s.clone())));
            // Host mode: no pods to wait for; the rules are in the kernel
            // before `start` returns (before the agent reports ready).
            if !k8s.enabled() {
                install(&engine, &rules, &in_kernel);
            }
            let (e, r, k, pods) = (
                engine.clone(),
                rules.clone(),
                in_kernel.clone(),
                k8s.clone(),
            );
            let mut changes = rules.subscribe();
            tasks.push(tokio::spawn(async move {
                // Protected pods must be known to the kernel before any
                // kill rule can fire there: until the pod cache has its
                // first full list, kill-process runs from user space
                // (which checks protection per alert).
                if pods.enabled() {
                    while !pods.wait_synced(Duration::from_secs(30)).await {
                        warn!("pod cache not synced: in-kernel kill rules wait (kill-process runs from user space)");
                    }
                    let (e2, facts) = (e.clone(), pod_facts(&pods));
                    if let Ok(Err(err)) =
                        tokio::task::spawn_blocking(move || e2.sync_scopes(facts)).await
                    {
                        warn!(error = %err, "kernel containment scopes not updated");
                    }
                    install(&e, &r, &k);
                }
                while changes.changed().await.is_ok() {
                    install(&e, &r, &k);
                }
            }));
        }
        // Records of rule-triggered actions are emitted with their alert's
        // event by `on_alert`; the others (kernel kills, responders) here.
        let host_name = node_name.to_string();
        let recent: Recent = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, host, rc) = (alerts_tx.clone(), host_name.clone(), recent.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(rec) = audit_rx.recv().await {
                match &rec.triggered_by {
                    // Restored records have no alert of this agent.
                    Trigger::Rule { .. } if !rec.restored => continue,
                    // A kernel record carries the context of the alert of
                    // the same exec (which may still be on its way).
                    Trigger::Kernel { rule } => {
                        let (tx, host, rc, rule) =
                            (tx.clone(), host.clone(), rc.clone(), rule.clone());
                        tokio::spawn(async move {
                            let pid = rec.target.process.as_ref().map_or(0, |p| p.pid);
                            // A denied exec has no exec event, so no alert
                            // to wait for: its record is the alert.
                            let ctx = if rec.message.starts_with(super::engine::DENIED_EXEC) {
                                None
                            } else {
                                alert_context(&rc, pid, &rule).await
                            };
                            let _ = tx.send(audit::to_alert(&rec, &host, ctx.as_ref())).await;
                        });
                    }
                    Trigger::Client { .. } | Trigger::Agent | Trigger::Rule { .. } => {
                        if tx.send(audit::to_alert(&rec, &host, None)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }));
        info!(
            dry_run = engine.config().safety.dry_run,
            allow_host = engine.config().safety.allow_host,
            "containment enabled"
        );
        Ok((
            Self {
                engine,
                in_kernel,
                alerts_tx,
                host_name,
                cgroup_root,
                recent,
                tasks,
            },
            alerts_rx,
        ))
    }

    /// The engine (for the gRPC `ContainmentService`).
    pub fn engine(&self) -> Arc<Containment> {
        self.engine.clone()
    }

    /// Carries out the actions of `alert`'s rule in the background (the
    /// event loop never waits for the API server or a cgroup to drain).
    pub fn on_alert(&self, alert: &Alert, rules: &Engine) {
        let set = rules.rules();
        let Some(rule) = set.get(&alert.rule.id) else {
            return;
        };
        let mut in_kernel = self
            .in_kernel
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&alert.rule.id);
        let mut fallback = None;
        if in_kernel {
            let cg = &alert.event.process.linux.cgroup;
            if alert.event.container.is_some() && !self.engine.kernel_covers(cg) {
                // A container newer than the last walk: the kernel did not
                // know it was one, so the kill happens here, and says why.
                in_kernel = false;
                fallback = Some(format!(
                    "killed from user space: the kernel did not know cgroup {cg} as a container yet"
                ));
            } else {
                let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                if r.len() >= RECENT_ALERTS {
                    r.pop_front();
                }
                r.push_back((
                    alert.event.process.pid,
                    alert.rule.id.clone(),
                    alert.event.clone(),
                ));
            }
        }
        let mut reqs = requests_for(alert, &rule.actions, in_kernel, &self.cgroup_root);
        if let Some(why) = fallback {
            for r in &mut reqs {
                if r.action == super::action::ActionKind::KillProcess {
                    r.reason = format!("{} ({why})", r.reason);
                }
            }
        }
        if reqs.is_empty() {
            return;
        }
        let engine = self.engine.clone();
        let tx = self.alerts_tx.clone();
        let host = self.host_name.clone();
        let event: Event = alert.event.clone();
        tokio::spawn(async move {
            for req in reqs {
                let rec = engine.execute(req).await;
                if tx
                    .send(audit::to_alert(&rec, &host, Some(&event)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}
