//! The rule engine: evaluates every enabled rule for an event's kind and
//! returns one alert per matching rule (all of them, not only the first).
//!
//! The compiled rule set sits behind an `ArcSwap`, so [`Engine::replace`]
//! (hot reload) swaps it atomically while evaluation continues lock-free.
//! Mutable state (dedup windows, rate limits, the learned baseline) lives in
//! the engine, keyed by rule id, so it survives reloads. All windows use the
//! event's own time: replays and tests are deterministic.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use jiff::Timestamp;
use tracing::{error, warn};

use super::{
    baseline::{Anomaly, Baseline, BaselineError},
    compile::{Rule, RuleSet},
    correlate::State,
    metrics::{RuleCounters, RulesMetrics},
    parse::Mode,
};
use crate::model::{Alert, Event};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub metrics: RulesMetrics,
    /// Where the learned egress baseline is kept (loaded at start, written by
    /// [`Engine::save_baseline`]). `None`: in memory only.
    pub baseline_path: Option<PathBuf>,
    /// Dedup keys remembered at most (memory bound against key explosions).
    pub max_dedup_entries: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            metrics: RulesMetrics::global(),
            baseline_path: None,
            max_dedup_entries: 100_000,
        }
    }
}

/// Why a match did not become an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suppression {
    Dedup,
    RateLimit,
}

/// Everything one evaluation found (for `picket rules test` and tests).
#[derive(Debug, Default)]
pub struct Evaluation {
    pub alerts: Vec<Alert>,
    /// Rules in shadow mode that matched.
    pub shadow: Vec<Arc<str>>,
    pub suppressed: Vec<(Arc<str>, Suppression)>,
    /// (rule, exception) pairs that cancelled a match.
    pub excepted: Vec<(Arc<str>, String)>,
}

struct Installed {
    set: Arc<RuleSet>,
    counters: Vec<RuleCounters>,
}

#[derive(Default)]
struct LimitState {
    /// (rule, key) -> (last alert time, window)
    dedup: HashMap<(Arc<str>, String), (Timestamp, Duration)>,
    /// rule -> (window start, alerts in window)
    rate: HashMap<Arc<str>, (Timestamp, u32)>,
}

pub struct Engine {
    current: ArcSwap<Installed>,
    limits: Mutex<LimitState>,
    baseline: Mutex<Baseline>,
    /// `aggregate` groups and `after` keys (`rules::correlate`).
    state: Mutex<State>,
    opts: EngineOptions,
    events: AtomicU64,
    baseline_overflow_logged: AtomicBool,
    /// The running set, for tasks that follow reloads (the in-kernel sensor
    /// filters: `sensor::rule_filters`).
    changes: tokio::sync::watch::Sender<Arc<RuleSet>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.current.load().set.rules().len())
            .finish_non_exhaustive()
    }
}

/// 1 in `SAMPLE` events is timed (per rule and as a whole).
const SAMPLE: u64 = 16;

fn elapsed(since: Option<Instant>) -> Option<f64> {
    since.map(|t| t.elapsed().as_secs_f64())
}

impl Engine {
    /// An engine with the process-wide metrics and an in-memory baseline.
    pub fn new(set: RuleSet) -> Engine {
        Self::build(set, EngineOptions::default(), Baseline::new())
    }

    /// An engine with explicit options; loads the baseline from
    /// `opts.baseline_path` when it exists.
    pub fn with_options(set: RuleSet, opts: EngineOptions) -> Result<Engine, BaselineError> {
        let baseline = match &opts.baseline_path {
            Some(p) => Baseline::load(p).inspect_err(|e| {
                opts.metrics.baseline_errors.inc();
                error!(error = %e, "cannot load the egress baseline");
            })?,
            None => Baseline::new(),
        };
        Ok(Self::build(set, opts, baseline))
    }

    /// An engine over an already shared rule set (in-memory baseline);
    /// `picket rules test` builds one per fixture event this way.
    pub fn with_shared(set: Arc<RuleSet>, opts: EngineOptions) -> Engine {
        Self::build_shared(set, opts, Baseline::new())
    }

    fn build(set: RuleSet, opts: EngineOptions, baseline: Baseline) -> Engine {
        Self::build_shared(Arc::new(set), opts, baseline)
    }

    fn build_shared(set: Arc<RuleSet>, opts: EngineOptions, baseline: Baseline) -> Engine {
        let changes = tokio::sync::watch::Sender::new(set.clone());
        let installed = Self::install(&opts.metrics, set);
        let (w, d) = baseline.size();
        opts.metrics
            .baseline_workloads
            .set(i64::try_from(w).unwrap_or(i64::MAX));
        opts.metrics
            .baseline_destinations
            .set(i64::try_from(d).unwrap_or(i64::MAX));
        Engine {
            current: ArcSwap::from_pointee(installed),
            limits: Mutex::new(LimitState::default()),
            baseline: Mutex::new(baseline),
            state: Mutex::new(State::default()),
            opts,
            events: AtomicU64::new(0),
            baseline_overflow_logged: AtomicBool::new(false),
            changes,
        }
    }

    fn install(m: &RulesMetrics, set: Arc<RuleSet>) -> Installed {
        m.rules_loaded
            .set(i64::try_from(set.rules().len()).unwrap_or(i64::MAX));
        let counters = set
            .rules()
            .iter()
            .map(|r| RuleCounters::new(m, r))
            .collect();
        Installed { set, counters }
    }

    /// Swaps in a new rule set atomically. Dedup/rate-limit/baseline state
    /// of rules that keep their id carries over.
    pub fn replace(&self, set: RuleSet) {
        let set = Arc::new(set);
        let installed = Self::install(&self.opts.metrics, set.clone());
        self.current.store(Arc::new(installed));
        self.changes.send_replace(set);
    }

    /// Follows the running rule set: the receiver sees every set installed
    /// by [`Self::replace`] (hot reload), starting with the current one.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<RuleSet>> {
        self.changes.subscribe()
    }

    /// The running rule set.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.current.load().set.clone()
    }

    pub fn metrics(&self) -> &RulesMetrics {
        &self.opts.metrics
    }

    /// Alerts for one event: one per matching rule in enforce mode, after
    /// exceptions, dedup and rate limits.
    pub fn evaluate(&self, ev: &Event) -> Vec<Alert> {
        self.run(ev, false).alerts
    }

    /// Like [`Self::evaluate`], and also reports shadow matches,
    /// suppressions and exception hits.
    pub fn evaluate_detailed(&self, ev: &Event) -> Evaluation {
        self.run(ev, true)
    }

    fn run(&self, ev: &Event, detailed: bool) -> Evaluation {
        let cur = self.current.load();
        let mut out = Evaluation::default();
        let idx = cur.set.for_kind(ev.kind());
        if idx.is_empty() {
            return out;
        }
        let sampled = self
            .events
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SAMPLE);
        let start = sampled.then(Instant::now);
        for &i in idx {
            let rule = &cur.set.rules()[i];
            let counters = &cur.counters[i];
            let t0 = sampled.then(Instant::now);
            let matched = rule.condition.eval(ev);
            let mut anomaly = None;
            let mut hit = None;
            let mut earlier = None;
            let fire = matched && {
                match rule.exceptions.iter().position(|x| x.cond.eval(ev)) {
                    Some(x) => {
                        counters.exceptions[x].inc();
                        if detailed {
                            out.excepted
                                .push((rule.id.clone(), rule.exceptions[x].name.clone()));
                        }
                        false
                    }
                    None => {
                        if !rule.stateful.feeds.is_empty() {
                            self.remember(rule, counters, ev);
                        }
                        match (
                            &rule.baseline,
                            &rule.stateful.aggregate,
                            &rule.stateful.after,
                        ) {
                            (Some(spec), _, _) => {
                                anomaly = self.observe_baseline(rule, spec, ev);
                                anomaly.is_some()
                            }
                            (None, Some(spec), _) => {
                                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                                let o = st.aggregate(&rule.id, spec, ev);
                                drop(st);
                                counters.evictions.inc_by(o.evicted);
                                hit = o.hit;
                                hit.is_some()
                            }
                            (None, None, Some(spec)) => {
                                let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                                earlier = st.follows(&rule.id, spec, ev);
                                earlier.is_some()
                            }
                            (None, None, None) => true,
                        }
                    }
                }
            };
            if let Some(s) = elapsed(t0) {
                counters.eval.observe(s);
            }
            if !fire {
                continue;
            }
            if rule.mode == Mode::Shadow {
                counters.shadow.inc();
                if detailed {
                    out.shadow.push(rule.id.clone());
                }
                continue;
            }
            counters.matches.inc();
            if let Some(why) = self.suppressed(rule, ev) {
                match why {
                    Suppression::Dedup => counters.dedup.inc(),
                    Suppression::RateLimit => counters.rate_limit.inc(),
                };
                if detailed {
                    out.suppressed.push((rule.id.clone(), why));
                }
                continue;
            }
            let message = match (&anomaly, &hit, &earlier) {
                (Some(a), _, _) => rule.output.render(ev, a),
                (None, Some(h), _) => rule.output.render(ev, h),
                (None, None, Some(e)) => rule.output.render(ev, e),
                (None, None, None) => rule.output.render(ev, &()),
            };
            out.alerts.push(Alert {
                seq: 0,
                time: ev.time,
                severity: rule.severity,
                rule: rule.rule_ref.clone(),
                message,
                event: ev.clone(),
            });
        }
        if let Some(s) = elapsed(start) {
            self.opts.metrics.event_eval_seconds.observe(s);
        }
        out
    }

    /// Remembers a match for the `after` rules this rule feeds.
    fn remember(&self, rule: &Rule, counters: &RuleCounters, ev: &Event) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = 0;
        for feed in &rule.stateful.feeds {
            evicted += st.remember(&rule.id, feed, ev);
        }
        drop(st);
        if evicted > 0 {
            counters.evictions.inc_by(evicted);
        }
    }

    fn observe_baseline(
        &self,
        rule: &Rule,
        spec: &super::parse::BaselineSpec,
        ev: &Event,
    ) -> Option<Anomaly> {
        let mut b = self.baseline.lock().unwrap_or_else(|p| p.into_inner());
        let obs = b.observe(&rule.id, spec, ev);
        drop(b);
        if obs.overflow {
            self.opts.metrics.baseline_overflow.inc();
            // Counted every time, logged once: a cap is hit on every event after it.
            if !self.baseline_overflow_logged.swap(true, Ordering::Relaxed) {
                warn!(rule = %rule.id, "egress baseline cap reached; further overflows are only counted");
            }
        }
        if obs.new_workload {
            self.opts.metrics.baseline_workloads.inc();
        }
        if obs.new_destination {
            self.opts.metrics.baseline_destinations.inc();
        }
        obs.anomaly
    }

    /// Applies dedup then the rate limit; records the alert when it passes.
    fn suppressed(&self, rule: &Rule, ev: &Event) -> Option<Suppression> {
        if rule.dedup.is_none() && rule.rate_limit.is_none() {
            return None;
        }
        let now = ev.time;
        let mut st = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let mut dedup_key = None;
        if let Some(d) = &rule.dedup {
            let mut key = String::new();
            for (i, a) in d.key.iter().enumerate() {
                if i > 0 {
                    key.push('\u{1f}');
                }
                a.get(ev).render(&mut key);
            }
            let k = (rule.id.clone(), key);
            if let Some((last, window)) = st.dedup.get(&k)
                && in_window(now, *last, *window)
            {
                return Some(Suppression::Dedup);
            }
            dedup_key = Some((k, d.window));
        }
        if let Some(rl) = &rule.rate_limit {
            let e = st.rate.entry(rule.id.clone()).or_insert((now, 0));
            if !in_window(now, e.0, rl.per) {
                *e = (now, 0);
            }
            if e.1 >= rl.max {
                return Some(Suppression::RateLimit);
            }
            e.1 += 1;
        }
        if let Some((k, window)) = dedup_key {
            if st.dedup.len() >= self.opts.max_dedup_entries {
                st.dedup.retain(|_, (last, w)| in_window(now, *last, *w));
            }
            if st.dedup.len() < self.opts.max_dedup_entries {
                st.dedup.insert(k, (now, window));
            } else {
                self.opts.metrics.dedup_overflow.inc();
                warn!(rule = %rule.id, "dedup table full; alert not de-duplicated");
            }
        }
        None
    }

    /// Writes the learned baseline when it changed since the last save.
    /// Call it periodically (e.g. every minute) and at shutdown. Returns
    /// whether a file was written.
    pub fn save_baseline(&self) -> Result<bool, BaselineError> {
        let Some(path) = &self.opts.baseline_path else {
            return Ok(false);
        };
        let mut b = self.baseline.lock().unwrap_or_else(|p| p.into_inner());
        if !b.is_dirty() {
            return Ok(false);
        }
        b.save(path).map(|()| true).inspect_err(|e| {
            self.opts.metrics.baseline_errors.inc();
            error!(error = %e, "cannot save the egress baseline");
        })
    }
}

/// `now` falls in `[start, start + window)`.
fn in_window(now: Timestamp, start: Timestamp, window: Duration) -> bool {
    let d = now.duration_since(start);
    !d.is_negative() && d.unsigned_abs() < window
}
