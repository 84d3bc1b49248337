//! A fake Kubernetes container for real-kernel tests: there is no container
//! engine here, so a "container" is what the kernel sees of one (see
//! /work/shared/platform-notes.md): an init process in its own pid, mount,
//! uts, ipc and network namespaces, in a kubelet-style cgroup
//! `kubepods/besteffort/pod<uid>/cri-containerd-<64 hex>.scope`. A
//! `kubectl exec` is a process that joins the cgroup and then enters the
//! namespaces with `nsenter`.

use std::{
    os::fd::{FromRawFd, OwnedFd},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{cgroup::TestCgroup, run::ChildGuard};

/// A running fake container; dropping it kills its processes and removes
/// its cgroups.
pub struct FakeContainer {
    pub pod_uid: String,
    /// 64 hex digits.
    pub id: String,
    /// Host pid of the container's init (pid 1 inside).
    pub init_pid: u32,
    // Field order matters: the init dies before the cgroup is removed.
    unshare: ChildGuard,
    pub cgroup: TestCgroup,
}

impl FakeContainer {
    /// Starts a container whose init (pid 1 inside) runs `/bin/sh -c
    /// <init_script>`; the script must end with `exec /bin/sleep 1000` (see
    /// [`wait_until_sleeping`](Self::wait_until_sleeping)). Returns once the
    /// init exists.
    pub fn start(prefix: &str, pod_uid: &str, id: &str, init_script: &str) -> Self {
        assert_eq!(id.len(), 64, "container ids are 64 hex digits");
        assert!(init_script.ends_with("exec /bin/sleep 1000"));
        let cgroup = TestCgroup::create(&format!(
            "picket-test-{prefix}-{}/kubepods/besteffort/pod{pod_uid}/cri-containerd-{id}.scope",
            std::process::id()
        ));
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--fork",
            "--kill-child",
            "--pid",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "/bin/sh",
            "-c",
            init_script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
        cgroup.enter(&mut cmd);
        let unshare = ChildGuard::spawn(&mut cmd);
        let init_pid = wait_for_init(unshare.id(), |_| true);
        Self {
            pod_uid: pod_uid.to_string(),
            id: id.to_string(),
            init_pid,
            unshare,
            cgroup,
        }
    }

    /// Waits until the init script reached its final `exec /bin/sleep 1000`
    /// (so everything it ran before has happened).
    pub fn wait_until_sleeping(&self) {
        wait_for_init(self.unshare.id(), |cmdline| {
            cmdline == b"/bin/sleep\x001000\x00"
        });
    }

    /// `kubectl exec`: a command that joins the container's cgroup, then
    /// enters its namespaces (nsenter forks, so `program` runs inside the
    /// pid namespace with a parent outside it).
    pub fn exec(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.init_pid.to_string())
            .args(["-p", "-m", "-u", "-i", "-n", "--", program])
            .args(args);
        self.cgroup.enter(&mut cmd);
        cmd
    }
}

/// The only child of `unshare` (the container's init), once its command
/// line satisfies `ready`.
fn wait_for_init(unshare_pid: u32, ready: impl Fn(&[u8]) -> bool) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children"))
                .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| ready(&c))
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "the container init (child of unshare {unshare_pid}) did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A pseudo-terminal pair `(master, slave)`, as `kubectl exec -it` gives the
/// shell (`process.interactive` is "stdin is a terminal").
pub fn open_pty() -> (OwnedFd, OwnedFd) {
    // SAFETY: plain libc calls; every returned fd is checked and owned once.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        let master = OwnedFd::from_raw_fd(master);
        use std::os::fd::AsRawFd;
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0, "grantpt");
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0, "unlockpt");
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0,
            "ptsname_r"
        );
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(
            slave >= 0,
            "open pty slave: {}",
            std::io::Error::last_os_error()
        );
        (master, OwnedFd::from_raw_fd(slave))
    }
}
