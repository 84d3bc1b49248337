//! Opens of monitored files, matched in the kernel.

use crate::EventHeader;

/// Bytes of a path as passed to open (the LPM trie key data size; 256 is
/// the kernel's maximum LPM key data size).
pub const FILE_PATH_MAX: usize = 256;

/// `FileOpenEvent::op`.
pub mod file_op {
    pub const OPEN: u32 = 1;
    pub const OPENAT: u32 = 2;
    pub const OPENAT2: u32 = 3;
}

/// `FileOpenEvent::matched` bits: which trie matched.
pub mod file_match {
    pub const PREFIX: u32 = 1 << 0;
    pub const SUFFIX: u32 = 1 << 1;
    /// The path was longer than [`super::FILE_PATH_MAX`] - 1 bytes.
    pub const TRUNCATED: u32 = 1 << 2;
    /// Path filtering was off (`settings::file_filter::ALL_PATHS`): the
    /// open was reported without consulting the tries.
    pub const UNFILTERED: u32 = 1 << 3;
}

/// An open(2)/openat(2)/openat2(2) of a path that matched a configured prefix
/// or suffix, written at syscall exit with the result.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileOpenEvent {
    pub header: EventHeader,
    /// The new fd, or a negative errno.
    pub result: i64,
    /// See [`file_op`].
    pub op: u32,
    /// Open flags (`O_WRONLY`, `O_TRUNC`, ...).
    pub flags: u32,
    pub mode: u32,
    /// The directory fd argument (`AT_FDCWD` = -100); 0 for open(2).
    pub dirfd: i32,
    /// See [`file_match`].
    pub matched: u32,
    /// Bytes in `path`, without the NUL.
    pub path_len: u32,
    pub path: [u8; FILE_PATH_MAX],
}

/// Key of the path tries (`struct bpf_lpm_trie_key` + data): `prefix_len` is
/// in bits. The prefix trie holds paths; the suffix trie holds reversed paths.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathKey {
    pub prefix_len: u32,
    pub data: [u8; FILE_PATH_MAX],
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::FileOpenEvent {}
    unsafe impl aya::Pod for super::PathKey {}
}
