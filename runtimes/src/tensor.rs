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

/// `[8, 128]` -> `8x128`.
pub fn shape_string(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}
