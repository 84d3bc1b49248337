//! Finding cgroup v2 directories: the hierarchy's mount point, a pod's
//! cgroup by UID, and the container roots (`kubepods`) that mark processes
//! as "in a container" for in-kernel kill rules.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Deepest directory level searched below the root.
const MAX_DEPTH: usize = 6;

/// The cgroup v2 mount point from `/proc/self/mountinfo` (`/sys/fs/cgroup`
/// on v2-only nodes, `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup_v2_root() -> PathBuf {
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|info| v2_root_from_mountinfo(&info))
        .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"))
}

pub fn v2_root_from_mountinfo(info: &str) -> Option<PathBuf> {
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        (post.split_whitespace().next() == Some("cgroup2"))
            .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// Whether a directory name is the cgroup of pod `uid`: `pod<uid>`
/// (cgroupfs driver) or `kubepods-<qos>-pod<uid with _>.slice` (systemd).
pub fn is_pod_dir(name: &str, uid: &str) -> bool {
    if name == format!("pod{uid}") {
        return true;
    }
    let systemd = format!("pod{}.slice", uid.replace('-', "_"));
    name.starts_with("kubepods") && name.ends_with(&systemd)
}

/// Whether a directory name is a Kubernetes pods root (`kubepods`,
/// `kubepods.slice`).
pub fn is_container_root(name: &str) -> bool {
    name == "kubepods" || name == "kubepods.slice"
}

/// Breadth-first search below `root` (bounded depth) for directories whose
/// name satisfies `pred`; a match is not descended into.
pub fn find_dirs(root: &Path, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut level = vec![root.to_path_buf()];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for dir in &level {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in rd.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = e.file_name();
                if pred(&name.to_string_lossy()) {
                    out.push(e.path());
                } else {
                    next.push(e.path());
                }
            }
        }
        level = next;
    }
    out
}

/// The cgroup of pod `uid` below `root`.
pub fn find_pod_cgroup(root: &Path, uid: &str) -> Option<PathBuf> {
    find_dirs(root, |n| is_pod_dir(n, uid)).into_iter().next()
}

/// cgroup id (directory inode) of `path`.
pub fn cgroup_id(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_and_names() {
        let info = "22 1 0:21 / /sys rw - sysfs sysfs rw\n35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            v2_root_from_mountinfo(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            v2_root_from_mountinfo("22 1 0:21 / /sys rw - sysfs sysfs rw\n"),
            None
        );
        let uid = "3f6d9a2e-1c4b-4e8f-9a7d-5b2c8e1f0a93";
        assert!(is_pod_dir(&format!("pod{uid}"), uid));
        assert!(is_pod_dir(
            "kubepods-besteffort-pod3f6d9a2e_1c4b_4e8f_9a7d_5b2c8e1f0a93.slice",
            uid
        ));
        assert!(!is_pod_dir("pod3f6d9a2e", uid));
        assert!(
            is_container_root("kubepods.slice")
                && is_container_root("kubepods")
                && !is_container_root("kubepods-x")
        );
    }

    #[test]
    fn finds_pod_cgroups() {
        let d = tempfile::tempdir().unwrap();
        let p = d
            .path()
            .join("kubepods/besteffort/podabc/cri-containerd-1.scope");
        std::fs::create_dir_all(&p).unwrap();
        assert_eq!(
            find_pod_cgroup(d.path(), "abc"),
            Some(d.path().join("kubepods/besteffort/podabc"))
        );
        assert_eq!(find_pod_cgroup(d.path(), "abd"), None);
        assert_eq!(
            find_dirs(d.path(), is_container_root),
            vec![d.path().join("kubepods")]
        );
    }
}
