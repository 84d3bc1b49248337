//! A private Docker engine for real-kernel tests: `dockerd` (Debian's
//! `docker.io`) with its own data root, exec root and API socket under a
//! temp dir, no bridge, no iptables or ip_forward changes, the `vfs`
//! storage driver; it starts its own containerd under the exec root.
//! Images come from `docker import` of the busybox rootfs the test builds.
//!
//! Everything is removed on drop, also when a test panics: containers,
//! the daemon and its containerd and shims, mounts below the temp dir.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::run::{ChildGuard, output_within, reap_below, tar_dir};

const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Dockerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    daemon: Option<ChildGuard>,
}

impl Dockerd {
    /// Starts the daemon and waits until its API answers.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("picket-dockerd-")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("d.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("log");
        let mut cmd = Command::new("dockerd");
        cmd.arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-forward=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--storage-driver",
                "vfs",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let me = Self {
            daemon: Some(ChildGuard::spawn(&mut cmd)),
            dir,
            socket,
        };
        crate::run::wait_for(
            "dockerd",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || me.socket.exists() && me.docker(&["version"]).status.success(),
            || me.log(),
        );
        me
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Runs `docker <args>` against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        // The client of the same package as the daemon (docker.io) when it
        // is there: a machine may carry a newer client earlier in PATH.
        let client = if std::path::Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        let mut cmd = Command::new(client);
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null());
        output_within(&mut cmd, DOCKER_TIMEOUT)
    }

    /// `docker <args>`, panicking (with the daemon log) unless it succeeds.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}\ndockerd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `docker import` of a tar of `rootfs` as image `name`.
    pub fn import(&self, rootfs: &Path, name: &str) {
        let tar = self.dir.path().join("rootfs.tar");
        tar_dir(rootfs, &tar);
        self.docker_ok(&["import", &tar.display().to_string(), name]);
    }

    /// `docker create --network none --name <name> --cgroup-parent
    /// <parent> <image> <argv...>`; returns the container's full id (its
    /// cgroup, `<parent>/<id>` with the cgroupfs driver, is made by the
    /// test before `start`, so a scoped agent can watch it).
    pub fn create(&self, name: &str, cgroup_parent: &str, image: &str, argv: &[&str]) -> String {
        let mut args = vec![
            "create",
            "--network",
            "none",
            "--name",
            name,
            "--cgroup-parent",
            cgroup_parent,
            image,
        ];
        args.extend_from_slice(argv);
        self.docker_ok(&args)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        if let Some(mut d) = self.daemon.take() {
            // SAFETY: SIGTERM to the daemon this fixture started.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && matches!(d.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Its daemon's helpers (containerd and shims, conmon) name our temp
        // dir on their command line; mounts below it are ours too.
        reap_below(self.dir.path());
    }
}
