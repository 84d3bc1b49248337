//! Network records -> `syscall` + `network` sections.

use std::net::{Ipv4Addr, Ipv6Addr};

use agent_common::net::{NetEvent, net_op};

use crate::model::{Endpoint, Event, Network, Syscall};

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Syscall name of a `net_op`.
pub fn syscall_name(op: u32) -> &'static str {
    match op {
        net_op::CONNECT => "connect",
        net_op::SENDTO => "sendto",
        net_op::SENDMSG => "sendmsg",
        net_op::BIND => "bind",
        net_op::LISTEN => "listen",
        net_op::ACCEPT => "accept",
        net_op::ACCEPT4 => "accept4",
        _ => "unknown",
    }
}

/// A parsed raw sockaddr: `(family, endpoint)`. `None` when too short.
pub fn parse_sockaddr(raw: &[u8]) -> Option<(u16, Endpoint)> {
    let family = u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]);
    let port = || raw.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]]));
    match family {
        AF_INET => {
            let a: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some((
                family,
                Endpoint {
                    address: Ipv4Addr::from(a).to_string(),
                    port: port()?,
                },
            ))
        }
        AF_INET6 => {
            let a: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            Some((
                family,
                Endpoint {
                    address: Ipv6Addr::from(a).to_string(),
                    port: port()?,
                },
            ))
        }
        AF_UNIX => {
            let path = raw.get(2..).unwrap_or(&[]);
            // Abstract sockets start with a NUL; shown as "@name".
            let address = match path.split_first() {
                Some((0, rest)) => {
                    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                    format!("@{}", String::from_utf8_lossy(&rest[..end]))
                }
                _ => crate::sensor::decode::cstr(path),
            };
            Some((family, Endpoint { address, port: 0 }))
        }
        _ => Some((
            family,
            Endpoint {
                address: String::new(),
                port: 0,
            },
        )),
    }
}

fn family_name(family: u16) -> String {
    match family {
        AF_INET => "ipv4".into(),
        AF_INET6 => "ipv6".into(),
        AF_UNIX => "unix".into(),
        0 => String::new(),
        f => format!("af_{f}"),
    }
}

/// `network.transport` from the protocol, falling back to the socket type.
fn transport(family: u16, sock_type: u16, protocol: u16) -> String {
    if family == AF_UNIX {
        return "unix".into();
    }
    match (protocol, sock_type) {
        (6, _) => "tcp".into(),
        (17, _) => "udp".into(),
        (1, _) => "icmp".into(),
        (58, _) => "icmpv6".into(),
        (132, _) => "sctp".into(),
        (_, 3) => "raw".into(),
        (0, 1) => "tcp".into(),
        (0, 2) => "udp".into(),
        (p, _) => format!("ip_proto_{p}"),
    }
}

pub fn fill(ev: &mut Event, e: &NetEvent) {
    ev.syscall = Some(Syscall {
        name: syscall_name(e.op).into(),
        result: e.result,
    });
    let addr = &e.addr[..(e.addr_len as usize).min(e.addr.len())];
    let local = &e.local[..(e.local_len as usize).min(e.local.len())];
    let target = parse_sockaddr(addr);
    let mine = parse_sockaddr(local);
    let family = target
        .as_ref()
        .or(mine.as_ref())
        .map(|(f, _)| *f)
        .unwrap_or(0);
    let keep = |p: Option<(u16, Endpoint)>| {
        p.filter(|(f, _)| *f == AF_INET || *f == AF_INET6 || *f == AF_UNIX)
            .map(|(_, e)| e)
    };
    let (peer, local) = match e.op {
        // bind's address is the local one.
        net_op::BIND => (None, keep(target)),
        _ => (keep(target), keep(mine)),
    };
    ev.network = Some(Network {
        transport: transport(family, e.sock_type, e.protocol),
        r#type: family_name(family),
        peer,
        local,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs() {
        let mut v4 = vec![2, 0, 0x1f, 0x90, 127, 0, 0, 1];
        v4.extend([0; 8]);
        assert_eq!(
            parse_sockaddr(&v4),
            Some((
                2,
                Endpoint {
                    address: "127.0.0.1".into(),
                    port: 8080
                }
            ))
        );
        let mut v6 = vec![10, 0, 0, 53, 0, 0, 0, 0];
        v6.extend(Ipv6Addr::LOCALHOST.octets());
        v6.extend([0; 4]);
        assert_eq!(
            parse_sockaddr(&v6),
            Some((
                10,
                Endpoint {
                    address: "::1".into(),
                    port: 53
                }
            ))
        );
        assert_eq!(
            parse_sockaddr(b"\x01\x00/run/x.sock\0junk"),
            Some((
                1,
                Endpoint {
                    address: "/run/x.sock".into(),
                    port: 0
                }
            ))
        );
        assert_eq!(
            parse_sockaddr(b"\x01\x00\0abs\0"),
            Some((
                1,
                Endpoint {
                    address: "@abs".into(),
                    port: 0
                }
            ))
        );
        assert_eq!(parse_sockaddr(&[2]), None);
        assert_eq!(
            parse_sockaddr(&[2, 0, 1, 2]),
            None,
            "truncated inet address"
        );
        assert_eq!(transport(2, 1, 6), "tcp");
        assert_eq!(transport(10, 2, 17), "udp");
        assert_eq!(transport(1, 1, 0), "unix");
    }
}
