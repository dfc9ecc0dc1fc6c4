//! `harness load`: drives a server (ours, Triton, vLLM) in closed or open loop, with the
//! same measurement rules as in-process runs (warm-up, minimum time and samples, latency
//! from the scheduled send in open loop), and writes the same results schema.
//!
//! Each protocol is one file behind [`Protocol`]: its default port, how it discovers the
//! model, the request every worker sends, the worker, how it fetches one decoded answer, and
//! what it adds to a row's statistics. [`PROTOCOLS`] is the registry the CLI reads.

mod http_get;
mod kserve_grpc;
mod kserve_http;
mod openai_completions;
mod openai_embeddings;
mod protocol;
pub mod scrape;
pub mod streaming;
mod words;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use runtimes::{HostTensor, ModelInfo};

use super::client::Target;
use crate::engine::{runlog, Row};
use crate::measure::{self, LoadMode};
use crate::monitor::MonitorHooks;
use crate::results::{
    ModelSummary, Parity, ScenarioId, ScenarioResult, ServedInfo, Settings, Tolerance,
};

pub use protocol::{
    Finished, HttpRequest, LoadError, LoadOptions, NetWorker, Protocol, Request, Scenario,
};
pub use words::sentence;

/// The registry of protocols, in the order `--help` lists them.
pub static PROTOCOLS: &[&dyn Protocol] = &[
    &kserve_http::KserveHttp,
    &kserve_grpc::KserveGrpc,
    &openai_embeddings::OpenaiEmbeddings,
    &openai_completions::OpenaiCompletions,
    &http_get::HttpGet,
];

pub const KSERVE_HTTP: &dyn Protocol = &kserve_http::KserveHttp;
pub const KSERVE_GRPC: &dyn Protocol = &kserve_grpc::KserveGrpc;
pub const OPENAI_EMBEDDINGS: &dyn Protocol = &openai_embeddings::OpenaiEmbeddings;
pub const OPENAI_COMPLETIONS: &dyn Protocol = &openai_completions::OpenaiCompletions;
pub const HTTP_GET: &dyn Protocol = &http_get::HttpGet;

pub fn by_name(name: &str) -> Option<&'static dyn Protocol> {
    PROTOCOLS.iter().copied().find(|p| p.name() == name)
}

pub fn names() -> Vec<&'static str> {
    PROTOCOLS.iter().map(|p| p.name()).collect()
}

/// One full answer for a scenario, decoded (to check outputs and compare them).
pub fn fetch_outputs(
    o: &LoadOptions,
    target: &Target,
    inputs: &[HostTensor],
) -> Result<Vec<HostTensor>, String> {
    o.protocol.fetch_outputs(o, target, inputs)
}

/// The model as the server describes it, checked against the local model when given (then
/// inputs come from the local model exactly as in-process runs make them).
fn discover(o: &LoadOptions, target: &Target) -> Result<ModelInfo, LoadError> {
    let remote = o.protocol.discover(o, target)?;
    let Some(local) = &o.local else {
        return Ok(remote);
    };
    if remote.inputs.is_empty() {
        return Ok(remote);
    }
    let names = |i: &ModelInfo| i.inputs.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    if names(local) != names(&remote) {
        return Err(LoadError::Setup(format!(
            "the server's model takes {:?}, the local model {:?}",
            names(&remote),
            names(local)
        )));
    }
    Ok(local.clone())
}

/// The model and settings a load run's results record; `info` once the server described
/// the model.
pub fn header(o: &LoadOptions, info: Option<&ModelInfo>) -> (ModelSummary, Settings) {
    let model = ModelSummary {
        path: std::path::PathBuf::from(&o.target),
        name: o.model.clone().unwrap_or_else(|| o.target.clone()),
        onnx: None,
        safetensors: None,
        config: None,
        inputs: info.map(|i| i.inputs.clone()).unwrap_or_default(),
        outputs: info.map(|i| i.outputs.clone()).unwrap_or_default(),
        spec_source: info.map_or_else(|| o.protocol.name().to_string(), |i| i.spec_source.clone()),
        onnx_error: None,
        model_type: None,
        vocab_size: info.and_then(|i| i.vocab_size),
        max_positions: None,
    };
    let settings = runlog::settings(
        format!(
            "network load ({}) against {}; {}",
            o.protocol.name(),
            o.target,
            LoadMode::describe_all(&o.modes, "connection")
        ),
        o.seed,
        &o.measure.for_scenarios(planned(o)),
        Tolerance::default(),
        "served rows are not compared for parity (compare --served compares them)",
        "none (load generator threads float)".into(),
        "network: the server is another process",
    );
    (model, settings)
}

/// Names a row from its (batch, seq) — None for a protocol without shapes — and load mode.
pub type IdFor<'a> = dyn Fn(Option<(usize, usize)>, &LoadMode) -> ScenarioId + 'a;

/// The rows of `harness load`: `LABEL/PROTOCOL/b1/s128/c1`.
pub fn run_load(
    o: &LoadOptions,
    emit: &mut dyn FnMut(ScenarioResult),
) -> Result<ModelInfo, LoadError> {
    let id = |shape: Option<(usize, usize)>, mode: &LoadMode| ScenarioId::Network {
        label: o.label.clone(),
        protocol: o.protocol.name().to_string(),
        shape,
        load: mode.to_string(),
    };
    run_load_as(o, &id, emit)
}

/// Runs every (batch, seq, mode) scenario against the target, naming each row with `id`;
/// `emit` gets each row as it finishes (so a caller can write results after every
/// scenario). Setup problems (target unreachable, unknown model) are errors before
/// anything is measured.
pub fn run_load_as(
    o: &LoadOptions,
    id: &IdFor,
    emit: &mut dyn FnMut(ScenarioResult),
) -> Result<ModelInfo, LoadError> {
    let started = std::time::Instant::now();
    let target = o.target()?;
    let info = discover(o, &target)?;
    let shapes = shapes(o);
    let planned = planned(o);
    let budget = o.budget.or_else(|| {
        o.measure
            .for_scenarios(planned)
            .budget
            .map(|left| measure::Budget {
                left,
                scenarios: planned,
            })
    });
    let mut done = 0;
    for &shape in &shapes {
        for mode in &o.modes {
            if o.interrupt.load(Ordering::Relaxed) {
                return Ok(info);
            }
            let cfg = measure::Budget::apply(budget.as_ref(), &o.measure, started.elapsed(), done);
            done += 1;
            emit(measure_scenario(
                o,
                &cfg,
                &target,
                &info,
                shape,
                mode,
                id(shape, mode),
            ));
        }
    }
    Ok(info)
}

/// The (batch, seq) of each scenario, None for a protocol without shapes.
fn shapes(o: &LoadOptions) -> Vec<Option<(usize, usize)>> {
    if o.protocol.shaped() {
        o.batch
            .iter()
            .flat_map(|&b| o.seq.iter().map(move |&s| Some((b, s))))
            .collect()
    } else {
        vec![None]
    }
}

/// How many scenarios `run_load_as` measures.
fn planned(o: &LoadOptions) -> usize {
    shapes(o).len() * o.modes.len()
}

/// One network scenario: prepare the request, open the connections, measure, complete the
/// row.
fn measure_scenario(
    o: &LoadOptions,
    cfg: &measure::MeasureConfig,
    target: &Target,
    info: &ModelInfo,
    shape: Option<(usize, usize)>,
    mode: &LoadMode,
    id: ScenarioId,
) -> ScenarioResult {
    let network = matches!(id, ScenarioId::Network { .. });
    let mut row = ScenarioResult {
        applied: BTreeMap::from([("protocol".to_string(), o.protocol.name().to_string())]),
        parity: Parity::skipped(Tolerance::default(), "served: outputs not compared"),
        ..Row::blank(&id, mode, Tolerance::default())
    };
    if network {
        row.device = format!("{}:{}", target.host, target.port);
        row.threads = o.server_threads;
    }
    let (batch, seq) = shape.unwrap_or((1, 0));
    let sc = match o.protocol.prepare(o, target, info, batch, seq) {
        Ok(sc) => sc,
        Err(e) => {
            Row::fail(&mut row, e.to_string(), "setup", false);
            return row;
        }
    };
    row.shapes = sc.shapes.clone();
    row.batch = sc.batch;
    row.seq = sc.seq;
    let workers: Result<Vec<Box<dyn NetWorker>>, LoadError> = (0..mode.concurrency().max(1))
        .map(|_| sc.request.worker(target, o.timeout))
        .collect();
    let mut ws = match workers {
        Ok(w) => w,
        Err(e) => {
            Row::fail(&mut row, e.to_string(), "setup", false);
            return row;
        }
    };
    let mut hooks =
        scrape::ScrapeHooks::new(MonitorHooks::new(&o.interrupt), o.metrics_url.clone());
    let r = measure::measure_workers(&mut ws, mode, cfg, &mut hooks, &|_| {});
    let connects: u64 = ws.iter().map(|w| w.connects()).sum();
    match r {
        Err(e) => {
            let hint = o.protocol.failure_hint(o).unwrap_or_default();
            Row::fail(
                &mut row,
                format!("the first request failed: {e}{hint}"),
                &e.kind,
                false,
            );
        }
        Ok((m, open, steps)) => {
            let resources = hooks.inner.report.take();
            let mut served = served_info(o, &sc, connects, resources.as_ref(), &hooks);
            o.protocol.add_statistics(
                &Finished {
                    options: o,
                    target,
                    scenario: &sc,
                    steps: &steps,
                    window_s: m.window_s,
                },
                &mut served,
            );
            row.served = Some(served);
            Row::complete(&mut row, m, open, resources, "requests");
        }
    }
    row
}

/// The network figures every protocol's row has: the request, the connections, the client's
/// own CPU, the server's metrics over the window.
fn served_info(
    o: &LoadOptions,
    sc: &Scenario,
    connects: u64,
    resources: Option<&crate::results::ResourceReport>,
    hooks: &scrape::ScrapeHooks,
) -> ServedInfo {
    let client_cpus = runtimes::online_cpus();
    let cores = resources.and_then(|r| r.avg_cores_busy);
    let server_metrics = hooks.changed();
    let (avg_batch, queue, compute) = scrape::per_request(&server_metrics);
    ServedInfo {
        target: o.target.clone(),
        protocol: o.protocol.name().to_string(),
        model: o.model.clone().unwrap_or_default(),
        encoding: o.protocol.encoding(o),
        request_bytes: sc.request_bytes,
        connects,
        client_cores_busy: cores,
        client_cpus,
        client_saturated: cores.is_some_and(|c| c > 0.9 * client_cpus as f64),
        server_metrics,
        server_avg_batch: avg_batch,
        server_queue_ms_per_request: queue,
        server_compute_ms_per_request: compute,
        metrics_error: hooks.error.clone(),
        prompt_tokens_per_request: None,
        streaming: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_is_registered_once_and_found_by_name() {
        let names = names();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        for n in names {
            assert_eq!(by_name(n).unwrap().name(), n);
        }
        assert!(by_name("carrier-pigeon").is_none());
        assert_eq!(KSERVE_GRPC.default_port(), 8001);
        assert_eq!(KSERVE_HTTP.default_port(), 8000);
        assert!(!HTTP_GET.shaped());
    }
}
