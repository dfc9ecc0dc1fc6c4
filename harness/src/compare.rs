//! `harness compare`: one model, every selected runtime, the same inputs, parity, then the
//! measurement of each (runtime, threads, shape) scenario. Results are written after every
//! scenario. A runtime that cannot load or run is a row with its error; the others go on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use runtimes::{Availability, HostTensor, LoadOptions, Loaded, ModelFiles, ModelInfo, Runtime};

use crate::environment::{Environment, RuntimeVersion};
use crate::inputs::{self, ScenarioShape};
use crate::measure::{self, MeasureConfig, MonotonicClock};
use crate::monitor::{self, ResourceReport, Sampler};
use crate::parity::{self, Parity, Tolerance};
use crate::results::{
    self, ModelSummary, Overhead, Results, RuntimeStatus, ScenarioResult, ScenarioStatus, Settings,
};

#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub model: PathBuf,
    pub runtimes: Vec<String>,
    pub batches: Vec<usize>,
    pub seqs: Vec<usize>,
    pub shapes: Vec<(String, Vec<usize>)>,
    pub threads: Vec<usize>,
    pub measure: MeasureConfig,
    pub seed: u64,
    pub tolerance: Tolerance,
    pub ort_lib: Option<PathBuf>,
    pub out: PathBuf,
    /// Pin the measuring thread to this CPU (None: not pinned).
    pub pin_cpu: Option<usize>,
    /// Measure the harness's own per-iteration cost with the null runtime.
    pub overhead: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Model(#[from] runtimes::model::ModelError),
    #[error(transparent)]
    Input(#[from] inputs::InputError),
    #[error("unknown runtime '{0}' (known: ort, tract, candle, null)")]
    UnknownRuntime(String),
    #[error("--threads must be at least 1")]
    ZeroThreads,
    #[error("could not write results to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Progress for people, on stderr in the binary; the library only calls this.
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

struct Shape {
    shape: ScenarioShape,
    /// None when the shape cannot run (sequence too long): every runtime skips it.
    inputs: Result<Vec<HostTensor>, String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn scenario_id(runtime: &str, batch: usize, seq: Option<usize>, threads: usize) -> String {
    match seq {
        Some(s) => format!("{runtime}/cpu/fp32/b{batch}/s{s}/t{threads}"),
        None => format!("{runtime}/cpu/fp32/b{batch}/t{threads}"),
    }
}

fn pin_label(pin: Option<usize>) -> String {
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
fn blank_row(
    runtime: &str,
    shape: &ScenarioShape,
    threads: usize,
    tol: Tolerance,
) -> ScenarioResult {
    ScenarioResult {
        id: scenario_id(runtime, shape.batch, shape.seq, threads),
        runtime: runtime.to_string(),
        device: "cpu".into(),
        variant: "fp32".into(),
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

/// One progress line per finished scenario.
fn report(r: &ScenarioResult, progress: Progress) {
    match (&r.measurement, &r.error) {
        (Some(m), _) => progress(&format!(
            "[{}] {}: p50 {:.3} ms, {} samples, parity {}",
            r.runtime,
            r.id,
            m.latency.p50_ms,
            m.latency.samples,
            r.parity_label()
        )),
        (None, Some(e)) => progress(&format!("[{}] {}: {e}", r.runtime, r.id)),
        (None, None) => {}
    }
}

/// Resource monitors over exactly the measured window.
#[derive(Default)]
struct MonitorHooks {
    sampler: Option<Sampler>,
    report: Option<ResourceReport>,
}

/// How often the monitors sample.
const MONITOR_INTERVAL: Duration = Duration::from_millis(100);

impl measure::WindowHooks for MonitorHooks {
    fn window_start(&mut self) {
        self.sampler = Some(Sampler::start(
            monitor::default_monitors(),
            MONITOR_INTERVAL,
        ));
    }

    fn window_end(&mut self) {
        self.report = self.sampler.take().map(Sampler::stop);
    }
}

struct Ctx<'a> {
    opts: &'a CompareOptions,
    files: &'a ModelFiles,
    info: &'a ModelInfo,
    shapes: &'a [Shape],
}

/// The scenarios of one runtime at one thread count: load once, then each shape.
fn run_group(
    ctx: &Ctx,
    rt: &dyn Runtime,
    threads: usize,
    references: &BTreeMap<usize, (String, Vec<HostTensor>)>,
    progress: Progress,
    emit: &mut dyn FnMut(ScenarioResult, Option<Vec<HostTensor>>),
) {
    let name = rt.name();
    let base = |shape: &ScenarioShape| blank_row(name, shape, threads, ctx.opts.tolerance);
    let load_opts = LoadOptions {
        threads,
        ort_lib: ctx.opts.ort_lib.clone(),
        ..LoadOptions::default()
    };
    progress(&format!("[{name}] loading with {threads} thread(s)"));
    let rss_before = monitor::current_rss_bytes();
    let t = Instant::now();
    let loaded = rt.load(ctx.files, ctx.info, &load_opts);
    let load_ms = ms(t.elapsed());
    let rss_after = monitor::current_rss_bytes();
    let mut model: Box<dyn Loaded> = match loaded {
        Ok(m) => m,
        Err(e) => {
            for s in ctx.shapes {
                let mut r = base(&s.shape);
                r.error = Some(e.to_string());
                r.error_kind = Some(e.kind().to_string());
                r.parity = Parity::skipped(ctx.opts.tolerance, "not loaded");
                emit(r, None);
            }
            return;
        }
    };
    // Pinned after load, so the runtime's own worker threads do not inherit the mask.
    let pinned = pin_current(ctx.opts.pin_cpu);
    let mut applied: BTreeMap<String, String> = model.applied().into_iter().collect();
    applied.insert("measuring_thread_cpu".into(), pinned);

    for (i, s) in ctx.shapes.iter().enumerate() {
        let mut r = base(&s.shape);
        r.applied = applied.clone();
        r.load_ms = Some(load_ms);
        r.rss_after_load_bytes = rss_after;
        r.load_rss_delta_bytes = rss_before.zip(rss_after).map(|(a, b)| b as i64 - a as i64);
        let inputs = match &s.inputs {
            Ok(i) => i,
            Err(e) => {
                r.error = Some(e.clone());
                r.error_kind = Some("skipped".into());
                emit(r, None);
                continue;
            }
        };
        progress(&format!("[{name}] {}: preparing", r.id));
        let t = Instant::now();
        if let Err(e) = model.prepare(inputs) {
            r.error = Some(e.to_string());
            r.error_kind = Some(e.kind().to_string());
            emit(r, None);
            continue;
        }
        r.prepare_ms = Some(ms(t.elapsed()));
        progress(&format!("[{name}] {}: measuring", r.id));
        let clock = MonotonicClock::new();
        let mut hooks = MonitorHooks::default();
        let m = match measure::measure_with(model.as_mut(), &clock, &ctx.opts.measure, &mut hooks) {
            Ok(m) => m,
            Err(e) => {
                r.error = Some(e.to_string());
                r.error_kind = Some(e.kind().to_string());
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
            r.parity = Parity::skipped(ctx.opts.tolerance, "the null runtime computes nothing");
            None
        } else {
            match model.infer() {
                Ok(out) => {
                    r.parity = match references.get(&i) {
                        Some((ref_name, want)) => {
                            parity::compare(&out, want, ref_name, ctx.opts.tolerance)
                        }
                        None => Parity::reference(ctx.opts.tolerance),
                    };
                    Some(out)
                }
                Err(e) => {
                    r.parity =
                        Parity::skipped(ctx.opts.tolerance, format!("outputs unreadable: {e}"));
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

fn now_string() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

/// Default results folder name: `results/2026-11-28T00-15-02Z`.
pub fn default_out_dir() -> PathBuf {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]-[minute]-[second]Z");
    PathBuf::from("results").join(now.format(fmt).unwrap_or_else(|_| "run".into()))
}

pub fn compare(opts: &CompareOptions, progress: Progress) -> Result<Results, CompareError> {
    if opts.threads.contains(&0) {
        return Err(CompareError::ZeroThreads);
    }
    let mut selected: Vec<Box<dyn Runtime>> = Vec::new();
    for n in &opts.runtimes {
        let rt = runtimes::by_name(n).ok_or_else(|| CompareError::UnknownRuntime(n.clone()))?;
        if !selected.iter().any(|s| s.name() == rt.name()) {
            selected.push(rt);
        }
    }
    // The parity reference (ONNX Runtime, CPU, fp32) is measured first when selected.
    selected.sort_by_key(|r| r.name() != "ort");

    let files = ModelFiles::resolve(&opts.model)?;
    let info = ModelInfo::read(&files)?;
    if let Some(e) = &info.onnx_error {
        progress(&format!("warning: {e}"));
    }

    let mut shapes = Vec::new();
    for &seq in &opts.seqs {
        for &batch in &opts.batches {
            match inputs::resolve_shape(&info, batch, seq, &opts.shapes) {
                Ok(shape) => {
                    let inputs =
                        inputs::generate(&info, &shape, opts.seed).map_err(|e| e.to_string());
                    shapes.push(Shape { shape, inputs });
                }
                // A sequence beyond the model's limit skips that shape only.
                Err(e @ inputs::InputError::SeqTooLong { .. }) => shapes.push(Shape {
                    shape: ScenarioShape {
                        inputs: vec![],
                        batch,
                        seq: Some(seq),
                    },
                    inputs: Err(e.to_string()),
                }),
                Err(e) => return Err(e.into()),
            }
        }
    }

    let load_opts = LoadOptions {
        ort_lib: opts.ort_lib.clone(),
        ..LoadOptions::default()
    };
    let mut statuses = Vec::new();
    let mut versions = Vec::new();
    for rt in &selected {
        let (ready, version, detail) = match rt.check(&load_opts) {
            Availability::Ready { version, detail } => (true, Some(version), detail),
            Availability::Unavailable { reason } => (false, None, reason),
        };
        versions.push(RuntimeVersion {
            runtime: rt.name().into(),
            version: version.clone(),
            detail: detail.clone(),
        });
        statuses.push(RuntimeStatus {
            name: rt.name().into(),
            ready,
            version,
            detail,
        });
    }

    let mut results = Results {
        schema: results::SCHEMA.into(),
        schema_version: results::SCHEMA_VERSION,
        started_at: now_string(),
        finished_at: None,
        environment: Environment::capture(versions),
        model: ModelSummary {
            path: files.path.clone(),
            name: info.name.clone(),
            onnx: files.onnx.clone(),
            safetensors: files.safetensors.clone(),
            config: files.config.clone(),
            inputs: info.inputs.clone(),
            outputs: info.outputs.clone(),
            spec_source: info.spec_source.clone(),
            onnx_error: info.onnx_error.clone(),
            model_type: info.model_type.clone(),
            vocab_size: info.vocab_size,
            max_positions: info.max_positions,
        },
        settings: Settings {
            mode: "closed-loop, single stream".into(),
            seed: opts.seed,
            warmup_iterations: opts.measure.warmup_iters,
            warmup_time_s: opts.measure.warmup_time.as_secs_f64(),
            min_time_s: opts.measure.min_time.as_secs_f64(),
            min_samples: opts.measure.min_samples,
            max_time_s: opts.measure.max_time.as_secs_f64(),
            tolerance: opts.tolerance,
            reference_preference: "ort (CPU, fp32) when it runs, else the first runtime that produced outputs".into(),
            pinning: pin_label(opts.pin_cpu),
            percentile_definition: "nearest rank on all samples; '*' (low_sample_percentiles) when fewer than 5 samples lie at or beyond it".into(),
        },
        harness_overhead: None,
        runtimes: statuses,
        scenarios: Vec::new(),
    };
    let write = |r: &Results| {
        results::write_all(&opts.out, r).map_err(|source| CompareError::Write {
            path: opts.out.clone(),
            source,
        })
    };
    write(&results)?;

    if opts.overhead {
        progress("[harness] measuring its own per-iteration overhead (null runtime)");
        results.harness_overhead = Some(measure_overhead(opts.pin_cpu));
    }

    let ctx = Ctx {
        opts,
        files: &files,
        info: &info,
        shapes: &shapes,
    };
    // Reference outputs per shape index: the first runtime that produced them.
    let mut references: BTreeMap<usize, (String, Vec<HostTensor>)> = BTreeMap::new();
    for rt in &selected {
        for &threads in &opts.threads {
            let mut produced: Vec<(usize, Vec<HostTensor>)> = Vec::new();
            let mut emitted = 0usize;
            let mut write_error = None;
            // Each group runs on its own thread: the measuring thread can be pinned without
            // the next runtime's pools inheriting the mask, and a panic inside a runtime
            // becomes an error row instead of ending the run.
            let outcome = std::thread::scope(|s| {
                s.spawn(|| {
                    let mut emit = |r: ScenarioResult, out: Option<Vec<HostTensor>>| {
                        if let Some(o) = out {
                            produced.push((emitted, o));
                        }
                        emitted += 1;
                        report(&r, progress);
                        results.scenarios.push(r);
                        // On disk as soon as it is measured.
                        if let Err(e) = write(&results) {
                            write_error.get_or_insert(e);
                        }
                    };
                    run_group(&ctx, rt.as_ref(), threads, &references, progress, &mut emit);
                })
                .join()
            });
            if let Err(panic) = outcome {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                progress(&format!("[{}] panicked: {msg}", rt.name()));
                for s in shapes.iter().skip(emitted) {
                    let mut r = blank_row(rt.name(), &s.shape, threads, opts.tolerance);
                    r.error = Some(format!("{} panicked: {msg}", rt.name()));
                    r.error_kind = Some("panic".into());
                    results.scenarios.push(r);
                }
                write(&results)?;
            }
            if let Some(e) = write_error {
                return Err(e);
            }
            for (i, out) in produced {
                references
                    .entry(i)
                    .or_insert_with(|| (rt.name().to_string(), out));
            }
        }
    }
    results.finished_at = Some(now_string());
    write(&results)?;
    Ok(results)
}
