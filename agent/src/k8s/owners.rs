//! Workload resolution through ownerReferences: ReplicaSet -> Deployment and
//! Job -> CronJob need one GET of the intermediate object; the answer is
//! cached by the owner's UID so it costs one API call per ReplicaSet/Job,
//! never one per pod or per event.

use std::{collections::HashMap, time::Duration};

use k8s_openapi::{
    api::{apps::v1::ReplicaSet, batch::v1::Job, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{Api, Client, Resource};
use tracing::{debug, warn};

use super::{index::Workload, metrics::K8sMetrics};

/// Cached owners beyond this are forgotten all at once (re-fetched lazily);
/// a node never has nearly this many ReplicaSets/Jobs in use.
const MAX_CACHED_OWNERS: usize = 4096;

/// Label the Deployment controller puts on pods; its ReplicaSets are named
/// `<deployment>-<hash>`.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Why an owner lookup failed (logged and counted; resolution falls back).
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("GET {kind} {namespace}/{name} failed: {source}")]
    Api {
        kind: String,
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("GET {kind} {namespace}/{name} timed out after {timeout:?}")]
    Timeout {
        kind: String,
        namespace: String,
        name: String,
        timeout: Duration,
    },
}

/// Resolves and caches the parents of ReplicaSets and Jobs.
pub struct OwnerResolver {
    client: Client,
    timeout: Duration,
    metrics: K8sMetrics,
    /// Owner UID -> name of its own controller (`None`: it has none, or it is
    /// gone / forbidden and no fallback applies).
    cache: HashMap<String, Option<String>>,
}

/// The controlling owner reference (or the first one when none is marked).
fn controller(refs: &[OwnerReference]) -> Option<&OwnerReference> {
    refs.iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())
}

impl OwnerResolver {
    pub fn new(client: Client, timeout: Duration, metrics: K8sMetrics) -> Self {
        Self {
            client,
            timeout,
            metrics,
            cache: HashMap::new(),
        }
    }

    /// Entries in the owner cache (tests, debugging).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The workload of a pod.
    pub async fn resolve(&mut self, pod: &Pod) -> Workload {
        let mut w = Workload::default();
        let refs = pod.metadata.owner_references.as_deref().unwrap_or_default();
        let Some(owner) = controller(refs) else {
            return w;
        };
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        match owner.kind.as_str() {
            "ReplicaSet" => {
                let hash = pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(POD_TEMPLATE_HASH))
                    .map(String::as_str);
                w.deployment = self
                    .parent::<ReplicaSet>(namespace, owner, "Deployment", hash)
                    .await;
                w.replicaset = Some(owner.name.clone());
            }
            "Job" => {
                w.cronjob = self.parent::<Job>(namespace, owner, "CronJob", None).await;
                w.job = Some(owner.name.clone());
            }
            "StatefulSet" => w.statefulset = Some(owner.name.clone()),
            "DaemonSet" => w.daemonset = Some(owner.name.clone()),
            _ => {}
        }
        w
    }

    /// The name of `owner`'s controller of kind `parent_kind`, from the cache
    /// or one GET. `template_hash`: fall back to the Deployment naming
    /// convention when the ReplicaSet cannot be read.
    async fn parent<K>(
        &mut self,
        namespace: &str,
        owner: &OwnerReference,
        parent_kind: &str,
        template_hash: Option<&str>,
    ) -> Option<String>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        if let Some(hit) = self.cache.get(&owner.uid) {
            return hit.clone();
        }
        let fallback = template_hash
            .and_then(|h| owner.name.strip_suffix(h))
            .and_then(|p| p.strip_suffix('-'))
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        self.metrics.owner_requests.inc();
        let (answer, cacheable) = match self.get::<K>(namespace, &owner.name).await {
            Ok(Some(obj)) => {
                let refs = obj.meta().owner_references.as_deref().unwrap_or_default();
                let parent = controller(refs)
                    .filter(|r| r.kind == parent_kind)
                    .map(|r| r.name.clone());
                (parent, true)
            }
            Ok(None) => {
                self.metrics.owner_errors.inc();
                debug!(kind = %owner.kind, %namespace, name = %owner.name, "owner not found; using the naming convention");
                (fallback, true)
            }
            Err(e) => {
                self.metrics.owner_errors.inc();
                // 403 will not change without an RBAC fix: cache it. Other
                // errors are transient: retry with the next pod.
                let forbidden = matches!(&e, OwnerError::Api { source: kube::Error::Api(s), .. } if s.code == 403);
                warn!(error = %e, "cannot resolve the owning workload; using the naming convention");
                (fallback, forbidden)
            }
        };
        if cacheable {
            if self.cache.len() >= MAX_CACHED_OWNERS {
                self.cache.clear();
            }
            self.cache.insert(owner.uid.clone(), answer.clone());
        }
        answer
    }

    async fn get<K>(&self, namespace: &str, name: &str) -> Result<Option<K>, OwnerError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let kind = K::kind(&()).into_owned();
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        match tokio::time::timeout(self.timeout, api.get_opt(name)).await {
            Ok(Ok(obj)) => Ok(obj),
            Ok(Err(source)) => Err(OwnerError::Api {
                kind,
                namespace: namespace.into(),
                name: name.into(),
                source,
            }),
            Err(_) => Err(OwnerError::Timeout {
                kind,
                namespace: namespace.into(),
                name: name.into(),
                timeout: self.timeout,
            }),
        }
    }
}
