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
    pub open_dir: PathBuf,
    pub mixed_script: PathBuf,
    pub mixed_dir: PathBuf,
}

/// One run of one workload under one monitor.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub run: usize,
    pub wall_s: f64,
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
        Monitor::None | Monitor::Picket | Monitor::Auditd => true,
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
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::Child(format!("starting the {} workload: {e}", w.name())))
}

/// `<self> bench --child <kind>`.
pub fn child_cmd(self_exe: &Path, kind: ChildKind) -> Command {
    let mut c = Command::new(self_exe);
    let name = clap::ValueEnum::to_possible_value(&kind)
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    c.args(["bench", "--child", &name]);
    c
}

/// Waits for a workload child (interruptible); returns its wall time and report.
pub fn wait_child(
    mut child: Child,
    what: &str,
) -> Result<(f64, Option<workload::ChildReport>), BenchError> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) => {}
            Err(e) => return Err(BenchError::Child(format!("{what}: {e}"))),
        }
        if super::interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::Interrupted);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = start.elapsed().as_secs_f64();
    let out = child
        .wait_with_output()
        .map_err(|e| BenchError::Child(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(BenchError::Child(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok((
        wall,
        workload::parse_report(&String::from_utf8_lossy(&out.stdout)),
    ))
}

/// How long to let a monitor catch up after a workload: Picket reads its
/// loss counters every second, so it gets at least 1.3 s.
pub fn drain_min(m: Monitor) -> Duration {
    match m {
        Monitor::Picket => Duration::from_millis(1300),
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
    let child = spawn_workload(ctx, w)?;
    let root = child.id();
    let (wall, report) = wait_child(child, w.name())?;
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
