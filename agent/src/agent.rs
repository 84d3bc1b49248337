//! The running agent: kernel sensor, ring-buffer reader, loss poller and the
//! enrichment pipeline wired together. `picket run` and the real-kernel
//! tests both drive this, so the tests exercise the shipped code path.

use std::{collections::VecDeque, os::unix::fs::MetadataExt, path::PathBuf, time::Duration};

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
///
/// The ring-buffer reader runs as its own task and hands over decoded
/// records a batch at a time; the enrichment (process cache, cgroups) runs
/// in the caller's task, inside [`Agent::next_batch`]: no thread hand-off
/// per event. (An enrichment task that sent each event through a channel
/// to the main loop cost a cross-thread wake-up per event: most of the
/// agent's CPU at moderate rates, see docs/benchmarks.md.)
pub struct Agent {
    sensor: Sensor,
    decode: DecodeStage,
    /// Enriched events not handed out yet by [`Agent::next`].
    pending: VecDeque<Event>,
    tasks: Vec<JoinHandle<()>>,
}

/// Kernel records (ring batches, loss counters, rate reports) to enriched
/// events.
struct DecodeStage {
    raw: mpsc::Receiver<Vec<sensor::RawEvent>>,
    losses: mpsc::Receiver<Vec<sensor::lost::Loss>>,
    rates: mpsc::Receiver<Vec<sensor::rate_summary::RateObservation>>,
    pipeline: Pipeline,
    rate_ledger: sensor::rate_summary::RateLedger,
}

impl DecodeStage {
    /// Waits for the next batch of records and appends its events to
    /// `out`; `false` once the sources closed. Cancel-safe: nothing is
    /// taken from a channel until the batch is handled in full.
    async fn next_batch(&mut self, out: &mut Vec<Event>) -> bool {
        tokio::select! {
            batch = self.raw.recv() => {
                let Some(batch) = batch else { return false };
                out.reserve(batch.len());
                for raw in &batch {
                    // Kernel rate summaries go through the ledger shared
                    // with the flush (sensor::rate_summary).
                    if let sensor::RawEvent::RateSummary(s) = raw {
                        let o = sensor::rate_summary::RateObservation::from_record(s);
                        if let Some(r) = self.rate_ledger.observe(&o) {
                            out.push(self.pipeline.summary(&r));
                        }
                        continue;
                    }
                    out.push(self.pipeline.handle(raw));
                }
            }
            losses = self.losses.recv() => {
                let Some(losses) = losses else { return false };
                out.extend(losses.iter().map(|l| self.pipeline.lost(l)));
            }
            reports = self.rates.recv() => {
                let Some(reports) = reports else { return false };
                for r in reports.iter().filter_map(|o| self.rate_ledger.observe(o)) {
                    out.push(self.pipeline.summary(&r));
                }
            }
        }
        true
    }
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
        let pipeline = Pipeline::new(cfg.pipeline.clone(), cache, cgroups);

        let ring = sensor.take_ring()?;
        let lost = sensor.take_lost()?;
        let rates = sensor.take_rate_tracker(&cfg.sensor.filters, cfg.loss_interval)?;
        let (rate_tx, rate_rx) = mpsc::channel(16);
        // Batches of up to 256 records: back-pressure beyond this lets the
        // ring fill, where the kernel counts any loss.
        let (raw_tx, raw_rx) = mpsc::channel(cfg.channel_capacity.clamp(1, 64));
        let (loss_tx, loss_rx) = mpsc::channel(16);

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
        Ok(Self {
            sensor,
            decode: DecodeStage {
                raw: raw_rx,
                losses: loss_rx,
                rates: rate_rx,
                pipeline,
                rate_ledger: sensor::rate_summary::RateLedger::default(),
            },
            pending: VecDeque::new(),
            tasks: vec![reader, poller, rate_poller],
        })
    }

    /// Appends the enriched events of the next batch of kernel records to
    /// `out` (waiting for one); `false` once the agent stopped. Cancel-safe.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) -> bool {
        if !self.pending.is_empty() {
            out.extend(self.pending.drain(..));
            return true;
        }
        self.decode.next_batch(out).await
    }

    /// The next enriched event (`None` once the agent stopped).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            let mut batch = Vec::new();
            if !self.decode.next_batch(&mut batch).await {
                return None;
            }
            self.pending.extend(batch);
        }
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
