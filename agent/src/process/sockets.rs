//! What kind of socket a process's fd is: its address family and, for
//! inet sockets, the peer.
//!
//! The kernel records only say "socket" (the inode mode). That is not
//! enough to tell a reverse shell (a shell whose stdio is a TCP connection)
//! from the Unix socketpairs Node.js, sshd and others put on their
//! children's stdio. The socket's inode is found through
//! `<proc>/<pid>/fd/<n>` (`socket:[<inode>]`) and looked up in the
//! process's own network namespace tables (`<proc>/<pid>/net/{unix,tcp,tcp6,
//! udp,udp6,raw,raw6}`), so sockets in a pod's network namespace resolve too.
//!
//! This runs in user space when the event is processed: if the process has
//! already exited (or closed the fd), the family is `unknown`, and that is
//! counted (`picket_socket_lookups_total{result="gone"}`). Rules treat only
//! `inet`/`inet6` as network sockets, so a short-lived child on a socketpair
//! (`node -e "execFileSync('/usr/bin/true')"`) stays silent.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::LazyLock,
};

use prometheus_client::{
    encoding::EncodeLabelSet, metrics::counter::Counter, metrics::family::Family,
};

use crate::model::{Endpoint, SocketInfo};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

static LOOKUPS: LazyLock<Family<ResultLabel, Counter>> = LazyLock::new(|| {
    crate::metrics::register(
        "socket_lookups",
        "Socket family lookups of stdio / duplicated fds by result (found, gone: the process or fd \
         was gone before the agent looked, so the family is unknown; not_found: a socket in no \
         table, reported as family other)",
        Family::default(),
    )
});

/// The tables searched, in order (Unix first: the common benign case), with
/// the family they imply.
const TABLES: &[(&str, &str)] = &[
    ("unix", "unix"),
    ("tcp", "inet"),
    ("tcp6", "inet6"),
    ("udp", "inet"),
    ("udp6", "inet6"),
    ("raw", "inet"),
    ("raw6", "inet6"),
];

/// Longest table line read; longer lines (a Unix socket with a very long
/// path) are still parsed, only the bytes after this are ignored.
const MAX_TABLE_BYTES: u64 = 16 << 20;

/// The socket behind `fd` of `pid`, or `None` when the fd is not a socket
/// (any more). A socket whose process vanished reports family `unknown`.
pub fn lookup(proc_root: &Path, pid: u32, fd: i32) -> Option<SocketInfo> {
    let dir = proc_root.join(pid.to_string());
    let link = match std::fs::read_link(dir.join("fd").join(fd.to_string())) {
        Ok(l) => l,
        Err(_) => {
            LOOKUPS.get_or_create(&ResultLabel { result: "gone" }).inc();
            return Some(SocketInfo::unknown());
        }
    };
    let inode = socket_inode(&link.to_string_lossy())?;
    for (table, family) in TABLES {
        let Some(text) = read_bounded(&dir.join("net").join(table)) else {
            continue;
        };
        let found = if *table == "unix" {
            find_unix(&text, inode).then(|| SocketInfo {
                family: (*family).into(),
                peer: None,
            })
        } else {
            find_inet(&text, inode).map(|peer| SocketInfo {
                family: (*family).into(),
                peer,
            })
        };
        if let Some(info) = found {
            LOOKUPS
                .get_or_create(&ResultLabel { result: "found" })
                .inc();
            return Some(info);
        }
    }
    // Still open? (The tables were read after the fd: a socket closed in
    // between is gone, not "other".)
    if std::fs::read_link(dir.join("fd").join(fd.to_string())).ok() != Some(link) {
        LOOKUPS.get_or_create(&ResultLabel { result: "gone" }).inc();
        return Some(SocketInfo::unknown());
    }
    LOOKUPS
        .get_or_create(&ResultLabel {
            result: "not_found",
        })
        .inc();
    Some(SocketInfo {
        family: "other".into(),
        peer: None,
    })
}

fn read_bounded(path: &Path) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(MAX_TABLE_BYTES).read_to_string(&mut s).ok()?;
    Some(s)
}

/// `socket:[12345]` -> 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// `/proc/net/unix`: `Num RefCount Protocol Flags Type St Inode [Path]`.
fn find_unix(text: &str, inode: u64) -> bool {
    text.lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(6).and_then(|i| i.parse().ok()) == Some(inode))
}

/// `/proc/net/{tcp,udp,raw}[6]`: `sl local rem st tx:rx tr:when retr uid
/// timeout inode ...`. Returns the peer (`None` for unconnected sockets).
fn find_inet(text: &str, inode: u64) -> Option<Option<Endpoint>> {
    for l in text.lines().skip(1) {
        let cols: Vec<&str> = l.split_whitespace().collect();
        if cols.get(9).and_then(|i| i.parse::<u64>().ok()) != Some(inode) {
            continue;
        }
        let peer = cols.get(2).and_then(|r| parse_endpoint(r));
        return Some(peer.filter(|p| p.port != 0 || p.address != "0.0.0.0" && p.address != "::"));
    }
    None
}

/// `0100007F:1F90` (IPv4, each 32-bit word in host byte order) or the IPv6
/// form with four such words.
fn parse_endpoint(s: &str) -> Option<Endpoint> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(Endpoint {
        address: ip.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(pid: u32, fds: &[(i32, &str)], tables: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join(pid.to_string());
        std::fs::create_dir_all(p.join("fd")).expect("fd dir");
        std::fs::create_dir_all(p.join("net")).expect("net dir");
        for (fd, target) in fds {
            std::os::unix::fs::symlink(target, p.join("fd").join(fd.to_string())).expect("link");
        }
        for (name, text) in tables {
            std::fs::write(p.join("net").join(name), text).expect("table");
        }
        d
    }

    const UNIX: &str = "Num       RefCount Protocol Flags    Type St Inode Path\n\
        0000000000000000: 00000003 00000000 00000000 0001 03 52001\n\
        0000000000000000: 00000002 00000000 00010000 0001 01 52002 /run/x.sock\n";
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
        0: 0100007F:A2B4 0100007F:115C 01 00000000:00000000 00:00000000 00000000     0        0 61001 1 0 20 4 30 10 -1\n\
        1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 61002 1 0 100 0 0 10 0\n";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
        0: 00000000000000000000000001000000:A2B4 00000000000000000000000001000000:115C 01 00000000:00000000 00:00000000 00000000     0        0 61003 1 0 20 4 30 10 -1\n";

    #[test]
    fn families_and_peers() {
        let d = fake_proc(
            7,
            &[
                (0, "socket:[52001]"),
                (1, "socket:[61001]"),
                (2, "socket:[61003]"),
                (3, "socket:[61002]"),
                (4, "socket:[99999]"),
                (5, "pipe:[1234]"),
            ],
            &[("unix", UNIX), ("tcp", TCP), ("tcp6", TCP6)],
        );
        let at = |fd| lookup(d.path(), 7, fd);
        assert_eq!(
            at(0),
            Some(SocketInfo {
                family: "unix".into(),
                peer: None
            })
        );
        assert_eq!(
            at(1),
            Some(SocketInfo {
                family: "inet".into(),
                peer: Some(Endpoint {
                    address: "127.0.0.1".into(),
                    port: 4444
                })
            })
        );
        assert_eq!(
            at(2),
            Some(SocketInfo {
                family: "inet6".into(),
                peer: Some(Endpoint {
                    address: "::1".into(),
                    port: 4444
                })
            })
        );
        assert_eq!(
            at(3),
            Some(SocketInfo {
                family: "inet".into(),
                peer: None
            }),
            "a listener has no peer"
        );
        assert_eq!(
            at(4),
            Some(SocketInfo {
                family: "other".into(),
                peer: None
            })
        );
        assert_eq!(at(5), None, "not a socket");
        assert_eq!(at(9), Some(SocketInfo::unknown()), "fd gone");
        assert_eq!(
            lookup(d.path(), 8, 0),
            Some(SocketInfo::unknown()),
            "process gone"
        );
    }

    #[test]
    fn hostile_table_lines_do_not_panic() {
        let d = fake_proc(
            7,
            &[(0, "socket:[5]")],
            &[
                ("unix", "header\n\n x y\n"),
                (
                    "tcp",
                    "header\n0: zz:zz 0100007F:ZZZZ 01 a b c d e 5\n0: 1:2 3\n",
                ),
            ],
        );
        assert_eq!(
            lookup(d.path(), 7, 0),
            Some(SocketInfo {
                family: "inet".into(),
                peer: None
            })
        );
        assert_eq!(socket_inode("socket:[abc]"), None);
        assert_eq!(parse_endpoint("0100007F"), None);
        assert_eq!(parse_endpoint("01007F:0050"), None);
    }
}
