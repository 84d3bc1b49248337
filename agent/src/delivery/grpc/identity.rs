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
