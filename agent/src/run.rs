//! `picket run`.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use tracing::{error, info};

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
    /// Output format.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: Format,
    /// Ring buffer size in bytes (power of two, at least 4096).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub ring_buffer_bytes: u32,
    /// Node name (exec ids, `host.name`, pod watch). Defaults to the host name.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Ancestors listed in `process.ancestors`.
    #[arg(long, default_value_t = 5)]
    pub max_ancestors: usize,
    /// Seconds between reads of the kernel loss counters.
    #[arg(long, default_value_t = 1)]
    pub loss_interval_secs: u64,
    /// Only trace tasks in these cgroup v2 directories (repeatable).
    #[arg(long = "only-cgroup", value_name = "DIR")]
    pub only_cgroup: Vec<PathBuf>,
    /// Do not trace tasks in these cgroup v2 directories (repeatable), e.g. the
    /// agent's own pod cgroup on a node.
    #[arg(long = "exclude-cgroup", value_name = "DIR", conflicts_with = "only_cgroup")]
    pub exclude_cgroup: Vec<PathBuf>,
    /// Write this file once the programs are attached (for supervisors and tests).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

impl RunArgs {
    fn agent_config(&self) -> AgentConfig {
        let mut pipeline = PipelineConfig::default();
        if let Some(n) = &self.node_name {
            pipeline.node_name = n.clone();
        }
        pipeline.max_ancestors = self.max_ancestors;
        AgentConfig {
            sensor: SensorConfig { ring_buffer_bytes: self.ring_buffer_bytes, ..Default::default() },
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
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(args))
}

async fn run(args: RunArgs) -> ExitCode {
    let mut agent = match Agent::start(args.agent_config()).await {
        Ok(a) => a,
        Err(e) => {
            error!("{}", crate::sensor::loader::error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    info!("sensors attached; watching");
    if let Some(p) = &args.ready_file
        && let Err(e) = std::fs::write(p, b"ready\n")
    {
        error!(path = %p.display(), error = %e, "cannot write the ready file");
    }
    let mut out = Printer::new(std::io::stdout().lock(), args.format);
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install the SIGTERM handler");
            return ExitCode::FAILURE;
        }
    };
    loop {
        tokio::select! {
            ev = agent.next() => {
                let Some(ev) = ev else { break };
                let always = ev.kind() == crate::model::EventKindName::EventsLost;
                if (args.events || always) && out.event(&ev).is_err() {
                    break; // stdout closed
                }
                let _ = out.flush();
            }
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: shutting down"); break }
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break }
        }
    }
    let _ = out.flush();
    agent.shutdown();
    ExitCode::SUCCESS
}
