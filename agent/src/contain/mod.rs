//! Containment: acting on threats, from the least to the most disruptive,
//! safely.
//!
//! - In the kernel: compiled `kill-process` rules (SIGKILL at exec, before
//!   the new program's first instruction) and `block-egress`
//!   (`cgroup_sock_addr` programs attached to the contained cgroup).
//! - From user space: `kill-process` through a pidfd, `kill-container`
//!   (`cgroup.kill`, or a frozen cgroup killed through pidfds).
//! - Through the API server: `isolate-pod` (label + deny-all NetworkPolicy)
//!   and `delete-pod`; every action posts an Event on its pod.
//!
//! [`Containment::execute`] is the single entry point; the safety layer
//! (dry-run, protected scopes, rate limits) runs before anything is done and
//! every request ends in an [`ActionRecord`].

pub mod action;
pub mod audit;
pub mod cgroups;
pub mod cli;
pub mod config;
pub mod engine;
pub mod grpc;
pub mod kernel;
pub mod kill_rules;
pub mod kube;
pub mod metrics;
pub mod persist;
pub mod procs;
pub mod rules;
pub mod runtime;
pub mod safety;
pub mod scopes;

pub use action::{
    ActionKind, ActionRecord, ActionRequest, Destination, EgressScope, Outcome, ProcessRef, Target,
    Trigger,
};
pub use cgroups::cgroup_v2_root;
pub use config::ContainmentFileConfig;
pub use engine::{ContainError, Containment, ContainmentConfig};
pub use kernel::{KernelEnforcer, KernelError, KernelKill, Reconciled};
pub use kill_rules::{ExeMatch, KillRuleSpec, KillScope};
pub use kube::KubeActions;
pub use persist::{PersistConfig, Store};
pub use safety::{Rate, Refusal, SafetyConfig};
