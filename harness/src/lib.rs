//! The harness: scenarios, measurement, statistics, parity and reports over the runtimes of
//! the `runtimes` crate. `main` only parses arguments and calls [`run`].
//!
//! The flow, one module a step: [`cli`] (arguments) -> [`plan`] (typed, validated options)
//! -> [`engine`] (one scenario engine for every workload source: model instances in-process
//! or in worker processes, a served endpoint) -> [`measure`], [`stats`], [`parity`],
//! [`monitor`], [`analysis`] (return data, never print) -> [`results`] (the schema, a leaf)
//! -> [`present`] (terminal, CSV, Markdown, HTML, diff). [`net`] holds the server
//! (`net::server`) and the load generator (`net::load`), which feeds the same engine.

pub mod analysis;
pub mod capacity;
pub mod cli;
pub mod cpu_idle;
pub mod engine;
pub mod environment;
pub mod inputs;
pub mod measure;
pub mod monitor;
pub mod net;
pub mod nvtx;
pub mod parity;
pub mod plan;
pub mod present;
pub mod profile;
pub mod results;
pub mod selfcheck;
pub mod shard;
pub mod stats;
pub mod traffic;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use runtimes::{Availability, LoadOptions};

use cli::{Cli, Command, CompareArgs, DiffArgs, ListArgs, LoadArgs, ReportArgs};
use present::diff;
use results::Results;

/// Why a command could not run. Every variant exits with status 2 (bad input, nothing
/// measured or the results could not be written); [`Error::exit_code`] is the one mapping.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Compare(#[from] engine::compare::CompareError),
    #[error(transparent)]
    Load(#[from] net::load::LoadError),
    #[error(transparent)]
    Read(#[from] results::ReadError),
    #[error(transparent)]
    Write(#[from] engine::runlog::WriteError),
    #[error(transparent)]
    Serve(#[from] net::serve::StartError),
    #[error(transparent)]
    Worker(#[from] engine::worker::WorkerError),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl Error {
    /// The process's exit status for this error.
    pub fn exit_code(&self) -> i32 {
        2
    }
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        what: what.to_string(),
        source,
    }
}

/// Runs one command. Exit status: 0 all measured and in parity; 1 some runtime failed or
/// disagreed (results written); 2 bad input, nothing measured ([`Error`]); 130 interrupted
/// (results so far written).
pub fn run(cli: Cli) -> Result<i32, Error> {
    run_to(cli, &mut std::io::stdout())
}

/// [`run`], with what it prints on stdout (tables, JSON) written to `out` instead: how the
/// tests run commands in-process. Progress and logs still go to stderr.
pub fn run_to(cli: Cli, out: &mut dyn Write) -> Result<i32, Error> {
    match cli.command {
        Command::Compare(a) => run_compare(&a, out),
        Command::List(a) => run_list(a, out),
        Command::Diff(a) => run_diff(a, out),
        Command::Report(a) => run_report(&a),
        Command::Profile(a) => run_profile(&a),
        Command::Serve(a) => Ok(net::serve::serve(plan::serve(*a))?),
        Command::Load(a) => run_load(&a, out),
        Command::Selfcheck(a) => run_selfcheck(&a, out),
        Command::Worker => {
            let stdin = std::io::stdin().lock();
            let stdout = std::io::stdout();
            engine::worker::run_worker(stdin, stdout)?;
            Ok(0)
        }
    }
}

/// Ctrl-C or SIGTERM ends a run cleanly: the scenario in flight stops, its worker process is
/// stopped, what finished is saved.
fn interrupt_flag() -> Result<Arc<AtomicBool>, Error> {
    let interrupt = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, interrupt.clone())
            .map_err(io("installing the Ctrl-C and SIGTERM handlers"))?;
    }
    Ok(interrupt)
}

fn run_compare(a: &CompareArgs, out: &mut dyn Write) -> Result<i32, Error> {
    let opts = plan::compare(a, interrupt_flag()?)?;
    hold_cpu_idle(a.timing.cpu_idle);
    let display = present::progress::Display::new();
    let progress = |e: engine::Event| display.show(e);
    let outcome = engine::compare::compare(&opts, &progress);
    display.finish();
    finish(&outcome?, &opts.out, a.json, out)
}

/// `--cpu-idle` for the rest of the run; a hold that could not be taken is said once.
fn hold_cpu_idle(mode: cpu_idle::CpuIdle) {
    if let Some(w) = cpu_idle::warning(cpu_idle::apply(mode)) {
        eprintln!("warning: {w}");
    }
}

/// `harness selfcheck`: the table (or the JSON), selfcheck.json in the folder; 1 when a
/// runtime could not be checked.
fn run_selfcheck(a: &cli::SelfcheckArgs, out: &mut dyn Write) -> Result<i32, Error> {
    let report = selfcheck::selfcheck(a)?;
    let folder = a.out.clone().unwrap_or_else(|| {
        let d = engine::runlog::default_out_dir();
        d.with_file_name(format!(
            "selfcheck-{}",
            d.file_name().unwrap_or_default().to_string_lossy()
        ))
    });
    std::fs::create_dir_all(&folder).map_err(io("creating the selfcheck folder"))?;
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(folder.join("selfcheck.json"), &json).map_err(io("writing selfcheck.json"))?;
    if a.json {
        writeln!(out, "{json}")?;
    } else {
        write!(out, "{}", selfcheck::to_table(&report))?;
        writeln!(
            out,
            "selfcheck: {}",
            folder.join("selfcheck.json").display()
        )?;
    }
    Ok(if report.checks.iter().any(|c| c.error.is_some()) {
        1
    } else {
        0
    })
}

fn run_profile(a: &cli::ProfileArgs) -> Result<i32, Error> {
    let mut r = Results::read(&a.dir)?;
    let script_path = a
        .script
        .clone()
        .unwrap_or_else(|| a.dir.join("profile").join("perf.script"));
    let script = std::fs::read_to_string(&script_path).map_err(|e| {
        Error::BadInput(format!(
            "{}: {e}: run profiles/perf.sh (it records the run and writes this file), or pass --script with `perf script -F comm,pid,tid,time,period,ip,sym,dso` output",
            script_path.display()
        ))
    })?;
    if !r.scenarios.iter().any(|s| {
        s.resources
            .as_ref()
            .is_some_and(|x| x.window_monotonic_s.is_some())
    }) {
        return Err(Error::BadInput(format!(
            "{}: no scenario records its window's times (window_monotonic_s): results written before profiles were supported cannot be profiled; measure again",
            a.dir.display()
        )));
    }
    let done =
        profile::attach(&mut r, &a.dir, &script).map_err(|source| engine::runlog::WriteError {
            path: a.dir.join("profile"),
            source,
        })?;
    if done.profiled == 0 {
        return Err(Error::BadInput(format!(
            "{}: none of its samples fall in a measured window of {}: was it recorded with -k CLOCK_MONOTONIC, of this run?",
            script_path.display(),
            a.dir.display()
        )));
    }
    present::write_all(&a.dir, &r).map_err(|source| engine::runlog::WriteError {
        path: a.dir.clone(),
        source,
    })?;
    eprintln!(
        "profile: {} scenario(s) profiled in {}{}{}",
        done.profiled,
        a.dir.join("profile").display(),
        if done.samples_outside > 0 {
            format!(
                "; {} sample(s) outside every window left out",
                done.samples_outside
            )
        } else {
            String::new()
        },
        if done.flamegraphs {
            ""
        } else {
            "; no flame graphs (cargo install inferno)"
        }
    );
    Ok(0)
}

fn run_report(a: &ReportArgs) -> Result<i32, Error> {
    let mut runs = Vec::new();
    for p in &a.dirs {
        runs.push((p.display().to_string(), Results::read(p)?));
    }
    let merged = analysis::merge(runs, a.pool_machines).map_err(Error::BadInput)?;
    present::write_all(&a.out, &merged).map_err(|source| engine::runlog::WriteError {
        path: a.out.clone(),
        source,
    })?;
    eprintln!(
        "report: {} scenarios from {} run(s){} in {}",
        merged.scenarios.len(),
        a.dirs.len(),
        if merged.machines.is_empty() {
            String::new()
        } else {
            format!(
                " on {} machines ({})",
                merged.machines.len(),
                merged
                    .machines
                    .iter()
                    .map(|m| m.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        a.out.join("report.html").display()
    );
    Ok(0)
}

/// Prints the results (the table, or results.json with `--json`) and returns the exit status:
/// 130 interrupted, 1 when a row failed or disagreed or every row was skipped, else 0.
fn finish(
    results: &Results,
    folder: &Path,
    json: bool,
    stdout: &mut dyn Write,
) -> Result<i32, Error> {
    let printed = if json {
        serde_json::to_writer_pretty(&mut *stdout, results)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(stdout))
    } else {
        write!(stdout, "{}", present::to_table(results))
            .and_then(|()| writeln!(stdout, "results: {}", folder.display()))
    };
    printed
        .and_then(|()| stdout.flush())
        .map_err(io("writing to stdout"))?;
    Ok(if results.interrupted {
        130
    } else if results.scenarios.iter().any(|s| s.is_problem()) || results.nothing_measured() {
        1
    } else {
        0
    })
}

fn run_diff(a: DiffArgs, stdout: &mut dyn Write) -> Result<i32, Error> {
    let (base, new) = (Results::read(&a.base)?, Results::read(&a.new)?);
    let rows = diff::diff_with(
        &base.scenarios,
        &new.scenarios,
        a.min_change,
        a.tail_min_change,
        &a.ignore,
    );
    if a.json {
        serde_json::to_writer_pretty(&mut *stdout, &rows)?;
        writeln!(stdout)?;
    } else if a.markdown {
        let about = |r: &Results| {
            let e = &r.environment;
            format!(
                "{}, {} logical CPUs, harness {} (commit {}{}), started {}",
                e.cpu_model,
                e.logical_cpus,
                e.harness_version,
                e.git_commit.get(..12).unwrap_or(&e.git_commit),
                if e.git_dirty == "true" { ", dirty" } else { "" },
                r.started_at
            )
        };
        let sides = diff::Sides {
            base: a.base.display().to_string(),
            new: a.new.display().to_string(),
            base_about: about(&base),
            new_about: about(&new),
            min_change: a.min_change,
        };
        write!(stdout, "{}", diff::to_markdown(&rows, &sides))?;
    } else {
        write!(stdout, "{}", diff::to_text(&rows, a.min_change))?;
    }
    if base.environment.cpu_model != new.environment.cpu_model {
        eprintln!(
            "warning: the runs are from different CPUs ({} / {})",
            base.environment.cpu_model, new.environment.cpu_model
        );
    }
    let idle = |r: &Results| cpu_idle::applied(r.environment.cpu_idle.as_deref()).to_string();
    if idle(&base) != idle(&new) {
        eprintln!(
            "warning: idle CPUs were handled differently ({} / {}, --cpu-idle): a woken \
             thread waits longer when they sleep deeply, so served rows differ by that too",
            idle(&base),
            idle(&new)
        );
    }
    if let Some(limit) = a.fail_above {
        let bad = diff::regressions(&rows, limit);
        if !bad.is_empty() {
            for r in &bad {
                eprintln!(
                    "regression: {} is {:.1}% slower at p50 (limit {:.1}%)",
                    r.id,
                    (r.p50_ratio.unwrap_or(1.0) - 1.0) * 100.0,
                    limit * 100.0
                );
            }
            return Ok(1);
        }
    }
    Ok(0)
}

fn run_list(a: ListArgs, stdout: &mut dyn Write) -> Result<i32, Error> {
    let mut rows: Vec<(String, runtimes::Device, Availability)> = Vec::new();
    for rt in runtimes::all() {
        for &device in &a.devices {
            let opts = LoadOptions {
                runtime: runtimes::RuntimeOptions {
                    ort_lib: a.ort_lib.clone(),
                    ..Default::default()
                },
                device,
                ..LoadOptions::default()
            };
            rows.push((rt.name().to_string(), device, rt.check(&opts)));
        }
    }
    let gpus = monitor::gpu_inventory();
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(n, d, av)| {
                let mut v = serde_json::to_value(av).unwrap_or_default();
                v["runtime"] = serde_json::Value::String(n.clone());
                v["device"] = serde_json::Value::String(d.label());
                v
            })
            .collect();
        let doc = serde_json::json!({
            "gpu_timing": environment::gpu_timing(),
            "runtimes": v,
            "gpus": match &gpus {
                Ok(g) => serde_json::to_value(g).unwrap_or_default(),
                Err(why) => serde_json::json!({ "unavailable": why }),
            },
        });
        serde_json::to_writer_pretty(&mut *stdout, &doc)?;
        writeln!(stdout)?;
    } else {
        // The runtime column as wide as the longest registered name.
        let w = rows.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
        for (n, d, av) in &rows {
            let d = d.label();
            match av {
                Availability::Ready { detail, .. } => {
                    writeln!(stdout, "{n:<w$} {d:<10} ready        {detail}")?
                }
                Availability::Unavailable { reason } => {
                    writeln!(stdout, "{n:<w$} {d:<10} unavailable  {reason}")?
                }
            }
        }
        match &gpus {
            Ok(g) if !g.is_empty() => {
                for x in g {
                    writeln!(
                        stdout,
                        "gpu {}: {} (driver {}, CUDA {}, {:.0} GiB, SM clock up to {} MHz, power limit {} W)",
                        x.index,
                        x.name,
                        x.driver,
                        x.cuda_driver,
                        x.memory_total_bytes.unwrap_or(0) as f64 / (1u64 << 30) as f64,
                        x.max_sm_clock_mhz.map_or("?".into(), |c| c.to_string()),
                        x.power_limit_w.map_or("?".into(), |w| format!("{w:.0}")),
                    )?;
                }
            }
            Ok(_) => writeln!(stdout, "gpus: NVML sees none")?,
            Err(why) => writeln!(stdout, "gpus: {why}")?,
        }
        let t = environment::gpu_timing();
        writeln!(stdout, "device timing (CUDA events): {}", t.cuda_events)?;
        writeln!(stdout, "NVTX ranges: {}", t.nvtx)?;
    }
    Ok(0)
}

fn run_load(a: &LoadArgs, stdout: &mut dyn Write) -> Result<i32, Error> {
    let out = a
        .out
        .clone()
        .unwrap_or_else(engine::runlog::default_out_dir);
    let opts = plan::load(a, interrupt_flag()?)?;
    hold_cpu_idle(a.timing.cpu_idle);
    let header = |info: Option<&runtimes::ModelInfo>| net::load::header(&opts, info);
    let (model, settings) = header(None);
    let mut log = engine::runlog::RunLog::create(&out, model, settings, Vec::new(), Vec::new())?;
    let mut write_error = None;
    let mut emit = |row: results::ScenarioResult| {
        eprintln!("{}", present::progress::row_line(&row));
        if let Err(e) = log.push(row) {
            write_error.get_or_insert(e);
        }
    };
    let outcome = if opts.find_max_rate.is_some() {
        net::load::find_capacity(&opts, &mut emit)
    } else {
        net::load::run_load(&opts, &mut emit).map(|info| (info, Vec::new()))
    };
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let (info, searches) = outcome?;
    log.results.capacity = searches;
    log.results.model = header(Some(&info)).0;
    let interrupted = opts.interrupt.load(std::sync::atomic::Ordering::Relaxed);
    let results = log.finish(interrupted)?;
    finish(&results, &out, a.json, stdout)
}
