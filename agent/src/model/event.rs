//! The enriched event.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::sections::*;

/// Kinds of enriched events, as named in JSON (`event.kind`) and in rules
/// (`events: [exec, connect]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKindName {
    /// A program started (execve/execveat succeeded).
    Exec,
    /// A new process (fork/clone without CLONE_THREAD).
    Fork,
    /// The last thread of a process exited.
    Exit,
    /// A capability check (`cap_capable`), de-duplicated per process and capability.
    Capability,
    /// setuid/setgid/setreuid/setresuid/setresgid/setfsuid/setfsgid/capset.
    PrivilegeChange,
    /// mount, umount2 and the new mount API.
    Mount,
    /// connect(2).
    Connect,
    /// sendto/sendmsg with an explicit destination.
    Send,
    /// bind(2).
    Bind,
    /// listen(2).
    Listen,
    /// accept/accept4.
    Accept,
    /// unshare/setns.
    Namespace,
    /// ptrace(2).
    Ptrace,
    /// memfd_create(2).
    Memfd,
    /// init_module/finit_module.
    ModuleLoad,
    /// bpf(2).
    Bpf,
    /// dup2/dup3 onto fds 0-2.
    FdDup,
    /// open/openat/openat2 of a monitored path.
    FileOpen,
    /// In-kernel rate limiting summarized events of one kind for a cgroup.
    RateSummary,
    /// The kernel could not deliver events (ring buffer full).
    EventsLost,
    /// The agent acted (or refused to act) on a threat: the audit record of
    /// a containment action, carried on the alert stream.
    Containment,
    /// unlink/rename/chmod/chown/link/symlink/mknod/truncate of a monitored
    /// path (any path for setuid/setgid chmods and mknod).
    FileChange,
    /// socket(2) of a packet (`AF_PACKET`) or raw (`SOCK_RAW`) socket.
    RawSocket,
}

impl EventKindName {
    pub const ALL: &'static [EventKindName] = &[
        Self::Exec,
        Self::Fork,
        Self::Exit,
        Self::Capability,
        Self::PrivilegeChange,
        Self::Mount,
        Self::Connect,
        Self::Send,
        Self::Bind,
        Self::Listen,
        Self::Accept,
        Self::Namespace,
        Self::Ptrace,
        Self::Memfd,
        Self::ModuleLoad,
        Self::Bpf,
        Self::FdDup,
        Self::FileOpen,
        Self::RateSummary,
        Self::EventsLost,
        Self::Containment,
        Self::FileChange,
        Self::RawSocket,
    ];

    /// The snake_case name used in JSON and rules.
    pub fn as_str(self) -> &'static str {
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
            Self::EventsLost => "events_lost",
            Self::Containment => "containment",
            Self::FileChange => "file_change",
            Self::RawSocket => "raw_socket",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKindName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `event.*`: what happened and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMeta {
    pub kind: EventKindName,
    /// Kernel timestamp (CLOCK_BOOTTIME ns); used for latency measurements.
    #[serde(default)]
    pub ktime_ns: u64,
}

/// `host.*`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    #[serde(default)]
    pub name: String,
}

/// One enriched event: the acting process, its container and pod, and the
/// kind-specific section (exactly one of the optional sections below is set
/// for kinds that have one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Wall-clock time of the event (RFC 3339).
    pub time: Timestamp,
    pub event: EventMeta,
    #[serde(default)]
    pub host: Host,
    /// The process that caused the event (for `fork`, the parent).
    #[serde(default)]
    pub process: Process,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<Thread>,
    /// Absent for host processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// Absent when the process is not in a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<K8s>,
    /// Syscall name and return value, for syscall-based kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<Syscall>,
    /// `fork`: the new child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<ChildProcess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<CapabilityUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privilege: Option<PrivilegeChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<MountOp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<NamespaceOp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptrace: Option<PtraceOp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memfd: Option<MemfdOp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<ModuleOp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf: Option<BpfOp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<FdDup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileAccess>,
    /// `file_change`: the operation and its arguments (`file` holds the path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_change: Option<FileChange>,
    /// `raw_socket`: the socket(2) arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<SocketOp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<RateSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<EventsLost>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containment: Option<ContainmentAudit>,
}

impl Event {
    /// A bare event of `kind` at `time` (sections empty). Used by decoders and tests.
    pub fn new(kind: EventKindName, time: Timestamp) -> Self {
        Self {
            time,
            event: EventMeta { kind, ktime_ns: 0 },
            host: Host::default(),
            process: Process::default(),
            thread: None,
            container: None,
            k8s: None,
            syscall: None,
            child: None,
            capability: None,
            privilege: None,
            mount: None,
            network: None,
            namespace: None,
            ptrace: None,
            memfd: None,
            module: None,
            bpf: None,
            fd: None,
            file: None,
            file_change: None,
            socket: None,
            summary: None,
            lost: None,
            containment: None,
        }
    }

    pub fn kind(&self) -> EventKindName {
        self.event.kind
    }
}
