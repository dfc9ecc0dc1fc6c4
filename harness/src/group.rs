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
use crate::measure::{self, MeasureConfig, MonotonicClock};
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
    pub batches: Vec<usize>,
    pub seqs: Vec<usize>,
    pub shapes: Vec<(String, Vec<usize>)>,
    pub seed: u64,
    pub measure: MeasureConfig,
    pub tolerance: Tolerance,
    pub ort_lib: Option<PathBuf>,
    pub pin_cpu: Option<usize>,
    /// Fault injection for the isolation tests: abort the process before measuring the
    /// scenario with this index (worker processes only).
    pub abort_before: Option<usize>,
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

/// Progress for people, on stderr in the binary; the library only calls this.
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

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

pub fn pin_label(pin: Option<usize>) -> String {
    match pin {
        Some(c) => format!("measuring thread pinned to CPU {c}; runtime worker threads not pinned"),
        None => "not pinned".into(),
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
    tol: Tolerance,
) -> ScenarioResult {
    ScenarioResult {
        id: scenario_id(runtime, variant, shape.batch, shape.seq, threads),
        runtime: runtime.to_string(),
        device: "cpu".into(),
        variant: variant.as_str().into(),
        batch: shape.batch,
        seq: shape.seq,
        shapes: shape.inputs.iter().cloned().collect(),
        threads,
        concurrency: 1,
        mode: "closed-loop".into(),
        status: ScenarioStatus::Error,
        error: None,
        error_kind: None,
        applied: BTreeMap::new(),
        load_ms: None,
        prepare_ms: None,
        measurement: None,
        throughput_per_s: None,
        rss_after_load_bytes: None,
        load_rss_delta_bytes: None,
        resources: None,
        parity: Parity::skipped(tol, "not measured"),
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
struct MonitorHooks<'a> {
    sampler: Option<Sampler>,
    report: Option<ResourceReport>,
    interrupt: &'a AtomicBool,
}

/// How often the monitors sample.
const MONITOR_INTERVAL: Duration = Duration::from_millis(100);

impl measure::WindowHooks for MonitorHooks<'_> {
    fn window_start(&mut self) {
        self.sampler = Some(Sampler::start(
            monitor::default_monitors(),
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
/// Emits one row per shape, in order, with the outputs of each measured scenario (parity
/// is left to the caller). Stops between scenarios when `interrupt` is set.
#[allow(clippy::too_many_arguments)]
pub fn run_group(
    spec: &GroupSpec,
    files: &ModelFiles,
    info: &ModelInfo,
    shapes: &[Shape],
    interrupt: &AtomicBool,
    progress: Progress,
    emit: &mut dyn FnMut(ScenarioResult, Option<Vec<HostTensor>>),
) {
    let Some(rt) = runtimes::by_name(&spec.runtime) else {
        for s in shapes {
            let mut r = blank_row(
                &spec.runtime,
                spec.variant,
                &s.shape,
                spec.threads,
                spec.tolerance,
            );
            r.error = Some(format!("unknown runtime '{}'", spec.runtime));
            emit(r, None);
        }
        return;
    };
    let name = rt.name();
    let threads = spec.threads;
    let tol = spec.tolerance;
    let base = |shape: &ScenarioShape| blank_row(name, spec.variant, shape, threads, tol);
    let load_opts = LoadOptions {
        threads,
        variant: spec.variant,
        ort_lib: spec.ort_lib.clone(),
        ..LoadOptions::default()
    };
    progress(&format!("[{name}] loading with {threads} thread(s)"));
    let rss_before = monitor::current_rss_bytes();
    let t = Instant::now();
    let loaded = rt.load(files, info, &load_opts);
    let load_ms = ms(t.elapsed());
    let rss_after = monitor::current_rss_bytes();
    let mut model: Box<dyn Loaded> = match loaded {
        Ok(m) => m,
        Err(e) => {
            for s in shapes {
                let mut r = base(&s.shape);
                set_error(&mut r, &e);
                r.parity = Parity::skipped(tol, "not loaded");
                emit(r, None);
            }
            return;
        }
    };
    // Pinned after load, so the runtime's own worker threads do not inherit the mask.
    let pinned = pin_current(spec.pin_cpu);
    let mut applied: BTreeMap<String, String> = model.applied().into_iter().collect();
    applied.insert("measuring_thread_cpu".into(), pinned);

    for (i, s) in shapes.iter().enumerate() {
        if interrupt.load(Ordering::Relaxed) {
            return;
        }
        let mut r = base(&s.shape);
        r.applied = applied.clone();
        r.load_ms = Some(load_ms);
        r.rss_after_load_bytes = rss_after;
        r.load_rss_delta_bytes = rss_before.zip(rss_after).map(|(a, b)| b as i64 - a as i64);
        let inputs = match &s.inputs {
            Ok(i) => i,
            Err(e) => {
                r.error = Some(e.clone());
                r.error_kind = Some("shape-beyond-model".into());
                r.status = ScenarioStatus::Skipped;
                emit(r, None);
                continue;
            }
        };
        progress(&format!("[{name}] {}: preparing", r.id));
        let t = Instant::now();
        if let Err(e) = model.prepare(inputs) {
            set_error(&mut r, &e);
            emit(r, None);
            continue;
        }
        r.prepare_ms = Some(ms(t.elapsed()));
        progress(&format!("[{name}] {}: measuring", r.id));
        let clock = MonotonicClock::new();
        if spec.abort_before == Some(i) {
            progress(&format!(
                "[{name}] {}: aborting on purpose (fault injection)",
                r.id
            ));
            std::process::abort();
        }
        let mut hooks = MonitorHooks {
            sampler: None,
            report: None,
            interrupt,
        };
        let m = match measure::measure_with(model.as_mut(), &clock, &spec.measure, &mut hooks) {
            Ok(m) => m,
            Err(e) => {
                set_error(&mut r, &e);
                emit(r, None);
                continue;
            }
        };
        r.throughput_per_s = Some(measure::throughput(&m, s.shape.batch));
        r.resources = hooks.report.take();
        r.status = if m.failures > 0 {
            ScenarioStatus::Failed
        } else {
            ScenarioStatus::Ok
        };
        r.measurement = Some(m);
        let outputs = if name == "null" {
            r.parity = Parity::skipped(tol, "the null runtime computes nothing");
            None
        } else {
            match model.infer() {
                Ok(out) => Some(out),
                Err(e) => {
                    r.parity = Parity::skipped(tol, format!("outputs unreadable: {e}"));
                    r.status = ScenarioStatus::Failed;
                    None
                }
            }
        };
        emit(r, outputs);
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
