//! The answer first: for each group of rows that differ only by runtime (same device,
//! variant, batch, sequence, threads and load), the runtimes ranked by median latency, each
//! with its ratio to the fastest and that ratio's 95% interval; then where each runtime wins
//! across groups, and by how much; then the runtimes that failed parity or were skipped.
//!
//! The interval of a ratio of two medians comes from their own intervals (order statistics):
//! on a log scale each interval's half-width is 1.96 standard errors, and the two add in
//! quadrature. It is the noise within this run; separate runs of one build also drift by a
//! few percent (see `harness diff --min-change`).

use crate::results::{ParityStatus, Results, ScenarioResult, ScenarioStatus};

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_964;

/// One runtime in a group, against the group's fastest.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub runtime: String,
    pub p50_ms: f64,
    /// Its median over the fastest's (1 for the fastest).
    pub ratio: f64,
    /// The ratio's 95% interval.
    pub low: f64,
    pub high: f64,
}

impl Ranked {
    /// Slower than the fastest beyond this run's noise.
    pub fn behind(&self) -> bool {
        self.low > 1.0
    }
}

/// The rows of one group, fastest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// What the rows share: `fp32 b1 s128 t2` (and the device or load when not the CPU and
    /// one closed-loop worker).
    pub label: String,
    pub ranked: Vec<Ranked>,
}

impl Group {
    /// `b1 s128 t2 fp32: ort fastest (12.91 ms); tract 2.29x [2.24, 2.34], ...`, or the
    /// runtimes tied with the fastest named as tied.
    pub fn line(&self) -> String {
        let first = &self.ranked[0];
        let tied: Vec<&Ranked> = self.ranked[1..].iter().filter(|r| !r.behind()).collect();
        let mut s = if tied.is_empty() {
            format!(
                "{}: {} fastest ({} ms)",
                self.label,
                first.runtime,
                ms(first.p50_ms)
            )
        } else {
            let names: Vec<&str> = std::iter::once(first.runtime.as_str())
                .chain(tied.iter().map(|r| r.runtime.as_str()))
                .collect();
            format!(
                "{}: {} tied within noise ({}; {} ms)",
                self.label,
                join_and(&names),
                tied.iter()
                    .map(|r| format!("{} {}", r.runtime, ratio(r)))
                    .collect::<Vec<_>>()
                    .join(", "),
                ms(first.p50_ms)
            )
        };
        let behind: Vec<String> = self.ranked[1..]
            .iter()
            .filter(|r| r.behind())
            .map(|r| format!("{} {}", r.runtime, ratio(r)))
            .collect();
        if !behind.is_empty() {
            s += &format!("; {}", behind.join(", "));
        }
        s
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// `2.29x [2.24, 2.34]`.
fn ratio(r: &Ranked) -> String {
    format!("{:.2}x [{:.2}, {:.2}]", r.ratio, r.low, r.high)
}

fn join_and(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The standard error of a median's log, from its 95% interval; None without one.
fn log_se(s: &ScenarioResult) -> Option<(f64, f64)> {
    let l = &s.measurement.as_ref()?.latency;
    if l.p50_ms <= 0.0 || l.median_ci95_low_ms <= 0.0 {
        return None;
    }
    let se = (l.median_ci95_high_ms.ln() - l.median_ci95_low_ms.ln()) / (2.0 * Z95);
    Some((l.p50_ms, se))
}

/// What the rows of a group share, and a readable label for it.
fn key(s: &ScenarioResult) -> (String, String) {
    let mut label = format!("{} b{}", s.variant, s.batch);
    if let Some(q) = s.seq {
        label += &format!(" s{q}");
    }
    label += &format!(" t{}", s.threads);
    match s.rate {
        Some(rate) => label += &format!(" open {rate}/s c{}", s.concurrency),
        None if s.concurrency != 1 => label += &format!(" c{}", s.concurrency),
        None => {}
    }
    if s.device != "cpu" {
        label += &format!(" on {}", s.device);
    }
    let key = format!(
        "{}|{}|{}|{:?}|{}|{}|{}|{:?}|{:?}",
        s.device, s.variant, s.batch, s.seq, s.threads, s.concurrency, s.mode, s.rate, s.shapes
    );
    (key, label)
}

/// The groups with two or more measured runtimes, in the order of their first row. Served
/// rows are left out (the serving tax is their comparison).
pub fn groups(r: &Results) -> Vec<Group> {
    let mut order: Vec<(String, String, Vec<&ScenarioResult>)> = Vec::new();
    for s in &r.scenarios {
        if s.served.is_some() || s.status != ScenarioStatus::Ok || log_se(s).is_none() {
            continue;
        }
        let (k, label) = key(s);
        match order.iter_mut().find(|(o, _, _)| *o == k) {
            Some((_, _, rows)) => rows.push(s),
            None => order.push((k, label, vec![s])),
        }
    }
    order
        .into_iter()
        .filter(|(_, _, rows)| rows.len() > 1)
        .map(|(_, label, rows)| {
            let mut pts: Vec<(&str, f64, f64)> = rows
                .iter()
                .filter_map(|s| log_se(s).map(|(p, se)| (s.runtime.as_str(), p, se)))
                .collect();
            pts.sort_by(|a, b| a.1.total_cmp(&b.1));
            let (_, fp, fse) = pts[0];
            let ranked = pts
                .iter()
                .map(|&(rt, p, se)| {
                    let ratio = p / fp;
                    let (low, high) = if rt == pts[0].0 {
                        (1.0, 1.0)
                    } else {
                        let w = Z95 * (se * se + fse * fse).sqrt();
                        (ratio * (-w).exp(), ratio * w.exp())
                    };
                    Ranked {
                        runtime: rt.to_string(),
                        p50_ms: p,
                        ratio,
                        low,
                        high,
                    }
                })
                .collect();
            Group { label, ranked }
        })
        .collect()
}

/// Across groups, one line: for each runtime (in the run's order), where it is fastest
/// (alone or tied) and how far behind it is elsewhere, at best and at worst.
fn across(r: &Results, groups: &[Group]) -> String {
    let mut runtimes: Vec<&str> = Vec::new();
    for s in &r.scenarios {
        let ranked = groups
            .iter()
            .any(|g| g.ranked.iter().any(|x| x.runtime == s.runtime));
        if ranked && !runtimes.contains(&s.runtime.as_str()) {
            runtimes.push(&s.runtime);
        }
    }
    let mut each = Vec::new();
    for rt in runtimes {
        let mut first = 0;
        let mut tied = 0;
        let mut leads: Vec<f64> = Vec::new();
        let mut behind: Vec<f64> = Vec::new();
        let mut seen = 0;
        for g in groups {
            let Some(i) = g.ranked.iter().position(|r| r.runtime == rt) else {
                continue;
            };
            seen += 1;
            let me = &g.ranked[i];
            if i == 0 {
                match g.ranked.get(1) {
                    Some(next) if next.behind() => {
                        first += 1;
                        leads.push(next.ratio);
                    }
                    _ => tied += 1,
                }
            } else if me.behind() {
                behind.push(me.ratio);
            } else {
                tied += 1;
            }
        }
        let range = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            if (hi - lo).abs() < 0.005 {
                format!("{lo:.2}x")
            } else {
                format!("{lo:.2}x to {hi:.2}x")
            }
        };
        let mut parts = Vec::new();
        if first > 0 {
            parts.push(format!(
                "fastest in {first} of {seen} (by {} over the next)",
                range(&leads)
            ));
        }
        if tied > 0 {
            parts.push(format!("tied for fastest in {tied}"));
        }
        if !behind.is_empty() {
            parts.push(format!(
                "{} the fastest's latency in {}",
                range(&behind),
                behind.len()
            ));
        }
        each.push(format!("{rt} {}", parts.join(", ")));
    }
    format!("across {} groups: {}", groups.len(), each.join("; "))
}

/// The headline: one line per group, then the runtimes across groups, then parity failures
/// and skipped runtimes. Empty when no group has two runtimes and nothing failed.
pub fn headline(r: &Results) -> Vec<String> {
    let groups = groups(r);
    let mut lines: Vec<String> = groups.iter().map(Group::line).collect();
    if groups.len() > 1 {
        lines.push(across(r, &groups));
    }
    let mut failed: Vec<String> = Vec::new();
    for s in &r.scenarios {
        if s.parity.status == ParityStatus::Fail && !failed.contains(&s.runtime) {
            failed.push(s.runtime.clone());
        }
    }
    for rt in &failed {
        let n = r
            .scenarios
            .iter()
            .filter(|s| &s.runtime == rt && s.parity.status == ParityStatus::Fail)
            .count();
        lines.push(format!(
            "parity FAIL: {rt} disagrees with the reference in {n} row(s): its figures answer a different question (see the notes)"
        ));
    }
    let skipped = r.runtimes_skipped();
    if !skipped.is_empty() {
        lines.push(format!(
            "not compared: {} cannot run this model here (every row skipped; reasons in the notes)",
            join_and(&skipped.iter().map(String::as_str).collect::<Vec<_>>())
        ));
    }
    let errors: Vec<&str> = {
        let mut v: Vec<&str> = Vec::new();
        for s in &r.scenarios {
            if matches!(s.status, ScenarioStatus::Error | ScenarioStatus::Failed)
                && !v.contains(&s.runtime.as_str())
            {
                v.push(&s.runtime);
            }
        }
        v
    };
    if !errors.is_empty() {
        lines.push(format!(
            "failed: {} had rows that did not run (see the notes)",
            join_and(&errors)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Row;
    use crate::measure::LoadMode;
    use crate::results::{LatencyStats, Measurement, ScenarioId, StopReason, Tolerance};

    /// A measured row: `n` samples spread evenly over +-`spread` (a fraction) around `ms`.
    fn row(runtime: &str, batch: usize, ms: f64, spread: f64, n: u64) -> ScenarioResult {
        let id = ScenarioId::InProcess {
            runtime: runtime.into(),
            device: "cpu".into(),
            variant: "fp32".into(),
            batch,
            seq: Some(128),
            threads: 2,
            load: None,
        };
        let mut r = Row::blank(
            &id,
            &LoadMode::ClosedLoop { concurrency: 1 },
            Tolerance::default(),
        );
        r.status = ScenarioStatus::Ok;
        r.parity.status = ParityStatus::Pass;
        let samples: Vec<u64> = (0..n)
            .map(|i| (ms * 1e6 * (1.0 + spread * (2.0 * i as f64 / (n - 1) as f64 - 1.0))) as u64)
            .collect();
        r.measurement = Some(Measurement {
            first_inference_ms: 0.0,
            warmup_iterations: 0,
            warmup_ms: 0.0,
            latency: LatencyStats::from_samples(&samples),
            window_s: 1.0,
            iterations: n,
            failures: 0,
            in_flight_at_end: 0,
            failure_kinds: Default::default(),
            stop_reason: StopReason::TargetCi,
            stable: Some(true),
            share_s: None,
            warmup_end: None,
        });
        r
    }

    fn results(rows: Vec<ScenarioResult>) -> Results {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/results-v1");
        let mut r = Results::read(&dir).unwrap();
        r.scenarios = rows;
        r
    }

    #[test]
    fn known_ratios_are_ranked_with_intervals_that_hold_them() {
        let r = results(vec![
            row("tract", 1, 20.0, 0.01, 1000),
            row("ort", 1, 10.0, 0.01, 1000),
            row("candle", 1, 30.0, 0.01, 1000),
        ]);
        let g = groups(&r);
        assert_eq!(g.len(), 1);
        let names: Vec<&str> = g[0].ranked.iter().map(|x| x.runtime.as_str()).collect();
        assert_eq!(names, ["ort", "tract", "candle"]);
        for (x, want) in g[0].ranked.iter().zip([1.0, 2.0, 3.0]) {
            assert!((x.ratio - want).abs() < 0.01, "{x:?}");
            assert!(x.low <= want && want <= x.high, "{x:?}");
            // Tight samples, a tight interval.
            assert!(x.high / x.low < 1.01, "{x:?}");
        }
        assert_eq!(g[0].label, "fp32 b1 s128 t2");
        let line = g[0].line();
        assert!(
            line.starts_with("fp32 b1 s128 t2: ort fastest (10.00 ms); tract 2.00x ["),
            "{line}"
        );
        assert!(line.contains("candle 3.00x ["), "{line}");
    }

    #[test]
    fn a_lead_inside_the_noise_is_a_tie() {
        // 1% apart with +-30% spreads over 100 samples: the interval holds 1.
        let r = results(vec![
            row("ort", 1, 10.0, 0.3, 100),
            row("tract", 1, 10.1, 0.3, 100),
            row("candle", 1, 30.0, 0.01, 100),
        ]);
        let g = groups(&r);
        let tract = &g[0].ranked[1];
        assert!(!tract.behind(), "{tract:?}");
        assert!(tract.low < 1.0 && tract.high > 1.0, "{tract:?}");
        let line = g[0].line();
        assert!(
            line.contains("ort and tract tied within noise (tract 1.01x ["),
            "{line}"
        );
        assert!(line.contains("; candle 3.01x ["), "{line}");
    }

    #[test]
    fn across_groups_each_runtime_says_where_it_wins_and_by_how_much() {
        let r = results(vec![
            row("ort", 1, 10.0, 0.01, 1000),
            row("tract", 1, 20.0, 0.01, 1000),
            row("ort", 8, 80.0, 0.01, 1000),
            row("tract", 8, 60.0, 0.01, 1000),
        ]);
        let h = headline(&r);
        assert_eq!(h.len(), 3, "{h:#?}");
        assert!(h[1].starts_with("fp32 b8 s128 t2: tract fastest"), "{h:#?}");
        assert_eq!(
            h[2],
            "across 2 groups: ort fastest in 1 of 2 (by 2.00x over the next), 1.33x the fastest's latency in 1; tract fastest in 1 of 2 (by 1.33x over the next), 2.00x the fastest's latency in 1"
        );
    }

    #[test]
    fn parity_failures_skips_and_errors_are_named_in_the_headline() {
        let mut bad = row("candle", 1, 30.0, 0.01, 100);
        bad.parity.status = ParityStatus::Fail;
        let mut skipped = row("candle-native", 1, 0.0, 0.0, 2);
        skipped.status = ScenarioStatus::Skipped;
        skipped.measurement = None;
        let mut failed = row("tract", 1, 0.0, 0.0, 2);
        failed.status = ScenarioStatus::Error;
        failed.measurement = None;
        let r = results(vec![row("ort", 1, 10.0, 0.01, 100), bad, skipped, failed]);
        let h = headline(&r);
        assert!(
            h[0].contains("ort fastest") && h[0].contains("candle 3.00x"),
            "{h:#?}"
        );
        assert!(
            h.iter()
                .any(|l| l.starts_with("parity FAIL: candle disagrees")),
            "{h:#?}"
        );
        assert!(
            h.iter()
                .any(|l| l.starts_with("not compared: candle-native")),
            "{h:#?}"
        );
        assert!(h.iter().any(|l| l.starts_with("failed: tract")), "{h:#?}");
    }

    #[test]
    fn a_single_runtime_has_no_ranking() {
        let r = results(vec![
            row("ort", 1, 10.0, 0.01, 100),
            row("ort", 8, 70.0, 0.01, 100),
        ]);
        assert!(headline(&r).is_empty());
    }
}
