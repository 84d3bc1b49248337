//! Capability and credential-change records -> `capability`, `privilege`
//! and `syscall` sections.

use agent_common::{
    process::Creds,
    security::{CapEvent, CredEvent, cred_op},
};

use super::names;
use crate::model::{Capabilities, CapabilityUse, CredSet, Event, PrivilegeChange, Syscall};

pub fn fill_capability(ev: &mut Event, e: &CapEvent) {
    ev.capability = Some(CapabilityUse {
        name: names::capability(e.cap),
        id: e.cap,
        allowed: e.ret == 0,
        init_user_ns: e.user_ns_level == 0,
    });
}

pub fn syscall_name(op: u32) -> &'static str {
    match op {
        cred_op::SETUID => "setuid",
        cred_op::SETGID => "setgid",
        cred_op::SETREUID => "setreuid",
        cred_op::SETREGID => "setregid",
        cred_op::SETRESUID => "setresuid",
        cred_op::SETRESGID => "setresgid",
        cred_op::SETFSUID => "setfsuid",
        cred_op::SETFSGID => "setfsgid",
        cred_op::CAPSET => "capset",
        _ => "unknown",
    }
}

fn cred_set(c: &Creds, caps: bool) -> CredSet {
    CredSet {
        uid: c.uid,
        euid: c.euid,
        suid: c.suid,
        fsuid: c.fsuid,
        gid: c.gid,
        egid: c.egid,
        sgid: c.sgid,
        fsgid: c.fsgid,
        capabilities: caps.then(|| Capabilities {
            effective: names::capability_set(c.cap_effective),
            permitted: names::capability_set(c.cap_permitted),
        }),
    }
}

pub fn fill_privilege(ev: &mut Event, e: &CredEvent) {
    ev.syscall = Some(Syscall {
        name: syscall_name(e.op).into(),
        result: e.result,
    });
    let capset = e.op == cred_op::CAPSET;
    let nargs = match e.op {
        cred_op::SETRESUID | cred_op::SETRESGID | cred_op::CAPSET => 3,
        cred_op::SETREUID | cred_op::SETREGID => 2,
        _ => 1,
    };
    ev.privilege = Some(PrivilegeChange {
        old: cred_set(&e.old, capset),
        new: cred_set(&e.new, capset),
        args: e.args[..nargs].to_vec(),
    });
}
