//! The pod metadata cache: pods of this node by UID and by container id, with
//! tombstones for deleted pods and a hard size bound.
//!
//! Everything the enricher needs from a pod is copied into a compact
//! [`PodMeta`] (no status, spec or managed fields), so thousands of pods cost
//! a few MiB. Deleted pods stay as tombstones for a TTL because the kernel
//! events of a short-lived pod are often processed after its DELETED watch
//! event.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    mem::size_of,
    sync::Arc,
    time::{Duration, Instant},
};

/// Old container ids kept per pod (restarted containers), so in-flight events
/// of a previous container instance still resolve, without unbounded growth in
/// crash loops.
const MAX_CONTAINERS_PER_POD: usize = 32;

/// One container of a pod (from containerStatuses and the pod spec).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    /// Bare container id (runtime prefix stripped).
    pub id: String,
    /// `containerd`, `cri-o`, `docker` (from the id's URI scheme).
    pub runtime: String,
    /// Container name in the pod spec.
    pub name: String,
    /// Image reference as written in the pod spec (status image as fallback).
    pub image: String,
    /// `securityContext.privileged: true` in the pod spec.
    pub privileged: bool,
}

/// The workload that owns a pod, resolved through ownerReferences.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub replicaset: Option<String>,
    pub deployment: Option<String>,
    pub statefulset: Option<String>,
    pub daemonset: Option<String>,
    pub job: Option<String>,
    pub cronjob: Option<String>,
}

/// What the enricher keeps of one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub containers: Vec<ContainerMeta>,
    pub workload: Workload,
}

impl PodMeta {
    /// The container with this id, if the pod has (or had) it.
    pub fn container(&self, id: &str) -> Option<&ContainerMeta> {
        self.containers.iter().find(|c| c.id == id)
    }

    /// Rough heap + inline size, for the cache-size gauge.
    fn approx_bytes(&self) -> usize {
        let strings = self.uid.capacity()
            + self.name.capacity()
            + self.namespace.capacity()
            + self.node.capacity()
            + self.service_account.capacity();
        // A BTreeMap entry costs its key and value plus roughly a third of a
        // node's bookkeeping; 32 bytes per entry is a fair average.
        let labels: usize = self
            .labels
            .iter()
            .map(|(k, v)| k.capacity() + v.capacity() + 2 * size_of::<String>() + 32)
            .sum();
        let containers: usize = self
            .containers
            .iter()
            .map(|c| {
                size_of::<ContainerMeta>()
                    + c.id.capacity()
                    + c.runtime.capacity()
                    + c.name.capacity()
                    + c.image.capacity()
            })
            .sum();
        let w = &self.workload;
        let workload: usize = [
            &w.replicaset,
            &w.deployment,
            &w.statefulset,
            &w.daemonset,
            &w.job,
            &w.cronjob,
        ]
        .iter()
        .map(|o| o.as_ref().map_or(0, String::capacity))
        .sum();
        size_of::<PodMeta>() + strings + labels + containers + workload
    }
}

/// What [`PodIndex::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    Inserted,
    Updated,
    /// The cache is full of live pods: this pod is not cached (counted and logged by the caller).
    Dropped,
}

/// Cache size, for metrics and the memory test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Pods not deleted.
    pub live_pods: usize,
    /// Deleted pods still resolvable.
    pub tombstones: usize,
    /// Entries in the container-id index.
    pub containers: usize,
    /// Namespaces with labels cached.
    pub namespaces: usize,
    /// Estimated bytes held by the cache (entries, strings, map overhead).
    pub approx_bytes: usize,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<PodMeta>,
    deleted_at: Option<Instant>,
}

/// Pods of this node by UID and container id, plus namespace labels.
#[derive(Debug)]
pub struct PodIndex {
    pods: HashMap<String, Entry>,
    containers: HashMap<String, String>,
    /// Deletion order, for TTL purge and eviction of the oldest tombstones.
    /// Stale items (pod re-added or already purged) are skipped.
    tombstones: VecDeque<(Instant, String)>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    max_pods: usize,
    ttl: Duration,
}

impl PodIndex {
    pub fn new(max_pods: usize, ttl: Duration) -> Self {
        Self {
            pods: HashMap::new(),
            containers: HashMap::new(),
            tombstones: VecDeque::new(),
            namespaces: HashMap::new(),
            max_pods: max_pods.max(1),
            ttl,
        }
    }

    /// Inserts or replaces a pod. Container ids the pod had before stay
    /// indexed (bounded), so events of a restarted container's previous
    /// instance still resolve.
    pub fn apply(&mut self, mut pod: PodMeta, now: Instant) -> ApplyOutcome {
        let uid = pod.uid.clone();
        let outcome = match self.pods.get(&uid) {
            Some(old) => {
                for c in &old.pod.containers {
                    if pod.containers.len() >= MAX_CONTAINERS_PER_POD {
                        break;
                    }
                    if pod.container(&c.id).is_none() {
                        pod.containers.push(c.clone());
                    }
                }
                ApplyOutcome::Updated
            }
            None => {
                if self.pods.len() >= self.max_pods {
                    self.purge(now);
                    while self.pods.len() >= self.max_pods && self.evict_oldest_tombstone() {}
                    if self.pods.len() >= self.max_pods {
                        return ApplyOutcome::Dropped;
                    }
                }
                ApplyOutcome::Inserted
            }
        };
        pod.containers.truncate(MAX_CONTAINERS_PER_POD);
        let dropped: Vec<String> = self
            .pods
            .get(&uid)
            .map(|old| {
                old.pod
                    .containers
                    .iter()
                    .filter(|c| pod.container(&c.id).is_none())
                    .map(|c| c.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for id in &dropped {
            self.unindex_container(id, &uid);
        }
        for c in &pod.containers {
            if !c.id.is_empty() {
                self.containers.insert(c.id.clone(), uid.clone());
            }
        }
        self.pods.insert(
            uid,
            Entry {
                pod: Arc::new(pod),
                deleted_at: None,
            },
        );
        outcome
    }

    /// Marks a pod deleted: it stays resolvable until the TTL expires.
    /// Returns false when the pod was unknown or already deleted.
    pub fn delete(&mut self, uid: &str, now: Instant) -> bool {
        match self.pods.get_mut(uid) {
            Some(e) if e.deleted_at.is_none() => {
                e.deleted_at = Some(now);
                self.tombstones.push_back((now, uid.to_string()));
                true
            }
            _ => false,
        }
    }

    /// After a full re-list: pods cached as live but absent from the list were
    /// deleted while the watch was down; tombstone them. Returns how many.
    pub fn retain_listed(&mut self, listed: &HashSet<String>, now: Instant) -> usize {
        let gone: Vec<String> = self
            .pods
            .iter()
            .filter(|(uid, e)| e.deleted_at.is_none() && !listed.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &gone {
            self.delete(uid, now);
        }
        gone.len()
    }

    /// Drops tombstones older than the TTL. Returns how many were removed.
    pub fn purge(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while let Some((at, _)) = self.tombstones.front() {
            if now.saturating_duration_since(*at) < self.ttl {
                break;
            }
            if self.evict_oldest_tombstone() {
                removed += 1;
            }
        }
        if removed > 0 {
            self.shrink();
        }
        removed
    }

    /// Gives memory back after mass deletions (a drained node): hash tables
    /// and the queue keep their peak capacity otherwise.
    fn shrink(&mut self) {
        if self.pods.capacity() > 64 && self.pods.len() < self.pods.capacity() / 4 {
            self.pods.shrink_to_fit();
            self.containers.shrink_to_fit();
        }
        if self.tombstones.capacity() > 64 && self.tombstones.len() < self.tombstones.capacity() / 4
        {
            self.tombstones.shrink_to_fit();
        }
    }

    /// Removes the oldest queued tombstone (skipping stale queue items).
    /// Returns false when no tombstone is left.
    fn evict_oldest_tombstone(&mut self) -> bool {
        while let Some((at, uid)) = self.tombstones.pop_front() {
            let current = self
                .pods
                .get(&uid)
                .is_some_and(|e| e.deleted_at == Some(at));
            if current {
                if let Some(e) = self.pods.remove(&uid) {
                    for c in &e.pod.containers {
                        self.unindex_container(&c.id, &uid);
                    }
                }
                return true;
            }
        }
        false
    }

    fn unindex_container(&mut self, id: &str, uid: &str) {
        if self.containers.get(id).is_some_and(|owner| owner == uid) {
            self.containers.remove(id);
        }
    }

    /// The pod (live or tombstoned) running this container.
    pub fn by_container(&self, id: &str) -> Option<&Arc<PodMeta>> {
        let uid = self.containers.get(id)?;
        self.pods.get(uid).map(|e| &e.pod)
    }

    /// The pod (live or tombstoned) with this UID.
    pub fn by_uid(&self, uid: &str) -> Option<&Arc<PodMeta>> {
        self.pods.get(uid).map(|e| &e.pod)
    }

    /// Live (not deleted) pods.
    pub fn live(&self) -> impl Iterator<Item = &Arc<PodMeta>> {
        self.pods
            .values()
            .filter(|e| e.deleted_at.is_none())
            .map(|e| &e.pod)
    }

    /// Whether the pod is a tombstone (deleted, still resolvable).
    pub fn is_deleted(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|e| e.deleted_at.is_some())
    }

    pub fn apply_namespace(&mut self, name: String, labels: BTreeMap<String, String>) {
        self.namespaces.insert(name, labels);
    }

    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// After a namespace re-list: forget namespaces not listed.
    pub fn retain_namespaces(&mut self, listed: &HashSet<String>) {
        self.namespaces.retain(|n, _| listed.contains(n));
    }

    pub fn namespace_labels(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces.get(name)
    }

    pub fn stats(&self) -> CacheStats {
        let tombstones = self
            .pods
            .values()
            .filter(|e| e.deleted_at.is_some())
            .count();
        let pods: usize = self
            .pods
            .iter()
            .map(|(k, e)| {
                k.capacity()
                    + size_of::<String>()
                    + size_of::<Entry>()
                    + 2 * size_of::<usize>()
                    + e.pod.approx_bytes()
            })
            .sum();
        let containers: usize = self
            .containers
            .iter()
            .map(|(k, v)| k.capacity() + v.capacity() + 2 * size_of::<String>() + 8)
            .sum();
        let namespaces: usize = self
            .namespaces
            .iter()
            .map(|(k, l)| {
                k.capacity()
                    + l.iter()
                        .map(|(a, b)| a.capacity() + b.capacity() + 80)
                        .sum::<usize>()
                    + 80
            })
            .sum();
        let queue = self.tombstones.capacity() * size_of::<(Instant, String)>();
        CacheStats {
            live_pods: self.pods.len() - tombstones,
            tombstones,
            containers: self.containers.len(),
            namespaces: self.namespaces.len(),
            approx_bytes: pods + containers + namespaces + queue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, ids: &[&str]) -> PodMeta {
        PodMeta {
            uid: uid.into(),
            name: format!("pod-{uid}"),
            namespace: "default".into(),
            containers: ids
                .iter()
                .map(|id| ContainerMeta {
                    id: (*id).into(),
                    runtime: "containerd".into(),
                    name: "app".into(),
                    image: "nginx".into(),
                    privileged: false,
                })
                .collect(),
            ..PodMeta::default()
        }
    }

    #[test]
    fn tombstones_resolve_until_ttl() {
        let t0 = Instant::now();
        let mut ix = PodIndex::new(10, Duration::from_secs(60));
        assert_eq!(ix.apply(pod("u1", &["c1"]), t0), ApplyOutcome::Inserted);
        assert!(ix.delete("u1", t0));
        assert!(!ix.delete("u1", t0));
        assert_eq!(ix.by_container("c1").map(|p| p.uid.as_str()), Some("u1"));
        assert!(ix.is_deleted("u1"));
        assert_eq!(ix.purge(t0 + Duration::from_secs(59)), 0);
        assert_eq!(ix.purge(t0 + Duration::from_secs(60)), 1);
        assert!(ix.by_container("c1").is_none());
        assert!(ix.by_uid("u1").is_none());
        assert_eq!(ix.stats().containers, 0);
    }

    #[test]
    fn restarted_container_ids_stay_indexed() {
        let t0 = Instant::now();
        let mut ix = PodIndex::new(10, Duration::from_secs(60));
        ix.apply(pod("u1", &["old"]), t0);
        assert_eq!(ix.apply(pod("u1", &["new"]), t0), ApplyOutcome::Updated);
        assert_eq!(ix.by_container("old").map(|p| p.uid.as_str()), Some("u1"));
        assert_eq!(ix.by_container("new").map(|p| p.uid.as_str()), Some("u1"));
    }

    #[test]
    fn full_cache_evicts_tombstones_then_drops() {
        let t0 = Instant::now();
        let mut ix = PodIndex::new(2, Duration::from_secs(60));
        ix.apply(pod("u1", &["c1"]), t0);
        ix.apply(pod("u2", &["c2"]), t0);
        ix.delete("u1", t0);
        assert_eq!(ix.apply(pod("u3", &["c3"]), t0), ApplyOutcome::Inserted);
        assert!(ix.by_uid("u1").is_none());
        assert!(ix.by_container("c1").is_none());
        assert_eq!(ix.apply(pod("u4", &["c4"]), t0), ApplyOutcome::Dropped);
        assert_eq!(ix.stats().live_pods, 2);
    }

    #[test]
    fn relist_tombstones_missing_pods() {
        let t0 = Instant::now();
        let mut ix = PodIndex::new(10, Duration::from_secs(60));
        ix.apply(pod("u1", &["c1"]), t0);
        ix.apply(pod("u2", &["c2"]), t0);
        let listed: HashSet<String> = ["u2".to_string()].into();
        assert_eq!(ix.retain_listed(&listed, t0), 1);
        assert!(ix.is_deleted("u1"));
        assert!(!ix.is_deleted("u2"));
        let s = ix.stats();
        assert_eq!((s.live_pods, s.tombstones, s.containers), (1, 1, 2));
    }

    #[test]
    fn readded_pod_is_not_purged_by_stale_tombstone() {
        let t0 = Instant::now();
        let mut ix = PodIndex::new(10, Duration::from_secs(1));
        ix.apply(pod("u1", &["c1"]), t0);
        ix.delete("u1", t0);
        ix.apply(pod("u1", &["c1"]), t0);
        assert_eq!(ix.purge(t0 + Duration::from_secs(5)), 0);
        assert!(ix.by_uid("u1").is_some());
    }
}
