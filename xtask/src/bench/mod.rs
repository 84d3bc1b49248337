//! `cargo xtask bench`: Picket's overhead, throughput, latency and memory,
//! side by side with auditd and the libbpf tools, measured in the same run
//! on the same machine (issue 8).
//!
//! Writes `docs/benchmarks.json` (every run) and the generated part of
//! `docs/benchmarks.md` (the methodology around it is hand-written and
//! kept). Needs root: the monitors load eBPF programs and audit rules.
//! Never asserts timings: it measures and reports, and marks the issue's
//! targets met or missed.

mod auditd;
mod criterion;
mod extra;
mod markdown;
mod measure;
mod monitor;
mod parse;
mod report;
mod stats;
mod sys;
mod workload;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use crate::setup::{is_root, workspace_root};
use measure::{Ctx, Sizes};
use monitor::{Env, Monitor};
use report::{Cell, Report};
use workload::{ChildKind, Workload};

/// Errors of the benchmark harness.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool}: {msg}")]
    Tool { tool: String, msg: String },
    #[error("workload: {0}")]
    Child(String),
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Other(String),
}

impl BenchError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Parts of the benchmark (`--only`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Exec,
    Connect,
    Open,
    Mixed,
    /// Picket's alert latency at a moderate rate.
    Latency,
    /// Highest event rate without loss.
    MaxRate,
    /// Picket's memory with 10,000 processes.
    Processes,
    /// In-kernel cost per eBPF program (bpf_stats).
    BpfProfile,
    /// The rule engine's criterion benchmark.
    Rules,
}

impl Part {
    const ALL: [Part; 9] = [
        Self::Exec,
        Self::Connect,
        Self::Open,
        Self::Mixed,
        Self::Latency,
        Self::MaxRate,
        Self::Processes,
        Self::BpfProfile,
        Self::Rules,
    ];

    fn workload(self) -> Option<Workload> {
        Some(match self {
            Self::Exec => Workload::Exec,
            Self::Connect => Workload::Connect,
            Self::Open => Workload::Open,
            Self::Mixed => Workload::Mixed,
            _ => return None,
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Runs per figure (default 5, or 2 with --quick).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Smaller workloads and 2 runs: for trying the harness out.
    #[arg(long)]
    pub quick: bool,
    /// Only these parts (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
    /// Monitors to compare (default: all; the baseline always runs).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub monitors: Vec<Monitor>,
    /// The picket binary (default: build `--release` and use target/release/picket).
    #[arg(long)]
    pub picket_bin: Option<PathBuf>,
    /// Rules directory for picket (default: <workspace>/rules).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Extra arguments for `picket run` (repeatable, e.g. `--picket-arg=--ring-buffer-bytes=4194304`).
    #[arg(long = "picket-arg", allow_hyphen_values = true)]
    pub picket_args: Vec<String>,
    /// What triggers the latency alerts: a monitored path to open (`{i}` is
    /// replaced by a counter, so every open is a new path and the rule's
    /// de-duplication does not swallow the alerts; the file need not exist),
    /// or `exec`. The default matches the default rule `read-sensitive-file`.
    #[arg(long, default_value = "/root/.ssh/picket-bench-latency-{i}")]
    pub latency_trigger: String,
    /// Trigger operations per second for the latency measurement.
    #[arg(long, default_value_t = 100)]
    pub latency_rate: u64,
    /// Execs in the exec storm (default 5,000; 1,000 with --quick).
    #[arg(long)]
    pub exec_n: Option<u64>,
    /// Connects in the connect storm (default 40,000; 5,000 with --quick).
    #[arg(long)]
    pub connect_n: Option<u64>,
    /// Opens in the file-open storm (default 200,000; 20,000 with --quick).
    #[arg(long)]
    pub open_n: Option<u64>,
    /// Size factor of the mixed workload (default 4; 1 with --quick).
    #[arg(long)]
    pub mixed_scale: Option<u64>,
    /// Pin the storms to one CPU (the last, see `pin_cpu`) and leave the
    /// other to the monitors: a secondary view that hides what the agent's
    /// CPU costs the workloads on a node. By default the storms are not
    /// pinned, as on a node.
    #[arg(long, conflicts_with = "no_pin")]
    pub pin: bool,
    /// The default (storms not pinned); kept for old command lines.
    #[arg(long, hide = true)]
    pub no_pin: bool,
    /// Number of processes for the memory measurement.
    #[arg(long, default_value_t = 10_000)]
    pub processes: u64,
    /// A remark recorded with the results (e.g. what else ran on the machine).
    #[arg(long)]
    pub note: Vec<String>,
    /// Markdown output (generated part spliced in).
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out_md: PathBuf,
    #[arg(long, default_value = "docs/benchmarks.json")]
    pub out_json: PathBuf,
    /// Internal: run as a workload child.
    #[arg(long, value_enum, hide = true)]
    pub child: Option<ChildKind>,
    #[command(flatten)]
    pub child_args: workload::ChildArgs,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether SIGINT/SIGTERM arrived: the harness then stops at the next step
/// and its guards clean up (monitors, audit rules, cgroups, temp files).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupted() -> Result<(), BenchError> {
    if interrupted() {
        Err(BenchError::Interrupted)
    } else {
        Ok(())
    }
}

fn install_signal_handlers() {
    let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
    }
}

/// The harness's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, BenchError> {
        let d = std::env::temp_dir().join(format!("picket-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).map_err(|e| BenchError::io(&d, e))?;
        Ok(Self(d))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bench(args: &BenchArgs) -> Result<(), String> {
    if let Some(kind) = args.child {
        return workload::run_child(kind, &args.child_args).map_err(|e| e.to_string());
    }
    if !is_root() {
        return Err(
            "the monitors load eBPF programs and audit rules: run `sudo -E cargo xtask bench`"
                .into(),
        );
    }
    install_signal_handlers();
    run(args).map_err(|e| e.to_string())
}

fn picket_binary(args: &BenchArgs, root: &Path) -> Result<PathBuf, BenchError> {
    if let Some(b) = &args.picket_bin {
        return Ok(b.clone());
    }
    let st = Command::new("cargo")
        .current_dir(root)
        .args(["build", "--release", "-p", "picket"])
        // The kernel object must be built in.
        .env_remove("AYA_BUILD_SKIP")
        .status()
        .map_err(|e| BenchError::Tool {
            tool: "cargo build".into(),
            msg: e.to_string(),
        })?;
    if !st.success() {
        return Err(BenchError::Tool {
            tool: "cargo build --release -p picket".into(),
            msg: st.to_string(),
        });
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/picket"))
}

/// Installs a missing Debian package for a peer; returns whether it is usable.
fn ensure_tool(bin: &str, package: &str, notes: &mut Vec<String>) -> bool {
    if monitor::find_tool(bin).is_some() {
        return true;
    }
    eprintln!("xtask: bench: {bin} missing; installing the Debian package {package}");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !ok || monitor::find_tool(bin).is_none() {
        notes.push(format!(
            "{bin} is not available (package {package} could not be installed): skipped"
        ));
        return false;
    }
    true
}

fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let root = workspace_root();
    let mut notes: Vec<String> = args.note.clone();
    let parts: Vec<Part> = if args.only.is_empty() {
        Part::ALL.to_vec()
    } else {
        args.only.clone()
    };
    let runs = args.runs.unwrap_or(if args.quick { 2 } else { 5 }).max(1);
    let sizes = Sizes {
        exec_n: args.exec_n.unwrap_or(if args.quick { 1000 } else { 5000 }),
        connect_n: args
            .connect_n
            .unwrap_or(if args.quick { 5000 } else { 40_000 }),
        open_n: args
            .open_n
            .unwrap_or(if args.quick { 20_000 } else { 200_000 }),
        mixed_scale: args.mixed_scale.unwrap_or(if args.quick { 1 } else { 4 }),
    };
    let mut monitors: Vec<Monitor> = if args.monitors.is_empty() {
        Monitor::ALL.to_vec()
    } else {
        args.monitors.clone()
    };
    if !monitors.contains(&Monitor::None) {
        monitors.insert(0, Monitor::None);
    }
    monitors.sort();
    monitors.dedup();
    let needs_picket = monitors.contains(&Monitor::Picket)
        || monitors.contains(&Monitor::PicketAlerts)
        || parts.iter().any(|p| {
            matches!(
                p,
                Part::Latency | Part::MaxRate | Part::Processes | Part::BpfProfile
            )
        });
    monitors.retain(|m| match m {
        Monitor::Auditd => {
            ensure_tool("auditd", "auditd", &mut notes)
                && ensure_tool("auditctl", "auditd", &mut notes)
        }
        Monitor::Execsnoop => ensure_tool("execsnoop", "libbpf-tools", &mut notes),
        Monitor::Opensnoop => ensure_tool("opensnoop", "libbpf-tools", &mut notes),
        _ => true,
    });

    let mut machine = sys::machine(&root);
    let tmp = TempDir::new()?;
    let picket_bin = if needs_picket {
        // Run a private copy: a later cargo build (e.g. of the rule bench)
        // may replace the file in the target directory.
        let built = picket_binary(args, &root)?;
        let copy = tmp.0.join("picket");
        std::fs::copy(&built, &copy).map_err(|e| BenchError::io(&built, e))?;
        copy
    } else {
        PathBuf::from("picket")
    };
    let rules = args.rules.clone().unwrap_or_else(|| root.join("rules"));
    // A monitored file inside the temp dir too (Picket watches `*/.ssh/authorized_keys`).
    let ssh_keys = tmp.0.join("home/.ssh/authorized_keys");
    if let Some(d) = ssh_keys.parent() {
        std::fs::create_dir_all(d).map_err(|e| BenchError::io(d, e))?;
    }
    std::fs::write(
        &ssh_keys,
        b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA picket-bench\n",
    )
    .map_err(|e| BenchError::io(&ssh_keys, e))?;
    let mut monitored_owned: Vec<String> = workload::monitored_paths()
        .iter()
        .map(|p| p.to_string())
        .collect();
    monitored_owned.push(ssh_keys.display().to_string());
    let monitored: Vec<&str> = monitored_owned.iter().map(String::as_str).collect();
    let self_exe =
        std::env::current_exe().map_err(|e| BenchError::Other(format!("current_exe: {e}")))?;
    let ctx = Ctx {
        env: Env {
            tmp: &tmp.0,
            picket_bin: &picket_bin,
            rules: &rules,
            monitored: &monitored,
            picket_args: &args.picket_args,
        },
        sizes,
        self_exe,
        pin_cpu: if args.pin { sys::pin_cpu() } else { None },
        open_dir: tmp.0.join("open-files"),
        mixed_script: tmp.0.join("mixed.sh"),
        mixed_dir: tmp.0.join("mixed"),
    };
    match ctx.pin_cpu {
        Some(cpu) => notes.push(format!(
            "workloads pinned to CPU {cpu} (with their children); monitors not pinned"
        )),
        None => notes.push(
            "workloads not pinned to a CPU (as on a node: the monitor's CPU is taken from them)"
                .into(),
        ),
    }
    workload::make_open_files(&ctx.open_dir)?;
    std::fs::write(&ctx.mixed_script, workload::MIXED_SCRIPT)
        .map_err(|e| BenchError::io(&ctx.mixed_script, e))?;
    std::fs::create_dir_all(&ctx.mixed_dir).map_err(|e| BenchError::io(&ctx.mixed_dir, e))?;

    let workloads: Vec<Workload> = parts.iter().filter_map(|p| p.workload()).collect();
    let mut cells: Vec<Cell> = Vec::new();
    for &w in &workloads {
        for &m in &monitors {
            if measure::applicable(w, m) {
                cells.push(Cell::new(w, m));
            }
        }
    }
    // Warm caches (page cache, dentries, the binaries) once per workload.
    for &w in &workloads {
        eprintln!("xtask: bench: warm-up: {}", w.name());
        let child = measure::spawn_workload(&ctx, w)?;
        measure::wait_child(child, w.name())?;
    }
    for run in 0..runs {
        for &w in &workloads {
            let order: Vec<Monitor> = {
                let mut v: Vec<Monitor> = monitors
                    .iter()
                    .copied()
                    .filter(|m| measure::applicable(w, *m))
                    .collect();
                // Rotate the order between runs so drift affects every monitor alike.
                let k = run % v.len().max(1);
                v.rotate_left(k);
                v
            };
            for m in order {
                check_interrupted()?;
                eprintln!(
                    "xtask: bench: run {}/{runs}: {} under {}",
                    run + 1,
                    w.name(),
                    m.name()
                );
                let res = measure::measure(&ctx, w, m, run);
                let Some(c) = cells.iter_mut().find(|c| c.workload == w && c.monitor == m) else {
                    continue;
                };
                match res {
                    Ok(r) => {
                        eprintln!(
                            "xtask: bench:   {:.3} s, monitor CPU {:.3} s, {} events ({} of the workload, {}/{} of its kind), {} lost",
                            r.wall_s,
                            r.monitor_cpu_s.unwrap_or(0.0),
                            r.events_total,
                            r.events_workload,
                            r.events_primary,
                            r.events_expected
                                .map(|e| e.to_string())
                                .unwrap_or_else(|| "-".into()),
                            r.events_lost
                        );
                        c.runs.push(r);
                    }
                    Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
                    Err(e) => {
                        eprintln!("xtask: bench:   failed: {e}");
                        c.errors.push(e.to_string());
                    }
                }
            }
        }
    }
    for w in &workloads {
        let base: Vec<_> = cells
            .iter()
            .find(|c| c.workload == *w && c.monitor == Monitor::None)
            .map(|c| c.runs.clone())
            .unwrap_or_default();
        for c in cells.iter_mut().filter(|c| c.workload == *w) {
            c.summarise(&base);
            if !c.errors.is_empty() {
                notes.push(format!(
                    "{} under {}: {} run(s) failed: {}",
                    w.name(),
                    c.monitor.name(),
                    c.errors.len(),
                    c.errors[0]
                ));
            }
        }
    }
    report::per_kernel_event(&mut cells);

    let mut report = Report {
        machine: machine.clone(),
        finished_utc: String::new(),
        command: command_line(),
        runs,
        quick: args.quick,
        sizes,
        pinned_cpu: ctx.pin_cpu,
        cells,
        latency: None,
        max_rate: None,
        many_processes: None,
        bpf_profile: None,
        rules_bench: None,
        targets: Vec::new(),
        notes: Vec::new(),
    };
    let part_err = |what: &str, e: BenchError, notes: &mut Vec<String>| -> Result<(), BenchError> {
        if matches!(e, BenchError::Interrupted) {
            return Err(e);
        }
        eprintln!("xtask: bench: {what} failed: {e}");
        notes.push(format!("{what} failed: {e}"));
        Ok(())
    };
    if parts.contains(&Part::Latency) {
        eprintln!("xtask: bench: alert latency");
        let secs = if args.quick { 2.0 } else { 5.0 };
        match extra::latency(
            &ctx,
            &extra::Trigger::parse(&args.latency_trigger),
            args.latency_rate,
            secs,
            runs,
        ) {
            Ok(l) => report.latency = Some(l),
            Err(e) => part_err("alert latency", e, &mut notes)?,
        }
    }
    if parts.contains(&Part::MaxRate) {
        eprintln!("xtask: bench: highest event rate without loss");
        let rates: &[u64] = if args.quick {
            &[10_000, 50_000, 200_000]
        } else {
            &[10_000, 25_000, 50_000, 100_000, 200_000, 400_000, 800_000]
        };
        match extra::max_rate(&ctx, rates, if args.quick { 2.0 } else { 3.0 }) {
            Ok(m) => report.max_rate = Some(m),
            Err(e) => part_err("rate ramp", e, &mut notes)?,
        }
    }
    if parts.contains(&Part::Processes) {
        eprintln!("xtask: bench: memory with {} processes", args.processes);
        match extra::many_processes(&ctx, args.processes) {
            Ok(m) => report.many_processes = Some(m),
            Err(e) => part_err("many-processes memory", e, &mut notes)?,
        }
    }
    if parts.contains(&Part::BpfProfile) {
        eprintln!("xtask: bench: eBPF program costs (bpf_stats)");
        match extra::bpf_profile(&ctx) {
            Ok(b) => report.bpf_profile = Some(b),
            Err(e) => part_err("bpf_stats profile", e, &mut notes)?,
        }
    }
    if parts.contains(&Part::Rules) {
        match criterion::run(&root) {
            Ok(Some(f)) => report.rules_bench = Some(f),
            Ok(None) => notes
                .push("agent/benches/rules.rs does not exist yet: no rule-engine figure".into()),
            Err(e) => part_err("rule-engine benchmark", e, &mut notes)?,
        }
    }
    machine.load_at_end = sys::loadavg();
    report.machine = machine;
    report.finished_utc = sys::utc_now();
    report.notes = notes;
    report.targets = report::targets(&report);
    write_outputs(&root, args, &report)
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

/// The hand-written head of a new `docs/benchmarks.md`.
const DEFAULT_HEAD: &str = include_str!("methodology.md");

fn write_outputs(root: &Path, args: &BenchArgs, r: &Report) -> Result<(), BenchError> {
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        }
    };
    let json_path = abs(&args.out_json);
    let md_path = abs(&args.out_md);
    let json = serde_json::to_string_pretty(r)
        .map_err(|e| BenchError::Other(format!("serialising: {e}")))?;
    std::fs::write(&json_path, json + "\n").map_err(|e| BenchError::io(&json_path, e))?;
    let existing = std::fs::read_to_string(&md_path).ok();
    let md = markdown::splice(existing.as_deref(), DEFAULT_HEAD, &markdown::render(r));
    std::fs::write(&md_path, md).map_err(|e| BenchError::io(&md_path, e))?;
    eprintln!(
        "xtask: bench: wrote {} and {}",
        md_path.display(),
        json_path.display()
    );
    for t in &r.targets {
        eprintln!(
            "xtask: bench: target: {} — {:?}: {}",
            t.target, t.verdict, t.measured
        );
    }
    Ok(())
}
