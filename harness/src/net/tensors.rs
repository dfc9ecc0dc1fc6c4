//! Row-wise tensor surgery for the server's batcher: stack requests along the batch
//! dimension (padding the sequence dimension with zeros where allowed) and cut the outputs
//! back into one piece per request. Also the KServe datatype names.

use runtimes::{DType, HostTensor, TensorData};

/// The KServe v2 datatype name of a dtype, when the protocol has one the harness handles.
pub fn kserve_dtype(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::Float32 => "FP32",
        DType::Float16 => "FP16",
        DType::Float64 => "FP64",
        DType::Int64 => "INT64",
        DType::Int32 => "INT32",
        DType::Bool => "BOOL",
        DType::Other => return None,
    })
}

pub fn dtype_from_kserve(s: &str) -> Option<DType> {
    Some(match s {
        "FP32" => DType::Float32,
        "FP16" => DType::Float16,
        "FP64" => DType::Float64,
        "INT64" => DType::Int64,
        "INT32" => DType::Int32,
        "BOOL" => DType::Bool,
        _ => return None,
    })
}

/// Little-endian, row-major bytes (the KServe binary extension and gRPC raw contents).
pub fn to_le_bytes(d: &TensorData) -> Vec<u8> {
    le_bytes(d).into_owned()
}

/// The tensor's little-endian bytes, borrowed where the machine stores them so (every
/// little-endian one, for every type but bool): an answer's tensors are then copied once,
/// into the body, not converted number by number first.
pub fn le_bytes(d: &TensorData) -> std::borrow::Cow<'_, [u8]> {
    #[cfg(target_endian = "little")]
    {
        fn raw<T>(v: &[T]) -> std::borrow::Cow<'_, [u8]> {
            // SAFETY: f32, i64 and i32 have no padding and every byte of them is initialised;
            // the slice covers exactly the vector's elements and lives as long as `v`.
            std::borrow::Cow::Borrowed(unsafe {
                std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v))
            })
        }
        match d {
            TensorData::F32(v) => return raw(v),
            TensorData::I64(v) => return raw(v),
            TensorData::I32(v) => return raw(v),
            TensorData::Bool(_) => {}
        }
    }
    std::borrow::Cow::Owned(converted(d))
}

/// The tensor's little-endian bytes as a buffer of their own, without a copy where the
/// machine stores them so ([`le_bytes`]): an answer's body then points at the output itself.
pub fn into_le_bytes(d: TensorData) -> bytes::Bytes {
    /// A tensor whose memory already is its little-endian bytes.
    struct Raw(TensorData);
    impl AsRef<[u8]> for Raw {
        fn as_ref(&self) -> &[u8] {
            match le_bytes(&self.0) {
                std::borrow::Cow::Borrowed(b) => b,
                std::borrow::Cow::Owned(_) => unreachable!("built only where le_bytes borrows"),
            }
        }
    }
    // Where `le_bytes` borrows: a little-endian machine, any type but bool.
    if cfg!(target_endian = "little") && !matches!(d, TensorData::Bool(_)) {
        bytes::Bytes::from_owner(Raw(d))
    } else {
        bytes::Bytes::from(converted(&d))
    }
}

/// Little-endian bytes, number by number.
fn converted(d: &TensorData) -> Vec<u8> {
    match d {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
    }
}

/// Parses little-endian bytes as `dtype`; the byte count must match `elements` exactly.
pub fn from_le_bytes(dtype: DType, bytes: &[u8], elements: usize) -> Result<TensorData, String> {
    let size = dtype.size_bytes().ok_or("unsupported datatype")?;
    let want = elements.checked_mul(size).ok_or("the shape is too large")?;
    if bytes.len() != want {
        return Err(format!(
            "{} bytes given, the shape needs {want} ({elements} elements of {size} bytes)",
            bytes.len()
        ));
    }
    Ok(match dtype {
        DType::Float32 => TensorData::F32(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DType::Int32 => TensorData::I32(
            bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DType::Int64 => TensorData::I64(
            bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        other => return Err(format!("datatype {} is not supported", other.as_str())),
    })
}

fn empty_like(d: &TensorData, capacity: usize) -> TensorData {
    match d {
        TensorData::F32(_) => TensorData::F32(Vec::with_capacity(capacity)),
        TensorData::I64(_) => TensorData::I64(Vec::with_capacity(capacity)),
        TensorData::I32(_) => TensorData::I32(Vec::with_capacity(capacity)),
        TensorData::Bool(_) => TensorData::Bool(Vec::with_capacity(capacity)),
    }
}

/// Appends `src[range]` to `dst` (same variant), then `zeros` zero elements.
fn extend(dst: &mut TensorData, src: &TensorData, range: std::ops::Range<usize>, zeros: usize) {
    match (dst, src) {
        (TensorData::F32(d), TensorData::F32(s)) => {
            d.extend_from_slice(&s[range]);
            d.resize(d.len() + zeros, 0.0);
        }
        (TensorData::I64(d), TensorData::I64(s)) => {
            d.extend_from_slice(&s[range]);
            d.resize(d.len() + zeros, 0);
        }
        (TensorData::I32(d), TensorData::I32(s)) => {
            d.extend_from_slice(&s[range]);
            d.resize(d.len() + zeros, 0);
        }
        (TensorData::Bool(d), TensorData::Bool(s)) => {
            d.extend_from_slice(&s[range]);
            d.resize(d.len() + zeros, false);
        }
        _ => {}
    }
}

/// Stacks tensors (same name, dtype and rank; shape[0] is each one's row count) along
/// dimension 0. With `pad`, dimension 1 may differ and is padded with zeros at the end to the
/// largest; every other dimension must match (the batcher checks before calling).
pub fn stack(parts: &[&HostTensor], pad: bool) -> HostTensor {
    let first = parts[0];
    let rank = first.shape.len();
    let mut shape = first.shape.clone();
    shape[0] = parts.iter().map(|t| t.shape[0]).sum();
    if pad && rank >= 2 {
        shape[1] = parts.iter().map(|t| t.shape[1]).max().unwrap_or(0);
    }
    let total: usize = shape.iter().product();
    let mut data = empty_like(&first.data, total);
    for t in parts {
        if pad && rank >= 2 && t.shape[1] < shape[1] {
            // Row by row: each row's dim-1 slab is followed by zeros.
            let inner: usize = t.shape[2..].iter().product();
            let have = t.shape[1] * inner;
            let want = shape[1] * inner;
            for r in 0..t.shape[0] {
                extend(&mut data, &t.data, r * have..(r + 1) * have, want - have);
            }
        } else {
            extend(&mut data, &t.data, 0..t.data.len(), 0);
        }
    }
    HostTensor::new(first.name.clone(), shape, data)
}

/// Rows `start..start + rows` of `t`; with `keep_dim1`, dimension 1 is cut back to that many
/// entries (undoing the batcher's padding).
pub fn rows(t: &HostTensor, start: usize, rows: usize, keep_dim1: Option<usize>) -> HostTensor {
    let per_row: usize = t.shape[1..].iter().product();
    let mut shape = t.shape.clone();
    shape[0] = rows;
    match keep_dim1 {
        Some(k) if t.shape.len() >= 2 && k < t.shape[1] => {
            let inner: usize = t.shape[2..].iter().product();
            shape[1] = k;
            let mut data = empty_like(&t.data, rows * k * inner);
            for r in start..start + rows {
                let at = r * per_row;
                extend(&mut data, &t.data, at..at + k * inner, 0);
            }
            HostTensor::new(t.name.clone(), shape, data)
        }
        _ => {
            let mut data = empty_like(&t.data, rows * per_row);
            extend(
                &mut data,
                &t.data,
                start * per_row..(start + rows) * per_row,
                0,
            );
            HostTensor::new(t.name.clone(), shape, data)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: Vec<usize>, v: Vec<i64>) -> HostTensor {
        HostTensor::new("x", shape, TensorData::I64(v))
    }

    #[test]
    fn stack_pads_dim1_and_rows_undoes_it() {
        let a = t(vec![1, 2], vec![1, 2]);
        let b = t(vec![2, 3], vec![3, 4, 5, 6, 7, 8]);
        let s = stack(&[&a, &b], true);
        assert_eq!(s.shape, vec![3, 3]);
        assert_eq!(s.data, TensorData::I64(vec![1, 2, 0, 3, 4, 5, 6, 7, 8]));
        assert_eq!(rows(&s, 0, 1, Some(2)), a);
        assert_eq!(rows(&s, 1, 2, Some(3)), b);
    }

    #[test]
    fn stack_pads_rank3_rows() {
        let a = HostTensor::new("h", vec![1, 1, 2], TensorData::F32(vec![1.0, 2.0]));
        let b = HostTensor::new(
            "h",
            vec![1, 2, 2],
            TensorData::F32(vec![3.0, 4.0, 5.0, 6.0]),
        );
        let s = stack(&[&a, &b], true);
        assert_eq!(s.shape, vec![2, 2, 2]);
        assert_eq!(
            s.data,
            TensorData::F32(vec![1.0, 2.0, 0.0, 0.0, 3.0, 4.0, 5.0, 6.0])
        );
        assert_eq!(rows(&s, 0, 1, Some(1)), a);
    }

    #[test]
    fn le_bytes_round_trip_and_length_checks() {
        let d = TensorData::I64(vec![1, -2, 300]);
        let b = to_le_bytes(&d);
        assert_eq!(b, converted(&d), "borrowed and converted bytes agree");
        assert_eq!(from_le_bytes(DType::Int64, &b, 3).unwrap(), d);
        let e = from_le_bytes(DType::Int64, &b, 4).unwrap_err();
        assert!(e.contains("24 bytes given, the shape needs 32"), "{e}");
        assert!(from_le_bytes(DType::Int64, &b, usize::MAX).is_err());
        let f = TensorData::F32(vec![0.5, -1.25]);
        assert_eq!(le_bytes(&f).as_ref(), &converted(&f)[..]);
        let flags = TensorData::Bool(vec![true, false]);
        assert_eq!(le_bytes(&flags).as_ref(), &[1u8, 0][..]);
        // Owned, the same bytes: the tensor's own memory where it can be, else converted.
        for d in [
            f.clone(),
            d.clone(),
            TensorData::I32(vec![7, -8]),
            flags.clone(),
        ] {
            assert_eq!(&into_le_bytes(d.clone())[..], &converted(&d)[..]);
        }
        let v = vec![1.0f32; 1000];
        let at = v.as_ptr() as usize;
        let owned = into_le_bytes(TensorData::F32(v));
        #[cfg(target_endian = "little")]
        assert_eq!(owned.as_ptr() as usize, at, "not copied");
        assert_eq!(owned.len(), 4000);
        assert_eq!(
            from_le_bytes(DType::Float32, &to_le_bytes(&f), 2).unwrap(),
            f
        );
    }
}
