//! Capacity search: the highest open-loop arrival rate (requests/s) a server sustains while
//! meeting every objective. The caller supplies a probe that runs the server at a rate for a
//! duration; this module picks the rates (grow x2 / shrink /2 to bracket, then geometric
//! bisection, then one repeat at the edge) and judges each probe.
//!
//! Percentiles are nearest rank: the p-th percentile of n sorted samples is the sample at
//! rank ceil(p/100 * n), counted from 1.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One objective: a latency percentile bound (ms), or an error-rate bound (fraction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Objective {
    /// `percentile` in (0, 100), e.g. 99.0; `limit_ms` in milliseconds.
    Latency { percentile: f64, limit_ms: f64 },
    /// `max` as a fraction: 0.01 = 1%.
    ErrorRate { max: f64 },
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Objective::Latency {
                percentile,
                limit_ms,
            } => {
                write!(f, "p{} <= {} ms", exact(*percentile), exact(*limit_ms))
            }
            Objective::ErrorRate { max } => write!(f, "errors <= {}%", exact(max * 100.0)),
        }
    }
}

/// "p99 <= 20 ms, errors <= 1%".
pub fn describe(objectives: &[Objective]) -> String {
    let parts: Vec<String> = objectives.iter().map(|o| o.to_string()).collect();
    parts.join(", ")
}

const FORMS: &str = "known forms: pNN:LIMIT or pNN.N:LIMIT (e.g. p99:20ms, p99.9:1.5ms, \
p50:500us, p90:2s; a bare number is ms) and errors:RATE (e.g. errors:1% or errors:0.01)";

/// Parses `p99:20ms,p50:5ms,errors:1%`. Limits take us/µs/ms/s (bare = ms); error rates
/// take "1%" or a fraction "0.01".
pub fn parse_objectives(s: &str) -> Result<Vec<Objective>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once(':') else {
            return Err(format!(
                "bad objective \"{part}\": expected KEY:VALUE; {FORMS}"
            ));
        };
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
        if key == "errors" {
            out.push(Objective::ErrorRate {
                max: parse_error_rate(part, value)?,
            });
        } else if let Some(p) = key.strip_prefix('p') {
            let percentile = match p.parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 && v < 100.0 && !p.starts_with(['+', '-']) => v,
                _ => {
                    return Err(format!(
                        "bad percentile \"{key}\" in \"{part}\": expected pNN or pNN.N \
                         strictly between p0 and p100, e.g. p99 or p99.9"
                    ))
                }
            };
            let limit_ms = parse_limit_ms(part, value)?;
            out.push(Objective::Latency {
                percentile,
                limit_ms,
            });
        } else {
            return Err(format!("unknown objective \"{part}\"; {FORMS}"));
        }
    }
    if out.is_empty() {
        return Err(format!("no objectives given; {FORMS}"));
    }
    Ok(out)
}

fn parse_limit_ms(part: &str, value: &str) -> Result<f64, String> {
    let units = [("us", 0.001), ("µs", 0.001), ("ms", 1.0), ("s", 1000.0)];
    let unit = |(u, k): &(&str, f64)| value.strip_suffix(u).map(|n| (n, *k));
    let (num, scale) = units.iter().find_map(unit).unwrap_or((value, 1.0));
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v * scale),
        _ => Err(format!(
            "bad latency limit \"{value}\" in \"{part}\": expected a positive duration like \
             20ms, 1.5ms, 2s, 500us, or a bare number of ms"
        )),
    }
}

fn parse_error_rate(part: &str, value: &str) -> Result<f64, String> {
    let bad = || {
        format!(
            "bad error rate \"{value}\" in \"{part}\": expected a percentage like 1% (0 to 100%) \
             or a fraction like 0.01 (0 to 1)"
        )
    };
    let (num, scale) = match value.strip_suffix('%') {
        Some(n) => (n.trim(), 0.01),
        None => (value, 1.0),
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale <= 1.0 => Ok(v * scale + 0.0),
        _ => Err(bad()),
    }
}

/// `--find-max-rate` as a run asks for it: the objectives, and the arrival process of the
/// probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindMaxRate {
    pub objectives: Vec<Objective>,
    pub arrivals: crate::results::Arrivals,
}

/// What the caller measured at one rate (rates in requests/s, latencies in ms).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub intended_rate: f64,
    pub achieved_rate: f64,
    pub sent: u64,
    pub errors: u64,
    /// From the intended send time, for every answered or in-flight request (ms).
    pub latencies_ms: Vec<f64>,
    /// The load generator itself fell behind.
    pub client_limited: bool,
    /// Requests due in the window that were never sent (not in `latencies_ms`).
    pub unsent: u64,
}

/// One judged probe (rates in requests/s, duration in s).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub rate: f64,
    pub duration_s: f64,
    pub passed: bool,
    pub achieved_rate: f64,
    pub requests: u64,
    pub errors: u64,
    /// Measured value per objective, same order (ms, or error fraction); NaN (null) if unmeasured.
    #[serde(with = "nan_as_null")]
    pub values: Vec<f64>,
    /// One line per failed objective or other failure.
    pub reasons: Vec<String>,
    /// The deliberate repeat at the edge.
    pub repeat: bool,
    #[serde(default)]
    pub client_limited: bool,
    /// What weakens the probe without failing it (a percentile from fewer samples than it
    /// needs: a rougher estimate, which the repeat at the edge checks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The outcome of a search (rates in requests/s).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capacity {
    pub objectives: Vec<Objective>,
    /// Highest rate that passed (and passed again when repeated); 0 if none passed.
    pub capacity: f64,
    /// The lowest rate that failed above it, if any.
    pub failed_above: Option<f64>,
    pub probes: Vec<Probe>,
    /// One sentence: the bracket and why, or why the search could not conclude.
    pub verdict: String,
    /// Relative resolution used (0.05 = 5%).
    pub resolution: f64,
    /// resolved / max probes / interrupted / lowest rate fails / reached max rate / invalid config.
    pub stopped: String,
}

/// Search settings (rates in requests/s, durations in s).
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// First probe, e.g. from a closed-loop estimate.
    pub start_rate: f64,
    pub min_rate: f64,
    pub max_rate: f64,
    /// Stop when failed/passed <= 1 + resolution, e.g. 0.05.
    pub resolution: f64,
    pub max_probes: usize,
    pub min_probe_s: f64,
    pub max_probe_s: f64,
    /// A pNN probe needs at least tail_samples / (1 - NN/100) requests, e.g. 10.
    pub tail_samples: u64,
    /// achieved/intended below this fails the probe, e.g. 0.95.
    pub min_achieved: f64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            start_rate: 100.0,
            min_rate: 1.0,
            max_rate: 1e6,
            resolution: 0.05,
            max_probes: 20,
            min_probe_s: 5.0,
            max_probe_s: 60.0,
            tail_samples: 10,
            min_achieved: 0.95,
        }
    }
}

/// The search around what closed loop carried over the same connections or workers:
/// open loop there cannot sustain more (a little more for noise), so the search starts at
/// half of it and looks between 1% and 125% of it; each probe runs between `min_probe_s`
/// and `max_probe_s` (the run's `--min-time` and `--max-time`).
pub fn scaled_config(closed_rate: f64, min_probe_s: f64, max_probe_s: f64) -> SearchConfig {
    SearchConfig {
        start_rate: round3(closed_rate * 0.5),
        min_rate: round3((closed_rate * 0.01).max(0.1)),
        max_rate: round3(closed_rate * 1.25),
        resolution: 0.05,
        max_probes: 14,
        min_probe_s,
        max_probe_s,
        tail_samples: 10,
        min_achieved: 0.95,
    }
}

/// A rate rounded to three significant digits (readable scenario ids).
pub fn round3(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return x;
    }
    let k = 10f64.powi(2 - x.log10().floor() as i32);
    (x * k).round() / k
}

/// The rate (requests/s) a closed-loop row carried, or why it has none.
pub fn closed_rate(row: &crate::results::ScenarioResult) -> Result<f64, String> {
    row.measurement
        .as_ref()
        .filter(|m| m.window_s > 0.0 && m.iterations > 0)
        .map(|m| m.iterations as f64 / m.window_s)
        .ok_or_else(|| row.error.clone().unwrap_or_else(|| "no answers".into()))
}

/// A search that could not start: its closed-loop run at `concurrency` measured nothing.
pub fn not_searched(objectives: &[Objective], concurrency: usize, why: &str) -> Capacity {
    Capacity {
        stopped: "closed loop failed".into(),
        ..skipped(
            objectives,
            &format!("the closed-loop run at concurrency {concurrency} measured nothing ({why})"),
        )
    }
}

/// A search not run, and why.
pub fn skipped(objectives: &[Objective], why: &str) -> Capacity {
    Capacity {
        objectives: objectives.to_vec(),
        capacity: 0.0,
        failed_above: None,
        probes: Vec::new(),
        verdict: format!("not searched: {why}"),
        resolution: 0.0,
        stopped: "not searched".into(),
    }
}

/// What a probe's row observed at `rate`; `latencies_ns` are every counted request's, from
/// its intended send.
pub fn observed(rate: f64, row: &crate::results::ScenarioResult, latencies_ns: &[u64]) -> Observed {
    let failures = row.measurement.as_ref().map_or(0, |m| m.failures);
    Observed {
        intended_rate: rate,
        achieved_rate: row.open_loop.as_ref().map_or(0.0, |x| x.achieved_rate),
        sent: latencies_ns.len() as u64 + failures,
        errors: failures,
        latencies_ms: latencies_ns.iter().map(|&ns| ns as f64 / 1e6).collect(),
        client_limited: row
            .served
            .as_ref()
            .is_some_and(|s| s.client_limited.is_some()),
        // The backlog counts every request due and not answered; those in flight are counted.
        unsent: row.open_loop.as_ref().map_or(0, |o| {
            let in_flight = row.measurement.as_ref().map_or(0, |m| m.in_flight_at_end);
            o.backlog_at_end.saturating_sub(in_flight)
        }),
    }
}

/// Requests a percentile needs: tail_samples / (1 - p/100), rounded up.
fn needed_samples(tail_samples: u64, percentile: f64) -> u64 {
    (tail_samples as f64 / (1.0 - percentile / 100.0) - 1e-9).ceil() as u64
}

/// Seconds a probe at `rate` must run so each percentile objective has enough samples:
/// max(min_probe_s, needed_requests / rate) rounded up to the ms, capped at max_probe_s.
pub fn probe_seconds(cfg: &SearchConfig, objectives: &[Objective], rate: f64) -> f64 {
    let needed = objectives.iter().filter_map(|o| match o {
        Objective::Latency { percentile: p, .. } => Some(needed_samples(cfg.tail_samples, *p)),
        Objective::ErrorRate { .. } => None,
    });
    let needed = needed.max().unwrap_or(0) as f64;
    let mut d = cfg.min_probe_s.max(0.0);
    if rate.is_finite() && rate > 0.0 {
        d = d.max((needed / rate * 1000.0).ceil() / 1000.0);
    }
    if cfg.max_probe_s.is_finite() && cfg.max_probe_s > 0.0 {
        d = d.min(cfg.max_probe_s);
    }
    finite_or(d, 0.0)
}

/// Judges one probe at `rate` (requests/s) run for `duration_s` against the objectives.
pub fn judge(
    objectives: &[Objective],
    cfg: &SearchConfig,
    rate: f64,
    duration_s: f64,
    obs: &Observed,
) -> Probe {
    // A NaN latency counts as never answered.
    let mut sorted = obs.latencies_ms.clone();
    for x in sorted.iter_mut().filter(|x| x.is_nan()) {
        *x = f64::INFINITY;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as u64;
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    let mut values = Vec::with_capacity(objectives.len());
    for o in objectives {
        match o {
            Objective::Latency {
                percentile,
                limit_ms,
            } => {
                let name = format!("p{}", exact(*percentile));
                let rank =
                    ((percentile / 100.0 * n as f64 - 1e-9).ceil() as u64).clamp(1, n.max(1));
                let v = sorted.get(rank as usize - 1).copied().unwrap_or(f64::NAN);
                values.push(v);
                let needed = needed_samples(cfg.tail_samples, *percentile);
                if n < needed {
                    notes.push(format!("too few samples for {name}: {n} < {needed}"));
                }
                if v.is_nan() {
                    reasons.push(format!("{name}: no latencies measured"));
                } else if !within(v, *limit_ms) {
                    reasons.push(format!("{name} {} ms > {} ms", short(v), exact(*limit_ms)));
                }
            }
            Objective::ErrorRate { max } => {
                let v = obs.errors as f64 / obs.sent as f64; // NaN when nothing was sent
                values.push(v);
                let (got, limit) = (short(v * 100.0), exact(max * 100.0));
                if obs.sent == 0 {
                    reasons.push("errors: no requests were sent".to_string());
                } else if !within(v, *max) {
                    reasons.push(format!("errors {got}% > {limit}%"));
                }
            }
        }
    }
    let achieved = finite_or(obs.achieved_rate, 0.0);
    let ratio = achieved / rate;
    let (a, r, pct) = (rate_str(achieved), rate_str(rate), ratio * 100.0);
    let achieved_txt = format!("achieved {a} of {r} ({pct:.0}%)");
    // A Poisson count over the probe varies by its square root: with few arrivals a low
    // achieved rate is chance, not a server falling behind (the floor allows 3 standard
    // deviations).
    let expected = rate * duration_s;
    let noise = if expected > 0.0 {
        3.0 / expected.sqrt()
    } else {
        1.0
    };
    let floor = cfg.min_achieved.min(1.0 - noise);
    if cfg.min_achieved.is_finite() && cfg.min_achieved > 0.0 && !within(floor, ratio) {
        reasons.push(achieved_txt.clone());
    }
    // A load generator that fell behind weakens a failure, not a pass: every latency counts
    // from its intended send (the client's lateness is inside it) and the achieved rate is
    // checked above, so objectives met despite it were met under a harder load than asked.
    // Unless it left requests unsent at the end: their lateness is in no latency.
    if obs.client_limited {
        if obs.unsent > 0 {
            reasons.push(format!(
                "the load generator fell behind (client-limited) and left {} request(s) due \
                 in the window unsent, so this probe may describe the client: {achieved_txt}",
                obs.unsent
            ));
        } else if reasons.is_empty() {
            notes.push(format!(
                "the load generator fell behind (client-limited), yet every objective held \
                 with latencies counted from the intended sends: {achieved_txt}"
            ));
        } else {
            reasons.push(format!(
                "the load generator fell behind (client-limited), so this failure may be the \
                 client's: {achieved_txt}"
            ));
        }
    }
    Probe {
        rate,
        duration_s,
        passed: reasons.is_empty(),
        achieved_rate: achieved,
        requests: obs.sent,
        errors: obs.errors,
        values,
        reasons,
        repeat: false,
        client_limited: obs.client_limited,
        notes,
    }
}

/// Searches for the capacity. `probe(rate, duration_s)` runs the server and returns what it
/// observed, or None if interrupted (the search then stops and keeps what is known).
pub fn search(
    objectives: &[Objective],
    cfg: &SearchConfig,
    probe: &mut dyn FnMut(f64, f64) -> Option<Observed>,
) -> Capacity {
    let res = finite_or(cfg.resolution, 0.05).max(1e-9);
    let (min, max) = (cfg.min_rate, cfg.max_rate);
    let mut cap = Capacity {
        objectives: objectives.to_vec(),
        capacity: 0.0,
        failed_above: None,
        probes: Vec::new(),
        verdict: String::new(),
        resolution: res,
        stopped: String::new(),
    };
    if !(min.is_finite() && min > 0.0 && max.is_finite() && max >= min) {
        cap.stopped = "invalid config".into();
        cap.verdict = format!(
            "invalid search config: need 0 < min rate <= max rate, both finite \
             (got {min}/s and {max}/s)"
        );
        return cap;
    }
    let start = finite_or(cfg.start_rate, min).clamp(min, max);
    let (mut lo, mut hi): (Option<f64>, Option<f64>) = (None, None);
    let mut confirmed: Vec<f64> = Vec::new();
    let mut noisy: Vec<f64> = Vec::new();
    let same = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    let stopped: &str = loop {
        let tested = |r: f64, probes: &[Probe]| probes.iter().any(|p| same(p.rate, r));
        // Next rate, or the reason to stop once the edge has been repeated.
        let fresh = match (lo, hi) {
            (None, None) => Ok(start),
            (Some(l), None) if l < max => Ok((l * 2.0).min(max)),
            (Some(_), None) => Err("reached max rate"),
            (None, Some(h)) if h <= min => break "lowest rate fails",
            (None, Some(h)) => Ok((h / 2.0).max(min)),
            (Some(l), Some(h)) => {
                let m = (l * h).sqrt();
                if h / l <= 1.0 + res || !(m > l && m < h) {
                    Err("resolved")
                } else {
                    Ok(m)
                }
            }
        };
        // Rates of three significant digits: the probes' rows are named by them.
        let fresh = fresh.map(round3);
        let (rate, repeat) = match (fresh, lo) {
            (Ok(r), _) if !tested(r, &cap.probes) => (r, false),
            (_, Some(l)) => {
                if confirmed.iter().any(|&c| same(c, l)) {
                    break fresh.err().unwrap_or("resolved");
                }
                (l, true)
            }
            (_, None) => break "resolved",
        };
        if cap.probes.len() >= cfg.max_probes {
            break "max probes";
        }
        let duration = probe_seconds(cfg, objectives, rate);
        let Some(obs) = probe(rate, duration) else {
            break "interrupted";
        };
        let mut p = judge(objectives, cfg, rate, duration, &obs);
        p.repeat = repeat;
        let passed = p.passed;
        cap.probes.push(p);
        match (repeat, passed) {
            (true, true) => confirmed.push(rate),
            (true, false) => {
                noisy.push(rate);
                hi = Some(rate);
                let below = cap.probes.iter().filter(|p| p.passed && p.rate < rate);
                lo = below.map(|p| p.rate).max_by(f64::total_cmp);
            }
            (false, true) => lo = Some(rate),
            (false, false) => hi = Some(rate),
        }
    };
    cap.capacity = lo.unwrap_or(0.0);
    cap.failed_above = hi;
    cap.stopped = stopped.to_string();
    let sure = lo.is_some_and(|l| confirmed.iter().any(|&c| same(c, l)));
    cap.verdict = verdict(&cap, sure, &noisy);
    cap
}

fn verdict(cap: &Capacity, confirmed: bool, noisy: &[f64]) -> String {
    // Why the last failed probe at `r` failed.
    let failed_at = |r: f64| {
        let p = cap.probes.iter().rev().find(|p| !p.passed && p.rate == r);
        p.map(|p| p.reasons.join("; ")).unwrap_or_default()
    };
    let how = ["passed once, not repeated", "passed twice"][confirmed as usize];
    let lo = (cap.capacity > 0.0).then_some(cap.capacity);
    let lo_txt = lo.map(|l| format!("{} ({how})", rate_str(l)));
    let hi = cap.failed_above;
    let hi_txt = hi.map(|h| format!("{} (failed: {})", rate_str(h), failed_at(h)));
    let bracket = match (&lo_txt, &hi_txt) {
        (Some(l), Some(h)) => format!("between {l} and {h}"),
        (Some(l), None) => format!("at least {l}; no failing rate found yet"),
        (None, Some(h)) => format!("below {h}; no passing rate found yet"),
        (None, None) => "no probe finished; capacity unknown".to_string(),
    };
    let n = cap.probes.len();
    let mut v = match cap.stopped.as_str() {
        "resolved" => format!("{bracket}; resolution {}%", exact(cap.resolution * 100.0)),
        "reached max rate" => {
            format!("{bracket}: the max rate passed; raise the max rate to search higher")
        }
        "lowest rate fails" => {
            let h = hi.unwrap_or(0.0);
            let (r, why) = (rate_str(h), failed_at(h));
            format!("even the lowest rate {r} fails ({why}); capacity 0")
        }
        "interrupted" => format!("interrupted after {n} probes: {bracket}"),
        other => format!("stopped after {n} probes ({other}) before resolving: {bracket}"),
    };
    for &r in noisy {
        let (r, why) = (rate_str(r), failed_at(r));
        v.push_str(&format!(
            "; the edge was noisy: {r} passed, then failed when repeated ({why})"
        ));
    }
    let limited = rates_where(cap, |p| p.client_limited && !p.passed);
    if !limited.is_empty() {
        v.push_str(&format!(
            "; client-limited at {}: the load generator fell behind there, so those failures \
             may be the client's, not the server's",
            limited.join(", ")
        ));
    }
    let held = rates_where(cap, |p| p.client_limited && p.passed);
    if !held.is_empty() {
        v.push_str(&format!(
            "; the load generator also fell behind at {}, where every objective held \
             (latencies count from the intended sends)",
            held.join(", ")
        ));
    }
    let mut notes = cap.probes.iter().flat_map(|p| &p.notes);
    if notes.any(|r| r.starts_with("too few samples")) {
        v.push_str(
            "; some probes had too few samples for their percentile (rougher estimates): raise the max probe seconds (--max-time)",
        );
    }
    v
}

/// The rates of the probes that match, each once, in the order first probed.
fn rates_where(cap: &Capacity, f: impl Fn(&Probe) -> bool) -> Vec<String> {
    let mut rates: Vec<String> = Vec::new();
    for p in cap.probes.iter().filter(|p| f(p)) {
        let r = rate_str(p.rate);
        if !rates.contains(&r) {
            rates.push(r);
        }
    }
    rates
}

fn finite_or(x: f64, default: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        default
    }
}

/// a <= b, false when either is NaN.
fn within(a: f64, b: f64) -> bool {
    a <= b
}

fn rate_str(r: f64) -> String {
    format!("{}/s", short(r))
}

/// A value rounded for reading: 812, 31.2, 2.25, 0.125.
fn short(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() || a >= 100.0 {
        return format!("{x:.0}");
    }
    let digits = [4, 2, 1][usize::from(a >= 1.0) + usize::from(a >= 10.0)];
    trim(format!("{x:.digits$}"))
}

/// A configured value, up to 6 decimals with trailing zeros dropped: 99.9, 1.5, 20.
fn exact(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    trim(format!("{x:.6}"))
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Serializes non-finite values as null and reads null back as NaN.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let o: Vec<Option<f64>> = v.iter().map(|x| x.is_finite().then_some(*x)).collect();
        o.serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let o = Vec::<Option<f64>>::deserialize(d)?;
        Ok(o.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_round_to_three_significant_digits() {
        assert_eq!(round3(3631.1508), 3630.0);
        assert_eq!(round3(0.123456), 0.123);
        assert_eq!(round3(12.3456), 12.3);
    }

    /// M/M/1 with 2 ms service time: capacity 500/s.
    const MU: f64 = 500.0;

    /// Rate (requests/s) where the M/M/1 sojourn p99 = ln(100)/(mu - lambda) equals `limit_ms`.
    fn analytic(limit_ms: f64) -> f64 {
        MU - 100f64.ln() / (limit_ms / 1000.0)
    }

    /// Deterministic M/M/1 run: sojourn times (ms) at quantiles i/n of Exp(mu - lambda), so
    /// the nearest-rank p99 is the model's exact p99. Unstable (rate >= mu): 10 s each.
    fn mm1(rate: f64, duration: f64) -> Observed {
        let sent = (rate * duration).round() as u64;
        let q = |i: u64| ((i + 1) as f64 / sent as f64).min(1.0 - 0.1 / sent as f64);
        let lat = |i| -(1.0 - q(i)).ln() / (MU - rate).max(0.0) * 1e3;
        let mut o = Observed::default();
        (o.intended_rate, o.achieved_rate, o.sent) = (rate, rate, sent);
        o.latencies_ms = (0..sent).map(lat).map(|x| x.min(1e4)).collect();
        o
    }

    /// The M/M/1 model with every latency passed through `f`.
    fn model(f: impl Fn(f64) -> f64) -> impl FnMut(f64, f64) -> Option<Observed> {
        move |r, d| {
            let mut o = mm1(r, d);
            o.latencies_ms.iter_mut().for_each(|x| *x = f(*x));
            Some(o)
        }
    }

    /// Test settings (max 10000/s, probes 1-30 s), changed by `f`.
    fn cfg(f: impl FnOnce(&mut SearchConfig)) -> SearchConfig {
        let mut c = SearchConfig::default();
        (c.max_rate, c.min_probe_s, c.max_probe_s) = (10_000.0, 1.0, 30.0);
        f(&mut c);
        c
    }

    fn p99(limit_ms: f64) -> Vec<Objective> {
        parse_objectives(&format!("p99:{limit_ms}ms")).unwrap_or_default()
    }

    /// Searches with a p99 objective and checks no rate was probed twice but the repeat.
    fn run(
        limit_ms: f64,
        cfg: SearchConfig,
        mut f: impl FnMut(f64, f64) -> Option<Observed>,
    ) -> Capacity {
        let c = search(&p99(limit_ms), &cfg, &mut f);
        let fresh: Vec<f64> = c
            .probes
            .iter()
            .filter(|p| !p.repeat)
            .map(|p| p.rate)
            .collect();
        for (i, a) in fresh.iter().enumerate() {
            assert!(!fresh[i + 1..].contains(a), "{a} probed twice: {fresh:?}");
        }
        c
    }

    fn says(c: &Capacity, part: &str) {
        assert!(c.verdict.contains(part), "no {part:?} in: {}", c.verdict);
    }

    #[test]
    fn finds_mm1_capacity_within_band() {
        let c = run(20.0, cfg(|_| ()), model(|x| x));
        let want = analytic(20.0); // ~269.7/s
        assert_eq!(c.stopped, "resolved", "{}", c.verdict);
        assert!(c.capacity > 0.95 * want && c.capacity <= want, "{c:?}");
        let hi = c.failed_above.unwrap_or(0.0);
        assert!(hi > want && hi / c.capacity <= 1.05 + 1e-9, "hi {hi}");
        let last = c.probes.last().map(|p| (p.repeat, p.passed, p.rate));
        assert_eq!(last, Some((true, true, c.capacity)), "a repeat at the edge");
        assert!(c.verdict.starts_with("between "));
        says(&c, "(passed twice) and ");
        says(&c, " ms > 20 ms); resolution 5%");
        let back: Capacity = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back.probes.len(), c.probes.len());
    }

    #[test]
    fn tighter_slo_gives_lower_capacity() {
        let loose = run(20.0, cfg(|_| ()), model(|x| x)).capacity;
        let tight = run(12.0, cfg(|_| ()), model(|x| x)).capacity;
        let want = analytic(12.0); // ~116.2/s
        assert!(
            tight < loose && tight > 0.95 * want && tight <= want,
            "{tight} vs {want}"
        );
    }

    #[test]
    fn error_rate_objective() {
        // Drops everything above 300/s: the error rate is 1% at 303/s.
        let obj = parse_objectives("errors:1%").unwrap();
        let c = search(&obj, &cfg(|_| ()), &mut |r, d| {
            let mut o = mm1(r, d);
            o.errors = o.sent.saturating_sub((300.0 * d).round() as u64);
            Some(o)
        });
        let want = 300.0 / 0.99;
        assert!(c.capacity > 0.95 * want && c.capacity <= want, "{c:?}");
        says(&c, "passed twice");
        says(&c, "% > 1%");
    }

    #[test]
    fn failing_at_min_rate_gives_zero() {
        let c = run(20.0, cfg(|c| c.min_rate = 50.0), model(|_| 1000.0));
        let got = (c.capacity, c.stopped.as_str(), c.failed_above);
        assert_eq!(got, (0.0, "lowest rate fails", Some(50.0)));
        says(
            &c,
            "even the lowest rate 50/s fails (p99 1000 ms > 20 ms); capacity 0",
        );
        assert!(c.probes.iter().all(|p| !p.passed));
        // Too-short probes are judged on what they have (a rougher estimate, not a failure:
        // fewer samples at lower rates must not push the search down), and the verdict says so.
        let c = run(20.0, cfg(|c| c.max_probe_s = 5.0), model(|x| x));
        let want = analytic(20.0);
        assert!(
            c.capacity > 0.8 * want && c.capacity <= 1.05 * want,
            "{c:?}"
        );
        assert!(c.probes.iter().any(|p| !p.notes.is_empty()), "{c:?}");
        says(&c, "raise the max probe seconds");
    }

    #[test]
    fn reaching_max_rate() {
        let c = run(20.0, cfg(|c| c.max_rate = 1000.0), model(|_| 1.0));
        let got = (c.capacity, c.stopped.as_str(), c.failed_above);
        assert_eq!(got, (1000.0, "reached max rate", None));
        assert!(c
            .probes
            .last()
            .is_some_and(|p| p.repeat && p.rate == 1000.0));
        says(&c, "at least 1000/s (passed twice)");
    }

    #[test]
    fn interruption_keeps_probes() {
        let mut calls = 0;
        let c = run(20.0, cfg(|_| ()), |r, d| {
            calls += 1;
            (calls <= 3).then(|| mm1(r, d))
        });
        assert_eq!((c.probes.len(), c.stopped.as_str()), (3, "interrupted"));
        assert_eq!((c.capacity, c.failed_above), (200.0, Some(400.0)));
        says(
            &c,
            "interrupted after 3 probes: between 200/s (passed once, not repeated)",
        );
    }

    #[test]
    fn max_probes_stops() {
        let c = run(20.0, cfg(|c| c.max_probes = 4), model(|x| x));
        assert_eq!((c.probes.len(), c.stopped.as_str()), (4, "max probes"));
        says(
            &c,
            "stopped after 4 probes (max probes) before resolving: between ",
        );
    }

    #[test]
    fn noisy_edge_moves_capacity_down() {
        let clean = run(20.0, cfg(|_| ()), model(|x| x));
        let (mut seen, mut failed_once) = (Vec::new(), false);
        let c = run(20.0, cfg(|_| ()), |r, d| {
            let mut o = mm1(r, d);
            if seen.contains(&r) && !failed_once {
                failed_once = true; // the first repeat fails
                o.latencies_ms.iter_mut().for_each(|x| *x *= 10.0);
            }
            seen.push(r);
            Some(o)
        });
        assert!(c.capacity < clean.capacity && c.capacity > 0.0, "{c:?}");
        assert_eq!(c.failed_above, Some(clean.capacity));
        assert_eq!(c.probes.iter().filter(|p| p.repeat).count(), 2);
        says(&c, "passed twice");
        says(&c, "; the edge was noisy: ");
        says(&c, "passed, then failed when repeated (p99 ");
    }

    #[test]
    fn a_limited_client_weakens_failures_not_passes() {
        // Latencies count from the intended sends, so a pass under a late client stands; a
        // failure under one says it may be the client's.
        let clean = run(20.0, cfg(|_| ()), model(|x| x));
        let c = run(20.0, cfg(|_| ()), |r, d| {
            let mut o = mm1(r, d);
            o.client_limited = r > 150.0;
            Some(o)
        });
        assert_eq!(c.capacity, clean.capacity, "{c:?}");
        let passed = c.probes.iter().find(|p| p.client_limited && p.passed);
        let p = passed.expect("a limited probe that passed");
        assert!(p.reasons.is_empty(), "{p:?}");
        let held = "the load generator fell behind (client-limited), yet every objective held";
        assert!(p.notes.iter().any(|n| n.starts_with(held)), "{p:?}");
        let failed = c.probes.iter().find(|p| p.client_limited && !p.passed);
        let p = failed.expect("a limited probe that failed");
        let why = "the load generator fell behind (client-limited), so this failure may be the client's: ";
        assert!(p.reasons.iter().any(|r| r.starts_with(why)), "{p:?}");
        assert!(p.reasons.iter().any(|r| r.starts_with("p99 ")), "{p:?}");
        says(&c, &format!("client-limited at {}/s", p.rate));
        says(&c, "the load generator also fell behind at 200/s, ");
        says(&c, "260/s, where every objective held");
        // A limited client alone never fails a probe, even at a rate it could not have met.
        let obj = parse_objectives("p99:100ms").unwrap();
        let mut o = mm1(100.0, 10.0);
        o.client_limited = true;
        let p = judge(&obj, &cfg(|_| ()), 100.0, 10.0, &o);
        assert!(p.passed && p.client_limited, "{p:?}");
        // Requests left unsent at the end carry no latency: then it fails, and says so.
        o.unsent = 3;
        let p = judge(&obj, &cfg(|_| ()), 100.0, 10.0, &o);
        assert!(!p.passed, "{p:?}");
        let left = "the load generator fell behind (client-limited) and left 3 request(s) due in the window unsent";
        assert!(p.reasons.iter().any(|r| r.starts_with(left)), "{p:?}");
        o.unsent = 0;
        o.achieved_rate = 50.0;
        let p = judge(&obj, &cfg(|_| ()), 100.0, 10.0, &o);
        assert!(!p.passed, "{p:?}");
        assert!(
            p.reasons.iter().any(|r| r.starts_with("achieved 50/s")),
            "{p:?}"
        );
        assert!(p.reasons.iter().any(|r| r.starts_with(why)), "{p:?}");
    }

    #[test]
    fn a_short_probe_is_not_failed_for_its_arrival_count() {
        // 0.3/s for 10 s: 3 arrivals expected, 2 came (a Poisson count's chance); the same
        // shortfall over 3,000 arrivals is a server behind.
        let obj = parse_objectives("p99:100ms").unwrap();
        let mut o = mm1(0.3, 10.0);
        o.achieved_rate = 0.2;
        let p = judge(&obj, &cfg(|_| ()), 0.3, 10.0, &o);
        assert!(
            !p.reasons.iter().any(|r| r.starts_with("achieved")),
            "{p:?}"
        );
        let mut o = mm1(300.0, 10.0);
        o.achieved_rate = 200.0;
        let p = judge(&obj, &cfg(|_| ()), 300.0, 10.0, &o);
        assert!(p.reasons.iter().any(|r| r.starts_with("achieved")), "{p:?}");
    }

    #[test]
    fn judge_reasons() {
        let obj = parse_objectives("p99:20ms,errors:1%").unwrap();
        let mut o = mm1(100.0, 3.12);
        (o.achieved_rate, o.errors) = (81.2, 10);
        let p = judge(&obj, &cfg(|_| ()), 100.0, 3.12, &o);
        assert!(!p.passed && p.values.len() == 2 && p.requests == 312);
        assert_eq!(p.notes, ["too few samples for p99: 312 < 1000"]);
        assert_eq!(
            p.reasons,
            ["errors 3.21% > 1%", "achieved 81.2/s of 100/s (81%)"]
        );
        let p = judge(&obj, &cfg(|_| ()), 100.0, 1.0, &Observed::default());
        assert!(!p.passed && p.values.iter().all(|v| v.is_nan()));
        let back: Probe = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert!(back.values[0].is_nan());
        let mut o = mm1(100.0, 20.0);
        o.latencies_ms.iter_mut().for_each(|x| *x = f64::NAN);
        let p = judge(&obj, &cfg(|_| ()), 100.0, 20.0, &o);
        assert_eq!(p.reasons, ["p99 inf ms > 20 ms"]);
    }

    #[test]
    fn parses_objectives() {
        let s = " p99:20ms, p99.9:1.5ms,p50:500us ,P90:2s,p75:3,errors:1%,errors:0.02";
        let o = parse_objectives(s).unwrap();
        let lat = |percentile, limit_ms| Objective::Latency {
            percentile,
            limit_ms,
        };
        assert_eq!(o[..3], [lat(99.0, 20.0), lat(99.9, 1.5), lat(50.0, 0.5)]);
        assert_eq!(o[3..5], [lat(90.0, 2000.0), lat(75.0, 3.0)]);
        assert_eq!(
            o[5..],
            [
                Objective::ErrorRate { max: 0.01 },
                Objective::ErrorRate { max: 0.02 }
            ]
        );
        assert_eq!(describe(&o[..2]), "p99 <= 20 ms, p99.9 <= 1.5 ms");
        assert_eq!(describe(&o[5..6]), "errors <= 1%");
        let err = |s: &str| parse_objectives(s).unwrap_err();
        assert!(err("e2e:5ms").contains("unknown objective \"e2e:5ms\"; known forms: pNN:LIMIT"));
        assert!(err("p99:20xs").contains("bad latency limit \"20xs\" in \"p99:20xs\": expected"));
        assert!(err("p99:-1ms").contains("positive duration"));
        assert!(err("p100:5ms").contains("bad percentile \"p100\""));
        assert!(err("pabc:5ms").contains("expected pNN or pNN.N"));
        assert!(err("errors:5").contains("bad error rate \"5\""));
        assert!(err("errors:150%").contains("0 to 100%"));
        assert!(err("p99").contains("expected KEY:VALUE"));
        assert!(err(" , ").contains("no objectives"));
    }

    #[test]
    fn probe_seconds_covers_tail() {
        let (c, p) = (cfg(|_| ()), p99(20.0));
        assert!(probe_seconds(&c, &p, 100.0) >= 10.0); // 1000 requests
        assert_eq!(probe_seconds(&c, &p, 100_000.0), 1.0);
        assert_eq!(probe_seconds(&c, &p, 1.0), 30.0);
        assert_eq!(probe_seconds(&c, &p, f64::NAN), 1.0);
        let e = parse_objectives("errors:1%").unwrap();
        assert_eq!(probe_seconds(&c, &e, 100.0), 1.0);
    }

    #[test]
    fn odd_config_does_not_panic() {
        let c = run(20.0, cfg(|c| c.min_rate = 0.0), model(|x| x));
        assert_eq!((c.stopped.as_str(), c.probes.len()), ("invalid config", 0));
        let c = run(20.0, cfg(|c| c.max_probes = 0), model(|x| x));
        assert_eq!(c.stopped, "max probes");
        let c = run(
            20.0,
            cfg(|c| (c.start_rate, c.min_rate, c.resolution) = (f64::NAN, 50.0, -1.0)),
            model(|x| x),
        );
        assert!(c.probes.len() <= 20 && c.capacity > 0.0, "{c:?}");
    }
}
