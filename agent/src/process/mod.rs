//! The process cache: every process the agent knows, with parent links, so
//! each event carries its process's image, credentials and ancestry.
//!
//! Processes are keyed by `(pid, start time)` — unique even across pid reuse
//! — and named by an exec id `"{node}:{start_ticks}:{pid}"`, where start ticks
//! are USER_HZ ticks since boot: the same number as field 22 of
//! `/proc/<pid>/stat`, so processes seeded from /proc and processes seen by
//! the kernel get identical ids.

mod cache;
pub mod caps;
pub mod fdtype;
mod procfs;
pub mod sockets;
pub mod users;

pub use cache::{
    CacheConfig, CacheStats, ExecInfo, ProcessCache, ProcessEntry, exec_id, start_ticks,
};
pub use procfs::{complete_args, complete_exe, environ_var};

#[cfg(test)]
mod tests;
