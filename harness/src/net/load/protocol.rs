//! The seam every load protocol plugs into: [`Protocol`] (port, discovery, request
//! building, output fetch, statistics), the prepared [`Request`] and its [`NetWorker`], the
//! options of a load run, and the HTTP request/worker that most protocols share.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use runtimes::{HostTensor, ModelInfo};

use crate::measure::{LoadMode, MeasureConfig, StepInfo, StepRecord, Workload};
use crate::net::client::{Http1, NetError, Target};
use crate::results::{ServedInfo, Slo};

/// One way of talking to a server.
pub trait Protocol: Sync + std::fmt::Debug {
    /// The name `--protocol` takes and rows record.
    fn name(&self) -> &'static str;
    /// One line for `--help`.
    fn about(&self) -> &'static str;
    /// The port when the target names none.
    fn default_port(&self) -> u16;
    /// Whether requests have a batch and sequence length (a plain GET has none).
    fn shaped(&self) -> bool {
        true
    }
    /// The model's tensors, from the server's metadata where the protocol has it; by default
    /// (no metadata) a model with the `--model` name and no declared tensors.
    fn discover(&self, o: &LoadOptions, _target: &Target) -> Result<ModelInfo, LoadError> {
        Ok(untyped_model(o))
    }
    /// What every worker of one scenario sends.
    fn prepare(
        &self,
        o: &LoadOptions,
        target: &Target,
        info: &ModelInfo,
        batch: usize,
        seq: usize,
    ) -> Result<Scenario, LoadError>;
    /// One decoded answer to `inputs`, to compare outputs.
    fn fetch_outputs(
        &self,
        o: &LoadOptions,
        target: &Target,
        inputs: &[HostTensor],
    ) -> Result<Vec<HostTensor>, String>;
    /// What this protocol adds to a measured row's network figures.
    fn add_statistics(&self, _ctx: &Finished, _served: &mut ServedInfo) {}
    /// A hint added when the first request fails.
    fn failure_hint(&self, _o: &LoadOptions) -> Option<String> {
        None
    }
    /// How tensors are encoded, where the protocol has a choice.
    fn encoding(&self, _o: &LoadOptions) -> Option<String> {
        None
    }
}

/// What every worker of one scenario sends, and what the row records of it.
pub struct Scenario {
    pub request: Box<dyn Request>,
    pub request_bytes: usize,
    pub shapes: BTreeMap<String, Vec<usize>>,
    pub batch: usize,
    pub seq: Option<usize>,
}

/// A prepared request: it makes one worker (one connection) per call.
pub trait Request: Send + Sync {
    fn worker(&self, target: &Target, timeout: Duration) -> Result<Box<dyn NetWorker>, LoadError>;
    /// The prepared HTTP/1.1 exchange, for a request the event-driven engine can send.
    fn http(&self) -> Option<&HttpRequest> {
        None
    }
    /// The prepared KServe gRPC request, for the event-driven engine's streams.
    fn grpc(&self) -> Option<Arc<crate::net::pb::ModelInferRequest>> {
        None
    }
}

/// How the load is driven: a few client threads each driving many requests in flight (an
/// event loop over HTTP/1.1 connections; gRPC streams, several per connection), or one
/// blocking thread per connection (every protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Events,
    Threads,
}

/// One connection's unit of load.
pub trait NetWorker: Send {
    fn step(&mut self) -> Result<Option<StepInfo>, NetError>;
    /// Connections (re)opened so far.
    fn connects(&self) -> u64;
}

impl Workload for Box<dyn NetWorker> {
    type Error = NetError;
    fn step(&mut self) -> Result<Option<StepInfo>, NetError> {
        (**self).step()
    }
    fn error_kind(e: &NetError) -> String {
        e.kind.clone()
    }
}

/// What a protocol may read when it adds its statistics to a measured row.
pub struct Finished<'a> {
    pub options: &'a LoadOptions,
    pub target: &'a Target,
    pub scenario: &'a Scenario,
    pub steps: &'a [StepRecord],
    pub window_s: f64,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub target: String,
    pub protocol: &'static dyn Protocol,
    pub model: Option<String>,
    pub batch: Vec<usize>,
    pub seq: Vec<usize>,
    /// Exact input shapes (`--shape NAME=DIMS`), over batch and seq.
    pub overrides: Vec<(String, Vec<usize>)>,
    pub modes: Vec<LoadMode>,
    pub measure: MeasureConfig,
    pub seed: u64,
    /// Token ids are drawn below this (KServe, when the model folder is not given); None:
    /// the server's metadata says (ours does), else 1000.
    pub vocab: Option<usize>,
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
    /// The event-driven engine where the protocol allows it, else a thread per connection.
    pub engine: Engine,
    /// The event-driven engine's threads; 0: one per CPU, at most one per connection.
    pub client_threads: usize,
    /// The event engine busy-polls this long before sleeping (0: never).
    pub client_spin: Duration,
    /// gRPC on the event engine: requests in flight that share one HTTP/2 connection.
    pub streams: usize,
    /// A recorded trace to replay (its modes are [`LoadMode::Replay`]).
    pub trace: Option<Arc<crate::traffic::Trace>>,
    /// Search for the highest rate meeting these objectives at each concurrency.
    pub find_max_rate: Option<Vec<crate::capacity::Objective>>,
    /// The capacity search's arrival process (`--arrivals`).
    pub arrivals: crate::results::Arrivals,
    /// What is left of a budget shared with scenarios beyond these (compare's served rows);
    /// None: `measure.budget`, if any, is these scenarios' alone.
    pub budget: Option<crate::measure::Budget>,
    /// The server's process on this machine: its tree's CPU and memory are recorded in each
    /// row's `resources.server`.
    pub server_pid: Option<u32>,
}

impl LoadOptions {
    /// One closed-loop connection, batch 1, sequence 128, binary tensors, 30 s timeout, the
    /// default timing: a base to override.
    pub fn new(target: &str, protocol: &'static dyn Protocol, model: Option<&str>) -> LoadOptions {
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
            vocab: None,
            binary: true,
            metrics_url: None,
            label: protocol.name().to_string(),
            server_threads: 0,
            timeout: Duration::from_secs(30),
            max_tokens: 64,
            slo: None,
            local: None,
            interrupt: Arc::new(AtomicBool::new(false)),
            engine: Engine::Events,
            client_threads: 0,
            client_spin: DEFAULT_SPIN,
            streams: 1,
            trace: None,
            find_max_rate: None,
            arrivals: crate::results::Arrivals::Poisson,
            budget: None,
            server_pid: None,
        }
    }

    /// The model name the protocol needs in its requests.
    pub(super) fn model_name(&self) -> Result<String, LoadError> {
        self.model.clone().ok_or_else(|| {
            LoadError::Setup(format!(
                "--model NAME is required for --protocol {}",
                self.protocol.name()
            ))
        })
    }

    pub(super) fn target(&self) -> Result<Target, LoadError> {
        Target::parse(&self.target, self.protocol.default_port()).map_err(LoadError::Setup)
    }
}

/// The event engine's busy-poll before sleeping: an answer arriving within it is read without
/// a sleep and a wake-up (the costliest part of a loopback exchange). 10 µs measured best on
/// a 2-vCPU machine the server shares (longer spins take the server's CPU); a client on its
/// own cores gains from more (`--client-spin`). Costs at most this much CPU per wake-up.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(10);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Setup(String),
}

/// A JSON POST to `path` on the target, serialized once for every worker.
pub(super) fn json_post(target: &Target, path: &str, body: &[u8]) -> Vec<u8> {
    crate::net::client::request_bytes(
        target,
        "POST",
        path,
        &[("Content-Type", "application/json".into())],
        body,
    )
}

pub(super) fn status_error(status: u16, body: &[u8]) -> NetError {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    NetError::new(format!("http-{status}"), text)
}

/// A prepared HTTP/1.1 request and what a good answer looks like: the worker of every
/// protocol that sends one request and reads one answer.
pub struct HttpRequest {
    pub bytes: Arc<Vec<u8>>,
    /// KServe binary outputs: the answer must carry Inference-Header-Content-Length.
    pub expect_binary: bool,
    pub expect_body: bool,
}

impl Request for HttpRequest {
    fn worker(&self, target: &Target, timeout: Duration) -> Result<Box<dyn NetWorker>, LoadError> {
        Ok(Box::new(HttpWorker {
            http: Http1::new(target, timeout),
            request: self.bytes.clone(),
            expect_binary: self.expect_binary,
            expect_body: self.expect_body,
        }))
    }

    fn http(&self) -> Option<&HttpRequest> {
        Some(self)
    }
}

struct HttpWorker {
    http: Http1,
    request: Arc<Vec<u8>>,
    expect_binary: bool,
    expect_body: bool,
}

impl NetWorker for HttpWorker {
    fn step(&mut self) -> Result<Option<StepInfo>, NetError> {
        let r = self.http.call(&self.request)?;
        if r.status != 200 {
            return Err(status_error(r.status, &r.body));
        }
        if self.expect_binary && r.header("inference-header-content-length").is_none() {
            return Err(NetError::new(
                "bad-response",
                "asked for binary outputs, got an answer without Inference-Header-Content-Length",
            ));
        }
        if r.body.is_empty() && self.expect_body {
            return Err(NetError::new("bad-response", "empty answer"));
        }
        Ok(None)
    }

    fn connects(&self) -> u64 {
        self.http.reconnects
    }
}

/// A model with no tensor metadata (text and plain-HTTP protocols).
pub(super) fn untyped_model(o: &LoadOptions) -> ModelInfo {
    ModelInfo {
        name: o.model.clone().unwrap_or_else(|| o.target.clone()),
        inputs: vec![],
        outputs: vec![],
        spec_source: format!("{} (no tensor metadata)", o.protocol.name()),
        onnx_error: None,
        model_type: None,
        vocab_size: None,
        vocab_source: None,
        type_vocab_size: None,
        max_positions: None,
        reference: None,
    }
}
