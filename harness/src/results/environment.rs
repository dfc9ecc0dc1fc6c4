//! The environment recorded with every result. Data only; `environment` captures it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    pub hostname: String,
    pub cpu_model: String,
    pub logical_cpus: usize,
    /// Vector/matrix extensions the runtimes may use.
    pub cpu_flags: Vec<String>,
    pub memory_total_bytes: Option<u64>,
    pub os: String,
    pub kernel: String,
    pub cpu_governor: String,
    /// GPUs with driver and CUDA versions (nvidia-smi), or why none is listed.
    #[serde(default)]
    pub gpus: String,
    /// The GPUs as NVML reports them (name, driver, CUDA, memory, clocks, power limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvml_gpus: Option<Vec<super::resources::GpuInfo>>,
    /// Why NVML reported nothing, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvml_unavailable: Option<String>,
    pub rustc: String,
    pub harness_version: String,
    pub git_commit: String,
    pub git_dirty: String,
    pub command_line: Vec<String>,
    pub runtime_versions: Vec<RuntimeVersion>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeVersion {
    pub runtime: String,
    pub version: Option<String>,
    pub detail: String,
}
