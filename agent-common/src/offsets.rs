//! Kernel struct field offsets, resolved by the agent from the running
//! kernel's BTF and handed to the programs as a read-only global before load.
//!
//! rustc emits no CO-RE relocations for eBPF, so the programs cannot rely on
//! compile-time layouts; this struct is Picket's portable replacement. An
//! offset equal to [`MISSING`] means the field does not exist on this kernel:
//! the programs then skip what needs it and flag the event instead of reading
//! garbage.

/// Marker for an offset that could not be resolved.
pub const MISSING: u32 = u32::MAX;

macro_rules! offsets {
    ($($(#[$m:meta])* $field:ident => $path:literal,)*) => {
        /// Byte offsets of the kernel fields the programs read.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct KernelOffsets {
            $($(#[$m])* pub $field: u32,)*
        }

        impl KernelOffsets {
            /// Every offset unresolved.
            pub const fn missing() -> Self {
                Self { $($field: MISSING,)* }
            }

            /// `(field name, "struct.member[.member]" BTF path)` for each offset,
            /// in declaration order. The agent resolves each path against BTF.
            pub const FIELDS: &'static [(&'static str, &'static str)] = &[
                $((stringify!($field), $path),)*
            ];

            /// Mutable access by field name (userspace resolution loop).
            pub fn get_mut(&mut self, name: &str) -> Option<&mut u32> {
                match name {
                    $(stringify!($field) => Some(&mut self.$field),)*
                    _ => None,
                }
            }

            /// Read access by field name.
            pub fn get(&self, name: &str) -> Option<u32> {
                match name {
                    $(stringify!($field) => Some(self.$field),)*
                    _ => None,
                }
            }
        }
    };
}

offsets! {
    task_pid => "task_struct.pid",
    task_tgid => "task_struct.tgid",
    task_real_parent => "task_struct.real_parent",
    task_group_leader => "task_struct.group_leader",
    task_start_boottime => "task_struct.start_boottime",
    task_cred => "task_struct.cred",
    /// Capability checks made under overridden credentials (cred != real_cred).
    task_real_cred => "task_struct.real_cred",
    task_nsproxy => "task_struct.nsproxy",
    task_thread_pid => "task_struct.thread_pid",
    /// Only with CONFIG_AUDIT.
    task_loginuid => "task_struct.loginuid",
    task_files => "task_struct.files",
    task_fs => "task_struct.fs",
    task_mm => "task_struct.mm",
    task_exit_code => "task_struct.exit_code",
    task_signal => "task_struct.signal",
    signal_live => "signal_struct.live",
    cred_uid => "cred.uid",
    cred_gid => "cred.gid",
    cred_suid => "cred.suid",
    cred_sgid => "cred.sgid",
    cred_euid => "cred.euid",
    cred_egid => "cred.egid",
    cred_fsuid => "cred.fsuid",
    cred_fsgid => "cred.fsgid",
    cred_cap_inheritable => "cred.cap_inheritable",
    cred_cap_permitted => "cred.cap_permitted",
    cred_cap_effective => "cred.cap_effective",
    nsproxy_mnt_ns => "nsproxy.mnt_ns",
    mnt_namespace_ns => "mnt_namespace.ns",
    ns_common_inum => "ns_common.inum",
    pid_level => "pid.level",
    pid_numbers => "pid.numbers",
    upid_nr => "upid.nr",
    upid_ns => "upid.ns",
    /// `sizeof(struct upid)`, resolved as a type size, not a member offset.
    upid_size => "sizeof:upid",
    pid_namespace_ns => "pid_namespace.ns",
    mm_exe_file => "mm_struct.exe_file",
    /// Top of the new program's stack (argc, argv[], NULL, envp[], NULL).
    mm_start_stack => "mm_struct.start_stack",
    /// `inode` change time; the member moved twice (`i_ctime` timespec64,
    /// `__i_ctime` in 6.6, `i_ctime_sec`/`i_ctime_nsec` in 6.11): the
    /// alternatives are tried in order.
    inode_ctime_sec => "inode.i_ctime_sec|inode.__i_ctime.tv_sec|inode.i_ctime.tv_sec",
    inode_ctime_nsec => "inode.i_ctime_nsec|inode.__i_ctime.tv_nsec|inode.i_ctime.tv_nsec",
    file_f_path => "file.f_path",
    file_f_inode => "file.f_inode",
    path_mnt => "path.mnt",
    path_dentry => "path.dentry",
    dentry_d_parent => "dentry.d_parent",
    dentry_d_name => "dentry.d_name",
    qstr_len => "qstr.len",
    qstr_name => "qstr.name",
    mount_mnt_parent => "mount.mnt_parent",
    mount_mnt_mountpoint => "mount.mnt_mountpoint",
    mount_mnt => "mount.mnt",
    vfsmount_mnt_root => "vfsmount.mnt_root",
    fs_struct_pwd => "fs_struct.pwd",
    files_struct_fdt => "files_struct.fdt",
    fdtable_fd => "fdtable.fd",
    fdtable_max_fds => "fdtable.max_fds",
    inode_i_mode => "inode.i_mode",
    inode_i_rdev => "inode.i_rdev",
    file_private_data => "file.private_data",
    socket_type => "socket.type",
    socket_sk => "socket.sk",
    sock_protocol => "sock.sk_protocol",
    sock_family => "sock.__sk_common.skc_family",
    sock_daddr => "sock.__sk_common.skc_daddr",
    sock_rcv_saddr => "sock.__sk_common.skc_rcv_saddr",
    sock_dport => "sock.__sk_common.skc_dport",
    sock_num => "sock.__sk_common.skc_num",
    /// Only with CONFIG_IPV6.
    sock_v6_daddr => "sock.__sk_common.skc_v6_daddr",
    sock_v6_rcv_saddr => "sock.__sk_common.skc_v6_rcv_saddr",
    user_namespace_level => "user_namespace.level",
}

impl Default for KernelOffsets {
    fn default() -> Self {
        Self::missing()
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelOffsets {}
