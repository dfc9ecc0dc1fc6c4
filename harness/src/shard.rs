//! `compare --shard K/N`: a deterministic part of a sweep, so that N machines (a Kubernetes
//! Indexed Job, a Slurm job array) together run every scenario once.
//!
//! The unit is one (shape, load mode) of the plan, with every runtime, thread count, variant
//! and device measured at it: all of a shape's rows stay in one shard, so its parity
//! reference (ONNX Runtime's answer) is there too. Units go to shards by their expected
//! cost, not their count: largest first, each to the shard with the least cost so far
//! (ties to the lower index), which every shard computes alike from the same flags.

use std::time::Duration;

use crate::measure::{LoadMode, MeasureConfig};

/// Shard `index` (0-based, as Kubernetes' completion index and `--array=0-(N-1)` give it)
/// of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not K/N (e.g. 0/4: the first of four shards)"))?;
        let index: usize = k
            .trim()
            .parse()
            .map_err(|_| format!("shard index '{k}' is not a whole number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("shard count '{n}' is not a whole number"))?;
        if count == 0 {
            return Err("the shard count must be at least 1".into());
        }
        if index >= count {
            return Err(format!(
                "shard index {index} is out of range for {count} shards: K counts from 0 to {} (Kubernetes' JOB_COMPLETION_INDEX; Slurm: --array=0-{})",
                count - 1,
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }
}

/// The expected seconds of one row: its warm-up, then its minimum time or its minimum
/// samples at an estimated latency, whichever is longer (open loop: the minimum time or the
/// samples at its rate). The latency estimate is two floating-point operations per
/// parameter (the ONNX file's bytes / 4) per token, at 25 GFLOP/s per thread: rough, and
/// only the balance between shards depends on it.
pub fn row_seconds(
    measure: &MeasureConfig,
    model_bytes: u64,
    batch: usize,
    seq: Option<usize>,
    threads: usize,
    mode: &LoadMode,
) -> f64 {
    let tokens = (batch * seq.unwrap_or(1)).max(1) as f64;
    let params = model_bytes as f64 / 4.0;
    let latency = 2.0 * params * tokens / (25e9 * threads.max(1) as f64);
    let samples = measure.min_samples as f64;
    let measuring = match mode.rate() {
        Some(rate) if rate > 0.0 => samples / rate,
        _ => samples * latency / mode.concurrency().max(1) as f64,
    };
    let secs = |d: Duration| d.as_secs_f64();
    secs(measure.warmup_time) + secs(measure.min_time).max(measuring.min(secs(measure.max_time)))
}

/// Assigns each unit (by its cost) to a shard: largest first, each to the least loaded
/// shard so far, ties to the lower unit and shard index. Returns the shard of each unit.
pub fn assign(costs: &[f64], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]).then(a.cmp(&b)));
    let mut load = vec![0.0f64; count.max(1)];
    let mut shard_of = vec![0; costs.len()];
    for u in order {
        let (best, _) = load
            .iter()
            .enumerate()
            .min_by(|(i, a), (j, b)| a.total_cmp(b).then(i.cmp(j)))
            .expect("at least one shard");
        shard_of[u] = best;
        load[best] += costs[u];
    }
    shard_of
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_refuse_what_is_out_of_range() {
        assert_eq!(
            "1/4".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 4 }
        );
        let e = "4/4".parse::<Shard>().unwrap_err();
        assert!(e.contains("out of range") && e.contains("0 to 3"), "{e}");
        assert!("2".parse::<Shard>().unwrap_err().contains("K/N"));
        assert!("0/0".parse::<Shard>().unwrap_err().contains("at least 1"));
        assert!("a/2".parse::<Shard>().unwrap_err().contains("whole number"));
    }

    #[test]
    fn units_are_balanced_by_cost_not_count() {
        // One costly unit and four cheap ones: by count the first shard would hold the
        // costly one and two cheap ones; by cost it holds the costly one alone.
        let costs = [10.0, 2.0, 2.0, 2.0, 2.0];
        let a = assign(&costs, 2);
        assert_eq!(a, vec![0, 1, 1, 1, 1]);
        // Every unit lands in exactly one shard, the same way every time.
        assert_eq!(assign(&costs, 2), a);
        let costs: Vec<f64> = (0..17).map(|i| 1.0 + (i % 5) as f64).collect();
        let a = assign(&costs, 3);
        let loads: Vec<f64> = (0..3)
            .map(|k| (0..17).filter(|&u| a[u] == k).map(|u| costs[u]).sum())
            .collect();
        let (lo, hi) = (
            loads.iter().cloned().fold(f64::INFINITY, f64::min),
            loads.iter().cloned().fold(0.0, f64::max),
        );
        // Within the largest unit of each other.
        assert!(hi - lo <= 5.0, "{loads:?}");
        assert_eq!(assign(&[], 3), Vec::<usize>::new());
    }

    #[test]
    fn a_larger_shape_is_expected_to_cost_more() {
        let m = MeasureConfig {
            min_samples: 1000,
            ..MeasureConfig::default()
        };
        let c1 = LoadMode::ClosedLoop { concurrency: 1 };
        let small = row_seconds(&m, 90_000_000, 1, Some(16), 2, &c1);
        let large = row_seconds(&m, 90_000_000, 8, Some(128), 2, &c1);
        assert!(large > small, "{small} {large}");
        // The minimum time is a floor.
        assert!(small >= m.min_time.as_secs_f64());
    }
}
