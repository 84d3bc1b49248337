//! Process cache tests beyond the basics in `cache.rs`: exact model fields,
//! ancestry depth, counters, the /proc seed (fake and real).

use std::{
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use super::{CacheConfig, CacheStats, ExecInfo, ProcessCache, procfs};
use crate::model::{ExitStatus, FdType};

const T: u64 = 10_000_000;

fn boot() -> jiff::Timestamp {
    "2026-01-01T00:00:00Z".parse().expect("timestamp")
}

fn cache(max: usize) -> ProcessCache {
    ProcessCache::new(CacheConfig {
        node_name: "node-a".into(),
        max_entries: max,
        exit_grace: Duration::from_secs(30),
        boot_time: Some(boot()),
    })
}

fn exec(pid: u32, start: u64, ppid: u32, pstart: u64, argv: &[&str]) -> ExecInfo {
    ExecInfo {
        pid,
        start_ns: start * T,
        ppid,
        parent_start_ns: pstart * T,
        vpid: pid,
        exe: argv.first().copied().unwrap_or_default().into(),
        args: argv.iter().map(|a| (*a).to_owned()).collect(),
        loginuid: u32::MAX,
        pidns: 4026531836,
        mntns: 4026531841,
        ..Default::default()
    }
}

#[test]
fn three_levels_of_ancestry_with_exact_fields() {
    let mut c = cache(100);
    c.on_exec(exec(1, 2, 0, 0, &["/sbin/init"]));
    c.on_exec(exec(700, 300, 1, 2, &["/usr/sbin/sshd", "-D"]));
    c.on_exec(exec(800, 400, 700, 300, &["/bin/bash", "-l"]));
    let mut curl = exec(900, 500, 800, 400, &["/usr/bin/curl", "-s", "http://x"]);
    curl.start_ns = 500 * T + 1234;
    (
        curl.uid, curl.euid, curl.suid, curl.gid, curl.egid, curl.sgid,
    ) = (1000, 0, 0, 1000, 1000, 0);
    curl.loginuid = 1000;
    curl.cap_effective = (1 << 21) | (1 << 12);
    curl.cap_permitted = (1 << 21) | (1 << 12) | (1 << 50);
    curl.cwd = "/home/alice".into();
    curl.cgroup_id = 77;
    // stdin a pty (/dev/pts/3), stdout a pipe, stderr closed.
    curl.stdio_modes = [0o020620, 0o010600, 0];
    curl.stdin_rdev = (136 << 20) | 3;
    c.on_exec(curl);

    let m = c.to_model(900, 500 * T + 1234, 3).expect("known");
    assert_eq!(m.exec_id, "node-a:500:900");
    assert_eq!(m.parent_exec_id, "node-a:400:800");
    assert_eq!(
        (m.pid, m.vpid, m.parent_pid, m.parent_vpid),
        (900, 900, 800, 800)
    );
    assert_eq!(
        m.start_time,
        Some("2026-01-01T00:00:05.000001234Z".parse().expect("ts"))
    );
    assert_eq!(m.executable.path, "/usr/bin/curl");
    assert_eq!(m.executable.name, "curl");
    assert_eq!(m.command_line, "/usr/bin/curl -s http://x");
    assert_eq!(m.working_directory, "/home/alice");
    assert_eq!((m.user.id, m.real_user.id, m.saved_user.id), (0, 1000, 0));
    assert_eq!(
        (m.group.id, m.real_group.id, m.saved_group.id),
        (1000, 1000, 0)
    );
    assert_eq!(m.login_user.map(|u| u.id), Some(1000));
    assert_eq!(
        *m.capabilities.effective,
        ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
    );
    assert_eq!(
        *m.capabilities.permitted,
        ["CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_50"]
    );
    assert_eq!(
        (m.stdio.stdin, m.stdio.stdout, m.stdio.stderr),
        (FdType::Tty, FdType::Pipe, FdType::Closed)
    );
    assert!(m.interactive);
    assert_eq!(m.in_init_tree, None, "host process");
    assert_eq!(
        (m.linux.cgroup_id, m.linux.pid_ns, m.linux.pid_ns_level),
        (77, 4026531836, 0)
    );
    let anc: Vec<(&str, u32, &str, &str)> = m
        .ancestors
        .iter()
        .map(|a| {
            (
                a.exec_id.as_str(),
                a.pid,
                a.executable.path.as_str(),
                a.command_line.as_str(),
            )
        })
        .collect();
    assert_eq!(
        anc,
        vec![
            ("node-a:400:800", 800, "/bin/bash", "/bin/bash -l"),
            ("node-a:300:700", 700, "/usr/sbin/sshd", "/usr/sbin/sshd -D"),
            ("node-a:2:1", 1, "/sbin/init", "/sbin/init"),
        ]
    );
    // The public walk agrees, is bounded, and stops after pid 1.
    assert_eq!(c.ancestors(900, 500 * T, 2).len(), 2);
    assert_eq!(c.ancestors(900, 500 * T, 10).len(), 3);
    assert!(c.ancestors(1, 2 * T, 10).is_empty());
}

#[test]
fn ancestry_stops_at_unknown_parents_and_cycles() {
    let mut c = cache(100);
    // 20's parent (10) is unknown.
    c.on_exec(exec(20, 20, 10, 10, &["/bin/orphan"]));
    assert!(c.ancestors(20, 20 * T, 5).is_empty());
    // A cycle (only possible with corrupt input): 30 <-> 31.
    c.on_exec(exec(30, 30, 31, 31, &["/bin/a"]));
    c.on_exec(exec(31, 31, 30, 30, &["/bin/b"]));
    let anc = c.ancestors(30, 30 * T, 10);
    assert_eq!(anc.iter().map(|a| a.pid).collect::<Vec<_>>(), vec![31]);
}

#[test]
fn fork_without_exec_then_exec_in_a_container() {
    let mut c = cache(100);
    let mut init = exec(200, 2, 100, 1, &["/app/server"]);
    (init.vpid, init.pidns, init.pidns_level) = (1, 555, 1);
    c.on_exec(init);
    c.on_fork(200, 2 * T, 201, 3 * T);
    let child = c.to_model(201, 3 * T, 5).expect("forked");
    assert_eq!(child.executable.path, "/app/server", "inherits the image");
    assert_eq!((child.pid, child.parent_pid), (201, 200));
    assert_eq!(child.vpid, 0, "unknown in a container until exec");
    assert_eq!(child.parent_vpid, 1);
    assert_eq!(child.in_init_tree, Some(true));
    let mut sh = exec(201, 3, 200, 2, &["/bin/sh", "-c", "id"]);
    (sh.vpid, sh.pidns, sh.pidns_level) = (8, 555, 1);
    c.on_exec(sh);
    let m = c.to_model(201, 3 * T, 5).expect("exec'd");
    assert_eq!((m.vpid, m.parent_vpid, m.in_init_tree), (8, 1, Some(true)));
    assert_eq!(m.executable.path, "/bin/sh");
    // A container process whose chain is not in the cache: undetermined.
    let mut lost = exec(250, 9, 249, 8, &["/bin/x"]);
    (lost.vpid, lost.pidns, lost.pidns_level) = (40, 555, 1);
    c.on_exec(lost);
    let m = c.to_model(250, 9 * T, 5).expect("known");
    assert_eq!((m.in_init_tree, m.parent_vpid), (None, 0));
}

#[test]
fn grace_period_and_counters() {
    let mut c = cache(100);
    c.on_exec(exec(5, 5, 0, 0, &["/bin/true"]));
    let t0 = Instant::now();
    c.on_exit_at(
        5,
        5 * T,
        ExitStatus {
            code: 0,
            signal: 9,
            core_dumped: false,
        },
        t0,
    );
    c.on_exit_at(6, 6 * T, ExitStatus::default(), t0);
    assert_eq!(
        c.to_model(5, 5 * T, 0)
            .and_then(|m| m.exit)
            .map(|e| e.signal),
        Some(9)
    );
    c.gc(t0 + Duration::from_millis(29_999));
    assert_eq!(c.len(), 1);
    c.gc(t0 + Duration::from_secs(30));
    assert_eq!(c.len(), 0);
    assert!(c.to_model(5, 5 * T, 0).is_none());
    assert_eq!(
        c.stats(),
        CacheStats {
            evicted_exited: 0,
            evicted_live: 0,
            expired: 1,
            misses: 1,
            unknown_exits: 1
        }
    );
}

#[test]
fn eviction_counters_and_order() {
    let mut c = cache(32); // evicts 32/16 = 2 at a time
    for pid in 1..=32 {
        c.on_exec(exec(pid, u64::from(pid), 0, 0, &["/bin/x"]));
    }
    let t0 = Instant::now();
    c.on_exit_at(
        20,
        20 * T,
        ExitStatus::default(),
        t0 + Duration::from_millis(2),
    );
    c.on_exit_at(
        10,
        10 * T,
        ExitStatus::default(),
        t0 + Duration::from_millis(1),
    );
    c.on_exit_at(
        30,
        30 * T,
        ExitStatus::default(),
        t0 + Duration::from_millis(3),
    );
    c.on_exec(exec(33, 33, 0, 0, &["/bin/y"]));
    assert!(
        c.get(10, 10 * T).is_none() && c.get(20, 20 * T).is_none(),
        "oldest exits first"
    );
    assert!(c.get(30, 30 * T).is_some());
    assert_eq!(c.stats().evicted_exited, 2);
    // Touch 1 and 2; the next two evictions take 30 (exited) then 3 (LRU).
    c.to_model(1, T, 0);
    c.to_model(2, 2 * T, 0);
    c.on_exec(exec(34, 34, 0, 0, &["/bin/y"]));
    c.on_exec(exec(35, 35, 0, 0, &["/bin/y"]));
    assert!(c.get(30, 30 * T).is_none());
    assert!(c.get(3, 3 * T).is_none());
    assert!(c.get(1, T).is_some() && c.get(2, 2 * T).is_some());
    assert_eq!((c.stats().evicted_exited, c.stats().evicted_live), (3, 1));
    assert_eq!(c.len(), 31);
}

#[test]
fn bounded_args_match_the_kernel_limits() {
    assert_eq!(
        procfs::bounded_args(b"ls\0-l\0/tmp\0"),
        (vec!["ls".into(), "-l".into(), "/tmp".into()], false)
    );
    assert_eq!(procfs::bounded_args(b""), (vec![], false));
    let many: Vec<u8> = (0..20)
        .flat_map(|i| format!("a{i}\0").into_bytes())
        .collect();
    let (args, truncated) = procfs::bounded_args(&many);
    assert_eq!(args.len(), 16);
    assert_eq!(args[15], "a15");
    assert!(truncated);
    let long = [vec![b'x'; 1000], vec![0], vec![b'y'; 100], vec![0]].concat();
    let (args, truncated) = procfs::bounded_args(&long);
    assert_eq!(args.len(), 1);
    assert!(truncated);
}

fn write(p: &Path, s: &str) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(p, s).expect("write");
}

#[test]
fn seed_from_a_fake_proc_skips_vanished_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let status = |uid: &str, nspid: &str| {
        format!(
            "Name:\tx\nUid:\t{uid}\nGid:\t100\t101\t102\t103\nNSpid:\t{nspid}\nCapPrm:\t0000000000200000\nCapEff:\t0000000000001000\n"
        )
    };
    write(
        &root.join("1/stat"),
        "1 (init) S 0 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 7 0 0",
    );
    write(&root.join("1/status"), &status("0\t0\t0\t0", "1"));
    write(&root.join("1/cmdline"), "/sbin/init\0");
    write(
        &root.join("100/stat"),
        "100 (my (odd) prog) S 1 100 100 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0",
    );
    write(&root.join("100/status"), &status("1000\t0\t2\t3", "100\t5"));
    write(&root.join("100/cmdline"), "prog\0b c\0");
    write(&root.join("100/loginuid"), "1000");
    std::fs::create_dir_all(root.join("100/fd")).expect("mkdir");
    std::os::unix::fs::symlink("/usr/local/bin/prog", root.join("100/exe")).expect("symlink");
    std::os::unix::fs::symlink("/srv/app", root.join("100/cwd")).expect("symlink");
    std::os::unix::fs::symlink("/dev/null", root.join("100/fd/0")).expect("symlink");
    write(&root.join("somefile"), "x");
    std::os::unix::fs::symlink(root.join("somefile"), root.join("100/fd/1")).expect("symlink");
    write(&root.join("100/ns/pid"), "");
    write(&root.join("100/ns/mnt"), "");
    // Vanished between listing and reading: only stat, or nothing at all.
    write(
        &root.join("101/stat"),
        "101 (gone) S 1 101 101 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5000 0 0",
    );
    std::fs::create_dir_all(root.join("102")).expect("mkdir");
    std::fs::create_dir_all(root.join("self")).expect("mkdir");

    let mut c = cache(100);
    assert_eq!(c.seed_from_proc(root), 2);
    let m = c.to_model(100, 4242 * T, 5).expect("seeded");
    assert_eq!(m.exec_id, "node-a:4242:100");
    assert_eq!(m.parent_exec_id, "node-a:7:1");
    assert_eq!((m.pid, m.vpid, m.parent_pid), (100, 5, 1));
    assert_eq!(m.command_args, vec!["prog", "b c"]);
    assert_eq!(m.executable.path, "/usr/local/bin/prog");
    assert_eq!(m.working_directory, "/srv/app");
    assert_eq!((m.real_user.id, m.user.id, m.saved_user.id), (1000, 0, 2));
    assert_eq!(
        (m.real_group.id, m.group.id, m.saved_group.id),
        (100, 101, 102)
    );
    assert_eq!(m.login_user.map(|u| u.id), Some(1000));
    assert_eq!(*m.capabilities.effective, ["CAP_NET_ADMIN"]);
    assert_eq!(*m.capabilities.permitted, ["CAP_SYS_ADMIN"]);
    assert_eq!(
        (m.stdio.stdin, m.stdio.stdout, m.stdio.stderr),
        (FdType::CharDevice, FdType::File, FdType::Closed)
    );
    assert!(!m.interactive);
    let ino = |p: &str| {
        std::fs::metadata(root.join(p))
            .map(|m| m.ino() as u32)
            .expect("stat")
    };
    assert_eq!(
        (m.linux.pid_ns, m.linux.pid_ns_level, m.linux.mnt_ns),
        (ino("100/ns/pid"), 1, ino("100/ns/mnt"))
    );
    assert_eq!(
        m.start_time,
        Some("2026-01-01T00:00:42.42Z".parse().expect("ts"))
    );
    assert_eq!(
        m.ancestors
            .iter()
            .map(|a| (a.pid, a.command_line.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "/sbin/init")]
    );
    assert!(c.get(101, 5000 * T).is_none());
}

/// Kills the process group of the spawned shell (the shell and its sleep)
/// on drop, also when the test fails.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let pgid = self.0.id() as libc::pid_t;
        // SAFETY: plain syscall; the group is ours (process_group(0)).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn stat_of(pid: u32) -> Option<(u32, u64)> {
    procfs::parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn canonical(candidates: &[&str]) -> String {
    candidates
        .iter()
        .find_map(|c| std::fs::canonicalize(c).ok())
        .map(|p: PathBuf| p.display().to_string())
        .expect("binary exists")
}

#[test]
fn seed_from_real_proc_gives_exact_ancestry() {
    let sh = Spawned(
        Command::new("sh")
            .args(["-c", "sleep 30; exit 0"])
            .process_group(0)
            .spawn()
            .expect("spawn sh"),
    );
    let sh_pid = sh.0.id();
    let sleep_exe = canonical(&["/usr/bin/sleep", "/bin/sleep"]);
    // Wait for sh's child to have exec'ed sleep.
    let deadline = Instant::now() + Duration::from_secs(10);
    let sleep_pid = loop {
        let found = std::fs::read_dir("/proc")
            .expect("read /proc")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|&pid| {
                stat_of(pid).is_some_and(|(ppid, _)| ppid == sh_pid)
                    && std::fs::read_link(format!("/proc/{pid}/exe"))
                        .is_ok_and(|p| p.display().to_string() == sleep_exe)
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c == b"sleep\x0030\x00")
            });
        if let Some(pid) = found {
            break pid;
        }
        assert!(Instant::now() < deadline, "sleep did not start");
        std::thread::sleep(Duration::from_millis(10));
    };
    let me = std::process::id();
    let (_, sleep_ticks) = stat_of(sleep_pid).expect("sleep stat");
    let (sh_ppid, sh_ticks) = stat_of(sh_pid).expect("sh stat");
    let (_, my_ticks) = stat_of(me).expect("own stat");
    assert_eq!(sh_ppid, me);

    let mut c = ProcessCache::new(CacheConfig {
        node_name: "n".into(),
        ..Default::default()
    });
    assert!(c.seed_from_proc(Path::new("/proc")) >= 3);
    let m = c
        .to_model(sleep_pid, sleep_ticks * T, 5)
        .expect("sleep seeded");
    assert_eq!(m.exec_id, format!("n:{sleep_ticks}:{sleep_pid}"));
    assert_eq!(m.parent_exec_id, format!("n:{sh_ticks}:{sh_pid}"));
    assert_eq!(
        (m.pid, m.vpid, m.parent_pid, m.parent_vpid),
        (sleep_pid, sleep_pid, sh_pid, sh_pid)
    );
    assert_eq!(m.command_args, vec!["sleep", "30"]);
    assert_eq!(m.executable.path, sleep_exe);
    assert_eq!(
        m.working_directory,
        std::env::current_dir().expect("cwd").display().to_string()
    );
    // SAFETY: plain getters.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    assert_eq!((m.user.id, m.group.id), (euid, egid));
    let own_pidns = std::fs::metadata("/proc/self/ns/pid").expect("ns").ino() as u32;
    assert_eq!((m.linux.pid_ns, m.linux.pid_ns_level), (own_pidns, 0));
    let anc: Vec<(String, u32, String)> = m
        .ancestors
        .iter()
        .take(2)
        .map(|a| (a.exec_id.clone(), a.pid, a.command_line.clone()))
        .collect();
    let my_cmdline = std::env::args().collect::<Vec<_>>();
    assert_eq!(
        anc,
        vec![
            (
                format!("n:{sh_ticks}:{sh_pid}"),
                sh_pid,
                "sh -c sleep 30; exit 0".to_owned()
            ),
            (format!("n:{my_ticks}:{me}"), me, my_cmdline.join(" ")),
        ]
    );
    assert_eq!(m.ancestors[0].executable.path, canonical(&["/bin/sh"]));
    assert_eq!(m.in_init_tree, None);
    drop(sh);
}

#[test]
fn fd_types_at_the_edges() {
    use super::fdtype::fd_type;
    const CHR: u16 = 0o020000;
    assert_eq!(fd_type(CHR | 0o666, 5 << 20), FdType::Tty, "/dev/tty (5:0)");
    assert_eq!(
        fd_type(CHR | 0o620, (143 << 20) | 0xfffff),
        FdType::Tty,
        "last pty major"
    );
    assert_eq!(fd_type(CHR | 0o620, 144 << 20), FdType::CharDevice);
    assert_eq!(fd_type(CHR | 0o620, 3 << 20), FdType::CharDevice);
    assert_eq!(fd_type(0o040755, 0), FdType::Directory);
    assert_eq!(fd_type(0o060660, 8 << 20), FdType::Other, "block device");
    assert_eq!(fd_type(0o120777, 0), FdType::Other, "symlink");
    assert_eq!(super::caps::name(40), Some("CAP_CHECKPOINT_RESTORE"));
    assert_eq!(super::caps::names(u64::MAX).len(), 64);
}

#[test]
fn fork_of_an_unknown_parent_still_links_the_child() {
    let mut c = cache(10);
    c.on_fork(42, 4 * T, 43, 5 * T);
    let m = c.to_model(43, 5 * T, 5).expect("child known");
    assert_eq!((m.pid, m.parent_pid, m.vpid), (43, 42, 43));
    assert_eq!(m.exec_id, "node-a:5:43");
    assert_eq!(m.parent_exec_id, "node-a:4:42");
    assert_eq!(m.executable.path, "");
    assert!(m.ancestors.is_empty());
}

#[test]
fn live_processes_of_a_mount_namespace_oldest_first() {
    let mut c = cache(100);
    let in_ns = |pid, start, ns| {
        let mut e = exec(pid, start, 1, 2, &["/bin/sleep"]);
        e.mntns = ns;
        e
    };
    c.on_exec(in_ns(30, 40, 7));
    c.on_exec(in_ns(10, 20, 7));
    c.on_exec(in_ns(20, 30, 9));
    c.on_exec(in_ns(40, 50, 7));
    c.on_exit(
        40,
        50 * T,
        ExitStatus {
            code: 0,
            signal: 0,
            core_dumped: false,
        },
    );
    assert_eq!(c.live_in_mnt_ns(7, 8), [10, 30]);
    assert_eq!(c.live_in_mnt_ns(7, 1), [10]);
    assert_eq!(c.live_in_mnt_ns(9, 8), [20]);
    assert_eq!(c.live_in_mnt_ns(0, 8), Vec::<u32>::new());
}
