//! One measurement: a monitor started, a workload run under it, the monitor
//! drained, sampled and stopped, and its output attributed to the workload.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    BenchError,
    monitor::{self, Env, Monitor, Running},
    parse::{self, Attribution, EventRec, Record},
    sys,
    workload::{self, ChildKind, Workload},
};

/// Sizes of the workloads.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sizes {
    pub exec_n: u64,
    pub connect_n: u64,
    pub open_n: u64,
    pub mixed_scale: u64,
}

/// Everything a measurement needs.
pub struct Ctx<'a> {
    pub env: Env<'a>,
    pub sizes: Sizes,
    /// This binary, for the workload children.
    pub self_exe: PathBuf,
    /// The CPU the workloads are pinned to (with their children), if any.
    pub pin_cpu: Option<usize>,
    pub open_dir: PathBuf,
    pub mixed_script: PathBuf,
    pub mixed_dir: PathBuf,
}

/// One run of one workload under one monitor.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub run: usize,
    pub wall_s: f64,
    /// CPU (user+sys) the workload and its children used: the monitor's
    /// in-kernel cost lands here, the hypervisor's steal time does not.
    pub workload_cpu_s: Option<f64>,
    /// Machine-wide steal time during the run, % of all CPUs' wall time.
    pub steal_pct: Option<f64>,
    /// Operations the workload performed (execs, connects, opens; 0 for mixed).
    pub ops: u64,
    /// Monitor CPU (user+sys) from workload start until the monitor drained.
    pub monitor_cpu_s: Option<f64>,
    /// Event records the monitor delivered in that window (any process).
    pub events_total: u64,
    /// Event records attributed to the workload.
    pub events_workload: u64,
    /// Workload records of the workload's own kind (exec/connect/open).
    pub events_primary: u64,
    /// What `events_primary` should be if nothing was dropped.
    pub events_expected: Option<u64>,
    pub events_lost: u64,
    pub events_summarized: u64,
    pub alerts: u64,
    pub peak_rss_kib: Option<u64>,
    /// Alert latencies (kernel timestamp → line read), ns, for alerts about
    /// workload processes. Not serialized per run (summarised instead).
    #[serde(skip)]
    pub latencies_ns: Vec<u64>,
}

/// Whether `m` reports events of `w`'s kind at all (other pairs are skipped).
pub fn applicable(w: Workload, m: Monitor) -> bool {
    match m {
        Monitor::None | Monitor::Picket | Monitor::PicketAlerts | Monitor::Auditd => true,
        Monitor::Execsnoop => matches!(w, Workload::Exec | Workload::Mixed),
        Monitor::Opensnoop => matches!(w, Workload::Open | Workload::Mixed),
    }
}

/// Whether a record is of the workload's own kind, per monitor format.
pub fn is_primary(w: Workload, m: Monitor, ev: &EventRec) -> bool {
    let k = ev.kind.as_str();
    match (w, m) {
        (Workload::Exec, Monitor::Picket) => k == "exec",
        (Workload::Exec, Monitor::Auditd) => k == "59" || k == "322", // execve, execveat
        (Workload::Exec, Monitor::Execsnoop) => true,
        (Workload::Connect, Monitor::Picket) => k == "connect",
        (Workload::Connect, Monitor::Auditd) => k == "42",
        (Workload::Open, Monitor::Picket) => k == "file_open",
        (Workload::Open, Monitor::Auditd) => k == "2" || k == "257" || k == "437", // open, openat, openat2
        (Workload::Open, Monitor::Opensnoop) => true,
        _ => false,
    }
}

/// Expected count of primary records for `ops` operations.
pub fn expected(w: Workload, m: Monitor, ops: u64, monitored_paths: usize) -> Option<u64> {
    match (w, m) {
        (Workload::Exec, Monitor::Picket | Monitor::Auditd | Monitor::Execsnoop) => Some(ops),
        (Workload::Connect, Monitor::Picket | Monitor::Auditd) => Some(ops),
        // Every tenth open is of a monitored path.
        (Workload::Open, Monitor::Picket | Monitor::Auditd) if monitored_paths > 0 => {
            Some(ops.div_ceil(10))
        }
        (Workload::Open, Monitor::Opensnoop) => Some(ops),
        _ => None,
    }
}

/// Starts the workload's process.
pub fn spawn_workload(ctx: &Ctx<'_>, w: Workload) -> Result<Child, BenchError> {
    let mut cmd = match w {
        Workload::Mixed => {
            let mut c = Command::new("sh");
            c.arg(&ctx.mixed_script)
                .arg(&ctx.mixed_dir)
                .arg(ctx.sizes.mixed_scale.to_string());
            c
        }
        _ => {
            let (kind, n) = match w {
                Workload::Exec => (ChildKind::Exec, ctx.sizes.exec_n),
                Workload::Connect => (ChildKind::Connect, ctx.sizes.connect_n),
                _ => (ChildKind::Open, ctx.sizes.open_n),
            };
            let mut c = child_cmd(&ctx.self_exe, kind);
            c.arg("--child-n").arg(n.to_string());
            if w == Workload::Open {
                c.arg("--child-dir").arg(&ctx.open_dir);
                for p in ctx.env.monitored {
                    c.arg("--child-path").arg(p);
                }
            }
            c
        }
    };
    clean_env(&mut cmd);
    if let Some(cpu) = ctx.pin_cpu {
        sys::pin_to_cpu(&mut cmd, cpu);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::Child(format!("starting the {} workload: {e}", w.name())))
}

/// Removes what `cargo run` (hence `cargo xtask`) adds to the environment
/// that changes how a workload runs: `LD_LIBRARY_PATH` lists the toolchain's
/// and the target directory's library directories, so the dynamic loader of
/// every `/bin/true` probed ~76 non-existent `libc.so.6` paths before the real
/// one. That made each exec 15 times as many `openat` calls as on a normal
/// host and charged every monitor hooking `openat` for them.
pub fn clean_env(cmd: &mut Command) {
    cmd.env_remove("LD_LIBRARY_PATH");
}

/// `<self> bench --child <kind>`.
pub fn child_cmd(self_exe: &Path, kind: ChildKind) -> Command {
    let mut c = Command::new(self_exe);
    clean_env(&mut c);
    let name = clap::ValueEnum::to_possible_value(&kind)
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    c.args(["bench", "--child", &name]);
    c
}

/// What a finished workload child left.
#[derive(Debug, Clone, Copy)]
pub struct Waited {
    pub wall_s: f64,
    /// User + system CPU of the child and every descendant it waited for
    /// (`wait4`'s rusage). On a virtual machine this excludes steal time,
    /// which the wall time does not.
    pub cpu_s: f64,
    pub report: Option<workload::ChildReport>,
}

/// Waits for a workload child (interruptible).
pub fn wait_child(mut child: Child, what: &str) -> Result<Waited, BenchError> {
    let start = Instant::now();
    let pid = child.id() as libc::pid_t;
    // SAFETY: all-zero is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut status = 0;
    loop {
        // SAFETY: pid is our own unreaped child; status and ru are valid
        // out-pointers. Reaping here (instead of `Child::wait`) is what gives
        // us the rusage; `child` is only used for its pipes afterwards.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return Err(BenchError::Child(format!("{what}: wait4: {e}")));
        }
        if super::interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::Interrupted);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall_s = start.elapsed().as_secs_f64();
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu_s = tv(ru.ru_utime) + tv(ru.ru_stime);
    let read = |r: Option<&mut dyn std::io::Read>| {
        let mut s = String::new();
        if let Some(r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    };
    let stdout = read(child.stdout.as_mut().map(|s| s as &mut dyn std::io::Read));
    let stderr = read(child.stderr.as_mut().map(|s| s as &mut dyn std::io::Read));
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(BenchError::Child(format!(
            "{what} failed (wait status {status:#x}): {}",
            stderr.trim()
        )));
    }
    Ok(Waited {
        wall_s,
        cpu_s,
        report: workload::parse_report(&stdout),
    })
}

/// How long to let a monitor catch up after a workload: Picket reads its
/// loss counters every second, so it gets at least 1.3 s.
pub fn drain_min(m: Monitor) -> Duration {
    match m {
        Monitor::Picket | Monitor::PicketAlerts => Duration::from_millis(1300),
        _ => Duration::from_millis(300),
    }
}

/// Runs workload `w` once under monitor `m`.
pub fn measure(
    ctx: &Ctx<'_>,
    w: Workload,
    m: Monitor,
    run: usize,
) -> Result<RunResult, BenchError> {
    let mon = Running::start(m, &ctx.env)?;
    let cpu0 = mon.cpu();
    let steal0 = sys::steal_ticks();
    let child = spawn_workload(ctx, w)?;
    let root = child.id();
    let Waited {
        wall_s: wall,
        cpu_s: workload_cpu_s,
        report,
    } = wait_child(child, w.name())?;
    let steal_pct = steal0.zip(sys::steal_ticks()).map(|(a, b)| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        (b.saturating_sub(a)) as f64 / sys::clk_tck() as f64 / (wall * cpus) * 100.0
    });
    mon.drain(
        drain_min(m),
        Duration::from_millis(300),
        Duration::from_secs(30),
    );
    let cpu1 = mon.cpu();
    let usage = mon.usage();
    let fin = mon.stop()?;
    let ops = report.map(|r| r.ops).unwrap_or(0);
    let attr = match (w, m) {
        (Workload::Mixed, Monitor::Opensnoop) => Attribution::Comms(workload::MIXED_COMMS),
        _ => Attribution::Tree(root),
    };
    let tally = parse::tally(&fin.records, &attr);
    let tree = parse::descendants(root, &fin.records);
    let primary = fin
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Event(ev) => Some(ev),
            _ => None,
        })
        // The workload process's own exec (of this binary) is not an operation.
        .filter(|ev| {
            tree.contains(&ev.pid)
                && !(w == Workload::Exec && ev.pid == root)
                && is_primary(w, m, ev)
        })
        .count() as u64;
    let latencies_ns = fin
        .alert_latencies
        .iter()
        .filter(|(ev, _)| tree.contains(&ev.pid))
        .map(|(_, l)| *l)
        .collect();
    Ok(RunResult {
        run,
        wall_s: wall,
        workload_cpu_s: Some(workload_cpu_s),
        steal_pct,
        ops,
        monitor_cpu_s: (m != Monitor::None)
            .then(|| monitor::cpu_ns_between(&cpu0, &cpu1) as f64 / 1e9),
        events_total: tally.total,
        events_workload: tally.workload,
        events_primary: primary,
        events_expected: expected(w, m, ops, ctx.env.monitored.len()),
        events_lost: tally.lost + fin.lost_outside,
        events_summarized: tally.summarized,
        alerts: tally.alerts,
        peak_rss_kib: usage.map(|u| u.hwm_kib),
        latencies_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str) -> EventRec {
        EventRec {
            kind: kind.into(),
            pid: 1,
            ppid: None,
            child: None,
            comm: None,
        }
    }

    #[test]
    fn primary_kinds_per_monitor() {
        assert!(is_primary(Workload::Exec, Monitor::Picket, &ev("exec")));
        assert!(!is_primary(Workload::Exec, Monitor::Picket, &ev("fork")));
        assert!(is_primary(Workload::Exec, Monitor::Auditd, &ev("59")));
        assert!(is_primary(Workload::Connect, Monitor::Auditd, &ev("42")));
        assert!(is_primary(Workload::Open, Monitor::Auditd, &ev("257")));
        assert!(!is_primary(Workload::Open, Monitor::Auditd, &ev("59")));
        assert!(is_primary(Workload::Open, Monitor::Opensnoop, &ev("open")));
        assert!(!is_primary(Workload::Mixed, Monitor::Picket, &ev("exec")));
    }

    #[test]
    fn expectations() {
        assert_eq!(
            expected(Workload::Exec, Monitor::Execsnoop, 5000, 3),
            Some(5000)
        );
        assert_eq!(
            expected(Workload::Open, Monitor::Picket, 1001, 3),
            Some(101)
        );
        assert_eq!(expected(Workload::Open, Monitor::Picket, 1000, 0), None);
        assert_eq!(
            expected(Workload::Open, Monitor::Opensnoop, 1000, 3),
            Some(1000)
        );
        assert_eq!(expected(Workload::Connect, Monitor::Execsnoop, 10, 3), None);
        assert_eq!(expected(Workload::Mixed, Monitor::Picket, 0, 3), None);
        assert_eq!(expected(Workload::Exec, Monitor::None, 10, 3), None);
    }

    #[test]
    fn applicability() {
        assert!(applicable(Workload::Connect, Monitor::Auditd));
        assert!(!applicable(Workload::Connect, Monitor::Execsnoop));
        assert!(!applicable(Workload::Exec, Monitor::Opensnoop));
        assert!(applicable(Workload::Mixed, Monitor::Opensnoop));
    }
}
