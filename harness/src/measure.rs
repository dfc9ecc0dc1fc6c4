//! The closed-loop, single-stream measurement of one prepared model: first inference,
//! warm-up, then timed iterations until both the minimum time and the minimum sample count
//! hold, capped by the maximum time. Only `Loaded::run` sits between the two clock reads.
//! Returns data; never prints.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use runtimes::{Loaded, RuntimeError};
use serde::{Deserialize, Serialize};

use crate::stats::LatencyStats;

/// A monotonic nanosecond clock. Tests substitute one that a fake runtime advances, so the
/// statistics can be checked against exact truth.
pub trait Clock {
    fn now_ns(&self) -> u64;
}

pub struct MonotonicClock {
    start: Instant,
}

impl MonotonicClock {
    pub fn new() -> MonotonicClock {
        MonotonicClock {
            start: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeasureConfig {
    /// Warm-up ends when both the iteration count and the time are reached.
    pub warmup_iters: u64,
    #[serde(with = "secs")]
    pub warmup_time: Duration,
    #[serde(with = "secs")]
    pub min_time: Duration,
    pub min_samples: u64,
    #[serde(with = "secs")]
    pub max_time: Duration,
    /// A scenario stops, marked failed, after this many failed inferences in a row.
    pub max_consecutive_failures: u64,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        MeasureConfig {
            warmup_iters: 3,
            warmup_time: Duration::from_secs(1),
            min_time: Duration::from_secs(3),
            min_samples: 30,
            max_time: Duration::from_secs(60),
            max_consecutive_failures: 10,
        }
    }
}

/// Durations as seconds (f64) in JSON.
mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v: f64 = serde::Deserialize::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
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
    pub failure_kinds: BTreeMap<String, u64>,
    pub stop_reason: StopReason,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Called at the edges of the measured window (after warm-up, after the last sample), so
/// that resource monitors cover exactly what the latencies cover.
pub trait WindowHooks {
    fn window_start(&mut self) {}
    fn window_end(&mut self) {}
    /// Polled every iteration: true ends the scenario early (Ctrl-C).
    fn interrupted(&self) -> bool {
        false
    }
}

impl WindowHooks for () {}

/// Measures `model`, which must already be prepared. The first inference failing is an
/// error (nothing can be measured); later failures are counted and shown.
pub fn measure(
    model: &mut dyn Loaded,
    clock: &dyn Clock,
    cfg: &MeasureConfig,
) -> Result<Measurement, RuntimeError> {
    measure_with(model, clock, cfg, &mut ())
}

/// [`measure`], calling `hooks` at the window's edges.
pub fn measure_with(
    model: &mut dyn Loaded,
    clock: &dyn Clock,
    cfg: &MeasureConfig,
    hooks: &mut dyn WindowHooks,
) -> Result<Measurement, RuntimeError> {
    let t0 = clock.now_ns();
    model.run()?;
    let first_ns = clock.now_ns() - t0;

    let mut failure_kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = 0u64;
    let mut consecutive = 0u64;
    let mut fail = |e: RuntimeError, consecutive: &mut u64| {
        failures += 1;
        *consecutive += 1;
        *failure_kinds.entry(e.kind().to_string()).or_default() += 1;
    };

    let warm_start = clock.now_ns();
    let warm_time = cfg.warmup_time.as_nanos() as u64;
    let max_ns = cfg.max_time.as_nanos() as u64;
    let mut warm_iters = 0u64;
    loop {
        let elapsed = clock.now_ns() - warm_start;
        if (warm_iters >= cfg.warmup_iters && elapsed >= warm_time)
            || elapsed >= max_ns
            || hooks.interrupted()
        {
            break;
        }
        match model.run() {
            Ok(()) => consecutive = 0,
            Err(e) => {
                fail(e, &mut consecutive);
                if consecutive >= cfg.max_consecutive_failures {
                    break;
                }
            }
        }
        warm_iters += 1;
    }
    let warm_ns = clock.now_ns() - warm_start;

    let min_ns = cfg.min_time.as_nanos() as u64;
    hooks.window_start();
    let mut samples: Vec<u64> = Vec::with_capacity(cfg.min_samples.min(1 << 20) as usize);
    let start = clock.now_ns();
    let mut end = start;
    let stop_reason = if consecutive >= cfg.max_consecutive_failures {
        StopReason::Failures
    } else {
        loop {
            let a = clock.now_ns();
            let r = model.run();
            let b = clock.now_ns();
            end = b;
            match r {
                Ok(()) => {
                    samples.push(b - a);
                    consecutive = 0;
                }
                Err(e) => {
                    fail(e, &mut consecutive);
                    if consecutive >= cfg.max_consecutive_failures {
                        break StopReason::Failures;
                    }
                }
            }
            let elapsed = b - start;
            if elapsed >= min_ns && samples.len() as u64 >= cfg.min_samples {
                break StopReason::MinimaMet;
            }
            if elapsed >= max_ns {
                break StopReason::MaxTime;
            }
            if hooks.interrupted() {
                break StopReason::Interrupted;
            }
        }
    };
    hooks.window_end();
    Ok(Measurement {
        first_inference_ms: ms(first_ns),
        warmup_iterations: warm_iters,
        warmup_ms: ms(warm_ns),
        iterations: samples.len() as u64,
        latency: LatencyStats::from_samples(&samples),
        window_s: (end - start) as f64 / 1e9,
        failures,
        failure_kinds,
        stop_reason,
    })
}

/// Items per second: completed inferences times the batch, over the measured window.
pub fn throughput(m: &Measurement, batch: usize) -> f64 {
    if m.window_s > 0.0 {
        (m.iterations * batch as u64) as f64 / m.window_s
    } else {
        0.0
    }
}
