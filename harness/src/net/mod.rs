//! Network mode: `harness serve` (our server) and `harness load` (the load generator for our
//! server, NVIDIA Triton and vLLM alike), writing the same results as in-process runs.

pub mod client;
pub mod kserve;
pub mod load;
pub mod metrics;
pub mod serve;
pub mod tensors;

/// The KServe v2 gRPC messages and service, generated from `proto/kserve.proto`.
#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("inference");
}
