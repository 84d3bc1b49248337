//! `picket doctor`: what this kernel offers and which sensors will run.

use std::{fmt::Write as _, path::Path, process::ExitCode};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
};

use crate::sensor::{self, PROGRAMS, ProgramStatus, SensorConfig, loader::Attach, tracefs};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Do not try to load the programs (only inspect the system).
    #[arg(long)]
    pub no_load: bool,
    /// Print a JSON report (per program: hook, loaded or why not, load time,
    /// verified instructions) instead of the table; used by the kernel matrix
    /// (`cargo xtask kernels`).
    #[arg(long)]
    pub json: bool,
    /// The agent's configuration file (as `picket run --config`): its
    /// `runtimes:` sockets are the ones checked, instead of the defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

/// One program in the JSON report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgramReport {
    pub program: &'static str,
    pub sensor: &'static str,
    /// `tracepoint <category>:<name>`, `raw_tracepoint <name>`, or
    /// `cgroup_sock_addr` (attached on demand).
    pub hook: String,
    pub loaded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The kernel lacks the hook (rather than rejecting the program).
    pub hook_missing: bool,
    /// A fallback program not needed here (its preferred hook is attached):
    /// nothing is lost.
    pub standby: bool,
    /// What is lost while it does not run.
    pub lost: &'static str,
    pub load_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_insns: Option<u32>,
}

/// One sensor in the JSON report and the table: the hooks it runs on here.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SensorReport {
    pub sensor: &'static str,
    pub attached: usize,
    pub total: usize,
    /// Hooks of the attached programs.
    pub hooks: Vec<String>,
    /// What is lost, one entry per program that does not run.
    pub lost: Vec<String>,
}

/// The JSON report of `picket doctor --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub kernel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
    pub programs: Vec<ProgramReport>,
    pub sensors: Vec<SensorReport>,
    pub checks: Vec<Check>,
}

/// The hook a program attaches to, for humans.
pub fn hook_name(attach: Attach) -> String {
    match attach {
        Attach::TracePoint { category, name } => format!("tracepoint {category}:{name}"),
        Attach::TracePointFallback {
            category,
            name,
            fallback_for,
        } => format!("tracepoint {category}:{name}, fallback for {fallback_for}"),
        Attach::Lsm { hook } => format!("BPF LSM {hook}"),
        Attach::RawTracePoint { name } => format!("raw_tracepoint {name}"),
        Attach::KProbe {
            function,
            fallback_for,
        } => format!("kprobe {function}, fallback for {fallback_for}"),
        Attach::CgroupSockAddrOnDemand => "cgroup_sock_addr".to_string(),
    }
}

/// Loads the programs and reports each (the sensor is dropped afterwards:
/// everything is detached and unloaded).
pub fn report(checks: Vec<Check>) -> Report {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let (status, stats, load_ms, load_error) = match sensor::Sensor::load(&SensorConfig::default())
    {
        Ok(s) => (
            s.status.clone(),
            s.stats.clone(),
            Some(s.load_time.as_millis() as u64),
            None,
        ),
        Err(e) => (
            Default::default(),
            Default::default(),
            None,
            Some(crate::sensor::loader::error_chain(&e)),
        ),
    };
    let programs: Vec<ProgramReport> = PROGRAMS
        .iter()
        .map(|spec| {
            let st = status.get(spec.program);
            let stat = stats.get(spec.program).copied().unwrap_or_default();
            ProgramReport {
                program: spec.program,
                sensor: spec.sensor,
                hook: hook_name(spec.attach),
                loaded: st == Some(&ProgramStatus::Attached),
                reason: match st {
                    Some(ProgramStatus::Disabled(why)) => Some(why.clone()),
                    Some(ProgramStatus::Attached) => None,
                    None => load_error.clone(),
                },
                hook_missing: st.is_some_and(ProgramStatus::hook_absent),
                standby: st.is_some_and(ProgramStatus::standby),
                lost: spec.loss,
                load_ms: stat.load_time.as_millis() as u64,
                verified_insns: stat.verified_insns,
            }
        })
        .collect();
    let mut checks = checks;
    checks.push(kill_path(&programs));
    Report {
        kernel,
        load_ms,
        load_error,
        sensors: sensors(&programs),
        programs,
        checks,
    }
}

/// Which path carries out `kill-process` rules on this kernel (the
/// programs are `contain_exec`, its fallback `contain_exec_ancestry` and
/// `contain_exec_lsm`; docs/containment.md).
pub fn kill_path(programs: &[ProgramReport]) -> Check {
    let loaded = |name: &str| programs.iter().any(|p| p.program == name && p.loaded);
    let at_exec = if loaded("contain_exec") {
        Some("contain_exec")
    } else if loaded("contain_exec_ancestry") {
        Some("contain_exec_ancestry")
    } else {
        None
    };
    let detail = match (loaded("contain_exec_lsm"), at_exec) {
        (true, Some(p)) => format!(
            "denied in the kernel before the program runs (BPF LSM bprm_check_security: execve \
             fails with EPERM); rules with argv conditions, dry runs and refusals at exec ({p}: \
             SIGKILL before the first instruction)"
        ),
        (false, Some(p)) => format!(
            "killed in the kernel at exec ({p}: SIGKILL before the first instruction; no BPF LSM \
             deny on this kernel)"
        ),
        (_, None) => "from user space after the alert (pidfd): the program runs briefly".into(),
    };
    check("kill at exec (optional)", at_exec.is_some(), detail)
}

/// Groups the programs by sensor.
pub fn sensors(programs: &[ProgramReport]) -> Vec<SensorReport> {
    let mut out: Vec<SensorReport> = Vec::new();
    for p in programs {
        let i = match out.iter().position(|s| s.sensor == p.sensor) {
            Some(i) => i,
            None => {
                out.push(SensorReport {
                    sensor: p.sensor,
                    attached: 0,
                    total: 0,
                    hooks: Vec::new(),
                    lost: Vec::new(),
                });
                out.len() - 1
            }
        };
        let s = &mut out[i];
        if p.standby {
            continue;
        }
        s.total += 1;
        if p.loaded {
            s.attached += 1;
            if !s.hooks.contains(&p.hook) {
                s.hooks.push(p.hook.clone());
            }
        } else if !s.lost.iter().any(|l| l == p.lost)
            // Nothing is lost when a fallback for it runs.
            && !programs.iter().any(|f| {
                f.loaded && f.hook.ends_with(&format!("fallback for {}", p.program))
            })
        {
            s.lost.push(p.lost.to_string());
        }
    }
    out
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub item: String,
    pub ok: bool,
    pub detail: String,
}

fn check(item: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        item: item.into(),
        ok,
        detail: detail.into(),
    }
}

/// Inspects the system: kernel, BTF, ring buffer, tracefs, cgroup v2 and the
/// optional hooks, and the runtime sockets of `runtimes`. Loading the
/// programs is [`report`].
pub fn checks(runtimes: &crate::container::runtime_api::RuntimeApiConfig) -> Vec<Check> {
    let mut out = Vec::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    out.push(check("kernel", true, kernel.trim()));
    let root = unsafe { libc::geteuid() } == 0;
    out.push(check(
        "running as root",
        root,
        if root {
            "yes"
        } else {
            "no: loading programs needs root (or CAP_BPF+CAP_PERFMON+CAP_SYS_RESOURCE)"
        },
    ));

    let btf = Path::new(sensor::offsets::VMLINUX_BTF);
    match sensor::offsets::resolve(btf) {
        Ok(r) => {
            let total = agent_common::KernelOffsets::FIELDS.len();
            let ok = r.missing.is_empty();
            let mut d = format!(
                "{}: {}/{} kernel fields resolved",
                btf.display(),
                total - r.missing.len(),
                total
            );
            for (f, p, _) in &r.missing {
                let _ = write!(d, "; missing {f} ({p})");
            }
            out.push(check("BTF", ok, d));
        }
        Err(e) => out.push(check("BTF", false, e.to_string())),
    }
    let rb = is_map_supported(MapType::RingBuf);
    out.push(check(
        "ring buffer map",
        matches!(rb, Ok(true)),
        format!("{rb:?}"),
    ));
    let tf = tracefs::ensure_mounted();
    out.push(check(
        "tracefs",
        tf.is_ok(),
        match &tf {
            Ok(true) => format!("{} mounted", tracefs::TRACEFS),
            Ok(false) => format!("{} was not mounted; mounted it now", tracefs::TRACEFS),
            Err(e) => format!("not mounted and mount failed: {e}"),
        },
    ));
    for spec in PROGRAMS {
        if let Attach::TracePoint { category, name } = spec.attach {
            let ok = tracefs::tracepoint_exists(category, name);
            out.push(check(
                format!("tracepoint {category}:{name}"),
                ok,
                if ok {
                    "present".to_string()
                } else {
                    format!("absent: {}", spec.loss)
                },
            ));
        }
    }
    match crate::container::CgroupResolver::detect() {
        Ok(r) => out.push(check(
            "cgroup v2",
            true,
            format!("mounted at {}", r.root().display()),
        )),
        Err(e) => out.push(check("cgroup v2", false, e.to_string())),
    }
    // The configured (else default) sockets: an absent runtime is
    // informational, never a failure.
    for c in crate::container::runtime_api::checks(runtimes) {
        out.push(check(
            format!("runtime API {} (optional)", c.runtime),
            c.ok,
            c.detail,
        ));
    }
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    let lsm_prog = is_program_supported(ProgramType::Lsm(aya::programs::LsmAttachType::Mac));
    out.push(check(
        "BPF LSM (optional)",
        lsm.split(',').any(|l| l.trim() == "bpf") && matches!(lsm_prog, Ok(true)),
        format!("active LSMs: {:?}; program type loads: {lsm_prog:?}; not required (tracepoints are used)", lsm.trim()),
    ));
    let kprobes = sensor::loader::kprobes_available();
    let cap_tp = tracefs::tracepoint_exists("capability", "cap_capable");
    out.push(check(
        "kprobes (optional)",
        kprobes || cap_tp,
        match (kprobes, cap_tp) {
            (true, true) => "available; not needed (capability:cap_capable tracepoint present)",
            (true, false) => "available; used for capability events (kprobe cap_capable)",
            (false, true) => "unavailable (CONFIG_KPROBES off); not needed",
            (false, false) => {
                "unavailable (CONFIG_KPROBES off) and no capability:cap_capable tracepoint: \
                 no capability events"
            }
        },
    ));

    out
}

/// The per-program and per-sensor rows of the table.
fn program_checks(r: &Report) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some(e) = &r.load_error {
        out.push(check("load programs", false, e.clone()));
        return out;
    }
    for p in &r.programs {
        let item = format!("sensor {}: {}", p.sensor, p.program);
        if p.loaded {
            out.push(check(
                item,
                true,
                format!("loads and attaches ({})", p.hook),
            ));
        } else if p.standby {
            out.push(check(
                format!("{item} (standby)"),
                true,
                format!("{} ({})", p.reason.as_deref().unwrap_or("?"), p.hook),
            ));
        } else if p.hook_missing {
            // Not a failure of Picket: this kernel has no such hook.
            out.push(check(
                format!("{item} (hook absent)"),
                false,
                format!("{}; lost: {}", p.reason.as_deref().unwrap_or("?"), p.lost),
            ));
        } else {
            out.push(check(
                item,
                false,
                format!(
                    "disabled: {}; lost: {}",
                    p.reason.as_deref().unwrap_or("?"),
                    p.lost
                ),
            ));
        }
    }
    for s in &r.sensors {
        let mut d = format!(
            "{}/{} programs; hooks: {}",
            s.attached,
            s.total,
            if s.hooks.is_empty() {
                "none".to_string()
            } else {
                s.hooks.join(", ")
            }
        );
        for l in &s.lost {
            let _ = write!(d, "; lost: {l}");
        }
        out.push(check(
            format!("sensor {} (summary, optional)", s.sensor),
            s.attached == s.total,
            d,
        ));
    }
    out
}

/// Renders the checks as an aligned table.
pub fn table(checks: &[Check]) -> String {
    let w = checks.iter().map(|c| c.item.len()).max().unwrap_or(0);
    let mut s = format!("{:<w$}  {:<4}  {}\n", "CHECK", "OK", "DETAIL");
    for c in checks {
        let _ = writeln!(
            s,
            "{:<w$}  {:<4}  {}",
            c.item,
            if c.ok { "yes" } else { "NO" },
            c.detail
        );
    }
    s
}

pub fn main(args: DoctorArgs) -> ExitCode {
    // A configuration that cannot be read is an error, as for `picket run`:
    // checking the default sockets instead would report on the wrong ones.
    let runtimes = match &args.config {
        Some(p) => match crate::config::load(p) {
            Ok(f) => f.runtimes,
            Err(e) => {
                eprintln!("doctor: configuration: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => crate::container::runtime_api::RuntimeApiConfig::default(),
    };
    let mut checks = checks(&runtimes);
    let root = unsafe { libc::geteuid() } == 0;
    let report = (!args.no_load && root).then(|| report(checks.clone()));
    if let Some(r) = &report {
        checks.extend(program_checks(r));
        checks.push(kill_path(&r.programs));
    }
    if args.json {
        let r = report.unwrap_or_else(|| Report {
            kernel: String::new(),
            load_ms: None,
            load_error: Some("programs not loaded (--no-load or not root)".into()),
            programs: Vec::new(),
            sensors: Vec::new(),
            checks: checks.clone(),
        });
        match serde_json::to_string(&r) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("doctor: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", table(&checks));
    }
    let essential_failed = checks.iter().any(|c| {
        !c.ok
            && !c.item.contains("optional")
            && !c.item.contains("(hook absent)")
            && !c.item.starts_with("tracepoint")
    });
    if essential_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod kill_path_tests {
    use super::*;

    fn p(program: &'static str, loaded: bool) -> ProgramReport {
        ProgramReport {
            program,
            sensor: "containment",
            hook: String::new(),
            loaded,
            reason: None,
            hook_missing: false,
            standby: false,
            lost: "",
            load_ms: 0,
            verified_insns: None,
        }
    }

    #[test]
    fn the_kill_path_line_names_the_program_that_acts() {
        let lsm = kill_path(&[
            p("contain_exec", true),
            p("contain_exec_lsm", true),
            p("contain_exec_ancestry", false),
        ]);
        assert!(lsm.ok);
        assert!(
            lsm.detail.starts_with(
                "denied in the kernel before the program runs (BPF LSM bprm_check_security"
            ),
            "{}",
            lsm.detail
        );
        let k510 = kill_path(&[
            p("contain_exec", false),
            p("contain_exec_lsm", false),
            p("contain_exec_ancestry", true),
        ]);
        assert_eq!(
            k510.detail,
            "killed in the kernel at exec (contain_exec_ancestry: SIGKILL before the first \
             instruction; no BPF LSM deny on this kernel)"
        );
        let none = kill_path(&[p("contain_exec", false), p("contain_exec_ancestry", false)]);
        assert!(!none.ok);
        assert_eq!(
            none.detail,
            "from user space after the alert (pidfd): the program runs briefly"
        );
        assert_eq!(none.item, "kill at exec (optional)");
    }
}
