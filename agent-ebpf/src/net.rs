//! Network sensor: connect, sendto/sendmsg with a destination, bind, listen,
//! accept/accept4. Addresses given by the caller are read at entry; the
//! socket's type, protocol and local address (and accept's peer) are read
//! from the kernel's `struct socket` at exit. Family/port filters run in the
//! kernel; connect is rate-limited per cgroup.

use agent_common::{
    EventKind,
    net::{LOCAL_MAX, NetEvent, NetFilter, SOCKADDR_MAX, net_flags, net_op, port_filter, port_key},
    settings::FILTER_GENERATIONS,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
    programs::TracePointContext,
};

use crate::{
    kernel::{off, read, read_ptr},
    maps::filter_gen,
    sys::{
        SMALL_MAX, Stash, arg, copy, enabled, enabled_in, fd_file, file_mode, header, rate_allowed,
        reserve, ret, stash_begin, stash_commit, stash_done, stash_get, submit, syscall_pair,
        user_bytes,
    },
};

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;

/// Family and port filter, one per filter generation, see `agent_common::net`.
#[map]
pub static NET_FILTER: Array<NetFilter> = Array::with_max_entries(FILTER_GENERATIONS, 0);

/// Ports for `NetFilter::port_mode`, keyed by `port_key(generation, port)`.
#[map]
pub static NET_PORTS: HashMap<u32, u8> = HashMap::with_max_entries(2048, 0);

/// Whether an address of `family` with port `port` (host order; `None` for
/// families without ports) passes the filter of generation `g`.
#[inline(always)]
fn net_allowed(g: u32, family: u16, port: Option<u16>) -> bool {
    let Some(f) = NET_FILTER.get(g) else {
        return true;
    };
    if f.family_mask != 0 && (family >= 64 || f.family_mask & (1u64 << family) == 0) {
        return false;
    }
    match f.port_mode {
        port_filter::ONLY_LISTED => {
            port.is_some_and(|p| unsafe { NET_PORTS.get(&port_key(g, p)) }.is_some())
        }
        port_filter::EXCLUDE_LISTED => {
            port.is_none_or(|p| unsafe { NET_PORTS.get(&port_key(g, p)) }.is_none())
        }
        _ => true,
    }
}

/// Family and port of raw sockaddr bytes.
#[inline(always)]
fn family_port(a: &[u8]) -> (u16, Option<u16>) {
    let family = u16::from_ne_bytes([a[0], a[1]]);
    let port = match family {
        AF_INET | AF_INET6 => Some(u16::from_be_bytes([a[2], a[3]])),
        _ => None,
    };
    (family, port)
}

/// Whether the sockaddr bytes at `p` (at least 2 read) are AF_UNIX.
#[inline(always)]
fn is_unix(p: *const u8) -> bool {
    // SAFETY: `p` points into the stash's address buffer (>= 2 bytes).
    unsafe { u16::from_ne_bytes([*p, *p.add(1)]) == 1 }
}

/// Reads the caller's sockaddr into `s.s2`; sets `s.len[2]`.
#[inline(always)]
fn stash_sockaddr(s: &mut Stash, addr: u64, addrlen: u64) -> bool {
    if addr == 0 {
        return false;
    }
    // Fixed-size attempts (the verifier wants constant sizes): a whole
    // sockaddr_un, then the inet sizes for short buffers at a page end.
    // The sockaddr_un read is tried for any Unix-sized length: Go, Python
    // and others pass the exact length (2 + path + 1), which the inet tiers
    // would cut (`/var/run/docker.sock` read as 16 bytes); the bytes past
    // `addrlen` are dropped again below.
    let dst = s.s2.as_mut_ptr();
    let got = if addrlen > 28 && user_bytes(dst, 110, addr) {
        if addrlen < 110 { addrlen as u32 } else { 110 }
    } else if addrlen > 2 && addrlen < 28 && user_bytes(dst, 110, addr) && is_unix(dst) {
        addrlen as u32
    } else if addrlen >= 28 && user_bytes(dst, 28, addr) {
        28
    } else if addrlen >= 16 && user_bytes(dst, 16, addr) {
        16
    } else if addrlen >= 2 && user_bytes(dst, 2, addr) {
        2
    } else {
        0
    };
    s.len[2] = got;
    got > 0
}

/// connect/bind/sendto/sendmsg entry: stash when the address passes the filter.
#[inline(always)]
fn enter_with_addr(
    op: u32,
    kind: EventKind,
    fd: u64,
    addr: u64,
    addrlen: u64,
    argv: u64,
) -> Option<()> {
    let g = filter_gen();
    if !enabled_in(g, kind) {
        return None;
    }
    let s = stash_begin(op, kind)?;
    s.args[0] = fd;
    s.args[1] = argv;
    if !stash_sockaddr(s, addr, addrlen) {
        return None;
    }
    let (family, port) = family_port(&s.s2[..4]);
    if !net_allowed(g, family, port) {
        return None;
    }
    stash_commit(s);
    Some(())
}

/// listen/accept entry: the address is known only at exit.
#[inline(always)]
fn enter_plain(op: u32, kind: EventKind, fd: u64, argv: u64) -> Option<()> {
    if !enabled(kind) {
        return None;
    }
    let s = stash_begin(op, kind)?;
    s.args[0] = fd;
    s.args[1] = argv;
    stash_commit(s);
    Some(())
}

/// `struct socket *` behind fd `fd`, if it is a socket.
#[inline(always)]
fn fd_socket(fd: i64) -> Option<*const u8> {
    let file = fd_file(fd)?;
    if file_mode(file) & S_IFMT != S_IFSOCK {
        return None;
    }
    read_ptr(file, off!(file_private_data))
}

/// Writes the sock's local (`peer == false`) or remote address as a raw
/// sockaddr into `out`; returns the bytes written.
#[inline(always)]
fn sock_addr(sk: *const u8, peer: bool, out: &mut [u8; LOCAL_MAX]) -> u32 {
    let Some(family) = read::<u16>(sk, off!(sock_family)) else {
        return 0;
    };
    out[..2].copy_from_slice(&family.to_ne_bytes());
    let port_be: u16 = if peer {
        read::<u16>(sk, off!(sock_dport)).unwrap_or(0)
    } else {
        read::<u16>(sk, off!(sock_num)).unwrap_or(0).to_be()
    };
    out[2..4].copy_from_slice(&port_be.to_ne_bytes());
    match family {
        AF_INET => {
            let a = read::<[u8; 4]>(
                sk,
                if peer {
                    off!(sock_daddr)
                } else {
                    off!(sock_rcv_saddr)
                },
            )
            .unwrap_or([0; 4]);
            out[4..8].copy_from_slice(&a);
            out[8..16].copy_from_slice(&[0; 8]);
            16
        }
        AF_INET6 => {
            let a = read::<[u8; 16]>(
                sk,
                if peer {
                    off!(sock_v6_daddr)
                } else {
                    off!(sock_v6_rcv_saddr)
                },
            )
            .unwrap_or([0; 16]);
            out[4..8].copy_from_slice(&[0; 4]);
            out[8..24].copy_from_slice(&a);
            out[24..28].copy_from_slice(&[0; 4]);
            28
        }
        _ => 2,
    }
}

/// The shared exit: result, socket details, filters for listen/accept,
/// connect rate limit, then the record.
#[inline(always)]
fn net_exit(ctx: &TracePointContext, op: u32, kind: EventKind) -> Option<()> {
    let s = stash_get(op, kind)?;
    let result = ret(ctx);
    let accepting = op == net_op::ACCEPT || op == net_op::ACCEPT4;
    // accept: the new socket (result) has the peer and the local address.
    let sock_fd = if accepting { result } else { s.args[0] as i64 };
    let sock = if accepting && result < 0 {
        None
    } else {
        fd_socket(sock_fd)
    };
    let sk = sock.and_then(|so| read_ptr(so, off!(socket_sk)));
    let mut local = [0u8; LOCAL_MAX];
    let local_len = sk.map(|k| sock_addr(k, false, &mut local)).unwrap_or(0);
    if op == net_op::LISTEN || accepting {
        // Filtered here: the address is known only now.
        let (family, port) = if local_len >= 4 {
            family_port(&local[..4])
        } else {
            (0, None)
        };
        if local_len >= 2 && !net_allowed(filter_gen(), family, port) {
            stash_done();
            return None;
        }
    }
    if kind == EventKind::Connect && !rate_allowed(kind) {
        stash_done();
        return None;
    }
    let Some(mut entry) = reserve::<NetEvent>(kind) else {
        stash_done();
        return None;
    };
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.header = header(kind, core::mem::size_of::<NetEvent>());
    ev.result = result;
    ev.op = op;
    ev.fd = s.args[0] as i32;
    ev.arg = s.args[1] as u32;
    ev.flags = 0;
    ev._pad = 0;
    ev._pad2 = 0;
    ev.sock_type = 0;
    ev.protocol = 0;
    match sock {
        Some(so) => {
            ev.sock_type = read::<u16>(so, off!(socket_type)).unwrap_or(0);
            ev.protocol = sk
                .and_then(|k| read::<u16>(k, off!(sock_protocol)))
                .unwrap_or(0);
        }
        None => ev.flags |= net_flags::SOCKET_MISSING,
    }
    ev.local = local;
    ev.local_len = local_len;
    if accepting {
        let mut peer = [0u8; LOCAL_MAX];
        let n = sk.map(|k| sock_addr(k, true, &mut peer)).unwrap_or(0);
        ev.addr[..LOCAL_MAX].copy_from_slice(&peer);
        ev.addr_len = n;
    } else {
        copy::<SOCKADDR_MAX>(&mut ev.addr, first::<SOCKADDR_MAX, SMALL_MAX>(&s.s2));
        ev.addr_len = s.len[2].min(SOCKADDR_MAX as u32);
        if op == net_op::LISTEN {
            ev.addr_len = 0;
        }
    }
    stash_done();
    submit(entry, kind);
    Some(())
}

/// The first `N` bytes of an `M`-byte array.
#[inline(always)]
fn first<const N: usize, const M: usize>(a: &[u8; M]) -> &[u8; N] {
    const { assert!(N <= M) };
    unsafe { &*(a.as_ptr() as *const [u8; N]) }
}

syscall_pair!(
    sys_enter_connect,
    sys_exit_connect,
    |ctx| enter_with_addr(
        net_op::CONNECT,
        EventKind::Connect,
        arg(ctx, 0),
        arg(ctx, 1),
        arg(ctx, 2),
        0
    ),
    |ctx| net_exit(ctx, net_op::CONNECT, EventKind::Connect),
);

syscall_pair!(
    sys_enter_sendto,
    sys_exit_sendto,
    // sendto(fd, buf, len, flags, addr, addrlen): only with a destination.
    |ctx| enter_with_addr(
        net_op::SENDTO,
        EventKind::Send,
        arg(ctx, 0),
        arg(ctx, 4),
        arg(ctx, 5),
        arg(ctx, 3)
    ),
    |ctx| net_exit(ctx, net_op::SENDTO, EventKind::Send),
);

syscall_pair!(
    sys_enter_sendmsg,
    sys_exit_sendmsg,
    |ctx| sendmsg_enter(ctx),
    |ctx| net_exit(ctx, net_op::SENDMSG, EventKind::Send),
);

/// sendmsg(fd, msg, flags): the destination is `msg->msg_name`/`msg_namelen`.
#[inline(always)]
fn sendmsg_enter(ctx: &TracePointContext) -> Option<()> {
    let msg = arg(ctx, 1);
    let mut hdr = [0u64; 2];
    if !user_bytes(hdr.as_mut_ptr() as *mut u8, 16, msg) || hdr[0] == 0 {
        return None;
    }
    enter_with_addr(
        net_op::SENDMSG,
        EventKind::Send,
        arg(ctx, 0),
        hdr[0],
        hdr[1] & 0xffff_ffff,
        arg(ctx, 2),
    )
}

syscall_pair!(
    sys_enter_bind,
    sys_exit_bind,
    |ctx| enter_with_addr(
        net_op::BIND,
        EventKind::Bind,
        arg(ctx, 0),
        arg(ctx, 1),
        arg(ctx, 2),
        0
    ),
    |ctx| net_exit(ctx, net_op::BIND, EventKind::Bind),
);

syscall_pair!(
    sys_enter_listen,
    sys_exit_listen,
    |ctx| enter_plain(net_op::LISTEN, EventKind::Listen, arg(ctx, 0), arg(ctx, 1)),
    |ctx| net_exit(ctx, net_op::LISTEN, EventKind::Listen),
);

syscall_pair!(
    sys_enter_accept,
    sys_exit_accept,
    |ctx| enter_plain(net_op::ACCEPT, EventKind::Accept, arg(ctx, 0), 0),
    |ctx| net_exit(ctx, net_op::ACCEPT, EventKind::Accept),
);

syscall_pair!(
    sys_enter_accept4,
    sys_exit_accept4,
    |ctx| enter_plain(net_op::ACCEPT4, EventKind::Accept, arg(ctx, 0), arg(ctx, 3)),
    |ctx| net_exit(ctx, net_op::ACCEPT4, EventKind::Accept),
);

const _: u16 = AF_UNIX;
