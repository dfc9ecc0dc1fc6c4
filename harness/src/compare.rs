//! `harness compare`: one model, every selected runtime, the same inputs, parity, then the
//! measurement of each (runtime, threads, shape) scenario. Each group (runtime x threads)
//! runs in a worker process by default, so an abort loses only that group's unfinished
//! rows. Results are written after every scenario; Ctrl-C ends the run with everything
//! finished so far saved. A runtime that cannot load or run is a row with its error; the
//! others go on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use runtimes::{Availability, HostTensor, LoadOptions, ModelFiles, ModelInfo, Runtime, Variant};

use crate::environment::{Environment, RuntimeVersion};
use crate::group::{self, Event, GroupSpec, Progress};
use crate::inputs;
use crate::measure::{LoadMode, MeasureConfig};
use crate::parity::{self, Tolerance};
use crate::results::ScenarioStatus;
use crate::results::{self, ModelSummary, Results, RuntimeStatus, ScenarioResult, Settings};
use crate::worker::{self, GroupEnd};

/// Where each group of scenarios runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// In a child process started from this executable (`EXE worker`).
    Process { exe: PathBuf },
    /// In this process, on a thread of its own (a panic is caught, an abort is not).
    None,
}

#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub model: PathBuf,
    pub runtimes: Vec<String>,
    pub batches: Vec<usize>,
    pub seqs: Vec<usize>,
    pub shapes: Vec<(String, Vec<usize>)>,
    pub threads: Vec<usize>,
    /// Devices by name; those this build cannot drive are listed as skipped.
    pub devices: Vec<String>,
    /// Precision variants, fp32 first when present (the accuracy reference).
    pub variants: Vec<Variant>,
    /// Accuracy a non-fp32 variant must keep (cosine against the reference); None: the
    /// per-variant defaults of `parity::default_min_cosine`.
    pub min_cosine: Option<f64>,
    /// Closed loop at each concurrency, or open loop at each rate.
    pub modes: Vec<LoadMode>,
    pub measure: MeasureConfig,
    pub seed: u64,
    pub tolerance: Tolerance,
    pub ort_lib: Option<PathBuf>,
    pub out: PathBuf,
    /// Pin the measuring thread to this CPU (None: not pinned).
    pub pinning: group::Pinning,
    /// Write ONNX Runtime's Chrome-trace profile of each ort group into this folder.
    pub ort_profile: Option<PathBuf>,
    /// Measure the harness's own per-iteration cost with the null runtime.
    pub overhead: bool,
    pub isolation: Isolation,
    /// Set (by a SIGINT handler) to end the run early, keeping what was measured.
    pub interrupt: Arc<AtomicBool>,
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

/// One progress line per finished scenario.
fn report(r: &ScenarioResult, progress: Progress) {
    match (&r.measurement, &r.error) {
        (Some(m), _) => progress(Event::Finished(&format!(
            "[{}] {}: p50 {:.3} ms, {} samples, parity {}",
            r.runtime,
            r.id,
            m.latency.p50_ms,
            m.latency.samples,
            r.parity_label()
        ))),
        (None, Some(e)) => progress(Event::Finished(&format!("[{}] {}: {e}", r.runtime, r.id))),
        (None, None) => {}
    }
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
        progress(Event::Warning(&format!("warning: {e}")));
    }

    let shapes = group::build_shapes(&info, &opts.batches, &opts.seqs, &opts.shapes, opts.seed)?;

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
            mode: opts
                .modes
                .iter()
                .map(|m| match m {
                    LoadMode::ClosedLoop { concurrency } => format!("closed loop, {concurrency} worker(s)"),
                    LoadMode::OpenLoop { rate, arrivals, concurrency, .. } => format!(
                        "open loop, {rate}/s {arrivals:?} arrivals, {concurrency} worker(s); latency from the scheduled time"
                    ),
                })
                .collect::<Vec<_>>()
                .join("; "),
            seed: opts.seed,
            warmup_iterations: opts.measure.warmup_iters,
            warmup_time_s: opts.measure.warmup_time.as_secs_f64(),
            min_time_s: opts.measure.min_time.as_secs_f64(),
            min_samples: opts.measure.min_samples,
            max_time_s: opts.measure.max_time.as_secs_f64(),
            tolerance: opts.tolerance,
            reference_preference: "ort (CPU, fp32) when it runs, else the first runtime that produced outputs".into(),
            pinning: opts.pinning.label(),
            isolation: match &opts.isolation {
                Isolation::Process { .. } => "worker process per runtime and thread count".into(),
                Isolation::None => "in process".into(),
            },
            percentile_definition: "nearest rank on all samples; '*' (low_sample_percentiles) when fewer than 5 samples lie at or beyond it".into(),
        },
        harness_overhead: None,
        interrupted: false,
        merged_from: Vec::new(),
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

    let outputs_dir = opts.out.join(".outputs");
    if opts.isolation != Isolation::None {
        std::fs::create_dir_all(&outputs_dir).map_err(|source| CompareError::Write {
            path: outputs_dir.clone(),
            source,
        })?;
    }
    // Reference outputs per shape index: the first (runtime, variant) that produced them.
    let mut references: BTreeMap<usize, (String, Variant, Vec<HostTensor>)> = BTreeMap::new();
    let mut write_error = None;
    let mut variants = opts.variants.clone();
    variants.sort();
    variants.dedup();
    let groups: Vec<(Variant, &Box<dyn Runtime>, usize)> = variants
        .iter()
        .flat_map(|&v| {
            selected
                .iter()
                .flat_map(move |rt| opts.threads.iter().map(move |&t| (v, rt, t)))
        })
        .collect();
    let per_group = group::plan(shapes.len(), &opts.modes).len();
    progress(Event::Plan(opts.devices.len() * groups.len() * per_group));
    if opts.overhead {
        progress(Event::Status(
            "[harness] measuring its own per-iteration overhead (null runtime)",
        ));
        results.harness_overhead = Some(group::measure_overhead(opts.pinning.measuring));
    }
    // Devices this build cannot drive: every scenario on them is skipped, with the reason.
    for device in opts.devices.iter().filter(|d| d.as_str() != "cpu") {
        for (variant, rt, threads) in &groups {
            for (i, mode) in group::plan(shapes.len(), &opts.modes) {
                let mut r = group::blank_row(
                    rt.name(),
                    *variant,
                    &shapes[i].shape,
                    *threads,
                    &mode,
                    opts.tolerance,
                );
                r.device = device.clone();
                r.id = r.id.replacen("/cpu/", &format!("/{device}/"), 1);
                r.status = ScenarioStatus::Skipped;
                r.error_kind = Some("device-unavailable".into());
                r.error = Some(format!(
                    "device {device}: this build of the harness has no GPU support; only cpu runs"
                ));
                report(&r, progress);
                results.scenarios.push(r);
            }
        }
    }
    let cpu = opts.devices.iter().any(|d| d == "cpu");
    for (variant, rt, threads) in groups.into_iter().filter(|_| cpu) {
        if opts.interrupt.load(Ordering::Relaxed) {
            break;
        }
        let spec = GroupSpec {
            model: opts.model.clone(),
            runtime: rt.name().to_string(),
            variant,
            threads,
            modes: opts.modes.clone(),
            batches: opts.batches.clone(),
            seqs: opts.seqs.clone(),
            shapes: opts.shapes.clone(),
            seed: opts.seed,
            measure: opts.measure.clone(),
            tolerance: opts.tolerance,
            ort_lib: opts.ort_lib.clone(),
            pinning: opts.pinning.clone(),
            ort_profile: opts.ort_profile.clone(),
            abort_before: fault_injection(rt.name(), threads),
        };
        let mut emitted = 0usize;
        let mut handle =
            |mut row: ScenarioResult, outputs: Option<Vec<HostTensor>>, index: usize| {
                emitted += 1;
                if let Some(out) = outputs {
                    row.parity = match references.get(&index) {
                        Some((ref_name, ref_variant, want)) if *ref_variant == variant => {
                            parity::compare(&out, want, ref_name, opts.tolerance)
                        }
                        // Another precision: accuracy against the reference, judged by cosine.
                        Some((ref_name, ref_variant, want)) => parity::accuracy(
                            &out,
                            want,
                            ref_name,
                            *ref_variant,
                            opts.tolerance,
                            opts.min_cosine
                                .unwrap_or(parity::default_min_cosine(variant)),
                        ),
                        None => {
                            references.insert(index, (row.runtime.clone(), variant, out));
                            parity::Parity::reference(opts.tolerance)
                        }
                    };
                }
                report(&row, progress);
                results.scenarios.push(row);
                // On disk as soon as it is measured.
                if let Err(e) = write(&results) {
                    write_error.get_or_insert(e);
                }
            };
        let end = match &opts.isolation {
            Isolation::Process { exe } => worker::run_in_child(
                exe,
                &spec,
                &outputs_dir,
                &opts.interrupt,
                progress,
                &mut handle,
            ),
            Isolation::None => {
                run_in_thread(&spec, &files, &info, &shapes, opts, progress, &mut handle)
            }
        };
        let why = match end {
            GroupEnd::Finished => None,
            GroupEnd::Interrupted => break,
            GroupEnd::Died(how) => Some(how),
        };
        if let Some(how) = why {
            progress(Event::Warning(&format!("[{}] worker {how}", rt.name())));
            let plan = group::plan(shapes.len(), &opts.modes);
            for (k, (i, mode)) in plan.iter().enumerate().skip(emitted) {
                let mut r = group::blank_row(
                    rt.name(),
                    variant,
                    &shapes[*i].shape,
                    threads,
                    mode,
                    opts.tolerance,
                );
                r.error = Some(if k == emitted {
                    format!(
                        "the {} worker {how} during this scenario; the rows before it are kept",
                        rt.name()
                    )
                } else {
                    format!(
                        "not run: the {} worker {how} earlier in this group",
                        rt.name()
                    )
                });
                r.error_kind = Some("worker-died".into());
                results.scenarios.push(r);
            }
            write(&results)?;
        }
        if let Some(e) = write_error.take() {
            return Err(e);
        }
    }
    results.interrupted = opts.interrupt.load(Ordering::Relaxed);
    let _ = std::fs::remove_dir(&outputs_dir);
    results.finished_at = Some(now_string());
    write(&results)?;
    Ok(results)
}

/// `HARNESS_FAULT_ABORT=RUNTIME:THREADS:INDEX` makes that group's worker abort before
/// measuring scenario INDEX: how the isolation tests produce a crash on demand.
fn fault_injection(runtime: &str, threads: usize) -> Option<usize> {
    let v = std::env::var("HARNESS_FAULT_ABORT").ok()?;
    let mut it = v.split(':');
    let (r, t, i) = (it.next()?, it.next()?, it.next()?);
    (r == runtime && t.parse::<usize>().ok()? == threads)
        .then(|| i.parse().ok())
        .flatten()
}

/// A group on a thread of this process: a panic inside a runtime becomes error rows.
fn run_in_thread(
    spec: &GroupSpec,
    files: &ModelFiles,
    info: &ModelInfo,
    shapes: &[group::Shape],
    opts: &CompareOptions,
    progress: Progress,
    handle: &mut (dyn FnMut(ScenarioResult, Option<Vec<HostTensor>>, usize) + Send),
) -> GroupEnd {
    let spec = GroupSpec {
        abort_before: None,
        ..spec.clone()
    };
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            group::run_group(
                &spec,
                files,
                info,
                shapes,
                &opts.interrupt,
                progress,
                handle,
            )
        })
        .join()
    });
    match outcome {
        Ok(()) if opts.interrupt.load(Ordering::Relaxed) => GroupEnd::Interrupted,
        Ok(()) => GroupEnd::Finished,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            GroupEnd::Died(format!("panicked: {msg}"))
        }
    }
}
