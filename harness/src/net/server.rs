//! `harness serve`: one model behind the KServe v2 protocol (HTTP/JSON with the binary
//! extension, and gRPC) and OpenAI-style `/v1/embeddings`, with dynamic batching, a bounded
//! queue, body-size and time limits, Prometheus `/metrics` and graceful shutdown.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use runtimes::{HostTensor, LoadOptions, ModelFiles, ModelInfo, Variant};
use serde_json::{json, Value};

use super::batcher::{BatchConfig, Batcher, Job, JobError, JobOutput};
use super::embed::{self, Embedder};
use super::kserve::{self, ServeError, Signature};
use super::metrics::Metrics;
use super::pb;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub model: PathBuf,
    pub runtime: String,
    pub name: Option<String>,
    pub threads: usize,
    pub instances: usize,
    pub variant: Variant,
    pub batch: BatchConfig,
    pub max_body: usize,
    pub request_timeout: Duration,
    pub host: IpAddr,
    pub http_port: u16,
    /// None: no gRPC listener.
    pub grpc_port: Option<u16>,
    pub io_threads: usize,
    /// Where to write `{"http": PORT, "grpc": PORT}` once listening (ports may be 0 = any).
    pub port_file: Option<PathBuf>,
    pub shutdown_after: Option<Duration>,
    pub ort_lib: Option<PathBuf>,
}

pub struct AppState {
    pub sig: Signature,
    batcher: Batcher,
    pub metrics: Arc<Metrics>,
    embedder: Result<Embedder, String>,
    timeout: Duration,
    max_body: usize,
    runtime: String,
    created: u64,
    next_id: std::sync::atomic::AtomicU64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl AppState {
    /// Queues one request and waits for its rows of the batch's outputs.
    pub async fn infer(&self, inputs: Vec<HostTensor>, pad: bool) -> Result<JobOutput, ServeError> {
        let now = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            inputs,
            pad,
            enqueued: now,
            deadline: now + self.timeout,
            reply: tx,
        };
        let result = match self.batcher.submit(job) {
            Err(e) => Err(job_error(e, self.timeout)),
            Ok(()) => match tokio::time::timeout(self.timeout, rx).await {
                Ok(Ok(r)) => r.map_err(|e| job_error(e, self.timeout)),
                Ok(Err(_)) => Err(ServeError::new(500, "the model instance stopped")),
                Err(_) => {
                    self.metrics.timed_out.fetch_add(1, Relaxed);
                    Err(job_error(JobError::TimedOut, self.timeout))
                }
            },
        };
        let m = &self.metrics;
        m.request_duration_us
            .fetch_add(now.elapsed().as_micros() as u64, Relaxed);
        match &result {
            Ok(_) => m.request_success.fetch_add(1, Relaxed),
            Err(_) => m.request_failure.fetch_add(1, Relaxed),
        };
        result
    }
}

fn job_error(e: JobError, timeout: Duration) -> ServeError {
    match e {
        JobError::QueueFull => ServeError::new(
            503,
            "the request queue is full; retry later or start the server with a larger --max-queue",
        ),
        JobError::ShuttingDown => ServeError::new(503, "the server is shutting down"),
        JobError::TimedOut => ServeError::new(
            504,
            format!(
                "no answer within the request timeout ({}); raise --request-timeout",
                humantime::format_duration(timeout)
            ),
        ),
        JobError::Inference(m) => ServeError::new(500, format!("inference failed: {m}")),
    }
}

/// Loads the model, starts the instances, listens, and serves until SIGINT/SIGTERM or
/// `shutdown_after`. Returns the exit status.
pub fn serve(opts: ServeOptions) -> anyhow::Result<i32> {
    let files = ModelFiles::resolve(&opts.model)?;
    let info = ModelInfo::read(&files)?;
    let runtime = runtimes::by_name(&opts.runtime).ok_or_else(|| {
        anyhow::anyhow!("unknown runtime '{}' (ort, tract, candle)", opts.runtime)
    })?;
    let load_opts = LoadOptions {
        threads: opts.threads,
        variant: opts.variant,
        ort_lib: opts.ort_lib.clone(),
        ..LoadOptions::default()
    };
    if let runtimes::Availability::Unavailable { reason } = runtime.check(&load_opts) {
        anyhow::bail!("{} cannot run here: {reason}", opts.runtime);
    }
    let t = Instant::now();
    let first = runtime.load(&files, &info, &load_opts)?;
    let mut models = vec![first];
    for _ in 1..opts.instances.max(1) {
        let next = match models[0].share() {
            Some(m) => m?,
            None => runtime.load(&files, &info, &load_opts)?,
        };
        models.push(next);
    }
    // One inference per instance before the first request, so no client pays for cold start.
    let shape =
        crate::inputs::resolve_shape(&info, 1, info.max_positions.unwrap_or(128).min(16), &[])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let warm = crate::inputs::generate(&info, &shape, 1).map_err(|e| anyhow::anyhow!("{e}"))?;
    for m in &mut models {
        m.prepare(&warm)?;
        m.infer()?;
    }
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let name = opts.name.clone().unwrap_or_else(|| info.name.clone());
    let metrics = Arc::new(Metrics::new(&name));
    let sig = Signature {
        name: name.clone(),
        platform: format!("harness-{}", opts.runtime),
        inputs: info.inputs.clone(),
        outputs: info.outputs.clone(),
        max_positions: info.max_positions,
        vocab_size: info.vocab_size,
        type_vocab_size: info.type_vocab_size,
    };
    let embedder = Embedder::load(&files.folder, info.max_positions);
    let state = Arc::new(AppState {
        sig,
        batcher: Batcher::start(models, opts.batch.clone(), metrics.clone()),
        metrics,
        embedder,
        timeout: opts.request_timeout,
        max_body: opts.max_body,
        runtime: opts.runtime.clone(),
        created: unix_now(),
        next_id: Default::default(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.io_threads.max(1))
        .thread_name("serve-io")
        .enable_all()
        .build()?;
    let result = rt.block_on(run(state.clone(), &opts, load_ms));
    state.batcher.shutdown();
    result
}

async fn shutdown_signal(after: Option<Duration>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    let timer = async {
        match after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => eprintln!("serve: interrupted, finishing the requests in flight"),
        _ = term.recv() => eprintln!("serve: SIGTERM, finishing the requests in flight"),
        _ = timer => eprintln!("serve: --shutdown-after reached, stopping"),
    }
}

async fn run(state: Arc<AppState>, opts: &ServeOptions, load_ms: f64) -> anyhow::Result<i32> {
    let http = tokio::net::TcpListener::bind(SocketAddr::new(opts.host, opts.http_port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", opts.host, opts.http_port))?;
    let http_addr = http.local_addr()?;
    let grpc = match opts.grpc_port {
        Some(p) => Some(
            tokio::net::TcpListener::bind(SocketAddr::new(opts.host, p))
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}:{p} (gRPC): {e}", opts.host))?,
        ),
        None => None,
    };
    let grpc_addr = grpc.as_ref().map(|l| l.local_addr()).transpose()?;
    if let Some(f) = &opts.port_file {
        let body = json!({ "http": http_addr.port(), "grpc": grpc_addr.map(|a| a.port()) });
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, body.to_string())?;
        std::fs::rename(&tmp, f)?;
    }
    let embed_line = match &state.embedder {
        Ok(e) => format!(
            "/v1/embeddings: {} pooling{}, up to {} tokens ({})",
            e.pooling.as_str(),
            if e.normalize { " + normalize" } else { "" },
            e.max_tokens,
            e.source
        ),
        Err(why) => format!("/v1/embeddings off: {why}"),
    };
    eprintln!(
        "serve: model '{}' on {} ({} threads, {} instance(s), loaded in {load_ms:.0} ms); batching: {}; queue {}; http://{http_addr}{}\nserve: {embed_line}",
        state.sig.name,
        state.runtime,
        opts.threads,
        opts.instances.max(1),
        if opts.batch.max_batch > 1 {
            format!(
                "up to {} rows, {} delay",
                opts.batch.max_batch,
                humantime::format_duration(opts.batch.max_queue_delay)
            )
        } else {
            "off".into()
        },
        opts.batch.queue_capacity,
        grpc_addr.map(|a| format!(", grpc {a}")).unwrap_or_default(),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = router(state.clone(), opts.max_body);
    let mut http_rx = stop_rx.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(http, app)
            .with_graceful_shutdown(async move {
                let _ = http_rx.changed().await;
            })
            .await
    });
    let grpc_task = grpc.map(|listener| {
        let svc = pb::grpc_inference_service_server::GrpcInferenceServiceServer::new(
            super::grpc::Service {
                state: state.clone(),
            },
        )
        .max_decoding_message_size(opts.max_body)
        .max_encoding_message_size(usize::MAX);
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(tokio_stream_listener(listener), async move {
                    let _ = rx.changed().await;
                })
                .await
        })
    });
    shutdown_signal(opts.shutdown_after).await;
    let _ = stop_tx.send(true);
    // In-flight requests get the request timeout to finish.
    let grace = opts.request_timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, http_task).await;
    if let Some(t) = grpc_task {
        let _ = tokio::time::timeout(grace, t).await;
    }
    eprintln!(
        "serve: stopped after {} requests ({} failed)",
        state.metrics.request_success.load(Relaxed) + state.metrics.request_failure.load(Relaxed),
        state.metrics.request_failure.load(Relaxed)
    );
    Ok(0)
}

/// Accepted TCP connections as the stream tonic serves (with TCP_NODELAY).
fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((r, l))
    })
}

pub fn router(state: Arc<AppState>, max_body: usize) -> Router {
    Router::new()
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(|| async { StatusCode::OK }))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer))
        .route("/v1/models", get(openai_models))
        .route("/v1/embeddings", post(embeddings))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            error_response(&ServeError::not_found(
                "no such endpoint; see /v2 (KServe v2), /v1/embeddings, /v1/models, /metrics",
            ))
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

fn error_response(e: &ServeError) -> Response {
    let code = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(json!({ "error": e.message }))).into_response()
}

fn openai_error(e: &ServeError) -> Response {
    let code = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match e.status {
        400 | 413 => "BadRequestError",
        404 => "NotFoundError",
        _ => "ServerError",
    };
    (
        code,
        axum::Json(
            json!({ "object": "error", "message": e.message, "type": kind, "code": e.status }),
        ),
    )
        .into_response()
}

fn body_error(r: BytesRejection, max_body: usize) -> ServeError {
    let status = r.status().as_u16();
    if status == 413 {
        ServeError::new(
            413,
            format!("the request body is larger than the server's limit of {max_body} bytes (--max-body)"),
        )
    } else {
        ServeError::new(
            status,
            format!("could not read the request body: {}", r.body_text()),
        )
    }
}

async fn server_metadata() -> Response {
    axum::Json(json!({
        "name": "harness",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
    .into_response()
}

fn check_model(state: &AppState, name: &str, version: Option<&str>) -> Result<(), ServeError> {
    if name != state.sig.name {
        return Err(ServeError::not_found(format!(
            "unknown model '{name}'; this server has '{}'",
            state.sig.name
        )));
    }
    match version {
        None | Some("1") | Some("") => Ok(()),
        Some(v) => Err(ServeError::not_found(format!(
            "model '{name}' has no version '{v}' (only 1)"
        ))),
    }
}

/// The `{name}` and, on `/versions/{version}/...` routes, `{version}` of a model URL: one
/// handler serves both forms.
type ModelPath = Path<std::collections::HashMap<String, String>>;

fn model_of(p: &std::collections::HashMap<String, String>) -> (&str, Option<&str>) {
    (
        p.get("name").map_or("", String::as_str),
        p.get("version").map(String::as_str),
    )
}

async fn model_metadata(State(s): State<Arc<AppState>>, Path(p): ModelPath) -> Response {
    let (name, version) = model_of(&p);
    match check_model(&s, name, version) {
        Ok(()) => axum::Json(s.sig.metadata()).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn model_ready(State(s): State<Arc<AppState>>, Path(p): ModelPath) -> Response {
    let (name, version) = model_of(&p);
    match check_model(&s, name, version) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => error_response(&e),
    }
}

async fn infer(
    State(s): State<Arc<AppState>>,
    Path(p): ModelPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (name, version) = model_of(&p);
    let r = do_infer(&s, name, version, &headers, body).await;
    kserve_answer(&s, r)
}

const HEADER_LEN: &str = "inference-header-content-length";

fn kserve_answer(s: &AppState, r: Result<(Vec<u8>, Option<usize>), ServeError>) -> Response {
    match r {
        Ok((body, None)) => {
            s.metrics.response("kserve-http", 200);
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Ok((body, Some(n))) => {
            s.metrics.response("kserve-http", 200);
            let mut resp =
                ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
            if let Ok(v) = HeaderValue::from_str(&n.to_string()) {
                resp.headers_mut().insert(HEADER_LEN, v);
            }
            resp
        }
        Err(e) => {
            s.metrics.response("kserve-http", e.status);
            error_response(&e)
        }
    }
}

async fn do_infer(
    s: &AppState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Vec<u8>, Option<usize>), ServeError> {
    check_model(s, name, version)?;
    let body = body.map_err(|r| body_error(r, s.max_body))?;
    let header_len = match headers.get(HEADER_LEN) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ServeError::bad("Inference-Header-Content-Length must be a byte count")
                })?,
        ),
    };
    let decoded = kserve::decode_http(&body, header_len)?;
    let inputs = kserve::validate(&s.sig, decoded.inputs)?;
    let out = s.infer(inputs, false).await?;
    let outputs = kserve::select_outputs(&decoded.outputs, out.outputs)?;
    Ok(kserve::encode_http(
        &s.sig.name,
        &decoded.id,
        &outputs,
        decoded.binary_output,
    ))
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn openai_models(State(s): State<Arc<AppState>>) -> Response {
    let max_len = s.embedder.as_ref().map(|e| e.max_tokens).ok();
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": s.sig.name,
            "object": "model",
            "created": s.created,
            "owned_by": "harness",
            "root": s.sig.name,
            "max_model_len": max_len,
        }],
    }))
    .into_response()
}

/// Most inputs in one embeddings request (OpenAI's own limit).
const MAX_EMBED_INPUTS: usize = 2048;

async fn embeddings(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = do_embeddings(&s, body).await;
    match r {
        Ok(v) => {
            s.metrics.response("openai-embeddings", 200);
            axum::Json(v).into_response()
        }
        Err(e) => {
            s.metrics.response("openai-embeddings", e.status);
            openai_error(&e)
        }
    }
}

async fn do_embeddings(
    s: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ServeError> {
    let body = body.map_err(|r| body_error(r, s.max_body))?;
    let req: Value = serde_json::from_slice(&body)
        .map_err(|e| ServeError::bad(format!("the request is not JSON: {e}")))?;
    let model = req
        .get("model")
        .and_then(|m| m.as_str())
        .ok_or_else(|| ServeError::bad("'model' (a string) is required"))?;
    if model != s.sig.name {
        return Err(ServeError::not_found(format!(
            "The model `{model}` does not exist; this server has `{}`",
            s.sig.name
        )));
    }
    let embedder = s
        .embedder
        .as_ref()
        .map_err(|why| ServeError::bad(why.clone()))?;
    let base64 = match req.get("encoding_format").and_then(|v| v.as_str()) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ServeError::bad(format!(
                "encoding_format '{other}' is not one of float, base64"
            )))
        }
    };
    let input = req.get("input").ok_or_else(|| {
        ServeError::bad("'input' is required: a string, a list of strings, or token ids")
    })?;
    let seqs: Vec<Vec<i64>> = match input {
        Value::String(t) => embedder
            .tokenize(std::slice::from_ref(t))
            .map_err(ServeError::bad)?,
        Value::Array(items) if items.is_empty() => {
            return Err(ServeError::bad("'input' is an empty list"))
        }
        Value::Array(items) if items.iter().all(|i| i.is_string()) => {
            let texts: Vec<String> = items
                .iter()
                .map(|i| i.as_str().unwrap_or_default().to_string())
                .collect();
            embedder.tokenize(&texts).map_err(ServeError::bad)?
        }
        Value::Array(items) if items.iter().all(|i| i.is_i64() || i.is_u64()) => {
            vec![token_list(items)?]
        }
        Value::Array(items) if items.iter().all(|i| i.is_array()) => items
            .iter()
            .map(|i| token_list(i.as_array().map(|a| a.as_slice()).unwrap_or(&[])))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ServeError::bad(
                "'input' must be a string, a list of strings, a list of token ids, or a list of such lists",
            ))
        }
    };
    if seqs.len() > MAX_EMBED_INPUTS {
        return Err(ServeError::bad(format!(
            "{} inputs in one request; at most {MAX_EMBED_INPUTS}",
            seqs.len()
        )));
    }
    for (i, q) in seqs.iter().enumerate() {
        if q.is_empty() {
            return Err(ServeError::bad(format!("input {i} has no tokens")));
        }
        if q.len() > embedder.max_tokens {
            return Err(ServeError::bad(format!(
                "input {i} is {} tokens; this model takes at most {}",
                q.len(),
                embedder.max_tokens
            )));
        }
        if let Some(v) = s.sig.vocab_size {
            if let Some(bad) = q.iter().find(|&&t| t < 0 || t >= v as i64) {
                return Err(ServeError::bad(format!(
                    "input {i} holds token id {bad}, outside the vocabulary 0..{v}"
                )));
            }
        }
    }
    let names: Vec<String> = s.sig.inputs.iter().map(|i| i.name.clone()).collect();
    let lengths: Vec<usize> = seqs.iter().map(|q| q.len()).collect();
    let tokens: usize = lengths.iter().sum();
    let inputs = embed::bert_batch(&seqs, &names);
    let out = s.infer(inputs, true).await?;
    let hidden = out
        .outputs
        .iter()
        .find(|o| o.name == "last_hidden_state")
        .or_else(|| out.outputs.iter().find(|o| o.shape.len() == 3))
        .or_else(|| out.outputs.first())
        .ok_or_else(|| ServeError::new(500, "the model gave no outputs"))?;
    let vecs = embed::pool(hidden, &lengths, embedder.pooling, embedder.normalize)
        .map_err(|e| ServeError::new(500, e))?;
    if let Some(d) = req.get("dimensions").filter(|d| !d.is_null()) {
        let hidden_size = vecs.first().map_or(0, |v| v.len());
        if d.as_u64() != Some(hidden_size as u64) {
            return Err(ServeError::bad(format!(
                "dimensions {d} is not supported; this model's embeddings have {hidden_size}"
            )));
        }
    }
    use base64::Engine as _;
    let data: Vec<Value> = vecs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let emb = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::Array(v.iter().map(|&x| kserve::f32_json(x)).collect())
            };
            json!({ "object": "embedding", "index": i, "embedding": emb })
        })
        .collect();
    Ok(json!({
        "id": format!("embd-{}", s.next_id.fetch_add(1, Relaxed)),
        "object": "list",
        "created": unix_now(),
        "model": s.sig.name,
        "data": data,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
}

fn token_list(items: &[Value]) -> Result<Vec<i64>, ServeError> {
    items
        .iter()
        .map(|t| {
            t.as_i64()
                .ok_or_else(|| ServeError::bad(format!("token id {t} is not an integer")))
        })
        .collect()
}
