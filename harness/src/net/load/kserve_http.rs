//! KServe v2 over HTTP (Triton, our server): POST /v2/models/NAME/infer, binary tensors (the
//! binary tensor data extension, as Triton's perf_analyzer sends) or JSON. Also the KServe
//! pieces the gRPC protocol shares: the model from its metadata, inputs from the model.

use std::sync::Arc;

use runtimes::{Dim, HostTensor, ModelInfo, TensorSpec};
use serde_json::Value;

use super::protocol::{HttpRequest, LoadError, LoadOptions, Protocol, Request, Scenario};
use crate::inputs::{generate, resolve_shape};
use crate::net::client::{get, request_bytes, Http1, Target};
use crate::net::kserve;
use crate::net::tensors::dtype_from_kserve;

#[derive(Debug)]
pub struct KserveHttp;

impl Protocol for KserveHttp {
    fn name(&self) -> &'static str {
        "kserve-http"
    }

    fn about(&self) -> &'static str {
        "KServe v2 over HTTP (Triton, our server): POST /v2/models/NAME/infer"
    }

    fn default_port(&self) -> u16 {
        8000
    }

    fn discover(&self, o: &LoadOptions, target: &Target) -> Result<ModelInfo, LoadError> {
        let model = o.model_name()?;
        let url = target.url(&format!("/v2/models/{model}"));
        let (status, body) = get(&url, o.timeout)
            .map_err(|e| LoadError::Setup(format!("cannot reach {url}: {e}")))?;
        if status != 200 {
            return Err(LoadError::Setup(format!(
                "{url} answered {status}: {}",
                body.chars().take(300).collect::<String>()
            )));
        }
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| LoadError::Setup(format!("{url}: metadata is not JSON: {e}")))?;
        let conv = |key: &str| -> Vec<(String, String, Vec<i64>)> {
            v[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|t| {
                            (
                                t["name"].as_str().unwrap_or("").to_string(),
                                t["datatype"].as_str().unwrap_or("").to_string(),
                                serde_json::from_value(t["shape"].clone()).unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        // Within what an i64 token id can hold (a server could declare anything).
        let declared = |k: &str| {
            v["parameters"][k]
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| n.min(i64::MAX as u64) as usize)
        };
        let vocab = Vocab {
            size: declared("vocab_size"),
            type_size: declared("type_vocab_size"),
            max_positions: declared("max_position_embeddings"),
        };
        model_info(
            self,
            o,
            target,
            &model,
            &conv("inputs"),
            &conv("outputs"),
            vocab,
        )
    }

    fn prepare(
        &self,
        o: &LoadOptions,
        target: &Target,
        info: &ModelInfo,
        batch: usize,
        seq: usize,
    ) -> Result<Scenario, LoadError> {
        let model = o.model_name()?;
        kserve_scenario(o, info, batch, seq, |inputs| {
            let (req, n) = http_infer_request(target, &model, inputs, o.binary);
            let request = HttpRequest {
                bytes: Arc::new(req),
                expect_binary: o.binary,
                expect_body: true,
            };
            (Box::new(request) as Box<dyn Request>, n)
        })
    }

    fn fetch_outputs(
        &self,
        o: &LoadOptions,
        target: &Target,
        inputs: &[HostTensor],
    ) -> Result<Vec<HostTensor>, String> {
        let model = o.model.clone().unwrap_or_default();
        let (req, _) = http_infer_request(target, &model, inputs, o.binary);
        let mut c = Http1::new(target, o.timeout);
        let r = c.call(&req).map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!(
                "answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        let n = r
            .header("inference-header-content-length")
            .and_then(|v| v.parse().ok());
        kserve::decode_response(&r.body, n)
    }

    fn failure_hint(&self, o: &LoadOptions) -> Option<String> {
        inputs_hint(o)
    }

    fn encoding(&self, o: &LoadOptions) -> Option<String> {
        Some(if o.binary { "binary" } else { "json" }.to_string())
    }
}

/// Where KServe inputs came from, when the first request fails.
pub(super) fn inputs_hint(o: &LoadOptions) -> Option<String> {
    o.local.is_none().then(|| {
        match o.vocab {
            Some(n) => format!(
                " (inputs come from the server's metadata; integer ids are drawn from 0..{n}, set by --vocab)"
            ),
            None => format!(
                " (inputs come from the server's metadata; integer ids are drawn below the vocabulary it declares, else below {DEFAULT_VOCAB}: set --vocab to the model's)"
            ),
        }
    })
}

/// Token ids are drawn below this when neither `--vocab` nor the server says.
pub const DEFAULT_VOCAB: usize = 1000;

/// The token-id ranges a server declares in its model metadata (ours does, as `parameters`;
/// KServe's gRPC metadata has no place for them).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Vocab {
    pub size: Option<usize>,
    pub type_size: Option<usize>,
    /// The longest sequence the model takes (ours declares `max_position_embeddings`).
    pub max_positions: Option<usize>,
}

/// One KServe scenario: its inputs generated from the model as in-process runs make them,
/// and the request `build` makes of them (with the size it reports).
pub(super) fn kserve_scenario(
    o: &LoadOptions,
    info: &ModelInfo,
    batch: usize,
    seq: usize,
    build: impl FnOnce(&[HostTensor]) -> (Box<dyn Request>, usize),
) -> Result<Scenario, LoadError> {
    let setup = |e: String| LoadError::Setup(e);
    let shape = resolve_shape(info, batch, seq, &o.overrides).map_err(|e| setup(e.to_string()))?;
    let inputs = generate(info, &shape, o.seed).map_err(|e| setup(e.to_string()))?;
    let (request, request_bytes) = build(&inputs);
    Ok(Scenario {
        request,
        request_bytes,
        shapes: shape.inputs.iter().cloned().collect(),
        batch: shape.batch,
        seq: shape.seq,
    })
}

/// The model's inputs as the server declares them (KServe metadata: name, datatype, shape
/// with -1 for dynamic dims).
pub(super) fn model_info(
    protocol: &dyn Protocol,
    o: &LoadOptions,
    target: &Target,
    model: &str,
    inputs: &[(String, String, Vec<i64>)],
    outputs: &[(String, String, Vec<i64>)],
    declared: Vocab,
) -> Result<ModelInfo, LoadError> {
    let spec = |(name, dt, shape): &(String, String, Vec<i64>)| -> Result<TensorSpec, String> {
        Ok(TensorSpec {
            name: name.clone(),
            dtype: dtype_from_kserve(dt).ok_or_else(|| {
                format!("tensor '{name}': datatype '{dt}' is not supported by the load generator")
            })?,
            dims: shape
                .iter()
                .enumerate()
                .map(|(i, &d)| match (i, d) {
                    (_, d) if d >= 0 => Dim::Fixed(d as usize),
                    (0, _) => Dim::Symbolic("batch".into()),
                    _ => Dim::Symbolic("sequence".into()),
                })
                .collect(),
        })
    };
    let inputs = inputs
        .iter()
        .map(spec)
        .collect::<Result<Vec<_>, _>>()
        .map_err(LoadError::Setup)?;
    if inputs.is_empty() {
        return Err(LoadError::Setup(format!(
            "model '{model}' declares no inputs"
        )));
    }
    Ok(ModelInfo {
        name: model.to_string(),
        inputs,
        outputs: outputs.iter().filter_map(|o| spec(o).ok()).collect(),
        spec_source: format!("{} metadata of {}", protocol.name(), target.url("")),
        onnx_error: None,
        model_type: None,
        vocab_size: Some(o.vocab.or(declared.size).unwrap_or(DEFAULT_VOCAB)),
        vocab_source: Some(match (o.vocab, declared.size) {
            (Some(_), _) => "--vocab".into(),
            (None, Some(_)) => "the server's model metadata".into(),
            (None, None) => format!(
                "the default 0..{DEFAULT_VOCAB} (the server declares no vocabulary; set --vocab)"
            ),
        }),
        type_vocab_size: Some(declared.type_size.unwrap_or(1)),
        max_positions: declared.max_positions,
        reference: None,
    })
}

/// A KServe v2 HTTP infer request for `inputs`, serialized (binary tensors or JSON), and the
/// size of its body.
pub fn http_infer_request(
    target: &Target,
    model: &str,
    inputs: &[HostTensor],
    binary: bool,
) -> (Vec<u8>, usize) {
    let (body, header_len) = kserve::encode_request(inputs, binary);
    let content_type = if binary {
        "application/octet-stream"
    } else {
        "application/json"
    };
    let mut headers = vec![("Content-Type", content_type.to_string())];
    if let Some(n) = header_len {
        headers.push(("Inference-Header-Content-Length", n.to_string()));
    }
    let path = format!("/v2/models/{model}/infer");
    (
        request_bytes(target, "POST", &path, &headers, &body),
        body.len(),
    )
}
