//! Pod-level actions through the API server: isolate (label + deny-all
//! NetworkPolicy), delete, and the Kubernetes Event that records each action
//! on the pod.
//!
//! RBAC: these calls need `patch`/`delete` on pods, `get`/`create` on
//! networkpolicies and `create` on events, which belong in a separate role
//! bound only when containment is enabled.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{Event, ObjectReference, Pod},
        networking::v1::{NetworkPolicy, NetworkPolicySpec},
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, MicroTime, ObjectMeta, Time},
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
};

/// Label set on isolated pods (value `"true"`).
pub const QUARANTINE_LABEL: &str = "picket.io/quarantine";
/// Name of the deny-all NetworkPolicy created per namespace.
pub const QUARANTINE_POLICY: &str = "picket-quarantine";
/// `reason` of the Events Picket posts.
pub const EVENT_REASON: &str = "PicketContainment";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("{op} {what}: {source}")]
    Api {
        op: &'static str,
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// The deny-all NetworkPolicy selecting quarantined pods: both policy types
/// and no rules, so nothing is allowed in or out.
pub fn quarantine_policy(namespace: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(QUARANTINE_POLICY.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".into(),
                "picket".into(),
            )])),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(QUARANTINE_LABEL.into(), "true".into())])),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: None,
            egress: None,
        }),
    }
}

/// The merge patch that labels (`Some("true")`) or unlabels (`None`) a pod.
pub fn quarantine_patch(on: bool) -> serde_json::Value {
    let v = if on {
        serde_json::Value::String("true".into())
    } else {
        serde_json::Value::Null
    };
    serde_json::json!({ "metadata": { "labels": { QUARANTINE_LABEL: v } } })
}

/// API-server actions.
#[derive(Clone)]
pub struct KubeActions {
    client: Client,
    /// `source.host` / `reportingInstance` of Events.
    pub node_name: String,
}

impl KubeActions {
    pub fn new(client: Client, node_name: impl Into<String>) -> Self {
        Self {
            client,
            node_name: node_name.into(),
        }
    }

    /// The pod's UID and labels (`None`: no such pod).
    pub async fn pod_info(
        &self,
        ns: &str,
        pod: &str,
    ) -> Result<Option<(String, BTreeMap<String, String>)>, KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let p = pods.get_opt(pod).await.map_err(|source| KubeError::Api {
            op: "reading pod",
            what: format!("{ns}/{pod}"),
            source,
        })?;
        Ok(p.map(|p| {
            (
                p.metadata.uid.unwrap_or_default(),
                p.metadata.labels.unwrap_or_default(),
            )
        }))
    }

    /// Labels the pod and makes sure the namespace has the deny-all policy.
    /// Returns whether the policy was created (false: it existed).
    pub async fn isolate(&self, ns: &str, pod: &str) -> Result<bool, KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        pods.patch(
            pod,
            &PatchParams::default(),
            &Patch::Merge(quarantine_patch(true)),
        )
        .await
        .map_err(|source| KubeError::Api {
            op: "patching labels of pod",
            what: format!("{ns}/{pod}"),
            source,
        })?;
        let policies: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), ns);
        let what = || format!("{ns}/{QUARANTINE_POLICY}");
        if policies
            .get_opt(QUARANTINE_POLICY)
            .await
            .map_err(|source| KubeError::Api {
                op: "reading NetworkPolicy",
                what: what(),
                source,
            })?
            .is_some()
        {
            return Ok(false);
        }
        match policies
            .create(&PostParams::default(), &quarantine_policy(ns))
            .await
        {
            Ok(_) => Ok(true),
            // Created concurrently (another node's agent): fine.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(source) => Err(KubeError::Api {
                op: "creating NetworkPolicy",
                what: what(),
                source,
            }),
        }
    }

    /// Removes the quarantine label (the namespace policy stays: it selects
    /// nothing once no pod has the label).
    pub async fn unisolate(&self, ns: &str, pod: &str) -> Result<(), KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        pods.patch(
            pod,
            &PatchParams::default(),
            &Patch::Merge(quarantine_patch(false)),
        )
        .await
        .map(drop)
        .map_err(|source| KubeError::Api {
            op: "removing the quarantine label of pod",
            what: format!("{ns}/{pod}"),
            source,
        })
    }

    /// Deletes the pod, only if it still has `uid` (when known).
    pub async fn delete(
        &self,
        ns: &str,
        pod: &str,
        uid: Option<&str>,
        grace_period_seconds: u32,
    ) -> Result<(), KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(grace_period_seconds),
            preconditions: uid.map(|u| Preconditions {
                uid: Some(u.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        pods.delete(pod, &dp)
            .await
            .map(drop)
            .map_err(|source| KubeError::Api {
                op: "deleting pod",
                what: format!("{ns}/{pod}"),
                source,
            })
    }

    /// Posts a core/v1 Event on the pod.
    pub async fn event(
        &self,
        ns: &str,
        pod: &str,
        uid: Option<&str>,
        warning: bool,
        action: &str,
        message: &str,
    ) -> Result<(), KubeError> {
        let ev = pod_event(
            ns,
            pod,
            uid,
            warning,
            action,
            message,
            &self.node_name,
            jiff::Timestamp::now(),
        );
        let events: Api<Event> = Api::namespaced(self.client.clone(), ns);
        events
            .create(&PostParams::default(), &ev)
            .await
            .map(drop)
            .map_err(|source| KubeError::Api {
                op: "creating Event for pod",
                what: format!("{ns}/{pod}"),
                source,
            })
    }
}

/// The Event recording a containment action on a pod.
#[allow(clippy::too_many_arguments)]
pub fn pod_event(
    ns: &str,
    pod: &str,
    uid: Option<&str>,
    warning: bool,
    action: &str,
    message: &str,
    node: &str,
    now: jiff::Timestamp,
) -> Event {
    let nanos = now.as_nanosecond();
    Event {
        metadata: ObjectMeta {
            // Same naming as kubectl/kubelet: <object>.<unique hex>.
            name: Some(format!("{pod}.{:x}", nanos as u64)),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            namespace: Some(ns.into()),
            uid: uid.map(str::to_string),
            ..Default::default()
        },
        reason: Some(EVENT_REASON.into()),
        action: Some(action.into()),
        message: Some(message.into()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("picket".into()),
            host: Some(node.into()),
        }),
        reporting_component: Some("picket.io/agent".into()),
        reporting_instance: Some(node.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_denies_everything_for_the_label() {
        let v = serde_json::to_value(quarantine_policy("shop")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {
                    "name": "picket-quarantine",
                    "namespace": "shop",
                    "labels": {"app.kubernetes.io/managed-by": "picket"}
                },
                "spec": {
                    "podSelector": {"matchLabels": {"picket.io/quarantine": "true"}},
                    "policyTypes": ["Ingress", "Egress"]
                }
            })
        );
    }

    #[test]
    fn patches() {
        assert_eq!(
            quarantine_patch(true),
            serde_json::json!({"metadata": {"labels": {"picket.io/quarantine": "true"}}})
        );
        assert_eq!(
            quarantine_patch(false),
            serde_json::json!({"metadata": {"labels": {"picket.io/quarantine": null}}})
        );
    }

    #[test]
    fn event_shape() {
        let now: jiff::Timestamp = "2026-11-22T06:00:00Z".parse().unwrap();
        let v = serde_json::to_value(pod_event(
            "shop",
            "web-1",
            Some("u-1"),
            true,
            "isolate-pod",
            "isolated",
            "node-a",
            now,
        ))
        .unwrap();
        assert_eq!(
            v["involvedObject"],
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "name": "web-1", "namespace": "shop", "uid": "u-1"})
        );
        assert_eq!(v["reason"], "PicketContainment");
        assert_eq!(v["type"], "Warning");
        assert_eq!(v["action"], "isolate-pod");
        assert_eq!(
            v["source"],
            serde_json::json!({"component": "picket", "host": "node-a"})
        );
        assert_eq!(v["firstTimestamp"], "2026-11-22T06:00:00Z");
        assert!(
            v["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("web-1.")
        );
    }
}
