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
    /// GPU settings (IO binding or end to end, TensorRT options).
    pub gpu: group::GpuSpec,
    /// Also measure each runtime behind `harness serve` (KServe v2 over HTTP, loopback),
    /// with the same inputs, and compare its answers: the serving tax.
    pub served: bool,
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

pub fn now_string() -> String {
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
    // Each device in the order given; a runtime that cannot run on a GPU device here gets
    // skipped rows that say exactly why (not compiled in, CPU build of the library, a
    // missing CUDA library, no driver), and the other rows still run.
    let runs: Vec<(runtimes::Device, Variant, &Box<dyn Runtime>, usize)> = opts
        .devices
        .iter()
        .filter_map(|d| runtimes::Device::parse(d))
        .flat_map(|d| groups.iter().map(move |&(v, rt, t)| (d, v, rt, t)))
        .collect();
    for (device, variant, rt, threads) in runs {
        if opts.interrupt.load(Ordering::Relaxed) {
            break;
        }
        if device != runtimes::Device::Cpu {
            let check = rt.check(&LoadOptions {
                device,
                ort_lib: opts.ort_lib.clone(),
                gpu: opts.gpu.options(),
                ..LoadOptions::default()
            });
            if let Availability::Unavailable { reason } = check {
                for (i, mode) in group::plan(shapes.len(), &opts.modes) {
                    let mut r = group::blank_row(
                        rt.name(),
                        variant,
                        &shapes[i].shape,
                        threads,
                        &mode,
                        opts.tolerance,
                    );
                    group::on_device(&mut r, device);
                    r.status = ScenarioStatus::Skipped;
                    r.error_kind = Some("device-unavailable".into());
                    r.error = Some(format!("{} on {}: {reason}", rt.name(), device.label()));
                    report(&r, progress);
                    results.scenarios.push(r);
                }
                write(&results)?;
                continue;
            }
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
            device: device.label(),
            gpu: opts.gpu.clone(),
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
                group::on_device(&mut r, device);
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
    let cpu = opts.devices.iter().any(|d| d == "cpu");
    if opts.served && cpu && !opts.interrupt.load(Ordering::Relaxed) {
        let variant_ok = opts.variants.contains(&Variant::Fp32);
        for rt in selected.iter().filter(|r| r.name() != "null" && variant_ok) {
            for &threads in &opts.threads {
                if opts.interrupt.load(Ordering::Relaxed) {
                    break;
                }
                served_rows(
                    opts,
                    &info,
                    &shapes,
                    rt.name(),
                    threads,
                    &references,
                    progress,
                    &mut |row| {
                        report(&row, progress);
                        results.scenarios.push(row);
                        write(&results)
                    },
                )?;
            }
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

/// A `harness serve` child on a free loopback port, stopped (SIGTERM) when dropped.
struct ServerChild {
    child: std::process::Child,
    port: u16,
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        // SIGTERM for a graceful stop; kill if it is still there after a few seconds.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(
    opts: &CompareOptions,
    runtime: &str,
    threads: usize,
    instances: usize,
) -> Result<ServerChild, String> {
    let exe = match &opts.isolation {
        Isolation::Process { exe } => exe.clone(),
        Isolation::None => {
            std::env::current_exe().map_err(|e| format!("locating the harness executable: {e}"))?
        }
    };
    let port_file = opts.out.join(format!(".served-{runtime}-t{threads}.port"));
    let _ = std::fs::remove_file(&port_file);
    let log_path = opts.out.join(format!("served-{runtime}-t{threads}.log"));
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("serve")
        .arg("--model")
        .arg(&opts.model)
        .args(["--runtime", runtime, "--name", "model"])
        .args([
            "--threads",
            &threads.to_string(),
            "--instances",
            &instances.to_string(),
        ])
        .args(["--http-port", "0", "--no-grpc", "--max-batch", "1"])
        .arg("--port-file")
        .arg(&port_file)
        // A safety net: the server stops by itself even if this process is killed.
        .args(["--shutdown-after", "6h"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    if let Some(lib) = &opts.ort_lib {
        cmd.arg("--ort-lib").arg(lib);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting harness serve: {e}"))?;
    let mut server = ServerChild { child, port: 0 };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(p) = v["http"].as_u64() {
                server.port = p as u16;
                let _ = std::fs::remove_file(&port_file);
                return Ok(server);
            }
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("harness serve exited ({status}): {}", log.trim()));
        }
        if std::time::Instant::now() > deadline || opts.interrupt.load(Ordering::Relaxed) {
            return Err("harness serve did not start listening within 120 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The served rows of one runtime: its server on loopback, KServe v2 over HTTP (binary
/// tensors), the same shapes, inputs and load modes as in-process; each shape's answer is
/// compared with the in-process reference.
#[allow(clippy::too_many_arguments)]
fn served_rows(
    opts: &CompareOptions,
    info: &ModelInfo,
    shapes: &[group::Shape],
    runtime: &str,
    threads: usize,
    references: &BTreeMap<usize, (String, Variant, Vec<HostTensor>)>,
    progress: Progress,
    emit: &mut dyn FnMut(ScenarioResult) -> Result<(), CompareError>,
) -> Result<(), CompareError> {
    use crate::net::load::{self, LoadOptions, Protocol};
    let instances = opts
        .modes
        .iter()
        .map(|m| m.concurrency())
        .max()
        .unwrap_or(1)
        .max(1);
    progress(Event::Status(&format!(
        "[{runtime}] starting harness serve ({threads} threads, {instances} instance(s))"
    )));
    let server = match start_server(opts, runtime, threads, instances) {
        Ok(s) => s,
        Err(e) => {
            for (i, mode) in group::plan(shapes.len(), &opts.modes) {
                let mut r = group::blank_row(
                    runtime,
                    Variant::Fp32,
                    &shapes[i].shape,
                    threads,
                    &mode,
                    opts.tolerance,
                );
                r.variant = "served".into();
                r.id = format!("{}/served", r.id);
                r.error = Some(format!("could not serve the model: {e}"));
                r.error_kind = Some("serve".into());
                emit(r)?;
            }
            return Ok(());
        }
    };
    for (i, sh) in shapes.iter().enumerate() {
        let lo = LoadOptions {
            batch: vec![sh.shape.batch],
            seq: vec![sh.shape.seq.unwrap_or(1)],
            overrides: sh.shape.inputs.clone(),
            modes: opts.modes.clone(),
            measure: opts.measure.clone(),
            seed: opts.seed,
            vocab: info.vocab_size.unwrap_or(2),
            metrics_url: Some(format!("http://127.0.0.1:{}/metrics", server.port)),
            label: runtime.to_string(),
            server_threads: threads,
            timeout: std::time::Duration::from_secs(60),
            local: Some(info.clone()),
            interrupt: opts.interrupt.clone(),
            ..LoadOptions::new(
                &format!("http://127.0.0.1:{}", server.port),
                Protocol::KserveHttp,
                Some("model"),
            )
        };
        // Parity first: the served answer to the very inputs the in-process rows used.
        let parity = match inputs::generate(info, &sh.shape, opts.seed) {
            Ok(inp) => {
                let target = crate::net::client::Target::parse(&lo.target, 80).ok();
                match (
                    target.map(|t| load::fetch_outputs(&lo, &t, &inp)),
                    references.get(&i),
                ) {
                    (Some(Ok(got)), Some((name, Variant::Fp32, want))) => {
                        parity::compare(&got, want, name, opts.tolerance)
                    }
                    (Some(Ok(_)), _) => parity::Parity::skipped(
                        opts.tolerance,
                        "no fp32 in-process reference for this shape",
                    ),
                    (Some(Err(e)), _) => parity::Parity::skipped(
                        opts.tolerance,
                        format!("no answer to compare: {e}"),
                    ),
                    (None, _) => parity::Parity::skipped(opts.tolerance, "bad target"),
                }
            }
            Err(e) => parity::Parity::skipped(opts.tolerance, e.to_string()),
        };
        let mut failed: Option<CompareError> = None;
        let mut k = 0usize;
        let r = load::run_load(&lo, &mut |mut row| {
            let tag = lo.modes.get(k).map(group::mode_tag).unwrap_or_default();
            k += 1;
            row.variant = "served".into();
            row.device = "cpu".into();
            row.id = format!(
                "{}/served/{tag}",
                scenario_base(runtime, &sh.shape, threads)
            );
            row.parity = parity.clone();
            if failed.is_none() {
                if let Err(e) = emit(row) {
                    failed = Some(e);
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if let Err(e) = r {
            progress(Event::Warning(&format!("[{runtime}] served: {e}")));
        }
    }
    drop(server);
    Ok(())
}

fn scenario_base(runtime: &str, shape: &inputs::ScenarioShape, threads: usize) -> String {
    match shape.seq {
        Some(s) => format!("{runtime}/cpu/fp32/b{}/s{s}/t{threads}", shape.batch),
        None => format!("{runtime}/cpu/fp32/b{}/t{threads}", shape.batch),
    }
}
