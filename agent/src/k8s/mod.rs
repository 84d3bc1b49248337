//! Kubernetes pod metadata enrichment.
//!
//! [`K8sEnricher`] watches the pods of this node and all namespaces
//! (kube-runtime watchers in background tasks), keeps a bounded cache indexed
//! by container id and pod UID with tombstones for deleted pods, resolves
//! owning workloads, and answers [`K8sEnricher::lookup`] for the event
//! pipeline. Lookups never call the API: they read the cache and, for a pod
//! that is not cached yet, wait a bounded time for the watch to deliver it.
//!
//! `manifests` generates the deployment (`picket manifests`, `deploy/`).

pub mod config;
pub mod convert;
pub mod enrich;
pub mod health;
pub mod index;
pub mod manifests;
pub mod metrics;
pub mod owners;
pub mod park;
mod watch;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;
use tracing::info;

pub use self::{
    config::{K8sArgs, K8sConfig, K8sMode},
    health::ApiState,
    index::CacheStats,
    metrics::K8sMetrics,
    park::{K8sStage, ParkConfig},
};
use self::{convert::bare_container_id, health::Health, index::PodIndex, owners::OwnerResolver};
use crate::model::{Container, K8s};

/// Pod UIDs whose wait timed out are remembered this long, so the following
/// events of an unknown pod go out at once instead of each waiting again.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// Bound of the negative cache (cleared when full).
const MAX_NEGATIVE: usize = 4096;

/// Why the enricher could not start.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes client configuration (in-cluster or kubeconfig): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// State shared by the watch tasks and the lookups.
pub(crate) struct Shared {
    config: K8sConfig,
    index: RwLock<PodIndex>,
    /// Bumped after every cache change or health change: waiting lookups
    /// re-check on each bump (no polling).
    updates: Arc<tokio::sync::watch::Sender<u64>>,
    health: Arc<Health>,
    metrics: K8sMetrics,
    /// The first full pod list has been applied.
    synced: AtomicBool,
    /// Pod UIDs whose wait timed out recently.
    negative: Mutex<HashMap<String, Instant>>,
}

impl Shared {
    fn index(&self) -> RwLockReadGuard<'_, PodIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, PodIndex> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.updates.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The cache's answer, without waiting.
    fn find(
        &self,
        container_id: Option<&str>,
        pod_uid: Option<&str>,
    ) -> Option<(K8s, Option<Container>)> {
        let ix = self.index();
        let node = &self.config.node_name;
        if let Some(id) = container_id
            && let Some(pod) = ix.by_container(id)
        {
            return Some(enrich::resolved(&ix, pod, Some(id), node));
        }
        let pod = ix.by_uid(pod_uid?)?;
        Some(enrich::resolved(&ix, pod, container_id, node))
    }

    fn recently_unresolved(&self, uid: &str) -> bool {
        let neg = self.negative.lock().unwrap_or_else(|p| p.into_inner());
        neg.get(uid).is_some_and(|t| t.elapsed() < NEGATIVE_TTL)
    }

    fn remember_unresolved(&self, uid: &str) {
        let mut neg = self.negative.lock().unwrap_or_else(|p| p.into_inner());
        if neg.len() >= MAX_NEGATIVE {
            neg.clear();
        }
        neg.insert(uid.to_string(), Instant::now());
    }

    fn update_gauges(&self) {
        let s = self.index().stats();
        self.metrics
            .cache_pods
            .set(i64::try_from(s.live_pods).unwrap_or(i64::MAX));
        self.metrics
            .cache_tombstones
            .set(i64::try_from(s.tombstones).unwrap_or(i64::MAX));
        self.metrics
            .cache_bytes
            .set(i64::try_from(s.approx_bytes).unwrap_or(i64::MAX));
    }
}

/// Pod metadata for events: a cache of this node's pods kept current by
/// background watches. Cheap to share behind an `Arc`; dropping it stops the
/// background tasks.
pub struct K8sEnricher {
    /// `None` in host mode.
    shared: Option<Arc<Shared>>,
    /// The API client (shared with containment's pod actions).
    client: Option<kube::Client>,
    node_name: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for K8sEnricher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl K8sEnricher {
    /// Host mode: no API server. Lookups answer `k8s.metadata = unresolved`
    /// for processes in pod cgroups, at once.
    pub fn disabled(node_name: &str) -> Self {
        Self {
            shared: None,
            client: None,
            node_name: node_name.to_string(),
            tasks: Vec::new(),
        }
    }

    /// Builds the client (kubeconfig file, or in-cluster / `KUBECONFIG`) and
    /// starts the watches; returns at once (the first list completes in the
    /// background). Host mode when `config.enabled` is false.
    pub async fn start(config: K8sConfig) -> Result<Self, K8sError> {
        if !config.enabled {
            return Ok(Self::disabled(&config.node_name));
        }
        let kube_config = match &config.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                    K8sError::Kubeconfig {
                        path: path.display().to_string(),
                        source,
                    }
                })?;
                kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(|source| K8sError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
            }
            None => kube::Config::infer().await?,
        };
        info!(api = %kube_config.cluster_url, node = %config.node_name, "watching this node's pods");
        Self::start_with_kube_config(config, kube_config, K8sMetrics::global())
    }

    /// Starts the watches against the API server described by `kube_config`
    /// (tests point it at a local server and pass private metrics). Must be
    /// called inside a tokio runtime.
    pub fn start_with_kube_config(
        config: K8sConfig,
        kube_config: kube::Config,
        metrics: K8sMetrics,
    ) -> Result<Self, K8sError> {
        let node_name = config.node_name.clone();
        let updates = Arc::new(tokio::sync::watch::channel(0u64).0);
        let wake = updates.clone();
        let health = Arc::new(Health::new(
            metrics.clone(),
            Box::new(move || wake.send_modify(|v| *v = v.wrapping_add(1))),
        ));
        // Every HTTP answer passes this layer: the first one after an outage
        // ends it, even when no object changed meanwhile.
        let seen = health.clone();
        let observe = tower::util::MapResponseLayer::new(
            move |resp: http::Response<Box<kube::client::DynBody>>| {
                if health::status_means_reachable(resp.status().as_u16()) {
                    seen.reachable();
                }
                resp
            },
        );
        let client = kube::client::ClientBuilder::try_from(kube_config)?
            .with_layer(&observe)
            .build();
        let shared = Arc::new(Shared {
            index: RwLock::new(PodIndex::new(config.max_pods, config.tombstone_ttl)),
            updates,
            health,
            metrics: metrics.clone(),
            synced: AtomicBool::new(false),
            negative: Mutex::new(HashMap::new()),
            config,
        });
        let owners = OwnerResolver::new(client.clone(), shared.config.owner_timeout, metrics);
        let purge_every = (shared.config.tombstone_ttl / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(10));
        let tasks = vec![
            tokio::spawn(watch::pods(shared.clone(), client.clone(), owners)),
            tokio::spawn(watch::namespaces(shared.clone(), client.clone())),
            tokio::spawn(purge(shared.clone(), purge_every)),
        ];
        Ok(Self {
            shared: Some(shared),
            client: Some(client),
            node_name,
            tasks,
        })
    }

    /// The API client; `None` in host mode.
    pub fn client(&self) -> Option<kube::Client> {
        self.client.clone()
    }

    /// The pod (and container) of an event. `container_id`: bare or with a
    /// runtime prefix; `pod_uid`: from the cgroup path (dashes or the systemd
    /// driver's underscores).
    ///
    /// - Cached (live or tombstoned) pod: `metadata = resolved` at once.
    /// - Unknown pod UID: waits up to `metadata_wait` for the watch to deliver
    ///   it (woken by cache updates), then `metadata = unresolved` with the UID
    ///   only. No wait in host mode, during an API outage, or for a UID whose
    ///   wait timed out in the last minute.
    /// - No pod UID and unknown container: `None` (not a pod, as far as we know).
    pub async fn lookup(
        &self,
        container_id: Option<&str>,
        pod_uid: Option<&str>,
    ) -> Option<(K8s, Option<Container>)> {
        let container_id = container_id
            .map(bare_container_id)
            .filter(|s| !s.is_empty());
        let uid = pod_uid
            .filter(|s| !s.is_empty())
            .map(|u| u.replace('_', "-"));
        let Some(shared) = &self.shared else {
            return uid.map(|u| (enrich::unresolved(&u, &self.node_name), None));
        };
        if let Some(hit) = shared.find(container_id, uid.as_deref()) {
            shared.metrics.lookups_resolved.inc();
            return Some(hit);
        }
        let uid = uid?;
        if self.may_wait(shared, &uid) {
            shared.metrics.lookups_waited.inc();
            let mut rx = shared.updates.subscribe();
            let deadline = tokio::time::Instant::now() + shared.config.metadata_wait;
            loop {
                // Subscribe first, then check: an update between the check and
                // the wait is not missed (it marks the receiver changed).
                rx.borrow_and_update();
                if let Some(hit) = shared.find(container_id, Some(&uid)) {
                    shared.metrics.lookups_resolved.inc();
                    return Some(hit);
                }
                if shared.health.state() == ApiState::Outage {
                    break;
                }
                match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) | Err(_) => {
                        shared.metrics.lookup_wait_timeouts.inc();
                        shared.remember_unresolved(&uid);
                        break;
                    }
                }
            }
        }
        shared.metrics.lookups_unresolved.inc();
        Some((enrich::unresolved(&uid, &self.node_name), None))
    }

    /// The answer for an event now, without waiting: what
    /// [`K8sEnricher::lookup`] would return at once, or
    /// [`Answer::Wait`] where it would wait for the watch (the caller parks
    /// the event instead, see [`K8sStage`]).
    pub fn answer_now(&self, container_id: Option<&str>, pod_uid: Option<&str>) -> Answer {
        let container_id = container_id
            .map(bare_container_id)
            .filter(|s| !s.is_empty());
        let uid = pod_uid
            .filter(|s| !s.is_empty())
            .map(|u| u.replace('_', "-"));
        let Some(shared) = &self.shared else {
            return match uid {
                Some(u) => Answer::Unresolved(enrich::unresolved(&u, &self.node_name)),
                None => Answer::NotPod,
            };
        };
        if let Some((k8s, container)) = shared.find(container_id, uid.as_deref()) {
            shared.metrics.lookups_resolved.inc();
            return Answer::Found(k8s, container);
        }
        let Some(uid) = uid else {
            return Answer::NotPod;
        };
        if self.may_wait(shared, &uid) {
            shared.metrics.lookups_waited.inc();
            return Answer::Wait(uid);
        }
        shared.metrics.lookups_unresolved.inc();
        Answer::Unresolved(enrich::unresolved(&uid, &self.node_name))
    }

    /// Whether a lookup of `uid` may wait for the watch: not in host mode,
    /// not during an API outage, not for a UID whose wait timed out in the
    /// last minute.
    fn may_wait(&self, shared: &Shared, uid: &str) -> bool {
        !shared.config.metadata_wait.is_zero()
            && shared.health.state() != ApiState::Outage
            && !shared.recently_unresolved(uid)
    }

    /// The cache's answer without waiting (for callers that must not await);
    /// `None` when the pod is not cached.
    pub fn lookup_cached(
        &self,
        container_id: Option<&str>,
        pod_uid: Option<&str>,
    ) -> Option<(K8s, Option<Container>)> {
        let shared = self.shared.as_ref()?;
        let container_id = container_id
            .map(bare_container_id)
            .filter(|s| !s.is_empty());
        let uid = pod_uid
            .filter(|s| !s.is_empty())
            .map(|u| u.replace('_', "-"));
        shared.find(container_id, uid.as_deref())
    }

    /// This node's live pods as the cache has them now (containment keeps
    /// the kernel's protected cgroups in step with them). Empty in host mode.
    pub fn live_pods(&self) -> Vec<Arc<index::PodMeta>> {
        self.shared
            .as_ref()
            .map(|s| s.index().live().cloned().collect())
            .unwrap_or_default()
    }

    /// Bumped on every cache change (pods, namespaces, health); `None` in
    /// host mode.
    pub fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.shared.as_ref().map(|s| s.updates.subscribe())
    }

    /// Whether the API watches are enabled (false in host mode).
    pub fn enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// API server reachability as seen by the watches.
    pub fn api_state(&self) -> ApiState {
        self.shared
            .as_ref()
            .map_or(ApiState::Outage, |s| s.health.state())
    }

    /// Whether the first full pod list has been applied.
    pub fn synced(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.synced.load(Ordering::Acquire))
    }

    /// Waits until the first pod list is applied (start-up, tests); false on timeout.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let mut rx = shared.updates.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if self.synced() {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Cache size (entries and estimated bytes).
    pub fn cache_stats(&self) -> CacheStats {
        self.shared
            .as_ref()
            .map(|s| s.index().stats())
            .unwrap_or_default()
    }

    /// Drops expired tombstones now (the background task does this
    /// periodically); returns how many were removed.
    pub fn purge_now(&self) -> usize {
        let Some(shared) = &self.shared else { return 0 };
        let n = shared.index_mut().purge(Instant::now());
        shared.update_gauges();
        n
    }

    /// The metric set this enricher updates.
    pub fn metrics(&self) -> Option<&K8sMetrics> {
        self.shared.as_ref().map(|s| &s.metrics)
    }
}

/// [`K8sEnricher::answer_now`]'s answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The pod is cached: its metadata (and the container's, when matched).
    Found(K8s, Option<Container>),
    /// A pod that will not be waited for (host mode, API outage, a recent
    /// timeout, no wait configured): the UID only.
    Unresolved(K8s),
    /// A pod not cached yet that may still arrive through the watch (the
    /// normalised UID).
    Wait(String),
    /// Not a pod as far as we know (no pod UID, unknown container).
    NotPod,
}

/// Purges expired tombstones and refreshes the cache gauges.
async fn purge(shared: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        shared.index_mut().purge(Instant::now());
        shared.update_gauges();
    }
}
