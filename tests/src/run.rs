//! End-to-end tests through the shipped binary: `picket run` as a subprocess.
//!
//! [`PicketRun`] builds (once per test process) and starts the real `picket`
//! binary with `--format json --ready-file ...`, waits until its programs are
//! attached, and parses its stdout JSON lines into [`Record`]s. Dropping it
//! stops the agent (SIGTERM, then SIGKILL), also when the test panics; the
//! agent also gets SIGKILL if the test process dies (`PR_SET_PDEATHSIG`).
//!
//! The binary is `<target>/<profile>/picket` next to the test executable's
//! `deps/` directory, built with `cargo build -p picket --bin picket` so a
//! test never runs a stale agent. `PICKET_BIN=/path/to/picket` skips the build
//! and uses that binary instead.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{OnceLock, mpsc},
    time::{Duration, Instant},
};

use picket::model::{Alert, Event};

/// How long `picket run` may take to load and attach its programs.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (where the default `rules/` directory lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package lives in the workspace")
        .to_path_buf()
}

/// The default rule set shipped in the repository.
pub fn default_rules() -> PathBuf {
    workspace_root().join("rules")
}

/// The `picket` binary, freshly built for this test run (see the module docs).
pub fn picket_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("PICKET_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        // <target>/<profile>/deps/<test>-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable under <target>/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir
            .parent()
            .expect("<target>/<profile>")
            .to_path_buf();
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug")
            .to_string();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        // `cargo test` gives this process the test crate's CARGO_MANIFEST_DIR,
        // CARGO_PKG_* and friends; build scripts that watch them (ring's
        // watches CARGO_MANIFEST_DIR) would be re-run and thrash the cache
        // of the outer build. Cargo's own configuration variables stay.
        for (k, _) in std::env::vars_os() {
            let Some(k) = k.to_str() else { continue };
            let config = [
                "CARGO_HOME",
                "CARGO_BUILD_",
                "CARGO_PROFILE_",
                "CARGO_REGISTRIES_",
                "CARGO_REGISTRY_",
                "CARGO_NET_",
                "CARGO_HTTP_",
                "CARGO_TERM_",
                "CARGO_INCREMENTAL",
                "CARGO_RESOLVER_",
                "CARGO_ENCODED_RUSTFLAGS",
                "CARGO_TARGET_",
                "CARGO_UNSTABLE_",
            ]
            .iter()
            .any(|p| k.starts_with(p));
            if (k.starts_with("CARGO_") && !config) || k == "OUT_DIR" {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(workspace_root())
            .args(["build", "--quiet", "-p", "picket", "--bin", "picket"])
            .env("CARGO_TARGET_DIR", &target_dir)
            // The real kernel programs are needed, never the empty stand-in.
            .env_remove("AYA_BUILD_SKIP");
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("running cargo to build picket: {e}"));
        assert!(status.success(), "cargo build -p picket failed: {status}");
        let bin = profile_dir.join("picket");
        assert!(bin.is_file(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// One stdout line of `picket run --format json`.
#[derive(Clone, Debug)]
pub enum Record {
    Alert(Box<Alert>),
    Event(Box<Event>),
}

/// What to start.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// `--rules` paths; empty = the repository's default `rules/`.
    pub rules: Vec<PathBuf>,
    /// `--only-cgroup` directories (required: tests never watch the whole machine).
    pub only_cgroups: Vec<PathBuf>,
    /// `--events`: print every event too.
    pub events: bool,
    /// Further arguments (e.g. `--kubernetes on --kubeconfig FILE`).
    pub extra_args: Vec<String>,
    /// Environment variables for the agent (after the defaults above, e.g.
    /// `KUBERNETES_SERVICE_HOST`, which is removed otherwise).
    pub env: Vec<(String, String)>,
}

/// A running `picket run`.
pub struct PicketRun {
    child: Child,
    dir: tempfile::TempDir,
    rx: mpsc::Receiver<Result<Record, String>>,
    /// Everything received so far, in order.
    pub records: Vec<Record>,
}

/// The node name the tests give `picket run`.
pub const NODE: &str = "e2e-node";

impl PicketRun {
    /// Starts `picket run` and returns once it wrote its ready file.
    pub fn start(opts: RunOptions) -> Self {
        assert!(
            !opts.only_cgroups.is_empty(),
            "end-to-end tests must scope the agent with --only-cgroup"
        );
        let bin = picket_binary();
        let dir = tempfile::Builder::new()
            .prefix("picket-e2e-run-")
            .tempdir()
            .expect("tempdir");
        let ready = dir.path().join("ready");
        let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let mut cmd = Command::new(&bin);
        cmd.current_dir(workspace_root())
            .args(["run", "--format", "json", "--node-name", NODE])
            .arg("--ready-file")
            .arg(&ready)
            .env("PICKET_LOG", "info")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let rules = if opts.rules.is_empty() {
            vec![default_rules()]
        } else {
            opts.rules.clone()
        };
        for r in &rules {
            cmd.arg("--rules").arg(r);
        }
        for c in &opts.only_cgroups {
            cmd.arg("--only-cgroup").arg(c);
        }
        if opts.events {
            cmd.arg("--events");
        }
        cmd.args(&opts.extra_args);
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        // SAFETY: prctl is async-signal-safe; no allocation between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(parse_line(&line)).is_err() {
                    break;
                }
            }
        });
        let mut run = Self {
            child,
            dir,
            rx,
            records: Vec::new(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !ready.exists() {
            if let Ok(Some(status)) = run.child.try_wait() {
                panic!(
                    "picket run exited before it was ready ({status}):\n{}",
                    run.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "picket run not ready after {READY_TIMEOUT:?}:\n{}",
                run.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        run
    }

    /// The agent's log so far (for failure messages).
    pub fn stderr(&self) -> String {
        let text: String = std::fs::read_to_string(self.dir.path().join("stderr"))
            .unwrap_or_default()
            .lines()
            // One line per attached program: noise in a failure message.
            .filter(|l| !l.contains(" attached program="))
            .map(|l| format!("{l}\n"))
            .collect();
        // The end is what matters; keep messages readable.
        let start = text.len().saturating_sub(8000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text[start..].to_string()
    }

    /// Receives one record within `left`; false on timeout. Panics when the
    /// agent printed something that is not an event or an alert.
    fn recv(&mut self, left: Duration) -> bool {
        match self.rx.recv_timeout(left) {
            Ok(Ok(r)) => {
                self.records.push(r);
                true
            }
            Ok(Err(e)) => panic!("{e}\nagent log:\n{}", self.stderr()),
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("picket run closed its stdout:\n{}", self.stderr())
            }
        }
    }

    /// Waits for an alert matching `pred` (returned). On timeout panics with
    /// everything received and the agent's log.
    pub fn wait_alert(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Alert) -> bool,
    ) -> Alert {
        self.wait_record(what, timeout, |r| match r {
            Record::Alert(a) if pred(a) => Some((**a).clone()),
            _ => None,
        })
    }

    /// Waits for an event (needs `events: true`) matching `pred`.
    pub fn wait_event(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        self.wait_record(what, timeout, |r| match r {
            Record::Event(e) if pred(e) => Some((**e).clone()),
            _ => None,
        })
    }

    fn wait_record<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        pick: impl Fn(&Record) -> Option<T>,
    ) -> T {
        if let Some(found) = self.records.iter().find_map(&pick) {
            return found;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.recv(left) {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; received {} records:\n{}\nagent log:\n{}",
                    self.records.len(),
                    self.dump(),
                    self.stderr()
                );
            }
            if let Some(found) = self.records.last().and_then(&pick) {
                return found;
            }
        }
    }

    /// Receives records until none arrives for `quiet`.
    pub fn drain(&mut self, quiet: Duration) {
        while self.recv(quiet) {}
    }

    /// The alerts received so far.
    pub fn alerts(&self) -> Vec<&Alert> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::Alert(a) => Some(&**a),
                Record::Event(_) => None,
            })
            .collect()
    }

    /// Alerts of rule `id` received so far.
    pub fn alerts_of(&self, id: &str) -> Vec<&Alert> {
        self.alerts()
            .into_iter()
            .filter(|a| a.rule.id == id)
            .collect()
    }

    /// Everything received, one JSON line per record (for failure messages).
    pub fn dump(&self) -> String {
        self.records
            .iter()
            .map(|r| match r {
                Record::Alert(a) => format!(
                    "ALERT {}",
                    serde_json::to_string(a).unwrap_or_else(|e| e.to_string())
                ),
                Record::Event(e) => serde_json::to_string(e).unwrap_or_else(|e| e.to_string()),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for PicketRun {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) of our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_line(line: &str) -> Result<Record, String> {
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| format!("picket run printed a line that is not JSON ({e}): {line}"))?;
    if let Some(alert) = value.get("alert") {
        serde_json::from_value::<Alert>(alert.clone())
            .map(|a| Record::Alert(Box::new(a)))
            .map_err(|e| format!("an alert that does not match the schema ({e}): {line}"))
    } else {
        serde_json::from_value::<Event>(value)
            .map(|e| Record::Event(Box::new(e)))
            .map_err(|e| format!("an event that does not match the schema ({e}): {line}"))
    }
}

/// A spawned helper process that is killed and reaped when dropped.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> Self {
        Self(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}")),
        )
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Waits for the exit within `timeout` (panics otherwise) and returns
    /// the exit status.
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.0.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "process {} did not exit within {timeout:?}",
                self.0.id()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The canonical path of `p` (executables are reported resolved: `/bin/sh`
/// is `/usr/bin/dash` on Debian).
pub fn canonical(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    std::fs::canonicalize(p)
        .unwrap_or_else(|e| panic!("canonicalize {}: {e}", p.display()))
        .display()
        .to_string()
}

/// Runs `cmd` to completion with its output captured; panics when it cannot
/// start or runs longer than `timeout` (the caller's cgroup guard then kills
/// it).
pub fn output_within(cmd: &mut Command, timeout: Duration) -> std::process::Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("waiting for {cmd:?}: {e}"),
        Err(_) => panic!("{cmd:?} did not finish within {timeout:?}"),
    }
}

/// Cleanup for daemons a fixture started under its own temp dir (dockerd,
/// podman): SIGKILL every process whose command line names `dir` (the
/// daemon's containerd, shims, conmon monitors), then lazily unmount every
/// mount below it, deepest first. Only what the fixture made is touched.
pub fn reap_below(dir: &Path) {
    let base = dir.display().to_string();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&base) {
                // SAFETY: a process whose command line names our temp dir.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
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

/// `tar -C <root> -cf <tar> .`, panicking when tar fails.
pub fn tar_dir(root: &Path, tar: &Path) {
    let st = Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success(), "tar of {} failed", root.display());
}

/// Polls `ready` every `every` until it holds, panicking after `timeout`
/// with `what` and the text `log` returns then (a daemon's log, say). For
/// fixtures that start a daemon and must wait until it answers.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut ready: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not come up within {timeout:?}:\n{}",
            log()
        );
        std::thread::sleep(every);
    }
}
