//! `report.html`, rebuilt from results alone: one self-contained file, inline SVG, no script,
//! no network. Charts with many series are small multiples (`chart::multiples`); every line
//! and point is named in the chart or its key, and has a hover title. (`harness report DIR...` merges folders first: see `analysis::merge`.)

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::results::ParityStatus;
use crate::results::{Results, ScenarioResult};
use crate::stats::decode_histogram;

use super::chart::{
    esc, linear_ticks, log_ticks, multiples, spread, text, text_width, tick_text, FONT, SMALL,
};

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

fn runtime_color(runtimes: &[&str], name: &str) -> &'static str {
    let i = runtimes.iter().position(|r| *r == name).unwrap_or(0);
    COLORS[i % COLORS.len()]
}

/// The opening tag of a chart's SVG.
fn svg_open(id: Option<&str>, class: &str, w: f64, h: f64, label: &str) -> String {
    format!(
        r#"<svg class="{class}"{} xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" font-family="{FONT}" role="img" aria-label="{}">"#,
        id.map(|i| format!(r#" id="{i}""#)).unwrap_or_default(),
        esc(label)
    )
}

/// Rows split into panels by what they share but the runtime (the headline's groups), in
/// the order of their first row.
fn panels_of<'a>(
    rows: impl Iterator<Item = &'a ScenarioResult>,
) -> Vec<(String, Vec<&'a ScenarioResult>)> {
    let mut out: Vec<(String, String, Vec<&ScenarioResult>)> = Vec::new();
    for s in rows {
        let (mut k, mut label) = super::headline::key(s);
        if s.served.is_some() && s.variant != "served" {
            k += "|served";
            label += " served";
        }
        match out.iter_mut().find(|(o, _, _)| *o == k) {
            Some((_, _, v)) => v.push(s),
            None => out.push((k, label, vec![s])),
        }
    }
    out.into_iter().map(|(_, l, v)| (l, v)).collect()
}

/// Bars of p50 per scenario, with marks at p90 and p99, on a latency axis in ms.
fn latency_chart(r: &Results, runtimes: &[&str]) -> String {
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
    let ticks = linear_ticks(0.0, max, 5);
    let axis_max = ticks.last().copied().unwrap_or(max).max(max);
    let label_w = rows
        .iter()
        .map(|s| text_width(&s.id, 12.0))
        .fold(0f64, f64::max)
        + 12.0;
    let (bar_w, row_h, top) = (520.0, 22.0, 8.0);
    let value_w = text_width("0000.000 ms", SMALL) + 8.0;
    let plot_h = rows.len() as f64 * row_h;
    let h = top + plot_h + 44.0;
    let x = |v: f64| label_w + v / axis_max * bar_w;
    let mut svg = svg_open(
        Some("latency"),
        "chart",
        label_w + bar_w + value_w,
        h,
        "latency per scenario",
    );
    for t in &ticks {
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{1:.1}" stroke="#eee"/>{2}"##,
            x(*t),
            top + plot_h,
            text(
                x(*t),
                top + plot_h + 14.0,
                SMALL,
                "middle",
                "",
                &tick_text(*t)
            )
        );
    }
    svg += &text(
        label_w + bar_w / 2.0,
        top + plot_h + 32.0,
        12.0,
        "middle",
        "",
        "latency per inference (ms)",
    );
    for (i, s) in rows.iter().enumerate() {
        let l = &s.measurement.as_ref().expect("filtered").latency;
        let y = top + i as f64 * row_h;
        let c = runtime_color(runtimes, &s.runtime);
        svg += &text(label_w - 6.0, y + 15.0, 12.0, "end", "", &s.id);
        let _ = write!(
            svg,
            r#"<rect x="{label_w:.1}" y="{ry:.1}" width="{rw:.1}" height="{rh}" fill="{c}"><title>{tip}</title></rect><line x1="{x90:.1}" x2="{x90:.1}" y1="{a90:.1}" y2="{b90:.1}" stroke="black"/><line x1="{x99:.1}" x2="{x99:.1}" y1="{a99:.1}" y2="{b99:.1}" stroke="black" stroke-width="2"/>"#,
            ry = y + 5.0,
            rw = x(l.p50_ms) - label_w,
            rh = row_h - 8.0,
            tip = esc(&format!(
                "{}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
                s.id, l.p50_ms, l.p90_ms, l.p99_ms
            )),
            x90 = x(l.p90_ms),
            a90 = y + 3.0,
            b90 = y + row_h - 1.0,
            x99 = x(l.p99_ms),
            a99 = y + 2.0,
            b99 = y + row_h,
        );
        svg += &text(
            x(l.p99_ms) + 4.0,
            y + 15.0,
            SMALL,
            "start",
            "",
            &format!("{:.3} ms", l.p50_ms),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The width a panel needs for its bold title from `left` (bold DejaVu Sans is at most 10%
/// wider than the book weight the metrics are for).
fn title_width(title: &str, left: f64) -> f64 {
    left + text_width(title, 12.0) * 1.1 + 6.0
}

/// A panel's x-axis title, centred under a plot that ends at `bottom`.
fn axis_title(left: f64, plot_w: f64, bottom: f64, title: &str) -> String {
    text(
        left + plot_w / 2.0,
        bottom + 32.0,
        SMALL,
        "middle",
        "",
        title,
    )
}

/// The share of inferences done within a latency, on a scale of nines: `-log10(1 - q)`
/// (p50 at 0.3, p90 at 1, p99 at 2, p99.9 at 3), so that the tail has room.
fn nines(q: f64) -> f64 {
    -(1.0 - q.min(0.999)).log10()
}

/// Latency distributions: per group of scenarios that differ only by runtime, a panel with
/// each runtime's CDF from its histogram (log latency axis, percentiles on a scale of nines)
/// and a key naming each line with its p50.
fn cdf_chart(r: &Results, runtimes: &[&str]) -> String {
    let series = |s: &ScenarioResult| -> Option<Vec<(f64, f64)>> {
        let h = decode_histogram(&s.measurement.as_ref()?.latency.histogram)?;
        let n = h.len() as f64;
        if n == 0.0 {
            return None;
        }
        let mut acc = 0u64;
        let mut pts = Vec::new();
        for v in h.iter_recorded() {
            // The step: up to the previous share at this value, then to the new one.
            let x = h.highest_equivalent(v.value_iterated_to()) as f64 / 1e6;
            pts.push((x, acc as f64 / n));
            acc += v.count_at_value();
            pts.push((x, acc as f64 / n));
        }
        Some(pts)
    };
    let mut panels = Vec::new();
    for (label, rows) in panels_of(r.scenarios.iter()) {
        let lines: Vec<(&ScenarioResult, Vec<(f64, f64)>)> = rows
            .into_iter()
            .filter_map(|s| series(s).map(|p| (s, p)))
            .collect();
        if lines.is_empty() {
            continue;
        }
        let (lo, hi) = lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
            .fold((f64::MAX, 0f64), |(a, b), x| (a.min(x), b.max(x)));
        let (lo, hi) = (lo.max(1e-6) / 1.05, hi.max(1e-6) * 1.05);
        let keys: Vec<String> = lines
            .iter()
            .map(|(s, _)| {
                let p50 = s
                    .measurement
                    .as_ref()
                    .map(|m| m.latency.p50_ms)
                    .unwrap_or(0.0);
                format!("{} {} ms", s.runtime, tick_text(p50))
            })
            .collect();
        let key_w = keys
            .iter()
            .map(|k| text_width(k, SMALL))
            .fold(0f64, f64::max)
            + 18.0;
        let (left, top, plot_w, plot_h) = (44.0, 24.0, 230.0, 150.0);
        let w = (left + plot_w + 12.0 + key_w + 6.0).max(title_width(&label, left));
        let h = top + plot_h + 40.0;
        let x = |v: f64| left + (v.ln() - lo.ln()) / (hi.ln() - lo.ln()) * plot_w;
        let y = |q: f64| top + (1.0 - nines(q) / 3.0) * plot_h;
        let mut svg = svg_open(
            None,
            "chart panel",
            w,
            h,
            &format!("latency distributions, {label}"),
        );
        svg += &text(left, 14.0, 12.0, "start", r#" font-weight="bold""#, &label);
        let _ = write!(
            svg,
            r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>"##
        );
        for (q, name) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9")] {
            let _ = write!(
                svg,
                r##"<line x1="{left}" x2="{:.1}" y1="{1:.1}" y2="{1:.1}" stroke="#eee"/>{2}"##,
                left + plot_w,
                y(q),
                text(left - 4.0, y(q) + 4.0, SMALL, "end", "", name)
            );
        }
        let ticks = log_ticks(lo, hi);
        // Tick labels that would touch are thinned: every k-th is kept.
        let widest = ticks
            .iter()
            .map(|t| text_width(&tick_text(*t), SMALL))
            .fold(0f64, f64::max);
        let min_gap = ticks
            .windows(2)
            .map(|p| x(p[1]) - x(p[0]))
            .fold(f64::INFINITY, f64::min);
        let every = if min_gap.is_finite() && min_gap > 0.0 {
            ((widest + 6.0) / min_gap).ceil().max(1.0) as usize
        } else {
            1
        };
        for (i, t) in ticks.iter().enumerate() {
            let _ = write!(
                svg,
                r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{1:.1}" stroke="#eee"/>"##,
                x(*t),
                top + plot_h
            );
            if i % every == 0 {
                svg += &text(
                    x(*t),
                    top + plot_h + 14.0,
                    SMALL,
                    "middle",
                    "",
                    &tick_text(*t),
                );
            }
        }
        svg += &axis_title(left, plot_w, top + plot_h, "latency (ms, log scale)");
        for (i, (s, pts)) in lines.iter().enumerate() {
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
            let ky = top + 6.0 + i as f64 * 16.0;
            let kx = left + plot_w + 12.0;
            let _ = write!(
                svg,
                r#"<line x1="{kx:.1}" x2="{:.1}" y1="{ky:.1}" y2="{ky:.1}" stroke="{c}" stroke-width="2"/>"#,
                kx + 12.0
            );
            svg += &text(kx + 16.0, ky + 4.0, SMALL, "start", "", &keys[i]);
        }
        svg.push_str("</svg>");
        panels.push(svg);
    }
    if panels.is_empty() {
        return "<p>No histogram recorded.</p>".into();
    }
    multiples("cdf", &panels)
}

/// Items/s against an axis (batch or concurrency): per combination of the other settings, a
/// panel with one line per runtime, each named at its end (names spread so that they never
/// overlap).
fn throughput_chart(r: &Results, runtimes: &[&str], axis: &str) -> String {
    let key = |s: &ScenarioResult| -> f64 {
        if axis == "batch" {
            s.batch as f64
        } else {
            s.concurrency as f64
        }
    };
    // Panels: everything but the runtime and the axis.
    /// (items/s against the axis) per runtime.
    type Lines = BTreeMap<String, Vec<(f64, f64)>>;
    let mut panels: Vec<(String, Lines)> = Vec::new();
    for s in r.scenarios.iter().filter(|s| s.rate.is_none()) {
        let Some(t) = s.throughput_per_s else {
            continue;
        };
        let mut label = s.variant.clone();
        if axis != "batch" {
            label += &format!(" b{}", s.batch);
        }
        if let Some(q) = s.seq {
            label += &format!(" s{q}");
        }
        label += &format!(" t{}", s.threads);
        if axis == "batch" && s.concurrency != 1 {
            label += &format!(" c{}", s.concurrency);
        }
        if s.device != "cpu" {
            label += &format!(" on {}", s.device);
        }
        if s.served.is_some() && s.variant != "served" {
            label += " served";
        }
        let i = match panels.iter().position(|(l, _)| *l == label) {
            Some(i) => i,
            None => {
                panels.push((label, BTreeMap::new()));
                panels.len() - 1
            }
        };
        panels[i]
            .1
            .entry(s.runtime.clone())
            .or_default()
            .push((key(s), t));
    }
    for (_, lines) in panels.iter_mut() {
        lines.retain(|_, p| {
            p.sort_by(|a, b| a.0.total_cmp(&b.0));
            p.dedup_by(|a, b| a.0 == b.0);
            p.len() > 1
        });
    }
    panels.retain(|(_, lines)| !lines.is_empty());
    if panels.is_empty() {
        return format!(
            "<p>Only one {axis} value was measured per scenario: nothing to plot against it.</p>"
        );
    }
    let mut out = Vec::new();
    for (label, lines) in &panels {
        let xs: Vec<f64> = lines
            .values()
            .flat_map(|p| p.iter().map(|(x, _)| *x))
            .collect();
        let (xmin, xmax) = xs
            .iter()
            .fold((f64::MAX, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
        let ymax_data = lines
            .values()
            .flat_map(|p| p.iter().map(|(_, y)| *y))
            .fold(0f64, f64::max);
        let yticks = linear_ticks(0.0, ymax_data * 1.05, 4);
        let ymax = yticks
            .last()
            .copied()
            .unwrap_or(1.0)
            .max(ymax_data)
            .max(1e-9);
        let names: Vec<String> = lines.keys().cloned().collect();
        let name_w = names
            .iter()
            .map(|n| text_width(n, SMALL))
            .fold(0f64, f64::max);
        let left = yticks
            .iter()
            .map(|t| text_width(&tick_text(*t), SMALL))
            .fold(0f64, f64::max)
            + 10.0;
        let (top, plot_w, plot_h) = (24.0, 220.0, 140.0);
        let w = (left + plot_w + 14.0 + name_w + 6.0)
            .max(title_width(&format!("{label} · items/s"), left));
        let h = top + plot_h + 40.0;
        // Batch sizes and worker counts grow geometrically: a log axis spaces them evenly.
        let log = xmin > 0.0 && xmax / xmin >= 8.0;
        let t = |v: f64| if log { v.ln() } else { v };
        let x = |v: f64| {
            left + if xmax > xmin {
                (t(v) - t(xmin)) / (t(xmax) - t(xmin))
            } else {
                0.5
            } * plot_w
        };
        let y = |v: f64| top + (1.0 - v / ymax) * plot_h;
        let mut svg = svg_open(
            None,
            "chart panel",
            w,
            h,
            &format!("throughput against {axis}, {label}"),
        );
        svg += &text(
            left,
            14.0,
            12.0,
            "start",
            r#" font-weight="bold""#,
            &format!("{label} · items/s"),
        );
        let _ = write!(
            svg,
            r##"<rect x="{left:.1}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>"##
        );
        for v in &yticks {
            let _ = write!(
                svg,
                r##"<line x1="{left:.1}" x2="{:.1}" y1="{1:.1}" y2="{1:.1}" stroke="#eee"/>{2}"##,
                left + plot_w,
                y(*v),
                text(left - 4.0, y(*v) + 4.0, SMALL, "end", "", &tick_text(*v))
            );
        }
        let mut ticks = xs.clone();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        let mut last_end = f64::NEG_INFINITY;
        for v in ticks {
            let s = tick_text(v);
            let half = text_width(&s, SMALL) / 2.0;
            if x(v) - half < last_end + 4.0 {
                continue;
            }
            last_end = x(v) + half;
            svg += &text(x(v), top + plot_h + 14.0, SMALL, "middle", "", &s);
        }
        let unit = if axis == "batch" {
            "batch size"
        } else {
            "concurrent workers"
        };
        svg += &axis_title(
            left,
            plot_w,
            top + plot_h,
            &format!("{unit}{}", if log { " (log scale)" } else { "" }),
        );
        let ends: Vec<f64> = lines
            .values()
            .map(|p| p.last().map(|(_, b)| y(*b)).unwrap_or(top))
            .collect();
        let placed = spread(&ends, 14.0, top + 4.0, top + plot_h);
        for (i, (rt, pts)) in lines.iter().enumerate() {
            let c = runtime_color(runtimes, rt);
            let path: Vec<String> = pts
                .iter()
                .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
                .collect();
            let tip: Vec<String> = pts
                .iter()
                .map(|(a, b)| format!("{axis} {}: {b:.1} items/s", tick_text(*a)))
                .collect();
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"><title>{} {}: {}</title></polyline>"#,
                path.join(" "),
                esc(rt),
                esc(label),
                esc(&tip.join(", "))
            );
            let (ex, ey) = pts.last().map(|(a, b)| (x(*a), y(*b))).unwrap_or_default();
            let lx = left + plot_w + 14.0;
            let _ = write!(
                svg,
                r#"<line x1="{ex:.1}" x2="{:.1}" y1="{ey:.1}" y2="{:.1}" stroke="{c}" stroke-width="1"/>"#,
                lx - 2.0,
                placed[i]
            );
            svg += &text(
                lx,
                placed[i] + 4.0,
                SMALL,
                "start",
                &format!(r#" fill="{c}""#),
                rt,
            );
        }
        svg.push_str("</svg>");
        out.push(svg);
    }
    multiples(&format!("throughput-{axis}"), &out)
}

/// Accuracy against speed: p50 (x, log) and the cosine to the parity reference (y, on a
/// scale of nines: 0.99, 0.999, ...) per scenario; colour by runtime, shape by variant.
/// Left out, with a sentence, when every row is fp32 (no precision was traded).
fn accuracy_chart(r: &Results, runtimes: &[&str]) -> String {
    let pts: Vec<(&ScenarioResult, f64, f64)> = r
        .scenarios
        .iter()
        .filter(|s| s.served.is_none())
        .filter_map(|s| {
            let p50 = s.measurement.as_ref()?.latency.p50_ms;
            let cos = match s.parity.status {
                ParityStatus::Reference => 1.0,
                ParityStatus::Pass | ParityStatus::Fail => s.parity.min_cosine?,
                ParityStatus::Skipped => return None,
            };
            (cos.is_finite() && p50 > 0.0).then_some((s, p50, cos))
        })
        .collect();
    if pts.is_empty() {
        return "<p>No scenario had outputs compared with a reference: nothing to plot.</p>".into();
    }
    if !pts.iter().any(|(s, _, _)| s.variant != "fp32") {
        return "<p>Every measured row is fp32: no precision was traded for speed, so there is nothing to plot here (<code>--variant fp16,int8</code> adds the lower-precision exports).</p>".into();
    }
    let variants = super::distinct(pts.iter().map(|(s, _, _)| s.variant.as_str()));
    // Nines of the cosine: 1 - cos of 1e-k sits at k; identical outputs at the top.
    const TOP: f64 = 7.0;
    let n9 = |c: f64| (-(1.0 - c).max(10f64.powf(-TOP)).log10()).clamp(0.0, TOP);
    let ylo = pts
        .iter()
        .map(|p| n9(p.2))
        .fold(TOP, f64::min)
        .floor()
        .min(TOP - 2.0);
    let xmax = pts.iter().map(|p| p.1).fold(0f64, f64::max) * 1.15;
    let xmin = pts.iter().map(|p| p.1).fold(f64::MAX, f64::min) / 1.15;
    let left = text_width("0.9999999+", SMALL) + 10.0;
    let (top, plot_w, plot_h) = (40.0, 560.0, 240.0);
    let w = left + plot_w + 20.0;
    let h = top + plot_h + 44.0;
    let x = |v: f64| left + (v / xmin).ln() / (xmax / xmin).ln().max(1e-9) * plot_w;
    let y = |c: f64| top + (TOP - n9(c)) / (TOP - ylo) * plot_h;
    let mut svg = svg_open(Some("accuracy"), "chart", w, h, "accuracy against speed");
    // The key: shapes per variant, laid out left to right with measured widths.
    let mut kx = left;
    for (i, v) in variants.iter().enumerate() {
        svg += &marker(i, kx + 5.0, 14.0, "#555", "");
        svg += &text(kx + 14.0, 18.0, SMALL, "start", "", v);
        kx += 14.0 + text_width(v, SMALL) + 16.0;
    }
    svg += &text(
        kx + 8.0,
        18.0,
        SMALL,
        "start",
        r##" fill="#555""##,
        "(colour: runtime)",
    );
    let _ = write!(
        svg,
        r##"<rect x="{left:.1}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>"##
    );
    let mut k = ylo;
    while k <= TOP {
        let c = 1.0 - 10f64.powf(-k);
        let name = if k == 0.0 {
            "0".to_string()
        } else if k >= TOP {
            format!("{c:.*}+", k as usize)
        } else {
            format!("{c:.*}", k as usize)
        };
        let _ = write!(
            svg,
            r##"<line x1="{left:.1}" x2="{:.1}" y1="{1:.1}" y2="{1:.1}" stroke="#eee"/>{2}"##,
            left + plot_w,
            y(c),
            text(left - 4.0, y(c) + 4.0, SMALL, "end", "", &name)
        );
        k += 1.0;
    }
    let mut last_end = f64::NEG_INFINITY;
    for t in log_ticks(xmin, xmax) {
        let s = tick_text(t);
        let half = text_width(&s, SMALL) / 2.0;
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{1:.1}" stroke="#eee"/>"##,
            x(t),
            top + plot_h
        );
        if x(t) - half < last_end + 4.0 {
            continue;
        }
        last_end = x(t) + half;
        svg += &text(x(t), top + plot_h + 14.0, SMALL, "middle", "", &s);
    }
    svg += &text(
        left + plot_w / 2.0,
        top + plot_h + 34.0,
        SMALL,
        "middle",
        "",
        "p50 latency (ms, log scale); up: cosine to the reference (0.999 = 1 - 1e-3)",
    );
    for (s, p50, cos) in &pts {
        let c = runtime_color(runtimes, &s.runtime);
        let vi = variants.iter().position(|v| *v == s.variant).unwrap_or(0);
        let tip = format!("{}: p50 {p50:.3} ms, cosine {cos:.7}", s.id);
        svg += &marker(vi, x(*p50), y(*cos), c, &tip);
    }
    svg.push_str("</svg>");
    svg
}

/// The i-th variant's marker (circle, square, triangle, diamond, ...) at (x, y).
fn marker(i: usize, x: f64, y: f64, c: &str, title: &str) -> String {
    let t = if title.is_empty() {
        String::new()
    } else {
        format!("<title>{}</title>", esc(title))
    };
    match i % 4 {
        0 => format!(r#"<circle cx="{x:.1}" cy="{y:.1}" r="5" fill="{c}">{t}</circle>"#),
        1 => format!(
            r#"<rect x="{:.1}" y="{:.1}" width="9" height="9" fill="none" stroke="{c}" stroke-width="2">{t}</rect>"#,
            x - 4.5,
            y - 4.5
        ),
        2 => format!(
            r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="none" stroke="{c}" stroke-width="2">{t}</polygon>"#,
            x,
            y - 6.0,
            x - 5.5,
            y + 4.0,
            x + 5.5,
            y + 4.0
        ),
        _ => format!(
            r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{c}">{t}</polygon>"#,
            x,
            y - 6.0,
            x + 6.0,
            y,
            x,
            y + 6.0,
            x - 6.0,
            y
        ),
    }
}

/// A profiled row's cell: the shares of its window time, linked to its flame graph (or its
/// folded stacks when no flame graph could be drawn).
fn profile_cell(s: &ScenarioResult) -> String {
    let Some(p) = &s.profile else {
        return "<td>-</td>".into();
    };
    let share = |g: &str| {
        p.groups
            .iter()
            .find(|(x, _)| x == g)
            .map(|(_, v)| *v * 100.0)
            .unwrap_or(0.0)
    };
    let text = format!(
        "{:.0}% / {:.0}% / {:.0}%",
        share("matrix kernels"),
        share("threading"),
        share("allocation")
    );
    let top: Vec<String> = p
        .top
        .iter()
        .take(5)
        .map(|f| format!("{} {:.1}%", f.frame, f.share * 100.0))
        .collect();
    match p.flamegraph.as_deref().or(p.folded.as_deref()) {
        Some(href) => format!(
            r#"<td><a href="{}" title="{}">{text}</a></td>"#,
            esc(href),
            esc(&top.join("; "))
        ),
        None => format!("<td>{text}</td>"),
    }
}

/// The whole report: one HTML file, styles inline, charts as SVG.
pub fn to_html(r: &Results) -> String {
    let runtimes = super::distinct(r.scenarios.iter().map(|s| s.runtime.as_str()));
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
.multiples{{display:flex;flex-wrap:wrap;gap:10px 18px}}
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
    let served = super::headline::serving_lines(r);
    if served.len() > super::headline::HEADLINE_DETAIL_MAX {
        out.push_str("<h2>Serving tax</h2><p class=\"note\">Each served row against the same runtime in process, same inputs and load: latency added at the median (and as a ratio with its 95% interval) and throughput lost.</p><ul>");
        for v in &served {
            let _ = write!(out, "<li>{}</li>", esc(v));
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
    let capacity = super::capacity_lines(r);
    if !capacity.is_empty() {
        out.push_str("<h2>Capacity</h2><p class=\"note\">The highest open-loop rate meeting every objective (<code>--find-max-rate</code>); each probe is also a row below.</p><ul>");
        for c in &capacity {
            let _ = write!(out, "<li>{}</li>", esc(c));
        }
        out.push_str("</ul>");
    }
    let _ = write!(
        out,
        "<h2>Latency per scenario</h2><p class=\"note\">Bar and figure: p50; thin mark: p90; thick mark: p99 (nearest rank).</p>{}",
        latency_chart(r, &runtimes)
    );
    let _ = write!(
        out,
        "<h2>Latency distributions</h2><p class=\"note\">Per group of scenarios that differ only by runtime: the share of inferences (y, as percentiles on a scale of nines) finished within a latency (x, log scale), from each scenario's histogram; the key gives each line's p50.</p>{}",
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
        "<h2>Accuracy against speed</h2><p class=\"note\">Per scenario, its lowest cosine similarity to the parity reference (y, on a scale of nines) against its p50 (x); colour: runtime, shape: variant (key above the chart); hover a point for its scenario.</p>{}",
        accuracy_chart(r, &runtimes)
    );
    let profiled = r.scenarios.iter().any(|s| s.profile.is_some());
    out.push_str("<h2>Scenarios</h2><table><tr>");
    for h in [
        "scenario", "samples", "p50 ms", "p90 ms", "p99 ms", "items/s", "cores", "cosine", "parity",
    ] {
        let _ = write!(out, "<th>{h}</th>");
    }
    if profiled {
        out.push_str("<th>profile (window time: kernels / threading / allocation)</th>");
    }
    let device_timed = r
        .scenarios
        .iter()
        .any(|s| s.measurement.as_ref().is_some_and(|m| m.device.is_some()));
    if device_timed {
        out.push_str("<th>device time (CUDA events, p50 ms)</th>");
    }
    out.push_str("</tr>");
    for s in &r.scenarios {
        let m = s.measurement.as_ref();
        let f = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        let label = s.parity_label();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td>",
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
        if profiled {
            out.push_str(&profile_cell(s));
        }
        if device_timed {
            let cell = m
                .and_then(|m| m.device.as_ref())
                .map(super::table::device_note)
                .unwrap_or_else(|| "-".into());
            let _ = write!(out, "<td>{}</td>", esc(&cell));
        }
        out.push_str("</tr>");
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
        (
            "idle CPUs",
            e.cpu_idle.clone().unwrap_or_else(|| "not recorded".into()),
        ),
        ("GPUs", e.gpus.clone()),
        (
            "GPU timing",
            e.gpu_timing
                .as_ref()
                .map(|t| format!("CUDA events: {}; NVTX: {}", t.cuda_events, t.nvtx))
                .unwrap_or_else(|| "not recorded".into()),
        ),
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
