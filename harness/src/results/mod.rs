//! The results schema (versioned): every type a results folder holds, for in-process and
//! network runs alike. A leaf: it imports nothing of the harness above it, only serde and the
//! runtimes' tensor specs. Measuring code fills these types; `present` formats them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use runtimes::TensorSpec;
use serde::{Deserialize, Serialize};

mod environment;
mod id;
mod measurement;
mod parity;
mod resources;
mod served;

pub use environment::{Environment, GitState, GpuTiming, PythonInfo, RuntimeVersion};
pub use id::ScenarioId;
pub use measurement::{
    Arrivals, DeviceTiming, LatencyStats, Measurement, OpenLoopStats, StageStats, StopReason,
};
pub use parity::{OutputDiff, Parity, ParityStatus, Tolerance};
pub use resources::{GpuInfo, GpuReport, MonitorCost, ResourceReport, ServerResources};
pub use served::{
    Breakdown, CapacitySearch, InterleavedTax, ReplayShape, ReplayStats, ServedInfo, Slo,
    StreamingStats,
};

pub const SCHEMA: &str = "harness-results";
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub schema: String,
    pub schema_version: u32,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub environment: Environment,
    pub model: ModelSummary,
    pub settings: Settings,
    pub harness_overhead: Option<Overhead>,
    /// The run was ended early (Ctrl-C); the scenarios listed are all that finished.
    #[serde(default)]
    pub interrupted: bool,
    /// The results folders a `harness report` merged into this one (empty for a run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    pub runtimes: Vec<RuntimeStatus>,
    pub scenarios: Vec<ScenarioResult>,
    /// `harness load --find-max-rate`: each search's capacity, probes and verdict (the probes
    /// are also rows in `scenarios`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity: Vec<CapacitySearch>,
    /// `compare --served`: the serving tax at concurrency 1 measured in interleaved blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interleaved_tax: Vec<InterleavedTax>,
    /// When `compare --resume` continued this run (UTC), each time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed_at: Vec<String>,
    /// Merged from runs on different machines (`harness report`): each machine's environment
    /// under the label its rows carry in `machine`. Empty when every run shared one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<Machine>,
}

/// One machine of a merge of runs from several, and its environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub label: String,
    /// The results folders measured there.
    pub runs: Vec<String>,
    pub environment: Environment,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSummary {
    pub path: PathBuf,
    pub name: String,
    pub onnx: Option<PathBuf>,
    pub safetensors: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub spec_source: String,
    pub onnx_error: Option<String>,
    pub model_type: Option<String>,
    pub vocab_size: Option<usize>,
    pub max_positions: Option<usize>,
    /// The export's manifest (`models/export.py`): the files' sha256, opset, the exporter's
    /// package versions and its check against PyTorch; its reference tensors left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub mode: String,
    pub seed: u64,
    pub warmup_iterations: u64,
    pub warmup_time_s: f64,
    /// The longest warm-up by detection (`--warmup-max`); absent before detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_max_s: Option<f64>,
    pub min_time_s: f64,
    pub min_samples: u64,
    pub max_time_s: f64,
    /// The stopping target, the median's 95% CI half-width in percent (`--target-ci`); absent
    /// when off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ci_pct: Option<f64>,
    /// The run's time budget (`--budget`), when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_s: Option<f64>,
    pub tolerance: Tolerance,
    pub reference_preference: String,
    pub pinning: String,
    #[serde(default)]
    pub isolation: String,
    pub percentile_definition: String,
    /// `compare --shard K/N`: the part of the sweep this run measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

/// The harness's own cost per iteration, measured with the null runtime.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overhead {
    pub samples: u64,
    pub p50_ns: f64,
    pub mean_ns: f64,
    pub p99_ns: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeStatus {
    pub name: String,
    pub ready: bool,
    pub version: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioStatus {
    /// Measured.
    Ok,
    /// Measured, but inferences failed along the way (see failures).
    Failed,
    /// Could not be measured at all (see error).
    Error,
    /// Cannot run here (unsupported, variant missing, shape beyond the model): see error.
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub id: String,
    pub runtime: String,
    pub device: String,
    pub variant: String,
    pub batch: usize,
    pub seq: Option<usize>,
    pub shapes: BTreeMap<String, Vec<usize>>,
    pub threads: usize,
    pub concurrency: usize,
    pub mode: String,
    pub status: ScenarioStatus,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    pub applied: BTreeMap<String, String>,
    pub load_ms: Option<f64>,
    pub prepare_ms: Option<f64>,
    pub measurement: Option<Measurement>,
    pub throughput_per_s: Option<f64>,
    /// Open loop: the target arrival rate (requests/s).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Open loop: schedule kept, late sends, uncorrected latencies.
    #[serde(default)]
    pub open_loop: Option<OpenLoopStats>,
    /// Resident memory after the model was loaded, and what loading added to it.
    pub rss_after_load_bytes: Option<u64>,
    pub load_rss_delta_bytes: Option<i64>,
    /// CPU, memory, context switches and energy over the measured window.
    pub resources: Option<ResourceReport>,
    pub parity: Parity,
    /// How many runs' samples this row holds, when merged by `harness report` (else 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub merged_runs: usize,
    /// Network rows (`harness load`, `compare --served`): protocol, target, the load
    /// generator's own CPU use, the server's metrics over the window, streaming metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<ServedInfo>,
    /// A CPU profile of the measured window (`harness profile`, after `profiles/perf.sh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileSummary>,
    /// In a merge of runs from several machines: the label (in `Results.machines`) of the
    /// machine this row was measured on; "a + b" when pooled from several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
}

/// What a profile of one measured window holds: its samples, the share of CPU time per group
/// of leaf frames (matrix kernels, threading, allocation, ...), the top frames by self time,
/// and where its folded stacks and flame graph are (relative to the results folder).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProfileSummary {
    pub samples: u64,
    /// CPU time the samples stand for.
    pub cpu_ms: f64,
    /// Threads seen in the samples.
    pub threads: usize,
    /// (group, share of the window's samples), in `profile::GROUPS` order.
    pub groups: Vec<(String, f64)>,
    pub top: Vec<ProfileFrame>,
    pub folded: Option<String>,
    pub flamegraph: Option<String>,
    /// Why something is missing (no flame graph tool, ...).
    pub note: Option<String>,
}

/// One frame of a profile, by self time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProfileFrame {
    pub frame: String,
    pub group: String,
    pub share: f64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ScenarioResult {
    /// The same runtime, device, batch, sequence, threads, load and input shapes: a twin
    /// that differs at most by variant (fp16 against fp32, served against in-process).
    pub fn same_settings_but_variant(&self, other: &ScenarioResult) -> bool {
        self.runtime == other.runtime
            && self.device == other.device
            && self.batch == other.batch
            && self.seq == other.seq
            && self.threads == other.threads
            && self.concurrency == other.concurrency
            && self.mode == other.mode
            && self.rate == other.rate
            && self.shapes == other.shapes
    }

    pub fn parity_label(&self) -> &'static str {
        match self.status {
            ScenarioStatus::Error => "ERROR",
            ScenarioStatus::Skipped => "SKIP",
            _ => self.parity.status.label(),
        }
    }

    /// Whether this row counts as a problem for the exit status.
    pub fn is_problem(&self) -> bool {
        matches!(self.status, ScenarioStatus::Error | ScenarioStatus::Failed)
            || self.parity.status == ParityStatus::Fail
    }
}

/// A results file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why} (pass a results folder written by `harness compare` or `harness load`, or its results.json)")]
pub struct ReadError {
    pub path: PathBuf,
    pub why: String,
}

impl Results {
    /// Rows were planned and every one was skipped: nothing could be measured here.
    pub fn nothing_measured(&self) -> bool {
        !self.scenarios.is_empty()
            && self
                .scenarios
                .iter()
                .all(|s| s.status == ScenarioStatus::Skipped)
    }

    /// The runtimes every row of which was skipped (they cannot run this model here), in
    /// the order they were measured.
    pub fn runtimes_skipped(&self) -> Vec<String> {
        let mut names: Vec<&str> = Vec::new();
        for s in &self.scenarios {
            if !names.contains(&s.runtime.as_str()) {
                names.push(&s.runtime);
            }
        }
        names
            .into_iter()
            .filter(|n| {
                self.scenarios
                    .iter()
                    .filter(|s| s.runtime == *n)
                    .all(|s| s.status == ScenarioStatus::Skipped)
            })
            .map(str::to_string)
            .collect()
    }

    /// Reads a results folder (its `results.json`) or a `results.json` file.
    pub fn read(path: &Path) -> Result<Results, ReadError> {
        let file = if path.is_dir() {
            path.join("results.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| ReadError {
            path: file.clone(),
            why: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| ReadError {
            path: file,
            why: format!("not a harness results file: {e}"),
        })
    }
}
