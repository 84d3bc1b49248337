//! Reading kernel structs through BTF-resolved offsets.

use agent_common::offsets::MISSING;
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

use crate::maps::OFFSETS;

/// Reads offset `$field` from the `OFFSETS` global. `read_volatile` keeps
/// LLVM from folding the (load-time patched) constant.
macro_rules! off {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const $crate::maps::OFFSETS.$field) }
    };
}
pub(crate) use off;

/// Reads a `T` at `base + off`, or `None` when the offset is unknown on this
/// kernel, the base is null or the read faults.
#[inline(always)]
pub fn read<T>(base: *const u8, off: u32) -> Option<T> {
    if off == MISSING || base.is_null() {
        return None;
    }
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T).ok() }
}

/// Reads a pointer field.
#[inline(always)]
pub fn read_ptr(base: *const u8, off: u32) -> Option<*const u8> {
    read::<*const u8>(base, off).filter(|p| !p.is_null())
}

/// The current `task_struct`.
#[inline(always)]
pub fn current_task() -> *const u8 {
    unsafe { bpf_get_current_task() as *const u8 }
}

/// `task->group_leader->start_boottime`: start time of the process (not thread).
#[inline(always)]
pub fn process_start(task: *const u8) -> u64 {
    let leader = read_ptr(task, off!(task_group_leader)).unwrap_or(task);
    read::<u64>(leader, off!(task_start_boottime)).unwrap_or(0)
}

/// Whether the offsets struct was patched at all (guards against loading the
/// programs without running the agent's BTF resolution).
#[inline(always)]
pub fn offsets_ready() -> bool {
    let _ = &OFFSETS;
    off!(task_tgid) != MISSING
}

/// `v & MASK`, as one `and` instruction right where the value is used.
///
/// Why not plain `v & MASK`: LLVM drops the mask when it can prove the value
/// is already in range (e.g. after `if len > MASK { break }`), or computes
/// the bound on another register copy or a stack spill. The 5.10 and 6.1
/// verifiers do not carry such bounds across copies and spills, so the
/// pointer arithmetic that follows looked unbounded to them ("R1 max value is
/// outside of the allowed memory range"). An inline-assembly `and` is opaque
/// to LLVM, so it cannot be removed or moved, and every verifier sees the
/// bound on the very register used. See docs/kernels.md.
#[inline(always)]
pub fn bound<const MASK: u64>(v: usize) -> usize {
    #[cfg(target_arch = "bpf")]
    {
        let mut v = v as u64;
        unsafe {
            core::arch::asm!("{v} &= {m}", v = inout(reg) v, m = const MASK);
        }
        v as usize
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        v & MASK as usize
    }
}
