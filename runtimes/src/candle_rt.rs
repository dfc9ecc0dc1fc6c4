//! candle-native: candle's hand-written models (`candle-transformers`), CPU or CUDA, f32 /
//! f16 / bf16 — the second candle engine, beside the ONNX graph engine (`candle_graph`).
//!
//! It does not read ONNX: it runs native architectures from the same checkpoint's
//! `model.safetensors` + `config.json` that the exporter writes beside `model.onnx`. BERT
//! encoders (`model_type: bert`) run through `candle_transformers::models::bert::BertModel`;
//! anything else is "unsupported by candle-native", not an error for the whole run. Measured
//! next to the graph engine on the same model, it shows what a hand-written model gains over
//! interpreting the graph.
//!
//! f16 and bf16: candle-transformers 0.11.1's `BertModel` builds its attention mask as
//! `(1 - mask) * f32::MIN` in the model's dtype; f32::MIN is -inf in f16 and bf16, so every
//! unmasked score becomes 0 * -inf = NaN. For those dtypes the model here is candle's own
//! `BertEncoder` (the transformer layers) behind embeddings and a mask built with the
//! dtype's finite minimum; f32 runs the upstream `BertModel` unchanged.
//!
//! Threads: candle's matmul splits work into `RAYON_NUM_THREADS` parts (read on every call)
//! and runs them on the current rayon pool; inference runs inside a pool of N threads, with
//! that variable set to N for the duration of the scenario ([`CandleThreads`], which the
//! graph engine uses too).

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_nn::{Embedding, LayerNorm, Module};
use candle_transformers::models::bert::{BertEncoder, BertModel, Config};

use crate::cuda_events::EventTimer;
use crate::model::{ModelFiles, ModelInfo};
use crate::tensor::{HostTensor, TensorData};
use crate::{Availability, LoadOptions, Loaded, Runtime, RuntimeError};

const NAME: &str = "candle-native";
const SUPPORTED: &[&str] = &["bert"];

pub struct CandleRuntime;

fn unsupported(why: String) -> RuntimeError {
    RuntimeError::Unsupported { runtime: NAME, why }
}

impl Runtime for CandleRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    fn about(&self) -> &'static str {
        "candle's hand-written BERT (candle-transformers, from safetensors + config.json), CPU or CUDA"
    }

    fn check(&self, opts: &LoadOptions) -> Availability {
        if let Err(e) = device_problem(opts.device) {
            return Availability::Unavailable { reason: e };
        }
        if let crate::Device::Cuda(i) = opts.device {
            return Availability::Ready {
                version: crate::CANDLE_VERSION.to_string(),
                detail: format!(
                    "candle {} (built with CUDA), GPU {i} f32/f16/bf16; architectures: {}",
                    crate::CANDLE_VERSION,
                    SUPPORTED.join(", ")
                ),
            };
        }
        Availability::Ready {
            version: crate::CANDLE_VERSION.to_string(),
            detail: format!(
                "candle {} (built in), CPU f32/f16/bf16; architectures: {} (from safetensors + config.json)",
                crate::CANDLE_VERSION,
                SUPPORTED.join(", ")
            ),
        }
    }

    fn load(
        &self,
        model: &ModelFiles,
        info: &ModelInfo,
        opts: &LoadOptions,
    ) -> Result<Box<dyn Loaded>, RuntimeError> {
        // Without the checkpoint this engine cannot run the model at all: a skip, not a
        // failure (the candle runtime runs the ONNX graph).
        let missing = |what: &str, file: &str| {
            unsupported(format!(
                "it runs the checkpoint, not the ONNX graph, and {} is missing ({what}; models/export.py writes it beside model.onnx; the candle runtime runs model.onnx)",
                model.folder.join(file).display()
            ))
        };
        let config_path = model
            .config
            .as_ref()
            .ok_or_else(|| missing("the checkpoint's config", "config.json"))?;
        let weights = model
            .safetensors
            .as_ref()
            .ok_or_else(|| missing("the checkpoint's weights", "model.safetensors"))?;
        match info.model_type.as_deref() {
            Some(t) if SUPPORTED.contains(&t) => {}
            Some(t) => {
                return Err(unsupported(format!(
                    "model_type '{t}' in {} (candle-native runs: {}; the candle runtime runs any model's ONNX graph)",
                    config_path.display(),
                    SUPPORTED.join(", ")
                )))
            }
            None => {
                return Err(unsupported(format!(
                    "{} names no model_type",
                    config_path.display()
                )))
            }
        }
        let dtype = match opts.variant {
            crate::Variant::Fp32 => DType::F32,
            crate::Variant::Fp16 => DType::F16,
            crate::Variant::Bf16 => DType::BF16,
            crate::Variant::Int8 => {
                return Err(unsupported(
                    "int8: candle runs BERT from the checkpoint in f32, f16 or bf16; int8 is a quantized ONNX graph (ort, tract)".into(),
                ))
            }
        };
        device_problem(opts.device).map_err(unsupported)?;
        let device = candle_device(opts.device)?;
        let config = read_config(config_path)?;
        let load_err = |e: candle_core::Error| RuntimeError::Load {
            runtime: NAME,
            path: weights.clone(),
            message: e.to_string(),
        };
        // SAFETY: the file is memory-mapped read-only; the harness does not modify it while
        // it runs, and no other process is expected to.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[weights.as_path()], dtype, &device) }
                .map_err(load_err)?;
        let bert = Bert::load(vb, &config, dtype).map_err(|e| {
            unsupported(format!(
                "{} does not hold a BERT encoder candle can load: {e}",
                weights.display()
            ))
        })?;
        let threads = CandleThreads::new(NAME, opts.threads, opts.cpus.clone())?;
        let output_name = info
            .outputs
            .first()
            .map(|o| o.name.clone())
            .unwrap_or_else(|| "last_hidden_state".into());
        let copies_timed = opts.runtime.gpu.copies_timed && device.is_cuda();
        let timer = cuda_timer(&device, crate::cuda_events::marks(copies_timed));
        Ok(Box::new(CandleLoaded {
            bert: Arc::new(bert),
            threads,
            output_name,
            dtype,
            device,
            copies_timed,
            timer,
            timed: false,
            prepared: None,
        }))
    }
}

/// CUDA events on candle's own stream for a GPU device; None on the CPU.
#[cfg(feature = "candle-cuda")]
fn cuda_timer(device: &Device, marks: usize) -> Option<Result<EventTimer, String>> {
    match device {
        Device::Cuda(d) => Some(EventTimer::on_stream(d.cuda_stream(), marks)),
        _ => None,
    }
}

#[cfg(not(feature = "candle-cuda"))]
fn cuda_timer(_device: &Device, _marks: usize) -> Option<Result<EventTimer, String>> {
    None
}

/// Why candle cannot run on `device` in this build, if it cannot.
fn device_problem(device: crate::Device) -> Result<(), String> {
    match device {
        crate::Device::Cpu => Ok(()),
        crate::Device::TensorRt(_) => Err(
            "tensorrt is an ONNX Runtime execution provider; candle runs on cuda".into(),
        ),
        crate::Device::Cuda(_) if !cfg!(feature = "candle-cuda") => Err(
            "cuda: this build of candle has no CUDA support; build with --features candle-cuda (its kernels need nvcc: scripts/build-gpu.sh)".into(),
        ),
        crate::Device::Cuda(_) => match crate::gpu::loadable(crate::gpu::DRIVER) {
            Ok(()) => Ok(()),
            Err(e) => Err(format!(
                "no NVIDIA driver: {} cannot be loaded ({e})",
                crate::gpu::DRIVER
            )),
        },
    }
}

fn candle_device(device: crate::Device) -> Result<Device, RuntimeError> {
    match device {
        crate::Device::Cuda(i) => Device::new_cuda(i as usize)
            .map_err(|e| unsupported(format!("cuda:{i}: candle could not open the GPU: {e}"))),
        _ => Ok(Device::Cpu),
    }
}

fn read_config(path: &Path) -> Result<Config, RuntimeError> {
    let text = std::fs::read_to_string(path).map_err(|e| RuntimeError::Load {
        runtime: NAME,
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| {
        unsupported(format!(
            "{} is not a BERT config candle understands: {e}",
            path.display()
        ))
    })
}

/// candle's BERT: upstream `BertModel` in f32; in f16/bf16 its `BertEncoder` with embeddings
/// and a mask that stay finite in the dtype (see the module docs).
enum Bert {
    Upstream(BertModel),
    HalfSafe {
        embeddings: Embeddings,
        encoder: BertEncoder,
        dtype: DType,
    },
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    layer_norm: LayerNorm,
}

impl Bert {
    fn load(vb: VarBuilder, config: &Config, dtype: DType) -> candle_core::Result<Bert> {
        if dtype == DType::F32 {
            return BertModel::load(vb, config).map(Bert::Upstream);
        }
        // Checkpoints saved from BertFor* heads nest the encoder under `bert.`.
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let e = vb.pp("embeddings");
        let h = config.hidden_size;
        let embeddings = Embeddings {
            word: candle_nn::embedding(config.vocab_size, h, e.pp("word_embeddings"))?,
            position: candle_nn::embedding(
                config.max_position_embeddings,
                h,
                e.pp("position_embeddings"),
            )?,
            token_type: candle_nn::embedding(
                config.type_vocab_size,
                h,
                e.pp("token_type_embeddings"),
            )?,
            layer_norm: candle_nn::layer_norm(h, config.layer_norm_eps, e.pp("LayerNorm"))?,
        };
        let encoder = BertEncoder::load(vb.pp("encoder"), config)?;
        Ok(Bert::HalfSafe {
            embeddings,
            encoder,
            dtype,
        })
    }

    fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Bert::Upstream(m) => m.forward(ids, types, Some(mask)),
            Bert::HalfSafe {
                embeddings,
                encoder,
                dtype,
            } => {
                let (_, seq) = ids.dims2()?;
                let positions = Tensor::arange(0u32, seq as u32, ids.device())?.unsqueeze(0)?;
                let x = embeddings
                    .word
                    .forward(ids)?
                    .add(&embeddings.token_type.forward(types)?)?
                    .broadcast_add(&embeddings.position.forward(&positions)?)?;
                let x = embeddings.layer_norm.forward(&x)?;
                // HF: (1 - mask) * finfo(dtype).min, [batch, 1, 1, seq].
                let lowest = match dtype {
                    DType::F16 => f64::from(half::f16::MIN),
                    DType::BF16 => f64::from(half::bf16::MIN),
                    _ => f64::from(f32::MIN),
                };
                let mask = mask.unsqueeze(1)?.unsqueeze(1)?.to_dtype(DType::F32)?;
                let ext = ((mask.ones_like()? - &mask)? * lowest)?.to_dtype(*dtype)?;
                encoder.forward(&x, &ext)
            }
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Bert::Upstream(_) => "candle_transformers bert::BertModel",
            Bert::HalfSafe { .. } => {
                "candle_transformers bert::BertEncoder; embeddings and a dtype-finite attention mask built here"
            }
        }
    }
}

struct Prepared {
    input_ids: Tensor,
    token_type_ids: Tensor,
    attention_mask: Tensor,
    /// With copies timed on a GPU: the three inputs on the host (shape, values), copied to
    /// the device by every run.
    host: Option<(Vec<usize>, [Vec<i64>; 3])>,
}

/// How both candle engines use threads: inference runs inside a rayon pool of N threads
/// (inline on the caller for one), with `RAYON_NUM_THREADS` set to N while a scenario runs,
/// since candle's matmul reads it on every call to split its work.
pub(crate) struct CandleThreads {
    runtime: &'static str,
    pool: Option<Arc<rayon::ThreadPool>>,
    threads: usize,
    cpus: Option<Vec<usize>>,
}

impl CandleThreads {
    pub(crate) fn new(
        runtime: &'static str,
        threads: usize,
        cpus: Option<Vec<usize>>,
    ) -> Result<CandleThreads, RuntimeError> {
        let threads = threads.max(1);
        Ok(CandleThreads {
            runtime,
            pool: crate::rayon_pool(runtime, threads, cpus.as_deref())?,
            threads,
            cpus,
        })
    }

    /// The same settings with a pool of its own, for another worker.
    pub(crate) fn again(&self) -> Result<CandleThreads, RuntimeError> {
        CandleThreads::new(self.runtime, self.threads, self.cpus.clone())
    }

    /// Called when a scenario is prepared: the split must match the pool it runs in.
    pub(crate) fn enter(&self) {
        std::env::set_var("RAYON_NUM_THREADS", self.threads.to_string());
    }

    /// Runs `f` on the pool (inline for one thread).
    pub(crate) fn install<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// What was applied: threads, pool, RAYON_NUM_THREADS, worker pinning.
    pub(crate) fn applied(&self) -> Vec<(String, String)> {
        let pool = match self.pool {
            Some(_) => format!("rayon pool of {} threads", self.threads),
            None => "inline on the measuring thread".into(),
        };
        vec![
            ("threads".into(), self.threads.to_string()),
            ("pool".into(), pool),
            ("RAYON_NUM_THREADS".into(), self.threads.to_string()),
            (
                "worker_cpus".into(),
                crate::cpus_label(self.threads, self.cpus.as_deref()),
            ),
            (
                "candle_default_matmul_threads".into(),
                match crate::physical_cores() {
                    Some(p) if p != self.threads => format!(
                        "{p} (physical cores): a program that does not set RAYON_NUM_THREADS multiplies matrices on {p} thread(s), not {}",
                        self.threads
                    ),
                    Some(p) => format!("{p} (physical cores), the same as here"),
                    None => "unknown (no CPU topology in sysfs)".into(),
                },
            ),
        ]
    }
}

struct CandleLoaded {
    /// Shared between workers: candle's forward takes the model by shared reference.
    bert: Arc<Bert>,
    /// Where the weights and the prepared inputs live.
    device: Device,
    threads: CandleThreads,
    output_name: String,
    dtype: DType,
    /// GPU: every run copies its inputs in and its output back (`--gpu-copies`).
    copies_timed: bool,
    /// GPU: CUDA events on candle's stream, or why there are none. None on the CPU.
    timer: Option<Result<EventTimer, String>>,
    /// The last run was timed on the device: its stages can be read.
    timed: bool,
    prepared: Option<Prepared>,
}

impl CandleLoaded {
    fn forward(&self) -> Result<Tensor, RuntimeError> {
        let p = self
            .prepared
            .as_ref()
            .ok_or_else(|| RuntimeError::input(NAME, "run before prepare"))?;
        self.forward_on(&p.input_ids, &p.token_type_ids, &p.attention_mask)
    }

    fn forward_on(
        &self,
        ids: &Tensor,
        types: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor, RuntimeError> {
        let f = || self.bert.forward(ids, types, mask);
        // On a GPU candle launches on the calling thread's own stream (a per-thread default
        // stream): the forward pass must run on the thread that prepared the inputs, records
        // the events and synchronizes, not on a pool thread.
        if self.device.is_cuda() {
            return f().map_err(|e| RuntimeError::inference(NAME, e));
        }
        self.threads
            .install(f)
            .map_err(|e| RuntimeError::inference(NAME, e))
    }

    /// One GPU inference timed on the device: compute alone, or with the inputs copied in
    /// from the host and the output copied back (`--gpu-copies`). Returns when the device is
    /// done; the stages are read afterwards, outside the timed region.
    fn run_timed(&self, timer: &EventTimer) -> Result<(), RuntimeError> {
        let err = |e: String| RuntimeError::inference(NAME, e);
        let p = self
            .prepared
            .as_ref()
            .ok_or_else(|| RuntimeError::input(NAME, "run before prepare"))?;
        timer.mark(0).map_err(err)?;
        let out = match &p.host {
            Some((shape, [ids, types, mask])) => {
                let on_device = |v: &Vec<i64>| {
                    Tensor::from_slice(v.as_slice(), shape.as_slice(), &self.device)
                        .map_err(|e| RuntimeError::inference(NAME, e))
                };
                let (ids, types, mask) = (on_device(ids)?, on_device(types)?, on_device(mask)?);
                timer.mark(1).map_err(err)?;
                let out = self.forward_on(&ids, &types, &mask)?;
                timer.mark(2).map_err(err)?;
                // Read back to the host (waits for the copy).
                let back = out
                    .to_device(&Device::Cpu)
                    .map_err(|e| RuntimeError::inference(NAME, e))?;
                timer.mark(3).map_err(err)?;
                back
            }
            None => {
                let out = self.forward()?;
                timer.mark(1).map_err(err)?;
                out
            }
        };
        timer.finish().map_err(err)?;
        drop(out);
        Ok(())
    }
}

impl Loaded for CandleLoaded {
    fn applied(&self) -> Vec<(String, String)> {
        let mut applied = vec![
            ("engine".into(), "native".into()),
            ("dtype".into(), format!("{:?}", self.dtype).to_lowercase()),
            (
                "device".into(),
                if self.device.is_cuda() && self.copies_timed {
                    "cuda (inputs copied in from the host and the output copied back in every run; the forward pass on the measuring thread, whose stream candle launches on; device synchronized before the clock stops)".into()
                } else if self.device.is_cuda() {
                    "cuda (inputs prepared on the device; the forward pass on the measuring thread, whose stream candle launches on; device synchronized before the clock stops)".into()
                } else {
                    "cpu".into()
                },
            ),
            ("architecture".into(), self.bert.describe().into()),
            (
                "device_timing".into(),
                match (&self.timer, self.copies_timed) {
                    (None, _) => "n/a (CPU)".into(),
                    (Some(Err(why)), _) => format!("unavailable: {why}"),
                    (Some(Ok(_)), false) => "CUDA events on candle's stream around each run".into(),
                    (Some(Ok(_)), true) => {
                        "CUDA events on candle's stream: copy in, compute, copy out".into()
                    }
                },
            ),
        ];
        applied.extend(self.threads.applied());
        applied
    }

    fn prepare(&mut self, inputs: &[HostTensor]) -> Result<(), RuntimeError> {
        self.threads.enter();
        for t in inputs {
            if !["input_ids", "token_type_ids", "attention_mask"].contains(&t.name.as_str()) {
                return Err(unsupported(format!(
                    "input '{}' is not one of BERT's input_ids, token_type_ids, attention_mask",
                    t.name
                )));
            }
        }
        let ids = inputs
            .iter()
            .find(|t| t.name == "input_ids")
            .ok_or_else(|| RuntimeError::input(NAME, "no 'input_ids' input"))?;
        if ids.shape.len() != 2 {
            return Err(RuntimeError::input(
                NAME,
                format!(
                    "input_ids must be [batch, sequence], got shape {}",
                    ids.shape_string()
                ),
            ));
        }
        // Each input's values (a missing one filled), checked against input_ids' shape.
        let values = |name: &str, fill: i64| -> Result<Vec<i64>, RuntimeError> {
            match inputs.iter().find(|t| t.name == name) {
                Some(t) => {
                    if t.shape != ids.shape {
                        return Err(RuntimeError::input(
                            NAME,
                            format!(
                                "{name} has shape {}, input_ids {}",
                                t.shape_string(),
                                ids.shape_string()
                            ),
                        ));
                    }
                    t.data
                        .to_i64()
                        .ok_or_else(|| RuntimeError::input(NAME, format!("{name} must be integer")))
                }
                None => Ok(vec![fill; ids.data.len()]),
            }
        };
        let host = [
            values("input_ids", 0)?,
            values("token_type_ids", 0)?,
            values("attention_mask", 1)?,
        ];
        let tensor = |data: &Vec<i64>| {
            Tensor::from_slice(data.as_slice(), ids.shape.as_slice(), &self.device)
                .map_err(|e| RuntimeError::inference(NAME, e))
        };
        self.prepared = Some(Prepared {
            input_ids: tensor(&host[0])?,
            token_type_ids: tensor(&host[1])?,
            attention_mask: tensor(&host[2])?,
            // Kept only where every run copies them in.
            host: (self.copies_timed && matches!(self.timer, Some(Ok(_))))
                .then(|| (ids.shape.clone(), host)),
        });
        self.timed = false;
        Ok(())
    }

    fn device_timing(&self) -> Option<Result<(), String>> {
        crate::cuda_events::timing_status(&self.timer)
    }

    fn last_device_time(&self) -> Option<crate::DeviceTime> {
        crate::cuda_events::last_time(&self.timer, self.timed)
    }

    fn run(&mut self) -> Result<(), RuntimeError> {
        self.timed = false;
        if let Some(Ok(timer)) = &self.timer {
            self.run_timed(timer)?;
            self.timed = true;
            return Ok(());
        }
        let out = self.forward()?;
        // GPU kernels run asynchronously: the clock stops when the device is done.
        self.device
            .synchronize()
            .map_err(|e| RuntimeError::inference(NAME, e))?;
        drop(out);
        Ok(())
    }

    fn share(&self) -> Option<Result<Box<dyn Loaded>, RuntimeError>> {
        Some(self.threads.again().map(|threads| {
            Box::new(CandleLoaded {
                bert: self.bert.clone(),
                threads,
                output_name: self.output_name.clone(),
                dtype: self.dtype,
                device: self.device.clone(),
                copies_timed: self.copies_timed,
                // Another worker runs on its own thread, so on that thread's stream: the
                // events (recorded by the first worker's thread) would not see its work.
                timer: self.timer.as_ref().map(|_| {
                    Err("device timing covers one worker; this row runs several".to_string())
                }),
                timed: false,
                prepared: None,
            }) as Box<dyn Loaded>
        }))
    }

    fn infer(&mut self) -> Result<Vec<HostTensor>, RuntimeError> {
        let out = self.forward()?;
        let shape = out.dims().to_vec();
        let data = out
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| RuntimeError::inference(NAME, e))?;
        Ok(vec![HostTensor::new(
            self.output_name.clone(),
            shape,
            TensorData::F32(data),
        )])
    }
}
