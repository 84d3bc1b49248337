//! Test cgroups under the cgroup v2 hierarchy, removed on drop.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
};

/// The cgroup v2 mount point (from /proc/self/mountinfo).
pub fn v2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    for line in info.lines() {
        // ... mountpoint ... - fstype source opts
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        if post.split_whitespace().next() == Some("cgroup2")
            && let Some(mp) = pre.split_whitespace().nth(4)
        {
            return PathBuf::from(mp);
        }
    }
    panic!("no cgroup2 mount found: the real-kernel tests need the cgroup v2 hierarchy");
}

/// A cgroup directory (and any parents it had to create) that is removed when
/// dropped, also when the test panics: remaining processes are moved to the
/// root cgroup first.
pub struct TestCgroup {
    root: PathBuf,
    /// Directories created, outermost first.
    created: Vec<PathBuf>,
    pub path: PathBuf,
}

impl TestCgroup {
    /// Creates `relative` (e.g. `kubepods/besteffort/pod<uid>/cri-containerd-<id>.scope`)
    /// under the v2 root.
    pub fn create(relative: &str) -> Self {
        let root = v2_root();
        let path = root.join(relative);
        let mut created = Vec::new();
        let mut cur = root.clone();
        for comp in Path::new(relative).components() {
            cur.push(comp);
            if !cur.exists() {
                std::fs::create_dir(&cur)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", cur.display()));
                created.push(cur.clone());
            }
        }
        Self {
            root,
            created,
            path,
        }
    }

    /// A unique test cgroup name.
    pub fn unique(prefix: &str) -> Self {
        Self::create(&format!(
            "picket-test-{prefix}-{}-{}",
            std::process::id(),
            rand_suffix()
        ))
    }

    /// The cgroup id (inode of the directory), as the kernel reports it.
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).expect("cgroup dir").ino()
    }

    /// Makes `cmd`'s child move itself into this cgroup before it execs, so
    /// its exec and everything after it happens inside.
    pub fn enter(&self, cmd: &mut Command) {
        enter_dir(cmd, &self.path);
    }
}

/// Makes `cmd`'s child move itself into the cgroup v2 directory `dir` before
/// it execs (also for cgroups a test did not create, e.g. a runtime's).
pub fn enter_dir(cmd: &mut Command, dir: &Path) {
    let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).expect("path");
    // SAFETY: only async-signal-safe calls (open/write/close) between fork
    // and exec, on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            // Move stragglers (e.g. from a failed assertion) to the root.
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    if pid > 1 {
                        // SAFETY: plain kill(2) of a positive pid left in our test cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        let _ = std::fs::write(self.root.join("cgroup.procs"), pid.to_string());
                    }
                }
            }
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) & 0xffff_ffff
}
