//! Picket's kernel programs.
//!
//! Tracepoints (stable ABI) wherever the kernel has one; a kprobe only
//! stands in for a tracepoint that older kernels lack (`cap_capable`, see
//! `creds`), and is attached only there. Each program is a thin wrapper
//! that calls a `try_*` function and never fails the traced operation. Kernel
//! struct fields are read through offsets resolved by the agent from the
//! running kernel's BTF (`OFFSETS`), never from compile-time layouts.
#![no_std]
#![no_main]
// Inline BPF assembly (the atomic add in `sys::atomic_inc`); the eBPF crate
// is built with nightly anyway (build-std).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod creds;
mod enforce;
mod env;
mod file;
mod filechange;
mod kernel;
mod maps;
mod mount;
mod net;
mod nsctl;
mod path;
mod process;
mod sys;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects unbounded loops; a panic path must never be
    // reachable in a loaded program (bounds are checked explicitly).
    loop {}
}

/// GPL-compatible: the programs use GPL-only helpers (probe_read_kernel,
/// send_signal, ...).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
