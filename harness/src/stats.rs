//! Latency statistics: exact nearest-rank percentiles from the raw samples, plus an
//! HdrHistogram (ns, 3 significant digits) kept in the results so that runs can be merged.
//!
//! Percentile definition (nearest rank): the p-th percentile of n sorted samples is the
//! sample at rank ceil(p/100 * n), ranks counted from 1. A percentile is marked
//! low-sample when fewer than 5 samples lie at or beyond it (n * (1 - p/100) < 5): p99 needs
//! 500 samples, p99.9 needs 5,000.

pub use crate::results::LatencyStats;
use base64::Engine;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// Samples needed in the tail at or beyond a percentile before it is reported as reliable.
pub const TAIL_SAMPLES: f64 = 5.0;
/// Highest trackable latency: one hour.
const MAX_NS: u64 = 3_600_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("static histogram bounds are valid")
}

/// Nearest-rank percentile of sorted samples; `p` in (0, 100].
pub fn nearest_rank(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[rank(sorted.len() as u64, p) as usize - 1]
}

/// The 1-based nearest rank of the p-th percentile among `n` samples (n > 0).
pub fn rank(n: u64, p: f64) -> u64 {
    (((p / 100.0) * n as f64).ceil() as u64).clamp(1, n.max(1))
}

/// The 1-based ranks bounding the median's 95% confidence interval among `n` samples:
/// n/2 -+ 1.96 sqrt(n)/2 (normal approximation of the binomial).
pub fn median_ci_ranks(n: u64) -> (u64, u64) {
    let half = 1.96 * (n as f64).sqrt() / 2.0;
    let top = n.max(1) as i64;
    let lo = ((n as f64 / 2.0 - half).floor() as i64).clamp(1, top) as u64;
    let hi = ((n as f64 / 2.0 + half).ceil() as i64 + 1).clamp(1, top) as u64;
    (lo, hi)
}

/// Confidence level of the order-statistic intervals of [`quantile_ci_ranks`]: 95%.
const CI_ALPHA: f64 = 0.05;
/// Two-sided 95% normal quantile.
/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;
/// Up to this many samples the quantile interval's ranks come from the exact binomial; above,
/// from its normal approximation (with continuity correction), within a rank of the exact.
const EXACT_BINOMIAL_UP_TO: u64 = 100_000;

/// The 1-based ranks `(lo, hi)` bounding a distribution-free 95% confidence interval of the
/// quantile `q` (a fraction in (0, 1): 0.99 for p99) among `n` samples: the number of
/// samples at or below the true quantile is Binomial(n, q), so the interval between the
/// order statistics at ranks `lo` and `hi` covers it with probability
/// F(hi - 1) - F(lo - 1) >= 95%, each tail at most 2.5% (exact binomial up to 100,000 samples,
/// normal approximation with continuity correction above). `None` when `n` is too small
/// for both ends to lie among the samples (see [`quantile_ci_samples_needed`]). For the
/// median it agrees with [`median_ci_ranks`] within a rank.
pub fn quantile_ci_ranks(n: u64, q: f64) -> Option<(u64, u64)> {
    if n == 0 || !(q > 0.0 && q < 1.0) {
        return None;
    }
    let (lo, hi) = if n <= EXACT_BINOMIAL_UP_TO {
        quantile_ci_ranks_exact(n, q)?
    } else {
        quantile_ci_ranks_normal(n, q)?
    };
    (1 <= lo && lo <= hi && hi <= n).then_some((lo, hi))
}

/// Exact binomial: the largest `lo` with F(lo - 1) <= 2.5% and the smallest `hi` with
/// F(hi - 1) >= 97.5%, F the Binomial(n, q) CDF (summed in log space, no underflow).
fn quantile_ci_ranks_exact(n: u64, q: f64) -> Option<(u64, u64)> {
    let (a, b) = (CI_ALPHA / 2.0, 1.0 - CI_ALPHA / 2.0);
    let log_odds = q.ln() - (1.0 - q).ln();
    let mut log_pmf = n as f64 * (1.0 - q).ln();
    let (mut cdf, mut lo, mut hi) = (0.0, None, None);
    for k in 0..n {
        // cdf = F(k)
        cdf += log_pmf.exp();
        if cdf <= a {
            lo = Some(k + 1);
        }
        if cdf >= b {
            hi = Some(k + 1);
            break;
        }
        log_pmf += ((n - k) as f64).ln() - ((k + 1) as f64).ln() + log_odds;
    }
    Some((lo?, hi?))
}

/// Normal approximation of the binomial with continuity correction:
/// F(k) ~ Phi((k + 0.5 - nq) / sqrt(nq(1 - q))).
fn quantile_ci_ranks_normal(n: u64, q: f64) -> Option<(u64, u64)> {
    let (mean, sd) = (n as f64 * q, (n as f64 * q * (1.0 - q)).sqrt());
    let lo = (mean - Z95 * sd + 0.5).floor();
    let hi = (mean + Z95 * sd + 0.5).ceil();
    (lo >= 1.0 && hi <= n as f64).then_some((lo as u64, hi as u64))
}

/// The fewest samples per run for which the quantile `q` has a 95% interval
/// ([`quantile_ci_ranks`] is not `None`): 36 for p90, 368 for p99, 3,688 for p99.9.
pub fn quantile_ci_samples_needed(q: f64) -> u64 {
    if !(q > 0.0 && q < 1.0) {
        return u64::MAX;
    }
    // Both ends exist once q^n and (1 - q)^n are at most 2.5%; step to the exact answer.
    let guess = ((CI_ALPHA / 2.0).ln() / q.max(1.0 - q).ln()).ceil() as u64;
    let mut n = guess.saturating_sub(2).max(1);
    while quantile_ci_ranks(n, q).is_none() {
        n += 1;
    }
    n
}

/// The value (ns) at a 1-based rank among a histogram's samples, at the histogram's
/// precision (the highest value equivalent to the recorded one); its max past the end.
pub fn value_at_rank(h: &Histogram<u64>, r: u64) -> u64 {
    let mut acc = 0;
    for v in h.iter_recorded() {
        acc += v.count_at_value();
        if acc >= r {
            return h.highest_equivalent(v.value_iterated_to());
        }
    }
    h.max()
}

/// The 95% confidence interval of the median of sorted samples, from order statistics
/// (normal approximation of the binomial): ranks n/2 -+ 1.96 sqrt(n)/2. No assumption about
/// the latency distribution.
pub fn median_ci95(sorted: &[u64]) -> (u64, u64) {
    if sorted.is_empty() {
        return (0, 0);
    }
    let (lo, hi) = median_ci_ranks(sorted.len() as u64);
    (sorted[lo as usize - 1], sorted[hi as usize - 1])
}

/// Half the width of the median's 95% CI, relative to the median (0.01 = +-1%).
pub fn median_ci_relative(sorted: &[u64]) -> f64 {
    let (lo, hi) = median_ci95(sorted);
    let med = nearest_rank(sorted, 50.0);
    if med == 0 {
        return f64::INFINITY;
    }
    (hi - lo) as f64 / 2.0 / med as f64
}

/// The names of the percentiles that are low-sample among `n` samples.
fn low_sample(n: u64) -> Vec<String> {
    PERCENTILES
        .iter()
        .filter(|(_, p)| is_low_sample(n, *p))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// The standard error on a log scale of a quantity whose 95% interval is `[low, high]`
/// (both above 0): the interval's log half-width over 1.96.
pub fn log_se95(low: f64, high: f64) -> f64 {
    (high.ln() - low.ln()) / (2.0 * Z95)
}

/// The ratio `other / base` of two medians and its 95% interval, from each median's own
/// interval (order statistics): on a log scale each half-width is 1.96 standard errors, and
/// the two add in quadrature. `None` when a median or its interval is missing.
pub fn median_ratio_ci(base: &LatencyStats, other: &LatencyStats) -> Option<(f64, f64, f64)> {
    let log_se = |l: &LatencyStats| {
        (l.p50_ms > 0.0 && l.median_ci95_low_ms > 0.0 && l.median_ci95_high_ms > 0.0)
            .then(|| log_se95(l.median_ci95_low_ms, l.median_ci95_high_ms))
    };
    let (sb, so) = (log_se(base)?, log_se(other)?);
    let ratio = other.p50_ms / base.p50_ms;
    let w = Z95 * (sb * sb + so * so).sqrt();
    Some((ratio, ratio * (-w).exp(), ratio * w.exp()))
}

pub fn is_low_sample(n: u64, p: f64) -> bool {
    (n as f64) * (1.0 - p / 100.0) < TAIL_SAMPLES
}

const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

fn ms(ns: f64) -> f64 {
    ns / 1e6
}

impl LatencyStats {
    /// Statistics of latencies in nanoseconds. `samples` need not be sorted.
    pub fn from_samples(samples: &[u64]) -> LatencyStats {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let n = sorted.len() as u64;
        let mut hist = new_histogram();
        let (mut sum, mut sumsq) = (0f64, 0f64);
        for &s in &sorted {
            hist.saturating_record(s.clamp(1, MAX_NS));
            sum += s as f64;
            sumsq += (s as f64) * (s as f64);
        }
        let mean = if n > 0 { sum / n as f64 } else { 0.0 };
        // Sample standard deviation (n - 1).
        let var = if n > 1 {
            ((sumsq - sum * mean) / (n as f64 - 1.0)).max(0.0)
        } else {
            0.0
        };
        let pct = |p| ms(nearest_rank(&sorted, p) as f64);
        let (lo, hi) = median_ci95(&sorted);
        LatencyStats {
            median_ci95_low_ms: ms(lo as f64),
            median_ci95_high_ms: ms(hi as f64),
            samples: n,
            mean_ms: ms(mean),
            stddev_ms: ms(var.sqrt()),
            min_ms: ms(sorted.first().copied().unwrap_or(0) as f64),
            p50_ms: pct(50.0),
            p90_ms: pct(90.0),
            p99_ms: pct(99.0),
            p999_ms: pct(99.9),
            max_ms: ms(sorted.last().copied().unwrap_or(0) as f64),
            low_sample_percentiles: low_sample(n),
            histogram: encode_histogram(&hist),
        }
    }

    /// Statistics from a histogram (used after merging): the same nearest ranks and median
    /// interval as [`LatencyStats::from_samples`], at the histogram's precision (3
    /// significant digits).
    pub fn from_histogram(h: &Histogram<u64>) -> LatencyStats {
        let n = h.len();
        let at_rank = |r: u64| ms(value_at_rank(h, r) as f64);
        let pct = |p| if n == 0 { 0.0 } else { at_rank(rank(n, p)) };
        let (lo, hi) = median_ci_ranks(n);
        LatencyStats {
            samples: n,
            mean_ms: ms(h.mean()),
            stddev_ms: ms(h.stdev()),
            min_ms: ms(h.min() as f64),
            p50_ms: pct(50.0),
            p90_ms: pct(90.0),
            p99_ms: pct(99.0),
            p999_ms: pct(99.9),
            max_ms: ms(h.highest_equivalent(h.max()) as f64),
            low_sample_percentiles: low_sample(n),
            median_ci95_low_ms: if n == 0 { 0.0 } else { at_rank(lo) },
            median_ci95_high_ms: if n == 0 { 0.0 } else { at_rank(hi) },
            histogram: encode_histogram(h),
        }
    }

    pub fn is_low(&self, name: &str) -> bool {
        self.low_sample_percentiles.iter().any(|p| p == name)
    }
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    match V2DeflateSerializer::new().serialize(h, &mut buf) {
        Ok(_) => base64::engine::general_purpose::STANDARD.encode(buf),
        Err(_) => String::new(),
    }
}

pub fn decode_histogram(s: &str) -> Option<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .ok()
}

/// Below this share of the wall time spent on the device (median over median), a GPU row is
/// flagged: the host, not the GPU, sets its latency.
pub const DEVICE_SHARE_WARNING: f64 = 0.5;

/// One stage's statistics (nearest rank, like the latencies); None without samples.
pub fn stage_stats(samples: impl Iterator<Item = u64>) -> Option<crate::results::StageStats> {
    let mut sorted: Vec<u64> = samples.collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_unstable();
    let n = sorted.len();
    Some(crate::results::StageStats {
        samples: n as u64,
        mean_ms: ms(sorted.iter().map(|&x| x as f64).sum::<f64>() / n as f64),
        p50_ms: ms(nearest_rank(&sorted, 50.0) as f64),
        p90_ms: ms(nearest_rank(&sorted, 90.0) as f64),
        p99_ms: ms(nearest_rank(&sorted, 99.0) as f64),
    })
}

/// The device side of a row from its inferences' event timings and the host's median
/// latency. The stages' means add up to the total's mean (each inference's total is the sum
/// of its stages); medians need not.
pub fn device_timing(
    samples: &[runtimes::DeviceTime],
    wall_p50_ms: f64,
) -> crate::results::DeviceTiming {
    let total = stage_stats(samples.iter().map(|d| d.total_ns()));
    let Some(total) = total else {
        return crate::results::DeviceTiming::unavailable("no inference was timed on the device");
    };
    let share = (wall_p50_ms > 0.0).then(|| total.p50_ms / wall_p50_ms);
    let warning = share.filter(|&s| s < DEVICE_SHARE_WARNING).map(|s| {
        format!(
            "the device's span was {:.0}% of the wall time (median {:.3} ms of {:.3} ms): the host's work outside it (framework overhead before the first launch and after the last kernel, synchronization) bounds this row; a larger batch or CUDA graphs would help",
            s * 100.0,
            total.p50_ms,
            wall_p50_ms
        )
    });
    crate::results::DeviceTiming {
        status: "cuda-events".into(),
        h2d: stage_stats(samples.iter().filter_map(|d| d.h2d_ns)),
        compute: stage_stats(samples.iter().map(|d| d.compute_ns)),
        d2h: stage_stats(samples.iter().filter_map(|d| d.d2h_ns)),
        total: Some(total),
        device_share: share,
        warning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_matches_the_definition() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&s, 50.0), 50);
        assert_eq!(nearest_rank(&s, 90.0), 90);
        assert_eq!(nearest_rank(&s, 99.0), 99);
        assert_eq!(nearest_rank(&s, 99.9), 100);
        assert_eq!(nearest_rank(&s, 100.0), 100);
        assert_eq!(nearest_rank(&[7], 50.0), 7);
        assert_eq!(nearest_rank(&[], 50.0), 0);
        // ceil(0.5 * 5) = 3rd of 5
        assert_eq!(nearest_rank(&[10, 20, 30, 40, 50], 50.0), 30);
    }

    #[test]
    fn moments_and_extremes() {
        let st = LatencyStats::from_samples(&[4_000_000, 2_000_000, 6_000_000]);
        assert_eq!(st.samples, 3);
        assert!((st.mean_ms - 4.0).abs() < 1e-12);
        assert!((st.stddev_ms - 2.0).abs() < 1e-12);
        assert_eq!(st.min_ms, 2.0);
        assert_eq!(st.max_ms, 6.0);
        assert_eq!(st.p50_ms, 4.0);
    }

    #[test]
    fn low_sample_percentiles_are_flagged() {
        let st = LatencyStats::from_samples(&[1000; 100]);
        assert_eq!(st.low_sample_percentiles, vec!["p99", "p99.9"]);
        let st = LatencyStats::from_samples(&[1000; 500]);
        assert_eq!(st.low_sample_percentiles, vec!["p99.9"]);
        let st = LatencyStats::from_samples(&[1000; 9]);
        assert_eq!(
            st.low_sample_percentiles,
            vec!["p50", "p90", "p99", "p99.9"]
        );
    }

    #[test]
    fn median_ci_narrows_with_samples_and_brackets_the_median() {
        let s: Vec<u64> = (1..=100).collect();
        let (lo, hi) = median_ci95(&s);
        assert!(lo < 50 && hi > 50, "{lo} {hi}");
        // ranks 50 -+ 9.8: about 40 and 61.
        assert_eq!((lo, hi), (40, 61));
        let big: Vec<u64> = (1..=10_000).collect();
        let (lo, hi) = median_ci95(&big);
        assert!(hi - lo < 220 && lo < 5000 && hi > 5000, "{lo} {hi}");
        assert_eq!(median_ci_relative(&vec![7; 1000]), 0.0);
    }

    #[test]
    fn quantile_ci_ranks_bracket_the_quantile() {
        // p99 of 1,000: rank 990, the binomial's sd sqrt(1000 * 0.99 * 0.01) = 3.1 ranks.
        let (lo, hi) = quantile_ci_ranks(1000, 0.99).unwrap();
        assert!(lo < 990 && hi > 990, "{lo} {hi}");
        assert!(
            lo >= 980 && hi <= 1000 && hi - lo >= 8 && hi - lo <= 20,
            "{lo} {hi}"
        );
        let (lo, hi) = quantile_ci_ranks(10_000, 0.9).unwrap();
        assert!(lo < 9000 && hi > 9000 && hi - lo < 130, "{lo} {hi}");
        // Too few samples for an interval: None, and the count that suffices.
        assert_eq!(quantile_ci_ranks(0, 0.5), None);
        assert_eq!(quantile_ci_ranks(3, 0.5), None);
        assert_eq!(quantile_ci_ranks(50, 0.99), None);
        assert_eq!(quantile_ci_ranks(367, 0.99), None);
        assert_eq!(quantile_ci_ranks(368, 0.99).map(|r| r.1), Some(368));
        assert_eq!(quantile_ci_ranks(100, 1.0), None);
        assert_eq!(quantile_ci_samples_needed(0.99), 368);
        assert_eq!(quantile_ci_samples_needed(0.9), 36);
        assert_eq!(quantile_ci_samples_needed(0.999), 3688);
        assert!(quantile_ci_ranks(35, 0.9).is_none() && quantile_ci_ranks(36, 0.9).is_some());
        // The median: the same ranks as median_ci_ranks, within one.
        assert_eq!(quantile_ci_ranks(100, 0.5), Some((40, 61)));
        for n in [20, 101, 1000, 10_000, 99_999] {
            let (a, b) = quantile_ci_ranks(n, 0.5).unwrap();
            let (c, d) = median_ci_ranks(n);
            assert!(
                a.abs_diff(c) <= 1 && b.abs_diff(d) <= 1,
                "{n}: {a} {b} / {c} {d}"
            );
        }
        // The normal approximation takes over above 100,000 samples within a rank.
        for (n, q) in [
            (100_000, 0.99),
            (100_000, 0.9),
            (20_000, 0.99),
            (5_000, 0.5),
        ] {
            let (a, b) = quantile_ci_ranks_exact(n, q).unwrap();
            let (c, d) = quantile_ci_ranks_normal(n, q).unwrap();
            assert!(
                a.abs_diff(c) <= 1 && b.abs_diff(d) <= 1,
                "{n} {q}: {a} {b} / {c} {d}"
            );
        }
        let (lo, hi) = quantile_ci_ranks(1_000_000, 0.99).unwrap();
        assert!(lo < 990_000 && hi > 990_000 && hi - lo < 400, "{lo} {hi}");
    }

    #[test]
    fn quantile_ci_covers_the_true_quantile_95_percent_of_the_time() {
        // 2,000 runs of 1,000 uniform samples (a fixed xorshift): the p99 interval holds the
        // true 0.99 quantile in at least 95% of them, less the simulation's own noise.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut uniform = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let (lo, hi) = quantile_ci_ranks(1000, 0.99).unwrap();
        let runs = 2000;
        let mut covered = 0;
        for _ in 0..runs {
            let mut s: Vec<f64> = (0..1000).map(|_| uniform()).collect();
            s.sort_by(f64::total_cmp);
            if s[lo as usize - 1] <= 0.99 && 0.99 <= s[hi as usize - 1] {
                covered += 1;
            }
        }
        let rate = covered as f64 / runs as f64;
        assert!(rate > 0.935 && rate < 0.995, "coverage {rate}");
    }

    #[test]
    fn value_at_rank_reads_the_histogram() {
        let samples: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let h = decode_histogram(&LatencyStats::from_samples(&samples).histogram).unwrap();
        for r in [1, 500, 990, 1000] {
            let v = value_at_rank(&h, r) as f64;
            assert!(
                (v - r as f64 * 1000.0).abs() / (r as f64 * 1000.0) < 1e-3,
                "{r} {v}"
            );
        }
        assert_eq!(value_at_rank(&h, 5000), h.max());
    }

    #[test]
    fn the_histogram_round_trips() {
        let samples: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let st = LatencyStats::from_samples(&samples);
        let h = decode_histogram(&st.histogram).unwrap();
        assert_eq!(h.len(), 1000);
        let p50 = h.value_at_quantile(0.5);
        assert!((p50 as f64 - 500_000.0).abs() / 500_000.0 < 1e-3, "{p50}");
    }

    #[test]
    fn the_device_breakdown_adds_up_and_flags_an_idle_device() {
        use runtimes::DeviceTime;
        // 100 inferences: copies of 0.1 ms in and 0.05 ms out, compute 1..=100 x 0.01 ms.
        let samples: Vec<DeviceTime> = (1..=100u64)
            .map(|i| DeviceTime {
                h2d_ns: Some(100_000),
                compute_ns: i * 10_000,
                d2h_ns: Some(50_000),
            })
            .collect();
        let d = device_timing(&samples, 2.0);
        assert_eq!(d.status, "cuda-events");
        let (h2d, compute, d2h, total) = (
            d.h2d.unwrap(),
            d.compute.unwrap(),
            d.d2h.unwrap(),
            d.total.unwrap(),
        );
        assert_eq!(total.samples, 100);
        assert!((h2d.p50_ms - 0.1).abs() < 1e-12 && (d2h.p50_ms - 0.05).abs() < 1e-12);
        assert!((compute.p50_ms - 0.5).abs() < 1e-12, "{}", compute.p50_ms);
        assert!((compute.p99_ms - 0.99).abs() < 1e-12);
        // The stages' means add up to the total's mean.
        let sum = h2d.mean_ms + compute.mean_ms + d2h.mean_ms;
        assert!(
            (sum - total.mean_ms).abs() < 1e-9,
            "{sum} vs {}",
            total.mean_ms
        );
        assert!((total.p50_ms - 0.65).abs() < 1e-12);
        // 0.65 ms of 2 ms on the device: flagged.
        assert!((d.device_share.unwrap() - 0.325).abs() < 1e-12);
        assert!(d.warning.unwrap().contains("span was 32%"));
        // Busy most of the time: no warning. Compute alone: no copy stages.
        let compute_only: Vec<DeviceTime> = (0..10)
            .map(|_| DeviceTime {
                compute_ns: 900_000,
                ..DeviceTime::default()
            })
            .collect();
        let d = device_timing(&compute_only, 1.0);
        assert!(d.warning.is_none() && d.h2d.is_none() && d.d2h.is_none());
        assert!((d.device_share.unwrap() - 0.9).abs() < 1e-12);
        // Nothing timed: unavailable, with the reason.
        let d = device_timing(&[], 1.0);
        assert!(d.status.starts_with("unavailable: ") && !d.measured());
    }
}
