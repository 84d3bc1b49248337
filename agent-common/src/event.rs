//! The record header and the event kinds.

/// Kinds of records in the ring buffer. The numeric values are the wire
/// format and index the per-kind loss counters: never renumber them.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    Capability = 4,
    PrivilegeChange = 5,
    Mount = 6,
    Connect = 7,
    Send = 8,
    Bind = 9,
    Listen = 10,
    Accept = 11,
    Namespace = 12,
    Ptrace = 13,
    Memfd = 14,
    ModuleLoad = 15,
    Bpf = 16,
    FdDup = 17,
    FileOpen = 18,
    RateSummary = 19,
    FileChange = 20,
    RawSocket = 21,
}

impl EventKind {
    /// Size of the per-kind counter arrays (loss counters). Larger than the
    /// highest kind so new kinds can be added without resizing maps.
    pub const COUNT: u32 = 32;

    pub fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(Self::Exec),
            2 => Some(Self::Fork),
            3 => Some(Self::Exit),
            4 => Some(Self::Capability),
            5 => Some(Self::PrivilegeChange),
            6 => Some(Self::Mount),
            7 => Some(Self::Connect),
            8 => Some(Self::Send),
            9 => Some(Self::Bind),
            10 => Some(Self::Listen),
            11 => Some(Self::Accept),
            12 => Some(Self::Namespace),
            13 => Some(Self::Ptrace),
            14 => Some(Self::Memfd),
            15 => Some(Self::ModuleLoad),
            16 => Some(Self::Bpf),
            17 => Some(Self::FdDup),
            18 => Some(Self::FileOpen),
            19 => Some(Self::RateSummary),
            20 => Some(Self::FileChange),
            21 => Some(Self::RawSocket),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Fork => "fork",
            Self::Exit => "exit",
            Self::Capability => "capability",
            Self::PrivilegeChange => "privilege_change",
            Self::Mount => "mount",
            Self::Connect => "connect",
            Self::Send => "send",
            Self::Bind => "bind",
            Self::Listen => "listen",
            Self::Accept => "accept",
            Self::Namespace => "namespace",
            Self::Ptrace => "ptrace",
            Self::Memfd => "memfd",
            Self::ModuleLoad => "module_load",
            Self::Bpf => "bpf",
            Self::FdDup => "fd_dup",
            Self::FileOpen => "file_open",
            Self::RateSummary => "rate_summary",
            Self::FileChange => "file_change",
            Self::RawSocket => "raw_socket",
        }
    }
}

/// Common prefix of every ring-buffer record.
///
/// `pid`/`tid`/`start_boottime_ns` identify the task that caused the event:
/// `start_boottime_ns` is the thread-group leader's start time, so
/// (`pid`, start time) names a process uniquely even across pid reuse.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u16,
    /// Record layout version for this kind (bumped on incompatible change).
    pub version: u16,
    /// Total size of the record in bytes, header included.
    pub size: u32,
    /// `bpf_ktime_get_boot_ns()` when the event was produced (CLOCK_BOOTTIME).
    pub ktime_ns: u64,
    /// Thread-group id (the userspace "pid").
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Start time of the thread-group leader, ns since boot (CLOCK_BOOTTIME).
    pub start_boottime_ns: u64,
    /// cgroup v2 id (inode of the cgroup directory) of the task.
    pub cgroup_id: u64,
}

impl EventHeader {
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for EventHeader {}
