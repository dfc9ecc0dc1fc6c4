//! `harness load`: drives a server (ours, Triton, vLLM) in closed or open loop, with the
//! same measurement rules as in-process runs (warm-up, minimum time and samples, latency
//! from the scheduled send in open loop), and writes the same results schema.
//!
//! Each protocol is one file behind [`Protocol`]: its default port, how it discovers the
//! model, the request every worker sends, the worker, how it fetches one decoded answer, and
//! what it adds to a row's statistics. [`PROTOCOLS`] is the registry the CLI reads.

mod evloop;
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
use std::time::Duration;

use runtimes::{HostTensor, ModelInfo};

use super::client::Target;
use crate::capacity;
use crate::engine::{runlog, Row};
use crate::measure::{self, LoadMode};
use crate::monitor::MonitorHooks;
use crate::results::{
    CapacitySearch, ModelSummary, Parity, ReplayShape, ReplayStats, ScenarioId, ScenarioResult,
    ServedInfo, Settings, Tolerance,
};
use crate::traffic;

pub use kserve_http::http_infer_request;
pub use protocol::{
    Engine, Finished, HttpRequest, LoadError, LoadOptions, NetWorker, Protocol, Request, Scenario,
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
        max_positions: info.and_then(|i| i.max_positions),
        export: None,
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
    run_load_as(o, &network_id(o), emit)
}

/// How `harness load` names its rows: `LABEL/PROTOCOL/b1/s128/c1`.
fn network_id(o: &LoadOptions) -> impl Fn(Option<(usize, usize)>, &LoadMode) -> ScenarioId + '_ {
    move |shape, mode| ScenarioId::Network {
        label: o.label.clone(),
        protocol: o.protocol.name().to_string(),
        shape,
        load: mode.to_string(),
    }
}

/// `harness load --find-max-rate`: per shape and concurrency, a short closed-loop run for the
/// scale, then the capacity search's open-loop probes, every one a row. Returns the model
/// and each search's result.
pub fn find_capacity(
    o: &LoadOptions,
    emit: &mut dyn FnMut(ScenarioResult),
) -> Result<(ModelInfo, Vec<CapacitySearch>), LoadError> {
    let (target, info, settled) = reach(o)?;
    let o = &settled;
    let id = network_id(o);
    let mut searches = Vec::new();
    for shape in shapes(o) {
        for mode in &o.modes {
            if o.interrupt.load(Ordering::Relaxed) {
                return Ok((info, searches));
            }
            let scale = Scale::Measure(mode.concurrency());
            searches.push(search_one(o, &target, &info, shape, scale, &id, emit));
        }
    }
    Ok((info, searches))
}

/// Where a capacity search gets its scale.
#[derive(Debug, Clone)]
pub enum Scale {
    /// A short closed-loop run at this many connections, first (a row of its own).
    Measure(usize),
    /// The closed-loop row already measured at this mode: its rate, or why it has none.
    Known(LoadMode, Result<f64, String>),
}

/// A capacity search of the target at one shape, its probes emitted as rows named by `id`
/// (`compare --served` names them as served rows).
pub fn search_capacity_as(
    o: &LoadOptions,
    shape: Option<(usize, usize)>,
    scale: Scale,
    id: &IdFor,
    emit: &mut dyn FnMut(ScenarioResult),
) -> Result<CapacitySearch, LoadError> {
    let (target, info, settled) = reach(o)?;
    let o = &settled;
    Ok(search_one(o, &target, &info, shape, scale, id, emit))
}

/// One capacity search over `scale`'s connections.
fn search_one(
    o: &LoadOptions,
    target: &Target,
    info: &ModelInfo,
    shape: Option<(usize, usize)>,
    scale: Scale,
    id: &IdFor,
    emit: &mut dyn FnMut(ScenarioResult),
) -> CapacitySearch {
    let objectives = o.find_max_rate.clone().unwrap_or_default();
    let (closed, closed_rate) = match scale {
        Scale::Known(mode, rate) => (mode, rate),
        Scale::Measure(concurrency) => {
            // The scale: what the connections carry in closed loop, briefly.
            let closed = LoadMode::ClosedLoop { concurrency };
            let scale_cfg = measure::MeasureConfig {
                min_time: Duration::from_secs(2),
                max_time: Duration::from_secs(4),
                min_samples: 10,
                target_ci: None,
                budget: None,
                share: None,
                ..o.measure.clone()
            };
            let id = id(shape, &closed);
            let (row, _) = measure_probe(o, &scale_cfg, target, info, shape, &closed, id);
            let rate = capacity::closed_rate(&row);
            emit(row);
            (closed, rate)
        }
    };
    let concurrency = closed.concurrency();
    let group = id(shape, &closed).to_string();
    let closed_rate = match closed_rate {
        Ok(r) => r,
        Err(why) => {
            return CapacitySearch {
                group,
                result: capacity::not_searched(&objectives, concurrency, &why),
            }
        }
    };
    let cfg = capacity::scaled_config(
        closed_rate,
        o.measure.min_time.as_secs_f64(),
        o.measure.max_time.as_secs_f64(),
    );
    let mut probe = |rate: f64, duration_s: f64| -> Option<capacity::Observed> {
        if o.interrupt.load(Ordering::Relaxed) {
            return None;
        }
        let mode = LoadMode::OpenLoop {
            rate: capacity::round3(rate),
            arrivals: o.arrivals,
            concurrency,
            seed: o.seed,
            ramp_s: None,
        };
        let pcfg = o.measure.probe(duration_s);
        let (row, latencies) =
            measure_probe(o, &pcfg, target, info, shape, &mode, id(shape, &mode));
        let obs = capacity::observed(capacity::round3(rate), &row, &latencies);
        let interrupted = o.interrupt.load(Ordering::Relaxed);
        emit(row);
        (!interrupted).then_some(obs)
    };
    CapacitySearch {
        group,
        result: capacity::search(&objectives, &cfg, &mut probe),
    }
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
    let (target, info, settled) = reach(o)?;
    let o = &settled;
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

/// The (batch, seq) of each scenario, None for a protocol without shapes (and for a replay,
/// whose requests take their trace's shapes).
fn shapes(o: &LoadOptions) -> Vec<Option<(usize, usize)>> {
    // No --seq: one, settled by `reach` once the server has described the model.
    let seqs: &[usize] = if o.seq.is_empty() { &[128] } else { &o.seq };
    if o.protocol.shaped() && o.trace.is_none() {
        o.batch
            .iter()
            .flat_map(|&b| seqs.iter().map(move |&s| Some((b, s))))
            .collect()
    } else {
        vec![None]
    }
}

/// The target, the model its server describes, and `o` with its sequence settled when no
/// `--seq` was given: 128, or the model's own limit when the server declares a smaller one
/// (as in-process runs choose).
fn reach(o: &LoadOptions) -> Result<(Target, ModelInfo, LoadOptions), LoadError> {
    let target = o.target()?;
    let info = discover(o, &target)?;
    let seq = if o.seq.is_empty() {
        vec![crate::inputs::default_seq(&info)]
    } else {
        o.seq.clone()
    };
    Ok((target, info, LoadOptions { seq, ..o.clone() }))
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
    measure_probe(o, cfg, target, info, shape, mode, id).0
}

/// [`measure_scenario`], with the latencies behind the row (ns; empty when nothing was
/// measured).
fn measure_probe(
    o: &LoadOptions,
    cfg: &measure::MeasureConfig,
    target: &Target,
    info: &ModelInfo,
    shape: Option<(usize, usize)>,
    mode: &LoadMode,
    id: ScenarioId,
) -> (ScenarioResult, Vec<u64>) {
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
    // One prepared request; a replay's, one per shape in its trace.
    let replay = replay_plan(o, mode);
    let shapes = match &replay {
        Some(r) => r.shapes.clone(),
        None => vec![shape.unwrap_or((1, 0))],
    };
    let mut prepared = Vec::with_capacity(shapes.len());
    for &(batch, seq) in &shapes {
        match o.protocol.prepare(o, target, info, batch, seq) {
            Ok(sc) => prepared.push(sc),
            Err(e) => {
                Row::fail(&mut row, e.to_string(), "setup", false);
                return (row, Vec::new());
            }
        }
    }
    let sc = &prepared[0];
    if replay.is_some() {
        row.batch = 1;
        row.seq = None;
    } else {
        row.shapes = sc.shapes.clone();
        row.batch = sc.batch;
        row.seq = sc.seq;
    }
    let http: Option<Vec<&HttpRequest>> = (o.engine == Engine::Events)
        .then(|| prepared.iter().map(|p| p.request.http()).collect())
        .flatten();
    if replay.is_some() && http.is_none() {
        Row::fail(
            &mut row,
            format!(
                "--trace replays need the event engine, which speaks HTTP/1.1 without streaming (kserve-http, openai-embeddings, http-get); {} with --engine {} cannot replay",
                o.protocol.name(),
                if o.engine == Engine::Events { "events" } else { "threads" }
            ),
            "setup",
            false,
        );
        return (row, Vec::new());
    }
    let mut hooks = scrape::ScrapeHooks::new(
        MonitorHooks::new(&o.interrupt).with_server(o.server_pid),
        o.metrics_url.clone(),
    );
    let grpc = (o.engine == Engine::Events && replay.is_none())
        .then(|| sc.request.grpc())
        .flatten();
    let (r, connects, engine, client_threads) = match (&http, grpc) {
        (Some(h), _) => drive_events(o, cfg, target, mode, h, replay.as_ref(), &mut hooks),
        (None, Some(request)) => drive_streams(o, cfg, target, mode, sc, request, &mut hooks),
        (None, None) => drive_threads(o, cfg, target, mode, sc, &mut hooks),
    };
    row.applied.insert("engine".into(), engine.clone());
    match r {
        Err(Setup::Failed(e)) => {
            Row::fail(&mut row, e.to_string(), "setup", false);
            (row, Vec::new())
        }
        Err(Setup::First(e)) => {
            let hint = o.protocol.failure_hint(o).unwrap_or_default();
            Row::fail(
                &mut row,
                format!("the first request failed: {e}{hint}"),
                &e.kind,
                false,
            );
            (row, Vec::new())
        }
        Ok(d) => {
            let resources = hooks.inner.report.take();
            let mut served = served_info(o, sc, connects, resources.as_ref(), &hooks);
            served.engine = Some(engine);
            o.protocol.add_statistics(
                &Finished {
                    options: o,
                    target,
                    scenario: sc,
                    steps: &d.steps,
                    window_s: d.measurement.window_s,
                },
                &mut served,
            );
            let window_s = d.measurement.window_s;
            served.replay = replay.as_ref().map(|r| replay_stats(r, &d.tags));
            served.breakdown = d.phases.as_ref().and_then(|p| p.breakdown());
            row.served = Some(served);
            Row::complete(&mut row, d.measurement, d.open, resources, "requests");
            if let Some(rs) = row.served.as_ref().and_then(|s| s.replay.as_ref()) {
                // Items per second: each request counted with its own batch.
                let items: u64 = rs.shapes.iter().map(|s| s.counted * s.batch as u64).sum();
                row.throughput_per_s = Some(if window_s > 0.0 {
                    items as f64 / window_s
                } else {
                    0.0
                });
            }
            let limited = client_limited(&row, client_threads);
            if let Some(s) = row.served.as_mut() {
                s.client_limited = limited;
            }
            (row, d.latencies)
        }
    }
}

/// A replay's requests: one per distinct shape of its trace (first seen first), and which of
/// them each of its arrivals sends.
struct ReplayPlan<'a> {
    trace: &'a traffic::Trace,
    speed: f64,
    shapes: Vec<(usize, usize)>,
    tag_of: std::sync::Arc<Vec<u32>>,
}

/// The plan of `mode` when it replays `o`'s trace (a shape the trace leaves out is the first
/// `--batch`/`--seq`).
fn replay_plan<'a>(o: &'a LoadOptions, mode: &LoadMode) -> Option<ReplayPlan<'a>> {
    let (Some(trace), LoadMode::Replay { speed, .. }) = (&o.trace, mode) else {
        return None;
    };
    let (b0, s0) = (
        o.batch.first().copied().unwrap_or(1),
        o.seq.first().copied().unwrap_or(128),
    );
    let shapes = trace.distinct_shapes(b0, s0);
    let tag_of: Vec<u32> = trace
        .shapes(b0, s0)
        .iter()
        .map(|s| shapes.iter().position(|d| d == s).unwrap_or(0) as u32)
        .collect();
    Some(ReplayPlan {
        trace,
        speed: *speed,
        shapes,
        tag_of: std::sync::Arc::new(tag_of),
    })
}

/// What a replay held and counted (`tags`: counted requests per request index), per shape.
fn replay_stats(r: &ReplayPlan, tags: &BTreeMap<u32, u64>) -> ReplayStats {
    let mut in_trace = vec![0u64; r.shapes.len()];
    for &t in r.tag_of.iter() {
        in_trace[t as usize] += 1;
    }
    ReplayStats {
        file: r.trace.source.clone(),
        speed: r.speed,
        requests: r.trace.entries.len() as u64,
        duration_s: r.trace.duration_ns() as f64 / 1e9,
        shapes: r
            .shapes
            .iter()
            .zip(in_trace)
            .enumerate()
            .map(|(k, (&(batch, seq), in_trace))| ReplayShape {
                batch,
                seq,
                in_trace,
                counted: tags.get(&(k as u32)).copied().unwrap_or(0),
            })
            .collect(),
    }
}

/// The client's self-check: whether it, not the server, may have limited the row. Late
/// sends while a connection was free mean its loop fell behind its schedule; threads nearly
/// always busy mean it could not have sent faster.
pub fn client_limited(row: &ScenarioResult, client_threads: usize) -> Option<String> {
    let served = row.served.as_ref()?;
    let m = row.measurement.as_ref()?;
    let cores = served.client_cores_busy.unwrap_or(0.0);
    let mut why = Vec::new();
    if let Some(o) = &row.open_loop {
        let counted = m.latency.samples.max(1);
        // Late sends matter when the lag is material against the latencies measured (a few
        // ms late in a 100 ms p99 change nothing; on a trivial endpoint they are the result).
        let lag_p99 = o.send_lag.as_ref().map_or(o.max_send_lag_ms, |l| l.p99_ms);
        if o.late_client > (counted / 100).max(1) && lag_p99 > 0.1 * m.latency.p99_ms {
            why.push(format!(
                "{} of {} sends ({:.1}%) left more than {} ms after their time although a connection was free",
                o.late_client,
                counted,
                100.0 * o.late_client as f64 / counted as f64,
                o.late_threshold_ms
            ));
        }
    }
    let threads = client_threads.max(1) as f64;
    if cores >= 0.9 * threads.min(served.client_cpus.max(1) as f64) {
        why.push(format!(
            "the client used {cores:.2} cores with {client_threads} thread(s)"
        ));
    }
    (!why.is_empty()).then(|| {
        format!(
            "{}: the client may have limited this row; add --client-threads or run the client on cores the server does not use",
            why.join("; ")
        )
    })
}

/// Why a scenario measured nothing.
enum Setup {
    Failed(LoadError),
    First(crate::net::client::NetError),
}

type Outcome = Result<measure::Driven, Setup>;

/// Measures with one blocking thread per connection: every protocol. Returns the outcome,
/// connections opened, the engine in words and the client threads.
fn drive_threads(
    o: &LoadOptions,
    cfg: &measure::MeasureConfig,
    target: &Target,
    mode: &LoadMode,
    sc: &Scenario,
    hooks: &mut scrape::ScrapeHooks,
) -> (Outcome, u64, String, usize) {
    let n = mode.concurrency().max(1);
    let engine = format!("threads ({n}, one per connection)");
    let workers: Result<Vec<Box<dyn NetWorker>>, LoadError> = (0..n)
        .map(|_| sc.request.worker(target, o.timeout))
        .collect();
    let mut ws = match workers {
        Ok(w) => w,
        Err(e) => return (Err(Setup::Failed(e)), 0, engine, n),
    };
    let r =
        measure::measure_workers_driven(&mut ws, mode, cfg, hooks, &|_| {}).map_err(Setup::First);
    let connects: u64 = ws.iter().map(|w| w.connects()).sum();
    (r, connects, engine, n)
}

/// Measures gRPC on the event engine: the first request on a worker of its own (its time and
/// its error, as with threads), then every request in flight a task, `--streams` of them
/// sharing each HTTP/2 connection.
fn drive_streams(
    o: &LoadOptions,
    cfg: &measure::MeasureConfig,
    target: &Target,
    mode: &LoadMode,
    sc: &Scenario,
    request: std::sync::Arc<crate::net::pb::ModelInferRequest>,
    hooks: &mut scrape::ScrapeHooks,
) -> (Outcome, u64, String, usize) {
    let units = mode.concurrency().max(1);
    let mut streams = kserve_grpc::Streams {
        target: target.clone(),
        timeout: o.timeout,
        request,
        units,
        streams: o.streams.clamp(1, units),
        threads: 1,
        connects: Default::default(),
    };
    streams.threads = client_threads(o, target, streams.connections());
    let engine = format!(
        "events (gRPC: {} thread(s), {units} stream(s) over {} connection(s))",
        streams.threads,
        streams.connections()
    );
    let mut first = match sc.request.worker(target, o.timeout) {
        Ok(w) => w,
        Err(e) => return (Err(Setup::Failed(e)), 0, engine, streams.threads),
    };
    let t = std::time::Instant::now();
    if let Err(e) = first.step() {
        return (
            Err(Setup::First(e)),
            first.connects(),
            engine,
            streams.threads,
        );
    }
    let first_ns = t.elapsed().as_nanos() as u64;
    let connects = first.connects();
    drop(first);
    let d = measure::measure_driven(
        units,
        mode,
        measure::schedule_of(mode, cfg),
        cfg,
        hooks,
        first_ns,
        Box::new(|sh| streams.drive(sh)),
    );
    let connects = connects + streams.connects.load(Ordering::Relaxed);
    (Ok(d), connects, engine, streams.threads)
}

/// The event-loop threads the engine runs for `connections`.
/// The event engine's threads: `--client-threads`, else one per CPU, or one per two CPUs
/// when the target is on this machine (loopback), whose server needs the others; at most
/// one per connection. On two shared vCPUs one client thread carried 157k-176k requests/s
/// against our server's health endpoint, two 126k-162k (wrk did the same: 158k-166k with
/// one thread, 132k-143k with two).
pub fn client_threads(o: &LoadOptions, target: &Target, connections: usize) -> usize {
    let cpus = runtimes::online_cpus();
    let t = match o.client_threads {
        0 if target.addr.ip().is_loopback() => cpus / 2,
        0 => cpus,
        n => n,
    };
    t.clamp(1, connections.max(1))
}

/// Measures with the event-driven engine: the first request on a blocking connection (its
/// time and its error, as with threads), then the event loops. `http`: the prepared
/// requests (a replay's, one per shape of its trace, in `replay`'s order).
fn drive_events(
    o: &LoadOptions,
    cfg: &measure::MeasureConfig,
    target: &Target,
    mode: &LoadMode,
    http: &[&HttpRequest],
    replay: Option<&ReplayPlan>,
    hooks: &mut scrape::ScrapeHooks,
) -> (Outcome, u64, String, usize) {
    let connections = mode.concurrency().max(1);
    let threads = client_threads(o, target, connections);
    let engine = format!(
        "events ({threads} thread(s), {connections} connection(s), spin {})",
        humantime::format_duration(o.client_spin)
    );
    let mut first = match http[0].worker(target, o.timeout) {
        Ok(w) => w,
        Err(e) => return (Err(Setup::Failed(e)), 0, engine, threads),
    };
    let t = std::time::Instant::now();
    if let Err(e) = first.step() {
        return (Err(Setup::First(e)), first.connects(), engine, threads);
    }
    let first_ns = t.elapsed().as_nanos() as u64;
    drop(first);
    // A replay: its offsets, and which request each sends; the window spans the trace.
    let (offsets, tag_of, cfg) = match replay {
        Some(r) => {
            // The trace, and a margin for the last sends (a burst at its end leaves over a
            // few ms on a busy machine): a request sent after the window would go uncounted.
            let span = Duration::from_nanos(r.trace.duration_ns()) + Duration::from_millis(250);
            let cfg = measure::MeasureConfig {
                min_time: span,
                min_samples: 0,
                max_time: span + o.timeout,
                target_ci: None,
                share: None,
                ..cfg.clone()
            };
            (r.trace.offsets(), r.tag_of.clone(), cfg)
        }
        None => (
            measure::schedule_of(mode, cfg),
            Default::default(),
            cfg.clone(),
        ),
    };
    let ev = evloop::EvConfig {
        addr: target.addr,
        connections,
        threads,
        timeout: o.timeout,
        requests: http.iter().map(|h| h.bytes.clone()).collect(),
        tag_of,
        expect_binary: http[0].expect_binary,
        expect_body: http[0].expect_body,
        spin: o.client_spin,
        connects: Default::default(),
    };
    let d = measure::measure_driven(
        connections,
        mode,
        offsets,
        &cfg,
        hooks,
        first_ns,
        Box::new(|sh| evloop::drive(&ev, sh)),
    );
    let connects = 1 + ev.connects.load(Ordering::Relaxed);
    (Ok(d), connects, engine, threads)
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
        client_limited: None,
        engine: None,
        replay: None,
        breakdown: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served_row(cores: f64, late_client: u64, samples: u64) -> ScenarioResult {
        let mut row = Row::blank(
            &ScenarioId::Network {
                label: "x".into(),
                protocol: "http-get".into(),
                shape: None,
                load: "c1".into(),
            },
            &LoadMode::ClosedLoop { concurrency: 8 },
            Tolerance::default(),
        );
        let mut served = served_info(
            &LoadOptions::new("http://127.0.0.1:1", HTTP_GET, None),
            &Scenario {
                request: Box::new(HttpRequest {
                    bytes: Default::default(),
                    expect_binary: false,
                    expect_body: false,
                }),
                request_bytes: 0,
                shapes: BTreeMap::new(),
                batch: 1,
                seq: None,
            },
            0,
            None,
            &scrape::ScrapeHooks::new(MonitorHooks::new(&Default::default()), None),
        );
        served.client_cores_busy = Some(cores);
        served.client_cpus = 2;
        row.served = Some(served);
        let samples_ns: Vec<u64> = (0..samples).map(|k| 1_000_000 + k).collect();
        let m = crate::results::Measurement {
            device: None,
            first_inference_ms: 1.0,
            warmup_iterations: 0,
            warmup_ms: 0.0,
            latency: crate::results::LatencyStats::from_samples(&samples_ns),
            window_s: 1.0,
            iterations: samples,
            failures: 0,
            in_flight_at_end: 0,
            failure_kinds: BTreeMap::new(),
            stop_reason: crate::results::StopReason::MinimaMet,
            stable: None,
            share_s: None,
            warmup_end: None,
        };
        row.measurement = Some(m);
        row.open_loop = Some(crate::results::OpenLoopStats {
            target_rate: 100.0,
            achieved_rate: 100.0,
            arrivals: crate::results::Arrivals::Poisson,
            seed: 1,
            late_sends: late_client,
            late_threshold_ms: 1.0,
            max_send_lag_ms: 2.0,
            backlog_at_end: 0,
            uncorrected: crate::results::LatencyStats::from_samples(&samples_ns),
            send_lag: None,
            late_client,
        });
        row
    }

    #[test]
    fn the_client_says_when_it_may_have_limited_a_row() {
        // Kept up: few late sends, idle threads.
        assert_eq!(client_limited(&served_row(0.3, 1, 1000), 2), None);
        // Late with a connection free, beyond 1%.
        let why = client_limited(&served_row(0.3, 50, 1000), 2).unwrap();
        assert!(why.contains("50 of 1000 sends (5.0%)"), "{why}");
        // Its one thread always busy.
        let why = client_limited(&served_row(0.95, 0, 1000), 1).unwrap();
        assert!(why.contains("0.95 cores with 1 thread"), "{why}");
        // Two threads at 0.95 cores: room left.
        assert_eq!(client_limited(&served_row(0.95, 0, 1000), 2), None);
    }

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
