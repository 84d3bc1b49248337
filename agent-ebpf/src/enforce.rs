//! Containment in the kernel.
//!
//! - `contain_exec` (`sched:sched_process_exec`): compiled kill rules (see
//!   `agent_common::enforce`). A match sends SIGKILL to the new program
//!   before it runs its first instruction (the signal is delivered on the
//!   return to user space) and writes an `EnforceEvent` to `ENFORCE_EVENTS`.
//! - `contain_connect4/6`, `contain_sendmsg4/6` (`cgroup_sock_addr`): egress
//!   policies. They are attached only to contained cgroups (at action time),
//!   so uncontained traffic never runs them. Returning 0 makes the syscall
//!   fail with EPERM.

use agent_common::{
    EventHeader,
    enforce::{
        ARGV_KEY_LEN, CgroupEntry, ENFORCE_RECORD_KIND, EXE_KEY_LEN, Egress4, Egress6,
        EgressPolicy, EnforceEvent, KillConfig, MAX_CGROUP_LEVELS, MAX_KILL_RULES, cgroup_flags,
        egress_flags, egress_mode, egress_stat, enforce_action, enforce_flags,
    },
    process::PATH_BUF,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_boot_ns,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_probe_read_kernel, bpf_probe_read_user,
            bpf_send_signal,
        },
    },
    macros::{cgroup_sock_addr, map, tracepoint},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{SockAddrContext, TracePointContext},
};

use crate::{
    kernel::{bound, current_task, off, offsets_ready, process_start, read, read_ptr},
    path,
};

/// Deny at exec through the BPF LSM, where it is active.
mod lsm;

const SIGKILL: u32 = 9;
const PATH_MASK: usize = PATH_BUF - 1;

/// Global masks and switches of the kill rules (one entry).
#[map]
static KILL_CONFIG: Array<KillConfig> = Array::with_max_entries(1, 0);

/// Exact executable key -> rules.
#[map]
static KILL_EXE: HashMap<[u8; EXE_KEY_LEN], u64> = HashMap::with_max_entries(256, 0);

/// Directory prefix of the executable key -> rules (of that prefix and of
/// every shorter one).
#[map]
static KILL_EXE_PREFIX: LpmTrie<[u8; EXE_KEY_LEN], u64> = LpmTrie::with_max_entries(256, 0);

/// argv prefix (NUL-joined) -> rules (of that prefix and every shorter one).
#[map]
static KILL_ARGV: LpmTrie<[u8; ARGV_KEY_LEN], u64> = LpmTrie::with_max_entries(256, 0);

/// Per-cgroup facts: rules scoped to the subtree, container roots,
/// protected subtrees.
#[map]
static ENFORCE_CGROUPS: HashMap<u64, CgroupEntry> = HashMap::with_max_entries(4096, 0);

/// Kill records (separate from `EVENTS`: the audit trail of actions must not
/// be crowded out by telemetry).
#[map]
static ENFORCE_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Egress policy per contained cgroup (applies to its subtree).
#[map]
static EGRESS_POLICY: HashMap<u64, EgressPolicy> = HashMap::with_max_entries(1024, 0);

/// Listed IPv4 / IPv6 destinations per contained cgroup.
#[map]
static EGRESS_DEST4: LpmTrie<Egress4, u8> = LpmTrie::with_max_entries(4096, 0);
#[map]
static EGRESS_DEST6: LpmTrie<Egress6, u8> = LpmTrie::with_max_entries(4096, 0);

/// Per-CPU counters, indexed by `egress_stat`.
#[map]
static EGRESS_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(egress_stat::COUNT, 0);

/// Work space for the exec check (too large for the stack).
#[repr(C)]
struct Scratch {
    walk: [u8; PATH_BUF],
    exe: Key<[u8; EXE_KEY_LEN]>,
    argv: Key<[u8; ARGV_KEY_LEN]>,
    /// Whether the task is in a protected subtree. Kept in map memory, not
    /// in a register: a value live across the path walk would multiply
    /// the verifier's states past its limit.
    protected: u32,
}

#[map]
static ENFORCE_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn bump(stat: u32) {
    if let Some(c) = EGRESS_STATS.get_ptr_mut(stat) {
        // Per-CPU slot: no concurrent writer.
        unsafe { *c += 1 };
    }
}

/// Zeroes `words` u32s at `p` (4-byte aligned: the key data follows a u32
/// prefix length). Volatile so LLVM cannot turn the loop into a `memset`
/// call, which BPF does not have.
#[inline(always)]
fn zero(p: *mut u8, words: usize) {
    let p = p as *mut u32;
    for i in 0..words {
        unsafe { core::ptr::write_volatile(p.wrapping_add(i), 0) };
    }
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn contain_exec(_ctx: TracePointContext) -> u32 {
    let _ = try_contain_exec::<false>();
    0
}

/// `contain_exec` for kernels whose tracepoints lack
/// `bpf_get_current_ancestor_cgroup_id` (5.10): the same checks, with the
/// cgroup ancestry read from the task (`task->cgroups->dfl_cgrp->
/// ancestor_ids[0..=level]`, offsets from BTF in `KillConfig`). Loaded only
/// where `contain_exec` cannot be (`Attach::TracePointFallback`).
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn contain_exec_ancestry(_ctx: TracePointContext) -> u32 {
    let _ = try_contain_exec::<true>();
    0
}

/// Rules scoped to and flags of the current task's cgroup and its
/// ancestors, through the helper.
#[inline(always)]
fn scope_by_helper() -> (u64, u32) {
    let mut scoped = 0u64;
    let mut cg_flags = 0u32;
    for level in 0..MAX_CGROUP_LEVELS {
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 {
            break;
        }
        if let Some(e) = unsafe { ENFORCE_CGROUPS.get(&id) } {
            scoped |= e.rules;
            cg_flags |= e.flags;
        }
    }
    (scoped, cg_flags)
}

/// [`scope_by_helper`] from the task's own cgroup: the default hierarchy's
/// cgroup keeps the ids of all its ancestors, root (level 0) first, its own
/// last (`ancestor_ids[level]`), as the helper reports them.
#[inline(always)]
fn scope_by_task(task: *const u8, cfg: &KillConfig) -> Option<(u64, u32)> {
    let cgrp =
        read_ptr(task, cfg.task_cgroups).and_then(|cset| read_ptr(cset, cfg.css_set_dfl_cgrp))?;
    let level = read::<i32>(cgrp, cfg.cgroup_level)?;
    let ids = cfg.cgroup_ancestor_ids;
    if ids == agent_common::offsets::MISSING {
        return None;
    }
    let mut scoped = 0u64;
    let mut cg_flags = 0u32;
    for l in 0..MAX_CGROUP_LEVELS {
        if l > level {
            break;
        }
        let Some(id) = read::<u64>(cgrp, ids + l as u32 * 8) else {
            break;
        };
        if let Some(e) = unsafe { ENFORCE_CGROUPS.get(&id) } {
            scoped |= e.rules;
            cg_flags |= e.flags;
        }
    }
    Some((scoped, cg_flags))
}

fn try_contain_exec<const BY_TASK: bool>() -> Option<()> {
    let cfg = KILL_CONFIG.get(0)?;
    let active = cfg.active;
    if active == 0 || !offsets_ready() {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == cfg.agent_tgid {
        return None;
    }

    // Scope: the task's cgroup and its ancestors.
    // A protected subtree is not skipped here: a rule that matches in it
    // leaves a `REFUSED_PROTECTED` record, so the refusal is audited like
    // the user-space path's.
    // (User space finds which protected ancestor it was: tracking the id
    // here multiplies the verifier's states.)
    let (scoped, cg_flags) = if BY_TASK {
        // No ancestry, no kill: the program cannot tell protected and
        // not-yet-cleared pods from others (user space then kills).
        scope_by_task(current_task(), cfg)?
    } else {
        scope_by_helper()
    };
    let mut in_scope = cfg.scope_any | scoped;
    if cg_flags & cgroup_flags::CONTAINER_ROOT != 0 {
        in_scope |= cfg.scope_container;
    }
    let mut cand = active & in_scope;
    if cand == 0 {
        return None;
    }

    let s = unsafe { &mut *ENFORCE_SCRATCH.get_ptr_mut(0)? };
    // 1: protected subtree; 2: a pod not cleared yet (fail-closed); 0: free.
    let refusal = if cg_flags & cgroup_flags::PROTECTED != 0 {
        1
    } else if cg_flags & cgroup_flags::POD_ROOT != 0 && cg_flags & cgroup_flags::CLEARED == 0 {
        2
    } else {
        0
    };
    unsafe { core::ptr::write_volatile(&raw mut s.protected, refusal) };
    let task = current_task();
    let mut flags = 0u32;

    // Executable.
    zero((&raw mut s.exe.data) as *mut u8, EXE_KEY_LEN / 4);
    let mut exe_len = 0u32;
    if cand & !cfg.no_exe != 0 {
        let mut exe_ok = cfg.no_exe;
        match exe_key(task, s) {
            Some(len) => {
                exe_len = len;
                let key = unsafe { &*((&raw const s.exe.data) as *const [u8; EXE_KEY_LEN]) };
                if let Some(m) = unsafe { KILL_EXE.get(key) } {
                    exe_ok |= *m;
                }
                s.exe.prefix_len = len * 8;
                if let Some(m) = KILL_EXE_PREFIX.get(&s.exe) {
                    exe_ok |= *m;
                }
            }
            None => flags |= enforce_flags::EXE_UNKNOWN,
        }
        cand &= exe_ok;
        if cand == 0 {
            return None;
        }
    }

    // argv, from the new program's own memory (mm->arg_start..arg_end).
    if cand & !cfg.no_argv != 0 {
        let mut argv_ok = cfg.no_argv;
        match argv_key(task, cfg, s) {
            Some(()) => {
                if let Some(m) = KILL_ARGV.get(&s.argv) {
                    argv_ok |= *m;
                }
            }
            None => flags |= enforce_flags::ARGV_UNKNOWN,
        }
        cand &= argv_ok;
        if cand == 0 {
            return None;
        }
    }

    let enforcing = cand & !cfg.dry_run;
    let protected = unsafe { core::ptr::read_volatile(&raw const s.protected) };
    let (rule, action, ret) = if protected == 1 {
        (lowest_bit(cand), enforce_action::REFUSED_PROTECTED, 0)
    } else if protected == 2 && enforcing != 0 {
        (
            lowest_bit(enforcing),
            enforce_action::REFUSED_UNKNOWN_POD,
            0,
        )
    } else if enforcing != 0 {
        let ret = unsafe { bpf_send_signal(SIGKILL) };
        let action = if ret == 0 {
            enforce_action::KILLED
        } else {
            enforce_action::SIGNAL_FAILED
        };
        (lowest_bit(enforcing), action, ret)
    } else {
        (lowest_bit(cand), enforce_action::DRY_RUN, 0)
    };

    record(&Record {
        pid_tgid,
        task,
        rule,
        action,
        matched: cand,
        ret,
        flags,
        exe_len,
    })
}

/// What [`record`] writes.
struct Record {
    pid_tgid: u64,
    task: *const u8,
    rule: u32,
    action: u32,
    matched: u64,
    ret: i64,
    flags: u32,
    exe_len: u32,
}

/// Writes a kill record (the executable key from `ENFORCE_SCRATCH`).
#[inline(always)]
fn record(r: &Record) -> Option<()> {
    let s = unsafe { &*ENFORCE_SCRATCH.get_ptr(0)? };
    let (pid_tgid, task) = (r.pid_tgid, r.task);
    let Some(mut entry) = ENFORCE_EVENTS.reserve::<EnforceEvent>(0) else {
        bump(egress_stat::ENFORCE_LOST);
        return None;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = EventHeader {
        kind: ENFORCE_RECORD_KIND,
        version: 1,
        size: core::mem::size_of::<EnforceEvent>() as u32,
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        start_boottime_ns: process_start(task),
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    };
    ev.rule = r.rule;
    ev.action = r.action;
    ev.matched = r.matched;
    ev.signal_ret = r.ret;
    ev.flags = r.flags;
    ev.exe_len = r.exe_len;
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    unsafe {
        bpf_probe_read_kernel(
            ev.exe.as_mut_ptr() as *mut _,
            EXE_KEY_LEN as u32,
            (&raw const s.exe.data) as *const _,
        )
    };
    // Always the kernel's own wake-up, never the batching of the event ring:
    // kill records are rare, and the reader of this ring does not re-poll, so
    // a record submitted without a wake-up would wait for the next kill.
    entry.submit(0);
    Some(())
}

/// Index of the lowest set bit, branch-free (no table, no libcall).
///
/// A loop with an early return was one verifier path per possible index,
/// each walked through the record code after it: on 6.1 that made
/// `contain_exec` the program nearest the 1M-instruction budget.
/// `b = m & -m` keeps the lowest bit; each bit of its index is whether `b`
/// falls in a mask, and `(x | -x) >> 63` is 1 exactly when `x != 0`.
#[inline(always)]
fn lowest_bit(m: u64) -> u32 {
    const _: () = assert!(MAX_KILL_RULES == 64);
    let b = m & m.wrapping_neg();
    let nz = |x: u64| (x | x.wrapping_neg()) >> 63;
    let i = (nz(b & 0xFFFF_FFFF_0000_0000) << 5)
        | (nz(b & 0xFFFF_0000_FFFF_0000) << 4)
        | (nz(b & 0xFF00_FF00_FF00_FF00) << 3)
        | (nz(b & 0xF0F0_F0F0_F0F0_F0F0) << 2)
        | (nz(b & 0xCCCC_CCCC_CCCC_CCCC) << 1)
        | nz(b & 0xAAAA_AAAA_AAAA_AAAA);
    i as u32
}

/// Fills `s.exe.data` with the executable's key (the leaf-first walk
/// reversed). Returns its length, or `None` when the path is unknown,
/// truncated or longer than a key.
#[inline(always)]
fn exe_key(task: *const u8, _s: &mut Scratch) -> Option<u32> {
    let len = picket_exe_key(task as u64);
    (len > 0).then_some(len as u32)
}

/// The body of [`exe_key`], as a global function (scalar argument, output
/// in `ENFORCE_SCRATCH`): verified once on its own rather than once per state
/// of `contain_exec`, which kept the walk plus the byte loop under the 5.10
/// and 6.1 verifiers' budget (docs/kernels.md). Returns the key length, or
/// -1.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn picket_exe_key(task: u64) -> i64 {
    let Some(s) = ENFORCE_SCRATCH.get_ptr_mut(0) else {
        return -1;
    };
    let s = unsafe { &mut *s };
    let task = task as *const u8;
    let Some(file) = read_ptr(task, off!(task_mm)).and_then(|mm| read_ptr(mm, off!(mm_exe_file)))
    else {
        return -1;
    };
    exe_key_of_file(file, s)
}

/// The key of the executable `file` (a `struct file *`) into `s.exe.data`:
/// its path walked leaf first, reversed. The length, or -1.
#[inline(always)]
fn exe_key_of_file(file: *const u8, s: &mut Scratch) -> i64 {
    let Some(w) = path::walk(
        file.wrapping_add(off!(file_f_path) as usize),
        s.walk.as_mut_ptr(),
    ) else {
        return -1;
    };
    let len = w.len as usize;
    if w.truncated || len == 0 || len > EXE_KEY_LEN {
        return -1;
    }
    let dst = (&raw mut s.exe.data) as *mut u8;
    for i in 0..EXE_KEY_LEN {
        if i >= len {
            break;
        }
        let from = bound::<{ PATH_MASK as u64 }>(len - 1 - i);
        let b = unsafe { *s.walk.as_ptr().wrapping_add(from) };
        unsafe { *dst.wrapping_add(bound::<{ EXE_KEY_LEN as u64 - 1 }>(i)) = b };
    }
    len as i64
}

/// Fills `s.argv` with the first `ARGV_KEY_LEN` bytes of the NUL-joined argv
/// of the current (new) program, zero-padded, prefix length = bytes read.
#[inline(always)]
fn argv_key(task: *const u8, cfg: &KillConfig, s: &mut Scratch) -> Option<()> {
    let mm = read_ptr(task, off!(task_mm))?;
    let start = read::<u64>(mm, cfg.mm_arg_start)?;
    let end = read::<u64>(mm, cfg.mm_arg_end)?;
    if end <= start {
        return None;
    }
    let dst = (&raw mut s.argv.data) as *mut u8;
    zero(dst, ARGV_KEY_LEN / 4);
    let len = end - start;
    let n = if len > ARGV_KEY_LEN as u64 {
        ARGV_KEY_LEN as u64
    } else {
        len
    };
    // 1..=ARGV_KEY_LEN, bounded where the helper's size is computed: the
    // 5.10 verifier lost the comparison's bound through a spill ("R2 min
    // value is negative").
    let n = bound::<{ ARGV_KEY_LEN as u64 - 1 }>((n - 1) as usize) as u32 + 1;
    let rc = unsafe { bpf_probe_read_user(dst as *mut _, n, start as *const _) };
    if rc != 0 {
        return None;
    }
    s.argv.prefix_len = n * 8;
    Some(())
}

// ---- Egress -------------------------------------------------------------

const ALLOW: i32 = 1;
const DENY: i32 = 0;
const DNS_PORT_BE: u16 = 53u16.to_be();

/// The outermost contained cgroup among the current task's cgroup and its
/// ancestors, with its policy.
#[inline(always)]
fn find_policy() -> Option<(u64, EgressPolicy)> {
    for level in 0..MAX_CGROUP_LEVELS {
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 {
            break;
        }
        if let Some(p) = unsafe { EGRESS_POLICY.get(&id) } {
            return Some((id, *p));
        }
    }
    None
}

/// Verdict for a destination given whether it is listed.
#[inline(always)]
fn verdict(p: &EgressPolicy, port_be: u16, listed: impl Fn() -> bool) -> i32 {
    match p.mode {
        egress_mode::DENY_ALL => DENY,
        egress_mode::ALLOW_DNS => {
            if port_be != DNS_PORT_BE {
                DENY
            } else if p.flags & egress_flags::DNS_SERVERS_LISTED != 0 && !listed() {
                DENY
            } else {
                ALLOW
            }
        }
        egress_mode::DENY_LISTED => {
            if listed() {
                DENY
            } else {
                ALLOW
            }
        }
        _ => ALLOW,
    }
}

#[inline(always)]
fn egress4(ctx: &SockAddrContext, denied_stat: u32) -> i32 {
    let Some((cg, policy)) = find_policy() else {
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    // Context fields must be read with their own (4-byte) loads.
    let ip = unsafe { core::ptr::read_volatile(&raw const (*sa).user_ip4) };
    let port = unsafe { core::ptr::read_volatile(&raw const (*sa).user_port) } as u16;
    let listed = || {
        let mut key = Key::new(
            agent_common::enforce::EGRESS_FIXED_BITS + 32,
            Egress4 {
                cgroup: cg.to_ne_bytes(),
                port: port.to_ne_bytes(),
                addr: ip.to_ne_bytes(),
            },
        );
        if EGRESS_DEST4.get(&key).is_some() {
            return true;
        }
        key.data.port = [0, 0];
        EGRESS_DEST4.get(&key).is_some()
    };
    let v = verdict(&policy, port, listed);
    bump(if v == DENY {
        denied_stat
    } else {
        egress_stat::ALLOWED
    });
    v
}

#[inline(always)]
fn egress6(ctx: &SockAddrContext, denied_stat: u32) -> i32 {
    let Some((cg, policy)) = find_policy() else {
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    let mut addr = [0u8; 16];
    for i in 0..4 {
        let w = unsafe {
            core::ptr::read_volatile((&raw const (*sa).user_ip6 as *const u32).wrapping_add(i))
        };
        let b = w.to_ne_bytes();
        addr[i * 4] = b[0];
        addr[i * 4 + 1] = b[1];
        addr[i * 4 + 2] = b[2];
        addr[i * 4 + 3] = b[3];
    }
    let port = unsafe { core::ptr::read_volatile(&raw const (*sa).user_port) } as u16;
    let listed = || {
        let mut key = Key::new(
            agent_common::enforce::EGRESS_FIXED_BITS + 128,
            Egress6 {
                cgroup: cg.to_ne_bytes(),
                port: port.to_ne_bytes(),
                addr,
            },
        );
        if EGRESS_DEST6.get(&key).is_some() {
            return true;
        }
        key.data.port = [0, 0];
        EGRESS_DEST6.get(&key).is_some()
    };
    let v = verdict(&policy, port, listed);
    bump(if v == DENY {
        denied_stat
    } else {
        egress_stat::ALLOWED
    });
    v
}

#[cgroup_sock_addr(connect4)]
pub fn contain_connect4(ctx: SockAddrContext) -> i32 {
    egress4(&ctx, egress_stat::DENIED_CONNECT4)
}

#[cgroup_sock_addr(connect6)]
pub fn contain_connect6(ctx: SockAddrContext) -> i32 {
    egress6(&ctx, egress_stat::DENIED_CONNECT6)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn contain_sendmsg4(ctx: SockAddrContext) -> i32 {
    egress4(&ctx, egress_stat::DENIED_SENDMSG4)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn contain_sendmsg6(ctx: SockAddrContext) -> i32 {
    egress6(&ctx, egress_stat::DENIED_SENDMSG6)
}
