//! Killing from user space without pid-reuse races: pidfds, and the cgroup
//! v2 `cgroup.kill` file.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::action::ProcessRef;

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("process {pid} is gone")]
    Gone { pid: u32 },
    #[error(
        "pid {pid} now belongs to another process (started at tick {found}, expected {expected}): not killed"
    )]
    Reused { pid: u32, expected: u64, found: u64 },
    #[error("{op} for pid {pid}: {source}")]
    Syscall {
        op: &'static str,
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {path} still has {left} processes after {waited:?}")]
    Survivors {
        path: PathBuf,
        left: usize,
        waited: Duration,
    },
}

/// `pidfd_open(2)`.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal(2)`.
pub fn pidfd_send_signal(fd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: valid pidfd, null siginfo, zero flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22).
pub fn start_ticks(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // comm may contain spaces and parentheses: fields resume after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Sends SIGKILL to exactly the process `p`. The pidfd is opened first and
/// the start time checked after: if it still matches, the pidfd refers to
/// `p` (a pidfd keeps naming its process even if the pid is reused later).
pub fn kill_process(proc_root: &Path, p: &ProcessRef) -> Result<(), KillError> {
    let fd = match pidfd_open(p.pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            return Err(KillError::Gone { pid: p.pid });
        }
        Err(source) => {
            return Err(KillError::Syscall {
                op: "pidfd_open",
                pid: p.pid,
                source,
            });
        }
    };
    match start_ticks(proc_root, p.pid) {
        None => return Err(KillError::Gone { pid: p.pid }),
        Some(found) if found != p.start_ticks => {
            return Err(KillError::Reused {
                pid: p.pid,
                expected: p.start_ticks,
                found,
            });
        }
        Some(_) => {}
    }
    match pidfd_send_signal(&fd, libc::SIGKILL) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Err(KillError::Gone { pid: p.pid }),
        Err(source) => Err(KillError::Syscall {
            op: "pidfd_send_signal",
            pid: p.pid,
            source,
        }),
    }
}

/// Pids in `cgroup` and every descendant cgroup.
pub fn cgroup_pids(cgroup: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    let mut stack = vec![cgroup.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
        out.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(out)
}

/// How a cgroup was emptied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupKillMethod {
    /// The kernel's `cgroup.kill` (Linux 5.14+): atomic, includes processes
    /// forked while killing.
    CgroupKill,
    /// Frozen, then each process killed through a pidfd.
    Pidfds,
}

/// Kills every process of `cgroup` (and its descendants) and waits up to
/// `wait` for it to be empty. Returns the method and the number of
/// processes that were there.
pub fn kill_cgroup(cgroup: &Path, wait: Duration) -> Result<(CgroupKillMethod, usize), KillError> {
    let cg_err = |source| KillError::Cgroup {
        path: cgroup.to_path_buf(),
        source,
    };
    let before = cgroup_pids(cgroup).map_err(cg_err)?;
    let kill_file = cgroup.join("cgroup.kill");
    let method = match std::fs::write(&kill_file, "1") {
        Ok(()) => CgroupKillMethod::CgroupKill,
        Err(e) => {
            tracing::debug!(cgroup = %cgroup.display(), error = %e, "cgroup.kill unavailable; killing with pidfds");
            kill_cgroup_pidfds(cgroup).map_err(cg_err)?;
            CgroupKillMethod::Pidfds
        }
    };
    let deadline = Instant::now() + wait;
    loop {
        let left = cgroup_pids(cgroup).map_err(cg_err)?;
        if left.is_empty() {
            return Ok((method, before.len()));
        }
        if Instant::now() >= deadline {
            return Err(KillError::Survivors {
                path: cgroup.to_path_buf(),
                left: left.len(),
                waited: wait,
            });
        }
        if method == CgroupKillMethod::Pidfds {
            kill_cgroup_pidfds(cgroup).map_err(cg_err)?;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Freezes the cgroup (so nothing forks meanwhile, where `cgroup.freeze`
/// exists), SIGKILLs every member through a pidfd opened while it is still
/// listed in the cgroup, then thaws (SIGKILL is delivered to frozen tasks
/// once thawed).
fn kill_cgroup_pidfds(cgroup: &Path) -> io::Result<()> {
    let freeze = cgroup.join("cgroup.freeze");
    let frozen = std::fs::write(&freeze, "1").is_ok();
    let result = (|| {
        for pid in cgroup_pids(cgroup)? {
            let Ok(fd) = pidfd_open(pid) else { continue };
            // The pid is still a member after the pidfd was opened: the pidfd
            // names that member.
            if !cgroup_pids(cgroup)?.contains(&pid) {
                continue;
            }
            if let Err(e) = pidfd_send_signal(&fd, libc::SIGKILL)
                && e.raw_os_error() != Some(libc::ESRCH)
            {
                return Err(e);
            }
        }
        Ok(())
    })();
    if frozen {
        let _ = std::fs::write(&freeze, "0");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_parses_comm_with_spaces_and_parens() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("42")).unwrap();
        // 52 fields; field 22 (starttime) = 987654.
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[22 - 3] = "987654".into();
        std::fs::write(
            dir.path().join("42/stat"),
            format!("42 (a b) c) {}", fields.join(" ")),
        )
        .unwrap();
        assert_eq!(start_ticks(dir.path(), 42), Some(987654));
        assert_eq!(start_ticks(dir.path(), 43), None);
        std::fs::write(dir.path().join("42/stat"), "42 (x").unwrap();
        assert_eq!(start_ticks(dir.path(), 42), None);
    }

    #[test]
    fn own_start_ticks_match_and_reuse_is_refused() {
        let me = std::process::id();
        let ticks = start_ticks(Path::new("/proc"), me).expect("own stat");
        // A wrong start time must be refused before any signal is sent.
        let err = kill_process(
            Path::new("/proc"),
            &ProcessRef {
                pid: me,
                start_ticks: ticks + 1,
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, KillError::Reused { pid, expected, found } if pid == me && expected == ticks + 1 && found == ticks),
            "{err}"
        );
    }

    #[test]
    fn kills_a_child_by_pidfd() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let ticks = start_ticks(Path::new("/proc"), pid).unwrap();
        kill_process(
            Path::new("/proc"),
            &ProcessRef {
                pid,
                start_ticks: ticks,
            },
        )
        .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        // Reaped: the pid is gone.
        assert!(matches!(
            kill_process(
                Path::new("/proc"),
                &ProcessRef {
                    pid,
                    start_ticks: ticks
                }
            ),
            Err(KillError::Gone { .. }) | Err(KillError::Reused { .. })
        ));
    }
}
