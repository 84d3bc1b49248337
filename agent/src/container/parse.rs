//! Container and pod attribution from a cgroup path.
//!
//! Container runtimes and the kubelet name cgroups after the container id
//! and pod UID, so the cgroup of a process says which container and pod it
//! belongs to without asking any daemon. The formats differ by runtime and
//! by cgroup driver (systemd slices/scopes vs. cgroupfs directories) and
//! are matched per path component here.

use std::fmt;

use crate::model;

/// The container runtime that named the cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Podman,
}

impl Runtime {
    /// The schema's `container.runtime` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kubernetes QoS class of a pod, from the kubelet's cgroup layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// A container named by a cgroup path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// Full 64-hex container id (lower case).
    pub id: String,
    /// `None` when the path format is shared by several runtimes: a bare id
    /// under `kubepods` (cgroupfs driver) is written by both containerd and
    /// docker.
    pub runtime: Option<Runtime>,
}

/// A pod named by a kubelet cgroup path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodRef {
    /// Pod UID as the API server spells it (`-` separated).
    pub uid: String,
    /// From the kubelet's layout: pods directly under `kubepods` are
    /// Guaranteed, the others sit under `besteffort`/`burstable`.
    pub qos: QosClass,
}

/// What a cgroup path says about containers and pods (at least one of the
/// two is set).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CgroupAttribution {
    /// `None` for a pod-level cgroup (or a runtime monitor's).
    pub container: Option<ContainerRef>,
    /// `None` outside Kubernetes (docker, podman).
    pub pod: Option<PodRef>,
}

impl CgroupAttribution {
    /// The schema's `container` section (`None` for a pod-level cgroup).
    pub fn container_model(&self) -> Option<model::Container> {
        self.container.as_ref().map(|c| model::Container {
            id: c.id.clone(),
            runtime: c.runtime.map(|r| r.as_str().to_owned()).unwrap_or_default(),
            ..Default::default()
        })
    }

    /// The pod UID, for `k8s.pod.uid`.
    pub fn pod_uid(&self) -> Option<&str> {
        self.pod.as_ref().map(|p| p.uid.as_str())
    }
}

/// Parses a cgroup path (v1 or v2, relative to the hierarchy root, as in
/// `/proc/<pid>/cgroup`). Returns `None` for host cgroups: paths naming
/// neither a container nor a pod. Runtime monitor cgroups
/// (`crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope`) are not
/// containers. When several components name a container (docker in
/// docker), the deepest one wins: it is the one the process runs in.
pub fn parse_cgroup_path(path: &str) -> Option<CgroupAttribution> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut container: Option<ContainerRef> = None;
    let mut pod: Option<(String, QosClass)> = None;
    let mut under_kubepods = false;
    let mut qos_dir = None;
    for (i, comp) in comps.iter().enumerate() {
        if let Some(slice) = kubepods_slice(comp) {
            under_kubepods = true;
            if slice.qos.is_some() {
                qos_dir = slice.qos;
            }
            if let Some(uid) = slice.pod_uid {
                pod = Some((uid, qos_dir.unwrap_or(QosClass::Guaranteed)));
            }
            continue;
        }
        match *comp {
            "kubepods" => {
                under_kubepods = true;
                continue;
            }
            "besteffort" if under_kubepods => {
                qos_dir = Some(QosClass::BestEffort);
                continue;
            }
            "burstable" if under_kubepods => {
                qos_dir = Some(QosClass::Burstable);
                continue;
            }
            _ => {}
        }
        if under_kubepods && let Some(uid) = comp.strip_prefix("pod").filter(|u| is_pod_uid(u)) {
            pod = Some((uid.to_owned(), qos_dir.unwrap_or(QosClass::Guaranteed)));
            continue;
        }
        let parent = if i > 0 {
            comps.get(i - 1).copied()
        } else {
            None
        };
        if let Some(c) = container_component(comp, parent) {
            container = Some(c);
        }
    }
    if container.is_none() && pod.is_none() {
        return None;
    }
    let pod = pod.map(|(uid, qos)| PodRef { uid, qos });
    Some(CgroupAttribution { container, pod })
}

/// What a kubelet systemd slice says.
struct KubepodsSlice {
    qos: Option<QosClass>,
    pod_uid: Option<String>,
}

/// A kubelet systemd slice: `kubepods.slice`, `kubepods-burstable.slice`,
/// `kubepods-burstable-pod<uid>.slice`, `kubepods-pod<uid>.slice`, also
/// under a custom cgroup root (`kubelet-kubepods-...` in kind). systemd
/// uses `-` to separate slice levels, so the UID's dashes are written `_`.
fn kubepods_slice(comp: &str) -> Option<KubepodsSlice> {
    let name = comp.strip_suffix(".slice")?;
    let mut segs = name.split('-');
    segs.by_ref().find(|s| *s == "kubepods")?;
    let mut out = KubepodsSlice {
        qos: None,
        pod_uid: None,
    };
    for seg in segs {
        match seg {
            "besteffort" if out.qos.is_none() && out.pod_uid.is_none() => {
                out.qos = Some(QosClass::BestEffort)
            }
            "burstable" if out.qos.is_none() && out.pod_uid.is_none() => {
                out.qos = Some(QosClass::Burstable)
            }
            _ if out.pod_uid.is_none() => {
                let uid = seg.strip_prefix("pod")?.replace('_', "-");
                if !is_pod_uid(&uid) {
                    return None;
                }
                out.pod_uid = Some(uid);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A UUID (`8-4-4-4-12` hex) or, for static pods, the 32-hex hash the
/// kubelet uses as their UID.
fn is_pod_uid(s: &str) -> bool {
    let b = s.as_bytes();
    match b.len() {
        32 => b.iter().all(u8::is_ascii_hexdigit),
        36 => b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        }),
        _ => false,
    }
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Prefix of a systemd scope or cgroupfs directory -> runtime. Monitor
/// prefixes must come before the runtime's own (`crio-conmon-` before
/// `crio-`) and are rejected.
const PREFIXES: &[(&str, Option<Runtime>)] = &[
    ("crio-conmon-", None),
    ("libpod-conmon-", None),
    ("cri-containerd-", Some(Runtime::Containerd)),
    ("crio-", Some(Runtime::CriO)),
    ("docker-", Some(Runtime::Docker)),
    ("libpod-", Some(Runtime::Podman)),
];

fn container_component(comp: &str, parent: Option<&str>) -> Option<ContainerRef> {
    let base = comp.strip_suffix(".scope").unwrap_or(comp);
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = base.strip_prefix(prefix) {
            let runtime = (*runtime)?;
            return is_container_id(id).then(|| ContainerRef {
                id: id.to_owned(),
                runtime: Some(runtime),
            });
        }
    }
    if comp.len() != 64 || !is_container_id(comp) {
        return None;
    }
    // A bare id: docker's cgroupfs layout (`/docker/<id>`), or the kubelet
    // cgroupfs layout that containerd and docker share (runtime unknown).
    let runtime = (parent == Some("docker")).then_some(Runtime::Docker);
    Some(ContainerRef {
        id: comp.to_owned(),
        runtime,
    })
}
