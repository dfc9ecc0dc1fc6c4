//! `harness diff BASE NEW`: per scenario, the ratio of medians and of p99s between two
//! results folders, with a verdict that respects the noise each run recorded; first a
//! headline (what got slower or faster, by how much, how sure: [`headline`]), and Markdown
//! ready for a pull request ([`to_markdown`]).
//!
//! The verdict compares the 95% confidence intervals of the two medians (order statistics,
//! no assumption about the distribution): NEW is `slower` when its interval lies wholly
//! above BASE's and the medians differ by more than `--min-change` (default 3%), `faster`
//! in the mirror case, and `same` otherwise ("within noise"). Intervals that do not overlap
//! correspond to a difference significant well beyond the 5% level within the runs; the
//! minimum change covers what the intervals cannot see, the variation between separate runs
//! (processes, memory layout, neighbours on a shared machine).
//!
//! The tail gets the same treatment: p90 and p99 are judged from each run's HdrHistogram
//! (so results written by earlier versions diff too) with distribution-free 95% intervals
//! of the quantile, the order statistics at binomial ranks ([`stats::quantile_ci_ranks`]).
//! A run with too few samples for both ends of an interval (36 for p90, 368 for p99) gets
//! `too few samples` and the count needed. `--fail-above` gates on the median only; the
//! tail verdicts are reported, never a failure.

use std::fmt::Write as _;

use serde::Serialize;

use crate::results::{LatencyStats, ScenarioResult};
use crate::stats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Faster,
    Slower,
    Same,
    /// In one run only, or not measured in one of them.
    Unmatched,
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Faster => "faster",
            Verdict::Slower => "slower",
            Verdict::Same => "same (within noise)",
            Verdict::Unmatched => "not comparable",
        }
    }
}

/// The verdict on one tail percentile (p90, p99).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TailVerdict {
    #[serde(rename = "faster")]
    Faster,
    #[serde(rename = "slower")]
    Slower,
    #[serde(rename = "same")]
    Same,
    /// A run has too few samples for a 95% interval of the percentile.
    #[serde(rename = "too few samples")]
    TooFewSamples,
}

/// One tail percentile of a scenario pair, from the two runs' histograms: the values at
/// the nearest rank, their 95% intervals (order statistics; `None` when the run has too few
/// samples) and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct TailDiff {
    /// Samples in each run's histogram.
    pub base_samples: u64,
    pub new_samples: u64,
    pub base_ms: f64,
    pub new_ms: f64,
    pub base_ci95_low_ms: Option<f64>,
    pub base_ci95_high_ms: Option<f64>,
    pub new_ci95_low_ms: Option<f64>,
    pub new_ci95_high_ms: Option<f64>,
    /// (NEW / BASE - 1) in percent: above 0 is slower.
    pub change_pct: f64,
    pub verdict: TailVerdict,
    /// With `too few samples`: the samples each run needs for the interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples_needed: Option<u64>,
    /// With `too few samples`: "p99 needs at least 368 samples per run for a 95% interval;
    /// base has 120".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl TailDiff {
    /// "base has 120", "base has 120, new has 80": the runs without an interval.
    fn short_runs(&self) -> String {
        let short =
            |run: &str, n: u64, low: Option<f64>| low.is_none().then(|| format!("{run} has {n}"));
        [
            short("base", self.base_samples, self.base_ci95_low_ms),
            short("new", self.new_samples, self.new_ci95_low_ms),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
    }

    /// The table cell: "slower (+10.2%)", "same", "too few samples (needs 368/run; base has
    /// 120)".
    fn label(&self) -> String {
        match self.verdict {
            TailVerdict::Faster | TailVerdict::Slower => format!(
                "{} ({:+.1}%)",
                if self.verdict == TailVerdict::Faster {
                    "faster"
                } else {
                    "slower"
                },
                self.change_pct
            ),
            TailVerdict::Same => "same".into(),
            TailVerdict::TooFewSamples => format!(
                "too few samples (needs {}/run; {})",
                self.samples_needed.unwrap_or_default(),
                self.short_runs()
            ),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffRow {
    pub id: String,
    /// The scenario's runtime (NEW's name when `--ignore runtime` paired two).
    pub runtime: String,
    pub base_p50_ms: Option<f64>,
    pub new_p50_ms: Option<f64>,
    /// new / base: above 1 is slower.
    pub p50_ratio: Option<f64>,
    /// The 95% interval of `p50_ratio`, from the two medians' intervals
    /// (`stats::median_ratio_ci`): this pair of runs' noise.
    pub p50_ratio_ci95_low: Option<f64>,
    pub p50_ratio_ci95_high: Option<f64>,
    pub base_p99_ms: Option<f64>,
    pub new_p99_ms: Option<f64>,
    pub p99_ratio: Option<f64>,
    pub verdict: Verdict,
    pub note: Option<String>,
    /// The p90 and p99 verdicts; `None` (null) when the pair is not comparable or a run's
    /// histogram is missing.
    pub p90: Option<TailDiff>,
    pub p99: Option<TailDiff>,
}

/// What pairs a BASE scenario with a NEW one: every setting but those ignored.
fn key(s: &ScenarioResult, ignore: &[String]) -> String {
    let has = |a: &str| ignore.iter().any(|i| i == a);
    let mut parts = vec![];
    if !has("runtime") {
        parts.push(s.runtime.clone());
    }
    parts.push(s.device.clone());
    if !has("variant") {
        parts.push(s.variant.clone());
    }
    if !has("batch") {
        parts.push(format!("b{}", s.batch));
    }
    parts.push(s.seq.map(|q| format!("s{q}")).unwrap_or_default());
    if !has("threads") {
        parts.push(format!("t{}", s.threads));
    }
    if !has("concurrency") {
        parts.push(format!("{}{}", s.mode, s.concurrency));
    }
    parts.push(s.rate.map(|r| format!("@{r}")).unwrap_or_default());
    parts.join("/")
}

/// The axes `--ignore` accepts.
pub const AXES: [&str; 5] = ["runtime", "variant", "batch", "threads", "concurrency"];

/// Pairs scenarios with the same settings (but for the `ignore`d axes: `--ignore threads`
/// compares a 1-thread run with a 2-thread run) and judges each pair.
pub fn diff(
    base: &[ScenarioResult],
    new: &[ScenarioResult],
    min_change: f64,
    ignore: &[String],
) -> Vec<DiffRow> {
    diff_with(base, new, min_change, min_change, ignore)
}

/// [`diff`] with a smallest change of its own for the tails (p90, p99): the tail moves
/// more than the median between separate runs of one build.
pub fn diff_with(
    base: &[ScenarioResult],
    new: &[ScenarioResult],
    min_change: f64,
    tail_min_change: f64,
    ignore: &[String],
) -> Vec<DiffRow> {
    let mut rows = Vec::new();
    let label = |b: &ScenarioResult, n: &ScenarioResult| {
        if b.id == n.id {
            b.id.clone()
        } else {
            format!("{} -> {}", b.id, n.id)
        }
    };
    for b in base {
        let n = new.iter().find(|n| key(n, ignore) == key(b, ignore));
        let id = n.map(|n| label(b, n)).unwrap_or_else(|| b.id.clone());
        rows.push(judge(&id, Some(b), n, min_change, tail_min_change));
    }
    for n in new
        .iter()
        .filter(|n| !base.iter().any(|b| key(b, ignore) == key(n, ignore)))
    {
        rows.push(judge(&n.id, None, Some(n), min_change, tail_min_change));
    }
    rows
}

fn judge(
    id: &str,
    base: Option<&ScenarioResult>,
    new: Option<&ScenarioResult>,
    min_change: f64,
    tail_min_change: f64,
) -> DiffRow {
    let lat = |s: Option<&ScenarioResult>| {
        s.and_then(|s| s.measurement.as_ref())
            .map(|m| m.latency.clone())
            .filter(|l| l.samples > 0)
    };
    let (lb, ln) = (lat(base), lat(new));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => Some(b / a),
        _ => None,
    };
    let ci = match (&lb, &ln) {
        (Some(b), Some(n)) => stats::median_ratio_ci(b, n),
        _ => None,
    };
    let mut row = DiffRow {
        id: id.to_string(),
        runtime: new.or(base).map(|s| s.runtime.clone()).unwrap_or_default(),
        p50_ratio_ci95_low: ci.map(|c| c.1),
        p50_ratio_ci95_high: ci.map(|c| c.2),
        base_p50_ms: lb.as_ref().map(|l| l.p50_ms),
        new_p50_ms: ln.as_ref().map(|l| l.p50_ms),
        p50_ratio: ratio(lb.as_ref().map(|l| l.p50_ms), ln.as_ref().map(|l| l.p50_ms)),
        base_p99_ms: lb.as_ref().map(|l| l.p99_ms),
        new_p99_ms: ln.as_ref().map(|l| l.p99_ms),
        p99_ratio: ratio(lb.as_ref().map(|l| l.p99_ms), ln.as_ref().map(|l| l.p99_ms)),
        verdict: Verdict::Unmatched,
        note: None,
        p90: None,
        p99: None,
    };
    let (Some(b), Some(n)) = (lb, ln) else {
        row.note = Some(match (base, new) {
            (None, _) => "only in NEW".into(),
            (_, None) => "only in BASE".into(),
            _ => "not measured in both runs".into(),
        });
        return row;
    };
    let r = n.p50_ms / b.p50_ms;
    let big_enough = (r - 1.0).abs() > min_change;
    row.verdict = if n.median_ci95_low_ms > b.median_ci95_high_ms && big_enough {
        Verdict::Slower
    } else if n.median_ci95_high_ms < b.median_ci95_low_ms && big_enough {
        Verdict::Faster
    } else {
        Verdict::Same
    };
    if b.is_low("p99") || n.is_low("p99") {
        row.note = Some("p99 has too few samples in one run".into());
    }
    row.p90 = tail("p90", 90.0, &b, &n, tail_min_change);
    row.p99 = tail("p99", 99.0, &b, &n, tail_min_change);
    row
}

/// Judges the percentile `p` like the median: NEW's 95% interval wholly above BASE's and the
/// change beyond `min_change` is `slower`, the mirror `faster`, else `same`. From the
/// histograms, so that value and intervals are at the same (3-digit) precision; `None` when
/// a histogram does not decode or is empty.
fn tail(
    name: &str,
    p: f64,
    base: &LatencyStats,
    new: &LatencyStats,
    min_change: f64,
) -> Option<TailDiff> {
    let hist = |l: &LatencyStats| stats::decode_histogram(&l.histogram).filter(|h| !h.is_empty());
    let (hb, hn) = (hist(base)?, hist(new)?);
    let ms = |ns: u64| ns as f64 / 1e6;
    let point =
        |h: &hdrhistogram::Histogram<u64>| ms(stats::value_at_rank(h, stats::rank(h.len(), p)));
    let ci = |h: &hdrhistogram::Histogram<u64>| {
        stats::quantile_ci_ranks(h.len(), p / 100.0).map(|(lo, hi)| {
            (
                ms(stats::value_at_rank(h, lo)),
                ms(stats::value_at_rank(h, hi)),
            )
        })
    };
    let (base_ms, new_ms) = (point(&hb), point(&hn));
    if base_ms <= 0.0 {
        return None;
    }
    let change = new_ms / base_ms - 1.0;
    let (cb, cn) = (ci(&hb), ci(&hn));
    let mut t = TailDiff {
        base_samples: hb.len(),
        new_samples: hn.len(),
        base_ms,
        new_ms,
        base_ci95_low_ms: cb.map(|c| c.0),
        base_ci95_high_ms: cb.map(|c| c.1),
        new_ci95_low_ms: cn.map(|c| c.0),
        new_ci95_high_ms: cn.map(|c| c.1),
        change_pct: change * 100.0,
        verdict: TailVerdict::Same,
        samples_needed: None,
        note: None,
    };
    let big_enough = change.abs() > min_change;
    match (cb, cn) {
        (Some((_, b_hi)), Some((n_lo, _))) if n_lo > b_hi && big_enough => {
            t.verdict = TailVerdict::Slower
        }
        (Some((b_lo, _)), Some((_, n_hi))) if n_hi < b_lo && big_enough => {
            t.verdict = TailVerdict::Faster
        }
        (Some(_), Some(_)) => {}
        _ => {
            let needed = stats::quantile_ci_samples_needed(p / 100.0);
            t.verdict = TailVerdict::TooFewSamples;
            t.samples_needed = Some(needed);
            t.note = Some(format!(
                "{name} needs at least {needed} samples per run for a 95% interval; {}",
                t.short_runs()
            ));
        }
    }
    Some(t)
}

fn cell(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

fn ratio_cell(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}x")).unwrap_or_else(|| "-".into())
}

const HEAD: [&str; 10] = [
    "scenario",
    "base p50 ms",
    "new p50 ms",
    "p50 ratio",
    "base p99 ms",
    "new p99 ms",
    "p99 ratio",
    "verdict",
    "p90 verdict",
    "p99 verdict",
];

/// The columns left-aligned (text); the others are numbers.
fn text_column(i: usize) -> bool {
    i == 0 || i >= 7
}

fn tail_cell(t: &Option<TailDiff>) -> String {
    t.as_ref()
        .map(TailDiff::label)
        .unwrap_or_else(|| "-".into())
}

fn cells(r: &DiffRow) -> Vec<String> {
    vec![
        r.id.clone(),
        cell(r.base_p50_ms),
        cell(r.new_p50_ms),
        ratio_cell(r.p50_ratio),
        cell(r.base_p99_ms),
        cell(r.new_p99_ms),
        ratio_cell(r.p99_ratio),
        match &r.note {
            Some(n) => format!("{} ({n})", r.verdict.label()),
            None => r.verdict.label().to_string(),
        },
        tail_cell(&r.p90),
        tail_cell(&r.p99),
    ]
}

/// What the two runs are: their paths and where and from what they ran.
#[derive(Debug, Clone, Default)]
pub struct Sides {
    pub base: String,
    pub new: String,
    /// `Intel(R) Xeon(R) Processor, commit 1c58f54 (dirty), started 2026-11-30T20:50:52Z`.
    pub base_about: String,
    pub new_about: String,
    /// `--min-change` as a fraction.
    pub min_change: f64,
}

/// The answer first: how many scenarios got slower, faster or stayed the same, which moved
/// and by how much (ratio of medians with its 95% interval), the change per runtime, and
/// the p99 verdicts.
#[derive(Debug, Clone, PartialEq)]
pub struct Headline {
    /// `2 slower, 1 faster, 13 the same (of 16 scenarios)`.
    pub summary: String,
    pub lines: Vec<String>,
}

/// The most of each kind (slower, faster) the headline names one by one (all of them when
/// there is just one more).
const NAMED: usize = 5;

fn ratio_text(r: &DiffRow) -> String {
    match (r.p50_ratio, r.p50_ratio_ci95_low, r.p50_ratio_ci95_high) {
        (Some(x), Some(lo), Some(hi)) => format!("{x:.3}x [{lo:.3}, {hi:.3}]"),
        (Some(x), _, _) => format!("{x:.3}x"),
        _ => "-".into(),
    }
}

/// The headline of a diff (see [`Headline`]).
pub fn headline(rows: &[DiffRow], min_change: f64) -> Headline {
    let by = |v: Verdict| -> Vec<&DiffRow> { rows.iter().filter(|r| r.verdict == v).collect() };
    let key = |r: &&DiffRow| r.p50_ratio.unwrap_or(1.0);
    let mut slower = by(Verdict::Slower);
    slower.sort_by(|a, b| key(b).total_cmp(&key(a)));
    let mut faster = by(Verdict::Faster);
    faster.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let same = by(Verdict::Same);
    let unmatched = by(Verdict::Unmatched);
    let mut summary = format!(
        "{} slower, {} faster, {} the same",
        slower.len(),
        faster.len(),
        same.len()
    );
    if !unmatched.is_empty() {
        let count = |what: &str| {
            unmatched
                .iter()
                .filter(|r| r.note.as_deref() == Some(what))
                .count()
        };
        let (b, n) = (count("only in BASE"), count("only in NEW"));
        let mut parts = Vec::new();
        if b > 0 {
            parts.push(format!("{b} only in BASE"));
        }
        if n > 0 {
            parts.push(format!("{n} only in NEW"));
        }
        if unmatched.len() > b + n {
            parts.push(format!("{} not measured in both", unmatched.len() - b - n));
        }
        summary += &format!(
            ", {} not comparable ({})",
            unmatched.len(),
            parts.join(", ")
        );
    }
    summary += &format!(" (of {} scenarios)", rows.len());
    let mut lines = Vec::new();
    for (kind, list) in [("slower", &slower), ("faster", &faster)] {
        // Name them all when one more line would only count one.
        let named = if list.len() > NAMED + 1 {
            NAMED
        } else {
            list.len()
        };
        for r in list.iter().take(named) {
            lines.push(format!(
                "{kind}: {} {} (p50 {} -> {} ms)",
                r.id,
                ratio_text(r),
                cell(r.base_p50_ms),
                cell(r.new_p50_ms)
            ));
        }
        if list.len() > named {
            lines.push(format!(
                "{kind}: {} more, from {} to {} (see the table)",
                list.len() - named,
                ratio_text(list[named]),
                ratio_text(list[list.len() - 1])
            ));
        }
    }
    if let Some(r) = same
        .iter()
        .max_by(|a, b| (key(a) - 1.0).abs().total_cmp(&(key(b) - 1.0).abs()))
    {
        lines.push(format!(
            "the same: the largest change, {} {:+.1}% ({}), is within noise or under --min-change {:.0}%",
            r.id,
            (key(r) - 1.0) * 100.0,
            ratio_text(r),
            min_change * 100.0
        ));
    }
    // Per runtime: the geometric mean of its median ratios, with the interval from each
    // ratio's (independent runs, standard errors on the log scale).
    let judged: Vec<&DiffRow> = rows
        .iter()
        .filter(|r| r.verdict != Verdict::Unmatched && r.p50_ratio_ci95_low.is_some())
        .collect();
    let runtimes = super::distinct(judged.iter().map(|r| r.runtime.as_str()));
    if judged.len() > runtimes.len() {
        let each: Vec<String> = runtimes
            .iter()
            .map(|rt| {
                let of: Vec<&&DiffRow> = judged.iter().filter(|r| r.runtime == *rt).collect();
                let k = of.len() as f64;
                let mean = of.iter().map(|r| key(r).ln()).sum::<f64>() / k;
                let var: f64 = of
                    .iter()
                    .map(|r| {
                        let (lo, hi) = (
                            r.p50_ratio_ci95_low.unwrap_or(1.0),
                            r.p50_ratio_ci95_high.unwrap_or(1.0),
                        );
                        stats::log_se95(lo, hi).powi(2)
                    })
                    .sum();
                let w = stats::Z95 * var.sqrt() / k;
                format!(
                    "{rt} {:.3}x [{:.3}, {:.3}] over {}",
                    mean.exp(),
                    (mean - w).exp(),
                    (mean + w).exp(),
                    of.len()
                )
            })
            .collect();
        lines.push(format!(
            "by runtime (geometric mean of the median ratios, 95% interval): {}",
            each.join("; ")
        ));
    }
    let tails: Vec<&TailDiff> = rows.iter().filter_map(|r| r.p99.as_ref()).collect();
    if !tails.is_empty() {
        let n = |v: TailVerdict| tails.iter().filter(|t| t.verdict == v).count();
        let worst = rows
            .iter()
            .filter_map(|r| r.p99.as_ref().map(|t| (r, t)))
            .filter(|(_, t)| t.verdict == TailVerdict::Slower)
            .max_by(|a, b| a.1.change_pct.total_cmp(&b.1.change_pct))
            .map(|(r, t)| format!(" (most: {} {:+.1}%)", r.id, t.change_pct))
            .unwrap_or_default();
        let mut parts = Vec::new();
        for (v, what) in [
            (TailVerdict::Slower, format!("slower{worst}")),
            (TailVerdict::Faster, "faster".to_string()),
            (TailVerdict::Same, "the same".to_string()),
            (
                TailVerdict::TooFewSamples,
                format!(
                    "with too few samples for an interval ({} a run)",
                    stats::quantile_ci_samples_needed(0.99)
                ),
            ),
        ] {
            if n(v) > 0 {
                parts.push(format!("{} {what}", n(v)));
            }
        }
        lines.push(format!("p99: {}", parts.join(", ")));
    }
    Headline { summary, lines }
}

/// Ready to paste into a pull request: the headline, every scenario in a folded table, and
/// what each run was.
pub fn to_markdown(rows: &[DiffRow], sides: &Sides) -> String {
    let h = headline(rows, sides.min_change);
    let mut out = format!(
        "### Latency: `{}` (NEW) against `{}` (BASE)\n\n**{}**. Medians, ratio = NEW / BASE with its 95% interval; a change counts when the intervals do not overlap and it is over {:.0}%.\n\n",
        sides.new,
        sides.base,
        h.summary,
        sides.min_change * 100.0
    );
    for l in &h.lines {
        let _ = writeln!(out, "- {}", l.replace('|', "\\|"));
    }
    let _ = writeln!(
        out,
        "\n<details><summary>Every scenario ({})</summary>\n",
        rows.len()
    );
    let _ = writeln!(out, "| {} |", HEAD.join(" | "));
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|---|---|");
    for r in rows {
        let _ = writeln!(out, "| {} |", cells(r).join(" | "));
    }
    let _ = writeln!(out, "\n</details>\n");
    let _ = writeln!(out, "BASE `{}`: {}  ", sides.base, sides.base_about);
    let _ = writeln!(out, "NEW `{}`: {}", sides.new, sides.new_about);
    out
}

/// The terminal output: the headline, then the table.
pub fn to_text(rows: &[DiffRow], min_change: f64) -> String {
    let h = headline(rows, min_change);
    let mut out = format!("NEW against BASE: {}\n", h.summary);
    for l in &h.lines {
        let _ = writeln!(out, "  {l}");
    }
    out.push('\n');
    out + &to_table(rows)
}

/// The same as aligned text for a terminal.
pub fn to_table(rows: &[DiffRow]) -> String {
    let all: Vec<Vec<String>> = std::iter::once(HEAD.iter().map(|s| s.to_string()).collect())
        .chain(rows.iter().map(cells))
        .collect();
    let mut widths = vec![0; HEAD.len()];
    for r in &all {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in &all {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let w = widths[i];
                if text_column(i) {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// Scenarios slower than `fail_above` (a fraction: 0.05 = 5%) with a `slower` verdict.
pub fn regressions(rows: &[DiffRow], fail_above: f64) -> Vec<&DiffRow> {
    rows.iter()
        .filter(|r| {
            r.verdict == Verdict::Slower && r.p50_ratio.is_some_and(|x| x > 1.0 + fail_above)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Row;
    use crate::measure::LoadMode;
    use crate::results::{
        LatencyStats, Measurement, ScenarioId, ScenarioStatus, StopReason, Tolerance,
    };

    fn scenario(id: &str, samples: &[u64]) -> ScenarioResult {
        let mut s = scenario_of("ort", 1, samples);
        s.id = id.into();
        s
    }

    /// A scenario of `runtime` at `batch` (its id `runtime/bN`).
    fn scenario_of(runtime: &str, batch: usize, samples: &[u64]) -> ScenarioResult {
        let sid = ScenarioId::InProcess {
            runtime: runtime.into(),
            device: "cpu".into(),
            variant: "fp32".into(),
            batch,
            seq: Some(8),
            threads: 1,
            load: None,
        };
        let mut r = Row::blank(
            &sid,
            &LoadMode::ClosedLoop { concurrency: 1 },
            Tolerance::default(),
        );
        r.id = format!("{runtime}/b{batch}");
        r.status = ScenarioStatus::Ok;
        r.measurement = Some(Measurement {
            device: None,
            first_inference_ms: 0.0,
            warmup_iterations: 0,
            warmup_ms: 0.0,
            latency: LatencyStats::from_samples(samples),
            window_s: 1.0,
            iterations: samples.len() as u64,
            failures: 0,
            in_flight_at_end: 0,
            failure_kinds: Default::default(),
            stop_reason: StopReason::MinimaMet,
            stable: None,
            share_s: None,
            warmup_end: None,
        });
        r
    }

    /// A deterministic spread of +-`noise` around `center` ns (a sawtooth).
    fn spread(center: f64, noise: f64, n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| (center * (1.0 + noise * ((i % 101) as f64 / 50.0 - 1.0))) as u64)
            .collect()
    }

    #[test]
    fn identical_runs_are_the_same() {
        let a = spread(1e6, 0.05, 1000);
        let rows = diff(&[scenario("x", &a)], &[scenario("x", &a)], 0.01, &[]);
        assert_eq!(rows[0].verdict, Verdict::Same);
        assert!((rows[0].p50_ratio.unwrap() - 1.0).abs() < 1e-12);
        assert!(regressions(&rows, 0.0).is_empty());
    }

    #[test]
    fn a_ten_percent_shift_is_slower_or_faster() {
        let base = spread(1e6, 0.05, 1000);
        let slow = spread(1.1e6, 0.05, 1000);
        let rows = diff(&[scenario("x", &base)], &[scenario("x", &slow)], 0.01, &[]);
        assert_eq!(rows[0].verdict, Verdict::Slower);
        assert!((rows[0].p50_ratio.unwrap() - 1.1).abs() < 0.01);
        assert_eq!(regressions(&rows, 0.05).len(), 1);
        assert!(regressions(&rows, 0.2).is_empty());
        let rows = diff(&[scenario("x", &slow)], &[scenario("x", &base)], 0.01, &[]);
        assert_eq!(rows[0].verdict, Verdict::Faster);
    }

    #[test]
    fn a_shift_inside_the_noise_is_the_same() {
        // +-40% spread and a few samples: a 3% shift of the median is not evidence.
        let base = spread(1e6, 0.4, 60);
        let new = spread(1.03e6, 0.4, 60);
        let rows = diff(&[scenario("x", &base)], &[scenario("x", &new)], 0.01, &[]);
        assert_eq!(rows[0].verdict, Verdict::Same);
        assert!(rows[0].p50_ratio.unwrap() > 1.02);
        // And a significant but tiny change is below --min-change.
        let base = spread(1e6, 0.001, 5000);
        let new = spread(1.005e6, 0.001, 5000);
        let rows = diff(&[scenario("x", &base)], &[scenario("x", &new)], 0.01, &[]);
        assert_eq!(rows[0].verdict, Verdict::Same);
    }

    #[test]
    fn ignoring_an_axis_pairs_across_it() {
        let a = spread(2e6, 0.02, 1000);
        let b = spread(1e6, 0.02, 1000);
        let mut t1 = scenario("ort/cpu/fp32/b1/s8/t1", &a);
        t1.threads = 1;
        let mut t2 = scenario("ort/cpu/fp32/b1/s8/t2", &b);
        t2.threads = 2;
        let rows = diff(&[t1.clone()], &[t2.clone()], 0.01, &[]);
        assert_eq!(rows.len(), 2);
        let rows = diff(&[t1], &[t2], 0.01, &["threads".to_string()]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, "ort/cpu/fp32/b1/s8/t1 -> ort/cpu/fp32/b1/s8/t2");
        assert_eq!(rows[0].verdict, Verdict::Faster);
        assert!((rows[0].p50_ratio.unwrap() - 0.5).abs() < 0.01);
    }

    #[test]
    fn unmatched_scenarios_are_listed() {
        let a = spread(1e6, 0.05, 100);
        let mut y = scenario("y", &a);
        y.batch = 2;
        let rows = diff(&[scenario("x", &a)], &[y], 0.01, &[]);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.verdict == Verdict::Unmatched));
        assert_eq!(rows[0].note.as_deref(), Some("only in BASE"));
        assert_eq!(rows[1].note.as_deref(), Some("only in NEW"));
        let md = to_markdown(&rows, &Sides::default());
        assert!(md.contains("| x | 0.999 | - | - |"), "{md}");
        assert!(md.contains("not comparable (only in BASE)"), "{md}");
        // Nothing to judge in the tail either.
        assert!(rows.iter().all(|r| r.p90.is_none() && r.p99.is_none()));
        assert!(
            md.contains("not comparable (only in BASE) | - | - |"),
            "{md}"
        );
    }

    /// `base` with every sample above its 95th percentile `factor` times longer: the median
    /// and p90 untouched, p99 moved by `factor`.
    fn tail_scaled(base: &[u64], factor: f64) -> Vec<u64> {
        let mut sorted = base.to_vec();
        sorted.sort_unstable();
        let p95 = crate::stats::nearest_rank(&sorted, 95.0);
        base.iter()
            .map(|&x| {
                if x > p95 {
                    (x as f64 * factor) as u64
                } else {
                    x
                }
            })
            .collect()
    }

    #[test]
    fn identical_runs_have_the_same_tails() {
        let a = spread(1e6, 0.05, 5000);
        let rows = diff(&[scenario("x", &a)], &[scenario("x", &a)], 0.01, &[]);
        for t in [&rows[0].p90, &rows[0].p99] {
            let t = t.as_ref().unwrap();
            assert_eq!(t.verdict, TailVerdict::Same);
            assert_eq!(t.change_pct, 0.0);
            assert_eq!(t.samples_needed, None);
            let (lo, hi) = (t.base_ci95_low_ms.unwrap(), t.base_ci95_high_ms.unwrap());
            assert!(lo <= t.base_ms && t.base_ms <= hi, "{t:?}");
        }
        // p99 of a +-5% sawtooth around 1 ms: about 1.049 ms.
        assert!((rows[0].p99.as_ref().unwrap().base_ms - 1.049).abs() < 0.002);
        let table = to_table(&rows);
        let line: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
        assert!(
            line.ends_with(&["same", "(within", "noise)", "same", "same"]),
            "{table}"
        );
    }

    #[test]
    fn a_ten_percent_shift_of_the_tail_alone_is_slower_at_p99_only() {
        let base = spread(1e6, 0.05, 5000);
        let slow = tail_scaled(&base, 1.1);
        let rows = diff(&[scenario("x", &base)], &[scenario("x", &slow)], 0.03, &[]);
        let r = &rows[0];
        // The median: unchanged, and judged so.
        assert_eq!(r.verdict, Verdict::Same);
        assert_eq!(r.p50_ratio, Some(1.0));
        assert_eq!(r.p90.as_ref().unwrap().verdict, TailVerdict::Same);
        let p99 = r.p99.as_ref().unwrap();
        assert_eq!(p99.verdict, TailVerdict::Slower, "{p99:?}");
        assert!((p99.change_pct - 10.0).abs() < 0.5, "{p99:?}");
        assert!(p99.new_ci95_low_ms.unwrap() > p99.base_ci95_high_ms.unwrap());
        assert!(to_markdown(&rows, &Sides::default()).contains("| same | slower (+10.0%) |"));
        // The tail is not a gate: --fail-above judges the median.
        assert!(regressions(&rows, 0.0).is_empty());
        // The mirror is faster; the same shift below --min-change is the same.
        let rows = diff(&[scenario("x", &slow)], &[scenario("x", &base)], 0.03, &[]);
        assert_eq!(rows[0].p99.as_ref().unwrap().verdict, TailVerdict::Faster);
        let rows = diff(&[scenario("x", &base)], &[scenario("x", &slow)], 0.2, &[]);
        assert_eq!(rows[0].p99.as_ref().unwrap().verdict, TailVerdict::Same);
    }

    #[test]
    fn a_heavy_tail_needs_more_samples_to_show_the_same_shift() {
        // Pareto (alpha = 2) quantiles from 1 ms: p99 = 10 ms, and the tail so sparse that
        // 400 samples put p99 anywhere between about 5 and 30 ms.
        let pareto = |n: usize| -> Vec<u64> {
            (0..n)
                .map(|i| (1e6 / (1.0 - (i as f64 + 0.5) / n as f64).sqrt()) as u64)
                .collect()
        };
        let verdict = |n| {
            let base = pareto(n);
            let slow = tail_scaled(&base, 1.1);
            let rows = diff(&[scenario("x", &base)], &[scenario("x", &slow)], 0.03, &[]);
            assert_eq!(rows[0].verdict, Verdict::Same);
            let p99 = rows[0].p99.clone().unwrap();
            assert!((p99.change_pct - 10.0).abs() < 0.5, "{p99:?}");
            p99.verdict
        };
        assert_eq!(verdict(400), TailVerdict::Same);
        assert_eq!(verdict(100_000), TailVerdict::Slower);
    }

    #[test]
    fn too_few_samples_for_the_p99_interval_names_the_count_needed() {
        let a = spread(1e6, 0.05, 50);
        let b = spread(1e6, 0.05, 1000);
        let rows = diff(&[scenario("x", &a)], &[scenario("x", &b)], 0.01, &[]);
        let p99 = rows[0].p99.as_ref().unwrap();
        assert_eq!(p99.verdict, TailVerdict::TooFewSamples);
        assert_eq!(p99.samples_needed, Some(368));
        assert_eq!(p99.base_ci95_low_ms, None);
        assert!(p99.new_ci95_low_ms.is_some());
        assert_eq!(
            p99.note.as_deref(),
            Some("p99 needs at least 368 samples per run for a 95% interval; base has 50")
        );
        // 50 samples are enough for p90's interval (36).
        let p90 = rows[0].p90.as_ref().unwrap();
        assert_ne!(p90.verdict, TailVerdict::TooFewSamples);
        assert_eq!(p90.samples_needed, None);
        let table = to_table(&rows);
        assert!(
            table.contains("too few samples (needs 368/run; base has 50)"),
            "{table}"
        );
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[0]["p99"]["verdict"], "too few samples");
        assert_eq!(json[0]["p99"]["samples_needed"], 368);
        assert_eq!(json[0]["p99"]["base_ci95_low_ms"], serde_json::Value::Null);
        assert!(json[0]["p90"].get("samples_needed").is_none());
        // Both runs short: both named.
        let rows = diff(&[scenario("x", &a)], &[scenario("x", &a)], 0.01, &[]);
        let note = rows[0].p99.as_ref().unwrap().note.clone().unwrap();
        assert!(note.ends_with("base has 50, new has 50"), "{note}");
    }

    #[test]
    fn the_headline_says_what_moved_by_how_much_and_how_sure() {
        // ort: one scenario 20% slower, one the same; tract: one 25% faster; one scenario
        // only in BASE.
        let tight = |c: f64| spread(c, 0.01, 2000);
        let base = vec![
            scenario_of("ort", 1, &tight(1e6)),
            scenario_of("ort", 2, &tight(2e6)),
            scenario_of("tract", 1, &tight(4e6)),
            scenario_of("tract", 2, &tight(4e6)),
            scenario_of("candle", 1, &tight(4e6)),
        ];
        let new = vec![
            scenario_of("ort", 1, &tight(1.2e6)),
            scenario_of("ort", 2, &tight(2.01e6)),
            scenario_of("tract", 1, &tight(3e6)),
            scenario_of("tract", 2, &tight(3e6)),
        ];
        let rows = diff(&base, &new, 0.03, &[]);
        let row = |id: &str| rows.iter().find(|r| r.id == id).unwrap();
        let a = row("ort/b1");
        let (lo, hi) = (
            a.p50_ratio_ci95_low.unwrap(),
            a.p50_ratio_ci95_high.unwrap(),
        );
        assert!(lo < 1.2 && 1.2 < hi && hi / lo < 1.01, "{lo} {hi}");
        let h = headline(&rows, 0.03);
        assert_eq!(
            h.summary,
            "1 slower, 2 faster, 1 the same, 1 not comparable (1 only in BASE) (of 5 scenarios)"
        );
        assert!(
            h.lines[0].starts_with("slower: ort/b1 1.200x [1.19"),
            "{h:#?}"
        );
        assert!(h.lines[0].ends_with("(p50 1.000 -> 1.200 ms)"), "{h:#?}");
        assert!(
            h.lines[1].starts_with("faster: tract/b1 0.750x [0.74"),
            "{h:#?}"
        );
        assert!(
            h.lines[3].starts_with("the same: the largest change, ort/b2 +0.5% (1.005x ["),
            "{h:#?}"
        );
        let by = &h.lines[4];
        assert!(
            by.starts_with("by runtime (geometric mean of the median ratios, 95% interval): ort 1.098x [1.098, 1.099] over 2; "),
            "{by}"
        );
        assert!(by.contains("; tract 0.750x [0.750, 0.750]"), "{by}");
        assert!(by.ends_with("over 2"), "{by}");
        // 2,000 samples: p99 intervals, and the 20% shift is past --tail-min-change.
        assert!(
            h.lines[5].starts_with("p99: 1 slower (most: ort/b1 +20."),
            "{h:#?}"
        );

        let md = to_markdown(
            &rows,
            &Sides {
                base: "runs/base".into(),
                new: "runs/new".into(),
                base_about: "cpu A".into(),
                new_about: "cpu B".into(),
                min_change: 0.03,
            },
        );
        assert!(md.starts_with(
            "### Latency: `runs/new` (NEW) against `runs/base` (BASE)\n\n**1 slower, 2 faster"
        ));
        assert!(md.contains("\n- slower: ort/b1 1.200x ["), "{md}");
        assert!(md.contains("<details><summary>Every scenario (5)</summary>\n\n| scenario |"));
        assert!(
            md.ends_with("BASE `runs/base`: cpu A  \nNEW `runs/new`: cpu B\n"),
            "{md}"
        );
    }

    #[test]
    fn many_movers_are_named_up_to_five_then_counted() {
        let base: Vec<ScenarioResult> = (0..8)
            .map(|i| scenario_of("ort", i, &spread(1e6, 0.01, 1000)))
            .collect();
        let new: Vec<ScenarioResult> = (0..8)
            .map(|i| scenario_of("ort", i, &spread(1e6 * (1.1 + i as f64 / 10.0), 0.01, 1000)))
            .collect();
        let h = headline(&diff(&base, &new, 0.03, &[]), 0.03);
        assert_eq!(h.summary, "8 slower, 0 faster, 0 the same (of 8 scenarios)");
        // The largest first.
        assert!(h.lines[0].starts_with("slower: ort/b7 1.800x"), "{h:#?}");
        assert!(h.lines[4].starts_with("slower: ort/b3 1.400x"), "{h:#?}");
        assert!(
            h.lines[5].starts_with("slower: 3 more, from 1.300x [")
                && h.lines[5].contains("to 1.100x ["),
            "{h:#?}"
        );
    }
}
