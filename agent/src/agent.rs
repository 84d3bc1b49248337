//! The running agent: kernel sensor, ring-buffer reader, loss poller and the
//! enrichment pipeline wired together. `picket run` and the real-kernel
//! tests both drive this, so the tests exercise the shipped code path.

use std::{os::unix::fs::MetadataExt, path::PathBuf, time::Duration};

use agent_common::settings::cgroup_filter;
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{info, warn};

use crate::{
    container::CgroupResolver,
    model::Event,
    pipeline::{Pipeline, PipelineConfig},
    process::ProcessCache,
    sensor::{self, LoadError, Sensor, SensorConfig, lost::LossTracker},
};

/// Which cgroups the kernel reports on.
#[derive(Debug, Clone, Default)]
pub enum CgroupScope {
    #[default]
    All,
    /// Only these cgroup v2 directories (not their descendants).
    Only(Vec<PathBuf>),
    /// Everything except these (e.g. the agent's own cgroup on a node).
    Exclude(Vec<PathBuf>),
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub sensor: SensorConfig,
    pub pipeline: PipelineConfig,
    /// Where to read the running processes from at start-up.
    pub proc_root: PathBuf,
    /// How often the kernel loss counters are read.
    pub loss_interval: Duration,
    pub cgroups: CgroupScope,
    /// Capacity of the enriched-event channel (back-pressure beyond it).
    pub channel_capacity: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            sensor: SensorConfig::default(),
            pipeline: PipelineConfig::default(),
            proc_root: PathBuf::from("/proc"),
            loss_interval: Duration::from_secs(1),
            cgroups: CgroupScope::All,
            channel_capacity: 4096,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setting up the ring-buffer reader: {0}")]
    Reader(#[source] std::io::Error),
}

/// A running agent. Dropping it stops the tasks and detaches the programs.
pub struct Agent {
    sensor: Sensor,
    events: mpsc::Receiver<Event>,
    tasks: Vec<JoinHandle<()>>,
}

impl Agent {
    /// Loads and attaches the programs, seeds the process cache from /proc and
    /// starts reading. Must be called inside a tokio runtime.
    pub async fn start(cfg: AgentConfig) -> Result<Self, AgentError> {
        let (mode, paths) = match &cfg.cgroups {
            CgroupScope::All => (cgroup_filter::OFF, &[][..]),
            CgroupScope::Only(p) => (cgroup_filter::ONLY_LISTED, &p[..]),
            CgroupScope::Exclude(p) => (cgroup_filter::EXCLUDE_LISTED, &p[..]),
        };
        let mut ids = Vec::new();
        for p in paths {
            let md = std::fs::metadata(p).map_err(|source| AgentError::Cgroup {
                path: p.clone(),
                source,
            })?;
            ids.push(md.ino());
        }
        // The scope is in the maps before any program attaches.
        let mut sensor_cfg = cfg.sensor.clone();
        sensor_cfg.cgroup_filter = Some((mode, ids));
        let mut sensor = Sensor::load(&sensor_cfg)?;

        // Seed after attaching: a process started in between is seen by both,
        // and the cache treats the kernel's record as authoritative.
        let mut cache = ProcessCache::new(crate::process::CacheConfig {
            node_name: cfg.pipeline.node_name.clone(),
            ..Default::default()
        });
        let seeded = cache.seed_from_proc(&cfg.proc_root);
        info!(
            processes = seeded,
            "process cache seeded from {}",
            cfg.proc_root.display()
        );
        let cgroups = match CgroupResolver::detect() {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(error = %e, "no cgroup v2 hierarchy found; container attribution is disabled");
                None
            }
        };
        let mut pipeline = Pipeline::new(cfg.pipeline.clone(), cache, cgroups);

        let ring = sensor.take_ring()?;
        let lost = sensor.take_lost()?;
        let rates = sensor.take_rate_tracker(&cfg.sensor.filters, cfg.loss_interval)?;
        let mut rate_ledger = sensor::rate_summary::RateLedger::default();
        let (rate_tx, mut rate_rx) = mpsc::channel(16);
        let (raw_tx, mut raw_rx) = mpsc::channel(cfg.channel_capacity.clamp(1, 64));
        let (loss_tx, mut loss_rx) = mpsc::channel(16);
        let (ev_tx, ev_rx) = mpsc::channel(cfg.channel_capacity);

        let repoll = cfg.sensor.ring_wakeup_interval;
        let reader = tokio::spawn(async move {
            if let Err(e) = sensor::ring::run(ring, raw_tx, repoll).await {
                tracing::error!(error = %e, "ring-buffer reader stopped");
            }
        });
        let poller = tokio::spawn(sensor::lost::run(
            LossTracker::new(lost),
            cfg.loss_interval,
            loss_tx,
        ));
        let rate_poller = tokio::spawn(sensor::rate_summary::run_rate_tracker(
            rates,
            cfg.loss_interval,
            rate_tx,
        ));
        let enrich = tokio::spawn(async move {
            loop {
                tokio::select! {
                    batch = raw_rx.recv() => {
                        let Some(batch) = batch else { return };
                        for raw in &batch {
                            // Kernel rate summaries go through the ledger
                            // shared with the flush (sensor::rate_summary).
                            if let sensor::RawEvent::RateSummary(s) = raw {
                                let o = sensor::rate_summary::RateObservation::from_record(s);
                                if let Some(r) = rate_ledger.observe(&o)
                                    && ev_tx.send(pipeline.summary(&r)).await.is_err()
                                {
                                    return;
                                }
                                continue;
                            }
                            let ev = pipeline.handle(raw);
                            if ev_tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                    }
                    losses = loss_rx.recv() => {
                        let Some(losses) = losses else { return };
                        for l in &losses {
                            if ev_tx.send(pipeline.lost(l)).await.is_err() {
                                return;
                            }
                        }
                    }
                    reports = rate_rx.recv() => {
                        let Some(reports) = reports else { return };
                        for r in reports.iter().filter_map(|o| rate_ledger.observe(o)) {
                            if ev_tx.send(pipeline.summary(&r)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Self {
            sensor,
            events: ev_rx,
            tasks: vec![reader, poller, rate_poller, enrich],
        })
    }

    /// The next enriched event (`None` once the agent stopped).
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    pub fn sensor(&self) -> &Sensor {
        &self.sensor
    }

    /// The loaded programs, for containment to take its maps from.
    pub fn sensor_mut(&mut self) -> &mut Sensor {
        &mut self.sensor
    }

    /// Stops the tasks; the programs are detached when `self` is dropped.
    pub fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
