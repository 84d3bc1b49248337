//! What an open fd refers to, from its inode mode (and device number).

use crate::model::FdType;

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
const S_IFCHR: u16 = 0o020000;
const S_IFIFO: u16 = 0o010000;

/// Classifies an fd from `inode->i_mode` and the kernel-internal `i_rdev`
/// (major = rdev >> 20). Majors 4 and 5 (virtual consoles, /dev/tty) and
/// 136-143 (pseudo-terminals) are terminals. Mode 0 means the fd was closed.
pub fn fd_type(mode: u16, rdev: u32) -> FdType {
    if mode == 0 {
        return FdType::Closed;
    }
    match mode & S_IFMT {
        S_IFSOCK => FdType::Socket,
        S_IFIFO => FdType::Pipe,
        S_IFREG => FdType::File,
        S_IFDIR => FdType::Directory,
        S_IFCHR => {
            let major = rdev >> 20;
            if major == 4 || major == 5 || (136..=143).contains(&major) {
                FdType::Tty
            } else {
                FdType::CharDevice
            }
        }
        _ => FdType::Other,
    }
}

/// The same from a userspace `st_rdev` (glibc encoding), for /proc seeding.
pub fn fd_type_user(mode: u32, rdev: u64) -> FdType {
    let major = (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff)) as u32;
    fd_type(mode as u16, major << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(fd_type(0, 0), FdType::Closed);
        assert_eq!(fd_type(S_IFSOCK | 0o777, 0), FdType::Socket);
        assert_eq!(fd_type(S_IFIFO | 0o600, 0), FdType::Pipe);
        assert_eq!(fd_type(S_IFREG | 0o644, 0), FdType::File);
        assert_eq!(
            fd_type(S_IFCHR | 0o620, 136 << 20 | 3),
            FdType::Tty,
            "/dev/pts/3"
        );
        assert_eq!(
            fd_type(S_IFCHR | 0o666, 1 << 20 | 3),
            FdType::CharDevice,
            "/dev/null"
        );
        assert_eq!(
            fd_type(S_IFCHR | 0o620, 4 << 20 | 1),
            FdType::Tty,
            "/dev/tty1"
        );
        assert_eq!(
            fd_type_user(S_IFCHR as u32 | 0o620, (136 << 8) | 3),
            FdType::Tty
        );
    }
}
