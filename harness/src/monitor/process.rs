//! The process's own monitors: CPU time (-> average cores busy), peak and sampled resident
//! memory, context switches, and CPU package energy through RAPL when the powercap counters
//! are readable.

use std::time::Instant;

use crate::results::ResourceReport;

use super::sampler::Monitor;

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
