//! Container attribution: cgroup id -> cgroup path -> container and pod.
//!
//! [`CgroupResolver`] turns the cgroup id the kernel reports into a cgroup
//! v2 path; [`parse_cgroup_path`] reads the container id, runtime and pod
//! UID out of that path. Processes outside containers are `host`.
//! [`runtime_api`] adds name and image from the runtimes' own APIs.

mod handle;
mod parse;
mod resolver;
pub mod runtime_api;
#[cfg(test)]
mod tests;

pub use parse::{CgroupAttribution, ContainerRef, PodRef, QosClass, Runtime, parse_cgroup_path};
pub use resolver::{
    CgroupError, CgroupResolver, DEFAULT_RESCAN_INTERVAL, ResolverStats, ScanLimits,
    cgroup_path_of_pid, cgroup_path_of_pid_in, find_cgroup2_mount, parse_proc_cgroup,
};
