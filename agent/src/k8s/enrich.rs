//! Filling the event model's `k8s` and `container` sections from the cache.

use crate::model::{Container, Image, K8s, K8sNamespace, MetadataStatus, Named, Pod};

use super::index::{PodIndex, PodMeta};

fn named(n: &Option<String>) -> Option<Named> {
    n.as_ref().map(|name| Named { name: name.clone() })
}

/// `k8s` (+ `container` when the container id matched) for a cached pod.
pub fn resolved(
    index: &PodIndex,
    pod: &PodMeta,
    container_id: Option<&str>,
    node: &str,
) -> (K8s, Option<Container>) {
    let container = container_id.and_then(|id| pod.container(id));
    let w = &pod.workload;
    let k8s = K8s {
        pod: Pod {
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            labels: pod.labels.clone(),
            service_account: pod.service_account.clone(),
        },
        namespace: Some(K8sNamespace {
            name: pod.namespace.clone(),
            labels: index
                .namespace_labels(&pod.namespace)
                .cloned()
                .unwrap_or_default(),
        }),
        node: Some(Named {
            name: if pod.node.is_empty() {
                node.to_string()
            } else {
                pod.node.clone()
            },
        }),
        container: container.map(|c| Named {
            name: c.name.clone(),
        }),
        deployment: named(&w.deployment),
        replicaset: named(&w.replicaset),
        statefulset: named(&w.statefulset),
        daemonset: named(&w.daemonset),
        job: named(&w.job),
        cronjob: named(&w.cronjob),
        metadata: MetadataStatus::Resolved,
        metadata_wait_ms: None,
    };
    let container = container.map(|c| Container {
        id: c.id.clone(),
        runtime: c.runtime.clone(),
        name: c.name.clone(),
        image: (!c.image.is_empty()).then(|| Image {
            name: c.image.clone(),
        }),
        privileged: Some(c.privileged),
    });
    (k8s, container)
}

/// `k8s` for a pod known only by the UID in its cgroup path.
pub fn unresolved(pod_uid: &str, node: &str) -> K8s {
    K8s {
        pod: Pod {
            uid: pod_uid.to_string(),
            ..Pod::default()
        },
        node: (!node.is_empty()).then(|| Named {
            name: node.to_string(),
        }),
        metadata: MetadataStatus::Unresolved,
        ..K8s::default()
    }
}
