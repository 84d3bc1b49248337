//! Decoding ring-buffer records into typed kernel events.
//!
//! Records come from our own programs, but the agent still treats them as
//! untrusted bytes: every length is checked before a struct is read, and a
//! bad record is counted and skipped, never a panic.

use std::sync::LazyLock;

use agent_common::{
    EventHeader, EventKind,
    control::{ControlEvent, MountEvent},
    file::{FileChangeEvent, FileOpenEvent},
    net::NetEvent,
    process::{ExecEvent, ExitEvent, ForkEvent},
    ratelimit::RateSummaryEvent,
    security::{CapEvent, CredEvent},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

/// A record from the kernel, copied out of the ring buffer.
#[derive(Clone)]
pub enum RawEvent {
    Exec(Box<ExecEvent>),
    Fork(ForkEvent),
    Exit(ExitEvent),
    /// connect/send/bind/listen/accept (kind in the header).
    Net(Box<NetEvent>),
    FileOpen(Box<FileOpenEvent>),
    FileChange(Box<FileChangeEvent>),
    Capability(CapEvent),
    Privilege(Box<CredEvent>),
    /// namespace/ptrace/memfd/module_load/bpf/fd_dup (kind in the header).
    Control(Box<ControlEvent>),
    Mount(Box<MountEvent>),
    /// Sent by the kernel when a rate-limit window rolls over.
    RateSummary(RateSummaryEvent),
}

impl RawEvent {
    pub fn header(&self) -> &EventHeader {
        match self {
            Self::Exec(e) => &e.header,
            Self::Fork(e) => &e.header,
            Self::Exit(e) => &e.header,
            Self::Net(e) => &e.header,
            Self::FileOpen(e) => &e.header,
            Self::FileChange(e) => &e.header,
            Self::Capability(e) => &e.header,
            Self::Privilege(e) => &e.header,
            Self::Control(e) => &e.header,
            Self::Mount(e) => &e.header,
            Self::RateSummary(e) => &e.header,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {min}-byte header")]
    Short { len: usize, min: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u16),
    #[error("{kind} record is {got} bytes, expected {expected}")]
    SizeMismatch {
        kind: &'static str,
        expected: usize,
        got: usize,
    },
}

impl DecodeError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Short { .. } => "short",
            Self::UnknownKind(_) => "unknown_kind",
            Self::SizeMismatch { .. } => "size_mismatch",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

static DECODE_ERRORS: LazyLock<Family<ReasonLabel, Counter>> = LazyLock::new(|| {
    crate::metrics::register(
        "decode_errors",
        "Ring-buffer records that could not be decoded and were skipped, by reason",
        Family::default(),
    )
});

/// Counts a decode error (metric + log).
pub fn record_error(e: &DecodeError) {
    DECODE_ERRORS
        .get_or_create(&ReasonLabel { reason: e.reason() })
        .inc();
    tracing::warn!(error = %e, reason = e.reason(), "skipped undecodable ring-buffer record");
}

/// Reads a `T` from the start of `buf` if it is exactly `size_of::<T>()`.
fn read_exact<T: Copy>(buf: &[u8], kind: EventKind) -> Result<T, DecodeError> {
    let expected = size_of::<T>();
    if buf.len() != expected {
        return Err(DecodeError::SizeMismatch {
            kind: kind.name(),
            expected,
            got: buf.len(),
        });
    }
    // SAFETY: length checked; T is a #[repr(C)] plain-old-data type from
    // agent-common for which every bit pattern is valid; read_unaligned
    // tolerates the ring buffer's 8-byte alignment.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<RawEvent, DecodeError> {
    if buf.len() < EventHeader::SIZE {
        return Err(DecodeError::Short {
            len: buf.len(),
            min: EventHeader::SIZE,
        });
    }
    let kind = u16::from_ne_bytes([buf[0], buf[1]]);
    match EventKind::from_u16(kind) {
        Some(k @ EventKind::Exec) => Ok(RawEvent::Exec(Box::new(read_exact::<ExecEvent>(buf, k)?))),
        Some(k @ EventKind::Fork) => Ok(RawEvent::Fork(read_exact::<ForkEvent>(buf, k)?)),
        Some(k @ EventKind::Exit) => Ok(RawEvent::Exit(read_exact::<ExitEvent>(buf, k)?)),
        Some(
            k @ (EventKind::Connect
            | EventKind::Send
            | EventKind::Bind
            | EventKind::Listen
            | EventKind::Accept),
        ) => Ok(RawEvent::Net(Box::new(read_exact::<NetEvent>(buf, k)?))),
        Some(k @ EventKind::FileOpen) => Ok(RawEvent::FileOpen(Box::new(read_exact::<
            FileOpenEvent,
        >(buf, k)?))),
        Some(k @ EventKind::FileChange) => Ok(RawEvent::FileChange(Box::new(read_exact::<
            FileChangeEvent,
        >(buf, k)?))),
        Some(k @ EventKind::Capability) => {
            Ok(RawEvent::Capability(read_exact::<CapEvent>(buf, k)?))
        }
        Some(k @ EventKind::PrivilegeChange) => {
            Ok(RawEvent::Privilege(Box::new(read_exact::<CredEvent>(
                buf, k,
            )?)))
        }
        Some(
            k @ (EventKind::Namespace
            | EventKind::Ptrace
            | EventKind::Memfd
            | EventKind::ModuleLoad
            | EventKind::Bpf
            | EventKind::FdDup
            | EventKind::RawSocket),
        ) => Ok(RawEvent::Control(Box::new(read_exact::<ControlEvent>(
            buf, k,
        )?))),
        Some(k @ EventKind::Mount) => {
            Ok(RawEvent::Mount(Box::new(read_exact::<MountEvent>(buf, k)?)))
        }
        Some(k @ EventKind::RateSummary) => Ok(RawEvent::RateSummary(read_exact::<
            RateSummaryEvent,
        >(buf, k)?)),
        None => Err(DecodeError::UnknownKind(kind)),
    }
}

/// A NUL-terminated string from a fixed buffer (lossy UTF-8).
pub fn cstr(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// NUL-separated arguments in `buf[..len]` (`len` clamped to the buffer).
pub fn split_args(buf: &[u8], len: u32) -> Vec<String> {
    let len = (len as usize).min(buf.len());
    let data = &buf[..len];
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// A path from the kernel's leaf-first component list (`ls\0bin\0usr\0` ->
/// `/usr/bin/ls`). No components means the root itself.
pub fn path_from_components(buf: &[u8], len: u32) -> String {
    let mut parts = split_args(buf, len);
    parts.retain(|p| !p.is_empty() && p != "/");
    if parts.is_empty() {
        return "/".to_string();
    }
    parts.reverse();
    let mut s = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for p in parts {
        s.push('/');
        s.push_str(&p);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a POD value's bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn decodes_fork_exactly() {
        let mut ev = ForkEvent::default();
        ev.header.kind = EventKind::Fork as u16;
        ev.header.pid = 42;
        ev.child_pid = 43;
        ev.child_start_boottime_ns = 7;
        let RawEvent::Fork(got) = decode(&bytes_of(&ev)).unwrap() else {
            panic!("not a fork")
        };
        assert_eq!(
            (got.header.pid, got.child_pid, got.child_start_boottime_ns),
            (42, 43, 7)
        );
    }

    #[test]
    fn short_unknown_and_truncated_records_are_errors() {
        assert_eq!(
            decode(&[1, 0, 0]).err(),
            Some(DecodeError::Short {
                len: 3,
                min: EventHeader::SIZE
            })
        );
        let h = EventHeader {
            kind: 999,
            ..Default::default()
        };
        assert_eq!(
            decode(&bytes_of(&h)).err(),
            Some(DecodeError::UnknownKind(999))
        );
        let mut ev = ExitEvent::default();
        ev.header.kind = EventKind::Exit as u16;
        let b = bytes_of(&ev);
        assert_eq!(
            decode(&b[..b.len() - 1]).err(),
            Some(DecodeError::SizeMismatch {
                kind: "exit",
                expected: b.len(),
                got: b.len() - 1
            })
        );
    }

    #[test]
    fn every_prefix_of_a_record_is_rejected_without_panicking() {
        let mut ev = ExitEvent::default();
        ev.header.kind = EventKind::Exit as u16;
        let b = bytes_of(&ev);
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "prefix {n}");
        }
        let mut exec_kind = b.clone();
        exec_kind[0] = EventKind::Exec as u8;
        assert!(decode(&exec_kind).is_err());
    }

    #[test]
    fn args_and_paths() {
        assert_eq!(
            split_args(b"ls\0-la\0/tmp\0", 12),
            vec!["ls", "-la", "/tmp"]
        );
        assert_eq!(split_args(b"ls\0-la\0/tmp\0", 5), vec!["ls", "-l"]);
        assert_eq!(split_args(b"", 0), Vec::<String>::new());
        assert_eq!(split_args(b"a\0", 99), vec!["a"]);
        assert_eq!(split_args(b"\0\0", 2), vec!["", ""]);
        assert_eq!(path_from_components(b"ls\0bin\0usr\0", 11), "/usr/bin/ls");
        assert_eq!(path_from_components(b"", 0), "/");
        assert_eq!(path_from_components(b"memfd:x\0", 8), "/memfd:x");
        assert_eq!(cstr(b"bash\0\0\0"), "bash");
        assert_eq!(cstr(b"abc"), "abc");
    }
}
