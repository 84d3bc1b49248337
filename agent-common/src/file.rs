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
    /// The path could not be read at syscall entry (its page was not
    /// faulted in yet) and was read at exit instead, after the kernel's own
    /// copy of the path had faulted the page in.
    pub const REREAD: u32 = 1 << 4;
    /// The path equals an exact path literal of an enabled rule
    /// ([`super::path_tag::EXACT_OPEN`]): rate-limited in the priority
    /// lane (`ratelimit::PRIORITY_LANE`), so a storm of opens of merely
    /// monitored paths cannot push it into a summary.
    pub const PRIORITY: u32 = 1 << 5;
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

/// Values of the path tries (`FILE_PREFIXES_*`, `FILE_SUFFIXES_*`): which
/// record kinds a monitored literal applies to. An LPM lookup returns only
/// the longest matching entry, so the agent ORs into every entry the tags of
/// the shorter entries it extends (`/etc/` tagged `CHANGE` and `/etc/shadow`
/// tagged `OPEN` give `/etc/shadow` both): the longest match carries every
/// kind that any matching literal applies to.
pub mod path_tag {
    /// The literal is monitored for `file_open`.
    pub const OPEN: u32 = 1 << 0;
    /// The literal is monitored for `file_change`.
    pub const CHANGE: u32 = 1 << 1;
    /// The entry itself is an exact path (`==`, `in`) of an enabled
    /// `file_open` rule. Not inherited by longer entries: it applies only
    /// when the whole path equals the entry, which the kernel checks with
    /// the entry's length stored at [`LEN_SHIFT`].
    pub const EXACT_OPEN: u32 = 1 << 2;
    /// Bits `LEN_SHIFT..LEN_SHIFT + 8` of an `EXACT_OPEN` entry's value:
    /// the entry's length in bytes (an LPM lookup does not say how long
    /// the matching entry was).
    pub const LEN_SHIFT: u32 = 16;
    /// The kind bits (inherited by longer entries).
    pub const KINDS: u32 = OPEN | CHANGE;
}

/// `FileChangeEvent::op`: the syscall (the agent names the operation:
/// unlink, rename, chmod, chown, link, symlink, mknod, truncate).
pub mod change_op {
    pub const UNLINK: u32 = 1;
    pub const UNLINKAT: u32 = 2;
    pub const RENAME: u32 = 3;
    pub const RENAMEAT: u32 = 4;
    pub const RENAMEAT2: u32 = 5;
    pub const CHMOD: u32 = 6;
    pub const FCHMOD: u32 = 7;
    pub const FCHMODAT: u32 = 8;
    pub const FCHMODAT2: u32 = 9;
    pub const CHOWN: u32 = 10;
    pub const LCHOWN: u32 = 11;
    pub const FCHOWN: u32 = 12;
    pub const FCHOWNAT: u32 = 13;
    pub const LINK: u32 = 14;
    pub const LINKAT: u32 = 15;
    pub const SYMLINK: u32 = 16;
    pub const SYMLINKAT: u32 = 17;
    pub const MKNOD: u32 = 18;
    pub const MKNODAT: u32 = 19;
    pub const TRUNCATE: u32 = 20;
}

/// `FileChangeEvent::matched` bits (beyond [`file_match`]'s).
pub mod change_match {
    /// `path2` matched a monitored prefix or suffix (rename/link/symlink).
    pub const PATH2: u32 = 1 << 8;
    /// Reported for its mode whatever the path: a chmod that sets the
    /// setuid or setgid bit.
    pub const SETID_MODE: u32 = 1 << 9;
    /// Reported whatever the path: every mknod (rare; device nodes and
    /// FIFOs both matter).
    pub const MKNOD: u32 = 1 << 10;
    /// `path2` was longer than [`super::FILE_PATH_MAX`] - 1 bytes.
    pub const PATH2_TRUNCATED: u32 = 1 << 11;
}

/// `S_ISUID | S_ISGID`.
pub const SETID_BITS: u32 = 0o6000;

/// A change to the file system of a monitored path (or a setuid/setgid
/// chmod, or any mknod), written at syscall exit with the result.
///
/// `path` and `path2` are the syscall's path arguments in order
/// (rename/link: old then new; symlink: the target text then the link
/// created); `path2` is empty for the other syscalls.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileChangeEvent {
    pub header: EventHeader,
    /// 0 or a negative errno.
    pub result: i64,
    /// See [`change_op`].
    pub op: u32,
    /// The directory fd (`AT_FDCWD` = -100), or the fd of fchmod/fchown;
    /// 0 when the syscall takes none.
    pub dirfd: i32,
    /// chmod: the new mode; mknod: type and permission bits.
    pub mode: u32,
    /// chown: the new owner (`u32::MAX`: unchanged).
    pub uid: u32,
    pub gid: u32,
    /// Flags argument (unlinkat, renameat2, linkat, fchownat, fchmodat2).
    pub flags: u32,
    /// mknod: the device number (`dev_t` as the syscall takes it).
    pub dev: u64,
    /// truncate: the new length.
    pub length: i64,
    /// See [`file_match`] and [`change_match`].
    pub matched: u32,
    /// Bytes in `path` and `path2`, without the NUL.
    pub path_len: u32,
    pub path2_len: u32,
    pub _pad: u32,
    pub path: [u8; FILE_PATH_MAX],
    pub path2: [u8; FILE_PATH_MAX],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for FileChangeEvent {}
