//! `picket run`.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use tracing::{error, info, warn};

use crate::{
    agent::{Agent, AgentConfig, CgroupScope},
    output::{Format, Printer},
    pipeline::PipelineConfig,
    sensor::SensorConfig,
};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Print every enriched event, not only alerts.
    #[arg(long)]
    pub events: bool,
    /// Rule files or directories (default: ./rules).
    #[arg(long = "rules", value_name = "PATH")]
    pub rules: Vec<PathBuf>,
    /// Falco rules Picket cannot evaluate faithfully: `disable` them (default)
    /// or run them in `shadow` mode (counted, never alerted).
    #[arg(long, value_enum, default_value = "disable")]
    pub falco_unsupported: crate::rules::falco::Unsupported,
    /// Output format.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: Format,
    /// Ring buffer size in bytes (power of two, at least 4096).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub ring_buffer_bytes: u32,
    /// Ring-buffer wake-up batching in microseconds: the kernel wakes the
    /// agent at most once per interval and the agent re-reads the ring one
    /// interval after each read, so a record waits about this long at most.
    /// 0 wakes the agent for every record (lowest latency, and on virtual
    /// machines several µs of kernel time per event).
    #[arg(long, default_value_t = 1000, value_name = "MICROSECONDS")]
    pub ring_wakeup_us: u64,
    /// Node name (exec ids, `host.name`, pod watch). Defaults to the host name.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Ancestors listed in `process.ancestors`.
    #[arg(long, default_value_t = 5)]
    pub max_ancestors: usize,
    /// Seconds between reads of the kernel loss counters.
    #[arg(long, default_value_t = 1)]
    pub loss_interval_secs: u64,
    /// Only trace tasks in exactly these cgroup v2 directories (repeatable).
    /// The kernel compares the task's own cgroup id: tasks in a child cgroup
    /// (a pod's containers below the pod cgroup) are not included; list each
    /// container cgroup.
    #[arg(long = "only-cgroup", value_name = "DIR")]
    pub only_cgroup: Vec<PathBuf>,
    /// Do not trace tasks in exactly these cgroup v2 directories (repeatable),
    /// e.g. the agent's own container cgroup on a node. Child cgroups are not
    /// excluded with their parent.
    #[arg(
        long = "exclude-cgroup",
        value_name = "DIR",
        conflicts_with = "only_cgroup"
    )]
    pub exclude_cgroup: Vec<PathBuf>,
    /// Keep running when a core program (the process tree: exec, fork, exit)
    /// cannot load. Without it `picket run` exits non-zero, because an agent
    /// that cannot see program starts looks healthy while it is blind.
    /// `/readyz` stays false while a core program is missing.
    #[arg(long)]
    pub allow_degraded: bool,
    /// Kernel BTF the struct offsets of the programs are resolved from.
    /// The running kernel's own (`/sys/kernel/btf/vmlinux`) unless the kernel
    /// does not expose it, then a BTF file made for exactly this kernel
    /// (e.g. from BTFHub). A program whose fields the BTF lacks is not loaded
    /// and `doctor`/the log name the fields (docs/kernels.md).
    #[arg(long, value_name = "FILE", default_value = crate::sensor::offsets::VMLINUX_BTF)]
    pub btf: PathBuf,
    /// Write this file once the programs are attached (for supervisors and tests).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Where the learned egress baseline is kept across restarts.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    #[command(flatten)]
    pub k8s: crate::k8s::K8sArgs,
    /// Configuration file (YAML or JSON): `delivery` (spool, gRPC API, OTLP
    /// export, metrics endpoint; docs/delivery.md) and `containment`.
    /// Without it alerts go to stdout only.
    #[arg(long, value_name = "FILE", env = "PICKET_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Loads the rules named on the command line (default `./rules`).
fn load_rules(args: &RunArgs) -> Result<(Arc<crate::rules::Engine>, Vec<PathBuf>), String> {
    let paths = if args.rules.is_empty() {
        vec![PathBuf::from("rules")]
    } else {
        args.rules.clone()
    };
    crate::rules::falco::set_unsupported_mode(args.falco_unsupported);
    let set =
        crate::rules::RuleSet::load(&paths).map_err(|d| crate::rules::diagnostics::render(&d))?;
    if !set.falco_report().is_empty() {
        for line in crate::rules::cli::falco_summary(set.falco_report()).lines() {
            info!("{line}");
        }
    }
    let opts = crate::rules::EngineOptions {
        baseline_path: args.baseline.clone(),
        ..Default::default()
    };
    let engine = crate::rules::Engine::with_options(set, opts).map_err(|e| e.to_string())?;
    Ok((Arc::new(engine), paths))
}

async fn start_delivery(
    cfg: crate::delivery::DeliveryConfig,
    hooks: crate::delivery::DeliveryHooks,
) -> Result<crate::delivery::Delivery, String> {
    crate::delivery::Delivery::start(cfg, hooks)
        .await
        .map_err(|e| e.to_string())
}

/// Spools (when delivery is configured) and prints one alert. `Err` when
/// stdout is closed.
async fn emit(
    alert: crate::model::Alert,
    delivery: Option<&crate::delivery::Delivery>,
    out: Option<&mut Printer<std::io::Stdout>>,
) -> Result<crate::model::Alert, ()> {
    let alert = match delivery {
        Some(d) => {
            let mut a = alert.clone();
            match d.publish(alert).await {
                Ok(seq) => a.seq = seq,
                Err(e) => error!(error = %e, rule = %a.rule.id, "alert not spooled"),
            }
            a
        }
        None => alert,
    };
    if let Some(out) = out {
        out.alert(&alert).map_err(|_| ())?;
    }
    Ok(alert)
}

/// The agent's one node name: `--node-name` / `$NODE_NAME`, else the
/// file's `delivery.node_name`, else `hostname`.
fn node_name(args: &RunArgs, file: &crate::config::FileConfig, hostname: &str) -> String {
    crate::node::resolve_node_name(
        args.node_name.as_deref(),
        file.delivery.as_ref().and_then(|d| d.node_name.as_deref()),
        hostname,
    )
}

/// The delivery settings with the agent's one node name (`k8s.node.name`
/// in OTLP resources and gRPC answers).
fn with_node_name(
    mut cfg: crate::delivery::DeliveryConfig,
    node_name: &str,
) -> crate::delivery::DeliveryConfig {
    cfg.node_name = Some(node_name.to_string());
    cfg
}

/// stdout was closed: the agent stops.
struct StdoutClosed;

/// Everything after enrichment: output, rules, delivery and actions, for
/// one event or alert at a time.
struct Downstream {
    /// Print every event (`--events`), not only alerts.
    print_events: bool,
    out: Printer<std::io::Stdout>,
    engine: Arc<crate::rules::Engine>,
    delivery: Option<crate::delivery::Delivery>,
    containment: Option<crate::contain::runtime::RunContainment>,
    /// The spool's JSON-lines sink prints alerts on stdout already.
    sink_prints_alerts: bool,
}

impl Downstream {
    /// Prints (when asked), matches the rules, emits the alerts, runs the
    /// containment actions and streams the event.
    async fn event(&mut self, ev: &crate::model::Event) -> Result<(), StdoutClosed> {
        let always = ev.kind() == crate::model::EventKindName::EventsLost;
        if (self.print_events || always) && self.out.event(ev).is_err() {
            return Err(StdoutClosed);
        }
        for alert in self.engine.evaluate(ev) {
            let printer = (!self.sink_prints_alerts).then_some(&mut self.out);
            let alert = emit(alert, self.delivery.as_ref(), printer)
                .await
                .map_err(|()| StdoutClosed)?;
            if let Some(c) = &self.containment {
                c.on_alert(&alert, &self.engine);
            }
        }
        if let Some(d) = &self.delivery {
            d.publish_event(ev);
        }
        Ok(())
    }

    /// An alert raised outside the rules (containment's audit).
    async fn alert(&mut self, a: crate::model::Alert) -> Result<(), StdoutClosed> {
        let printer = (!self.sink_prints_alerts).then_some(&mut self.out);
        emit(a, self.delivery.as_ref(), printer)
            .await
            .map(drop)
            .map_err(|()| StdoutClosed)
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

impl RunArgs {
    /// `node_name`: resolved once ([`crate::node::resolve_node_name`]).
    fn agent_config(&self, node_name: &str) -> AgentConfig {
        let pipeline = PipelineConfig {
            node_name: node_name.to_string(),
            max_ancestors: self.max_ancestors,
            ..Default::default()
        };
        AgentConfig {
            sensor: SensorConfig {
                ring_buffer_bytes: self.ring_buffer_bytes,
                ring_wakeup_interval: Duration::from_micros(self.ring_wakeup_us),
                btf_path: self.btf.clone(),
                ..Default::default()
            },
            pipeline,
            loss_interval: Duration::from_secs(self.loss_interval_secs.max(1)),
            cgroups: if !self.only_cgroup.is_empty() {
                CgroupScope::Only(self.only_cgroup.clone())
            } else if !self.exclude_cgroup.is_empty() {
                CgroupScope::Exclude(self.exclude_cgroup.clone())
            } else {
                CgroupScope::All
            },
            ..Default::default()
        }
    }
}

pub fn main(args: RunArgs) -> ExitCode {
    match crate::delivery::limits::raise_nofile() {
        Ok((old, new)) => info!(
            old,
            new, "RLIMIT_NOFILE soft limit raised to the hard limit"
        ),
        Err(e) => warn!(error = %e, "cannot raise RLIMIT_NOFILE"),
    }
    // One thread for the event path: the ring reader, the event loop and
    // the delivery tasks share it, so a batch of records is handed over
    // without waking another thread (with two workers, ~30% of the agent's
    // CPU went to parking and waking threads; docs/benchmarks.md). Blocking
    // work (spool fsync, file reads) runs on tokio's blocking pool.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(args))
}

async fn run(args: RunArgs) -> ExitCode {
    // Rules first: a rule error is reported before anything is loaded.
    let (engine, rule_paths) = match load_rules(&args) {
        Ok(x) => x,
        Err(e) => {
            error!("the rules do not compile:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    info!(rules = engine.rules().rules().len(), "rules loaded");
    let mut watcher = crate::rules::RuleWatcher::new(engine.clone(), rule_paths);
    if let Err(e) = watcher.watch(Duration::from_millis(500)) {
        warn!(error = %e, "rule files are not watched; reload with SIGHUP");
    }
    tokio::spawn(watcher.handle().run_sighup());
    let file = match &args.config {
        Some(p) => match crate::config::load(p) {
            Ok(c) => c,
            Err(e) => {
                error!("configuration: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => crate::config::FileConfig::default(),
    };
    let contain_cfg = match &file.containment {
        Some(v) => match crate::contain::ContainmentFileConfig::from_value(v) {
            Ok(c) => c,
            Err(e) => {
                error!("configuration: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => crate::contain::ContainmentFileConfig::default(),
    };
    let runtime_apis = crate::container::runtime_api::RuntimeApis::start(file.runtimes.clone());
    // One node name for exec ids, events, the pod watch, OTLP and gRPC.
    let node_name = node_name(&args, &file, &crate::node::hostname());
    info!(node = %node_name, "node name");
    let cfg = args.agent_config(&node_name);
    let k8s = match crate::k8s::K8sEnricher::start(args.k8s.to_config(&node_name)).await {
        Ok(k) => std::sync::Arc::new(k),
        Err(e) => {
            error!(error = %e, "Kubernetes enrichment cannot start");
            return ExitCode::FAILURE;
        }
    };
    let mut agent = match Agent::start(cfg).await {
        Ok(a) => a,
        Err(e) => {
            error!("{}", crate::sensor::loader::error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let core_missing = agent.sensor().core_missing();
    if !core_missing.is_empty() {
        let detail = core_missing
            .iter()
            .map(|(p, why)| format!("{p}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        if args.allow_degraded {
            warn!(missing = %detail, "core programs missing: running degraded (--allow-degraded); /readyz stays false");
        } else {
            error!(
                "core programs (process tree) could not load, so program starts would not be seen: {detail}. \
                 Run `picket doctor` for details, or pass --allow-degraded to run anyway"
            );
            return ExitCode::FAILURE;
        }
    }
    info!("sensors attached; watching");
    let (containment, mut audit_alerts) = if contain_cfg.enabled {
        match crate::contain::runtime::RunContainment::start(
            &contain_cfg,
            &node_name,
            &mut agent,
            k8s.clone(),
            engine.clone(),
            &args.btf,
        ) {
            Ok((c, rx)) => (Some(c), rx),
            Err(e) => {
                error!("containment: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        // Never fires: keeps the select below uniform.
        (None, tokio::sync::mpsc::channel(1).1)
    };
    // A JSON-lines sink on stdout prints every spooled alert (numbered,
    // resumable); printing them here as well would duplicate each one.
    let sink_prints_alerts = file
        .delivery
        .as_ref()
        .is_some_and(|d| d.jsonl.iter().any(|j| j.path == "-"));
    if sink_prints_alerts {
        info!("alerts go to stdout through the spool's JSON-lines sink");
    }
    // Raw events leave the agent through gRPC or OTLP: then every kind
    // stays on in the kernel, whatever the rules need.
    let streams_events = file
        .delivery
        .as_ref()
        .is_some_and(|d| d.grpc.is_some() || d.otlp.as_ref().is_some_and(|o| o.events.is_some()));
    let delivery = match file.delivery.map(|d| with_node_name(d, &node_name)) {
        Some(cfg) => {
            let hooks = crate::delivery::DeliveryHooks {
                rules: Some(Arc::new(crate::rules::control::EngineControl::new(
                    engine.clone(),
                    watcher.handle(),
                ))),
                contain: containment.as_ref().map(|c| c.engine()),
                ..Default::default()
            };
            match start_delivery(cfg, hooks).await {
                Ok(d) => Some(d),
                Err(e) => {
                    error!("delivery: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    // In-kernel filters follow the rules, now and on every reload. Every
    // kind stays on when events are printed or streamed.
    let _filters = crate::sensor::rule_filters::follow_rules(
        &engine,
        agent.sensor().filter_handle(),
        crate::sensor::rule_filters::FilterConfig {
            keep_all_kinds: args.events || streams_events,
            ..Default::default()
        },
    );
    if let Some(d) = &delivery {
        // /readyz turns ready only once the kernel programs are attached,
        // and never while a core program is missing.
        d.readiness().set_programs_loaded(core_missing.is_empty());
    }
    if let Some(p) = &args.ready_file
        && let Err(e) = std::fs::write(p, b"ready\n")
    {
        error!(path = %p.display(), error = %e, "cannot write the ready file");
    }
    // Not locked for the whole run: the JSON-lines sink may share stdout.
    let mut down = Downstream {
        print_events: args.events,
        out: Printer::new(std::io::stdout(), args.format),
        engine: engine.clone(),
        delivery,
        containment,
        sink_prints_alerts,
    };
    // Kubernetes metadata never stalls the stream: an event of a pod not
    // cached yet is parked and released later (k8s::park).
    let mut k8s_stage = crate::k8s::K8sStage::new(k8s.clone(), crate::k8s::ParkConfig::default());
    // Events arrive a batch at a time (one loop turn, one flush per batch);
    // both buffers are reused.
    let mut incoming: Vec<crate::model::Event> = Vec::new();
    let mut ready: Vec<crate::model::Event> = Vec::new();
    // Both signals as streams created once, before the loop: a fresh
    // `tokio::signal::ctrl_c()` per loop turn only sees signals that arrive
    // while it is being awaited, so a SIGINT delivered while an event was
    // being handled was lost and the agent kept running.
    use tokio::signal::unix::{SignalKind, signal};
    let (mut sigterm, mut sigint) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            error!(error = %e, "cannot install the SIGTERM/SIGINT handlers");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout_open = true;
    'events: loop {
        tokio::select! {
            more = agent.next_batch(&mut incoming) => {
                if !more { break }
                for ev in incoming.drain(..) {
                    k8s_stage.admit(ev, &mut ready);
                }
            }
            released = k8s_stage.released() => ready.extend(released),
            Some(a) = audit_alerts.recv() => {
                if down.alert(a).await.is_err() {
                    stdout_open = false;
                    break;
                }
            }
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break }
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break }
        }
        for mut ev in ready.drain(..) {
            runtime_apis.enrich(&mut ev);
            if down.event(&ev).await.is_err() {
                stdout_open = false;
                break 'events;
            }
        }
        down.flush();
    }
    // Parked events are never lost: they go on unenriched.
    if stdout_open {
        ready.extend(k8s_stage.drain());
        for mut ev in ready.drain(..) {
            runtime_apis.enrich(&mut ev);
            if down.event(&ev).await.is_err() {
                break;
            }
        }
    }
    down.flush();
    let Downstream {
        delivery,
        containment,
        ..
    } = down;
    drop(containment);
    agent.shutdown();
    if let Err(e) = engine.save_baseline() {
        warn!(error = %e, "the egress baseline could not be saved");
    }
    if let Some(d) = delivery {
        d.shutdown().await;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(argv: &[&str]) -> RunArgs {
        Cli::parse_from(std::iter::once("picket").chain(argv.iter().copied())).run
    }

    fn file(node: Option<&str>) -> crate::config::FileConfig {
        crate::config::FileConfig {
            delivery: Some(crate::delivery::DeliveryConfig {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `--node-name` reaches the pipeline (exec ids, `host.name`) and the
    /// delivery settings (OTLP resource `k8s.node.name`, gRPC `node_name`)
    /// alike, over the file's value; without either, the host name does.
    #[test]
    fn one_node_name_reaches_pipeline_and_delivery() {
        let a = args(&["--node-name", "node-7"]);
        let f = file(Some("from-file"));
        let n = node_name(&a, &f, "host-1");
        assert_eq!(n, "node-7");
        assert_eq!(a.agent_config(&n).pipeline.node_name, "node-7");
        let d = with_node_name(f.delivery.clone().expect("delivery"), &n);
        assert_eq!(d.node_name.as_deref(), Some("node-7"));

        let none = args(&[]);
        let n = node_name(&none, &file(Some("from-file")), "host-1");
        assert_eq!(n, "from-file");
        let n = node_name(&none, &file(None), "host-1");
        assert_eq!(n, "host-1");
        let d = with_node_name(crate::delivery::DeliveryConfig::default(), &n);
        assert_eq!(d.node_name.as_deref(), Some("host-1"));
    }
}
