//! What the report's SVG charts share: text measured with known metrics (so that labels are
//! laid out before a browser draws them), labels spread so that they never overlap, axis
//! ticks on linear and log scales, and small multiples.
//!
//! Text is set in one font stack whose widest common member is DejaVu Sans (Debian's
//! default, and what headless Chromium uses here); [`text_width`] errs wide for it, so a
//! label laid out with it fits in any narrower font too. `tests/report.rs` renders the report
//! in Chromium and measures every text box, which checks these metrics.

use std::fmt::Write as _;

/// The font of every chart's text.
pub const FONT: &str = "DejaVu Sans, Verdana, Arial, sans-serif";

/// Font size of tick and direct labels, px.
pub const SMALL: f64 = 11.0;

/// The rendered width of `s` at `size` px in DejaVu Sans, rounded up: per character, an
/// upper bound of the advance widths of its class in DejaVu Sans Book (in em: `i` `l` `.`
/// `:` at most 0.401; space, `/`, brackets, `-`, `f`, `t`, `r` at most 0.411; digits 0.636;
/// other lowercase at most 0.635, `m` 0.974, `w` 0.818; capitals at most 0.787, `M` 0.863,
/// `W` 0.989; anything else at most 1).
pub fn text_width(s: &str, size: f64) -> f64 {
    let em: f64 = s
        .chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' => 0.41,
            ' ' | '/' | '(' | ')' | '[' | ']' | '-' | 'f' | 't' | 'r' => 0.42,
            'm' | 'w' | 'M' | 'W' => 1.0,
            c if c.is_ascii_digit() || c.is_ascii_lowercase() => 0.64,
            c if c.is_ascii_uppercase() => 0.8,
            _ => 1.0,
        })
        .sum();
    (em * size).ceil()
}

/// Positions for labels that want to sit at `want` (centres along one axis, any order),
/// moved as little as possible so that neighbours are at least `gap` apart, and kept within
/// `[lo, hi]` when they fit (when they do not, they run past `hi`). The i-th result is the
/// i-th label's position.
pub fn spread(want: &[f64], gap: f64, lo: f64, hi: f64) -> Vec<f64> {
    let mut order: Vec<usize> = (0..want.len()).collect();
    order.sort_by(|&a, &b| want[a].total_cmp(&want[b]));
    let mut pos: Vec<f64> = order.iter().map(|&i| want[i].clamp(lo, hi)).collect();
    // Down from the top: each at least `gap` below the one before.
    for k in 1..pos.len() {
        pos[k] = pos[k].max(pos[k - 1] + gap);
    }
    // Past the bottom: up again from the bottom, but never above `lo`.
    if let Some(&last) = pos.last() {
        if last > hi {
            let n = pos.len();
            pos[n - 1] = hi;
            for k in (0..n - 1).rev() {
                pos[k] = pos[k].min(pos[k + 1] - gap);
            }
            if pos[0] < lo {
                pos[0] = lo;
                for k in 1..n {
                    pos[k] = pos[k].max(pos[k - 1] + gap);
                }
            }
        }
    }
    let mut out = vec![0.0; want.len()];
    for (k, &i) in order.iter().enumerate() {
        out[i] = pos[k];
    }
    out
}

/// Round ticks for a linear axis from `lo` to `hi`: about `n` of them at 1, 2 or 5 times a
/// power of ten.
pub fn linear_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) || n == 0 {
        return vec![lo];
    }
    let raw = (hi - lo) / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    // The round step whose count of intervals comes nearest `n`.
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .min_by(|a, b| {
            let off = |s: &f64| ((hi - lo) / s - n as f64).abs();
            off(a).total_cmp(&off(b))
        })
        .unwrap_or(mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

/// Ticks for a log axis from `lo` to `hi` (both above 0): the powers of ten within, or 1-2-5
/// steps when that gives too few, or linear ticks when the range is narrower still.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if lo <= 0.0 || hi <= lo {
        return vec![lo.max(hi)];
    }
    for mults in [&[1.0][..], &[1.0, 2.0, 5.0][..]] {
        let mut out = Vec::new();
        let mut p = 10f64.powf(lo.log10().floor());
        while p <= hi * (1.0 + 1e-9) {
            for m in mults {
                let v = p * m;
                if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                    out.push(v);
                }
            }
            p *= 10.0;
        }
        if out.len() >= 3 {
            return out;
        }
    }
    linear_ticks(lo, hi, 4)
        .into_iter()
        .filter(|v| *v > 0.0)
        .collect()
}

/// A tick's text: as few digits as the value needs (`0.5`, `20`, `1500`, `1.2k` is not used:
/// units are in the axis title).
pub fn tick_text(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    let s = if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        // Three significant digits: 0.5, 0.025, 0.00012.
        let digits = (2 - a.log10().floor() as i32).max(3) as usize;
        format!("{v:.digits$}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// XML-escaped text.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One text element in the charts' font.
pub fn text(x: f64, y: f64, size: f64, anchor: &str, extra: &str, body: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="{anchor}"{extra}>{}</text>"#,
        esc(body)
    );
    s
}

/// Small multiples: the panels side by side, wrapping, under one id.
pub fn multiples(id: &str, panels: &[String]) -> String {
    format!(
        r#"<div class="multiples" id="{id}">{}</div>"#,
        panels.concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_labels_keep_their_order_and_never_overlap() {
        // Five labels wanting nearly the same place, in a space that holds them.
        let want = [50.0, 51.0, 49.0, 52.0, 120.0];
        let got = spread(&want, 13.0, 10.0, 200.0);
        let mut sorted: Vec<(f64, f64)> = want.iter().copied().zip(got.clone()).collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in sorted.windows(2) {
            assert!(w[1].1 - w[0].1 >= 13.0 - 1e-9, "{got:?}");
        }
        assert!(got.iter().all(|y| (10.0..=200.0).contains(y)), "{got:?}");
        // The one far away stays where it wanted to be.
        assert_eq!(got[4], 120.0);
        // Crowded at the bottom edge: pushed up, still apart, still within.
        let got = spread(&[195.0, 196.0, 199.0], 13.0, 10.0, 200.0);
        assert_eq!(got, vec![174.0, 187.0, 200.0]);
        // Too many for the space: apart, running past the bottom.
        let got = spread(&[0.0; 5], 13.0, 0.0, 20.0);
        assert_eq!(got, vec![0.0, 13.0, 26.0, 39.0, 52.0]);
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            linear_ticks(0.0, 92.0, 4),
            vec![0.0, 20.0, 40.0, 60.0, 80.0]
        );
        assert_eq!(linear_ticks(0.0, 1.0, 2), vec![0.0, 0.5, 1.0]);
        assert_eq!(
            log_ticks(8.0, 600.0),
            vec![10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
        );
        assert_eq!(log_ticks(0.05, 500.0), vec![0.1, 1.0, 10.0, 100.0]);
        // Within one decade's 1-2-5 steps: linear ticks.
        assert_eq!(log_ticks(12.0, 19.0), vec![12.0, 14.0, 16.0, 18.0]);
        assert_eq!(tick_text(0.5), "0.5");
        assert_eq!(tick_text(20.0), "20");
        assert_eq!(tick_text(1500.0), "1500");
        assert_eq!(tick_text(2.5), "2.5");
        assert_eq!(tick_text(0.025), "0.025");
        assert_eq!(tick_text(0.00012), "0.00012");
    }

    #[test]
    fn text_widths_err_wide_of_dejavu_sans() {
        // Summed from DejaVu Sans Book's advance widths (its hmtx table): "ort" at 11 px is
        // 15.57 px, "candle-native" 74.89, a scenario id at 12 px 207.60.
        assert!(text_width("ort", 11.0) >= 15.57);
        assert!(text_width("candle-native", 11.0) >= 74.89);
        let id = text_width("candle-native/cpu/fp32/b8/s128/t2", 12.0);
        // Wide, but not absurdly: within 20%.
        assert!((207.6..=207.6 * 1.2).contains(&id), "{id}");
    }
}
