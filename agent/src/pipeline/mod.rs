//! From kernel records to enriched events.
//!
//! The pipeline keeps the process cache in step with exec/fork/exit records
//! and builds each [`Event`]: the acting process and its ancestry from the
//! cache, the container from the cgroup, the wall-clock time from the
//! kernel's boot-time stamp.

pub mod argpaths;
mod clock;
pub mod control;
mod enrich;
pub mod file;
pub mod names;
pub mod net;
pub mod security;
pub mod sensors;

pub use clock::BootClock;
pub use enrich::{Pipeline, PipelineConfig};
