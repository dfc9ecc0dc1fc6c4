//! Input tensors generated from the model's declared inputs. Symbolic dims are set from
//! `--batch`, `--seq` or `--shape name=d0xd1`; token ids fall inside the vocabulary, attention
//! masks are ones and token types zeros; data is seeded, and the very same tensors feed
//! every runtime.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use runtimes::{DType, Dim, HostTensor, ModelInfo, TensorData};
use serde::Serialize;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InputError {
    #[error("--shape {arg}: {why} (expected NAME=D0xD1..., e.g. input_ids=8x128)")]
    BadShapeArg { arg: String, why: String },
    #[error("--shape {name}=...: the model has no input '{name}' (its inputs: {inputs})")]
    UnknownInput { name: String, inputs: String },
    #[error("--shape {name}={given}: the model declares {name} as {declared}: {why}")]
    ShapeMismatch {
        name: String,
        given: String,
        declared: String,
        why: String,
    },
    #[error("input '{name}' dim {index} ('{symbol}') is symbolic and neither batch nor sequence; set it with --shape {name}=...")]
    UnboundDim {
        name: String,
        index: usize,
        symbol: String,
    },
    #[error("sequence length {seq} exceeds the model's max_position_embeddings {max}; use --seq {max} or less")]
    SeqTooLong { seq: usize, max: usize },
    #[error("input '{name}' has dtype {dtype}, which the harness cannot generate")]
    UnsupportedDType { name: String, dtype: String },
    #[error("{0} must be at least 1")]
    Zero(String),
    #[error("the inputs of shape {shape} would need {need} of memory, more than a quarter of this machine's {total}: use a smaller --batch, --seq or --shape")]
    TooLarge {
        shape: String,
        need: String,
        total: String,
    },
}

fn gib(bytes: u128) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Refuses inputs that cannot fit before anything is allocated: their bytes, computed without
/// overflow, against a quarter of the machine's memory (the runtimes need many times the
/// inputs for activations and outputs).
fn check_size(info: &ModelInfo, inputs: &[(String, Vec<usize>)]) -> Result<(), InputError> {
    // 16 GiB when the machine's memory cannot be read.
    let total = crate::environment::memory_total_bytes().unwrap_or(16 << 30);
    let mut need: u128 = 0;
    for (spec, (_, dims)) in info.inputs.iter().zip(inputs) {
        let elements = dims
            .iter()
            .try_fold(1u128, |a, &d| a.checked_mul(d as u128))
            .unwrap_or(u128::MAX);
        let size = spec.dtype.size_bytes().unwrap_or(8) as u128;
        need = need.saturating_add(elements.saturating_mul(size));
    }
    if need > (total / 4) as u128 {
        let shape = inputs
            .iter()
            .map(|(n, d)| format!("{n}={}", runtimes::tensor::shape_string(d)))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(InputError::TooLarge {
            shape,
            need: if need == u128::MAX {
                "more than 2^128 bytes".into()
            } else {
                gib(need)
            },
            total: gib(total as u128),
        });
    }
    Ok(())
}

/// `input_ids=8x128` -> ("input_ids", [8, 128]).
pub fn parse_shape_arg(arg: &str) -> Result<(String, Vec<usize>), InputError> {
    let bad = |why: &str| InputError::BadShapeArg {
        arg: arg.to_string(),
        why: why.to_string(),
    };
    let (name, dims) = arg.split_once('=').ok_or_else(|| bad("no '='"))?;
    if name.is_empty() {
        return Err(bad("empty input name"));
    }
    let dims = dims
        .split(['x', 'X', ','])
        .map(|d| match d.trim().parse::<usize>() {
            Ok(0) => Err(bad("dimensions must be at least 1")),
            Ok(n) => Ok(n),
            Err(_) => Err(bad(&format!("'{d}' is not a dimension"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), dims))
}

/// The sequence length when `--seq` is not given: 128, or the model's own limit
/// (max_position_embeddings) when that is smaller.
pub fn default_seq(info: &ModelInfo) -> usize {
    const DEFAULT: usize = 128;
    info.max_positions
        .filter(|&m| m > 0)
        .map_or(DEFAULT, |m| m.min(DEFAULT))
}

/// The concrete shapes of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioShape {
    /// One shape per model input, in the model's order.
    pub inputs: Vec<(String, Vec<usize>)>,
    /// Items per inference (the batch dimension), for throughput.
    pub batch: usize,
    /// The sequence length, when the model has one.
    pub seq: Option<usize>,
}

fn is_seq_symbol(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    ["seq", "len", "token", "time"]
        .iter()
        .any(|k| s.contains(k))
}

fn is_batch_symbol(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    s.contains("batch") || s == "n" || s == "b"
}

/// Sets every dimension of every input from `--shape` overrides, then `batch` and `seq`.
pub fn resolve_shape(
    info: &ModelInfo,
    batch: usize,
    seq: usize,
    overrides: &[(String, Vec<usize>)],
) -> Result<ScenarioShape, InputError> {
    if batch == 0 {
        return Err(InputError::Zero("--batch".into()));
    }
    if seq == 0 {
        return Err(InputError::Zero("--seq".into()));
    }
    let mut bound: BTreeMap<String, usize> = BTreeMap::new();
    let mut fixed: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (name, dims) in overrides {
        let spec = info
            .inputs
            .iter()
            .find(|i| &i.name == name)
            .ok_or_else(|| InputError::UnknownInput {
                name: name.clone(),
                inputs: info
                    .inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let mismatch = |why: String| InputError::ShapeMismatch {
            name: name.clone(),
            given: runtimes::tensor::shape_string(dims),
            declared: spec.dims_string(),
            why,
        };
        if spec.dims.len() != dims.len() {
            return Err(mismatch(format!(
                "rank {} given, {} declared",
                dims.len(),
                spec.dims.len()
            )));
        }
        for (i, (d, &v)) in spec.dims.iter().zip(dims).enumerate() {
            match d {
                Dim::Fixed(n) if *n != v => {
                    return Err(mismatch(format!("dim {i} is fixed at {n}, {v} given")))
                }
                Dim::Fixed(_) => {}
                Dim::Symbolic(s) => match bound.get(s) {
                    Some(&prev) if prev != v => {
                        return Err(mismatch(format!(
                            "dim {i} ('{s}') is already set to {prev} by another --shape"
                        )))
                    }
                    _ => {
                        bound.insert(s.clone(), v);
                    }
                },
            }
        }
        fixed.insert(name.clone(), dims.clone());
    }

    let mut inputs = Vec::new();
    let mut seq_used: Option<usize> = None;
    let mut batch_used: Option<usize> = None;
    for spec in &info.inputs {
        let dims: Vec<usize> = if let Some(d) = fixed.get(&spec.name) {
            d.clone()
        } else {
            spec.dims
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Dim::Fixed(n) => Ok(*n),
                    Dim::Symbolic(s) => {
                        if let Some(&v) = bound.get(s) {
                            Ok(v)
                        } else if is_batch_symbol(s) || (i == 0 && !is_seq_symbol(s)) {
                            Ok(batch)
                        } else if is_seq_symbol(s) || i == 1 {
                            Ok(seq)
                        } else {
                            Err(InputError::UnboundDim {
                                name: spec.name.clone(),
                                index: i,
                                symbol: s.clone(),
                            })
                        }
                    }
                })
                .collect::<Result<_, _>>()?
        };
        for (i, d) in spec.dims.iter().enumerate() {
            let sym = match d {
                Dim::Symbolic(s) => s.as_str(),
                Dim::Fixed(_) => "",
            };
            if i == 0 && batch_used.is_none() {
                batch_used = Some(dims[0]);
            }
            if i == 1 && (is_seq_symbol(sym) || (!sym.is_empty() && !is_batch_symbol(sym))) {
                seq_used.get_or_insert(dims[1]);
            }
        }
        inputs.push((spec.name.clone(), dims));
    }
    if let (Some(s), Some(max)) = (seq_used, info.max_positions) {
        if s > max {
            return Err(InputError::SeqTooLong { seq: s, max });
        }
    }
    check_size(info, &inputs)?;
    Ok(ScenarioShape {
        inputs,
        batch: batch_used.unwrap_or(1),
        seq: seq_used,
    })
}

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a of the name, so each input has its own stream and adding an input does not
    // change the others.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    seed ^ h
}

/// Generates one tensor per input for `shape`, deterministically from `seed`.
pub fn generate(
    info: &ModelInfo,
    shape: &ScenarioShape,
    seed: u64,
) -> Result<Vec<HostTensor>, InputError> {
    let vocab = info.vocab_size.unwrap_or(2).max(1) as i64;
    info.inputs
        .iter()
        .zip(&shape.inputs)
        .map(|(spec, (name, dims))| {
            let n: usize = dims.iter().product();
            let lname = name.to_ascii_lowercase();
            let mut rng = ChaCha8Rng::seed_from_u64(name_seed(seed, name));
            let ints = |rng: &mut ChaCha8Rng| -> Vec<i64> {
                if lname.contains("mask") {
                    vec![1; n]
                } else if lname.contains("type") || lname.contains("segment") {
                    // Sentence A: valid for every type vocabulary.
                    vec![0; n]
                } else if lname.contains("position") {
                    let last = *dims.last().unwrap_or(&1);
                    (0..n).map(|i| (i % last.max(1)) as i64).collect()
                } else {
                    (0..n).map(|_| rng.random_range(0..vocab)).collect()
                }
            };
            let data = match spec.dtype {
                DType::Int64 => TensorData::I64(ints(&mut rng)),
                DType::Int32 => {
                    TensorData::I32(ints(&mut rng).into_iter().map(|x| x as i32).collect())
                }
                DType::Float32 => {
                    TensorData::F32((0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect())
                }
                // Float values exactly representable in half precision: every runtime
                // converts them to float16 without rounding, so all see the same inputs.
                DType::Float16 => TensorData::F32(
                    (0..n)
                        .map(|_| half::f16::from_f32(rng.random_range(-1.0f32..1.0)).to_f32())
                        .collect(),
                ),
                DType::Bool => TensorData::Bool(vec![true; n]),
                other => {
                    return Err(InputError::UnsupportedDType {
                        name: name.clone(),
                        dtype: other.as_str().to_string(),
                    })
                }
            };
            Ok(HostTensor::new(name.clone(), dims.clone(), data))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtimes::TensorSpec;

    fn bert(max: Option<usize>) -> ModelInfo {
        let dims = vec![
            Dim::Symbolic("batch".into()),
            Dim::Symbolic("sequence".into()),
        ];
        ModelInfo {
            name: "m".into(),
            inputs: ["input_ids", "attention_mask", "token_type_ids"]
                .iter()
                .map(|n| TensorSpec {
                    name: n.to_string(),
                    dtype: DType::Int64,
                    dims: dims.clone(),
                })
                .collect(),
            outputs: vec![],
            spec_source: "test".into(),
            onnx_error: None,
            model_type: Some("bert".into()),
            vocab_size: Some(50),
            vocab_source: None,
            type_vocab_size: Some(2),
            max_positions: max,
            reference: None,
        }
    }

    #[test]
    fn batch_and_seq_fill_symbolic_dims() {
        let s = resolve_shape(&bert(Some(512)), 8, 128, &[]).unwrap();
        assert_eq!(s.batch, 8);
        assert_eq!(s.seq, Some(128));
        assert!(s.inputs.iter().all(|(_, d)| d == &vec![8, 128]));
    }

    #[test]
    fn shape_overrides_bind_symbols_for_every_input() {
        let o = vec![parse_shape_arg("input_ids=3x17").unwrap()];
        let s = resolve_shape(&bert(None), 1, 128, &o).unwrap();
        assert!(s.inputs.iter().all(|(_, d)| d == &vec![3, 17]), "{s:?}");
        assert_eq!((s.batch, s.seq), (3, Some(17)));
    }

    #[test]
    fn wrong_shapes_are_clear_errors() {
        let info = bert(Some(64));
        let e = resolve_shape(&info, 1, 8, &[parse_shape_arg("pixels=1x3").unwrap()]).unwrap_err();
        assert!(e.to_string().contains("no input 'pixels'"), "{e}");
        assert!(e.to_string().contains("input_ids, attention_mask"), "{e}");
        let e =
            resolve_shape(&info, 1, 8, &[parse_shape_arg("input_ids=1x2x3").unwrap()]).unwrap_err();
        assert!(e.to_string().contains("rank 3 given, 2 declared"), "{e}");
        let o = vec![
            parse_shape_arg("input_ids=1x8").unwrap(),
            parse_shape_arg("attention_mask=2x8").unwrap(),
        ];
        let e = resolve_shape(&info, 1, 8, &o).unwrap_err();
        assert!(e.to_string().contains("already set to 1"), "{e}");
        let e = resolve_shape(&info, 1, 65, &[]).unwrap_err();
        assert_eq!(e, InputError::SeqTooLong { seq: 65, max: 64 });
        assert!(parse_shape_arg("input_ids").is_err());
        assert!(parse_shape_arg("input_ids=8xabc").is_err());
        assert!(parse_shape_arg("input_ids=0x8").is_err());
        assert!(resolve_shape(&info, 0, 8, &[]).is_err());
    }

    #[test]
    fn fixed_dims_are_checked() {
        let mut info = bert(None);
        info.inputs[0].dims = vec![Dim::Fixed(1), Dim::Fixed(16)];
        let e =
            resolve_shape(&info, 1, 8, &[parse_shape_arg("input_ids=1x8").unwrap()]).unwrap_err();
        assert!(e.to_string().contains("dim 1 is fixed at 16"), "{e}");
        let s = resolve_shape(&info, 4, 8, &[]).unwrap();
        assert_eq!(s.inputs[0].1, vec![1, 16]);
    }

    #[test]
    fn generated_data_is_valid_and_seeded() {
        let info = bert(None);
        let s = resolve_shape(&info, 2, 32, &[]).unwrap();
        let a = generate(&info, &s, 7).unwrap();
        let b = generate(&info, &s, 7).unwrap();
        let c = generate(&info, &s, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a[0], c[0]);
        let TensorData::I64(ids) = &a[0].data else {
            panic!()
        };
        assert!(ids.iter().all(|&i| (0..50).contains(&i)));
        assert!(ids.iter().collect::<std::collections::HashSet<_>>().len() > 10);
        assert_eq!(a[1].data, TensorData::I64(vec![1; 64]));
        assert_eq!(a[2].data, TensorData::I64(vec![0; 64]));
    }
}
