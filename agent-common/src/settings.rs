//! Runtime settings the agent can change while programs run (an array map
//! with one entry, unlike the load-time `OFFSETS` global).

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

#[cfg(feature = "user")]
unsafe impl aya::Pod for Settings {}
