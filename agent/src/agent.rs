//! The running agent: kernel sensor, ring-buffer reader, loss poller and the
//! enrichment pipeline wired together. `picket run` and the real-kernel
//! tests both drive this, so the tests exercise the shipped code path.

use std::{
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

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
    /// Capacity of the enriched-event channel in events, rounded up to whole
    /// batches of up to [`sensor::ring::BATCH`] (back-pressure beyond it).
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
    events: mpsc::Receiver<Vec<Event>>,
    /// The rest of a batch [`Agent::next`] started on.
    pending: std::vec::IntoIter<Event>,
    spare: SpareBatches,
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
        let pipeline = Pipeline::new(cfg.pipeline.clone(), cache, cgroups);

        let ring = sensor.take_ring()?;
        let lost = sensor.take_lost()?;
        let rates = sensor.take_rate_tracker(&cfg.sensor.filters, cfg.loss_interval)?;
        let reader = sensor::ring::RingReader::new(ring, cfg.sensor.ring_wakeup_interval)
            .map_err(AgentError::Reader)?;
        let (rate_tx, rate_rx) = mpsc::channel(16);
        let (loss_tx, loss_rx) = mpsc::channel(16);
        // The channel carries batches; its capacity is given in events.
        let batches = cfg.channel_capacity.div_ceil(sensor::ring::BATCH).max(1);
        let (ev_tx, ev_rx) = mpsc::channel(batches);
        let spare = SpareBatches::default();

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
        let events = tokio::spawn(
            EventTask {
                reader,
                pipeline,
                rate_ledger: sensor::rate_summary::RateLedger::default(),
                loss_rx,
                rate_rx,
                ev_tx,
                spare: spare.clone(),
            }
            .run(),
        );
        let lag = tokio::spawn(crate::metrics::loop_lag::watch(
            crate::metrics::loop_lag::INTERVAL,
        ));
        Ok(Self {
            sensor,
            events: ev_rx,
            pending: Vec::new().into_iter(),
            spare,
            tasks: vec![poller, rate_poller, events, lag],
        })
    }

    /// The next enriched event (`None` once the agent stopped).
    pub async fn next(&mut self) -> Option<Event> {
        if let Some(ev) = self.pending.next() {
            return Some(ev);
        }
        let batch = self.events.recv().await?;
        self.pending = batch.into_iter();
        self.pending.next()
    }

    /// Appends the next batch of enriched events to `out` (in order, after
    /// any left by [`Agent::next`]); `false` once the agent stopped.
    /// Cancel-safe. With `out` empty the batch's buffer is swapped in, not
    /// copied, and `out`'s old buffer goes back to the event task for reuse.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) -> bool {
        if !self.pending.as_slice().is_empty() {
            out.extend(self.pending.by_ref());
            return true;
        }
        let Some(mut batch) = self.events.recv().await else {
            return false;
        };
        if out.is_empty() {
            std::mem::swap(out, &mut batch);
        } else {
            out.append(&mut batch);
        }
        self.spare.put(batch);
        true
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

/// Emptied event buffers on their way back from the consumer to the event
/// task, so a batch does not cost an allocation. At most [`SPARE_MAX`] are
/// kept; the lock is never contended for long (a push or a pop).
#[derive(Clone, Default)]
struct SpareBatches(Arc<Mutex<Vec<Vec<Event>>>>);

const SPARE_MAX: usize = 4;

impl SpareBatches {
    fn take(&self) -> Vec<Event> {
        let mut spare = self.0.lock().unwrap_or_else(|p| p.into_inner());
        spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(sensor::ring::BATCH))
    }

    fn put(&self, mut v: Vec<Event>) {
        v.clear();
        let mut spare = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE_MAX {
            spare.push(v);
        }
    }
}

/// The one task of the event path: reads the ring buffer itself (no reader
/// task, no channel per record), decodes and enriches each record as it is
/// read, and hands the events on a batch at a time.
///
/// Enrichment runs here, eagerly, not when a consumer pulls: it reads
/// `/proc/<pid>/exe` and friends of live processes, which must happen while
/// they still exist (kernel_process::binary_written_after_container_start_is_flagged).
struct EventTask {
    reader: sensor::ring::RingReader,
    pipeline: Pipeline,
    rate_ledger: sensor::rate_summary::RateLedger,
    loss_rx: mpsc::Receiver<Vec<sensor::lost::Loss>>,
    rate_rx: mpsc::Receiver<Vec<sensor::rate_summary::RateObservation>>,
    ev_tx: mpsc::Sender<Vec<Event>>,
    spare: SpareBatches,
}

impl EventTask {
    async fn run(mut self) {
        let mut out = self.spare.take();
        loop {
            tokio::select! {
                r = self.reader.readable() => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "ring-buffer reader stopped");
                        return;
                    }
                    let (pipeline, ledger) = (&mut self.pipeline, &mut self.rate_ledger);
                    self.reader.read(sensor::ring::BATCH, |raw| {
                        // Kernel rate summaries go through the ledger
                        // shared with the flush (sensor::rate_summary).
                        if let sensor::RawEvent::RateSummary(s) = &raw {
                            let o = sensor::rate_summary::RateObservation::from_record(s);
                            if let Some(r) = ledger.observe(&o) {
                                out.push(pipeline.summary(&r));
                            }
                        } else {
                            out.push(pipeline.handle(&raw));
                        }
                    });
                }
                losses = self.loss_rx.recv() => {
                    let Some(losses) = losses else { return };
                    out.extend(losses.iter().map(|l| self.pipeline.lost(l)));
                }
                reports = self.rate_rx.recv() => {
                    let Some(reports) = reports else { return };
                    for r in reports.iter().filter_map(|o| self.rate_ledger.observe(o)) {
                        out.push(self.pipeline.summary(&r));
                    }
                }
            }
            if !out.is_empty() {
                let batch = std::mem::replace(&mut out, self.spare.take());
                // A full channel holds this task back, and the ring buffer
                // fills: the kernel counts what it cannot store as lost.
                if self.ev_tx.send(batch).await.is_err() {
                    return;
                }
            }
        }
    }
}
