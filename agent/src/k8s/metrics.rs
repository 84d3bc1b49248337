//! Self-telemetry of the Kubernetes enricher.
//!
//! The agent uses one process-wide set registered in the shared registry
//! ([`K8sMetrics::global`]); tests create private, unregistered sets so
//! parallel tests can assert exact counts.

use std::sync::LazyLock;

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

/// Counters and gauges of the enricher (cheap `Arc` clones).
#[derive(Clone, Debug, Default)]
pub struct K8sMetrics {
    /// Lookups answered with API metadata.
    pub lookups_resolved: Counter,
    /// Lookups answered with the pod UID only (`k8s.metadata = unresolved`).
    pub lookups_unresolved: Counter,
    /// Lookups that waited for the cache.
    pub lookups_waited: Counter,
    /// Waiting lookups that timed out (a subset of `lookups_unresolved`).
    pub lookup_wait_timeouts: Counter,
    /// Periods during which the API server could not be watched (counted once each).
    pub api_outages: Counter,
    /// Every failed list/watch/get (several per outage, with back-off).
    pub api_errors: Counter,
    /// 1 while all watches are healthy, 0 during an outage.
    pub api_connected: Gauge,
    /// Full re-lists of this node's pods after the first list (410 Gone, restarts).
    pub relists: Counter,
    /// Pods not cached because the cache was full of live pods.
    pub pods_dropped: Counter,
    /// Owner objects (ReplicaSet, Job) fetched from the API.
    pub owner_requests: Counter,
    /// Owner fetches that failed (404, 403, timeouts, outages).
    pub owner_errors: Counter,
    /// Live pods cached.
    pub cache_pods: Gauge,
    /// Deleted pods kept as tombstones.
    pub cache_tombstones: Gauge,
    /// Estimated bytes held by the pod cache.
    pub cache_bytes: Gauge,
    /// Events parked now, waiting for their pod's metadata.
    pub events_parked: Gauge,
    /// Parked events released early, unenriched, because a bound was
    /// reached (never dropped: they go on with `k8s.metadata = unresolved`).
    pub park_overflow: Counter,
}

static GLOBAL: LazyLock<K8sMetrics> = LazyLock::new(|| {
    use crate::metrics::register;
    K8sMetrics {
        lookups_resolved: register(
            "k8s_lookups_resolved",
            "Pod metadata lookups answered from the API cache",
            Counter::default(),
        ),
        lookups_unresolved: register(
            "k8s_lookups_unresolved",
            "Pod metadata lookups answered with the pod UID only",
            Counter::default(),
        ),
        lookups_waited: register(
            "k8s_lookups_waited",
            "Pod metadata lookups that waited for the cache",
            Counter::default(),
        ),
        lookup_wait_timeouts: register(
            "k8s_lookup_wait_timeouts",
            "Waiting pod metadata lookups that timed out",
            Counter::default(),
        ),
        api_outages: register(
            "k8s_api_outages",
            "Kubernetes API outages (counted once per outage)",
            Counter::default(),
        ),
        api_errors: register(
            "k8s_api_errors",
            "Failed Kubernetes API list/watch/get requests",
            Counter::default(),
        ),
        api_connected: register(
            "k8s_api_connected",
            "1 while the pod and namespace watches are healthy",
            Gauge::default(),
        ),
        relists: register(
            "k8s_relists",
            "Full re-lists of the node's pods after the first list",
            Counter::default(),
        ),
        pods_dropped: register(
            "k8s_pods_dropped",
            "Pods not cached because the cache was full",
            Counter::default(),
        ),
        owner_requests: register(
            "k8s_owner_requests",
            "ReplicaSet/Job objects fetched to resolve workloads",
            Counter::default(),
        ),
        owner_errors: register(
            "k8s_owner_errors",
            "Failed ReplicaSet/Job fetches",
            Counter::default(),
        ),
        cache_pods: register(
            "k8s_cache_pods",
            "Live pods in the metadata cache",
            Gauge::default(),
        ),
        cache_tombstones: register(
            "k8s_cache_tombstones",
            "Deleted pods kept resolvable",
            Gauge::default(),
        ),
        cache_bytes: register(
            "k8s_cache_bytes",
            "Estimated bytes held by the pod metadata cache",
            Gauge::default(),
        ),
        events_parked: register(
            "k8s_events_parked",
            "Events parked now, waiting for their pod's metadata",
            Gauge::default(),
        ),
        park_overflow: register(
            "k8s_park_overflow",
            "Parked events released unenriched because the parking bound was reached",
            Counter::default(),
        ),
    }
});

impl K8sMetrics {
    /// The process-wide set, registered in [`crate::metrics`] on first use.
    pub fn global() -> Self {
        GLOBAL.clone()
    }

    /// A private set that is not exported (tests).
    pub fn unregistered() -> Self {
        Self::default()
    }
}
