//! The typed plan: command-line arguments turned into validated options before any work
//! starts. Bad values are errors here, naming the flag, and nothing runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::cli::{self, CompareArgs, LoadArgs, ServeArgs};
use crate::engine::compare::{CompareOptions, Isolation};
use crate::engine::runlog::default_out_dir;
use crate::engine::Pinning;
use crate::measure::{LoadMode, MeasureConfig};
use crate::net;
use crate::results::{Slo, Tolerance};
use crate::Error;

/// A repeated flag appends; the same value twice measures nothing new.
fn dedup<T: PartialEq + Clone>(v: &[T]) -> Vec<T> {
    let mut seen: Vec<T> = Vec::new();
    for x in v {
        if !seen.contains(x) {
            seen.push(x.clone());
        }
    }
    seen
}

fn absolute(p: &Path) -> PathBuf {
    std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// Closed loop at each --concurrency, or, with --rate, open loop at each rate x concurrency.
pub fn load_modes(a: &cli::TrafficArgs, seed: u64) -> Vec<LoadMode> {
    let conc = dedup(&a.concurrency);
    if a.rate.is_empty() {
        return conc
            .into_iter()
            .map(|concurrency| LoadMode::ClosedLoop { concurrency })
            .collect();
    }
    let (arrivals, ramp_s) = (a.arrivals, a.ramp);
    a.rate
        .iter()
        .flat_map(|&rate| {
            conc.iter().map(move |&concurrency| LoadMode::OpenLoop {
                rate,
                arrivals,
                concurrency,
                seed,
                ramp_s,
            })
        })
        .collect()
}

/// `harness compare`'s options. `interrupt` is what Ctrl-C sets.
pub fn compare(a: &CompareArgs, interrupt: Arc<AtomicBool>) -> Result<CompareOptions, Error> {
    let shapes = a
        .shapes
        .iter()
        .map(|s| crate::inputs::parse_shape_arg(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadInput(e.to_string()))?;
    let threads = if a.threads.is_empty() {
        vec![runtimes::online_cpus()]
    } else {
        dedup(&a.threads)
    };
    let pinning = Pinning::parse(&a.pin, runtimes::online_cpus()).map_err(Error::BadInput)?;
    let resume = a
        .resume
        .as_deref()
        .map(|dir| resumable(dir, a))
        .transpose()?;
    let out = match &a.resume {
        Some(dir) => dir.clone(),
        None => a.out.clone().unwrap_or_else(default_out_dir),
    };
    Ok(CompareOptions {
        shard: a.shard,
        resume: resume.map(Box::new),
        model: a.model.clone(),
        runtimes: if a.runtimes.is_empty() {
            runtimes::all()
                .iter()
                .filter(|r| r.capabilities().computes)
                .map(|r| r.name().to_string())
                .collect()
        } else {
            dedup(&a.runtimes)
        },
        batches: dedup(&a.batch),
        seqs: dedup(&a.seq),
        shapes,
        threads,
        devices: dedup(&a.devices),
        runtime_options: runtimes::RuntimeOptions {
            ort_lib: a.ort_lib.clone(),
            ort_profile_dir: a.ort_profile.then(|| absolute(&out.join("ort-profile"))),
            gpu: runtimes::GpuOptions {
                copies_timed: a.gpu_copies,
                trt_fp16: a.trt_fp16,
                trt_cache: Some(absolute(
                    &a.trt_cache.clone().unwrap_or_else(|| out.join("trt-cache")),
                )),
                trt_workspace: a.trt_workspace,
            },
            // In-process rows keep ONNX Runtime's default; `--served` passes its own to the
            // server it starts.
            ort_spinning: None,
        },
        variants: a.variants.clone(),
        modes: load_modes(&a.traffic, a.seed),
        min_cosine: a.min_cosine,
        measure: a.timing.config(),
        seed: a.seed,
        tolerance: Tolerance {
            atol: a.atol,
            rtol: a.rtol,
        },
        out,
        pinning,
        overhead: !a.no_overhead,
        phase_timeout: a.phase_timeout,
        isolation: match a.isolate {
            cli::IsolateMode::Process => Isolation::Process {
                exe: std::env::current_exe().map_err(|e| {
                    Error::BadInput(format!(
                        "locating the harness executable for its workers: {e}"
                    ))
                })?,
            },
            cli::IsolateMode::None => Isolation::None,
        },
        interrupt,
        served: a.served,
        find_max_rate: match (a.find_max_rate, a.slo.as_deref()) {
            (false, _) => None,
            (true, slo) => Some(crate::capacity::FindMaxRate {
                objectives: crate::capacity::parse_objectives(slo.unwrap_or(""))
                    .map_err(|e| Error::BadInput(format!("--find-max-rate needs --slo: {e}")))?,
                arrivals: a.traffic.arrivals,
            }),
        },
    })
}

/// The results a `--resume` continues: a `harness compare` run of the same model, inputs and
/// shard, measured on this machine.
fn resumable(dir: &Path, a: &CompareArgs) -> Result<crate::results::Results, Error> {
    let r = crate::results::Results::read(dir).map_err(|e| {
        Error::BadInput(format!(
            "--resume {}: {e}; give the folder of an earlier `harness compare` run",
            dir.display()
        ))
    })?;
    let refuse = |why: String| Error::BadInput(format!("--resume {}: {why}", dir.display()));
    if !r.merged_from.is_empty() {
        return Err(refuse(
            "these results were merged by `harness report`; resume one of the runs merged".into(),
        ));
    }
    let same_model = |p: &Path| std::fs::canonicalize(p).ok();
    if same_model(&r.model.path) != same_model(&a.model) || same_model(&a.model).is_none() {
        return Err(refuse(format!(
            "it measured {}, not {}; resume with the same --model",
            r.model.path.display(),
            a.model.display()
        )));
    }
    if r.settings.seed != a.seed {
        return Err(refuse(format!(
            "it ran with --seed {}, not {}: its inputs would differ; resume with the same flags",
            r.settings.seed, a.seed
        )));
    }
    // Rows measured with idle CPUs polling and with them halting do not belong in one run.
    let asked = crate::cpu_idle::asked(r.environment.cpu_idle.as_deref());
    if asked != a.timing.cpu_idle {
        return Err(refuse(format!(
            "it ran with --cpu-idle {} ({}), this run would use --cpu-idle {}: rows with idle \
             CPUs polling and rows with them halting do not belong in one run; resume with \
             --cpu-idle {}",
            asked.name(),
            r.environment
                .cpu_idle
                .as_deref()
                .unwrap_or("not recorded: an earlier version of the harness, which left them"),
            a.timing.cpu_idle.name(),
            asked.name()
        )));
    }
    let shard = a.shard.map(|s| s.to_string());
    if r.settings.shard != shard {
        return Err(refuse(format!(
            "it ran {}, this run would be {}; resume with the same --shard",
            r.settings
                .shard
                .as_deref()
                .map_or("the whole sweep".into(), |s| format!("shard {s}")),
            shard
                .as_deref()
                .map_or("the whole sweep".into(), |s| format!("shard {s}"))
        )));
    }
    let here = crate::environment::machine(&crate::environment::machine_here());
    let there = crate::environment::machine(&r.environment);
    if here != there {
        return Err(refuse(format!(
            "it was measured on another machine ({there}; this is {here}): one run holds one machine's figures; run a new --out here and merge both with `harness report`"
        )));
    }
    Ok(r)
}

/// `harness load`'s options.
pub fn load(a: &LoadArgs, interrupt: Arc<AtomicBool>) -> Result<net::load::LoadOptions, Error> {
    let (slo, objectives) = split_slo(a.slo.as_deref())?;
    if a.find_max_rate && objectives.is_empty() {
        return Err(Error::BadInput(
            "--find-max-rate needs a latency percentile or error-rate objective in --slo, e.g. --slo p99:20ms or --slo p99:50ms,errors:1%".into(),
        ));
    }
    let trace = a
        .trace
        .as_deref()
        .map(|p| crate::traffic::load_trace(p, a.trace_speed))
        .transpose()
        .map_err(|e| Error::BadInput(format!("--trace {e}")))?
        .map(Arc::new);
    let modes = match &trace {
        Some(t) => dedup(&a.traffic.concurrency)
            .into_iter()
            .map(|concurrency| LoadMode::Replay {
                file: t.source.clone(),
                speed: a.trace_speed,
                requests: t.entries.len() as u64,
                duration_s: t.duration_ns() as f64 / 1e9,
                concurrency,
            })
            .collect(),
        None => load_modes(&a.traffic, a.seed),
    };
    if let Some(pid) = a.server_pid {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(Error::BadInput(format!(
                "--server-pid {pid}: no such process on this machine; give the server's process id (e.g. from `pgrep -f NAME`), or leave the option out for a remote server"
            )));
        }
    }
    let protocol = net::load::by_name(&a.protocol).ok_or_else(|| {
        Error::BadInput(format!(
            "unknown protocol '{}' ({})",
            a.protocol,
            net::load::names().join(", ")
        ))
    })?;
    Ok(net::load::LoadOptions {
        target: a.target.clone(),
        protocol,
        model: a.model.clone(),
        batch: a.batch.clone(),
        seq: a.seq.clone(),
        overrides: Vec::new(),
        modes,
        measure: MeasureConfig {
            // Errors are data under load: a server answering 503 keeps being measured; a
            // dead one fails fast (connection refused costs microseconds).
            max_consecutive_failures: 100,
            ..a.timing.config()
        },
        seed: a.seed,
        vocab: a.vocab,
        binary: a.encoding == "binary",
        metrics_url: a.metrics_url.clone(),
        label: a.label.clone().unwrap_or_else(|| a.protocol.clone()),
        server_threads: a.server_threads,
        timeout: a.timeout,
        max_tokens: a.max_tokens,
        slo,
        local: None,
        interrupt,
        engine: a.engine,
        client_threads: a.client_threads.unwrap_or(0),
        client_spin: a.client_spin,
        streams: a.streams,
        trace,
        find_max_rate: a.find_max_rate.then_some(objectives),
        arrivals: a.traffic.arrivals,
        budget: None,
        server_pid: a.server_pid,
    })
}

/// `--slo` split into completions' goodput objectives (ttft, tpot, e2e) and the capacity
/// search's (latency percentiles, error rate).
fn split_slo(s: Option<&str>) -> Result<(Option<Slo>, Vec<crate::capacity::Objective>), Error> {
    let Some(s) = s else {
        return Ok((None, Vec::new()));
    };
    let capacity_key = |part: &str| {
        let k = part.trim().to_ascii_lowercase();
        k.starts_with("error")
            || (k.starts_with('p') && k[1..].starts_with(|c: char| c.is_ascii_digit()))
    };
    let (cap, good): (Vec<&str>, Vec<&str>) = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .partition(|p| capacity_key(p));
    let bad = |e: String| Error::BadInput(format!("--slo {e}"));
    let objectives = if cap.is_empty() {
        Vec::new()
    } else {
        crate::capacity::parse_objectives(&cap.join(",")).map_err(bad)?
    };
    let slo = if good.is_empty() {
        None
    } else {
        Some(Slo::parse(&good.join(",")).map_err(bad)?)
    };
    Ok((slo, objectives))
}

/// `harness serve`'s options.
pub fn serve(a: ServeArgs) -> net::serve::ServeOptions {
    let instances = a.instances.max(1);
    net::serve::ServeOptions {
        model: a.model,
        runtime: a.runtime,
        name: a.name,
        threads: a
            .threads
            .unwrap_or_else(|| (runtimes::online_cpus() / instances).max(1)),
        instances,
        variant: a.variant,
        batch: net::serve::batcher::BatchConfig {
            max_batch: a.max_batch,
            max_queue_delay: a.max_queue_delay,
            queue_capacity: a.max_queue,
        },
        max_body: a.max_body,
        request_timeout: a.request_timeout,
        host: a.host,
        http_port: a.http_port,
        grpc_port: (!a.no_grpc).then_some(a.grpc_port),
        io_threads: a.io_threads,
        inline: a.inline,
        port_file: a.port_file,
        shutdown_after: a.shutdown_after,
        idle_timeout: a.idle_timeout,
        runtime_options: runtimes::RuntimeOptions {
            ort_lib: a.ort_lib,
            ort_spinning: Some(a.ort_spinning == cli::Switch::On),
            ..Default::default()
        },
    }
}
