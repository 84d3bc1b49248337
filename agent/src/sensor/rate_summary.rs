//! `rate_summary` reports: records of one kind the kernel counted instead of
//! sending, for a cgroup.
//!
//! Two sources feed one [`RateLedger`] (in the task that builds events):
//! - the kernel's own `rate_summary` records, sent when a window that had
//!   suppressed records rolls over (the first record after its end), so
//!   nothing depends on polling while a cgroup stays busy;
//! - [`RateTracker::poll`], the flush for windows that never roll over (the
//!   cgroup went quiet): keys whose window ended a while ago and whose
//!   counter moved since the last poll.
//!
//! Both carry the kernel's cumulative counter (`RATE_SUPPRESSED`), and the
//! ledger reports only the increase over the last value it reported, so a
//! window reported by both, or twice by racing CPUs, is counted once and
//! every count is exact.

use std::{collections::BTreeMap, sync::LazyLock, time::Duration};

use agent_common::{
    EventKind,
    ratelimit::{RateKey, RateState, RateSummaryEvent},
};
use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

use super::filters::{FilterError, SensorFilters};
use crate::pipeline::sensors::wire_kind;

/// Records of one kind the kernel counted instead of sending, for a cgroup,
/// since the previous report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateReport {
    pub cgroup_id: u64,
    /// Enriched kind name (`connect`, `file_open`).
    pub kind: String,
    pub count: u64,
    /// The configured window.
    pub window_ms: u64,
}

/// The kernel's cumulative suppressed count for a key, from either source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateObservation {
    pub key: RateKey,
    pub total: u64,
    pub window_ns: u64,
}

impl RateObservation {
    /// From a kernel `rate_summary` record.
    pub fn from_record(e: &RateSummaryEvent) -> Self {
        Self {
            key: RateKey {
                cgroup_id: e.header.cgroup_id,
                kind: e.kind,
                lane: e.lane,
            },
            total: e.total,
            window_ns: e.window_ns,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

static SUPPRESSED: LazyLock<Family<KindLabel, Counter>> = LazyLock::new(|| {
    crate::metrics::register(
        "events_rate_limited",
        "Events the kernel counted instead of sending because a cgroup exceeded its rate limit, by kind",
        Family::default(),
    )
});

/// Turns cumulative observations into exact per-report counts.
#[derive(Debug, Default)]
pub struct RateLedger {
    reported: BTreeMap<RateKey, u64>,
}

impl RateLedger {
    /// A report for the increase since the last one, if any.
    pub fn observe(&mut self, o: &RateObservation) -> Option<RateReport> {
        let prev = self.reported.get(&o.key).copied().unwrap_or(0);
        if o.total <= prev {
            return None;
        }
        self.reported.insert(o.key, o.total);
        let kind = EventKind::from_u16(o.key.kind as u16)
            .map(|k| k.name().to_string())
            .unwrap_or_else(|| format!("kind_{}", o.key.kind));
        let count = o.total - prev;
        SUPPRESSED
            .get_or_create(&KindLabel { kind: kind.clone() })
            .inc_by(count);
        tracing::info!(
            kind,
            count,
            cgroup_id = o.key.cgroup_id,
            "events summarized by the rate limit"
        );
        Some(RateReport {
            cgroup_id: o.key.cgroup_id,
            kind,
            count,
            window_ms: o.window_ns / 1_000_000,
        })
    }
}

/// CLOCK_BOOTTIME in ns (the clock of the kernel's window starts).
fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out pointer; CLOCK_BOOTTIME always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Finds windows that ended without rolling over (see the module docs).
pub struct RateTracker {
    suppressed: HashMap<MapData, RateKey, u64>,
    state: HashMap<MapData, RateKey, RateState>,
    /// Window per wire kind (ns).
    windows: BTreeMap<u32, u64>,
    /// Totals already sent, so a quiet key is flushed once.
    sent: BTreeMap<RateKey, u64>,
    /// How long after a window's end the kernel is left to report it.
    slack: Duration,
}

impl RateTracker {
    /// Takes `RATE_SUPPRESSED` and `RATE_STATE` out of the object;
    /// `filters` gives the windows, `slack` the wait after a window's end
    /// before the agent reports it itself.
    pub fn new(
        ebpf: &mut Ebpf,
        filters: &SensorFilters,
        slack: Duration,
    ) -> Result<Self, FilterError> {
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(FilterError::MissingMap(name))
        };
        let suppressed = HashMap::try_from(take(ebpf, "RATE_SUPPRESSED")?).map_err(|source| {
            FilterError::Map {
                name: "RATE_SUPPRESSED",
                source,
            }
        })?;
        let state =
            HashMap::try_from(take(ebpf, "RATE_STATE")?).map_err(|source| FilterError::Map {
                name: "RATE_STATE",
                source,
            })?;
        let windows = filters
            .rates
            .iter()
            .filter_map(|(k, r)| {
                wire_kind(*k).map(|w| {
                    (
                        w as u32,
                        u64::try_from(r.window.as_nanos()).unwrap_or(u64::MAX),
                    )
                })
            })
            .collect();
        Ok(Self {
            suppressed,
            state,
            windows,
            sent: BTreeMap::new(),
            slack,
        })
    }

    /// Keys whose window ended more than `slack` ago with a total not sent yet.
    pub fn poll(&mut self) -> Vec<RateObservation> {
        let now = boot_ns();
        let slack = u64::try_from(self.slack.as_nanos()).unwrap_or(u64::MAX);
        let entries: Vec<(RateKey, u64)> = self.suppressed.iter().filter_map(Result::ok).collect();
        let mut out = Vec::new();
        for (key, total) in entries {
            if self.sent.get(&key).is_some_and(|s| *s >= total) {
                continue;
            }
            let window_ns = self.windows.get(&key.kind).copied().unwrap_or(0);
            // An evicted window state cannot roll over any more: report now.
            let ended = match self.state.get(&key, 0) {
                Ok(st) => now.saturating_sub(st.window_start_ns) >= window_ns.saturating_add(slack),
                Err(_) => true,
            };
            if ended {
                self.sent.insert(key, total);
                out.push(RateObservation {
                    key,
                    total,
                    window_ns,
                });
            }
        }
        out
    }
}

/// Polls every `every` and sends non-empty flushes until `tx` closes.
pub async fn run_rate_tracker(
    mut tracker: RateTracker,
    every: Duration,
    tx: tokio::sync::mpsc::Sender<Vec<RateObservation>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let found = tracker.poll();
        if !found.is_empty() && tx.send(found).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(cgroup_id: u64, total: u64) -> RateObservation {
        RateObservation {
            key: RateKey {
                cgroup_id,
                kind: EventKind::FileOpen as u32,
                lane: 0,
            },
            total,
            window_ns: 1_000_000_000,
        }
    }

    #[test]
    fn the_ledger_reports_each_increase_once() {
        let mut l = RateLedger::default();
        let r = l.observe(&obs(7, 15)).expect("first report");
        assert_eq!(
            r,
            RateReport {
                cgroup_id: 7,
                kind: "file_open".into(),
                count: 15,
                window_ms: 1000
            }
        );
        // The same total from the other source, or an older one arriving
        // late from another CPU: nothing.
        assert_eq!(l.observe(&obs(7, 15)), None);
        assert_eq!(l.observe(&obs(7, 9)), None);
        assert_eq!(l.observe(&obs(7, 40)).map(|r| r.count), Some(25));
        // Keys are independent.
        assert_eq!(l.observe(&obs(8, 3)).map(|r| r.count), Some(3));
    }
}
