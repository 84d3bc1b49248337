//! Picket-only measurements: alert latency at a moderate rate, the highest
//! event rate without loss, memory with 10,000 processes in the cache, and
//! the in-kernel cost of each eBPF program (`bpf_stats`).

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    BenchError,
    measure::{self, Ctx},
    monitor::{Monitor, Running},
    parse::{self, Attribution, Record},
    stats::Latency,
    sys,
    workload::{ChildKind, Workload},
};

/// What triggers the alerts of the latency measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Read-only opens of this (monitored) path.
    Open(PathBuf),
    /// fork+exec of /bin/true.
    Exec,
}

impl Trigger {
    pub fn parse(s: &str) -> Self {
        if s == "exec" {
            Self::Exec
        } else {
            Self::Open(PathBuf::from(s))
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Open(p) => format!("open(\"{}\", O_RDONLY)", p.display()),
            Self::Exec => "fork+exec of /bin/true".into(),
        }
    }
}

/// Alert latency over several runs.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    pub trigger: String,
    pub rate_per_s: u64,
    pub secs: f64,
    pub ops: Vec<u64>,
    pub alerts: Vec<u64>,
    /// Rules that fired, with counts.
    pub rules: Vec<(String, u64)>,
    /// All runs pooled.
    pub pooled: Option<Latency>,
    pub per_run: Vec<Option<Latency>>,
}

fn paced_child(
    ctx: &Ctx<'_>,
    kind: ChildKind,
    rate: u64,
    secs: f64,
    path: Option<&Path>,
    cgroup: Option<&Path>,
) -> std::process::Command {
    let mut c = measure::child_cmd(&ctx.self_exe, kind);
    c.arg("--child-rate")
        .arg(rate.to_string())
        .arg("--child-secs")
        .arg(secs.to_string());
    if let Some(p) = path {
        c.arg("--child-path").arg(p);
    }
    if let Some(g) = cgroup {
        c.arg("--child-cgroup").arg(g);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Rate per generator process when the load is spread over cgroups: below
/// Picket's default in-kernel limit of 2,000 connect/file_open records per
/// second and cgroup, so the ring buffer, not the limiter, is what is tested.
pub const PER_CGROUP_RATE: u64 = 1500;

/// One paced workload under Picket; returns the ops, the records and the
/// alert latencies of workload processes.
struct PacedRun {
    ops: u64,
    secs: f64,
    records: Vec<Record>,
    tree_latencies: Vec<u64>,
    roots: Vec<u32>,
}

/// Runs `kind` at `rate` ops/s for `secs` under a fresh Picket. With
/// `spread`, the rate is split over processes in cgroups of their own
/// (`PER_CGROUP_RATE` each), as many pods would generate it.
fn paced_under_picket(
    ctx: &Ctx<'_>,
    kind: ChildKind,
    rate: u64,
    secs: f64,
    path: Option<&Path>,
    spread: Option<&BenchCgroup>,
) -> Result<PacedRun, BenchError> {
    let procs = match spread {
        Some(_) => rate.div_ceil(PER_CGROUP_RATE).max(1),
        None => 1,
    };
    let mut cgroups = Vec::new();
    if let Some(cg) = spread {
        for i in 0..procs {
            cgroups.push(Some(cg.sub(&format!("g{i}"))?));
        }
    } else {
        cgroups.push(None);
    }
    let mon = Running::start(Monitor::Picket, &ctx.env)?;
    let mut children = Vec::new();
    for (i, g) in cgroups.iter().enumerate() {
        // Spread the remainder so the rates add up exactly.
        let r = rate / procs + u64::from((i as u64) < rate % procs);
        let child = paced_child(ctx, kind, r, secs, path, g.as_deref())
            .spawn()
            .map_err(|e| BenchError::Child(format!("paced workload: {e}")))?;
        children.push(child);
    }
    let roots: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let (mut ops, mut max_secs) = (0u64, 0f64);
    let mut first_err = None;
    for c in children {
        match measure::wait_child(c, "paced workload") {
            Ok(measure::Waited {
                wall_s: wall,
                report,
                ..
            }) => {
                ops += report.map(|r| r.ops).unwrap_or(0);
                max_secs = max_secs.max(report.map(|r| r.secs).unwrap_or(wall));
            }
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    mon.drain(
        measure::drain_min(Monitor::Picket),
        Duration::from_millis(300),
        Duration::from_secs(30),
    );
    let fin = mon.stop()?;
    let tree = parse::descendants_of(&roots, &fin.records);
    let tree_latencies = fin
        .alert_latencies
        .iter()
        .filter(|(e, _)| tree.contains(&e.pid))
        .map(|(_, l)| *l)
        .collect();
    Ok(PacedRun {
        ops,
        secs: max_secs,
        records: fin.records,
        tree_latencies,
        roots,
    })
}

/// Alert latency: `trigger` at `rate` per second for `secs`, `runs` times.
pub fn latency(
    ctx: &Ctx<'_>,
    trigger: &Trigger,
    rate: u64,
    secs: f64,
    runs: usize,
) -> Result<LatencyResult, BenchError> {
    let mut res = LatencyResult {
        trigger: trigger.describe(),
        rate_per_s: rate,
        secs,
        ops: Vec::new(),
        alerts: Vec::new(),
        rules: Vec::new(),
        pooled: None,
        per_run: Vec::new(),
    };
    let mut pooled = Vec::new();
    for _ in 0..runs {
        super::check_interrupted()?;
        let (kind, path) = match trigger {
            Trigger::Open(p) => (ChildKind::PacedOpen, Some(p.as_path())),
            Trigger::Exec => (ChildKind::PacedExec, None),
        };
        let r = paced_under_picket(ctx, kind, rate, secs, path, None)?;
        let tree = parse::descendants_of(&r.roots, &r.records);
        for rec in &r.records {
            if let Record::Alert { ev, rule, .. } = rec
                && tree.contains(&ev.pid)
            {
                match res.rules.iter_mut().find(|(n, _)| n == rule) {
                    Some((_, c)) => *c += 1,
                    None => res.rules.push((rule.clone(), 1)),
                }
            }
        }
        res.ops.push(r.ops);
        res.alerts.push(r.tree_latencies.len() as u64);
        res.per_run.push(Latency::of(&r.tree_latencies));
        pooled.extend(r.tree_latencies);
    }
    res.pooled = Latency::of(&pooled);
    Ok(res)
}

/// One step of the rate ramp.
#[derive(Debug, Clone, Serialize)]
pub struct RampStep {
    pub target_ops_per_s: u64,
    /// Generator processes, each in a cgroup of its own.
    pub processes: usize,
    pub ops: u64,
    pub secs: f64,
    /// Workload events Picket delivered, per second of workload.
    pub delivered_events_per_s: f64,
    pub delivered: u64,
    pub lost: u64,
    pub summarized: u64,
}

/// The highest event rate without loss.
#[derive(Debug, Clone, Serialize)]
pub struct MaxRate {
    /// Which operation generated the events (`udp connect`, `open`, `exec`).
    pub generator: String,
    pub ring_buffer: String,
    pub steps: Vec<RampStep>,
    /// Highest delivered event rate of a step without any loss.
    pub max_without_loss_events_per_s: Option<f64>,
    /// Offered event rate of the first step that lost events.
    pub first_loss_events_per_s: Option<f64>,
    /// Whether every step's events were delivered, lost-and-counted or summarised.
    pub all_accounted: bool,
}

fn ramp_step(
    ctx: &Ctx<'_>,
    kind: ChildKind,
    rate: u64,
    secs: f64,
    path: Option<&Path>,
    spread: &BenchCgroup,
) -> Result<RampStep, BenchError> {
    let r = paced_under_picket(ctx, kind, rate, secs, path, Some(spread))?;
    let t = parse::tally(&r.records, &Attribution::Trees(&r.roots));
    let secs = r.secs.max(1e-9);
    Ok(RampStep {
        target_ops_per_s: rate,
        processes: r.roots.len(),
        ops: r.ops,
        secs,
        delivered_events_per_s: t.workload as f64 / secs,
        delivered: t.workload,
        lost: t.lost,
        summarized: t.summarized,
    })
}

/// Ramps the rate of one event-generating operation until Picket reports a
/// loss or the generator cannot go faster. The generator is the cheapest
/// operation Picket reports on (a UDP `connect`, else an open of a
/// monitored path, else an exec), probed with a short step first.
pub fn max_rate(ctx: &Ctx<'_>, rates: &[u64], secs: f64) -> Result<MaxRate, BenchError> {
    let spread = BenchCgroup::create("ramp")?;
    let monitored = ctx.env.monitored.first().map(Path::new);
    let mut candidates: Vec<(ChildKind, &str, Option<&Path>)> = vec![(
        ChildKind::PacedUdpConnect,
        "udp connect(2) to 127.0.0.1",
        None,
    )];
    if let Some(p) = monitored {
        candidates.push((ChildKind::PacedOpen, "open(2) of a monitored path", Some(p)));
    }
    candidates.push((ChildKind::PacedExec, "fork+exec of /bin/true", None));
    let mut chosen = None;
    for (kind, what, path) in candidates {
        let probe = ramp_step(ctx, kind, 500, 1.0, path, &spread)?;
        // At least one event per operation must arrive for the figure to mean anything.
        if probe.ops > 0 && probe.delivered + probe.lost + probe.summarized >= probe.ops * 9 / 10 {
            chosen = Some((kind, what, path, probe.delivered as f64 / probe.ops as f64));
            break;
        }
        eprintln!(
            "xtask: bench: picket reports too few events for {what}; trying the next generator"
        );
    }
    let Some((kind, what, path, per_op)) = chosen else {
        return Err(BenchError::Other(
            "picket reported no events for any rate generator".into(),
        ));
    };
    let mut res = MaxRate {
        generator: format!("{what} (~{per_op:.1} events per operation)"),
        ring_buffer: "default (picket run --ring-buffer-bytes default, 16 MiB)".into(),
        steps: Vec::new(),
        max_without_loss_events_per_s: None,
        first_loss_events_per_s: None,
        all_accounted: true,
    };
    for &rate in rates {
        super::check_interrupted()?;
        let s = ramp_step(ctx, kind, rate, secs, path, &spread)?;
        eprintln!(
            "xtask: bench: ramp {rate}/s: {} ops in {:.2} s, {:.0} events/s delivered, {} lost, {} summarised",
            s.ops, s.secs, s.delivered_events_per_s, s.lost, s.summarized
        );
        let offered = s.ops as f64 * per_op / s.secs;
        // per_op from the probe includes each generator's own start-up
        // events; only whole events per operation must be accounted for.
        let accounted = (s.delivered + s.lost + s.summarized) as f64
            >= 0.99 * s.ops as f64 * per_op.floor().max(1.0);
        res.all_accounted &= accounted;
        let achieved = s.ops as f64 / s.secs >= 0.8 * rate as f64;
        let lost = s.lost > 0;
        if lost {
            res.first_loss_events_per_s = Some(offered);
        } else {
            let best = res.max_without_loss_events_per_s.unwrap_or(0.0);
            res.max_without_loss_events_per_s = Some(best.max(s.delivered_events_per_s));
        }
        res.steps.push(s);
        if lost || !achieved {
            break;
        }
    }
    Ok(res)
}

/// Memory with many processes in the cache.
#[derive(Debug, Clone, Serialize)]
pub struct ManyProcesses {
    pub method: String,
    pub processes: u64,
    pub spawn_secs: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub peak_rss_kib: u64,
    pub lost: u64,
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` on v2-only hosts, the
/// `unified` directory on hybrid ones).
pub fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists())
}

/// A cgroup the harness created (with sub-cgroups); everything in it is
/// killed (`cgroup.kill`) and the directories removed on drop.
pub struct BenchCgroup(PathBuf);

impl BenchCgroup {
    pub fn create(name: &str) -> Result<Self, BenchError> {
        let root =
            cgroup2_root().ok_or_else(|| BenchError::Other("no cgroup v2 hierarchy".into()))?;
        let cg = root.join(format!("picket-bench-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&cg).map_err(|e| BenchError::io(&cg, e))?;
        Ok(Self(cg))
    }

    /// A sub-cgroup (created if missing).
    pub fn sub(&self, name: &str) -> Result<PathBuf, BenchError> {
        let p = self.0.join(name);
        std::fs::create_dir_all(&p).map_err(|e| BenchError::io(&p, e))?;
        Ok(p)
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), b"1");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ev = std::fs::read_to_string(self.0.join("cgroup.events")).unwrap_or_default();
            if !ev.lines().any(|l| l.trim() == "populated 1") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(rd) = std::fs::read_dir(&self.0) {
            for e in rd.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.0) {
            sys::tracing_warn(&format!("removing {}: {e}", self.0.display()));
        }
    }
}

/// Starts `n` sleeping processes (in a cgroup of their own, so all are
/// killed afterwards) while Picket runs, and reads its memory.
pub fn many_processes(ctx: &Ctx<'_>, n: u64) -> Result<ManyProcesses, BenchError> {
    let cg = BenchCgroup::create("procs")?;
    let mon = Running::start(Monitor::Picket, &ctx.env)?;
    let before = mon.usage().map(|u| u.rss_kib).unwrap_or(0);
    let mut child = measure::child_cmd(&ctx.self_exe, ChildKind::Sleepers)
        .arg("--child-n")
        .arg(n.to_string())
        .arg("--child-cgroup")
        .arg(&cg.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| BenchError::Child(format!("sleepers: {e}")))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let report = super::workload::parse_report(&line);
    let result = match report {
        Some(r) => {
            mon.drain(
                Duration::from_secs(2),
                Duration::from_millis(500),
                Duration::from_secs(60),
            );
            let u = mon.usage().unwrap_or_default();
            Ok((r, u))
        }
        None => Err(BenchError::Child(
            "the sleepers child did not report (see its stderr above)".into(),
        )),
    };
    // Closing stdin tells the child to kill its sleepers; the cgroup guard
    // kills whatever is left.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.flush();
    }
    let _ = child.wait();
    drop(cg);
    let fin = mon.stop()?;
    let (r, u) = result?;
    let lost = fin
        .records
        .iter()
        .map(|r| {
            if let Record::Lost { count } = r {
                *count
            } else {
                0
            }
        })
        .sum();
    Ok(ManyProcesses {
        method: format!(
            "{} `sleep 3600` processes started (fork+exec) while picket ran, in a cgroup of their own; picket's RSS read from /proc",
            r.ops
        ),
        processes: r.ops,
        spawn_secs: r.secs,
        rss_before_kib: before,
        rss_after_kib: u.rss_kib,
        peak_rss_kib: u.hwm_kib,
        lost,
    })
}

/// In-kernel cost of one eBPF program during a workload.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProgCost {
    pub name: String,
    pub prog_type: String,
    pub runs: u64,
    pub run_time_ns: u64,
    pub avg_ns: f64,
}

/// The kernel side of Picket's cost during one exec storm.
#[derive(Debug, Clone, Serialize)]
pub struct BpfProfile {
    pub workload: String,
    pub ops: u64,
    pub wall_s: f64,
    pub programs: Vec<ProgCost>,
    /// Sum of all programs' run time divided by the operations, ns.
    pub kernel_ns_per_op: f64,
}

/// `(prog_id, run_cnt, run_time_ns)` from the text of a BPF program fd's
/// `/proc/<pid>/fdinfo/<fd>`.
pub fn parse_prog_fdinfo(text: &str) -> Option<(u64, u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')?
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some((
        field("prog_id")?,
        field("run_cnt").unwrap_or(0),
        field("run_time_ns").unwrap_or(0),
    ))
}

/// Program names and types by id, from `bpftool prog show -j` (optional:
/// without bpftool the programs are named by id).
pub fn parse_bpftool_names(json: &str) -> Vec<(u64, String, String)> {
    let Ok(serde_json::Value::Array(progs)) = serde_json::from_str::<serde_json::Value>(json)
    else {
        return Vec::new();
    };
    progs
        .iter()
        .filter_map(|p| {
            let s = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            Some((p.get("id")?.as_u64()?, s("name"), s("type")))
        })
        .collect()
}

/// `(prog_id, run_cnt, run_time_ns)` of every BPF program `pid` holds an fd of.
fn prog_stats(pid: u32) -> Vec<(u64, u64, u64)> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, u64, u64)> = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("bpf-prog"))
        })
        .filter_map(|e| {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .ok()?;
            parse_prog_fdinfo(&info)
        })
        .collect();
    out.sort_unstable();
    out.dedup_by_key(|p| p.0);
    out
}

/// Turns `kernel.bpf_stats_enabled` on, and back to its value on drop.
struct BpfStats(Option<String>);

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self, BenchError> {
        let prev = std::fs::read_to_string(BPF_STATS)
            .map_err(|e| BenchError::io(Path::new(BPF_STATS), e))?;
        std::fs::write(BPF_STATS, b"1").map_err(|e| BenchError::io(Path::new(BPF_STATS), e))?;
        Ok(Self(Some(prev.trim().to_string())))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::write(BPF_STATS, p.as_bytes());
        }
    }
}

/// Runs one exec storm under Picket with `bpf_stats` on (this adds two clock
/// reads per program run, so it is a separate run, not one of the table's).
pub fn bpf_profile(ctx: &Ctx<'_>) -> Result<BpfProfile, BenchError> {
    let stats = BpfStats::enable()?;
    let mon = Running::start(Monitor::Picket, &ctx.env)?;
    let pid = mon.pid().unwrap_or(0);
    let before = prog_stats(pid);
    let child = measure::spawn_workload(ctx, Workload::Exec)?;
    let measure::Waited {
        wall_s: wall,
        report,
        ..
    } = measure::wait_child(child, "exec storm")?;
    let after = prog_stats(pid);
    drop(stats);
    mon.drain(
        measure::drain_min(Monitor::Picket),
        Duration::from_millis(300),
        Duration::from_secs(30),
    );
    let names = std::process::Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .map(|o| parse_bpftool_names(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default();
    // Names are read while picket still holds its programs.
    mon.stop()?;
    let mut programs: Vec<ProgCost> = after
        .iter()
        .map(|&(id, cnt, ns)| {
            let (c0, n0) = before
                .iter()
                .find(|b| b.0 == id)
                .map(|b| (b.1, b.2))
                .unwrap_or((0, 0));
            let runs = cnt.saturating_sub(c0);
            let run_time_ns = ns.saturating_sub(n0);
            let (name, prog_type) = names
                .iter()
                .find(|n| n.0 == id)
                .map(|n| (n.1.clone(), n.2.clone()))
                .unwrap_or_else(|| (format!("prog {id}"), String::new()));
            ProgCost {
                name,
                prog_type,
                runs,
                run_time_ns,
                avg_ns: if runs > 0 {
                    run_time_ns as f64 / runs as f64
                } else {
                    0.0
                },
            }
        })
        .filter(|p| p.runs > 0)
        .collect();
    programs.sort_by_key(|p| std::cmp::Reverse(p.run_time_ns));
    let ops = report.map(|r| r.ops).unwrap_or(0);
    let total: u64 = programs.iter().map(|p| p.run_time_ns).sum();
    Ok(BpfProfile {
        workload: Workload::Exec.name().into(),
        ops,
        wall_s: wall,
        programs,
        kernel_ns_per_op: if ops > 0 {
            total as f64 / ops as f64
        } else {
            0.0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prog_fdinfo_and_names() {
        let info = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_id:\t174\nrun_time_ns:\t5000\nrun_cnt:\t10\n";
        assert_eq!(parse_prog_fdinfo(info), Some((174, 10, 5000)));
        assert_eq!(parse_prog_fdinfo("pos:\t0\n"), None);
        let j = r#"[{"id":174,"type":"tracepoint","name":"sched_exec"},{"type":"x"}]"#;
        assert_eq!(
            parse_bpftool_names(j),
            vec![(174, "sched_exec".into(), "tracepoint".into())]
        );
        assert!(parse_bpftool_names("not json").is_empty());
    }

    #[test]
    fn trigger_parsing() {
        assert_eq!(Trigger::parse("exec"), Trigger::Exec);
        assert_eq!(
            Trigger::parse("/etc/shadow"),
            Trigger::Open(PathBuf::from("/etc/shadow"))
        );
        assert_eq!(
            Trigger::parse("/etc/shadow").describe(),
            "open(\"/etc/shadow\", O_RDONLY)"
        );
    }
}
