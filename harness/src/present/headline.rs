//! The answer first: for each group of rows that differ only by runtime (same device,
//! variant, batch, sequence, threads and load), the runtimes ranked by median latency, each
//! with its ratio to the fastest and that ratio's 95% interval; then where each runtime wins
//! across groups, and by how much; then each lower-precision variant's speed-up over fp32
//! beside the accuracy it kept; then the serving tax of served rows (latency added, throughput
//! lost); then the runtimes that failed parity or were skipped.
//!
//! The interval of a ratio of two medians comes from their own intervals (order statistics,
//! `stats::median_ratio_ci`): on a log scale each interval's half-width is 1.96 standard
//! errors, and the two add in quadrature. It is the noise within this run; separate runs of one build also drift by a
//! few percent (see `harness diff --min-change`).

use super::distinct;
use crate::analysis::serving_tax;
use crate::results::{ParityStatus, Results, ScenarioResult, ScenarioStatus};
use crate::stats::{median_ratio_ci, LatencyStats};

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

/// What the headline's figures are, said once before it.
pub const INTRO: &str = "Medians: each runtime against the fastest of its group, variants against fp32, served against in-process; in brackets the ratio's 95% interval (this run's noise; separate runs also drift by a few percent)";

/// A row measured well enough to be compared: its median and the median's interval.
fn measured(s: &ScenarioResult) -> Option<&LatencyStats> {
    let l = &s.measurement.as_ref()?.latency;
    (s.status == ScenarioStatus::Ok
        && l.samples >= MIN_SAMPLES
        && l.p50_ms > 0.0
        && l.median_ci95_low_ms > 0.0)
        .then_some(l)
}

/// Below this many samples a median has no 95% interval from order statistics (its ranks
/// fall outside the sample): such a row is not ranked.
const MIN_SAMPLES: u64 = 6;

/// The settings of a row but its runtime and variant: `b1 s128 t2` (and the load or the
/// device when not one closed-loop worker on the CPU).
fn settings_label(s: &ScenarioResult) -> String {
    let mut label = format!("b{}", s.batch);
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
    label
}

/// What the rows of a group share (everything but the runtime), and a readable label.
pub fn key(s: &ScenarioResult) -> (String, String) {
    let key = format!(
        "{}|{}|{}|{:?}|{}|{}|{}|{:?}|{:?}",
        s.device, s.variant, s.batch, s.seq, s.threads, s.concurrency, s.mode, s.rate, s.shapes
    );
    (key, format!("{} {}", s.variant, settings_label(s)))
}

/// The groups with two or more measured runtimes, in the order of their first row. Served
/// rows are left out (the serving tax is their comparison).
pub fn groups(r: &Results) -> Vec<Group> {
    // Per group: each measured row's runtime and latency.
    type Rows<'a> = Vec<(&'a str, &'a LatencyStats)>;
    let mut order: Vec<(String, String, Rows)> = Vec::new();
    for s in r.scenarios.iter().filter(|s| s.served.is_none()) {
        let Some(l) = measured(s) else {
            continue;
        };
        let (k, label) = key(s);
        let row = (s.runtime.as_str(), l);
        match order.iter_mut().find(|(o, _, _)| *o == k) {
            Some((_, _, rows)) => rows.push(row),
            None => order.push((k, label, vec![row])),
        }
    }
    order
        .into_iter()
        .filter(|(_, _, rows)| rows.len() > 1)
        .map(|(_, label, mut rows)| {
            rows.sort_by(|a, b| a.1.p50_ms.total_cmp(&b.1.p50_ms));
            let fastest = rows[0].1;
            let ranked = rows
                .iter()
                .enumerate()
                .map(|(i, &(rt, l))| {
                    let (ratio, low, high) = if i == 0 {
                        (1.0, 1.0, 1.0)
                    } else {
                        median_ratio_ci(fastest, l).expect("measured rows have intervals")
                    };
                    Ranked {
                        runtime: rt.to_string(),
                        p50_ms: l.p50_ms,
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
    let runtimes = distinct(r.scenarios.iter().map(|s| s.runtime.as_str()).filter(|rt| {
        groups
            .iter()
            .any(|g| g.ranked.iter().any(|x| x.runtime == *rt))
    }));
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

/// A lower-precision variant against fp32 of the same runtime and settings: the speed-up
/// (fp32's median over the variant's) with its 95% interval, beside the accuracy the
/// variant kept (its lowest cosine to the parity reference).
#[derive(Debug, Clone, PartialEq)]
pub struct VariantGain {
    /// `ort b1 s128 t2`.
    pub label: String,
    pub variant: String,
    pub speedup: f64,
    pub low: f64,
    pub high: f64,
    pub cosine: Option<f64>,
    pub parity: ParityStatus,
    pub cosine_required: Option<f64>,
}

impl VariantGain {
    /// `1.42x faster [1.38, 1.46]`, `1.10x slower [1.05, 1.15]`, `no faster within noise
    /// (1.01x [0.97, 1.05])`.
    fn speed(&self) -> String {
        if self.low > 1.0 {
            format!(
                "{:.2}x faster [{:.2}, {:.2}]",
                self.speedup, self.low, self.high
            )
        } else if self.high < 1.0 {
            format!(
                "{:.2}x slower [{:.2}, {:.2}]",
                1.0 / self.speedup,
                1.0 / self.high,
                1.0 / self.low
            )
        } else {
            format!(
                "no faster within noise ({:.2}x [{:.2}, {:.2}])",
                self.speedup, self.low, self.high
            )
        }
    }

    /// `cosine 0.999912`, `cosine 0.995410: parity FAIL (needs 0.999)`.
    fn accuracy(&self) -> String {
        match (self.parity, self.cosine) {
            (ParityStatus::Fail, Some(c)) => format!(
                "cosine {c:.6}: parity FAIL{}",
                self.cosine_required
                    .map(|m| format!(" (needs {m})"))
                    .unwrap_or_default()
            ),
            (ParityStatus::Fail, None) => "parity FAIL".into(),
            (_, Some(c)) => format!("cosine {c:.6}"),
            (_, None) => "accuracy not compared".into(),
        }
    }
}

/// Every variant row beside its fp32 twin (same runtime and settings), in the run's order.
pub fn variant_gains(r: &Results) -> Vec<VariantGain> {
    r.scenarios
        .iter()
        .filter(|v| v.served.is_none() && v.variant != "fp32" && v.variant != "served")
        .filter_map(|v| {
            let lv = measured(v)?;
            let base = r.scenarios.iter().find(|b| {
                b.variant == "fp32" && b.served.is_none() && b.same_settings_but_variant(v)
            })?;
            let (speedup, low, high) = median_ratio_ci(lv, measured(base)?)?;
            Some(VariantGain {
                label: format!("{} {}", v.runtime, settings_label(v)),
                variant: v.variant.clone(),
                speedup,
                low,
                high,
                cosine: v.parity.min_cosine,
                parity: v.parity.status,
                cosine_required: v.parity.min_cosine_required,
            })
        })
        .collect()
}

/// One line per runtime and settings with variants: `ort b1 s128 t2 against fp32: fp16
/// 1.42x faster [1.38, 1.46] at cosine 0.999912; int8 ...`.
pub fn variant_lines(gains: &[VariantGain]) -> Vec<String> {
    distinct(gains.iter().map(|g| g.label.as_str()))
        .iter()
        .map(|label| {
            let parts: Vec<String> = gains
                .iter()
                .filter(|g| g.label == *label)
                .map(|g| format!("{} {} at {}", g.variant, g.speed(), g.accuracy()))
                .collect();
            format!("{label} against fp32: {}", parts.join("; "))
        })
        .collect()
}

/// One line per variant across several runtimes and settings: where it is faster and by
/// how much, and the lowest accuracy it kept.
fn variant_across(gains: &[VariantGain]) -> Vec<String> {
    let mut lines = Vec::new();
    if distinct(gains.iter().map(|g| g.label.as_str())).len() > 1 {
        for v in distinct(gains.iter().map(|g| g.variant.as_str())) {
            let of: Vec<&VariantGain> = gains.iter().filter(|g| g.variant == v).collect();
            let faster: Vec<f64> = of
                .iter()
                .filter(|g| g.low > 1.0)
                .map(|g| g.speedup)
                .collect();
            let slower = of.iter().filter(|g| g.high < 1.0).count();
            let mut parts = vec![];
            if !faster.is_empty() {
                let (lo, hi) = faster
                    .iter()
                    .fold((f64::INFINITY, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
                parts.push(if hi - lo < 0.005 {
                    format!("faster in {} ({lo:.2}x)", faster.len())
                } else {
                    format!("faster in {} ({lo:.2}x to {hi:.2}x)", faster.len())
                });
            }
            if slower > 0 {
                parts.push(format!("slower in {slower}"));
            }
            let same = of.len() - faster.len() - slower;
            if same > 0 {
                parts.push(format!("no faster within noise in {same}"));
            }
            let worst = of
                .iter()
                .filter_map(|g| g.cosine)
                .fold(f64::INFINITY, f64::min);
            let fails = of.iter().filter(|g| g.parity == ParityStatus::Fail).count();
            let acc = if worst.is_finite() {
                format!("; lowest cosine {worst:.6}")
            } else {
                String::new()
            };
            let fails = if fails > 0 {
                format!(", parity FAIL in {fails}")
            } else {
                String::new()
            };
            lines.push(format!(
                "{v} against fp32 across {} scenarios: {}{acc}{fails}",
                of.len(),
                parts.join(", ")
            ));
        }
    }
    lines
}

/// The serving tax of each served row (`compare --served`): latency added at the median,
/// as a ratio with its interval, and the throughput lost at the same load.
pub fn serving_lines(r: &Results) -> Vec<String> {
    serving_tax(r)
        .iter()
        .map(|t| {
            let ratio = t
                .p50_ratio
                .map(|(x, lo, hi)| format!(", {x:.2}x [{lo:.2}, {hi:.2}] the in-process median"))
                .unwrap_or_default();
            let lost = if t.in_process_per_s > 0.0 {
                format!(" ({:+.1}%)", (t.served_per_s / t.in_process_per_s - 1.0) * 100.0)
            } else {
                String::new()
            };
            let beyond = t
                .beyond_compute_ms
                .map(|b| format!("; {b:.3} ms beyond the server's compute"))
                .unwrap_or_default();
            format!(
                "serving tax of {} over {}: p50 {:+.3} ms ({} -> {} ms{ratio}); throughput {:.1} -> {:.1} items/s{lost}{beyond}{}",
                t.scenario,
                if t.protocol.is_empty() { "the network" } else { &t.protocol },
                t.served_p50_ms - t.in_process_p50_ms,
                ms(t.in_process_p50_ms),
                ms(t.served_p50_ms),
                t.in_process_per_s,
                t.served_per_s,
                t.interleaved_part()
            )
        })
        .collect()
}

/// The serving tax across several served rows: the range of latency added and of
/// throughput lost.
fn serving_across(r: &Results) -> Option<String> {
    let tax = serving_tax(r);
    if tax.len() < 2 {
        return None;
    }
    let range = |v: Vec<f64>, f: &dyn Fn(f64) -> String| {
        let (lo, hi) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        format!("{} to {}", f(lo), f(hi))
    };
    let mut protocols: Vec<&str> = tax.iter().map(|t| t.protocol.as_str()).collect();
    protocols.sort_unstable();
    protocols.dedup();
    let tax: Vec<_> = tax.iter().filter(|t| t.in_process_p50_ms > 0.0).collect();
    if tax.len() < 2 {
        return None;
    }
    let added = range(
        tax.iter()
            .map(|t| t.served_p50_ms - t.in_process_p50_ms)
            .collect(),
        &|v| format!("{v:+.3} ms"),
    );
    let ratio = range(
        tax.iter()
            .map(|t| t.served_p50_ms / t.in_process_p50_ms)
            .collect(),
        &|v| format!("{v:.2}x"),
    );
    let lost: Vec<f64> = tax
        .iter()
        .filter(|t| t.in_process_per_s > 0.0)
        .map(|t| (1.0 - t.served_per_s / t.in_process_per_s) * 100.0)
        .collect();
    let lost = if lost.is_empty() {
        String::new()
    } else {
        format!(
            "; throughput {} lower",
            range(lost, &|v| format!("{v:.1}%"))
        )
    };
    Some(format!(
        "serving tax across {} scenarios over {}: p50 {added} ({ratio} the in-process median){lost}",
        tax.len(),
        protocols.join(", ")
    ))
}

/// Per-scenario lines of a kind (variants, served) the headline lists in full up to this
/// many; past it, the line across them stands in the headline and the full list follows in
/// its own section.
pub const HEADLINE_DETAIL_MAX: usize = 4;

/// The headline: one line per group, then the runtimes across groups, the variants against
/// fp32, the serving tax, then parity failures and skipped runtimes. Empty when no group has
/// two runtimes, no variant or served row has its twin, and nothing failed.
pub fn headline(r: &Results) -> Vec<String> {
    let groups = groups(r);
    let mut lines: Vec<String> = groups.iter().map(Group::line).collect();
    if groups.len() > 1 {
        lines.push(across(r, &groups));
    }
    let gains = variant_gains(r);
    let per_variant = variant_lines(&gains);
    if per_variant.len() <= HEADLINE_DETAIL_MAX {
        lines.extend(per_variant);
    }
    lines.extend(variant_across(&gains));
    let served = serving_lines(r);
    if served.len() <= HEADLINE_DETAIL_MAX {
        lines.extend(served);
    }
    lines.extend(serving_across(r));
    lines.extend(crate::analysis::capacity_lost(r).iter().map(|c| c.line()));
    let failing = |s: &&ScenarioResult| s.parity.status == ParityStatus::Fail;
    for rt in distinct(
        r.scenarios
            .iter()
            .filter(failing)
            .map(|s| s.runtime.as_str()),
    ) {
        let n = r
            .scenarios
            .iter()
            .filter(failing)
            .filter(|s| s.runtime == rt)
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
    let errors = distinct(
        r.scenarios
            .iter()
            .filter(|s| matches!(s.status, ScenarioStatus::Error | ScenarioStatus::Failed))
            .map(|s| s.runtime.as_str()),
    );
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
        variant_row(runtime, "fp32", batch, ms, spread, n)
    }

    fn variant_row(
        runtime: &str,
        variant: &str,
        batch: usize,
        ms: f64,
        spread: f64,
        n: u64,
    ) -> ScenarioResult {
        let id = ScenarioId::InProcess {
            runtime: runtime.into(),
            device: "cpu".into(),
            variant: variant.into(),
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
            device: None,
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

    #[test]
    fn variants_state_their_speed_up_beside_the_accuracy_they_kept() {
        let mut fp16 = variant_row("ort", "fp16", 1, 8.0, 0.01, 1000);
        fp16.parity.min_cosine = Some(0.999_91);
        let mut int8 = variant_row("ort", "int8", 1, 10.1, 0.3, 100);
        int8.parity.status = ParityStatus::Fail;
        int8.parity.min_cosine = Some(0.9954);
        int8.parity.min_cosine_required = Some(0.999);
        let r = results(vec![row("ort", 1, 10.0, 0.01, 1000), fp16, int8]);
        let g = variant_gains(&r);
        assert_eq!(g.len(), 2);
        assert!((g[0].speedup - 1.25).abs() < 0.01, "{:?}", g[0]);
        assert!(g[0].low > 1.2 && g[0].high < 1.3, "{:?}", g[0]);
        let h = headline(&r);
        let line = h
            .iter()
            .find(|l| l.starts_with("ort b1 s128 t2 against fp32: "))
            .unwrap_or_else(|| panic!("{h:#?}"));
        assert!(
            line.contains("fp16 1.25x faster [1.2") && line.contains("at cosine 0.999910"),
            "{line}"
        );
        assert!(
            line.contains("int8 no faster within noise (0.99x [")
                && line.contains("cosine 0.995400: parity FAIL (needs 0.999)"),
            "{line}"
        );
    }

    #[test]
    fn a_slower_variant_says_so_and_many_groups_get_one_line_per_variant() {
        let r = results(vec![
            row("ort", 1, 10.0, 0.01, 1000),
            variant_row("ort", "fp16", 1, 12.5, 0.01, 1000),
            row("ort", 8, 80.0, 0.01, 1000),
            variant_row("ort", "fp16", 8, 40.0, 0.01, 1000),
        ]);
        let h = headline(&r);
        assert!(
            h.iter()
                .any(|l| l.starts_with("ort b1 s128 t2 against fp32: fp16 1.25x slower [")),
            "{h:#?}"
        );
        assert!(
            h.iter()
                .any(|l| l
                    == "fp16 against fp32 across 2 scenarios: faster in 1 (2.00x), slower in 1"),
            "{h:#?}"
        );
    }

    #[test]
    fn the_serving_tax_is_latency_added_and_throughput_lost() {
        let inproc = row("ort", 1, 10.0, 0.01, 1000);
        let mut served = variant_row("ort", "served", 1, 11.0, 0.01, 1000);
        served.served = Some(crate::results::ServedInfo {
            target: "http://127.0.0.1:1".into(),
            protocol: "kserve-http".into(),
            model: "m".into(),
            encoding: Some("binary".into()),
            request_bytes: 100,
            connects: 1,
            client_cores_busy: None,
            client_cpus: 2,
            client_saturated: false,
            server_metrics: Default::default(),
            server_avg_batch: None,
            server_queue_ms_per_request: None,
            server_compute_ms_per_request: None,
            metrics_error: None,
            prompt_tokens_per_request: None,
            streaming: None,
            client_limited: None,
            engine: None,
            replay: None,
            breakdown: None,
        });
        let mut inproc = inproc;
        inproc.throughput_per_s = Some(100.0);
        served.throughput_per_s = Some(90.0);
        let r = results(vec![inproc, served]);
        let h = headline(&r);
        assert_eq!(h.len(), 1, "{h:#?}");
        assert!(
            h[0].starts_with(
                "serving tax of ort/cpu/fp32/b1/s128/t2 over kserve-http: p50 +1.000 ms (10.00 -> 11.00 ms, 1.10x [1.1"
            ) && h[0].ends_with("throughput 100.0 -> 90.0 items/s (-10.0%)"),
            "{h:#?}"
        );
    }
}
