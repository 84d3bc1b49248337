//! Loading and attaching the programs.

use std::{collections::BTreeMap, path::PathBuf};

use agent_common::settings::Settings;
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{KProbe, RawTracePoint, TracePoint},
};
use tracing::{info, warn};

use super::{EBPF_OBJECT, offsets, tracefs};

/// How a program attaches.
#[derive(Debug, Clone, Copy)]
pub enum Attach {
    /// `tracepoint/<category>/<name>` (regular, through tracefs).
    TracePoint {
        category: &'static str,
        name: &'static str,
    },
    /// A tracepoint program attached only when the program `fallback_for`
    /// (same hook) could not load: a variant that avoids what an older
    /// kernel lacks (a helper), idle where the preferred one runs.
    TracePointFallback {
        category: &'static str,
        name: &'static str,
        fallback_for: &'static str,
    },
    /// BPF LSM program on `bpf_lsm_<hook>`: loaded only where the BPF LSM
    /// is active (`bpf` in `/sys/kernel/security/lsm`), else
    /// `(hook absent)`.
    Lsm { hook: &'static str },
    /// `raw_tp/<name>`: gets the tracepoint's TP_PROTO arguments.
    RawTracePoint { name: &'static str },
    /// `kprobe/<function>` or `kretprobe/<function>` (from the program's ELF
    /// section), attached only when the program `fallback_for` could not
    /// attach: kprobes are not a stable ABI, so they stand in for a
    /// tracepoint that older kernels lack and stay idle where it exists.
    KProbe {
        function: &'static str,
        fallback_for: &'static str,
    },
    /// `cgroup_sock_addr` program (attach type from its ELF section): only
    /// loaded here; the containment engine (`crate::contain`) attaches it to
    /// the cgroups it contains, at action time.
    CgroupSockAddrOnDemand,
}

/// One program of the object.
#[derive(Debug, Clone, Copy)]
pub struct ProgramSpec {
    /// Function name in `agent-ebpf`.
    pub program: &'static str,
    /// The sensor (feature) it belongs to.
    pub sensor: &'static str,
    pub attach: Attach,
    /// Offsets without which the program cannot do its job at all.
    pub required_offsets: &'static [&'static str],
    /// What is lost when this program cannot run (for warnings and `doctor`).
    pub loss: &'static str,
}

/// Every program Picket loads, by sensor.
pub const PROGRAMS: &[ProgramSpec] = &[
    ProgramSpec {
        program: "sys_enter_execve",
        sensor: "process",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_execve",
        },
        required_offsets: &[],
        loss: "argv of execve(2) calls (exec events keep the path, flagged args missing)",
    },
    ProgramSpec {
        program: "sys_enter_execveat",
        sensor: "process",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_execveat",
        },
        required_offsets: &[],
        loss: "argv of execveat(2) calls",
    },
    ProgramSpec {
        program: "sched_process_exec",
        sensor: "process",
        attach: Attach::TracePoint {
            category: "sched",
            name: "sched_process_exec",
        },
        required_offsets: &[
            "task_tgid",
            "task_real_parent",
            "task_group_leader",
            "task_start_boottime",
        ],
        loss: "exec events (no program starts are seen)",
    },
    ProgramSpec {
        program: "sched_process_fork",
        sensor: "process",
        attach: Attach::RawTracePoint {
            name: "sched_process_fork",
        },
        required_offsets: &[
            "task_pid",
            "task_tgid",
            "task_group_leader",
            "task_start_boottime",
        ],
        loss: "fork events (ancestry of processes that fork without exec)",
    },
    ProgramSpec {
        program: "sched_process_exit",
        sensor: "process",
        attach: Attach::TracePoint {
            category: "sched",
            name: "sched_process_exit",
        },
        required_offsets: &["task_tgid", "task_group_leader", "task_start_boottime"],
        loss: "exit events (processes stay in the cache until evicted)",
    },
    ProgramSpec {
        program: "contain_exec",
        sensor: "containment",
        attach: Attach::TracePoint {
            category: "sched",
            name: "sched_process_exec",
        },
        required_offsets: &[
            "task_tgid",
            "task_mm",
            "mm_exe_file",
            "file_f_path",
            "path_dentry",
            "path_mnt",
        ],
        loss: "in-kernel kill-process rules (kills fall back to userspace, after the program started)",
    },
    // Kill rules as an exec deny where the BPF LSM is active: see
    // docs/containment.md.
    ProgramSpec {
        program: "contain_exec_lsm",
        sensor: "containment",
        attach: Attach::Lsm {
            hook: "bprm_check_security",
        },
        required_offsets: &["task_tgid", "file_f_path", "path_dentry", "path_mnt"],
        loss: "exec denied before the program runs (kill-process rules kill at exec instead)",
    },
    // contain_exec where its helper is absent (5.10): see docs/kernels.md.
    ProgramSpec {
        program: "contain_exec_ancestry",
        sensor: "containment",
        attach: Attach::TracePointFallback {
            category: "sched",
            name: "sched_process_exec",
            fallback_for: "contain_exec",
        },
        required_offsets: &[
            "task_tgid",
            "task_mm",
            "mm_exe_file",
            "file_f_path",
            "path_dentry",
            "path_mnt",
        ],
        loss: "in-kernel kill-process rules (kills fall back to userspace, after the program started)",
    },
    ProgramSpec {
        program: "contain_connect4",
        sensor: "containment",
        attach: Attach::CgroupSockAddrOnDemand,
        required_offsets: &[],
        loss: "block-egress for IPv4 connect(2)",
    },
    ProgramSpec {
        program: "contain_connect6",
        sensor: "containment",
        attach: Attach::CgroupSockAddrOnDemand,
        required_offsets: &[],
        loss: "block-egress for IPv6 connect(2)",
    },
    ProgramSpec {
        program: "contain_sendmsg4",
        sensor: "containment",
        attach: Attach::CgroupSockAddrOnDemand,
        required_offsets: &[],
        loss: "block-egress for IPv4 UDP sendmsg(2)",
    },
    ProgramSpec {
        program: "contain_sendmsg6",
        sensor: "containment",
        attach: Attach::CgroupSockAddrOnDemand,
        required_offsets: &[],
        loss: "block-egress for IPv6 UDP sendmsg(2)",
    }, // Syscall sensors (issue 3): agent-ebpf/src/{net,file,creds,nsctl,mount}.rs.
    ProgramSpec {
        program: "sys_enter_connect",
        sensor: "network",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_connect",
        },
        required_offsets: &[
            "task_files",
            "files_struct_fdt",
            "fdtable_fd",
            "fdtable_max_fds",
            "file_f_inode",
            "inode_i_mode",
            "file_private_data",
            "socket_sk",
        ],
        loss: "connect events (outbound connections, with result)",
    },
    ProgramSpec {
        program: "sys_exit_connect",
        sensor: "network",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_connect",
        },
        required_offsets: &[
            "task_files",
            "files_struct_fdt",
            "fdtable_fd",
            "fdtable_max_fds",
            "file_f_inode",
            "inode_i_mode",
            "file_private_data",
            "socket_sk",
        ],
        loss: "connect events (outbound connections, with result)",
    },
    ProgramSpec {
        program: "sys_enter_sendto",
        sensor: "network",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_sendto",
        },
        required_offsets: &[
            "task_files",
            "files_struct_fdt",
            "fdtable_fd",
            "fdtable_max_fds",
            "file_f_inode",
            "inode_i_mode",
            "file_private_data",
            "socket_sk",
        ],
        loss: "send events for sendto(2) with a destination (UDP egress, DNS)",
    },
    ProgramSpec {
        program: "sys_exit_sendto",
        sensor: "network",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_sendto",
        },
        required_offsets: &[
            "task_files",
            "files_struct_fdt",
            "fdtable_fd",
            "fdtable_max_fds",
            "file_f_inode",
            "inode_i_mode",
            "file_private_data",
            "socket_sk",
        ],
        loss: "send events for sendto(2) with a destination (UDP egress, DNS)",
    },
    ProgramSpec {
        program: "sys_enter_sendmsg",
        sensor: "network",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_sendmsg",
        },
        required_offsets: &[
            "task_files",
            "files_struct_fdt",
            "fdtable_fd",
            "fdtable_max_fds",
            "file_f_inode",
            "inode_i_mode",
            "file_private_data",
            "socket_sk",
        ],
        loss: "send events for sendmsg(2) with a destination",
    },
    ProgramSpec {
        program: "sys_exit_sendmsg",
        sensor: "network",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_sendmsg",
        },
        required_offsets: &[
            "task_files",
            "files_struct_fdt",
            "fdtable_fd",
            "fdtable_max_fds",
            "file_f_inode",
            "inode_i_mode",
            "file_private_data",
            "socket_sk",
        ],
        loss: "send events for sendmsg(2) with a destination",
    },
    ProgramSpec {
        program: "sys_enter_bind",
        sensor: "network",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_bind",
        },
        required_offsets: &[
            "task_files",
            "files_struct_fdt",
            "fdtable_fd",
            "fdtable_max_fds",
            "file_f_inode",
            "inode_i_mode",
            "file_private_data",
            "socket_sk",
        ],
        loss: "bind events",
    },
    ProgramSpec {
        program: "sys_exit_bind",
        sensor: "network",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_bind",
        },
        required_offsets: &[
            "task_files",
            "files_struct_fdt",
            "fdtable_fd",
            "fdtable_max_fds",
            "file_f_inode",
            "inode_i_mode",
            "file_private_data",
            "socket_sk",
        ],
        loss: "bind events",
    },
    ProgramSpec {
        program: "sys_enter_listen",
        sensor: "network",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_listen",
        },
        required_offsets: &[
            "task_files",
            "files_struct_fdt",
            "fdtable_fd",
            "fdtable_max_fds",
            "file_f_inode",
            "inode_i_mode",
            "file_private_data",
            "socket_sk",
        ],
        loss: "listen events (listening sockets)",
    },
    ProgramSpec {
        program: "sys_exit_listen",
        sensor: "network",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_listen",
        },
        required_offsets: &[
            "task_files",
            "files_struct_fdt",
            "fdtable_fd",
            "fdtable_max_fds",
            "file_f_inode",
            "inode_i_mode",
            "file_private_data",
            "socket_sk",
        ],
        loss: "listen events (listening sockets)",
    },
    ProgramSpec {
        program: "sys_enter_accept",
        sensor: "network",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_accept",
        },
        required_offsets: &[
            "task_files",
            "files_struct_fdt",
            "fdtable_fd",
            "fdtable_max_fds",
            "file_f_inode",
            "inode_i_mode",
            "file_private_data",
            "socket_sk",
        ],
        loss: "accept events from accept(2)",
    },
    ProgramSpec {
        program: "sys_exit_accept",
        sensor: "network",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_accept",
        },
        required_offsets: &[
            "task_files",
            "files_struct_fdt",
            "fdtable_fd",
            "fdtable_max_fds",
            "file_f_inode",
            "inode_i_mode",
            "file_private_data",
            "socket_sk",
        ],
        loss: "accept events from accept(2)",
    },
    ProgramSpec {
        program: "sys_enter_accept4",
        sensor: "network",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_accept4",
        },
        required_offsets: &[
            "task_files",
            "files_struct_fdt",
            "fdtable_fd",
            "fdtable_max_fds",
            "file_f_inode",
            "inode_i_mode",
            "file_private_data",
            "socket_sk",
        ],
        loss: "accept events from accept4(2)",
    },
    ProgramSpec {
        program: "sys_exit_accept4",
        sensor: "network",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_accept4",
        },
        required_offsets: &[
            "task_files",
            "files_struct_fdt",
            "fdtable_fd",
            "fdtable_max_fds",
            "file_f_inode",
            "inode_i_mode",
            "file_private_data",
            "socket_sk",
        ],
        loss: "accept events from accept4(2)",
    },
    ProgramSpec {
        program: "sys_enter_openat",
        sensor: "file",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_openat",
        },
        required_offsets: &[],
        loss: "file_open events from openat(2)",
    },
    ProgramSpec {
        program: "sys_exit_openat",
        sensor: "file",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_openat",
        },
        required_offsets: &[],
        loss: "file_open events from openat(2)",
    },
    ProgramSpec {
        program: "sys_enter_openat2",
        sensor: "file",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_openat2",
        },
        required_offsets: &[],
        loss: "file_open events from openat2(2)",
    },
    ProgramSpec {
        program: "sys_exit_openat2",
        sensor: "file",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_openat2",
        },
        required_offsets: &[],
        loss: "file_open events from openat2(2)",
    },
    ProgramSpec {
        program: "sys_enter_open",
        sensor: "file",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_open",
        },
        required_offsets: &[],
        loss: "file_open events from open(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_exit_open",
        sensor: "file",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_open",
        },
        required_offsets: &[],
        loss: "file_open events from open(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_enter_process_vm_readv",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_process_vm_readv",
        },
        required_offsets: &[],
        loss: "ptrace events from process_vm_readv(2) (reading another process's memory)",
    },
    ProgramSpec {
        program: "sys_exit_process_vm_readv",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_process_vm_readv",
        },
        required_offsets: &[],
        loss: "ptrace events from process_vm_readv(2) (reading another process's memory)",
    },
    ProgramSpec {
        program: "sys_enter_process_vm_writev",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_process_vm_writev",
        },
        required_offsets: &[],
        loss: "ptrace events from process_vm_writev(2)",
    },
    ProgramSpec {
        program: "sys_exit_process_vm_writev",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_process_vm_writev",
        },
        required_offsets: &[],
        loss: "ptrace events from process_vm_writev(2)",
    },
    ProgramSpec {
        program: "sys_enter_socket",
        sensor: "raw_socket",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_socket",
        },
        required_offsets: &[],
        loss: "raw_socket events (AF_PACKET / SOCK_RAW socket creation)",
    },
    ProgramSpec {
        program: "sys_exit_socket",
        sensor: "raw_socket",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_socket",
        },
        required_offsets: &[],
        loss: "raw_socket events (AF_PACKET / SOCK_RAW socket creation)",
    },
    ProgramSpec {
        program: "sys_enter_unlink",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_unlink",
        },
        required_offsets: &[],
        loss: "file_change events from unlink(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_exit_unlink",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_unlink",
        },
        required_offsets: &[],
        loss: "file_change events from unlink(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_enter_unlinkat",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_unlinkat",
        },
        required_offsets: &[],
        loss: "file_change events from unlinkat(2)",
    },
    ProgramSpec {
        program: "sys_exit_unlinkat",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_unlinkat",
        },
        required_offsets: &[],
        loss: "file_change events from unlinkat(2)",
    },
    ProgramSpec {
        program: "sys_enter_rename",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_rename",
        },
        required_offsets: &[],
        loss: "file_change events from rename(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_exit_rename",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_rename",
        },
        required_offsets: &[],
        loss: "file_change events from rename(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_enter_renameat",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_renameat",
        },
        required_offsets: &[],
        loss: "file_change events from renameat(2)",
    },
    ProgramSpec {
        program: "sys_exit_renameat",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_renameat",
        },
        required_offsets: &[],
        loss: "file_change events from renameat(2)",
    },
    ProgramSpec {
        program: "sys_enter_renameat2",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_renameat2",
        },
        required_offsets: &[],
        loss: "file_change events from renameat2(2)",
    },
    ProgramSpec {
        program: "sys_exit_renameat2",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_renameat2",
        },
        required_offsets: &[],
        loss: "file_change events from renameat2(2)",
    },
    ProgramSpec {
        program: "sys_enter_chmod",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_chmod",
        },
        required_offsets: &[],
        loss: "file_change events from chmod(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_exit_chmod",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_chmod",
        },
        required_offsets: &[],
        loss: "file_change events from chmod(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_enter_fchmod",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_fchmod",
        },
        required_offsets: &[],
        loss: "file_change events from fchmod(2) (setuid/setgid bits only: no path)",
    },
    ProgramSpec {
        program: "sys_exit_fchmod",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_fchmod",
        },
        required_offsets: &[],
        loss: "file_change events from fchmod(2) (setuid/setgid bits only: no path)",
    },
    ProgramSpec {
        program: "sys_enter_fchmodat",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_fchmodat",
        },
        required_offsets: &[],
        loss: "file_change events from fchmodat(2)",
    },
    ProgramSpec {
        program: "sys_exit_fchmodat",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_fchmodat",
        },
        required_offsets: &[],
        loss: "file_change events from fchmodat(2)",
    },
    ProgramSpec {
        program: "sys_enter_fchmodat2",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_fchmodat2",
        },
        required_offsets: &[],
        loss: "file_change events from fchmodat2(2) (kernels 6.6+)",
    },
    ProgramSpec {
        program: "sys_exit_fchmodat2",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_fchmodat2",
        },
        required_offsets: &[],
        loss: "file_change events from fchmodat2(2) (kernels 6.6+)",
    },
    ProgramSpec {
        program: "sys_enter_chown",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_chown",
        },
        required_offsets: &[],
        loss: "file_change events from chown(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_exit_chown",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_chown",
        },
        required_offsets: &[],
        loss: "file_change events from chown(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_enter_lchown",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_lchown",
        },
        required_offsets: &[],
        loss: "file_change events from lchown(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_exit_lchown",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_lchown",
        },
        required_offsets: &[],
        loss: "file_change events from lchown(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_enter_fchown",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_fchown",
        },
        required_offsets: &[],
        loss: "file_change events from fchown(2) (no path)",
    },
    ProgramSpec {
        program: "sys_exit_fchown",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_fchown",
        },
        required_offsets: &[],
        loss: "file_change events from fchown(2) (no path)",
    },
    ProgramSpec {
        program: "sys_enter_fchownat",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_fchownat",
        },
        required_offsets: &[],
        loss: "file_change events from fchownat(2)",
    },
    ProgramSpec {
        program: "sys_exit_fchownat",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_fchownat",
        },
        required_offsets: &[],
        loss: "file_change events from fchownat(2)",
    },
    ProgramSpec {
        program: "sys_enter_link",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_link",
        },
        required_offsets: &[],
        loss: "file_change events from link(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_exit_link",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_link",
        },
        required_offsets: &[],
        loss: "file_change events from link(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_enter_linkat",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_linkat",
        },
        required_offsets: &[],
        loss: "file_change events from linkat(2)",
    },
    ProgramSpec {
        program: "sys_exit_linkat",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_linkat",
        },
        required_offsets: &[],
        loss: "file_change events from linkat(2)",
    },
    ProgramSpec {
        program: "sys_enter_symlink",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_symlink",
        },
        required_offsets: &[],
        loss: "file_change events from symlink(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_exit_symlink",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_symlink",
        },
        required_offsets: &[],
        loss: "file_change events from symlink(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_enter_symlinkat",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_symlinkat",
        },
        required_offsets: &[],
        loss: "file_change events from symlinkat(2)",
    },
    ProgramSpec {
        program: "sys_exit_symlinkat",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_symlinkat",
        },
        required_offsets: &[],
        loss: "file_change events from symlinkat(2)",
    },
    ProgramSpec {
        program: "sys_enter_mknod",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_mknod",
        },
        required_offsets: &[],
        loss: "file_change events from mknod(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_exit_mknod",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_mknod",
        },
        required_offsets: &[],
        loss: "file_change events from mknod(2) (x86_64 only)",
    },
    ProgramSpec {
        program: "sys_enter_mknodat",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_mknodat",
        },
        required_offsets: &[],
        loss: "file_change events from mknodat(2)",
    },
    ProgramSpec {
        program: "sys_exit_mknodat",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_mknodat",
        },
        required_offsets: &[],
        loss: "file_change events from mknodat(2)",
    },
    ProgramSpec {
        program: "sys_enter_truncate",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_truncate",
        },
        required_offsets: &[],
        loss: "file_change events from truncate(2)",
    },
    ProgramSpec {
        program: "sys_exit_truncate",
        sensor: "file_change",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_truncate",
        },
        required_offsets: &[],
        loss: "file_change events from truncate(2)",
    },
    ProgramSpec {
        program: "cap_capable",
        sensor: "capability",
        attach: Attach::TracePoint {
            category: "capability",
            name: "cap_capable",
        },
        required_offsets: &["task_group_leader", "task_start_boottime"],
        loss: "capability events (capability checks)",
    },
    ProgramSpec {
        program: "cap_capable_entry",
        sensor: "capability",
        attach: Attach::KProbe {
            function: "cap_capable",
            fallback_for: "cap_capable",
        },
        required_offsets: &["task_group_leader", "task_start_boottime"],
        loss: "capability events on kernels without the capability:cap_capable tracepoint (before 6.14)",
    },
    ProgramSpec {
        program: "cap_capable_exit",
        sensor: "capability",
        attach: Attach::KProbe {
            function: "cap_capable",
            fallback_for: "cap_capable",
        },
        required_offsets: &["task_group_leader", "task_start_boottime"],
        loss: "capability events on kernels without the capability:cap_capable tracepoint (before 6.14)",
    },
    ProgramSpec {
        program: "sys_enter_setuid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_setuid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setuid(2)",
    },
    ProgramSpec {
        program: "sys_exit_setuid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_setuid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setuid(2)",
    },
    ProgramSpec {
        program: "sys_enter_setgid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_setgid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setgid(2)",
    },
    ProgramSpec {
        program: "sys_exit_setgid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_setgid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setgid(2)",
    },
    ProgramSpec {
        program: "sys_enter_setreuid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_setreuid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setreuid(2)",
    },
    ProgramSpec {
        program: "sys_exit_setreuid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_setreuid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setreuid(2)",
    },
    ProgramSpec {
        program: "sys_enter_setregid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_setregid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setregid(2)",
    },
    ProgramSpec {
        program: "sys_exit_setregid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_setregid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setregid(2)",
    },
    ProgramSpec {
        program: "sys_enter_setresuid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_setresuid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setresuid(2)",
    },
    ProgramSpec {
        program: "sys_exit_setresuid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_setresuid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setresuid(2)",
    },
    ProgramSpec {
        program: "sys_enter_setresgid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_setresgid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setresgid(2)",
    },
    ProgramSpec {
        program: "sys_exit_setresgid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_setresgid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setresgid(2)",
    },
    ProgramSpec {
        program: "sys_enter_setfsuid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_setfsuid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setfsuid(2)",
    },
    ProgramSpec {
        program: "sys_exit_setfsuid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_setfsuid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setfsuid(2)",
    },
    ProgramSpec {
        program: "sys_enter_setfsgid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_setfsgid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setfsgid(2)",
    },
    ProgramSpec {
        program: "sys_exit_setfsgid",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_setfsgid",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from setfsgid(2)",
    },
    ProgramSpec {
        program: "sys_enter_capset",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_capset",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from capset(2)",
    },
    ProgramSpec {
        program: "sys_exit_capset",
        sensor: "privilege",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_capset",
        },
        required_offsets: &["task_cred", "cred_uid", "cred_euid"],
        loss: "privilege_change events from capset(2)",
    },
    ProgramSpec {
        program: "sys_enter_unshare",
        sensor: "namespace",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_unshare",
        },
        required_offsets: &[],
        loss: "namespace events from unshare(2)",
    },
    ProgramSpec {
        program: "sys_exit_unshare",
        sensor: "namespace",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_unshare",
        },
        required_offsets: &[],
        loss: "namespace events from unshare(2)",
    },
    ProgramSpec {
        program: "sys_enter_setns",
        sensor: "namespace",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_setns",
        },
        required_offsets: &[],
        loss: "namespace events from setns(2)",
    },
    ProgramSpec {
        program: "sys_exit_setns",
        sensor: "namespace",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_setns",
        },
        required_offsets: &[],
        loss: "namespace events from setns(2)",
    },
    ProgramSpec {
        program: "sys_enter_ptrace",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_ptrace",
        },
        required_offsets: &[],
        loss: "ptrace events",
    },
    ProgramSpec {
        program: "sys_exit_ptrace",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_ptrace",
        },
        required_offsets: &[],
        loss: "ptrace events",
    },
    ProgramSpec {
        program: "sys_enter_memfd_create",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_memfd_create",
        },
        required_offsets: &[],
        loss: "memfd events (fileless execution precursor)",
    },
    ProgramSpec {
        program: "sys_exit_memfd_create",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_memfd_create",
        },
        required_offsets: &[],
        loss: "memfd events (fileless execution precursor)",
    },
    ProgramSpec {
        program: "sys_enter_init_module",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_init_module",
        },
        required_offsets: &[],
        loss: "module_load events from init_module(2)",
    },
    ProgramSpec {
        program: "sys_exit_init_module",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_init_module",
        },
        required_offsets: &[],
        loss: "module_load events from init_module(2)",
    },
    ProgramSpec {
        program: "sys_enter_finit_module",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_finit_module",
        },
        required_offsets: &[],
        loss: "module_load events from finit_module(2)",
    },
    ProgramSpec {
        program: "sys_exit_finit_module",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_finit_module",
        },
        required_offsets: &[],
        loss: "module_load events from finit_module(2)",
    },
    ProgramSpec {
        program: "sys_enter_bpf",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_bpf",
        },
        required_offsets: &[],
        loss: "bpf events (bpf(2) commands)",
    },
    ProgramSpec {
        program: "sys_exit_bpf",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_bpf",
        },
        required_offsets: &[],
        loss: "bpf events (bpf(2) commands)",
    },
    ProgramSpec {
        program: "sys_enter_dup2",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_dup2",
        },
        required_offsets: &[],
        loss: "fd_dup events from dup2(2) (reverse shells)",
    },
    ProgramSpec {
        program: "sys_exit_dup2",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_dup2",
        },
        required_offsets: &[],
        loss: "fd_dup events from dup2(2) (reverse shells)",
    },
    ProgramSpec {
        program: "sys_enter_dup3",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_dup3",
        },
        required_offsets: &[],
        loss: "fd_dup events from dup3(2)",
    },
    ProgramSpec {
        program: "sys_exit_dup3",
        sensor: "process_control",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_dup3",
        },
        required_offsets: &[],
        loss: "fd_dup events from dup3(2)",
    },
    ProgramSpec {
        program: "sys_enter_mount",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_mount",
        },
        required_offsets: &[],
        loss: "mount events from mount(2)",
    },
    ProgramSpec {
        program: "sys_exit_mount",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_mount",
        },
        required_offsets: &[],
        loss: "mount events from mount(2)",
    },
    ProgramSpec {
        program: "sys_enter_umount",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_umount",
        },
        required_offsets: &[],
        loss: "mount events from umount2(2)",
    },
    ProgramSpec {
        program: "sys_exit_umount",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_umount",
        },
        required_offsets: &[],
        loss: "mount events from umount2(2)",
    },
    ProgramSpec {
        program: "sys_enter_fsopen",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_fsopen",
        },
        required_offsets: &[],
        loss: "mount events from fsopen(2)",
    },
    ProgramSpec {
        program: "sys_exit_fsopen",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_fsopen",
        },
        required_offsets: &[],
        loss: "mount events from fsopen(2)",
    },
    ProgramSpec {
        program: "sys_enter_fsconfig",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_fsconfig",
        },
        required_offsets: &[],
        loss: "mount events from fsconfig(2)",
    },
    ProgramSpec {
        program: "sys_exit_fsconfig",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_fsconfig",
        },
        required_offsets: &[],
        loss: "mount events from fsconfig(2)",
    },
    ProgramSpec {
        program: "sys_enter_fsmount",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_fsmount",
        },
        required_offsets: &[],
        loss: "mount events from fsmount(2)",
    },
    ProgramSpec {
        program: "sys_exit_fsmount",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_fsmount",
        },
        required_offsets: &[],
        loss: "mount events from fsmount(2)",
    },
    ProgramSpec {
        program: "sys_enter_move_mount",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_move_mount",
        },
        required_offsets: &[],
        loss: "mount events from move_mount(2)",
    },
    ProgramSpec {
        program: "sys_exit_move_mount",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_move_mount",
        },
        required_offsets: &[],
        loss: "mount events from move_mount(2)",
    },
    ProgramSpec {
        program: "sys_enter_open_tree",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_open_tree",
        },
        required_offsets: &[],
        loss: "mount events from open_tree(2)",
    },
    ProgramSpec {
        program: "sys_exit_open_tree",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_open_tree",
        },
        required_offsets: &[],
        loss: "mount events from open_tree(2)",
    },
    ProgramSpec {
        program: "sys_enter_mount_setattr",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_enter_mount_setattr",
        },
        required_offsets: &[],
        loss: "mount events from mount_setattr(2)",
    },
    ProgramSpec {
        program: "sys_exit_mount_setattr",
        sensor: "mount",
        attach: Attach::TracePoint {
            category: "syscalls",
            name: "sys_exit_mount_setattr",
        },
        required_offsets: &[],
        loss: "mount events from mount_setattr(2)",
    },
];

/// The process tree: without these the agent does not see program starts,
/// forks or exits, and every other event loses its process context.
/// `picket run` refuses to run without them unless `--allow-degraded`.
pub const CORE_PROGRAMS: &[&str] = &[
    "sched_process_exec",
    "sched_process_fork",
    "sched_process_exit",
];

/// Configuration of the kernel side.
#[derive(Debug, Clone)]
pub struct SensorConfig {
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// Kernel BTF location.
    pub btf_path: PathBuf,
    /// In-kernel filters, applied after load and before any program attaches.
    pub filters: super::filters::SensorFilters,
    /// Initial cgroup filter (`mode`, listed cgroup ids), also set before any
    /// program attaches, so nothing outside the scope is ever reported (nor
    /// counted as lost) while the agent starts.
    pub cgroup_filter: Option<(u32, Vec<u64>)>,
    /// Ring-buffer wake-up batching (`agent_common::settings::wakeup`): at
    /// most one forced wake-up of the reader per interval; zero wakes it per
    /// record (the kernel's default). Also the reader's re-poll delay.
    pub ring_wakeup_interval: std::time::Duration,
}

/// Default [`SensorConfig::ring_wakeup_interval`]: 1 ms keeps every record's
/// wait for the reader near 1 ms while cutting wake-ups under a storm from
/// one per record to at most 1,000 per second.
pub const DEFAULT_RING_WAKEUP: std::time::Duration = std::time::Duration::from_millis(1);

impl Default for SensorConfig {
    fn default() -> Self {
        Self {
            ring_wakeup_interval: DEFAULT_RING_WAKEUP,
            ring_buffer_bytes: 16 * 1024 * 1024,
            btf_path: PathBuf::from(offsets::VMLINUX_BTF),
            filters: super::filters::SensorFilters::default(),
            cgroup_filter: None,
        }
    }
}

/// Outcome for one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramStatus {
    Attached,
    /// Not attached; the reason says why and what is lost.
    Disabled(String),
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "this picket binary was built without its eBPF programs (AYA_BUILD_SKIP); rebuild it \
         after `cargo xtask setup`"
    )]
    NoObject,
    #[error("ring buffer size {0} is not a power of two multiple of the page size (4096)")]
    RingBufferSize(u32),
    #[error(transparent)]
    Offsets(#[from] offsets::OffsetsError),
    #[error("loading the eBPF object into the kernel: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("no program could be attached; see the warnings above (is this running as root?)")]
    NothingAttached,
    #[error("in-kernel filters: {0}")]
    Filters(#[from] super::filters::FilterError),
}

/// Loaded programs. Dropping it detaches every link and unloads the programs.
pub struct Sensor {
    ebpf: Ebpf,
    pub status: BTreeMap<&'static str, ProgramStatus>,
    /// Per program: load time and verifier instruction count.
    pub stats: BTreeMap<&'static str, ProgramStats>,
    /// Load and attach time of all programs.
    pub load_time: std::time::Duration,
    pub offsets: offsets::Resolved,
    /// The in-kernel filters (double-buffered, see `filter_maps`).
    filters: super::filter_maps::FilterHandle,
}

impl Sensor {
    /// Resolves offsets, loads the object and attaches every program it can.
    pub fn load(cfg: &SensorConfig) -> Result<Self, LoadError> {
        if EBPF_OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        let size = cfg.ring_buffer_bytes;
        if !size.is_power_of_two() || size < 4096 {
            return Err(LoadError::RingBufferSize(size));
        }
        let resolved = offsets::resolve(&cfg.btf_path)?;
        for (field, path, why) in &resolved.missing {
            warn!(
                field,
                btf_path = path,
                reason = why,
                "kernel field not found; dependent data will be missing"
            );
        }
        let tracefs_error = match tracefs::ensure_mounted() {
            Ok(_) => None,
            Err(e) => {
                warn!(error = %e, "tracefs is not mounted and could not be mounted; tracepoint programs cannot attach");
                Some(e.to_string())
            }
        };

        let (noaudit, unresolved) =
            super::kallsyms::noaudit_ranges(std::path::Path::new("/proc/kallsyms"));
        if !unresolved.is_empty() {
            warn!(
                functions = ?unresolved,
                "not found in /proc/kallsyms: capability checks made without auditing (memory \
                 accounting on mmap/brk/fork) are reported as CAP_SYS_ADMIN use"
            );
        }
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &resolved.offsets, true)
            .override_global("NOAUDIT_RANGES", &noaudit, true)
            .map_max_entries("EVENTS", size)
            .load(EBPF_OBJECT)
            .map_err(LoadError::Load)?;
        let mut filter_maps = super::filter_maps::FilterMaps::take(&mut ebpf)?;
        filter_maps.apply(&cfg.filters)?;
        if let Some((mode, ids)) = &cfg.cgroup_filter {
            write_cgroup_filter(&mut ebpf, *mode, ids)?;
        }
        write_ring_wakeup(&mut ebpf, cfg.ring_wakeup_interval)?;

        let mut status = BTreeMap::new();
        let mut stats = BTreeMap::new();
        let started = std::time::Instant::now();
        for spec in PROGRAMS {
            let mut st_one = ProgramStats::default();
            let st = match spec.attach {
                Attach::KProbe { fallback_for, .. }
                | Attach::TracePointFallback { fallback_for, .. }
                    if status.get(fallback_for) == Some(&ProgramStatus::Attached) =>
                {
                    ProgramStatus::Disabled(format!(
                        "{STANDBY}: not needed, {fallback_for} is attached"
                    ))
                }
                _ => attach_one(
                    &mut ebpf,
                    spec,
                    &resolved,
                    tracefs_error.as_deref(),
                    &mut st_one,
                ),
            };
            stats.insert(spec.program, st_one);
            match &st {
                ProgramStatus::Attached => {
                    info!(program = spec.program, sensor = spec.sensor, "attached")
                }
                st if st.standby() => {
                    info!(
                        program = spec.program,
                        sensor = spec.sensor,
                        "standby (not needed)"
                    )
                }
                ProgramStatus::Disabled(why) => warn!(
                    program = spec.program,
                    sensor = spec.sensor,
                    reason = %why,
                    lost = spec.loss,
                    "program disabled"
                ),
            }
            status.insert(spec.program, st);
        }
        if !status.values().any(|s| *s == ProgramStatus::Attached) {
            return Err(LoadError::NothingAttached);
        }
        Ok(Self {
            ebpf,
            status,
            stats,
            load_time: started.elapsed(),
            offsets: resolved,
            filters: super::filter_maps::FilterHandle::new(filter_maps),
        })
    }

    /// Takes the ring buffer (once).
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(LoadError::MissingMap("EVENTS"))?;
        RingBuf::try_from(map).map_err(|source| LoadError::Map {
            name: "EVENTS",
            source,
        })
    }

    /// Takes the per-CPU loss counters (once).
    pub fn take_lost(&mut self) -> Result<PerCpuArray<MapData, u64>, LoadError> {
        let map = self
            .ebpf
            .take_map("LOST")
            .ok_or(LoadError::MissingMap("LOST"))?;
        PerCpuArray::try_from(map).map_err(|source| LoadError::Map {
            name: "LOST",
            source,
        })
    }

    /// Sets the in-kernel cgroup filter: `mode` is one of
    /// `agent_common::settings::cgroup_filter`, `ids` the listed cgroup ids.
    /// The set is replaced before the mode is switched, so the kernel never
    /// applies a new mode to an old set.
    pub fn set_cgroup_filter(&mut self, mode: u32, ids: &[u64]) -> Result<(), LoadError> {
        write_cgroup_filter(&mut self.ebpf, mode, ids)
    }

    /// The loaded object, for modules that take their own maps and programs
    /// (the containment engine: `contain::KernelEnforcer::take`).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Replaces the in-kernel filters atomically while the programs run
    /// (may block up to `filter_maps::GRACE`).
    pub fn apply_filters(&self, filters: &super::filters::SensorFilters) -> Result<(), LoadError> {
        Ok(self.filters.apply(filters)?)
    }

    /// A handle that updates the in-kernel filters from another task (rule
    /// reloads: `rule_filters::follow_rules`).
    pub fn filter_handle(&self) -> super::filter_maps::FilterHandle {
        self.filters.clone()
    }

    /// Takes the rate-limit maps (once) for the flush of `rate_summary`
    /// reports of windows that never roll over (`slack` after their end).
    pub fn take_rate_tracker(
        &mut self,
        filters: &super::filters::SensorFilters,
        slack: std::time::Duration,
    ) -> Result<super::rate_summary::RateTracker, LoadError> {
        Ok(super::rate_summary::RateTracker::new(
            &mut self.ebpf,
            filters,
            slack,
        )?)
    }

    /// Records submitted to the ring buffer per kind by the syscall sensors.
    pub fn submitted_counts(&self) -> Result<BTreeMap<&'static str, u64>, LoadError> {
        Ok(super::filters::submitted_counts(&self.ebpf)?)
    }

    /// Core programs (see [`CORE_PROGRAMS`]) that are not attached, with why.
    pub fn core_missing(&self) -> Vec<(&'static str, String)> {
        CORE_PROGRAMS
            .iter()
            .filter_map(|p| match self.status.get(p) {
                Some(ProgramStatus::Attached) => None,
                Some(ProgramStatus::Disabled(why)) => Some((*p, why.clone())),
                None => Some((*p, "not in the program table".to_string())),
            })
            .collect()
    }

    pub fn attached(&self, program: &str) -> bool {
        self.status.get(program) == Some(&ProgramStatus::Attached)
    }
}

impl Drop for Sensor {
    /// Detaches the tracepoint programs concurrently, before the rest of the
    /// object is dropped.
    ///
    /// Why: closing a tracepoint attachment (a perf event) makes the kernel
    /// wait for RCU grace periods (`perf_trace_event_unreg` calls
    /// `tracepoint_synchronize_unregister`), so detaching ~40 programs one
    /// after the other took ~5 s on every shutdown, also of an idle agent.
    /// Waits started together share their grace periods: the whole detach
    /// then takes about one. Raw tracepoints and cgroup programs detach
    /// without such a wait and are left to the ordinary drop.
    fn drop(&mut self) {
        let tracepoints: Vec<&mut TracePoint> = self
            .ebpf
            .programs_mut()
            .filter_map(|(_, p)| match p {
                aya::programs::Program::TracePoint(t) => Some(t),
                _ => None,
            })
            .collect();
        std::thread::scope(|s| {
            for t in tracepoints {
                let spawned = std::thread::Builder::new()
                    .name("picket-detach".into())
                    .spawn_scoped(s, move || {
                        // Not loaded (hook absent) is the only error: nothing
                        // to detach then.
                        let _ = t.unload();
                    });
                if let Err(e) = spawned {
                    // No thread (resource limit): this program is detached
                    // by the ordinary drop that follows, just not in
                    // parallel.
                    warn!(error = %e, "cannot start a detach thread");
                }
            }
        });
    }
}

/// Sets the ring-buffer wake-up interval (before any program attaches).
fn write_ring_wakeup(ebpf: &mut Ebpf, interval: std::time::Duration) -> Result<(), LoadError> {
    use agent_common::settings::wakeup;
    let map = ebpf
        .map_mut("RING_WAKEUP")
        .ok_or(LoadError::MissingMap("RING_WAKEUP"))?;
    let mut a: Array<_, u64> = Array::try_from(map).map_err(|source| LoadError::Map {
        name: "RING_WAKEUP",
        source,
    })?;
    let ns = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
    a.set(wakeup::INTERVAL, ns, 0)
        .map_err(|source| LoadError::Map {
            name: "RING_WAKEUP",
            source,
        })
}

/// See [`Sensor::set_cgroup_filter`].
fn write_cgroup_filter(ebpf: &mut Ebpf, mode: u32, ids: &[u64]) -> Result<(), LoadError> {
    {
        let map = ebpf
            .map_mut("CGROUP_FILTER")
            .ok_or(LoadError::MissingMap("CGROUP_FILTER"))?;
        let mut set: HashMap<_, u64, u8> =
            HashMap::try_from(map).map_err(|source| LoadError::Map {
                name: "CGROUP_FILTER",
                source,
            })?;
        let old: Vec<u64> = set.keys().filter_map(Result::ok).collect();
        for id in ids {
            set.insert(id, 1, 0).map_err(|source| LoadError::Map {
                name: "CGROUP_FILTER",
                source,
            })?;
        }
        for id in old.iter().filter(|id| !ids.contains(id)) {
            let _ = set.remove(id);
        }
    }
    let map = ebpf
        .map_mut("SETTINGS")
        .ok_or(LoadError::MissingMap("SETTINGS"))?;
    let mut settings: Array<_, Settings> =
        Array::try_from(map).map_err(|source| LoadError::Map {
            name: "SETTINGS",
            source,
        })?;
    let mut cur = settings.get(&0, 0).unwrap_or_default();
    cur.cgroup_filter_mode = mode;
    settings.set(0, cur, 0).map_err(|source| LoadError::Map {
        name: "SETTINGS",
        source,
    })?;
    Ok(())
}

fn attach_one(
    ebpf: &mut Ebpf,
    spec: &ProgramSpec,
    resolved: &offsets::Resolved,
    tracefs_error: Option<&str>,
    stats: &mut ProgramStats,
) -> ProgramStatus {
    let missing: Vec<_> = spec
        .required_offsets
        .iter()
        .filter(|f| resolved.is_missing(f))
        .collect();
    if !missing.is_empty() {
        return ProgramStatus::Disabled(format!("kernel BTF lacks required fields {missing:?}"));
    }
    let Some(prog) = ebpf.program_mut(spec.program) else {
        return ProgramStatus::Disabled("program missing from the eBPF object".into());
    };
    let started = std::time::Instant::now();
    let res = match spec.attach {
        Attach::TracePoint { category, name }
        | Attach::TracePointFallback { category, name, .. } => {
            if let Some(e) = tracefs_error {
                return ProgramStatus::Disabled(format!("tracefs unavailable: {e}"));
            }
            if !tracefs::tracepoint_exists(category, name) {
                return ProgramStatus::Disabled(format!(
                    "{HOOK_ABSENT}: tracepoint {category}:{name} does not exist on this kernel"
                ));
            }
            let tp: &mut TracePoint = match prog.try_into() {
                Ok(tp) => tp,
                Err(e) => return ProgramStatus::Disabled(e.to_string()),
            };
            let r = tp.load();
            stats.verified_insns = tp.info().ok().and_then(|i| i.verified_instruction_count());
            r.and_then(|()| tp.attach(category, name).map(drop))
        }
        Attach::RawTracePoint { name } => {
            let tp: &mut RawTracePoint = match prog.try_into() {
                Ok(tp) => tp,
                Err(e) => return ProgramStatus::Disabled(e.to_string()),
            };
            let r = tp.load();
            stats.verified_insns = tp.info().ok().and_then(|i| i.verified_instruction_count());
            r.and_then(|()| tp.attach(name).map(drop))
        }
        Attach::KProbe { function, .. } => {
            if !kprobes_available() {
                return ProgramStatus::Disabled(format!(
                    "{HOOK_ABSENT}: this kernel has no kprobes (no kprobe PMU and no \
                     kprobe_events in tracefs), needed for {function}"
                ));
            }
            let kp: &mut KProbe = match prog.try_into() {
                Ok(kp) => kp,
                Err(e) => return ProgramStatus::Disabled(e.to_string()),
            };
            let r = kp.load();
            stats.verified_insns = kp.info().ok().and_then(|i| i.verified_instruction_count());
            r.and_then(|()| kp.attach(function, 0).map(drop))
        }
        Attach::Lsm { hook } => {
            if let Err(why) = bpf_lsm_active() {
                return ProgramStatus::Disabled(format!("{HOOK_ABSENT}: {why}"));
            }
            let btf = match aya::Btf::from_sys_fs() {
                Ok(b) => b,
                Err(e) => return ProgramStatus::Disabled(format!("kernel BTF: {e}")),
            };
            let p: &mut aya::programs::Lsm = match prog.try_into() {
                Ok(p) => p,
                Err(e) => return ProgramStatus::Disabled(e.to_string()),
            };
            let r = p.load(hook, &btf);
            stats.verified_insns = p.info().ok().and_then(|i| i.verified_instruction_count());
            r.and_then(|()| p.attach().map(drop))
        }
        Attach::CgroupSockAddrOnDemand => {
            let p: &mut aya::programs::CgroupSockAddr = match prog.try_into() {
                Ok(p) => p,
                Err(e) => return ProgramStatus::Disabled(e.to_string()),
            };
            let r = p.load();
            stats.verified_insns = p.info().ok().and_then(|i| i.verified_instruction_count());
            r
        }
    };
    stats.load_time = started.elapsed();
    match res {
        Ok(()) => ProgramStatus::Attached,
        Err(e) => {
            let chain = error_chain(&e);
            match missing_helper(&chain) {
                Some(helper) => ProgramStatus::Disabled(format!(
                    "{HOOK_ABSENT}: this kernel does not offer the helper {helper} to this \
                     program type (the verifier says: unknown func {helper})"
                )),
                None => ProgramStatus::Disabled(chain),
            }
        }
    }
}

/// Helpers that older kernels lack for tracepoint programs, recognised in
/// the verifier's `unknown func <name>#<id>` line: a kernel without them
/// lacks what the program needs (like a missing tracepoint), which is not a
/// Picket failure. Only listed helpers count, so a new helper that breaks
/// older kernels still shows up as a rejection.
/// `bpf_get_current_ancestor_cgroup_id`: not available to tracepoints on 5.10.
pub const LATE_HELPERS: &[&str] = &["bpf_get_current_ancestor_cgroup_id"];

fn missing_helper(log: &str) -> Option<&'static str> {
    LATE_HELPERS
        .iter()
        .copied()
        .find(|h| log.contains(&format!("unknown func {h}#")))
}

/// How a [`ProgramStatus::Disabled`] reason starts when the kernel lacks the
/// program's hook (or a helper it needs, see [`LATE_HELPERS`]) (not a failure of Picket: `doctor` and the kernel matrix
/// tell the two apart by it).
pub const HOOK_ABSENT: &str = "hook absent";

/// How a [`ProgramStatus::Disabled`] reason starts when the program is a
/// fallback ([`Attach::KProbe`], [`Attach::TracePointFallback`]) whose preferred hook is attached: nothing is
/// lost.
pub const STANDBY: &str = "standby";

impl ProgramStatus {
    /// The program is disabled because this kernel lacks its hook.
    pub fn hook_absent(&self) -> bool {
        matches!(self, ProgramStatus::Disabled(why) if why.starts_with(HOOK_ABSENT))
    }

    /// The program is a fallback that is not needed on this kernel.
    pub fn standby(&self) -> bool {
        matches!(self, ProgramStatus::Disabled(why) if why.starts_with(STANDBY))
    }
}

/// Whether kprobes can be created: the `kprobe` perf PMU (4.17+) or the
/// legacy `kprobe_events` file of tracefs. This machine's 6.18 kernel is
/// built without `CONFIG_KPROBES` and has neither.
pub fn kprobes_available() -> bool {
    std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
        || std::path::Path::new(tracefs::TRACEFS)
            .join("kprobe_events")
            .exists()
}

/// The active LSMs, in order.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// Whether BPF LSM programs can run: `bpf` among the active LSMs (a kernel
/// built with `CONFIG_BPF_LSM` but booted without `bpf` in `lsm=` loads
/// them, and they never run). securityfs is mounted when it is not.
pub fn bpf_lsm_active() -> Result<(), String> {
    let path = std::path::Path::new(LSM_LIST);
    if !path.exists() {
        // Not mounted at boot on some systems (this one's included).
        let fs = c"securityfs";
        // SAFETY: plain mount(2) with valid NUL-terminated strings; a
        // failure shows as the unreadable list below.
        let _ = unsafe {
            libc::mount(
                fs.as_ptr(),
                c"/sys/kernel/security".as_ptr(),
                fs.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
    }
    match std::fs::read_to_string(path) {
        Ok(list) if list.trim().split(',').any(|l| l == "bpf") => {
            // Listed, and still refused on some kernels (this machine's
            // 6.18 answers EPERM to any BPF LSM program).
            match aya::sys::is_program_supported(aya::programs::ProgramType::Lsm(
                aya::programs::LsmAttachType::Mac,
            )) {
                Ok(true) => Ok(()),
                Ok(false) => {
                    Err("the kernel refuses BPF LSM programs (a probe program did not load)".into())
                }
                Err(e) => Err(format!(
                    "the kernel refuses BPF LSM programs (a probe program did not load: {e})"
                )),
            }
        }
        Ok(list) => Err(format!(
            "the BPF LSM is not active ({LSM_LIST}: {}; boot with lsm=...,bpf)",
            list.trim()
        )),
        Err(e) => Err(format!(
            "{LSM_LIST} unreadable ({e}): the BPF LSM is not known to be active"
        )),
    }
}

/// Load measurements of one program (`doctor`, the kernel matrix).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgramStats {
    /// Load (verification) plus attach time.
    pub load_time: std::time::Duration,
    /// Instructions the verifier processed (`verified_insns`, kernels 5.16+).
    pub verified_insns: Option<u32>,
}

/// An error and its sources on one line (the verifier log is in the sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
