//! What the kernel must know about cgroups for kill rules to keep the
//! promises user space keeps: which cgroups hold containers (every one the
//! attribution recognises, not only those below a `kubepods` found at
//! start) and which are protected (the agent's own cgroup, and the pod
//! cgroups of pods in protected namespaces, with protected labels, or the
//! agent's own pod).
//!
//! The facts come from a walk of the cgroup v2 hierarchy joined with the
//! pod watch's cache. [`Scan::compute`] is pure (unit-tested); the
//! containment runtime repeats it on every pod-cache change and on a short
//! timer (new container cgroups appear without any API event), and the
//! engine writes the result to `ENFORCE_CGROUPS` only when it changed.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::container::parse_cgroup_path;

use super::{
    action::{ActionKind, ActionRequest, Target, Trigger},
    cgroups::is_container_root,
    safety::{self, Refusal, SafetyConfig},
};

/// Deepest level walked below the cgroup v2 root.
const MAX_DEPTH: usize = 8;
/// Directories examined per walk at most (a bound on hostile or huge
/// hierarchies; a truncated walk is logged by the caller).
const MAX_ENTRIES: usize = 32_768;

/// One pod as containment needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodFacts {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A cgroup directory that names a container or a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributed {
    /// Path relative to the v2 root, `/`-led (as in `/proc/PID/cgroup`).
    pub rel: String,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
}

/// The result of one walk of the hierarchy.
#[derive(Debug, Default, Clone)]
pub struct Walk {
    /// `kubepods` / `kubepods.slice` directories (id, relative path).
    pub kubepods: Vec<(u64, String)>,
    /// Container and pod cgroups by id.
    pub attributed: HashMap<u64, Attributed>,
    /// The walk hit [`MAX_ENTRIES`].
    pub truncated: bool,
}

/// Walks `root` breadth-first. Container cgroups are not descended into
/// (what runs below a container is in it).
pub fn walk(root: &Path) -> Walk {
    let mut out = Walk::default();
    let mut queue = VecDeque::from([(root.to_path_buf(), String::new(), 0usize)]);
    let mut seen = 0usize;
    while let Some((dir, rel, depth)) = queue.pop_front() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            seen += 1;
            if seen > MAX_ENTRIES {
                out.truncated = true;
                return out;
            }
            let Ok(meta) = e.metadata() else { continue };
            let name = e.file_name();
            let name = name.to_string_lossy();
            let child = format!("{rel}/{name}");
            if is_container_root(&name) {
                out.kubepods.push((meta.ino(), child.clone()));
            } else if let Some(a) = parse_cgroup_path(&child) {
                let container_id = a.container.as_ref().map(|c| c.id.clone());
                let is_container = container_id.is_some();
                out.attributed.insert(
                    meta.ino(),
                    Attributed {
                        rel: child.clone(),
                        container_id,
                        pod_uid: a.pod_uid().map(str::to_string),
                    },
                );
                if is_container {
                    continue;
                }
            }
            if depth + 1 < MAX_DEPTH {
                queue.push_back((e.path(), child, depth + 1));
            }
        }
    }
    out
}

/// What the kernel is told, and what user space keeps to explain kernel
/// records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Container roots: `kubepods` and every container cgroup.
    pub roots: Vec<u64>,
    /// Protected cgroup subtrees and why each is protected.
    pub protected: BTreeMap<u64, Refusal>,
    /// `kubepods` cgroups: below them the kernel kills only in cleared pods.
    pub pod_roots: Vec<u64>,
    /// Pod cgroups whose pod is known and not protected.
    pub cleared: Vec<u64>,
}

impl Scan {
    /// Joins a walk with the pods the API server shows. `own_cgroup`: the
    /// agent's cgroup id, protected unless its subtree holds the container
    /// roots (`own_holds_roots`: protecting it would disable every rule).
    pub fn compute(
        walk: &Walk,
        pods: &[PodFacts],
        safety_cfg: &SafetyConfig,
        own_cgroup: Option<u64>,
    ) -> Self {
        let mut roots: Vec<u64> = walk.kubepods.iter().map(|(id, _)| *id).collect();
        roots.extend(
            walk.attributed
                .iter()
                .filter(|(_, a)| a.container_id.is_some())
                .map(|(id, _)| *id),
        );
        roots.sort_unstable();
        roots.dedup();
        let by_uid: HashMap<&str, &PodFacts> = pods.iter().map(|p| (p.uid.as_str(), p)).collect();
        let mut protected = BTreeMap::new();
        let mut cleared = Vec::new();
        for (id, a) in &walk.attributed {
            // Pod-level cgroups only: they hold every container of the pod.
            if a.container_id.is_some() {
                continue;
            }
            let Some(pod) = a.pod_uid.as_deref().and_then(|u| by_uid.get(u)) else {
                continue;
            };
            match pod_protection(safety_cfg, pod) {
                Err(r) => {
                    protected.insert(*id, r);
                }
                Ok(()) => cleared.push(*id),
            }
        }
        if let Some(own) = own_cgroup {
            protected.insert(own, Refusal::OwnCgroup);
        }
        cleared.sort_unstable();
        let mut pod_roots: Vec<u64> = walk.kubepods.iter().map(|(id, _)| *id).collect();
        pod_roots.sort_unstable();
        pod_roots.dedup();
        Self {
            roots,
            protected,
            pod_roots,
            cleared,
        }
    }
}

/// The protection that applies to a pod, as the user-space path decides it
/// (same function: the two paths cannot disagree).
pub fn pod_protection(cfg: &SafetyConfig, pod: &PodFacts) -> Result<(), Refusal> {
    let req = ActionRequest::new(
        ActionKind::KillProcess,
        Target {
            namespace: Some(pod.namespace.clone()),
            pod: Some(pod.name.clone()),
            pod_uid: Some(pod.uid.clone()),
            labels: pod.labels.clone(),
            ..Default::default()
        },
        Trigger::Kernel {
            rule: String::new(),
        },
    );
    safety::check_protection(cfg, &req)
}

/// The agent's own cgroup id for the kernel, or `None` when its subtree
/// holds container roots (a host agent in the root cgroup or in a systemd
/// service above `kubepods`): then only its process is protected there.
pub fn own_cgroup_id(own: Option<&PathBuf>, root: &Path, walk: &Walk) -> Option<u64> {
    let own = own?;
    let id = std::fs::metadata(own).ok()?.ino();
    let own_rel = own.strip_prefix(root).ok()?;
    let below = |rel: &str| {
        let p = Path::new(rel.trim_start_matches('/'));
        p != own_rel && p.starts_with(own_rel)
    };
    if own_rel.as_os_str().is_empty()
        || walk.kubepods.iter().any(|(_, r)| below(r))
        || walk
            .attributed
            .values()
            .any(|a| a.container_id.is_some() && below(&a.rel))
    {
        return None;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(root: &Path, rel: &str) -> u64 {
        let p = root.join(rel);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::metadata(&p).unwrap().ino()
    }

    #[test]
    fn walk_finds_every_recognised_container_and_pod() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let uid = "5d1e2a90-4d3b-4f6a-8e21-0b9d5c3a7f10";
        let id = "1a".repeat(32);
        let kp = mk(r, "kubepods");
        let pod = mk(r, &format!("kubepods/besteffort/pod{uid}"));
        let ctr = mk(
            r,
            &format!("kubepods/besteffort/pod{uid}/cri-containerd-{id}.scope"),
        );
        let docker = mk(r, &format!("system.slice/docker-{}.scope", "2b".repeat(32)));
        let podman = mk(
            r,
            &format!("machine.slice/libpod-{}.scope", "3c".repeat(32)),
        );
        mk(r, "system.slice/sshd.service");
        let w = walk(r);
        assert!(!w.truncated);
        assert_eq!(w.kubepods, vec![(kp, "/kubepods".to_string())]);
        assert_eq!(w.attributed.len(), 4, "{:?}", w.attributed);
        assert_eq!(w.attributed[&pod].pod_uid.as_deref(), Some(uid));
        assert_eq!(w.attributed[&pod].container_id, None);
        assert_eq!(
            w.attributed[&ctr].container_id.as_deref(),
            Some(id.as_str())
        );
        assert_eq!(
            w.attributed[&docker].container_id.as_deref(),
            Some("2b".repeat(32).as_str())
        );
        assert_eq!(w.attributed[&docker].pod_uid, None);
        assert!(w.attributed.contains_key(&podman));

        let mut cfg = SafetyConfig {
            protected_labels: vec![("tier".into(), Some("db".into()))],
            ..SafetyConfig::default()
        };
        let facts = |ns: &str| PodFacts {
            uid: uid.into(),
            namespace: ns.into(),
            name: "p".into(),
            labels: BTreeMap::new(),
        };
        let s = Scan::compute(&w, &[facts("kube-system")], &cfg, None);
        let mut roots = vec![kp, ctr, docker, podman];
        roots.sort_unstable();
        assert_eq!(s.roots, roots);
        assert_eq!(
            s.protected,
            BTreeMap::from([(pod, Refusal::ProtectedNamespace("kube-system".into()))])
        );
        // A protected pod is not cleared; kubepods is the pod root.
        assert_eq!((s.pod_roots.clone(), s.cleared.clone()), (vec![kp], vec![]));
        let s = Scan::compute(&w, &[facts("shop")], &cfg, Some(7));
        assert_eq!(s.protected, BTreeMap::from([(7, Refusal::OwnCgroup)]));
        assert_eq!(s.cleared, vec![pod]);
        // A pod the watch has not delivered is neither.
        let s = Scan::compute(&w, &[], &cfg, None);
        assert_eq!((s.pod_roots, s.cleared), (vec![kp], vec![]));
        let mut db = facts("shop");
        db.labels.insert("tier".into(), "db".into());
        let s = Scan::compute(&w, &[db], &cfg, None);
        assert_eq!(
            s.protected,
            BTreeMap::from([(pod, Refusal::ProtectedLabel("tier=db".into()))])
        );
        cfg.own_pod = Some(("shop".into(), "p".into()));
        let s = Scan::compute(&w, &[facts("shop")], &cfg, None);
        assert_eq!(s.protected, BTreeMap::from([(pod, Refusal::OwnPod)]));
    }

    #[test]
    fn own_cgroup_is_not_protected_when_it_holds_the_containers() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        mk(r, &format!("kubepods/pod1/{}", "ab".repeat(32)));
        let agent = r.join("system.slice/picket.service");
        let agent_id = mk(r, "system.slice/picket.service");
        let w = walk(r);
        assert_eq!(own_cgroup_id(Some(&agent), r, &w), Some(agent_id));
        assert_eq!(own_cgroup_id(Some(&r.to_path_buf()), r, &w), None);
    }
}
