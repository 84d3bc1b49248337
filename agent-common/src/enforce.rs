//! Containment in the kernel: compiled kill rules and egress policies.
//!
//! # Kill rules (`sched_process_exec`)
//! Up to [`MAX_KILL_RULES`] rules, each one bit of a `u64`. A rule is a
//! conjunction of optional conditions; every condition map answers with the
//! mask of the rules it satisfies, so the program decides all rules with a few
//! lookups and bitwise ANDs (no per-rule loop for the verifier to unroll):
//! - executable, exact: `KILL_EXE` hash, key = [`exe_key`] of the path;
//! - executable, under a directory: `KILL_EXE_PREFIX` LPM trie on the same key
//!   (each entry's mask also holds the rules of every shorter prefix, so the
//!   longest match answers for all of them);
//! - argv prefix: `KILL_ARGV` LPM trie on the NUL-joined argv (same trick);
//! - scope: `ENFORCE_CGROUPS` entries for the task's cgroup and its ancestors
//!   (rules scoped to that subtree, container roots, protected subtrees), plus
//!   the "anywhere" and "any container" masks of [`KillConfig`].
//!
//! # Executable keys
//! The kernel resolves the executable by walking dentries leaf-first
//! (`nc\0bin\0usr\0`). Reversing those bytes gives `\0rsu\0nib\0cn`: the
//! root-first path with each component reversed and framed by NULs. A
//! directory `/usr/` becomes the byte prefix `\0rsu\0`, so "is under /usr/" is
//! a plain byte-prefix match, which an LPM trie answers in one lookup.
//!
//! # Egress policies (`cgroup_sock_addr`)
//! `EGRESS_POLICY[cgroup id]` applies to the cgroup and its descendants (the
//! programs are attached to the same cgroup). Destination lists are LPM tries
//! keyed by (cgroup id, port, address); port 0 in a rule means any port.

use crate::EventHeader;

/// Number of kill rules (bits of a `u64` mask).
pub const MAX_KILL_RULES: u32 = 64;
/// Bytes of an executable key ([`exe_key`]); the LPM trie's maximum data size.
pub const EXE_KEY_LEN: usize = 256;
/// Bytes of argv compared by argv-prefix rules.
pub const ARGV_KEY_LEN: usize = 128;
/// Deepest cgroup level examined (ancestors of the task's cgroup).
pub const MAX_CGROUP_LEVELS: i32 = 16;
/// Header `kind` of an [`EnforceEvent`] in the `ENFORCE_EVENTS` ring buffer.
/// Containment records have their own ring (an audit trail must not compete
/// with telemetry for space), so this value lives outside `EventKind`.
pub const ENFORCE_RECORD_KIND: u16 = 0x100;

/// Global switches and masks of the kill rules (one array entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KillConfig {
    /// Installed rules. Written last when installing, cleared first when
    /// removing, so a half-written rule never fires.
    pub active: u64,
    /// Rules that report what they would do and do not kill.
    pub dry_run: u64,
    /// Rules without an executable condition.
    pub no_exe: u64,
    /// Rules without an argv condition.
    pub no_argv: u64,
    /// Rules that apply to every process, the host's included (opt-in).
    pub scope_any: u64,
    /// Rules that apply in any container (below a container root cgroup).
    pub scope_container: u64,
    /// The agent's own tgid: never killed.
    pub agent_tgid: u32,
    /// `mm_struct.arg_start` / `arg_end` offsets (from BTF); `u32::MAX`
    /// disables argv conditions.
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// The cgroup ancestry of the current task, for `contain_exec_ancestry`
    /// (kernels whose tracepoints lack `bpf_get_current_ancestor_cgroup_id`,
    /// 5.10): `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.level`,
    /// `cgroup.ancestor_ids` (from BTF; `u32::MAX` when absent, and then
    /// that program never matches).
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_level: u32,
    pub cgroup_ancestor_ids: u32,
    /// `linux_binprm.file` (from BTF), for `contain_exec_lsm`; `u32::MAX`
    /// leaves every exec to the kill at `sched_process_exec`.
    pub bprm_file: u32,
}

/// `CgroupEntry::flags` bits.
pub mod cgroup_flags {
    /// Processes below this cgroup are in a container (e.g. `kubepods`).
    pub const CONTAINER_ROOT: u32 = 1 << 0;
    /// Nothing below this cgroup is ever killed (the agent's own cgroup,
    /// protected pods).
    pub const PROTECTED: u32 = 1 << 1;
    /// Below this cgroup (`kubepods`) processes belong to pods: the kernel
    /// kills only in a pod user space has cleared (fail-closed while the
    /// pod watch has not delivered a new pod yet).
    pub const POD_ROOT: u32 = 1 << 2;
    /// A pod cgroup whose pod is known and not protected.
    pub const CLEARED: u32 = 1 << 3;
}

/// What the kernel knows about one cgroup (applies to its subtree).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupEntry {
    /// Rules scoped to this subtree.
    pub rules: u64,
    /// [`cgroup_flags`].
    pub flags: u32,
    pub _pad: u32,
}

/// `EnforceEvent::action` values.
pub mod enforce_action {
    /// `bpf_send_signal(SIGKILL)` succeeded.
    pub const KILLED: u32 = 1;
    /// The rule is in dry-run: nothing was done.
    pub const DRY_RUN: u32 = 2;
    /// `bpf_send_signal` failed (`signal_ret` has the error).
    pub const SIGNAL_FAILED: u32 = 3;
    /// A rule matched in a protected cgroup subtree (a protected pod, the
    /// agent's own cgroup): nothing was done. User space finds which
    /// protected ancestor it was from the record's cgroup.
    pub const REFUSED_PROTECTED: u32 = 4;
    /// Not killed: the process is in a pod user space has not cleared yet
    /// (below a `POD_ROOT`, neither `CLEARED` nor `PROTECTED`); user space
    /// decides once it knows the pod.
    pub const REFUSED_UNKNOWN_POD: u32 = 5;
    /// The BPF LSM denied the exec (`bprm_check_security` returned
    /// -EPERM): the new program never ran, `execve` failed in the caller
    /// (whose pid the record carries).
    pub const DENIED: u32 = 6;
}

/// `EnforceEvent::flags` bits.
pub mod enforce_flags {
    /// The executable path could not be resolved or was longer than a key.
    pub const EXE_UNKNOWN: u32 = 1 << 0;
    /// argv could not be read.
    pub const ARGV_UNKNOWN: u32 = 1 << 1;
}

/// A kill rule fired at `sched_process_exec`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnforceEvent {
    /// `kind` is [`ENFORCE_RECORD_KIND`]; pid/cgroup of the killed task.
    pub header: EventHeader,
    /// Index of the (lowest-numbered) rule that matched.
    pub rule: u32,
    /// [`enforce_action`].
    pub action: u32,
    /// Every rule that matched.
    pub matched: u64,
    /// Return value of `bpf_send_signal` (0 on success).
    pub signal_ret: i64,
    /// [`enforce_flags`].
    pub flags: u32,
    /// Valid bytes of `exe`.
    pub exe_len: u32,
    pub comm: [u8; 16],
    /// The executable as an [`exe_key`] (reversed leaf-first components).
    pub exe: [u8; EXE_KEY_LEN],
}

/// `EgressPolicy::mode` values.
pub mod egress_mode {
    /// Every connect/sendmsg is refused.
    pub const DENY_ALL: u32 = 1;
    /// Only port 53 (DNS) is allowed; to the listed servers when the policy
    /// has `DNS_SERVERS_LISTED`, else to any address.
    pub const ALLOW_DNS: u32 = 2;
    /// Only the listed destinations are refused.
    pub const DENY_LISTED: u32 = 3;
}

/// `EgressPolicy::flags` bits.
pub mod egress_flags {
    /// In `ALLOW_DNS` mode, DNS is allowed only to destinations in the lists.
    pub const DNS_SERVERS_LISTED: u32 = 1 << 0;
}

/// Egress policy of a cgroup subtree.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    pub mode: u32,
    pub flags: u32,
}

/// LPM data of an IPv4 destination rule: 64 bits of cgroup id, 16 bits of
/// port (network order, 0 = any) then the address bits. Byte arrays only, so
/// there is no padding for the trie to compare.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Egress4 {
    pub cgroup: [u8; 8],
    pub port: [u8; 2],
    pub addr: [u8; 4],
}

/// IPv6 counterpart of [`Egress4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Egress6 {
    pub cgroup: [u8; 8],
    pub port: [u8; 2],
    pub addr: [u8; 16],
}

/// Bits of an LPM key before the address: cgroup id and port.
pub const EGRESS_FIXED_BITS: u32 = 80;

/// Indexes of the `EGRESS_STATS` per-CPU counters.
pub mod egress_stat {
    pub const DENIED_CONNECT4: u32 = 0;
    pub const DENIED_CONNECT6: u32 = 1;
    pub const DENIED_SENDMSG4: u32 = 2;
    pub const DENIED_SENDMSG6: u32 = 3;
    pub const ALLOWED: u32 = 4;
    /// Kill records that could not be written (ring buffer full).
    pub const ENFORCE_LOST: u32 = 5;
    pub const COUNT: u32 = 8;
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::KillConfig {}
    unsafe impl aya::Pod for super::CgroupEntry {}
    unsafe impl aya::Pod for super::EnforceEvent {}
    unsafe impl aya::Pod for super::EgressPolicy {}
    unsafe impl aya::Pod for super::Egress4 {}
    unsafe impl aya::Pod for super::Egress6 {}
}

/// The key of an absolute executable path, as the kernel computes it: the
/// leaf-first component list (`nc\0bin\0usr\0`) reversed byte by byte
/// (`\0rsu\0nib\0cn`). Returns the number of bytes written, or `None` when
/// the path is not absolute, has an empty, `.` or `..` component, or does not
/// fit. With `dir = true` the key is the prefix matching everything under the
/// directory (it ends with the separator NUL).
pub fn exe_key(path: &[u8], dir: bool, out: &mut [u8; EXE_KEY_LEN]) -> Option<usize> {
    let rest = path.strip_prefix(b"/")?;
    let rest = if dir {
        rest.strip_suffix(b"/").unwrap_or(rest)
    } else {
        rest
    };
    *out = [0; EXE_KEY_LEN];
    let mut n = 0;
    if rest.is_empty() {
        // "/" as a directory: every path (the key is the root separator).
        if !dir {
            return None;
        }
        out[0] = 0;
        return Some(1);
    }
    for comp in rest.split(|&b| b == b'/') {
        if comp.is_empty() || comp == b"." || comp == b".." || comp.contains(&0) {
            return None;
        }
        if n + 1 + comp.len() > EXE_KEY_LEN {
            return None;
        }
        out[n] = 0;
        n += 1;
        for (i, b) in comp.iter().rev().enumerate() {
            out[n + i] = *b;
        }
        n += comp.len();
    }
    if dir {
        if n + 1 > EXE_KEY_LEN {
            return None;
        }
        out[n] = 0;
        n += 1;
    }
    Some(n)
}
