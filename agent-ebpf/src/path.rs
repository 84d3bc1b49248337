//! Resolving a `struct path` to a string by walking dentries and mounts.
//!
//! `bpf_d_path` is not allowed from tracepoints, so the walk is done by hand:
//! from the leaf dentry up to the root of its mount, then across to the
//! mountpoint in the parent mount, until the root mount of the task's mount
//! namespace. Components are written leaf-first (`ls\0bin\0usr\0`); the agent
//! reverses them. Offsets into the buffer are masked so the verifier can prove
//! every write stays in bounds.

use agent_common::process::{PATH_COMPONENT_MAX, PATH_MAX_DEPTH, PATH_OFF_MASK};
use aya_ebpf::helpers::generated::bpf_probe_read_kernel_str;

use crate::kernel::{off, read_ptr};

/// Outcome of a path walk.
pub struct Walk {
    /// Bytes written to the buffer.
    pub len: u32,
    /// The walk stopped before reaching the root (too deep or too long).
    pub truncated: bool,
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
        let at = len & PATH_OFF_MASK;
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
