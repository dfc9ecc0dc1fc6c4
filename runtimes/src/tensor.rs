//! Host tensors: the one representation every runtime takes inputs from and gives outputs in.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float32,
    Float16,
    Float64,
    Int64,
    Int32,
    Bool,
    /// A type the harness cannot generate or compare; the ONNX name is kept for messages.
    #[serde(other)]
    Other,
}

impl DType {
    /// Bytes per element; None for a type the harness does not handle.
    pub fn size_bytes(&self) -> Option<usize> {
        Some(match self {
            DType::Float32 | DType::Int32 => 4,
            DType::Int64 | DType::Float64 => 8,
            DType::Bool => 1,
            DType::Float16 => 2,
            DType::Other => return None,
        })
    }

    /// From the ONNX `TensorProto.DataType` enum value.
    pub fn from_onnx(code: i32) -> DType {
        match code {
            1 => DType::Float32,
            10 => DType::Float16,
            11 => DType::Float64,
            7 => DType::Int64,
            6 => DType::Int32,
            9 => DType::Bool,
            _ => DType::Other,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            DType::Float32 => "float32",
            DType::Float16 => "float16",
            DType::Float64 => "float64",
            DType::Int64 => "int64",
            DType::Int32 => "int32",
            DType::Bool => "bool",
            DType::Other => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::Float32,
            TensorData::I64(_) => DType::Int64,
            TensorData::I32(_) => DType::Int32,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    /// Integer data widened to i64 (what candle's embeddings take), None for floats.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match self {
            TensorData::I64(v) => Some(v.clone()),
            TensorData::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::Bool(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::F32(_) => None,
        }
    }

    /// Any data as f64, for comparisons.
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl HostTensor {
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: TensorData) -> HostTensor {
        HostTensor {
            name: name.into(),
            shape,
            data,
        }
    }

    pub fn shape_string(&self) -> String {
        shape_string(&self.shape)
    }
}

/// The three BERT encoder inputs for `batch` x `seq`: `input_ids` from `id(position)`, an
/// attention mask of ones, token types of zeros.
pub fn bert_inputs(batch: usize, seq: usize, id: impl Fn(usize) -> i64) -> Vec<HostTensor> {
    let n = batch * seq;
    let shape = vec![batch, seq];
    vec![
        HostTensor::new(
            "input_ids",
            shape.clone(),
            TensorData::I64((0..n).map(id).collect()),
        ),
        HostTensor::new("attention_mask", shape.clone(), TensorData::I64(vec![1; n])),
        HostTensor::new("token_type_ids", shape, TensorData::I64(vec![0; n])),
    ]
}

/// `[8, 128]` -> `8x128`.
pub fn shape_string(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// Writes tensors to one file: a JSON header line (names, shapes, dtypes), then each
/// tensor's elements, little-endian, in order. Used to hand outputs between processes.
pub fn write_tensors(path: &std::path::Path, tensors: &[HostTensor]) -> std::io::Result<()> {
    use std::io::Write;
    let header: Vec<serde_json::Value> = tensors
        .iter()
        .map(|t| serde_json::json!({"name": t.name, "shape": t.shape, "dtype": t.data.dtype()}))
        .collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    serde_json::to_writer(&mut f, &header)?;
    f.write_all(b"\n")?;
    for t in tensors {
        match &t.data {
            TensorData::F32(v) => v.iter().try_for_each(|x| f.write_all(&x.to_le_bytes()))?,
            TensorData::I64(v) => v.iter().try_for_each(|x| f.write_all(&x.to_le_bytes()))?,
            TensorData::I32(v) => v.iter().try_for_each(|x| f.write_all(&x.to_le_bytes()))?,
            TensorData::Bool(v) => v.iter().try_for_each(|&x| f.write_all(&[x as u8]))?,
        }
    }
    f.flush()
}

/// Reads what [`write_tensors`] wrote.
pub fn read_tensors(path: &std::path::Path) -> std::io::Result<Vec<HostTensor>> {
    let bytes = std::fs::read(path)?;
    let bad = |m: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {m}", path.display()),
        )
    };
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no header"))?;
    #[derive(Deserialize)]
    struct Head {
        name: String,
        shape: Vec<usize>,
        dtype: DType,
    }
    let heads: Vec<Head> = serde_json::from_slice(&bytes[..nl]).map_err(|e| bad(&e.to_string()))?;
    let mut rest = &bytes[nl + 1..];
    let mut take = |n: usize| -> std::io::Result<&[u8]> {
        if rest.len() < n {
            return Err(bad("truncated"));
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Ok(a)
    };
    heads
        .into_iter()
        .map(|h| {
            let n: usize = h.shape.iter().product();
            let data = match h.dtype {
                DType::Float32 => TensorData::F32(
                    take(n * 4)?
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                DType::Int64 => TensorData::I64(
                    take(n * 8)?
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                DType::Int32 => TensorData::I32(
                    take(n * 4)?
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                DType::Bool => TensorData::Bool(take(n)?.iter().map(|&b| b != 0).collect()),
                other => return Err(bad(&format!("unexpected dtype {other:?}"))),
            };
            Ok(HostTensor::new(h.name, h.shape, data))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_through_a_file() {
        let ts = vec![
            HostTensor::new(
                "a",
                vec![2, 3],
                TensorData::F32(vec![1.5, -2.0, 0.0, 3.25, 1e-7, f32::MAX]),
            ),
            HostTensor::new("b", vec![2], TensorData::I64(vec![-1, i64::MAX])),
            HostTensor::new("c", vec![1], TensorData::I32(vec![7])),
            HostTensor::new("d", vec![2], TensorData::Bool(vec![true, false])),
        ];
        let p = std::env::temp_dir().join(format!("tensors-{}.bin", std::process::id()));
        write_tensors(&p, &ts).unwrap();
        assert_eq!(read_tensors(&p).unwrap(), ts);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert!(read_tensors(&p)
            .unwrap_err()
            .to_string()
            .contains("truncated"));
    }
}
