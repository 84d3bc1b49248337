//! Process lifecycle records: exec, fork, exit.

use crate::EventHeader;

/// Maximum bytes of argv copied (NUL-separated arguments).
pub const ARGV_MAX: usize = 1024;
/// Maximum number of arguments copied.
pub const ARGV_MAX_ARGS: usize = 16;
/// Size of a path buffer. Paths are written leaf-first, one NUL-terminated
/// component after another (`ls\0bin\0usr\0`), because the kernel walks
/// dentries from the leaf up; userspace reverses them.
pub const PATH_BUF: usize = 1024;
/// Offsets into a path buffer are masked with this (must be a power of two
/// minus one, and `PATH_COMPONENT_MAX + PATH_OFF_MASK < PATH_BUF`) so the
/// verifier can prove every write stays inside the buffer.
pub const PATH_OFF_MASK: usize = 511;
/// Longest single path component read (NAME_MAX + NUL).
pub const PATH_COMPONENT_MAX: usize = 256;
/// Maximum dentries walked per path.
pub const PATH_MAX_DEPTH: usize = 32;
/// Bytes of the filename as passed to execve (from the tracepoint).
pub const FILENAME_MAX: usize = 256;
/// Bytes of a captured environment variable's value (with the NUL).
pub const ENV_VALUE_MAX: usize = 256;
/// Environment entries the kernel scans at exec for the variables it
/// captures (`LD_PRELOAD`, `LD_LIBRARY_PATH`); more set
/// `exec_flags::ENV_TRUNCATED` and the agent completes from
/// `/proc/<pid>/environ`.
pub const ENV_SCAN_MAX: usize = 128;

/// `ExecEvent::flags` bits.
pub mod exec_flags {
    /// More than `ARGV_MAX_ARGS` arguments or more than `ARGV_MAX` bytes.
    pub const ARGV_TRUNCATED: u32 = 1 << 0;
    /// No argv was captured (no matching execve entry was seen).
    pub const ARGV_MISSING: u32 = 1 << 1;
    pub const EXE_TRUNCATED: u32 = 1 << 2;
    pub const CWD_TRUNCATED: u32 = 1 << 3;
    /// The executable path could not be resolved (missing offsets/fault).
    pub const EXE_MISSING: u32 = 1 << 4;
    pub const CWD_MISSING: u32 = 1 << 5;
    /// Credential fields are unknown (offsets missing on this kernel).
    pub const CREDS_MISSING: u32 = 1 << 6;
    /// Namespace fields are unknown.
    pub const NS_MISSING: u32 = 1 << 7;
    /// fd 0..2 file types are unknown.
    pub const STDIO_MISSING: u32 = 1 << 8;
    /// Exec came through execveat(2) (e.g. fileless exec of a memfd).
    pub const EXECVEAT: u32 = 1 << 9;
    pub const FILENAME_TRUNCATED: u32 = 1 << 10;
    pub const LOGINUID_MISSING: u32 = 1 << 11;
    /// `LD_PRELOAD` is set in the new program's environment (value in
    /// `ExecEvent::ld_preload`, possibly empty).
    pub const LD_PRELOAD: u32 = 1 << 12;
    /// `LD_LIBRARY_PATH` is set (value in `ExecEvent::ld_library_path`).
    pub const LD_LIBRARY_PATH: u32 = 1 << 13;
    /// The environment has more than `ENV_SCAN_MAX` entries: a variable
    /// after them was not looked at.
    pub const ENV_TRUNCATED: u32 = 1 << 14;
    /// A captured value was longer than `ENV_VALUE_MAX` - 1 bytes.
    pub const ENV_VALUE_TRUNCATED: u32 = 1 << 15;
    /// The environment could not be read (offsets missing or a fault).
    pub const ENV_MISSING: u32 = 1 << 16;
    /// The executable's inode change time is unknown (offsets missing on
    /// this kernel, or the read faulted).
    pub const EXE_CTIME_MISSING: u32 = 1 << 17;
}

/// Credentials of a task (from `task->cred`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub suid: u32,
    pub sgid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
    /// `audit loginuid` (u32::MAX when unset).
    pub loginuid: u32,
    pub _pad: u32,
    pub cap_effective: u64,
    pub cap_permitted: u64,
    pub cap_inheritable: u64,
}

/// Namespaces of a task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Namespaces {
    /// Nesting level of the task's pid namespace (0 = initial namespace).
    pub pidns_level: u32,
    /// Inode number of the task's pid namespace.
    pub pidns_inum: u32,
    /// The task's pid as seen inside its own pid namespace.
    pub ns_pid: u32,
    /// Inode number of the mount namespace.
    pub mntns_inum: u32,
}

/// File type of an open fd, for the stdio of a new program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StdioInfo {
    /// `inode->i_mode` of fds 0, 1, 2 (0 when the fd is closed).
    pub mode: [u16; 3],
    pub _pad: u16,
    /// `inode->i_rdev` of fd 0 (a character device's major:minor, kernel encoding).
    pub rdev0: u32,
    pub _pad2: u32,
}

/// A successful execve/execveat, written at `sched:sched_process_exec`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Real parent's tgid.
    pub ppid: u32,
    /// See [`exec_flags`].
    pub flags: u32,
    /// Real parent's start time (its thread-group leader), ns since boot.
    pub parent_start_boottime_ns: u64,
    pub creds: Creds,
    pub ns: Namespaces,
    pub stdio: StdioInfo,
    /// Number of arguments in `argv`.
    pub argc: u32,
    /// Valid bytes in `argv`.
    pub argv_len: u32,
    /// Valid bytes in `exe` and `cwd` (leaf-first component lists).
    pub exe_len: u32,
    pub cwd_len: u32,
    pub filename_len: u32,
    pub _pad: u32,
    /// Change time (`inode->i_ctime`, wall clock) of the executable file,
    /// read at exec from `mm->exe_file`: when it was last written, created,
    /// renamed or chmod'ed (user space cannot set it back, unlike mtime).
    pub exe_ctime_sec: i64,
    pub exe_ctime_nsec: u32,
    /// Bytes in `ld_preload` and `ld_library_path`, without the NUL.
    pub ld_preload_len: u32,
    pub ld_library_path_len: u32,
    pub _pad2: u32,
    /// The task's `comm` after exec.
    pub comm: [u8; 16],
    /// Filename as passed to execve (may be relative).
    pub filename: [u8; FILENAME_MAX],
    pub argv: [u8; ARGV_MAX],
    pub exe: [u8; PATH_BUF],
    pub cwd: [u8; PATH_BUF],
    /// Value of `LD_PRELOAD` in the new program's environment.
    pub ld_preload: [u8; ENV_VALUE_MAX],
    /// Value of `LD_LIBRARY_PATH`.
    pub ld_library_path: [u8; ENV_VALUE_MAX],
}

/// A new process (not a thread), written at `sched_process_fork`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkEvent {
    /// The header describes the parent (the task calling fork/clone).
    pub header: EventHeader,
    pub child_pid: u32,
    pub child_tid: u32,
    pub child_start_boottime_ns: u64,
    pub comm: [u8; 16],
}

/// The last thread of a process exited, written at `sched_process_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// Raw wait status: `(code << 8) | signal` (bit 7 = core dumped).
    pub exit_code: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}

/// Per-thread argv staged by `sys_enter_execve[at]`, consumed at exec.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ArgvStage {
    pub argc: u32,
    pub len: u32,
    pub flags: u32,
    pub _pad: u32,
    /// Twice `ARGV_MAX` so a masked offset plus one bounded read always fits.
    pub buf: [u8; ARGV_MAX * 2],
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::ExecEvent {}
    unsafe impl aya::Pod for super::ForkEvent {}
    unsafe impl aya::Pod for super::ExitEvent {}
    unsafe impl aya::Pod for super::ArgvStage {}
}
