//! The smoke suite that runs inside each booted kernel (`xtask
//! kernels-guest`), or on this machine's kernel (`--kernel host`).
//!
//! Small and exact: `picket doctor --json` (which programs load, load time,
//! verified instructions), then `picket run` scoped to two kubelet-style
//! container cgroups created here, an attack set in one, a benign root
//! workload in the other, and a kernel kill rule. Results go to
//! `<out>/result.json` for the host to judge.

use std::{
    io::BufRead,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{DoctorReport, GuestArgs, GuestResult, KILL_RULE};
use crate::setup::Result;

const POD_UID: &str = "7c3e9f10-2b4d-4e8a-9f6b-1d2c3b4a5e60";
const ATTACK_CTR: &str = "aa11bb22cc33dd44ee55ff6600112233445566778899aabbccddeeff00112233";
const BENIGN_CTR: &str = "bb11bb22cc33dd44ee55ff6600112233445566778899aabbccddeeff00112233";

fn mount_if_missing(fstype: &str, target: &str) {
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(target));
    if !mounted {
        let _ = Command::new("mount")
            .args(["-t", fstype, fstype, target])
            .status();
    }
}

/// The cgroup v2 root: `/sys/fs/cgroup` on v2-only systems, the unified
/// hierarchy on hybrid ones. Mounted when neither is.
fn cgroup_root() -> Result<PathBuf> {
    for p in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if Path::new(p).join("cgroup.controllers").exists() {
            return Ok(PathBuf::from(p));
        }
    }
    let _ = Command::new("mount")
        .args(["-t", "cgroup2", "cgroup2", "/sys/fs/cgroup"])
        .status();
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Ok(PathBuf::from("/sys/fs/cgroup"))
    } else {
        Err("no cgroup v2 hierarchy".into())
    }
}

/// Removes the cgroups (deepest first) on drop.
struct Cgroups(Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = std::fs::remove_dir(p);
        }
    }
}

fn make_cgroup(root: &Path, rel: &str, made: &mut Cgroups) -> Result<PathBuf> {
    let mut cur = root.to_path_buf();
    for part in rel.split('/') {
        cur.push(part);
        if !cur.exists() {
            std::fs::create_dir(&cur).map_err(|e| format!("{}: {e}", cur.display()))?;
            made.0.push(cur.clone());
        }
    }
    Ok(cur)
}

/// Runs `script` with `sh` inside `cg` (the shell moves itself in first, so
/// everything it starts is in the container's cgroup).
fn in_cgroup(cg: &Path, script: &str) -> std::io::Result<std::process::Output> {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs || exit 99; {script}",
            cg.display()
        ))
        .stdin(Stdio::null())
        .output()
}

pub fn guest(args: &GuestArgs) -> Result<()> {
    let started = Instant::now();
    mount_if_missing("tracefs", "/sys/kernel/tracing");
    mount_if_missing("bpf", "/sys/fs/bpf");
    mount_if_missing("securityfs", "/sys/kernel/security");
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mut r = GuestResult {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        ..Default::default()
    };

    // 1. Which programs load, and the hooks the kernel really lacks.
    let doc = Command::new(&args.picket)
        .args(["doctor", "--json"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{}: {e}", args.picket.display()))?;
    let _ = std::fs::write(args.out.join("doctor.json"), &doc.stdout);
    // The active LSMs, read here independently of Picket.
    r.lsm = std::fs::read_to_string("/sys/kernel/security/lsm")
        .unwrap_or_default()
        .trim()
        .to_string();
    let bpf_lsm = r.lsm.split(',').any(|l| l == "bpf");
    match serde_json::from_slice::<DoctorReport>(&doc.stdout) {
        Ok(d) => {
            for p in &d.programs {
                // A BPF LSM hook is absent where `bpf` is not an active LSM,
                // and where the kernel refuses every BPF LSM program (this
                // project's 6.18 machine: EPERM for any program of the type,
                // which Picket's loader probes; `--kernel host` only).
                let refused = p
                    .reason
                    .as_deref()
                    .is_some_and(|why| why.contains("the kernel refuses BPF LSM programs"));
                if p.hook.starts_with("BPF LSM ") && (!bpf_lsm || refused) {
                    r.hooks_absent.insert(p.program.clone());
                }
                if let Some(tp) = p.hook.strip_prefix("tracepoint ")
                    && let Some((cat, name)) = tp.split_once(':')
                    && !Path::new("/sys/kernel/tracing/events")
                        .join(cat)
                        .join(name)
                        .exists()
                {
                    r.hooks_absent.insert(p.program.clone());
                }
            }
            r.doctor = Some(d);
        }
        Err(e) => r.run_error = Some(format!("picket doctor --json: {e}")),
    }

    // 2. The smoke run.
    if let Err(e) = smoke(args, &mut r) {
        r.run_error = Some(e);
    }
    r.elapsed_s = started.elapsed().as_secs();
    let text = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("result.json"), text).map_err(|e| e.to_string())?;
    eprintln!("{}", super::table("this kernel", r.elapsed_s, &r));
    Ok(())
}

/// Stops picket on drop.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn smoke(args: &GuestArgs, r: &mut GuestResult) -> Result<()> {
    let root = cgroup_root()?;
    let mut made = Cgroups(Vec::new());
    let base = format!("picket-matrix-{}", std::process::id());
    let pod = format!("{base}/kubepods/besteffort/pod{POD_UID}");
    let attack = make_cgroup(
        &root,
        &format!("{pod}/cri-containerd-{ATTACK_CTR}.scope"),
        &mut made,
    )?;
    let benign = make_cgroup(
        &root,
        &format!("{pod}/cri-containerd-{BENIGN_CTR}.scope"),
        &mut made,
    )?;

    let work = args.out.join("work");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let evil = work.join("evil-miner");
    std::fs::copy("/usr/bin/touch", &evil).map_err(|e| format!("copy touch: {e}"))?;
    let rules = work.join("matrix-rules.yaml");
    std::fs::write(
        &rules,
        format!(
            "rules:\n  - id: {KILL_RULE}\n    name: {KILL_RULE}\n    description: kernel matrix\n    \
             severity: critical\n    events: [exec]\n    condition: 'container.id exists and \
             process.executable.path == \"{}\"'\n    output: 'ran {{process.executable.path}}'\n    \
             tags: [T1496]\n    actions: [alert, kill-process]\n",
            evil.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let config = work.join("config.yaml");
    std::fs::write(
        &config,
        "containment:\n  enabled: true\n  rate_limits: {per_rule: null, per_namespace: null, global: null}\n",
    )
    .map_err(|e| e.to_string())?;
    let ready = work.join("ready");
    let _ = std::fs::remove_file(&ready);
    let out_path = args.out.join("events.jsonl");
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err = std::fs::File::create(args.out.join("picket-run.log")).map_err(|e| e.to_string())?;
    let child = Command::new(&args.picket)
        .arg("run")
        .args(["--events", "--format", "json", "--rules"])
        .arg(args.workspace.join("rules"))
        .arg("--rules")
        .arg(&rules)
        .arg("--config")
        .arg(&config)
        .arg("--only-cgroup")
        .arg(&attack)
        .arg("--only-cgroup")
        .arg(&benign)
        .arg("--ready-file")
        .arg(&ready)
        .arg("--allow-degraded")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("picket run: {e}"))?;
    let mut agent = Agent(child);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !ready.exists() {
        if let Ok(Some(st)) = agent.0.try_wait() {
            return Err(format!("picket run exited with {st} before it was ready"));
        }
        if Instant::now() > deadline {
            return Err("picket run not ready after 600 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // The attack set, each step a real program in the container's cgroup.
    let mnt = work.join("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let attack_script = format!(
        "cat /etc/shadow > /dev/null; \
         /bin/echo matrix-argv-probe one two > /dev/null; \
         bash -c 'exec 3<>/dev/tcp/127.0.0.1/1' 2>/dev/null; \
         unshare --mount sh -c 'mount -t proc proc {mnt}; umount {mnt}'; \
         setpriv --reuid 65534 --regid 65534 --clear-groups /bin/true; \
         (sleep 0.1 &); wait; exit 0",
        mnt = mnt.display()
    );
    let o = in_cgroup(&attack, &attack_script).map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "attack script failed: {:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    // Kill at exec: the copy of touch must never create its marker.
    let marker = work.join("evil-ran");
    let o = in_cgroup(&attack, &format!("{} {}", evil.display(), marker.display()))
        .map_err(|e| e.to_string())?;
    let ran = marker.exists();
    // sh reports a child killed by SIGKILL as 128 + 9, and an exec that
    // failed (the BPF LSM deny: EPERM, "Operation not permitted") as 126.
    let stderr = String::from_utf8_lossy(&o.stderr);
    r.exec_denied = o.status.code() == Some(126) && stderr.contains("Operation not permitted");
    r.kill_at_exec = !ran && (o.status.code() == Some(137) || r.exec_denied);
    r.kill_detail = format!(
        "exit status {:?}{}, program {}",
        o.status.code(),
        if stderr.trim().is_empty() {
            String::new()
        } else {
            format!(" ({})", stderr.trim())
        },
        if ran { "ran" } else { "never ran" }
    );
    // What blocking costs the exec's caller, per path (measured, not judged:
    // emulated kernels make absolute times meaningless, the ratio is not):
    // the same binary, matched by the kill rule or (a second copy) not.
    let allowed = work.join("evil-miner-allowed");
    std::fs::copy("/usr/bin/touch", &allowed).map_err(|e| format!("copy touch: {e}"))?;
    r.exec_allowed_us = Some(time_execs(&attack, &allowed, &work.join("allowed-ran"))?);
    r.exec_blocked_us = Some(time_execs(&attack, &evil, &marker)?);
    // A benign root workload: forks, execs, large allocations (the memory
    // accounting checks CAP_SYS_ADMIN without auditing).
    let benign_script = "i=0; while [ $i -lt 10 ]; do /bin/true; i=$((i+1)); done; \
         head -c 67108864 /dev/zero | tail -c 1 > /dev/null; \
         dd if=/dev/zero of=/dev/null bs=32M count=4 2>/dev/null; \
         python3 -c 'b = bytearray(128 << 20); import os; os.fork() or os._exit(0); os.wait()'; exit 0";
    let o = in_cgroup(&benign, benign_script).map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("benign script failed: {:?}", o.status));
    }

    // Let the last records through, then stop the agent.
    std::thread::sleep(Duration::from_secs(3));
    drop(agent);
    collect(&out_path, r)?;
    drop(made);
    Ok(())
}

/// Execs of `program` (with `arg`) timed from a shell in `cg`: wall time per
/// exec in microseconds, shell loop included.
fn time_execs(cg: &Path, program: &Path, arg: &Path) -> Result<u64> {
    let script = format!(
        "i=0; while [ $i -lt {TIMED_EXECS} ]; do {} {} 2>/dev/null; i=$((i+1)); done; exit 0",
        program.display(),
        arg.display()
    );
    let start = Instant::now();
    let o = in_cgroup(cg, &script).map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("timed exec loop failed: {:?}", o.status));
    }
    Ok((start.elapsed().as_micros() / u128::from(TIMED_EXECS)) as u64)
}

/// How many execs [`time_execs`] runs per path.
const TIMED_EXECS: u32 = 50;

/// Appends `, note` to `detail` unless it is there already: the timed execs
/// add one audit record each, and the detail names each kind of record once.
fn note_once(detail: &mut String, note: &str) {
    let note = format!(", {note}");
    if !detail.contains(&note) {
        detail.push_str(&note);
    }
}

fn collect(path: &Path, r: &mut GuestResult) -> Result<()> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    for line in std::io::BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(a) = v.get("alert") {
            let rule = a["rule"]["id"].as_str().unwrap_or_default().to_string();
            let ctr = a["event"]["container"]["id"].as_str().unwrap_or_default();
            if rule == "containment-action" && a["event"]["containment"]["rule_id"] == KILL_RULE {
                let message = a["event"]["containment"]["message"]
                    .as_str()
                    .unwrap_or_default();
                match a["event"]["containment"]["trigger"].as_str() {
                    Some("kernel") if message.starts_with("denied exec") => {
                        r.kill_path = super::KILL_DENIED_LSM.into();
                        note_once(&mut r.kill_detail, "kernel deny audited");
                    }
                    Some("kernel") => {
                        r.kill_path = super::KILL_IN_KERNEL.into();
                        note_once(&mut r.kill_detail, "kernel kill audited");
                    }
                    Some("rule") if r.kill_path.is_empty() => {
                        r.kill_path = super::KILL_IN_USER_SPACE.into();
                        note_once(&mut r.kill_detail, "user-space kill audited");
                    }
                    _ => {}
                }
            }
            if ctr == BENIGN_CTR {
                r.benign_rules.insert(rule);
            } else {
                r.rules_fired.insert(rule);
            }
            continue;
        }
        let kind = v["event"]["kind"].as_str().unwrap_or_default().to_string();
        if kind.is_empty() {
            continue;
        }
        if v["container"]["id"] == ATTACK_CTR {
            r.container_attributed = true;
        }
        if v["k8s"]["pod"]["uid"] == POD_UID {
            r.pod_attributed = true;
        }
        if kind == "exec" {
            let args = &v["process"]["command_args"];
            if args[1] == "matrix-argv-probe" && args[3] == "two" {
                r.exec_argv_seen = true;
            }
            if v["process"]["parent_pid"].as_u64().is_some_and(|p| p > 0)
                && v["process"]["parent_exec_id"].is_string()
            {
                r.exec_parent_seen = true;
            }
        }
        r.event_kinds.insert(kind);
    }
    Ok(())
}
