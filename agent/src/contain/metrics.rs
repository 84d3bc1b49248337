//! Containment metrics: every outcome and every refusal is counted.

use std::sync::LazyLock;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub action: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LossLabels {
    pub what: &'static str,
}

/// `picket_containment_actions_total{action, outcome}`.
pub static ACTIONS: LazyLock<Family<ActionLabels, Counter>> = LazyLock::new(|| {
    crate::metrics::register(
        "containment_actions",
        "Containment actions by action and outcome (succeeded, dry_run, refused, failed)",
        Family::default(),
    )
});

/// `picket_containment_refusals_total{action, reason}`.
pub static REFUSALS: LazyLock<Family<RefusalLabels, Counter>> = LazyLock::new(|| {
    crate::metrics::register(
        "containment_refusals",
        "Containment actions refused by a safety check, by reason (protected scope, rate limit, invalid)",
        Family::default(),
    )
});

/// `picket_containment_losses_total{what}`: audit records or Kubernetes
/// Events that could not be delivered.
pub static LOSSES: LazyLock<Family<LossLabels, Counter>> = LazyLock::new(|| {
    crate::metrics::register(
        "containment_losses",
        "Containment audit records or Kubernetes Events that could not be delivered",
        Family::default(),
    )
});
