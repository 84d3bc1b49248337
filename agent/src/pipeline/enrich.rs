//! Building enriched events.

use agent_common::process::{ExecEvent, ExitEvent, ForkEvent, exec_flags};

use crate::{
    container::{self, CgroupResolver},
    model::{self, ChildProcess, Event, EventKindName, ExitStatus, Host, Thread},
    process::{self, ExecInfo, ProcessCache, sockets, start_ticks, users::UserNames},
    sensor::{
        RawEvent,
        decode::{cstr, path_from_components, split_args},
        lost::Loss,
    },
};

use super::{BootClock, argpaths};

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Node name used in exec ids and `host.name`.
    pub node_name: String,
    /// Ancestors listed in `process.ancestors`.
    pub max_ancestors: usize,
    /// procfs of the host pid namespace (executables of exec events are
    /// looked at through `<proc_root>/<pid>/exe`).
    pub proc_root: std::path::PathBuf,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            node_name: hostname(),
            max_ancestors: 5,
            proc_root: std::path::PathBuf::from("/proc"),
        }
    }
}

/// The host name (`uname -n`), from the agent's one reader.
pub use crate::node::hostname;

/// Turns kernel records into enriched events, keeping the process cache.
pub struct Pipeline {
    pub cfg: PipelineConfig,
    pub cache: ProcessCache,
    pub cgroups: Option<CgroupResolver>,
    clock: BootClock,
    /// `process.user.name`: passwd tables per mount namespace.
    users: UserNames,
    /// What each cgroup's path says about its container and pod.
    cgroup_memo: CgroupMemo,
}

/// A cgroup path parsed once ([`container::parse_cgroup_path`]), not once
/// per event: every event of a container carries the same path.
struct ParsedCgroup {
    path: String,
    container: Option<model::Container>,
    pod_uid: Option<String>,
}

/// [`ParsedCgroup`]s by cgroup id. An entry is used only while the resolver
/// still gives the same path for the id (a renamed or re-resolved cgroup is
/// parsed again), so the memo never changes what an event says. Bounded:
/// cleared when full and relearned (one parse per live cgroup).
#[derive(Default)]
struct CgroupMemo {
    // foldhash, not SipHash: cgroup ids are inode numbers the kernel
    // assigns, looked up once per event.
    by_id: foldhash::HashMap<u64, ParsedCgroup>,
}

/// Cgroups remembered at most.
const CGROUP_MEMO_MAX: usize = 4096;

impl CgroupMemo {
    fn get(&mut self, id: u64, path: &str) -> &ParsedCgroup {
        let fresh = self.by_id.get(&id).is_some_and(|c| c.path == path);
        if !fresh {
            if self.by_id.len() >= CGROUP_MEMO_MAX {
                self.by_id.clear();
            }
            let parsed = container::parse_cgroup_path(path);
            let c = ParsedCgroup {
                path: path.to_owned(),
                container: parsed.as_ref().and_then(|c| c.container_model()),
                pod_uid: parsed.as_ref().and_then(|c| c.pod_uid()).map(str::to_owned),
            };
            self.by_id.insert(id, c);
        }
        &self.by_id[&id]
    }
}

impl Pipeline {
    pub fn new(cfg: PipelineConfig, cache: ProcessCache, cgroups: Option<CgroupResolver>) -> Self {
        Self {
            users: UserNames::new(&cfg.proc_root),
            cfg,
            cache,
            cgroups,
            clock: BootClock,
            cgroup_memo: CgroupMemo::default(),
        }
    }

    /// Handles one record: updates the cache and returns the event.
    pub fn handle(&mut self, raw: &RawEvent) -> Event {
        match raw {
            RawEvent::Exec(e) => self.exec(e),
            RawEvent::Fork(e) => self.fork(e),
            RawEvent::Exit(e) => self.exit(e),
            other => self.sensor_event(other),
        }
    }

    /// Syscall-sensor records (network, files, credentials, namespaces,
    /// mounts): the acting process from the cache plus the kind's section.
    fn sensor_event(&mut self, raw: &RawEvent) -> Event {
        let h = raw.header();
        let kind = super::sensors::kind_name(h.kind);
        let mut ev = self.base(kind, h);
        self.attribute(&mut ev, h.pid, h.start_boottime_ns, h.cgroup_id);
        super::sensors::fill(&mut ev, raw);
        // A socket duplicated onto stdio: which kind (the python/perl
        // reverse-shell one-liners dup2 a TCP socket; Node.js children a
        // socketpair). The target fd is read: it holds the socket even if
        // the source was closed since.
        if let Some(fd) = ev.fd.as_mut()
            && fd.old_type == model::FdType::Socket
            && (0..=2).contains(&fd.new)
        {
            fd.socket = sockets::lookup(&self.cfg.proc_root, ev.process.pid, fd.new);
        }
        ev
    }

    /// A `rate_summary` event: records of one kind that the kernel counted
    /// instead of sending for a cgroup (attributed to its container, not to
    /// a process).
    pub fn summary(&mut self, s: &crate::sensor::filters::RateReport) -> Event {
        let mut ev = Event::new(EventKindName::RateSummary, jiff::Timestamp::now());
        ev.event.ktime_ns = self.clock.boot_ns();
        ev.host = Host {
            name: self.cfg.node_name.clone(),
        };
        self.attribute(&mut ev, 0, 0, s.cgroup_id);
        ev.summary = Some(model::RateSummary {
            kind: s.kind.clone(),
            count: s.count,
            window_ms: s.window_ms,
        });
        ev
    }

    /// An `events_lost` record.
    pub fn lost(&self, loss: &Loss) -> Event {
        let mut ev = Event::new(EventKindName::EventsLost, jiff::Timestamp::now());
        ev.event.ktime_ns = self.clock.boot_ns();
        ev.host = Host {
            name: self.cfg.node_name.clone(),
        };
        ev.lost = Some(model::EventsLost {
            kind: loss.kind.clone(),
            count: loss.count,
            reason: loss.reason.to_string(),
        });
        ev
    }

    fn base(&self, kind: EventKindName, h: &agent_common::EventHeader) -> Event {
        let mut ev = Event::new(kind, self.clock.wall(h.ktime_ns));
        ev.event.ktime_ns = h.ktime_ns;
        ev.host = Host {
            name: self.cfg.node_name.clone(),
        };
        if h.tid != h.pid {
            ev.thread = Some(Thread { id: h.tid });
        }
        ev
    }

    /// Fills `process`, `container` and `k8s` for the process `(pid, start)`.
    fn attribute(&mut self, ev: &mut Event, pid: u32, start_ns: u64, cgroup_id: u64) {
        if let Some(p) = self.cache.to_model(pid, start_ns, self.cfg.max_ancestors) {
            ev.process = p;
        } else {
            ev.process.pid = pid;
        }
        ev.process.linux.cgroup_id = cgroup_id;
        if let Some(path) = self.cgroups.as_mut().and_then(|r| r.resolve(cgroup_id)) {
            let c = self.cgroup_memo.get(cgroup_id, path);
            if let Some(container) = &c.container {
                ev.container = Some(container.clone());
            }
            if let Some(uid) = &c.pod_uid {
                ev.k8s = Some(model::K8s {
                    pod: model::Pod {
                        uid: uid.clone(),
                        ..Default::default()
                    },
                    metadata: model::MetadataStatus::Unresolved,
                    ..Default::default()
                });
            }
            ev.process.linux.cgroup = c.path.clone();
        }
        let cache = &self.cache;
        self.users
            .fill_with(&mut ev.process, ev.container.is_some(), |ns| {
                cache.live_in_mnt_ns(ns, 4)
            });
        if ev.container.is_some() {
            // hostPID pods: the pid namespace says nothing about who entered
            // the container; the process tree and cgroups do.
            if ev.process.in_init_tree.is_none() && ev.process.linux.pid_ns_level == 0 {
                ev.process.in_init_tree = self.cache.cgroup_init_tree(pid, start_ns, cgroup_id);
            }
            ev.process.parent_outside_cgroup = self
                .cache
                .parent_cgroup(pid, start_ns)
                .map(|parent| parent != cgroup_id);
        }
    }

    fn exec(&mut self, e: &ExecEvent) -> Event {
        let h = &e.header;
        let (args, args_truncated) = exec_args(&self.cfg.proc_root, e);
        let (exe, exe_truncated) = exec_exe(&self.cfg.proc_root, e);
        let info = ExecInfo {
            pid: h.pid,
            start_ns: h.start_boottime_ns,
            ppid: e.ppid,
            parent_start_ns: e.parent_start_boottime_ns,
            vpid: e.ns.ns_pid,
            exe,
            exe_truncated,
            args,
            args_truncated,
            cwd: if e.flags & exec_flags::CWD_MISSING != 0 {
                String::new()
            } else {
                path_from_components(&e.cwd, e.cwd_len)
            },
            uid: e.creds.uid,
            euid: e.creds.euid,
            suid: e.creds.suid,
            gid: e.creds.gid,
            egid: e.creds.egid,
            sgid: e.creds.sgid,
            loginuid: e.creds.loginuid,
            cap_effective: e.creds.cap_effective,
            cap_permitted: e.creds.cap_permitted,
            pidns: e.ns.pidns_inum,
            pidns_level: e.ns.pidns_level,
            mntns: e.ns.mntns_inum,
            cgroup_id: h.cgroup_id,
            stdio_modes: e.stdio.mode,
            stdin_rdev: e.stdio.rdev0,
        };
        let pidns = (e.ns.pidns_level > 0).then_some(e.ns.pidns_inum);
        self.cache.on_exec(info);
        let mut ev = self.base(EventKindName::Exec, h);
        self.attribute(&mut ev, h.pid, h.start_boottime_ns, h.cgroup_id);
        self.stdio_sockets(&mut ev);
        ev.process.env = Some(exec_env(&self.cfg.proc_root, e));
        {
            let p = &mut ev.process;
            p.script_path = argpaths::script_path(&p.command_args, &p.working_directory);
            let tool = crate::rules::fields::busybox_applet(p)
                .map(str::to_string)
                .unwrap_or_else(|| match p.executable.name.as_str() {
                    n @ ("curl" | "wget") => n.to_string(),
                    _ => crate::rules::fields::argv0_name(p).to_string(),
                });
            p.download_outputs =
                argpaths::download_outputs(&tool, &p.command_args, &p.working_directory);
        }
        if let Some(ns) = pidns
            && ev.container.is_some()
        {
            ev.process.executable.written_after_container_start =
                self.cache.container_start(ns).and_then(|start| {
                    if e.flags & exec_flags::EXE_CTIME_MISSING == 0 {
                        // Decided from the file the kernel executed.
                        Some(ctime_ns(e) > start.as_nanosecond())
                    } else {
                        written_after(&self.cfg.proc_root, h.pid, start)
                    }
                });
        }
        ev
    }

    /// Socket family (and inet peer) of a socket on stdin/stdout: a reverse
    /// shell's stdio is a network socket, a Node.js child's a socketpair.
    fn stdio_sockets(&self, ev: &mut Event) {
        let pid = ev.process.pid;
        let stdio = &mut ev.process.stdio;
        if stdio.stdin == model::FdType::Socket {
            stdio.stdin_socket = sockets::lookup(&self.cfg.proc_root, pid, 0);
        }
        if stdio.stdout == model::FdType::Socket {
            stdio.stdout_socket = sockets::lookup(&self.cfg.proc_root, pid, 1);
        }
    }

    fn fork(&mut self, e: &ForkEvent) -> Event {
        let h = &e.header;
        self.cache.on_fork(
            h.pid,
            h.start_boottime_ns,
            e.child_pid,
            e.child_start_boottime_ns,
        );
        let mut ev = self.base(EventKindName::Fork, h);
        self.attribute(&mut ev, h.pid, h.start_boottime_ns, h.cgroup_id);
        ev.child = Some(ChildProcess {
            pid: e.child_pid,
            exec_id: self.cache.exec_id(e.child_pid, e.child_start_boottime_ns),
        });
        ev
    }

    fn exit(&mut self, e: &ExitEvent) -> Event {
        let h = &e.header;
        let status = decode_wait_status(e.exit_code);
        let mut ev = self.base(EventKindName::Exit, h);
        self.attribute(&mut ev, h.pid, h.start_boottime_ns, h.cgroup_id);
        ev.process.exit = Some(status);
        self.cache.on_exit(h.pid, h.start_boottime_ns, status);
        ev
    }
}

/// Whether the file `/proc/<pid>/exe` points to (the process's own
/// executable, even if deleted or in another mount namespace) was last
/// written or created (max of mtime and ctime) after `start`. `None` when the
/// process is gone.
pub fn written_after(
    proc_root: &std::path::Path,
    pid: u32,
    start: jiff::Timestamp,
) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(proc_root.join(pid.to_string()).join("exe")).ok()?;
    let changed_ns = (i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()))
        .max(i128::from(md.ctime()) * 1_000_000_000 + i128::from(md.ctime_nsec()));
    Some(changed_ns > start.as_nanosecond())
}

/// Splits a kernel wait status (`task->exit_code`) into code and signal.
pub fn decode_wait_status(raw: u32) -> ExitStatus {
    let signal = (raw & 0x7f) as i32;
    ExitStatus {
        code: if signal == 0 {
            ((raw >> 8) & 0xff) as i32
        } else {
            0
        },
        signal,
        core_dumped: raw & 0x80 != 0,
    }
}

/// The executable's path: from the kernel's dentry walk, or the path given
/// to execve when the walk found nothing. An executable is never `/`: an
/// empty walk means a pseudo file that is its own root, such as the sealed
/// memfd copy runc 1.1 re-executes as `runc init` (execve of
/// `/proc/self/exe`); the execve path names it better than `/`.
/// argv of an exec record, completed from `/proc/<pid>/cmdline` when the
/// kernel's copy was cut (`ARGV_TRUNCATED`); the flag is whether it stays
/// incomplete.
fn exec_args(proc_root: &std::path::Path, e: &ExecEvent) -> (Vec<String>, bool) {
    let args = split_args(&e.argv, e.argv_len);
    if e.flags & exec_flags::ARGV_TRUNCATED == 0 {
        return (args, false);
    }
    let h = &e.header;
    match process::complete_args(proc_root, h.pid, start_ticks(h.start_boottime_ns), &args) {
        Some(full) => (full, false),
        None => (args, true),
    }
}

/// The executable's path, completed from `/proc/<pid>/exe` when the
/// kernel's walk stopped below the root (`EXE_TRUNCATED`); the flag is
/// whether it stays incomplete.
fn exec_exe(proc_root: &std::path::Path, e: &ExecEvent) -> (String, bool) {
    let tail = exe_path(e);
    if e.flags & (exec_flags::EXE_TRUNCATED | exec_flags::EXE_MISSING) != exec_flags::EXE_TRUNCATED
    {
        return (tail, false);
    }
    let h = &e.header;
    match process::complete_exe(proc_root, h.pid, start_ticks(h.start_boottime_ns), &tail) {
        Some(full) => (full, false),
        None => (tail, true),
    }
}

/// `LD_PRELOAD` / `LD_LIBRARY_PATH` of an exec record; when the kernel's
/// bounded scan did not see the whole environment, the variables it did not
/// find are looked up in `/proc/<pid>/environ`.
fn exec_env(proc_root: &std::path::Path, e: &ExecEvent) -> model::ProcessEnv {
    let value = |set: u32, buf: &[u8], len: u32| {
        (e.flags & set != 0).then(|| {
            let len = (len as usize).min(buf.len());
            String::from_utf8_lossy(&buf[..len]).into_owned()
        })
    };
    let mut env = model::ProcessEnv {
        ld_preload: value(exec_flags::LD_PRELOAD, &e.ld_preload, e.ld_preload_len),
        ld_library_path: value(
            exec_flags::LD_LIBRARY_PATH,
            &e.ld_library_path,
            e.ld_library_path_len,
        ),
        truncated: false,
    };
    let incomplete =
        exec_flags::ENV_TRUNCATED | exec_flags::ENV_VALUE_TRUNCATED | exec_flags::ENV_MISSING;
    if e.flags & incomplete == 0 {
        return env;
    }
    let h = &e.header;
    let ticks = start_ticks(h.start_boottime_ns);
    let mut truncated = false;
    for (name, slot) in [
        ("LD_PRELOAD", &mut env.ld_preload),
        ("LD_LIBRARY_PATH", &mut env.ld_library_path),
    ] {
        match process::environ_var(proc_root, h.pid, ticks, name) {
            Some(v) => *slot = v,
            None => truncated = true,
        }
    }
    env.truncated = truncated;
    env
}

/// The executable's inode change time (wall clock), ns.
fn ctime_ns(e: &ExecEvent) -> i128 {
    i128::from(e.exe_ctime_sec) * 1_000_000_000 + i128::from(e.exe_ctime_nsec)
}

fn exe_path(e: &ExecEvent) -> String {
    if e.flags & exec_flags::EXE_MISSING != 0 {
        return cstr(&e.filename);
    }
    let walked = path_from_components(&e.exe, e.exe_len);
    if walked == "/" {
        let given = cstr(&e.filename);
        if !given.is_empty() {
            return given;
        }
    }
    walked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status() {
        assert_eq!(
            decode_wait_status(3 << 8),
            ExitStatus {
                code: 3,
                signal: 0,
                core_dumped: false
            }
        );
        assert_eq!(
            decode_wait_status(9),
            ExitStatus {
                code: 0,
                signal: 9,
                core_dumped: false
            }
        );
        assert_eq!(
            decode_wait_status(0x80 | 11),
            ExitStatus {
                code: 0,
                signal: 11,
                core_dumped: true
            }
        );
        assert_eq!(
            decode_wait_status(0),
            ExitStatus {
                code: 0,
                signal: 0,
                core_dumped: false
            }
        );
    }
}
