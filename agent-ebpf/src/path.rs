//! Resolving a `struct path` to a string by walking dentries and mounts.
//!
//! `bpf_d_path` is not allowed from tracepoints, so the walk is done by hand:
//! from the leaf dentry up to the root of its mount, then across to the
//! mountpoint in the parent mount, until the root mount of the task's mount
//! namespace. Components are written leaf-first (`ls\0bin\0usr\0`); the agent
//! reverses them. Offsets into the buffer are masked so the verifier can prove
//! every write stays in bounds.

use agent_common::process::{PATH_BUF, PATH_COMPONENT_MAX, PATH_MAX_DEPTH, PATH_OFF_MASK};
use aya_ebpf::{helpers::generated::bpf_probe_read_kernel_str, macros::map, maps::PerCpuArray};

use crate::kernel::{bound, off, read_ptr};

/// Outcome of a path walk.
pub struct Walk {
    /// Bytes written to the buffer.
    pub len: u32,
    /// The walk stopped before reaching the root (too deep or too long).
    pub truncated: bool,
}

/// Per-CPU output buffers of [`picket_walk_path`], one per slot (a program
/// that resolves two paths uses two slots).
#[map]
pub static PATH_SCRATCH: PerCpuArray<[u8; PATH_BUF]> = PerCpuArray::with_max_entries(PATH_SLOTS, 0);

/// Slots of [`PATH_SCRATCH`].
pub const PATH_SLOTS: u32 = 2;

/// Bit of [`picket_walk_path`]'s result: the walk stopped before the root.
pub const WALK_TRUNCATED: i64 = 1 << 32;

/// Walks the `struct path` at kernel address `path` into this CPU's
/// `PATH_SCRATCH[slot]`. Returns the length, `| WALK_TRUNCATED` when the walk
/// stopped early, or -1.
///
/// A *global* function on purpose (`no_mangle`, `extern "C"`, never inlined,
/// scalar arguments only): the verifier checks a global function once, on its
/// own, instead of once per state of every caller. Inlined, the walk's loop
/// multiplied the states of the programs that resolve paths (`sched_process_exec`
/// walks two, `contain_exec` one, followed by a byte loop), which pushed them past
/// the 1M-instruction budget of the 5.10 and 6.1 verifiers. Kernels 5.6+ accept
/// global functions whose arguments are scalars or the context, never other
/// pointers before 6.x: hence `u64` for the kernel pointer (only ever read
/// with `bpf_probe_read_kernel`) and a per-CPU map for the output. See
/// docs/kernels.md.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn picket_walk_path(path: u64, slot: u32) -> i64 {
    let Some(buf) = PATH_SCRATCH.get_ptr_mut(slot) else {
        return -1;
    };
    match walk(path as *const u8, buf as *mut u8) {
        Some(w) => w.len as i64 | if w.truncated { WALK_TRUNCATED } else { 0 },
        None => -1,
    }
}

/// The buffer [`picket_walk_path`] wrote for `slot` on this CPU.
#[inline(always)]
pub fn scratch(slot: u32) -> Option<*const u8> {
    PATH_SCRATCH.get_ptr(slot).map(|p| p as *const u8)
}

/// Walks `path` (a `struct path *`) into `buf` (at least `PATH_BUF` bytes).
/// Returns `None` when the offsets are unknown or a pointer read fails.
#[inline(always)]
pub fn walk(path: *const u8, buf: *mut u8) -> Option<Walk> {
    let mount_mnt = off!(mount_mnt);
    let mut vfsmnt = read_ptr(path, off!(path_mnt))?;
    let mut dentry = read_ptr(path, off!(path_dentry))?;
    let mut mnt = vfsmnt.wrapping_sub(mount_mnt as usize);
    let d_name = off!(dentry_d_name);
    let qstr_name = off!(qstr_name);
    let mut len: usize = 0;
    let mut done = false;
    let mut truncated = false;

    for _ in 0..PATH_MAX_DEPTH {
        let mnt_root = read_ptr(vfsmnt, off!(vfsmount_mnt_root))?;
        if dentry == mnt_root {
            // Top of this mount: continue at the mountpoint in the parent.
            let parent_mnt = read_ptr(mnt, off!(mount_mnt_parent))?;
            if parent_mnt == mnt {
                done = true;
                break;
            }
            dentry = read_ptr(mnt, off!(mount_mnt_mountpoint))?;
            mnt = parent_mnt;
            vfsmnt = mnt.wrapping_add(mount_mnt as usize);
            continue;
        }
        let parent = read_ptr(dentry, off!(dentry_d_parent))?;
        let name = read_ptr(dentry.wrapping_add(d_name as usize), qstr_name)?;
        let at = bound::<{ PATH_OFF_MASK as u64 }>(len);
        // SAFETY: `at + PATH_COMPONENT_MAX <= PATH_BUF` by construction of
        // the constants; the helper never writes more than its size argument.
        let n = unsafe {
            bpf_probe_read_kernel_str(
                buf.wrapping_add(at) as *mut _,
                PATH_COMPONENT_MAX as u32,
                name as *const _,
            )
        };
        if n <= 0 {
            return None;
        }
        len = at + n as usize;
        if parent == dentry {
            // A disconnected or pseudo-filesystem dentry (memfd, pipe): its
            // own name is all there is.
            done = true;
            break;
        }
        if len > PATH_OFF_MASK {
            truncated = true;
            break;
        }
        dentry = parent;
    }
    Some(Walk {
        len: len as u32,
        truncated: truncated || !done,
    })
}
