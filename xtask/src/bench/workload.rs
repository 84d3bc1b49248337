//! The workloads, and the child processes that generate them.
//!
//! Each storm runs in a child process (this same binary, `cargo xtask bench
//! --child <kind>`), so the monitors' records can be attributed to the
//! workload by process tree and the harness itself stays out of the figures.
//! A child prints one JSON line `{"ops": N, "secs": S}` when done.

use std::{
    fs::File,
    io::{BufRead, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{BenchError, sys};

/// The shell script of the mixed workload: `sh mixed.sh <dir> <scale>`.
pub const MIXED_SCRIPT: &str = include_str!("mixed.sh");

/// Command names the mixed workload runs, for monitors whose records carry
/// no parent pid (opensnoop).
pub const MIXED_COMMS: &[&str] = &[
    "sh",
    "dash",
    "seq",
    "mkdir",
    "rm",
    "tar",
    "gzip",
    "find",
    "sort",
    "xargs",
    "sha256sum",
    "wc",
    "grep",
    "cat",
    "cc",
    "gcc",
    "cc1",
    "as",
    "ld",
    "collect2",
    "pkb-prog",
];

/// Real files Picket watches by default (opened read-only by the open storm
/// and the latency trigger; only the ones that exist are used). The harness
/// adds a `<tmp>/home/.ssh/authorized_keys` (watched by suffix).
pub const MONITORED_PATHS: &[&str] = &["/etc/shadow", "/etc/gshadow", "/etc/sudoers"];

/// The storms and the realistic workload compared across monitors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// fork+exec of /bin/true, N times.
    Exec,
    /// TCP connects to a loopback listener, N times.
    Connect,
    /// Opens of monitored (1 in 10) and unmonitored paths, N times.
    Open,
    /// A shell script: builds a tree, tar + gzip, find, sha256sum, cc.
    Mixed,
}

impl Workload {
    pub const ALL: [Workload; 4] = [Self::Exec, Self::Connect, Self::Open, Self::Mixed];

    pub fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec storm",
            Self::Connect => "connect storm",
            Self::Open => "file-open storm",
            Self::Mixed => "mixed (shell build script)",
        }
    }
}

/// Child process kinds (the hidden `--child` option).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ChildKind {
    Exec,
    Connect,
    Open,
    /// Opens of `--path` at `--rate` per second for `--secs`.
    PacedOpen,
    /// connect(2) of one UDP socket to 127.0.0.1 at `--rate` for `--secs`
    /// (no packet is sent).
    PacedUdpConnect,
    /// fork+exec of /bin/true at `--rate` for `--secs`.
    PacedExec,
    /// Starts `--n` sleeping processes (in the cgroup `--cgroup`), prints,
    /// then waits for stdin to close and kills them.
    Sleepers,
}

/// Arguments of a child.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ChildArgs {
    #[arg(long = "child-n", hide = true, default_value_t = 0)]
    pub n: u64,
    #[arg(long = "child-rate", hide = true, default_value_t = 0)]
    pub rate: u64,
    #[arg(long = "child-secs", hide = true, default_value_t = 0.0)]
    pub secs: f64,
    /// Monitored files to open.
    #[arg(long = "child-path", hide = true)]
    pub paths: Vec<PathBuf>,
    /// Directory of unmonitored files `f0`..`f99`.
    #[arg(long = "child-dir", hide = true)]
    pub dir: Option<PathBuf>,
    #[arg(long = "child-cgroup", hide = true)]
    pub cgroup: Option<PathBuf>,
}

/// What a child reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChildReport {
    pub ops: u64,
    pub secs: f64,
}

/// Number of unmonitored files the open storm cycles through.
pub const UNMONITORED_FILES: usize = 100;

/// Runs a child workload and prints its report.
pub fn run_child(kind: ChildKind, a: &ChildArgs) -> Result<(), BenchError> {
    sys::set_comm(match kind {
        ChildKind::Exec | ChildKind::PacedExec => "pkb-exec",
        ChildKind::Connect | ChildKind::PacedUdpConnect => "pkb-connect",
        ChildKind::Open | ChildKind::PacedOpen => "pkb-open",
        ChildKind::Sleepers => "pkb-sleepers",
    });
    if let Some(cg) = &a.cgroup {
        // Into the cgroup the harness made for this child (per-cgroup rate
        // limits then apply per child, and everything is killed at the end).
        let procs = cg.join("cgroup.procs");
        std::fs::write(&procs, b"0")
            .map_err(|e| BenchError::Child(format!("{}: {e}", procs.display())))?;
    }
    let start = Instant::now();
    let ops = match kind {
        ChildKind::Exec => {
            for _ in 0..a.n {
                spawn_true()?;
            }
            a.n
        }
        ChildKind::Connect => connect_storm(a.n)?,
        ChildKind::Open => open_storm(a)?,
        ChildKind::PacedOpen => {
            let path = a
                .paths
                .first()
                .ok_or_else(|| BenchError::Child("paced-open needs --child-path".into()))?;
            // `{i}` in the path becomes the operation's number: distinct paths
            // defeat the rules' de-duplication (one alert per path).
            let pattern = path.to_string_lossy().into_owned();
            let unique = pattern.contains("{i}");
            let mut i = 0u64;
            paced(a.rate, a.secs, || {
                // Failing opens (missing files) are reported by Picket too.
                if unique {
                    let _ = File::open(pattern.replace("{i}", &i.to_string()));
                } else {
                    let _ = File::open(path);
                }
                i += 1;
                Ok(())
            })?
        }
        ChildKind::PacedUdpConnect => {
            let s = UdpSocket::bind("127.0.0.1:0")
                .map_err(|e| BenchError::Child(format!("udp bind: {e}")))?;
            let mut port = 9u16;
            paced(a.rate, a.secs, || {
                // Alternate the destination so every call changes the socket.
                port = if port == 9 { 7 } else { 9 };
                s.connect(("127.0.0.1", port))
                    .map_err(|e| BenchError::Child(format!("udp connect: {e}")))
            })?
        }
        ChildKind::PacedExec => paced(a.rate, a.secs, spawn_true)?,
        ChildKind::Sleepers => return sleepers(a),
    };
    print_report(ChildReport {
        ops,
        secs: start.elapsed().as_secs_f64(),
    })
}

fn print_report(r: ChildReport) -> Result<(), BenchError> {
    let line = serde_json::to_string(&r).map_err(|e| BenchError::Child(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|_| out.flush())
        .map_err(|e| BenchError::Child(format!("stdout: {e}")))
}

fn spawn_true() -> Result<(), BenchError> {
    let st = Command::new("/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| BenchError::Child(format!("/bin/true: {e}")))?;
    if st.success() {
        Ok(())
    } else {
        Err(BenchError::Child(format!("/bin/true: {st}")))
    }
}

/// Connects to a listener on 127.0.0.1 `n` times. Each round trip is
/// synchronous (the client waits for the server's close, so the accept
/// queue never overflows into 1 s SYN retransmits), and the client then
/// closes with SO_LINGER 0 (a reset), so no TIME_WAIT sockets pile up and
/// repeated runs never run out of ephemeral ports.
fn connect_storm(n: u64) -> Result<u64, BenchError> {
    let l =
        TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::Child(format!("listen: {e}")))?;
    let addr = l
        .local_addr()
        .map_err(|e| BenchError::Child(e.to_string()))?;
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    for _ in 0..n {
        let mut s = TcpStream::connect(addr)
            .map_err(|e| BenchError::Child(format!("connect {addr}: {e}")))?;
        // EOF once the server accepted and dropped the connection.
        let _ = std::io::Read::read(&mut s, &mut [0u8; 1]);
        let lin = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: valid socket fd and a correctly sized linger struct.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&lin as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
    Ok(n)
}

/// `n` opens: every tenth of a monitored path, the others of unmonitored
/// files in `dir`.
fn open_storm(a: &ChildArgs) -> Result<u64, BenchError> {
    let dir = a
        .dir
        .as_ref()
        .ok_or_else(|| BenchError::Child("open needs --child-dir".into()))?;
    let unmonitored: Vec<PathBuf> = (0..UNMONITORED_FILES)
        .map(|i| dir.join(format!("f{i}")))
        .collect();
    for i in 0..a.n as usize {
        let p = if i % 10 == 0 && !a.paths.is_empty() {
            &a.paths[(i / 10) % a.paths.len()]
        } else {
            &unmonitored[i % UNMONITORED_FILES]
        };
        File::open(p).map_err(|e| BenchError::Child(format!("{}: {e}", p.display())))?;
    }
    Ok(a.n)
}

/// Calls `op` at `rate` per second for `secs`, in 1 ms slices; returns how
/// many calls were made (fewer than asked when the machine cannot keep up).
fn paced(
    rate: u64,
    secs: f64,
    mut op: impl FnMut() -> Result<(), BenchError>,
) -> Result<u64, BenchError> {
    let start = Instant::now();
    let total = (rate as f64 * secs) as u64;
    let mut done = 0u64;
    while done < total {
        let el = start.elapsed().as_secs_f64();
        if el > secs * 1.5 {
            break; // cannot keep up; report what was achieved
        }
        let due = ((el * rate as f64) as u64 + 1).min(total);
        if done >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        // One operation per pass, so the deadline is checked between any two.
        op()?;
        done += 1;
    }
    Ok(done)
}

fn sleepers(a: &ChildArgs) -> Result<(), BenchError> {
    let start = Instant::now();
    let mut kids = Vec::with_capacity(a.n as usize);
    for _ in 0..a.n {
        match Command::new("sleep")
            .arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => kids.push(c),
            Err(e) => {
                for k in &mut kids {
                    let _ = k.kill();
                    let _ = k.wait();
                }
                return Err(BenchError::Child(format!(
                    "spawning sleeper {}: {e}",
                    kids.len()
                )));
            }
        }
    }
    print_report(ChildReport {
        ops: kids.len() as u64,
        secs: start.elapsed().as_secs_f64(),
    })?;
    // Wait for the harness to close stdin (or to die), then clean up.
    let mut sink = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut sink)
        .is_ok_and(|n| n > 0)
    {
        sink.clear();
    }
    for k in &mut kids {
        let _ = k.kill();
    }
    for k in &mut kids {
        let _ = k.wait();
    }
    Ok(())
}

/// Parses the last report line a child printed.
pub fn parse_report(stdout: &str) -> Option<ChildReport> {
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
}

/// Creates the unmonitored files of the open storm.
pub fn make_open_files(dir: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
    for i in 0..UNMONITORED_FILES {
        let p = dir.join(format!("f{i}"));
        std::fs::write(&p, b"x\n").map_err(|e| BenchError::io(&p, e))?;
    }
    Ok(())
}

/// The monitored paths that exist here.
pub fn monitored_paths() -> Vec<&'static str> {
    MONITORED_PATHS
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trip() {
        let r = parse_report("noise\n{\"ops\":5000,\"secs\":1.25}\n").unwrap();
        assert_eq!(
            r,
            ChildReport {
                ops: 5000,
                secs: 1.25
            }
        );
        assert_eq!(parse_report("nothing here"), None);
    }

    #[test]
    fn paced_reaches_the_asked_count() {
        let mut calls = 0;
        let n = paced(2000, 0.05, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 100);
        assert_eq!(calls, 100);
    }

    #[test]
    fn paced_gives_up_when_it_cannot_keep_up() {
        let n = paced(1_000_000, 0.02, || {
            std::thread::sleep(Duration::from_millis(5));
            Ok(())
        })
        .unwrap();
        assert!(n < 20_000, "{n}");
    }

    #[test]
    fn open_storm_counts_and_mixes_paths() {
        let d = tempfile::tempdir().unwrap();
        make_open_files(d.path()).unwrap();
        let mon = d.path().join("mon");
        std::fs::write(&mon, b"m").unwrap();
        let a = ChildArgs {
            n: 250,
            paths: vec![mon],
            dir: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        assert_eq!(open_storm(&a).unwrap(), 250);
        let missing = ChildArgs {
            n: 1,
            dir: Some(d.path().join("nope")),
            ..Default::default()
        };
        assert!(open_storm(&missing).is_err());
    }

    #[test]
    fn connect_storm_on_loopback() {
        assert_eq!(connect_storm(50).unwrap(), 50);
    }
}
