//! Shared helpers for Picket integration tests.
//!
//! Real-kernel tests (`tests/kernel_*.rs`) load the real programs into the
//! running kernel as root. They never skip silently: [`kernel::KernelTest`]
//! panics when not root, and leaves a marker that `cargo xtask test` checks.

pub mod cgroup;
pub mod container;
pub mod containerd;
pub mod docker;
pub mod kernel;
pub mod kube_api;
pub mod picket_run;
pub mod pins;
pub mod podman;
pub mod run;
