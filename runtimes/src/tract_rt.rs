//! tract (`tract-onnx`), CPU.
//!
//! Load parses the ONNX graph once. Each scenario shape gets its own plan: concrete input
//! facts are set before analysis (the torch exporter's symbolic dims do not survive tract's
//! analysis), then `into_optimized` and `into_runnable` -- all in `prepare`, outside the timed
//! region. Matrix products use tract's multithreaded executor, a rayon pool of N threads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;

use crate::model::{ModelFiles, ModelInfo};
use crate::tensor::{HostTensor, TensorData};
use crate::{Availability, LoadOptions, Loaded, Runtime, RuntimeError};

const NAME: &str = "tract";

pub struct TractRuntime;

impl Runtime for TractRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    fn about(&self) -> &'static str {
        "tract (tract-onnx), CPU"
    }

    fn check(&self, opts: &LoadOptions) -> Availability {
        if opts.device != crate::Device::Cpu {
            return Availability::Unavailable {
                reason: format!("{}: tract runs on the CPU only", opts.device.as_str()),
            };
        }
        Availability::Ready {
            version: crate::TRACT_VERSION.to_string(),
            detail: format!("tract-onnx {} (built in), CPU", crate::TRACT_VERSION),
        }
    }

    fn load(
        &self,
        model: &ModelFiles,
        _info: &ModelInfo,
        opts: &LoadOptions,
    ) -> Result<Box<dyn Loaded>, RuntimeError> {
        if opts.device != crate::Device::Cpu {
            return Err(RuntimeError::Unsupported {
                runtime: NAME,
                why: format!("{}: tract runs on the CPU only", opts.device.as_str()),
            });
        }
        let onnx = crate::onnx_file(NAME, model, opts.variant)?;
        // Intermediate value_info carries the exporter's symbolic dims (the fp16 and int8
        // rewrites keep them); tract infers every shape from the concrete inputs instead.
        let graph = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_path(&onnx)
            .map_err(|e| RuntimeError::Load {
                runtime: NAME,
                path: onnx.clone(),
                message: format!(
                    "{e:#} (is it a complete ONNX model? re-export it with models/export.py)"
                ),
            })?;
        // Operators tract does not know load as placeholders and fail only when the plan is
        // built: name them now, as "cannot run this model".
        let unknown: std::collections::BTreeSet<String> = graph
            .nodes()
            .iter()
            .filter_map(|n| {
                n.op_as::<tract_onnx::tract_core::ops::unimpl::UnimplementedOp>()
                    .map(|op| {
                        let name = op.name();
                        name.strip_prefix("Unimplemented(")
                            .and_then(|s| s.strip_suffix(')'))
                            .unwrap_or(&name)
                            .to_string()
                    })
            })
            .collect();
        if !unknown.is_empty() {
            return Err(RuntimeError::Unsupported {
                runtime: NAME,
                why: format!(
                    "tract has no ONNX operator {} (in {})",
                    unknown.into_iter().collect::<Vec<_>>().join(", "),
                    onnx.display()
                ),
            });
        }
        let input_names = graph
            .input_outlets()
            .map_err(|e| RuntimeError::Load {
                runtime: NAME,
                path: onnx.clone(),
                message: format!("{e:#}"),
            })?
            .iter()
            .map(|o| graph.node(o.node).name.clone())
            .collect();
        // The ONNX names of the graph outputs, taken before optimisation renames nodes.
        let output_names = graph
            .output_outlets()
            .map(|outs| {
                outs.iter()
                    .map(|o| {
                        graph
                            .outlet_label(*o)
                            .map(str::to_string)
                            .unwrap_or_else(|| graph.node(o.node).name.clone())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let threads = opts.threads.max(1);
        let executor = executor(threads, opts.cpus.as_deref())?;
        Ok(Box::new(TractLoaded {
            path: onnx,
            graph: Arc::new(graph),
            input_names,
            output_names,
            plans: Arc::new(Mutex::new(HashMap::new())),
            current: None,
            executor,
            threads,
            cpus: opts.cpus.clone(),
        }))
    }
}

type Plan = Arc<TypedRunnableModel>;

/// tract's matmul executor for `threads`: a rayon pool of its own, or inline for one thread.
fn executor(threads: usize, cpus: Option<&[usize]>) -> Result<Executor, RuntimeError> {
    Ok(match crate::rayon_pool(NAME, threads, cpus)? {
        Some(pool) => Executor::MultiThread(pool),
        None => Executor::SingleThread,
    })
}

struct Prepared {
    state: TypedSimpleState,
    inputs: TVec<TValue>,
}

struct TractLoaded {
    path: PathBuf,
    /// The parsed graph and the per-shape plans are shared between workers; each worker
    /// has its own state (`SimpleState`) and executor pool.
    graph: Arc<InferenceModel>,
    input_names: Vec<String>,
    output_names: Vec<String>,
    /// One optimised plan per input shape set, built on first use.
    plans: Arc<Mutex<HashMap<Vec<Vec<usize>>, Plan>>>,
    current: Option<Prepared>,
    executor: Executor,
    threads: usize,
    cpus: Option<Vec<usize>>,
}

/// Whether the graph declares input `i` as float16 (the harness generates float values; they
/// are converted to half precision for it).
fn declares_f16(graph: &InferenceModel, i: usize) -> bool {
    graph
        .input_fact(i)
        .ok()
        .and_then(|f| tract_onnx::tract_hir::infer::Factoid::concretize(&f.datum_type))
        == Some(DatumType::F16)
}

fn to_tensor(t: &HostTensor, f16: bool) -> TractResult<Tensor> {
    Ok(match &t.data {
        TensorData::F32(v) if f16 => Tensor::from_shape(&t.shape, v)?
            .cast_to::<half::f16>()?
            .into_owned(),
        TensorData::F32(v) => Tensor::from_shape(&t.shape, v)?,
        TensorData::I64(v) => Tensor::from_shape(&t.shape, v)?,
        TensorData::I32(v) => Tensor::from_shape(&t.shape, v)?,
        TensorData::Bool(v) => Tensor::from_shape(&t.shape, v)?,
    })
}

/// A tensor's elements in logical (row-major) order.
fn plain<D: Datum + Clone>(t: &Tensor) -> Result<Vec<D>, RuntimeError> {
    Ok(t.to_plain_array_view::<D>()
        .map_err(|e| RuntimeError::inference(NAME, e))?
        .iter()
        .cloned()
        .collect())
}

fn from_tensor(name: &str, t: &Tensor) -> Result<HostTensor, RuntimeError> {
    let shape = t.shape().to_vec();
    let data = match t.datum_type() {
        DatumType::F32 => TensorData::F32(plain::<f32>(t)?),
        DatumType::I64 => TensorData::I64(plain::<i64>(t)?),
        DatumType::I32 => TensorData::I32(plain::<i32>(t)?),
        _ => {
            let f = t
                .cast_to::<f32>()
                .map_err(|e| RuntimeError::inference(NAME, e))?;
            TensorData::F32(plain::<f32>(&f)?)
        }
    };
    Ok(HostTensor::new(name, shape, data))
}

impl TractLoaded {
    fn plan_for(&mut self, ordered: &[&HostTensor]) -> Result<Plan, RuntimeError> {
        let key: Vec<Vec<usize>> = ordered.iter().map(|t| t.shape.clone()).collect();
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = plans.get(&key) {
            return Ok(p.clone());
        }
        let mut model = (*self.graph).clone();
        for (i, t) in ordered.iter().enumerate() {
            let dt = match t.data {
                TensorData::F32(_) if declares_f16(&self.graph, i) => DatumType::F16,
                TensorData::F32(_) => f32::datum_type(),
                TensorData::I64(_) => i64::datum_type(),
                TensorData::I32(_) => i32::datum_type(),
                TensorData::Bool(_) => bool::datum_type(),
            };
            model = model
                .with_input_fact(i, InferenceFact::dt_shape(dt, &t.shape))
                .map_err(|e| RuntimeError::input(NAME, format!("input '{}': {e:#}", t.name)))?;
        }
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| RuntimeError::Load {
                runtime: NAME,
                path: self.path.clone(),
                message: format!("building a plan for shapes {key:?}: {e:#}"),
            })?;
        plans.insert(key, plan.clone());
        Ok(plan)
    }

    fn run_once(&mut self) -> Result<TVec<TValue>, RuntimeError> {
        let p = self
            .current
            .as_mut()
            .ok_or_else(|| RuntimeError::input(NAME, "run before prepare"))?;
        let inputs = p.inputs.clone();
        let state = &mut p.state;
        match &self.executor {
            Executor::SingleThread => state.run(inputs),
            ex => multithread_tract_scope(ex.clone(), || state.run(inputs)),
        }
        .map_err(|e| RuntimeError::inference(NAME, format!("{e:#}")))
    }
}

impl Loaded for TractLoaded {
    fn applied(&self) -> Vec<(String, String)> {
        let exec = if self.threads > 1 {
            format!("multithread (rayon pool of {} threads)", self.threads)
        } else {
            "single thread".into()
        };
        vec![
            ("threads".into(), self.threads.to_string()),
            ("executor".into(), exec),
            (
                "plan".into(),
                "concrete input facts, into_optimized, into_runnable per shape".into(),
            ),
            ("model_file".into(), self.path.display().to_string()),
            (
                "worker_cpus".into(),
                crate::cpus_label(self.threads, self.cpus.as_deref()),
            ),
        ]
    }

    fn prepare(&mut self, inputs: &[HostTensor]) -> Result<(), RuntimeError> {
        let names = self.input_names.clone();
        let ordered: Vec<&HostTensor> = names
            .iter()
            .map(|n| {
                inputs.iter().find(|t| &t.name == n).ok_or_else(|| {
                    RuntimeError::input(NAME, format!("the model's input '{n}' was not given"))
                })
            })
            .collect::<Result<_, _>>()?;
        let plan = self.plan_for(&ordered)?;
        let values = ordered
            .iter()
            .enumerate()
            .map(|(i, t)| {
                to_tensor(t, declares_f16(&self.graph, i))
                    .map(|t| t.into_tvalue())
                    .map_err(|e| RuntimeError::input(NAME, format!("input '{}': {e:#}", t.name)))
            })
            .collect::<Result<TVec<_>, _>>()?;
        let state = TypedSimpleState::new(&plan)
            .map_err(|e| RuntimeError::inference(NAME, format!("{e:#}")))?;
        self.current = Some(Prepared {
            state,
            inputs: values,
        });
        Ok(())
    }

    fn run(&mut self) -> Result<(), RuntimeError> {
        self.run_once().map(drop)
    }

    fn share(&self) -> Option<Result<Box<dyn Loaded>, RuntimeError>> {
        let executor = match executor(self.threads, self.cpus.as_deref()) {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok(Box::new(TractLoaded {
            path: self.path.clone(),
            graph: self.graph.clone(),
            input_names: self.input_names.clone(),
            output_names: self.output_names.clone(),
            plans: self.plans.clone(),
            current: None,
            executor,
            threads: self.threads,
            cpus: self.cpus.clone(),
        })))
    }

    fn infer(&mut self) -> Result<Vec<HostTensor>, RuntimeError> {
        let outputs = self.run_once()?;
        outputs
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let name = self
                    .output_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("output_{i}"));
                from_tensor(&name, v)
            })
            .collect()
    }
}
