//! The measurement loop and statistics against known truth: a test runtime with injected
//! latency. With a simulated clock the truth is exact; with the real clock (spin-waits) the
//! reported figures must bracket it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::measure::{measure, Clock, MeasureConfig, MonotonicClock};
use harness::results::StopReason;
use runtimes::{HostTensor, Loaded, RuntimeError};

/// A clock that only moves when the fake runtime says so.
#[derive(Clone, Default)]
struct SimClock(Arc<AtomicU64>);

impl Clock for SimClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A runtime whose i-th inference takes `latency(i)`: on the simulated clock, or spinning.
struct Injected {
    clock: Option<SimClock>,
    calls: u64,
    latency: fn(u64) -> Duration,
    fail_every: Option<u64>,
}

impl Loaded for Injected {
    fn applied(&self) -> Vec<(String, String)> {
        vec![]
    }
    fn prepare(&mut self, _: &[HostTensor]) -> Result<(), RuntimeError> {
        Ok(())
    }
    fn run(&mut self) -> Result<(), RuntimeError> {
        let i = self.calls;
        self.calls += 1;
        let d = (self.latency)(i);
        match &self.clock {
            Some(c) => {
                c.0.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
            }
            None => {
                let t = Instant::now();
                while t.elapsed() < d {
                    std::hint::spin_loop();
                }
            }
        }
        if self
            .fail_every
            .is_some_and(|k| i > 0 && i.is_multiple_of(k))
        {
            return Err(RuntimeError::Inference {
                runtime: "injected",
                message: "injected failure".into(),
            });
        }
        Ok(())
    }
    fn infer(&mut self) -> Result<Vec<HostTensor>, RuntimeError> {
        Ok(vec![])
    }
}

fn cfg(min_time_ms: u64, min_samples: u64, max_time_ms: u64) -> MeasureConfig {
    MeasureConfig {
        warmup_iters: 5,
        warmup_time: Duration::ZERO,
        min_time: Duration::from_millis(min_time_ms),
        min_samples,
        max_time: Duration::from_millis(max_time_ms),
        max_consecutive_failures: 10,
        target_ci: None,
        budget: None,
        budget_per_scenario: None,
        share: None,
        warmup_max: Duration::ZERO,
    }
}

fn sim(latency: fn(u64) -> Duration) -> (Injected, SimClock) {
    let clock = SimClock::default();
    (
        Injected {
            clock: Some(clock.clone()),
            calls: 0,
            latency,
            fail_every: None,
        },
        clock,
    )
}

#[test]
fn fixed_latency_is_reported_exactly() {
    let (mut rt, clock) = sim(|_| Duration::from_millis(2));
    let m = measure(&mut rt, &clock, &cfg(1000, 10, 10_000)).unwrap();
    let l = &m.latency;
    // 1 s at 2 ms per inference: exactly 500 samples, the minimum time being the binding rule.
    assert_eq!(l.samples, 500);
    assert_eq!(m.stop_reason, StopReason::MinimaMet);
    for v in [
        l.min_ms, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms,
    ] {
        assert_eq!(v, 2.0);
    }
    assert_eq!(l.stddev_ms, 0.0);
    assert_eq!(m.first_inference_ms, 2.0);
    assert_eq!(m.warmup_iterations, 5);
    assert!((m.window_s - 1.0).abs() < 1e-9);
    assert!((harness::measure::throughput(&m, 8) - 4000.0).abs() < 1e-6);
}

#[test]
fn bimodal_99_1_latency_puts_p99_and_p999_on_the_right_modes() {
    // One inference in a hundred takes 10 ms, the rest 1 ms. The first call is the first
    // inference and the next 5 warm up, so the measured window starts at call 6.
    let (mut rt, clock) = sim(|i| {
        if i % 100 == 99 {
            Duration::from_millis(10)
        } else {
            Duration::from_millis(1)
        }
    });
    let m = measure(&mut rt, &clock, &cfg(0, 10_000, 1_000_000)).unwrap();
    let l = &m.latency;
    assert_eq!(l.samples, 10_000);
    assert_eq!(l.p50_ms, 1.0);
    assert_eq!(l.p90_ms, 1.0);
    // Exactly 100 slow samples of 10,000: rank 9,900 is the last fast one, rank 9,990 slow.
    assert_eq!(l.p99_ms, 1.0);
    assert_eq!(l.p999_ms, 10.0);
    assert_eq!(l.max_ms, 10.0);
    assert!((l.mean_ms - 1.09).abs() < 1e-9, "{}", l.mean_ms);
    assert!(l.low_sample_percentiles.is_empty());
}

#[test]
fn max_time_caps_a_scenario_and_says_so() {
    let (mut rt, clock) = sim(|_| Duration::from_millis(5));
    let m = measure(&mut rt, &clock, &cfg(100, 1_000_000, 500)).unwrap();
    assert_eq!(m.stop_reason, StopReason::MaxTime);
    assert_eq!(m.latency.samples, 100);
    assert_eq!(m.latency.low_sample_percentiles, vec!["p99", "p99.9"]);
}

#[test]
fn min_samples_extends_past_min_time() {
    let (mut rt, clock) = sim(|_| Duration::from_millis(50));
    let m = measure(&mut rt, &clock, &cfg(100, 40, 60_000)).unwrap();
    assert_eq!(m.latency.samples, 40);
    assert_eq!(m.stop_reason, StopReason::MinimaMet);
}

#[test]
fn failures_are_counted_not_dropped() {
    let (mut rt, clock) = sim(|_| Duration::from_millis(1));
    rt.fail_every = Some(10);
    let m = measure(&mut rt, &clock, &cfg(0, 900, 60_000)).unwrap();
    assert_eq!(m.latency.samples, 900);
    assert_eq!(m.failures, m.failure_kinds["inference"]);
    // One call in ten fails: 900 successes take 100 failures along (warm-up included).
    assert!((100..=102).contains(&m.failures), "{}", m.failures);
}

#[test]
fn a_runtime_that_always_fails_stops_and_reports() {
    let (mut rt, clock) = sim(|_| Duration::from_millis(1));
    rt.fail_every = Some(1);
    let m = measure(&mut rt, &clock, &cfg(0, 100, 60_000)).unwrap();
    assert_eq!(m.stop_reason, StopReason::Failures);
    assert_eq!(m.latency.samples, 0);
    assert_eq!(m.failures, 10);
}

#[test]
fn real_clock_brackets_injected_spin_latency() {
    // On the real clock the figures can only be late, never early; how late depends on what
    // else the machine runs, so only the lower bounds and the modes are asserted.
    let mut rt = Injected {
        clock: None,
        calls: 0,
        latency: |i| {
            if i % 10 == 9 {
                Duration::from_micros(3000)
            } else {
                Duration::from_micros(1000)
            }
        },
        fail_every: None,
    };
    let clock = MonotonicClock::new();
    let m = measure(&mut rt, &clock, &cfg(0, 300, 30_000)).unwrap();
    let l = &m.latency;
    assert_eq!(l.samples, 300);
    // Never early: every figure is at least the injected truth.
    assert!(l.min_ms >= 1.0, "{}", l.min_ms);
    assert!(l.p50_ms >= 1.0, "p50 {}", l.p50_ms);
    assert!(l.p99_ms >= 3.0, "p99 {}", l.p99_ms);
    assert!(l.mean_ms >= 1.2, "mean {}", l.mean_ms);
    // And on the right mode: the median is a fast inference, the p99 a slow one.
    assert!(l.p50_ms < 3.0, "p50 {}", l.p50_ms);
    assert!(l.p90_ms < l.p99_ms, "p90 {} p99 {}", l.p90_ms, l.p99_ms);
}

fn with_ci(target: f64, max_time_ms: u64) -> MeasureConfig {
    MeasureConfig {
        target_ci: Some(target),
        ..cfg(0, 10, max_time_ms)
    }
}

#[test]
fn a_ci_target_stops_a_steady_scenario_once_the_minima_hold() {
    let (mut rt, clock) = sim(|i| Duration::from_micros(1000 + (i % 20)));
    let m = measure(&mut rt, &clock, &with_ci(0.01, 60_000)).unwrap();
    assert_eq!(m.stop_reason, StopReason::TargetCi);
    assert_eq!(m.stable, Some(true));
    // Within +-2% of 1 ms from the first check: the 10 samples the minimum asks for.
    assert_eq!(m.latency.samples, 10);
    let l = &m.latency;
    assert!(l.median_ci95_low_ms <= l.p50_ms && l.p50_ms <= l.median_ci95_high_ms);
}

/// A seeded spread of +-`half` (a fraction) around 10 ms, uniform, no trend.
fn spread(i: u64, half: f64) -> Duration {
    let u = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    Duration::from_nanos((10e6 * (1.0 + half * (2.0 * u - 1.0))) as u64)
}

/// The half-width of the reported median interval, as a fraction of the median.
fn ci_half(m: &harness::results::Measurement) -> f64 {
    let l = &m.latency;
    (l.median_ci95_high_ms - l.median_ci95_low_ms) / 2.0 / l.p50_ms
}

#[test]
fn adaptive_stopping_reaches_its_target_and_spends_more_where_the_variance_is() {
    let narrow = {
        let (mut rt, clock) = sim(|i| spread(i, 0.05));
        measure(&mut rt, &clock, &with_ci(0.02, 600_000)).unwrap()
    };
    let wide = {
        let (mut rt, clock) = sim(|i| spread(i, 0.6));
        measure(&mut rt, &clock, &with_ci(0.02, 600_000)).unwrap()
    };
    for m in [&narrow, &wide] {
        assert_eq!(m.stop_reason, StopReason::TargetCi);
        assert_eq!(m.stable, Some(true));
        assert!(ci_half(m) <= 0.02, "+-{:.2}%", ci_half(m) * 100.0);
    }
    // +-5% is within +-2% at the first checks; +-60% needs thousands of samples (the median
    // of a uniform spread of width w is known to +-1.96 w / (2 sqrt(n)): n of about 3,500).
    assert!(narrow.latency.samples <= 60, "{}", narrow.latency.samples);
    assert!(
        (2_500..5_000).contains(&wide.latency.samples),
        "{} samples, +-{:.2}%",
        wide.latency.samples,
        ci_half(&wide) * 100.0
    );
    // Not far beyond the target either: checks come as the samples grow by a tenth.
    assert!(ci_half(&wide) > 0.014, "+-{:.2}%", ci_half(&wide) * 100.0);
}

#[test]
fn a_budget_share_ends_a_scenario_that_cannot_meet_its_target() {
    // Bimodal 50/50: the median's interval spans both modes whatever the count.
    let (mut rt, clock) = sim(|i| Duration::from_millis(if i % 2 == 0 { 1 } else { 3 }));
    let cfg = MeasureConfig {
        warmup_time: Duration::from_millis(100),
        share: Some(Duration::from_millis(1_100)),
        ..with_ci(0.02, 60_000)
    };
    let m = measure(&mut rt, &clock, &cfg).unwrap();
    assert_eq!(m.stop_reason, StopReason::Budget);
    assert_eq!(m.stable, Some(false));
    assert_eq!(m.share_s, Some(1.1));
    // Warm-up and window together spend the share, to within one inference.
    let spent = m.warmup_ms + m.window_s * 1e3;
    assert!((1_100.0..=1_103.0).contains(&spent), "{spent} ms");
}

#[test]
fn the_minima_hold_even_past_a_budget_share() {
    let (mut rt, clock) = sim(|i| Duration::from_millis(if i % 2 == 0 { 1 } else { 3 }));
    let cfg = MeasureConfig {
        min_time: Duration::from_millis(500),
        share: Some(Duration::from_millis(50)),
        ..with_ci(0.02, 60_000)
    };
    let m = measure(&mut rt, &clock, &cfg).unwrap();
    assert_eq!(m.stop_reason, StopReason::Budget);
    assert!(m.window_s >= 0.5, "{} s", m.window_s);
    assert!(m.window_s < 0.504, "{} s", m.window_s);
}

#[test]
fn a_budget_share_shortens_the_warm_up_cap_to_leave_the_minimum_time() {
    // Never steady; the cap of 10 s gives way to the share less the minimum time.
    let (mut rt, clock) =
        sim(|i| Duration::from_nanos((2e6 * 0.99f64.powf(i as f64 / 10.0)) as u64));
    let cfg = MeasureConfig {
        warmup_max: Duration::from_secs(10),
        min_time: Duration::from_millis(200),
        share: Some(Duration::from_millis(700)),
        ..with_ci(0.02, 60_000)
    };
    let m = measure(&mut rt, &clock, &cfg).unwrap();
    assert_eq!(m.warmup_end.as_deref(), Some("cap"));
    assert!((500.0..503.0).contains(&m.warmup_ms), "{} ms", m.warmup_ms);
}

#[test]
fn a_budget_is_shared_equally_and_what_is_not_spent_goes_to_the_rest() {
    let b = harness::measure::Budget {
        left: Duration::from_secs(90),
        scenarios: 6,
    };
    assert_eq!(b.share(Duration::ZERO, 0), Duration::from_secs(15));
    // Two scenarios done in 10 s of their 30: the other four share the 80 s left.
    assert_eq!(b.share(Duration::from_secs(10), 2), Duration::from_secs(20));
    // Overspent: nothing is left, the minima alone hold.
    assert_eq!(b.share(Duration::from_secs(100), 5), Duration::ZERO);
    // Past the plan (a count that was off): never a division by zero.
    assert_eq!(b.share(Duration::ZERO, 9), Duration::from_secs(90));
}

#[test]
fn a_ci_target_that_cannot_be_met_runs_to_max_time_marked_unstable() {
    // Half the inferences take 1 ms, half 3 ms: the median's CI spans both modes.
    let (mut rt, clock) = sim(|i| Duration::from_millis(if i % 2 == 0 { 1 } else { 3 }));
    let m = measure(&mut rt, &clock, &with_ci(0.01, 2_000)).unwrap();
    assert_eq!(m.stop_reason, StopReason::MaxTime);
    assert_eq!(m.stable, Some(false));
    assert_eq!(m.latency.samples, 1000);
    assert_eq!(m.latency.median_ci95_low_ms, 1.0);
    assert_eq!(m.latency.median_ci95_high_ms, 3.0);
}

#[test]
fn without_a_ci_target_stability_is_not_claimed() {
    let (mut rt, clock) = sim(|_| Duration::from_millis(1));
    let m = measure(&mut rt, &clock, &cfg(100, 10, 1_000)).unwrap();
    assert_eq!(m.stable, None);
}

/// A warm-up that drifts: 2 ms falling to 1 ms over the first 300 inferences, then 1 ms.
fn drifting(i: u64) -> Duration {
    if i < 300 {
        Duration::from_micros(2000 - i * 1000 / 300)
    } else {
        Duration::from_millis(1)
    }
}

fn with_detection(warmup_max_ms: u64) -> MeasureConfig {
    MeasureConfig {
        warmup_max: Duration::from_millis(warmup_max_ms),
        ..cfg(0, 200, 60_000)
    }
}

#[test]
fn detected_warm_up_ends_where_the_drift_ends() {
    let (mut rt, clock) = sim(drifting);
    let m = measure(&mut rt, &clock, &with_detection(10_000)).unwrap();
    assert_eq!(m.warmup_end.as_deref(), Some("steady"));
    // The drift ends at call 300 (the first inference is call 0): the warm-up ends once a
    // window of steady samples follows it, and before the drift ends it cannot.
    assert!(
        (300..=330).contains(&(m.warmup_iterations + 1)),
        "warm-up of {} iterations",
        m.warmup_iterations
    );
    // Nothing of the drift is in the window.
    assert_eq!(m.latency.max_ms, 1.0);
    assert_eq!(m.latency.p50_ms, 1.0);
}

#[test]
fn without_detection_the_drift_is_measured() {
    // The same runtime with the cap no longer than the warm-up time: five iterations, and
    // the window holds the drift (what a count-only warm-up reports).
    let (mut rt, clock) = sim(drifting);
    let m = measure(&mut rt, &clock, &with_detection(0)).unwrap();
    assert_eq!(m.warmup_end.as_deref(), Some("minimum"));
    assert_eq!(m.warmup_iterations, 5);
    assert!(m.latency.max_ms > 1.9, "{}", m.latency.max_ms);
}

#[test]
fn a_warm_up_that_never_settles_stops_at_the_cap() {
    // 1% faster every 10 inferences, forever: never steady.
    let (mut rt, clock) =
        sim(|i| Duration::from_nanos((2e6 * 0.99f64.powf(i as f64 / 10.0)) as u64));
    let m = measure(&mut rt, &clock, &with_detection(300)).unwrap();
    assert_eq!(m.warmup_end.as_deref(), Some("cap"));
    assert!(
        (300.0..305.0).contains(&m.warmup_ms),
        "warm-up of {} ms",
        m.warmup_ms
    );
}

#[test]
fn noise_without_drift_ends_the_warm_up_at_its_minimum_or_soon_after() {
    // +-10% jitter around 1 ms with no trend: steady as soon as there are samples to test.
    let (mut rt, clock) =
        sim(|i| Duration::from_nanos(1_000_000 + (i * 7919 % 201) * 1000 - 100_000));
    let m = measure(&mut rt, &clock, &with_detection(10_000)).unwrap();
    assert_eq!(m.warmup_end.as_deref(), Some("steady"));
    assert!(m.warmup_iterations <= 20, "{}", m.warmup_iterations);
}

/// A GPU-like runtime: each inference takes 2 ms of host time, of which the device spends a
/// known part, reported the way CUDA events report it (copy in, compute, copy out); or a
/// runtime whose device timer could not start.
struct DeviceTimed {
    clock: SimClock,
    calls: u64,
    timer: Result<(), String>,
    last: Option<runtimes::DeviceTime>,
}

impl Loaded for DeviceTimed {
    fn applied(&self) -> Vec<(String, String)> {
        vec![]
    }
    fn prepare(&mut self, _: &[HostTensor]) -> Result<(), RuntimeError> {
        Ok(())
    }
    fn run(&mut self) -> Result<(), RuntimeError> {
        let i = self.calls;
        self.calls += 1;
        self.clock.0.fetch_add(2_000_000, Ordering::SeqCst);
        // Compute 0.2 ms on even calls, 0.6 ms on odd ones; copies 0.1 ms in, 0.05 ms out.
        self.last = self.timer.is_ok().then_some(runtimes::DeviceTime {
            h2d_ns: Some(100_000),
            compute_ns: if i.is_multiple_of(2) {
                200_000
            } else {
                600_000
            },
            d2h_ns: Some(50_000),
        });
        Ok(())
    }
    fn infer(&mut self) -> Result<Vec<HostTensor>, RuntimeError> {
        Ok(vec![])
    }
    fn device_timing(&self) -> Option<Result<(), String>> {
        Some(self.timer.clone())
    }
    fn last_device_time(&self) -> Option<runtimes::DeviceTime> {
        self.last
    }
}

#[test]
fn device_time_is_recorded_per_measured_inference_and_split_into_its_stages() {
    let clock = SimClock::default();
    let mut rt = DeviceTimed {
        clock: clock.clone(),
        calls: 0,
        timer: Ok(()),
        last: None,
    };
    let m = measure(&mut rt, &clock, &cfg(0, 200, 10_000)).unwrap();
    let d = m
        .device
        .expect("a device-timed runtime's rows carry device time");
    assert_eq!(d.status, "cuda-events");
    let total = d.total.as_ref().unwrap();
    // One device sample per measured inference, none from the first run or the warm-up.
    assert_eq!(total.samples, m.iterations);
    let (h2d, compute, d2h) = (
        d.h2d.as_ref().unwrap(),
        d.compute.as_ref().unwrap(),
        d.d2h.as_ref().unwrap(),
    );
    assert!((h2d.p50_ms - 0.1).abs() < 1e-12 && (d2h.p50_ms - 0.05).abs() < 1e-12);
    assert!((compute.mean_ms - 0.4).abs() < 1e-9, "{}", compute.mean_ms);
    assert!((h2d.mean_ms + compute.mean_ms + d2h.mean_ms - total.mean_ms).abs() < 1e-9);
    // Wall 2 ms, device 0.35 or 0.75 ms: a span of at most 38%, so the row is flagged.
    assert!((m.latency.p50_ms - 2.0).abs() < 1e-9);
    assert!(d.device_share.unwrap() < 0.5);
    assert!(d
        .warning
        .as_deref()
        .unwrap()
        .contains("a larger batch or CUDA graphs"));

    // A timer that could not start: the row keeps its host timing and says why.
    let mut rt = DeviceTimed {
        clock: clock.clone(),
        calls: 0,
        timer: Err("no NVIDIA driver: libcuda.so.1 cannot be loaded".into()),
        last: None,
    };
    let m = measure(&mut rt, &clock, &cfg(0, 50, 10_000)).unwrap();
    assert_eq!(m.iterations, 50);
    let d = m.device.unwrap();
    assert!(!d.measured() && d.total.is_none() && d.compute.is_none());
    assert_eq!(
        d.status,
        "unavailable: no NVIDIA driver: libcuda.so.1 cannot be loaded"
    );

    // A CPU runtime: no device section at all.
    let mut cpu = Injected {
        clock: Some(clock.clone()),
        calls: 0,
        latency: |_| Duration::from_millis(1),
        fail_every: None,
    };
    assert!(measure(&mut cpu, &clock, &cfg(0, 20, 10_000))
        .unwrap()
        .device
        .is_none());
}
