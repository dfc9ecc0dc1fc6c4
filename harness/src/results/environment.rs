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
    /// The repository checkout the run started from (the executable's, else the working
    /// folder's), read when the run starts: `git_commit` and `git_dirty` above are the
    /// build's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_git: Option<GitState>,
    /// The Python the exporter and the Python baselines use (`$VIRTUAL_ENV`'s, else
    /// `python3`): its version and the versions of the packages involved that it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonInfo>,
    /// CUDA's libraries found (runtime, cuBLAS, cuDNN, TensorRT) with the versions their
    /// file names carry, or where none was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_libraries: Option<String>,
    /// The container the run is in (docker, podman, Kubernetes), with its image where it
    /// says; absent outside one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// GPU timing tools as the run found them: CUDA events (device time per inference) and
    /// NVTX (ranges for Nsight Systems), each `available`/`on` or why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_timing: Option<GpuTiming>,
    /// `--cpu-idle` as applied: whether idle CPUs polled for the run (the CPU latency QoS
    /// held at 0) or the machine's idle policy ruled, and which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_idle: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuTiming {
    pub cuda_events: String,
    pub nvtx: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GitState {
    pub dir: String,
    pub commit: String,
    /// Tracked files changed since the commit.
    pub dirty: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PythonInfo {
    pub executable: String,
    pub version: String,
    /// Package -> version, for those installed.
    pub packages: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeVersion {
    pub runtime: String,
    pub version: Option<String>,
    pub detail: String,
}
