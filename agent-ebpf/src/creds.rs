//! Capability checks (`capability:cap_capable`, de-duplicated per process,
//! capability and result) and credential changes (set*id, capset) with the
//! credentials before (entry) and after (exit).
//!
//! The `capability:cap_capable` tracepoint exists only on the newest kernels
//! (6.14+); on older ones (5.10, 6.1, 6.12: most production nodes) the same
//! events come from a kprobe/kretprobe pair on `cap_capable`, which the agent
//! attaches only when the tracepoint is absent (`loader::Attach::KProbe`).

use agent_common::{
    EventKind,
    security::{CapEvent, CredEvent, cred_op},
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_get_current_pid_tgid,
    macros::{kprobe, kretprobe, map, tracepoint},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};

use crate::{
    kernel::{current_task, off, offsets_ready, process_start, read, read_ptr},
    sys::{
        arg, enabled, header, read_creds, reserve, ret, stash_begin, stash_commit, stash_done,
        stash_get, submit, syscall_pair, user_bytes,
    },
};

/// Key of the capability de-duplication map.
#[repr(C)]
pub struct CapSeen {
    pub pid: u32,
    /// Capability number; bit 31 set when the check failed.
    pub cap: u32,
    pub start_ns: u64,
}

/// (process, capability, result) already reported. LRU: a long-running
/// process may be reported again after eviction, which is harmless.
#[map]
static CAP_SEEN: LruHashMap<CapSeen, u8> = LruHashMap::with_max_entries(16384, 0);

/// `cap_capable(cred, target_ns, capable_ns, cap, ret)`: fixed record layout
/// checked against this kernel's format file (offsets 16, 32, 36).
#[tracepoint]
pub fn cap_capable(ctx: TracePointContext) -> u32 {
    let _ = try_cap(&ctx);
    0
}

fn try_cap(ctx: &TracePointContext) -> Option<()> {
    if !offsets_ready() || !enabled(EventKind::Capability) {
        return None;
    }
    let cred = unsafe { ctx.read_at::<u64>(8) }.ok()? as *const u8;
    if !own_creds(cred) {
        return None;
    }
    let target_ns = unsafe { ctx.read_at::<u64>(16) }.ok()? as *const u8;
    let cap = unsafe { ctx.read_at::<i32>(32) }.ok()?;
    let rc = unsafe { ctx.read_at::<i32>(36) }.ok()?;
    // Before the de-duplication below: a filtered check must not hide a
    // later, audited use of the same capability.
    if cap == CAP_SYS_ADMIN && from_noaudit_caller(ctx) {
        return None;
    }
    let level = read::<u32>(target_ns, off!(user_namespace_level)).unwrap_or(u32::MAX);
    emit_cap(cap, rc, level)
}

/// The check is made with the task's own credentials, not with credentials
/// a kernel subsystem put in place for the task (`override_creds`).
///
/// Why: overlayfs looks files up with the credentials of whoever mounted it
/// and reads its `trusted.*` xattrs with them, which checks CAP_SYS_ADMIN
/// (`xattr_permission` → `capable`). In a container on an overlay root (every
/// containerd, CRI-O and Docker container) each path lookup then looked like
/// the container using CAP_SYS_ADMIN against the host: seen on Debian's 6.1
/// in the kernel matrix (38 such checks in one short shell script). The
/// capability belongs to the mounter, not to the process. `access(2)` and
/// nfsd use overridden credentials the same way. When the offset is unknown,
/// every check counts (the old behaviour).
#[inline(always)]
fn own_creds(cred: *const u8) -> bool {
    match read_ptr(current_task(), off!(task_real_cred)) {
        Some(real) => real == cred,
        None => true,
    }
}

/// Reports one capability check, once per (process, capability, result).
#[inline(always)]
fn emit_cap(cap: i32, rc: i32, user_ns_level: u32) -> Option<()> {
    let key = CapSeen {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        cap: (cap as u32 & 0x7fff_ffff) | if rc != 0 { 1 << 31 } else { 0 },
        start_ns: process_start(current_task()),
    };
    // NOEXIST: only the first check of this (process, cap, result) inserts.
    CAP_SEEN.insert(&key, &1, BPF_NOEXIST as u64).ok()?;
    let kind = EventKind::Capability;
    let mut entry = reserve::<CapEvent>(kind)?;
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = header(kind, core::mem::size_of::<CapEvent>());
    ev.cap = cap as u32;
    ev.ret = rc;
    ev.user_ns_level = user_ns_level;
    ev._pad = 0;
    submit(entry, kind);
    Some(())
}

/// A check seen at `cap_capable`'s entry, waiting for its result.
#[repr(C)]
pub struct CapPending {
    pub cap: i32,
    pub user_ns_level: u32,
}

/// Checks between the kprobe and the kretprobe, by thread (`pid_tgid`). LRU:
/// an entry whose return was missed (kretprobe instances exhausted) ages out.
#[map]
static CAP_PENDING: LruHashMap<u64, CapPending> = LruHashMap::with_max_entries(4096, 0);

/// `CAP_OPT_NOAUDIT` (include/linux/security.h, 5.1+): the caller only asks,
/// it does not use the capability (memory accounting, `ns_capable_noaudit`).
/// The kprobe reads it from `opts`, where the tracepoint path has to search
/// the stack for the caller (`from_noaudit_caller`).
const CAP_OPT_NOAUDIT: u32 = 1 << 1;

/// `int cap_capable(const struct cred *cred, struct user_namespace *targ_ns,
/// int cap, unsigned int opts)` (5.1 and later), entry.
#[kprobe]
pub fn cap_capable_entry(ctx: ProbeContext) -> u32 {
    let _ = try_cap_entry(&ctx);
    0
}

fn try_cap_entry(ctx: &ProbeContext) -> Option<()> {
    if !offsets_ready() || !enabled(EventKind::Capability) {
        return None;
    }
    let cred: *const u8 = ctx.arg(0)?;
    if !own_creds(cred) {
        return None;
    }
    let target_ns: *const u8 = ctx.arg(1)?;
    let cap: i32 = ctx.arg(2)?;
    let opts: u32 = ctx.arg(3)?;
    if opts & CAP_OPT_NOAUDIT != 0 {
        return None;
    }
    let pending = CapPending {
        cap,
        user_ns_level: read::<u32>(target_ns, off!(user_namespace_level)).unwrap_or(u32::MAX),
    };
    CAP_PENDING
        .insert(&bpf_get_current_pid_tgid(), &pending, 0)
        .ok()
}

/// `cap_capable`'s return: the result completes the check seen at entry.
#[kretprobe]
pub fn cap_capable_exit(ctx: RetProbeContext) -> u32 {
    let _ = try_cap_exit(&ctx);
    0
}

fn try_cap_exit(ctx: &RetProbeContext) -> Option<()> {
    let tid = bpf_get_current_pid_tgid();
    let (cap, level) = {
        let p = unsafe { CAP_PENDING.get(&tid) }?;
        (p.cap, p.user_ns_level)
    };
    let _ = CAP_PENDING.remove(&tid);
    let rc: i64 = ctx.ret();
    emit_cap(cap, rc as i32, level)
}

const CAP_SYS_ADMIN: i32 = 21;

/// Frames of the kernel stack searched for a non-auditing caller: the
/// tracepoint fires inside `cap_capable`, whose caller is the first or second
/// frame (the LSM hook is called through a static call).
const NOAUDIT_FRAMES: usize = 6;

/// The check was made by one of the `NOAUDIT_RANGES` functions: memory
/// accounting (`cap_vm_enough_memory`), not a use of the capability.
#[inline(always)]
fn from_noaudit_caller(ctx: &TracePointContext) -> bool {
    use aya_ebpf::EbpfContext;
    let ranges = unsafe { core::ptr::read_volatile(&raw const crate::maps::NOAUDIT_RANGES) };
    if ranges[0] == 0 && ranges[2] == 0 {
        return false;
    }
    let mut stack = [0u64; NOAUDIT_FRAMES];
    let n = unsafe {
        aya_ebpf::helpers::generated::bpf_get_stack(
            ctx.as_ptr(),
            stack.as_mut_ptr() as *mut _,
            (NOAUDIT_FRAMES * 8) as u32,
            0,
        )
    };
    if n <= 0 {
        return false;
    }
    let frames = n as usize / 8;
    for (i, a) in stack.iter().enumerate() {
        if i >= frames {
            break;
        }
        if (*a >= ranges[0] && *a < ranges[1]) || (*a >= ranges[2] && *a < ranges[3]) {
            return true;
        }
    }
    false
}

/// Entry: arguments and the credentials before the call.
#[inline(always)]
fn cred_enter(op: u32, a0: u64, a1: u64, a2: u64) -> Option<()> {
    if !offsets_ready() || !enabled(EventKind::PrivilegeChange) {
        return None;
    }
    let s = stash_begin(op, EventKind::PrivilegeChange)?;
    s.args[0] = a0;
    s.args[1] = a1;
    s.args[2] = a2;
    s.aux = if read_creds(&mut s.creds) { 0 } else { 1 };
    stash_commit(s);
    Some(())
}

/// capset(header, data): the requested sets (two 32-bit halves each).
#[inline(always)]
fn capset_enter(ctx: &TracePointContext) -> Option<()> {
    // struct __user_cap_data_struct { u32 effective, permitted, inheritable; }[2]
    let mut d = [0u32; 6];
    if !user_bytes(d.as_mut_ptr() as *mut u8, 24, arg(ctx, 1)) {
        d = [0; 6];
    }
    let join = |lo: u32, hi: u32| (lo as u64) | ((hi as u64) << 32);
    cred_enter(
        cred_op::CAPSET,
        join(d[0], d[3]),
        join(d[1], d[4]),
        join(d[2], d[5]),
    )
}

#[inline(always)]
fn cred_exit(ctx: &TracePointContext, op: u32) -> Option<()> {
    let kind = EventKind::PrivilegeChange;
    let s = stash_get(op, kind)?;
    let Some(mut entry) = reserve::<CredEvent>(kind) else {
        stash_done();
        return None;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = header(kind, core::mem::size_of::<CredEvent>());
    ev.result = ret(ctx);
    ev.op = op;
    ev.flags = s.aux;
    // ids are 32-bit: sign-extend so -1 ("unchanged") reads as -1.
    if op == cred_op::CAPSET {
        ev.args = [s.args[0] as i64, s.args[1] as i64, s.args[2] as i64];
    } else {
        ev.args = [
            s.args[0] as i32 as i64,
            s.args[1] as i32 as i64,
            s.args[2] as i32 as i64,
        ];
    }
    ev.old = s.creds;
    if !read_creds(&mut ev.new) {
        ev.flags |= 1;
    }
    stash_done();
    submit(entry, kind);
    Some(())
}

syscall_pair!(
    sys_enter_setuid,
    sys_exit_setuid,
    |ctx| cred_enter(cred_op::SETUID, arg(ctx, 0), 0, 0),
    |ctx| cred_exit(ctx, cred_op::SETUID)
);
syscall_pair!(
    sys_enter_setgid,
    sys_exit_setgid,
    |ctx| cred_enter(cred_op::SETGID, arg(ctx, 0), 0, 0),
    |ctx| cred_exit(ctx, cred_op::SETGID)
);
syscall_pair!(
    sys_enter_setreuid,
    sys_exit_setreuid,
    |ctx| cred_enter(cred_op::SETREUID, arg(ctx, 0), arg(ctx, 1), 0),
    |ctx| cred_exit(ctx, cred_op::SETREUID)
);
syscall_pair!(
    sys_enter_setregid,
    sys_exit_setregid,
    |ctx| cred_enter(cred_op::SETREGID, arg(ctx, 0), arg(ctx, 1), 0),
    |ctx| cred_exit(ctx, cred_op::SETREGID)
);
syscall_pair!(
    sys_enter_setresuid,
    sys_exit_setresuid,
    |ctx| cred_enter(cred_op::SETRESUID, arg(ctx, 0), arg(ctx, 1), arg(ctx, 2)),
    |ctx| cred_exit(ctx, cred_op::SETRESUID)
);
syscall_pair!(
    sys_enter_setresgid,
    sys_exit_setresgid,
    |ctx| cred_enter(cred_op::SETRESGID, arg(ctx, 0), arg(ctx, 1), arg(ctx, 2)),
    |ctx| cred_exit(ctx, cred_op::SETRESGID)
);
syscall_pair!(
    sys_enter_setfsuid,
    sys_exit_setfsuid,
    |ctx| cred_enter(cred_op::SETFSUID, arg(ctx, 0), 0, 0),
    |ctx| cred_exit(ctx, cred_op::SETFSUID)
);
syscall_pair!(
    sys_enter_setfsgid,
    sys_exit_setfsgid,
    |ctx| cred_enter(cred_op::SETFSGID, arg(ctx, 0), 0, 0),
    |ctx| cred_exit(ctx, cred_op::SETFSGID)
);
syscall_pair!(
    sys_enter_capset,
    sys_exit_capset,
    |ctx| capset_enter(ctx),
    |ctx| cred_exit(ctx, cred_op::CAPSET)
);
