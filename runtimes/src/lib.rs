//! One `Runtime` trait and one module per inference runtime.
//!
//! A runtime answers four questions, each a separate call so that the timed region holds
//! inference only: can it run here ([`Runtime::check`]), load a model ([`Runtime::load`]),
//! prepare one set of inputs ([`Loaded::prepare`]: shape-specific planning, tensor
//! conversion), and run ([`Loaded::run`]). [`Loaded::infer`] runs once more and reads the
//! outputs back for the parity check; it is never timed.

pub mod bare;
pub mod candle_graph;
pub mod candle_rt;
pub mod cuda_events;
pub mod gpu;
pub mod model;
pub mod null;
pub mod ort_rt;
pub mod tensor;
pub mod tract_rt;

use std::path::PathBuf;

pub use model::{Dim, ModelFiles, ModelInfo, TensorSpec};
pub use tensor::{DType, HostTensor, TensorData};

/// Versions of the runtime crates this binary was built with (read from Cargo.lock).
pub const ORT_CRATE_VERSION: &str = env!("HARNESS_DEP_ORT");
pub const TRACT_VERSION: &str = env!("HARNESS_DEP_TRACT_ONNX");
pub const CANDLE_VERSION: &str = env!("HARNESS_DEP_CANDLE_CORE");

/// Everything that can go wrong inside a runtime. Each message names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    LibraryNotFound(String),
    #[error("could not load the ONNX Runtime library {path}: {message}")]
    LibraryLoad { path: PathBuf, message: String },
    #[error("unsupported by {runtime}: {why}")]
    Unsupported { runtime: &'static str, why: String },
    #[error("{runtime} needs {what}, which is missing: {path} ({fix})")]
    MissingFile {
        runtime: &'static str,
        what: &'static str,
        path: PathBuf,
        fix: &'static str,
    },
    #[error("{runtime} could not load {path}: {message}")]
    Load {
        runtime: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{runtime}: bad input: {message}")]
    Input {
        runtime: &'static str,
        message: String,
    },
    #[error("{runtime}: inference failed: {message}")]
    Inference {
        runtime: &'static str,
        message: String,
    },
    #[error("{0}")]
    Model(#[from] model::ModelError),
    #[error("{runtime}: variant {variant} is not available: {why}")]
    VariantMissing {
        runtime: &'static str,
        variant: &'static str,
        why: String,
    },
}

impl RuntimeError {
    pub fn input(runtime: &'static str, message: impl Into<String>) -> RuntimeError {
        RuntimeError::Input {
            runtime,
            message: message.into(),
        }
    }

    pub fn inference(runtime: &'static str, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Inference {
            runtime,
            message: e.to_string(),
        }
    }

    /// A short stable label for counting failures by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            RuntimeError::LibraryNotFound(_) => "library-not-found",
            RuntimeError::LibraryLoad { .. } => "library-load",
            RuntimeError::Unsupported { .. } => "unsupported",
            RuntimeError::MissingFile { .. } => "missing-file",
            RuntimeError::Load { .. } => "load",
            RuntimeError::Input { .. } => "input",
            RuntimeError::Inference { .. } => "inference",
            RuntimeError::Model(_) => "model",
            RuntimeError::VariantMissing { .. } => "variant-missing",
        }
    }

    /// A scenario this error prevents is skipped (it cannot run here), not failed.
    pub fn is_skip(&self) -> bool {
        matches!(
            self,
            RuntimeError::Unsupported { .. } | RuntimeError::VariantMissing { .. }
        )
    }
}

/// Whether a runtime can run on this machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Availability {
    Ready { version: String, detail: String },
    Unavailable { reason: String },
}

/// Where a model runs: the CPU, or an NVIDIA GPU (by index) through CUDA, or through
/// TensorRT (ONNX Runtime's TensorRT execution provider, CUDA for what it leaves over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(u32),
    TensorRt(u32),
}

impl Device {
    /// The device kind: `cpu`, `cuda` or `tensorrt`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda(_) => "cuda",
            Device::TensorRt(_) => "tensorrt",
        }
    }

    /// `cpu`, `cuda:0`, `tensorrt:1`: the label rows carry.
    pub fn label(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(i) => format!("cuda:{i}"),
            Device::TensorRt(i) => format!("tensorrt:{i}"),
        }
    }

    /// `cpu`, `cuda`, `cuda:1`, `tensorrt`, `tensorrt:0`.
    pub fn parse(s: &str) -> Option<Device> {
        let (kind, id) = match s.trim().split_once(':') {
            Some((k, i)) => (k, i.parse::<u32>().ok()?),
            None => (s.trim(), 0),
        };
        match kind {
            "cpu" if !s.contains(':') => Some(Device::Cpu),
            "cuda" | "gpu" => Some(Device::Cuda(id)),
            "tensorrt" | "trt" => Some(Device::TensorRt(id)),
            _ => None,
        }
    }

    pub fn gpu_index(&self) -> Option<u32> {
        match self {
            Device::Cpu => None,
            Device::Cuda(i) | Device::TensorRt(i) => Some(*i),
        }
    }
}

/// GPU settings fixed at load time.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct GpuOptions {
    /// Inputs and outputs stay on the device during timing (ONNX Runtime IO binding; candle
    /// keeps its tensors there anyway); false: every timed inference copies its inputs from
    /// the host and its outputs back (end to end).
    pub copies_timed: bool,
    /// TensorRT: build fp16 engines.
    pub trt_fp16: bool,
    /// TensorRT: engine cache folder (engines are built once per shape and reused).
    pub trt_cache: Option<PathBuf>,
    /// TensorRT: builder workspace in bytes.
    pub trt_workspace: Option<usize>,
}

/// A precision variant of the model.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The exported float32 graph; the accuracy reference.
    Fp32,
    /// float16 weights and compute (ONNX: model.fp16.onnx; candle: f16).
    Fp16,
    /// bfloat16 (candle).
    Bf16,
    /// int8 dynamic quantization (ONNX: model.int8.onnx).
    Int8,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::Fp32, Variant::Fp16, Variant::Bf16, Variant::Int8];

    pub fn as_str(&self) -> &'static str {
        match self {
            Variant::Fp32 => "fp32",
            Variant::Fp16 => "fp16",
            Variant::Bf16 => "bf16",
            Variant::Int8 => "int8",
        }
    }

    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Options that belong to particular runtimes, carried as one unit from the command line to
/// every place a model is loaded (in-process, worker processes, the server). A new runtime
/// option is a field here, its flag, and its use in the runtime's module.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RuntimeOptions {
    /// ONNX Runtime: the shared library (`--ort-lib`); discovery otherwise.
    pub ort_lib: Option<PathBuf>,
    /// ONNX Runtime: write its Chrome-trace profile of each load into this folder
    /// (`--ort-profile`), named by variant and threads.
    pub ort_profile_dir: Option<PathBuf>,
    /// GPU settings (ONNX Runtime's IO binding and TensorRT; candle on CUDA).
    #[serde(default)]
    pub gpu: GpuOptions,
    /// ONNX Runtime: whether its intra-op threads spin for work after a run
    /// (`session.intra_op.allow_spinning`); None leaves ONNX Runtime's default (they spin).
    /// A server sharing its cores with I/O threads may do better without.
    #[serde(default)]
    pub ort_spinning: Option<bool>,
}

/// Options fixed at load time.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Worker threads for the runtime's compute (ORT intra-op threads, tract/candle rayon pool).
    pub threads: usize,
    pub device: Device,
    pub variant: Variant,
    /// CPUs for the runtime's own worker threads, round robin (None: not pinned). ONNX
    /// Runtime's calling thread is the harness's measuring thread and is pinned by it.
    pub cpus: Option<Vec<usize>>,
    /// What particular runtimes take (ONNX Runtime's library and profiler, GPU settings).
    pub runtime: RuntimeOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: 1,
            device: Device::Cpu,
            variant: Variant::Fp32,
            cpus: None,
            runtime: RuntimeOptions::default(),
        }
    }
}

/// What the device spent on one inference, measured with CUDA events on the runtime's
/// stream: the copies when the inference makes them (`--gpu-copies`: inputs from the host,
/// outputs back), and the compute between them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceTime {
    pub h2d_ns: Option<u64>,
    pub compute_ns: u64,
    pub d2h_ns: Option<u64>,
}

impl DeviceTime {
    /// The device's whole time: the stages add up to it.
    pub fn total_ns(&self) -> u64 {
        self.h2d_ns.unwrap_or(0) + self.compute_ns + self.d2h_ns.unwrap_or(0)
    }

    /// From the gaps between consecutive event marks: one gap is compute alone, three are
    /// (copy in, compute, copy out), as TensorRT's trtexec splits them.
    pub fn from_stages(stages: &[u64]) -> Result<DeviceTime, String> {
        match *stages {
            [compute] => Ok(DeviceTime {
                h2d_ns: None,
                compute_ns: compute,
                d2h_ns: None,
            }),
            [h2d, compute, d2h] => Ok(DeviceTime {
                h2d_ns: Some(h2d),
                compute_ns: compute,
                d2h_ns: Some(d2h),
            }),
            _ => Err(format!(
                "{} timed stages: expected 1 (compute) or 3 (copy in, compute, copy out)",
                stages.len()
            )),
        }
    }
}

/// A model loaded into one runtime.
pub trait Loaded: Send {
    /// The settings the runtime actually applied (threads, pools, optimisation level).
    fn applied(&self) -> Vec<(String, String)>;
    /// Shape-specific preparation outside the timed region (plans, tensor conversion).
    fn prepare(&mut self, inputs: &[HostTensor]) -> Result<(), RuntimeError>;
    /// One inference on the prepared inputs; the only call inside the timed region.
    fn run(&mut self) -> Result<(), RuntimeError>;
    /// One inference whose outputs are read back to the host, for parity.
    fn infer(&mut self) -> Result<Vec<HostTensor>, RuntimeError>;
    /// A second handle on the same loaded weights for another worker thread, with its own
    /// prepared inputs and compute threads; None when the runtime cannot share (then each
    /// worker loads its own instance).
    fn share(&self) -> Option<Result<Box<dyn Loaded>, RuntimeError>> {
        None
    }
    /// Whether each `run` is also timed on the device (CUDA events): None where that does not
    /// apply (the CPU), else Ok or why it cannot be (then rows carry host timing only).
    fn device_timing(&self) -> Option<Result<(), String>> {
        None
    }
    /// The device time of the last successful `run`, when device timing is on.
    fn last_device_time(&self) -> Option<DeviceTime> {
        None
    }
}

/// What a runtime is, so that callers ask instead of checking names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// It computes real outputs (false for the null runtime, which times the harness's own
    /// loop): only those are compared for parity.
    pub computes: bool,
    /// The preferred parity reference when it runs (ONNX Runtime, CPU, fp32): measured first.
    pub reference: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            computes: true,
            reference: false,
        }
    }
}

pub trait Runtime: Send + Sync {
    fn name(&self) -> &'static str;
    /// One line for `--help` and `harness list`.
    fn about(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    fn check(&self, opts: &LoadOptions) -> Availability;
    fn load(
        &self,
        model: &ModelFiles,
        info: &ModelInfo,
        opts: &LoadOptions,
    ) -> Result<Box<dyn Loaded>, RuntimeError>;
}

/// The registry: every runtime compiled into this build, in the order they are measured (the
/// parity reference, ONNX Runtime on CPU, first). A new runtime is one module and one line
/// here; the CLI takes its names and help from this list.
pub fn all() -> Vec<Box<dyn Runtime>> {
    vec![
        Box::new(ort_rt::OrtRuntime),
        Box::new(tract_rt::TractRuntime),
        Box::new(candle_graph::CandleGraphRuntime),
        Box::new(candle_rt::CandleRuntime),
        Box::new(null::NullRuntime),
    ]
}

pub fn by_name(name: &str) -> Option<Box<dyn Runtime>> {
    all().into_iter().find(|r| r.name() == name)
}

/// The registered runtimes' names, in order.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|r| r.name()).collect()
}

/// Restricts the calling thread to `cpus`; false when the OS refuses (or off Linux).
fn set_affinity(cpus: impl IntoIterator<Item = usize>) -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: the set is a zeroed cpu_set_t we own; indices beyond its size are skipped.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let mut any = false;
        for c in cpus.into_iter().filter(|&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
            any = true;
        }
        any && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpus.into_iter();
        false
    }
}

/// Pins the calling thread to one CPU; false when the OS refuses.
pub fn pin_current_thread(cpu: usize) -> bool {
    set_affinity([cpu])
}

/// Lets the calling thread run on every online CPU again.
pub fn unpin_current_thread() -> bool {
    set_affinity(0..online_cpus())
}

/// CPUs online in the machine. Not `available_parallelism`: that reads the calling thread's
/// affinity, which is a single CPU once a thread is pinned.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// A panic's message (`panic!` with a literal or a formatted string), for a row or an error.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs `f`, a panic inside it (a runtime's assert on a malformed graph) caught and handed
/// back as its message.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}

/// Physical cores (distinct package and core ids of the online CPUs): what candle uses for
/// its matrix products when `RAYON_NUM_THREADS` is not set. None where sysfs does not say.
pub fn physical_cores() -> Option<usize> {
    let mut cores = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("/sys/devices/system/cpu").ok()?.flatten() {
        let name = entry.file_name();
        let name = name.to_str().unwrap_or("");
        if name
            .strip_prefix("cpu")
            .is_none_or(|n| n.parse::<usize>().is_err())
        {
            continue;
        }
        let read = |f: &str| {
            std::fs::read_to_string(entry.path().join("topology").join(f))
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
        };
        if let (Some(package), Some(core)) = (read("physical_package_id"), read("core_id")) {
            cores.insert((package, core));
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

/// A rayon pool of exactly `threads` workers, or None for one thread (run inline on the
/// caller, no hand-off). With `cpus`, worker i is pinned to `cpus[i % len]` as it starts.
pub(crate) fn rayon_pool(
    runtime: &'static str,
    threads: usize,
    cpus: Option<&[usize]>,
) -> Result<Option<std::sync::Arc<rayon::ThreadPool>>, RuntimeError> {
    if threads <= 1 {
        return Ok(None);
    }
    let cpus: Option<Vec<usize>> = cpus.filter(|c| !c.is_empty()).map(<[usize]>::to_vec);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("{runtime}-worker-{i}"))
        .start_handler(move |i| {
            if let Some(c) = &cpus {
                pin_current_thread(c[i % c.len()]);
            }
        })
        .build()
        .map(|p| Some(std::sync::Arc::new(p)))
        .map_err(|e| RuntimeError::Load {
            runtime,
            path: PathBuf::new(),
            message: format!("could not start a pool of {threads} threads: {e}"),
        })
}

/// The ONNX file a runtime loads for `variant`: a missing fp32 graph is a missing file, a
/// missing variant file skips the scenario.
pub(crate) fn onnx_file(
    runtime: &'static str,
    model: &ModelFiles,
    variant: Variant,
) -> Result<PathBuf, RuntimeError> {
    if model.onnx.is_none() {
        return Err(RuntimeError::MissingFile {
            runtime,
            what: "model.onnx",
            path: model.folder.join("model.onnx"),
            fix: "export the model with models/export.py",
        });
    }
    model
        .onnx_for(variant)
        .cloned()
        .map_err(|why| RuntimeError::VariantMissing {
            runtime,
            variant: variant.as_str(),
            why,
        })
}

/// What a runtime's worker pinning was, in words.
pub(crate) fn cpus_label(threads: usize, cpus: Option<&[usize]>) -> String {
    match cpus.filter(|c| !c.is_empty()) {
        Some(c) if threads > 1 => format!("worker i on CPU {:?}[i % {}]", c, c.len()),
        _ => "not pinned".into(),
    }
}
