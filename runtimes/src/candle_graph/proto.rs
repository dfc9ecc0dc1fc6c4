//! ONNX protobuf values as candle tensors: initializers, Constant values, declared types.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_onnx::onnx::{self, tensor_proto::DataType};

use crate::tensor::DType as HostDType;

/// The ONNX name of a `TensorProto.DataType` code, for messages.
pub(super) fn type_name(code: i32) -> String {
    DataType::try_from(code)
        .map(|d| d.as_str_name().to_lowercase())
        .unwrap_or_else(|_| format!("type {code}"))
}

fn le_chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

/// A tensor of the protobuf: floats as themselves (f32, f16, bf16, f64), every integer type
/// as i64, bool and uint8 as u8. Weights kept in an external file are refused by name.
pub(super) fn tensor(t: &onnx::TensorProto, _model: &Path) -> Result<Tensor, String> {
    if t.data_location == onnx::tensor_proto::DataLocation::External as i32 {
        return Err(
            "its data is stored outside the .onnx file (external data), which candle's graph engine does not read; export the model as one file"
                .into(),
        );
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(format!("negative dimension {d}"));
        }
        dims.push(d as usize);
    }
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {dims:?} has more elements than memory can hold"))?;
    let raw = t.raw_data.as_slice();
    let dev = &Device::Cpu;
    let check = |len: usize| -> Result<(), String> {
        if len == n {
            Ok(())
        } else {
            Err(format!(
                "{} values for a tensor of shape {dims:?} ({n} elements)",
                len
            ))
        }
    };
    let code = t.data_type;
    let dt = DataType::try_from(code).map_err(|_| format!("unknown data type {code}"))?;
    let tensor = match dt {
        DataType::Float => {
            let v: Vec<f32> = if raw.is_empty() {
                t.float_data.clone()
            } else {
                le_chunks::<4>(raw).map(f32::from_le_bytes).collect()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims, dev)
        }
        DataType::Double => {
            let v: Vec<f64> = if raw.is_empty() {
                t.double_data.clone()
            } else {
                le_chunks::<8>(raw).map(f64::from_le_bytes).collect()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims, dev)
        }
        DataType::Float16 | DataType::Bfloat16 => {
            let bits: Vec<u16> = if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as u16).collect()
            } else {
                le_chunks::<2>(raw).map(u16::from_le_bytes).collect()
            };
            check(bits.len())?;
            if dt == DataType::Float16 {
                let v: Vec<half::f16> = bits.into_iter().map(half::f16::from_bits).collect();
                Tensor::from_vec(v, dims, dev)
            } else {
                let v: Vec<half::bf16> = bits.into_iter().map(half::bf16::from_bits).collect();
                Tensor::from_vec(v, dims, dev)
            }
        }
        DataType::Int64 => {
            let v: Vec<i64> = if raw.is_empty() {
                t.int64_data.clone()
            } else {
                le_chunks::<8>(raw).map(i64::from_le_bytes).collect()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims, dev)
        }
        DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::Uint16 => {
            let v: Vec<i64> = if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as i64).collect()
            } else {
                match dt {
                    DataType::Int32 => le_chunks::<4>(raw)
                        .map(|b| i32::from_le_bytes(b) as i64)
                        .collect(),
                    DataType::Int16 => le_chunks::<2>(raw)
                        .map(|b| i16::from_le_bytes(b) as i64)
                        .collect(),
                    DataType::Uint16 => le_chunks::<2>(raw)
                        .map(|b| u16::from_le_bytes(b) as i64)
                        .collect(),
                    _ => raw.iter().map(|&b| b as i8 as i64).collect(),
                }
            };
            check(v.len())?;
            Tensor::from_vec(v, dims, dev)
        }
        DataType::Uint32 | DataType::Uint64 => {
            let v: Vec<i64> = if raw.is_empty() {
                t.uint64_data.iter().map(|&x| x as i64).collect()
            } else if dt == DataType::Uint32 {
                le_chunks::<4>(raw)
                    .map(|b| u32::from_le_bytes(b) as i64)
                    .collect()
            } else {
                le_chunks::<8>(raw)
                    .map(|b| u64::from_le_bytes(b) as i64)
                    .collect()
            };
            check(v.len())?;
            Tensor::from_vec(v, dims, dev)
        }
        DataType::Uint8 | DataType::Bool => {
            let v: Vec<u8> = if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as u8).collect()
            } else {
                raw.to_vec()
            };
            check(v.len())?;
            let v = if dt == DataType::Bool {
                v.into_iter().map(|x| (x != 0) as u8).collect()
            } else {
                v
            };
            Tensor::from_vec(v, dims, dev)
        }
        _ => return Err(format!("unsupported data type {}", type_name(code))),
    };
    tensor.map_err(|e| e.to_string())
}

/// The element type and rank a graph input or output declares.
pub(super) fn value_type(vi: &onnx::ValueInfoProto) -> (HostDType, Option<usize>) {
    match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(onnx::type_proto::Value::TensorType(t)) => (
            HostDType::from_onnx(t.elem_type),
            t.shape.as_ref().map(|s| s.dim.len()),
        ),
        _ => (HostDType::Other, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(data_type: DataType, dims: &[i64]) -> onnx::TensorProto {
        onnx::TensorProto {
            data_type: data_type as i32,
            dims: dims.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn integers_of_every_width_become_i64() {
        let mut t = proto(DataType::Int32, &[2, 2]);
        t.raw_data = [1i32, -2, 3, -4]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let x = tensor(&t, Path::new("m.onnx")).unwrap();
        assert_eq!(x.dims(), &[2, 2]);
        assert_eq!(x.to_vec2::<i64>().unwrap(), vec![vec![1, -2], vec![3, -4]]);

        let mut t = proto(DataType::Int8, &[3]);
        t.raw_data = vec![0xff, 1, 0x80];
        let x = tensor(&t, Path::new("m.onnx")).unwrap();
        assert_eq!(x.to_vec1::<i64>().unwrap(), vec![-1, 1, -128]);
    }

    #[test]
    fn typed_fields_and_scalars_are_read() {
        let mut t = proto(DataType::Float, &[]);
        t.float_data = vec![2.5];
        let x = tensor(&t, Path::new("m.onnx")).unwrap();
        assert_eq!(x.rank(), 0);
        assert_eq!(x.to_vec0::<f32>().unwrap(), 2.5);

        let mut t = proto(DataType::Float16, &[2]);
        t.int32_data = vec![
            half::f16::from_f32(1.5).to_bits() as i32,
            half::f16::from_f32(-2.0).to_bits() as i32,
        ];
        let x = tensor(&t, Path::new("m.onnx")).unwrap();
        let v: Vec<f32> = x
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(v, vec![1.5, -2.0]);

        let mut t = proto(DataType::Bool, &[3]);
        t.raw_data = vec![0, 7, 1];
        let x = tensor(&t, Path::new("m.onnx")).unwrap();
        assert_eq!(x.to_vec1::<u8>().unwrap(), vec![0, 1, 1]);
    }

    #[test]
    fn bad_tensors_are_errors_not_panics() {
        let mut t = proto(DataType::Float, &[4]);
        t.raw_data = vec![0; 12];
        let e = tensor(&t, Path::new("m.onnx")).unwrap_err();
        assert!(e.contains("3 values for a tensor of shape [4]"), "{e}");

        let t = proto(DataType::Float, &[-1]);
        assert!(tensor(&t, Path::new("m.onnx"))
            .unwrap_err()
            .contains("negative dimension"));

        let t = proto(DataType::String, &[1]);
        assert!(tensor(&t, Path::new("m.onnx"))
            .unwrap_err()
            .contains("unsupported data type string"));

        let mut t = proto(DataType::Float, &[1]);
        t.data_location = onnx::tensor_proto::DataLocation::External as i32;
        assert!(tensor(&t, Path::new("m.onnx"))
            .unwrap_err()
            .contains("external data"));
    }
}
