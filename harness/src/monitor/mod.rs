//! Resource monitors for a measured window: process CPU time (-> average cores busy), peak
//! and sampled resident memory, context switches, and CPU package energy through RAPL when
//! the powercap counters are readable.
//!
//! Monitors run on one sampling thread. Each implements [`Monitor`]: `begin` and `end` run
//! on the measuring thread at the window's edges (exact deltas), `sample` on the sampling
//! thread at a fixed interval (peaks, counter wrap-around). A GPU monitor plugs in as one
//! more `Monitor`. The sampler times its own `sample` calls, so its cost is reported with
//! every window. A profiler started with a control FIFO (`perf record --control`, see
//! [`perf_control`]) is enabled at the window's start and disabled at its end.

mod counters;
mod gpu;
pub mod perf_control;
mod process;
mod sampler;
mod server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use counters::CountersMonitor;
pub use gpu::{gpu_inventory, GpuMonitor};
pub use process::{current_rss_bytes, status_bytes, ProcessMonitor, RaplMonitor};
pub use sampler::{Monitor, Sampler};

use crate::measure::WindowHooks;
use crate::results::ResourceReport;

/// The CPU monitors every scenario gets.
pub fn default_monitors() -> Vec<Box<dyn Monitor>> {
    vec![
        Box::new(ProcessMonitor::default()),
        Box::new(CountersMonitor::default()),
        Box::new(RaplMonitor::find()),
    ]
}

/// The monitors of a scenario on `gpu` (None: CPU): the CPU ones, plus NVML's for a GPU.
pub fn monitors_for(gpu: Option<u32>, server: Option<u32>) -> Vec<Box<dyn Monitor>> {
    let mut m = default_monitors();
    if let Some(i) = gpu {
        m.push(Box::new(GpuMonitor::new(i)));
    }
    if let Some(pid) = server {
        m.push(Box::new(server::ServerMonitor::new(pid)));
    }
    m
}

/// Resource monitors over exactly the measured window; also where Ctrl-C is noticed.
pub struct MonitorHooks<'a> {
    sampler: Option<Sampler>,
    pub report: Option<ResourceReport>,
    interrupt: &'a AtomicBool,
    /// The GPU the scenario runs on, for NVML's monitor.
    gpu: Option<u32>,
    /// The server process whose tree a served row watches.
    server: Option<u32>,
    /// When the window opened, on CLOCK_MONOTONIC.
    started: Option<f64>,
}

impl<'a> MonitorHooks<'a> {
    pub fn new(interrupt: &'a AtomicBool) -> MonitorHooks<'a> {
        MonitorHooks {
            sampler: None,
            report: None,
            interrupt,
            gpu: None,
            server: None,
            started: None,
        }
    }

    pub fn with_server(mut self, pid: Option<u32>) -> MonitorHooks<'a> {
        self.server = pid;
        self
    }

    pub fn with_gpu(mut self, gpu: Option<u32>) -> MonitorHooks<'a> {
        self.gpu = gpu;
        self
    }
}

/// How often the monitors sample.
const MONITOR_INTERVAL: Duration = Duration::from_millis(100);

impl WindowHooks for MonitorHooks<'_> {
    fn window_start(&mut self) {
        self.sampler = Some(Sampler::start(
            monitors_for(self.gpu, self.server),
            MONITOR_INTERVAL,
        ));
        // Last: a profiler under `--control` records from here.
        perf_control::window(true);
        self.started = Some(perf_control::monotonic_s());
    }

    fn window_end(&mut self) {
        let end = perf_control::monotonic_s();
        perf_control::window(false);
        self.report = self.sampler.take().map(Sampler::stop);
        if let (Some(r), Some(start)) = (self.report.as_mut(), self.started.take()) {
            r.window_monotonic_s = Some([start, end]);
        }
    }

    fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::Relaxed)
    }
}
