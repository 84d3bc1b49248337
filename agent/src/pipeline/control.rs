//! Namespace, process-control and mount records -> their sections.

use agent_common::control::{ControlEvent, MountEvent, ctl_op, mount_op};

use super::names;
use crate::model::{
    BpfOp, Event, FdDup, FdType, MemfdOp, ModuleOp, MountOp, NamespaceOp, PtraceOp, SocketOp,
    Syscall,
};

/// What an fd refers to, from its inode mode.
pub fn fd_type(mode: u32) -> FdType {
    match mode & 0o170000 {
        0 => FdType::Unknown,
        0o140000 => FdType::Socket,
        0o010000 => FdType::Pipe,
        0o100000 => FdType::File,
        0o040000 => FdType::Directory,
        0o020000 => FdType::CharDevice,
        _ => FdType::Other,
    }
}

fn text(buf: &[u8], len: u32) -> String {
    let b = &buf[..(len as usize).min(buf.len())];
    crate::sensor::decode::cstr(b)
}

/// socket(2)'s family argument by name.
pub fn socket_family(f: i64) -> String {
    match f {
        1 => "unix".into(),
        2 => "inet".into(),
        10 => "inet6".into(),
        16 => "netlink".into(),
        17 => "packet".into(),
        n => n.to_string(),
    }
}

/// socket(2)'s type argument by name (flags such as `SOCK_CLOEXEC` masked).
pub fn socket_type(t: i64) -> String {
    match t & 0xf {
        1 => "stream".into(),
        2 => "dgram".into(),
        3 => "raw".into(),
        5 => "seqpacket".into(),
        10 => "packet".into(),
        n => n.to_string(),
    }
}

pub fn ctl_syscall_name(op: u32) -> &'static str {
    match op {
        ctl_op::UNSHARE => "unshare",
        ctl_op::SETNS => "setns",
        ctl_op::PTRACE => "ptrace",
        ctl_op::MEMFD_CREATE => "memfd_create",
        ctl_op::INIT_MODULE => "init_module",
        ctl_op::FINIT_MODULE => "finit_module",
        ctl_op::BPF => "bpf",
        ctl_op::DUP2 => "dup2",
        ctl_op::DUP3 => "dup3",
        ctl_op::PROCESS_VM_READV => "process_vm_readv",
        ctl_op::PROCESS_VM_WRITEV => "process_vm_writev",
        ctl_op::SOCKET => "socket",
        _ => "unknown",
    }
}

pub fn fill_control(ev: &mut Event, e: &ControlEvent) {
    ev.syscall = Some(Syscall {
        name: ctl_syscall_name(e.op).into(),
        result: e.result,
    });
    let [a0, a1, a2] = e.args;
    match e.op {
        ctl_op::UNSHARE => {
            ev.namespace = Some(NamespaceOp {
                flags: a0 as u64,
                types: names::namespace_types(a0 as u64),
                fd: None,
            })
        }
        ctl_op::SETNS => {
            ev.namespace = Some(NamespaceOp {
                flags: a1 as u64,
                types: names::namespace_types(a1 as u64),
                fd: Some(a0 as i32),
            })
        }
        ctl_op::PTRACE => {
            ev.ptrace = Some(PtraceOp {
                request: names::ptrace_request(a0),
                request_id: a0,
                target_pid: a1 as u32,
            })
        }
        // Not ptrace(2), but the same access to another process: the
        // request names the syscall, with a negative id no ptrace request
        // has.
        ctl_op::PROCESS_VM_READV | ctl_op::PROCESS_VM_WRITEV => {
            let (request, request_id) = if e.op == ctl_op::PROCESS_VM_READV {
                ("process_vm_readv", -1)
            } else {
                ("process_vm_writev", -2)
            };
            ev.ptrace = Some(PtraceOp {
                request: request.into(),
                request_id,
                target_pid: a0 as u32,
            })
        }
        ctl_op::SOCKET => {
            ev.socket = Some(SocketOp {
                family: socket_family(a0),
                socket_type: socket_type(a1),
                protocol: a2,
            })
        }
        ctl_op::MEMFD_CREATE => {
            ev.memfd = Some(MemfdOp {
                name: text(&e.name, e.name_len),
                flags: a0 as u32,
            })
        }
        ctl_op::INIT_MODULE => {
            ev.module = Some(ModuleOp {
                fd: None,
                params: text(&e.name, e.name_len),
            })
        }
        ctl_op::FINIT_MODULE => {
            ev.module = Some(ModuleOp {
                fd: Some(a0 as i32),
                params: text(&e.name, e.name_len),
            })
        }
        ctl_op::BPF => {
            ev.bpf = Some(BpfOp {
                command: names::bpf_command(a0 as u32),
                command_id: a0 as u32,
            })
        }
        ctl_op::DUP2 | ctl_op::DUP3 => {
            let _ = a2;
            ev.fd = Some(FdDup {
                old: a0 as i32,
                new: a1 as i32,
                old_type: fd_type(e.fd_mode),
                socket: None,
            })
        }
        _ => {}
    }
}

pub fn mount_syscall_name(op: u32) -> &'static str {
    match op {
        mount_op::MOUNT => "mount",
        mount_op::UMOUNT => "umount2",
        mount_op::FSOPEN => "fsopen",
        mount_op::FSCONFIG => "fsconfig",
        mount_op::FSMOUNT => "fsmount",
        mount_op::MOVE_MOUNT => "move_mount",
        mount_op::OPEN_TREE => "open_tree",
        mount_op::MOUNT_SETATTR => "mount_setattr",
        _ => "unknown",
    }
}

pub fn fill_mount(ev: &mut Event, e: &MountEvent) {
    ev.syscall = Some(Syscall {
        name: mount_syscall_name(e.op).into(),
        result: e.result,
    });
    let flag_names = match e.op {
        mount_op::MOUNT => names::mount_flags(e.flags),
        mount_op::UMOUNT => names::umount_flags(e.flags),
        _ => Vec::new(),
    };
    ev.mount = Some(MountOp {
        source: text(&e.source, e.source_len),
        target: text(&e.target, e.target_len),
        fstype: crate::sensor::decode::cstr(&e.fstype),
        flags: e.flags,
        flag_names,
    });
}
