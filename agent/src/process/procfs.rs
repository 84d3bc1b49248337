//! Reading running processes from procfs, for the start-up seed.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{cache::ExecInfo, fdtype};

/// Fields of /proc/<pid>/stat we need: (ppid, start ticks).
pub fn parse_stat(text: &str) -> Option<(u32, u64)> {
    // comm (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, starttime field 22.
    Some((f.get(1)?.parse().ok()?, f.get(19)?.parse().ok()?))
}

/// Credentials, capabilities and namespace pids from /proc/<pid>/status.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub cap_eff: u64,
    pub cap_prm: u64,
    /// `NSpid`: pid in each nested namespace, outermost first.
    pub nspid: Vec<u32>,
}

pub fn parse_status(text: &str) -> Status {
    let mut s = Status::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        let ids = |v: &str| -> [u32; 4] {
            let mut out = [0; 4];
            for (i, x) in v.split_whitespace().take(4).enumerate() {
                out[i] = x.parse().unwrap_or(0);
            }
            out
        };
        match k {
            "Uid" => s.uid = ids(v),
            "Gid" => s.gid = ids(v),
            "CapEff" => s.cap_eff = u64::from_str_radix(v, 16).unwrap_or(0),
            "CapPrm" => s.cap_prm = u64::from_str_radix(v, 16).unwrap_or(0),
            "NSpid" => {
                s.nspid = v
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            }
            _ => {}
        }
    }
    s
}

/// Splits a NUL-separated cmdline with the kernel sensor's bounds
/// (`ARGV_MAX_ARGS` arguments, `ARGV_MAX` bytes), so a seeded process and
/// one seen at exec carry the same argv.
pub fn bounded_args(raw: &[u8]) -> (Vec<String>, bool) {
    use agent_common::process::{ARGV_MAX, ARGV_MAX_ARGS};
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return (Vec::new(), false);
    }
    let mut args = Vec::new();
    let mut used = 0usize;
    let mut truncated = false;
    for a in raw.split(|&c| c == 0) {
        // Each argument takes its bytes plus a NUL in the kernel's buffer.
        if args.len() == ARGV_MAX_ARGS || used + a.len() + 1 > ARGV_MAX {
            truncated = true;
            break;
        }
        used += a.len() + 1;
        args.push(String::from_utf8_lossy(a).into_owned());
    }
    (args, truncated)
}

fn ns_inode(dir: &Path, ns: &str) -> u32 {
    std::fs::metadata(dir.join("ns").join(ns))
        .map(|m| m.ino() as u32)
        .unwrap_or(0)
}

fn link(dir: &Path, name: &str) -> String {
    std::fs::read_link(dir.join(name))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Every process in `proc_root`. Processes that exit while being read are
/// skipped; unreadable optional fields stay empty.
pub fn read_all(proc_root: &Path) -> Vec<ExecInfo> {
    let Ok(rd) = std::fs::read_dir(proc_root) else {
        tracing::warn!(path = %proc_root.display(), "cannot read procfs: process cache not seeded");
        return Vec::new();
    };
    let pids: Vec<u32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let mut stats: HashMap<u32, (u32, u64)> = HashMap::new();
    for &pid in &pids {
        if let Some(s) = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            stats.insert(pid, s);
        }
    }
    let cgroup_root: Option<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|m| crate::container::find_cgroup2_mount(&m));
    let mut out = Vec::with_capacity(stats.len());
    for (&pid, &(ppid, ticks)) in &stats {
        let dir = proc_root.join(pid.to_string());
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        let st = parse_status(&status);
        let (args, args_truncated) = std::fs::read(dir.join("cmdline"))
            .map(|b| bounded_args(&b))
            .unwrap_or_default();
        let mut stdio_modes = [0u16; 3];
        let mut stdin_rdev = 0u32;
        for (i, m) in stdio_modes.iter_mut().enumerate() {
            if let Ok(md) = std::fs::metadata(dir.join("fd").join(i.to_string())) {
                *m = md.mode() as u16;
                if i == 0 && fdtype::fd_type_user(md.mode(), md.rdev()) == crate::model::FdType::Tty
                {
                    // Re-encode as the kernel does (major << 20 | minor).
                    let r = md.rdev();
                    let major = ((r >> 32) & 0xffff_f000) | ((r >> 8) & 0xfff);
                    let minor = ((r >> 12) & 0xffff_ff00) | (r & 0xff);
                    stdin_rdev = ((major as u32) << 20) | (minor as u32 & 0xfffff);
                }
            }
        }
        let cgroup_id = cgroup_root
            .as_ref()
            .and_then(|root| {
                let rel = crate::container::cgroup_path_of_pid_in(proc_root, pid).ok()?;
                std::fs::metadata(root.join(rel.trim_start_matches('/'))).ok()
            })
            .map(|m| m.ino())
            .unwrap_or(0);
        let parent_ticks = stats.get(&ppid).map(|s| s.1).unwrap_or(0);
        out.push(ExecInfo {
            pid,
            start_ns: ticks * 10_000_000,
            ppid,
            parent_start_ns: parent_ticks * 10_000_000,
            vpid: st.nspid.last().copied().unwrap_or(pid),
            exe: link(&dir, "exe"),
            exe_truncated: false,
            args,
            args_truncated,
            cwd: link(&dir, "cwd"),
            uid: st.uid[0],
            euid: st.uid[1],
            suid: st.uid[2],
            gid: st.gid[0],
            egid: st.gid[1],
            sgid: st.gid[2],
            loginuid: std::fs::read_to_string(dir.join("loginuid"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(u32::MAX),
            cap_effective: st.cap_eff,
            cap_permitted: st.cap_prm,
            pidns: ns_inode(&dir, "pid"),
            pidns_level: st.nspid.len().saturating_sub(1) as u32,
            mntns: ns_inode(&dir, "mnt"),
            cgroup_id,
            stdio_modes,
            stdin_rdev,
        });
    }
    out
}

/// Bounds of a value completed from `/proc` (argv, environment): a hostile
/// program cannot make the agent hold more than this per event.
pub const COMPLETE_ARGS_MAX: usize = 256;
pub const COMPLETE_BYTES_MAX: usize = 64 * 1024;

/// `/proc/<pid>` when it is still the process that started at
/// `start_ticks` (a pid reused since is another process).
fn same_process(proc_root: &Path, pid: u32, start_ticks: u64) -> Option<PathBuf> {
    let dir = proc_root.join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    (parse_stat(&stat)?.1 == start_ticks).then_some(dir)
}

/// The whole argv of a process whose kernel record was cut (`captured`, at
/// most `ARGV_MAX_ARGS` arguments, the last one possibly cut short), from
/// `/proc/<pid>/cmdline` while the process still runs. `None` when the
/// process is gone, is another one, shows arguments that do not extend
/// `captured` (it exec'd again, or rewrote its argv), or has more than
/// [`COMPLETE_ARGS_MAX`] arguments / [`COMPLETE_BYTES_MAX`] bytes.
pub fn complete_args(
    proc_root: &Path,
    pid: u32,
    start_ticks: u64,
    captured: &[String],
) -> Option<Vec<String>> {
    let dir = same_process(proc_root, pid, start_ticks)?;
    let raw = std::fs::read(dir.join("cmdline")).ok()?;
    if raw.len() > COMPLETE_BYTES_MAX {
        return None;
    }
    let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
    let full: Vec<String> = raw
        .split(|&c| c == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if full.len() > COMPLETE_ARGS_MAX || full.len() < captured.len() {
        return None;
    }
    let extends = match captured.split_last() {
        None => true,
        Some((last, head)) => full[..head.len()] == *head && full[head.len()].starts_with(last),
    };
    extends.then_some(full)
}

/// The whole path of an executable whose kernel walk stopped below the
/// root (`tail`: the deepest components it did resolve, `/a/b/exe`), from
/// `/proc/<pid>/exe` while the process still runs it. `None` when the
/// process is gone or is another one, or the link does not end with `tail`.
pub fn complete_exe(proc_root: &Path, pid: u32, start_ticks: u64, tail: &str) -> Option<String> {
    let dir = same_process(proc_root, pid, start_ticks)?;
    let full = std::fs::read_link(dir.join("exe")).ok()?;
    let full = full.to_str()?;
    let full = full.strip_suffix(" (deleted)").unwrap_or(full);
    (full.ends_with(tail) && full.len() > tail.len()).then(|| full.to_string())
}

/// `name`'s value in `/proc/<pid>/environ` (the last one when set twice, as
/// the dynamic loader reads it): `Some(None)` when the variable is not set,
/// `None` when the environment could not be read or is larger than
/// [`COMPLETE_BYTES_MAX`].
pub fn environ_var(
    proc_root: &Path,
    pid: u32,
    start_ticks: u64,
    name: &str,
) -> Option<Option<String>> {
    let dir = same_process(proc_root, pid, start_ticks)?;
    let raw = std::fs::read(dir.join("environ")).ok()?;
    if raw.len() > COMPLETE_BYTES_MAX {
        return None;
    }
    let prefix = format!("{name}=");
    Some(
        raw.split(|&c| c == 0)
            .filter_map(|kv| kv.strip_prefix(prefix.as_bytes()))
            .next_back()
            .map(|v| String::from_utf8_lossy(v).into_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake procfs with one process 42 started at tick 777.
    fn fake_proc(cmdline: &[u8], environ: &[u8]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("42");
        std::fs::create_dir(&dir).expect("mkdir");
        let stat = "42 (p) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0";
        std::fs::write(dir.join("stat"), stat).expect("stat");
        std::fs::write(dir.join("cmdline"), cmdline).expect("cmdline");
        std::fs::write(dir.join("environ"), environ).expect("environ");
        std::os::unix::fs::symlink("/very/deep/a/b/exe (deleted)", dir.join("exe")).expect("exe");
        root
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argv_is_completed_only_when_it_extends_the_kernel_copy() {
        let p = fake_proc(b"prog\0a\0bbbb\0--evil\0", b"");
        let root = p.path();
        let full = strs(&["prog", "a", "bbbb", "--evil"]);
        // The last captured argument may be cut short.
        assert_eq!(
            complete_args(root, 42, 777, &strs(&["prog", "a", "bb"])),
            Some(full.clone())
        );
        assert_eq!(complete_args(root, 42, 777, &strs(&[])), Some(full));
        // Another program (exec'd again), another process, or gone.
        assert_eq!(complete_args(root, 42, 777, &strs(&["other", "a"])), None);
        assert_eq!(complete_args(root, 42, 778, &strs(&["prog"])), None);
        assert_eq!(complete_args(root, 43, 777, &strs(&["prog"])), None);
        // Longer than captured is required.
        assert_eq!(
            complete_args(root, 42, 777, &strs(&["prog", "a", "bbbb", "--evil", "x"])),
            None
        );
    }

    #[test]
    fn exe_is_completed_when_the_link_ends_with_the_walked_part() {
        let p = fake_proc(b"", b"");
        let root = p.path();
        assert_eq!(
            complete_exe(root, 42, 777, "/a/b/exe").as_deref(),
            Some("/very/deep/a/b/exe")
        );
        assert_eq!(complete_exe(root, 42, 777, "/c/exe"), None);
        assert_eq!(complete_exe(root, 42, 1, "/a/b/exe"), None);
    }

    #[test]
    fn environ_gives_the_last_value_of_a_variable() {
        let p = fake_proc(
            b"",
            b"A=1\0LD_PRELOAD=/x.so\0LD_PRELOADX=no\0LD_PRELOAD=/y.so\0",
        );
        let root = p.path();
        assert_eq!(
            environ_var(root, 42, 777, "LD_PRELOAD"),
            Some(Some("/y.so".into()))
        );
        assert_eq!(environ_var(root, 42, 777, "LD_LIBRARY_PATH"), Some(None));
        assert_eq!(environ_var(root, 42, 9, "LD_PRELOAD"), None);
    }

    #[test]
    fn stat_with_hostile_comm() {
        let s =
            "1234 (a) b) (c) S 99 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(s), Some((99, 987654)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn status_fields() {
        let t = "Name:\tsh\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\nNSpid:\t4321\t7\nCapPrm:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let s = parse_status(t);
        assert_eq!(s.uid, [1000, 0, 0, 0]);
        assert_eq!(s.gid, [1000; 4]);
        assert_eq!(s.nspid, vec![4321, 7]);
        assert_eq!(s.cap_eff, 0x1ff_ffff_ffff);
        assert_eq!(s.cap_prm, 0);
    }
}
