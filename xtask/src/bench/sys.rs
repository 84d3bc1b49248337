//! Small readers of kernel state the harness needs: CPU time and peak memory
//! of a process from `/proc`, the boot-time clock, the machine description.
//!
//! Parsing is split from reading so the parsers can be tested on fixed text.

use std::{path::Path, process::Command, time::Duration};

use serde::Serialize;

/// CPU time and memory of one process, as `/proc` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcUsage {
    /// user + system time of all threads (live and exited) in clock ticks.
    pub cpu_ticks: u64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub hwm_kib: u64,
    /// Current resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
}

/// `utime + stime` (fields 14 and 15) from the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) may contain spaces and parentheses, so fields
/// are counted from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")": field 3 (state) is index 0, so utime (14) is index 11.
    let mut it = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = it.next()?.parse().ok()?;
    let stime: u64 = it.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The machine-wide `steal` ticks (8th value of the `cpu` line) from the
/// text of `/proc/stat`: time a virtual CPU wanted to run but the hypervisor
/// ran something else.
pub fn parse_stat_steal(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    line.split_ascii_whitespace().nth(8)?.parse().ok()
}

/// Machine-wide steal ticks so far (`None` where /proc/stat has no such field).
pub fn steal_ticks() -> Option<u64> {
    parse_stat_steal(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// A `Vm*:` value in KiB from the text of `/proc/<pid>/status`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Reads CPU time and memory of `pid`; `None` once the process is gone.
pub fn proc_usage(pid: u32) -> Option<ProcUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcUsage {
        cpu_ticks: parse_stat_cpu_ticks(&stat)?,
        // Kernel threads have no Vm* lines.
        hwm_kib: parse_status_kib(&status, "VmHWM").unwrap_or(0),
        rss_kib: parse_status_kib(&status, "VmRSS").unwrap_or(0),
    })
}

/// On-CPU time in ns of the live threads of `pid` (sum of the first field
/// of `/proc/<pid>/task/*/schedstat`): finer than clock ticks, but threads
/// that exited are missing, so [`cpu_delta_ns`] cross-checks with ticks.
pub fn proc_sched_ns(pid: u32) -> Option<u64> {
    let rd = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0u64;
    for e in rd.filter_map(|e| e.ok()) {
        let s = std::fs::read_to_string(e.path().join("schedstat")).unwrap_or_default();
        sum += s
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(sum)
}

/// A CPU-time reading of one process: ticks (all threads, also exited ones)
/// and schedstat ns (live threads only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuReading {
    pub ticks: u64,
    pub sched_ns: u64,
}

pub fn cpu_reading(pid: u32) -> CpuReading {
    CpuReading {
        ticks: proc_usage(pid).map(|u| u.cpu_ticks).unwrap_or(0),
        sched_ns: proc_sched_ns(pid).unwrap_or(0),
    }
}

/// CPU time between two readings, ns: the schedstat difference when it
/// agrees with the tick difference within two ticks (no thread exited in
/// between), else the tick difference.
pub fn cpu_delta_ns(before: CpuReading, after: CpuReading, tck: u64) -> u64 {
    let tick_ns = 1_000_000_000 / tck.max(1);
    let by_ticks = after.ticks.saturating_sub(before.ticks) * tick_ns;
    let by_sched = after.sched_ns.saturating_sub(before.sched_ns);
    if by_sched.abs_diff(by_ticks) <= 2 * tick_ns {
        by_sched
    } else {
        by_ticks
    }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `/proc/<pid>/stat` times.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as u64 } else { 100 }
}

/// `CLOCK_BOOTTIME` in ns: the clock the kernel stamps events with
/// (`bpf_ktime_get_boot_ns`), so latencies compare like with like.
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Finds the pids whose `comm` is exactly `name` (e.g. `kauditd`).
pub fn pids_by_comm(name: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .collect();
    out.sort_unstable();
    out
}

/// Sends `sig` to `pid` (errors ignored: the process may be gone already).
pub fn kill(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Stops a child: SIGTERM (or `sig`), then SIGKILL after `grace`; reaps it.
pub fn stop_child(child: &mut std::process::Child, sig: i32, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    kill(child.id(), sig);
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing_warn(&format!(
        "pid {} did not stop within {grace:?}; killing it",
        child.id()
    ));
    let _ = child.kill();
    let _ = child.wait();
}

/// The harness logs to stderr with an `xtask:` prefix like the other tasks.
pub fn tracing_warn(msg: &str) {
    eprintln!("xtask: bench: warning: {msg}");
}

/// Sets the calling thread's name (`comm`), so a workload is easy to spot in
/// `top` and in the monitors' output.
pub fn set_comm(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

/// Where and when the figures were taken.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub date_utc: String,
    pub git_commit: String,
    /// `/proc/loadavg` when the harness started and when it finished.
    pub load_at_start: String,
    pub load_at_end: String,
}

/// First `model name` line of `/proc/cpuinfo`.
pub fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, v)| v.trim().to_string())
    })
}

/// The first three fields of `/proc/loadavg`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Describes this machine; `root` is the git work tree.
pub fn machine(root: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = parse_status_kib(&meminfo, "MemTotal").unwrap_or(0);
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c} (with uncommitted changes)")
            } else {
                c
            }
        }
        None => "none (no commit yet; uncommitted work tree)".into(),
    };
    Machine {
        cpu_model: parse_cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        memory_gib: (mem_kib as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        date_utc: utc_now(),
        git_commit: commit,
        load_at_start: loadavg(),
        load_at_end: String::new(),
    }
}

/// The current time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

/// Formats Unix seconds as `YYYY-MM-DD HH:MM UTC` (proleptic Gregorian;
/// H. Hinnant's days-to-civil algorithm).
pub fn format_utc(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let sod = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        sod / 3600,
        sod % 3600 / 60
    )
}

/// The CPU the storms run on: the last one, so the scheduler's choice of an
/// idle CPU for every new child (and the wake-up latency of that CPU) does
/// not decide the wall time. Unpinned, the baseline of the exec storm varied
/// by ±15% between runs on a 2-core machine, more than the effect measured.
/// `None` on a single CPU (nothing to choose between).
pub fn pin_cpu() -> Option<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (n >= 2).then(|| n - 1)
}

/// Makes `cmd` (and everything it forks) run on `cpu` only.
pub fn pin_to_cpu(cmd: &mut std::process::Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe functions (sched_setaffinity) on a stack value.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_ticks_counts_from_the_last_paren() {
        let stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 75 3 4 20 0 3 0 12345 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn stat_cpu_ticks_rejects_truncated_text() {
        assert_eq!(parse_stat_cpu_ticks("1234 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no paren at all"), None);
        assert_eq!(parse_stat_cpu_ticks(""), None);
    }

    #[test]
    fn status_values_in_kib() {
        let status =
            "Name:\tpicket\nVmPeak:\t  123456 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   30720 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(40960));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(30720));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        // A key must match whole, not as a prefix of another key.
        assert_eq!(parse_status_kib("VmHWMX: 5 kB\n", "VmHWM"), None);
    }

    #[test]
    fn cpu_delta_prefers_schedstat_when_consistent() {
        let a = CpuReading {
            ticks: 100,
            sched_ns: 1_000_000_000,
        };
        let b = CpuReading {
            ticks: 105,
            sched_ns: 1_047_000_000,
        };
        assert_eq!(cpu_delta_ns(a, b, 100), 47_000_000);
        // A thread exited: schedstat lost its time, ticks did not.
        let c = CpuReading {
            ticks: 150,
            sched_ns: 1_010_000_000,
        };
        assert_eq!(cpu_delta_ns(a, c, 100), 500_000_000);
        // Counters never go negative.
        assert_eq!(cpu_delta_ns(b, a, 100), 0);
    }

    #[test]
    fn cpu_model_from_cpuinfo() {
        let info =
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n";
        assert_eq!(
            parse_cpu_model(info).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(parse_cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        // 2026-11-22T07:15:00Z
        assert_eq!(format_utc(1_795_331_700), "2026-11-22 07:15 UTC");
        // Leap day.
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn own_process_usage_is_readable() {
        let u = proc_usage(std::process::id()).expect("own /proc entry");
        assert!(u.hwm_kib >= u.rss_kib.min(u.hwm_kib));
        assert!(u.hwm_kib > 0);
    }

    #[test]
    fn steal_from_proc_stat() {
        let stat = "cpu  3161622 110858 407011 1107353 16183 0 3181 94018 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(parse_stat_steal(stat), Some(94018));
        assert_eq!(parse_stat_steal("cpu  1 2 3\n"), None);
        assert_eq!(parse_stat_steal(""), None);
    }
}
