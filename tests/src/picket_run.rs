//! `picket run` as a child process: the shipped binary, started with a rule
//! directory and a configuration file, its JSON-lines stdout read on a
//! thread. Killed when dropped.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::cgroup::TestCgroup;

/// How long an expected output may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `picket` binary cargo built next to this test binary.
pub fn picket_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/picket
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("picket"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} missing: build it first (`cargo build -p picket`; `cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// A running `picket run`, killed on drop; its stdout lines (JSON) arrive
/// on a channel; `seen` keeps the alerts read so far.
pub struct Picket {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<Value>,
}

impl Drop for Picket {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Picket {
    pub fn start(dir: &Path, rules: &str, config: &str, cgroups: &[&TestCgroup]) -> Self {
        Self::start_with(dir, rules, config, cgroups, &[])
    }

    /// [`Picket::start`] with extra `picket run` arguments (e.g.
    /// `--kubernetes on --kubeconfig FILE`).
    pub fn start_with(
        dir: &Path,
        rules: &str,
        config: &str,
        cgroups: &[&TestCgroup],
        extra: &[String],
    ) -> Self {
        let rules_dir = dir.join("rules");
        std::fs::create_dir_all(&rules_dir).expect("rules dir");
        std::fs::write(rules_dir.join("e2e.yaml"), rules).expect("rules");
        let cfg = dir.join("picket.yaml");
        std::fs::write(&cfg, config).expect("config");
        let ready = dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(picket_bin());
        cmd.arg("run")
            .arg("--rules")
            .arg(&rules_dir)
            .arg("--config")
            .arg(&cfg)
            .args(["--format", "json", "--node-name", "e2e-node"])
            .arg("--ready-file")
            .arg(&ready)
            .env("PICKET_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for cg in cgroups {
            cmd.arg("--only-cgroup").arg(&cg.path);
        }
        cmd.args(extra);
        let mut child = cmd.spawn().expect("spawn picket run");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut me = Self {
            child,
            lines,
            seen: Vec::new(),
        };
        // Generous: loading every program takes over a minute on a loaded
        // two-core machine.
        let deadline = Instant::now() + Duration::from_secs(240);
        while !ready.exists() {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("picket run exited before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "picket run not ready in 240 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    /// Waits for an output object satisfying `pred`.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                    // `{"alert": {...}}`; events (`{"event": ...}`) are not
                    // requested.
                    let Some(v) = v.get("alert").cloned() else {
                        continue;
                    };
                    let hit = pred(&v);
                    self.seen.push(v.clone());
                    if hit {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no {what} within {WAIT:?}; saw:\n{}",
                    self.seen
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }
}

impl Picket {
    /// The agent's pid (e.g. to find its BPF maps through /proc/PID/fdinfo).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the agent with SIGKILL (a crash: no flush, no clean shutdown)
    /// and waits for it.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the agent with SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) of our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait picket run")
    }
}
