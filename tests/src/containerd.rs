//! Real containers for real-kernel tests: a private containerd (its own
//! root, state and socket under a temp dir) driving runc, running
//! containers from a small rootfs the fixture builds (static busybox), in
//! the cgroup layouts kubelet and the plain-host runtimes create.
//!
//! Everything is removed on drop, also when a test panics: containers'
//! tasks are killed and deleted, the daemon and its shims stopped, the
//! cgroups the runtime created (in the v2 hierarchy and, on a hybrid host,
//! in every v1 hierarchy too) removed, the temp dir deleted.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{
    cgroup::v2_root,
    run::{ChildGuard, output_within},
};

/// How long a `ctr` command may take.
const CTR_TIMEOUT: Duration = Duration::from_secs(30);

/// Programs the rootfs offers (busybox applets linked in `/bin`).
const APPLETS: &[&str] = &[
    "sh", "sleep", "id", "cat", "true", "echo", "ls", "ps", "wget", "nc", "touch", "chmod",
    "mkdir", "env",
];

/// Where a container's cgroup sits: the layouts kubelet (both cgroup
/// drivers) and the plain-host runtimes create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// kubelet, cgroupfs driver: `kubepods/besteffort/pod<uid>/<id>`.
    KubeCgroupfs,
    /// kubelet, systemd driver: `kubepods.slice/kubepods-besteffort.slice/
    /// kubepods-besteffort-pod<uid_>.slice/cri-containerd-<id>.scope`.
    KubeSystemd,
    /// Docker with the systemd driver: `system.slice/docker-<id>.scope`.
    Docker,
    /// podman: `machine.slice/libpod-<id>.scope`.
    Podman,
    /// containerd on a plain host (`ctr`, nerdctl; cgroupfs driver):
    /// `<namespace>/<id>`, here `default/<id>`.
    ContainerdHost,
}

impl Layout {
    /// The cgroup path below the test's own top directory.
    pub fn path(self, pod_uid: &str, id: &str) -> String {
        match self {
            Layout::KubeCgroupfs => format!("kubepods/besteffort/pod{pod_uid}/{id}"),
            Layout::KubeSystemd => {
                let u = pod_uid.replace('-', "_");
                format!(
                    "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{id}.scope"
                )
            }
            Layout::Docker => format!("system.slice/docker-{id}.scope"),
            Layout::Podman => format!("machine.slice/libpod-{id}.scope"),
            Layout::ContainerdHost => format!("default/{id}"),
        }
    }
}

/// A fresh 64-hex container id.
pub fn new_container_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    (0..4)
        .map(|_| format!("{:016x}", RandomState::new().hash_one(Instant::now())))
        .collect()
}

/// The cgroup tree of one test: `<hierarchy>/picket-rt-<name>-<pid>` in
/// the v2 hierarchy and in every v1 hierarchy (runc creates the same path
/// in each). Dropping it kills what is left inside and removes it
/// everywhere, deepest first.
pub struct CgroupTree {
    pub name: String,
}

impl CgroupTree {
    pub fn new(test: &str) -> Self {
        let name = format!("picket-rt-{test}-{}", std::process::id());
        std::fs::create_dir_all(v2_root().join(&name))
            .unwrap_or_else(|e| panic!("creating test cgroup {name}: {e}"));
        Self { name }
    }

    /// Creates `rel` (below the tree) in the v2 hierarchy now and returns
    /// its directory: the agent's scope lists cgroups by id, so a
    /// container's cgroup must exist before the agent starts (runc joins
    /// an existing empty cgroup).
    pub fn precreate(&self, rel: &str) -> PathBuf {
        let p = v2_root().join(&self.name).join(rel);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }

    /// Whether `rel` (below the tree) exists in the v2 hierarchy.
    pub fn cgroup_exists(&self, rel: &str) -> bool {
        v2_root().join(&self.name).join(rel).exists()
    }

    /// `/picket-rt-.../<rel>`: the cgroup path a container is given.
    pub fn cgroup_path(&self, rel: &str) -> String {
        format!("/{}/{rel}", self.name)
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        for mount in cgroup_mounts() {
            let top = mount.join(&self.name);
            if top.exists() {
                remove_tree(&top);
            }
        }
    }
}

/// Mount points of every cgroup hierarchy (v1 and v2).
fn cgroup_mounts() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fs = post.split_whitespace().next()?;
            (fs == "cgroup" || fs == "cgroup2")
                .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .collect()
}

/// Removes a cgroup directory tree deepest first, killing processes left
/// in it (only ever called on the test's own tree).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    for _ in 0..100 {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                if pid > 1 {
                    // SAFETY: kill(2) of a pid left in the test's own cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "containerd fixture: could not remove cgroup {}",
        dir.display()
    );
}

/// A private containerd daemon. Drop order: containers first (their drop
/// needs the daemon), then this.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// The rootfs every container runs from (read-only use).
    pub rootfs: PathBuf,
    daemon: Option<ChildGuard>,
}

impl Containerd {
    /// Starts the daemon and waits until it answers.
    pub fn start() -> Self {
        Self::start_in(None)
    }

    /// Starts the daemon in the cgroup v2 directory `cgroup` (its shims
    /// and the runc they start stay there), so an agent scoped to it sees
    /// the runtime's own work as on a node, where the agent sees every
    /// cgroup: `runc init` is exec'd there before it joins the container's
    /// cgroup.
    pub fn start_in(cgroup: Option<&Path>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("picket-ctrd-")
            .tempdir()
            .expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        build_rootfs(&rootfs);
        let config = dir.path().join("config.toml");
        // Only what `ctr run --rootfs` needs: no CRI plugin (no CNI, no
        // image pulls), no opt plugin writing under /var/lib.
        std::fs::write(
            &config,
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.internal.v1.opt\", \"io.containerd.tracing.processor.v1.otlp\", \"io.containerd.internal.v1.tracing\"]\n",
        )
        .expect("config");
        let socket = dir.path().join("c.sock");
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log file");
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--address")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(cg) = cgroup {
            crate::cgroup::enter_dir(&mut cmd, cg);
        }
        let daemon = ChildGuard::spawn(&mut cmd);
        let me = Self {
            dir,
            socket,
            rootfs,
            daemon: Some(daemon),
        };
        crate::run::wait_for(
            "containerd",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || me.socket.exists() && me.ctr(&["version"]).status.success(),
            || me.log(),
        );
        me
    }

    /// The daemon's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// A `ctr` command against this daemon.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.socket).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `ctr <args>` to completion.
    pub fn ctr(&self, args: &[&str]) -> Output {
        output_within(&mut self.ctr_cmd(args), CTR_TIMEOUT)
    }

    /// Runs `ctr <args>` and panics (with the daemon log) unless it succeeds.
    pub fn ctr_ok(&self, args: &[&str]) -> Output {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\n{}\ncontainerd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        out
    }

    /// `ctr run -d --rootfs --cgroup <cgroup> <rootfs> <id> <argv...>`:
    /// starts a container whose entrypoint is `argv`; returns once its task
    /// runs.
    pub fn run(&self, id: &str, cgroup: &str, argv: &[&str]) -> RealContainer<'_> {
        self.run_with(id, cgroup, &[], argv)
    }

    /// [`run`](Self::run) with further `ctr run` flags (e.g. `--with-ns
    /// network:/var/run/netns/<name>` to join a test-created netns).
    pub fn run_with(
        &self,
        id: &str,
        cgroup: &str,
        flags: &[&str],
        argv: &[&str],
    ) -> RealContainer<'_> {
        let rootfs = self.rootfs.display().to_string();
        let mut args = vec!["run", "-d", "--rootfs", "--cgroup", cgroup];
        args.extend_from_slice(flags);
        args.extend([rootfs.as_str(), id]);
        args.extend_from_slice(argv);
        self.ctr_ok(&args);
        let init_pid = self
            .task_pid(id)
            .unwrap_or_else(|| panic!("task {id} not listed after ctr run"));
        RealContainer {
            ctrd: self,
            id: id.to_owned(),
            cgroup: cgroup.to_owned(),
            init_pid,
        }
    }

    /// Imports the fixture's rootfs as an OCI image named `name` (one
    /// layer, built here with `tar`; digests by `sha256sum`) into the
    /// `default` namespace, unpacked with the `native` snapshotter (no
    /// overlay mounts needed).
    pub fn import_image(&self, name: &str) {
        let base = self.dir.path().join("image");
        let blobs = base.join("oci/blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("mkdir blobs");
        let layer = base.join("layer.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&self.rootfs)
            .arg("-cf")
            .arg(&layer)
            .arg(".")
            .status()
            .expect("tar");
        assert!(st.success(), "tar of the rootfs failed");
        let layer_bytes = std::fs::read(&layer).expect("layer");
        let add = |bytes: &[u8]| -> (String, usize) {
            let tmp = base.join("blob");
            std::fs::write(&tmp, bytes).expect("blob");
            let out = Command::new("sha256sum")
                .arg(&tmp)
                .output()
                .expect("sha256sum");
            let digest = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .expect("digest")
                .to_owned();
            std::fs::rename(&tmp, blobs.join(&digest)).expect("rename blob");
            (digest, bytes.len())
        };
        let (l, l_size) = add(&layer_bytes);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{l}"]}}}}"#
        );
        let (c, c_size) = add(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{c}","size":{c_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{l}","size":{l_size}}}]}}"#
        );
        let (m, m_size) = add(manifest.as_bytes());
        std::fs::write(
            base.join("oci/index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{m}","size":{m_size},"annotations":{{"io.containerd.image.name":"{name}"}}}}]}}"#
            ),
        )
        .expect("index");
        std::fs::write(
            base.join("oci/oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("oci-layout");
        let archive = base.join("image.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(base.join("oci"))
            .arg("-cf")
            .arg(&archive)
            .arg(".")
            .status()
            .expect("tar");
        assert!(st.success(), "tar of the image failed");
        let archive = archive.display().to_string();
        self.ctr_ok(&["images", "import", "--snapshotter", "native", &archive]);
    }

    /// `ctr run -d --snapshotter native --label k=v... --cgroup <cgroup>
    /// <image> <id> <argv...>`: a container created from an image (so
    /// containerd records the image reference), in the `default` namespace.
    pub fn run_image(
        &self,
        image: &str,
        id: &str,
        cgroup: &str,
        labels: &[&str],
        argv: &[&str],
    ) -> RealContainer<'_> {
        let mut args = vec!["run", "-d", "--snapshotter", "native", "--cgroup", cgroup];
        for l in labels {
            args.extend(["--label", l]);
        }
        args.extend([image, id]);
        args.extend_from_slice(argv);
        self.ctr_ok(&args);
        let init_pid = self
            .task_pid(id)
            .unwrap_or_else(|| panic!("task {id} not listed after ctr run"));
        RealContainer {
            ctrd: self,
            id: id.to_owned(),
            cgroup: cgroup.to_owned(),
            init_pid,
        }
    }

    /// The host pid of a task's init, from `ctr task ls`.
    pub fn task_pid(&self, id: &str) -> Option<u32> {
        let out = self.ctr_ok(&["task", "ls"]);
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(id))
                .then(|| f.next().and_then(|p| p.parse().ok()))
                .flatten()
        })
    }

    /// Kills, deletes and removes container `id` (ignoring what is gone).
    pub fn remove(&self, id: &str) {
        let _ = self.ctr(&["task", "kill", "-s", "KILL", id]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // Delete fails while the task is still stopping.
            let out = self.ctr(&["task", "delete", id]);
            if out.status.success() || String::from_utf8_lossy(&out.stderr).contains("not found") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.ctr(&["container", "rm", id]);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Leftovers of a panicking test.
        let out = self.ctr(&["container", "ls", "-q"]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            self.remove(id);
        }
        if let Some(mut d) = self.daemon.take() {
            // SAFETY: SIGTERM to the daemon this fixture started.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(d.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Shims of this daemon (started with `-address <our socket>`).
        let sock = self.socket.display().to_string();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                if cmdline.split(|b| *b == 0).any(|a| a == sock.as_bytes()) {
                    // SAFETY: a shim whose command line names our socket.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        // Mounts left below the temp dir (task rootfs bind mounts).
        let base = self.dir.path().display().to_string();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| m.starts_with(&base))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// A running container; dropping it kills and removes it.
pub struct RealContainer<'a> {
    ctrd: &'a Containerd,
    /// 64 hex digits.
    pub id: String,
    /// The cgroup path given to `ctr run --cgroup`.
    pub cgroup: String,
    /// Host pid of the container's init (pid 1 inside).
    pub init_pid: u32,
}

impl RealContainer<'_> {
    /// `ctr task exec` (what `kubectl exec` does: `runc exec`), to
    /// completion; `user` as `uid[:gid]` or a name from the rootfs.
    pub fn exec(&self, exec_id: &str, user: Option<&str>, argv: &[&str]) -> Output {
        let mut args = vec!["task", "exec", "--exec-id", exec_id];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        args.push(&self.id);
        args.extend_from_slice(argv);
        self.ctrd.ctr_ok(&args)
    }

    /// [`exec`](Self::exec) that may fail (the exec'd process killed).
    pub fn try_exec(&self, exec_id: &str, argv: &[&str]) -> Output {
        let mut args = vec!["task", "exec", "--exec-id", exec_id, &self.id];
        args.extend_from_slice(argv);
        self.ctrd.ctr(&args)
    }

    /// Waits until the task stopped (its entrypoint exited).
    pub fn wait_stopped(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.ctrd.ctr_ok(&["task", "ls"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text
                .lines()
                .any(|l| l.starts_with(&self.id) && l.contains("STOPPED"))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "container {} still running:\n{text}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RealContainer<'_> {
    fn drop(&mut self) {
        self.ctrd.remove(&self.id);
    }
}

/// Builds the rootfs: static busybox with its applets, `/etc/passwd` and
/// `/etc/group` (for `--user` names), and the mount points runc needs.
pub fn build_rootfs(root: &Path) {
    for d in ["bin", "etc", "proc", "dev", "sys", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).expect("rootfs dir");
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("static busybox (Debian package busybox-static; `cargo xtask setup`)");
    std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).expect("applet link");
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
}

/// A network namespace the test creates (`ip netns add`, loopback up),
/// for containers to join (`ctr run --with-ns network:<path>`). Deleted
/// on drop.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(tag: &str) -> Self {
        let name = format!("picket-{tag}-{}", std::process::id());
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("ip");
            assert!(st.success(), "ip {args:?} failed");
        };
        ip(&["netns", "add", &name]);
        let me = Self { name };
        ip(&["-n", &me.name, "link", "set", "lo", "up"]);
        me
    }

    /// `/var/run/netns/<name>`.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// A TCP listener on 127.0.0.1 inside the namespace, on a thread that
    /// accepts and counts connections (closing each at once). Returns its
    /// port and the count.
    pub fn listen(&self) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::{
            os::fd::AsRawFd,
            sync::{Arc, atomic::AtomicUsize, mpsc},
        };
        let ns = std::fs::File::open(self.path()).expect("open netns");
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // SAFETY: setns(2) of this thread only, into the test's netns.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen in netns");
            tx.send(l.local_addr().expect("addr").port()).expect("port");
            for c in l.incoming() {
                if c.is_ok() {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        (rx.recv().expect("listener port"), count)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
