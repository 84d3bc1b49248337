//! Starting, sampling and stopping one monitor around one workload run.
//!
//! Every monitor that prints to stdout is read through the same kind of pipe
//! reader thread, which stamps each line with `CLOCK_BOOTTIME` on arrival:
//! the cost of consuming the output is then the same for all of them, and
//! Picket's alert latency is "kernel timestamp → line read by a consumer".
//! A [`Running`] cleans up after itself when dropped (kills the process,
//! puts the audit rules back), so an error half-way leaves nothing behind.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    BenchError, auditd,
    parse::{self, Record},
    sys::{self, ProcUsage},
};

/// The monitors compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Monitor {
    /// No monitor: the baseline.
    None,
    /// `picket run --events --format json` with the default rules.
    Picket,
    /// `picket run --format json` with the default rules: alerts (and loss
    /// records) only, as deployed; in-kernel filters derived from the rules.
    PicketAlerts,
    /// auditd with equivalent syscall rules.
    Auditd,
    /// libbpf-tools execsnoop (exec events only).
    Execsnoop,
    /// libbpf-tools opensnoop (every open, not only monitored paths).
    Opensnoop,
}

impl Monitor {
    pub const ALL: [Monitor; 6] = [
        Self::None,
        Self::Picket,
        Self::PicketAlerts,
        Self::Auditd,
        Self::Execsnoop,
        Self::Opensnoop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none (baseline)",
            Self::Picket => "picket",
            Self::PicketAlerts => "picket (alerts only)",
            Self::Auditd => "auditd",
            Self::Execsnoop => "execsnoop",
            Self::Opensnoop => "opensnoop",
        }
    }

    /// Parses one output line of this monitor.
    pub fn parse(self, line: &str) -> Record {
        match self {
            Self::None => Record::Other,
            Self::Picket | Self::PicketAlerts => parse::picket_line(line),
            Self::Auditd => parse::audit_line(line, auditd::KEY),
            Self::Execsnoop => parse::execsnoop_line(line),
            Self::Opensnoop => parse::opensnoop_line(line),
        }
    }
}

/// What the monitors need to start.
pub struct Env<'a> {
    pub tmp: &'a Path,
    pub picket_bin: &'a Path,
    pub rules: &'a Path,
    pub monitored: &'a [&'a str],
    /// Extra `picket run` arguments (e.g. `--ring-buffer-bytes`).
    pub picket_args: &'a [String],
}

/// A line and the `CLOCK_BOOTTIME` ns at which it was read.
pub type Line = (u64, String);

/// Reads a child's stdout on a thread, stamping each line.
struct LineReader {
    handle: JoinHandle<Vec<Line>>,
    count: Arc<AtomicU64>,
}

impl LineReader {
    fn spawn(out: ChildStdout) -> Self {
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let handle = std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 20, out);
            let mut lines = Vec::new();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return lines,
                    Ok(_) => {
                        let t = sys::boottime_ns();
                        lines.push((t, String::from_utf8_lossy(&buf).trim_end().to_string()));
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Self { handle, count }
    }
}

/// CPU ns used between two [`Running::cpu`] readings.
pub fn cpu_ns_between(before: &[sys::CpuReading], after: &[sys::CpuReading]) -> u64 {
    let tck = sys::clk_tck();
    before
        .iter()
        .zip(after)
        .map(|(a, b)| sys::cpu_delta_ns(*a, *b, tck))
        .sum()
}

/// A started monitor.
pub struct Running {
    pub monitor: Monitor,
    child: Option<Child>,
    reader: Option<LineReader>,
    stderr_path: PathBuf,
    audit: Option<AuditRun>,
    /// Processes whose CPU time is the monitor's (auditd adds `kauditd`).
    cpu_pids: Vec<u32>,
}

struct AuditRun {
    saved: auditd::AuditState,
    log: PathBuf,
    lost_before: u64,
    tmp: PathBuf,
}

/// What a stopped monitor delivered.
#[derive(Debug, Default)]
pub struct Finished {
    pub records: Vec<Record>,
    /// For each alert: the record and the latency kernel timestamp → read, ns.
    pub alert_latencies: Vec<(parse::EventRec, u64)>,
    /// Losses the monitor reported outside its records (libbpf tools'
    /// stderr, the kernel audit `lost` counter).
    pub lost_outside: u64,
    /// The last lines of the monitor's stderr (for error messages).
    pub stderr_tail: String,
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Finds a libbpf tool: on PATH, or in the Debian locations.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/usr/share/bcc/tools"].map(PathBuf::from))
        .flat_map(|d| [d.join(name), d.join(format!("{name}.bt"))])
        .find(|p| p.is_file())
}

impl Running {
    /// Starts `monitor` and returns once it is attached and ready.
    pub fn start(monitor: Monitor, env: &Env<'_>) -> Result<Self, BenchError> {
        let stderr_path = env.tmp.join(format!("{monitor:?}.stderr").to_lowercase());
        let mut r = Running {
            monitor,
            child: None,
            reader: None,
            stderr_path,
            audit: None,
            cpu_pids: Vec::new(),
        };
        match monitor {
            Monitor::None => {}
            Monitor::Picket => r.start_picket(env, true)?,
            Monitor::PicketAlerts => r.start_picket(env, false)?,
            Monitor::Auditd => r.start_auditd(env)?,
            Monitor::Execsnoop | Monitor::Opensnoop => r.start_libbpf_tool(env)?,
        }
        // Let start-up work (seeding caches, first flushes) finish.
        std::thread::sleep(Duration::from_millis(500));
        Ok(r)
    }

    fn spawn(&mut self, cmd: &mut Command) -> Result<(), BenchError> {
        let err =
            File::create(&self.stderr_path).map_err(|e| BenchError::io(&self.stderr_path, e))?;
        super::measure::clean_env(cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| BenchError::Tool {
                tool: format!("{:?}", cmd.get_program()),
                msg: e.to_string(),
            })?;
        let out = child.stdout.take();
        self.cpu_pids.push(child.id());
        self.child = Some(child);
        if let Some(out) = out {
            self.reader = Some(LineReader::spawn(out));
        }
        Ok(())
    }

    fn died(&mut self) -> Option<BenchError> {
        let st = self.child.as_mut()?.try_wait().ok()??;
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        Some(BenchError::Tool {
            tool: self.monitor.name().into(),
            msg: format!("exited during start-up ({st}): {}", tail(&stderr, 15)),
        })
    }

    fn start_picket(&mut self, env: &Env<'_>, events: bool) -> Result<(), BenchError> {
        let ready = env.tmp.join("picket.ready");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(env.picket_bin);
        cmd.args(["--log", "warn", "run"]);
        if events {
            cmd.arg("--events");
        }
        cmd.args(["--format", "json", "--rules"])
            .arg(env.rules)
            .arg("--ready-file")
            .arg(&ready)
            .args(env.picket_args);
        self.spawn(&mut cmd)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ready.exists() {
            if let Some(e) = self.died() {
                return Err(e);
            }
            if Instant::now() > deadline {
                return Err(BenchError::Tool {
                    tool: "picket".into(),
                    msg: "not ready after 120 s".into(),
                });
            }
            super::check_interrupted()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn start_libbpf_tool(&mut self, _env: &Env<'_>) -> Result<(), BenchError> {
        let (name, args): (&str, &[&str]) = match self.monitor {
            Monitor::Execsnoop => ("execsnoop", &["-t"]),
            _ => ("opensnoop", &[]),
        };
        let bin = find_tool(name).ok_or_else(|| BenchError::Tool {
            tool: name.into(),
            msg: "not found (Debian package libbpf-tools)".into(),
        })?;
        self.spawn(Command::new(bin).args(args))?;
        // The header line is printed once the programs are attached; some
        // builds only flush it with the first event, so also accept a
        // still-running tool after 3 s.
        let deadline = Instant::now() + Duration::from_secs(3);
        while self
            .reader
            .as_ref()
            .is_some_and(|r| r.count.load(Ordering::Relaxed) == 0)
            && Instant::now() < deadline
        {
            if let Some(e) = self.died() {
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match self.died() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn start_auditd(&mut self, env: &Env<'_>) -> Result<(), BenchError> {
        let saved = auditd::AuditState::save()?;
        let dir = env.tmp.join("auditd");
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(&dir, e))?;
        let log = dir.join("audit.log");
        let _ = std::fs::remove_file(&log);
        let base = std::fs::read_to_string("/etc/audit/auditd.conf").unwrap_or_default();
        let conf = dir.join("auditd.conf");
        std::fs::write(&conf, auditd::conf(&base, &log)).map_err(|e| BenchError::io(&conf, e))?;
        // auditd refuses a config that others may write.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640))
            .map_err(|e| BenchError::io(&conf, e))?;
        self.audit = Some(AuditRun {
            saved,
            log,
            lost_before: 0,
            tmp: env.tmp.to_path_buf(),
        });
        let bin = find_tool("auditd").ok_or_else(|| BenchError::Tool {
            tool: "auditd".into(),
            msg: "not found (Debian package auditd)".into(),
        })?;
        self.spawn(
            Command::new(bin)
                .args(["-n", "-s", "enable", "-c"])
                .arg(&dir),
        )?;
        let pid = self.child.as_ref().map(|c| c.id() as u64).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while auditd::status_field("pid")? != pid {
            if let Some(e) = self.died() {
                return Err(e);
            }
            if Instant::now() > deadline {
                return Err(BenchError::Tool {
                    tool: "auditd".into(),
                    msg: "did not register within 10 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        auditd::load_rules(env.tmp, env.monitored)?;
        if let Some(a) = self.audit.as_mut() {
            a.lost_before = auditd::status_field("lost")?;
        }
        self.cpu_pids.extend(sys::pids_by_comm("kauditd"));
        Ok(())
    }

    /// CPU-time readings of the monitor's processes, in `cpu_pids` order.
    pub fn cpu(&self) -> Vec<sys::CpuReading> {
        self.cpu_pids.iter().map(|p| sys::cpu_reading(*p)).collect()
    }

    /// CPU time and memory of the main process.
    pub fn usage(&self) -> Option<ProcUsage> {
        sys::proc_usage(self.child.as_ref()?.id())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Some measure of output progress (lines read, or audit log size).
    fn progress(&self) -> u64 {
        match (&self.reader, &self.audit) {
            (_, Some(a)) => std::fs::metadata(&a.log).map(|m| m.len()).unwrap_or(0),
            (Some(r), None) => r.count.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Waits until the monitor has caught up: at least `min`, then until its
    /// output has not grown for `quiet`, at most `max`.
    pub fn drain(&self, min: Duration, quiet: Duration, max: Duration) {
        if self.monitor == Monitor::None {
            return;
        }
        let start = Instant::now();
        let mut last = self.progress();
        let mut last_change = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let p = self.progress();
            if p != last {
                last = p;
                last_change = Instant::now();
            }
            let el = start.elapsed();
            if el >= max || (el >= min && last_change.elapsed() >= quiet) || super::interrupted() {
                return;
            }
        }
    }

    /// Stops the monitor and collects its output.
    pub fn stop(mut self) -> Result<Finished, BenchError> {
        let mut fin = Finished::default();
        if let Some(a) = &self.audit {
            let after = auditd::status_field("lost").unwrap_or(a.lost_before);
            fin.lost_outside = after.saturating_sub(a.lost_before);
        }
        let sig = match self.monitor {
            Monitor::Execsnoop | Monitor::Opensnoop => libc::SIGINT,
            _ => libc::SIGTERM,
        };
        if let Some(c) = self.child.as_mut() {
            sys::stop_child(c, sig, Duration::from_secs(15));
        }
        self.child = None;
        let lines = match self.reader.take() {
            Some(r) => r.handle.join().unwrap_or_default(),
            None => Vec::new(),
        };
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        fin.stderr_tail = tail(&stderr, 15);
        if matches!(self.monitor, Monitor::Execsnoop | Monitor::Opensnoop) {
            fin.lost_outside += stderr
                .lines()
                .filter_map(parse::libbpf_lost_line)
                .sum::<u64>();
        }
        if let Some(mut a) = self.audit.take() {
            let text = std::fs::read(&a.log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            a.saved.restore(&a.tmp)?;
            fin.records = text.lines().map(|l| self.monitor.parse(l)).collect();
        } else {
            fin.records.reserve(lines.len());
            for (t, l) in &lines {
                let rec = self.monitor.parse(l);
                if let Record::Alert { ev, ktime_ns, .. } = &rec
                    && *ktime_ns > 0
                {
                    fin.alert_latencies
                        .push((ev.clone(), t.saturating_sub(*ktime_ns)));
                }
                fin.records.push(rec);
            }
        }
        Ok(fin)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            sys::stop_child(c, libc::SIGTERM, Duration::from_secs(5));
        }
        if let Some(mut a) = self.audit.take()
            && let Err(e) = a.saved.restore(&a.tmp)
        {
            sys::tracing_warn(&format!("restoring the audit rules failed: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn line_reader_stamps_every_line() {
        let before = sys::boottime_ns();
        let mut c = Command::new("printf")
            .arg("one\\ntwo\\n")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let r = LineReader::spawn(c.stdout.take().unwrap());
        let _ = c.wait();
        let lines = r.handle.join().unwrap();
        assert_eq!(
            lines.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert!(lines.iter().all(|(t, _)| *t >= before));
    }

    #[test]
    fn none_monitor_starts_and_stops_without_processes() {
        let d = tempfile::tempdir().unwrap();
        let env = Env {
            tmp: d.path(),
            picket_bin: Path::new("/nonexistent"),
            rules: d.path(),
            monitored: &[],
            picket_args: &[],
        };
        let r = Running::start(Monitor::None, &env).unwrap();
        assert!(r.cpu().is_empty());
        assert!(r.usage().is_none());
        let f = r.stop().unwrap();
        assert!(f.records.is_empty());
        assert_eq!(f.lost_outside, 0);
    }
}
