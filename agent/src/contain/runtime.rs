//! Containment inside `picket run`: the engine over the loaded programs,
//! the in-kernel kill rules kept in step with the rule set, rule actions
//! carried out when their alerts fire, and every audit record turned into
//! an alert for the spool and the output.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Arc, RwLock},
};

use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{info, warn};

use crate::{
    agent::Agent,
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
    rules::{plan_kernel_kills, requests_for},
};

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
        kube: Option<kube::Client>,
        rules: Arc<Engine>,
    ) -> Result<(Self, mpsc::Receiver<Alert>), StartError> {
        let cfg = file.engine_config(node_name)?;
        let cgroup_root = cfg.cgroup_root.clone();
        let (audit_tx, mut audit_rx) = mpsc::channel::<ActionRecord>(AUDIT_QUEUE);
        let (alerts_tx, alerts_rx) = mpsc::channel(AUDIT_QUEUE);
        let mut engine = Containment::new(cfg);
        let mut records = None;
        let btf = crate::btf::Btf::from_file("/sys/kernel/btf/vmlinux")
            .map_err(|e| warn!(error = %e, "kernel BTF unreadable: in-kernel argv kill conditions are disabled"))
            .ok();
        match KernelEnforcer::take(agent.sensor_mut().ebpf_mut(), btf.as_ref()) {
            Ok(mut k) => {
                records = k.take_records();
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
        let in_kernel = Arc::new(RwLock::new(BTreeSet::new()));
        let mut tasks = Vec::new();
        if let Some(ring) = records {
            let e = engine.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(err) = e.run_kernel_records(ring).await {
                    warn!(error = %err, "kernel containment records reader stopped");
                }
            }));
            install(&engine, &rules, &in_kernel);
            let (e, r, k) = (engine.clone(), rules.clone(), in_kernel.clone());
            let mut changes = rules.subscribe();
            tasks.push(tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    install(&e, &r, &k);
                }
            }));
        }
        // Records of rule-triggered actions are emitted with their alert's
        // event by `on_alert`; the others (kernel kills, responders) here.
        let host_name = node_name.to_string();
        let (tx, host) = (alerts_tx.clone(), host_name.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(rec) = audit_rx.recv().await {
                if matches!(rec.triggered_by, Trigger::Rule { .. }) {
                    continue;
                }
                if tx.send(audit::to_alert(&rec, &host, None)).await.is_err() {
                    return;
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
        let in_kernel = self
            .in_kernel
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&alert.rule.id);
        let reqs = requests_for(alert, &rule.actions, in_kernel, &self.cgroup_root);
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
