//! Concurrency and open loop against runtimes with known, injected latency (sleeps, so the
//! CPU count does not matter): closed-loop throughput scales with workers, and open-loop
//! latency counts from the scheduled time, exposing a stall that service times hide.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::measure::{measure_load, LoadMode, MeasureConfig};
use harness::results::Arrivals;
use runtimes::{HostTensor, Loaded, RuntimeError};

/// Sleeps `base` per inference; the call numbered `stall_at` (shared count) sleeps `stall`.
struct Sleeper {
    base: Duration,
    calls: Arc<AtomicU64>,
    stall_at: u64,
    stall: Duration,
}

impl Loaded for Sleeper {
    fn applied(&self) -> Vec<(String, String)> {
        vec![]
    }
    fn prepare(&mut self, _: &[HostTensor]) -> Result<(), RuntimeError> {
        Ok(())
    }
    fn run(&mut self) -> Result<(), RuntimeError> {
        let i = self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(if i == self.stall_at {
            self.stall
        } else {
            self.base
        });
        Ok(())
    }
    fn infer(&mut self) -> Result<Vec<HostTensor>, RuntimeError> {
        Ok(vec![])
    }
}

fn sleepers(n: usize, base_ms: u64, stall_at: u64, stall_ms: u64) -> Vec<Box<dyn Loaded>> {
    let calls = Arc::new(AtomicU64::new(0));
    (0..n)
        .map(|_| {
            Box::new(Sleeper {
                base: Duration::from_millis(base_ms),
                calls: calls.clone(),
                stall_at,
                stall: Duration::from_millis(stall_ms),
            }) as Box<dyn Loaded>
        })
        .collect()
}

fn cfg(min_time_ms: u64, min_samples: u64) -> MeasureConfig {
    MeasureConfig {
        warmup_iters: 2,
        warmup_time: Duration::ZERO,
        min_time: Duration::from_millis(min_time_ms),
        min_samples,
        max_time: Duration::from_secs(20),
        max_consecutive_failures: 10,
        target_ci: None,
        budget: None,
        budget_per_scenario: None,
        share: None,
        warmup_max: Duration::ZERO,
    }
}

#[test]
fn closed_loop_throughput_scales_with_workers() {
    let mut one = sleepers(1, 10, u64::MAX, 0);
    let (m1, _) = measure_load(
        &mut one,
        &LoadMode::ClosedLoop { concurrency: 1 },
        &cfg(600, 10),
        &mut (),
        &|_| {},
    )
    .unwrap();
    let mut four = sleepers(4, 10, u64::MAX, 0);
    let (m4, open) = measure_load(
        &mut four,
        &LoadMode::ClosedLoop { concurrency: 4 },
        &cfg(600, 10),
        &mut (),
        &|_| {},
    )
    .unwrap();
    assert!(open.is_none());
    let t1 = harness::measure::throughput(&m1, 1);
    let t4 = harness::measure::throughput(&m4, 1);
    // 10 ms per inference: at most 100/s per worker, whatever the machine.
    assert!(t1 <= 101.0 && t1 > 60.0, "{t1}");
    assert!(t4 <= 404.0 && t4 > 250.0, "{t4}");
    assert!(t4 / t1 > 3.0, "4 workers gave {t4}/s, 1 gave {t1}/s");
    // Each request still takes its 10 ms.
    assert!(
        m4.latency.p50_ms >= 10.0 && m4.latency.p50_ms < 20.0,
        "{}",
        m4.latency.p50_ms
    );
    assert!(m4.window_s >= 0.6);
}

#[test]
fn open_loop_latency_counts_from_the_schedule() {
    // 200 requests/s, constant gaps of 5 ms, 1 ms of service; one request (well inside the
    // window) stalls 100 ms, and the ~20 requests due meanwhile queue behind it.
    let mut m = sleepers(1, 1, 60, 100);
    let mode = LoadMode::OpenLoop {
        rate: 200.0,
        arrivals: Arrivals::Constant,
        concurrency: 1,
        seed: 1,
        ramp_s: None,
    };
    let (m, open) = measure_load(&mut m, &mode, &cfg(1000, 10), &mut (), &|_| {}).unwrap();
    let o = open.unwrap();
    let corrected = &m.latency;
    let service = &o.uncorrected;
    assert_eq!(corrected.samples, service.samples);
    // The stall: seen by the scheduled-time latency, invisible in service times' p90.
    assert!(corrected.max_ms >= 95.0, "{}", corrected.max_ms);
    assert!(
        corrected.p99_ms >= 50.0,
        "corrected p99 {}",
        corrected.p99_ms
    );
    // About 25 of 200 requests wait behind the stall: the mean moves by milliseconds.
    assert!(
        corrected.mean_ms > service.mean_ms + 3.0,
        "{} vs {}",
        corrected.mean_ms,
        service.mean_ms
    );
    assert!(service.p90_ms < 5.0, "service p90 {}", service.p90_ms);
    assert!(o.late_sends >= 15, "late sends {}", o.late_sends);
    assert!(o.max_send_lag_ms >= 90.0, "{}", o.max_send_lag_ms);
    // The schedule was kept on average: about 200/s achieved.
    assert!(
        (o.achieved_rate - 200.0).abs() < 30.0,
        "{}",
        o.achieved_rate
    );
    assert_eq!(o.target_rate, 200.0);
}

#[test]
fn an_overloaded_open_loop_reports_the_shortfall() {
    // 500/s offered, 10 ms of service on one worker: at most 100/s can be served.
    let mut m = sleepers(1, 10, u64::MAX, 0);
    let mode = LoadMode::OpenLoop {
        rate: 500.0,
        arrivals: Arrivals::Poisson,
        concurrency: 1,
        seed: 7,
        ramp_s: None,
    };
    let (m, open) = measure_load(&mut m, &mode, &cfg(800, 10), &mut (), &|_| {}).unwrap();
    let o = open.unwrap();
    assert!(o.achieved_rate < 110.0, "{}", o.achieved_rate);
    assert!(o.backlog_at_end > 200, "{}", o.backlog_at_end);
    // Latency from the schedule grows with the queue: far beyond the 10 ms of service.
    assert!(m.latency.p50_ms > 100.0, "{}", m.latency.p50_ms);
    assert!(o.uncorrected.p50_ms < 20.0, "{}", o.uncorrected.p50_ms);
}
