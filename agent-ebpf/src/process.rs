//! Process lifecycle: exec (with argv staged at syscall entry), fork, exit.

use agent_common::{
    EventHeader, EventKind,
    process::{
        ARGV_MAX, ARGV_MAX_ARGS, ArgvStage, Creds, ENV_VALUE_MAX, ExecEvent, ExitEvent,
        FILENAME_MAX, ForkEvent, Namespaces, PATH_BUF, StdioInfo, exec_flags,
    },
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_boot_ns, bpf_probe_read_user,
        generated::{bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user_str},
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};

use crate::{
    env,
    kernel::{current_task, off, offsets_ready, process_start, read, read_ptr},
    maps::{ARGV_SCRATCH, ARGV_STAGE, EVENTS, cgroup_allowed, count_lost},
    path,
};

/// Offsets of the arguments in the `syscalls:sys_enter_*` records: a fixed
/// ABI (8-byte common header, `__syscall_nr`, then one 8-byte slot per arg).
const SYSCALL_ARG0: usize = 16;

fn header(kind: EventKind, size: usize, task: *const u8) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    EventHeader {
        kind: kind as u16,
        version: 1,
        size: size as u32,
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        start_boottime_ns: process_start(task),
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    }
}

#[tracepoint(category = "syscalls", name = "sys_enter_execve")]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    stage_argv(&ctx, SYSCALL_ARG0 + 8, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_execveat")]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    stage_argv(&ctx, SYSCALL_ARG0 + 16, exec_flags::EXECVEAT);
    0
}

/// Copies up to `ARGV_MAX_ARGS` arguments / `ARGV_MAX` bytes of argv from
/// user memory into `ARGV_STAGE[tid]`.
#[inline(always)]
fn stage_argv(ctx: &TracePointContext, argv_at: usize, flags: u32) {
    if !cgroup_allowed(unsafe { bpf_get_current_cgroup_id() }) {
        return;
    }
    let Ok(argv) = (unsafe { ctx.read_at::<*const *const u8>(argv_at) }) else {
        return;
    };
    let Some(stage) = ARGV_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let stage = unsafe { &mut *stage };
    stage.argc = 0;
    stage.len = 0;
    stage.flags = flags;
    let mut len: usize = 0;
    let mut ended = false;
    for i in 0..ARGV_MAX_ARGS {
        let Ok(arg) = (unsafe { bpf_probe_read_user(argv.wrapping_add(i)) }) else {
            break;
        };
        if arg.is_null() {
            ended = true;
            break;
        }
        let at = len & (ARGV_MAX - 1);
        // SAFETY: buf is 2 * ARGV_MAX bytes; at < ARGV_MAX and the helper
        // writes at most ARGV_MAX bytes.
        let n = unsafe {
            bpf_probe_read_user_str(
                stage.buf.as_mut_ptr().wrapping_add(at) as *mut _,
                ARGV_MAX as u32,
                arg as *const _,
            )
        };
        if n <= 0 {
            break;
        }
        len = at + n as usize;
        stage.argc += 1;
        if len >= ARGV_MAX {
            stage.flags |= exec_flags::ARGV_TRUNCATED;
            len = ARGV_MAX;
            ended = true;
            break;
        }
    }
    if !ended {
        // Either more than ARGV_MAX_ARGS arguments or a faulting pointer.
        stage.flags |= exec_flags::ARGV_TRUNCATED;
    }
    stage.len = len as u32;
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = ARGV_STAGE.insert(&tid, stage, 0);
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let _ = try_exec(&ctx);
    0
}

fn try_exec(ctx: &TracePointContext) -> Option<()> {
    if !offsets_ready() {
        return None;
    }
    if !cgroup_allowed(unsafe { bpf_get_current_cgroup_id() }) {
        return None;
    }
    let task = current_task();
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_lost(EventKind::Exec);
        return None;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = header(EventKind::Exec, core::mem::size_of::<ExecEvent>(), task);
    let mut flags = 0u32;

    // Parent.
    let parent = read_ptr(task, off!(task_real_parent));
    ev.ppid = parent
        .and_then(|p| read::<u32>(p, off!(task_tgid)))
        .unwrap_or(0);
    ev.parent_start_boottime_ns = parent.map(process_start).unwrap_or(0);

    // Credentials.
    ev.creds = Creds::default();
    match read_ptr(task, off!(task_cred)) {
        Some(cred) => read_creds(cred, &mut ev.creds),
        None => flags |= exec_flags::CREDS_MISSING,
    }
    match read::<u32>(task, off!(task_loginuid)) {
        Some(l) => ev.creds.loginuid = l,
        None => {
            ev.creds.loginuid = u32::MAX;
            flags |= exec_flags::LOGINUID_MISSING;
        }
    }

    // Namespaces.
    ev.ns = Namespaces::default();
    if !read_namespaces(task, &mut ev.ns) {
        flags |= exec_flags::NS_MISSING;
    }

    // stdio.
    ev.stdio = StdioInfo::default();
    if !read_stdio(task, &mut ev.stdio) {
        flags |= exec_flags::STDIO_MISSING;
    }

    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);

    // Filename as passed to exec: __data_loc at offset 8 (low 16 bits =
    // offset of the string in the record, high 16 = length).
    ev.filename_len = 0;
    if let Ok(loc) = unsafe { ctx.read_at::<u32>(8) } {
        let src = (ctx_ptr(ctx) as usize).wrapping_add((loc & 0xffff) as usize);
        let n = unsafe {
            bpf_probe_read_kernel_str(
                ev.filename.as_mut_ptr() as *mut _,
                FILENAME_MAX as u32,
                src as *const _,
            )
        };
        if n > 0 {
            ev.filename_len = n as u32;
            if (loc >> 16) as usize > FILENAME_MAX {
                flags |= exec_flags::FILENAME_TRUNCATED;
            }
        }
    }

    // argv staged at syscall entry, keyed by the tid before exec (a
    // non-leader thread that execs takes over the leader's pid).
    let old_pid = unsafe { ctx.read_at::<i32>(16) }.unwrap_or(0) as u32;
    ev.argc = 0;
    ev.argv_len = 0;
    match unsafe { ARGV_STAGE.get(&old_pid) } {
        Some(stage) => {
            let len = (stage.len as usize).min(ARGV_MAX);
            unsafe {
                bpf_probe_read_kernel(
                    ev.argv.as_mut_ptr() as *mut _,
                    ARGV_MAX as u32,
                    stage.buf.as_ptr() as *const _,
                )
            };
            ev.argc = stage.argc;
            ev.argv_len = len as u32;
            flags |= stage.flags;
            let _ = ARGV_STAGE.remove(&old_pid);
        }
        None => flags |= exec_flags::ARGV_MISSING,
    }

    // Executable: current->mm->exe_file->f_path. Both walks run in the
    // global function `path::picket_walk_path` (verified once, see there) and
    // are copied from its per-CPU buffers.
    ev.exe_len = 0;
    let exe = read_ptr(task, off!(task_mm)).and_then(|mm| read_ptr(mm, off!(mm_exe_file)));
    let r = exe.map_or(-1, |f| {
        path::picket_walk_path(f.wrapping_add(off!(file_f_path) as usize) as u64, 0)
    });
    match copy_walk(r, 0, ev.exe.as_mut_ptr()) {
        Some((len, truncated)) => {
            ev.exe_len = len;
            if truncated {
                flags |= exec_flags::EXE_TRUNCATED;
            }
        }
        None => flags |= exec_flags::EXE_MISSING,
    }

    // Change time of the executable (drift: written after the container
    // started?), decided here from the file being executed, not later from
    // /proc/<pid>/exe, which by then may show a program it exec'd.
    ev.exe_ctime_sec = 0;
    ev.exe_ctime_nsec = 0;
    let inode = exe.and_then(|f| read_ptr(f, off!(file_f_inode)));
    match inode.and_then(|i| read::<i64>(i, off!(inode_ctime_sec))) {
        Some(sec) => {
            ev.exe_ctime_sec = sec;
            ev.exe_ctime_nsec = inode
                .and_then(|i| read::<u32>(i, off!(inode_ctime_nsec)))
                .unwrap_or(0);
        }
        None => flags |= exec_flags::EXE_CTIME_MISSING,
    }

    // LD_PRELOAD / LD_LIBRARY_PATH from the new stack (see `env`).
    ev.ld_preload_len = 0;
    ev.ld_library_path_len = 0;
    ev._pad2 = 0;
    let stack = read_ptr(task, off!(task_mm)).and_then(|mm| read::<u64>(mm, off!(mm_start_stack)));
    let r: i64 = match stack {
        Some(s) => env::picket_scan_env(s),
        None => -1,
    };
    if r < 0 {
        flags |= exec_flags::ENV_MISSING;
    } else if let Some(sc) = env::ENV_SCRATCH.get_ptr(0) {
        let f = (r >> 32) as u32;
        flags |= f;
        if f & exec_flags::LD_PRELOAD != 0 {
            ev.ld_preload_len = ((r & 0xffff) as u32).min(ENV_VALUE_MAX as u32 - 1);
            unsafe {
                bpf_probe_read_kernel(
                    ev.ld_preload.as_mut_ptr() as *mut _,
                    ENV_VALUE_MAX as u32,
                    (*sc).ld_preload.as_ptr() as *const _,
                )
            };
        }
        if f & exec_flags::LD_LIBRARY_PATH != 0 {
            ev.ld_library_path_len = (((r >> 16) & 0xffff) as u32).min(ENV_VALUE_MAX as u32 - 1);
            unsafe {
                bpf_probe_read_kernel(
                    ev.ld_library_path.as_mut_ptr() as *mut _,
                    ENV_VALUE_MAX as u32,
                    (*sc).ld_library_path.as_ptr() as *const _,
                )
            };
        }
    }

    // Working directory: current->fs->pwd.
    ev.cwd_len = 0;
    let pwd = read_ptr(task, off!(task_fs)).map(|fs| fs.wrapping_add(off!(fs_struct_pwd) as usize));
    let r = pwd.map_or(-1, |p| path::picket_walk_path(p as u64, 1));
    match copy_walk(r, 1, ev.cwd.as_mut_ptr()) {
        Some((len, truncated)) => {
            ev.cwd_len = len;
            if truncated {
                flags |= exec_flags::CWD_TRUNCATED;
            }
        }
        None => flags |= exec_flags::CWD_MISSING,
    }

    ev.flags = flags;
    ev._pad = 0;
    entry.submit(crate::maps::ring_submit_flags());
    Some(())
}

/// Copies a path walked by `picket_walk_path` (result `r`, buffer `slot`)
/// to `dst` (`PATH_BUF` bytes): `(len, truncated)`, or `None` when the walk
/// failed.
#[inline(always)]
fn copy_walk(r: i64, slot: u32, dst: *mut u8) -> Option<(u32, bool)> {
    if r < 0 {
        return None;
    }
    let src = path::scratch(slot)?;
    let rc = unsafe { bpf_probe_read_kernel(dst as *mut _, PATH_BUF as u32, src as *const _) };
    if rc != 0 {
        return None;
    }
    let len = (r & 0xffff_ffff) as u32;
    Some((len.min(PATH_BUF as u32), r & path::WALK_TRUNCATED != 0))
}

fn ctx_ptr(ctx: &TracePointContext) -> *const u8 {
    use aya_ebpf::EbpfContext;
    ctx.as_ptr() as *const u8
}

#[inline(always)]
fn read_creds(cred: *const u8, c: &mut Creds) {
    c.uid = read::<u32>(cred, off!(cred_uid)).unwrap_or(u32::MAX);
    c.gid = read::<u32>(cred, off!(cred_gid)).unwrap_or(u32::MAX);
    c.euid = read::<u32>(cred, off!(cred_euid)).unwrap_or(u32::MAX);
    c.egid = read::<u32>(cred, off!(cred_egid)).unwrap_or(u32::MAX);
    c.suid = read::<u32>(cred, off!(cred_suid)).unwrap_or(u32::MAX);
    c.sgid = read::<u32>(cred, off!(cred_sgid)).unwrap_or(u32::MAX);
    c.fsuid = read::<u32>(cred, off!(cred_fsuid)).unwrap_or(u32::MAX);
    c.fsgid = read::<u32>(cred, off!(cred_fsgid)).unwrap_or(u32::MAX);
    c.cap_effective = read::<u64>(cred, off!(cred_cap_effective)).unwrap_or(0);
    c.cap_permitted = read::<u64>(cred, off!(cred_cap_permitted)).unwrap_or(0);
    c.cap_inheritable = read::<u64>(cred, off!(cred_cap_inheritable)).unwrap_or(0);
}

/// pid namespace via `task->thread_pid->numbers[level]`, mount namespace via
/// `task->nsproxy->mnt_ns`.
#[inline(always)]
fn read_namespaces(task: *const u8, ns: &mut Namespaces) -> bool {
    let mut ok = true;
    let ns_inum = off!(ns_common_inum);
    match read_ptr(task, off!(task_thread_pid)) {
        Some(pid) => {
            let level = read::<u32>(pid, off!(pid_level)).unwrap_or(0);
            let upid = pid
                .wrapping_add(off!(pid_numbers) as usize)
                .wrapping_add(level as usize * off!(upid_size) as usize);
            ns.pidns_level = level;
            ns.ns_pid = read::<u32>(upid, off!(upid_nr)).unwrap_or(0);
            match read_ptr(upid, off!(upid_ns)) {
                Some(pidns) => {
                    ns.pidns_inum =
                        read::<u32>(pidns.wrapping_add(off!(pid_namespace_ns) as usize), ns_inum)
                            .unwrap_or(0)
                }
                None => ok = false,
            }
        }
        None => ok = false,
    }
    match read_ptr(task, off!(task_nsproxy)).and_then(|p| read_ptr(p, off!(nsproxy_mnt_ns))) {
        Some(mntns) => {
            ns.mntns_inum =
                read::<u32>(mntns.wrapping_add(off!(mnt_namespace_ns) as usize), ns_inum)
                    .unwrap_or(0)
        }
        None => ok = false,
    }
    ok
}

/// File types of fds 0-2 (`files->fdt->fd[i]->f_inode->i_mode`), and the
/// device number of fd 0 for TTY detection.
#[inline(always)]
fn read_stdio(task: *const u8, s: &mut StdioInfo) -> bool {
    let Some(fdt) =
        read_ptr(task, off!(task_files)).and_then(|f| read_ptr(f, off!(files_struct_fdt)))
    else {
        return false;
    };
    let Some(fds) = read_ptr(fdt, off!(fdtable_fd)) else {
        return false;
    };
    let max = read::<u32>(fdt, off!(fdtable_max_fds)).unwrap_or(0);
    let f_inode = off!(file_f_inode);
    let i_mode = off!(inode_i_mode);
    for i in 0..3usize {
        if (i as u32) >= max {
            break;
        }
        let Some(file) = read_ptr(fds.wrapping_add(i * 8), 0) else {
            continue; // closed fd: mode stays 0
        };
        let Some(inode) = read_ptr(file, f_inode) else {
            continue;
        };
        s.mode[i] = read::<u16>(inode, i_mode).unwrap_or(0);
        if i == 0 {
            s.rdev0 = read::<u32>(inode, off!(inode_i_rdev)).unwrap_or(0);
        }
    }
    true
}

/// `sched_process_fork` as a raw tracepoint: its TP_PROTO gives the child's
/// `task_struct`, which tells a new process from a new thread.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let _ = try_fork(&ctx);
    0
}

fn try_fork(ctx: &RawTracePointContext) -> Option<()> {
    if !offsets_ready() {
        return None;
    }
    let child: *const u8 = ctx.arg::<*const u8>(1);
    let child_pid = read::<u32>(child, off!(task_pid))?;
    let child_tgid = read::<u32>(child, off!(task_tgid))?;
    if child_pid != child_tgid {
        return None; // a new thread, not a new process
    }
    if !cgroup_allowed(unsafe { bpf_get_current_cgroup_id() }) {
        return None;
    }
    let task = current_task();
    let Some(mut entry) = EVENTS.reserve::<ForkEvent>(0) else {
        count_lost(EventKind::Fork);
        return None;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = header(EventKind::Fork, core::mem::size_of::<ForkEvent>(), task);
    ev.child_pid = child_tgid;
    ev.child_tid = child_pid;
    ev.child_start_boottime_ns = read::<u64>(child, off!(task_start_boottime)).unwrap_or(0);
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    entry.submit(crate::maps::ring_submit_flags());
    Some(())
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let _ = try_exit();
    0
}

fn try_exit() -> Option<()> {
    if !offsets_ready() {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let _ = ARGV_STAGE.remove(&tid);
    if !cgroup_allowed(unsafe { bpf_get_current_cgroup_id() }) {
        return None;
    }
    let task = current_task();
    // Only the last thread of the group reports the process exit:
    // `signal->live` has already been decremented when the tracepoint fires.
    match read_ptr(task, off!(task_signal)).and_then(|s| read::<i32>(s, off!(signal_live))) {
        Some(live) if live != 0 => return None,
        Some(_) => {}
        None if tid != (pid_tgid >> 32) as u32 => return None,
        None => {}
    }
    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        count_lost(EventKind::Exit);
        return None;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = header(EventKind::Exit, core::mem::size_of::<ExitEvent>(), task);
    ev.exit_code = read::<u32>(task, off!(task_exit_code)).unwrap_or(0);
    ev._pad = 0;
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    entry.submit(crate::maps::ring_submit_flags());
    Some(())
}

// Keep the unused-import lint quiet for ArgvStage (used via the maps' types).
const _: usize = core::mem::size_of::<ArgvStage>();
