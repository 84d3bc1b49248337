//! Namespace, process-control and mount records.

use crate::EventHeader;

/// `ControlEvent::op` (the record's kind says the family).
pub mod ctl_op {
    pub const UNSHARE: u32 = 1;
    pub const SETNS: u32 = 2;
    pub const PTRACE: u32 = 3;
    pub const MEMFD_CREATE: u32 = 4;
    pub const INIT_MODULE: u32 = 5;
    pub const FINIT_MODULE: u32 = 6;
    pub const BPF: u32 = 7;
    pub const DUP2: u32 = 8;
    pub const DUP3: u32 = 9;
    /// Reported as a `ptrace` record: reading another process's memory.
    pub const PROCESS_VM_READV: u32 = 10;
    pub const PROCESS_VM_WRITEV: u32 = 11;
    /// socket(2) of an `AF_PACKET` socket or a `SOCK_RAW` IPv4/IPv6 socket
    /// (`raw_socket` record).
    pub const SOCKET: u32 = 12;
}

/// `AF_PACKET`.
pub const AF_PACKET: u64 = 17;
/// `AF_INET`: with `SOCK_RAW`, a raw IPv4 socket.
pub const AF_INET: u64 = 2;
/// `AF_INET6`: with `SOCK_RAW`, a raw IPv6 socket.
pub const AF_INET6: u64 = 10;
/// `SOCK_RAW` (the low bits of socket(2)'s type, below the flags).
pub const SOCK_RAW: u64 = 3;
/// Mask of the socket type in socket(2)'s type argument.
pub const SOCK_TYPE_MASK: u64 = 0xf;

/// Bytes of a name argument kept (memfd name, module parameters).
pub const CTL_NAME_MAX: usize = 128;

/// unshare/setns/ptrace/memfd_create/init_module/finit_module/bpf/dup2/dup3,
/// written at syscall exit with the result.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ControlEvent {
    pub header: EventHeader,
    pub result: i64,
    /// See [`ctl_op`].
    pub op: u32,
    /// `inode->i_mode` of the fd argument (dup: old fd; setns: the ns fd),
    /// 0 when unknown or not applicable.
    pub fd_mode: u32,
    /// Syscall arguments: unshare [flags]; setns [fd, nstype]; ptrace
    /// [request, pid]; memfd_create [flags]; init_module [len];
    /// finit_module [fd, flags]; bpf [cmd, size]; dup2/dup3 [old, new, flags];
    /// process_vm_readv/writev [pid, riovcnt, flags]; socket [family, type,
    /// protocol].
    pub args: [i64; 3],
    /// Valid bytes in `name` (without NUL).
    pub name_len: u32,
    pub _pad: u32,
    /// memfd_create name; init/finit_module parameters.
    pub name: [u8; CTL_NAME_MAX],
}

/// `MountEvent::op`.
pub mod mount_op {
    pub const MOUNT: u32 = 1;
    pub const UMOUNT: u32 = 2;
    pub const FSOPEN: u32 = 3;
    pub const FSCONFIG: u32 = 4;
    pub const FSMOUNT: u32 = 5;
    pub const MOVE_MOUNT: u32 = 6;
    pub const OPEN_TREE: u32 = 7;
    pub const MOUNT_SETATTR: u32 = 8;
}

/// Bytes of a mount path argument kept.
pub const MOUNT_PATH_MAX: usize = 256;
/// Bytes of a filesystem type (or fsconfig key) kept.
pub const MOUNT_FSTYPE_MAX: usize = 64;

/// mount/umount2 and the new mount API, written at syscall exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MountEvent {
    pub header: EventHeader,
    pub result: i64,
    /// See [`mount_op`].
    pub op: u32,
    pub _pad: u32,
    /// mount: MS_* flags; umount2: MNT_* flags; fsopen/fsmount/open_tree/
    /// move_mount/mount_setattr: their flags argument.
    pub flags: u64,
    /// Other integer arguments: fsconfig [fd, cmd, aux]; fsmount [fd,
    /// attr_flags]; move_mount [from_dfd, to_dfd]; open_tree [dfd];
    /// mount_setattr [dfd, attr_set, attr_clr].
    pub args: [i64; 3],
    pub source_len: u32,
    pub target_len: u32,
    /// mount: device/source; move_mount: from path; fsconfig: value (string
    /// commands only).
    pub source: [u8; MOUNT_PATH_MAX],
    /// mount/umount2: target; move_mount: to path; open_tree/mount_setattr: path.
    pub target: [u8; MOUNT_PATH_MAX],
    /// mount/fsopen: filesystem type; fsconfig: key.
    pub fstype: [u8; MOUNT_FSTYPE_MAX],
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::ControlEvent {}
    unsafe impl aya::Pod for super::MountEvent {}
}
