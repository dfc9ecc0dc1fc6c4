//! `report.html`, rebuilt from results alone: one self-contained file, inline SVG, no script,
//! no network. (`harness report DIR...` merges folders first: see `analysis::merge`.)

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::results::ParityStatus;
use crate::results::{Results, ScenarioResult};
use crate::stats::decode_histogram;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

fn runtime_color(runtimes: &[String], name: &str) -> &'static str {
    let i = runtimes.iter().position(|r| r == name).unwrap_or(0);
    COLORS[i % COLORS.len()]
}

/// Bars of p50 per scenario, with marks at p90 and p99.
fn latency_chart(r: &Results, runtimes: &[String]) -> String {
    let rows: Vec<&ScenarioResult> = r
        .scenarios
        .iter()
        .filter(|s| s.measurement.is_some())
        .collect();
    if rows.is_empty() {
        return "<p>No scenario was measured.</p>".into();
    }
    let max = rows
        .iter()
        .filter_map(|s| s.measurement.as_ref())
        .map(|m| m.latency.p99_ms)
        .fold(0f64, f64::max)
        .max(1e-9);
    let (label_w, bar_w, row_h) = (300.0, 560.0, 22.0);
    let h = rows.len() as f64 * row_h + 40.0;
    let mut svg = format!(
        r#"<svg class="chart" id="latency" xmlns="http://www.w3.org/2000/svg" width="{}" height="{h}" role="img" aria-label="latency per scenario">"#,
        label_w + bar_w + 90.0
    );
    for (i, s) in rows.iter().enumerate() {
        let l = &s.measurement.as_ref().expect("filtered").latency;
        let y = 20.0 + i as f64 * row_h;
        let x = |v: f64| label_w + v / max * bar_w;
        let c = runtime_color(runtimes, &s.runtime);
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" font-size="12">{}</text><rect x="{label_w}" y="{}" width="{:.1}" height="{}" fill="{c}"><title>{}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms</title></rect><line x1="{:.1}" x2="{:.1}" y1="{}" y2="{}" stroke="black"/><line x1="{:.1}" x2="{:.1}" y1="{}" y2="{}" stroke="black" stroke-width="2"/><text x="{:.1}" y="{}" font-size="11">{:.3} ms</text>"#,
            label_w - 6.0,
            y + 13.0,
            esc(&s.id),
            y + 3.0,
            x(l.p50_ms) - label_w,
            row_h - 8.0,
            esc(&s.id),
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            x(l.p90_ms),
            x(l.p90_ms),
            y + 1.0,
            y + row_h - 3.0,
            x(l.p99_ms),
            x(l.p99_ms),
            y,
            y + row_h - 2.0,
            x(l.p99_ms) + 4.0,
            y + 14.0,
            l.p50_ms
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Latency distributions: the CDF of every measured scenario, from its histogram (log x).
fn cdf_chart(r: &Results, runtimes: &[String]) -> String {
    let series: Vec<(&ScenarioResult, Vec<(f64, f64)>)> = r
        .scenarios
        .iter()
        .filter_map(|s| {
            let h = decode_histogram(&s.measurement.as_ref()?.latency.histogram)?;
            let n = h.len() as f64;
            if n == 0.0 {
                return None;
            }
            let mut acc = 0u64;
            let pts = h
                .iter_recorded()
                .map(|v| {
                    acc += v.count_at_value();
                    (
                        h.highest_equivalent(v.value_iterated_to()) as f64 / 1e6,
                        acc as f64 / n,
                    )
                })
                .collect();
            Some((s, pts))
        })
        .collect();
    if series.is_empty() {
        return "<p>No histogram recorded.</p>".into();
    }
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold((f64::MAX, 0f64), |(a, b), x| (a.min(x), b.max(x)));
    let (lo, hi) = (
        lo.max(1e-6).log10().floor(),
        hi.max(1e-6).log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let (w, h, left, top) = (760.0, 320.0, 50.0, 10.0);
    let x = |v: f64| left + (v.max(1e-9).log10() - lo) / (hi - lo) * (w - left - 10.0);
    let y = |q: f64| top + (1.0 - q) * (h - top - 30.0);
    let mut svg = format!(
        r##"<svg class="chart" id="cdf" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="latency distributions"><line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#999"/>"##,
        y(0.0),
        w - 10.0,
        y(0.0)
    );
    let mut d = lo;
    while d <= hi {
        let v = 10f64.powf(d);
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1}" y2="{2}" stroke="#eee"/><text x="{0:.1}" y="{3}" font-size="11" text-anchor="middle">{4} ms</text>"##,
            x(v),
            y(1.0),
            y(0.0),
            h - 12.0,
            v
        );
        d += 1.0;
    }
    for q in [0.5, 0.9, 0.99] {
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{2:.1}" y2="{2:.1}" stroke="#eee"/><text x="4" y="{3:.1}" font-size="11">p{1}</text>"##,
            w - 10.0,
            q * 100.0,
            y(q),
            y(q) + 4.0
        );
    }
    for (s, pts) in &series {
        let c = runtime_color(runtimes, &s.runtime);
        let path: Vec<String> = pts
            .iter()
            .map(|(v, q)| format!("{:.1},{:.1}", x(*v), y(*q)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{}"><title>{}</title></polyline>"#,
            path.join(" "),
            esc(&s.id)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Items/s against an axis (batch or concurrency), one line per runtime and the rest of
/// the scenario's settings.
fn throughput_chart(r: &Results, runtimes: &[String], axis: &str) -> String {
    let key = |s: &ScenarioResult| -> f64 {
        if axis == "batch" {
            s.batch as f64
        } else {
            s.concurrency as f64
        }
    };
    let mut lines: BTreeMap<String, (String, Vec<(f64, f64)>)> = BTreeMap::new();
    for s in r.scenarios.iter().filter(|s| s.rate.is_none()) {
        let Some(t) = s.throughput_per_s else {
            continue;
        };
        let label = if axis == "batch" {
            format!(
                "{} {} t{} c{}",
                s.runtime, s.variant, s.threads, s.concurrency
            )
        } else {
            format!("{} {} b{} t{}", s.runtime, s.variant, s.batch, s.threads)
        };
        let e = lines
            .entry(label)
            .or_insert_with(|| (s.runtime.clone(), Vec::new()));
        e.1.push((key(s), t));
    }
    lines.retain(|_, (_, p)| {
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        p.dedup_by(|a, b| a.0 == b.0);
        p.len() > 1
    });
    if lines.is_empty() {
        return format!("<p>Only one {axis} value was measured: nothing to plot against it.</p>");
    }
    let xs: Vec<f64> = lines
        .values()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .collect();
    let (xmin, xmax) = xs
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
    let ymax = lines
        .values()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0f64, f64::max)
        * 1.1;
    let (w, h, left, top) = (760.0, 300.0, 60.0, 10.0);
    // Batch sizes and worker counts grow geometrically: a log axis spaces them evenly.
    let log = xmin > 0.0 && xmax / xmin >= 8.0;
    let t = |v: f64| if log { v.ln() } else { v };
    let x = |v: f64| {
        left + if xmax > xmin {
            (t(v) - t(xmin)) / (t(xmax) - t(xmin))
        } else {
            0.5
        } * (w - left - 170.0)
    };
    let y = |v: f64| top + (1.0 - v / ymax.max(1e-9)) * (h - top - 30.0);
    let mut svg = format!(
        r#"<svg class="chart" id="throughput-{axis}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="throughput against {axis}"><text x="4" y="14" font-size="11">{:.0} items/s</text><text x="4" y="{}" font-size="11">0</text>"#,
        ymax,
        y(0.0)
    );
    let mut ticks: Vec<f64> = xs.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for t in ticks {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{axis} {t}</text>"#,
            x(t),
            h - 10.0
        );
    }
    for (i, (label, (rt, pts))) in lines.iter().enumerate() {
        let c = runtime_color(runtimes, rt);
        let dash = if i % 2 == 1 {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let path: Vec<String> = pts
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
            .collect();
        let (lx, ly) = pts
            .last()
            .map(|(a, b)| (x(*a) + 6.0, y(*b) + 4.0))
            .unwrap_or_default();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="{}"/><text x="{lx:.1}" y="{ly:.1}" font-size="11" fill="{c}">{}</text>"#,
            path.join(" "),
            esc(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Accuracy against speed: p50 (x) and cosine against the reference (y) per scenario.
fn accuracy_chart(r: &Results, runtimes: &[String]) -> String {
    let pts: Vec<(&ScenarioResult, f64, f64)> = r
        .scenarios
        .iter()
        .filter_map(|s| {
            let p50 = s.measurement.as_ref()?.latency.p50_ms;
            let cos = match s.parity.status {
                ParityStatus::Reference => 1.0,
                ParityStatus::Pass | ParityStatus::Fail => s.parity.min_cosine?,
                ParityStatus::Skipped => return None,
            };
            cos.is_finite().then_some((s, p50, cos))
        })
        .collect();
    if pts.is_empty() {
        return "<p>No scenario had outputs to compare.</p>".into();
    }
    let xmax = pts.iter().map(|p| p.1).fold(0f64, f64::max).max(1e-9) * 1.1;
    let xmin = pts.iter().map(|p| p.1).fold(f64::MAX, f64::min).max(1e-9) / 1.1;
    let ymin = pts.iter().map(|p| p.2).fold(1f64, f64::min).min(0.999);
    let (w, h, left, top) = (760.0, 320.0, 60.0, 10.0);
    // Latencies of batch 1 and batch 32 differ by orders of magnitude: log x.
    let x = |v: f64| left + (v / xmin).ln() / (xmax / xmin).ln().max(1e-9) * (w - left - 90.0);
    let y = |c: f64| top + (1.0 - (c - ymin) / (1.0 - ymin).max(1e-12)) * (h - top - 30.0);
    let mut svg = format!(
        r#"<svg class="chart" id="accuracy" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="accuracy against speed"><text x="4" y="{}" font-size="11">cos 1</text><text x="4" y="{}" font-size="11">cos {:.4}</text><text x="{left}" y="{}" font-size="11">p50 {:.2} ms</text><text x="{}" y="{}" font-size="11" text-anchor="end">{:.1} ms (log scale)</text>"#,
        y(1.0) + 4.0,
        y(ymin),
        ymin,
        h - 10.0,
        xmin,
        w - 20.0,
        h - 10.0,
        xmax
    );
    for (s, p50, cos) in pts {
        let c = runtime_color(runtimes, &s.runtime);
        let shape = match s.variant.as_str() {
            "fp32" => format!(
                r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{c}""#,
                x(p50),
                y(cos)
            ),
            _ => format!(
                r#"<rect x="{:.1}" y="{:.1}" width="9" height="9" fill="none" stroke="{c}" stroke-width="2""#,
                x(p50) - 4.5,
                y(cos) - 4.5
            ),
        };
        let _ = write!(
            svg,
            r#"{shape}><title>{}: p50 {p50:.3} ms, cosine {cos:.6}</title></{}><text x="{:.1}" y="{:.1}" font-size="10">{} {}</text>"#,
            esc(&s.id),
            if s.variant == "fp32" {
                "circle"
            } else {
                "rect"
            },
            x(p50) + 7.0,
            y(cos) - 5.0,
            esc(&s.runtime),
            esc(&s.variant)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The whole report: one HTML file, styles inline, charts as SVG.
pub fn to_html(r: &Results) -> String {
    let mut runtimes: Vec<String> = Vec::new();
    for s in &r.scenarios {
        if !runtimes.contains(&s.runtime) {
            runtimes.push(s.runtime.clone());
        }
    }
    let e = &r.environment;
    let legend: String = runtimes
        .iter()
        .map(|rt| {
            format!(
                r#"<span class="key"><span class="sw" style="background:{}"></span>{}</span>"#,
                runtime_color(&runtimes, rt),
                esc(rt)
            )
        })
        .collect();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{name} — runtime comparison</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}}
h1{{font-size:22px}} h2{{font-size:17px;margin-top:28px}}
table{{border-collapse:collapse;font-size:12px}} td,th{{border:1px solid #ddd;padding:3px 6px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}
.key{{margin-right:14px;font-size:13px}} .sw{{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}}
.fail{{color:#b00;font-weight:bold}} .note{{font-size:12px;color:#555}}
</style></head><body>
<h1>{name} — runtime comparison</h1>
<p class="note">{cpu} · {cpus} logical CPUs · {os} · started {started}{merged}</p>
<p>{legend}</p>
"#,
        name = esc(&r.model.name),
        cpu = esc(&e.cpu_model),
        cpus = e.logical_cpus,
        os = esc(&e.os),
        started = esc(&r.started_at),
        merged = if r.merged_from.len() > 1 {
            format!(" · merged from {} runs", r.merged_from.len())
        } else {
            String::new()
        },
    );
    let headline = super::headline::headline(r);
    if !headline.is_empty() {
        let _ = write!(
            out,
            "<h2>Headline</h2><p class=\"note\">{}.</p><ul>",
            esc(super::headline::INTRO)
        );
        for h in &headline {
            let _ = write!(out, "<li>{}</li>", esc(h));
        }
        out.push_str("</ul>");
    }
    let variants = super::headline::variant_lines(&super::headline::variant_gains(r));
    if variants.len() > super::headline::HEADLINE_DETAIL_MAX {
        out.push_str("<h2>Variants against fp32</h2><p class=\"note\">Speed-up of each lower-precision variant over fp32 of the same runtime and settings (ratio of medians, 95% interval), beside its lowest cosine to the parity reference.</p><ul>");
        for v in &variants {
            let _ = write!(out, "<li>{}</li>", esc(v));
        }
        out.push_str("</ul>");
    }
    let _ = write!(
        out,
        "<h2>Latency per scenario</h2><p class=\"note\">Bar: p50; thin mark: p90; thick mark: p99 (nearest rank).</p>{}",
        latency_chart(r, &runtimes)
    );
    let _ = write!(
        out,
        "<h2>Latency distributions</h2><p class=\"note\">Cumulative share of inferences (y) finished within a latency (x, log scale), from each scenario's histogram.</p>{}",
        cdf_chart(r, &runtimes)
    );
    let _ = write!(
        out,
        "<h2>Throughput against batch</h2>{}<h2>Throughput against concurrency</h2>{}",
        throughput_chart(r, &runtimes, "batch"),
        throughput_chart(r, &runtimes, "concurrency")
    );
    let _ = write!(
        out,
        "<h2>Accuracy against speed</h2><p class=\"note\">Cosine similarity to the parity reference (y) against p50 (x); circles fp32, squares lower-precision variants.</p>{}",
        accuracy_chart(r, &runtimes)
    );
    out.push_str("<h2>Scenarios</h2><table><tr>");
    for h in [
        "scenario", "samples", "p50 ms", "p90 ms", "p99 ms", "items/s", "cores", "cosine", "parity",
    ] {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr>");
    for s in &r.scenarios {
        let m = s.measurement.as_ref();
        let f = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        let label = s.parity_label();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td></tr>",
            esc(&s.id),
            m.map(|m| m.latency.samples).unwrap_or(0),
            f(m.map(|m| m.latency.p50_ms)),
            f(m.map(|m| m.latency.p90_ms)),
            f(m.map(|m| m.latency.p99_ms)),
            f(s.throughput_per_s),
            f(s.resources.as_ref().and_then(|r| r.avg_cores_busy)),
            s.parity.min_cosine.map(|c| format!("{c:.6}")).unwrap_or_else(|| "-".into()),
            if label == "FAIL" || label == "ERROR" { " class=\"fail\"" } else { "" },
            label
        );
    }
    out.push_str("</table>");
    out.push_str("<h2>Environment</h2><table>");
    let rows: Vec<(&str, String)> = vec![
        ("CPU", e.cpu_model.clone()),
        ("flags", e.cpu_flags.join(" ")),
        ("logical CPUs", e.logical_cpus.to_string()),
        (
            "memory",
            e.memory_total_bytes
                .map(|b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64))
                .unwrap_or_default(),
        ),
        ("OS / kernel", format!("{} / {}", e.os, e.kernel)),
        ("governor", e.cpu_governor.clone()),
        ("GPUs", e.gpus.clone()),
        ("rustc", e.rustc.clone()),
        (
            "harness",
            format!(
                "{} ({}, dirty {})",
                e.harness_version, e.git_commit, e.git_dirty
            ),
        ),
        ("command", e.command_line.join(" ")),
        (
            "settings",
            format!(
                "{}; seed {}; pinning: {}",
                r.settings.mode, r.settings.seed, r.settings.pinning
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = write!(
            out,
            "<tr><th>{k}</th><td style=\"text-align:left\">{}</td></tr>",
            esc(&v)
        );
    }
    for v in &e.runtime_versions {
        let _ = write!(
            out,
            "<tr><th>{}</th><td style=\"text-align:left\">{}</td></tr>",
            esc(&v.runtime),
            esc(&v.detail)
        );
    }
    out.push_str("</table></body></html>\n");
    out
}
