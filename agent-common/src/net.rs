//! Network records: connect, sendto/sendmsg with a destination, bind,
//! listen, accept/accept4.

use crate::EventHeader;

/// `NetEvent::op`: the syscall that produced the record.
pub mod net_op {
    pub const CONNECT: u32 = 1;
    pub const SENDTO: u32 = 2;
    pub const SENDMSG: u32 = 3;
    pub const BIND: u32 = 4;
    pub const LISTEN: u32 = 5;
    pub const ACCEPT: u32 = 6;
    pub const ACCEPT4: u32 = 7;
}

/// `NetEvent::flags` bits.
pub mod net_flags {
    /// The fd's `struct socket` could not be read (type/protocol/local unknown).
    pub const SOCKET_MISSING: u32 = 1 << 0;
    /// `addr` could not be read from user memory.
    pub const ADDR_MISSING: u32 = 1 << 1;
}

/// Bytes of a raw `struct sockaddr` kept (`sockaddr_un` is 110 bytes).
pub const SOCKADDR_MAX: usize = 112;
/// Bytes of the local address (a `sockaddr_in6` is 28 bytes).
pub const LOCAL_MAX: usize = 28;

/// One network syscall, written at its exit with the result.
///
/// Addresses are raw `struct sockaddr` bytes in the kernel's layout (family
/// first, ports in network order) so the kernel copies instead of parsing;
/// the agent parses them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NetEvent {
    pub header: EventHeader,
    /// Syscall return value (negative errno on failure). For accept: the new fd.
    pub result: i64,
    /// See [`net_op`].
    pub op: u32,
    /// The socket fd the call was made on.
    pub fd: i32,
    /// `socket->type` (`SOCK_STREAM` = 1, `SOCK_DGRAM` = 2, ...).
    pub sock_type: u16,
    /// `sk->sk_protocol` (`IPPROTO_TCP` = 6, `IPPROTO_UDP` = 17, ...).
    pub protocol: u16,
    /// See [`net_flags`].
    pub flags: u32,
    /// listen: backlog; accept4: flags; sendto/sendmsg: flags; else 0.
    pub arg: u32,
    /// Valid bytes in `addr` (the peer: connect/send destination, accept
    /// peer, bind requested address).
    pub addr_len: u32,
    /// Valid bytes in `local` (local address from the socket, 0 if unknown).
    pub local_len: u32,
    pub _pad: u32,
    pub addr: [u8; SOCKADDR_MAX],
    pub local: [u8; LOCAL_MAX],
    pub _pad2: u32,
}

/// In-kernel network filter (`NET_FILTER[generation]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetFilter {
    /// Bit `1 << family` set = family reported (`AF_UNIX` 1, `AF_INET` 2,
    /// `AF_INET6` 10). 0 reports every family.
    pub family_mask: u64,
    /// One of [`port_filter`]; ports are listed in `NET_PORTS`.
    pub port_mode: u32,
    pub _pad: u32,
}

/// Key of `NET_PORTS`: the filter generation (see `crate::settings`) and a
/// port in host order.
#[inline(always)]
pub const fn port_key(generation: u32, port: u16) -> u32 {
    (generation << 16) | port as u32
}

/// `NetFilter::port_mode` values.
pub mod port_filter {
    pub const OFF: u32 = 0;
    /// Only addresses whose port is listed are reported.
    pub const ONLY_LISTED: u32 = 1;
    /// Addresses whose port is listed are not reported.
    pub const EXCLUDE_LISTED: u32 = 2;
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::NetEvent {}
    unsafe impl aya::Pod for super::NetFilter {}
}
