//! KServe v2 over gRPC (Triton, our server): ModelInfer with raw little-endian tensor
//! contents, as Triton's clients send. Each worker has its own single-threaded tokio runtime
//! and HTTP/2 connection; [`Grpc`] is the one client every use here goes through.

use std::sync::Arc;
use std::time::Duration;

use runtimes::{HostTensor, ModelInfo};

use super::kserve_http::{inputs_hint, kserve_scenario, model_info};
use super::protocol::{LoadError, LoadOptions, NetWorker, Protocol, Request, Scenario};
use crate::measure::{Clock, Next, Sent, Shared, StepInfo, WorkerOut, STOP};
use crate::net::client::{NetError, Target};
use crate::net::pb;
use crate::net::tensors::{dtype_from_kserve, from_le_bytes, kserve_dtype, to_le_bytes};

type GrpcClient =
    pb::grpc_inference_service_client::GrpcInferenceServiceClient<tonic::transport::Channel>;

/// A KServe gRPC client on its own current-thread runtime, connected on first use and
/// again after the connection is lost.
pub struct Grpc {
    rt: tokio::runtime::Runtime,
    endpoint: tonic::transport::Endpoint,
    client: Option<GrpcClient>,
    connects: u64,
}

impl Grpc {
    pub fn new(target: &Target, timeout: Duration) -> Result<Grpc, String> {
        let uri = format!("http://{}:{}", target.host, target.port);
        Ok(Grpc {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("a gRPC client runtime: {e}"))?,
            endpoint: tonic::transport::Endpoint::from_shared(uri.clone())
                .map_err(|e| format!("{uri}: {e}"))?
                .timeout(timeout)
                .tcp_nodelay(true),
            client: None,
            connects: 0,
        })
    }

    /// Runs `call` on the connected client; a lost connection is reopened on the next call.
    fn call<T>(
        &mut self,
        call: impl AsyncFnOnce(&mut GrpcClient) -> Result<T, tonic::Status>,
    ) -> Result<T, NetError> {
        let Grpc {
            rt,
            endpoint,
            client,
            connects,
        } = self;
        rt.block_on(async {
            if client.is_none() {
                let ch = endpoint.connect().await.map_err(|e| {
                    NetError::new(
                        "connect",
                        format!("cannot reach the gRPC server at {}: {e}", endpoint.uri()),
                    )
                })?;
                *connects += 1;
                *client = Some(
                    pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(ch)
                        .max_decoding_message_size(usize::MAX),
                );
            }
            let c = client.as_mut().expect("client just set");
            call(c).await.map_err(|s| {
                if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) {
                    *client = None;
                }
                NetError::new(
                    format!("grpc-{}", grpc_code(s.code())),
                    s.message().to_string(),
                )
            })
        })
    }
}

#[derive(Debug)]
pub struct KserveGrpc;

impl Protocol for KserveGrpc {
    fn name(&self) -> &'static str {
        "kserve-grpc"
    }

    fn about(&self) -> &'static str {
        "KServe v2 over gRPC (Triton, our server): ModelInfer"
    }

    fn default_port(&self) -> u16 {
        8001
    }

    fn discover(&self, o: &LoadOptions, target: &Target) -> Result<ModelInfo, LoadError> {
        let model = o.model_name()?;
        let mut g = Grpc::new(target, o.timeout).map_err(LoadError::Setup)?;
        let md = g
            .call(async |c| {
                c.model_metadata(pb::ModelMetadataRequest {
                    name: model.clone(),
                    version: String::new(),
                })
                .await
                .map(|r| r.into_inner())
            })
            .map_err(|e| LoadError::Setup(format!("model metadata for '{model}': {e}")))?;
        let conv = |ts: &[pb::model_metadata_response::TensorMetadata]| {
            ts.iter()
                .map(|t| (t.name.clone(), t.datatype.clone(), t.shape.clone()))
                .collect::<Vec<_>>()
        };
        model_info(
            self,
            o,
            target,
            &model,
            &conv(&md.inputs),
            &conv(&md.outputs),
            // KServe's gRPC metadata has no parameters: --vocab or the default.
            super::kserve_http::Vocab::default(),
        )
    }

    fn prepare(
        &self,
        o: &LoadOptions,
        _target: &Target,
        info: &ModelInfo,
        batch: usize,
        seq: usize,
    ) -> Result<Scenario, LoadError> {
        let model = o.model_name()?;
        kserve_scenario(o, info, batch, seq, |inputs| {
            let req = grpc_request(model, inputs);
            let n = prost::Message::encoded_len(&req);
            (Box::new(GrpcRequest(Arc::new(req))) as Box<dyn Request>, n)
        })
    }

    fn fetch_outputs(
        &self,
        o: &LoadOptions,
        target: &Target,
        inputs: &[HostTensor],
    ) -> Result<Vec<HostTensor>, String> {
        let req = grpc_request(o.model.clone().unwrap_or_default(), inputs);
        let mut g = Grpc::new(target, o.timeout)?;
        let r = g
            .call(async |c| c.model_infer(req).await.map(|r| r.into_inner()))
            .map_err(|e| e.to_string())?;
        r.outputs
            .iter()
            .zip(&r.raw_output_contents)
            .map(|(t, raw)| {
                let dt = dtype_from_kserve(&t.datatype).ok_or("unknown datatype")?;
                let shape: Vec<usize> = t.shape.iter().map(|&d| d.max(0) as usize).collect();
                let n = shape.iter().product();
                Ok(HostTensor::new(
                    t.name.clone(),
                    shape,
                    from_le_bytes(dt, raw, n)?,
                ))
            })
            .collect()
    }

    fn failure_hint(&self, o: &LoadOptions) -> Option<String> {
        inputs_hint(o)
    }
}

struct GrpcRequest(Arc<pb::ModelInferRequest>);

impl Request for GrpcRequest {
    fn worker(&self, target: &Target, timeout: Duration) -> Result<Box<dyn NetWorker>, LoadError> {
        Ok(Box::new(GrpcWorker {
            grpc: Grpc::new(target, timeout).map_err(LoadError::Setup)?,
            request: self.0.clone(),
        }))
    }

    fn grpc(&self) -> Option<Arc<pb::ModelInferRequest>> {
        Some(self.0.clone())
    }
}

/// The gRPC side of the event-driven engine: requests in flight as tasks on a few runtime
/// threads, several of them (`streams`) sharing each HTTP/2 connection.
pub(super) struct Streams {
    pub target: Target,
    pub timeout: Duration,
    pub request: Arc<pb::ModelInferRequest>,
    /// Requests in flight at most (`--concurrency`).
    pub units: usize,
    /// Of them, how many share one connection.
    pub streams: usize,
    pub threads: usize,
    pub connects: Arc<std::sync::atomic::AtomicU64>,
}

impl Streams {
    /// The connections the units share.
    pub fn connections(&self) -> usize {
        self.units.max(1).div_ceil(self.streams.max(1))
    }

    /// Runs every unit until the coordinator stops them; one [`WorkerOut`] per unit. Each
    /// client thread runs its own runtime with its share of the connections and the units on
    /// them (as the HTTP engine's event loops do).
    pub fn drive(&self, sh: &Shared) -> Vec<WorkerOut> {
        let connections = self.connections();
        let threads = self.threads.clamp(1, connections);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| s.spawn(move || self.drive_thread(sh, (t..connections).step_by(threads))))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("gRPC client thread"))
                .collect()
        })
    }

    /// One client thread: connections `mine`, each with its units.
    fn drive_thread(&self, sh: &Shared, mine: impl Iterator<Item = usize>) -> Vec<WorkerOut> {
        use std::sync::atomic::Ordering;
        let streams = self.streams.max(1);
        let units: Vec<(usize, usize)> = mine
            .flat_map(|c| {
                (c * streams..((c + 1) * streams).min(self.units.max(1))).map(move |u| (c, u))
            })
            .collect();
        let all_fail = |kind: &str| {
            sh.gave_up.fetch_add(units.len(), Ordering::Relaxed);
            vec![WorkerOut {
                failures: [(kind.to_string(), 1)].into(),
                ..WorkerOut::default()
            }]
        };
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return all_fail("client");
        };
        let uri = format!("http://{}:{}", self.target.host, self.target.port);
        let Ok(endpoint) = tonic::transport::Endpoint::from_shared(uri) else {
            return all_fail("connect");
        };
        let endpoint = endpoint.timeout(self.timeout).tcp_nodelay(true);
        rt.block_on(async {
            let mut channels = std::collections::BTreeMap::new();
            for &(c, _) in &units {
                if channels.contains_key(&c) {
                    continue;
                }
                match endpoint.connect().await {
                    Ok(ch) => {
                        self.connects.fetch_add(1, Ordering::Relaxed);
                        channels.insert(c, ch);
                    }
                    Err(_) => return all_fail("connect"),
                }
            }
            let loops = units.iter().map(|&(c, unit)| {
                let client =
                    GrpcClient::new(channels[&c].clone()).max_decoding_message_size(usize::MAX);
                stream_loop(client, self.request.clone(), sh, unit)
            });
            futures_util::future::join_all(loops).await
        })
    }
}

/// One unit's loop, as [`crate::measure`]'s worker loop: warm-up calls, then measured calls
/// (each at its scheduled time in open loop) until the coordinator says stop or the failures
/// in a row reach the limit.
async fn stream_loop(
    mut client: GrpcClient,
    request: Arc<pb::ModelInferRequest>,
    sh: &Shared<'_>,
    unit: usize,
) -> WorkerOut {
    use std::sync::atomic::Ordering;
    let mut out = WorkerOut::default();
    let mut consecutive = 0u64;
    loop {
        let (warm, scheduled, free_before_due) = match sh.next(unit) {
            Next::Stop => break,
            Next::Idle => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            Next::Send {
                warm,
                due,
                free_before_due,
            } => (warm, due, free_before_due),
        };
        if let Some(due) = scheduled {
            // Sleep to a millisecond before (the timer's resolution), then yield to the due
            // time.
            let left = due.saturating_sub(sh.clock.now_ns());
            if left > 1_500_000 {
                tokio::time::sleep(Duration::from_nanos(left - 1_000_000)).await;
            }
            while sh.clock.now_ns() < due {
                if sh.phase.load(Ordering::Acquire) == STOP {
                    return out;
                }
                tokio::task::yield_now().await;
            }
        }
        let a = sh.clock.now_ns();
        let r = client
            .model_infer((*request).clone())
            .await
            .map(|_| None)
            .map_err(|status| format!("grpc-{}", grpc_code(status.code())));
        let b = sh.clock.now_ns();
        let sent = Sent::at(warm, scheduled, a, free_before_due);
        if !sh.book(&mut out, &mut consecutive, &sent, b, r) {
            break;
        }
    }
    out
}

/// A gRPC worker: its own single-threaded runtime and HTTP/2 connection.
struct GrpcWorker {
    grpc: Grpc,
    request: Arc<pb::ModelInferRequest>,
}

impl NetWorker for GrpcWorker {
    fn step(&mut self) -> Result<Option<StepInfo>, NetError> {
        let req = self.request.clone();
        self.grpc
            .call(async |c| c.model_infer((*req).clone()).await.map(|_| None))
    }

    fn connects(&self) -> u64 {
        self.grpc.connects
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
