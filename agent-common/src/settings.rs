//! Runtime settings the agent can change while programs run (an array map
//! with one entry, unlike the load-time `OFFSETS` global).
//!
//! The in-kernel filters (kinds, file paths, network, rate limits) are
//! double-buffered: every filter map holds [`FILTER_GENERATIONS`] copies and
//! the one-entry `FILTER_GEN` array map names the active one. The agent fills
//! the inactive copy, then flips `FILTER_GEN` with one map update, so a
//! program sees either the whole old filter set or the whole new one, never a
//! mix. A program reads `FILTER_GEN` once per invocation and uses that
//! generation for every lookup it makes. The two values (0 and 1) differ in
//! one bit of one byte, so even a byte-wise copy of the value cannot yield a
//! third one. (A separate map rather than a `Settings` field: the filter
//! writer owns it, independently of the cgroup-filter writer.)

/// `Settings::cgroup_filter_mode` values.
pub mod cgroup_filter {
    /// Every cgroup is traced.
    pub const OFF: u32 = 0;
    /// Only tasks whose cgroup id is in `CGROUP_FILTER` are traced.
    pub const ONLY_LISTED: u32 = 1;
    /// Tasks whose cgroup id is in `CGROUP_FILTER` are not traced (e.g. the
    /// agent's own cgroup).
    pub const EXCLUDE_LISTED: u32 = 2;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// One of [`cgroup_filter`].
    pub cgroup_filter_mode: u32,
    pub _pad: u32,
}

/// Ring-buffer wake-up batching: indexes of the two-entry `RING_WAKEUP`
/// array map.
///
/// By default a submitted record wakes the reader whenever the reader has
/// caught up, which under an event storm is nearly every record. A wake-up
/// is an `irq_work` (a self-IPI), and on a virtual machine an IPI is a trap
/// to the hypervisor: measured here it made `fork`/`exit` programs cost
/// several µs each. With a non-zero [`INTERVAL`](wakeup::INTERVAL), programs
/// force a wake-up at most once per interval and submit the other records
/// silently; the reader drains again one interval after every drain that
/// found records, so no record waits longer than about one interval.
pub mod wakeup {
    /// Nanoseconds between forced wake-ups (written by the agent; 0 = the
    /// kernel's default, a wake-up whenever the reader has caught up).
    pub const INTERVAL: u32 = 0;
    /// `CLOCK_BOOTTIME` of the last forced wake-up (written by programs;
    /// racy between CPUs on purpose: a lost update costs one extra wake-up).
    pub const LAST: u32 = 1;
    pub const ENTRIES: u32 = 2;
}

/// Copies of every filter map (double buffering, see the module docs).
pub const FILTER_GENERATIONS: u32 = 2;

/// `FILE_FILTER[gen]` bits: how file opens are matched in generation `gen`.
pub mod file_filter {
    /// Every open is reported: no rule on `file_open` could be reduced to
    /// path prefixes/suffixes, so the path tries are not consulted.
    pub const ALL_PATHS: u32 = 1 << 0;
    /// The same for `file_change` (unlink, rename, chmod, ...): every
    /// change of any path is reported.
    pub const CHANGE_ALL_PATHS: u32 = 1 << 1;
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Settings {}
