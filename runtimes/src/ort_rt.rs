//! ONNX Runtime through the `ort` crate, CPU execution provider.
//!
//! The crate is built with `load-dynamic`: the shared library is found at run time. `ort`
//! panics when asked to find it itself and it is absent, so this module resolves the path
//! first (`--ort-lib`, `ORT_DYLIB_PATH`, the `onnxruntime` Python package's `capi/` folder,
//! usual system folders) and calls `ort::init_from`, which returns errors instead. No `ort`
//! API is touched before that succeeds.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

use crate::model::{ModelFiles, ModelInfo};
use crate::tensor::{HostTensor, TensorData};
use crate::{Availability, Device, GpuOptions, LoadOptions, Loaded, Runtime, RuntimeError};

const NAME: &str = "ort";
const FIX: &str =
    "install it with `pip install onnxruntime==1.31.1` (scripts/setup.sh does this into .venv), \
or pass --ort-lib /path/to/libonnxruntime.so.1.31.1, or set ORT_DYLIB_PATH";

/// The ONNX Runtime library loaded into this process (once: ONNX Runtime allows one).
pub struct OrtLibrary {
    pub path: PathBuf,
    pub version: String,
    env: ort::environment::Environment,
}

impl OrtLibrary {
    /// The environment sessions are built in.
    pub fn environment(&self) -> &ort::environment::Environment {
        &self.env
    }
}

static LIBRARY: OnceLock<Result<OrtLibrary, String>> = OnceLock::new();

/// Where discovery looks; a struct so that tests can point it anywhere.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub explicit: Option<PathBuf>,
    pub env_var: Option<String>,
    pub python_dirs: Vec<PathBuf>,
    pub system_dirs: Vec<PathBuf>,
}

impl Search {
    /// The search as the harness runs it: flag, environment, Python packages, system folders.
    pub fn from_environment(explicit: Option<&Path>) -> Search {
        let mut python_dirs = Vec::new();
        let mut venvs: Vec<PathBuf> = Vec::new();
        if let Ok(v) = std::env::var("VIRTUAL_ENV") {
            venvs.push(PathBuf::from(v));
        }
        // The project's own environment (scripts/setup.sh), in the working directory or in
        // the first folder above the binary that has one (target/release/harness -> .venv).
        venvs.push(PathBuf::from(".venv"));
        if let Ok(exe) = std::env::current_exe() {
            if let Some(v) = exe
                .ancestors()
                .skip(1)
                .map(|a| a.join(".venv"))
                .find(|v| v.is_dir())
            {
                venvs.push(v);
            }
        }
        for venv in venvs {
            for lib in ["lib", "lib64"] {
                if let Ok(entries) = std::fs::read_dir(venv.join(lib)) {
                    let mut pys: Vec<PathBuf> = entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with("python"))
                        })
                        .collect();
                    pys.sort();
                    for py in pys {
                        python_dirs.push(py.join("site-packages/onnxruntime/capi"));
                    }
                }
            }
        }
        if let Some(dir) = python_package_dir() {
            python_dirs.push(dir.join("capi"));
        }
        let mut system_dirs: Vec<PathBuf> = std::env::var("LD_LIBRARY_PATH")
            .map(|v| {
                v.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        for d in [
            "/usr/local/lib",
            "/usr/lib",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/opt/onnxruntime/lib",
        ] {
            system_dirs.push(PathBuf::from(d));
        }
        Search {
            explicit: explicit.map(Path::to_path_buf),
            env_var: std::env::var("ORT_DYLIB_PATH")
                .ok()
                .filter(|s| !s.is_empty()),
            python_dirs,
            system_dirs,
        }
    }

    /// The library to load, or an error listing every place tried and how to fix it.
    /// An explicit path (flag or environment variable) that does not exist is an error of
    /// its own: silently using another library would measure something else.
    pub fn resolve(&self) -> Result<PathBuf, String> {
        if let Some(p) = &self.explicit {
            return if p.is_file() {
                Ok(p.clone())
            } else {
                Err(format!(
                    "ONNX Runtime library not found: --ort-lib {} does not exist; {FIX}",
                    p.display()
                ))
            };
        }
        if let Some(p) = &self.env_var {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "ONNX Runtime library not found: ORT_DYLIB_PATH={} does not exist; {FIX}",
                    p.display()
                ))
            };
        }
        let mut tried = Vec::new();
        for dir in self.python_dirs.iter().chain(&self.system_dirs) {
            if let Some(lib) = library_in(dir) {
                return Ok(lib);
            }
            tried.push(dir.display().to_string());
        }
        tried.dedup();
        Err(format!(
            "ONNX Runtime library not found: tried --ort-lib (not given), ORT_DYLIB_PATH (unset), \
             the onnxruntime Python package and system folders ({}); {FIX}",
            tried.join(", ")
        ))
    }
}

/// The `onnxruntime` package folder of the `python3` on PATH, without importing it.
fn python_package_dir() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('onnxruntime'); \
             print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// `libonnxruntime.so` or the highest versioned `libonnxruntime.so.1.x.y` in `dir`.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n == "libonnxruntime.so"
                        || n.starts_with("libonnxruntime.so.")
                        || (n.starts_with("libonnxruntime") && n.ends_with(".dylib"))
                })
        })
        .collect();
    found.sort_by_key(|p| version_key(p));
    found.pop()
}

fn version_key(p: &Path) -> Vec<u64> {
    let n = p
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    n.split('.').filter_map(|s| s.parse().ok()).collect()
}

/// Loads the library once per process; later calls return the same result.
pub fn library(explicit: Option<&Path>) -> Result<&'static OrtLibrary, RuntimeError> {
    let r = LIBRARY.get_or_init(|| {
        let path = Search::from_environment(explicit).resolve()?;
        let builder = ort::init_from(&path).map_err(|e| {
            format!(
                "could not load the ONNX Runtime library {}: {e}; {FIX}",
                path.display()
            )
        })?;
        let env = builder.with_name("harness").build().map_err(|e| {
            format!(
                "ONNX Runtime library {} loaded but its environment failed: {e}",
                path.display()
            )
        })?;
        Ok(OrtLibrary {
            version: library_version(&path),
            path,
            env,
        })
    });
    match r {
        Ok(lib) => {
            if let Some(p) = explicit {
                if p != lib.path {
                    return Err(RuntimeError::LibraryNotFound(format!(
                        "this process already loaded ONNX Runtime from {}; it cannot load {} too",
                        lib.path.display(),
                        p.display()
                    )));
                }
            }
            Ok(lib)
        }
        Err(e) => Err(RuntimeError::LibraryNotFound(e.clone())),
    }
}

/// The version the library reports (its build info names the release branch), else the
/// version in the file name.
fn library_version(path: &Path) -> String {
    let info = ort::info();
    if let Some(v) = info
        .split([',', ' '])
        .find_map(|t| t.strip_prefix("git-branch=rel-"))
    {
        return v.to_string();
    }
    let key = version_key(path);
    if key.is_empty() {
        "unknown".into()
    } else {
        key.iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Why this library cannot run on `device`, if it cannot: no GPU support compiled in, the
/// library is the CPU build, or the driver or a CUDA/TensorRT library is missing.
fn gpu_provider_problem(lib: &OrtLibrary, device: Device) -> Option<String> {
    if device == Device::Cpu {
        return None;
    }
    #[cfg(not(feature = "ort-gpu"))]
    {
        let _ = lib;
        Some(format!(
            "{}: this build has no ONNX Runtime GPU support; rebuild with the ort-gpu feature (on by default)",
            device.as_str()
        ))
    }
    #[cfg(feature = "ort-gpu")]
    {
        use ort::ep::ExecutionProvider;
        let (name, available) = match device {
            Device::TensorRt(_) => ("TensorRT", ort::ep::TensorRT::is_available()),
            _ => ("CUDA", ort::ep::CUDA::is_available()),
        };
        match available {
            Ok(true) => crate::gpu::missing_for(device),
            Ok(false) => Some(format!(
                "the ONNX Runtime library {} has no {name} execution provider (it is the CPU build): pip install onnxruntime-gpu==1.31.1 and pass --ort-lib .../onnxruntime/capi/libonnxruntime.so.1.31.1 (or set ORT_DYLIB_PATH)",
                lib.path.display()
            )),
            Err(e) => Some(format!("could not ask ONNX Runtime for its {name} provider: {e}")),
        }
    }
}

/// Registers the GPU execution providers so that failing to register is an error: without
/// `error_on_failure` ONNX Runtime falls back to the CPU silently and the row would lie.
#[cfg(feature = "ort-gpu")]
fn register_gpu(
    builder: ort::session::builder::SessionBuilder,
    device: Device,
    gpu: &GpuOptions,
    stream: Option<&crate::cuda_events::EventTimer>,
) -> Result<ort::session::builder::SessionBuilder, String> {
    let id = device.gpu_index().unwrap_or(0) as i32;
    let mut cuda = ort::ep::CUDA::default().with_device_id(id);
    if let Some(t) = stream {
        // SAFETY: the stream belongs to the timer, which OrtLoaded drops after the session.
        cuda = unsafe { cuda.with_compute_stream(t.raw_stream()) };
    }
    let cuda = cuda.build().error_on_failure();
    let eps = match device {
        Device::TensorRt(_) => {
            let mut trt = ort::ep::TensorRT::default()
                .with_device_id(id)
                .with_fp16(gpu.trt_fp16);
            if let Some(t) = stream {
                // SAFETY: as for CUDA above.
                trt = unsafe { trt.with_compute_stream(t.raw_stream()) };
            }
            if let Some(dir) = &gpu.trt_cache {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.display())
                    .with_timing_cache(true)
                    .with_timing_cache_path(dir.display());
            }
            if let Some(bytes) = gpu.trt_workspace {
                trt = trt.with_max_workspace_size(bytes);
            }
            vec![trt.build().error_on_failure(), cuda]
        }
        _ => vec![cuda],
    };
    builder.with_execution_providers(eps).map_err(|e| {
        format!(
            "registering the {} execution provider: {e}",
            device.as_str()
        )
    })
}

#[cfg(not(feature = "ort-gpu"))]
fn register_gpu(
    _builder: ort::session::builder::SessionBuilder,
    device: Device,
    _gpu: &GpuOptions,
    _stream: Option<&crate::cuda_events::EventTimer>,
) -> Result<ort::session::builder::SessionBuilder, String> {
    Err(format!(
        "{}: this build has no ONNX Runtime GPU support",
        device.as_str()
    ))
}

pub struct OrtRuntime;

impl Runtime for OrtRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    fn about(&self) -> &'static str {
        "ONNX Runtime through the ort crate: CPU, CUDA or TensorRT; the parity reference"
    }

    fn capabilities(&self) -> crate::Capabilities {
        crate::Capabilities {
            computes: true,
            reference: true,
        }
    }

    fn check(&self, opts: &LoadOptions) -> Availability {
        let lib = match library(opts.runtime.ort_lib.as_deref()) {
            Ok(lib) => lib,
            Err(e) => {
                return Availability::Unavailable {
                    reason: e.to_string(),
                }
            }
        };
        let provider = match gpu_provider_problem(lib, opts.device) {
            Some(reason) => return Availability::Unavailable { reason },
            None => match opts.device {
                Device::Cpu => "CPU execution provider".to_string(),
                Device::Cuda(i) => format!("CUDA execution provider, GPU {i}"),
                Device::TensorRt(i) => {
                    format!("TensorRT execution provider (CUDA for the rest), GPU {i}")
                }
            },
        };
        Availability::Ready {
            version: lib.version.clone(),
            detail: format!(
                "ONNX Runtime {} from {} (ort crate {}), {provider}",
                lib.version,
                lib.path.display(),
                crate::ORT_CRATE_VERSION
            ),
        }
    }

    fn load(
        &self,
        model: &ModelFiles,
        _info: &ModelInfo,
        opts: &LoadOptions,
    ) -> Result<Box<dyn Loaded>, RuntimeError> {
        let lib = library(opts.runtime.ort_lib.as_deref())?;
        let onnx = crate::onnx_file(NAME, model, opts.variant)?;
        let load_err = |e: &dyn std::fmt::Display| RuntimeError::Load {
            runtime: NAME,
            path: onnx.clone(),
            message: e.to_string(),
        };
        if let Some(why) = gpu_provider_problem(lib, opts.device) {
            return Err(RuntimeError::Unsupported { runtime: NAME, why });
        }
        let threads = opts.threads.max(1);
        let mut builder = Session::builder(&lib.env)
            .and_then(|b| {
                b.with_optimization_level(GraphOptimizationLevel::Level3)
                    .map_err(Into::into)
            })
            .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .map_err(|e| load_err(&e))?;
        // ONNX Runtime does not pin the calling thread; its N-1 workers take 1-based
        // processor ids, one entry per thread, separated by ';'.
        if let Some(cpus) = opts
            .cpus
            .as_deref()
            .filter(|c| !c.is_empty() && threads > 1)
        {
            let affinities = intra_op_affinities(threads, cpus);
            builder = builder
                .with_config_entry("session.intra_op_thread_affinities", &affinities)
                .map_err(|e| load_err(&e))?;
        }
        if let Some(spin) = opts.runtime.ort_spinning {
            builder = builder
                .with_config_entry(
                    "session.intra_op.allow_spinning",
                    if spin { "1" } else { "0" },
                )
                .map_err(|e| load_err(&e))?;
        }
        // GPU rows are timed on the device too: CUDA events on a stream of ours that ONNX
        // Runtime computes on. Marks: copy in, compute, copy out with --gpu-copies; compute
        // alone without.
        let timer = opts.device.gpu_index().map(|id| {
            let marks = crate::cuda_events::marks(opts.runtime.gpu.copies_timed);
            crate::cuda_events::EventTimer::new_stream(id, marks)
        });
        if opts.device != Device::Cpu {
            let stream = timer.as_ref().and_then(|t| t.as_ref().ok());
            builder = register_gpu(builder, opts.device, &opts.runtime.gpu, stream)
                .map_err(|e| load_err(&e))?;
        }
        let profile = opts
            .runtime
            .ort_profile_dir
            .as_ref()
            .map(|d| d.join(format!("{NAME}-{}-t{threads}", opts.variant.as_str())));
        if let Some(prefix) = &profile {
            if let Some(dir) = prefix.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| load_err(&format!("{}: {e}", dir.display())))?;
            }
            builder = builder.with_profiling(prefix).map_err(|e| load_err(&e))?;
        }
        let session = builder.commit_from_file(&onnx).map_err(|e| {
            load_err(&format!(
                "{e} (is it a complete ONNX model? re-export it with models/export.py)"
            ))
        })?;
        let inputs = session
            .inputs()
            .iter()
            .map(|o| (o.name().to_string(), o.dtype().clone()))
            .collect();
        Ok(Box::new(OrtLoaded {
            session,
            inputs,
            device: opts.device,
            copies_timed: opts.runtime.gpu.copies_timed,
            spinning: opts.runtime.ort_spinning,
            #[cfg(feature = "ort-gpu")]
            binding: None,
            #[cfg(feature = "ort-gpu")]
            copies: None,
            #[cfg(feature = "ort-gpu")]
            run_options: match &timer {
                Some(Ok(_)) => Some(unsynchronized_run().map_err(|e| load_err(&e))?),
                _ => None,
            },
            timer,
            timed: false,
            prepared: Vec::new(),
            threads,
            file: onnx.clone(),
            cpus: opts.cpus.clone(),
            profile,
        }))
    }
}

struct OrtLoaded {
    /// Dropped first (fields drop in order): it computes on the timer's stream.
    session: Session,
    inputs: Vec<(String, ValueType)>,
    device: Device,
    /// GPU: inputs stay on the device and outputs are left there (IO binding); false: every
    /// inference copies both ways (end to end).
    copies_timed: bool,
    /// `session.intra_op.allow_spinning` as set; None: ONNX Runtime's default.
    spinning: Option<bool>,
    #[cfg(feature = "ort-gpu")]
    binding: Option<ort::session::IoBinding>,
    /// --gpu-copies with device timing: the inputs copied in and the outputs copied out
    /// explicitly on the timer's stream, so that each copy is timed on its own.
    #[cfg(feature = "ort-gpu")]
    copies: Option<DeviceCopies>,
    /// GPU rows: the device-side timer, or why there is none. None on the CPU.
    timer: Option<Result<crate::cuda_events::EventTimer, String>>,
    /// Timed GPU runs: without ONNX Runtime's end-of-run synchronization (the harness waits
    /// for the timer's last event instead).
    #[cfg(feature = "ort-gpu")]
    run_options: Option<ort::session::RunOptions>,
    /// The last run was timed on the device: its stages can be read.
    timed: bool,
    prepared: Vec<(String, DynValue)>,
    threads: usize,
    file: PathBuf,
    cpus: Option<Vec<usize>>,
    profile: Option<PathBuf>,
}

#[cfg(feature = "ort-gpu")]
impl OrtLoaded {
    /// Copies the prepared inputs to GPU `id` and binds them, with every output left on the
    /// device: timed inferences then move no data between host and device.
    fn bind_on_device(
        &mut self,
        id: i32,
        inputs: &[HostTensor],
    ) -> Result<ort::session::IoBinding, RuntimeError> {
        use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
        let err =
            |e: ort::Error| RuntimeError::inference(NAME, format!("IO binding on GPU {id}: {e}"));
        let mut binding = self.session.create_binding().map_err(err)?;
        for (name, _) in &self.inputs {
            let Some(t) = inputs.iter().find(|t| &t.name == name) else {
                continue;
            };
            let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            let cuda = AllocationDevice::CUDA;
            // The binding keeps each device copy alive.
            match &t.data {
                TensorData::F32(v) => binding.bind_input(
                    name.as_str(),
                    &Tensor::from_array((shape, v.clone()))
                        .and_then(|x| x.to(cuda, id))
                        .map_err(err)?,
                ),
                TensorData::I64(v) => binding.bind_input(
                    name.as_str(),
                    &Tensor::from_array((shape, v.clone()))
                        .and_then(|x| x.to(cuda, id))
                        .map_err(err)?,
                ),
                TensorData::I32(v) => binding.bind_input(
                    name.as_str(),
                    &Tensor::from_array((shape, v.clone()))
                        .and_then(|x| x.to(cuda, id))
                        .map_err(err)?,
                ),
                TensorData::Bool(v) => binding.bind_input(
                    name.as_str(),
                    &Tensor::from_array((shape, v.clone()))
                        .and_then(|x| x.to(cuda, id))
                        .map_err(err)?,
                ),
            }
            .map_err(err)?;
        }
        let mem = MemoryInfo::new(
            AllocationDevice::CUDA,
            id,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(err)?;
        let outputs: Vec<String> = self
            .session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        for name in outputs {
            binding.bind_output_to_device(name, &mem).map_err(err)?;
        }
        binding.synchronize_inputs().map_err(err)?;
        Ok(binding)
    }
}

/// Device buffers bound to the session, filled from and read back to pinned host memory by
/// explicit copies on the timer's stream: an inference is then three timed stages, as trtexec
/// reports them (host-to-device, compute, device-to-host).
#[cfg(feature = "ort-gpu")]
struct DeviceCopies {
    binding: ort::session::IoBinding,
    /// (input name, its bound device buffer, the prepared values in pinned host memory).
    inputs: Vec<(String, ort::value::DynTensor, PinnedBuffer)>,
    /// (bound device buffer, pinned host memory the output is copied into).
    outputs: Vec<(ort::value::DynTensor, PinnedBuffer)>,
}

#[cfg(feature = "ort-gpu")]
use crate::cuda_events::PinnedBuffer;

/// Queues a copy of `host` into the device buffer `device` (of the same size) on `stream`.
#[cfg(feature = "ort-gpu")]
fn copy_in(
    name: &str,
    device: &ort::value::DynTensor,
    host: &PinnedBuffer,
    stream: cudarc::driver::sys::CUstream,
) -> Result<(), String> {
    // SAFETY: the device buffer was allocated with the host value's type and shape, so it
    // holds host.len() bytes; the context is current (the caller bound it).
    unsafe {
        cudarc::driver::result::memcpy_htod_async(device.data_ptr() as u64, host.as_slice(), stream)
    }
    .map_err(|e| format!("copying input '{name}' to the device: {e}"))
}

/// A tensor value's element type, shape and size in bytes.
#[cfg(feature = "ort-gpu")]
fn tensor_layout(v: &DynValue) -> Result<(TensorElementType, Vec<i64>, usize), String> {
    match v.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            let dims: Vec<i64> = shape.iter().copied().collect();
            let n = dims.iter().map(|&d| d.max(0) as usize).product::<usize>();
            let bytes = ty
                .byte_size(n)
                .ok_or_else(|| format!("no byte size for element type {ty:?}"))?;
            Ok((*ty, dims, bytes))
        }
        other => Err(format!("not a tensor: {other:?}")),
    }
}

/// Run options for timed GPU runs: without ONNX Runtime's synchronization at the end of
/// `Run`, so the closing event is queued right behind the last kernel (the harness waits for
/// that event before its clock stops).
#[cfg(feature = "ort-gpu")]
fn unsynchronized_run() -> Result<ort::session::RunOptions, String> {
    let mut o = ort::session::RunOptions::new().map_err(|e| e.to_string())?;
    o.disable_device_sync().map_err(|e| e.to_string())?;
    Ok(o)
}

#[cfg(feature = "ort-gpu")]
impl OrtLoaded {
    /// Device buffers for the prepared inputs, filled before they are bound, and for the
    /// outputs (their shapes from one inference), bound to the session; pinned host memory
    /// on the other side of each.
    fn device_copies(&mut self, id: i32) -> Result<DeviceCopies, String> {
        use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
        use ort::value::{DynTensor, DynTensorValueType};
        let Some(Ok(timer)) = &self.timer else {
            return Err("no device timer".into());
        };
        let ctx = timer.stream().context().clone();
        // Raw driver calls need the context current on this thread.
        ctx.bind_to_thread()
            .map_err(|e| format!("GPU {id}'s context: {e}"))?;
        let stream = timer.stream().cu_stream();
        let mem = MemoryInfo::new(
            AllocationDevice::CUDA,
            id,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(|e| e.to_string())?;
        let alloc = Allocator::new(&self.session, mem.clone()).map_err(|e| e.to_string())?;
        let mut inputs = Vec::new();
        for (name, host) in &self.prepared {
            let (ty, shape, bytes) = tensor_layout(host)?;
            let view = host
                .view()
                .downcast::<DynTensorValueType>()
                .map_err(|e| format!("input '{name}': {e}"))?;
            let mut pinned = PinnedBuffer::new(&ctx, bytes)?;
            // SAFETY: the prepared CPU tensor holds `bytes` bytes of this type and shape.
            pinned.as_mut_slice().copy_from_slice(unsafe {
                std::slice::from_raw_parts(view.data_ptr().cast::<u8>(), bytes)
            });
            let device = DynTensor::new(&alloc, ty, shape)
                .map_err(|e| format!("input '{name}' on GPU {id}: {e}"))?;
            copy_in(name, &device, &pinned, stream)?;
            inputs.push((name.clone(), device, pinned));
        }
        // Filled before binding: ONNX Runtime reads a bound input where it wants it once, at
        // binding time.
        timer
            .stream()
            .synchronize()
            .map_err(|e| format!("copying the inputs: {e}"))?;
        let mut binding = self.session.create_binding().map_err(|e| e.to_string())?;
        for (name, device, _) in &inputs {
            binding
                .bind_input(name.as_str(), device)
                .map_err(|e| format!("binding input '{name}': {e}"))?;
        }
        for o in self.session.outputs() {
            binding
                .bind_output_to_device(o.name(), &mem)
                .map_err(|e| format!("binding output '{}': {e}", o.name()))?;
        }
        // One inference for the outputs' shapes.
        let layouts = {
            let outs = self
                .session
                .run_binding(&binding)
                .map_err(|e| format!("inference for the outputs' shapes: {e}"))?;
            outs.iter()
                .map(|(name, v)| tensor_layout(&v).map(|l| (name.to_string(), l)))
                .collect::<Result<Vec<_>, _>>()?
        };
        binding.clear_outputs();
        let mut outputs = Vec::new();
        for (name, (ty, shape, bytes)) in layouts {
            let mut device = DynTensor::new(&alloc, ty, shape)
                .map_err(|e| format!("output '{name}' on GPU {id}: {e}"))?;
            binding
                .bind_output(name.as_str(), &mut device)
                .map_err(|e| format!("binding output '{name}': {e}"))?;
            outputs.push((device, PinnedBuffer::new(&ctx, bytes)?));
        }
        Ok(DeviceCopies {
            binding,
            inputs,
            outputs,
        })
    }

    /// One inference in three timed stages on the timer's stream; returns when the device is
    /// done (the stages are read afterwards, outside the timed region).
    fn run_with_copies(&mut self) -> Result<(), String> {
        let (Some(Ok(timer)), Some(c), Some(opts)) =
            (&self.timer, &mut self.copies, &self.run_options)
        else {
            return Err("no device copies prepared".into());
        };
        let stream = timer.stream().cu_stream();
        timer.mark(0)?;
        for (name, device, pinned) in &c.inputs {
            copy_in(name, device, pinned, stream)?;
        }
        timer.mark(1)?;
        let outs = self
            .session
            .run_binding_with_options(&c.binding, opts)
            .map_err(|e| e.to_string())?;
        drop(outs);
        timer.mark(2)?;
        for (device, host) in &mut c.outputs {
            // SAFETY: the host buffer has the device buffer's size (device_copies).
            unsafe {
                cudarc::driver::result::memcpy_dtoh_async(
                    host.as_mut_slice(),
                    device.data_ptr() as u64,
                    stream,
                )
            }
            .map_err(|e| format!("copying an output back: {e}"))?;
        }
        timer.mark(3)?;
        timer.finish()
    }
}

impl Drop for OrtLoaded {
    /// ONNX Runtime writes its profile when profiling ends.
    fn drop(&mut self) {
        if self.profile.is_some() {
            let _ = self.session.end_profiling();
        }
    }
}

/// `session.intra_op_thread_affinities` for `threads` intra-op threads: worker k (1..N) on
/// `cpus[k % len]`, as 1-based processor ids.
pub fn intra_op_affinities(threads: usize, cpus: &[usize]) -> String {
    (1..threads)
        .map(|k| (cpus[k % cpus.len()] + 1).to_string())
        .collect::<Vec<_>>()
        .join(";")
}

/// A host tensor as the session's input; float values for a float16 input are converted to
/// half precision (the harness generates them exactly representable).
fn to_value(t: &HostTensor, ty: Option<&TensorElementType>) -> Result<DynValue, ort::Error> {
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    Ok(match &t.data {
        TensorData::F32(v) if ty == Some(&TensorElementType::Float16) => {
            let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
            Tensor::from_array((shape, h))?.into_dyn()
        }
        TensorData::F32(v) => Tensor::from_array((shape, v.clone()))?.into_dyn(),
        TensorData::I64(v) => Tensor::from_array((shape, v.clone()))?.into_dyn(),
        TensorData::I32(v) => Tensor::from_array((shape, v.clone()))?.into_dyn(),
        TensorData::Bool(v) => Tensor::from_array((shape, v.clone()))?.into_dyn(),
    })
}

fn element_matches(ty: &TensorElementType, data: &TensorData) -> bool {
    matches!(
        (ty, data),
        (TensorElementType::Float32, TensorData::F32(_))
            | (TensorElementType::Float16, TensorData::F32(_))
            | (TensorElementType::Int64, TensorData::I64(_))
            | (TensorElementType::Int32, TensorData::I32(_))
            | (TensorElementType::Bool, TensorData::Bool(_))
    )
}

/// The session's inputs, borrowed from the prepared values (no copy in the timed region).
fn feed(prepared: &[(String, DynValue)]) -> Vec<(&str, SessionInputValue<'_>)> {
    prepared
        .iter()
        .map(|(n, v)| (n.as_str(), SessionInputValue::from(v)))
        .collect()
}

impl Loaded for OrtLoaded {
    fn applied(&self) -> Vec<(String, String)> {
        vec![
            ("intra_op_threads".into(), self.threads.to_string()),
            ("inter_op_threads".into(), "1".into()),
            (
                "intra_op_spinning".into(),
                match self.spinning {
                    None => "default (worker threads spin for work after a run)".into(),
                    Some(true) => "on (session.intra_op.allow_spinning=1)".into(),
                    Some(false) => "off (session.intra_op.allow_spinning=0)".into(),
                },
            ),
            ("graph_optimization".into(), "all (level 3)".into()),
            (
                "execution_provider".into(),
                match self.device {
                    Device::Cpu => "CPU".into(),
                    Device::Cuda(i) => format!("CUDA (GPU {i}), registered with error_on_failure"),
                    Device::TensorRt(i) => format!(
                        "TensorRT then CUDA (GPU {i}), registered with error_on_failure"
                    ),
                },
            ),
            (
                "gpu_copies".into(),
                match (self.device, self.copies_timed) {
                    (Device::Cpu, _) => "n/a (CPU)".into(),
                    (_, false) => "excluded: inputs bound on the device, outputs left there (IO binding)".into(),
                    (_, true) => "included: host inputs copied in and outputs copied back every inference (end to end)".into(),
                },
            ),
            (
                "device_timing".into(),
                match (&self.timer, self.copies_timed) {
                    (None, _) => "n/a (CPU)".into(),
                    (Some(Err(why)), _) => format!("unavailable: {why}"),
                    (Some(Ok(_)), false) => "CUDA events on the session's compute stream around each run; runs without ONNX Runtime's end-of-run synchronization, the harness waiting for the last event".into(),
                    (Some(Ok(_)), true) => "CUDA events on the session's compute stream: copy in, compute, copy out (explicit copies between pinned host memory and IO-bound device buffers); runs without ONNX Runtime's end-of-run synchronization, the harness waiting for the last event".into(),
                },
            ),
            ("model_file".into(), self.file.display().to_string()),
            (
                "profiling".into(),
                match &self.profile {
                    Some(p) => format!(
                        "on (figures include the profiler's cost): {}_<time>.json",
                        p.display()
                    ),
                    None => "off".into(),
                },
            ),
            (
                "worker_cpus".into(),
                match self
                    .cpus
                    .as_deref()
                    .filter(|c| !c.is_empty() && self.threads > 1)
                {
                    Some(c) => format!(
                        "intra_op_thread_affinities {} (1-based)",
                        intra_op_affinities(self.threads, c)
                    ),
                    None => "not pinned".into(),
                },
            ),
        ]
    }

    fn device_timing(&self) -> Option<Result<(), String>> {
        crate::cuda_events::timing_status(&self.timer)
    }

    fn last_device_time(&self) -> Option<crate::DeviceTime> {
        crate::cuda_events::last_time(&self.timer, self.timed)
    }

    fn prepare(&mut self, inputs: &[HostTensor]) -> Result<(), RuntimeError> {
        let mut prepared = Vec::with_capacity(inputs.len());
        for (name, ty) in &self.inputs {
            let t = inputs.iter().find(|t| &t.name == name).ok_or_else(|| {
                RuntimeError::input(NAME, format!("the model's input '{name}' was not given"))
            })?;
            let element = match ty {
                ValueType::Tensor { ty, .. } => Some(ty),
                _ => None,
            };
            if let Some(ty) = element {
                if !element_matches(ty, &t.data) {
                    return Err(RuntimeError::input(
                        NAME,
                        format!(
                            "input '{name}': the model expects {ty:?}, got {}",
                            t.data.dtype().as_str()
                        ),
                    ));
                }
            }
            let v = to_value(t, element)
                .map_err(|e| RuntimeError::input(NAME, format!("input '{name}': {e}")))?;
            prepared.push((name.clone(), v));
        }
        self.prepared = prepared;
        #[cfg(feature = "ort-gpu")]
        {
            self.binding = None;
            self.copies = None;
            match (self.device.gpu_index(), self.copies_timed) {
                (Some(id), false) => {
                    self.binding = Some(self.bind_on_device(id as i32, inputs)?);
                }
                (Some(id), true) if matches!(self.timer, Some(Ok(_))) => {
                    let copies = self.device_copies(id as i32).map_err(|e| {
                        RuntimeError::inference(NAME, format!("device buffers on GPU {id}: {e}"))
                    })?;
                    self.copies = Some(copies);
                }
                _ => {}
            }
        }
        self.timed = false;
        Ok(())
    }

    fn run(&mut self) -> Result<(), RuntimeError> {
        self.timed = false;
        #[cfg(feature = "ort-gpu")]
        if self.copies.is_some() {
            self.run_with_copies()
                .map_err(|e| RuntimeError::inference(NAME, e))?;
            self.timed = true;
            return Ok(());
        }
        #[cfg(feature = "ort-gpu")]
        if let Some(binding) = &self.binding {
            let err = |e: String| RuntimeError::inference(NAME, e);
            if let (Some(Ok(t)), Some(opts)) = (&self.timer, &self.run_options) {
                t.mark(0).map_err(err)?;
                let outputs = self
                    .session
                    .run_binding_with_options(binding, opts)
                    .map_err(|e| RuntimeError::inference(NAME, e))?;
                drop(outputs);
                t.mark(1).map_err(err)?;
                // The clock stops when the device has finished: everything ONNX Runtime
                // queued on the stream before the last mark.
                t.finish().map_err(err)?;
                self.timed = true;
                return Ok(());
            }
            let outputs = self
                .session
                .run_binding(binding)
                .map_err(|e| RuntimeError::inference(NAME, e))?;
            // The clock stops when the device has finished, not when the launch returned.
            binding
                .synchronize_outputs()
                .map_err(|e| RuntimeError::inference(NAME, e))?;
            drop(outputs);
            return Ok(());
        }
        let outputs = self
            .session
            .run(feed(&self.prepared))
            .map_err(|e| RuntimeError::inference(NAME, e))?;
        drop(outputs);
        Ok(())
    }

    fn infer(&mut self) -> Result<Vec<HostTensor>, RuntimeError> {
        let outputs = self
            .session
            .run(feed(&self.prepared))
            .map_err(|e| RuntimeError::inference(NAME, e))?;
        let mut result = Vec::new();
        for (name, value) in outputs.iter() {
            let (shape, data) = if let Ok((s, d)) = value.try_extract_tensor::<f32>() {
                (s.to_vec(), TensorData::F32(d.to_vec()))
            } else if let Ok((s, d)) = value.try_extract_tensor::<i64>() {
                (s.to_vec(), TensorData::I64(d.to_vec()))
            } else if let Ok((s, d)) = value.try_extract_tensor::<i32>() {
                (s.to_vec(), TensorData::I32(d.to_vec()))
            } else if let Ok((s, d)) = value.try_extract_tensor::<bool>() {
                (s.to_vec(), TensorData::Bool(d.to_vec()))
            } else if let Ok((s, d)) = value.try_extract_tensor::<half::f16>() {
                (
                    s.to_vec(),
                    TensorData::F32(d.iter().map(|x| x.to_f32()).collect()),
                )
            } else {
                return Err(RuntimeError::inference(
                    NAME,
                    format!(
                        "output '{name}' has a type the harness cannot compare ({:?})",
                        value.dtype()
                    ),
                ));
            };
            let shape = shape.iter().map(|&d| d.max(0) as usize).collect();
            result.push(HostTensor::new(name, shape, data));
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ort-search-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn not_found_names_every_place_tried_and_the_fix() {
        let s = Search {
            python_dirs: vec![PathBuf::from("/nowhere/site-packages/onnxruntime/capi")],
            system_dirs: vec![PathBuf::from("/nowhere/lib")],
            ..Search::default()
        };
        let e = s.resolve().unwrap_err();
        assert!(e.contains("ONNX Runtime library not found"), "{e}");
        assert!(e.contains("/nowhere/site-packages/onnxruntime/capi"), "{e}");
        assert!(e.contains("/nowhere/lib"), "{e}");
        assert!(e.contains("pip install onnxruntime==1.31.1"), "{e}");
        assert!(e.contains("--ort-lib"), "{e}");
    }

    #[test]
    fn explicit_paths_win_and_must_exist() {
        let d = tmp("explicit");
        let lib = d.join("libonnxruntime.so.1.31.1");
        std::fs::write(&lib, b"x").unwrap();
        let s = Search {
            explicit: Some(d.join("missing.so")),
            python_dirs: vec![d.clone()],
            ..Search::default()
        };
        let e = s.resolve().unwrap_err();
        assert!(e.contains("--ort-lib") && e.contains("missing.so"), "{e}");
        let s = Search {
            env_var: Some(lib.display().to_string()),
            ..Search::default()
        };
        assert_eq!(s.resolve().unwrap(), lib);
        let s = Search {
            env_var: Some("/nope/libonnxruntime.so".into()),
            python_dirs: vec![d.clone()],
            ..Search::default()
        };
        assert!(s.resolve().unwrap_err().contains("ORT_DYLIB_PATH=/nope"));
    }

    #[test]
    fn the_wheel_layout_is_found_highest_version_first() {
        let d = tmp("wheel");
        for n in [
            "libonnxruntime.so.1.30.0",
            "libonnxruntime.so.1.31.1",
            "libonnxruntime_providers_shared.so",
        ] {
            std::fs::write(d.join(n), b"x").unwrap();
        }
        let s = Search {
            python_dirs: vec![PathBuf::from("/nowhere"), d.clone()],
            ..Search::default()
        };
        assert_eq!(s.resolve().unwrap(), d.join("libonnxruntime.so.1.31.1"));
    }

    /// With the CPU build of the library, asking for CUDA or TensorRT is an error at
    /// registration: never a session that quietly runs on the CPU.
    #[cfg(feature = "ort-gpu")]
    #[test]
    fn gpu_providers_refuse_to_fall_back_to_the_cpu() {
        let Ok(lib) = library(None) else {
            eprintln!("no ONNX Runtime library here: skipped");
            return;
        };
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/tiny-bert");
        let files = ModelFiles::resolve(&model).unwrap();
        let info = ModelInfo::read(&files).unwrap();
        let opts = LoadOptions {
            device: Device::Cuda(0),
            ..LoadOptions::default()
        };
        // What this machine and library can do: the GPU build with a driver registers
        // CUDA and loads on it; anything else refuses, saying why.
        if gpu_provider_problem(lib, Device::Cuda(0)).is_none() {
            let builder = Session::builder(&lib.env).unwrap();
            assert!(register_gpu(builder, Device::Cuda(0), &GpuOptions::default(), None).is_ok());
            let loaded = OrtRuntime.load(&files, &info, &opts);
            assert!(loaded.is_ok(), "{:?}", loaded.err());
            return;
        }
        for device in [Device::Cuda(0), Device::TensorRt(0)] {
            let builder = Session::builder(&lib.env).unwrap();
            let e = register_gpu(builder, device, &GpuOptions::default(), None)
                .err()
                .expect("registering a GPU provider on the CPU build must fail");
            assert!(e.contains(device.as_str()), "{e}");
        }
        // And the load path says why before building anything.
        let e = OrtRuntime
            .load(&files, &info, &opts)
            .err()
            .expect("no CUDA here");
        assert!(e.is_skip(), "{e}");
        let why = e.to_string();
        assert!(
            why.contains("no CUDA execution provider")
                || why.contains("missing")
                || why.contains("no NVIDIA driver"),
            "{why}"
        );
    }
}
