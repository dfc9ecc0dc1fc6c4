//! What one measured window produced: latency statistics, the stop reason, open-loop schedule
//! figures. Data only; `measure` and `stats` compute them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub samples: u64,
    pub mean_ms: f64,
    pub stddev_ms: f64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Percentiles with too few samples behind them (see the module docs).
    pub low_sample_percentiles: Vec<String>,
    /// Distribution-free 95% confidence interval of the median (order statistics).
    #[serde(default)]
    pub median_ci95_low_ms: f64,
    #[serde(default)]
    pub median_ci95_high_ms: f64,
    /// The HdrHistogram of all samples (V2 deflate, base64), for exact merging.
    pub histogram: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// Both the minimum time and the minimum sample count were reached.
    MinimaMet,
    /// The maximum time ran out first.
    MaxTime,
    /// Too many consecutive failures.
    Failures,
    /// Interrupted (Ctrl-C); the samples so far are kept.
    Interrupted,
    /// The median's confidence interval reached the target (`--target-ci`).
    TargetCi,
    /// The scenario's share of `--budget` was spent (after the minima) before the target.
    Budget,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub first_inference_ms: f64,
    pub warmup_iterations: u64,
    pub warmup_ms: f64,
    pub latency: LatencyStats,
    /// Wall time of the measured window (first timed start to last timed end).
    pub window_s: f64,
    /// Completed (successful) iterations in the window.
    pub iterations: u64,
    pub failures: u64,
    /// Steps (requests) still running when the window closed: their latencies, to their
    /// answers, are in `latency`; they are not in `iterations` (throughput).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub in_flight_at_end: u64,
    pub failure_kinds: BTreeMap<String, u64>,
    pub stop_reason: StopReason,
    /// With a CI target: false when the budget share or `max_time` ran out before the
    /// target was met.
    #[serde(default)]
    pub stable: Option<bool>,
    /// The scenario's share of `--budget`, warm-up included, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_s: Option<f64>,
    /// How the warm-up ended: `steady` (after the minimum iterations and time, the latency
    /// stopped moving: see `measure::Warmup`), `cap` (still moving at `--warmup-max`), or
    /// `minimum` (no detection: the cap is no longer than `--warmup-time`); absent in
    /// results written before detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_end: Option<String>,
    /// GPU rows: what the device spent per inference (CUDA events), or why it was not
    /// measured; absent on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceTiming>,
}

/// The device side of a GPU row: CUDA events on the runtime's stream around each measured
/// inference, and the stages between them (copies in and out with `--gpu-copies`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceTiming {
    /// `cuda-events` when measured, else `unavailable: <why>`: the row then has host
    /// timing only.
    pub status: String,
    /// Per inference, all stages together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<StageStats>,
    /// Host-to-device copies of the inputs (`--gpu-copies` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2d: Option<StageStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<StageStats>,
    /// Device-to-host copies of the outputs (`--gpu-copies` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d2h: Option<StageStats>,
    /// Median device time over median wall time: the share of the host's clock covered by
    /// the span on the device's stream (from the inference's start to its last kernel or copy;
    /// gaps between launches are inside it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_share: Option<f64>,
    /// Set when that span was under half of the wall time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl DeviceTiming {
    pub fn unavailable(why: impl std::fmt::Display) -> DeviceTiming {
        DeviceTiming {
            status: format!("unavailable: {why}"),
            total: None,
            h2d: None,
            compute: None,
            d2h: None,
            device_share: None,
            warning: None,
        }
    }

    pub fn measured(&self) -> bool {
        self.total.is_some()
    }
}

/// One stage's times over the measured inferences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageStats {
    pub samples: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

/// How arrivals are spaced in an open loop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arrivals {
    /// Exponential gaps (a Poisson process), seeded.
    Poisson,
    /// Equal gaps of 1/rate.
    Constant,
    /// Gamma-distributed gaps with this coefficient of variation (1: Poisson; above: bursts),
    /// seeded.
    Gamma { cv: f64 },
    /// A recorded trace's own times.
    Trace,
}

/// What an open loop adds: the schedule kept or not, and the latencies without the
/// coordinated-omission correction for comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenLoopStats {
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub arrivals: Arrivals,
    pub seed: u64,
    /// Requests sent more than `late_threshold_ms` after their scheduled time.
    pub late_sends: u64,
    pub late_threshold_ms: f64,
    /// Largest delay between a scheduled time and the actual send.
    pub max_send_lag_ms: f64,
    /// Requests due by the end of the window that were never sent.
    pub backlog_at_end: u64,
    /// Service time alone (send to answer): what a coordinated-omission-blind tool reports.
    pub uncorrected: LatencyStats,
    /// Scheduled time to send, per request: how well the client kept the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lag: Option<LatencyStats>,
    /// Late sends for which a worker or connection was free when they fell due: the client,
    /// not the server (nor too few connections), was behind.
    #[serde(default)]
    pub late_client: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
