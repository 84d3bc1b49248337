//! Self-telemetry of the rule engine, registered in the shared registry.
//!
//! The engine resolves per-rule handles when a rule set is installed, so the
//! hot path increments a plain atomic instead of looking up a label set.

use std::sync::LazyLock;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExceptionLabel {
    pub rule: String,
    pub exception: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SuppressedLabel {
    pub rule: String,
    /// `dedup` or `rate_limit`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `success` or `failure`.
    pub result: &'static str,
}

fn eval_histogram() -> Histogram {
    // 100 ns .. ~1.6 ms
    Histogram::new(exponential_buckets(1e-7, 2.5, 12))
}

type HistFamily = Family<RuleLabel, Histogram, fn() -> Histogram>;

/// All rule-engine metrics (cheap `Arc` clones).
#[derive(Clone, Debug)]
pub struct RulesMetrics {
    /// Alerts a rule would raise before de-duplication (enforce mode).
    pub matches: Family<RuleLabel, Counter>,
    /// Matches of rules in shadow mode (never alerted).
    pub shadow_matches: Family<RuleLabel, Counter>,
    /// Condition matches cancelled by an exception, per exception (for tuning).
    pub exceptions: Family<ExceptionLabel, Counter>,
    /// Matches not alerted because of `dedup` or `rate_limit`.
    pub suppressed: Family<SuppressedLabel, Counter>,
    /// Time to evaluate one rule on one event (sampled, 1 in 16 events).
    pub rule_eval_seconds: HistFamily,
    /// Time to evaluate all rules on one event (sampled, 1 in 16 events).
    pub event_eval_seconds: Histogram,
    /// Rule reloads by result.
    pub reloads: Family<ResultLabel, Counter>,
    /// Rules in the running set (enabled or not).
    pub rules_loaded: Gauge,
    /// De-duplication keys not remembered because the table was full.
    pub dedup_overflow: Counter,
    /// Workloads and destinations in the learned egress baseline.
    pub baseline_workloads: Gauge,
    pub baseline_destinations: Gauge,
    /// Destinations or workloads not learned because a cap was reached.
    pub baseline_overflow: Counter,
    /// Failed baseline loads and saves.
    pub baseline_errors: Counter,
    /// Entries of `aggregate`/`after` tables evicted to stay within their
    /// caps (each a possible missed detection).
    pub state_evictions: Family<RuleLabel, Counter>,
}

impl Default for RulesMetrics {
    fn default() -> Self {
        Self {
            matches: Family::default(),
            shadow_matches: Family::default(),
            exceptions: Family::default(),
            suppressed: Family::default(),
            rule_eval_seconds: Family::new_with_constructor(eval_histogram as fn() -> Histogram),
            event_eval_seconds: eval_histogram(),
            reloads: Family::default(),
            rules_loaded: Gauge::default(),
            dedup_overflow: Counter::default(),
            baseline_workloads: Gauge::default(),
            baseline_destinations: Gauge::default(),
            baseline_overflow: Counter::default(),
            baseline_errors: Counter::default(),
            state_evictions: Family::default(),
        }
    }
}

static GLOBAL: LazyLock<RulesMetrics> = LazyLock::new(|| {
    use crate::metrics::register;
    let m = RulesMetrics::default();
    RulesMetrics {
        matches: register(
            "rule_matches",
            "Rule matches that raise alerts (before dedup/rate limit)",
            m.matches,
        ),
        shadow_matches: register(
            "rule_shadow_matches",
            "Matches of rules in shadow mode",
            m.shadow_matches,
        ),
        exceptions: register(
            "rule_exception_hits",
            "Rule matches cancelled by an exception",
            m.exceptions,
        ),
        suppressed: register(
            "rule_suppressed",
            "Rule matches suppressed by dedup or rate limit",
            m.suppressed,
        ),
        rule_eval_seconds: register(
            "rule_eval_seconds",
            "Time to evaluate one rule on one event (sampled)",
            m.rule_eval_seconds,
        ),
        event_eval_seconds: register(
            "rules_event_eval_seconds",
            "Time to evaluate all rules on one event (sampled)",
            m.event_eval_seconds,
        ),
        reloads: register("rules_reloads", "Rule set reloads by result", m.reloads),
        rules_loaded: register(
            "rules_loaded",
            "Rules in the running rule set",
            m.rules_loaded,
        ),
        dedup_overflow: register(
            "rules_dedup_overflow",
            "Dedup keys not remembered because the table was full",
            m.dedup_overflow,
        ),
        baseline_workloads: register(
            "baseline_workloads",
            "Workloads in the learned egress baseline",
            m.baseline_workloads,
        ),
        baseline_destinations: register(
            "baseline_destinations",
            "Destinations in the learned egress baseline",
            m.baseline_destinations,
        ),
        baseline_overflow: register(
            "baseline_overflow",
            "Destinations/workloads not learned because a cap was reached",
            m.baseline_overflow,
        ),
        baseline_errors: register(
            "baseline_errors",
            "Failed loads and saves of the egress baseline",
            m.baseline_errors,
        ),
        state_evictions: register(
            "rule_state_evictions",
            "Entries of aggregate/after rule state evicted because a cap was reached",
            m.state_evictions,
        ),
    }
});

impl RulesMetrics {
    /// The process-wide set, registered in [`crate::metrics`] on first use.
    pub fn global() -> Self {
        GLOBAL.clone()
    }

    /// A private set that is not exported (tests assert exact counts on it).
    pub fn unregistered() -> Self {
        Self::default()
    }
}

/// Per-rule handles, resolved once per installed rule set.
#[derive(Debug)]
pub(crate) struct RuleCounters {
    pub matches: Counter,
    pub shadow: Counter,
    pub dedup: Counter,
    pub rate_limit: Counter,
    pub exceptions: Vec<Counter>,
    pub eval: Histogram,
    pub evictions: Counter,
}

impl RuleCounters {
    pub fn new(m: &RulesMetrics, rule: &super::compile::Rule) -> Self {
        let l = RuleLabel {
            rule: rule.id.to_string(),
        };
        let sup = |reason| {
            m.suppressed
                .get_or_create(&SuppressedLabel {
                    rule: l.rule.clone(),
                    reason,
                })
                .clone()
        };
        Self {
            matches: m.matches.get_or_create(&l).clone(),
            shadow: m.shadow_matches.get_or_create(&l).clone(),
            dedup: sup("dedup"),
            rate_limit: sup("rate_limit"),
            exceptions: rule
                .exceptions
                .iter()
                .map(|e| {
                    m.exceptions
                        .get_or_create(&ExceptionLabel {
                            rule: l.rule.clone(),
                            exception: e.name.clone(),
                        })
                        .clone()
                })
                .collect(),
            eval: m.rule_eval_seconds.get_or_create(&l).clone(),
            evictions: m.state_evictions.get_or_create(&l).clone(),
        }
    }
}
