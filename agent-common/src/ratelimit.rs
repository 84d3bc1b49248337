//! Per-cgroup rate limiting of high-volume kinds (connect, file_open).
//!
//! The kernel lets `max_events` records per `window_ns` through per (cgroup,
//! kind) and counts the rest in `RATE_SUPPRESSED` (a per-CPU counter per
//! [`RateKey`] that only grows); the agent polls it and turns each increase
//! into a `rate_summary` event, so nothing beyond the limit disappears
//! silently.

/// Limit for one kind (`RATE_LIMITS[generation * EventKind::COUNT + kind]`).
/// `max_events == 0` = unlimited.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub max_events: u32,
    pub _pad: u32,
    pub window_ns: u64,
}

/// Key of `RATE_STATE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateKey {
    pub cgroup_id: u64,
    /// An `EventKind` value.
    pub kind: u32,
    pub _pad: u32,
}

/// Value of `RATE_STATE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    /// Start of the current window (boot-time ns).
    pub window_start_ns: u64,
    /// Events seen in the current window (sent or not).
    pub in_window: u64,
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::RateLimit {}
    unsafe impl aya::Pod for super::RateKey {}
    unsafe impl aya::Pod for super::RateState {}
}
