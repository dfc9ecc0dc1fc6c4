//! The KServe v2 inference protocol's tensors: JSON requests (with the binary tensor data
//! extension), validation against the served model's signature, and answers. Everything a
//! client sends is checked here; a bad request becomes a [`ServeError`] that names the
//! problem, never a panic.

use std::borrow::Cow;

use runtimes::{DType, Dim, HostTensor, TensorData, TensorSpec};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::tensors::{dtype_from_kserve, from_le_bytes, into_le_bytes, kserve_dtype, le_bytes};

/// A request the server refuses or could not serve, with its HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeError {
    pub status: u16,
    pub message: String,
}

impl ServeError {
    pub fn bad(message: impl Into<String>) -> ServeError {
        ServeError {
            status: 400,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ServeError {
        ServeError {
            status: 404,
            message: message.into(),
        }
    }

    pub fn new(status: u16, message: impl Into<String>) -> ServeError {
        ServeError {
            status,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

/// What the server knows of its model.
#[derive(Debug, Clone)]
pub struct Signature {
    pub name: String,
    pub platform: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub max_positions: Option<usize>,
    pub vocab_size: Option<usize>,
    pub type_vocab_size: Option<usize>,
}

fn dims_json(dims: &[Dim]) -> Vec<i64> {
    dims.iter()
        .map(|d| match d {
            Dim::Fixed(n) => *n as i64,
            Dim::Symbolic(_) => -1,
        })
        .collect()
}

impl Signature {
    pub fn metadata(&self) -> Value {
        let t = |specs: &[TensorSpec]| -> Vec<Value> {
            specs
                .iter()
                .map(|s| {
                    json!({
                        "name": s.name,
                        "datatype": kserve_dtype(s.dtype).unwrap_or("BYTES"),
                        "shape": dims_json(&s.dims),
                    })
                })
                .collect()
        };
        let mut v = json!({
            "name": self.name,
            "versions": ["1"],
            "platform": self.platform,
            "inputs": t(&self.inputs),
            "outputs": t(&self.outputs),
        });
        // Beyond KServe's fields (clients ignore what they do not know): the ranges token
        // ids must stay within, so that a load generator draws valid ones.
        let mut params = serde_json::Map::new();
        if let Some(n) = self.vocab_size {
            params.insert("vocab_size".into(), json!(n));
        }
        if let Some(n) = self.type_vocab_size {
            params.insert("type_vocab_size".into(), json!(n));
        }
        if let Some(n) = self.max_positions {
            params.insert("max_position_embeddings".into(), json!(n));
        }
        if !params.is_empty() {
            v["parameters"] = Value::Object(params);
        }
        v
    }

    pub fn spec_dims(spec: &TensorSpec) -> Vec<i64> {
        dims_json(&spec.dims)
    }
}

/// One decoded input, before it is checked against the model.
#[derive(Debug, Clone)]
pub struct RawInput {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

#[derive(Debug, Clone, Default)]
pub struct Decoded {
    pub id: Option<String>,
    pub inputs: Vec<RawInput>,
    /// Outputs asked for (all when None), and whether each wants binary data.
    pub outputs: Option<Vec<(String, bool)>>,
    /// Binary answers for every output (request parameter `binary_data_output`).
    pub binary_output: bool,
}

#[derive(Deserialize)]
struct InferRequestJson {
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// Elements of a shape, or why it is not one.
pub fn elements(shape: &[i64]) -> Result<usize, ServeError> {
    let mut n: usize = 1;
    for &d in shape {
        if d < 0 {
            return Err(ServeError::bad(format!(
                "shape {shape:?} has a negative dimension; give the actual sizes"
            )));
        }
        n = n
            .checked_mul(d as usize)
            .ok_or_else(|| ServeError::bad(format!("shape {shape:?} is too large")))?;
    }
    Ok(n)
}

/// Flattens nested JSON arrays (row-major) into typed data.
fn json_data(name: &str, dtype: DType, v: &Value, n: usize) -> Result<TensorData, ServeError> {
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>, limit: usize) -> bool {
        match v {
            Value::Array(a) => a.iter().all(|x| walk(x, out, limit)),
            x => {
                out.push(x);
                out.len() <= limit
            }
        }
    }
    let mut flat = Vec::with_capacity(n.min(1 << 20));
    if !walk(v, &mut flat, n) || flat.len() != n {
        return Err(ServeError::bad(format!(
            "input '{name}': data holds {} values, the shape needs {n}",
            if flat.len() > n {
                format!("more than {n}")
            } else {
                flat.len().to_string()
            }
        )));
    }
    let wrong = |x: &Value, what: &str| {
        ServeError::bad(format!(
            "input '{name}': {x} is not {what} (datatype {})",
            kserve_dtype(dtype).unwrap_or("?")
        ))
    };
    Ok(match dtype {
        DType::Int64 => TensorData::I64(
            flat.iter()
                .map(|x| x.as_i64().ok_or_else(|| wrong(x, "an integer")))
                .collect::<Result<_, _>>()?,
        ),
        DType::Int32 => TensorData::I32(
            flat.iter()
                .map(|x| {
                    x.as_i64()
                        .and_then(|i| i32::try_from(i).ok())
                        .ok_or_else(|| wrong(x, "a 32-bit integer"))
                })
                .collect::<Result<_, _>>()?,
        ),
        DType::Float32 => TensorData::F32(
            flat.iter()
                .map(|x| {
                    x.as_f64()
                        .map(|f| f as f32)
                        .ok_or_else(|| wrong(x, "a number"))
                })
                .collect::<Result<_, _>>()?,
        ),
        DType::Bool => TensorData::Bool(
            flat.iter()
                .map(|x| x.as_bool().ok_or_else(|| wrong(x, "true or false")))
                .collect::<Result<_, _>>()?,
        ),
        _ => {
            return Err(ServeError::bad(format!(
                "input '{name}': datatype {} is not supported here (INT64, INT32, FP32, BOOL)",
                kserve_dtype(dtype).unwrap_or("?")
            )))
        }
    })
}

fn param_bool(p: &Option<Map<String, Value>>, key: &str) -> bool {
    p.as_ref()
        .and_then(|m| m.get(key))
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

fn param_u64(p: &Option<Map<String, Value>>, key: &str) -> Option<Value> {
    p.as_ref().and_then(|m| m.get(key)).cloned()
}

pub fn parse_dtype(name: &str, s: &str) -> Result<DType, ServeError> {
    dtype_from_kserve(s).ok_or_else(|| {
        ServeError::bad(format!(
            "input '{name}': unknown datatype '{s}' (INT64, INT32, FP32, BOOL, ...)"
        ))
    })
}

/// Decodes an HTTP infer body: JSON, or with `header_len` (the
/// `Inference-Header-Content-Length` header) a JSON header followed by binary tensors.
pub fn decode_http(body: &[u8], header_len: Option<usize>) -> Result<Decoded, ServeError> {
    let (head, mut binary) = match header_len {
        Some(n) if n > body.len() => {
            return Err(ServeError::bad(format!(
                "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                body.len()
            )))
        }
        Some(n) => (&body[..n], &body[n..]),
        None => (body, &body[..0]),
    };
    let req: InferRequestJson = serde_json::from_slice(head).map_err(|e| {
        ServeError::bad(format!("the request is not a KServe v2 infer request: {e}"))
    })?;
    let binary_output = param_bool(&req.parameters, "binary_data_output");
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for i in req.inputs {
        let dtype = parse_dtype(&i.name, &i.datatype)?;
        let n = elements(&i.shape)?;
        let data = match (param_u64(&i.parameters, "binary_data_size"), &i.data) {
            (Some(size), _) => {
                let size = size.as_u64().ok_or_else(|| {
                    ServeError::bad(format!(
                        "input '{}': binary_data_size must be a byte count",
                        i.name
                    ))
                })? as usize;
                if size > binary.len() {
                    return Err(ServeError::bad(format!(
                        "input '{}': binary_data_size {size} runs past the end of the body ({} bytes left)",
                        i.name,
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                from_le_bytes(dtype, mine, n)
                    .map_err(|e| ServeError::bad(format!("input '{}': {e}", i.name)))?
            }
            (None, Some(v)) => json_data(&i.name, dtype, v, n)?,
            (None, None) => {
                return Err(ServeError::bad(format!(
                    "input '{}' has neither data nor binary_data_size",
                    i.name
                )))
            }
        };
        inputs.push(RawInput {
            name: i.name,
            datatype: i.datatype,
            shape: i.shape,
            data,
        });
    }
    if !binary.is_empty() {
        return Err(ServeError::bad(format!(
            "{} bytes after the last binary input belong to no input",
            binary.len()
        )));
    }
    let outputs = req.outputs.map(|os| {
        os.into_iter()
            .map(|o| {
                let b = param_bool(&o.parameters, "binary_data");
                (o.name, b)
            })
            .collect()
    });
    Ok(Decoded {
        id: req.id,
        inputs,
        outputs,
        binary_output,
    })
}

/// Checks decoded inputs against the model and orders them as the model declares them.
pub fn validate(sig: &Signature, raw: Vec<RawInput>) -> Result<Vec<HostTensor>, ServeError> {
    let names = || {
        sig.inputs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for r in &raw {
        if !sig.inputs.iter().any(|s| s.name == r.name) {
            return Err(ServeError::bad(format!(
                "unknown input '{}'; model '{}' takes {}",
                r.name,
                sig.name,
                names()
            )));
        }
        if raw.iter().filter(|x| x.name == r.name).count() > 1 {
            return Err(ServeError::bad(format!(
                "input '{}' is given twice",
                r.name
            )));
        }
    }
    let mut rows = None;
    // Each symbolic dim (batch, sequence) must have one value across the inputs.
    let mut symbols: Vec<(&str, i64, &str)> = Vec::new();
    let mut out = Vec::with_capacity(sig.inputs.len());
    let mut raw = raw;
    for spec in &sig.inputs {
        let pos = raw
            .iter()
            .position(|r| r.name == spec.name)
            .ok_or_else(|| {
                ServeError::bad(format!(
                    "input '{}' is missing; model '{}' takes {}",
                    spec.name,
                    sig.name,
                    names()
                ))
            })?;
        let r = raw.swap_remove(pos);
        let want = kserve_dtype(spec.dtype).unwrap_or("?");
        if r.data.dtype() != spec.dtype {
            return Err(ServeError::bad(format!(
                "input '{}' is {}, the model takes {want}",
                r.name, r.datatype
            )));
        }
        if r.shape.len() != spec.dims.len() {
            return Err(ServeError::bad(format!(
                "input '{}' has shape {:?}; the model takes rank {} {}",
                r.name,
                r.shape,
                spec.dims.len(),
                spec.dims_string()
            )));
        }
        for (k, (&got, d)) in r.shape.iter().zip(&spec.dims).enumerate() {
            match d {
                Dim::Fixed(n) if got != *n as i64 => {
                    return Err(ServeError::bad(format!(
                        "input '{}' dimension {k} is {got}, the model fixes it at {n}",
                        r.name
                    )));
                }
                _ => {}
            }
        }
        let shape: Vec<usize> = r.shape.iter().map(|&d| d as usize).collect();
        if shape.first() == Some(&0) {
            return Err(ServeError::bad(format!("input '{}' has no rows", r.name)));
        }
        if shape.len() >= 2 && shape[1] == 0 {
            return Err(ServeError::bad(format!("input '{}' is empty", r.name)));
        }
        match rows {
            None => rows = shape.first().copied(),
            Some(n) if shape.first() != Some(&n) => {
                return Err(ServeError::bad(format!(
                    "input '{}' has {} rows, the others {n}; every input needs the same batch size",
                    r.name, shape[0]
                )))
            }
            _ => {}
        }
        // Each symbolic dim after the batch (the sequence) must agree across the inputs.
        for (k, (&got, d)) in r.shape.iter().zip(&spec.dims).enumerate().skip(1) {
            let Dim::Symbolic(sym) = d else { continue };
            match symbols.iter().find(|(s, _, _)| s == sym) {
                Some((_, v, other)) if *v != got => {
                    return Err(ServeError::bad(format!(
                        "input '{}' dimension {k} ('{sym}') is {got}, but input '{other}' has {v}: inputs must agree on '{sym}'",
                        r.name
                    )));
                }
                Some(_) => {}
                None => symbols.push((sym.as_str(), got, spec.name.as_str())),
            }
        }
        if let (Some(max), Some(&len)) = (sig.max_positions, shape.get(1)) {
            if matches!(spec.dims.get(1), Some(Dim::Symbolic(_))) && len > max {
                return Err(ServeError::bad(format!(
                    "input '{}' is {len} tokens long; the model takes at most {max}",
                    r.name
                )));
            }
        }
        check_ids(sig, &r.name, &r.data)?;
        out.push(HostTensor::new(r.name, shape, r.data));
    }
    Ok(out)
}

/// Token ids beyond the vocabulary would fail inside the runtime; say so up front.
fn check_ids(sig: &Signature, name: &str, data: &TensorData) -> Result<(), ServeError> {
    let lname = name.to_ascii_lowercase();
    let limit = if lname == "input_ids" {
        sig.vocab_size
    } else if lname == "token_type_ids" {
        sig.type_vocab_size
    } else {
        None
    };
    let Some(limit) = limit else { return Ok(()) };
    let Some(ids) = data.to_i64() else {
        return Ok(());
    };
    if let Some(bad) = ids.iter().find(|&&x| x < 0 || x >= limit as i64) {
        return Err(ServeError::bad(format!(
            "input '{name}' holds {bad}, outside the model's range 0..{limit}"
        )));
    }
    Ok(())
}

/// Picks and orders the outputs the request asked for.
pub fn select_outputs(
    wanted: &Option<Vec<(String, bool)>>,
    outputs: Vec<HostTensor>,
) -> Result<Vec<(HostTensor, bool)>, ServeError> {
    match wanted {
        None => Ok(outputs.into_iter().map(|o| (o, false)).collect()),
        Some(w) => w
            .iter()
            .map(|(name, binary)| {
                outputs
                    .iter()
                    .find(|o| &o.name == name)
                    .map(|o| (o.clone(), *binary))
                    .ok_or_else(|| {
                        ServeError::bad(format!(
                            "unknown output '{name}'; the model gives {}",
                            outputs
                                .iter()
                                .map(|o| o.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })
            })
            .collect(),
    }
}

/// Tensor data as JSON; floats keep their shortest f32 spelling (0.1, not
/// 0.10000000149011612), which also keeps JSON answers a third shorter.
fn data_json(d: &TensorData) -> Value {
    match d {
        TensorData::F32(v) => Value::Array(v.iter().map(|&x| f32_json(x)).collect()),
        TensorData::I64(v) => json!(v),
        TensorData::I32(v) => json!(v),
        TensorData::Bool(v) => json!(v),
    }
}

/// An f32 as the JSON number with its shortest decimal spelling (Display for f32 prints the
/// shortest text that reads back as the same f32; that text read as f64 prints the same).
pub fn f32_json(x: f32) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    format!("{x}")
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// One tensor of a request or an answer: `data` inline, or with `binary` its bytes pushed on
/// `blobs` (borrowed where they can be) and their count in `parameters.binary_data_size`.
fn tensor_json<'a>(t: &'a HostTensor, binary: bool, blobs: &mut Vec<Cow<'a, [u8]>>) -> Value {
    let mut o = tensor_head(t);
    if binary {
        let b = le_bytes(&t.data);
        o["parameters"] = json!({ "binary_data_size": b.len() });
        blobs.push(b);
    } else {
        o["data"] = data_json(&t.data);
    }
    o
}

/// A tensor's name, datatype and shape.
fn tensor_head(t: &HostTensor) -> Value {
    json!({
        "name": t.name,
        "datatype": kserve_dtype(t.data.dtype()).unwrap_or("BYTES"),
        "shape": t.shape,
    })
}

/// `head` serialized, followed by `blobs` when there are binary tensors; with them, the JSON
/// header's length (for `Inference-Header-Content-Length`). Each tensor's bytes are copied
/// once, into the body.
fn with_blobs(head: &Value, any_binary: bool, blobs: &[Cow<[u8]>]) -> (Vec<u8>, Option<usize>) {
    let mut body = Vec::with_capacity(512);
    if serde_json::to_writer(&mut body, head).is_err() {
        body.clear();
    }
    if !any_binary {
        return (body, None);
    }
    let n = body.len();
    body.reserve_exact(blobs.iter().map(|b| b.len()).sum());
    for b in blobs {
        body.extend_from_slice(b);
    }
    (body, Some(n))
}

/// The HTTP answer: JSON, or JSON header + binary tensors when any output asked for binary.
/// Returns the body in pieces, the JSON first, then each binary tensor's bytes, not copied
/// where the machine stores them little-endian (one buffer would copy them all once more);
/// and, for the binary form, the JSON header's length.
pub fn encode_http(
    model: &str,
    id: &Option<String>,
    outputs: Vec<(HostTensor, bool)>,
    binary_all: bool,
) -> (Vec<bytes::Bytes>, Option<usize>) {
    let any_binary = binary_all || outputs.iter().any(|(_, b)| *b);
    // The JSON header's place, then each binary tensor's bytes as its entry is written.
    let mut pieces = vec![bytes::Bytes::new()];
    let outs: Vec<Value> = outputs
        .into_iter()
        .map(|(t, binary)| {
            if !(binary || binary_all) {
                return tensor_json(&t, false, &mut Vec::new());
            }
            let mut o = tensor_head(&t);
            let b = into_le_bytes(t.data);
            o["parameters"] = json!({ "binary_data_size": b.len() });
            pieces.push(b);
            o
        })
        .collect();
    let mut head = json!({ "model_name": model, "model_version": "1", "outputs": outs });
    if let Some(id) = id {
        head["id"] = json!(id);
    }
    let (json, n) = with_blobs(&head, any_binary, &[]);
    pieces[0] = bytes::Bytes::from(json);
    (pieces, n)
}

/// Builds an infer request body for `inputs` (the client side): JSON, or with `binary` the
/// binary extension (JSON header + tensors, and the header length to send).
pub fn encode_request(inputs: &[HostTensor], binary: bool) -> (Vec<u8>, Option<usize>) {
    let mut blobs = Vec::new();
    let ins: Vec<Value> = inputs
        .iter()
        .map(|t| tensor_json(t, binary, &mut blobs))
        .collect();
    let mut head = json!({ "inputs": ins });
    if binary {
        head["parameters"] = json!({ "binary_data_output": true });
    }
    with_blobs(&head, binary, &blobs)
}

/// Reads an infer answer (JSON or binary extension) back into tensors (the client side).
pub fn decode_response(body: &[u8], header_len: Option<usize>) -> Result<Vec<HostTensor>, String> {
    let (head, mut binary) = match header_len {
        Some(n) if n <= body.len() => (&body[..n], &body[n..]),
        Some(n) => return Err(format!("header length {n} beyond the body")),
        None => (body, &body[..0]),
    };
    let v: Value = serde_json::from_slice(head).map_err(|e| format!("answer is not JSON: {e}"))?;
    if let Some(e) = v.get("error") {
        return Err(format!("server error: {e}"));
    }
    let outs = v
        .get("outputs")
        .and_then(|o| o.as_array())
        .ok_or("answer has no outputs")?;
    outs.iter()
        .map(|o| {
            let name = o
                .get("name")
                .and_then(|x| x.as_str())
                .unwrap_or("?")
                .to_string();
            let dt = o.get("datatype").and_then(|x| x.as_str()).unwrap_or("");
            let dtype =
                dtype_from_kserve(dt).ok_or_else(|| format!("output '{name}': datatype '{dt}'"))?;
            let shape: Vec<i64> = o
                .get("shape")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .ok_or_else(|| format!("output '{name}': no shape"))?;
            let n = elements(&shape).map_err(|e| e.message)?;
            let data = match o
                .get("parameters")
                .and_then(|p| p.get("binary_data_size"))
                .and_then(|x| x.as_u64())
            {
                Some(size) => {
                    let size = size as usize;
                    if size > binary.len() {
                        return Err(format!("output '{name}': binary data cut short"));
                    }
                    let (mine, rest) = binary.split_at(size);
                    binary = rest;
                    from_le_bytes(dtype, mine, n)?
                }
                None => json_data(&name, dtype, o.get("data").ok_or("output without data")?, n)
                    .map_err(|e| e.message)?,
            };
            Ok(HostTensor::new(
                name,
                shape.iter().map(|&d| d as usize).collect(),
                data,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig() -> Signature {
        let d = vec![
            Dim::Symbolic("batch".into()),
            Dim::Symbolic("sequence".into()),
        ];
        Signature {
            name: "m".into(),
            platform: "test".into(),
            inputs: ["input_ids", "attention_mask"]
                .iter()
                .map(|n| TensorSpec {
                    name: n.to_string(),
                    dtype: DType::Int64,
                    dims: d.clone(),
                })
                .collect(),
            outputs: vec![],
            max_positions: Some(8),
            vocab_size: Some(100),
            type_vocab_size: Some(2),
        }
    }

    #[test]
    fn metadata_declares_the_token_id_ranges() {
        let m = sig().metadata();
        assert_eq!(m["parameters"]["vocab_size"], 100);
        assert_eq!(m["parameters"]["type_vocab_size"], 2);
        // And the longest sequence, so that a client's default fits the model.
        assert_eq!(m["parameters"]["max_position_embeddings"], 8);
        assert_eq!(m["inputs"][0]["shape"], json!([-1, -1]));
        let mut plain = sig();
        plain.vocab_size = None;
        plain.type_vocab_size = None;
        plain.max_positions = None;
        assert!(plain.metadata().get("parameters").is_none());
    }

    fn req(body: &str) -> Result<Vec<HostTensor>, ServeError> {
        let d = decode_http(body.as_bytes(), None)?;
        validate(&sig(), d.inputs)
    }

    #[test]
    fn json_requests_decode_nested_or_flat_and_are_ordered_by_the_model() {
        let t = req(r#"{"inputs":[
            {"name":"attention_mask","shape":[1,3],"datatype":"INT64","data":[[1,1,1]]},
            {"name":"input_ids","shape":[1,3],"datatype":"INT64","data":[5,6,7]}]}"#)
        .unwrap();
        assert_eq!(t[0].name, "input_ids");
        assert_eq!(t[0].data, TensorData::I64(vec![5, 6, 7]));
        assert_eq!(t[1].shape, vec![1, 3]);
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let cases = [
            ("{", "not a KServe v2 infer request"),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[1]}]}"#,
                "unknown input 'x'",
            ),
            (
                r#"{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"INT64","data":[1,2]}]}"#,
                "input 'attention_mask' is missing",
            ),
            (
                r#"{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"FP32","data":[1,2]},{"name":"attention_mask","shape":[1,2],"datatype":"INT64","data":[1,1]}]}"#,
                "is FP32, the model takes INT64",
            ),
            (
                r#"{"inputs":[{"name":"input_ids","shape":[1,3],"datatype":"INT64","data":[1,2]},{"name":"attention_mask","shape":[1,2],"datatype":"INT64","data":[1,1]}]}"#,
                "holds 2 values, the shape needs 3",
            ),
            (
                r#"{"inputs":[{"name":"input_ids","shape":[2],"datatype":"INT64","data":[1,2]},{"name":"attention_mask","shape":[1,2],"datatype":"INT64","data":[1,1]}]}"#,
                "rank 2",
            ),
            (
                r#"{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"INT64","data":[1,200]},{"name":"attention_mask","shape":[1,2],"datatype":"INT64","data":[1,1]}]}"#,
                "outside the model's range 0..100",
            ),
            (
                r#"{"inputs":[{"name":"input_ids","shape":[1,9],"datatype":"INT64","data":[1,1,1,1,1,1,1,1,1]},{"name":"attention_mask","shape":[1,9],"datatype":"INT64","data":[1,1,1,1,1,1,1,1,1]}]}"#,
                "at most 8",
            ),
            (
                r#"{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"INT64","data":[1,2]},{"name":"attention_mask","shape":[2,1],"datatype":"INT64","data":[1,1]}]}"#,
                "same batch size",
            ),
            (
                r#"{"inputs":[{"name":"input_ids","shape":[-1,2],"datatype":"INT64","data":[1,2]}]}"#,
                "negative dimension",
            ),
            (
                r#"{"inputs":[{"name":"input_ids","shape":[4294967296,4294967296],"datatype":"INT64","data":[1]}]}"#,
                "too large",
            ),
            (
                r#"{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"INT64","data":[1,"a"]}]}"#,
                "is not an integer",
            ),
            (
                r#"{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"STRING","data":[1,2]}]}"#,
                "unknown datatype 'STRING'",
            ),
            (
                r#"{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"INT64"}]}"#,
                "neither data nor binary_data_size",
            ),
        ];
        for (body, want) in cases {
            let e = req(body).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(want), "{body}: {}", e.message);
        }
    }

    #[test]
    fn binary_extension_round_trips_both_ways() {
        let inputs = vec![
            HostTensor::new("input_ids", vec![1, 2], TensorData::I64(vec![3, 4])),
            HostTensor::new("attention_mask", vec![1, 2], TensorData::I64(vec![1, 1])),
        ];
        let (body, n) = encode_request(&inputs, true);
        let d = decode_http(&body, n).unwrap();
        assert!(d.binary_output);
        assert_eq!(validate(&sig(), d.inputs).unwrap(), inputs);
        // A body cut short is refused, not read past its end.
        let e = decode_http(&body[..body.len() - 1], n).unwrap_err();
        assert!(
            e.message.contains("runs past the end") || e.message.contains("bytes given"),
            "{}",
            e.message
        );
        let e = decode_http(&body, Some(body.len() + 1)).unwrap_err();
        assert!(e.message.contains("Inference-Header-Content-Length"));

        let out = vec![(
            HostTensor::new("y", vec![1, 2], TensorData::F32(vec![0.5, -1.0])),
            true,
        )];
        let (b, n) = encode_http("m", &Some("7".into()), out.clone(), false);
        assert!(n.is_some());
        assert_eq!(b.len(), 2, "the JSON header, then the tensor's own bytes");
        assert_eq!(
            decode_response(&b.concat(), n).unwrap(),
            vec![out[0].0.clone()]
        );
        let (b, n) = encode_http("m", &None, vec![(out[0].0.clone(), false)], false);
        assert!(n.is_none());
        assert_eq!(b.len(), 1);
        assert_eq!(
            decode_response(&b.concat(), n).unwrap(),
            vec![out[0].0.clone()]
        );
        // Mixed: only the binary ones follow the header, in order.
        let two = vec![
            (
                HostTensor::new("a", vec![2], TensorData::I64(vec![3, 4])),
                false,
            ),
            (
                HostTensor::new("b", vec![1], TensorData::Bool(vec![true])),
                true,
            ),
        ];
        let (b, n) = encode_http("m", &None, two.clone(), false);
        assert_eq!(b.len(), 2);
        let back = decode_response(&b.concat(), n).unwrap();
        assert_eq!(back, two.into_iter().map(|(t, _)| t).collect::<Vec<_>>());
    }
}
