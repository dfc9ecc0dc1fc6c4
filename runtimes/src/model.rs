//! What a model is on disk (`ModelFiles`) and what the harness knows about it (`ModelInfo`):
//! its declared inputs and outputs, vocabulary and position limits, and the exporter's
//! reference outputs. Read once, independent of any runtime.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tensor::{DType, HostTensor, TensorData};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "model path {0} does not exist (pass a model folder with model.onnx, or a .onnx file)"
    )]
    NotFound(PathBuf),
    #[error("model folder {0} holds neither model.onnx nor model.safetensors + config.json; export one with `python models/export.py --checkpoint DIR --out {0}`")]
    EmptyFolder(PathBuf),
    #[error("{path} is not an .onnx file (pass a model folder or a .onnx file)")]
    NotOnnx { path: PathBuf },
    #[error("{path} is not a regular file (a pipe, socket or device cannot be read as a model): pass the model's file or folder")]
    NotRegular { path: PathBuf },
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot tell the model's inputs: {0}")]
    NoInputs(String),
}

/// The files of one model. A folder may hold `model.onnx` (ort, tract) and the checkpoint's
/// `model.safetensors` + `config.json` (candle); `manifest.json` comes from the exporter.
/// A plain `.onnx` path uses the same names beside it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelFiles {
    pub path: PathBuf,
    pub onnx: Option<PathBuf>,
    pub safetensors: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub manifest: Option<PathBuf>,
    /// ONNX files of the precision variants other than fp32 (`model.fp16.onnx`, ...).
    pub variants: BTreeMap<String, PathBuf>,
    /// Where the missing files were looked for (for messages).
    pub folder: PathBuf,
}

impl ModelFiles {
    /// The ONNX file of `variant`, or why there is none.
    pub fn onnx_for(&self, variant: crate::Variant) -> Result<&PathBuf, String> {
        let onnx = self
            .onnx
            .as_ref()
            .ok_or_else(|| format!("no model.onnx in {}", self.folder.display()))?;
        match variant {
            crate::Variant::Fp32 => Ok(onnx),
            v => self.variants.get(v.as_str()).ok_or_else(|| {
                let stem = onnx.file_stem().unwrap_or_default().to_string_lossy();
                format!(
                    "no {stem}.{}.onnx beside {} (models/export.py writes fp16 and int8 variants)",
                    v.as_str(),
                    onnx.display()
                )
            }),
        }
    }

    pub fn resolve(path: &Path) -> Result<ModelFiles, ModelError> {
        if !path.exists() {
            return Err(ModelError::NotFound(path.to_path_buf()));
        }
        let existing = |p: PathBuf| p.is_file().then_some(p);
        let (folder, onnx) = if path.is_dir() {
            (path.to_path_buf(), existing(path.join("model.onnx")))
        } else {
            if path.extension().and_then(|e| e.to_str()) != Some("onnx") {
                return Err(ModelError::NotOnnx {
                    path: path.to_path_buf(),
                });
            }
            // A FIFO would block the first read forever.
            if !path.is_file() {
                return Err(ModelError::NotRegular {
                    path: path.to_path_buf(),
                });
            }
            let folder = path
                .parent()
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        p.to_path_buf()
                    }
                })
                .unwrap_or_else(|| PathBuf::from("."));
            (folder, Some(path.to_path_buf()))
        };
        let mut variants = BTreeMap::new();
        if let Some(stem) = onnx
            .as_ref()
            .and_then(|o| o.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
        {
            for v in ["fp16", "bf16", "int8"] {
                if let Some(p) = existing(folder.join(format!("{stem}.{v}.onnx"))) {
                    variants.insert(v.to_string(), p);
                }
            }
        }
        let files = ModelFiles {
            path: path.to_path_buf(),
            variants,
            onnx,
            safetensors: existing(folder.join("model.safetensors")),
            config: existing(folder.join("config.json")),
            manifest: existing(folder.join("manifest.json")),
            folder,
        };
        if files.onnx.is_none() && (files.safetensors.is_none() || files.config.is_none()) {
            return Err(ModelError::EmptyFolder(path.to_path_buf()));
        }
        Ok(files)
    }
}

/// One dimension of a declared tensor: fixed, or named and set per scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(usize),
    Symbolic(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => write!(f, "{s}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<Dim>,
}

impl TensorSpec {
    pub fn dims_string(&self) -> String {
        let d: Vec<String> = self.dims.iter().map(|d| d.to_string()).collect();
        format!("[{}]", d.join(", "))
    }
}

/// Reference inputs and outputs the exporter computed with PyTorch.
#[derive(Debug, Clone)]
pub struct Reference {
    pub producer: String,
    pub inputs: Vec<HostTensor>,
    pub outputs: Vec<HostTensor>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Where `inputs`/`outputs` were read from.
    pub spec_source: String,
    /// Why the ONNX graph could not be read, when it could not (the runtimes that need it
    /// fail on their own; the others still run).
    pub onnx_error: Option<String>,
    pub model_type: Option<String>,
    pub vocab_size: Option<usize>,
    pub vocab_source: Option<String>,
    pub type_vocab_size: Option<usize>,
    pub max_positions: Option<usize>,
    #[serde(skip)]
    pub reference: Option<Reference>,
}

#[derive(Deserialize)]
struct Manifest {
    name: Option<String>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    vocab_size: Option<usize>,
    type_vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    /// The longest sequence the model takes, where it differs from its position table
    /// (RoBERTa numbers positions after the padding index: 514 positions, 512 tokens).
    max_sequence_length: Option<usize>,
    reference: Option<ManifestReference>,
}

#[derive(Deserialize)]
struct ManifestReference {
    producer: Option<String>,
    inputs: BTreeMap<String, ManifestTensor>,
    outputs: BTreeMap<String, ManifestTensor>,
}

#[derive(Deserialize)]
struct ManifestTensor {
    shape: Vec<usize>,
    data: Vec<f64>,
    /// The element type ("int64", "float32", ...); older manifests have none (their inputs
    /// are token ids, their outputs float32).
    dtype: Option<DType>,
}

fn read_json(path: &Path) -> Result<serde_json::Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Read {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })
}

fn usize_field(v: &serde_json::Value, key: &str) -> Option<usize> {
    v.get(key).and_then(|x| x.as_u64()).map(|x| x as usize)
}

/// The BERT encoder signature, for a checkpoint without a readable ONNX graph or manifest.
fn bert_signature(hidden: Option<usize>) -> (Vec<TensorSpec>, Vec<TensorSpec>) {
    let dims = vec![
        Dim::Symbolic("batch".into()),
        Dim::Symbolic("sequence".into()),
    ];
    let inputs = ["input_ids", "attention_mask", "token_type_ids"]
        .iter()
        .map(|n| TensorSpec {
            name: n.to_string(),
            dtype: DType::Int64,
            dims: dims.clone(),
        })
        .collect();
    let mut out_dims = dims;
    out_dims.push(hidden.map_or(Dim::Symbolic("hidden".into()), Dim::Fixed));
    let outputs = vec![TensorSpec {
        name: "last_hidden_state".into(),
        dtype: DType::Float32,
        dims: out_dims,
    }];
    (inputs, outputs)
}

impl ModelInfo {
    /// Reads the model's signature: from the ONNX graph when there is one, else from the
    /// exporter's manifest, else the BERT signature when config.json says BERT.
    pub fn read(files: &ModelFiles) -> Result<ModelInfo, ModelError> {
        let config = match &files.config {
            Some(p) => Some(read_json(p)?),
            None => None,
        };
        let manifest: Option<Manifest> = match &files.manifest {
            Some(p) => {
                let v = read_json(p)?;
                Some(serde_json::from_value(v).map_err(|e| ModelError::Read {
                    path: p.clone(),
                    message: format!("not an exporter manifest: {e}"),
                })?)
            }
            None => None,
        };

        let mut onnx_error = None;
        let mut graph = None;
        if let Some(onnx) = &files.onnx {
            match read_onnx_signature(onnx) {
                Ok(g) => graph = Some(g),
                Err(e) => onnx_error = Some(e),
            }
        }

        let cfg_usize = |k: &str| config.as_ref().and_then(|c| usize_field(c, k));
        let model_type = config
            .as_ref()
            .and_then(|c| c.get("model_type"))
            .and_then(|v| v.as_str())
            .map(str::to_string);

        let (inputs, outputs, spec_source) = if let Some(g) = &graph {
            (
                g.inputs.clone(),
                g.outputs.clone(),
                "ONNX graph".to_string(),
            )
        } else if let Some(m) = &manifest {
            (
                m.inputs.clone(),
                m.outputs.clone(),
                "manifest.json".to_string(),
            )
        } else if model_type.as_deref() == Some("bert") {
            let (i, o) = bert_signature(cfg_usize("hidden_size"));
            (i, o, "config.json (BERT signature)".to_string())
        } else {
            return Err(ModelError::NoInputs(match onnx_error {
                Some(e) => e,
                None => format!(
                    "{} has no readable model.onnx, manifest.json or BERT config.json",
                    files.folder.display()
                ),
            }));
        };

        let (vocab_size, vocab_source) =
            if let Some(v) = manifest.as_ref().and_then(|m| m.vocab_size) {
                (Some(v), Some("manifest.json".to_string()))
            } else if let Some(v) = cfg_usize("vocab_size") {
                (Some(v), Some("config.json".to_string()))
            } else if let Some(v) = graph.as_ref().and_then(|g| g.embedding_rows) {
                (Some(v), Some("ONNX embedding table".to_string()))
            } else {
                (None, None)
            };

        let reference = manifest
            .as_ref()
            .and_then(|m| m.reference.as_ref())
            .map(|r| Reference {
                producer: r.producer.clone().unwrap_or_else(|| "exporter".into()),
                inputs: manifest_tensors(&r.inputs, &inputs, true),
                outputs: manifest_tensors(&r.outputs, &outputs, false),
            });

        let name = manifest
            .as_ref()
            .and_then(|m| m.name.clone())
            .unwrap_or_else(|| {
                let p = if files.path.is_dir() {
                    files.path.clone()
                } else {
                    files.path.with_extension("")
                };
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".into())
            });

        Ok(ModelInfo {
            name,
            inputs,
            outputs,
            spec_source,
            onnx_error,
            model_type,
            vocab_size,
            vocab_source,
            type_vocab_size: manifest
                .as_ref()
                .and_then(|m| m.type_vocab_size)
                .or_else(|| cfg_usize("type_vocab_size")),
            max_positions: manifest
                .as_ref()
                .and_then(|m| m.max_sequence_length.or(m.max_position_embeddings))
                .or_else(|| cfg_usize("max_position_embeddings")),
            reference,
        })
    }
}

fn manifest_tensors(
    map: &BTreeMap<String, ManifestTensor>,
    specs: &[TensorSpec],
    integer: bool,
) -> Vec<HostTensor> {
    // Keep the model's declared order; names the model does not declare come last.
    let mut names: Vec<&String> = specs
        .iter()
        .filter_map(|s| map.get_key_value(&s.name).map(|(k, _)| k))
        .collect();
    names.extend(map.keys().filter(|k| !specs.iter().any(|s| &s.name == *k)));
    names
        .into_iter()
        .map(|n| {
            let t = &map[n];
            let declared = specs.iter().find(|s| &s.name == n).map(|s| s.dtype);
            let dtype = t.dtype.or(declared).unwrap_or(if integer {
                DType::Int64
            } else {
                DType::Float32
            });
            let data = match dtype {
                DType::Int64 => TensorData::I64(t.data.iter().map(|&x| x as i64).collect()),
                DType::Int32 => TensorData::I32(t.data.iter().map(|&x| x as i32).collect()),
                DType::Bool => TensorData::Bool(t.data.iter().map(|&x| x != 0.0).collect()),
                _ => TensorData::F32(t.data.iter().map(|&x| x as f32).collect()),
            };
            HostTensor::new(n.clone(), t.shape.clone(), data)
        })
        .collect()
}

struct GraphSignature {
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    /// Rows of an embedding table gathered by an integer graph input: the vocabulary size.
    embedding_rows: Option<usize>,
}

/// Parses the ONNX protobuf (through tract-onnx's generated types) for the graph's declared
/// inputs and outputs. Initializers listed as inputs (old exporters) are not inputs.
fn read_onnx_signature(path: &Path) -> Result<GraphSignature, String> {
    use tract_onnx::pb::{tensor_shape_proto::dimension::Value as DimValue, type_proto::Value};
    use tract_onnx::prelude::Framework;

    let proto = tract_onnx::onnx().proto_model_for_path(path).map_err(|e| {
        format!(
            "{} is not a readable ONNX model ({e}); re-export it with models/export.py",
            path.display()
        )
    })?;
    let graph = proto.graph.ok_or_else(|| {
        format!(
            "{} holds no graph; re-export it with models/export.py",
            path.display()
        )
    })?;
    let init: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    // An input's declared dim is a size (1 or more), a name, or unknown (absent, or -1 as
    // some exporters write it); 0 or another negative number cannot be a scenario's shape.
    // Outputs are only read, so theirs are taken as they come.
    let spec = |vi: &tract_onnx::pb::ValueInfoProto, input: bool| -> Result<TensorSpec, String> {
        let (dtype, dims) = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(Value::TensorType(t)) => {
                let mut dims = Vec::new();
                for (i, d) in t.shape.iter().flat_map(|s| s.dim.iter()).enumerate() {
                    dims.push(match &d.value {
                        Some(DimValue::DimValue(n)) if *n > 0 => Dim::Fixed(*n as usize),
                        Some(DimValue::DimValue(n)) if input && *n != -1 => {
                            return Err(format!(
                                "{}: input '{}' declares dim {i} as {n}{}; a dim is a size of at least 1 or a name such as 'batch': fix the export (models/export.py names the dynamic ones)",
                                path.display(),
                                vi.name,
                                if *n == 0 {
                                    " (no elements: nothing to measure)"
                                } else {
                                    ", which is not a size"
                                }
                            ))
                        }
                        Some(DimValue::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
                        _ => Dim::Symbolic(format!("{}_dim{i}", vi.name)),
                    });
                }
                (DType::from_onnx(t.elem_type), dims)
            }
            _ => (DType::Other, vec![]),
        };
        Ok(TensorSpec {
            name: vi.name.clone(),
            dtype,
            dims,
        })
    };
    let inputs: Vec<TensorSpec> = graph
        .input
        .iter()
        .filter(|i| !init.contains(i.name.as_str()))
        .map(|i| spec(i, true))
        .collect::<Result<_, _>>()?;
    if inputs.is_empty() {
        return Err(format!("{} declares no inputs", path.display()));
    }
    let outputs = graph
        .output
        .iter()
        .map(|o| spec(o, false))
        .collect::<Result<_, _>>()?;
    let input_names: std::collections::HashSet<&str> =
        inputs.iter().map(|i| i.name.as_str()).collect();
    let embedding_rows = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Gather" && n.input.len() == 2)
        .filter(|n| input_names.contains(n.input[1].as_str()))
        .find_map(|n| {
            graph
                .initializer
                .iter()
                .find(|t| t.name == n.input[0])
                .and_then(|t| t.dims.first().map(|&d| d as usize))
        });
    Ok(GraphSignature {
        inputs,
        outputs,
        embedding_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/tiny-bert")
    }

    #[test]
    fn reads_the_fixture_signature_from_the_graph() {
        let files = ModelFiles::resolve(&fixture()).unwrap();
        let info = ModelInfo::read(&files).unwrap();
        assert_eq!(info.spec_source, "ONNX graph");
        let names: Vec<_> = info.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["input_ids", "attention_mask", "token_type_ids"]);
        assert_eq!(info.inputs[0].dtype, DType::Int64);
        assert_eq!(
            info.inputs[0].dims,
            vec![
                Dim::Symbolic("batch".into()),
                Dim::Symbolic("sequence".into())
            ]
        );
        assert_eq!(info.outputs[0].name, "last_hidden_state");
        assert_eq!(info.vocab_size, Some(128));
        assert_eq!(info.max_positions, Some(64));
        let r = info.reference.unwrap();
        assert_eq!(r.inputs.len(), 3);
        assert_eq!(r.inputs[0].name, "input_ids");
        assert_eq!(r.outputs[0].shape, vec![2, 16, 32]);
    }

    #[test]
    fn a_plain_onnx_file_finds_nothing_it_does_not_have() {
        let dir = tempdir("plain");
        let onnx = dir.join("m.onnx");
        std::fs::copy(fixture().join("model.onnx"), &onnx).unwrap();
        let files = ModelFiles::resolve(&onnx).unwrap();
        assert!(files.safetensors.is_none() && files.config.is_none());
        let info = ModelInfo::read(&files).unwrap();
        assert_eq!(info.name, "m");
        // No manifest, no config: the vocabulary comes from the graph's embedding table.
        assert_eq!(info.vocab_size, Some(128));
        assert_eq!(info.vocab_source.as_deref(), Some("ONNX embedding table"));
    }

    #[test]
    fn garbage_onnx_is_reported_and_the_manifest_takes_over() {
        let dir = tempdir("garbage");
        for f in ["model.safetensors", "config.json", "manifest.json"] {
            std::fs::copy(fixture().join(f), dir.join(f)).unwrap();
        }
        std::fs::write(
            dir.join("model.onnx"),
            b"this is not a protobuf \xff\xff\xff",
        )
        .unwrap();
        let files = ModelFiles::resolve(&dir).unwrap();
        let info = ModelInfo::read(&files).unwrap();
        assert_eq!(info.spec_source, "manifest.json");
        assert!(info
            .onnx_error
            .unwrap()
            .contains("not a readable ONNX model"));
    }

    #[test]
    fn missing_paths_are_clear_errors() {
        let err = ModelFiles::resolve(Path::new("/no/such/model")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let dir = tempdir("empty");
        let err = ModelFiles::resolve(&dir).unwrap_err();
        assert!(err.to_string().contains("neither model.onnx"), "{err}");
        let txt = dir.join("x.txt");
        std::fs::write(&txt, "x").unwrap();
        let err = ModelFiles::resolve(&txt).unwrap_err();
        assert!(err.to_string().contains("not an .onnx file"), "{err}");
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("runtimes-model-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
