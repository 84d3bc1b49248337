//! The node's identity, resolved once at start and handed to every part
//! that names the node: exec ids and `host.name` (pipeline), the pod watch
//! (Kubernetes), `k8s.node.name` in OTLP resources and gRPC (delivery).
//! Resolving it in one place is what keeps those names equal.

/// The kernel's host name (`uname -n`); `localhost` when it cannot be read.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates on
    // success (and the search below is bounded by the buffer anyway).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// The node name: `--node-name` (or `$NODE_NAME`, set from the downward
/// API), else the configuration file's `delivery.node_name`, else the host
/// name. Blank values count as absent.
pub fn resolve_node_name(cli: Option<&str>, file: Option<&str>, hostname: &str) -> String {
    [cli, file]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or(hostname)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_then_file_then_host_name() {
        assert_eq!(resolve_node_name(Some("n1"), Some("n2"), "h"), "n1");
        assert_eq!(resolve_node_name(None, Some("n2"), "h"), "n2");
        assert_eq!(resolve_node_name(Some("  "), Some(" n2 "), "h"), "n2");
        assert_eq!(resolve_node_name(None, None, "h"), "h");
        assert_eq!(resolve_node_name(Some(""), None, "h"), "h");
    }

    #[test]
    fn host_name_is_the_kernels() {
        let proc = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
        assert_eq!(hostname(), proc.trim());
    }
}
