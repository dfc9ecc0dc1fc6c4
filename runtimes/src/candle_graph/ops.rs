//! The ONNX operators evaluated here rather than by candle-onnx: those it lacks, and those it
//! evaluates wrongly or only in part for the exports this harness measures (each says why).

use candle_core::{DType, Device, Tensor, D};
use candle_onnx::onnx::{self, attribute_proto::AttributeType};

/// Operators this module evaluates (candle-onnx is never asked for these).
pub(super) const OWN: &[&str] = &[
    // Missing from candle-onnx.
    "LayerNormalization",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "ReduceL2",
    "Max",
    "Sum",
    "Mean",
    // candle-onnx: a Constant other than a `value` tensor fails; int32 tensors lose their shape.
    "Constant",
    // candle-onnx: Cast to bool truncates (0.5 -> false), to int8/16/uint16/32 fails.
    "Cast",
    // candle-onnx: refuses padding (torchvision ResNet's stem pads its max pool) and ceil_mode.
    "MaxPool",
    // candle-onnx: a Gemm without C indexes out of bounds; alpha/beta built as f32 only.
    "Gemm",
    // candle-onnx: axes as an attribute ignored (ReduceSum, opset < 13) or as an input
    // ignored (ReduceMean, opset 18); negative axes wrap.
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    // candle-onnx: `start`/`end` give the wrong length.
    "Shape",
    // candle-onnx: several negative axes resolve against the input's rank, not the output's.
    "Unsqueeze",
    // candle-onnx: `axes` as an attribute (opset < 13) ignored.
    "Squeeze",
    // candle-onnx: indices of rank 3 and more are a `todo!()`.
    "Gather",
    // candle-onnx: a negative axis wraps.
    "Flatten",
    // candle-onnx: integers fail (candle's cumsum is a matmul), exclusive/reverse refused.
    // RoBERTa numbers its positions with a CumSum over the int64 mask.
    "CumSum",
];

fn attr<'a>(node: &'a onnx::NodeProto, name: &str) -> Option<&'a onnx::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_i(node: &onnx::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

fn attr_f(node: &onnx::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

fn attr_ints(node: &onnx::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn arg<'a>(args: &'a [Option<Tensor>], i: usize, what: &str) -> Result<&'a Tensor, String> {
    args.get(i)
        .and_then(|a| a.as_ref())
        .ok_or_else(|| format!("its input {i} ({what}) is missing"))
}

fn opt_arg(args: &[Option<Tensor>], i: usize) -> Option<&Tensor> {
    args.get(i).and_then(|a| a.as_ref())
}

/// candle's error without the backtrace it carries when RUST_BACKTRACE is set.
pub(super) fn e(err: candle_core::Error) -> String {
    let text = err.to_string();
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// The values of a small integer tensor (axes, shapes, indices).
fn ints(t: &Tensor) -> Result<Vec<i64>, String> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::I64))
        .and_then(|t| t.to_vec1::<i64>())
        .map_err(e)
}

/// `axis` in -rank..rank as an index.
fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// Axes given as an attribute (older opsets) or as input 1 (newer); None when neither.
fn axes_of(node: &onnx::NodeProto, args: &[Option<Tensor>]) -> Result<Option<Vec<i64>>, String> {
    if let Some(a) = attr_ints(node, "axes") {
        return Ok(Some(a));
    }
    match opt_arg(args, 1) {
        Some(t) => ints(t).map(Some),
        None => Ok(None),
    }
}

/// The dtype's lowest value (padding for max pooling).
fn lowest(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => f64::from(half::f16::MIN),
        DType::BF16 => f64::from(half::bf16::MIN),
        DType::F64 => f64::MIN,
        DType::U8 | DType::U32 => 0.0,
        DType::I64 => i64::MIN as f64,
        _ => f64::from(f32::MIN),
    }
}

/// Pads `x` along `dim` with `left`/`right` elements of `value`.
fn pad_with(
    x: &Tensor,
    dim: usize,
    left: usize,
    right: usize,
    value: f64,
) -> Result<Tensor, String> {
    if left == 0 && right == 0 {
        return Ok(x.clone());
    }
    let block = |n: usize| -> Result<Tensor, String> {
        let mut dims = x.dims().to_vec();
        dims[dim] = n;
        Tensor::full(value, dims, x.device())
            .and_then(|t| t.to_dtype(x.dtype()))
            .map_err(e)
    };
    let mut parts = Vec::with_capacity(3);
    if left > 0 {
        parts.push(block(left)?);
    }
    parts.push(x.clone());
    if right > 0 {
        parts.push(block(right)?);
    }
    Tensor::cat(&parts, dim).map_err(e)
}

/// Evaluates one node; the outputs it does not produce are None.
pub(super) fn evaluate(
    node: &onnx::NodeProto,
    args: &[Option<Tensor>],
) -> Result<Vec<Option<Tensor>>, String> {
    let one = |t: Tensor| Ok(vec![Some(t)]);
    match node.op_type.as_str() {
        "Constant" => one(constant(node)?),
        "Cast" => one(cast(arg(args, 0, "input")?, attr_i(node, "to", 0))?),
        "LayerNormalization" => one(layer_norm(node, args)?),
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let x = arg(args, 0, "X")?;
            if x.rank() < 3 {
                return Err(format!(
                    "input of rank {} (needs N, C, spatial...)",
                    x.rank()
                ));
            }
            let mut y = x.clone();
            for d in 2..x.rank() {
                y = if node.op_type == "GlobalAveragePool" {
                    y.mean_keepdim(d)
                } else {
                    y.max_keepdim(d)
                }
                .map_err(e)?;
            }
            one(y)
        }
        "HardSigmoid" => {
            let x = arg(args, 0, "X")?;
            let (alpha, beta) = (attr_f(node, "alpha", 0.2), attr_f(node, "beta", 0.5));
            one(x
                .affine(alpha as f64, beta as f64)
                .and_then(|y| y.clamp(0f32, 1f32))
                .map_err(e)?)
        }
        "Max" | "Sum" | "Mean" => {
            let xs: Vec<&Tensor> = args.iter().flatten().collect();
            let first = xs.first().ok_or("no inputs")?;
            let mut y = (*first).clone();
            for x in &xs[1..] {
                y = match node.op_type.as_str() {
                    "Max" => y.broadcast_maximum(x),
                    _ => y.broadcast_add(x),
                }
                .map_err(e)?;
            }
            if node.op_type == "Mean" {
                y = y.affine(1.0 / xs.len() as f64, 0.0).map_err(e)?;
            }
            one(y)
        }
        "MaxPool" => {
            if node.output.len() > 1 && !node.output[1].is_empty() {
                return Err("MaxPool's Indices output is not supported".into());
            }
            one(max_pool(node, arg(args, 0, "X")?)?)
        }
        "Gemm" => one(gemm(node, args)?),
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceL2" => {
            one(reduce(node, args)?)
        }
        "Shape" => {
            let x = arg(args, 0, "data")?;
            let r = x.rank() as i64;
            let clamp = |v: i64| if v < 0 { (v + r).max(0) } else { v.min(r) } as usize;
            let start = clamp(attr_i(node, "start", 0));
            let end = clamp(attr_i(node, "end", r));
            let dims: Vec<i64> = x.dims()[start..end.max(start)]
                .iter()
                .map(|&d| d as i64)
                .collect();
            let n = dims.len();
            one(Tensor::from_vec(dims, n, &Device::Cpu).map_err(e)?)
        }
        "Unsqueeze" => {
            let x = arg(args, 0, "data")?;
            let axes = axes_of(node, args)?.ok_or("no axes")?;
            let out_rank = x.rank() + axes.len();
            let mut axes = axes
                .iter()
                .map(|&a| norm_axis(a, out_rank))
                .collect::<Result<Vec<_>, _>>()?;
            axes.sort_unstable();
            axes.dedup();
            if axes.len() + x.rank() != out_rank {
                return Err("repeated axes".into());
            }
            let mut y = x.clone();
            for a in axes {
                y = y.unsqueeze(a).map_err(e)?;
            }
            one(y)
        }
        "Squeeze" => {
            let x = arg(args, 0, "data")?;
            let mut axes: Vec<usize> = match axes_of(node, args)? {
                Some(a) => a
                    .iter()
                    .map(|&a| norm_axis(a, x.rank()))
                    .collect::<Result<_, _>>()?,
                None => (0..x.rank()).filter(|&d| x.dims()[d] == 1).collect(),
            };
            axes.sort_unstable();
            axes.dedup();
            let mut y = x.clone();
            for &a in axes.iter().rev() {
                if y.dims()[a] != 1 {
                    return Err(format!("dimension {a} has size {}, not 1", y.dims()[a]));
                }
                y = y.squeeze(a).map_err(e)?;
            }
            one(y)
        }
        "Gather" => one(gather(node, args)?),
        "CumSum" => one(cumsum(node, args)?),
        "Flatten" => {
            let x = arg(args, 0, "input")?;
            let r = x.rank();
            let axis = attr_i(node, "axis", 1);
            let axis = if axis < 0 { axis + r as i64 } else { axis };
            if axis < 0 || axis > r as i64 {
                return Err(format!("axis {axis} is out of range for rank {r}"));
            }
            let outer: usize = x.dims()[..axis as usize].iter().product();
            let inner: usize = x.dims()[axis as usize..].iter().product();
            one(x.reshape((outer, inner)).map_err(e)?)
        }
        other => Err(format!("{other} is not evaluated here")),
    }
}

/// Checks a Conv's shapes before candle-onnx runs it: candle's tiled CPU convolution reads
/// out of bounds (a segfault, which no guard catches) when the padded input is smaller than
/// the dilated kernel or the channels disagree with the weight's.
pub(super) fn check_conv(node: &onnx::NodeProto, args: &[Option<Tensor>]) -> Result<(), String> {
    let x = arg(args, 0, "X")?.dims().to_vec();
    let w = arg(args, 1, "W")?.dims().to_vec();
    if x.len() < 3 || x.len() != w.len() {
        return Err(format!(
            "Conv needs an input and a weight of the same rank, 3 or more (got {x:?} and {w:?})"
        ));
    }
    let spatial = x.len() - 2;
    let group = attr_i(node, "group", 1);
    if group < 1 || x[1] as i64 != w[1] as i64 * group {
        return Err(format!(
            "Conv: input channels {} differ from the weight's {} x group {group}",
            x[1], w[1]
        ));
    }
    let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 2 * spatial]);
    let dilations = attr_ints(node, "dilations").unwrap_or_else(|| vec![1; spatial]);
    let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1; spatial]);
    if pads.len() != 2 * spatial || dilations.len() != spatial || strides.len() != spatial {
        return Err(format!(
            "Conv: pads {pads:?}, dilations {dilations:?} or strides {strides:?} do not fit {spatial} spatial dims"
        ));
    }
    for i in 0..spatial {
        let (pad, d, s) = (
            pads[i].checked_add(pads[i + spatial]),
            dilations[i],
            strides[i],
        );
        let kernel = (d.checked_mul(w[i + 2] as i64 - 1)).and_then(|k| k.checked_add(1));
        let padded = pad.and_then(|p| p.checked_add(x[i + 2] as i64));
        match (padded, kernel) {
            (Some(p), Some(k)) if d >= 1 && s >= 1 && pads[i] >= 0 && pads[i + spatial] >= 0 && p >= k => {}
            _ => {
                return Err(format!(
                    "Conv: spatial dim {i} of the input ({}, pads {} + {}) is smaller than the kernel ({}, dilation {d}), or a stride/dilation/pad is out of range",
                    x[i + 2], pads[i], pads[i + spatial], w[i + 2]
                ))
            }
        }
    }
    Ok(())
}

fn constant(node: &onnx::NodeProto) -> Result<Tensor, String> {
    let a = node
        .attribute
        .iter()
        .find(|a| a.name.starts_with("value") || a.name == "sparse_value")
        .ok_or("no value attribute")?;
    let dev = &Device::Cpu;
    let t = match (a.name.as_str(), a.r#type()) {
        ("value", AttributeType::Tensor) => {
            let t = a.t.as_ref().ok_or("an empty tensor attribute")?;
            return super::proto::tensor(t, std::path::Path::new(""));
        }
        ("value_float", _) => Tensor::new(a.f, dev),
        ("value_floats", _) => Tensor::new(a.floats.as_slice(), dev),
        ("value_int", _) => Tensor::new(a.i, dev),
        ("value_ints", _) => Tensor::new(a.ints.as_slice(), dev),
        (name, _) => return Err(format!("Constant with '{name}' is not supported")),
    };
    t.map_err(e)
}

/// ONNX Cast: integers of every width computed as i64, bool as u8 (non-zero is true).
pub(super) fn cast(x: &Tensor, to: i64) -> Result<Tensor, String> {
    use onnx::tensor_proto::DataType as T;
    let to = T::try_from(to as i32).map_err(|_| format!("unknown target type {to}"))?;
    let dtype = match to {
        T::Float => DType::F32,
        T::Float16 => DType::F16,
        T::Bfloat16 => DType::BF16,
        T::Double => DType::F64,
        T::Int64 | T::Int32 | T::Int16 | T::Int8 | T::Uint16 | T::Uint32 | T::Uint64 => DType::I64,
        T::Uint8 => DType::U8,
        T::Bool => {
            let zero = x.zeros_like().map_err(e)?;
            return x.ne(&zero).map_err(e);
        }
        other => {
            return Err(format!(
                "Cast to {} is not supported",
                other.as_str_name().to_lowercase()
            ))
        }
    };
    x.to_dtype(dtype).map_err(e)
}

fn layer_norm(node: &onnx::NodeProto, args: &[Option<Tensor>]) -> Result<Tensor, String> {
    if node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err("LayerNormalization's Mean and InvStdDev outputs are not supported".into());
    }
    let x = arg(args, 0, "X")?;
    let scale = arg(args, 1, "Scale")?;
    let eps = attr_f(node, "epsilon", 1e-5);
    let axis = norm_axis(attr_i(node, "axis", -1), x.rank())?;
    let dtype = x.dtype();
    // stash_type 1 (the default): statistics in float32 whatever the input's type.
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).map_err(e);
    let xf = f32(x)?;
    let y = if axis + 1 == x.rank() {
        let n = x.dim(D::Minus1).map_err(e)?;
        let alpha = f32(scale)?
            .broadcast_as(n)
            .map_err(e)?
            .contiguous()
            .map_err(e)?;
        let beta = match opt_arg(args, 2) {
            Some(b) => f32(b)?
                .broadcast_as(n)
                .map_err(e)?
                .contiguous()
                .map_err(e)?,
            None => Tensor::zeros(n, DType::F32, x.device()).map_err(e)?,
        };
        candle_nn::ops::layer_norm(&xf.contiguous().map_err(e)?, &alpha, &beta, eps).map_err(e)?
    } else {
        let dims: Vec<usize> = (axis..x.rank()).collect();
        let mean = xf.mean_keepdim(dims.as_slice()).map_err(e)?;
        let centered = xf.broadcast_sub(&mean).map_err(e)?;
        let var = centered
            .sqr()
            .and_then(|v| v.mean_keepdim(dims.as_slice()))
            .map_err(e)?;
        let norm = centered
            .broadcast_div(&(var + eps as f64).and_then(|v| v.sqrt()).map_err(e)?)
            .map_err(e)?;
        let y = norm.broadcast_mul(&f32(scale)?).map_err(e)?;
        match opt_arg(args, 2) {
            Some(b) => y.broadcast_add(&f32(b)?).map_err(e)?,
            None => y,
        }
    };
    y.to_dtype(dtype).map_err(e)
}

fn max_pool(node: &onnx::NodeProto, x: &Tensor) -> Result<Tensor, String> {
    match attr(node, "auto_pad").map(|a| String::from_utf8_lossy(&a.s).into_owned()) {
        None => {}
        Some(p) if p == "NOTSET" || p.is_empty() => {}
        Some(p) => return Err(format!("auto_pad {p} is not supported")),
    }
    let kernel = attr_ints(node, "kernel_shape").ok_or("no kernel_shape")?;
    if kernel.len() != 2 || x.rank() != 4 {
        return Err(format!(
            "only 2-d max pooling is supported (kernel {kernel:?})"
        ));
    }
    if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
        return Err("dilations other than 1 are not supported".into());
    }
    if attr_i(node, "storage_order", 0) != 0 {
        return Err("storage_order 1 is not supported".into());
    }
    let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
    let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0, 0, 0, 0]);
    if strides.len() != 2 || pads.len() != 4 || strides.iter().chain(&pads).any(|&v| v < 0) {
        return Err(format!("bad strides {strides:?} or pads {pads:?}"));
    }
    let ceil = attr_i(node, "ceil_mode", 0) != 0;
    let low = lowest(x.dtype());
    let mut y = x.clone();
    for (i, dim) in [2usize, 3].into_iter().enumerate() {
        let (k, s) = (kernel[i] as usize, strides[i].max(1) as usize);
        let (begin, mut end) = (pads[i] as usize, pads[i + 2] as usize);
        let size = y.dims()[dim] + begin + end;
        if size < k {
            return Err(format!("kernel {k} is larger than the padded input {size}"));
        }
        if ceil && !(size - k).is_multiple_of(s) {
            // One more window, starting inside the input or its left padding.
            end += s - (size - k) % s;
        }
        y = pad_with(&y, dim, begin, end, low)?;
    }
    y.max_pool2d_with_stride(
        (kernel[0] as usize, kernel[1] as usize),
        (strides[0].max(1) as usize, strides[1].max(1) as usize),
    )
    .map_err(e)
}

fn gemm(node: &onnx::NodeProto, args: &[Option<Tensor>]) -> Result<Tensor, String> {
    let a = arg(args, 0, "A")?;
    let b = arg(args, 1, "B")?;
    if a.rank() != 2 || b.rank() != 2 {
        return Err(format!(
            "A and B must be matrices (ranks {}, {})",
            a.rank(),
            b.rank()
        ));
    }
    let a = if attr_i(node, "transA", 0) != 0 {
        a.t().map_err(e)?
    } else {
        a.clone()
    };
    let b = if attr_i(node, "transB", 0) != 0 {
        b.t().map_err(e)?
    } else {
        b.clone()
    };
    let (alpha, beta) = (attr_f(node, "alpha", 1.0), attr_f(node, "beta", 1.0));
    let mut y = a.matmul(&b).map_err(e)?;
    if alpha != 1.0 {
        y = y.affine(alpha as f64, 0.0).map_err(e)?;
    }
    if let Some(c) = opt_arg(args, 2) {
        let c = if beta != 1.0 {
            c.affine(beta as f64, 0.0).map_err(e)?
        } else {
            c.clone()
        };
        y = y.broadcast_add(&c).map_err(e)?;
    }
    Ok(y)
}

fn reduce(node: &onnx::NodeProto, args: &[Option<Tensor>]) -> Result<Tensor, String> {
    let x = arg(args, 0, "data")?;
    let keep = attr_i(node, "keepdims", 1) != 0;
    let axes = match axes_of(node, args)? {
        Some(a) if !a.is_empty() => a,
        _ if attr_i(node, "noop_with_empty_axes", 0) != 0 => return Ok(x.clone()),
        _ => (0..x.rank() as i64).collect(),
    };
    let mut axes = axes
        .iter()
        .map(|&a| norm_axis(a, x.rank()))
        .collect::<Result<Vec<_>, _>>()?;
    axes.sort_unstable();
    axes.dedup();
    let mut y = match node.op_type.as_str() {
        "ReduceL2" => x.sqr().map_err(e)?,
        _ => x.clone(),
    };
    // Reduce one axis at a time with the dims kept, then drop them together.
    for &a in &axes {
        y = match node.op_type.as_str() {
            "ReduceMean" => y.mean_keepdim(a),
            "ReduceMax" => y.max_keepdim(a),
            "ReduceMin" => y.min_keepdim(a),
            _ => y.sum_keepdim(a),
        }
        .map_err(e)?;
    }
    if node.op_type == "ReduceL2" {
        y = y.sqrt().map_err(e)?;
    }
    if !keep {
        for &a in axes.iter().rev() {
            y = y.squeeze(a).map_err(e)?;
        }
    }
    Ok(y)
}

fn cumsum(node: &onnx::NodeProto, args: &[Option<Tensor>]) -> Result<Tensor, String> {
    let x = arg(args, 0, "x")?;
    let axis = ints(arg(args, 1, "axis")?)?;
    let axis = norm_axis(*axis.first().ok_or("an empty axis")?, x.rank())?;
    let (exclusive, reverse) = (
        attr_i(node, "exclusive", 0) != 0,
        attr_i(node, "reverse", 0) != 0,
    );
    let dtype = x.dtype();
    // Integers summed in f64 (exact below 2^53), floats in their own type.
    let work = match dtype {
        DType::I64 | DType::U8 | DType::U32 | DType::I32 | DType::I16 => {
            x.to_dtype(DType::F64).map_err(e)?
        }
        _ => x.clone(),
    };
    let n = x.dims()[axis];
    let work = if reverse {
        work.flip(&[axis]).map_err(e)?
    } else {
        work
    };
    let mut y = work.cumsum(axis).map_err(e)?;
    if exclusive {
        // Shift by one along the axis: [0, s0, s1, ...].
        let zero = y
            .narrow(axis, 0, 1)
            .and_then(|z| z.zeros_like())
            .map_err(e)?;
        let head = y.narrow(axis, 0, n.saturating_sub(1)).map_err(e)?;
        y = Tensor::cat(&[&zero, &head], axis).map_err(e)?;
    }
    let y = if reverse {
        y.flip(&[axis]).map_err(e)?
    } else {
        y
    };
    y.to_dtype(dtype).map_err(e)
}

fn gather(node: &onnx::NodeProto, args: &[Option<Tensor>]) -> Result<Tensor, String> {
    let x = arg(args, 0, "data")?;
    let idx = arg(args, 1, "indices")?;
    let axis = norm_axis(attr_i(node, "axis", 0), x.rank())?;
    let size = x.dims()[axis] as i64;
    let mut flat = ints(idx)?;
    for i in flat.iter_mut() {
        if *i < -size || *i >= size {
            return Err(format!(
                "index {i} is out of range for a dimension of {size}"
            ));
        }
        if *i < 0 {
            *i += size;
        }
    }
    let n = flat.len();
    let ids = Tensor::from_vec(flat, n, x.device()).map_err(e)?;
    let picked = x
        .contiguous()
        .and_then(|x| x.index_select(&ids, axis))
        .map_err(e)?;
    let mut dims: Vec<usize> = x.dims()[..axis].to_vec();
    dims.extend_from_slice(idx.dims());
    dims.extend_from_slice(&x.dims()[axis + 1..]);
    picked.reshape(dims).map_err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, attrs: Vec<onnx::AttributeProto>, outputs: usize) -> onnx::NodeProto {
        onnx::NodeProto {
            op_type: op.into(),
            attribute: attrs,
            output: (0..outputs).map(|i| format!("y{i}")).collect(),
            ..Default::default()
        }
    }

    fn ints_attr(name: &str, v: &[i64]) -> onnx::AttributeProto {
        onnx::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Ints as i32,
            ints: v.to_vec(),
            ..Default::default()
        }
    }

    fn int_attr(name: &str, v: i64) -> onnx::AttributeProto {
        onnx::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Int as i32,
            i: v,
            ..Default::default()
        }
    }

    fn run(n: &onnx::NodeProto, args: Vec<Tensor>) -> Tensor {
        let args: Vec<Option<Tensor>> = args.into_iter().map(Some).collect();
        evaluate(n, &args).unwrap()[0].clone().unwrap()
    }

    fn t(v: &[f32], dims: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), dims, &Device::Cpu).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn layer_norm_normalizes_over_the_last_axes() {
        let x = t(&[1., 2., 3., 4., 10., 20., 30., 40.], &[2, 4]);
        let scale = t(&[1., 1., 2., 2.], &[4]);
        let bias = t(&[0., 0., 0., 1.], &[4]);
        let y = run(
            &node("LayerNormalization", vec![], 1),
            vec![x.clone(), scale, bias],
        );
        let v = flat(&y);
        // Row 1: mean 2.5, var 1.25.
        let s = 1.0 / (1.25f32 + 1e-5).sqrt();
        let want = [-1.5 * s, -0.5 * s, 2.0 * 0.5 * s, 2.0 * 1.5 * s + 1.0];
        for (a, b) in v[..4].iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{v:?}");
        }
        // Axis 0 over a [2, 4]: normalizes over everything.
        let n = node("LayerNormalization", vec![int_attr("axis", 0)], 1);
        let y = run(
            &n,
            vec![x, Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap()],
        );
        let v = flat(&y);
        let mean: f32 = v.iter().sum::<f32>() / 8.0;
        assert!(mean.abs() < 1e-5);
    }

    #[test]
    fn max_pool_pads_with_the_lowest_value_and_honours_ceil_mode() {
        // -1s everywhere: zero padding would win the max at the borders.
        let x = Tensor::full(-1f32, (1, 1, 4, 4), &Device::Cpu).unwrap();
        let n = node(
            "MaxPool",
            vec![
                ints_attr("kernel_shape", &[3, 3]),
                ints_attr("strides", &[2, 2]),
                ints_attr("pads", &[1, 1, 1, 1]),
            ],
            1,
        );
        let y = run(&n, vec![x]);
        assert_eq!(y.dims(), &[1, 1, 2, 2]);
        assert!(flat(&y).iter().all(|&v| v == -1.0));
        let x = t(
            &(0..25).map(|v| v as f32).collect::<Vec<_>>(),
            &[1, 1, 5, 5],
        );
        let n = node(
            "MaxPool",
            vec![
                ints_attr("kernel_shape", &[2, 2]),
                ints_attr("strides", &[2, 2]),
                int_attr("ceil_mode", 1),
            ],
            1,
        );
        let y = run(&n, vec![x]);
        assert_eq!(y.dims(), &[1, 1, 3, 3]);
        assert_eq!(flat(&y), vec![6., 8., 9., 16., 18., 19., 21., 23., 24.]);
    }

    #[test]
    fn unsqueeze_resolves_negative_axes_against_the_output() {
        let x = t(&[1., 2., 3.], &[3]);
        let n = node("Unsqueeze", vec![ints_attr("axes", &[0, -1])], 1);
        assert_eq!(run(&n, vec![x.clone()]).dims(), &[1, 3, 1]);
        let axes = Tensor::new(&[-1i64, -3], &Device::Cpu).unwrap();
        let n = node("Unsqueeze", vec![], 1);
        assert_eq!(run(&n, vec![x, axes]).dims(), &[1, 3, 1]);
    }

    #[test]
    fn gather_takes_indices_of_any_rank_and_negative_ones() {
        let x = t(&[0., 1., 2., 3., 4., 5.], &[3, 2]);
        let idx = Tensor::new(&[[[0i64, -1]], [[1, 1]]], &Device::Cpu).unwrap();
        let y = run(&node("Gather", vec![], 1), vec![x.clone(), idx]);
        assert_eq!(y.dims(), &[2, 1, 2, 2]);
        assert_eq!(flat(&y), vec![0., 1., 4., 5., 2., 3., 2., 3.]);
        let scalar = Tensor::new(1i64, &Device::Cpu).unwrap();
        let n = node("Gather", vec![int_attr("axis", 1)], 1);
        let y = run(&n, vec![x.clone(), scalar]);
        assert_eq!(y.dims(), &[3]);
        assert_eq!(flat(&y), vec![1., 3., 5.]);
        let bad = Tensor::new(&[3i64], &Device::Cpu).unwrap();
        let e = evaluate(&node("Gather", vec![], 1), &[Some(x), Some(bad)]).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn shape_start_end_and_reductions_with_axes_either_way() {
        let x = Tensor::zeros((2, 3, 4, 5), DType::F32, &Device::Cpu).unwrap();
        let n = node("Shape", vec![int_attr("start", 1), int_attr("end", -1)], 1);
        let s = run(&n, vec![x]);
        assert_eq!(s.to_vec1::<i64>().unwrap(), vec![3, 4]);

        let x = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let attr_form = node(
            "ReduceSum",
            vec![ints_attr("axes", &[-1]), int_attr("keepdims", 0)],
            1,
        );
        assert_eq!(flat(&run(&attr_form, vec![x.clone()])), vec![6., 15.]);
        let input_form = node("ReduceMean", vec![], 1);
        let axes = Tensor::new(&[0i64], &Device::Cpu).unwrap();
        let y = run(&input_form, vec![x.clone(), axes]);
        assert_eq!(y.dims(), &[1, 3]);
        assert_eq!(flat(&y), vec![2.5, 3.5, 4.5]);
        let l2 = node("ReduceL2", vec![int_attr("keepdims", 0)], 1);
        let v = flat(&run(&l2, vec![x]));
        assert!((v[0] - 91f32.sqrt()).abs() < 1e-5);
    }

    #[test]
    fn cast_to_bool_is_non_zero_and_narrow_integers_widen() {
        let x = t(&[0.0, 0.5, -2.0], &[3]);
        let b = cast(&x, 9).unwrap();
        assert_eq!(b.to_vec1::<u8>().unwrap(), vec![0, 1, 1]);
        let i = cast(&x, 6).unwrap();
        assert_eq!(i.to_vec1::<i64>().unwrap(), vec![0, 0, -2]);
        assert!(cast(&x, 8).unwrap_err().contains("string"));
    }

    #[test]
    fn cumsum_of_integers_exclusive_and_reverse() {
        let x = Tensor::new(&[[1i64, 0, 1, 1], [0, 1, 1, 0]], &Device::Cpu).unwrap();
        let axis = Tensor::new(&[1i64], &Device::Cpu).unwrap();
        let y = run(&node("CumSum", vec![], 1), vec![x.clone(), axis.clone()]);
        assert_eq!(y.dtype(), DType::I64);
        assert_eq!(
            y.to_vec2::<i64>().unwrap(),
            vec![vec![1, 1, 2, 3], vec![0, 1, 2, 2]]
        );
        let n = node(
            "CumSum",
            vec![int_attr("exclusive", 1), int_attr("reverse", 1)],
            1,
        );
        let y = run(&n, vec![x, axis]);
        assert_eq!(
            y.to_vec2::<i64>().unwrap(),
            vec![vec![2, 2, 1, 0], vec![2, 1, 0, 0]]
        );
    }

    #[test]
    fn axes_out_of_range_and_scalars_are_errors_not_panics() {
        let scalar = Tensor::new(2f32, &Device::Cpu).unwrap();
        let idx = Tensor::new(0i64, &Device::Cpu).unwrap();
        let e = evaluate(
            &node("Gather", vec![], 1),
            &[Some(scalar.clone()), Some(idx)],
        );
        assert!(e.unwrap_err().contains("out of range for rank 0"));
        let x = t(&[1., 2.], &[2]);
        let n = node("ReduceSum", vec![ints_attr("axes", &[3])], 1);
        assert!(evaluate(&n, &[Some(x.clone())])
            .unwrap_err()
            .contains("axis 3"));
        let n = node("Squeeze", vec![ints_attr("axes", &[0])], 1);
        assert!(evaluate(&n, &[Some(x)]).unwrap_err().contains("not 1"));
        let e = evaluate(&node("LayerNormalization", vec![], 1), &[Some(scalar)]);
        assert!(e.is_err());
    }

    #[test]
    fn gemm_without_c_and_global_pooling() {
        let a = t(&[1., 2., 3., 4.], &[2, 2]);
        let b = t(&[1., 0., 0., 1.], &[2, 2]);
        let n = node("Gemm", vec![int_attr("transA", 1)], 1);
        assert_eq!(flat(&run(&n, vec![a, b])), vec![1., 3., 2., 4.]);
        let x = t(&[1., 2., 3., 4., 5., 6., 7., 8.], &[1, 2, 2, 2]);
        let y = run(&node("GlobalAveragePool", vec![], 1), vec![x]);
        assert_eq!(y.dims(), &[1, 2, 1, 1]);
        assert_eq!(flat(&y), vec![2.5, 6.5]);
    }

    /// Shapes candle's convolution would read out of bounds on are refused before it runs.
    #[test]
    fn conv_shapes_candle_cannot_take_are_refused() {
        let zeros = |dims: &[usize]| Some(Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap());
        let conv = |attrs| node("Conv", attrs, 1);
        let ok = conv(vec![]);
        assert!(check_conv(&ok, &[zeros(&[1, 3, 8, 8]), zeros(&[4, 3, 3, 3])]).is_ok());
        // Width 1 under a 3-wide kernel: candle segfaults on it.
        let e = check_conv(&ok, &[zeros(&[1, 3, 8, 1]), zeros(&[4, 3, 3, 3])]).unwrap_err();
        assert!(
            e.contains("spatial dim 1 of the input (1, pads 0 + 0) is smaller than the kernel (3"),
            "{e}"
        );
        // Padding makes room.
        let padded = conv(vec![ints_attr("pads", &[0, 1, 0, 1])]);
        assert!(check_conv(&padded, &[zeros(&[1, 3, 8, 1]), zeros(&[4, 3, 3, 3])]).is_ok());
        // Channels that the groups do not explain, and attributes of the wrong length.
        let e = check_conv(&ok, &[zeros(&[1, 2, 8, 8]), zeros(&[4, 3, 3, 3])]).unwrap_err();
        assert!(e.contains("input channels 2"), "{e}");
        let grouped = conv(vec![int_attr("group", 3)]);
        assert!(check_conv(&grouped, &[zeros(&[1, 3, 8, 8]), zeros(&[3, 1, 3, 3])]).is_ok());
        let bad = conv(vec![ints_attr("strides", &[1])]);
        assert!(check_conv(&bad, &[zeros(&[1, 3, 8, 8]), zeros(&[4, 3, 3, 3])]).is_err());
        let bad = conv(vec![ints_attr("dilations", &[i64::MAX, 1])]);
        assert!(check_conv(&bad, &[zeros(&[1, 3, 8, 8]), zeros(&[4, 3, 3, 3])]).is_err());
    }
}
