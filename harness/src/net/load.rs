//! `harness load`: drives a server (ours, Triton, vLLM) over KServe v2 HTTP or gRPC, OpenAI
//! embeddings or streamed completions, in closed or open loop, with the same measurement
//! rules as in-process runs (warm-up, minimum time and samples, latency from the scheduled
//! send in open loop) and writes the same results schema.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use runtimes::{Dim, HostTensor, ModelInfo, TensorSpec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::client::{get, request_bytes, Http1, NetError, SseParser, Target};
use super::kserve;
use super::metrics::{delta, parse_prometheus, sum_metric};
use super::pb;
use super::tensors::{dtype_from_kserve, kserve_dtype, to_le_bytes};
use crate::group::{mode_tag, MonitorHooks};
use crate::inputs::{generate, resolve_shape};
use crate::measure::{self, LoadMode, MeasureConfig, StepInfo, StepRecord, WindowHooks, Workload};
use crate::parity::{Parity, Tolerance};
use crate::results::{ScenarioResult, ScenarioStatus};
use crate::stats::LatencyStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// KServe v2 over HTTP (Triton, our server): POST /v2/models/NAME/infer
    KserveHttp,
    /// KServe v2 over gRPC (Triton, our server): ModelInfer
    KserveGrpc,
    /// OpenAI-style POST /v1/embeddings (vLLM, our server)
    OpenaiEmbeddings,
    /// OpenAI-style POST /v1/completions with stream=true (vLLM): TTFT, TPOT, ITL
    OpenaiCompletions,
    /// A plain GET of the target URL: the load generator's own ceiling
    HttpGet,
}

impl Protocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::KserveHttp => "kserve-http",
            Protocol::KserveGrpc => "kserve-grpc",
            Protocol::OpenaiEmbeddings => "openai-embeddings",
            Protocol::OpenaiCompletions => "openai-completions",
            Protocol::HttpGet => "http-get",
        }
    }

    fn default_port(&self) -> u16 {
        match self {
            Protocol::KserveGrpc => 8001,
            _ => 8000,
        }
    }
}

/// Service-level objectives for goodput (vLLM's definition: a request counts when it meets
/// every objective given).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
}

impl Slo {
    /// `ttft:200ms,tpot:50ms,e2e:2s` (a bare number is milliseconds).
    pub fn parse(s: &str) -> Result<Slo, String> {
        let mut slo = Slo::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once([':', '='])
                .ok_or_else(|| format!("'{part}': write METRIC:LIMIT, e.g. ttft:200ms"))?;
            let ms = match v.trim().parse::<f64>() {
                Ok(x) => x,
                Err(_) => {
                    humantime::parse_duration(v.trim())
                        .map_err(|e| format!("'{v}': {e}"))?
                        .as_secs_f64()
                        * 1e3
                }
            };
            if !(ms > 0.0 && ms.is_finite()) {
                return Err(format!("'{part}': the limit must be positive"));
            }
            match k.trim() {
                "ttft" => slo.ttft_ms = Some(ms),
                "tpot" => slo.tpot_ms = Some(ms),
                "e2e" | "e2el" => slo.e2e_ms = Some(ms),
                other => return Err(format!("unknown objective '{other}' (ttft, tpot, e2e)")),
            }
        }
        Ok(slo)
    }

    fn met(&self, ttft_ms: f64, tpot_ms: Option<f64>, e2e_ms: f64) -> bool {
        self.ttft_ms.is_none_or(|l| ttft_ms <= l)
            && self.tpot_ms.is_none_or(|l| tpot_ms.is_none_or(|t| t <= l))
            && self.e2e_ms.is_none_or(|l| e2e_ms <= l)
    }
}

/// Streamed completions: vLLM's benchmark metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamingStats {
    /// Send to first token.
    pub ttft: LatencyStats,
    /// Per request: (end-to-end - TTFT) / (output tokens - 1).
    pub tpot: LatencyStats,
    /// Every gap between consecutive streamed chunks.
    pub itl: LatencyStats,
    /// Send to last token (the row's latency is from the scheduled time in open loop).
    pub e2e: LatencyStats,
    pub output_tokens_mean: f64,
    pub output_tokens_per_s: f64,
    pub slo: Option<Slo>,
    /// Requests per second that met every objective.
    pub goodput_per_s: Option<f64>,
    pub slo_met: Option<u64>,
}

/// What a network row adds to the common schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServedInfo {
    pub target: String,
    pub protocol: Protocol,
    pub model: String,
    /// KServe over HTTP: "binary" (the binary tensor extension) or "json".
    pub encoding: Option<String>,
    pub request_bytes: usize,
    /// Connections (re)opened by the load generator during the window.
    pub connects: u64,
    /// The load generator's CPU use over the window and the CPUs it had.
    pub client_cores_busy: Option<f64>,
    pub client_cpus: usize,
    /// True when the load generator used more than 90% of its CPUs: its figures may
    /// describe the client, not the server.
    pub client_saturated: bool,
    /// Prometheus series that changed over the window (counters' deltas).
    #[serde(default)]
    pub server_metrics: BTreeMap<String, f64>,
    pub server_avg_batch: Option<f64>,
    pub server_queue_ms_per_request: Option<f64>,
    pub server_compute_ms_per_request: Option<f64>,
    pub metrics_error: Option<String>,
    /// Embeddings: the server's usage.prompt_tokens per request.
    pub prompt_tokens_per_request: Option<f64>,
    pub streaming: Option<StreamingStats>,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub target: String,
    pub protocol: Protocol,
    pub model: Option<String>,
    pub batch: Vec<usize>,
    pub seq: Vec<usize>,
    /// Exact input shapes (`--shape NAME=DIMS`), over batch and seq.
    pub overrides: Vec<(String, Vec<usize>)>,
    pub modes: Vec<LoadMode>,
    pub measure: MeasureConfig,
    pub seed: u64,
    /// Token ids are drawn below this (KServe, when the model folder is not given).
    pub vocab: usize,
    /// KServe over HTTP: the binary tensor extension (else JSON).
    pub binary: bool,
    pub metrics_url: Option<String>,
    /// The runtime column of the rows ("triton", "ours-ort", ...).
    pub label: String,
    /// Server-side compute threads, when known (for the threads column).
    pub server_threads: usize,
    pub timeout: Duration,
    pub max_tokens: usize,
    pub slo: Option<Slo>,
    /// The local model, when known: inputs then come from it exactly as in-process runs make
    /// them (same seed, same tensors), and outputs can be compared.
    pub local: Option<ModelInfo>,
    pub interrupt: Arc<AtomicBool>,
}

impl LoadOptions {
    /// One closed-loop connection, batch 1, sequence 128, binary tensors, 30 s timeout, the
    /// default timing: a base to override.
    pub fn new(target: &str, protocol: Protocol, model: Option<&str>) -> LoadOptions {
        LoadOptions {
            target: target.to_string(),
            protocol,
            model: model.map(str::to_string),
            batch: vec![1],
            seq: vec![128],
            overrides: Vec::new(),
            modes: vec![LoadMode::ClosedLoop { concurrency: 1 }],
            measure: MeasureConfig::default(),
            seed: 42,
            vocab: 1000,
            binary: true,
            metrics_url: None,
            label: protocol.as_str().to_string(),
            server_threads: 0,
            timeout: Duration::from_secs(30),
            max_tokens: 64,
            slo: None,
            local: None,
            interrupt: Arc::new(AtomicBool::new(false)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Setup(String),
}

type GrpcClient =
    pb::grpc_inference_service_client::GrpcInferenceServiceClient<tonic::transport::Channel>;

/// A gRPC worker: its own single-threaded runtime and HTTP/2 connection.
pub struct GrpcWorker {
    rt: tokio::runtime::Runtime,
    client: Option<GrpcClient>,
    endpoint: tonic::transport::Endpoint,
    request: Arc<pb::ModelInferRequest>,
    connects: u64,
}

/// One worker's unit of work.
pub enum Worker {
    Http {
        http: Http1,
        request: Arc<Vec<u8>>,
        expect_binary: bool,
        expect_body: bool,
    },
    Grpc(Box<GrpcWorker>),
    Stream {
        http: Http1,
        request: Arc<Vec<u8>>,
    },
}

impl Worker {
    fn connects(&self) -> u64 {
        match self {
            Worker::Http { http, .. } | Worker::Stream { http, .. } => http.reconnects,
            Worker::Grpc(g) => g.connects,
        }
    }
}

fn status_error(status: u16, body: &[u8]) -> NetError {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    NetError::new(format!("http-{status}"), text)
}

impl Workload for Worker {
    type Error = NetError;

    fn step(&mut self) -> Result<Option<StepInfo>, NetError> {
        match self {
            Worker::Http {
                http,
                request,
                expect_binary,
                expect_body,
            } => {
                let r = http.call(request)?;
                if r.status != 200 {
                    return Err(status_error(r.status, &r.body));
                }
                if *expect_binary && r.header("inference-header-content-length").is_none() {
                    return Err(NetError::new(
                        "bad-response",
                        "asked for binary outputs, got an answer without Inference-Header-Content-Length",
                    ));
                }
                if r.body.is_empty() && *expect_body {
                    return Err(NetError::new("bad-response", "empty answer"));
                }
                Ok(None)
            }
            Worker::Grpc(g) => {
                let GrpcWorker {
                    rt,
                    client,
                    endpoint,
                    request,
                    connects,
                } = &mut **g;
                rt.block_on(async {
                    if client.is_none() {
                        let ch = endpoint
                            .connect()
                            .await
                            .map_err(|e| NetError::new("connect", format!("gRPC connect: {e}")))?;
                        *connects += 1;
                        *client = Some(
                            pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(ch)
                                .max_decoding_message_size(usize::MAX),
                        );
                    }
                    let c = client.as_mut().expect("client just set");
                    match c.model_infer((**request).clone()).await {
                        Ok(_) => Ok(None),
                        Err(s) => {
                            if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) {
                                *client = None;
                            }
                            Err(NetError::new(
                                format!("grpc-{}", grpc_code(s.code())),
                                s.message().to_string(),
                            ))
                        }
                    }
                })
            }
            Worker::Stream { http, request } => {
                let sent = Instant::now();
                let mut parser = SseParser::default();
                let mut times: Vec<Instant> = Vec::new();
                let mut usage_tokens: Option<u64> = None;
                let mut done = false;
                let mut bad: Option<String> = None;
                let mut body_head = Vec::new();
                let (status, _) = http.exchange(request, &mut |piece: &[u8]| {
                    let now = Instant::now();
                    if body_head.len() < 300 {
                        body_head.extend_from_slice(&piece[..piece.len().min(300)]);
                    }
                    for data in parser.feed(piece) {
                        if data.trim() == "[DONE]" {
                            done = true;
                            continue;
                        }
                        match serde_json::from_str::<Value>(&data) {
                            Ok(v) => {
                                let text = v["choices"][0]["text"]
                                    .as_str()
                                    .or_else(|| v["choices"][0]["delta"]["content"].as_str())
                                    .unwrap_or("");
                                if !text.is_empty() {
                                    times.push(now);
                                }
                                if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                                    usage_tokens = Some(n);
                                }
                            }
                            Err(e) => bad = Some(format!("an event is not JSON: {e}")),
                        }
                    }
                })?;
                if status != 200 {
                    return Err(status_error(status, &body_head));
                }
                if let Some(b) = bad {
                    return Err(NetError::new("bad-response", b));
                }
                if !done {
                    return Err(NetError::new(
                        "bad-response",
                        "the stream ended without data: [DONE]",
                    ));
                }
                let Some(first) = times.first() else {
                    return Err(NetError::new(
                        "bad-response",
                        "the stream carried no tokens",
                    ));
                };
                Ok(Some(StepInfo {
                    ttft_ns: first.duration_since(sent).as_nanos() as u64,
                    token_gaps_ns: times
                        .windows(2)
                        .map(|w| w[1].duration_since(w[0]).as_nanos() as u64)
                        .collect(),
                    output_tokens: usage_tokens.unwrap_or(times.len() as u64),
                }))
            }
        }
    }

    fn error_kind(e: &NetError) -> String {
        e.kind.clone()
    }
}

fn grpc_code(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        InvalidArgument => "invalid-argument",
        NotFound => "not-found",
        Unavailable => "unavailable",
        DeadlineExceeded => "deadline-exceeded",
        ResourceExhausted => "resource-exhausted",
        Internal => "internal",
        Unimplemented => "unimplemented",
        Cancelled => "cancelled",
        _ => "other",
    }
}

/// The model's inputs as the server declares them (KServe metadata).
fn metadata_info(
    target: &Target,
    protocol: Protocol,
    model: &str,
    vocab: usize,
    timeout: Duration,
) -> Result<ModelInfo, String> {
    let (inputs, outputs) = match protocol {
        Protocol::KserveGrpc => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let uri = format!("http://{}:{}", target.host, target.port);
            let md = rt.block_on(async {
                let ch = tonic::transport::Endpoint::from_shared(uri.clone())
                    .map_err(|e| e.to_string())?
                    .timeout(timeout)
                    .connect()
                    .await
                    .map_err(|e| format!("cannot reach the gRPC server at {uri}: {e}"))?;
                let mut c = pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(ch);
                c.model_metadata(pb::ModelMetadataRequest {
                    name: model.to_string(),
                    version: String::new(),
                })
                .await
                .map(|r| r.into_inner())
                .map_err(|s| format!("model metadata for '{model}': {}", s.message()))
            })?;
            let conv = |ts: &[pb::model_metadata_response::TensorMetadata]| -> Vec<(String, String, Vec<i64>)> {
                ts.iter().map(|t| (t.name.clone(), t.datatype.clone(), t.shape.clone())).collect()
            };
            (conv(&md.inputs), conv(&md.outputs))
        }
        _ => {
            let url = target.url(&format!("/v2/models/{model}"));
            let (status, body) =
                get(&url, timeout).map_err(|e| format!("cannot reach {url}: {e}"))?;
            if status != 200 {
                return Err(format!(
                    "{url} answered {status}: {}",
                    body.chars().take(300).collect::<String>()
                ));
            }
            let v: Value = serde_json::from_str(&body)
                .map_err(|e| format!("{url}: metadata is not JSON: {e}"))?;
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
            (conv("inputs"), conv("outputs"))
        }
    };
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
    let inputs = inputs.iter().map(spec).collect::<Result<Vec<_>, _>>()?;
    if inputs.is_empty() {
        return Err(format!("model '{model}' declares no inputs"));
    }
    Ok(ModelInfo {
        name: model.to_string(),
        inputs,
        outputs: outputs.iter().filter_map(|o| spec(o).ok()).collect(),
        spec_source: format!("{} metadata of {}", protocol.as_str(), target.url("")),
        onnx_error: None,
        model_type: None,
        vocab_size: Some(vocab),
        vocab_source: Some("--vocab".into()),
        type_vocab_size: Some(1),
        max_positions: None,
        reference: None,
    })
}

/// Common words that are one token each in BERT-style vocabularies: sentences of a known
/// token length.
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "was", "he", "for", "it", "with", "as", "his", "on",
    "be", "at", "by", "had", "are", "but", "from", "or", "have", "an", "they", "which", "one",
    "you", "were", "her", "all", "she", "there", "would", "their", "we", "him", "been", "has",
    "when", "who", "will", "more", "no", "if", "out", "so", "said", "what", "up", "its", "about",
    "into", "than", "them", "can", "only", "other", "new", "some", "could", "time", "these", "two",
    "may", "then", "do", "first", "any", "my", "now", "such", "like", "our", "over", "man", "me",
    "even", "most", "made", "after", "also", "did", "many", "before", "must", "through", "back",
    "years", "where", "much", "your", "way", "well", "down", "should", "because", "each", "just",
    "those", "people", "how", "too", "little", "state", "good", "very", "make", "world", "still",
    "own", "see", "men", "work", "long", "get", "here", "between", "both", "life", "being",
    "under", "never", "day", "same", "another", "know", "while", "last", "might", "us", "great",
    "old", "year", "off", "come", "since", "against", "go", "came", "right", "used", "take",
    "three",
];

pub fn sentence(words: usize, rng: &mut rand_chacha::ChaCha8Rng) -> String {
    (0..words)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// What every worker of one scenario sends.
enum Prepared {
    Http {
        request: Arc<Vec<u8>>,
        expect_binary: bool,
        expect_body: bool,
    },
    Grpc {
        request: Arc<pb::ModelInferRequest>,
        uri: String,
    },
    Stream {
        request: Arc<Vec<u8>>,
    },
}

struct Scenario {
    prepared: Prepared,
    request_bytes: usize,
    shapes: BTreeMap<String, Vec<usize>>,
    batch: usize,
    seq: Option<usize>,
}

fn model_name(o: &LoadOptions) -> Result<String, LoadError> {
    o.model.clone().ok_or_else(|| {
        LoadError::Setup(format!(
            "--model NAME is required for --protocol {}",
            o.protocol.as_str()
        ))
    })
}

fn prepare(
    o: &LoadOptions,
    target: &Target,
    info: Option<&ModelInfo>,
    batch: usize,
    seq: usize,
) -> Result<Scenario, LoadError> {
    let setup = LoadError::Setup;
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(o.seed ^ (batch as u64) << 32 ^ seq as u64);
    match o.protocol {
        Protocol::KserveHttp | Protocol::KserveGrpc => {
            let info = info.ok_or_else(|| setup("no model metadata".into()))?;
            let model = model_name(o)?;
            let shape =
                resolve_shape(info, batch, seq, &o.overrides).map_err(|e| setup(e.to_string()))?;
            let inputs = generate(info, &shape, o.seed).map_err(|e| setup(e.to_string()))?;
            let shapes = shape.inputs.iter().cloned().collect();
            let (prepared, n) = if o.protocol == Protocol::KserveHttp {
                let (req, n) = http_infer_request(target, &model, &inputs, o.binary);
                (
                    Prepared::Http {
                        request: Arc::new(req),
                        expect_binary: o.binary,
                        expect_body: true,
                    },
                    n,
                )
            } else {
                let req = grpc_request(model, &inputs);
                let n = prost::Message::encoded_len(&req);
                (
                    Prepared::Grpc {
                        request: Arc::new(req),
                        uri: format!("http://{}:{}", target.host, target.port),
                    },
                    n,
                )
            };
            Ok(Scenario {
                prepared,
                request_bytes: n,
                shapes,
                batch: shape.batch,
                seq: shape.seq,
            })
        }
        Protocol::OpenaiEmbeddings => {
            let model = model_name(o)?;
            let texts: Vec<String> = (0..batch).map(|_| sentence(seq, &mut rng)).collect();
            let body =
                serde_json::to_vec(&json!({ "model": model, "input": texts })).unwrap_or_default();
            let req = request_bytes(
                target,
                "POST",
                "/v1/embeddings",
                &[("Content-Type", "application/json".into())],
                &body,
            );
            Ok(Scenario {
                prepared: Prepared::Http {
                    request: Arc::new(req),
                    expect_binary: false,
                    expect_body: true,
                },
                request_bytes: body.len(),
                shapes: BTreeMap::from([("sentences".to_string(), vec![batch, seq])]),
                batch,
                seq: Some(seq),
            })
        }
        Protocol::OpenaiCompletions => {
            let model = model_name(o)?;
            let body = serde_json::to_vec(&json!({
                "model": model,
                "prompt": sentence(seq, &mut rng),
                "max_tokens": o.max_tokens,
                "stream": true,
                "ignore_eos": true,
                "temperature": 0.0,
                "stream_options": { "include_usage": true },
            }))
            .unwrap_or_default();
            let req = request_bytes(
                target,
                "POST",
                "/v1/completions",
                &[("Content-Type", "application/json".into())],
                &body,
            );
            Ok(Scenario {
                prepared: Prepared::Stream {
                    request: Arc::new(req),
                },
                request_bytes: body.len(),
                shapes: BTreeMap::from([("prompt_words".to_string(), vec![seq])]),
                batch: 1,
                seq: Some(seq),
            })
        }
        Protocol::HttpGet => {
            let req = request_bytes(target, "GET", "", &[], &[]);
            Ok(Scenario {
                prepared: Prepared::Http {
                    request: Arc::new(req),
                    expect_binary: false,
                    expect_body: false,
                },
                request_bytes: 0,
                shapes: BTreeMap::new(),
                batch: 1,
                seq: None,
            })
        }
    }
}

fn workers(
    p: &Prepared,
    target: &Target,
    n: usize,
    timeout: Duration,
) -> Result<Vec<Worker>, LoadError> {
    (0..n)
        .map(|_| {
            Ok(match p {
                Prepared::Http {
                    request,
                    expect_binary,
                    expect_body,
                } => Worker::Http {
                    http: Http1::new(target, timeout),
                    request: request.clone(),
                    expect_binary: *expect_binary,
                    expect_body: *expect_body,
                },
                Prepared::Stream { request } => Worker::Stream {
                    http: Http1::new(target, timeout),
                    request: request.clone(),
                },
                Prepared::Grpc { request, uri } => Worker::Grpc(Box::new(GrpcWorker {
                    rt: tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| LoadError::Setup(format!("a gRPC client runtime: {e}")))?,
                    client: None,
                    endpoint: tonic::transport::Endpoint::from_shared(uri.clone())
                        .map_err(|e| LoadError::Setup(format!("{uri}: {e}")))?
                        .timeout(timeout)
                        .tcp_nodelay(true),
                    request: request.clone(),
                    connects: 0,
                })),
            })
        })
        .collect()
}

/// Scrapes the server's metrics at the window's edges, around the resource monitors.
struct ScrapeHooks<'a> {
    inner: MonitorHooks<'a>,
    url: Option<String>,
    before: Option<BTreeMap<String, f64>>,
    after: Option<BTreeMap<String, f64>>,
    error: Option<String>,
}

impl ScrapeHooks<'_> {
    fn scrape(&mut self) -> Option<BTreeMap<String, f64>> {
        let url = self.url.as_ref()?;
        match get(url, Duration::from_secs(5)) {
            Ok((200, text)) => Some(parse_prometheus(&text)),
            Ok((s, _)) => {
                self.error = Some(format!("{url} answered {s}"));
                None
            }
            Err(e) => {
                self.error = Some(format!("{url}: {e}"));
                None
            }
        }
    }
}

impl WindowHooks for ScrapeHooks<'_> {
    fn window_start(&mut self) {
        self.before = self.scrape();
        self.inner.window_start();
    }
    fn window_end(&mut self) {
        self.inner.window_end();
        self.after = self.scrape();
    }
    fn interrupted(&self) -> bool {
        self.inner.interrupted()
    }
}

fn stats_ns(v: &[u64]) -> LatencyStats {
    LatencyStats::from_samples(v)
}

fn streaming_stats(steps: &[StepRecord], window_s: f64, slo: &Option<Slo>) -> StreamingStats {
    let ttft: Vec<u64> = steps.iter().map(|s| s.info.ttft_ns).collect();
    let e2e: Vec<u64> = steps.iter().map(|s| s.e2e_ns).collect();
    let itl: Vec<u64> = steps
        .iter()
        .flat_map(|s| s.info.token_gaps_ns.iter().copied())
        .collect();
    let tpot_of = |s: &StepRecord| -> Option<u64> {
        (s.info.output_tokens > 1)
            .then(|| s.e2e_ns.saturating_sub(s.info.ttft_ns) / (s.info.output_tokens - 1))
    };
    let tpot: Vec<u64> = steps.iter().filter_map(tpot_of).collect();
    let tokens: u64 = steps.iter().map(|s| s.info.output_tokens).sum();
    let met = slo.as_ref().map(|slo| {
        steps
            .iter()
            .filter(|s| {
                slo.met(
                    s.info.ttft_ns as f64 / 1e6,
                    tpot_of(s).map(|t| t as f64 / 1e6),
                    s.e2e_ns as f64 / 1e6,
                )
            })
            .count() as u64
    });
    StreamingStats {
        ttft: stats_ns(&ttft),
        tpot: stats_ns(&tpot),
        itl: stats_ns(&itl),
        e2e: stats_ns(&e2e),
        output_tokens_mean: if steps.is_empty() {
            0.0
        } else {
            tokens as f64 / steps.len() as f64
        },
        output_tokens_per_s: if window_s > 0.0 {
            tokens as f64 / window_s
        } else {
            0.0
        },
        slo: slo.clone(),
        goodput_per_s: met.map(|m| {
            if window_s > 0.0 {
                m as f64 / window_s
            } else {
                0.0
            }
        }),
        slo_met: met,
    }
}

/// A KServe v2 HTTP infer request for `inputs`, serialized (binary tensors or JSON), and the
/// size of its body.
fn http_infer_request(
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

/// A KServe v2 gRPC infer request for `inputs`, as raw little-endian contents (what Triton's
/// clients send).
fn grpc_request(model: String, inputs: &[HostTensor]) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model,
        inputs: inputs
            .iter()
            .map(|t| pb::model_infer_request::InferInputTensor {
                name: t.name.clone(),
                datatype: kserve_dtype(t.data.dtype()).unwrap_or("BYTES").into(),
                shape: t.shape.iter().map(|&d| d as i64).collect(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: inputs.iter().map(|t| to_le_bytes(&t.data)).collect(),
        ..Default::default()
    }
}

/// One full answer for a KServe scenario, decoded (to check outputs and compare them).
pub fn fetch_outputs(
    o: &LoadOptions,
    target: &Target,
    inputs: &[HostTensor],
) -> Result<Vec<HostTensor>, String> {
    let model = o.model.clone().unwrap_or_default();
    match o.protocol {
        Protocol::KserveGrpc => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let ch = tonic::transport::Endpoint::from_shared(format!(
                    "http://{}:{}",
                    target.host, target.port
                ))
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
                let mut c = pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(ch)
                    .max_decoding_message_size(usize::MAX);
                let req = grpc_request(model, inputs);
                let r = c
                    .model_infer(req)
                    .await
                    .map_err(|s| s.message().to_string())?
                    .into_inner();
                r.outputs
                    .iter()
                    .zip(&r.raw_output_contents)
                    .map(|(t, raw)| {
                        let dt = dtype_from_kserve(&t.datatype).ok_or("unknown datatype")?;
                        let shape: Vec<usize> =
                            t.shape.iter().map(|&d| d.max(0) as usize).collect();
                        let n = shape.iter().product();
                        Ok(HostTensor::new(
                            t.name.clone(),
                            shape,
                            super::tensors::from_le_bytes(dt, raw, n)?,
                        ))
                    })
                    .collect()
            })
        }
        _ => {
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
    }
}

/// Embeddings: the server's prompt tokens per request, from one answer.
fn prompt_tokens(target: &Target, p: &Prepared, timeout: Duration) -> Option<f64> {
    let Prepared::Http { request, .. } = p else {
        return None;
    };
    let mut c = Http1::new(target, timeout);
    let r = c.call(request).ok()?;
    let v: Value = serde_json::from_slice(&r.body).ok()?;
    v["usage"]["prompt_tokens"].as_f64()
}

/// Runs every (batch, seq, mode) scenario against the target; `emit` gets each row as it
/// finishes (so a caller can write results after every scenario). Setup problems (target
/// unreachable, unknown model) are errors before anything is measured.
pub fn run_load(
    o: &LoadOptions,
    emit: &mut dyn FnMut(ScenarioResult),
) -> Result<ModelInfo, LoadError> {
    let target = Target::parse(&o.target, o.protocol.default_port()).map_err(LoadError::Setup)?;
    let info = match o.protocol {
        Protocol::KserveHttp | Protocol::KserveGrpc => {
            let model = model_name(o)?;
            let remote = metadata_info(&target, o.protocol, &model, o.vocab, o.timeout)
                .map_err(LoadError::Setup)?;
            match &o.local {
                Some(local) => {
                    let names =
                        |i: &ModelInfo| i.inputs.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
                    if names(local) != names(&remote) {
                        return Err(LoadError::Setup(format!(
                            "the server's model takes {:?}, the local model {:?}",
                            names(&remote),
                            names(local)
                        )));
                    }
                    local.clone()
                }
                None => remote,
            }
        }
        _ => ModelInfo {
            name: o.model.clone().unwrap_or_else(|| o.target.clone()),
            inputs: vec![],
            outputs: vec![],
            spec_source: format!("{} (no tensor metadata)", o.protocol.as_str()),
            onnx_error: None,
            model_type: None,
            vocab_size: None,
            vocab_source: None,
            type_vocab_size: None,
            max_positions: None,
            reference: None,
        },
    };
    let shapes: Vec<(usize, usize)> = match o.protocol {
        Protocol::HttpGet => vec![(1, 0)],
        _ => o
            .batch
            .iter()
            .flat_map(|&b| o.seq.iter().map(move |&s| (b, s)))
            .collect(),
    };
    let client_cpus = runtimes::online_cpus();
    for &(batch, seq) in &shapes {
        for mode in &o.modes {
            if o.interrupt.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(info);
            }
            let mut row = blank(o, &target, batch, seq, mode);
            let sc = match prepare(o, &target, Some(&info), batch, seq) {
                Ok(sc) => sc,
                Err(e) => {
                    row.error = Some(e.to_string());
                    row.error_kind = Some("setup".into());
                    emit(row);
                    continue;
                }
            };
            row.shapes = sc.shapes.clone();
            row.batch = sc.batch;
            row.seq = sc.seq;
            let mut ws = match workers(&sc.prepared, &target, mode.concurrency().max(1), o.timeout)
            {
                Ok(w) => w,
                Err(e) => {
                    row.error = Some(e.to_string());
                    emit(row);
                    continue;
                }
            };
            let mut hooks = ScrapeHooks {
                inner: MonitorHooks::new(&o.interrupt),
                url: o.metrics_url.clone(),
                before: None,
                after: None,
                error: None,
            };
            let r = measure::measure_workers(&mut ws, mode, &o.measure, &mut hooks, &|_| {});
            let connects: u64 = ws.iter().map(|w| w.connects()).sum();
            match r {
                Err(e) => {
                    let hint = if matches!(o.protocol, Protocol::KserveHttp | Protocol::KserveGrpc)
                        && o.local.is_none()
                    {
                        format!(" (inputs come from the server's metadata; integer ids are drawn from 0..{}, set by --vocab)", o.vocab)
                    } else {
                        String::new()
                    };
                    row.error = Some(format!("the first request failed: {e}{hint}"));
                    row.error_kind = Some(e.kind.clone());
                }
                Ok((m, open, steps)) => {
                    row.status = if m.failures > 0 {
                        ScenarioStatus::Failed
                    } else {
                        ScenarioStatus::Ok
                    };
                    if m.failures > 0 {
                        let kinds: Vec<String> = m
                            .failure_kinds
                            .iter()
                            .map(|(k, v)| format!("{v} {k}"))
                            .collect();
                        row.error = Some(format!(
                            "{} requests failed: {}",
                            m.failures,
                            kinds.join(", ")
                        ));
                    }
                    row.throughput_per_s = Some(measure::throughput(&m, sc.batch));
                    let res = hooks.inner.report.take();
                    let cores = res.as_ref().and_then(|r| r.avg_cores_busy);
                    let server_metrics = match (&hooks.before, &hooks.after) {
                        (Some(b), Some(a)) => delta(b, a),
                        _ => BTreeMap::new(),
                    };
                    let per_req = |name: &str| -> Option<f64> {
                        let n = sum_metric(&server_metrics, "nv_inference_request_success")?;
                        (n > 0.0)
                            .then(|| sum_metric(&server_metrics, name).map(|us| us / n / 1e3))
                            .flatten()
                    };
                    let avg_batch = match (
                        sum_metric(&server_metrics, "nv_inference_count"),
                        sum_metric(&server_metrics, "nv_inference_exec_count"),
                    ) {
                        (Some(c), Some(e)) if e > 0.0 => Some(c / e),
                        _ => None,
                    };
                    let streaming = (o.protocol == Protocol::OpenaiCompletions)
                        .then(|| streaming_stats(&steps, m.window_s, &o.slo));
                    row.served = Some(ServedInfo {
                        target: o.target.clone(),
                        protocol: o.protocol,
                        model: o.model.clone().unwrap_or_default(),
                        encoding: (o.protocol == Protocol::KserveHttp)
                            .then(|| if o.binary { "binary" } else { "json" }.to_string()),
                        request_bytes: sc.request_bytes,
                        connects,
                        client_cores_busy: cores,
                        client_cpus,
                        client_saturated: cores.is_some_and(|c| c > 0.9 * client_cpus as f64),
                        server_avg_batch: avg_batch,
                        server_queue_ms_per_request: per_req("nv_inference_queue_duration_us"),
                        server_compute_ms_per_request: per_req(
                            "nv_inference_compute_infer_duration_us",
                        ),
                        server_metrics,
                        metrics_error: hooks.error.clone(),
                        prompt_tokens_per_request: (o.protocol == Protocol::OpenaiEmbeddings)
                            .then(|| prompt_tokens(&target, &sc.prepared, o.timeout))
                            .flatten(),
                        streaming,
                    });
                    row.resources = res;
                    row.open_loop = open;
                    row.measurement = Some(m);
                }
            }
            emit(row);
        }
    }
    Ok(info)
}

fn blank(
    o: &LoadOptions,
    target: &Target,
    batch: usize,
    seq: usize,
    mode: &LoadMode,
) -> ScenarioResult {
    let seq_part = if o.protocol == Protocol::HttpGet {
        String::new()
    } else {
        format!("/b{batch}/s{seq}")
    };
    let id = format!(
        "{}/{}{seq_part}/{}",
        o.label,
        o.protocol.as_str(),
        mode_tag(mode)
    );
    ScenarioResult {
        device: format!("{}:{}", target.host, target.port),
        batch,
        seq: (o.protocol != Protocol::HttpGet).then_some(seq),
        threads: o.server_threads,
        applied: BTreeMap::from([("protocol".to_string(), o.protocol.as_str().to_string())]),
        parity: Parity::skipped(Tolerance::default(), "served: outputs not compared"),
        ..ScenarioResult::unmeasured(id, &o.label, "served", mode, Tolerance::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slo_parses_units_and_rejects_nonsense() {
        let s = Slo::parse("ttft:200ms, tpot=50,e2e:2s").unwrap();
        assert_eq!(
            s,
            Slo {
                ttft_ms: Some(200.0),
                tpot_ms: Some(50.0),
                e2e_ms: Some(2000.0)
            }
        );
        assert!(Slo::parse("ttft").is_err());
        assert!(Slo::parse("foo:1")
            .unwrap_err()
            .contains("unknown objective"));
        assert!(Slo::parse("ttft:-1").is_err());
        assert!(s.met(100.0, Some(50.0), 2000.0));
        assert!(!s.met(201.0, Some(1.0), 1.0));
        assert!(!s.met(1.0, Some(51.0), 1.0));
    }

    #[test]
    fn streaming_stats_follow_vllms_definitions() {
        // Two requests: TTFT 10 ms, 5 tokens over 50 ms; TTFT 30 ms, 2 tokens over 40 ms.
        let ms = 1_000_000;
        let steps = vec![
            StepRecord {
                e2e_ns: 50 * ms,
                info: StepInfo {
                    ttft_ns: 10 * ms,
                    token_gaps_ns: vec![10 * ms; 4],
                    output_tokens: 5,
                },
            },
            StepRecord {
                e2e_ns: 40 * ms,
                info: StepInfo {
                    ttft_ns: 30 * ms,
                    token_gaps_ns: vec![10 * ms],
                    output_tokens: 2,
                },
            },
        ];
        let slo = Some(Slo {
            ttft_ms: Some(20.0),
            tpot_ms: None,
            e2e_ms: None,
        });
        let s = streaming_stats(&steps, 2.0, &slo);
        assert_eq!(s.tpot.samples, 2);
        assert_eq!(s.tpot.min_ms, 10.0);
        assert_eq!(s.itl.samples, 5);
        assert_eq!(s.ttft.max_ms, 30.0);
        assert_eq!(s.output_tokens_mean, 3.5);
        assert_eq!(s.output_tokens_per_s, 3.5);
        assert_eq!(s.slo_met, Some(1));
        assert_eq!(s.goodput_per_s, Some(0.5));
    }

    #[test]
    fn sentences_have_the_asked_word_count_and_are_seeded() {
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let s = sentence(16, &mut a);
        assert_eq!(s.split(' ').count(), 16);
        assert_eq!(s, sentence(16, &mut b));
    }
}
