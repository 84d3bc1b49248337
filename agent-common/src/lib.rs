//! Wire types shared by the kernel programs (`agent-ebpf`) and the agent.
//!
//! Every record the kernel writes to the ring buffer starts with an
//! [`EventHeader`]; its `kind` says which `#[repr(C)]` struct follows. The
//! layouts are plain old data with explicit padding so both sides agree on
//! every byte without any serialization code in the kernel.
#![no_std]

pub mod control;
pub mod enforce;
pub mod event;
pub mod file;
pub mod net;
pub mod offsets;
pub mod process;
pub mod ratelimit;
pub mod security;
pub mod settings;

pub use event::{EventHeader, EventKind};
pub use offsets::KernelOffsets;
