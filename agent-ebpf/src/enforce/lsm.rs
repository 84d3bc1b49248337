//! Kill rules as an exec *deny* (`contain_exec_lsm`, BPF LSM hook
//! `bprm_check_security`), where the BPF LSM is active (`bpf` in
//! `/sys/kernel/security/lsm`: Debian's 6.1 and 6.12 kernels, not 5.10).
//!
//! Denying is cleaner than a SIGKILL after exec: the new program is never
//! mapped, `execve` fails with EPERM in the caller, which keeps running and
//! sees the error. What the hook cannot see stays with `contain_exec`
//! (which runs later, at `sched_process_exec`, only when the exec was not
//! denied):
//! - argv: at this hook the arguments live in the new, not yet installed
//!   address space, so rules with an argv condition are left to it;
//! - dry-run rules and refusals (protected scopes, pods not cleared yet):
//!   left to it, so each exec gets exactly one record, from one program.
//!
//! Scripts: the hook runs for the script and again for its interpreter;
//! a rule on the interpreter's path denies at the second call, as
//! `contain_exec` would have killed it.

use agent_common::{
    enforce::{KillConfig, cgroup_flags, enforce_action},
    offsets::MISSING,
};
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::lsm, programs::LsmContext};

use super::{
    ENFORCE_SCRATCH, KILL_CONFIG, KILL_EXE, KILL_EXE_PREFIX, Record, lowest_bit, record,
    scope_by_helper, zero,
};
use crate::kernel::{current_task, offsets_ready, read_ptr};

const EPERM: i32 = 1;

#[lsm(hook = "bprm_check_security")]
pub fn contain_exec_lsm(ctx: LsmContext) -> i32 {
    // int bprm_check_security(struct linux_binprm *bprm)
    let bprm: u64 = ctx.arg(0);
    if deny(bprm).is_some() { -EPERM } else { 0 }
}

/// `Some` when the exec must be denied (after writing its record).
#[inline(always)]
fn deny(bprm: u64) -> Option<()> {
    let cfg: &KillConfig = KILL_CONFIG.get(0)?;
    if cfg.active == 0 || cfg.bprm_file == MISSING || !offsets_ready() {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == cfg.agent_tgid {
        return None;
    }
    let (scoped, cg_flags) = scope_by_helper();
    // Refusals are recorded by contain_exec, after the exec.
    if cg_flags & cgroup_flags::PROTECTED != 0
        || (cg_flags & cgroup_flags::POD_ROOT != 0 && cg_flags & cgroup_flags::CLEARED == 0)
    {
        return None;
    }
    let mut in_scope = cfg.scope_any | scoped;
    if cg_flags & cgroup_flags::CONTAINER_ROOT != 0 {
        in_scope |= cfg.scope_container;
    }
    // Enforcing rules without an argv condition; each has an executable
    // condition unless listed in `no_exe`.
    let mut cand = cfg.active & in_scope & cfg.no_argv & !cfg.dry_run;
    if cand == 0 {
        return None;
    }
    let s = unsafe { &mut *ENFORCE_SCRATCH.get_ptr_mut(0)? };
    zero(
        (&raw mut s.exe.data) as *mut u8,
        agent_common::enforce::EXE_KEY_LEN / 4,
    );
    let mut exe_len = 0u32;
    if cand & !cfg.no_exe != 0 {
        let mut exe_ok = cfg.no_exe;
        let file = read_ptr(bprm as *const u8, cfg.bprm_file)?;
        let len = picket_bprm_exe_key(file as u64);
        if len > 0 {
            exe_len = len as u32;
            let key = unsafe {
                &*((&raw const s.exe.data) as *const [u8; agent_common::enforce::EXE_KEY_LEN])
            };
            if let Some(m) = unsafe { KILL_EXE.get(key) } {
                exe_ok |= *m;
            }
            s.exe.prefix_len = exe_len * 8;
            if let Some(m) = KILL_EXE_PREFIX.get(&s.exe) {
                exe_ok |= *m;
            }
        }
        // An unknown path is left to contain_exec (which flags it).
        cand &= exe_ok;
        if cand == 0 {
            return None;
        }
    }
    let _ = record(&Record {
        pid_tgid,
        task: current_task(),
        rule: lowest_bit(cand),
        action: enforce_action::DENIED,
        matched: cand,
        ret: -(EPERM as i64),
        flags: 0,
        exe_len,
    });
    Some(())
}

/// [`super::picket_exe_key`] for the file being executed (`bprm->file`):
/// a global function for the same reason (verified once, on its own).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn picket_bprm_exe_key(file: u64) -> i64 {
    let Some(s) = ENFORCE_SCRATCH.get_ptr_mut(0) else {
        return -1;
    };
    super::exe_key_of_file(file as *const u8, unsafe { &mut *s })
}
