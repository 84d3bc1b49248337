//! The few environment variables of a new program that matter to
//! detection (`LD_PRELOAD`, `LD_LIBRARY_PATH`: code injected into every
//! process started with them), read at `sched_process_exec` from the new
//! program's stack.
//!
//! Why there and not from `envp` at `sys_enter_execve`: at the exec
//! tracepoint the kernel has just copied the strings and written the
//! pointer array onto the new stack (`mm->start_stack` points at `argc`,
//! then `argv[]`, NULL, `envp[]`, NULL), so every page is resident; the
//! caller's `envp` may sit on pages not faulted in yet, which a probe read
//! cannot fault in. The scan is bounded (`ENV_SCAN_MAX` entries, values to
//! `ENV_VALUE_MAX` bytes) and says when it stopped early.

use agent_common::process::{ENV_SCAN_MAX, ENV_VALUE_MAX, exec_flags};
use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated::bpf_probe_read_user_str},
    macros::map,
    maps::PerCpuArray,
};

/// Output of [`picket_scan_env`] (too large for the stack).
#[repr(C)]
pub struct EnvScratch {
    pub ld_preload: [u8; ENV_VALUE_MAX],
    pub ld_library_path: [u8; ENV_VALUE_MAX],
    /// The first 16 bytes of the entry being looked at (+ NUL).
    name: [u64; 3],
    /// The running result (lengths and flags, see [`picket_scan_env`]).
    /// Kept in map memory, not in registers: the verifier tracks the exact
    /// value of a register, so each combination found so far would be a
    /// separate state through every later iteration of the loop (this blew
    /// the 1M-instruction budget of the 6.1 verifier); map memory reads
    /// back as an unknown scalar and the states of the three branches merge.
    result: u64,
}

#[map]
pub static ENV_SCRATCH: PerCpuArray<EnvScratch> = PerCpuArray::with_max_entries(1, 0);

const LD_PRELO: u64 = u64::from_le_bytes(*b"LD_PRELO");
/// `AD=` in the low three bytes of the second word.
const AD_EQ: u64 = u64::from_le_bytes([b'A', b'D', b'=', 0, 0, 0, 0, 0]);
const LD_LIBRA: u64 = u64::from_le_bytes(*b"LD_LIBRA");
const RY_PATH_EQ: u64 = u64::from_le_bytes(*b"RY_PATH=");
const PRELOAD_NAME: u64 = 11;
const LIBPATH_NAME: u64 = 16;

/// Scans the environment of the new program whose stack starts at
/// `start_stack` (user address) into this CPU's `ENV_SCRATCH`. Returns the
/// length of `LD_PRELOAD`'s value (bits 0-15), of `LD_LIBRARY_PATH`'s
/// (bits 16-31) and `exec_flags` bits (`LD_PRELOAD`, `LD_LIBRARY_PATH`,
/// `ENV_TRUNCATED`, `ENV_VALUE_TRUNCATED`) from bit 32; -1 when the stack
/// could not be read. A variable set twice is reported with its last value
/// (the one the dynamic loader uses).
///
/// A global function (see `path::picket_walk_path`): verified once, on its
/// own, instead of inside `sched_process_exec`'s states.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn picket_scan_env(start_stack: u64) -> i64 {
    let Some(sc) = ENV_SCRATCH.get_ptr_mut(0) else {
        return -1;
    };
    let sc = unsafe { &mut *sc };
    let Ok(argc) = (unsafe { bpf_probe_read_user(start_stack as *const u64) }) else {
        return -1;
    };
    if argc > (1 << 24) {
        return -1;
    }
    let envp = start_stack.wrapping_add(8).wrapping_add((argc + 1) * 8);
    let result = &raw mut sc.result;
    // SAFETY (all volatile accesses): pointers into this CPU's map value.
    // Volatile stores, not `= 0`/`= [0; N]`: LLVM would call `memset`, a
    // byte loop the verifier walks again in every iteration.
    unsafe { core::ptr::write_volatile(result, 0) };
    let mut ended = false;
    for i in 0..ENV_SCAN_MAX {
        let Ok(p) = (unsafe { bpf_probe_read_user((envp + i as u64 * 8) as *const u64) }) else {
            break;
        };
        if p == 0 {
            ended = true;
            break;
        }
        unsafe {
            core::ptr::write_volatile(&raw mut sc.name[0], 0);
            core::ptr::write_volatile(&raw mut sc.name[1], 0);
        }
        let n =
            unsafe { bpf_probe_read_user_str(sc.name.as_mut_ptr() as *mut _, 17, p as *const _) };
        if n < (PRELOAD_NAME + 1) as i64 {
            continue;
        }
        let (w0, w1) = unsafe {
            (
                core::ptr::read_volatile(&raw const sc.name[0]),
                core::ptr::read_volatile(&raw const sc.name[1]),
            )
        };
        if w0 == LD_PRELO && w1 & 0xff_ffff == AD_EQ {
            let r = unsafe {
                bpf_probe_read_user_str(
                    sc.ld_preload.as_mut_ptr() as *mut _,
                    ENV_VALUE_MAX as u32,
                    (p + PRELOAD_NAME) as *const _,
                )
            };
            if r > 0 {
                let mut f = (exec_flags::LD_PRELOAD as u64) << 32;
                if r as usize >= ENV_VALUE_MAX {
                    f |= (exec_flags::ENV_VALUE_TRUNCATED as u64) << 32;
                }
                unsafe {
                    let old = core::ptr::read_volatile(result);
                    core::ptr::write_volatile(
                        result,
                        (old & !0xffff) | f | ((r - 1) as u64 & 0xffff),
                    );
                }
            }
        } else if n >= (LIBPATH_NAME + 1) as i64 && w0 == LD_LIBRA && w1 == RY_PATH_EQ {
            let r = unsafe {
                bpf_probe_read_user_str(
                    sc.ld_library_path.as_mut_ptr() as *mut _,
                    ENV_VALUE_MAX as u32,
                    (p + LIBPATH_NAME) as *const _,
                )
            };
            if r > 0 {
                let mut f = (exec_flags::LD_LIBRARY_PATH as u64) << 32;
                if r as usize >= ENV_VALUE_MAX {
                    f |= (exec_flags::ENV_VALUE_TRUNCATED as u64) << 32;
                }
                unsafe {
                    let old = core::ptr::read_volatile(result);
                    core::ptr::write_volatile(
                        result,
                        (old & !0xffff_0000) | f | (((r - 1) as u64 & 0xffff) << 16),
                    );
                }
            }
        }
    }
    let mut out = unsafe { core::ptr::read_volatile(result) };
    if !ended {
        out |= (exec_flags::ENV_TRUNCATED as u64) << 32;
    }
    out as i64
}
