//! Converting kernel CLOCK_BOOTTIME stamps to wall-clock time.

use jiff::Timestamp;

fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Maps boot-time nanoseconds (what `bpf_ktime_get_boot_ns` returns) to
/// wall-clock time, using the current offset between the two clocks so a
/// clock step (NTP) is followed.
#[derive(Debug, Default, Clone, Copy)]
pub struct BootClock;

impl BootClock {
    /// Nanoseconds since boot now.
    pub fn boot_ns(&self) -> u64 {
        now(libc::CLOCK_BOOTTIME) as u64
    }

    /// Wall-clock time of a boot-time stamp.
    pub fn wall(&self, boot_ns: u64) -> Timestamp {
        let offset = now(libc::CLOCK_REALTIME) - now(libc::CLOCK_BOOTTIME);
        let ns = offset + boot_ns as i128;
        Timestamp::from_nanosecond(ns).unwrap_or_else(|_| Timestamp::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_now_maps_to_wall_now() {
        let c = BootClock;
        let wall = c.wall(c.boot_ns());
        let diff = (Timestamp::now().as_nanosecond() - wall.as_nanosecond()).abs();
        assert!(diff < 1_000_000_000, "diff {diff} ns");
    }
}
