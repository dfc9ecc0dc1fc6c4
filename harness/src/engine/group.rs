//! One group of scenarios: one runtime at one thread count, loaded once, then measured at
//! each shape. Runs in the harness's process or in a worker process (see `worker`); either
//! way it emits one row per scenario, with the outputs for the parity check that the
//! orchestrator does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use runtimes::{HostTensor, LoadOptions, Loaded, ModelFiles, ModelInfo, RuntimeError, Variant};
use serde::{Deserialize, Serialize};

use crate::inputs::{self, InputError, ScenarioShape};
use crate::measure::{self, LoadMode, MeasureConfig, MonotonicClock};
use crate::monitor::{self, ResourceReport, Sampler};
use crate::parity::{Parity, Tolerance};
use crate::results::{Overhead, ScenarioResult, ScenarioStatus};

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
    pub ort_lib: Option<PathBuf>,
    pub pinning: Pinning,
    /// Folder for ONNX Runtime's own profiles (`--ort-profile`).
    #[serde(default)]
    pub ort_profile: Option<PathBuf>,
    /// Fault injection for the isolation tests: abort the process before measuring the
    /// scenario with this index (worker processes only).
    pub abort_before: Option<usize>,
    /// `cpu`, `cuda:0`, `tensorrt:0`.
    #[serde(default = "cpu_label")]
    pub device: String,
    #[serde(default)]
    pub gpu: GpuSpec,
}

fn cpu_label() -> String {
    "cpu".into()
}

/// GPU settings, as the worker process receives them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GpuSpec {
    /// Host<->device copies inside the timed region (end to end), else IO binding.
    pub copies_timed: bool,
    pub trt_fp16: bool,
    pub trt_cache: Option<PathBuf>,
    pub trt_workspace: Option<usize>,
}

impl GpuSpec {
    pub fn options(&self) -> runtimes::GpuOptions {
        runtimes::GpuOptions {
            copies_timed: self.copies_timed,
            trt_fp16: self.trt_fp16,
            trt_cache: self.trt_cache.clone(),
            trt_workspace: self.trt_workspace,
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

/// What the harness tells people while it works; the binary shows it on stderr (a progress
/// bar on a terminal, plain lines otherwise), the library only emits it.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// How many scenarios the run will report.
    Plan(usize),
    /// What is happening now (loading, preparing, measuring).
    Status(&'a str),
    /// One scenario finished: its one-line summary.
    Finished(&'a str),
    /// Something the user should read.
    Warning(&'a str),
}

pub type Progress<'a> = &'a (dyn Fn(Event) + Sync);

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn scenario_id(
    runtime: &str,
    variant: Variant,
    batch: usize,
    seq: Option<usize>,
    threads: usize,
) -> String {
    let v = variant.as_str();
    match seq {
        Some(s) => format!("{runtime}/cpu/{v}/b{batch}/s{s}/t{threads}"),
        None => format!("{runtime}/cpu/{v}/b{batch}/t{threads}"),
    }
}

/// Which threads are pinned where (`--pin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinning {
    /// The measuring thread's CPU.
    pub measuring: Option<usize>,
    /// CPUs for the runtimes' own worker threads and for concurrent workers, round robin.
    pub workers: Option<Vec<usize>>,
}

impl Pinning {
    /// `measuring` (the measuring thread on CPU 0), `none`, `compact` (every thread, CPUs
    /// 0, 1, ... in order) or a CPU list like `0,2-3` (every thread, over those CPUs).
    pub fn parse(s: &str, online: usize) -> Result<Pinning, String> {
        let all = |cpus: Vec<usize>| Pinning {
            measuring: cpus.first().copied(),
            workers: Some(cpus),
        };
        match s.trim() {
            "measuring" => Ok(Pinning {
                measuring: Some(0),
                workers: None,
            }),
            "none" => Ok(Pinning {
                measuring: None,
                workers: None,
            }),
            "compact" => Ok(all((0..online).collect())),
            list => {
                let mut cpus = Vec::new();
                for part in list.split(',').map(str::trim) {
                    let (a, b) = part.split_once('-').unwrap_or((part, part));
                    let bad = || {
                        format!("--pin {s}: '{part}' is not a CPU or a range (measuring, none, compact or a list like 0,2-3)")
                    };
                    let a: usize = a.trim().parse().map_err(|_| bad())?;
                    let b: usize = b.trim().parse().map_err(|_| bad())?;
                    if a > b {
                        return Err(bad());
                    }
                    for c in a..=b {
                        if c >= online {
                            return Err(format!(
                                "--pin {s}: CPU {c} is not online (this machine has CPUs 0-{})",
                                online - 1
                            ));
                        }
                        if !cpus.contains(&c) {
                            cpus.push(c);
                        }
                    }
                }
                Ok(all(cpus))
            }
        }
    }

    pub fn label(&self) -> String {
        match (&self.measuring, &self.workers) {
            (None, _) => "not pinned".into(),
            (Some(c), None) => {
                format!("measuring thread pinned to CPU {c}; runtime worker threads not pinned")
            }
            (Some(c), Some(w)) => format!(
                "measuring thread on CPU {c}; runtime worker threads and concurrent workers round robin over CPUs {w:?}"
            ),
        }
    }
}

/// Pins the calling thread; returns what was applied.
fn pin_current(pin: Option<usize>) -> String {
    match pin {
        Some(id) => {
            if core_affinity::set_for_current(core_affinity::CoreId { id }) {
                format!("CPU {id}")
            } else {
                format!("requested CPU {id}, pinning refused by the OS")
            }
        }
        None => "none".into(),
    }
}

/// A row for one scenario before anything is known about it: an error until measured.
pub fn blank_row(
    runtime: &str,
    variant: Variant,
    shape: &ScenarioShape,
    threads: usize,
    mode: &LoadMode,
    tol: Tolerance,
) -> ScenarioResult {
    let mut id = scenario_id(runtime, variant, shape.batch, shape.seq, threads);
    if *mode != (LoadMode::ClosedLoop { concurrency: 1 }) {
        id = format!("{id}/{}", mode_tag(mode));
    }
    ScenarioResult {
        batch: shape.batch,
        seq: shape.seq,
        shapes: shape.inputs.iter().cloned().collect(),
        threads,
        ..ScenarioResult::unmeasured(id, runtime, variant.as_str(), mode, tol)
    }
}

/// Labels a row with its device (`cuda:0` in the device column and the id).
pub fn on_device(r: &mut ScenarioResult, device: runtimes::Device) {
    if device != runtimes::Device::Cpu {
        let label = device.label();
        r.id = r.id.replacen("/cpu/", &format!("/{label}/"), 1);
        r.device = label;
    }
}

/// Records why a scenario did not run: skipped when it cannot run here (unsupported,
/// variant missing), an error otherwise.
fn set_error(r: &mut ScenarioResult, e: &RuntimeError) {
    r.error = Some(e.to_string());
    r.error_kind = Some(e.kind().to_string());
    if e.is_skip() {
        r.status = ScenarioStatus::Skipped;
    }
}

/// Resource monitors over exactly the measured window; also where Ctrl-C is noticed.
pub struct MonitorHooks<'a> {
    sampler: Option<Sampler>,
    pub report: Option<ResourceReport>,
    interrupt: &'a AtomicBool,
    /// The GPU the scenario runs on, for NVML's monitor.
    gpu: Option<u32>,
}

impl<'a> MonitorHooks<'a> {
    pub fn new(interrupt: &'a AtomicBool) -> MonitorHooks<'a> {
        MonitorHooks {
            sampler: None,
            report: None,
            interrupt,
            gpu: None,
        }
    }

    pub fn with_gpu(mut self, gpu: Option<u32>) -> MonitorHooks<'a> {
        self.gpu = gpu;
        self
    }
}

/// How often the monitors sample.
const MONITOR_INTERVAL: Duration = Duration::from_millis(100);

impl measure::WindowHooks for MonitorHooks<'_> {
    fn window_start(&mut self) {
        self.sampler = Some(Sampler::start(
            monitor::monitors_for(self.gpu),
            MONITOR_INTERVAL,
        ));
    }

    fn window_end(&mut self) {
        self.report = self.sampler.take().map(Sampler::stop);
    }

    fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::Relaxed)
    }
}

/// The scenarios of one runtime at one thread count: load once, then each shape.
/// One planned row of a group: a shape and a load mode.
pub fn plan(shapes: usize, modes: &[LoadMode]) -> Vec<(usize, LoadMode)> {
    (0..shapes)
        .flat_map(|i| modes.iter().map(move |m| (i, m.clone())))
        .collect()
}

/// What a group hands back for each planned row, in plan order.
pub type Emit<'a> = &'a mut dyn FnMut(ScenarioResult, Option<Vec<HostTensor>>, usize);

/// Emits one row per planned (shape, mode), in order, with the outputs of each measured
/// scenario and its shape index (parity is left to the caller). Concurrency N uses N
/// instances of the model, one per worker. Stops between scenarios when `interrupt` is set.
#[allow(clippy::too_many_arguments)]
pub fn run_group(
    spec: &GroupSpec,
    files: &ModelFiles,
    info: &ModelInfo,
    shapes: &[Shape],
    interrupt: &AtomicBool,
    progress: Progress,
    emit: Emit,
) {
    let plan = plan(shapes.len(), &spec.modes);
    let tol = spec.tolerance;
    let threads = spec.threads;
    let device = runtimes::Device::parse(&spec.device).unwrap_or(runtimes::Device::Cpu);
    let row = |shape: &Shape, mode: &LoadMode| {
        let mut r = blank_row(
            &spec.runtime,
            spec.variant,
            &shape.shape,
            threads,
            mode,
            tol,
        );
        on_device(&mut r, device);
        r
    };
    let Some(rt) = runtimes::by_name(&spec.runtime) else {
        for (i, mode) in &plan {
            let mut r = row(&shapes[*i], mode);
            r.error = Some(format!("unknown runtime '{}'", spec.runtime));
            emit(r, None, *i);
        }
        return;
    };
    let name = rt.name();
    let load_opts = LoadOptions {
        threads,
        variant: spec.variant,
        cpus: spec.pinning.workers.clone(),
        profile: spec.ort_profile.as_ref().map(|d| {
            d.join(format!(
                "{}-{}-t{threads}",
                spec.runtime,
                spec.variant.as_str()
            ))
        }),
        ort_lib: spec.ort_lib.clone(),
        device,
        gpu: spec.gpu.options(),
    };
    let instances = spec
        .modes
        .iter()
        .map(|m| m.concurrency())
        .max()
        .unwrap_or(1)
        .max(1);
    progress(Event::Status(&format!(
        "[{name}] loading {} with {threads} thread(s){}",
        spec.variant.as_str(),
        if instances > 1 {
            format!(", {instances} instances")
        } else {
            String::new()
        }
    )));
    let rss_before = monitor::current_rss_bytes();
    let t = Instant::now();
    let mut models: Vec<Box<dyn Loaded>> = Vec::with_capacity(instances);
    let mut load_error = None;
    let mut shared = false;
    for k in 0..instances {
        // Workers after the first share the loaded weights where the runtime allows it.
        let next = match models.first().and_then(|m| m.share()) {
            Some(handle) if k > 0 => {
                shared = true;
                handle
            }
            _ => rt.load(files, info, &load_opts),
        };
        match next {
            Ok(m) => models.push(m),
            Err(e) => {
                load_error = Some(e);
                break;
            }
        }
    }
    // Load time per instance; memory is for all of them.
    let load_ms = ms(t.elapsed()) / models.len().max(1) as f64;
    let rss_after = monitor::current_rss_bytes();
    if let Some(e) = load_error {
        for (i, mode) in &plan {
            let mut r = row(&shapes[*i], mode);
            set_error(&mut r, &e);
            r.parity = Parity::skipped(tol, "not loaded");
            emit(r, None, *i);
        }
        return;
    }
    // Pinned after load, so the runtime's own worker threads do not inherit the mask.
    let pinned = pin_current(spec.pinning.measuring);
    let mut applied: BTreeMap<String, String> = models[0].applied().into_iter().collect();
    applied.insert("measuring_thread_cpu".into(), pinned);
    if instances > 1 {
        applied.insert(
            "sharing".into(),
            if shared {
                "shared model: one loaded copy of the weights, per-worker state and threads".into()
            } else {
                "one model instance per worker (the runtime's sessions cannot be shared)".into()
            },
        );
    }

    // Worker i of a concurrent scenario: on the --pin list round robin, else on the CPU
    // after the measuring thread's; unpinned (every CPU) when pinning is off.
    let cpus = runtimes::online_cpus();
    let place_worker = |i: usize| match (&spec.pinning.workers, spec.pinning.measuring) {
        (Some(w), _) => {
            runtimes::pin_current_thread(w[i % w.len()]);
        }
        (None, Some(base)) => {
            runtimes::pin_current_thread((base + i) % cpus);
        }
        (None, None) => {
            runtimes::unpin_current_thread();
        }
    };
    if instances > 1 {
        applied.insert(
            "concurrent_worker_cpus".into(),
            match (&spec.pinning.workers, spec.pinning.measuring) {
                (Some(w), _) => format!("worker i on CPU {w:?}[i % {}]", w.len()),
                (None, Some(base)) => format!("worker i on CPU ({base} + i) mod {cpus}"),
                (None, None) => "not pinned".into(),
            },
        );
    }

    let mut index = 0usize;
    for (i, s) in shapes.iter().enumerate() {
        let modes: Vec<&LoadMode> = plan
            .iter()
            .filter(|(k, _)| *k == i)
            .map(|(_, m)| m)
            .collect();
        let base = |mode: &LoadMode| {
            let mut r = row(s, mode);
            r.applied = applied.clone();
            r.load_ms = Some(load_ms);
            r.rss_after_load_bytes = rss_after;
            r.load_rss_delta_bytes = rss_before.zip(rss_after).map(|(a, b)| b as i64 - a as i64);
            r
        };
        let inputs = match &s.inputs {
            Ok(i) => i,
            Err(e) => {
                for mode in modes {
                    let mut r = base(mode);
                    r.error = Some(e.clone());
                    r.error_kind = Some("shape-beyond-model".into());
                    r.status = ScenarioStatus::Skipped;
                    emit(r, None, i);
                    index += 1;
                }
                continue;
            }
        };
        let id = row(s, &LoadMode::ClosedLoop { concurrency: 1 }).id;
        progress(Event::Status(&format!("[{name}] {id}: preparing")));
        let t = Instant::now();
        let prepared = models.iter_mut().try_for_each(|m| m.prepare(inputs));
        let prepare_ms = ms(t.elapsed()) / models.len() as f64;
        // Outputs once per shape (instance 0), for every row of this shape.
        let outputs = match prepared {
            Err(e) => Err(e),
            Ok(()) if name == "null" => Ok(None),
            Ok(()) => models[0].infer().map(Some),
        };
        for mode in modes {
            if interrupt.load(Ordering::Relaxed) {
                return;
            }
            let mut r = base(mode);
            let outputs = match &outputs {
                Ok(o) => o.clone(),
                Err(e) => {
                    set_error(&mut r, e);
                    emit(r, None, i);
                    index += 1;
                    continue;
                }
            };
            r.prepare_ms = Some(prepare_ms);
            if spec.abort_before == Some(index) {
                progress(Event::Warning(&format!(
                    "[{name}] {}: aborting on purpose (fault injection)",
                    r.id
                )));
                std::process::abort();
            }
            progress(Event::Status(&format!("[{name}] {}: measuring", r.id)));
            let mut hooks = MonitorHooks::new(interrupt).with_gpu(device.gpu_index());
            let c = mode.concurrency().min(models.len());
            let m = match measure::measure_load(
                &mut models[..c],
                mode,
                &spec.measure,
                &mut hooks,
                &place_worker,
            ) {
                Ok(m) => m,
                Err(e) => {
                    set_error(&mut r, &e);
                    emit(r, None, i);
                    index += 1;
                    continue;
                }
            };
            let (m, open) = m;
            r.throughput_per_s = Some(measure::throughput(&m, s.shape.batch));
            r.resources = hooks.report.take();
            r.status = if m.failures > 0 {
                ScenarioStatus::Failed
            } else {
                ScenarioStatus::Ok
            };
            r.measurement = Some(m);
            r.open_loop = open;
            if name == "null" {
                r.parity = Parity::skipped(tol, "the null runtime computes nothing");
            }
            emit(r, outputs, i);
            index += 1;
        }
    }
}

/// `c4` for closed loop with 4 workers, `open-poisson-100/s-c1` for an open loop.
pub fn mode_tag(mode: &LoadMode) -> String {
    match mode {
        LoadMode::ClosedLoop { concurrency } => format!("c{concurrency}"),
        LoadMode::OpenLoop {
            rate,
            arrivals,
            concurrency,
            ..
        } => format!(
            "open-{}-{rate}/s-c{concurrency}",
            match arrivals {
                measure::Arrivals::Poisson => "poisson",
                measure::Arrivals::Constant => "constant",
            }
        ),
    }
}

/// Measures the harness's own cost per iteration: the null runtime in the same loop.
pub fn measure_overhead(pin: Option<usize>) -> Overhead {
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_current(pin);
            let mut null = runtimes::null::NullLoaded;
            let cfg = MeasureConfig {
                warmup_iters: 10_000,
                warmup_time: Duration::from_millis(50),
                min_time: Duration::from_millis(300),
                min_samples: 100_000,
                max_time: Duration::from_secs(2),
                max_consecutive_failures: 1,
                target_ci: None,
            };
            let clock = MonotonicClock::new();
            let m =
                measure::measure(&mut null, &clock, &cfg).expect("the null runtime cannot fail");
            let l = &m.latency;
            Overhead {
                samples: l.samples,
                p50_ns: l.p50_ms * 1e6,
                mean_ns: l.mean_ms * 1e6,
                p99_ns: l.p99_ms * 1e6,
            }
        })
        .join()
        .expect("overhead thread")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_settings_parse() {
        assert_eq!(
            Pinning::parse("measuring", 4).unwrap(),
            Pinning {
                measuring: Some(0),
                workers: None
            }
        );
        assert_eq!(Pinning::parse("none", 4).unwrap().measuring, None);
        assert_eq!(
            Pinning::parse("compact", 3).unwrap().workers,
            Some(vec![0, 1, 2])
        );
        let p = Pinning::parse("2,0-1,1", 4).unwrap();
        assert_eq!(p.measuring, Some(2));
        assert_eq!(p.workers, Some(vec![2, 0, 1]));
        assert!(Pinning::parse("0,7", 4)
            .unwrap_err()
            .contains("CPU 7 is not online"));
        assert!(Pinning::parse("3-1", 4).is_err());
        assert!(Pinning::parse("tight", 4)
            .unwrap_err()
            .contains("measuring, none, compact"));
    }
}
