//! What the resource monitors saw over a measured window (CPU, memory, energy, GPU), and the
//! GPUs of the machine. Data only; `monitor` fills it.

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
    /// Page faults of the process in the window (getrusage).
    #[serde(default)]
    pub minor_page_faults: Option<u64>,
    #[serde(default)]
    pub major_page_faults: Option<u64>,
    /// Moves of the process's threads between CPUs (each thread's `se.nr_migrations`).
    #[serde(default)]
    pub cpu_migrations: Option<u64>,
    /// Hardware counters of every thread of the process, user space only, where the
    /// machine exposes them; else `hw_counters_unavailable` says why.
    #[serde(default)]
    pub cycles: Option<u64>,
    #[serde(default)]
    pub instructions: Option<u64>,
    #[serde(default)]
    pub cache_misses: Option<u64>,
    /// Instructions per cycle.
    #[serde(default)]
    pub ipc: Option<f64>,
    #[serde(default)]
    pub hw_counters_unavailable: Option<String>,
    /// The window's edges on CLOCK_MONOTONIC, in seconds (what `perf record -k
    /// CLOCK_MONOTONIC` stamps its samples with): `harness profile` assigns samples by them.
    #[serde(default)]
    pub window_monotonic_s: Option<[f64; 2]>,
    pub energy_j: Option<f64>,
    pub avg_power_w: Option<f64>,
    /// Why energy is missing, when it is.
    pub energy_unavailable: Option<String>,
    pub monitor_cost: MonitorCost,
    /// GPU scenarios: what NVML saw of the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuReport>,
    /// Served rows with a known server process (`--server-pid`, `compare --served`): its
    /// process tree over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerResources>,
}

/// A server's process tree (the root and every descendant) over a measured window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerResources {
    pub pid: u32,
    /// Processes in the tree (the most seen at once).
    pub processes: u32,
    /// User + system CPU seconds of the tree in the window.
    pub cpu_s: f64,
    /// That over the wall time: 1.0 is one core fully busy.
    pub cores_busy: f64,
    /// Highest resident memory of the tree, summed over its processes, sampled every 100 ms.
    pub peak_rss_bytes: u64,
    /// The root was still running at the window's end.
    pub alive: bool,
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

/// What NVML saw of one GPU over a measured window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GpuReport {
    pub index: u32,
    pub name: Option<String>,
    /// Mean of the sampled utilization (percent of time a kernel ran).
    pub utilization_pct: Option<f64>,
    /// Highest device memory in use (all processes).
    pub memory_used_peak_bytes: Option<u64>,
    pub power_avg_w: Option<f64>,
    /// From the total-energy counter at the window's edges, else mean power x window.
    pub energy_j: Option<f64>,
    pub energy_source: Option<String>,
    pub samples: u64,
    /// Why figures are missing, when they are.
    pub unavailable: Option<String>,
}

/// A GPU as NVML describes it, for the environment record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    pub driver: String,
    pub cuda_driver: String,
    pub memory_total_bytes: Option<u64>,
    pub max_sm_clock_mhz: Option<u32>,
    pub max_memory_clock_mhz: Option<u32>,
    pub power_limit_w: Option<f64>,
}
