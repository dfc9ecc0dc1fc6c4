//! candle (`candle-core`, `candle-transformers`), CPU, f32.
//!
//! candle does not read ONNX: it runs native architectures from the same checkpoint's
//! `model.safetensors` + `config.json` that the exporter writes beside `model.onnx`. BERT
//! encoders (`model_type: bert`) run through `candle_transformers::models::bert::BertModel`;
//! anything else is "unsupported by candle", not an error for the whole run.
//!
//! Threads: candle's matmul splits work into `RAYON_NUM_THREADS` parts (read on every call)
//! and runs them on the current rayon pool; inference runs inside a pool of N threads, with
//! that variable set to N for the duration of the scenario.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

use crate::model::{ModelFiles, ModelInfo};
use crate::tensor::{HostTensor, TensorData};
use crate::{Availability, LoadOptions, Loaded, Runtime, RuntimeError};

const NAME: &str = "candle";
const SUPPORTED: &[&str] = &["bert"];

pub struct CandleRuntime;

fn unsupported(why: String) -> RuntimeError {
    RuntimeError::Unsupported { runtime: NAME, why }
}

impl Runtime for CandleRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(&self, _opts: &LoadOptions) -> Availability {
        Availability::Ready {
            version: crate::CANDLE_VERSION.to_string(),
            detail: format!(
                "candle {} (built in), CPU f32; architectures: {} (from safetensors + config.json)",
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
        let config_path = model.config.as_ref().ok_or_else(|| RuntimeError::MissingFile {
            runtime: NAME,
            what: "the checkpoint's config.json",
            path: model.folder.join("config.json"),
            fix: "candle runs from the checkpoint, not the ONNX graph: export with models/export.py, which writes it beside model.onnx",
        })?;
        let weights = model.safetensors.as_ref().ok_or_else(|| RuntimeError::MissingFile {
            runtime: NAME,
            what: "the checkpoint's weights model.safetensors",
            path: model.folder.join("model.safetensors"),
            fix: "candle runs from the checkpoint, not the ONNX graph: export with models/export.py, which writes it beside model.onnx",
        })?;
        match info.model_type.as_deref() {
            Some(t) if SUPPORTED.contains(&t) => {}
            Some(t) => {
                return Err(unsupported(format!(
                    "model_type '{t}' in {} (candle runs: {})",
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
        let config = read_config(config_path)?;
        let load_err = |e: candle_core::Error| RuntimeError::Load {
            runtime: NAME,
            path: weights.clone(),
            message: e.to_string(),
        };
        // SAFETY: the file is memory-mapped read-only; the harness does not modify it while
        // it runs, and no other process is expected to.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[weights.as_path()], DType::F32, &Device::Cpu)
        }
        .map_err(load_err)?;
        let bert = BertModel::load(vb, &config).map_err(|e| {
            unsupported(format!(
                "{} does not hold a BERT encoder candle can load: {e}",
                weights.display()
            ))
        })?;
        let threads = opts.threads.max(1);
        let pool = crate::rayon_pool(NAME, threads)?;
        let output_name = info
            .outputs
            .first()
            .map(|o| o.name.clone())
            .unwrap_or_else(|| "last_hidden_state".into());
        Ok(Box::new(CandleLoaded {
            bert,
            pool,
            threads,
            output_name,
            prepared: None,
        }))
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

struct Prepared {
    input_ids: Tensor,
    token_type_ids: Tensor,
    attention_mask: Tensor,
}

struct CandleLoaded {
    bert: BertModel,
    pool: Option<Arc<rayon::ThreadPool>>,
    threads: usize,
    output_name: String,
    prepared: Option<Prepared>,
}

impl CandleLoaded {
    fn forward(&self) -> Result<Tensor, RuntimeError> {
        let p = self
            .prepared
            .as_ref()
            .ok_or_else(|| RuntimeError::input(NAME, "run before prepare"))?;
        let f = || {
            self.bert
                .forward(&p.input_ids, &p.token_type_ids, Some(&p.attention_mask))
        };
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
        .map_err(|e| RuntimeError::inference(NAME, e))
    }
}

impl Loaded for CandleLoaded {
    fn applied(&self) -> Vec<(String, String)> {
        let pool = match self.pool {
            Some(_) => format!("rayon pool of {} threads", self.threads),
            None => "inline on the measuring thread".into(),
        };
        vec![
            ("threads".into(), self.threads.to_string()),
            ("pool".into(), pool),
            ("RAYON_NUM_THREADS".into(), self.threads.to_string()),
            ("dtype".into(), "f32".into()),
            (
                "architecture".into(),
                "candle_transformers bert::BertModel".into(),
            ),
        ]
    }

    fn prepare(&mut self, inputs: &[HostTensor]) -> Result<(), RuntimeError> {
        // Read on every matmul: the split must match the pool this scenario runs in.
        std::env::set_var("RAYON_NUM_THREADS", self.threads.to_string());
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
        let tensor = |name: &str, fill: i64| -> Result<Tensor, RuntimeError> {
            let data = match inputs.iter().find(|t| t.name == name) {
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
                    t.data.to_i64().ok_or_else(|| {
                        RuntimeError::input(NAME, format!("{name} must be integer"))
                    })?
                }
                None => vec![fill; ids.data.len()],
            };
            Tensor::from_vec(data, ids.shape.as_slice(), &Device::Cpu)
                .map_err(|e| RuntimeError::inference(NAME, e))
        };
        self.prepared = Some(Prepared {
            input_ids: tensor("input_ids", 0)?,
            token_type_ids: tensor("token_type_ids", 0)?,
            attention_mask: tensor("attention_mask", 1)?,
        });
        Ok(())
    }

    fn run(&mut self) -> Result<(), RuntimeError> {
        self.forward().map(drop)
    }

    fn infer(&mut self) -> Result<Vec<HostTensor>, RuntimeError> {
        let out = self.forward()?;
        let shape = out.dims().to_vec();
        let data = out
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| RuntimeError::inference(NAME, e))?;
        Ok(vec![HostTensor::new(
            self.output_name.clone(),
            shape,
            TensorData::F32(data),
        )])
    }
}
