//! `cargo xtask kernels`: the kernel matrix.
//!
//! Boots Debian's own kernels (5.10 = bullseye, 6.1 = bookworm, 6.12 =
//! bookworm-backports) under qemu with virtme-ng, runs a small, exact
//! real-kernel smoke suite inside each (`guest`), and prints one table per
//! kernel: every program loaded or not (and why), the event kinds seen, the
//! rules that fired on a small attack set, container + pod attribution, kill
//! at exec, load time and verifier instruction counts.
//!
//! Why a VM per kernel and not containers: the verifier, the hooks and the
//! BTF are the kernel's; only booting the kernel tests them. virtme-ng boots
//! it with this machine's filesystem (read-only, `/tmp` writable), so the
//! very binary built here runs inside.
//!
//! The task fails when a program does not load on a kernel unless that
//! kernel genuinely lacks its hook, which the guest checks independently of
//! Picket (the tracepoint's directory is absent from tracefs).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::setup::{Result, is_root, sh, workspace_root};

/// One kernel series of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    /// Short name used on the command line and in the table.
    pub name: &'static str,
    /// Version prefix of `/boot/vmlinuz-<version>` (and `/lib/modules`).
    pub version_prefix: &'static str,
    /// Version suffix (the plain amd64 flavour).
    pub version_suffix: &'static str,
    /// Debian suite that has it.
    pub suite: &'static str,
}

/// The matrix CI runs: the LTS kernels production nodes run.
pub const MATRIX: &[Series] = &[
    Series {
        name: "5.10",
        version_prefix: "5.10.0-",
        version_suffix: "-amd64",
        suite: "bullseye",
    },
    Series {
        name: "6.1",
        version_prefix: "6.1.0-",
        version_suffix: "-amd64",
        suite: "bookworm",
    },
    Series {
        name: "6.12",
        version_prefix: "6.12.",
        version_suffix: "+deb12-amd64",
        suite: "bookworm-backports",
    },
];

#[derive(clap::Args)]
pub struct KernelsArgs {
    /// Kernels to boot: 5.10, 6.1, 6.12, `host` (run the suite on the running
    /// kernel, no VM) or `all` (the three matrix kernels). Repeatable.
    #[arg(long = "kernel", default_value = "all")]
    pub kernels: Vec<String>,
    /// The picket binary to test (default: build `target/release/picket`).
    #[arg(long)]
    pub picket: Option<PathBuf>,
    /// Do not install kernels, qemu or virtme-ng (fail if missing).
    #[arg(long)]
    pub no_install: bool,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Where results are written (must be below /tmp: the guest's writable dir).
    #[arg(long, default_value = "/tmp/picket-kernels")]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct GuestArgs {
    /// The picket binary.
    #[arg(long)]
    pub picket: PathBuf,
    /// The workspace (for the default rules).
    #[arg(long)]
    pub workspace: PathBuf,
    /// Result directory (writable).
    #[arg(long)]
    pub out: PathBuf,
}

/// What `picket doctor --json` reports per program (see agent/src/doctor.rs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoctorProgram {
    pub program: String,
    pub sensor: String,
    pub hook: String,
    pub loaded: bool,
    #[serde(default)]
    pub reason: Option<String>,
    /// The kernel lacks the hook (Picket's own judgement).
    #[serde(default)]
    pub hook_missing: bool,
    #[serde(default)]
    pub load_ms: Option<u64>,
    #[serde(default)]
    pub verified_insns: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoctorReport {
    pub kernel: String,
    #[serde(default)]
    pub load_ms: Option<u64>,
    #[serde(default)]
    pub programs: Vec<DoctorProgram>,
    #[serde(default)]
    pub sensors: Vec<serde_json::Value>,
}

/// Everything one kernel's smoke run found.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct GuestResult {
    pub kernel: String,
    pub doctor: Option<DoctorReport>,
    /// Programs whose hook the guest itself found absent (tracefs has no
    /// directory for the tracepoint).
    pub hooks_absent: BTreeSet<String>,
    pub event_kinds: BTreeSet<String>,
    pub rules_fired: BTreeSet<String>,
    /// Rules that fired on the benign container (must be empty of
    /// `dangerous-capability-in-container`).
    pub benign_rules: BTreeSet<String>,
    pub exec_argv_seen: bool,
    pub exec_parent_seen: bool,
    pub container_attributed: bool,
    pub pod_attributed: bool,
    pub kill_at_exec: bool,
    pub kill_detail: String,
    /// Which path acted on the kill rule's exec, from its audit record:
    /// `kernel` (the exec-kill program) or `user space` (after the alert);
    /// empty when no record was seen.
    #[serde(default)]
    pub kill_path: String,
    /// The kill rule's exec failed with EPERM (`sh`: 126, "Operation not
    /// permitted"): the BPF LSM denied it.
    #[serde(default)]
    pub exec_denied: bool,
    /// Wall time per exec (µs, from a shell loop in the attack cgroup) of a
    /// binary no rule matches, and of the same binary matched by the kill
    /// rule (denied or killed): what blocking costs the caller on this path.
    #[serde(default)]
    pub exec_allowed_us: Option<u64>,
    #[serde(default)]
    pub exec_blocked_us: Option<u64>,
    /// `/sys/kernel/security/lsm` as the guest read it.
    #[serde(default)]
    pub lsm: String,
    pub run_error: Option<String>,
    pub elapsed_s: u64,
}

pub fn kernels(args: &KernelsArgs) -> Result<()> {
    if !is_root() {
        return Err("the kernel matrix boots VMs and loads eBPF programs: run as root".into());
    }
    let picket = match &args.picket {
        Some(p) => p.clone(),
        None => {
            let root = workspace_root();
            sh(Command::new("cargo").current_dir(&root).args([
                "build",
                "--release",
                "-p",
                "picket",
                "--bin",
                "picket",
            ]))?;
            root.join("target/release/picket")
        }
    };
    let picket =
        std::fs::canonicalize(&picket).map_err(|e| format!("{}: {e}", picket.display()))?;
    let wanted = selected(&args.kernels)?;
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mut results = Vec::new();
    for which in &wanted {
        let started = Instant::now();
        let dir = args.out.join(which.label());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        match which {
            Which::Host => {
                let g = GuestArgs {
                    picket: picket.clone(),
                    workspace: workspace_root(),
                    out: dir.clone(),
                };
                guest(&g)?;
            }
            Which::Vm(series) => {
                let vmlinuz = match installed(series) {
                    Some(v) => v,
                    None if args.no_install => {
                        return Err(format!(
                            "kernel {} is not installed and --no-install was given",
                            series.name
                        ));
                    }
                    None => {
                        install_kernel(series)?;
                        installed(series).ok_or_else(|| {
                            format!("kernel {} still missing after install", series.name)
                        })?
                    }
                };
                if !args.no_install {
                    install_vm_tools()?;
                }
                boot(&vmlinuz, args.cpus, &picket, &dir)?;
            }
        }
        let res = read_result(&dir, which.label());
        let secs = started.elapsed().as_secs();
        eprintln!("xtask: kernel {} done in {secs} s", which.label());
        results.push((which.label().to_string(), secs, res));
    }
    let mut failures = Vec::new();
    for (label, secs, res) in &results {
        match res {
            Ok(r) => {
                print!("{}", table(label, *secs, r));
                for f in judge(r) {
                    failures.push(format!("{label}: {f}"));
                }
            }
            Err(e) => failures.push(format!("{label}: no result: {e}")),
        }
    }
    if failures.is_empty() {
        eprintln!("xtask: kernel matrix passed");
        Ok(())
    } else {
        Err(format!(
            "kernel matrix failed:\n  {}",
            failures.join("\n  ")
        ))
    }
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Host,
    Vm(Series),
}

impl Which {
    fn label(&self) -> &'static str {
        match self {
            Which::Host => "host",
            Which::Vm(s) => s.name,
        }
    }
}

fn selected(names: &[String]) -> Result<Vec<Which>> {
    let mut out = Vec::new();
    for n in names {
        match n.as_str() {
            "all" => out.extend(MATRIX.iter().copied().map(Which::Vm)),
            "host" => out.push(Which::Host),
            other => out.push(Which::Vm(
                *MATRIX.iter().find(|s| s.name == other).ok_or_else(|| {
                    format!("unknown kernel {other:?} (5.10, 6.1, 6.12, host, all)")
                })?,
            )),
        }
    }
    Ok(out)
}

/// Numeric-aware version key ("6.12.118" > "6.12.95").
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// The newest installed kernel of the series (image and modules present).
pub fn installed(s: &Series) -> Option<PathBuf> {
    let mut found: Vec<String> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_string)
        })
        .filter(|v| {
            v.starts_with(s.version_prefix)
                && v.ends_with(s.version_suffix)
                && v[s.version_prefix.len()..v.len() - s.version_suffix.len()]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.')
                && Path::new("/lib/modules").join(v).is_dir()
        })
        .collect();
    found.sort_by_key(|v| version_key(v));
    found
        .pop()
        .map(|v| PathBuf::from("/boot").join(format!("vmlinuz-{v}")))
}

const SOURCES: &str = "/etc/apt/sources.list.d/picket-kernels.sources";
const PREFS: &str = "/etc/apt/preferences.d/picket-kernels";

/// Adds the extra suites with a low pin (nothing else is upgraded from them)
/// and installs the newest plain amd64 kernel of the series.
fn install_kernel(s: &Series) -> Result<()> {
    let mirror = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("URIs:").map(|u| u.trim().to_string()))
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_string());
    let sources = format!(
        "Types: deb\nURIs: {mirror}\nSuites: bookworm-backports bullseye\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    let prefs = "Package: *\nPin: release n=bullseye\nPin-Priority: 50\n\n\
                 Package: *\nPin: release n=bookworm-backports\nPin-Priority: 50\n";
    let mut changed = false;
    for (path, text) in [(SOURCES, sources.as_str()), (PREFS, prefs)] {
        if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
            std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))?;
            changed = true;
        }
    }
    if changed || package_name(s).is_none() {
        sh(Command::new("apt-get").args(["update", "-qq"]))?;
    }
    let pkg = package_name(s).ok_or_else(|| {
        format!(
            "no linux-image-{}*{}-unsigned package in the apt sources",
            s.version_prefix, s.version_suffix
        )
    })?;
    sh(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "-t",
            s.suite,
            &pkg,
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        // virtme-ng boots without an initramfs: skip generating one.
        .env("INITRD", "No"))
}

fn package_name(s: &Series) -> Option<String> {
    let out = Command::new("apt-cache")
        .args(["search", "--names-only"])
        .arg(format!(
            "^linux-image-{}",
            s.version_prefix.replace('.', "\\.")
        ))
        .output()
        .ok()?;
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.ends_with(&format!("{}-unsigned", s.version_suffix)))
        .filter(|n| {
            let v = &n["linux-image-".len()..n.len() - "-unsigned".len()];
            v.starts_with(s.version_prefix)
                && v[s.version_prefix.len()..v.len() - s.version_suffix.len()]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.')
        })
        .map(str::to_string)
        .collect();
    names.sort_by_key(|n| version_key(n));
    names.pop()
}

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// qemu (Debian) and virtme-ng (PyPI, `vng`), when missing.
fn install_vm_tools() -> Result<()> {
    if !ok(Command::new("qemu-system-x86_64").arg("--version")) {
        let plain = Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "qemu-system-x86",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        if !plain {
            // qemu-utils from backports (as some images ship it) breaks the
            // bookworm qemu-system: take the matching backport.
            sh(Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "-t",
                    "bookworm-backports",
                    "qemu-system-x86",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
        }
    }
    if !ok(Command::new("vng").arg("--version")) {
        sh(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "virtme-ng",
        ]))?;
    }
    Ok(())
}

/// Boots `vmlinuz` and runs `xtask kernels-guest` inside. No KVM here: qemu
/// emulates (TCG), so the guest gets a generous timeout.
fn boot(vmlinuz: &Path, cpus: u32, picket: &Path, out: &Path) -> Result<()> {
    let me = guest_copy_of_self(out)?;
    let inner = format!(
        "{} kernels-guest --picket {} --workspace {} --out {} > {} 2>&1",
        sh_quote(&me),
        sh_quote(picket),
        sh_quote(&workspace_root()),
        sh_quote(out),
        sh_quote(&out.join("guest.log")),
    );
    let console_path = out.join("console.log");
    let console = std::fs::File::create(&console_path)
        .map_err(|e| format!("{}: {e}", console_path.display()))?;
    let mut cmd = Command::new("vng");
    cmd.arg("-r")
        .arg(vmlinuz)
        .args(["--disable-kvm", "--memory", "3G", "--rwdir", "/tmp"])
        .arg("--cpus")
        .arg(cpus.to_string())
        .arg("--exec")
        .arg(&inner)
        .stdin(Stdio::null())
        // The console goes to a file, not to our stdout: qemu reopens the
        // console path it is given, which truncated a redirected CI log.
        .stdout(Stdio::from(console.try_clone().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(console));
    let shown = format!("{cmd:?}");
    eprintln!("xtask: $ {shown}");
    let mut child = cmd.spawn().map_err(|e| format!("{shown}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            if !st.success() {
                eprintln!(
                    "xtask: vng exited with {st} (console: {})",
                    console_path.display()
                );
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{shown}: no result after 20 minutes"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A copy of the running xtask binary in `out` (below /tmp, which the guest
/// sees), for the guest to run.
///
/// Why not `current_exe()`: under `cargo xtask test` the `cargo build
/// --all-targets` step relinks `target/debug/xtask` while this process runs,
/// and the kernel then names our executable `.../xtask (deleted)`; that path
/// exists nowhere and its parenthesis broke the guest's shell command line.
/// `/proc/self/exe` still opens the running image even when deleted.
fn guest_copy_of_self(out: &Path) -> Result<PathBuf> {
    let dst = out.join("xtask-guest");
    std::fs::copy("/proc/self/exe", &dst)
        .map_err(|e| format!("copying /proc/self/exe to {}: {e}", dst.display()))?;
    Ok(dst)
}

/// `p` as one single-quoted shell word (the guest runs the command line
/// through `sh`).
fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn read_result(dir: &Path, label: &str) -> Result<GuestResult> {
    let p = dir.join("result.json");
    let text = std::fs::read_to_string(&p).map_err(|e| {
        let log = std::fs::read_to_string(dir.join("guest.log")).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        format!("{label}: {}: {e}\nguest log tail:\n{tail}", p.display())
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
}

/// Event kinds the attack set must produce on every kernel, and the rules it
/// must fire.
const EXPECTED_KINDS: &[&str] = &[
    "exec",
    "fork",
    "exit",
    "file_open",
    "connect",
    "mount",
    "namespace",
    "privilege_change",
];
const EXPECTED_RULES: &[&str] = &["read-sensitive-file", "sensitive-mount", "namespace-escape"];
const KILL_RULE: &str = "matrix-kernel-kill";
/// Mirrors `LATE_HELPERS` of agent/src/sensor/loader.rs.
const LATE_HELPERS: &[&str] = &["bpf_get_current_ancestor_cgroup_id"];

/// Every way the result falls short (empty: pass).
pub fn judge(r: &GuestResult) -> Vec<String> {
    let mut f = Vec::new();
    match &r.doctor {
        None => f.push("picket doctor gave no report".to_string()),
        Some(d) => {
            for p in &d.programs {
                // Standby: a fallback (kprobe) whose tracepoint is attached.
                if p.loaded
                    || p.reason
                        .as_deref()
                        .is_some_and(|r| r.starts_with("standby"))
                {
                    continue;
                }
                // The guest confirmed the tracepoint is missing, or the
                // kernel's own verifier named a helper known to be absent
                // from older kernels (agent/src/sensor/loader.rs LATE_HELPERS).
                let absent = r.hooks_absent.contains(&p.program)
                    || p.reason.as_deref().is_some_and(|why| {
                        LATE_HELPERS
                            .iter()
                            .any(|h| why.contains(&format!("unknown func {h})")))
                    });
                if !(p.hook_missing && absent) {
                    f.push(format!(
                        "program {} did not load: {}",
                        p.program,
                        p.reason.as_deref().unwrap_or("?")
                    ));
                }
            }
        }
    }
    if let Some(e) = &r.run_error {
        f.push(format!("smoke run: {e}"));
    }
    for k in EXPECTED_KINDS {
        if !r.event_kinds.contains(*k) {
            f.push(format!("no {k} event seen"));
        }
    }
    let cap_hook = r.doctor.as_ref().is_some_and(|d| {
        d.programs
            .iter()
            .any(|p| p.sensor == "capability" && p.loaded)
    });
    if cap_hook && !r.event_kinds.contains("capability") {
        f.push("a capability hook loaded but no capability event was seen".into());
    }
    for rule in EXPECTED_RULES {
        if !r.rules_fired.contains(*rule) {
            f.push(format!("rule {rule} did not fire"));
        }
    }
    if r.benign_rules.contains("dangerous-capability-in-container") {
        f.push("dangerous-capability-in-container fired on the benign workload".into());
    }
    if !r.exec_argv_seen {
        f.push("exec events without argv".into());
    }
    if !r.exec_parent_seen {
        f.push("exec events without the parent".into());
    }
    if !r.container_attributed {
        f.push("no container attribution".into());
    }
    if !r.pod_attributed {
        f.push("no pod attribution".into());
    }
    let kernel_kill = r.doctor.as_ref().is_some_and(|d| {
        d.programs
            .iter()
            .any(|p| EXEC_KILL_PROGRAMS.contains(&p.program.as_str()) && p.loaded)
    });
    let lsm_deny = r.doctor.as_ref().is_some_and(|d| {
        d.programs
            .iter()
            .any(|p| p.program == EXEC_DENY_PROGRAM && p.loaded)
    });
    if kernel_kill && !r.kill_at_exec {
        f.push(format!("kill at exec failed: {}", r.kill_detail));
    } else if lsm_deny && (r.kill_path != KILL_DENIED_LSM || !r.exec_denied) {
        f.push(format!(
            "exec not denied although {EXEC_DENY_PROGRAM} loaded: path {:?} ({})",
            r.kill_path, r.kill_detail
        ));
    } else if kernel_kill && !lsm_deny && r.kill_path != KILL_IN_KERNEL {
        f.push(format!(
            "kill at exec not done in the kernel although an exec-kill program loaded: path {:?} ({})",
            r.kill_path, r.kill_detail
        ));
    }
    f
}

/// The programs that kill at exec in the kernel: where one loaded, the
/// matrix requires the kill rule's kill to come from the kernel.
pub const EXEC_KILL_PROGRAMS: &[&str] = &["contain_exec", "contain_exec_ancestry"];
/// The program that denies the exec where the BPF LSM is active: where it
/// loaded, the matrix requires the kill rule's exec to fail with EPERM.
pub const EXEC_DENY_PROGRAM: &str = "contain_exec_lsm";
/// [`GuestResult::kill_path`] of an exec denied by [`EXEC_DENY_PROGRAM`].
pub const KILL_DENIED_LSM: &str = "kernel deny (BPF LSM)";
/// [`GuestResult::kill_path`] of a kill done by an exec-kill program.
pub const KILL_IN_KERNEL: &str = "kernel";
/// [`GuestResult::kill_path`] of a kill done after the alert.
pub const KILL_IN_USER_SPACE: &str = "user space";

/// The per-kernel table.
pub fn table(label: &str, secs: u64, r: &GuestResult) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "\n=== kernel {label}: {} ({secs} s in all)", r.kernel);
    let _ = writeln!(
        s,
        "active LSMs: {}",
        if r.lsm.is_empty() { "?" } else { &r.lsm }
    );
    if let Some(d) = &r.doctor {
        let _ = writeln!(
            s,
            "programs: load + attach of all took {} ms",
            d.load_ms.map_or("?".into(), |m| m.to_string())
        );
        let _ = writeln!(
            s,
            "  {:<26} {:<12} {:<8} {:>8} {:>9}  reason",
            "PROGRAM", "SENSOR", "LOADED", "LOAD ms", "VERIFIED"
        );
        for p in &d.programs {
            let _ = writeln!(
                s,
                "  {:<26} {:<12} {:<8} {:>8} {:>9}  {}",
                p.program,
                p.sensor,
                if p.loaded {
                    "yes"
                } else if p
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("standby"))
                {
                    "standby"
                } else if p.hook_missing {
                    "no hook"
                } else {
                    "NO"
                },
                p.load_ms.map_or("-".into(), |m| m.to_string()),
                p.verified_insns.map_or("n/a".into(), |m| m.to_string()),
                p.reason.as_deref().unwrap_or("")
            );
        }
        for sensor in &d.sensors {
            let lost: Vec<&str> = sensor["lost"]
                .as_array()
                .map(|l| l.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  sensor {:<16} {}/{} programs{}",
                sensor["sensor"].as_str().unwrap_or("?"),
                sensor["attached"],
                sensor["total"],
                if lost.is_empty() {
                    String::new()
                } else {
                    format!("; lost: {}", lost.join("; "))
                }
            );
        }
    }
    let kinds: Vec<_> = r.event_kinds.iter().map(String::as_str).collect();
    let _ = writeln!(s, "event kinds seen: {}", kinds.join(", "));
    let rules: Vec<_> = r.rules_fired.iter().map(String::as_str).collect();
    let _ = writeln!(s, "rules fired on the attack set: {}", rules.join(", "));
    let benign: Vec<_> = r.benign_rules.iter().map(String::as_str).collect();
    let _ = writeln!(
        s,
        "rules fired on the benign workload: {}",
        if benign.is_empty() {
            "none".to_string()
        } else {
            benign.join(", ")
        }
    );
    let _ = writeln!(
        s,
        "exec argv: {}  parent: {}  container: {}  pod: {}  kill at exec: {} by {} ({})",
        r.exec_argv_seen,
        r.exec_parent_seen,
        r.container_attributed,
        r.pod_attributed,
        r.kill_at_exec,
        if r.kill_path.is_empty() {
            "?"
        } else {
            r.kill_path.as_str()
        },
        r.kill_detail
    );
    if let (Some(a), Some(b)) = (r.exec_allowed_us, r.exec_blocked_us) {
        let _ = writeln!(
            s,
            "exec wall time per call (shell loop, emulated: compare, do not quote): allowed {a} µs, blocked {b} µs ({:.2}x)",
            b as f64 / a.max(1) as f64
        );
    }
    let f = judge(r);
    let _ = writeln!(
        s,
        "verdict: {}",
        if f.is_empty() {
            "PASS".to_string()
        } else {
            format!("FAIL ({})", f.join("; "))
        }
    );
    s
}

pub use guest::guest;

mod guest;

#[cfg(test)]
mod tests {
    use super::*;

    fn program(name: &str, loaded: bool, hook_missing: bool) -> DoctorProgram {
        DoctorProgram {
            program: name.to_string(),
            sensor: "s".to_string(),
            hook: format!("tracepoint syscalls:{name}"),
            loaded,
            reason: (!loaded).then(|| "why".to_string()),
            hook_missing,
            load_ms: None,
            verified_insns: None,
        }
    }

    fn passing() -> GuestResult {
        GuestResult {
            kernel: "k".into(),
            doctor: Some(DoctorReport {
                kernel: "k".into(),
                load_ms: Some(1),
                programs: vec![program("a", true, false)],
                sensors: Vec::new(),
            }),
            event_kinds: EXPECTED_KINDS.iter().map(|k| k.to_string()).collect(),
            rules_fired: EXPECTED_RULES.iter().map(|k| k.to_string()).collect(),
            exec_argv_seen: true,
            exec_parent_seen: true,
            container_attributed: true,
            pod_attributed: true,
            kill_at_exec: true,
            kill_path: KILL_IN_KERNEL.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_complete_result_passes() {
        assert_eq!(judge(&passing()), Vec::<String>::new());
    }

    #[test]
    fn a_missing_hook_passes_only_when_the_guest_confirms_it() {
        let mut r = passing();
        r.doctor
            .as_mut()
            .expect("doctor")
            .programs
            .push(program("gone", false, true));
        assert_eq!(
            judge(&r),
            vec!["program gone did not load: why".to_string()]
        );
        r.hooks_absent.insert("gone".into());
        assert!(judge(&r).is_empty());
        // A verifier rejection is a failure whatever the guest saw.
        r.doctor
            .as_mut()
            .expect("doctor")
            .programs
            .push(program("rejected", false, false));
        r.hooks_absent.insert("rejected".into());
        assert_eq!(
            judge(&r),
            vec!["program rejected did not load: why".to_string()]
        );
    }

    #[test]
    fn benign_capability_alerts_missing_kinds_and_kill_fail() {
        let mut r = passing();
        r.doctor
            .as_mut()
            .expect("doctor")
            .programs
            .push(program("contain_exec", true, false));
        r.benign_rules
            .insert("dangerous-capability-in-container".into());
        r.event_kinds.remove("mount");
        r.kill_at_exec = false;
        r.kill_detail = "exit status Some(0), program ran".into();
        assert_eq!(
            judge(&r),
            vec![
                "no mount event seen".to_string(),
                "dangerous-capability-in-container fired on the benign workload".to_string(),
                "kill at exec failed: exit status Some(0), program ran".to_string(),
            ]
        );
    }

    #[test]
    fn a_loaded_exec_kill_program_must_kill_in_the_kernel() {
        let mut r = passing();
        r.doctor.as_mut().expect("doctor").programs.push(program(
            "contain_exec_ancestry",
            true,
            false,
        ));
        assert!(judge(&r).is_empty(), "{:?}", judge(&r));
        r.kill_path = KILL_IN_USER_SPACE.into();
        r.kill_detail = "exit status Some(137), program never ran".into();
        assert_eq!(
            judge(&r),
            vec![
                "kill at exec not done in the kernel although an exec-kill program loaded: \
                 path \"user space\" (exit status Some(137), program never ran)"
                    .to_string()
            ]
        );
    }

    #[test]
    fn a_loaded_lsm_program_must_deny_the_exec() {
        let mut r = passing();
        let progs = &mut r.doctor.as_mut().expect("doctor").programs;
        progs.push(program("contain_exec", true, false));
        progs.push(program(EXEC_DENY_PROGRAM, true, false));
        r.kill_detail = "exit status Some(137), program never ran".into();
        assert_eq!(
            judge(&r),
            vec![
                "exec not denied although contain_exec_lsm loaded: path \"kernel\" \
                 (exit status Some(137), program never ran)"
                    .to_string()
            ]
        );
        r.kill_path = KILL_DENIED_LSM.into();
        r.exec_denied = true;
        assert!(judge(&r).is_empty(), "{:?}", judge(&r));
    }

    #[test]
    fn a_listed_missing_helper_excuses_the_program_and_its_kill() {
        let mut r = passing();
        let mut p = program("contain_exec", false, true);
        p.reason = Some(
            "hook absent: this kernel does not offer the helper \
             bpf_get_current_ancestor_cgroup_id to this program type (the verifier says: \
             unknown func bpf_get_current_ancestor_cgroup_id)"
                .into(),
        );
        r.doctor.as_mut().expect("doctor").programs.push(p);
        r.kill_at_exec = false;
        assert!(judge(&r).is_empty(), "{:?}", judge(&r));
        // An unlisted helper is a failure.
        let p = &mut r.doctor.as_mut().expect("doctor").programs[1];
        p.reason = Some("hook absent: ... (the verifier says: unknown func bpf_loop)".into());
        assert_eq!(judge(&r).len(), 1);
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = [
            "6.12.95+deb12-amd64",
            "6.12.118+deb12-amd64",
            "6.12.107+deb12-amd64",
        ];
        v.sort_by_key(|x| version_key(x));
        assert_eq!(v.last(), Some(&"6.12.118+deb12-amd64"));
        assert!(selected(&["7.0".to_string()]).is_err());
        assert_eq!(selected(&["all".to_string()]).expect("all").len(), 3);
    }
}

#[cfg(test)]
mod quoting_tests {
    use super::sh_quote;
    use std::path::Path;

    #[test]
    fn paths_are_single_shell_words() {
        assert_eq!(sh_quote(Path::new("/tmp/a b")), "'/tmp/a b'");
        assert_eq!(
            sh_quote(Path::new("/x/xtask (deleted)")),
            "'/x/xtask (deleted)'"
        );
        assert_eq!(sh_quote(Path::new("/it's")), r"'/it'\''s'");
    }
}
