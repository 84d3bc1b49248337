//! A private podman for real-kernel tests: Debian's `podman` with its own
//! storage root, run root and temp dir under a temp dir, the `vfs` storage
//! driver, the `cgroupfs` manager (no systemd here), `runc`, no network,
//! events to a file; its Docker-compatible API served by `podman system
//! service` on a socket in the same temp dir. Images come from `podman
//! import` of the busybox rootfs the test builds.
//!
//! Everything is removed on drop, also when a test panics: containers, the
//! API service, conmon monitors, mounts below the temp dir.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::run::{ChildGuard, output_within, reap_below, tar_dir};

const PODMAN_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Podman {
    pub dir: tempfile::TempDir,
    /// The API socket (`podman system service`).
    pub socket: PathBuf,
    service: Option<ChildGuard>,
}

impl Podman {
    /// Starts the API service and waits until it answers.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("picket-podman-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("podman tmpdir");
        let socket = dir.path().join("podman.sock");
        let mut me = Self {
            dir,
            socket,
            service: None,
        };
        let log = std::fs::File::create(me.dir.path().join("service.log")).expect("log");
        let mut cmd = me.command();
        cmd.args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", me.socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        me.service = Some(ChildGuard::spawn(&mut cmd));
        crate::run::wait_for(
            "podman system service",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || me.socket.exists(),
            || me.log(),
        );
        me
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    /// `podman` with this instance's storage and settings.
    fn command(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--runtime",
                "runc",
                "--events-backend",
                "file",
            ])
            // No user or system containers.conf changes what is tested.
            .env("CONTAINERS_CONF", "/dev/null")
            .env("TMPDIR", d.join("tmp"));
        cmd
    }

    /// Runs `podman <args>` against this instance.
    pub fn podman(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args).stdin(Stdio::null());
        output_within(&mut cmd, PODMAN_TIMEOUT)
    }

    /// `podman <args>`, panicking (with the service log) unless it succeeds.
    pub fn podman_ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}\n{}\nservice log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `podman import` of a tar of `rootfs` as image `name`.
    pub fn import(&self, rootfs: &Path, name: &str) {
        let tar = self.dir.path().join("rootfs.tar");
        tar_dir(rootfs, &tar);
        self.podman_ok(&["import", &tar.display().to_string(), name]);
    }

    /// `podman create --network none --name <name> --cgroup-parent <parent>
    /// <image> <argv...>`; returns the container's full id (its cgroup,
    /// `<parent>/libpod-<id>` with the cgroupfs manager, is made by the test
    /// before `start`, so a scoped agent can watch it).
    ///
    /// The rlimits are given explicitly: podman raises `nofile` and `nproc`
    /// to its own hard limits by default, which needs `CAP_SYS_RESOURCE`,
    /// and root in this sandbox lacks it (runc then fails with EPERM).
    pub fn create(&self, name: &str, cgroup_parent: &str, image: &str, argv: &[&str]) -> String {
        let mut args = vec![
            "create",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--name",
            name,
            "--cgroup-parent",
            cgroup_parent,
            image,
        ];
        args.extend_from_slice(argv);
        self.podman_ok(&args)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-f", "-a", "-t", "0"]);
        if let Some(mut s) = self.service.take() {
            // SAFETY: SIGTERM to the service this fixture started.
            unsafe { libc::kill(s.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && matches!(s.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Its daemon's helpers (containerd and shims, conmon) name our temp
        // dir on their command line; mounts below it are ours too.
        reap_below(self.dir.path());
    }
}
