//! Running the real agent in-process for a test.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use picket::{
    agent::{Agent, AgentConfig, CgroupScope},
    model::Event,
};

/// Guard for one real-kernel test: asserts root at start; on success
/// ([`KernelTest::done`]) writes `$PICKET_KERNEL_TEST_MARKERS/<name>` so the
/// test runner can prove the test was not skipped.
pub struct KernelTest {
    name: &'static str,
}

/// `kernel_test!(name)`: starts a [`KernelTest`] named `<test binary>::<name>`.
#[macro_export]
macro_rules! kernel_test {
    ($name:ident) => {
        $crate::kernel::KernelTest::start(concat!(
            env!("CARGO_CRATE_NAME"),
            "::",
            stringify!($name)
        ))
    };
}

impl KernelTest {
    pub fn start(name: &'static str) -> Self {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "{name}: real-kernel tests must run as root (they load eBPF programs); run `sudo -E cargo xtask test`"
        );
        Self { name }
    }

    /// Marks the test as run to completion.
    pub fn done(self) {
        if let Some(dir) = std::env::var_os("PICKET_KERNEL_TEST_MARKERS") {
            let p = Path::new(&dir).join(self.name);
            std::fs::write(&p, b"ok")
                .unwrap_or_else(|e| panic!("writing marker {}: {e}", p.display()));
        }
    }
}

/// Starts the real agent tracing only `cgroups` (so concurrent tests and the
/// rest of the machine do not interfere).
pub async fn start_agent(cgroups: &[PathBuf], tweak: impl FnOnce(&mut AgentConfig)) -> Agent {
    let mut cfg = AgentConfig {
        cgroups: CgroupScope::Only(cgroups.to_vec()),
        ..Default::default()
    };
    cfg.pipeline.node_name = "test-node".into();
    tweak(&mut cfg);
    match Agent::start(cfg).await {
        Ok(a) => a,
        Err(e) => panic!(
            "starting the agent: {}",
            picket::sensor::loader::error_chain(&e)
        ),
    }
}

/// Collects events until `pred` matches one (returned) or `timeout` passes
/// (panics with everything seen, to make failures readable).
pub async fn wait_for(
    agent: &mut Agent,
    seen: &mut Vec<Event>,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = Instant::now() + timeout;
    if let Some(e) = seen.iter().find(|e| pred(e)) {
        return e.clone();
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, agent.next()).await {
            Ok(Some(ev)) => {
                let hit = pred(&ev);
                seen.push(ev.clone());
                if hit {
                    return ev;
                }
            }
            Ok(None) => panic!("agent stopped while waiting for {what}"),
            Err(_) => panic!(
                "timed out waiting for {what}; saw {} events:\n{}",
                seen.len(),
                seen.iter()
                    .map(|e| serde_json::to_string(e).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
}

/// Reads events until none arrives for `quiet`.
pub async fn drain(agent: &mut Agent, seen: &mut Vec<Event>, quiet: Duration) {
    while let Ok(Some(ev)) = tokio::time::timeout(quiet, agent.next()).await {
        seen.push(ev);
    }
}

/// The exec id Picket computes for a running process, from /proc.
pub fn exec_id_of(node: &str, pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the last ')' (comm may contain spaces): state is field 3,
    // starttime is field 22.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let start: u64 = rest
        .split_whitespace()
        .nth(19)
        .expect("starttime")
        .parse()
        .expect("number");
    format!("{node}:{start}:{pid}")
}
