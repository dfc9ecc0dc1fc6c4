//! The GPU side of a scenario through NVML: utilization, memory and power sampled during the
//! measured window, and the board's energy counter read at its edges (energy per inference).
//! Also the GPU part of the environment record. Without NVML (no driver, or a build without
//! the `nvml` feature) every figure is absent and the reason is recorded; nothing fails.

use super::sampler::Monitor;
use crate::results::{GpuInfo, GpuReport, ResourceReport};

#[cfg_attr(not(feature = "nvml"), allow(dead_code))]
pub struct GpuMonitor {
    index: u32,
    #[cfg(feature = "nvml")]
    nvml: Option<nvml_wrapper::Nvml>,
    report: GpuReport,
    util_sum: f64,
    power_sum_mw: f64,
    energy_start_mj: Option<u64>,
    start: Option<std::time::Instant>,
}

/// NVML, or why not.
#[cfg(feature = "nvml")]
fn nvml() -> Result<nvml_wrapper::Nvml, String> {
    nvml_wrapper::Nvml::init()
        .map_err(|e| format!("no NVML: {e} (libnvidia-ml.so.1 comes with the NVIDIA driver)"))
}

impl GpuMonitor {
    pub fn new(index: u32) -> GpuMonitor {
        let mut report = GpuReport {
            index,
            ..GpuReport::default()
        };
        #[cfg(feature = "nvml")]
        let nvml = match nvml() {
            Ok(n) => match n.device_by_index(index).and_then(|d| d.name()) {
                Ok(name) => {
                    report.name = Some(name);
                    Some(n)
                }
                Err(e) => {
                    report.unavailable = Some(format!("NVML has no GPU {index}: {e}"));
                    None
                }
            },
            Err(e) => {
                report.unavailable = Some(e);
                None
            }
        };
        #[cfg(not(feature = "nvml"))]
        {
            report.unavailable =
                Some("no NVML: this build has no NVML support (feature nvml)".into());
        }
        GpuMonitor {
            index,
            #[cfg(feature = "nvml")]
            nvml,
            report,
            util_sum: 0.0,
            power_sum_mw: 0.0,
            energy_start_mj: None,
            start: None,
        }
    }

    #[cfg(feature = "nvml")]
    fn with_device<T>(&self, f: impl FnOnce(&nvml_wrapper::Device) -> Option<T>) -> Option<T> {
        let n = self.nvml.as_ref()?;
        let d = n.device_by_index(self.index).ok()?;
        f(&d)
    }
}

impl Monitor for GpuMonitor {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn begin(&mut self) {
        self.start = Some(std::time::Instant::now());
        #[cfg(feature = "nvml")]
        {
            self.energy_start_mj = self.with_device(|d| d.total_energy_consumption().ok());
        }
    }

    fn sample(&mut self) {
        #[cfg(feature = "nvml")]
        {
            let got = self.with_device(|d| {
                Some((
                    d.utilization_rates().ok().map(|u| u.gpu),
                    d.memory_info().ok().map(|m| m.used),
                    d.power_usage().ok(),
                ))
            });
            if let Some((util, mem, power)) = got {
                self.report.samples += 1;
                if let Some(u) = util {
                    self.util_sum += u as f64;
                }
                if let Some(m) = mem {
                    let peak = self.report.memory_used_peak_bytes.get_or_insert(0);
                    *peak = (*peak).max(m);
                }
                if let Some(p) = power {
                    self.power_sum_mw += p as f64;
                }
            }
        }
    }

    fn end(&mut self, report: &mut ResourceReport) {
        let window = self.start.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let mut r = self.report.clone();
        if r.unavailable.is_none() && r.samples > 0 {
            r.utilization_pct = Some(self.util_sum / r.samples as f64);
            if self.power_sum_mw > 0.0 {
                r.power_avg_w = Some(self.power_sum_mw / r.samples as f64 / 1e3);
            }
        }
        #[cfg(feature = "nvml")]
        {
            let end = self.with_device(|d| d.total_energy_consumption().ok());
            if let (Some(a), Some(b)) = (self.energy_start_mj, end) {
                r.energy_j = Some(b.saturating_sub(a) as f64 / 1e3);
                r.energy_source = Some("NVML total energy counter".into());
            }
        }
        if r.energy_j.is_none() {
            if let Some(p) = r.power_avg_w {
                r.energy_j = Some(p * window);
                r.energy_source = Some("mean sampled power x window".into());
            }
        }
        if r.unavailable.is_none() && r.samples == 0 {
            r.unavailable = Some("the window ended before the first sample".into());
        }
        report.gpu = Some(r);
    }
}

/// Every GPU NVML sees, or why none is listed.
pub fn gpu_inventory() -> Result<Vec<GpuInfo>, String> {
    #[cfg(feature = "nvml")]
    {
        use nvml_wrapper::enum_wrappers::device::Clock;
        let n = nvml()?;
        let driver = n.sys_driver_version().unwrap_or_default();
        let cuda = n
            .sys_cuda_driver_version()
            .map(|v| {
                format!(
                    "{}.{}",
                    nvml_wrapper::cuda_driver_version_major(v),
                    nvml_wrapper::cuda_driver_version_minor(v)
                )
            })
            .unwrap_or_default();
        let count = n
            .device_count()
            .map_err(|e| format!("NVML device count: {e}"))?;
        Ok((0..count)
            .filter_map(|i| {
                let d = n.device_by_index(i).ok()?;
                Some(GpuInfo {
                    index: i,
                    name: d.name().unwrap_or_default(),
                    driver: driver.clone(),
                    cuda_driver: cuda.clone(),
                    memory_total_bytes: d.memory_info().ok().map(|m| m.total),
                    max_sm_clock_mhz: d.max_clock_info(Clock::SM).ok(),
                    max_memory_clock_mhz: d.max_clock_info(Clock::Memory).ok(),
                    power_limit_w: d.enforced_power_limit().ok().map(|mw| mw as f64 / 1e3),
                })
            })
            .collect())
    }
    #[cfg(not(feature = "nvml"))]
    {
        Err("no NVML: this build has no NVML support (feature nvml)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without an NVIDIA driver the monitor runs its window and says why it has
    /// no figures; with one it reports them.
    #[test]
    fn the_gpu_monitor_never_fails_and_explains_missing_figures() {
        let s = crate::monitor::Sampler::start(
            vec![Box::new(GpuMonitor::new(0))],
            std::time::Duration::from_millis(10),
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        let r = s.stop();
        let g = r.gpu.expect("a GPU section");
        match gpu_inventory() {
            Err(why) => {
                assert!(why.starts_with("no NVML"), "{why}");
                assert!(
                    g.unavailable.as_deref().unwrap().starts_with("no NVML"),
                    "{g:?}"
                );
                assert_eq!(g.utilization_pct, None);
                assert_eq!(g.energy_j, None);
            }
            Ok(gpus) if !gpus.is_empty() => {
                assert!(g.unavailable.is_none(), "{g:?}");
                assert!(g.samples > 0);
                assert!(g.utilization_pct.is_some());
            }
            Ok(_) => assert!(g.unavailable.is_some()),
        }
    }
}
