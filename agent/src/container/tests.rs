use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use super::*;

const ID: &str = "15f26497636bc4fead4ef84031d8be09042078db9a790a3a34867bfd08368ee2";
const ID2: &str = "204418bf2eea408169f368b014e610d60381f3fa536552746443a48a382b6fde";
const UID: &str = "0c5f5c2a-1b2c-4d3e-8f90-123456789abc";
const UID_SYSTEMD: &str = "0c5f5c2a_1b2c_4d3e_8f90_123456789abc";

/// A container and no pod.
fn c(id: &str, runtime: Option<Runtime>) -> (Option<&str>, Option<Runtime>) {
    (Some(id), runtime)
}

/// A pod with its QoS class.
fn p(uid: &str, qos: QosClass) -> (Option<&str>, Option<QosClass>) {
    (Some(uid), Some(qos))
}

fn attr(
    container: (Option<&str>, Option<Runtime>),
    pod: (Option<&str>, Option<QosClass>),
) -> Option<CgroupAttribution> {
    Some(CgroupAttribution {
        container: container.0.map(|id| ContainerRef {
            id: id.to_owned(),
            runtime: container.1,
        }),
        pod: pod.0.zip(pod.1).map(|(uid, qos)| PodRef {
            uid: uid.to_owned(),
            qos,
        }),
    })
}

#[test]
fn kubelet_systemd_driver_paths() {
    use QosClass::*;
    use Runtime::*;
    let cases = [
        (
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
            ),
            attr(c(ID, Some(Containerd)), p(UID, Burstable)),
        ),
        (
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{ID}.scope"
            ),
            attr(c(ID, Some(CriO)), p(UID, BestEffort)),
        ),
        (
            format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"),
            attr(c(ID, Some(Containerd)), p(UID, Guaranteed)),
        ),
        (
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/docker-{ID}.scope"
            ),
            attr(c(ID, Some(Docker)), p(UID, Burstable)),
        ),
        // The CRI-O monitor is not the container; the pod is still known.
        (
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-conmon-{ID}.scope"
            ),
            attr((None, None), p(UID, BestEffort)),
        ),
        // CRI-O's sub-cgroup of the container scope.
        (
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/crio-{ID}.scope/container"
            ),
            attr(c(ID, Some(CriO)), p(UID, Burstable)),
        ),
        // kind: kubelet with the cgroup root `kubelet`, inside a docker node.
        (
            format!(
                "/system.slice/docker-{ID2}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
            ),
            attr(c(ID, Some(Containerd)), p(UID, BestEffort)),
        ),
        // A pod-level cgroup (processes of no container, e.g. during setup).
        (
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice"
            ),
            attr((None, None), p(UID, Burstable)),
        ),
    ];
    for (path, want) in cases {
        assert_eq!(parse_cgroup_path(&path), want, "{path}");
    }
}

#[test]
fn kubelet_cgroupfs_driver_paths() {
    use QosClass::*;
    use Runtime::*;
    let cases = [
        (
            format!("/kubepods/besteffort/pod{UID}/{ID}"),
            attr(c(ID, None), p(UID, BestEffort)),
        ),
        (
            format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
            attr(c(ID, Some(CriO)), p(UID, Burstable)),
        ),
        (
            format!("/kubepods/pod{UID}/{ID}"),
            attr(c(ID, None), p(UID, Guaranteed)),
        ),
        // The layout Picket's own tests create.
        (
            format!("/kubepods/besteffort/pod{UID}/cri-containerd-{ID}.scope"),
            attr(c(ID, Some(Containerd)), p(UID, BestEffort)),
        ),
        (
            format!("/kubepods/burstable/pod{UID}"),
            attr((None, None), p(UID, Burstable)),
        ),
        // Static pods have a 32-hex UID.
        (
            format!("/kubepods/burstable/pod6f1a3c4b2e0d9f8a7b6c5d4e3f2a1b0c/{ID}"),
            attr(
                c(ID, None),
                p("6f1a3c4b2e0d9f8a7b6c5d4e3f2a1b0c", Burstable),
            ),
        ),
        // Not a UID: the container is still attributed, without a pod.
        (
            format!("/kubepods/besteffort/podxyz/{ID}"),
            attr(c(ID, None), (None, None)),
        ),
    ];
    for (path, want) in cases {
        assert_eq!(parse_cgroup_path(&path), want, "{path}");
    }
}

#[test]
fn docker_and_podman_paths() {
    use Runtime::*;
    let cases = [
        (
            format!("/system.slice/docker-{ID}.scope"),
            attr(c(ID, Some(Docker)), (None, None)),
        ),
        (
            format!("/docker/{ID}"),
            attr(c(ID, Some(Docker)), (None, None)),
        ),
        // Docker in docker: the innermost container.
        (
            format!("/docker/{ID}/docker/{ID2}"),
            attr(c(ID2, Some(Docker)), (None, None)),
        ),
        (
            format!("/machine.slice/libpod-{ID}.scope"),
            attr(c(ID, Some(Podman)), (None, None)),
        ),
        (
            format!("/machine.slice/libpod-{ID}.scope/container"),
            attr(c(ID, Some(Podman)), (None, None)),
        ),
        (
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            attr(c(ID, Some(Podman)), (None, None)),
        ),
        (format!("/machine.slice/libpod-conmon-{ID}.scope"), None),
        (
            format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-conmon-{ID}.scope"
            ),
            None,
        ),
    ];
    for (path, want) in cases {
        assert_eq!(parse_cgroup_path(&path), want, "{path}");
    }
}

#[test]
fn host_and_malformed_paths_are_none() {
    for path in [
        "",
        "/",
        "/init.scope",
        "/system.slice/sshd.service",
        "/system.slice/containerd.service",
        "/user.slice/user-1000.slice/session-3.scope",
        "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service",
        "/kubepods.slice",
        "/kubepods.slice/kubepods-burstable.slice",
        "/kubepods.slice/kubepods-besteffort-podnotauid.slice",
        "/kubepods/besteffort",
        "/docker/abc",
        // 63 hex digits, upper case, non-hex.
        "/system.slice/docker-15f26497636bc4fead4ef84031d8be09042078db9a790a3a34867bfd08368ee.scope",
        "/docker/15F26497636BC4FEAD4EF84031D8BE09042078DB9A790A3A34867BFD08368EE2",
        "/docker/15f26497636bc4fead4ef84031d8be09042078db9a790a3a34867bfd08368eeg",
        // A pod UID outside kubepods is not a pod.
        "/pod0c5f5c2a-1b2c-4d3e-8f90-123456789abc",
    ] {
        assert_eq!(parse_cgroup_path(path), None, "{path}");
    }
}

#[test]
fn attribution_to_model() {
    let a = parse_cgroup_path(&format!("/kubepods/burstable/pod{UID}/crio-{ID}"))
        .expect("container path");
    let m = a.container_model().expect("container");
    assert_eq!(m.id, ID);
    assert_eq!(m.runtime, "cri-o");
    assert_eq!(a.pod_uid(), Some(UID));
    assert_eq!(a.pod.map(|p| p.qos), Some(QosClass::Burstable));
    let bare = parse_cgroup_path(&format!("/kubepods/pod{UID}/{ID}")).expect("container path");
    assert_eq!(
        bare.container_model().map(|m| m.runtime),
        Some(String::new())
    );
    assert_eq!(Runtime::Containerd.to_string(), "containerd");
    assert_eq!(QosClass::BestEffort.as_str(), "BestEffort");
}

#[test]
fn cgroup2_mount_detection() {
    let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
        40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    assert_eq!(
        find_cgroup2_mount(hybrid),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
    let v2 = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
        30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
    assert_eq!(
        find_cgroup2_mount(v2),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
    // A namespaced view (root not "/") is used only when nothing better exists;
    // octal escapes are decoded.
    let nested = "50 1 0:26 /kubepods /host\\040cg rw - cgroup2 cgroup2 rw\n";
    assert_eq!(find_cgroup2_mount(nested), Some(PathBuf::from("/host cg")));
    let both = format!("{nested}{v2}");
    assert_eq!(
        find_cgroup2_mount(&both),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
    assert_eq!(
        find_cgroup2_mount("garbage\n\n - \n1 2 3 - cgroup2\n"),
        None
    );
}

#[test]
fn proc_cgroup_line_choice() {
    assert_eq!(
        parse_proc_cgroup("0::/system.slice/sshd.service\n").as_deref(),
        Some("/system.slice/sshd.service")
    );
    let hybrid = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/2c43\n0::/kubepods/x\n";
    assert_eq!(parse_proc_cgroup(hybrid).as_deref(), Some("/kubepods/x"));
    let v1 = "12:cpu,cpuacct:/docker/abc\n5:pids:/docker/pids\n1:name=systemd:/docker/sd\n";
    assert_eq!(parse_proc_cgroup(v1).as_deref(), Some("/docker/sd"));
    let v1_no_systemd = "12:cpu,cpuacct:/a\n5:pids:/b\n";
    assert_eq!(parse_proc_cgroup(v1_no_systemd).as_deref(), Some("/b"));
    assert_eq!(parse_proc_cgroup("3:memory:/m\n").as_deref(), Some("/m"));
    // Paths may contain ':'.
    assert_eq!(parse_proc_cgroup("0::/a:b\n").as_deref(), Some("/a:b"));
    assert_eq!(parse_proc_cgroup("junk\n"), None);
    assert_eq!(parse_proc_cgroup(""), None);
}

fn ino(p: &Path) -> u64 {
    std::fs::metadata(p).expect("stat").ino()
}

#[test]
fn resolver_rescans_on_miss_at_most_once_per_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("kubepods/besteffort")).expect("mkdir");
    std::fs::write(root.join("kubepods/cgroup.procs"), b"").expect("file");
    let interval = Duration::from_secs(10);
    let mut r = CgroupResolver::with_root(root).with_rescan_interval(interval);
    let t0 = Instant::now();
    let be = ino(&root.join("kubepods/besteffort"));
    assert_eq!(r.resolve_at(be, t0), Some("/kubepods/besteffort"));
    assert_eq!(r.resolve_at(ino(root), t0), Some("/"));
    assert_eq!(
        r.len(),
        3,
        "root, kubepods, besteffort; files are not cgroups"
    );
    assert_eq!(
        r.stats(),
        ResolverStats {
            hits: 2,
            misses: 0,
            handle_lookups: 0,
            rescans: 1,
            truncated_scans: 0
        }
    );

    // A cgroup created after the scan: unknown until the interval passes.
    std::fs::create_dir(root.join("kubepods/burstable")).expect("mkdir");
    let bu = ino(&root.join("kubepods/burstable"));
    assert_eq!(r.resolve_at(bu, t0 + Duration::from_secs(1)), None);
    assert_eq!(r.resolve_at(bu, t0 + Duration::from_secs(9)), None);
    assert_eq!(r.stats().rescans, 1, "rate-limited");
    assert_eq!(r.stats().misses, 2);
    assert_eq!(r.resolve_at(bu, t0 + interval), Some("/kubepods/burstable"));
    assert_eq!(r.stats().rescans, 2);

    // Removed cgroups stay resolvable (late events).
    std::fs::remove_dir(root.join("kubepods/besteffort")).expect("rmdir");
    assert_eq!(r.resolve_at(u64::MAX, t0 + interval * 2), None);
    assert_eq!(r.stats().rescans, 3);
    assert_eq!(
        r.resolve_at(be, t0 + interval * 2),
        Some("/kubepods/besteffort")
    );
}

#[test]
fn resolver_scan_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("a/b/c/d")).expect("mkdir");
    let mut r = CgroupResolver::with_root(root).with_limits(ScanLimits {
        max_depth: 2,
        max_entries: 100,
    });
    assert_eq!(r.rescan(), 3, "root, a, a/b");
    assert_eq!(r.stats().truncated_scans, 1);
    assert_eq!(
        r.resolve_at(ino(&root.join("a/b")), Instant::now()),
        Some("/a/b")
    );
    let mut r = CgroupResolver::with_root(root).with_limits(ScanLimits {
        max_depth: 32,
        max_entries: 2,
    });
    assert_eq!(r.rescan(), 2);
    assert_eq!(r.stats().truncated_scans, 1);
}

/// A cgroup directory under the real cgroup v2 root, removed on drop (also
/// when the test panics), after killing the processes the test put in it.
struct TestCgroup {
    path: PathBuf,
    children: Vec<Child>,
}

impl TestCgroup {
    fn create(root: &Path) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = root.join(format!("picket-test-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(path.join("pod")).expect("create test cgroup (needs root)");
        Self {
            path,
            children: Vec::new(),
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for _ in 0..50 {
            let _ = std::fs::remove_dir(self.path.join("pod"));
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn real_cgroup_v2_hierarchy() {
    let mut r = CgroupResolver::detect().expect("cgroup v2 is mounted");
    let root = r.root().to_path_buf();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(&format!(" {} ", root.display())) && l.contains(" - cgroup2 ")),
        "{} is not a cgroup2 mount",
        root.display()
    );
    assert!(root.join("cgroup.procs").exists());

    let mut cg = TestCgroup::create(&root);
    let name = cg
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_owned();
    let id = ino(&cg.path.join("pod"));
    assert_eq!(r.resolve(id), Some(format!("/{name}/pod").as_str()));
    assert_eq!(r.resolve(ino(&cg.path)), Some(format!("/{name}").as_str()));
    assert_eq!(r.resolve(ino(&root)), Some("/"));
    let misses = r.stats().misses;
    assert_eq!(r.resolve(0x7fff_ffff_dead_beef), None);
    assert_eq!(r.stats().misses, misses + 1);

    // A process moved into the cgroup reports its path in /proc/<pid>/cgroup.
    let child = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    cg.children.push(child);
    std::fs::write(cg.path.join("pod/cgroup.procs"), pid.to_string()).expect("move into cgroup");
    assert_eq!(
        cgroup_path_of_pid(pid).expect("read cgroup"),
        format!("/{name}/pod")
    );
    assert!(matches!(
        cgroup_path_of_pid(u32::MAX),
        Err(CgroupError::Io { .. })
    ));
}

#[test]
fn new_cgroup_resolves_on_the_spot_without_a_walk() {
    // A rescan interval far longer than the test: only the handle lookup
    // can find the new cgroup.
    let mut r = CgroupResolver::detect()
        .expect("cgroup v2 is mounted")
        .with_rescan_interval(Duration::from_secs(3600));
    assert!(r.resolves_on_the_spot(), "root may open file handles");
    let root = r.root().to_path_buf();
    assert_eq!(r.resolve(ino(&root)), Some("/"));
    assert_eq!(
        (r.stats().handle_lookups, r.stats().rescans),
        (1, 0),
        "even the root is found without a walk"
    );
    let walks = 0;
    let cg = TestCgroup::create(&root);
    let name = cg
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_owned();
    let id = ino(&cg.path.join("pod"));
    assert_eq!(r.resolve(id), Some(format!("/{name}/pod").as_str()));
    assert_eq!(r.stats().rescans, walks, "no walk for a new cgroup");
    assert_eq!(r.stats().handle_lookups, 2);
    // Cached: no second lookup.
    assert_eq!(r.resolve(id), Some(format!("/{name}/pod").as_str()));
    assert_eq!(r.stats().handle_lookups, 2);

    // A removed cgroup that was never seen: gone, a miss, still no walk.
    let gone = TestCgroup::create(&root);
    let gone_id = ino(&gone.path.join("pod"));
    drop(gone);
    let misses = r.stats().misses;
    assert_eq!(r.resolve(gone_id), None);
    assert_eq!(r.stats().misses, misses + 1);
    assert_eq!(r.stats().rescans, walks);
    assert!(
        r.resolves_on_the_spot(),
        "a gone cgroup does not disable lookups"
    );
}
