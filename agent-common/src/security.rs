//! Capability checks and credential changes.

use crate::{EventHeader, process::Creds};

/// A capability check (`capability:cap_capable`), de-duplicated in the
/// kernel per (process, capability, result).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CapEvent {
    pub header: EventHeader,
    /// `CAP_*` number.
    pub cap: u32,
    /// 0 = allowed, else a negative errno (`-EPERM`).
    pub ret: i32,
    /// Nesting level of the user namespace the check was made against
    /// (0 = the initial user namespace), `u32::MAX` if unknown.
    pub user_ns_level: u32,
    pub _pad: u32,
}

/// `CredEvent::op`.
pub mod cred_op {
    pub const SETUID: u32 = 1;
    pub const SETGID: u32 = 2;
    pub const SETREUID: u32 = 3;
    pub const SETREGID: u32 = 4;
    pub const SETRESUID: u32 = 5;
    pub const SETRESGID: u32 = 6;
    pub const SETFSUID: u32 = 7;
    pub const SETFSGID: u32 = 8;
    pub const CAPSET: u32 = 9;
}

/// A set*id/capset call with the credentials before (read at syscall entry)
/// and after (read at exit), and the result.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CredEvent {
    pub header: EventHeader,
    pub result: i64,
    /// See [`cred_op`].
    pub op: u32,
    /// Bit 0: credentials unknown (offsets missing).
    pub flags: u32,
    /// Syscall arguments as passed (ids as signed ints, so -1 = unchanged).
    /// capset: requested effective, permitted, inheritable sets.
    pub args: [i64; 3],
    pub old: Creds,
    pub new: Creds,
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::CapEvent {}
    unsafe impl aya::Pod for super::CredEvent {}
}
