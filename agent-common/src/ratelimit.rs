//! Per-cgroup rate limiting of high-volume kinds (connect, file_open).
//!
//! The kernel lets `max_events` records per `window_ns` through per (cgroup,
//! kind) and counts the rest in `RATE_SUPPRESSED`: one cumulative counter per
//! [`RateKey`], incremented atomically, that only grows. When a window ends,
//! the first record of that (cgroup, kind) after its end makes the kernel
//! emit a [`RateSummaryEvent`] with the counter's value, so summaries do not
//! depend on polling. The agent turns the cumulative values into per-report
//! counts (a ledger per key: each report is the increase over the last value
//! reported), so duplicates from racing CPUs or from its own flush of windows
//! that never roll over cannot double-count, and the counts are exact.

use crate::EventHeader;

/// Limit for one kind (`RATE_LIMITS[generation * EventKind::COUNT + kind]`).
/// `max_events == 0` = unlimited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub max_events: u32,
    pub _pad: u32,
    pub window_ns: u64,
}

/// Key of `RATE_STATE` and `RATE_SUPPRESSED`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateKey {
    pub cgroup_id: u64,
    /// An `EventKind` value.
    pub kind: u32,
    /// [`NORMAL_LANE`] or [`PRIORITY_LANE`].
    pub lane: u32,
}

/// `RateKey::lane` of ordinary records.
pub const NORMAL_LANE: u32 = 0;
/// `RateKey::lane` of records a rule would alert on whatever else happens
/// (a `file_open` of an exact rule path, `file::file_match::PRIORITY`):
/// they have their own window, so a storm of merely monitored records
/// cannot exhaust it, with a limit [`PRIORITY_MULTIPLIER`] times the
/// kind's (a storm of alerting records is bounded too, and counted).
pub const PRIORITY_LANE: u32 = 1;
/// Limit of the priority lane relative to the kind's `max_events`.
pub const PRIORITY_MULTIPLIER: u32 = 8;

/// Value of `RATE_STATE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    /// Start of the current window (boot-time ns).
    pub window_start_ns: u64,
    /// Events seen in the current window (sent or not).
    pub in_window: u64,
    /// `RATE_SUPPRESSED` value carried by the last summary the kernel sent.
    pub reported: u64,
}

/// A `rate_summary` record: sent by the kernel with the first record of a
/// (cgroup, kind) after a window in which some were suppressed. The cgroup
/// is the header's.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RateSummaryEvent {
    pub header: EventHeader,
    /// The `EventKind` of the suppressed records.
    pub kind: u32,
    /// The `RateKey::lane` the records were suppressed in.
    pub lane: u32,
    /// Records suppressed for (cgroup, kind) since the programs were loaded.
    pub total: u64,
    /// `total` minus the previous summary's (the agent recomputes it from
    /// `total`, which stays exact when CPUs race).
    pub count: u64,
    /// The configured window.
    pub window_ns: u64,
    /// Start of the window that just ended (boot-time ns).
    pub window_start_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::RateLimit {}
    unsafe impl aya::Pod for super::RateKey {}
    unsafe impl aya::Pod for super::RateState {}
    unsafe impl aya::Pod for super::RateSummaryEvent {}
}
