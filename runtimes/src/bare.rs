//! The loop a user writes from each runtime's own documentation, with none of this crate's
//! wrappers: `harness selfcheck` times it beside the wrapper the harness measures, so that a
//! figure the harness reports is one a user can get.
//!
//! Each recipe follows its runtime's README or example: inputs built once, outputs dropped,
//! threads set the way the runtime documents it (ONNX Runtime's `with_intra_threads`, tract's
//! default executor, candle's `RAYON_NUM_THREADS`, which the caller sets before anything
//! runs). The ONNX Runtime library is found as the harness finds it; that is set-up, not the
//! loop.

use std::path::Path;

use crate::{HostTensor, ModelFiles, RuntimeError, TensorData};

/// One runtime's documented loop, loaded and ready to run.
pub struct BareLoop {
    /// The recipe in words, for the report.
    pub recipe: &'static str,
    step: Box<dyn FnMut() -> Result<(), String>>,
}

impl BareLoop {
    /// One inference, its outputs dropped.
    pub fn run(&mut self) -> Result<(), String> {
        (self.step)()
    }
}

/// The runtimes with a documented loop to check against (the `candle` graph engine is this
/// crate's own: there is no user loop to compare it with).
pub const RUNTIMES: &[&str] = &["ort", "tract", "candle-native"];

/// The documented loop of `runtime` on the model's fp32 files, for `inputs` (in the
/// model's input order) at `threads` threads.
pub fn load(
    runtime: &str,
    files: &ModelFiles,
    threads: usize,
    inputs: &[HostTensor],
    ort_lib: Option<&Path>,
) -> Result<BareLoop, RuntimeError> {
    match runtime {
        "ort" => ort_loop(files, threads, inputs, ort_lib),
        "tract" => tract_loop(files, threads, inputs),
        "candle-native" => candle_loop(files, inputs, None),
        other => Err(RuntimeError::Unsupported {
            runtime: "selfcheck",
            why: format!(
                "no documented loop for {other} (those with one: {})",
                RUNTIMES.join(", ")
            ),
        }),
    }
}

/// The runtimes whose documented loop has advice that changes its speed: the same loop with
/// the advice applied, checked beside the documented one.
pub const ADVISED: &[&str] = &["candle-native"];

/// The documented loop of `runtime` with the performance guide's advice applied; None when
/// there is no advice for it at `threads` threads. candle-native: the forward inside a rayon
/// pool of `threads` threads (`pool.install`), so that the calling thread is one of the
/// pool's workers rather than a stranger that hands every parallel operation over and waits.
pub fn load_advised(
    runtime: &str,
    files: &ModelFiles,
    threads: usize,
    inputs: &[HostTensor],
) -> Option<Result<BareLoop, RuntimeError>> {
    match runtime {
        "candle-native" if threads > 1 => Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| RuntimeError::Load {
                    runtime: "candle-native",
                    path: files.folder.clone(),
                    message: format!("building a rayon pool of {threads} threads: {e}"),
                })
                .and_then(|pool| candle_loop(files, inputs, Some(pool))),
        ),
        _ => None,
    }
}

fn onnx_file(
    runtime: &'static str,
    files: &ModelFiles,
) -> Result<std::path::PathBuf, RuntimeError> {
    files.onnx.clone().ok_or_else(|| RuntimeError::MissingFile {
        runtime,
        what: "model.onnx",
        path: files.folder.join("model.onnx"),
        fix: "export it with models/export.py",
    })
}

fn load_error<'a>(runtime: &'static str, path: &'a Path) -> impl Fn(String) -> RuntimeError + 'a {
    move |message| RuntimeError::Load {
        runtime,
        path: path.to_path_buf(),
        message,
    }
}

/// ONNX Runtime through `ort`: a session with `with_intra_threads`, `session.run` on the
/// named inputs.
fn ort_loop(
    files: &ModelFiles,
    threads: usize,
    inputs: &[HostTensor],
    ort_lib: Option<&Path>,
) -> Result<BareLoop, RuntimeError> {
    use ort::session::{Session, SessionInputValue};
    use ort::value::{DynValue, Tensor};
    let path = onnx_file("ort", files)?;
    let err = load_error("ort", &path);
    let lib = crate::ort_rt::library(ort_lib)?;
    let mut session = Session::builder(lib.environment())
        .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
        .and_then(|mut b| b.commit_from_file(&path))
        .map_err(|e| err(e.to_string()))?;
    let values: Vec<(String, DynValue)> = inputs
        .iter()
        .map(|t| {
            let shape = t.shape.clone();
            let v = match &t.data {
                TensorData::F32(d) => Tensor::from_array((shape, d.clone())).map(|x| x.into_dyn()),
                TensorData::I64(d) => Tensor::from_array((shape, d.clone())).map(|x| x.into_dyn()),
                TensorData::I32(d) => Tensor::from_array((shape, d.clone())).map(|x| x.into_dyn()),
                TensorData::Bool(d) => Tensor::from_array((shape, d.clone())).map(|x| x.into_dyn()),
            };
            v.map(|v| (t.name.clone(), v))
                .map_err(|e| err(format!("input '{}': {e}", t.name)))
        })
        .collect::<Result<_, _>>()?;
    Ok(BareLoop {
        recipe:
            "ort: Session::builder().with_intra_threads(N).commit_from_file(), session.run(inputs)",
        step: Box::new(move || {
            let feed: Vec<(&str, SessionInputValue<'_>)> = values
                .iter()
                .map(|(n, v)| (n.as_str(), SessionInputValue::from(v)))
                .collect();
            session.run(feed).map(drop).map_err(|e| e.to_string())
        }),
    })
}

/// tract, as its README: `model_for_path`, the input facts, `into_optimized`,
/// `into_runnable`, `run`; more than one thread through tract-linalg's default executor.
fn tract_loop(
    files: &ModelFiles,
    threads: usize,
    inputs: &[HostTensor],
) -> Result<BareLoop, RuntimeError> {
    use tract_onnx::prelude::*;
    let path = onnx_file("tract", files)?;
    let err = load_error("tract", &path);
    if threads > 1 {
        tract_linalg::multithread::set_default_executor(
            tract_linalg::multithread::Executor::multithread(threads),
        );
    }
    let tensors: Vec<Tensor> = inputs
        .iter()
        .map(|t| {
            let shape = t.shape.clone();
            let r =
                match &t.data {
                    TensorData::F32(d) => tract_ndarray::ArrayD::from_shape_vec(shape, d.clone())
                        .map(|a| a.into_tensor()),
                    TensorData::I64(d) => tract_ndarray::ArrayD::from_shape_vec(shape, d.clone())
                        .map(|a| a.into_tensor()),
                    TensorData::I32(d) => tract_ndarray::ArrayD::from_shape_vec(shape, d.clone())
                        .map(|a| a.into_tensor()),
                    TensorData::Bool(d) => tract_ndarray::ArrayD::from_shape_vec(shape, d.clone())
                        .map(|a| a.into_tensor()),
                };
            r.map_err(|e| err(format!("input '{}': {e}", t.name)))
        })
        .collect::<Result<_, _>>()?;
    let mut model = tract_onnx::onnx()
        .model_for_path(&path)
        .map_err(|e| err(format!("{e:#}")))?;
    for (i, t) in tensors.iter().enumerate() {
        model = model
            .with_input_fact(i, InferenceFact::dt_shape(t.datum_type(), t.shape()))
            .map_err(|e| err(format!("{e:#}")))?;
    }
    let plan = model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| err(format!("{e:#}")))?;
    let values: TVec<TValue> = tensors.into_iter().map(|t| t.into()).collect();
    Ok(BareLoop {
        recipe: "tract: model_for_path, with_input_fact, into_optimized, into_runnable, run (N>1: set_default_executor(multithread(N)))",
        step: Box::new(move || {
            plan.run(values.clone())
                .map(drop)
                .map_err(|e| format!("{e:#}"))
        }),
    })
}

/// candle-transformers' BERT, as its example: the config, `VarBuilder` on the mmapped
/// safetensors, `BertModel::load`, `forward`; with `pool`, each forward inside its `install`.
fn candle_loop(
    files: &ModelFiles,
    inputs: &[HostTensor],
    pool: Option<rayon::ThreadPool>,
) -> Result<BareLoop, RuntimeError> {
    use candle_core::{DType, Device, Tensor};
    use candle_transformers::models::bert::{BertModel, Config};
    let missing = |what: &'static str, name: &str| RuntimeError::MissingFile {
        runtime: "candle-native",
        what,
        path: files.folder.join(name),
        fix: "models/export.py writes it beside model.onnx",
    };
    let weights = files
        .safetensors
        .clone()
        .ok_or_else(|| missing("the checkpoint's weights", "model.safetensors"))?;
    let config_path = files
        .config
        .clone()
        .ok_or_else(|| missing("the checkpoint's config", "config.json"))?;
    let err = load_error("candle-native", &weights);
    let config: Config = std::fs::read(&config_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| err(format!("{}: {e}", config_path.display())))?;
    let device = Device::Cpu;
    // SAFETY: the weights file is not changed while it is mapped (as candle's examples).
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&[weights.as_path()], DType::F32, &device)
    }
    .map_err(|e| err(e.to_string()))?;
    let model = BertModel::load(vb, &config).map_err(|e| err(e.to_string()))?;
    let tensor = |name: &str| -> Result<Tensor, RuntimeError> {
        let t = inputs
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| RuntimeError::input("candle-native", format!("no input '{name}'")))?;
        let r = match &t.data {
            TensorData::I64(d) => Tensor::from_vec(d.clone(), t.shape.clone(), &device),
            TensorData::I32(d) => Tensor::from_vec(
                d.iter().map(|&x| x as i64).collect::<Vec<_>>(),
                t.shape.clone(),
                &device,
            ),
            _ => {
                return Err(RuntimeError::input(
                    "candle-native",
                    format!("input '{name}' is not integer"),
                ))
            }
        };
        r.map_err(|e| RuntimeError::input("candle-native", e.to_string()))
    };
    let ids = tensor("input_ids")?;
    let mask = tensor("attention_mask")?;
    let types = match tensor("token_type_ids") {
        Ok(t) => t,
        Err(_) => ids.zeros_like().map_err(|e| err(e.to_string()))?,
    };
    let forward = move || {
        model
            .forward(&ids, &types, Some(&mask))
            .map(drop)
            .map_err(|e| e.to_string())
    };
    Ok(match pool {
        None => BareLoop {
            recipe: "candle-native: VarBuilder::from_mmaped_safetensors, BertModel::load, forward (threads: RAYON_NUM_THREADS)",
            step: Box::new(forward),
        },
        Some(pool) => BareLoop {
            recipe: "candle-native advised: the same, each forward inside a rayon pool's install (docs/performance.md, Fidelity)",
            step: Box::new(move || pool.install(&forward)),
        },
    })
}
