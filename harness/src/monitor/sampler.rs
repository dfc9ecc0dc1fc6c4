//! The sampling thread: `begin`/`end` of every monitor on the measuring thread at the
//! window's edges (exact deltas), `sample` at a fixed interval on a thread of its own (peaks,
//! counter wrap-around). The sampler times its own `sample` calls, so its cost is reported
//! with every window.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::results::{MonitorCost, ResourceReport};

pub trait Monitor: Send {
    fn name(&self) -> &'static str;
    /// At the window start, on the measuring thread.
    fn begin(&mut self);
    /// Periodically, on the sampling thread.
    fn sample(&mut self);
    /// At the window end, on the measuring thread.
    fn end(&mut self, report: &mut ResourceReport);
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Vec<Box<dyn Monitor>>, MonitorCost)>,
    start: Instant,
}

impl Sampler {
    pub fn start(mut monitors: Vec<Box<dyn Monitor>>, interval: Duration) -> Sampler {
        for m in &mut monitors {
            m.begin();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let start = Instant::now();
        let handle = std::thread::Builder::new()
            .name("harness-monitor".into())
            .spawn(move || {
                let mut cost = MonitorCost {
                    interval_ms: interval.as_secs_f64() * 1e3,
                    ..MonitorCost::default()
                };
                let mut busy = Duration::ZERO;
                loop {
                    std::thread::park_timeout(interval);
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    let t = Instant::now();
                    for m in &mut monitors {
                        m.sample();
                    }
                    busy += t.elapsed();
                    cost.samples += 1;
                }
                cost.total_ms = busy.as_secs_f64() * 1e3;
                (monitors, cost)
            })
            .expect("spawning the monitor thread");
        Sampler {
            stop,
            handle,
            start,
        }
    }

    pub fn stop(self) -> ResourceReport {
        let window = self.start.elapsed();
        self.stop.store(true, Ordering::Release);
        self.handle.thread().unpark();
        let (mut monitors, mut cost) = self.handle.join().unwrap_or_default();
        let mut report = ResourceReport {
            window_s: window.as_secs_f64(),
            ..ResourceReport::default()
        };
        for m in &mut monitors {
            m.end(&mut report);
        }
        cost.share_of_window = if window.is_zero() {
            0.0
        } else {
            cost.total_ms / 1e3 / window.as_secs_f64()
        };
        report.monitor_cost = cost;
        report
    }
}
