//! Resource monitors for a measured window: process CPU time (-> average cores busy), peak
//! and sampled resident memory, context switches, and CPU package energy through RAPL when
//! the powercap counters are readable.
//!
//! Monitors run on one sampling thread. Each implements [`Monitor`]: `begin` and `end` run
//! on the measuring thread at the window's edges (exact deltas), `sample` on the sampling
//! thread at a fixed interval (peaks, counter wrap-around). A GPU monitor plugs in as one
//! more `Monitor`. The sampler times its own `sample` calls, so its cost is reported with
//! every window.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Everything the monitors learned about one window; a monitor fills its own part.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResourceReport {
    pub window_s: f64,
    /// User + system CPU time of the whole process over the window.
    pub cpu_user_s: Option<f64>,
    pub cpu_system_s: Option<f64>,
    /// CPU time / wall time: 1.0 is one core fully busy.
    pub avg_cores_busy: Option<f64>,
    /// Highest resident set size in the window (kernel's VmHWM, reset at the window start
    /// where the kernel allows it, else the process-lifetime peak).
    pub peak_rss_bytes: Option<u64>,
    pub peak_rss_scope: Option<String>,
    /// Highest resident set size seen by the sampler.
    pub sampled_max_rss_bytes: Option<u64>,
    pub voluntary_ctx_switches: Option<u64>,
    pub involuntary_ctx_switches: Option<u64>,
    pub energy_j: Option<f64>,
    pub avg_power_w: Option<f64>,
    /// Why energy is missing, when it is.
    pub energy_unavailable: Option<String>,
    pub monitor_cost: MonitorCost,
    /// GPU scenarios: what NVML saw of the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<crate::gpu_monitor::GpuReport>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MonitorCost {
    pub interval_ms: f64,
    pub samples: u64,
    /// Time spent inside `sample` calls, all monitors together.
    pub total_ms: f64,
    /// That time as a share of the window: the monitors' own load.
    pub share_of_window: f64,
}

pub trait Monitor: Send {
    fn name(&self) -> &'static str;
    /// At the window start, on the measuring thread.
    fn begin(&mut self);
    /// Periodically, on the sampling thread.
    fn sample(&mut self);
    /// At the window end, on the measuring thread.
    fn end(&mut self, report: &mut ResourceReport);
}

/// The CPU monitors every scenario gets.
pub fn default_monitors() -> Vec<Box<dyn Monitor>> {
    vec![
        Box::new(ProcessMonitor::default()),
        Box::new(RaplMonitor::find()),
    ]
}

/// The monitors of a scenario on `gpu` (None: CPU): the CPU ones, plus NVML's for a GPU.
pub fn monitors_for(gpu: Option<u32>) -> Vec<Box<dyn Monitor>> {
    let mut m = default_monitors();
    if let Some(i) = gpu {
        m.push(Box::new(crate::gpu_monitor::GpuMonitor::new(i)));
    }
    m
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

fn rusage() -> Option<libc::rusage> {
    // SAFETY: getrusage writes into the zeroed struct we own.
    unsafe {
        let mut r: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut r) == 0).then_some(r)
    }
}

fn tv_s(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// A `kB` field of /proc/self/status, in bytes.
pub fn status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Current resident set size, from /proc/self/statm (cheaper than status).
pub fn current_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as u64)
}

/// CPU time, context switches and memory of this process.
#[derive(Default)]
pub struct ProcessMonitor {
    start: Option<(Instant, libc::rusage)>,
    peak_reset: bool,
    sampled_max: u64,
}

impl Monitor for ProcessMonitor {
    fn name(&self) -> &'static str {
        "process"
    }

    fn begin(&mut self) {
        // Writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS.
        self.peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        self.sampled_max = current_rss_bytes().unwrap_or(0);
        self.start = rusage().map(|r| (Instant::now(), r));
    }

    fn sample(&mut self) {
        if let Some(rss) = current_rss_bytes() {
            self.sampled_max = self.sampled_max.max(rss);
        }
    }

    fn end(&mut self, report: &mut ResourceReport) {
        self.sample();
        report.sampled_max_rss_bytes = (self.sampled_max > 0).then_some(self.sampled_max);
        report.peak_rss_bytes = status_bytes("VmHWM:");
        report.peak_rss_scope = Some(
            if self.peak_reset {
                "window"
            } else {
                "process lifetime (clear_refs not writable)"
            }
            .into(),
        );
        if let (Some((t0, r0)), Some(r1)) = (self.start.take(), rusage()) {
            let wall = t0.elapsed().as_secs_f64();
            let user = tv_s(r1.ru_utime) - tv_s(r0.ru_utime);
            let sys = tv_s(r1.ru_stime) - tv_s(r0.ru_stime);
            report.cpu_user_s = Some(user);
            report.cpu_system_s = Some(sys);
            report.avg_cores_busy = (wall > 0.0).then(|| (user + sys) / wall);
            report.voluntary_ctx_switches = Some((r1.ru_nvcsw - r0.ru_nvcsw).max(0) as u64);
            report.involuntary_ctx_switches = Some((r1.ru_nivcsw - r0.ru_nivcsw).max(0) as u64);
        }
    }
}

/// CPU package energy from the powercap RAPL counters (`intel-rapl:N`, also on AMD).
pub struct RaplMonitor {
    domains: Vec<RaplDomain>,
    unavailable: Option<String>,
    start: Option<Instant>,
}

struct RaplDomain {
    path: std::path::PathBuf,
    max_range_uj: u64,
    last_uj: u64,
    total_uj: u64,
}

fn read_u64(p: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl RaplMonitor {
    /// The package domains under /sys/class/powercap, or the reason there are none.
    pub fn find() -> RaplMonitor {
        let root = std::path::Path::new("/sys/class/powercap");
        let mut domains = Vec::new();
        let mut reason = None;
        match std::fs::read_dir(root) {
            Err(e) => reason = Some(format!("{} not readable: {e}", root.display())),
            Ok(entries) => {
                for e in entries.flatten() {
                    let p = e.path();
                    let name = std::fs::read_to_string(p.join("name")).unwrap_or_default();
                    if !name.trim().starts_with("package") {
                        continue;
                    }
                    match read_u64(&p.join("energy_uj")) {
                        Some(_) => domains.push(RaplDomain {
                            max_range_uj: read_u64(&p.join("max_energy_range_uj"))
                                .unwrap_or(u64::MAX),
                            path: p.join("energy_uj"),
                            last_uj: 0,
                            total_uj: 0,
                        }),
                        None => {
                            reason = Some(format!(
                                "{} is not readable (RAPL counters need root on recent kernels)",
                                p.join("energy_uj").display()
                            ))
                        }
                    }
                }
                if domains.is_empty() && reason.is_none() {
                    reason = Some(format!("no RAPL package domain under {}", root.display()));
                }
            }
        }
        RaplMonitor {
            unavailable: domains.is_empty().then(|| reason.unwrap_or_default()),
            domains,
            start: None,
        }
    }

    fn accumulate(&mut self) {
        for d in &mut self.domains {
            if let Some(now) = read_u64(&d.path) {
                let delta = if now >= d.last_uj {
                    now - d.last_uj
                } else {
                    // The counter wrapped.
                    d.max_range_uj.saturating_sub(d.last_uj) + now
                };
                d.total_uj += delta;
                d.last_uj = now;
            }
        }
    }
}

impl Monitor for RaplMonitor {
    fn name(&self) -> &'static str {
        "rapl"
    }

    fn begin(&mut self) {
        for d in &mut self.domains {
            d.last_uj = read_u64(&d.path).unwrap_or(0);
            d.total_uj = 0;
        }
        self.start = Some(Instant::now());
    }

    fn sample(&mut self) {
        self.accumulate();
    }

    fn end(&mut self, report: &mut ResourceReport) {
        if let Some(reason) = &self.unavailable {
            report.energy_unavailable = Some(reason.clone());
            return;
        }
        self.accumulate();
        let j: f64 = self.domains.iter().map(|d| d.total_uj as f64 / 1e6).sum();
        report.energy_j = Some(j);
        if let Some(t) = self.start.take() {
            let s = t.elapsed().as_secs_f64();
            report.avg_power_w = (s > 0.0).then(|| j / s);
        }
    }
}
