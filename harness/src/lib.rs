//! The harness: scenarios, measurement, statistics, parity and reports over the runtimes of
//! the `runtimes` crate. `main` only parses arguments and calls [`run`].

pub mod cli;
pub mod compare;
pub mod diff;
pub mod environment;
pub mod group;
pub mod inputs;
pub mod measure;
pub mod monitor;
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

use cli::{Cli, Command, CompareArgs, DiffArgs, ListArgs};
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
            let mut d: Vec<String> = a.devices.iter().map(|d| d.as_str().to_string()).collect();
            d.dedup();
            d
        },
        variants: a.variants.clone(),
        modes: load_modes(&a),
        min_cosine: a.min_cosine,
        measure: measure::MeasureConfig {
            warmup_iters: a.warmup,
            warmup_time: a.warmup_time,
            min_time: a.min_time,
            min_samples: a.min_samples,
            max_time: a.max_time.max(a.min_time),
            target_ci: a.target_ci,
            ..Default::default()
        },
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
    let mut stdout = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut stdout, &results)?;
        writeln!(stdout)?;
    } else {
        write!(stdout, "{}", results::to_table(&results))?;
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
fn load_modes(a: &CompareArgs) -> Vec<measure::LoadMode> {
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
                    seed: a.seed,
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
    let opts = LoadOptions {
        ort_lib: a.ort_lib.clone(),
        ..LoadOptions::default()
    };
    let rows: Vec<(String, Availability)> = runtimes::all()
        .iter()
        .map(|r| (r.name().to_string(), r.check(&opts)))
        .collect();
    let mut stdout = std::io::stdout().lock();
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(n, av)| {
                let mut v = serde_json::to_value(av).unwrap_or_default();
                v["runtime"] = serde_json::Value::String(n.clone());
                v["device"] = serde_json::Value::String("cpu".into());
                v
            })
            .collect();
        serde_json::to_writer_pretty(&mut stdout, &v)?;
        writeln!(stdout)?;
    } else {
        for (n, av) in &rows {
            match av {
                Availability::Ready { detail, .. } => {
                    writeln!(stdout, "{n:<7} cpu  ready      {detail}")?
                }
                Availability::Unavailable { reason } => {
                    writeln!(stdout, "{n:<7} cpu  unavailable  {reason}")?
                }
            }
        }
    }
    Ok(0)
}
