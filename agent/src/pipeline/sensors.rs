//! Dispatch of syscall-sensor records to their family's section builder.

use agent_common::EventKind;

use super::{control, file, net, security};
use crate::{
    model::{Event, EventKindName},
    sensor::RawEvent,
};

/// The enriched kind of a wire kind. Wire kinds without a name of their own
/// cannot reach here (the decoder rejects them); they map to `events_lost`
/// rather than panicking.
pub fn kind_name(kind: u16) -> EventKindName {
    match EventKind::from_u16(kind) {
        Some(EventKind::Exec) => EventKindName::Exec,
        Some(EventKind::Fork) => EventKindName::Fork,
        Some(EventKind::Exit) => EventKindName::Exit,
        Some(EventKind::Capability) => EventKindName::Capability,
        Some(EventKind::PrivilegeChange) => EventKindName::PrivilegeChange,
        Some(EventKind::Mount) => EventKindName::Mount,
        Some(EventKind::Connect) => EventKindName::Connect,
        Some(EventKind::Send) => EventKindName::Send,
        Some(EventKind::Bind) => EventKindName::Bind,
        Some(EventKind::Listen) => EventKindName::Listen,
        Some(EventKind::Accept) => EventKindName::Accept,
        Some(EventKind::Namespace) => EventKindName::Namespace,
        Some(EventKind::Ptrace) => EventKindName::Ptrace,
        Some(EventKind::Memfd) => EventKindName::Memfd,
        Some(EventKind::ModuleLoad) => EventKindName::ModuleLoad,
        Some(EventKind::Bpf) => EventKindName::Bpf,
        Some(EventKind::FdDup) => EventKindName::FdDup,
        Some(EventKind::FileOpen) => EventKindName::FileOpen,
        Some(EventKind::RateSummary) => EventKindName::RateSummary,
        Some(EventKind::FileChange) => EventKindName::FileChange,
        Some(EventKind::RawSocket) => EventKindName::RawSocket,
        None => EventKindName::EventsLost,
    }
}

/// The wire kind of an enriched kind (for filters); `None` for kinds the
/// kernel does not produce as records (`events_lost`).
pub fn wire_kind(kind: EventKindName) -> Option<EventKind> {
    (1..EventKind::COUNT as u16)
        .filter_map(EventKind::from_u16)
        .find(|k| kind_name(*k as u16) == kind)
}

/// Fills the kind-specific sections of a sensor record.
pub fn fill(ev: &mut Event, raw: &RawEvent) {
    match raw {
        RawEvent::Net(e) => net::fill(ev, e),
        RawEvent::FileOpen(e) => file::fill(ev, e),
        RawEvent::FileChange(e) => file::fill_change(ev, e),
        RawEvent::Capability(e) => security::fill_capability(ev, e),
        RawEvent::Privilege(e) => security::fill_privilege(ev, e),
        RawEvent::Control(e) => control::fill_control(ev, e),
        RawEvent::Mount(e) => control::fill_mount(ev, e),
        // Turned into `summary` by the agent's rate ledger, not filled here.
        RawEvent::Exec(_) | RawEvent::Fork(_) | RawEvent::Exit(_) | RawEvent::RateSummary(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in (1..EventKind::COUNT as u16).filter_map(EventKind::from_u16) {
            let name = kind_name(k as u16);
            assert_eq!(name.as_str(), k.name(), "wire and enriched names agree");
            assert_eq!(wire_kind(name), Some(k));
        }
        assert_eq!(wire_kind(EventKindName::EventsLost), None);
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a POD value's bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn connect_record_decodes_and_fills_exactly() {
        use agent_common::net::{NetEvent, net_op};

        use crate::{model::Endpoint, sensor::decode};
        // SAFETY: NetEvent is plain old data; all-zero is valid.
        let mut e: NetEvent = unsafe { std::mem::zeroed() };
        e.header.kind = EventKind::Connect as u16;
        e.header.size = size_of::<NetEvent>() as u32;
        e.result = -111;
        e.op = net_op::CONNECT;
        e.sock_type = 1;
        e.protocol = 6;
        e.addr[..8].copy_from_slice(&[2, 0, 0x01, 0xbb, 10, 1, 2, 3]);
        e.addr_len = 16;
        let bytes = bytes_of(&e);
        let raw = decode(&bytes).expect("decodes");
        assert!(
            decode(&bytes[..bytes.len() - 1]).is_err(),
            "size is checked"
        );
        let mut ev = Event::new(kind_name(raw.header().kind), jiff::Timestamp::UNIX_EPOCH);
        fill(&mut ev, &raw);
        assert_eq!(ev.kind(), EventKindName::Connect);
        let s = ev.syscall.expect("syscall");
        assert_eq!((s.name.as_str(), s.result), ("connect", -111));
        let n = ev.network.expect("network");
        assert_eq!((n.transport.as_str(), n.r#type.as_str()), ("tcp", "ipv4"));
        assert_eq!(
            n.peer,
            Some(Endpoint {
                address: "10.1.2.3".into(),
                port: 443
            })
        );
        assert_eq!(n.local, None, "no local address recorded");
    }
}
