//! `harness compare`: one model, every selected runtime, the same inputs, parity, then the
//! measurement of each (runtime, threads, shape) scenario. Each group (runtime x threads)
//! runs in a worker process by default, so an abort loses only that group's unfinished
//! rows. Results are written after every scenario; Ctrl-C ends the run with everything
//! finished so far saved. A runtime that cannot load or run is a row with its error; the
//! others go on.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use runtimes::{Availability, LoadOptions, ModelFiles, ModelInfo, Runtime, Variant};

use super::group::{self, GroupSpec, Output, Shape};
use super::reference::References;
use super::runlog::RunLog;
use super::served::ServedPlan;
use super::worker::{self, GroupEnd};
use super::{Event, Overrun, Pinning, Progress, Row, Watch};
use crate::inputs;
use crate::measure::{LoadMode, MeasureConfig};
use crate::results::{
    ModelSummary, Results, RuntimeStatus, RuntimeVersion, ScenarioResult, Tolerance,
};

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
    /// Devices; those this build cannot drive are listed as skipped.
    pub devices: Vec<runtimes::Device>,
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
    /// What particular runtimes take (ONNX Runtime's library and profiler, GPU settings).
    pub runtime_options: runtimes::RuntimeOptions,
    pub out: PathBuf,
    pub pinning: Pinning,
    /// Measure the harness's own per-iteration cost with the null runtime.
    pub overhead: bool,
    /// How long each phase of a group may take (see `GroupSpec::phase_timeout`).
    pub phase_timeout: std::time::Duration,
    pub isolation: Isolation,
    /// Set (by a SIGINT handler) to end the run early, keeping what was measured.
    pub interrupt: Arc<AtomicBool>,
    /// Also measure each runtime behind `harness serve` (KServe v2 over HTTP, loopback),
    /// with the same inputs, and compare its answers: the serving tax.
    pub served: bool,
    /// After each closed-loop row (in-process and served), search the highest open-loop
    /// rate that meets these objectives over the same workers or connections.
    pub find_max_rate: Option<crate::capacity::FindMaxRate>,
    /// Run only this part of the sweep (`--shard K/N`).
    pub shard: Option<crate::shard::Shard>,
    /// Resume the run whose results these are (`--resume`, `out` is its folder): its rows
    /// that were measured (or cannot run here) are kept and not run again; the others
    /// (failed, interrupted, missing) are.
    pub resume: Option<Box<Results>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Model(#[from] runtimes::model::ModelError),
    #[error(transparent)]
    Input(#[from] inputs::InputError),
    #[error("unknown runtime '{0}' (known: {known})", known = runtimes::names().join(", "))]
    UnknownRuntime(String),
    #[error("--threads must be at least 1")]
    ZeroThreads,
    #[error(transparent)]
    Write(#[from] super::runlog::WriteError),
}

/// One progress line per finished scenario.
pub fn report(r: &ScenarioResult, progress: Progress) {
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

/// The selected runtimes, each once, the preferred parity reference first.
fn select_runtimes(names: &[String]) -> Result<Vec<Box<dyn Runtime>>, CompareError> {
    let mut selected: Vec<Box<dyn Runtime>> = Vec::new();
    for n in names {
        let rt = runtimes::by_name(n).ok_or_else(|| CompareError::UnknownRuntime(n.clone()))?;
        if !selected.iter().any(|s| s.name() == rt.name()) {
            selected.push(rt);
        }
    }
    selected.sort_by_key(|r| !r.capabilities().reference);
    Ok(selected)
}

/// Each selected runtime's availability on the CPU, for the results and the environment.
fn statuses(
    selected: &[Box<dyn Runtime>],
    options: &runtimes::RuntimeOptions,
) -> (Vec<RuntimeStatus>, Vec<RuntimeVersion>) {
    let load_opts = LoadOptions {
        runtime: options.clone(),
        ..LoadOptions::default()
    };
    selected
        .iter()
        .map(|rt| {
            let (ready, version, detail) = match rt.check(&load_opts) {
                Availability::Ready { version, detail } => (true, Some(version), detail),
                Availability::Unavailable { reason } => (false, None, reason),
            };
            (
                RuntimeStatus {
                    name: rt.name().into(),
                    ready,
                    version: version.clone(),
                    detail: detail.clone(),
                },
                RuntimeVersion {
                    runtime: rt.name().into(),
                    version,
                    detail,
                },
            )
        })
        .unzip()
}

fn model_summary(files: &ModelFiles, info: &ModelInfo) -> ModelSummary {
    ModelSummary {
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
        export: export_manifest(&files.path),
    }
}

/// The export's manifest beside the model, less its reference tensors.
fn export_manifest(path: &std::path::Path) -> Option<serde_json::Value> {
    let dir = if path.is_dir() { path } else { path.parent()? };
    let text = std::fs::read_to_string(dir.join("manifest.json")).ok()?;
    let mut v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let o = v.as_object_mut()?;
    o.remove("reference");
    o.remove("inputs");
    o.remove("outputs");
    Some(v)
}

/// One group of the plan: a device, a variant, a runtime, a thread count.
struct GroupPlan<'a> {
    device: runtimes::Device,
    variant: Variant,
    runtime: &'a dyn Runtime,
    threads: usize,
}

fn plan_groups<'a>(opts: &CompareOptions, selected: &'a [Box<dyn Runtime>]) -> Vec<GroupPlan<'a>> {
    let mut variants = opts.variants.clone();
    variants.sort();
    variants.dedup();
    let mut groups = Vec::new();
    for &device in &opts.devices {
        for &variant in &variants {
            for rt in selected {
                for &threads in &opts.threads {
                    groups.push(GroupPlan {
                        device,
                        variant,
                        runtime: rt.as_ref(),
                        threads,
                    });
                }
            }
        }
    }
    groups
}

impl GroupPlan<'_> {
    fn spec(&self, opts: &CompareOptions) -> GroupSpec {
        GroupSpec {
            model: opts.model.clone(),
            runtime: self.runtime.name().to_string(),
            variant: self.variant,
            threads: self.threads,
            modes: opts.modes.clone(),
            batches: opts.batches.clone(),
            seqs: opts.seqs.clone(),
            shapes: opts.shapes.clone(),
            seed: opts.seed,
            measure: opts.measure.clone(),
            tolerance: opts.tolerance,
            pinning: opts.pinning.clone(),
            abort_before: fault_injection("HARNESS_FAULT_ABORT", self.runtime.name(), self.threads)
                .and_then(|i| i.parse().ok()),
            panic_before: fault_injection("HARNESS_FAULT_PANIC", self.runtime.name(), self.threads)
                .and_then(|i| i.parse().ok()),
            hang_in: fault_injection("HARNESS_FAULT_HANG", self.runtime.name(), self.threads),
            phase_timeout: opts.phase_timeout,
            device: self.device.label(),
            runtime_options: opts.runtime_options.clone(),
            budget: None,
            find_max_rate: opts.find_max_rate.clone(),
            only: None,
            reference_for: Vec::new(),
        }
    }

    /// Why this runtime cannot use this GPU here (not compiled in, CPU build of the
    /// library, a missing CUDA library, no driver); None on the CPU or when it can.
    fn device_unavailable(&self, opts: &CompareOptions) -> Option<String> {
        if self.device == runtimes::Device::Cpu {
            return None;
        }
        let check = self.runtime.check(&LoadOptions {
            device: self.device,
            runtime: opts.runtime_options.clone(),
            ..LoadOptions::default()
        });
        match check {
            Availability::Unavailable { reason } => Some(format!(
                "{} on {}: {reason}",
                self.runtime.name(),
                self.device.label()
            )),
            Availability::Ready { .. } => None,
        }
    }
}

pub fn compare(opts: &CompareOptions, progress: Progress) -> Result<Results, CompareError> {
    let started = std::time::Instant::now();
    if opts.threads.contains(&0) {
        return Err(CompareError::ZeroThreads);
    }
    let selected = select_runtimes(&opts.runtimes)?;
    let files = ModelFiles::resolve(&opts.model)?;
    let info = ModelInfo::read(&files)?;
    if let Some(e) = &info.onnx_error {
        progress(Event::Warning(&format!("warning: {e}")));
    }
    let shapes = group::build_shapes(&info, &opts.batches, &opts.seqs, &opts.shapes, opts.seed)?;

    let groups = plan_groups(opts, &selected);
    let per_group = group::plan(shapes.len(), &opts.modes).len();
    let served_pairs = served_count(opts, &selected);
    let keep = Keep::new(opts, &files, &shapes, &groups, served_pairs > 0);
    // Each group's rows (all of the plan, or those this shard or resumed run still needs).
    let only: Vec<Option<Vec<usize>>> = groups
        .iter()
        .map(|g| keep.rows(&g.spec(opts), &shapes))
        .collect();
    // A resumed run whose reference rows were kept: the first group (the reference
    // runtime) still computes those shapes' outputs, once each, for the rows run again.
    let served_shapes: Vec<usize> = if served_pairs > 0 {
        selected
            .iter()
            .filter(|r| r.capabilities().computes)
            .flat_map(|r| opts.threads.iter().map(move |&t| (r.name(), t)))
            .flat_map(|(name, t)| {
                let rows = keep.served_rows(name, t, &shapes, &opts.modes);
                group::shapes_of(rows.as_deref(), shapes.len(), &opts.modes)
            })
            .collect()
    } else {
        Vec::new()
    };
    let reference_for = keep.reference_for(&only, &served_shapes, &shapes, &opts.modes);
    let rows_of = |o: &Option<Vec<usize>>| o.as_ref().map_or(per_group, Vec::len);
    let served = served_pairs * per_group;
    let planned = only.iter().map(rows_of).sum::<usize>() + served;
    // The budget's total, now that the scenarios are counted.
    let opts = &CompareOptions {
        measure: opts.measure.for_scenarios(planned),
        ..opts.clone()
    };
    let mut log = start_log(opts, &files, &info, &selected)?;
    let outputs_dir = opts.out.join(".outputs");
    if opts.isolation != Isolation::None {
        log.create_dir(&outputs_dir)?;
    }
    progress(Event::Plan(only.iter().map(rows_of).sum()));
    // What is left of --budget, and the scenarios left to share it, after `done` of them.
    let budget = |done: usize| {
        opts.measure.budget.map(|b| crate::measure::Budget {
            left: b.saturating_sub(started.elapsed()),
            scenarios: planned.saturating_sub(done),
        })
    };
    if opts.overhead {
        progress(Event::Status(
            "[harness] measuring its own per-iteration overhead (null runtime)",
        ));
        log.results.harness_overhead = Some(super::measure_overhead(opts.pinning.measuring));
    }
    let mut references = References::new(opts.tolerance, opts.min_cosine);
    let mut done = 0;
    for (k, (g, only)) in groups.iter().zip(&only).enumerate() {
        if opts.interrupt.load(Ordering::Relaxed) {
            break;
        }
        let references_only = if k == 0 {
            reference_for.clone()
        } else {
            Vec::new()
        };
        if only.as_ref().is_some_and(Vec::is_empty) && references_only.is_empty() {
            continue;
        }
        let end = run_one_group(
            opts,
            g,
            (only.clone(), references_only),
            budget(done),
            &files,
            &info,
            &shapes,
            &outputs_dir,
            &mut references,
            &mut log,
            progress,
        )?;
        done += rows_of(only);
        if end == GroupEnd::Interrupted {
            break;
        }
    }
    if opts.served {
        served_rows(
            opts,
            &selected,
            &info,
            &shapes,
            &references,
            &keep,
            &mut log,
            progress,
            &|k| budget(done + k * per_group),
        )?;
    }
    let _ = std::fs::remove_dir(&outputs_dir);
    Ok(log.finish(opts.interrupt.load(Ordering::Relaxed))?)
}

/// The results folder with its header: the environment, the model, the settings, and each
/// selected runtime's availability.
fn start_log(
    opts: &CompareOptions,
    files: &ModelFiles,
    info: &ModelInfo,
    selected: &[Box<dyn Runtime>],
) -> Result<RunLog, CompareError> {
    if let Some(r) = &opts.resume {
        return Ok(RunLog::resume(&opts.out, (**r).clone(), is_done)?);
    }
    let (statuses, versions) = statuses(selected, &opts.runtime_options);
    let settings = crate::results::Settings {
        shard: opts.shard.map(|s| s.to_string()),
        ..super::runlog::settings(
            LoadMode::describe_all(&opts.modes, "worker"),
            opts.seed,
            &opts.measure,
            opts.tolerance,
            "ort (CPU, fp32) when it runs, else the first runtime that produced outputs",
            opts.pinning.label(),
            match &opts.isolation {
                Isolation::Process { .. } => "worker process per runtime and thread count",
                Isolation::None => "in process",
            },
        )
    };
    Ok(RunLog::create(
        &opts.out,
        model_summary(files, info),
        settings,
        versions,
        statuses,
    )?)
}

/// The served rows (`--served`): each computing runtime at each thread count behind
/// `harness serve`, fp32 on the CPU, judged against the in-process references.
#[allow(clippy::too_many_arguments)]
fn served_rows(
    opts: &CompareOptions,
    selected: &[Box<dyn Runtime>],
    info: &ModelInfo,
    shapes: &[Shape],
    references: &References,
    keep: &Keep,
    log: &mut RunLog,
    progress: Progress,
    budget: &dyn Fn(usize) -> Option<crate::measure::Budget>,
) -> Result<(), CompareError> {
    if served_count(opts, selected) == 0 {
        return Ok(());
    }
    let mut done = 0;
    for rt in selected.iter().filter(|r| r.capabilities().computes) {
        for &threads in &opts.threads {
            if opts.interrupt.load(Ordering::Relaxed) {
                return Ok(());
            }
            let plan = ServedPlan {
                exe: match &opts.isolation {
                    Isolation::Process { exe } => Some(exe.clone()),
                    Isolation::None => None,
                },
                model: &opts.model,
                out: &opts.out,
                runtime_options: &opts.runtime_options,
                modes: &opts.modes,
                measure: &opts.measure,
                seed: opts.seed,
                tolerance: opts.tolerance,
                interrupt: &opts.interrupt,
                runtime: rt.name(),
                threads,
                budget: budget(done),
                find_max_rate: opts.find_max_rate.as_ref(),
                only: keep.served_rows(rt.name(), threads, shapes, &opts.modes),
            };
            done += 1;
            if plan.only.as_ref().is_some_and(Vec::is_empty) {
                continue;
            }
            let extras = plan.rows(info, shapes, references, progress, &mut |row| {
                report(&row, progress);
                log.push(row)
            })?;
            if !extras.capacity.is_empty() || !extras.interleaved.is_empty() {
                log.results.capacity.extend(extras.capacity);
                log.results.interleaved_tax.extend(extras.interleaved);
                log.write()?;
            }
        }
    }
    Ok(())
}

/// How many runtime x threads pairs `--served` measures (each with every shape and mode):
/// the computing runtimes, fp32 on the CPU.
fn served_count(opts: &CompareOptions, selected: &[Box<dyn Runtime>]) -> usize {
    if !opts.served
        || !opts.devices.contains(&runtimes::Device::Cpu)
        || !opts.variants.contains(&Variant::Fp32)
    {
        return 0;
    }
    selected
        .iter()
        .filter(|r| r.capabilities().computes)
        .count()
        * opts.threads.len()
}

/// Runs one group (in a worker process or on a thread), judging and saving each row as it
/// comes; a device the runtime cannot use here, or a worker that died, gives rows that say
/// so, and the run goes on.
#[allow(clippy::too_many_arguments)]
fn run_one_group(
    opts: &CompareOptions,
    g: &GroupPlan,
    (only, reference_for): (Option<Vec<usize>>, Vec<usize>),
    budget: Option<crate::measure::Budget>,
    files: &ModelFiles,
    info: &ModelInfo,
    shapes: &[Shape],
    outputs_dir: &std::path::Path,
    references: &mut References,
    log: &mut RunLog,
    progress: Progress,
) -> Result<GroupEnd, CompareError> {
    let spec = GroupSpec {
        budget,
        only,
        reference_for,
        ..g.spec(opts)
    };
    let plan = group::planned(spec.only.as_deref(), shapes.len(), &spec.modes);
    if let Some(reason) = g.device_unavailable(opts) {
        for (i, mode) in &plan {
            let mut r = group::blank_row(&spec, &shapes[*i].shape, mode);
            Row::fail(&mut r, reason.clone(), "device-unavailable", true);
            report(&r, progress);
            log.push(r)?;
        }
        return Ok(GroupEnd::Finished);
    }
    // The log is shared with the in-process watchdog, which writes the rows of a group
    // that passed its deadline before the run ends.
    let saved = std::sync::Mutex::new(Saved {
        log,
        emitted: 0,
        write_error: None,
    });
    let name = g.runtime.name();
    let lost_rows = |end: &GroupEnd| -> Result<(), super::runlog::WriteError> {
        // What happened, and the words for the row it happened in and for those after it.
        let (how, first, later, kind) = match end {
            GroupEnd::Died(how) => {
                let how = format!("the {name} worker {how}");
                (
                    how.clone(),
                    format!("{how} during this scenario; the rows before it are kept"),
                    format!("not run: {how} earlier in this group"),
                    "worker-died",
                )
            }
            GroupEnd::TimedOut(late) => {
                let stopped = match opts.isolation {
                    Isolation::Process { .. } => "its worker was stopped",
                    Isolation::None => "the run ended here (a thread cannot be stopped)",
                };
                let how = format!("{name} {late}");
                (
                    format!("{how}; {stopped}"),
                    format!("{how}; {stopped}; the rows before this one are kept"),
                    format!("not run: {name} passed a phase deadline earlier in this group"),
                    "timeout",
                )
            }
            GroupEnd::Finished | GroupEnd::Interrupted => return Ok(()),
        };
        progress(Event::Warning(&format!("[{name}] {how}")));
        let mut saved = saved.lock().unwrap_or_else(|p| p.into_inner());
        for (k, (i, mode)) in plan.iter().enumerate().skip(saved.emitted) {
            let mut r = group::blank_row(&spec, &shapes[*i].shape, mode);
            let message = if k == saved.emitted {
                first.clone()
            } else {
                later.clone()
            };
            Row::fail(&mut r, message, kind, false);
            saved.log.push(r)?;
        }
        Ok(())
    };
    let mut handle = |out: Output| {
        let (row, planned) = match out {
            Output::Row(mut row, outputs, index) => {
                if let Some(out) = outputs {
                    row.parity = references.judge(&row.runtime, g.variant, index, out);
                }
                (row, true)
            }
            Output::Probe(row) => (row, false),
            Output::Reference(outputs, index) => {
                references.judge(g.runtime.name(), g.variant, index, outputs);
                return;
            }
            Output::Capacity(search) => {
                let mut saved = saved.lock().unwrap_or_else(|p| p.into_inner());
                saved.log.results.capacity.push(search);
                if let Err(e) = saved.log.write() {
                    saved.write_error.get_or_insert(e);
                }
                return;
            }
        };
        report(&row, progress);
        let mut saved = saved.lock().unwrap_or_else(|p| p.into_inner());
        // Probes are rows beyond the plan: a worker lost later loses planned rows only.
        saved.emitted += planned as usize;
        // On disk as soon as it is measured.
        if let Err(e) = saved.log.push(row) {
            saved.write_error.get_or_insert(e);
        }
    };
    let end = match &opts.isolation {
        Isolation::Process { exe } => worker::run_in_child(
            exe,
            &spec,
            outputs_dir,
            &opts.interrupt,
            progress,
            &mut handle,
        ),
        Isolation::None => {
            // A thread cannot be stopped: a runtime in this process that passes its
            // deadline ends the run, with its rows written first.
            let stuck = |late: Overrun| {
                let end = GroupEnd::TimedOut(late);
                let written = lost_rows(&end).and_then(|()| {
                    let mut saved = saved.lock().unwrap_or_else(|p| p.into_inner());
                    saved.log.results.interrupted = true;
                    saved.log.write()
                });
                if let Err(e) = written {
                    eprintln!("harness: {e}");
                }
                eprintln!(
                    "harness: {name} cannot be stopped inside this process (--isolate none), so the run ends here with the rows so far in {}; with --isolate process (the default) only that runtime's worker is stopped",
                    opts.out.display()
                );
                std::process::exit(1)
            };
            run_in_thread(
                &spec,
                files,
                info,
                shapes,
                opts,
                progress,
                &mut handle,
                &stuck,
            )
        }
    };
    let write_error = saved
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .write_error
        .take();
    if let Some(e) = write_error {
        return Err(e.into());
    }
    lost_rows(&end)?;
    Ok(end)
}

/// A group's rows on their way to disk.
struct Saved<'a> {
    log: &'a mut RunLog,
    /// Rows of the plan already written.
    emitted: usize,
    write_error: Option<super::runlog::WriteError>,
}

/// Fault injection, `VAR=RUNTIME:THREADS:WHAT`, for this group: `HARNESS_FAULT_ABORT` and
/// `HARNESS_FAULT_PANIC` make its worker abort or panic before measuring scenario WHAT (an
/// index), `HARNESS_FAULT_HANG` hang forever in phase WHAT (`load`, `prepare`, `measure`,
/// `finish`): how the isolation and deadline tests produce a crash or a hang on demand.
fn fault_injection(var: &str, runtime: &str, threads: usize) -> Option<String> {
    let v = std::env::var(var).ok()?;
    let mut it = v.split(':');
    let (r, t, what) = (it.next()?, it.next()?, it.next()?);
    (r == runtime && t.parse::<usize>().ok()? == threads).then(|| what.to_string())
}

/// A group on a thread of this process: a panic inside a runtime becomes error rows; a
/// phase past its deadline calls `stuck`, which ends the process.
#[allow(clippy::too_many_arguments)]
fn run_in_thread(
    spec: &GroupSpec,
    files: &ModelFiles,
    info: &ModelInfo,
    shapes: &[Shape],
    opts: &CompareOptions,
    progress: Progress,
    handle: &mut (dyn FnMut(Output) + Send),
    stuck: &(dyn Fn(Overrun) + Sync),
) -> GroupEnd {
    let spec = GroupSpec {
        abort_before: None,
        panic_before: None,
        ..spec.clone()
    };
    let watch = std::sync::Mutex::new(Watch::start(spec.phase_timeout));
    let watched = |e: Event| match e {
        Event::Phase(phase, within) => watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .enter(phase, within),
        e => progress(e),
    };
    let outcome = std::thread::scope(|s| {
        let group = s.spawn(|| {
            group::run_group(
                &spec,
                files,
                info,
                shapes,
                &opts.interrupt,
                &watched,
                handle,
            )
        });
        while !group.is_finished() {
            let late = watch.lock().unwrap_or_else(|p| p.into_inner()).overrun();
            if let Some(late) = late {
                stuck(late);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        group.join()
    });
    match outcome {
        Ok(()) if opts.interrupt.load(Ordering::Relaxed) => GroupEnd::Interrupted,
        Ok(()) => GroupEnd::Finished,
        Err(panic) => GroupEnd::Died(format!("panicked: {}", runtimes::panic_message(&*panic))),
    }
}

/// Which rows of the plan this run measures: a shard's units (`--shard`), less the rows a
/// resumed run already holds (`--resume`).
struct Keep {
    /// Per plan index (shape x mode): in this shard.
    in_shard: Option<Vec<bool>>,
    /// Ids of the rows kept from the resumed run.
    done: std::collections::BTreeSet<String>,
}

impl Keep {
    fn new(
        opts: &CompareOptions,
        files: &ModelFiles,
        shapes: &[Shape],
        groups: &[GroupPlan],
        served: bool,
    ) -> Keep {
        let in_shard = opts.shard.map(|shard| {
            let model_bytes = [&files.onnx, &files.safetensors]
                .into_iter()
                .flatten()
                .find_map(|p| std::fs::metadata(p).ok())
                .map_or(0, |m| m.len());
            let units = group::plan(shapes.len(), &opts.modes);
            let costs: Vec<f64> = units
                .iter()
                .map(|(i, mode)| {
                    let shape = &shapes[*i].shape;
                    let row = |threads| {
                        crate::shard::row_seconds(
                            &opts.measure,
                            model_bytes,
                            shape.batch,
                            shape.seq,
                            threads,
                            mode,
                        )
                    };
                    let in_process: f64 = groups.iter().map(|g| row(g.threads)).sum();
                    let served: f64 = if served {
                        opts.threads.iter().map(|&t| row(t)).sum()
                    } else {
                        0.0
                    };
                    in_process + served
                })
                .collect();
            crate::shard::assign(&costs, shard.count)
                .into_iter()
                .map(|k| k == shard.index)
                .collect()
        });
        let done = opts
            .resume
            .as_ref()
            .map(|r| {
                r.scenarios
                    .iter()
                    .filter(|s| is_done(s))
                    .map(|s| s.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        Keep { in_shard, done }
    }

    fn active(&self) -> bool {
        self.in_shard.is_some() || !self.done.is_empty()
    }

    /// Whether a row (plan index `k`, id `id`) is measured by this run.
    fn keeps(&self, k: usize, id: &str) -> bool {
        self.in_shard.as_ref().is_none_or(|s| s[k]) && !self.done.contains(id)
    }

    /// The rows of a plan over `shapes` and `modes` this run measures, by plan index, each
    /// named by `id`; None: all of them.
    fn indices(
        &self,
        shapes: &[Shape],
        modes: &[LoadMode],
        id: impl Fn(&inputs::ScenarioShape, &LoadMode) -> String,
    ) -> Option<Vec<usize>> {
        if !self.active() {
            return None;
        }
        let plan = group::plan(shapes.len(), modes);
        Some(
            plan.iter()
                .enumerate()
                .filter(|(k, (i, mode))| self.keeps(*k, &id(&shapes[*i].shape, mode)))
                .map(|(k, _)| k)
                .collect(),
        )
    }

    /// A group's rows, by plan index; None: all of them.
    fn rows(&self, spec: &GroupSpec, shapes: &[Shape]) -> Option<Vec<usize>> {
        self.indices(shapes, &spec.modes, |shape, mode| {
            group::row_id(spec, shape, mode).to_string()
        })
    }

    /// The served rows of one runtime at one thread count, by plan index; None: all.
    fn served_rows(
        &self,
        runtime: &str,
        threads: usize,
        shapes: &[Shape],
        modes: &[LoadMode],
    ) -> Option<Vec<usize>> {
        self.indices(shapes, modes, |shape, mode| {
            super::served::served_id(runtime, threads, shape, mode).to_string()
        })
    }

    /// The shapes the first group runs no row of, while another group (or a served row)
    /// runs one: the first group computes their reference outputs all the same.
    fn reference_for(
        &self,
        only: &[Option<Vec<usize>>],
        served: &[usize],
        shapes: &[Shape],
        modes: &[LoadMode],
    ) -> Vec<usize> {
        let Some((first, others)) = only.split_first() else {
            return Vec::new();
        };
        if self.done.is_empty() {
            return Vec::new();
        }
        let shapes_of =
            |o: &Option<Vec<usize>>| group::shapes_of(o.as_deref(), shapes.len(), modes);
        let first = shapes_of(first);
        let mut wanted: Vec<usize> = others.iter().flat_map(shapes_of).collect();
        // Served rows are judged against the references too.
        wanted.extend_from_slice(served);
        wanted.sort_unstable();
        wanted.dedup();
        wanted.retain(|i| !first.contains(i));
        wanted
    }
}

/// A row a resumed run keeps: measured to its end, or one that cannot run here (a shape
/// beyond the model, a device this build lacks). Failed, errored and interrupted rows are
/// run again.
pub fn is_done(s: &ScenarioResult) -> bool {
    use crate::results::{ScenarioStatus, StopReason};
    match s.status {
        ScenarioStatus::Ok => s
            .measurement
            .as_ref()
            .is_some_and(|m| m.stop_reason != StopReason::Interrupted),
        ScenarioStatus::Skipped => true,
        ScenarioStatus::Failed | ScenarioStatus::Error => false,
    }
}
