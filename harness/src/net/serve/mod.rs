//! `harness serve`: one model behind the KServe v2 protocol (HTTP/JSON with the binary
//! extension, and gRPC) and OpenAI-style `/v1/embeddings`, with dynamic batching, a bounded
//! queue, body-size and time limits, Prometheus `/metrics` and graceful shutdown.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use runtimes::{LoadOptions, ModelFiles, ModelInfo, Variant};
use serde_json::json;

use super::kserve::{ServeError, Signature};
use super::metrics::Metrics;
use super::pb;
use batcher::{BatchConfig, Batcher};
use embed::Embedder;
use state::{unix_now, AppState};

pub mod batcher;
mod conn;
pub mod embed;
mod grpc;
mod kserve_http;
mod openai;
pub mod state;

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
    /// The lone instance runs on the I/O threads (`--inline`, see [`Batcher::start_inline`]).
    pub inline: bool,
    /// Where to write `{"http": PORT, "grpc": PORT}` once listening (ports may be 0 = any).
    pub port_file: Option<PathBuf>,
    pub shutdown_after: Option<Duration>,
    /// Connections that send no complete request head for this long are closed (idle
    /// keep-alive and slow clients alike).
    pub idle_timeout: Duration,
    /// What particular runtimes take (ONNX Runtime's library).
    pub runtime_options: runtimes::RuntimeOptions,
}

/// Why `harness serve` could not start (once serving, errors are answers, not this).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Model(#[from] runtimes::model::ModelError),
    #[error(transparent)]
    Runtime(#[from] runtimes::RuntimeError),
    #[error("unknown runtime '{0}' ({known})", known = runtimes::names().join(", "))]
    UnknownRuntime(String),
    #[error("{runtime} cannot run here: {reason}")]
    Unavailable { runtime: String, reason: String },
    #[error("warming the model up: {0}")]
    Input(#[from] crate::inputs::InputError),
    #[error("cannot listen on {addr}{what}: {source}")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Options(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// Loads the model, starts the instances, listens, and serves until SIGINT/SIGTERM or
/// `shutdown_after`. Returns the exit status.
pub fn serve(opts: ServeOptions) -> Result<i32, StartError> {
    if opts.inline && (opts.instances > 1 || opts.batch.max_batch > 1) {
        return Err(StartError::Options(format!(
            "--inline runs one instance without batching on the I/O thread; it cannot serve \
             --instances {} --max-batch {}: drop --inline, or use --instances 1 --max-batch 1",
            opts.instances, opts.batch.max_batch
        )));
    }
    let files = ModelFiles::resolve(&opts.model)?;
    let info = ModelInfo::read(&files)?;
    let runtime = runtimes::by_name(&opts.runtime)
        .ok_or_else(|| StartError::UnknownRuntime(opts.runtime.clone()))?;
    let load_opts = LoadOptions {
        threads: opts.threads,
        variant: opts.variant,
        runtime: opts.runtime_options.clone(),
        ..LoadOptions::default()
    };
    if let runtimes::Availability::Unavailable { reason } = runtime.check(&load_opts) {
        return Err(StartError::Unavailable {
            runtime: opts.runtime.clone(),
            reason,
        });
    }
    let t = Instant::now();
    let (mut models, _) = crate::engine::group::load_or_share(
        runtime.as_ref(),
        &files,
        &info,
        &load_opts,
        opts.instances,
    )?;
    // One inference per instance before the first request, so no client pays for cold start.
    let shape =
        crate::inputs::resolve_shape(&info, 1, info.max_positions.unwrap_or(128).min(16), &[])?;
    let warm = crate::inputs::generate(&info, &shape, 1)?;
    for m in &mut models {
        m.prepare(&warm)?;
        m.infer()?;
    }
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let name = opts.name.clone().unwrap_or_else(|| info.name.clone());
    let metrics = Arc::new(Metrics::new(&name));
    let sig = signature(&info, &name, &opts.runtime);
    let embedder = Embedder::load(&files.folder, info.max_positions);
    let state = Arc::new(AppState {
        sig,
        batcher: match models.len() {
            1 if opts.inline => {
                Batcher::start_inline(models.remove(0), opts.batch.queue_capacity, metrics.clone())
            }
            _ => Batcher::start(models, opts.batch.clone(), metrics.clone()),
        },
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
        .build()
        .map_err(io_error("starting the I/O threads"))?;
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

async fn run(state: Arc<AppState>, opts: &ServeOptions, load_ms: f64) -> Result<i32, StartError> {
    let listen = |addr: SocketAddr, what: &'static str| {
        move |source| StartError::Listen { addr, what, source }
    };
    let addr = SocketAddr::new(opts.host, opts.http_port);
    let http = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(listen(addr, ""))?;
    let http_addr = http.local_addr().map_err(listen(addr, ""))?;
    let grpc = match opts.grpc_port {
        Some(p) => Some(
            tokio::net::TcpListener::bind(SocketAddr::new(opts.host, p))
                .await
                .map_err(listen(SocketAddr::new(opts.host, p), " (gRPC)"))?,
        ),
        None => None,
    };
    let grpc_addr = grpc
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()
        .map_err(io_error("the gRPC listener's address"))?;
    if let Some(f) = &opts.port_file {
        let body = json!({ "http": http_addr.port(), "grpc": grpc_addr.map(|a| a.port()) });
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, body.to_string())
            .and_then(|()| std::fs::rename(&tmp, f))
            .map_err(io_error(format!("writing the port file {}", f.display())))?;
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
        "serve: model '{}' on {} ({} threads, {} instance(s){}, loaded in {load_ms:.0} ms); batching: {}; queue {}; http://{http_addr}{}\nserve: {embed_line}",
        state.sig.name,
        state.runtime,
        opts.threads,
        opts.instances.max(1),
        if opts.inline { " run inline on the I/O thread" } else { "" },
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
    let app = http_app(state.clone(), opts.max_body, opts.idle_timeout);
    let http_task = tokio::spawn(serve_http(http, app, opts.idle_timeout, stop_rx.clone()));
    let grpc_task = grpc.map(|listener| {
        let svc =
            pb::grpc_inference_service_server::GrpcInferenceServiceServer::new(grpc::Service {
                state: state.clone(),
            })
            .max_decoding_message_size(opts.max_body)
            .max_encoding_message_size(usize::MAX);
        let mut rx = stop_rx.clone();
        let idle = opts.idle_timeout;
        tokio::spawn(async move {
            // A connection silent for the idle timeout is pinged, and closed when the ping
            // goes unanswered for as long again; one that has not sent the HTTP/2 preface
            // within the idle timeout is closed.
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(idle))
                .http2_keepalive_timeout(Some(idle))
                .add_service(svc)
                .serve_with_incoming_shutdown(tokio_stream_listener(listener, idle), async move {
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

/// What the server answers for the model: its name, inputs and outputs as KServe lists them.
fn signature(info: &ModelInfo, name: &str, runtime: &str) -> Signature {
    Signature {
        name: name.to_string(),
        platform: format!("harness-{runtime}"),
        inputs: info.inputs.clone(),
        outputs: info.outputs.clone(),
        max_positions: info.max_positions,
        vocab_size: info.vocab_size,
        type_vocab_size: info.type_vocab_size,
    }
}

/// The HTTP side: [`router`], and a request body that stalls for the idle timeout ends with
/// 408, as a silent head does.
fn http_app(state: Arc<AppState>, max_body: usize, idle_timeout: Duration) -> Router {
    router(state, max_body).layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        idle_timeout,
    ))
}

/// This server inside another process, on one loaded instance run inline (as `serve
/// --inline`, one I/O thread, the default limits), HTTP only, on a free loopback port. The
/// owner can also call the same instance directly ([`Local::with_model`]): `compare
/// --served` times the served path against the direct call on one instance, so that what
/// differs is the serving alone, not two loads of the model (which differ in speed by
/// themselves). Stopped when dropped.
pub struct Local {
    pub addr: SocketAddr,
    state: Arc<AppState>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Local {
    /// Serves `model` (named `name` in URLs) on 127.0.0.1 from a thread of its own.
    pub fn start(
        model: Box<dyn runtimes::Loaded>,
        info: &ModelInfo,
        name: &str,
        runtime: &str,
    ) -> Result<Local, StartError> {
        const QUEUE: usize = 256;
        const MAX_BODY: usize = 16 << 20;
        const IDLE: Duration = Duration::from_secs(10);
        let metrics = Arc::new(Metrics::new(name));
        let state = Arc::new(AppState {
            sig: signature(info, name, runtime),
            batcher: Batcher::start_inline(model, QUEUE, metrics.clone()),
            metrics,
            embedder: Err("not served by the in-process server".into()),
            timeout: Duration::from_secs(30),
            max_body: MAX_BODY,
            runtime: runtime.to_string(),
            created: unix_now(),
            next_id: Default::default(),
        });
        let addr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 0);
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| StartError::Listen {
                addr,
                what: "",
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(io_error("the listener's address"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("serve-local-io")
            .enable_all()
            .build()
            .map_err(io_error("starting the I/O thread"))?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let app = http_app(state.clone(), MAX_BODY, IDLE);
        let thread = std::thread::Builder::new()
            .name("serve-local".into())
            .spawn(move || {
                rt.block_on(async move {
                    if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                        serve_http(listener, app, IDLE, stop_rx).await;
                    }
                });
            })
            .map_err(io_error("starting the server thread"))?;
        Ok(Local {
            addr,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// Runs `f` on the served instance, waiting for a request that holds it to finish.
    /// Must not be called from an async context.
    pub fn with_model<R>(&self, f: impl FnOnce(&mut dyn runtimes::Loaded) -> R) -> R {
        self.state
            .batcher
            .with_inline(f)
            .expect("a Local server's instance runs inline")
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.state.batcher.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The HTTP listener: each connection served by hyper with `idle_timeout` for reading a
/// request's headers, which also bounds how long a kept-alive connection may sit idle, so
/// idle sockets and slowloris clients are closed instead of holding file descriptors (and the
/// first [`H2_PREFACE`] bytes within `idle_timeout`, which covers what hyper reads before its
/// header timeout starts). The answers hyper writes by itself to malformed requests get JSON
/// reasons ([`conn::JsonErrors`]). On `stop`, listening ends and the connections finish what
/// is in flight.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    idle_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .max_buf_size(conn::MAX_HEAD_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(idle_timeout)
        .keep_alive_timeout(idle_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                // Out of file descriptors and the like: wait a little, keep serving.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let (builder, app) = (builder.clone(), app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // The first byte within the idle timeout, before hyper reads the protocol
            // preface (it would wait forever on a silent socket).
            let mut first = [0u8; 1];
            match tokio::time::timeout(idle_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let tap = std::sync::Arc::new(conn::Tap::default());
            let service = conn::Tapped {
                inner: hyper_util::service::TowerToHyperService::new(app),
                tap: tap.clone(),
            };
            let io = conn::FirstBytes::new(stream, H2_PREFACE, idle_timeout);
            let io = TokioIo::new(conn::JsonErrors::new(io, tap));
            let conn = builder.serve_connection_with_upgrades(io, service);
            let _ = watcher.watch(conn.into_owned()).await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The length of HTTP/2's connection preface: a connection must send this many bytes within
/// the idle timeout (any HTTP/1 request with a path and a Host header is longer).
const H2_PREFACE: usize = 24;

/// Accepted TCP connections as the stream tonic serves (with TCP_NODELAY), each closed if it
/// has not sent the HTTP/2 preface within `idle`.
fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
    idle: Duration,
) -> impl futures_util::Stream<Item = std::io::Result<conn::FirstBytes<tokio::net::TcpStream>>> {
    futures_util::stream::unfold(listener, move |l| async move {
        let r = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            conn::FirstBytes::new(s, H2_PREFACE, idle)
        });
        Some((r, l))
    })
}

/// The HTTP frontends on the shared state: KServe v2, OpenAI, and Prometheus `/metrics`.
pub fn router(state: Arc<AppState>, max_body: usize) -> Router {
    Router::new()
        .merge(kserve_http::routes())
        .merge(openai::routes())
        .route("/metrics", get(metrics))
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            kserve_http::error_response(&ServeError::new(
                405,
                format!(
                    "{method} is not allowed here; KServe v2 reads with GET and infers with POST"
                ),
            ))
        })
        .fallback(|| async {
            kserve_http::error_response(&ServeError::not_found(
                "no such endpoint; see /v2 (KServe v2), /v1/embeddings, /v1/models, /metrics",
            ))
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_declared_too_large,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// A body declared larger than `--max-body` is a 413 at once, not after reading up to the
/// limit (or waiting for bytes the client never sends).
async fn refuse_declared_too_large(
    State(s): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match state::declared_too_large(req.headers(), s.max_body) {
        None => next.run(req).await,
        Some(e) if req.uri().path().starts_with("/v1/") => {
            s.metrics.response("openai-embeddings", e.status);
            openai::openai_error(&e)
        }
        Some(e) => {
            s.metrics.response("kserve-http", e.status);
            kserve_http::error_response(&e)
        }
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}
