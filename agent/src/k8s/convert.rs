//! From API objects (k8s-openapi `Pod`) to the compact cache entries.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, SecurityContext};

use super::index::{ContainerMeta, PodMeta, Workload};

/// Splits a status `containerID` (`containerd://<hex>`) into runtime and bare id.
/// Ids without a scheme are returned as they are with an empty runtime.
pub fn split_container_id(raw: &str) -> (&str, &str) {
    match raw.split_once("://") {
        Some((runtime, id)) => (runtime, id),
        None => ("", raw),
    }
}

/// Strips a runtime prefix (`containerd://`, `cri-o://`, `docker://`) if present,
/// so callers can pass ids in either form.
pub fn bare_container_id(raw: &str) -> &str {
    split_container_id(raw).1
}

/// Copies what the enricher needs out of a pod. `None` when the pod has no
/// UID (never from a real API server; such an object cannot be indexed).
/// The workload is filled in later by the owner resolver.
pub fn pod_meta(pod: &Pod) -> Option<PodMeta> {
    let meta = &pod.metadata;
    let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
    let spec = pod.spec.as_ref();
    // Per container name: (image, privileged) from the spec.
    let mut specs: HashMap<&str, (&str, bool)> = HashMap::new();
    let privileged = |sc: Option<&SecurityContext>| sc.and_then(|s| s.privileged) == Some(true);
    if let Some(spec) = spec {
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            specs.insert(
                c.name.as_str(),
                (
                    c.image.as_deref().unwrap_or(""),
                    privileged(c.security_context.as_ref()),
                ),
            );
        }
        for c in spec.ephemeral_containers.iter().flatten() {
            specs.insert(
                c.name.as_str(),
                (
                    c.image.as_deref().unwrap_or(""),
                    privileged(c.security_context.as_ref()),
                ),
            );
        }
    }
    let mut containers = Vec::new();
    if let Some(status) = &pod.status {
        let all = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .chain(status.ephemeral_container_statuses.iter().flatten());
        for cs in all {
            if let Some(c) = container_meta(cs, &specs) {
                containers.push(c);
            }
        }
    }
    Some(PodMeta {
        uid,
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        service_account: spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
        containers,
        workload: Workload::default(),
    })
}

fn container_meta(
    cs: &ContainerStatus,
    specs: &HashMap<&str, (&str, bool)>,
) -> Option<ContainerMeta> {
    let raw = cs.container_id.as_deref().filter(|s| !s.is_empty())?;
    let (runtime, id) = split_container_id(raw);
    if id.is_empty() {
        return None;
    }
    let spec = specs.get(cs.name.as_str()).copied();
    let image = spec
        .map(|(i, _)| i)
        .filter(|i| !i.is_empty())
        .unwrap_or(cs.image.as_str());
    Some(ContainerMeta {
        id: id.to_string(),
        runtime: runtime.to_string(),
        name: cs.name.clone(),
        image: image.to_string(),
        privileged: spec.is_some_and(|(_, p)| p),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        Container, ContainerStatus, EphemeralContainer, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn status(name: &str, id: Option<&str>, image: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            container_id: id.map(Into::into),
            image: image.into(),
            ..Default::default()
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            split_container_id("containerd://abc"),
            ("containerd", "abc")
        );
        assert_eq!(split_container_id("cri-o://abc"), ("cri-o", "abc"));
        assert_eq!(split_container_id("docker://abc"), ("docker", "abc"));
        assert_eq!(split_container_id("abc"), ("", "abc"));
        assert_eq!(bare_container_id("containerd://abc"), "abc");
    }

    #[test]
    fn all_status_kinds_are_indexed() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                service_account_name: Some("web-sa".into()),
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("nginx:1.27".into()),
                    ..Default::default()
                }],
                init_containers: Some(vec![Container {
                    name: "init".into(),
                    image: Some("busybox:1.36".into()),
                    ..Default::default()
                }]),
                ephemeral_containers: Some(vec![EphemeralContainer {
                    name: "debug".into(),
                    image: Some("alpine:3".into()),
                    security_context: Some(SecurityContext {
                        privileged: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(vec![status(
                    "app",
                    Some("containerd://aaa"),
                    "docker.io/library/nginx:1.27",
                )]),
                init_container_statuses: Some(vec![status("init", Some("cri-o://bbb"), "busybox")]),
                ephemeral_container_statuses: Some(vec![
                    status("debug", Some("docker://ccc"), "alpine"),
                    status("waiting", None, "x"),
                ]),
                ..Default::default()
            }),
        };
        let m = pod_meta(&pod).expect("pod has a uid");
        assert_eq!(
            (
                m.name.as_str(),
                m.namespace.as_str(),
                m.node.as_str(),
                m.service_account.as_str()
            ),
            ("web", "shop", "node-a", "web-sa")
        );
        let got: Vec<(&str, &str, &str, &str)> = m
            .containers
            .iter()
            .map(|c| {
                (
                    c.id.as_str(),
                    c.runtime.as_str(),
                    c.name.as_str(),
                    c.image.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("aaa", "containerd", "app", "nginx:1.27"),
                ("bbb", "cri-o", "init", "busybox:1.36"),
                ("ccc", "docker", "debug", "alpine:3"),
            ]
        );
        // `container.privileged`: only the container whose spec says so.
        let privileged: Vec<bool> = m.containers.iter().map(|c| c.privileged).collect();
        assert_eq!(privileged, [false, false, true]);
    }

    #[test]
    fn pod_without_uid_is_skipped() {
        assert!(pod_meta(&Pod::default()).is_none());
    }
}
