//! Shared plumbing of the syscall sensors (network, files, credentials,
//! namespaces, mounts): the per-thread stash that carries a syscall's
//! arguments from its enter tracepoint to its exit tracepoint, record
//! headers, the per-kind enable switch, per-cgroup rate limiting and the
//! per-kind "records submitted" counters.
//!
//! Why enter + exit: arguments (user strings, sockaddrs) are read at entry,
//! while user memory still holds what the kernel is about to use, and the
//! record is written at exit, so failed calls carry their errno.

use agent_common::{
    EventHeader, EventKind,
    process::Creds,
    ratelimit::{
        NORMAL_LANE, PRIORITY_LANE, PRIORITY_MULTIPLIER, RateKey, RateLimit, RateState,
        RateSummaryEvent,
    },
    settings::FILTER_GENERATIONS,
};
use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        generated::{bpf_probe_read_kernel, bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ring_buf::RingBufEntry},
    programs::TracePointContext,
};

use crate::{
    kernel::{current_task, off, process_start, read, read_ptr},
    maps::{EVENTS, cgroup_allowed, count_lost, filter_gen},
};

/// Offset of the first argument in `syscalls:sys_enter_*` records (fixed
/// ABI: 8-byte common header, `__syscall_nr` padded to 8, then 8 per arg).
const ARG0: usize = 16;
/// Offset of `ret` in `syscalls:sys_exit_*` records.
const RET: usize = 16;

/// Size of the stash's first two string slots.
pub const STR_MAX: usize = 256;
/// Size of the third slot (sockaddr, fstype, memfd name).
pub const SMALL_MAX: usize = 128;

/// What a syscall's entry leaves for its exit.
#[repr(C)]
pub struct Stash {
    /// Family-specific op (`net_op::CONNECT`, ...): the exit checks it.
    pub op: u32,
    /// The `EventKind` of the record to write.
    pub kind: u32,
    /// Family-specific extra values (filter matches, fd mode, ...).
    pub aux: u32,
    pub aux2: u32,
    pub args: [u64; 6],
    /// Credentials at entry (credential sensor).
    pub creds: Creds,
    /// Valid bytes in `s0`, `s1`, `s2`.
    pub len: [u32; 4],
    pub s0: [u8; STR_MAX],
    pub s1: [u8; STR_MAX],
    pub s2: [u8; SMALL_MAX],
}

/// In-flight syscalls by thread id. LRU: a syscall whose exit is never seen
/// (the thread died, the exit program is not attached) ages out.
#[map]
static STASH: LruHashMap<u32, Stash> = LruHashMap::with_max_entries(8192, 0);

/// Per-CPU space to build a `Stash` (too large for the stack).
#[map]
static STASH_SCRATCH: PerCpuArray<Stash> = PerCpuArray::with_max_entries(1, 0);

/// Per generation and event kind (`g * EventKind::COUNT + kind`):
/// non-zero = the kind is switched off in the kernel.
#[map]
pub static KIND_DISABLED: Array<u32> =
    Array::with_max_entries(EventKind::COUNT * FILTER_GENERATIONS, 0);

/// Per generation and event kind (`g * EventKind::COUNT + kind`): rate
/// limit per cgroup (`max_events == 0` = none).
#[map]
pub static RATE_LIMITS: Array<RateLimit> =
    Array::with_max_entries(EventKind::COUNT * FILTER_GENERATIONS, 0);

/// Rate-limit windows per (cgroup, kind).
#[map]
pub static RATE_STATE: LruHashMap<RateKey, RateState> = LruHashMap::with_max_entries(16384, 0);

/// Records not sent because of the rate limit, per (cgroup, kind):
/// cumulative, incremented atomically (one value, so the kernel can put it
/// in a summary). Only grows; not LRU, since evicting an entry would lose
/// its count.
#[map]
pub static RATE_SUPPRESSED: HashMap<RateKey, u64> = HashMap::with_max_entries(16384, 0);

/// Per-CPU count of records submitted to the ring buffer, per kind (the
/// sensors of this module only): shows that in-kernel filters keep traffic
/// off the ring buffer.
#[map]
pub static SUBMITTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(EventKind::COUNT, 0);

/// Argument `i` of a `sys_enter_*` record.
#[inline(always)]
pub fn arg(ctx: &TracePointContext, i: usize) -> u64 {
    unsafe { ctx.read_at::<u64>(ARG0 + i * 8) }.unwrap_or(0)
}

/// Return value in a `sys_exit_*` record.
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(0)
}

/// Whether `kind` is on (in the active filter generation) and the current
/// task's cgroup is traced.
#[inline(always)]
pub fn enabled(kind: EventKind) -> bool {
    enabled_in(filter_gen(), kind)
}

/// [`enabled`] in filter generation `g` (for programs that make several
/// filter lookups and must use one generation for all of them).
#[inline(always)]
pub fn enabled_in(g: u32, kind: EventKind) -> bool {
    if let Some(d) = KIND_DISABLED.get(g * EventKind::COUNT + kind as u32)
        && *d != 0
    {
        return false;
    }
    cgroup_allowed(unsafe { bpf_get_current_cgroup_id() })
}

fn tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// The per-CPU stash under construction, with `op`/`kind` set and lengths
/// cleared.
#[inline(always)]
pub fn stash_begin(op: u32, kind: EventKind) -> Option<&'static mut Stash> {
    let s = unsafe { &mut *STASH_SCRATCH.get_ptr_mut(0)? };
    s.op = op;
    s.kind = kind as u32;
    s.aux = 0;
    s.aux2 = 0;
    // Volatile stores, not `= [0; N]`: LLVM turns those into a call to
    // `memset`, a byte loop the verifier re-walks for every caller state.
    for a in s.args.iter_mut() {
        unsafe { core::ptr::write_volatile(a, 0) };
    }
    for l in s.len.iter_mut() {
        unsafe { core::ptr::write_volatile(l, 0) };
    }
    Some(s)
}

/// Saves the stash for this thread's syscall exit.
#[inline(always)]
pub fn stash_commit(s: &Stash) {
    let _ = STASH.insert(&tid(), s, 0);
}

/// This thread's stash if it was left by syscall `op`'s entry. The caller
/// must call [`stash_done`] after copying what it needs.
#[inline(always)]
pub fn stash_get(op: u32, kind: EventKind) -> Option<&'static Stash> {
    let s = unsafe { &*STASH.get_ptr(&tid())? };
    if s.op != op || s.kind != kind as u32 {
        return None;
    }
    Some(s)
}

#[inline(always)]
pub fn stash_done() {
    let _ = STASH.remove(&tid());
}

/// Reads a NUL-terminated user string into `dst` (`N` bytes); returns its
/// length without the NUL (0 when absent or faulting).
#[inline(always)]
pub fn user_str<const N: usize>(dst: &mut [u8; N], src: u64) -> u32 {
    if src == 0 {
        dst[0] = 0;
        return 0;
    }
    let n =
        unsafe { bpf_probe_read_user_str(dst.as_mut_ptr() as *mut _, N as u32, src as *const _) };
    if n <= 0 {
        dst[0] = 0;
        0
    } else {
        (n - 1) as u32
    }
}

/// Reads `size` bytes of user memory into `dst`; false on fault.
#[inline(always)]
pub fn user_bytes(dst: *mut u8, size: u32, src: u64) -> bool {
    src != 0 && unsafe { bpf_probe_read_user(dst as *mut _, size, src as *const _) } == 0
}

/// Copies `N` bytes of kernel (map) memory.
#[inline(always)]
pub fn copy<const N: usize>(dst: &mut [u8; N], src: &[u8; N]) {
    unsafe {
        bpf_probe_read_kernel(
            dst.as_mut_ptr() as *mut _,
            N as u32,
            src.as_ptr() as *const _,
        )
    };
}

/// The record header for the current task.
#[inline(always)]
pub fn header(kind: EventKind, size: usize) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    EventHeader {
        kind: kind as u16,
        version: 1,
        size: size as u32,
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        start_boottime_ns: process_start(current_task()),
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    }
}

/// Reserves a record of type `T`, counting a loss when the ring is full.
#[inline(always)]
pub fn reserve<T: 'static>(kind: EventKind) -> Option<RingBufEntry<T>> {
    match EVENTS.reserve::<T>(0) {
        Some(e) => Some(e),
        None => {
            count_lost(kind);
            None
        }
    }
}

/// Submits a record and counts it.
#[inline(always)]
pub fn submit<T: 'static>(entry: RingBufEntry<T>, kind: EventKind) {
    entry.submit(crate::maps::ring_submit_flags());
    if let Some(c) = SUBMITTED.get_ptr_mut(kind as u32) {
        unsafe { *c += 1 };
    }
}

/// Per-cgroup rate limiting: whether one more `kind` record of the current
/// cgroup may be sent. When not, it is counted in `RATE_SUPPRESSED` (the
/// count must be exact: the agent reports it).
#[inline(always)]
pub fn rate_allowed(kind: EventKind) -> bool {
    rate_allowed_lane(kind, false)
}

/// [`rate_allowed`] in the lane of `priority` records (records a rule
/// alerts on whatever else happens): their own window and counters, with
/// `PRIORITY_MULTIPLIER` times the limit, so a storm of merely monitored
/// records cannot push them into a summary.
#[inline(always)]
pub fn rate_allowed_lane(kind: EventKind, priority: bool) -> bool {
    let Some(lim) = RATE_LIMITS.get(filter_gen() * EventKind::COUNT + kind as u32) else {
        return true;
    };
    if lim.max_events == 0 {
        return true;
    }
    let (lane, max_events) = if priority {
        (
            PRIORITY_LANE,
            (lim.max_events as u64).saturating_mul(PRIORITY_MULTIPLIER as u64),
        )
    } else {
        (NORMAL_LANE, lim.max_events as u64)
    };
    let key = RateKey {
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        kind: kind as u32,
        lane,
    };
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let st = match RATE_STATE.get_ptr_mut(&key) {
        Some(p) => p,
        None => {
            let init = RateState {
                window_start_ns: now,
                in_window: 0,
                reported: 0,
            };
            // Another CPU may have created it meanwhile: NOEXIST keeps theirs.
            let _ = RATE_STATE.insert(&key, &init, BPF_NOEXIST as u64);
            match RATE_STATE.get_ptr_mut(&key) {
                Some(p) => p,
                // The map is full: send rather than drop uncounted.
                None => return true,
            }
        }
    };
    let st = unsafe { &mut *st };
    if now.wrapping_sub(st.window_start_ns) >= lim.window_ns {
        send_summary(&key, st, lim.window_ns);
        st.window_start_ns = now;
        st.in_window = 0;
    }
    // A race between CPUs can make the limit approximate, never the count:
    // each record is either sent or added to `RATE_SUPPRESSED`.
    let n = st.in_window;
    st.in_window = n + 1;
    if n < max_events {
        return true;
    }
    !count_suppressed(&key)
}

/// Adds one to the key's cumulative suppressed counter; false when the
/// counter map is full (the caller then sends rather than drop uncounted).
#[inline(always)]
fn count_suppressed(key: &RateKey) -> bool {
    for _ in 0..2 {
        if let Some(c) = RATE_SUPPRESSED.get_ptr_mut(key) {
            atomic_inc(c);
            return true;
        }
        // NOEXIST: when another CPU created it meanwhile, loop and add.
        if RATE_SUPPRESSED.insert(key, &1, BPF_NOEXIST as u64).is_ok() {
            return true;
        }
    }
    false
}

/// `*c += 1` as one atomic instruction (BPF_XADD: the counter is shared by
/// all CPUs). `core`'s atomics have no read-modify-write on this target, so
/// the instruction is written out.
#[inline(always)]
fn atomic_inc(c: *mut u64) {
    #[cfg(target_arch = "bpf")]
    unsafe {
        core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) c, v = in(reg) 1u64);
    }
    #[cfg(not(target_arch = "bpf"))]
    unsafe {
        *c += 1
    };
}

/// At the end of a window: a `rate_summary` record when records were
/// suppressed since the last one. When the ring is full the counter stays
/// unreported here and a later summary (or the agent's flush) carries it.
#[inline(always)]
fn send_summary(key: &RateKey, st: &mut RateState, window_ns: u64) {
    let Some(total) = (unsafe { RATE_SUPPRESSED.get(key) }).copied() else {
        return;
    };
    if total <= st.reported {
        return;
    }
    let kind = EventKind::RateSummary;
    let Some(mut entry) = reserve::<RateSummaryEvent>(kind) else {
        return;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = header(kind, core::mem::size_of::<RateSummaryEvent>());
    ev.kind = key.kind;
    ev.lane = key.lane;
    ev.total = total;
    ev.count = total - st.reported;
    ev.window_ns = window_ns;
    ev.window_start_ns = st.window_start_ns;
    st.reported = total;
    submit(entry, kind);
}

/// The current task's credentials (`task->cred`); false when unknown.
#[inline(always)]
pub fn read_creds(c: &mut Creds) -> bool {
    let Some(cred) = read_ptr(current_task(), off!(task_cred)) else {
        return false;
    };
    c.uid = read::<u32>(cred, off!(cred_uid)).unwrap_or(u32::MAX);
    c.gid = read::<u32>(cred, off!(cred_gid)).unwrap_or(u32::MAX);
    c.euid = read::<u32>(cred, off!(cred_euid)).unwrap_or(u32::MAX);
    c.egid = read::<u32>(cred, off!(cred_egid)).unwrap_or(u32::MAX);
    c.suid = read::<u32>(cred, off!(cred_suid)).unwrap_or(u32::MAX);
    c.sgid = read::<u32>(cred, off!(cred_sgid)).unwrap_or(u32::MAX);
    c.fsuid = read::<u32>(cred, off!(cred_fsuid)).unwrap_or(u32::MAX);
    c.fsgid = read::<u32>(cred, off!(cred_fsgid)).unwrap_or(u32::MAX);
    c.loginuid = u32::MAX;
    c._pad = 0;
    c.cap_effective = read::<u64>(cred, off!(cred_cap_effective)).unwrap_or(0);
    c.cap_permitted = read::<u64>(cred, off!(cred_cap_permitted)).unwrap_or(0);
    c.cap_inheritable = read::<u64>(cred, off!(cred_cap_inheritable)).unwrap_or(0);
    true
}

/// The `struct file` of the current task's fd `fd`.
#[inline(always)]
pub fn fd_file(fd: i64) -> Option<*const u8> {
    if fd < 0 {
        return None;
    }
    let fdt = read_ptr(current_task(), off!(task_files))
        .and_then(|f| read_ptr(f, off!(files_struct_fdt)))?;
    let max = read::<u32>(fdt, off!(fdtable_max_fds))?;
    if fd as u64 >= max as u64 {
        return None;
    }
    let fds = read_ptr(fdt, off!(fdtable_fd))?;
    read_ptr(fds.wrapping_add(fd as usize * 8), 0)
}

/// `file->f_inode->i_mode`.
#[inline(always)]
pub fn file_mode(file: *const u8) -> u32 {
    read_ptr(file, off!(file_f_inode))
        .and_then(|i| read::<u16>(i, off!(inode_i_mode)))
        .unwrap_or(0) as u32
}

/// Pointer to the tracepoint record (for `__data_loc` fields).
#[allow(dead_code)]
pub fn ctx_ptr(ctx: &TracePointContext) -> *const u8 {
    ctx.as_ptr() as *const u8
}

/// Defines a `sys_enter_*` and a `sys_exit_*` tracepoint program pair (the
/// loader attaches them by name; the section only gives the program type):
/// `syscall_pair!(enter_fn, exit_fn, |ctx| body, |ctx| body)`.
macro_rules! syscall_pair {
    ($enter:ident, $exit:ident, |$c1:ident| $b1:expr, |$c2:ident| $b2:expr $(,)?) => {
        #[aya_ebpf::macros::tracepoint]
        pub fn $enter(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            let $c1 = &ctx;
            let _: Option<()> = $b1;
            0
        }

        #[aya_ebpf::macros::tracepoint]
        pub fn $exit(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            let $c2 = &ctx;
            let _: Option<()> = $b2;
            0
        }
    };
}
pub(crate) use syscall_pair;
