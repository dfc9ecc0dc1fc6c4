//! One group of scenarios: one runtime at one thread count, loaded once, then measured at
//! each shape. Runs in the harness's process or in a worker process (see `worker`); either
//! way it emits one row per scenario, with the outputs for the parity check that the
//! orchestrator does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use runtimes::{HostTensor, LoadOptions, Loaded, ModelFiles, ModelInfo, Runtime, Variant};
use serde::{Deserialize, Serialize};

use super::{ms, pinning, Event, Pinning, Progress, Row};
use crate::capacity::{self, FindMaxRate};
use crate::inputs::{self, InputError, ScenarioShape};
use crate::measure::{self, LoadMode, MeasureConfig};
use crate::monitor::{self, MonitorHooks};
use crate::results::{CapacitySearch, Parity, ScenarioId, ScenarioResult, Tolerance};

/// Everything a group needs; serializable so that a worker process can run it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupSpec {
    pub model: PathBuf,
    pub runtime: String,
    pub variant: Variant,
    pub threads: usize,
    /// Closed loop at each concurrency, or open loop at each rate.
    pub modes: Vec<LoadMode>,
    pub batches: Vec<usize>,
    pub seqs: Vec<usize>,
    pub shapes: Vec<(String, Vec<usize>)>,
    pub seed: u64,
    pub measure: MeasureConfig,
    pub tolerance: Tolerance,
    pub pinning: Pinning,
    /// Fault injection for the isolation tests: abort the process before measuring the
    /// scenario with this index (worker processes only).
    pub abort_before: Option<usize>,
    /// The same, panicking instead of aborting (as a runtime's bug would).
    #[serde(default)]
    pub panic_before: Option<usize>,
    /// The same, hanging forever in this phase (`load`, `prepare`, `measure`), as a runtime
    /// spinning on a malformed graph would: how the deadline tests make a runtime hang.
    #[serde(default)]
    pub hang_in: Option<String>,
    /// How long loading, preparing a shape (with its first inference), or finishing may
    /// take, and how much longer than the warm-up and `--max-time` measuring may: past it
    /// the group's worker is stopped and the row says so.
    #[serde(default = "default_phase_timeout")]
    pub phase_timeout: Duration,
    /// `cpu`, `cuda:0`, `tensorrt:0`.
    #[serde(default = "cpu_label")]
    pub device: String,
    /// What particular runtimes take (ONNX Runtime's library and profiler, GPU settings).
    #[serde(default)]
    pub runtime_options: runtimes::RuntimeOptions,
    /// What is left of `--budget` as the group starts, and the run's scenarios left.
    #[serde(default)]
    pub budget: Option<measure::Budget>,
    /// After each closed-loop row, search the highest open-loop rate over the same workers
    /// that meets these objectives (`--find-max-rate`).
    #[serde(default)]
    pub find_max_rate: Option<FindMaxRate>,
    /// The rows of the plan this group runs, by their index in [`plan`] (a shard of the
    /// sweep, or what a resumed run still lacks); None: every row.
    #[serde(default)]
    pub only: Option<Vec<usize>>,
    /// Shapes whose outputs this group computes (one inference, not measured) for the parity
    /// reference, where it runs none of their rows: a resumed run whose reference rows were
    /// kept.
    #[serde(default)]
    pub reference_for: Vec<usize>,
}

fn cpu_label() -> String {
    "cpu".into()
}

/// `--phase-timeout`'s default: long enough for a large model to load and optimise.
pub const DEFAULT_PHASE_TIMEOUT: Duration = Duration::from_secs(600);

fn default_phase_timeout() -> Duration {
    DEFAULT_PHASE_TIMEOUT
}

/// Announces a phase and its deadline; hangs here when fault injection asks for it.
fn enter_phase(spec: &GroupSpec, progress: Progress, fault: &str, what: &str, within: Duration) {
    progress(Event::Phase(what, within));
    if spec.hang_in.as_deref() == Some(fault) {
        progress(Event::Warning(&format!(
            "[{}] hanging in {fault} on purpose (fault injection)",
            spec.runtime
        )));
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// One scenario shape and its inputs.
pub struct Shape {
    pub shape: ScenarioShape,
    /// Err when the shape cannot run (sequence too long): every runtime skips it.
    pub inputs: Result<Vec<HostTensor>, String>,
}

/// Every (seq, batch) shape with its generated inputs: the same, deterministically, in the
/// orchestrator and in every worker.
pub fn build_shapes(
    info: &ModelInfo,
    batches: &[usize],
    seqs: &[usize],
    overrides: &[(String, Vec<usize>)],
    seed: u64,
) -> Result<Vec<Shape>, InputError> {
    let mut shapes = Vec::new();
    let from_model = [inputs::default_seq(info)];
    let seqs = if seqs.is_empty() {
        &from_model[..]
    } else {
        seqs
    };
    for &seq in seqs {
        for &batch in batches {
            match inputs::resolve_shape(info, batch, seq, overrides) {
                Ok(shape) => {
                    let inputs = inputs::generate(info, &shape, seed).map_err(|e| e.to_string());
                    shapes.push(Shape { shape, inputs });
                }
                // A sequence beyond the model's limit skips that shape only.
                Err(e @ InputError::SeqTooLong { .. }) => shapes.push(Shape {
                    shape: ScenarioShape {
                        inputs: vec![],
                        batch,
                        seq: Some(seq),
                    },
                    inputs: Err(e.to_string()),
                }),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(shapes)
}

/// One planned row of a group: a shape and a load mode.
pub fn plan(shapes: usize, modes: &[LoadMode]) -> Vec<(usize, LoadMode)> {
    (0..shapes)
        .flat_map(|i| modes.iter().map(move |m| (i, m.clone())))
        .collect()
}

/// The rows of the plan over `shapes` shapes and `modes` that `only` keeps (their plan
/// indices; None: every row), in plan order.
pub fn planned(
    only: Option<&[usize]>,
    shapes: usize,
    modes: &[LoadMode],
) -> Vec<(usize, LoadMode)> {
    plan(shapes, modes)
        .into_iter()
        .enumerate()
        .filter(|(k, _)| only.is_none_or(|o| o.contains(k)))
        .map(|(_, row)| row)
        .collect()
}

/// The modes of shape `i` that `only` keeps, in plan order.
pub fn modes_of<'a>(only: Option<&[usize]>, i: usize, modes: &'a [LoadMode]) -> Vec<&'a LoadMode> {
    let first = i * modes.len();
    (modes.iter().enumerate())
        .filter(|(m, _)| only.is_none_or(|o| o.contains(&(first + m))))
        .map(|(_, mode)| mode)
        .collect()
}

/// The shapes that `only` keeps a row of, each once, in order.
pub fn shapes_of(only: Option<&[usize]>, shapes: usize, modes: &[LoadMode]) -> Vec<usize> {
    let mut kept: Vec<usize> = planned(only, shapes, modes)
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    kept.dedup();
    kept
}

/// What a group hands back: each planned row in plan order, and around them what a
/// capacity search adds.
#[derive(Debug)]
pub enum Output {
    /// A planned row, with the outputs for the parity check and its shape's index.
    Row(ScenarioResult, Option<Vec<HostTensor>>, usize),
    /// A row beyond the plan: a capacity search's probe.
    Probe(ScenarioResult),
    /// A finished capacity search (after its probes).
    Capacity(CapacitySearch),
    /// A shape's outputs for the parity reference, without a row (`reference_for`).
    Reference(Vec<HostTensor>, usize),
}

pub type Emit<'a> = &'a mut dyn FnMut(Output);

/// The typed id of one row of this group.
pub fn row_id(spec: &GroupSpec, shape: &ScenarioShape, mode: &LoadMode) -> ScenarioId {
    ScenarioId::InProcess {
        runtime: spec.runtime.clone(),
        device: spec.device.clone(),
        variant: spec.variant.as_str().to_string(),
        batch: shape.batch,
        seq: shape.seq,
        threads: spec.threads,
        load: (*mode != LoadMode::ClosedLoop { concurrency: 1 }).then(|| mode.to_string()),
    }
}

/// A blank row of this group for one shape and mode.
pub fn blank_row(spec: &GroupSpec, shape: &ScenarioShape, mode: &LoadMode) -> ScenarioResult {
    ScenarioResult {
        shapes: shape.inputs.iter().cloned().collect(),
        ..Row::blank(&row_id(spec, shape, mode), mode, spec.tolerance)
    }
}

/// The loaded instances of a group (one per concurrent worker) and what every row of it
/// records about loading.
struct Instances {
    models: Vec<Box<dyn Loaded>>,
    load_ms: f64,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    applied: BTreeMap<String, String>,
    /// Preparation time per instance of the shape being measured.
    prepare_ms: Option<f64>,
}

impl Instances {
    /// Loads as many instances as the largest concurrency needs; instances after the first
    /// share the loaded weights where the runtime allows it.
    fn load(
        rt: &dyn Runtime,
        spec: &GroupSpec,
        files: &ModelFiles,
        info: &ModelInfo,
        progress: Progress,
    ) -> Result<Instances, runtimes::RuntimeError> {
        let threads = spec.threads;
        let load_opts = LoadOptions {
            threads,
            variant: spec.variant,
            cpus: spec.pinning.workers.clone(),
            device: runtimes::Device::parse(&spec.device).unwrap_or(runtimes::Device::Cpu),
            runtime: spec.runtime_options.clone(),
        };
        let instances = max_concurrency(&spec.modes);
        progress(Event::Status(&format!(
            "[{}] loading {} with {threads} thread(s){}",
            rt.name(),
            spec.variant.as_str(),
            if instances > 1 {
                format!(", {instances} instances")
            } else {
                String::new()
            }
        )));
        let rss_before = monitor::current_rss_bytes();
        let t = Instant::now();
        let (models, shared) = load_or_share(rt, files, info, &load_opts, instances)?;
        // Load time per instance; memory is for all of them.
        let load_ms = ms(t.elapsed()) / models.len().max(1) as f64;
        let rss_after = monitor::current_rss_bytes();
        // Pinned after load, so the runtime's own worker threads do not inherit the mask.
        let pinned = pinning::pin_current(spec.pinning.measuring);
        let mut applied: BTreeMap<String, String> = models[0].applied().into_iter().collect();
        applied.insert("measuring_thread_cpu".into(), pinned);
        if instances > 1 {
            applied.insert(
                "sharing".into(),
                if shared {
                    "shared model: one loaded copy of the weights, per-worker state and threads"
                        .into()
                } else {
                    "one model instance per worker (the runtime's sessions cannot be shared)".into()
                },
            );
            applied.insert(
                "concurrent_worker_cpus".into(),
                spec.pinning.workers_label(),
            );
        }
        Ok(Instances {
            models,
            load_ms,
            rss_before,
            rss_after,
            applied,
            prepare_ms: None,
        })
    }

    /// A row of this group with what loading recorded.
    fn row(&self, spec: &GroupSpec, shape: &ScenarioShape, mode: &LoadMode) -> ScenarioResult {
        ScenarioResult {
            applied: self.applied.clone(),
            load_ms: Some(self.load_ms),
            rss_after_load_bytes: self.rss_after,
            load_rss_delta_bytes: self
                .rss_before
                .zip(self.rss_after)
                .map(|(a, b)| b as i64 - a as i64),
            ..blank_row(spec, shape, mode)
        }
    }
}

/// `n` instances of a model: the first loaded, the others sharing its weights where the
/// runtime allows it (then `true`), else each loaded on its own.
pub fn load_or_share(
    rt: &dyn Runtime,
    files: &ModelFiles,
    info: &ModelInfo,
    opts: &LoadOptions,
    n: usize,
) -> Result<(Vec<Box<dyn Loaded>>, bool), runtimes::RuntimeError> {
    let mut models: Vec<Box<dyn Loaded>> = Vec::with_capacity(n);
    let mut shared = false;
    for k in 0..n.max(1) {
        let next = match models.first().and_then(|m| m.share()) {
            Some(handle) if k > 0 => {
                shared = true;
                handle
            }
            _ => runtimes::catch_panic(|| {
                let _range = crate::nvtx::range_named(&format!(
                    "load {} {} {} t{}",
                    rt.name(),
                    opts.variant.as_str(),
                    opts.device.label(),
                    opts.threads
                ));
                rt.load(files, info, opts)
            })
            .map_err(|panic| runtimes::RuntimeError::Load {
                runtime: rt.name(),
                path: files.path.clone(),
                message: format!("panicked while loading: {panic}"),
            })?,
        };
        models.push(next?);
    }
    Ok((models, shared))
}

/// The most workers any of the modes needs (at least one).
pub fn max_concurrency(modes: &[LoadMode]) -> usize {
    modes
        .iter()
        .map(|m| m.concurrency())
        .max()
        .unwrap_or(1)
        .max(1)
}

/// Emits one row per planned (shape, mode), in order, with the outputs of each measured
/// scenario and its shape index (parity is left to the caller). Concurrency N uses N
/// instances of the model, one per worker. Stops between scenarios when `interrupt` is set.
pub fn run_group(
    spec: &GroupSpec,
    files: &ModelFiles,
    info: &ModelInfo,
    shapes: &[Shape],
    interrupt: &AtomicBool,
    progress: Progress,
    emit: Emit,
) {
    let plan = planned(spec.only.as_deref(), shapes.len(), &spec.modes);
    if plan.is_empty() && spec.reference_for.is_empty() {
        return;
    }
    let rt = match runtimes::by_name(&spec.runtime) {
        Some(rt) => rt,
        None => {
            for (i, mode) in &plan {
                let mut r = blank_row(spec, &shapes[*i].shape, mode);
                let known = runtimes::names().join(", ");
                Row::fail(
                    &mut r,
                    format!("unknown runtime '{}' (known: {known})", spec.runtime),
                    "unknown-runtime",
                    false,
                );
                emit(Output::Row(r, None, *i));
            }
            return;
        }
    };
    let started = Instant::now();
    let instances = max_concurrency(&spec.modes) as u32;
    enter_phase(
        spec,
        progress,
        "load",
        "loading",
        spec.phase_timeout.saturating_mul(instances),
    );
    let mut loaded = match Instances::load(rt.as_ref(), spec, files, info, progress) {
        Ok(l) => l,
        Err(e) => {
            for (i, mode) in &plan {
                let mut r = blank_row(spec, &shapes[*i].shape, mode);
                Row::runtime_error(&mut r, &e);
                r.parity = Parity::skipped(spec.tolerance, "not loaded");
                emit(Output::Row(r, None, *i));
            }
            return;
        }
    };
    let computes = rt.capabilities().computes;
    let mut index = 0usize;
    // Every shape runs every mode, in plan order (those of the plan this group runs).
    for (i, s) in shapes.iter().enumerate() {
        let modes = modes_of(spec.only.as_deref(), i, &spec.modes);
        if modes.is_empty() {
            if computes && spec.reference_for.contains(&i) {
                if let Ok(Some(outputs)) =
                    prepare_shape(rt.name(), spec, &mut loaded, s, computes, progress)
                {
                    emit(Output::Reference(outputs, i));
                }
            }
            continue;
        }
        let outputs = match prepare_shape(rt.name(), spec, &mut loaded, s, computes, progress) {
            Ok(o) => o,
            Err((message, kind, skip)) => {
                for mode in modes {
                    let mut r = loaded.row(spec, &s.shape, mode);
                    Row::fail(&mut r, message.clone(), kind, skip);
                    emit(Output::Row(r, None, i));
                    index += 1;
                }
                continue;
            }
        };
        for mode in modes {
            if interrupt.load(Ordering::Relaxed) {
                return;
            }
            let cfg = measure::Budget::apply(
                spec.budget.as_ref(),
                &spec.measure,
                started.elapsed(),
                index,
            );
            let (mut r, _) =
                measure_row(spec, &cfg, &mut loaded, s, mode, index, interrupt, progress);
            let measured = r.measurement.is_some();
            if !computes {
                r.parity = Parity::skipped(spec.tolerance, "the null runtime computes nothing");
            }
            let scale = capacity::closed_rate(&r);
            emit(Output::Row(r, outputs.clone().filter(|_| measured), i));
            index += 1;
            if let (Some(find), LoadMode::ClosedLoop { .. }) = (&spec.find_max_rate, mode) {
                if !computes {
                    // Its "capacity" would be the harness's own scheduling rate (tens of
                    // millions a second): nothing to search.
                    emit(Output::Capacity(CapacitySearch {
                        group: row_id(spec, &s.shape, mode).to_string(),
                        result: capacity::skipped(
                            &find.objectives,
                            "the null runtime computes nothing",
                        ),
                    }));
                    continue;
                }
                let search = Search {
                    spec,
                    find,
                    closed: mode,
                    scale,
                };
                search.run(&mut loaded, s, interrupt, progress, emit);
            }
        }
    }
    // Dropping the instances (a runtime's threads and memory) is bounded too.
    enter_phase(spec, progress, "finish", "finishing", spec.phase_timeout);
}

/// Prepares every instance for one shape and reads the outputs once (instance 0) for the
/// parity check; Err gives the message, its kind, and whether the rows are skipped.
fn prepare_shape(
    runtime: &'static str,
    spec: &GroupSpec,
    loaded: &mut Instances,
    s: &Shape,
    computes: bool,
    progress: Progress,
) -> Result<Option<Vec<HostTensor>>, (String, &'static str, bool)> {
    let inputs = s
        .inputs
        .as_ref()
        .map_err(|e| (e.clone(), "shape-beyond-model", true))?;
    let id = row_id(spec, &s.shape, &LoadMode::ClosedLoop { concurrency: 1 });
    progress(Event::Status(&format!(
        "[{}] {id}: preparing",
        spec.runtime
    )));
    enter_phase(
        spec,
        progress,
        "prepare",
        &format!("preparing {id} (with its first inference)"),
        spec.phase_timeout
            .saturating_mul(loaded.models.len() as u32),
    );
    let t = Instant::now();
    let panicked = |what: &'static str| {
        move |panic: String| runtimes::RuntimeError::Inference {
            runtime,
            message: format!("panicked while {what}: {panic}"),
        }
    };
    let prepared = loaded.models.iter_mut().try_for_each(|m| {
        runtimes::catch_panic(|| m.prepare(inputs)).map_err(panicked("preparing the shape"))?
    });
    let prepare_ms = ms(t.elapsed()) / loaded.models.len() as f64;
    let err = |e: runtimes::RuntimeError| (e.to_string(), e.kind(), e.is_skip());
    prepared.map_err(err)?;
    loaded.prepare_ms = Some(prepare_ms);
    if computes {
        let first = &mut loaded.models[0];
        runtimes::catch_panic(|| first.infer())
            .map_err(panicked("running the first inference"))
            .and_then(|r| r)
            .map(Some)
            .map_err(err)
    } else {
        Ok(None)
    }
}

/// A capacity search after a closed-loop row: open-loop probes over the same workers,
/// scaled by what closed loop carried.
struct Search<'a> {
    spec: &'a GroupSpec,
    find: &'a FindMaxRate,
    closed: &'a LoadMode,
    /// The closed-loop row's rate, or why it has none.
    scale: Result<f64, String>,
}

impl Search<'_> {
    /// Emits each probe as it ends, then the search.
    fn run(
        self,
        loaded: &mut Instances,
        s: &Shape,
        interrupt: &AtomicBool,
        progress: Progress,
        emit: Emit,
    ) {
        let (spec, objectives) = (self.spec, &self.find.objectives);
        let concurrency = self.closed.concurrency();
        let group = row_id(spec, &s.shape, self.closed).to_string();
        let result = match self.scale {
            Err(why) => capacity::not_searched(objectives, concurrency, &why),
            Ok(closed_rate) => {
                let cfg = capacity::scaled_config(
                    closed_rate,
                    spec.measure.min_time.as_secs_f64(),
                    spec.measure.max_time.as_secs_f64(),
                );
                let mut probe = |rate: f64, duration_s: f64| {
                    if interrupt.load(Ordering::Relaxed) {
                        return None;
                    }
                    let rate = capacity::round3(rate);
                    let mode = LoadMode::OpenLoop {
                        rate,
                        arrivals: self.find.arrivals,
                        concurrency,
                        seed: spec.seed,
                        ramp_s: None,
                    };
                    let cfg = spec.measure.probe(duration_s);
                    let (mut row, latencies) = measure_row(
                        spec,
                        &cfg,
                        loaded,
                        s,
                        &mode,
                        usize::MAX,
                        interrupt,
                        progress,
                    );
                    row.parity = Parity::skipped(
                        spec.tolerance,
                        "capacity probe: outputs are compared in the closed-loop row",
                    );
                    let obs = capacity::observed(rate, &row, &latencies);
                    emit(Output::Probe(row));
                    (!interrupt.load(Ordering::Relaxed)).then_some(obs)
                };
                capacity::search(objectives, &cfg, &mut probe)
            }
        };
        progress(Event::Finished(&format!(
            "[{}] capacity of {group} under {}: {:.1}/s: {}",
            spec.runtime,
            capacity::describe(objectives),
            result.capacity,
            result.verdict
        )));
        emit(Output::Capacity(CapacitySearch { group, result }));
    }
}

/// Measures one prepared (shape, mode): the warm-up, the window under its monitors, and
/// the completed row, with every counted latency (ns, from the intended send) in open loop.
#[allow(clippy::too_many_arguments)]
fn measure_row(
    spec: &GroupSpec,
    cfg: &MeasureConfig,
    loaded: &mut Instances,
    s: &Shape,
    mode: &LoadMode,
    index: usize,
    interrupt: &AtomicBool,
    progress: Progress,
) -> (ScenarioResult, Vec<u64>) {
    let mut r = loaded.row(spec, &s.shape, mode);
    r.prepare_ms = loaded.prepare_ms;
    if spec.abort_before == Some(index) {
        progress(Event::Warning(&format!(
            "[{}] {}: aborting on purpose (fault injection)",
            spec.runtime, r.id
        )));
        std::process::abort();
    }
    if spec.panic_before == Some(index) {
        panic!("fault injection before {}", r.id);
    }
    progress(Event::Status(&format!(
        "[{}] {}: measuring",
        spec.runtime, r.id
    )));
    enter_phase(
        spec,
        progress,
        "measure",
        &format!("measuring {}", r.id),
        cfg.warmup_cap()
            .saturating_add(cfg.max_time)
            .saturating_add(spec.phase_timeout),
    );
    let device = runtimes::Device::parse(&spec.device).unwrap_or(runtimes::Device::Cpu);
    let _range = crate::nvtx::range_named(&r.id.to_string());
    let mut hooks = MonitorHooks::new(interrupt).with_gpu(device.gpu_index());
    let c = mode.concurrency().min(loaded.models.len());
    let place = |i: usize| spec.pinning.place_worker(i);
    let models = &mut loaded.models[..c];
    let measured = match mode {
        LoadMode::OpenLoop { .. } => {
            measure::measure_workers_driven(models, mode, cfg, &mut hooks, &place)
                .map(|d| (d.measurement, d.open, d.latencies))
        }
        _ => measure::measure_load(models, mode, cfg, &mut hooks, &place)
            .map(|(m, open)| (m, open, Vec::new())),
    };
    match measured {
        Ok((mut m, open, latencies)) => {
            if m.device.is_none() && loaded.models[0].device_timing().is_some() {
                m.device = Some(crate::results::DeviceTiming::unavailable(format!(
                    "device timing covers the closed loop at concurrency 1 (one stream's events); this row is {mode}"
                )));
            }
            Row::complete(&mut r, m, open, hooks.report.take(), "inferences");
            (r, latencies)
        }
        Err(e) => {
            Row::runtime_error(&mut r, &e);
            (r, Vec::new())
        }
    }
}
