//! Medians, spreads and percentiles.
//!
//! Benchmarks here run a handful of times on a small, shared machine, so the
//! figures are medians with the full min–max spread (an IQR of five samples
//! says little) and latency percentiles use the nearest-rank definition
//! (every reported value is one that was actually observed).

use serde::Serialize;

/// Median and spread of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Quartiles (linear interpolation); equal to min/max for n < 4.
    pub q1: f64,
    pub q3: f64,
}

impl Summary {
    /// Summarises `values`, ignoring NaNs; `None` when nothing is left.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let (q1, q3) = if v.len() < 4 {
            (v[0], v[v.len() - 1])
        } else {
            (quantile(&v, 0.25), quantile(&v, 0.75))
        };
        Some(Self {
            n: v.len(),
            median: quantile(&v, 0.5),
            min: v[0],
            max: v[v.len() - 1],
            q1,
            q3,
        })
    }
}

/// Linear-interpolated quantile of sorted, non-empty `v` (`q` in 0..=1).
fn quantile(v: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Nearest-rank percentile (`p` in 0..=100) of sorted, non-empty `v`.
pub fn percentile_sorted(v: &[u64], p: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// p50/p99/max of a latency sample, ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Latency {
    pub fn of(samples: &[u64]) -> Option<Self> {
        let mut v = samples.to_vec();
        v.sort_unstable();
        Some(Self {
            count: v.len(),
            p50_ns: percentile_sorted(&v, 50.0)?,
            p99_ns: percentile_sorted(&v, 99.0)?,
            max_ns: *v.last()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_odd_count() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!(s.n, 5);
        assert_eq!(s.median, 3.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 5.0);
        assert_eq!(s.q1, 2.0);
        assert_eq!(s.q3, 4.0);
    }

    #[test]
    fn summary_of_even_count_interpolates() {
        let s = Summary::of(&[1.0, 2.0]).unwrap();
        assert_eq!(s.median, 1.5);
        assert_eq!((s.q1, s.q3), (1.0, 2.0));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!(s.q1, 1.75);
        assert_eq!(s.q3, 3.25);
    }

    #[test]
    fn summary_ignores_nan_and_empty() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::NAN]), None);
        assert_eq!(Summary::of(&[f64::NAN, 7.0]).unwrap().median, 7.0);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_sorted(&v, 50.0), Some(50));
        assert_eq!(percentile_sorted(&v, 99.0), Some(99));
        assert_eq!(percentile_sorted(&v, 100.0), Some(100));
        assert_eq!(percentile_sorted(&v, 0.0), Some(1));
        assert_eq!(percentile_sorted(&[42], 99.0), Some(42));
        assert_eq!(percentile_sorted(&[], 50.0), None);
    }

    #[test]
    fn latency_summary() {
        let l = Latency::of(&[300, 100, 200, 10_000]).unwrap();
        assert_eq!(
            l,
            Latency {
                count: 4,
                p50_ns: 200,
                p99_ns: 10_000,
                max_ns: 10_000
            }
        );
        assert_eq!(Latency::of(&[]), None);
    }
}
