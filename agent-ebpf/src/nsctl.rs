//! Namespaces and process control: unshare, setns, ptrace, memfd_create,
//! init_module/finit_module, bpf, and dup2/dup3 onto fds 0-2 (the classic
//! reverse-shell move). Written at syscall exit with the result.

use agent_common::{
    EventKind,
    control::{
        AF_INET, AF_INET6, AF_PACKET, CTL_NAME_MAX, ControlEvent, SOCK_RAW, SOCK_TYPE_MASK, ctl_op,
    },
};
use aya_ebpf::programs::TracePointContext;

use crate::sys::{
    SMALL_MAX, arg, copy, enabled, fd_file, file_mode, header, reserve, ret, stash_begin,
    stash_commit, stash_done, stash_get, submit, syscall_pair, user_str,
};

const _: () = assert!(CTL_NAME_MAX == SMALL_MAX);

/// Entry: up to three integer arguments, an optional user string (memfd
/// name, module parameters) and the mode of an fd argument.
#[inline(always)]
fn ctl_enter(op: u32, kind: EventKind, a: [u64; 3], name: u64, fd: Option<u64>) -> Option<()> {
    if !enabled(kind) {
        return None;
    }
    let s = stash_begin(op, kind)?;
    s.args[0] = a[0];
    s.args[1] = a[1];
    s.args[2] = a[2];
    s.len[2] = user_str(&mut s.s2, name);
    s.aux = fd
        .and_then(|f| fd_file(f as i32 as i64))
        .map(file_mode)
        .unwrap_or(0);
    stash_commit(s);
    Some(())
}

#[inline(always)]
fn ctl_exit(ctx: &TracePointContext, op: u32, kind: EventKind) -> Option<()> {
    let s = stash_get(op, kind)?;
    let Some(mut entry) = reserve::<ControlEvent>(kind) else {
        stash_done();
        return None;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = header(kind, core::mem::size_of::<ControlEvent>());
    ev.result = ret(ctx);
    ev.op = op;
    ev.fd_mode = s.aux;
    ev.args = [s.args[0] as i64, s.args[1] as i64, s.args[2] as i64];
    ev.name_len = s.len[2];
    ev._pad = 0;
    copy::<CTL_NAME_MAX>(&mut ev.name, &s.s2);
    stash_done();
    submit(entry, kind);
    Some(())
}

/// dup2/dup3 are only interesting onto stdin/stdout/stderr.
#[inline(always)]
fn dup_enter(op: u32, old: u64, new: u64, flags: u64) -> Option<()> {
    if new as u32 > 2 {
        return None;
    }
    ctl_enter(
        op,
        EventKind::FdDup,
        [old as u32 as i32 as u64, new, flags],
        0,
        Some(old),
    )
}

syscall_pair!(
    sys_enter_unshare,
    sys_exit_unshare,
    |ctx| ctl_enter(
        ctl_op::UNSHARE,
        EventKind::Namespace,
        [arg(ctx, 0), 0, 0],
        0,
        None
    ),
    |ctx| ctl_exit(ctx, ctl_op::UNSHARE, EventKind::Namespace)
);
syscall_pair!(
    sys_enter_setns,
    sys_exit_setns,
    |ctx| ctl_enter(
        ctl_op::SETNS,
        EventKind::Namespace,
        [arg(ctx, 0) as u32 as i32 as u64, arg(ctx, 1), 0],
        0,
        Some(arg(ctx, 0))
    ),
    |ctx| ctl_exit(ctx, ctl_op::SETNS, EventKind::Namespace)
);
syscall_pair!(
    sys_enter_ptrace,
    sys_exit_ptrace,
    |ctx| ctl_enter(
        ctl_op::PTRACE,
        EventKind::Ptrace,
        [arg(ctx, 0), arg(ctx, 1), 0],
        0,
        None
    ),
    |ctx| ctl_exit(ctx, ctl_op::PTRACE, EventKind::Ptrace)
);
syscall_pair!(
    sys_enter_memfd_create,
    sys_exit_memfd_create,
    |ctx| ctl_enter(
        ctl_op::MEMFD_CREATE,
        EventKind::Memfd,
        [arg(ctx, 1), 0, 0],
        arg(ctx, 0),
        None
    ),
    |ctx| ctl_exit(ctx, ctl_op::MEMFD_CREATE, EventKind::Memfd)
);
syscall_pair!(
    sys_enter_init_module,
    sys_exit_init_module,
    |ctx| ctl_enter(
        ctl_op::INIT_MODULE,
        EventKind::ModuleLoad,
        [arg(ctx, 1), 0, 0],
        arg(ctx, 2),
        None
    ),
    |ctx| ctl_exit(ctx, ctl_op::INIT_MODULE, EventKind::ModuleLoad)
);
syscall_pair!(
    sys_enter_finit_module,
    sys_exit_finit_module,
    |ctx| ctl_enter(
        ctl_op::FINIT_MODULE,
        EventKind::ModuleLoad,
        [arg(ctx, 0) as u32 as i32 as u64, arg(ctx, 2), 0],
        arg(ctx, 1),
        None
    ),
    |ctx| ctl_exit(ctx, ctl_op::FINIT_MODULE, EventKind::ModuleLoad)
);
syscall_pair!(
    sys_enter_bpf,
    sys_exit_bpf,
    |ctx| ctl_enter(
        ctl_op::BPF,
        EventKind::Bpf,
        [arg(ctx, 0), arg(ctx, 2), 0],
        0,
        None
    ),
    |ctx| ctl_exit(ctx, ctl_op::BPF, EventKind::Bpf)
);
// process_vm_readv/writev(pid, lvec, liovcnt, rvec, riovcnt, flags):
// another process's memory without ptrace (reported as `ptrace` records).
syscall_pair!(
    sys_enter_process_vm_readv,
    sys_exit_process_vm_readv,
    |ctx| ctl_enter(
        ctl_op::PROCESS_VM_READV,
        EventKind::Ptrace,
        [arg(ctx, 0), arg(ctx, 4), arg(ctx, 5)],
        0,
        None
    ),
    |ctx| ctl_exit(ctx, ctl_op::PROCESS_VM_READV, EventKind::Ptrace)
);
syscall_pair!(
    sys_enter_process_vm_writev,
    sys_exit_process_vm_writev,
    |ctx| ctl_enter(
        ctl_op::PROCESS_VM_WRITEV,
        EventKind::Ptrace,
        [arg(ctx, 0), arg(ctx, 4), arg(ctx, 5)],
        0,
        None
    ),
    |ctx| ctl_exit(ctx, ctl_op::PROCESS_VM_WRITEV, EventKind::Ptrace)
);

/// socket(2): only packet sockets and raw IP sockets (sniffing, spoofing,
/// raw scans) are reported; ordinary sockets never leave the kernel.
/// Raw sockets of other families are not IP-level access: netlink talks
/// SOCK_RAW to the kernel (runc init, iproute2, glibc's getifaddrs), so
/// reporting them made every container start look like a sniffer.
#[inline(always)]
fn socket_enter(family: u64, ty: u64, protocol: u64) -> Option<()> {
    let raw_ip = ty & SOCK_TYPE_MASK == SOCK_RAW && (family == AF_INET || family == AF_INET6);
    if family != AF_PACKET && !raw_ip {
        return None;
    }
    ctl_enter(
        ctl_op::SOCKET,
        EventKind::RawSocket,
        [family, ty, protocol],
        0,
        None,
    )
}

syscall_pair!(
    sys_enter_socket,
    sys_exit_socket,
    |ctx| socket_enter(arg(ctx, 0), arg(ctx, 1), arg(ctx, 2)),
    |ctx| ctl_exit(ctx, ctl_op::SOCKET, EventKind::RawSocket)
);

syscall_pair!(
    sys_enter_dup2,
    sys_exit_dup2,
    |ctx| dup_enter(ctl_op::DUP2, arg(ctx, 0), arg(ctx, 1), 0),
    |ctx| ctl_exit(ctx, ctl_op::DUP2, EventKind::FdDup)
);
syscall_pair!(
    sys_enter_dup3,
    sys_exit_dup3,
    |ctx| dup_enter(ctl_op::DUP3, arg(ctx, 0), arg(ctx, 1), arg(ctx, 2)),
    |ctx| ctl_exit(ctx, ctl_op::DUP3, EventKind::FdDup)
);
