//! What a network row adds: protocol, target, the load generator's own CPU, the server's
//! metrics, streaming metrics. Data only; `net::load` measures it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::measurement::LatencyStats;

/// Service-level objectives for goodput (vLLM's definition: a request counts when it meets
/// every objective given).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
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
    /// The load protocol's name (`kserve-http`, `openai-embeddings`, ...).
    pub protocol: String,
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
    /// Why the client, not the server, may have limited this row (sends late while a
    /// connection was free, or its threads busy); None: the client kept up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_limited: Option<String>,
    /// How the load was driven ("events (2 thread(s), 64 connection(s), spin 10us)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// A replayed trace: what it held and what was sent of each shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayStats>,
    /// Where each request's time went, client side and (from `Server-Timing`) server side:
    /// the event engine over HTTP/1.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Breakdown>,
}

/// The mean request of a row, taken apart (ms). Client side, each request from its start
/// (connecting or writing) to its last byte: `connect + write + wait + read = total`
/// exactly. Server side, the means of the entries of the answers' `Server-Timing` headers,
/// over the requests that carried one; what is left of the client's total outside the
/// server's is the network, both sides' HTTP framing and the client itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Breakdown {
    /// Answered requests of the measured phase the means are over.
    pub requests: u64,
    /// Of those, the ones that had to open their connection first.
    pub connects: u64,
    /// Connecting (0 for a request on a kept-alive connection), in the mean.
    pub connect_ms: f64,
    /// Writing the request.
    pub write_ms: f64,
    /// Written to the answer's first byte.
    pub wait_ms: f64,
    /// First byte to last.
    pub read_ms: f64,
    pub total_ms: f64,
    /// Requests whose answer carried `Server-Timing`.
    pub server_requests: u64,
    /// The server's entries (name, mean ms), in the order it sent them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_ms: Vec<(String, f64)>,
    /// The server's own total: its `total` entry, else the sum of its entries.
    pub server_total_ms: Option<f64>,
    /// The client's total less the server's: network, framing, client.
    pub outside_server_ms: Option<f64>,
}

/// A replayed trace, per shape: the requests it holds and those counted (answered in the
/// window or in flight at its end).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayStats {
    pub file: String,
    pub speed: f64,
    pub requests: u64,
    pub duration_s: f64,
    pub shapes: Vec<ReplayShape>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayShape {
    pub batch: usize,
    pub seq: usize,
    pub in_trace: u64,
    pub counted: u64,
}

/// One capacity search (`--find-max-rate`): the rows it probed share `group`'s prefix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacitySearch {
    /// The scenario the search ran ("ours/kserve-http/b1/s128/c64").
    pub group: String,
    #[serde(flatten)]
    pub result: crate::capacity::Capacity,
}

/// The serving tax measured in interleaved blocks (`compare --served`, concurrency 1): one
/// model instance in the harness's process, called directly and through the server's code
/// in that process, takes turns, a block of requests each in the order in-process, served,
/// served, in-process, ..., so that the machine's drift between them falls on both alike
/// and two loads of the model (which differ in speed by themselves) are not compared. The
/// served rows and their in-process twins, measured minutes apart in two processes, carry
/// both in full. `client` says how it was measured (results from before the one-instance
/// method name only the connection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterleavedTax {
    /// The in-process scenario (the served row's fp32 twin), e.g. `ort/cpu/fp32/b1/s128/t2`.
    pub scenario: String,
    /// The served scenario it pairs with.
    pub served_scenario: String,
    /// The served side's protocol (`kserve-http`).
    pub protocol: String,
    /// How it was measured: the instance and the served side's connection.
    pub client: String,
    /// Block pairs measured (one in-process block and one served block each).
    pub pairs: u64,
    /// Timed requests per block (after one untimed request that takes the turn over).
    pub per_block: u64,
    /// Every timed request of each side, pooled over the blocks.
    pub in_process: LatencyStats,
    pub served: LatencyStats,
    /// Served p50 less in-process p50, over the pooled requests (ms).
    pub tax_ms: f64,
    /// The median over pairs of (served block median - in-process block median), ms, with
    /// its distribution-free 95% interval (absent with fewer than 6 pairs).
    pub pair_median_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_ci_ms: Option<(f64, f64)>,
}
