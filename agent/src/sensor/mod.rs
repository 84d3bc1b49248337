//! The kernel side of the agent: loading the eBPF programs into the running
//! kernel, attaching them, reading the ring buffer and the loss counters.
//!
//! Every program belongs to a *sensor* (a feature such as "process"). A
//! sensor whose tracepoint or kernel fields are missing is disabled with a
//! warning that says what is lost; the others keep running.

pub mod decode;
pub mod filter_maps;
pub mod filters;
pub mod kallsyms;
pub mod loader;
pub mod lost;
pub mod offsets;
pub mod rate_summary;
pub mod ring;
pub mod rule_filters;
pub mod tracefs;

pub use decode::{DecodeError, RawEvent, decode};
pub use loader::{LoadError, PROGRAMS, ProgramSpec, ProgramStatus, Sensor, SensorConfig};

/// The kernel programs, built by `build.rs` from `agent-ebpf` and embedded so
/// the agent is a single file. Empty when built with `AYA_BUILD_SKIP=1`.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));
