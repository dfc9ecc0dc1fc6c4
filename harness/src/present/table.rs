//! The terminal table: aligned columns, then notes (errors, low-sample marks, monitors,
//! overhead). `summary.md` shares its rows and notes.

use std::fmt::Write as _;

use crate::analysis::serving_tax;
use crate::results::{ParityStatus, ResourceReport, Results, ScenarioResult, StopReason};

pub(super) fn f(x: f64, digits: usize) -> String {
    format!("{x:.digits$}")
}

pub(super) const MB: f64 = 1024.0 * 1024.0;

pub(super) fn mb(bytes: u64) -> f64 {
    bytes as f64 / MB
}

/// Milliseconds with three significant digits at least (0.0412, 15.8, 197.6).
fn ms_cell(v: f64) -> String {
    let a = v.abs();
    let digits = if a >= 100.0 {
        1
    } else if a >= 1.0 {
        2
    } else if a >= 0.1 {
        3
    } else {
        4
    };
    f(v, digits)
}

/// The percentiles the table shows.
const SHOWN: [&str; 3] = ["p50", "p90", "p99"];

/// A percentile cell: the value, with `*` when too few samples stand behind it.
fn pct(s: &ScenarioResult, name: &str, v: f64) -> String {
    let low = s
        .measurement
        .as_ref()
        .is_some_and(|m| m.latency.is_low(name));
    format!("{}{}", ms_cell(v), if low { "*" } else { "" })
}

pub(super) const TABLE_HEAD: [&str; 17] = [
    "runtime", "variant", "batch", "seq", "threads", "conc", "samples", "p50 ms", "p90 ms",
    "p99 ms", "items/s", "cores", "peak MB", "load ms", "max abs", "cosine", "parity",
];

pub(super) fn table_rows(r: &Results) -> Vec<Vec<String>> {
    r.scenarios
        .iter()
        .map(|s| {
            let mut row = vec![
                if s.device == "cpu" {
                    s.runtime.clone()
                } else {
                    format!("{} ({})", s.runtime, s.device)
                },
                s.variant.clone(),
                s.batch.to_string(),
                s.seq.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
                s.threads.to_string(),
                match (s.rate, &s.open_loop) {
                    (Some(_), Some(o)) => format!(
                        "{} @{}/s ({:.0}/s, {} late)",
                        s.concurrency, o.target_rate, o.achieved_rate, o.late_sends
                    ),
                    (Some(r), None) => format!("{} @{r}/s", s.concurrency),
                    _ => s.concurrency.to_string(),
                },
            ];
            let res = s.resources.as_ref();
            match &s.measurement {
                Some(m) => {
                    let l = &m.latency;
                    row.extend([
                        l.samples.to_string(),
                        pct(s, "p50", l.p50_ms),
                        pct(s, "p90", l.p90_ms),
                        pct(s, "p99", l.p99_ms),
                        f(s.throughput_per_s.unwrap_or(0.0), 1),
                        res.and_then(|r| r.avg_cores_busy)
                            .map(|x| f(x, 2))
                            .unwrap_or_else(|| "-".into()),
                        res.and_then(|r| r.peak_rss_bytes)
                            .map(|x| f(mb(x), 0))
                            .unwrap_or_else(|| "-".into()),
                        s.load_ms.map(|x| f(x, 1)).unwrap_or_else(|| "-".into()),
                    ]);
                }
                None => row.extend(std::iter::repeat_n("-".to_string(), 8)),
            }
            let shown = matches!(s.parity.status, ParityStatus::Pass | ParityStatus::Fail);
            row.push(match s.parity.max_abs_diff {
                Some(d) if shown => format!("{d:.1e}"),
                _ => "-".into(),
            });
            row.push(match s.parity.min_cosine {
                Some(c) if shown => format!("{c:.6}"),
                _ => "-".into(),
            });
            row.push(s.parity_label().to_string());
            row
        })
        .collect()
}

pub(super) fn footnotes(r: &Results) -> Vec<String> {
    let mut notes = Vec::new();
    if r.interrupted {
        notes.push(format!(
            "interrupted (Ctrl-C or SIGTERM): the {} scenarios above finished and are saved; the rest did not run",
            r.scenarios.len()
        ));
    }
    if r.nothing_measured() {
        notes.push(
            "nothing was measured: every scenario was skipped (the reasons follow)".to_string(),
        );
    }
    let skipped = r.runtimes_skipped();
    if !skipped.is_empty() && !r.nothing_measured() {
        notes.push(format!(
            "skipped: {} cannot run this model here (every row skipped; the reasons follow)",
            skipped.join(", ")
        ));
    }
    if r.scenarios.iter().any(|s| {
        s.measurement
            .as_ref()
            .is_some_and(|m| SHOWN.iter().any(|p| m.latency.is_low(p)))
    }) {
        notes.push(
            "* fewer than 5 samples at or beyond this percentile: raise --min-samples/--min-time for a figure to rely on"
                .to_string(),
        );
    }
    for s in &r.scenarios {
        if let Some(e) = &s.error {
            notes.push(format!("{}: {e}", s.id));
        } else if s.parity.status == ParityStatus::Fail {
            notes.push(format!(
                "{}: parity FAIL against {}: {}",
                s.id,
                s.parity.reference.as_deref().unwrap_or("?"),
                s.parity.note.as_deref().unwrap_or("")
            ));
        }
        if let Some(m) = &s.measurement {
            if m.stable == Some(false) {
                notes.push(format!("{}: {}", s.id, unstable_note(r, m)));
            }
            if m.in_flight_at_end > 0 {
                notes.push(format!(
                    "{}: {} still in flight when the window closed: their latencies, to their answers, are in the percentiles",
                    s.id, m.in_flight_at_end
                ));
            }
            if m.failures > 0 && s.error.is_none() {
                notes.push(format!(
                    "{}: {} failed inferences {:?}",
                    s.id, m.failures, m.failure_kinds
                ));
            }
            if let Some(d) = &m.device {
                notes.push(format!("{}: {}", s.id, device_note(d)));
            }
        }
    }
    if r.scenarios.iter().any(|s| {
        s.applied
            .get("profiling")
            .is_some_and(|p| p.starts_with("on"))
    }) {
        notes.push("ONNX Runtime's profiler was on (--ort-profile): the ort rows include its cost; traces in ort-profile/".into());
    }
    let monitored: Vec<&ResourceReport> = r
        .scenarios
        .iter()
        .filter_map(|s| s.resources.as_ref())
        .collect();
    if let Some(worst) = monitored
        .iter()
        .map(|m| m.monitor_cost.share_of_window)
        .reduce(f64::max)
    {
        let energy = match monitored
            .iter()
            .find_map(|m| m.energy_unavailable.as_deref())
        {
            Some(why) => format!("energy unavailable: {why}"),
            None => "energy from RAPL (package)".into(),
        };
        notes.push(format!(
            "monitors: cores = CPU time / wall time of the whole process; peak MB = peak resident memory in the window; own cost at most {:.3}% of a window; {energy}",
            worst * 100.0
        ));
    }
    if let Some(o) = &r.harness_overhead {
        notes.push(format!(
            "harness overhead per iteration (null runtime): p50 {:.0} ns, mean {:.0} ns",
            o.p50_ns, o.mean_ns
        ));
    }
    if let Some(reference) = r
        .scenarios
        .iter()
        .find(|s| s.parity.status == ParityStatus::Reference)
    {
        notes.push(format!(
            "parity reference: {} (atol {:e}, rtol {:e})",
            reference.runtime, r.settings.tolerance.atol, r.settings.tolerance.rtol
        ));
    }
    notes
}

/// The terminal output: the headline (which runtime, by how much, how sure), the table with
/// aligned columns, then notes (errors, low-sample marks, overhead).
pub fn to_table(r: &Results) -> String {
    let rows = table_rows(r);
    let mut widths: Vec<usize> = TABLE_HEAD.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let w = widths.get(i).copied().unwrap_or(0);
                if i == 0 || i == cells.len() - 1 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = String::new();
    let headline = super::headline::headline(r);
    if !headline.is_empty() {
        let _ = writeln!(out, "{}:", super::headline::INTRO);
        for h in &headline {
            let _ = writeln!(out, "  {h}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "{}", line(TABLE_HEAD.to_vec()));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row.iter().map(|s| s.as_str()).collect()));
    }
    let variants = super::headline::variant_lines(&super::headline::variant_gains(r));
    if variants.len() > super::headline::HEADLINE_DETAIL_MAX {
        let _ = writeln!(
            out,
            "\nvariants against fp32 (speed-up of medians, 95% interval; lowest cosine to the reference):"
        );
        for v in &variants {
            let _ = writeln!(out, "  {v}");
        }
    }
    let tax = serving_tax(r);
    if !tax.is_empty() {
        let _ = writeln!(
            out,
            "\nserving tax (KServe v2 HTTP on loopback vs in-process, same inputs):"
        );
        for t in &tax {
            let _ = writeln!(out, "  {}", t.line());
        }
    }
    let capacity = super::capacity_lines(r);
    if !capacity.is_empty() {
        let _ = writeln!(out, "\ncapacity (the highest open-loop rate meeting every objective; each probe is a row above):");
        for line in &capacity {
            let _ = writeln!(out, "  {line}");
        }
        for c in crate::analysis::capacity_lost(r) {
            let _ = writeln!(out, "  {}", c.line());
        }
    }
    for n in footnotes(r) {
        let _ = writeln!(out, "{n}");
    }
    out
}

/// Why a row's median is not known to the target, and what would get it there.
/// A GPU row's device time in one line: the stages' medians, or why there are none.
pub(super) fn device_note(d: &crate::results::DeviceTiming) -> String {
    let Some(total) = &d.total else {
        return format!("device time {}", d.status);
    };
    let mut line = format!("device time p50 {:.4} ms", total.p50_ms);
    let stages: Vec<String> = [
        ("copy in", &d.h2d),
        ("compute", &d.compute),
        ("copy out", &d.d2h),
    ]
    .into_iter()
    .filter_map(|(n, x)| x.as_ref().map(|x| format!("{n} {:.4}", x.p50_ms)))
    .collect();
    if d.h2d.is_some() {
        line += &format!(" ({})", stages.join(" + "));
    }
    if let Some(share) = d.device_share {
        line += &format!(", {:.0}% of the wall time", share * 100.0);
    }
    if let Some(w) = &d.warning {
        line += &format!("; WARNING: {w}");
    }
    line
}

fn unstable_note(r: &Results, m: &crate::results::Measurement) -> String {
    let l = &m.latency;
    let half = if l.p50_ms > 0.0 {
        (l.median_ci95_high_ms - l.median_ci95_low_ms) / 2.0 / l.p50_ms * 100.0
    } else {
        f64::INFINITY
    };
    let target = r
        .settings
        .target_ci_pct
        .map(|t| format!("+-{t}%"))
        .unwrap_or_else(|| "the --target-ci".into());
    let why = match m.stop_reason {
        StopReason::Budget => format!(
            "its share of --budget ({:.1} s with the warm-up) ran out",
            m.share_s.unwrap_or(0.0)
        ),
        StopReason::MaxTime => format!("--max-time ({} s) ran out", r.settings.max_time_s),
        StopReason::Interrupted => "the run was interrupted".into(),
        StopReason::Failures => "too many inferences failed in a row".into(),
        StopReason::MinimaMet | StopReason::TargetCi => "it stopped".into(),
    };
    // The interval narrows as 1/sqrt(n): what the target would take at this spread.
    let needed = match r.settings.target_ci_pct {
        Some(t) if half.is_finite() && l.samples > 0 && m.window_s > 0.0 => {
            let n = (l.samples as f64 * (half / t).powi(2)).ceil();
            format!(
                "; at this spread about {n:.0} samples ({:.0} s of window) would reach it: raise --budget or --max-time, or quiet the machine",
                n * m.window_s / l.samples as f64
            )
        }
        _ => String::new(),
    };
    format!(
        "unstable: median known to +-{half:.1}% ({:.4}-{:.4} ms, {} samples), not {target}, when {why}{needed}",
        l.median_ci95_low_ms, l.median_ci95_high_ms, l.samples
    )
}
