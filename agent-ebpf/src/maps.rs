//! Maps and read-only globals shared by all programs.

use agent_common::{
    EventKind, KernelOffsets,
    process::ArgvStage,
    settings::{FILTER_GENERATIONS, Settings, cgroup_filter, wakeup},
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};

/// The single ring buffer all events go through. The agent sets its size
/// (`max_entries`) before load; this value is only the default.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Per-CPU counters of records that could not be reserved, per event kind.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(EventKind::COUNT, 0);

/// argv captured at `sys_enter_execve[at]`, keyed by thread id, consumed at
/// `sched_process_exec`. LRU so entries of failed execs age out.
#[map]
pub static ARGV_STAGE: LruHashMap<u32, ArgvStage> = LruHashMap::with_max_entries(8192, 0);

/// Per-CPU scratch space: an `ArgvStage` is too large for the 512-byte stack.
#[map]
pub static ARGV_SCRATCH: PerCpuArray<ArgvStage> = PerCpuArray::with_max_entries(1, 0);

/// Kernel struct offsets, set by the agent before load (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets::missing();

/// Address ranges `[start, end)` of kernel functions whose capability checks
/// are made without auditing (`CAP_OPT_NOAUDIT`): `cap_vm_enough_memory` and
/// its caller `security_vm_enough_memory_mm`, which check CAP_SYS_ADMIN on
/// every mmap/brk/fork for memory accounting (`agent/src/sensor/kallsyms.rs`).
/// Set by the agent from /proc/kallsyms before load (zero: unknown, nothing
/// is filtered). The `capability:cap_capable` tracepoint has no `opts`, so
/// the caller on the kernel stack is the sound signal that a check is one of
/// these (see `creds::from_noaudit_caller`).
#[unsafe(no_mangle)]
pub static NOAUDIT_RANGES: [u64; 4] = [0; 4];

/// Counts a record that could not be written because the ring buffer was full.
#[inline(always)]
pub fn count_lost(kind: EventKind) {
    if let Some(c) = LOST.get_ptr_mut(kind as u32) {
        // Per-CPU slot: no other writer can race with us.
        unsafe { *c += 1 };
    }
}

/// Runtime settings (one entry), see `agent_common::settings`.
#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// Ring-buffer wake-up batching, see `agent_common::settings::wakeup`.
#[map]
pub static RING_WAKEUP: Array<u64> = Array::with_max_entries(wakeup::ENTRIES, 0);

/// The active filter generation (one entry), see `agent_common::settings`.
#[map]
pub static FILTER_GEN: Array<u32> = Array::with_max_entries(1, 0);

/// The active filter generation. Callers read it once per program run and
/// use it for every filter lookup of that run.
#[inline(always)]
pub fn filter_gen() -> u32 {
    const { assert!(FILTER_GENERATIONS == 2) };
    FILTER_GEN.get(0).copied().unwrap_or(0) & 1
}

/// cgroup ids listed for the cgroup filter (value unused).
#[map]
pub static CGROUP_FILTER: HashMap<u64, u8> = HashMap::with_max_entries(4096, 0);

/// Whether events of tasks in `cgroup_id` should be reported.
#[inline(always)]
pub fn cgroup_allowed(cgroup_id: u64) -> bool {
    let mode = SETTINGS.get(0).map(|s| s.cgroup_filter_mode).unwrap_or(0);
    if mode == cgroup_filter::OFF {
        return true;
    }
    let listed = unsafe { CGROUP_FILTER.get(&cgroup_id) }.is_some();
    match mode {
        cgroup_filter::ONLY_LISTED => listed,
        cgroup_filter::EXCLUDE_LISTED => !listed,
        _ => true,
    }
}

/// Flags for `bpf_ringbuf_submit`: wake the reader only when the batching
/// interval has passed since the last forced wake-up (see
/// `agent_common::settings::wakeup`); 0 (the kernel's adaptive wake-up) when
/// batching is off.
#[inline(always)]
pub fn ring_submit_flags() -> u64 {
    let interval = RING_WAKEUP.get(wakeup::INTERVAL).copied().unwrap_or(0);
    if interval == 0 {
        return 0;
    }
    let Some(last) = RING_WAKEUP.get_ptr_mut(wakeup::LAST) else {
        return 0;
    };
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_boot_ns() };
    // SAFETY: a valid pointer into the map's value; a torn or lost update
    // between CPUs only moves one wake-up.
    if now.wrapping_sub(unsafe { *last }) >= interval {
        unsafe { *last = now };
        aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64
    } else {
        aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64
    }
}
