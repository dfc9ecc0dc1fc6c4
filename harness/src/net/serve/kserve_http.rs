//! The KServe v2 HTTP frontend (what Triton speaks): health, server and model metadata,
//! model ready, and infer with JSON or binary tensors, each with or without
//! `/versions/{version}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use super::state::{body_error, check_model, AppState};
use crate::net::kserve::{self, ServeError};

pub fn routes() -> Router<Arc<AppState>> {
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
}

pub fn error_response(e: &ServeError) -> Response {
    let code = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(json!({ "error": e.message }))).into_response()
}

async fn server_metadata() -> Response {
    axum::Json(json!({
        "name": "harness",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
    .into_response()
}

/// The `{name}` and, on `/versions/{version}/...` routes, `{version}` of a model URL: one
/// handler serves both forms. A rejection (percent-encoding that is not UTF-8) becomes a JSON
/// 400 in [`model_of`], not axum's plain-text one.
type ModelPath = Result<Path<std::collections::HashMap<String, String>>, PathRejection>;

fn model_of(p: &ModelPath) -> Result<(&str, Option<&str>), ServeError> {
    match p {
        Ok(Path(p)) => Ok((
            p.get("name").map_or("", String::as_str),
            p.get("version").map(String::as_str),
        )),
        Err(r) => Err(ServeError::bad(format!(
            "the URL's model name or version cannot be read ({}); percent-encode UTF-8 text only",
            r.body_text()
        ))),
    }
}

async fn model_metadata(State(s): State<Arc<AppState>>, p: ModelPath) -> Response {
    match model_of(&p).and_then(|(name, version)| check_model(&s, name, version)) {
        Ok(()) => axum::Json(s.sig.metadata()).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn model_ready(State(s): State<Arc<AppState>>, p: ModelPath) -> Response {
    match model_of(&p).and_then(|(name, version)| check_model(&s, name, version)) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => error_response(&e),
    }
}

async fn infer(
    State(s): State<Arc<AppState>>,
    p: ModelPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut timing = Timing::start();
    let r = match model_of(&p) {
        Ok((name, version)) => do_infer(&s, name, version, &headers, body, &mut timing).await,
        Err(e) => Err(e),
    };
    let mut resp = kserve_answer(&s, r);
    if let Ok(v) = HeaderValue::from_str(&timing.header()) {
        resp.headers_mut().insert("server-timing", v);
    }
    resp
}

const HEADER_LEN: &str = "inference-header-content-length";

/// Where an infer request's time went inside the handler, sent back as `Server-Timing`
/// (milliseconds): decoding and validating the body, waiting in the queue, computing,
/// handing the job to its model instance and the answer back (the rest of the wait), and
/// encoding the answer; `total` is the handler's whole time (the body already received).
struct Timing {
    started: Instant,
    decode: Duration,
    queue: Duration,
    compute: Duration,
    handoff: Duration,
    encode: Duration,
}

impl Timing {
    fn start() -> Timing {
        Timing {
            started: Instant::now(),
            decode: Duration::ZERO,
            queue: Duration::ZERO,
            compute: Duration::ZERO,
            handoff: Duration::ZERO,
            encode: Duration::ZERO,
        }
    }

    fn header(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "decode;dur={:.3}, queue;dur={:.3}, compute;dur={:.3}, handoff;dur={:.3}, encode;dur={:.3}, total;dur={:.3}",
            ms(self.decode),
            ms(self.queue),
            ms(self.compute),
            ms(self.handoff),
            ms(self.encode),
            ms(self.started.elapsed())
        )
    }
}

/// An answer's body in pieces of known total length (sent with `Content-Length`, the pieces
/// in one vectored write): the JSON header, then each binary tensor's own bytes.
struct Pieces {
    pieces: std::collections::VecDeque<Bytes>,
    left: u64,
}

impl Pieces {
    fn body(pieces: Vec<Bytes>) -> axum::body::Body {
        let left = pieces.iter().map(|b| b.len() as u64).sum();
        axum::body::Body::new(Pieces {
            pieces: pieces.into(),
            left,
        })
    }
}

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let next = self.pieces.pop_front();
        if let Some(b) = &next {
            self.left -= b.len() as u64;
        }
        std::task::Poll::Ready(next.map(|b| Ok(hyper::body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

fn kserve_answer(s: &AppState, r: Result<(Vec<Bytes>, Option<usize>), ServeError>) -> Response {
    match r {
        Ok((body, None)) => {
            s.metrics.response("kserve-http", 200);
            (
                [(header::CONTENT_TYPE, "application/json")],
                Pieces::body(body),
            )
                .into_response()
        }
        Ok((body, Some(n))) => {
            s.metrics.response("kserve-http", 200);
            let mut resp = (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                Pieces::body(body),
            )
                .into_response();
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
    timing: &mut Timing,
) -> Result<(Vec<Bytes>, Option<usize>), ServeError> {
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
    timing.decode = timing.started.elapsed();
    let t = Instant::now();
    let out = s.infer(inputs, false).await?;
    let waited = t.elapsed();
    timing.queue = Duration::from_micros(out.queue_us);
    timing.compute = Duration::from_micros(out.compute_us);
    timing.handoff = waited.saturating_sub(timing.queue + timing.compute);
    let t = Instant::now();
    let outputs = kserve::select_outputs(&decoded.outputs, out.outputs)?;
    let encoded = kserve::encode_http(&s.sig.name, &decoded.id, outputs, decoded.binary_output);
    timing.encode = t.elapsed();
    Ok(encoded)
}
