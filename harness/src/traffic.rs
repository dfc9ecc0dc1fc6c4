//! Arrival schedules for open-loop load: seeded gamma arrivals (Poisson, smoother or burstier),
//! a linear warm-up ramp that works over any arrival process, and recorded traces (CSV or
//! JSONL) replayed at a chosen speed. Every schedule is a list of send offsets in nanoseconds
//! from the start of the window; latency is measured from these intended send times.
//!
//! Processes are built in two steps so that any of them can be ramped: `unit_*` gives the
//! arrival times of a rate-1 process (in "unit time"), and [`timed`] maps them to real time
//! through the inverse cumulative intensity of the target rate (plain, or ramped).

use std::collections::HashSet;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Smallest coefficient of variation accepted for gamma arrivals (near-constant gaps).
pub const MIN_CV: f64 = 0.05;
/// Largest coefficient of variation accepted for gamma arrivals (extreme bursts).
pub const MAX_CV: f64 = 20.0;
/// Most entries a trace may hold (about 1 GB of schedule and shapes).
pub const MAX_TRACE_ENTRIES: usize = 10_000_000;

/// Largest trace time value, in seconds (~317 years): keeps offsets within u64 nanoseconds
/// and catches millisecond epochs in the `timestamp` column.
const MAX_TRACE_SECS: f64 = 1e10;
/// Largest batch or sequence length a trace may ask for.
const MAX_SHAPE: f64 = 1e9;

/// Uniforms, normals (Box–Muller) and gammas (Marsaglia–Tsang) from one seeded stream.
struct Sampler {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl Sampler {
    fn new(seed: u64) -> Self {
        Sampler {
            rng: ChaCha8Rng::seed_from_u64(seed),
            spare: None,
        }
    }

    /// Uniform in (0, 1], so its logarithm is finite.
    fn uniform(&mut self) -> f64 {
        1.0 - self.rng.random::<f64>()
    }

    /// Standard normal; Box–Muller yields two, the second is kept for the next call.
    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let r = (-2.0 * self.uniform().ln()).sqrt();
        let theta = std::f64::consts::TAU * self.rng.random::<f64>();
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }

    /// Gamma with shape `k` > 0 and scale 1 (mean `k`).
    fn gamma(&mut self, k: f64) -> f64 {
        if k < 1.0 {
            // Boost: G(k) = G(k + 1) * U^(1/k).
            return self.gamma(k + 1.0) * self.uniform().powf(1.0 / k);
        }
        let d = k - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v;
            }
        }
    }
}

/// Arrival times of a rate-1 process from its gaps: the first at 0, then cumulative sums.
fn cumulative(n: usize, mut gap: impl FnMut() -> f64) -> Vec<f64> {
    let mut t = 0.0;
    (0..n)
        .map(|i| {
            if i > 0 {
                t += gap();
            }
            t
        })
        .collect()
}

/// `n` evenly spaced rate-1 arrivals: 0, 1, 2, ... (unit time).
pub fn unit_constant(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

/// `n` rate-1 Poisson arrivals (exponential gaps, mean 1 unit), seeded; the first at 0.
pub fn unit_poisson(seed: u64, n: usize) -> Vec<f64> {
    let mut s = Sampler::new(seed);
    cumulative(n, || -s.uniform().ln())
}

/// `n` rate-1 arrivals with gamma gaps of mean 1 unit and coefficient of variation `cv`
/// (shape 1/cv², so cv = 1 is Poisson), seeded; the first at 0. `cv` is clamped into
/// [`MIN_CV`], [`MAX_CV`] (NaN counts as 1): validate user values with [`parse_gamma`].
pub fn unit_gamma(cv: f64, seed: u64, n: usize) -> Vec<f64> {
    let cv = (if cv.is_nan() { 1.0 } else { cv }).clamp(MIN_CV, MAX_CV);
    let k = 1.0 / (cv * cv);
    let mut s = Sampler::new(seed);
    cumulative(n, || s.gamma(k) / k)
}

/// Expected arrivals by `t_s` seconds, Λ(t), at `rate` per second; with a ramp the rate rises
/// linearly from 0 to `rate` over `ramp_s` seconds, then holds. Use it to size `unit_*` calls.
pub fn cumulative_intensity(rate: f64, ramp_s: Option<f64>, t_s: f64) -> f64 {
    match ramp_s.filter(|&r| r > 0.0) {
        Some(r) if t_s < r => rate * t_s * t_s / (2.0 * r),
        Some(r) => rate * r / 2.0 + rate * (t_s - r),
        None => rate * t_s,
    }
}

/// The inverse of [`cumulative_intensity`]: the time in seconds at which `s` arrivals are due.
pub fn inverse_intensity(rate: f64, ramp_s: Option<f64>, s: f64) -> f64 {
    match ramp_s.filter(|&r| r > 0.0) {
        Some(r) if s < rate * r / 2.0 => (2.0 * r * s / rate).sqrt(),
        Some(r) => s / rate + r / 2.0,
        None => s / rate,
    }
}

/// Maps rate-1 arrival times (unit time) to send offsets in ns at `rate` per second,
/// optionally ramping up linearly over `ramp_s` seconds (None or <= 0: no ramp).
/// The caller ensures `rate` > 0 and finite.
pub fn timed(unit: &[f64], rate: f64, ramp_s: Option<f64>) -> Vec<u64> {
    unit.iter()
        .map(|&s| (inverse_intensity(rate, ramp_s, s) * 1e9).round() as u64)
        .collect()
}

/// [`timed`] with a ramp of `ramp_s` seconds from rate 0 up to `rate` per second.
pub fn ramp_offsets(unit: &[f64], rate: f64, ramp_s: f64) -> Vec<u64> {
    timed(unit, rate, Some(ramp_s))
}

/// `n` send offsets in ns (first at 0) with gamma gaps of mean 1/`rate` seconds and
/// coefficient of variation `cv` (1 = Poisson, < 1 smoother, > 1 burstier), seeded.
pub fn gamma_offsets(rate: f64, cv: f64, seed: u64, n: usize) -> Vec<u64> {
    timed(&unit_gamma(cv, seed, n), rate, None)
}

/// Parses the CLI arrival value `gamma:CV` (e.g. `gamma:2.5`) into the gaps' coefficient of
/// variation, within [`MIN_CV`]..=[`MAX_CV`].
pub fn parse_gamma(spec: &str) -> Result<f64, String> {
    let form = "expected gamma:CV, e.g. gamma:2.5, where CV is the coefficient of variation of \
                the gaps (1 = Poisson, below 1 smoother, above 1 burstier)";
    let t = spec.trim();
    let cv = match t.get(..6) {
        Some(p) if p.eq_ignore_ascii_case("gamma:") => t[6..].trim(),
        _ => return Err(format!("`{spec}`: {form}")),
    };
    match cv.parse::<f64>() {
        Ok(v) if (MIN_CV..=MAX_CV).contains(&v) => Ok(v),
        Ok(_) => Err(format!(
            "`{spec}`: CV must be between {MIN_CV} and {MAX_CV}; {form}"
        )),
        Err(_) => Err(format!("`{spec}`: `{cv}` is not a number; {form}")),
    }
}

/// Parses a ramp length such as `30s` or `500ms` (humantime) into seconds; zero is refused.
pub fn parse_ramp(s: &str) -> Result<f64, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("ramp `{s}`: {e}; expected a duration such as 30s or 500ms"))?;
    if d.is_zero() {
        return Err(format!(
            "ramp `{s}` is zero; give a positive duration such as 30s, or omit it"
        ));
    }
    Ok(d.as_secs_f64())
}

/// Parses a trace replay speed: a positive factor, `2` = twice as fast, `0.5` = half speed
/// (a trailing `x`, as in `2x`, is allowed).
pub fn parse_speed(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let num = t.strip_suffix(['x', 'X']).unwrap_or(t).trim();
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "speed `{s}`: expected a positive number such as 2 (twice as fast) or 0.5 (half speed)"
        )),
    }
}

/// One recorded request: when to send it and, optionally, its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceEntry {
    /// Send offset in ns from the first entry (after speed scaling).
    pub offset_ns: u64,
    /// Batch size, if the trace gives one.
    pub batch: Option<usize>,
    /// Sequence length (tokens, words or text length), if the trace gives one.
    pub seq: Option<usize>,
}

/// A recorded arrival schedule, sorted by offset, the first at 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub entries: Vec<TraceEntry>,
    /// The file it was read from, for messages and results.
    pub source: String,
}

impl Trace {
    /// Time from the first to the last send, in ns.
    pub fn duration_ns(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.offset_ns)
    }

    /// The send offsets in ns, in order.
    pub fn offsets(&self) -> Vec<u64> {
        self.entries.iter().map(|e| e.offset_ns).collect()
    }

    /// Each entry's (batch, seq), filling gaps with the defaults.
    pub fn shapes(&self, default_batch: usize, default_seq: usize) -> Vec<(usize, usize)> {
        let (b, s) = (default_batch, default_seq);
        self.entries
            .iter()
            .map(|e| (e.batch.unwrap_or(b), e.seq.unwrap_or(s)))
            .collect()
    }

    /// The distinct (batch, seq) shapes in first-seen order, e.g. to prepare one request each.
    pub fn distinct_shapes(&self, default_batch: usize, default_seq: usize) -> Vec<(usize, usize)> {
        let mut seen = HashSet::new();
        let all = self.shapes(default_batch, default_seq);
        all.into_iter().filter(|s| seen.insert(*s)).collect()
    }
}

/// The time keys a trace may use, with what one unit is in seconds.
const TIME_KEYS: [(&str, f64); 3] = [("offset_s", 1.0), ("offset_ms", 1e-3), ("timestamp", 1.0)];
/// Keys for the sequence length; the first one present wins.
const SEQ_KEYS: [&str; 5] = ["seq", "tokens", "input_tokens", "words", "text_length"];
const TIME_FIX: &str = "give one of offset_s, offset_ms or timestamp (seconds)";

/// One parsed request before sorting: (seconds, batch, seq).
type Row = (f64, Option<usize>, Option<usize>);

/// Where a value came from, for messages: `file, line N`.
struct At<'a> {
    file: &'a str,
    line: usize,
}

impl At<'_> {
    fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("{}, line {}: {msg}", self.file, self.line)
    }

    fn number(&self, key: &str, raw: &str) -> Result<f64, String> {
        let msg = format!("`{key}` is `{raw}`, not a number; write a plain number");
        raw.parse::<f64>().map_err(|_| self.err(msg))
    }

    /// A batch size or sequence length: a whole number >= 1.
    fn count(&self, key: &str, v: f64) -> Result<usize, String> {
        if v.fract() != 0.0 || !(1.0..=MAX_SHAPE).contains(&v) {
            return Err(self.err(format_args!(
                "`{key}` is {v}; it must be a whole number from 1 to {MAX_SHAPE:e} \
                 (or empty/absent for the default)"
            )));
        }
        Ok(v as usize)
    }

    /// Reads one request through `num(key)` (the key's number, None if absent): its time in
    /// seconds, batch and seq. `first` remembers the time key in use and where it was first
    /// seen, so a file cannot mix units.
    fn row<F>(&self, num: F, first: &mut Option<(&'static str, usize)>) -> Result<Row, String>
    where
        F: Fn(&str) -> Result<Option<f64>, String>,
    {
        let mut times = Vec::new();
        for (k, unit) in TIME_KEYS {
            if let Some(v) = num(k)? {
                times.push((k, unit, v));
            }
        }
        let (key, unit, v) = match times[..] {
            [t] => t,
            [] => return Err(self.err(format_args!("no time value; {TIME_FIX}"))),
            _ => {
                let keys: Vec<_> = times.iter().map(|t| t.0).collect();
                let keys = keys.join(", ");
                return Err(self.err(format_args!("several times ({keys}); {TIME_FIX}, once")));
            }
        };
        match *first {
            Some((k, line)) if k != key => {
                return Err(self.err(format_args!(
                    "uses `{key}` but line {line} uses `{k}`; use one time key throughout"
                )))
            }
            Some(_) => {}
            None => *first = Some((key, self.line)),
        }
        if !v.is_finite() || v < 0.0 {
            return Err(self.err(format_args!("`{key}` is {v}; fix it to a number >= 0")));
        }
        if v * unit > MAX_TRACE_SECS {
            return Err(self.err(format_args!(
                "`{key}` is {v}, over {MAX_TRACE_SECS:e} seconds; times are in seconds \
                 (offset_ms in milliseconds): convert the values"
            )));
        }
        let batch = num("batch")?.map(|b| self.count("batch", b)).transpose()?;
        let mut seq = None;
        for k in SEQ_KEYS {
            if let Some(s) = num(k)? {
                seq = Some(self.count(k, s)?);
                break;
            }
        }
        Ok((v * unit, batch, seq))
    }
}

/// Loads a trace from `.csv` or `.jsonl`/`.ndjson`, sorts it by time (stably: recorded logs
/// can be slightly out of order), rebases it to start at 0 and divides offsets by `speed`
/// (2.0 replays twice as fast).
pub fn load_trace(path: &Path, speed: f64) -> Result<Trace, String> {
    load_trace_max(path, speed, MAX_TRACE_ENTRIES)
}

fn load_trace_max(path: &Path, speed: f64, max: usize) -> Result<Trace, String> {
    let file = path.display().to_string();
    if !speed.is_finite() || speed <= 0.0 {
        return Err(format!(
            "{file}: speed {speed}; give a positive number, e.g. 2"
        ));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let csv = match ext.to_ascii_lowercase().as_str() {
        "csv" => true,
        "jsonl" | "ndjson" => false,
        _ => {
            return Err(format!(
                "{file}: unknown trace format; name the file *.csv (with a header row) or \
                 *.jsonl / *.ndjson (one JSON object per line)"
            ))
        }
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{file}: cannot read the trace ({e}); check the path, UTF-8 text"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut rows = Vec::new();
    if csv {
        parse_csv(&file, text, max, &mut rows)?;
    } else {
        parse_jsonl(&file, text, max, &mut rows)?;
    }
    if rows.is_empty() {
        return Err(format!("{file}: no entries; add at least one request"));
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let first = rows[0].0;
    let entry = |(secs, batch, seq): Row| TraceEntry {
        offset_ns: ((secs - first) / speed * 1e9).round() as u64,
        batch,
        seq,
    };
    let entries = rows.into_iter().map(entry).collect();
    let source = file;
    Ok(Trace { entries, source })
}

/// Appends `row` unless the trace already holds `max` entries.
fn push(rows: &mut Vec<Row>, at: &At, max: usize, row: Row) -> Result<(), String> {
    if rows.len() >= max {
        let msg = format!("more than {max} entries; split the trace or sample it down");
        return Err(at.err(msg));
    }
    rows.push(row);
    Ok(())
}

/// One CSV field: trimmed, surrounding double quotes removed.
fn field(s: &str) -> &str {
    let s = s.trim();
    let unquoted = s.strip_prefix('"').and_then(|s| s.strip_suffix('"'));
    unquoted.map_or(s, str::trim)
}

fn parse_csv(file: &str, text: &str, max: usize, rows: &mut Vec<Row>) -> Result<(), String> {
    let mut lines = (1..)
        .zip(text.lines().map(str::trim))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((line, header)) = lines.next() else {
        return Err(format!("{file}: empty; add a header row and requests"));
    };
    let names: Vec<String> = header
        .split(',')
        .map(|h| field(h).to_ascii_lowercase())
        .collect();
    let col = |key: &str| names.iter().position(|n| n == key);
    if TIME_KEYS.iter().filter(|t| col(t.0).is_some()).count() != 1 {
        let at = At { file, line };
        let msg = format!("header `{header}` needs exactly one time column; {TIME_FIX}");
        return Err(at.err(msg));
    }
    let mut first = None;
    for (line, l) in lines {
        let at = At { file, line };
        let fields: Vec<&str> = l.split(',').map(field).collect();
        let num = |key: &str| match col(key).map(|c| (c, fields.get(c))) {
            None | Some((_, Some(&""))) => Ok(None),
            Some((_, Some(raw))) => at.number(key, raw).map(Some),
            Some((c, None)) => Err(at.err(format_args!(
                "{} fields, so no `{key}` (column {}); complete the row",
                fields.len(),
                c + 1
            ))),
        };
        let row = at.row(num, &mut first)?;
        push(rows, &at, max, row)?;
    }
    Ok(())
}

fn parse_jsonl(file: &str, text: &str, max: usize, rows: &mut Vec<Row>) -> Result<(), String> {
    use serde_json::Value;
    let mut first = None;
    for (line, l) in (1..).zip(text.lines()) {
        let at = At { file, line };
        if l.trim().is_empty() {
            continue;
        }
        let obj = match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(obj)) => obj,
            Ok(_) => return Err(at.err("not an object; write one {\"offset_s\": ...} per line")),
            Err(e) => return Err(at.err(format_args!("invalid JSON ({e}); one object per line"))),
        };
        let num = |key: &str| match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(at.err(format_args!("`{key}` is {other}; write a JSON number"))),
        };
        let row = at.row(num, &mut first)?;
        push(rows, &at, max, row)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Mean rate (per second) and the gaps' coefficient of variation.
    fn rate_and_cv(offsets: &[u64]) -> (f64, f64) {
        let gaps: Vec<f64> = offsets.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (gaps.len() - 1) as f64;
        (1e9 / mean, var.sqrt() / mean)
    }

    #[test]
    fn gamma_keeps_rate_and_cv() {
        for cv in [0.5, 1.0, 3.0] {
            let o = gamma_offsets(1000.0, cv, 7, 200_000);
            assert_eq!(o[0], 0);
            assert!(o.windows(2).all(|w| w[0] <= w[1]));
            let (rate, got) = rate_and_cv(&o);
            assert!((rate / 1000.0 - 1.0).abs() < 0.03, "cv {cv}: rate {rate}");
            assert!((got / cv - 1.0).abs() < 0.05, "cv {cv}: got cv {got}");
        }
    }

    #[test]
    fn gamma_is_seeded() {
        assert_eq!(
            gamma_offsets(50.0, 2.0, 1, 1000),
            gamma_offsets(50.0, 2.0, 1, 1000)
        );
        assert_ne!(
            gamma_offsets(50.0, 2.0, 1, 1000),
            gamma_offsets(50.0, 2.0, 2, 1000)
        );
        assert_eq!(unit_poisson(3, 100), unit_poisson(3, 100));
        assert_ne!(unit_poisson(3, 100), unit_poisson(4, 100));
        let (rate, cv) = rate_and_cv(&timed(&unit_poisson(5, 200_000), 200.0, None));
        assert!(
            (rate / 200.0 - 1.0).abs() < 0.03 && (cv - 1.0).abs() < 0.05,
            "{rate} {cv}"
        );
    }

    #[test]
    fn ramp_rises_then_holds() {
        let (rate, ramp, n) = (1000.0, 10.0, 200_000);
        for unit in [unit_poisson(9, n), unit_constant(n), unit_gamma(2.0, 9, n)] {
            let o = ramp_offsets(&unit, rate, ramp);
            assert_eq!(o[0], 0);
            let before = |s: f64| o.iter().filter(|&&t| (t as f64) < s * 1e9).count() as f64;
            let (half, whole) = (before(ramp / 2.0), before(ramp));
            assert!(
                (half / whole / 0.25 - 1.0).abs() < 0.10,
                "{half} of {whole}"
            );
            assert!((whole / (rate * ramp / 2.0) - 1.0).abs() < 0.10, "{whole}");
            let after = (before(ramp + 100.0) - whole) / 100.0;
            assert!(
                (after / rate - 1.0).abs() < 0.03,
                "rate after the ramp {after}"
            );
        }
        assert_eq!(
            timed(&unit_constant(3), 2.0, None),
            [0, 500_000_000, 1_000_000_000]
        );
        for t in [0.5, 3.0, 10.0, 25.0] {
            let s = cumulative_intensity(rate, Some(ramp), t);
            assert!((inverse_intensity(rate, Some(ramp), s) - t).abs() < 1e-9);
        }
    }

    #[test]
    fn cli_values() {
        assert_eq!(parse_gamma("gamma:2.5"), Ok(2.5));
        assert_eq!(parse_gamma(" Gamma:0.5 "), Ok(0.5));
        for bad in [
            "2.5",
            "gamma:",
            "gamma:x",
            "gamma:0",
            "gamma:21",
            "gamma:NaN",
            "gam",
        ] {
            let e = parse_gamma(bad).unwrap_err();
            assert!(e.contains("gamma:CV"), "{e}");
        }
        assert_eq!(parse_ramp("30s"), Ok(30.0));
        assert_eq!(parse_ramp("500ms"), Ok(0.5));
        assert!(parse_ramp("0s").unwrap_err().contains("zero"));
        assert!(parse_ramp("soon").unwrap_err().contains("30s"));
        assert_eq!(parse_speed("2"), Ok(2.0));
        assert_eq!(parse_speed("0.5x"), Ok(0.5));
        for bad in ["0", "-1", "inf", "fast", ""] {
            assert!(parse_speed(bad).unwrap_err().contains("positive"), "{bad}");
        }
    }

    /// Writes `body` to a unique temp file with extension `ext` and loads it.
    fn load(ext: &str, body: &str, speed: f64, max: usize) -> Result<Trace, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("traffic-test-{}-{n}.{ext}", std::process::id());
        let p = std::env::temp_dir().join(name);
        std::fs::write(&p, body).unwrap();
        let r = load_trace_max(&p, speed, max);
        let _ = std::fs::remove_file(&p);
        r
    }

    fn ok(ext: &str, body: &str, speed: f64) -> Trace {
        load(ext, body, speed, MAX_TRACE_ENTRIES).unwrap()
    }

    #[test]
    fn csv_traces() {
        let body = "# recorded\nseq, batch ,offset_s,extra\n\n\"16\",2,1.5,x\n8,,1.0,y\n#c\n";
        let t = ok("csv", body, 1.0);
        assert_eq!(t.offsets(), [0, 500_000_000], "sorted and rebased");
        let e = TraceEntry {
            offset_ns: 0,
            batch: None,
            seq: Some(8),
        };
        assert_eq!(t.entries[0], e);
        assert_eq!(t.shapes(1, 32), [(1, 8), (2, 16)]);
        assert_eq!(t.duration_ns(), 500_000_000);
        assert!(t.source.ends_with(".csv"));

        let t = ok("csv", "offset_ms,tokens\n0,4\n250,4\n100,8\n250,9\n", 2.0);
        assert_eq!(t.offsets(), [0, 50_000_000, 125_000_000, 125_000_000]);
        let seqs: Vec<usize> = t.shapes(1, 0).iter().map(|s| s.1).collect();
        assert_eq!(seqs, [4, 8, 4, 9], "a stable sort");
        assert_eq!(t.distinct_shapes(1, 0), [(1, 4), (1, 8), (1, 9)]);

        let body = "TIMESTAMP,input_tokens\n1700000000.25,3\n1700000001.5,5\n";
        let t = ok("csv", body, 0.5);
        assert_eq!(t.offsets(), [0, 2_500_000_000]);
        assert_eq!(t.entries[1].seq, Some(5));
        for alias in ["words", "text_length"] {
            let t = ok("csv", &format!("offset_s,{alias}\n0,7\n"), 1.0);
            assert_eq!(t.entries[0].seq, Some(7));
        }
    }

    #[test]
    fn jsonl_traces() {
        let body = "{\"offset_s\": 2, \"batch\": 4}\n\n{\"offset_s\": 0.5, \"words\": 12.0}\n";
        let t = ok("jsonl", body, 1.0);
        assert_eq!(t.offsets(), [0, 1_500_000_000]);
        assert_eq!(t.shapes(1, 16), [(1, 12), (4, 16)]);
        let t = ok(
            "ndjson",
            "{\"timestamp\": 100}\n{\"timestamp\": 103, \"seq\": 2}\n",
            3.0,
        );
        assert_eq!(t.offsets(), [0, 1_000_000_000]);
    }

    /// Bad traces (extension, body) and what the error must name.
    #[rustfmt::skip]
    const BAD: &[(&str, &str, &[&str])] = &[
        ("csv", "offset_s\n", &["no entries"]),
        ("csv", "# only a comment\n", &["empty"]),
        ("csv", "time,batch\n1,2\n", &["line 1", "offset_s"]),
        ("csv", "offset_s,timestamp\n1,2\n", &["line 1", "timestamp"]),
        ("csv", "offset_ms\n1\nabc\n", &["line 3", "offset_ms", "abc"]),
        ("csv", "offset_s\n1\n-2\n", &["line 3", "offset_s", "-2"]),
        ("csv", "offset_s\ninf\n", &["line 2", "offset_s"]),
        ("csv", "offset_s\n\n1\n\"\"\n", &["line 4", "offset_s", "no time"]),
        ("csv", "timestamp\n1700000000000\n", &["line 2", "timestamp", "seconds"]),
        ("csv", "offset_s,batch\n1,0\n", &["line 2", "batch"]),
        ("csv", "offset_s,tokens\n1,2\n2,3.5\n", &["line 3", "tokens"]),
        ("csv", "offset_s,batch,seq\n1,2\n", &["line 2", "seq"]),
        ("csv", "offset_s\n1\n2\n3\n4\n5\n6\n", &["line 7", "more than 5"]),
        ("jsonl", "{\"offset_s\": 1}\n{\"batch\": 2}\n", &["line 2", "offset_ms"]),
        ("jsonl", "\n{\"offset_s\": \"1\"}\n", &["line 2", "offset_s"]),
        ("jsonl", "{\"offset_s\": 1}\n{\"offset_s\": -1}\n", &["line 2", "offset_s"]),
        ("jsonl", "{\"offset_s\": 1, \"timestamp\": 1}\n", &["line 1", "timestamp"]),
        ("jsonl", "{\"offset_s\": 1, \"seq\": 0}\n", &["line 1", "seq"]),
        ("jsonl", "{\"offset_s\": 1, \"batch\": 1.5}\n", &["line 1", "batch"]),
        ("jsonl", "{\"offset_s\": 1}\n{\"offset_ms\": 2}\n", &["line 2", "offset_ms", "line 1"]),
        ("jsonl", "{\"offset_s\": 1}\n[1]\n", &["line 2", "object"]),
        ("jsonl", "{\"offset_s\": 1,\n", &["line 1", "JSON"]),
        ("jsonl", "\n\n", &["no entries"]),
        ("txt", "offset_s\n1\n", &[".csv", ".jsonl"]),
    ];

    #[test]
    fn bad_traces() {
        for (ext, body, needles) in BAD {
            let e = load(ext, body, 1.0, 5).unwrap_err();
            assert!(e.contains(&format!(".{ext}")), "no file name in {e}");
            for n in *needles {
                assert!(e.contains(n), "`{n}` not in: {e}");
            }
        }
        let e = load("csv", "offset_s\n1\n", 0.0, 5).unwrap_err();
        assert!(e.contains("speed"), "{e}");
        let e = load_trace(Path::new("/nonexistent/trace.csv"), 1.0).unwrap_err();
        assert!(e.contains("/nonexistent/trace.csv"), "{e}");
    }
}
