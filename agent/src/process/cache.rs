//! The cache itself.

use std::{
    collections::HashSet,
    path::Path,
    sync::{Arc, LazyLock, OnceLock},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

// foldhash, not SipHash: the keys are pids, start times, namespace and
// cgroup inode numbers, which the kernel assigns (no one can choose them to
// collide), and hashing them was on every event's path.
use foldhash::{HashMap, HashMapExt};

use super::{caps, fdtype::fd_type};
use crate::model::{self, Ancestor, Capabilities, Executable, ExitStatus, Id, LinuxInfo, Stdio};

/// Nanoseconds per USER_HZ tick (USER_HZ is 100 on every Linux ABI).
const NS_PER_TICK: u64 = 10_000_000;

/// Start ticks of a boot-time start in ns (what /proc/<pid>/stat shows).
pub fn start_ticks(start_ns: u64) -> u64 {
    start_ns / NS_PER_TICK
}

/// `"{node}:{start_ticks}:{pid}"`.
pub fn exec_id(node: &str, pid: u32, ticks: u64) -> String {
    format!("{node}:{ticks}:{pid}")
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub node_name: String,
    /// Most entries kept; beyond it exited then least recently used entries are evicted.
    pub max_entries: usize,
    /// How long an exited process stays resolvable for late events.
    pub exit_grace: Duration,
    /// Wall-clock time of boot, to turn boot-time starts into
    /// `process.start_time`. `None`: measured when the cache is created.
    pub boot_time: Option<jiff::Timestamp>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            node_name: "localhost".into(),
            max_entries: 65_536,
            exit_grace: Duration::from_secs(30),
            boot_time: None,
        }
    }
}

/// Counters of one cache (the process-wide metrics sum all caches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Exited processes evicted before their grace period ended (cache full).
    pub evicted_exited: u64,
    /// Live processes evicted (cache full of live processes).
    pub evicted_live: u64,
    /// Exited processes removed at the end of their grace period.
    pub expired: u64,
    /// `to_model` calls for processes the cache did not know.
    pub misses: u64,
    /// Exits of processes the cache did not know.
    pub unknown_exits: u64,
}

/// Wall-clock time of boot: CLOCK_REALTIME - CLOCK_BOOTTIME.
fn boot_time_now() -> jiff::Timestamp {
    fn ns(clock: libc::clockid_t) -> i128 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec pointer; both clocks exist on Linux.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    }
    jiff::Timestamp::from_nanosecond(ns(libc::CLOCK_REALTIME) - ns(libc::CLOCK_BOOTTIME))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// What an exec (kernel record or /proc) tells about a process.
#[derive(Debug, Clone, Default)]
pub struct ExecInfo {
    pub pid: u32,
    /// Boot-time start of the process, ns.
    pub start_ns: u64,
    pub ppid: u32,
    pub parent_start_ns: u64,
    pub vpid: u32,
    pub exe: String,
    /// `exe` is the deepest part of a path the kernel could not walk to
    /// the root, and `/proc/<pid>/exe` could not complete it.
    pub exe_truncated: bool,
    pub args: Vec<String>,
    pub args_truncated: bool,
    pub cwd: String,
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub loginuid: u32,
    pub cap_effective: u64,
    pub cap_permitted: u64,
    pub pidns: u32,
    pub pidns_level: u32,
    pub mntns: u32,
    pub cgroup_id: u64,
    /// `i_mode` of fds 0-2 (0 = closed).
    pub stdio_modes: [u16; 3],
    /// Kernel-encoded device number of fd 0.
    pub stdin_rdev: u32,
}

/// One process.
#[derive(Debug, Clone)]
pub struct ProcessEntry {
    pub info: ExecInfo,
    pub start_ticks: u64,
    pub parent_ticks: u64,
    pub exec_id: String,
    pub parent_exec_id: String,
    /// Whether `info` came from an exec (kernel or /proc) or was inherited at fork.
    pub exec_seen: bool,
    pub exited_at: Option<Instant>,
    pub exit: Option<ExitStatus>,
    last_used: u64,
    /// This process as an ancestor of others, built on first use and shared
    /// by every event of its descendants (an entry's image never changes:
    /// an exec replaces the entry).
    as_ancestor: OnceLock<Arc<Ancestor>>,
}

type Key = (u32, u64);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

static SIZE: LazyLock<Gauge> = LazyLock::new(|| {
    crate::metrics::register(
        "process_cache_entries",
        "Processes in the cache",
        Gauge::default(),
    )
});
static EVICTIONS: LazyLock<Family<ReasonLabel, Counter>> = LazyLock::new(|| {
    crate::metrics::register(
        "process_cache_evictions",
        "Processes evicted from the full cache, by reason (exited, live)",
        Family::default(),
    )
});
static MISSES: LazyLock<Counter> = LazyLock::new(|| {
    crate::metrics::register(
        "process_cache_misses",
        "Events whose process was not in the cache",
        Counter::default(),
    )
});
static EXPIRED: LazyLock<Counter> = LazyLock::new(|| {
    crate::metrics::register(
        "process_cache_expired",
        "Exited processes removed from the cache at the end of their grace period",
        Counter::default(),
    )
});
static UNKNOWN_EXITS: LazyLock<Counter> = LazyLock::new(|| {
    crate::metrics::register(
        "process_cache_unknown_exits",
        "Exit events of processes the cache did not know",
        Counter::default(),
    )
});

/// The cache. Not thread-safe by design: one pipeline task owns it.
#[derive(Debug)]
pub struct ProcessCache {
    cfg: CacheConfig,
    entries: HashMap<Key, ProcessEntry>,
    tick: u64,
    last_gc: Instant,
    boot_time: jiff::Timestamp,
    stats: CacheStats,
    /// Start (boot-time ns) of the latest pid 1 seen per pid namespace of
    /// level > 0: when a container started.
    ns_inits: HashMap<u32, u64>,
    /// Per cgroup of host-pid-namespace processes: the earliest-started
    /// process seen in it. For a `hostPID: true` container that is its init
    /// (entrypoint); sessions entered later (`kubectl exec`) start after it.
    cgroup_firsts: HashMap<u64, (u64, Key)>,
    /// Cgroups where a process in a container pid namespace was seen: not
    /// hostPID containers (their sessions are judged by the pid namespace).
    cgroups_with_pidns: HashSet<u64>,
}

/// Pid namespaces remembered at most (one per container; cleared and
/// relearned past this).
const MAX_NS_INITS: usize = 4096;

impl ProcessCache {
    pub fn new(cfg: CacheConfig) -> Self {
        let boot_time = cfg.boot_time.unwrap_or_else(boot_time_now);
        Self {
            cfg,
            entries: HashMap::new(),
            tick: 0,
            last_gc: Instant::now(),
            boot_time,
            stats: CacheStats::default(),
            ns_inits: HashMap::new(),
            cgroup_firsts: HashMap::new(),
            cgroups_with_pidns: HashSet::new(),
        }
    }

    /// Up to `max` live processes of mount namespace `mntns`, oldest first:
    /// another way into a container's filesystem when the process an event
    /// came from is gone. A linear scan: callers use it rarely (user names
    /// retry a namespace at most once a second).
    pub fn live_in_mnt_ns(&self, mntns: u32, max: usize) -> Vec<u32> {
        if mntns == 0 {
            return Vec::new();
        }
        let mut found: Vec<(u64, u32)> = self
            .entries
            .values()
            .filter(|e| e.exited_at.is_none() && e.info.mntns == mntns)
            .map(|e| (e.start_ticks, e.info.pid))
            .collect();
        found.sort_unstable();
        found.truncate(max);
        found.into_iter().map(|(_, pid)| pid).collect()
    }

    /// When the container whose pid namespace is `pidns` started (its pid 1
    /// started), as wall-clock time; `None` if its init was never seen.
    pub fn container_start(&self, pidns: u32) -> Option<jiff::Timestamp> {
        self.start_time(*self.ns_inits.get(&pidns)?)
    }

    /// Counters since creation.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// The exec id of `(pid, start)`.
    pub fn exec_id(&self, pid: u32, start_ns: u64) -> String {
        exec_id(&self.cfg.node_name, pid, start_ticks(start_ns))
    }

    /// An entry by pid and boot-time start (ns).
    pub fn get(&self, pid: u32, start_ns: u64) -> Option<&ProcessEntry> {
        self.entries.get(&(pid, start_ticks(start_ns)))
    }

    pub fn get_by_exec_id(&self, id: &str) -> Option<&ProcessEntry> {
        let mut it = id.rsplitn(3, ':');
        let pid: u32 = it.next()?.parse().ok()?;
        let ticks: u64 = it.next()?.parse().ok()?;
        self.entries.get(&(pid, ticks)).filter(|e| e.exec_id == id)
    }

    fn touch(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn insert(&mut self, key: Key, e: ProcessEntry) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.cfg.max_entries {
            self.evict();
        }
        if e.info.vpid == 1 && e.info.pidns_level > 0 {
            if self.ns_inits.len() >= MAX_NS_INITS && !self.ns_inits.contains_key(&e.info.pidns) {
                self.ns_inits.clear();
            }
            self.ns_inits.insert(e.info.pidns, e.info.start_ns);
        }
        if e.info.pidns_level > 0 && e.info.cgroup_id != 0 {
            if self.cgroups_with_pidns.len() >= MAX_NS_INITS {
                self.cgroups_with_pidns.clear();
            }
            self.cgroups_with_pidns.insert(e.info.cgroup_id);
        }
        if e.info.pidns_level == 0 && e.info.cgroup_id != 0 {
            let stale = match self.cgroup_firsts.get(&e.info.cgroup_id) {
                None => true,
                Some(&(start, k)) => {
                    k == key
                        || start > e.info.start_ns
                        || self.entries.get(&k).is_none_or(|f| {
                            f.exited_at.is_some() || f.info.cgroup_id != e.info.cgroup_id
                        })
                }
            };
            if stale {
                if self.cgroup_firsts.len() >= MAX_NS_INITS
                    && !self.cgroup_firsts.contains_key(&e.info.cgroup_id)
                {
                    self.cgroup_firsts.clear();
                }
                self.cgroup_firsts
                    .insert(e.info.cgroup_id, (e.info.start_ns, key));
            }
        }
        self.entries.insert(key, e);
        SIZE.set(self.entries.len() as i64);
    }

    /// Makes room: drops a sixteenth of the capacity, exited processes (oldest
    /// exit first) before live ones (least recently used first).
    fn evict(&mut self) {
        let want = (self.cfg.max_entries / 16).max(1);
        let mut exited: Vec<(Instant, Key)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| e.exited_at.map(|t| (t, *k)))
            .collect();
        exited.sort_unstable();
        let mut n = 0;
        for (_, k) in exited.into_iter().take(want) {
            self.entries.remove(&k);
            n += 1;
        }
        EVICTIONS
            .get_or_create(&ReasonLabel { reason: "exited" })
            .inc_by(n as u64);
        self.stats.evicted_exited += n as u64;
        if n < want {
            let mut live: Vec<(u64, Key)> = self
                .entries
                .iter()
                .map(|(k, e)| (e.last_used, *k))
                .collect();
            live.sort_unstable();
            let m = want - n;
            for (_, k) in live.into_iter().take(m) {
                self.entries.remove(&k);
            }
            EVICTIONS
                .get_or_create(&ReasonLabel { reason: "live" })
                .inc_by(m as u64);
            self.stats.evicted_live += m as u64;
            tracing::warn!(
                evicted = m,
                capacity = self.cfg.max_entries,
                "process cache full: evicted live processes"
            );
        }
    }

    fn entry_from(&mut self, info: ExecInfo, exec_seen: bool) -> (Key, ProcessEntry) {
        let t = start_ticks(info.start_ns);
        let pt = start_ticks(info.parent_start_ns);
        let node = &self.cfg.node_name;
        let e = ProcessEntry {
            start_ticks: t,
            parent_ticks: pt,
            exec_id: exec_id(node, info.pid, t),
            parent_exec_id: if info.ppid == 0 {
                String::new()
            } else {
                exec_id(node, info.ppid, pt)
            },
            exec_seen,
            exited_at: None,
            exit: None,
            last_used: 0,
            as_ancestor: OnceLock::new(),
            info,
        };
        ((e.info.pid, t), e)
    }

    /// A program started: replaces the image of the process (created if unknown).
    pub fn on_exec(&mut self, info: ExecInfo) {
        let (key, mut e) = self.entry_from(info, true);
        e.last_used = self.touch();
        self.insert(key, e);
    }

    /// Records a process found in /proc (only if the kernel did not already
    /// report it: the kernel's view is authoritative).
    pub fn seed(&mut self, info: ExecInfo) {
        let key = (info.pid, start_ticks(info.start_ns));
        if !self.entries.contains_key(&key) {
            let (key, e) = self.entry_from(info, true);
            self.insert(key, e);
        }
    }

    /// A new process: it inherits its parent's image until it execs.
    pub fn on_fork(&mut self, ppid: u32, parent_start_ns: u64, pid: u32, start_ns: u64) {
        let parent = self
            .entries
            .get(&(ppid, start_ticks(parent_start_ns)))
            .map(|p| p.info.clone());
        let mut info = parent.unwrap_or_default();
        info.pid = pid;
        info.start_ns = start_ns;
        info.ppid = ppid;
        info.parent_start_ns = parent_start_ns;
        // In the initial pid namespace the vpid is the pid; elsewhere it is
        // only known once the child execs.
        info.vpid = if info.pidns_level == 0 { pid } else { 0 };
        let (key, mut e) = self.entry_from(info, false);
        e.last_used = self.touch();
        self.insert(key, e);
    }

    /// The process exited; it stays resolvable for the grace period.
    pub fn on_exit(&mut self, pid: u32, start_ns: u64, status: ExitStatus) {
        self.on_exit_at(pid, start_ns, status, Instant::now());
    }

    pub fn on_exit_at(&mut self, pid: u32, start_ns: u64, status: ExitStatus, now: Instant) {
        if let Some(e) = self.entries.get_mut(&(pid, start_ticks(start_ns))) {
            e.exited_at = Some(now);
            e.exit = Some(status);
        } else {
            self.stats.unknown_exits += 1;
            UNKNOWN_EXITS.inc();
            tracing::debug!(pid, start_ns, "exit of a process the cache does not know");
        }
        if now.duration_since(self.last_gc) >= Duration::from_secs(1) {
            self.gc(now);
        }
    }

    /// Drops exited processes whose grace period is over.
    pub fn gc(&mut self, now: Instant) {
        let grace = self.cfg.exit_grace;
        let before = self.entries.len();
        self.entries.retain(|_, e| {
            e.exited_at
                .is_none_or(|t| now.saturating_duration_since(t) < grace)
        });
        let expired = (before - self.entries.len()) as u64;
        self.stats.expired += expired;
        EXPIRED.inc_by(expired);
        self.last_gc = now;
        SIZE.set(self.entries.len() as i64);
    }

    /// Seeds the cache from a procfs (`/proc`); returns how many processes
    /// were added. Processes that vanish mid-read are skipped.
    pub fn seed_from_proc(&mut self, proc_root: &Path) -> usize {
        let before = self.entries.len();
        for info in super::procfs::read_all(proc_root) {
            self.seed(info);
        }
        self.entries.len() - before
    }

    /// The schema's `process` section for `(pid, start)`, with up to
    /// `max_ancestors` ancestors (nearest first).
    pub fn to_model(
        &mut self,
        pid: u32,
        start_ns: u64,
        max_ancestors: usize,
    ) -> Option<model::Process> {
        let key = (pid, start_ticks(start_ns));
        let tick = self.touch();
        let Some(e) = self.entries.get_mut(&key) else {
            MISSES.inc();
            self.stats.misses += 1;
            return None;
        };
        e.last_used = tick;
        let e = &self.entries[&key];
        let i = &e.info;
        let parent = self.entries.get(&(i.ppid, e.parent_ticks));
        let parent_vpid = match parent {
            _ if i.pidns_level == 0 => i.ppid,
            Some(p) if p.info.pidns == i.pidns && p.info.vpid != 0 => p.info.vpid,
            _ => 0,
        };
        let stdio = Stdio {
            stdin: fd_type(i.stdio_modes[0], i.stdin_rdev),
            stdout: fd_type(i.stdio_modes[1], 0),
            stderr: fd_type(i.stdio_modes[2], 0),
            ..Default::default()
        };
        Some(model::Process {
            exec_id: e.exec_id.clone(),
            pid: i.pid,
            vpid: i.vpid,
            parent_pid: i.ppid,
            parent_vpid,
            parent_exec_id: e.parent_exec_id.clone(),
            start_time: self.start_time(i.start_ns),
            executable: executable(&i.exe),
            executable_truncated: i.exe_truncated,
            command_line: i.args.join(" "),
            command_args: i.args.clone(),
            args_truncated: i.args_truncated,
            working_directory: i.cwd.clone(),
            // Exec events set them from their own command line.
            script_path: None,
            download_outputs: Vec::new(),
            // Exec events set it from their own record.
            env: None,
            user: model::User {
                id: i.euid,
                name: None,
            },
            real_user: Id { id: i.uid },
            saved_user: Id { id: i.suid },
            group: Id { id: i.egid },
            real_group: Id { id: i.gid },
            saved_group: Id { id: i.sgid },
            login_user: (i.loginuid != u32::MAX).then_some(model::User {
                id: i.loginuid,
                name: None,
            }),
            capabilities: Capabilities {
                effective: caps::names(i.cap_effective),
                permitted: caps::names(i.cap_permitted),
            },
            interactive: stdio.stdin == model::FdType::Tty,
            stdio,
            in_init_tree: self.in_init_tree(key),
            parent_outside_cgroup: None,
            linux: LinuxInfo {
                cgroup: String::new(),
                cgroup_id: i.cgroup_id,
                pid_ns: i.pidns,
                pid_ns_level: i.pidns_level,
                mnt_ns: i.mntns,
            },
            exit: e.exit,
            ancestors: self.ancestors_of_key(key, max_ancestors),
        })
    }

    /// Wall-clock start of a process from its boot-time start.
    fn start_time(&self, start_ns: u64) -> Option<jiff::Timestamp> {
        let ns = self
            .boot_time
            .as_nanosecond()
            .checked_add(i128::from(start_ns))?;
        jiff::Timestamp::from_nanosecond(ns).ok()
    }

    /// Up to `max` ancestors of `(pid, start)`, nearest first. The walk stops
    /// at an unknown parent, after the host's pid 1 (its parent is 0) and on
    /// a cycle.
    pub fn ancestors(&self, pid: u32, start_ns: u64, max: usize) -> Vec<Arc<Ancestor>> {
        self.ancestors_of_key((pid, start_ticks(start_ns)), max)
    }

    /// Nearest-first ancestors of `key`.
    fn ancestors_of_key(&self, key: Key, max: usize) -> Vec<Arc<Ancestor>> {
        let mut out = Vec::new();
        let mut seen = HashSet::from([key]);
        let mut cur = self.entries.get(&key);
        while let Some(e) = cur {
            if out.len() >= max || e.info.ppid == 0 {
                break;
            }
            let pk = (e.info.ppid, e.parent_ticks);
            if !seen.insert(pk) {
                break;
            }
            let Some(p) = self.entries.get(&pk) else {
                break;
            };
            out.push(
                p.as_ancestor
                    .get_or_init(|| {
                        Arc::new(Ancestor {
                            exec_id: p.exec_id.clone(),
                            pid: p.info.pid,
                            executable: executable(&p.info.exe),
                            command_line: p.info.args.join(" "),
                        })
                    })
                    .clone(),
            );
            cur = Some(p);
        }
        out
    }

    /// For a process in the host pid namespace (a `hostPID: true` pod's
    /// container, once the caller knows it is one) in cgroup `cgroup_id`:
    /// does it descend, through ancestors in the same cgroup, from the
    /// earliest process of that cgroup (the container's init)? A session
    /// entered from outside (`kubectl exec`: runc joins the cgroup from the
    /// runtime's) reaches a parent in another cgroup first. `None` when the
    /// chain is unknown or the process is in a container pid namespace (see
    /// `in_init_tree`).
    pub fn cgroup_init_tree(&self, pid: u32, start_ns: u64, cgroup_id: u64) -> Option<bool> {
        let key = (pid, start_ticks(start_ns));
        let e = self.entries.get(&key)?;
        if e.info.pidns_level != 0 || cgroup_id == 0 || self.cgroups_with_pidns.contains(&cgroup_id)
        {
            return None;
        }
        let &(_, first) = self.cgroup_firsts.get(&cgroup_id)?;
        // A runtime helper that joined the cgroup but not yet the
        // container's mount namespace (nsenter, runc before setns) is not a
        // session yet: its exec inside the container will be.
        if self.entries.get(&first)?.info.mntns != e.info.mntns {
            return None;
        }
        let mut seen = HashSet::new();
        let (mut cur_key, mut cur) = (key, e);
        loop {
            if cur_key == first {
                return Some(true);
            }
            let pk = (cur.info.ppid, cur.parent_ticks);
            if !seen.insert(pk) {
                return None;
            }
            match self.entries.get(&pk) {
                Some(p) if p.info.cgroup_id == cgroup_id => (cur_key, cur) = (pk, p),
                Some(_) => return Some(false),
                None => return None,
            }
        }
    }

    /// The cgroup of the parent of `(pid, start)` (as of the parent's exec
    /// or fork), if known.
    pub fn parent_cgroup(&self, pid: u32, start_ns: u64) -> Option<u64> {
        let e = self.entries.get(&(pid, start_ticks(start_ns)))?;
        self.entries
            .get(&(e.info.ppid, e.parent_ticks))
            .map(|p| p.info.cgroup_id)
    }

    /// In a container pid namespace: does the process descend, through
    /// ancestors in the same namespace, from that namespace's pid 1?
    fn in_init_tree(&self, key: Key) -> Option<bool> {
        let e = self.entries.get(&key)?;
        if e.info.pidns_level == 0 {
            return None;
        }
        let ns = e.info.pidns;
        let mut seen = HashSet::new();
        let mut cur = e;
        loop {
            if cur.info.vpid == 1 {
                return Some(true);
            }
            let pk = (cur.info.ppid, cur.parent_ticks);
            if !seen.insert(pk) {
                return None;
            }
            match self.entries.get(&pk) {
                Some(p) if p.info.pidns == ns => cur = p,
                // The chain leaves the namespace before its init.
                Some(_) => return Some(false),
                None => return None,
            }
        }
    }
}

fn executable(path: &str) -> Executable {
    Executable {
        path: path.to_string(),
        name: path.rsplit('/').next().unwrap_or(path).to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = NS_PER_TICK;

    fn cache(max: usize) -> ProcessCache {
        ProcessCache::new(CacheConfig {
            node_name: "n".into(),
            max_entries: max,
            exit_grace: Duration::from_secs(30),
            boot_time: None,
        })
    }

    fn exec(pid: u32, start: u64, ppid: u32, pstart: u64, exe: &str) -> ExecInfo {
        ExecInfo {
            pid,
            start_ns: start * T,
            ppid,
            parent_start_ns: pstart * T,
            vpid: pid,
            exe: exe.into(),
            args: vec![exe.rsplit('/').next().unwrap_or(exe).into()],
            loginuid: u32::MAX,
            pidns: 100,
            mntns: 200,
            ..Default::default()
        }
    }

    #[test]
    fn host_pid_container_sessions_are_told_from_its_init_tree() {
        let mut c = cache(100);
        let host = |pid, start, ppid, pstart, exe: &str, cg| ExecInfo {
            cgroup_id: cg,
            ..exec(pid, start, ppid, pstart, exe)
        };
        // containerd-shim in the runtime's cgroup 10; the container (cgroup
        // 20, host pid namespace) starts its entrypoint, which forks a worker.
        c.on_exec(host(100, 1, 1, 0, "/usr/bin/containerd-shim-runc-v2", 10));
        c.on_exec(host(200, 2, 100, 1, "/app/server", 20));
        c.on_fork(200, 2 * T, 201, 3 * T);
        // kubectl exec: runc (cgroup 10) starts a shell that joined cgroup 20,
        // and the shell runs a command.
        c.on_exec(host(300, 4, 100, 1, "/usr/bin/runc", 10));
        c.on_exec(host(301, 5, 300, 4, "/bin/sh", 20));
        c.on_fork(301, 5 * T, 302, 6 * T);
        c.on_exec(host(302, 6, 301, 5, "/bin/ps", 20));
        let tree = |pid, start| c.cgroup_init_tree(pid, start * T, 20);
        assert_eq!(tree(200, 2), Some(true), "the init");
        assert_eq!(tree(201, 3), Some(true), "the init's child");
        assert_eq!(tree(301, 5), Some(false), "the exec session");
        assert_eq!(tree(302, 6), Some(false), "a command in the session");
        assert_eq!(c.parent_cgroup(301, 5 * T), Some(10));
        assert_eq!(c.parent_cgroup(302, 6 * T), Some(20));
        assert_eq!(c.parent_cgroup(200, 2 * T), Some(10));
        assert_eq!(c.cgroup_init_tree(999, T, 20), None, "unknown process");
        // A helper in the cgroup but still in the host's mount namespace.
        c.on_exec(ExecInfo {
            mntns: 999,
            ..host(303, 7, 300, 4, "/usr/bin/nsenter", 20)
        });
        assert_eq!(c.cgroup_init_tree(303, 7 * T, 20), None);
        // A cgroup whose container has its own pid namespace is not hostPID.
        c.on_exec(ExecInfo {
            pidns_level: 1,
            vpid: 1,
            ..host(400, 8, 100, 1, "/app/other", 30)
        });
        c.on_exec(host(401, 9, 300, 4, "/usr/bin/nsenter", 30));
        assert_eq!(c.cgroup_init_tree(401, 9 * T, 30), None);
        assert_eq!(
            c.cgroup_init_tree(200, 2 * T, 77),
            None,
            "cgroup never seen"
        );
    }

    #[test]
    fn fork_exec_exit_and_ancestry() {
        let mut c = cache(100);
        c.on_exec(exec(1, 1, 0, 0, "/sbin/init"));
        c.on_exec(exec(10, 5, 1, 1, "/bin/bash"));
        c.on_fork(10, 5 * T, 11, 7 * T);
        let forked = c.to_model(11, 7 * T, 5).expect("forked child");
        assert_eq!(
            forked.executable.path, "/bin/bash",
            "inherits the image until exec"
        );
        assert_eq!(forked.exec_id, "n:7:11");
        assert_eq!(forked.parent_exec_id, "n:5:10");
        c.on_exec(exec(11, 7, 10, 5, "/usr/bin/ls"));
        let p = c
            .to_model(11, 7 * T + 123, 5)
            .expect("same process, sub-tick start");
        assert_eq!(
            p.executable,
            Executable {
                path: "/usr/bin/ls".into(),
                name: "ls".into(),
                ..Default::default()
            }
        );
        let anc: Vec<_> = p
            .ancestors
            .iter()
            .map(|a| (a.pid, a.exec_id.as_str(), a.executable.path.as_str()))
            .collect();
        assert_eq!(
            anc,
            vec![(10, "n:5:10", "/bin/bash"), (1, "n:1:1", "/sbin/init")]
        );
        assert_eq!(
            c.to_model(11, 7 * T, 1).expect("p").ancestors.len(),
            1,
            "bounded"
        );
        let now = Instant::now();
        c.on_exit_at(
            11,
            7 * T,
            ExitStatus {
                code: 2,
                signal: 0,
                core_dumped: false,
            },
            now,
        );
        assert_eq!(
            c.to_model(11, 7 * T, 0)
                .expect("in grace")
                .exit
                .expect("status")
                .code,
            2
        );
        c.gc(now + Duration::from_secs(29));
        assert!(c.get(11, 7 * T).is_some());
        c.gc(now + Duration::from_secs(30));
        assert!(c.get(11, 7 * T).is_none(), "gone after the grace period");
        assert!(c.get(10, 5 * T).is_some(), "live processes stay");
    }

    #[test]
    fn pid_reuse_is_a_different_process() {
        let mut c = cache(100);
        c.on_exec(exec(50, 10, 0, 0, "/bin/a"));
        c.on_exec(exec(50, 99, 0, 0, "/bin/b"));
        assert_eq!(
            c.to_model(50, 10 * T, 0).expect("a").executable.path,
            "/bin/a"
        );
        assert_eq!(
            c.to_model(50, 99 * T, 0).expect("b").executable.path,
            "/bin/b"
        );
        assert_eq!(
            c.get_by_exec_id("n:99:50").expect("by id").info.exe,
            "/bin/b"
        );
        assert!(c.get_by_exec_id("n:98:50").is_none());
    }

    #[test]
    fn eviction_prefers_exited_then_least_recently_used() {
        let mut c = cache(16);
        for pid in 1..=16 {
            c.on_exec(exec(pid, pid as u64, 0, 0, "/bin/x"));
        }
        let now = Instant::now();
        c.on_exit_at(5, 5 * T, ExitStatus::default(), now);
        c.to_model(1, T, 0); // 1 is now the most recently used
        c.on_exec(exec(17, 17, 0, 0, "/bin/y")); // full: evicts one (16/16)
        assert!(c.get(5, 5 * T).is_none(), "the exited process goes first");
        assert_eq!(c.len(), 16);
        c.on_exec(exec(18, 18, 0, 0, "/bin/z"));
        assert!(
            c.get(2, 2 * T).is_none(),
            "then the least recently used live one"
        );
        assert!(c.get(1, T).is_some());
    }

    #[test]
    fn container_init_tree_and_kubectl_exec() {
        let mut c = cache(100);
        c.on_exec(exec(100, 1, 0, 0, "/usr/bin/containerd-shim"));
        // Container init (vpid 1) and a child of it, in pid ns 555 (level 1).
        let mut init = exec(200, 2, 100, 1, "/app/server");
        (init.vpid, init.pidns, init.pidns_level) = (1, 555, 1);
        c.on_exec(init);
        let mut child = exec(201, 3, 200, 2, "/bin/sh");
        (child.vpid, child.pidns, child.pidns_level) = (7, 555, 1);
        c.on_exec(child);
        let m = c.to_model(201, 3 * T, 5).expect("child");
        assert_eq!((m.in_init_tree, m.parent_vpid), (Some(true), 1));
        // kubectl exec: runc (host ns) -> sh inside the container's pid ns.
        c.on_exec(exec(300, 4, 100, 1, "/usr/bin/runc"));
        let mut sh = exec(301, 5, 300, 4, "/bin/sh");
        (sh.vpid, sh.pidns, sh.pidns_level) = (9, 555, 1);
        c.on_exec(sh);
        let m = c.to_model(301, 5 * T, 5).expect("exec'd shell");
        assert_eq!((m.in_init_tree, m.parent_vpid), (Some(false), 0));
        assert_eq!(c.to_model(100, T, 5).expect("host").in_init_tree, None);
    }
}
