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
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Inspects the system (and, unless `no_load`, loads the programs to learn
/// exactly which ones the verifier accepts and which attach).
pub fn checks(no_load: bool) -> Vec<Check> {
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
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    let lsm_prog = is_program_supported(ProgramType::Lsm(aya::programs::LsmAttachType::Mac));
    out.push(check(
        "BPF LSM (optional)",
        lsm.split(',').any(|l| l.trim() == "bpf") && matches!(lsm_prog, Ok(true)),
        format!("active LSMs: {:?}; program type loads: {lsm_prog:?}; not required (tracepoints are used)", lsm.trim()),
    ));
    let kprobes = Path::new(tracefs::TRACEFS).join("kprobe_events").exists();
    out.push(check(
        "kprobes (optional)",
        kprobes,
        if kprobes {
            "available; not required"
        } else {
            "unavailable (CONFIG_KPROBES off?); not required"
        },
    ));

    if no_load || !root {
        return out;
    }
    match sensor::Sensor::load(&SensorConfig::default()) {
        Ok(s) => {
            for (prog, st) in &s.status {
                let spec = PROGRAMS.iter().find(|p| p.program == *prog);
                let sensor = spec.map(|p| p.sensor).unwrap_or("?");
                match st {
                    ProgramStatus::Attached => out.push(check(
                        format!("sensor {sensor}: {prog}"),
                        true,
                        "loads and attaches",
                    )),
                    ProgramStatus::Disabled(why) => out.push(check(
                        format!("sensor {sensor}: {prog}"),
                        false,
                        format!(
                            "disabled: {why}; lost: {}",
                            spec.map(|p| p.loss).unwrap_or("?")
                        ),
                    )),
                }
            }
            // Dropping the sensor detaches and unloads everything.
        }
        Err(e) => out.push(check(
            "load programs",
            false,
            crate::sensor::loader::error_chain(&e),
        )),
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
    let checks = checks(args.no_load);
    print!("{}", table(&checks));
    let essential_failed = checks
        .iter()
        .any(|c| !c.ok && !c.item.contains("optional") && !c.item.starts_with("tracepoint"));
    if essential_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
