//! `harness diff BASE NEW`: per scenario, the ratio of medians and of p99s between two
//! results folders, with a verdict that respects the noise each run recorded.
//!
//! The verdict compares the 95% confidence intervals of the two medians (order statistics,
//! no assumption about the distribution): NEW is `slower` when its interval lies wholly
//! above BASE's and the medians differ by more than `--min-change` (default 3%), `faster`
//! in the mirror case, and `same` otherwise ("within noise"). Intervals that do not overlap
//! correspond to a difference significant well beyond the 5% level within the runs; the
//! minimum change covers what the intervals cannot see, the variation between separate runs
//! (processes, memory layout, neighbours on a shared machine).

use std::fmt::Write as _;

use serde::Serialize;

use crate::results::ScenarioResult;

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

#[derive(Debug, Clone, Serialize)]
pub struct DiffRow {
    pub id: String,
    pub base_p50_ms: Option<f64>,
    pub new_p50_ms: Option<f64>,
    /// new / base: above 1 is slower.
    pub p50_ratio: Option<f64>,
    pub base_p99_ms: Option<f64>,
    pub new_p99_ms: Option<f64>,
    pub p99_ratio: Option<f64>,
    pub verdict: Verdict,
    pub note: Option<String>,
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
        rows.push(judge(&id, Some(b), n, min_change));
    }
    for n in new
        .iter()
        .filter(|n| !base.iter().any(|b| key(b, ignore) == key(n, ignore)))
    {
        rows.push(judge(&n.id, None, Some(n), min_change));
    }
    rows
}

fn judge(
    id: &str,
    base: Option<&ScenarioResult>,
    new: Option<&ScenarioResult>,
    min_change: f64,
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
    let mut row = DiffRow {
        id: id.to_string(),
        base_p50_ms: lb.as_ref().map(|l| l.p50_ms),
        new_p50_ms: ln.as_ref().map(|l| l.p50_ms),
        p50_ratio: ratio(lb.as_ref().map(|l| l.p50_ms), ln.as_ref().map(|l| l.p50_ms)),
        base_p99_ms: lb.as_ref().map(|l| l.p99_ms),
        new_p99_ms: ln.as_ref().map(|l| l.p99_ms),
        p99_ratio: ratio(lb.as_ref().map(|l| l.p99_ms), ln.as_ref().map(|l| l.p99_ms)),
        verdict: Verdict::Unmatched,
        note: None,
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
    row
}

fn cell(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

fn ratio_cell(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}x")).unwrap_or_else(|| "-".into())
}

const HEAD: [&str; 8] = [
    "scenario",
    "base p50 ms",
    "new p50 ms",
    "p50 ratio",
    "base p99 ms",
    "new p99 ms",
    "p99 ratio",
    "verdict",
];

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
    ]
}

/// A Markdown table, ready for a pull request.
pub fn to_markdown(rows: &[DiffRow], base: &str, new: &str) -> String {
    let mut out =
        format!("Comparing `{new}` (NEW) against `{base}` (BASE); ratio = NEW / BASE.\n\n");
    let _ = writeln!(out, "| {} |", HEAD.join(" | "));
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let _ = writeln!(out, "| {} |", cells(r).join(" | "));
    }
    out
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
                if i == 0 || i == HEAD.len() - 1 {
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
        let sid = ScenarioId::InProcess {
            runtime: "ort".into(),
            device: "cpu".into(),
            variant: "fp32".into(),
            batch: 1,
            seq: Some(8),
            threads: 1,
            load: None,
        };
        let mut r = Row::blank(
            &sid,
            &LoadMode::ClosedLoop { concurrency: 1 },
            Tolerance::default(),
        );
        r.id = id.into();
        r.status = ScenarioStatus::Ok;
        r.measurement = Some(Measurement {
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
        let md = to_markdown(&rows, "a", "b");
        assert!(md.contains("| x | 0.999 | - | - |"), "{md}");
        assert!(md.contains("not comparable (only in BASE)"), "{md}");
    }
}
