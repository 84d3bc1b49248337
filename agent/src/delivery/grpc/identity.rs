//! Who is calling: the authenticated identity of a gRPC peer, for audit logs.

use tonic::Request;
use tonic::transport::server::{TcpConnectInfo, UdsConnectInfo};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The caller's identity:
/// - mutual TLS: `cn=<subject CN>` plus `san=<DNS/URI/email SANs>` of the
///   client certificate (verified by rustls against the client CA);
/// - Unix socket: `uid=<uid> gid=<gid> pid=<pid>` from `SO_PEERCRED`;
/// - plaintext TCP: `unauthenticated <addr>`.
pub fn peer_identity<T>(req: &Request<T>) -> String {
    if let Some(certs) = req.peer_certs()
        && let Some(first) = certs.first()
    {
        return cert_identity(first.as_ref());
    }
    if let Some(uds) = req.extensions().get::<UdsConnectInfo>() {
        if let Some(c) = uds.peer_cred {
            return format!(
                "uid={} gid={} pid={}",
                c.uid(),
                c.gid(),
                c.pid().unwrap_or(0)
            );
        }
        return "unix".into();
    }
    if let Some(tcp) = req.extensions().get::<TcpConnectInfo>()
        && let Some(addr) = tcp.remote_addr()
    {
        return format!("unauthenticated {addr}");
    }
    "unknown".into()
}

/// Subject CN and SANs of a DER certificate.
pub fn cert_identity(der: &[u8]) -> String {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return "unparsable-certificate".into();
    };
    let cn = cert
        .subject()
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => sans.push(format!("dns:{d}")),
                GeneralName::URI(u) => sans.push(format!("uri:{u}")),
                GeneralName::RFC822Name(e) => sans.push(format!("email:{e}")),
                _ => {}
            }
        }
    }
    if sans.is_empty() {
        format!("cn={cn}")
    } else {
        format!("cn={cn} san={}", sans.join(","))
    }
}

/// Prefix of every cursor that an API client owns. Sink names from the
/// configuration may not start with it, so no client can move a sink's
/// cursor.
pub const SUBSCRIBER_PREFIX: &str = "api.";

/// The stable part of the caller's identity that owns its subscriber
/// cursors: `cn-<CN>` (mutual TLS), `uid-<uid>` (Unix socket), `anon`
/// (plaintext TCP or unknown). Only `[A-Za-z0-9_-]`; a CN that needed
/// rewriting gets a checksum of the original appended so two CNs never
/// share a namespace.
pub fn principal<T>(req: &Request<T>) -> String {
    if let Some(certs) = req.peer_certs()
        && let Some(first) = certs.first()
    {
        let cn = X509Certificate::from_der(first.as_ref())
            .ok()
            .map(|(_, c)| {
                c.subject()
                    .iter_common_name()
                    .filter_map(|a| a.as_str().ok())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        return format!("cn-{}", sanitize(&cn));
    }
    if let Some(uds) = req.extensions().get::<UdsConnectInfo>()
        && let Some(c) = uds.peer_cred
    {
        return format!("uid-{}", c.uid());
    }
    "anon".into()
}

fn sanitize(raw: &str) -> String {
    let clean: String = raw
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == raw && !raw.is_empty() {
        clean
    } else {
        format!("{clean}-{:08x}", crc32fast::hash(raw.as_bytes()))
    }
}

/// The spool cursor of subscriber `name` owned by `principal`.
pub fn subscriber_cursor(principal: &str, name: &str) -> String {
    format!("{SUBSCRIBER_PREFIX}{principal}.{name}")
}
