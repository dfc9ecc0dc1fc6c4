//! The state every server frontend (KServe HTTP, KServe gRPC, OpenAI) mounts on: the model's
//! signature, the batchers of its instances, the metrics, the embedder.

use super::batcher::{Batcher, Job, JobError, JobOutput};
use super::embed::Embedder;
use crate::net::kserve::{ServeError, Signature};
use crate::net::metrics::Metrics;
use axum::extract::rejection::BytesRejection;
use runtimes::HostTensor;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct AppState {
    pub sig: Signature,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    pub embedder: Result<Embedder, String>,
    pub timeout: Duration,
    pub max_body: usize,
    pub runtime: String,
    pub created: u64,
    pub next_id: std::sync::atomic::AtomicU64,
}

pub fn unix_now() -> u64 {
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
        let result = match self.batcher.run(job).await {
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

pub fn job_error(e: JobError, timeout: Duration) -> ServeError {
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

fn too_large(max_body: usize) -> ServeError {
    ServeError::new(
        413,
        format!(
            "the request body is larger than the server's limit of {max_body} bytes (--max-body)"
        ),
    )
}

/// A request whose Content-Length is over `max_body`: refused before its body is read.
pub fn declared_too_large(headers: &axum::http::HeaderMap, max_body: usize) -> Option<ServeError> {
    let declared: u64 = headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (declared > max_body as u64).then(|| too_large(max_body))
}

pub fn body_error(r: BytesRejection, max_body: usize) -> ServeError {
    let status = r.status().as_u16();
    // The innermost cause names the problem (a bad chunk size, the connection ending early).
    let mut cause: &dyn std::error::Error = &r;
    let mut stalled = false;
    while let Some(next) = cause.source() {
        stalled |= next.is::<tower_http::timeout::TimeoutError>();
        cause = next;
    }
    if status == 413 {
        too_large(max_body)
    } else if stalled {
        ServeError::new(
            408,
            "the request body stalled: no data for the idle timeout (--idle-timeout); send the whole body without pausing",
        )
    } else {
        ServeError::new(
            status,
            format!(
                "could not read the request body ({cause}); send exactly the bytes Content-Length declares, or well-formed chunks"
            ),
        )
    }
}

pub fn check_model(state: &AppState, name: &str, version: Option<&str>) -> Result<(), ServeError> {
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
