//! `harness selfcheck`: is a figure the harness reports one a user gets? Each runtime is
//! timed two ways in one process — through the wrapper `harness compare` measures (the
//! runtime's `run` as the measuring loop calls it) and through the loop a user writes from
//! the runtime's own documentation (`runtimes::bare`) — in alternating blocks, their order
//! swapped every round so that drift and heat fall on both alike. The ratio of the medians
//! comes with a 95% interval from the rounds. Where the performance guide advises a change
//! to the documented loop (candle-native: call it inside its pool), that loop is checked too.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use runtimes::{HostTensor, LoadOptions, ModelFiles, ModelInfo, Variant};
use serde::Serialize;

use crate::cli::SelfcheckArgs;
use crate::results::Environment;

/// One runtime's two figures and their ratio.
#[derive(Debug, Serialize)]
pub struct Check {
    pub runtime: String,
    /// Which user loop: `documented` (the runtime's own documentation), `advised` (the same
    /// with the performance guide's advice applied), or `control` (the wrapper itself).
    pub user_loop: &'static str,
    /// What the user's loop is.
    pub recipe: String,
    /// What the harness's wrapper applied (threads, pools, plans).
    pub applied: Vec<(String, String)>,
    pub harness: Side,
    pub bare: Side,
    /// Harness over user, the geometric mean of the rounds' ratios of medians: below 1 the
    /// harness is faster than the user's loop.
    pub ratio: Option<f64>,
    pub ratio_ci95: Option<(f64, f64)>,
    /// Each round's ratio of medians.
    pub round_ratios: Vec<f64>,
    pub verdict: Option<Verdict>,
    pub error: Option<String>,
}

/// The samples of one way of running.
#[derive(Debug, Default, Serialize)]
pub struct Side {
    pub samples: usize,
    pub p50_ms: Option<f64>,
    #[serde(skip)]
    ns: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub model: PathBuf,
    pub batch: usize,
    pub seq: Option<usize>,
    pub threads: usize,
    pub rounds: usize,
    pub block_s: f64,
    pub agree_within: f64,
    pub checks: Vec<Check>,
    pub environment: Environment,
}

/// Runs the check; the report, and whether every runtime ran.
pub fn selfcheck(a: &SelfcheckArgs) -> Result<Report, crate::Error> {
    let threads = a.threads.unwrap_or_else(runtimes::online_cpus).max(1);
    // candle's documented thread control, for both of its loops; set before any pool starts.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let files = ModelFiles::resolve(&a.model).map_err(|e| crate::Error::BadInput(e.to_string()))?;
    let info = ModelInfo::read(&files).map_err(|e| crate::Error::BadInput(e.to_string()))?;
    let seqs: Vec<usize> = a.seq.into_iter().collect();
    let shapes = crate::engine::group::build_shapes(&info, &[a.batch], &seqs, &[], a.seed)
        .map_err(|e| crate::Error::BadInput(e.to_string()))?;
    let shape = &shapes[0];
    let inputs = shape.inputs.clone().map_err(crate::Error::BadInput)?;
    let names: Vec<String> = if a.runtimes.is_empty() {
        runtimes::bare::RUNTIMES
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        a.runtimes.clone()
    };
    let mut checks = Vec::new();
    for name in &names {
        let mut loops = vec![if a.control { "control" } else { "documented" }];
        if !a.control && threads > 1 && runtimes::bare::ADVISED.contains(&name.as_str()) {
            loops.push("advised");
        }
        for user_loop in loops {
            eprintln!("[selfcheck] {name}: loading both loops ({user_loop})");
            let c = check(a, name, user_loop, &files, &info, &inputs, threads);
            if let Some(e) = &c.error {
                eprintln!("[selfcheck] {name}: {e}");
            }
            checks.push(c);
        }
    }
    Ok(Report {
        schema: "harness-selfcheck",
        model: a.model.clone(),
        batch: a.batch,
        seq: shape.shape.seq,
        threads,
        rounds: a.rounds,
        block_s: a.block.as_secs_f64(),
        agree_within: a.agree_within,
        checks,
        environment: crate::environment::capture(Vec::new()),
    })
}

fn check(
    a: &SelfcheckArgs,
    name: &str,
    user_loop: &'static str,
    files: &ModelFiles,
    info: &ModelInfo,
    inputs: &[HostTensor],
    threads: usize,
) -> Check {
    let mut c = Check {
        runtime: name.to_string(),
        user_loop,
        recipe: String::new(),
        applied: Vec::new(),
        harness: Side::default(),
        bare: Side::default(),
        ratio: None,
        ratio_ci95: None,
        round_ratios: Vec::new(),
        verdict: None,
        error: None,
    };
    let Some(rt) = runtimes::by_name(name) else {
        c.error = Some(format!("unknown runtime '{name}'"));
        return c;
    };
    let opts = LoadOptions {
        threads,
        variant: Variant::Fp32,
        runtime: runtimes::RuntimeOptions {
            ort_lib: a.ort_lib.clone(),
            ..Default::default()
        },
        ..LoadOptions::default()
    };
    let wrapper = || {
        rt.load(files, info, &opts).and_then(|mut m| {
            m.prepare(inputs)?;
            Ok(m)
        })
    };
    // The user's loop, or with --control a second instance of the wrapper, which shows the
    // check's own noise floor (the ratio of a loop against itself).
    let bare = |b: Result<runtimes::bare::BareLoop, _>| {
        b.map(|mut b: runtimes::bare::BareLoop| {
            let recipe = b.recipe.to_string();
            let run: Step = Box::new(move || b.run());
            (recipe, run)
        })
    };
    let user: Result<(String, Step), _> = match user_loop {
        "control" => wrapper().map(|mut m| {
            let recipe = format!("control: a second {name} instance of the harness's wrapper");
            let run: Step = Box::new(move || m.run().map_err(|e| e.to_string()));
            (recipe, run)
        }),
        "advised" => match runtimes::bare::load_advised(name, files, threads, inputs) {
            Some(b) => bare(b),
            None => Err(runtimes::RuntimeError::Unsupported {
                runtime: "selfcheck",
                why: format!("no advice for {name} at {threads} thread(s)"),
            }),
        },
        _ => bare(runtimes::bare::load(
            name,
            files,
            threads,
            inputs,
            a.ort_lib.as_deref(),
        )),
    };
    let (mut user_run, mut wrapped) = match user.and_then(|(recipe, run)| {
        c.recipe = recipe;
        Ok((run, wrapper()?))
    }) {
        Ok(both) => both,
        Err(e) => {
            c.error = Some(e.to_string());
            return c;
        }
    };
    c.applied = wrapped.applied();
    // Each loop times one call the way the measuring loop does: a clock read either side.
    let clock = crate::measure::MonotonicClock::new();
    let timed = |f: &mut dyn FnMut() -> Result<(), String>| -> Result<u64, String> {
        use crate::measure::Clock;
        let t = clock.now_ns();
        f()?;
        Ok(clock.now_ns() - t)
    };
    let mut harness_step = || timed(&mut || wrapped.run().map_err(|e| e.to_string()));
    let mut bare_step = || timed(&mut *user_run);
    let outcome = (|| -> Result<(), String> {
        for step in [
            &mut harness_step as &mut dyn FnMut() -> Result<u64, String>,
            &mut bare_step,
        ] {
            block(step, a.warmup_time, 1)?;
        }
        eprintln!(
            "[selfcheck] {name}: {} rounds of {} per loop",
            a.rounds,
            humantime::format_duration(a.block)
        );
        for round in 0..a.rounds {
            // ABBA: the order swaps every round.
            let first_harness = round % 2 == 0;
            let (mut h, mut b) = (Vec::new(), Vec::new());
            for harness_turn in [first_harness, !first_harness] {
                if harness_turn {
                    h = block(&mut harness_step, a.block, 3)?;
                } else {
                    b = block(&mut bare_step, a.block, 3)?;
                }
            }
            if let (Some(mh), Some(mb)) = (median(&h), median(&b)) {
                c.round_ratios.push(mh / mb);
            }
            c.harness.ns.extend(h);
            c.bare.ns.extend(b);
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        c.error = Some(format!("inference failed: {e}"));
    }
    for side in [&mut c.harness, &mut c.bare] {
        side.samples = side.ns.len();
        side.p50_ms = median(&side.ns).map(|m| m / 1e6);
    }
    if let Some((ratio, lo, hi)) = mean_ratio_ci(&c.round_ratios) {
        c.ratio = Some(ratio);
        c.ratio_ci95 = Some((lo, hi));
        let w = a.agree_within;
        c.verdict = Some(if lo >= 1.0 - w && hi <= 1.0 + w {
            Verdict::Agrees
        } else if lo > 1.0 + w || hi < 1.0 - w {
            Verdict::Differs
        } else {
            Verdict::Inconclusive
        });
    }
    c
}

/// Whether the harness's figure is the user's, within `--agree-within`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The ratio's interval lies inside 1 +- the limit.
    Agrees,
    /// The interval lies wholly outside it.
    Differs,
    /// Too noisy to tell: the interval straddles the limit (more --rounds).
    Inconclusive,
}

/// The geometric mean of the rounds' ratios and its 95% interval (Student's t on the logs):
/// the rounds, not the samples, are the independent units, since samples within a block
/// share the machine's state of the moment.
fn mean_ratio_ci(ratios: &[f64]) -> Option<(f64, f64, f64)> {
    let logs: Vec<f64> = ratios
        .iter()
        .filter(|r| r.is_finite() && **r > 0.0)
        .map(|r| r.ln())
        .collect();
    let n = logs.len();
    if n < 3 {
        return None;
    }
    let mean = logs.iter().sum::<f64>() / n as f64;
    let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t975(n - 1) * (var / n as f64).sqrt();
    Some((mean.exp(), (mean - half).exp(), (mean + half).exp()))
}

/// Student's t, two-sided 95%, for `df` degrees of freedom.
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        d if d <= 30 => T[d - 1],
        d if d <= 60 => 2.00,
        _ => 1.96,
    }
}

/// One inference of a loop, its outputs dropped.
type Step = Box<dyn FnMut() -> Result<(), String>>;

/// Runs `step` for `time` and at least `min` times; the durations.
fn block(
    step: &mut dyn FnMut() -> Result<u64, String>,
    time: Duration,
    min: usize,
) -> Result<Vec<u64>, String> {
    let t = Instant::now();
    let mut out = Vec::new();
    while out.len() < min || t.elapsed() < time {
        out.push(step()?);
    }
    Ok(out)
}

fn median(ns: &[u64]) -> Option<f64> {
    if ns.is_empty() {
        return None;
    }
    let mut v = ns.to_vec();
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0
    })
}

/// The table for the terminal.
pub fn to_table(r: &Report) -> String {
    let mut s = format!(
        "{:<27} {:>12} {:>10} {:>8} {:>8}  {:>17}  {}\n",
        "runtime (user loop)",
        "harness p50",
        "user p50",
        "samples",
        "ratio",
        "95% interval",
        "verdict"
    );
    for c in &r.checks {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3} ms"));
        let w = r.agree_within * 100.0;
        let (interval, agrees) = match (c.ratio_ci95, c.verdict) {
            (Some((lo, hi)), Some(v)) => (
                format!("{lo:.3} - {hi:.3}"),
                match v {
                    Verdict::Agrees => format!("agrees (within {w:.0}%)"),
                    Verdict::Differs => format!("DIFFERS (beyond {w:.0}%)"),
                    Verdict::Inconclusive => "inconclusive (too noisy: raise --rounds)".to_string(),
                },
            ),
            _ => ("-".into(), c.error.clone().unwrap_or_else(|| "-".into())),
        };
        s += &format!(
            "{:<27} {:>12} {:>10} {:>8} {:>8}  {:>17}  {}\n",
            format!("{} ({})", c.runtime, c.user_loop),
            ms(c.harness.p50_ms),
            ms(c.bare.p50_ms),
            format!("{}/{}", c.harness.samples, c.bare.samples),
            c.ratio.map_or("-".into(), |v| format!("{v:.3}")),
            interval,
            agrees
        );
    }
    s += &format!(
        "batch {}, seq {}, {} thread(s), {} rounds of {} per loop; ratio = harness / user, the geometric mean over rounds (below 1: the harness is faster than the user's loop)\n",
        r.batch,
        r.seq.map_or("-".into(), |s| s.to_string()),
        r.threads,
        r.rounds,
        humantime::format_duration(Duration::from_secs_f64(r.block_s)),
    );
    for c in &r.checks {
        if !c.recipe.is_empty() {
            s += &format!("  {}\n", c.recipe);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_comes_from_the_rounds() {
        // Rounds around 0.9 with some spread: the interval holds 0.9 and excludes 1.
        let r = [0.88, 0.91, 0.90, 0.93, 0.89, 0.90, 0.92, 0.87];
        let (m, lo, hi) = mean_ratio_ci(&r).unwrap();
        assert!((m - 0.8997).abs() < 1e-3, "{m}");
        assert!(lo < 0.9 && 0.9 < hi && hi < 1.0, "{lo} {hi}");
        // Identical rounds: a point interval.
        let (m, lo, hi) = mean_ratio_ci(&[1.02; 5]).unwrap();
        assert!((m - 1.02).abs() < 1e-12 && (hi - lo).abs() < 1e-12);
        // Wider spread, fewer rounds: a wider interval.
        let (_, lo2, hi2) = mean_ratio_ci(&r[..4]).unwrap();
        assert!(hi2 - lo2 > hi - lo);
        assert!(mean_ratio_ci(&[1.0, 1.1]).is_none());
        assert_eq!(t975(11), 2.201);
    }
}
