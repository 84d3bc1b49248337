//! cgroup id -> path on the spot, from the kernel.
//!
//! A cgroup v2 id is the kernfs node id of its directory, and kernfs
//! exports it as a file handle (`FILEID_KERNFS`, 8 bytes: the id).
//! `open_by_handle_at(2)` on the cgroup2 mount with that handle opens the
//! directory; `readlink(/proc/self/fd/N)` gives its path. That is one
//! syscall pair per unknown id instead of a walk of the whole hierarchy, so
//! a container created a millisecond ago (or one that ran for 100 ms) is
//! attributed by its first event, without periodic rescans.
//!
//! It needs `CAP_DAC_READ_SEARCH` (the agent runs as root) and a cgroup2
//! mount. When the kernel refuses (no capability, no handle support), the
//! resolver falls back to walks of the hierarchy; that is logged once.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

/// `FILEID_KERNFS` from `include/linux/exportfs.h`.
const FILEID_KERNFS: i32 = 0xfe;
/// `CGROUP2_SUPER_MAGIC` from `include/uapi/linux/magic.h`.
const CGROUP2_SUPER_MAGIC: libc::__fsword_t = 0x6367_7270;

/// What a lookup by handle found.
#[derive(Debug)]
pub(crate) enum HandleLookup {
    /// The path relative to the cgroup2 root (`/` for the root).
    Found(String),
    /// No such cgroup (never existed, or already removed).
    Gone,
    /// The kernel refused this kind of lookup (no capability, no support):
    /// further lookups would fail the same way.
    Unsupported(io::Error),
}

/// An open cgroup2 mount to look cgroup ids up in.
#[derive(Debug)]
pub(crate) struct HandleOpener {
    mount: OwnedFd,
    /// The mount point as `readlink` spells it (prefix of every path).
    prefix: String,
}

impl HandleOpener {
    /// Opens `root`; `None` when it is not a cgroup2 mount (tests give
    /// plain directories) or cannot be opened.
    pub(crate) fn open(root: &Path) -> Option<Self> {
        let c = CString::new(root.as_os_str().as_bytes()).ok()?;
        // SAFETY: a valid NUL-terminated path; the fd is owned right away.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just returned by open and is owned by nobody else.
        let mount = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: statfs is plain data; fstatfs fills it or fails.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd and a valid out pointer.
        if unsafe { libc::fstatfs(mount.as_raw_fd(), &raw mut st) } != 0
            || st.f_type != CGROUP2_SUPER_MAGIC
        {
            return None;
        }
        let prefix = std::fs::read_link(format!("/proc/self/fd/{}", mount.as_raw_fd()))
            .ok()?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_owned();
        Some(Self { mount, prefix })
    }

    /// Looks cgroup `id` up.
    pub(crate) fn lookup(&self, id: u64) -> HandleLookup {
        #[repr(C)]
        struct KernfsHandle {
            handle_bytes: u32,
            handle_type: i32,
            id: [u8; 8],
        }
        let mut h = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id: id.to_ne_bytes(),
        };
        // SAFETY: `KernfsHandle` has the layout of `struct file_handle`
        // with an 8-byte `f_handle`, as `handle_bytes` says; the kernel only
        // reads it. The returned fd is owned right away.
        let fd = unsafe {
            libc::open_by_handle_at(
                self.mount.as_raw_fd(),
                (&raw mut h).cast::<libc::file_handle>(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ESTALE | libc::ENOENT | libc::ENOTDIR) => HandleLookup::Gone,
                _ => HandleLookup::Unsupported(err),
            };
        }
        // SAFETY: `fd` was just returned by open_by_handle_at.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
            return HandleLookup::Gone;
        };
        let target = target.to_string_lossy();
        // A removed directory reads as "... (deleted)": its path is no
        // longer trustworthy.
        if target.ends_with(" (deleted)") {
            return HandleLookup::Gone;
        }
        match target.strip_prefix(self.prefix.as_str()) {
            Some("") => HandleLookup::Found("/".to_owned()),
            Some(rel) if rel.starts_with('/') => HandleLookup::Found(rel.to_owned()),
            // Outside the mount as this namespace sees it.
            _ => HandleLookup::Gone,
        }
    }
}
