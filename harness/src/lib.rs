//! The harness: scenarios, measurement, statistics, parity and reports over the runtimes of
//! the `runtimes` crate. `main` only parses arguments and calls [`run`].

pub mod cli;
pub mod compare;
pub mod diff;
pub mod environment;
pub mod gpu_monitor;
pub mod group;
pub mod inputs;
pub mod measure;
pub mod monitor;
pub mod net;
pub mod parity;
pub mod report;
pub mod results;
pub mod stats;
pub mod worker;

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use runtimes::{Availability, LoadOptions};

use cli::{Cli, Command, CompareArgs, DiffArgs, ListArgs, LoadArgs, ServeArgs};
use compare::{CompareError, CompareOptions};

/// Exit status: 0 all measured and in parity; 1 some runtime failed or disagreed (results
/// written); 2 bad input, nothing measured; 130 interrupted (results so far written).
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Compare(a) => run_compare(*a),
        Command::List(a) => run_list(a),
        Command::Diff(a) => run_diff(a),
        Command::Report(a) => {
            let inputs: Vec<&std::path::Path> = a.dirs.iter().map(|p| p.as_path()).collect();
            match report::rebuild(&inputs, &a.out) {
                Ok(r) => {
                    eprintln!(
                        "report: {} scenarios from {} run(s) in {}",
                        r.scenarios.len(),
                        inputs.len(),
                        a.out.join("report.html").display()
                    );
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(2)
                }
            }
        }
        Command::Serve(a) => run_serve(*a),
        Command::Load(a) => run_load(*a),
        Command::Worker => {
            let stdin = std::io::stdin().lock();
            let stdout = std::io::stdout();
            worker::run_worker(stdin, stdout)?;
            Ok(0)
        }
    }
}

/// Progress on stderr: a bar (done/total, ETA, what runs now) on a terminal, plain lines
/// otherwise (logs, CI).
struct Display {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
    terminal: bool,
}

impl Display {
    fn new() -> Display {
        Display {
            bar: std::sync::Mutex::new(None),
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    fn show(&self, e: group::Event) {
        use group::Event;
        let mut bar = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        match (e, self.terminal) {
            (Event::Plan(n), true) => {
                let b = indicatif::ProgressBar::new(n as u64);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:30} {pos}/{len} scenarios, {elapsed} (eta {eta})  {wide_msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                *bar = Some(b);
            }
            (Event::Plan(n), false) => eprintln!("[harness] {n} scenarios"),
            (Event::Status(s), true) => match bar.as_ref() {
                Some(b) => b.set_message(s.to_string()),
                None => eprintln!("{s}"),
            },
            (Event::Finished(s), true) => match bar.as_ref() {
                Some(b) => {
                    b.println(s);
                    b.inc(1);
                }
                None => eprintln!("{s}"),
            },
            (Event::Warning(s), true) => match bar.as_ref() {
                Some(b) => b.println(s),
                None => eprintln!("{s}"),
            },
            (Event::Status(s) | Event::Finished(s) | Event::Warning(s), false) => eprintln!("{s}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish_and_clear();
        }
    }
}

fn run_compare(a: CompareArgs) -> anyhow::Result<i32> {
    let shapes = a
        .shapes
        .iter()
        .map(|s| inputs::parse_shape_arg(s))
        .collect::<Result<Vec<_>, _>>()?;
    let threads = if a.threads.is_empty() {
        vec![std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)]
    } else {
        a.threads.clone()
    };
    let pinning = match group::Pinning::parse(&a.pin, runtimes::online_cpus()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let out = a.out.clone().unwrap_or_else(compare::default_out_dir);
    // Ctrl-C ends the run cleanly: the scenario in flight stops, what finished is saved.
    let interrupt = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupt.clone())
        .context("installing the Ctrl-C handler")?;
    // A repeated flag appends; the same scenario twice measures nothing new.
    fn dedup(v: &[usize]) -> Vec<usize> {
        let mut seen = Vec::new();
        for &x in v {
            if !seen.contains(&x) {
                seen.push(x);
            }
        }
        seen
    }
    let opts = CompareOptions {
        model: a.model.clone(),
        runtimes: a.runtimes.iter().map(|r| r.as_str().to_string()).collect(),
        batches: dedup(&a.batch),
        seqs: dedup(&a.seq),
        shapes,
        threads: dedup(&threads),
        devices: {
            let mut d: Vec<String> = Vec::new();
            for x in &a.devices {
                if !d.contains(&x.label()) {
                    d.push(x.label());
                }
            }
            d
        },
        gpu: group::GpuSpec {
            copies_timed: a.gpu_copies,
            trt_fp16: a.trt_fp16,
            trt_cache: Some(absolute(
                &a.trt_cache.clone().unwrap_or_else(|| out.join("trt-cache")),
            )),
            trt_workspace: a.trt_workspace,
        },
        variants: a.variants.clone(),
        modes: load_modes(&a.traffic, a.seed),
        min_cosine: a.min_cosine,
        measure: a.timing.config(),
        seed: a.seed,
        tolerance: parity::Tolerance {
            atol: a.atol,
            rtol: a.rtol,
        },
        ort_lib: a.ort_lib.clone(),
        out: out.clone(),
        pinning,
        ort_profile: a.ort_profile.then(|| absolute(&out.join("ort-profile"))),
        overhead: !a.no_overhead,
        isolation: match a.isolate {
            cli::IsolateMode::Process => compare::Isolation::Process {
                exe: std::env::current_exe()
                    .context("locating the harness executable for its workers")?,
            },
            cli::IsolateMode::None => compare::Isolation::None,
        },
        interrupt: interrupt.clone(),
        served: a.served,
    };
    let display = Display::new();
    let progress = |e: group::Event| display.show(e);
    let outcome = compare::compare(&opts, &progress);
    display.finish();
    let results = match outcome {
        Ok(r) => r,
        Err(e @ CompareError::Write { .. }) => return Err(e.into()),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    finish(&results, &out, a.json)
}

/// Prints the results (the table, or results.json with `--json`) and returns the exit status:
/// 130 interrupted, 1 when a row failed or disagreed, else 0.
fn finish(results: &results::Results, out: &std::path::Path, json: bool) -> anyhow::Result<i32> {
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut stdout, results)?;
        writeln!(stdout)?;
    } else {
        write!(stdout, "{}", results::to_table(results))?;
        writeln!(stdout, "results: {}", out.display())?;
    }
    stdout.flush().context("writing to stdout")?;
    Ok(if results.interrupted {
        130
    } else if results.scenarios.iter().any(|s| s.is_problem()) {
        1
    } else {
        0
    })
}

/// Closed loop at each --concurrency, or, with --rate, open loop at each rate x concurrency.
fn load_modes(a: &cli::TrafficArgs, seed: u64) -> Vec<measure::LoadMode> {
    let mut conc = Vec::new();
    for &c in &a.concurrency {
        if !conc.contains(&c) {
            conc.push(c);
        }
    }
    if a.rate.is_empty() {
        return conc
            .into_iter()
            .map(|concurrency| measure::LoadMode::ClosedLoop { concurrency })
            .collect();
    }
    let arrivals = match a.arrivals {
        cli::ArrivalsArg::Poisson => measure::Arrivals::Poisson,
        cli::ArrivalsArg::Constant => measure::Arrivals::Constant,
    };
    a.rate
        .iter()
        .flat_map(|&rate| {
            conc.iter()
                .map(move |&concurrency| measure::LoadMode::OpenLoop {
                    rate,
                    arrivals,
                    concurrency,
                    seed,
                })
        })
        .collect()
}

fn absolute(p: &std::path::Path) -> std::path::PathBuf {
    std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

fn run_diff(a: DiffArgs) -> anyhow::Result<i32> {
    let (base, new) = match (diff::load(&a.base), diff::load(&a.new)) {
        (Ok(b), Ok(n)) => (b, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let rows = diff::diff(&base.scenarios, &new.scenarios, a.min_change, &a.ignore);
    let mut stdout = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut stdout, &rows)?;
        writeln!(stdout)?;
    } else if a.markdown {
        let (b, n) = (a.base.display().to_string(), a.new.display().to_string());
        write!(stdout, "{}", diff::to_markdown(&rows, &b, &n))?;
    } else {
        write!(stdout, "{}", diff::to_table(&rows))?;
    }
    if base.environment.cpu_model != new.environment.cpu_model {
        eprintln!(
            "warning: the runs are from different CPUs ({} / {})",
            base.environment.cpu_model, new.environment.cpu_model
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

fn run_list(a: ListArgs) -> anyhow::Result<i32> {
    let mut rows: Vec<(String, runtimes::Device, Availability)> = Vec::new();
    for rt in runtimes::all() {
        for &device in &a.devices {
            let opts = LoadOptions {
                ort_lib: a.ort_lib.clone(),
                device,
                ..LoadOptions::default()
            };
            rows.push((rt.name().to_string(), device, rt.check(&opts)));
        }
    }
    let gpus = gpu_monitor::gpu_inventory();
    let mut stdout = std::io::stdout().lock();
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
            "runtimes": v,
            "gpus": match &gpus {
                Ok(g) => serde_json::to_value(g).unwrap_or_default(),
                Err(why) => serde_json::json!({ "unavailable": why }),
            },
        });
        serde_json::to_writer_pretty(&mut stdout, &doc)?;
        writeln!(stdout)?;
    } else {
        for (n, d, av) in &rows {
            let d = d.label();
            match av {
                Availability::Ready { detail, .. } => {
                    writeln!(stdout, "{n:<7} {d:<10} ready        {detail}")?
                }
                Availability::Unavailable { reason } => {
                    writeln!(stdout, "{n:<7} {d:<10} unavailable  {reason}")?
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
    }
    Ok(0)
}

fn run_serve(a: ServeArgs) -> anyhow::Result<i32> {
    let instances = a.instances.max(1);
    let opts = net::server::ServeOptions {
        model: a.model,
        runtime: a.runtime.as_str().to_string(),
        name: a.name,
        threads: a
            .threads
            .unwrap_or_else(|| (runtimes::online_cpus() / instances).max(1)),
        instances,
        variant: a.variant,
        batch: net::batcher::BatchConfig {
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
        port_file: a.port_file,
        shutdown_after: a.shutdown_after,
        ort_lib: a.ort_lib,
    };
    match net::server::serve(opts) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(2)
        }
    }
}

/// The results record of a load run, before any row.
pub fn load_results(
    o: &net::load::LoadOptions,
    info: Option<&runtimes::ModelInfo>,
) -> results::Results {
    use net::load::Protocol;
    results::Results {
        schema: results::SCHEMA.into(),
        schema_version: results::SCHEMA_VERSION,
        started_at: compare::now_string(),
        finished_at: None,
        environment: environment::Environment::capture(Vec::new()),
        model: results::ModelSummary {
            path: std::path::PathBuf::from(&o.target),
            name: o.model.clone().unwrap_or_else(|| o.target.clone()),
            onnx: None,
            safetensors: None,
            config: None,
            inputs: info.map(|i| i.inputs.clone()).unwrap_or_default(),
            outputs: info.map(|i| i.outputs.clone()).unwrap_or_default(),
            spec_source: info.map_or_else(|| o.protocol.as_str().to_string(), |i| i.spec_source.clone()),
            onnx_error: None,
            model_type: None,
            vocab_size: matches!(o.protocol, Protocol::KserveHttp | Protocol::KserveGrpc).then_some(o.vocab),
            max_positions: None,
        },
        settings: results::Settings {
            mode: format!(
                "network load ({}) against {}; {}",
                o.protocol.as_str(),
                o.target,
                o.modes
                    .iter()
                    .map(|m| match m {
                        measure::LoadMode::ClosedLoop { concurrency } => format!("closed loop, {concurrency} connection(s)"),
                        measure::LoadMode::OpenLoop { rate, arrivals, concurrency, .. } => format!(
                            "open loop, {rate}/s {arrivals:?} arrivals over {concurrency} connection(s); latency from the scheduled send"
                        ),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            seed: o.seed,
            warmup_iterations: o.measure.warmup_iters,
            warmup_time_s: o.measure.warmup_time.as_secs_f64(),
            min_time_s: o.measure.min_time.as_secs_f64(),
            min_samples: o.measure.min_samples,
            max_time_s: o.measure.max_time.as_secs_f64(),
            tolerance: parity::Tolerance::default(),
            reference_preference: "served rows are not compared for parity (compare --served compares them)".into(),
            pinning: "none (load generator threads float)".into(),
            isolation: "network: the server is another process".into(),
            percentile_definition: "nearest rank on all samples; '*' (low_sample_percentiles) when fewer than 5 samples lie at or beyond it".into(),
        },
        harness_overhead: None,
        interrupted: false,
        merged_from: Vec::new(),
        runtimes: Vec::new(),
        scenarios: Vec::new(),
    }
}

fn run_load(a: LoadArgs) -> anyhow::Result<i32> {
    let out = a.out.clone().unwrap_or_else(compare::default_out_dir);
    let interrupt = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupt.clone())
        .context("installing the Ctrl-C handler")?;
    let slo = match a.slo.as_deref().map(net::load::Slo::parse).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --slo {e}");
            return Ok(2);
        }
    };
    let opts = net::load::LoadOptions {
        target: a.target.clone(),
        protocol: a.protocol,
        model: a.model.clone(),
        batch: a.batch.clone(),
        seq: a.seq.clone(),
        overrides: Vec::new(),
        modes: load_modes(&a.traffic, a.seed),
        measure: measure::MeasureConfig {
            // Errors are data under load: a server answering 503 keeps being measured; a
            // dead one fails fast (connection refused costs microseconds).
            max_consecutive_failures: 100,
            ..a.timing.config()
        },
        seed: a.seed,
        vocab: a.vocab,
        binary: a.encoding == "binary",
        metrics_url: a.metrics_url.clone(),
        label: a
            .label
            .clone()
            .unwrap_or_else(|| a.protocol.as_str().to_string()),
        server_threads: a.server_threads,
        timeout: a.timeout,
        max_tokens: a.max_tokens,
        slo,
        local: None,
        interrupt: interrupt.clone(),
    };
    let mut results = load_results(&opts, None);
    let mut write_error = None;
    let outcome = net::load::run_load(&opts, &mut |row| {
        eprintln!("{}", row_line(&row));
        results.scenarios.push(row);
        if let Err(e) = results::write_all(&out, &results) {
            write_error = Some(e);
        }
    });
    if let Some(e) = write_error {
        return Err(anyhow::anyhow!("writing results to {}: {e}", out.display()));
    }
    match outcome {
        Ok(info) => {
            let fresh = load_results(&opts, Some(&info));
            results.model = fresh.model;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    }
    results.interrupted = interrupt.load(std::sync::atomic::Ordering::Relaxed);
    results.finished_at = Some(compare::now_string());
    results::write_all(&out, &results)
        .with_context(|| format!("writing results to {}", out.display()))?;
    finish(&results, &out, a.json)
}

/// One line per finished network scenario, for the log.
fn row_line(r: &results::ScenarioResult) -> String {
    let Some(m) = &r.measurement else {
        return format!("{}: {}", r.id, r.error.as_deref().unwrap_or("not measured"));
    };
    let mut s = format!(
        "{}: p50 {:.2} ms, p99 {:.2} ms, {:.1} items/s, {} requests, {} errors",
        r.id,
        m.latency.p50_ms,
        m.latency.p99_ms,
        r.throughput_per_s.unwrap_or(0.0),
        m.iterations,
        m.failures
    );
    if let Some(sv) = &r.served {
        if let Some(c) = sv.client_cores_busy {
            s.push_str(&format!(", client {c:.2} cores"));
        }
        if sv.client_saturated {
            s.push_str(" (CLIENT SATURATED: the figures may describe the load generator)");
        }
        if let Some(b) = sv.server_avg_batch {
            s.push_str(&format!(", server batch {b:.2}"));
        }
        if let Some(st) = &sv.streaming {
            s.push_str(&format!(
                ", TTFT p50 {:.1} ms, TPOT p50 {:.2} ms, ITL p50 {:.2} ms",
                st.ttft.p50_ms, st.tpot.p50_ms, st.itl.p50_ms
            ));
            if let Some(g) = st.goodput_per_s {
                s.push_str(&format!(", goodput {g:.2}/s"));
            }
        }
    }
    if let Some(o) = &r.open_loop {
        s.push_str(&format!(
            ", achieved {:.1}/s of {:.1}/s, {} late sends",
            o.achieved_rate, o.target_rate, o.late_sends
        ));
    }
    s
}
