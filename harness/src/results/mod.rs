//! The results schema (versioned) and its presenters: `results.json`, `results.csv`,
//! `summary.md` and the terminal table. Presenters only format what was measured.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use runtimes::TensorSpec;
use serde::{Deserialize, Serialize};

use crate::environment::Environment;
use crate::measure::Measurement;
use crate::monitor::ResourceReport;
use crate::parity::{Parity, ParityStatus, Tolerance};

pub const SCHEMA: &str = "harness-results";
pub const SCHEMA_VERSION: u32 = 1;

/// The CSV columns, in order. The first fifteen are the stable core; more may be appended.
pub const CSV_COLUMNS: &[&str] = &[
    "runtime",
    "device",
    "variant",
    "batch",
    "seq",
    "threads",
    "concurrency",
    "samples",
    "mean_ms",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "throughput_per_s",
    "parity",
    "status",
    "stddev_ms",
    "min_ms",
    "max_ms",
    "load_ms",
    "prepare_ms",
    "first_inference_ms",
    "max_abs_diff",
    "max_rel_diff",
    "cosine",
    "failures",
    "low_sample_percentiles",
    "avg_cores_busy",
    "peak_rss_mb",
    "model_rss_mb",
    "voluntary_ctx_switches",
    "involuntary_ctx_switches",
    "energy_j",
    "mode",
    "target_rate",
    "achieved_rate",
    "late_sends",
    "uncorrected_p99_ms",
    "median_ci95_low_ms",
    "median_ci95_high_ms",
    "stable",
    "error",
    "protocol",
    "target",
    "client_saturated",
    "server_avg_batch",
    "server_queue_ms",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tpot_p50_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "goodput_per_s",
    "failure_kinds",
    "gpu_util_pct",
    "gpu_mem_peak_mb",
    "gpu_power_w",
    "gpu_energy_j",
    "gpu_energy_per_item_mj",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub schema: String,
    pub schema_version: u32,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub environment: Environment,
    pub model: ModelSummary,
    pub settings: Settings,
    pub harness_overhead: Option<Overhead>,
    /// The run was ended early (Ctrl-C); the scenarios listed are all that finished.
    #[serde(default)]
    pub interrupted: bool,
    /// The results folders a `harness report` merged into this one (empty for a run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    pub runtimes: Vec<RuntimeStatus>,
    pub scenarios: Vec<ScenarioResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSummary {
    pub path: PathBuf,
    pub name: String,
    pub onnx: Option<PathBuf>,
    pub safetensors: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub spec_source: String,
    pub onnx_error: Option<String>,
    pub model_type: Option<String>,
    pub vocab_size: Option<usize>,
    pub max_positions: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub mode: String,
    pub seed: u64,
    pub warmup_iterations: u64,
    pub warmup_time_s: f64,
    pub min_time_s: f64,
    pub min_samples: u64,
    pub max_time_s: f64,
    pub tolerance: Tolerance,
    pub reference_preference: String,
    pub pinning: String,
    #[serde(default)]
    pub isolation: String,
    pub percentile_definition: String,
}

/// The harness's own cost per iteration, measured with the null runtime.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overhead {
    pub samples: u64,
    pub p50_ns: f64,
    pub mean_ns: f64,
    pub p99_ns: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeStatus {
    pub name: String,
    pub ready: bool,
    pub version: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioStatus {
    /// Measured.
    Ok,
    /// Measured, but inferences failed along the way (see failures).
    Failed,
    /// Could not be measured at all (see error).
    Error,
    /// Cannot run here (unsupported, variant missing, shape beyond the model): see error.
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub id: String,
    pub runtime: String,
    pub device: String,
    pub variant: String,
    pub batch: usize,
    pub seq: Option<usize>,
    pub shapes: BTreeMap<String, Vec<usize>>,
    pub threads: usize,
    pub concurrency: usize,
    pub mode: String,
    pub status: ScenarioStatus,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    pub applied: BTreeMap<String, String>,
    pub load_ms: Option<f64>,
    pub prepare_ms: Option<f64>,
    pub measurement: Option<Measurement>,
    pub throughput_per_s: Option<f64>,
    /// Open loop: the target arrival rate (requests/s).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Open loop: schedule kept, late sends, uncorrected latencies.
    #[serde(default)]
    pub open_loop: Option<crate::measure::OpenLoopStats>,
    /// Resident memory after the model was loaded, and what loading added to it.
    pub rss_after_load_bytes: Option<u64>,
    pub load_rss_delta_bytes: Option<i64>,
    /// CPU, memory, context switches and energy over the measured window.
    pub resources: Option<ResourceReport>,
    pub parity: Parity,
    /// How many runs' samples this row holds, when merged by `harness report` (else 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub merged_runs: usize,
    /// Network rows (`harness load`, `compare --served`): protocol, target, the load
    /// generator's own CPU use, the server's metrics over the window, streaming metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<crate::net::load::ServedInfo>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ScenarioResult {
    /// A row before anything is known of it: an error until measured, nothing measured,
    /// parity not checked.
    pub fn unmeasured(
        id: String,
        runtime: &str,
        variant: &str,
        mode: &crate::measure::LoadMode,
        tol: Tolerance,
    ) -> ScenarioResult {
        ScenarioResult {
            id,
            runtime: runtime.to_string(),
            device: "cpu".into(),
            variant: variant.to_string(),
            batch: 1,
            seq: None,
            shapes: BTreeMap::new(),
            threads: 0,
            concurrency: mode.concurrency(),
            mode: mode.name().into(),
            status: ScenarioStatus::Error,
            error: None,
            error_kind: None,
            applied: BTreeMap::new(),
            load_ms: None,
            prepare_ms: None,
            measurement: None,
            throughput_per_s: None,
            rate: mode.rate(),
            open_loop: None,
            rss_after_load_bytes: None,
            load_rss_delta_bytes: None,
            resources: None,
            parity: Parity::skipped(tol, "not measured"),
            merged_runs: 0,
            served: None,
        }
    }

    pub fn parity_label(&self) -> &'static str {
        match self.status {
            ScenarioStatus::Error => "ERROR",
            ScenarioStatus::Skipped => "SKIP",
            _ => self.parity.status.label(),
        }
    }

    /// Whether this row counts as a problem for the exit status.
    pub fn is_problem(&self) -> bool {
        matches!(self.status, ScenarioStatus::Error | ScenarioStatus::Failed)
            || self.parity.status == ParityStatus::Fail
    }
}

fn f(x: f64, digits: usize) -> String {
    format!("{x:.digits$}")
}

const MB: f64 = 1024.0 * 1024.0;

fn mb(bytes: u64) -> f64 {
    bytes as f64 / MB
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn to_csv(r: &Results) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push('\n');
    for s in &r.scenarios {
        let m = s.measurement.as_ref();
        let l = m.map(|m| &m.latency);
        let res = s.resources.as_ref();
        let sv = s.served.as_ref();
        let gpu = res.and_then(|r| r.gpu.as_ref());
        let st = sv.and_then(|v| v.streaming.as_ref());
        let opt = |x: Option<f64>, d: usize| x.map(|v| f(v, d)).unwrap_or_default();
        let row: Vec<String> = vec![
            s.runtime.clone(),
            s.device.clone(),
            s.variant.clone(),
            s.batch.to_string(),
            s.seq.map(|x| x.to_string()).unwrap_or_default(),
            s.threads.to_string(),
            s.concurrency.to_string(),
            l.map(|l| l.samples.to_string())
                .unwrap_or_else(|| "0".into()),
            opt(l.map(|l| l.mean_ms), 4),
            opt(l.map(|l| l.p50_ms), 4),
            opt(l.map(|l| l.p90_ms), 4),
            opt(l.map(|l| l.p99_ms), 4),
            opt(l.map(|l| l.p999_ms), 4),
            opt(s.throughput_per_s, 3),
            s.parity_label().to_string(),
            format!("{:?}", s.status).to_lowercase(),
            opt(l.map(|l| l.stddev_ms), 4),
            opt(l.map(|l| l.min_ms), 4),
            opt(l.map(|l| l.max_ms), 4),
            opt(s.load_ms, 2),
            opt(s.prepare_ms, 2),
            opt(m.map(|m| m.first_inference_ms), 3),
            s.parity
                .max_abs_diff
                .map(|x| format!("{x:e}"))
                .unwrap_or_default(),
            s.parity
                .max_rel_diff
                .map(|x| format!("{x:e}"))
                .unwrap_or_default(),
            s.parity
                .min_cosine
                .map(|x| format!("{x:.8}"))
                .unwrap_or_default(),
            m.map(|m| m.failures.to_string()).unwrap_or_default(),
            l.map(|l| l.low_sample_percentiles.join(" "))
                .unwrap_or_default(),
            opt(res.and_then(|r| r.avg_cores_busy), 3),
            opt(res.and_then(|r| r.peak_rss_bytes).map(mb), 1),
            opt(s.load_rss_delta_bytes.map(|b| b as f64 / MB), 1),
            res.and_then(|r| r.voluntary_ctx_switches)
                .map(|x| x.to_string())
                .unwrap_or_default(),
            res.and_then(|r| r.involuntary_ctx_switches)
                .map(|x| x.to_string())
                .unwrap_or_default(),
            opt(res.and_then(|r| r.energy_j), 3),
            s.mode.clone(),
            opt(s.rate, 3),
            opt(s.open_loop.as_ref().map(|o| o.achieved_rate), 3),
            s.open_loop
                .as_ref()
                .map(|o| o.late_sends.to_string())
                .unwrap_or_default(),
            opt(s.open_loop.as_ref().map(|o| o.uncorrected.p99_ms), 4),
            opt(l.map(|l| l.median_ci95_low_ms), 4),
            opt(l.map(|l| l.median_ci95_high_ms), 4),
            m.and_then(|m| m.stable)
                .map(|b| b.to_string())
                .unwrap_or_default(),
            s.error.clone().unwrap_or_default(),
            sv.map(|v| v.protocol.as_str().to_string())
                .unwrap_or_default(),
            sv.map(|v| v.target.clone()).unwrap_or_default(),
            sv.map(|v| v.client_saturated.to_string())
                .unwrap_or_default(),
            opt(sv.and_then(|v| v.server_avg_batch), 3),
            opt(sv.and_then(|v| v.server_queue_ms_per_request), 4),
            opt(st.map(|t| t.ttft.p50_ms), 4),
            opt(st.map(|t| t.ttft.p99_ms), 4),
            opt(st.map(|t| t.tpot.p50_ms), 4),
            opt(st.map(|t| t.itl.p50_ms), 4),
            opt(st.map(|t| t.itl.p99_ms), 4),
            opt(st.and_then(|t| t.goodput_per_s), 3),
            m.map(|m| {
                m.failure_kinds
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
            opt(gpu.and_then(|g| g.utilization_pct), 1),
            opt(gpu.and_then(|g| g.memory_used_peak_bytes).map(mb), 1),
            opt(gpu.and_then(|g| g.power_avg_w), 1),
            opt(gpu.and_then(|g| g.energy_j), 3),
            opt(
                gpu.and_then(|g| g.energy_j).and_then(|e| {
                    let items = m?.iterations as f64 * s.batch as f64;
                    (items > 0.0).then(|| e / items * 1e3)
                }),
                4,
            ),
        ];
        debug_assert_eq!(row.len(), CSV_COLUMNS.len());
        let row: Vec<String> = row.iter().map(|c| csv_field(c)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
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

const TABLE_HEAD: [&str; 17] = [
    "runtime", "variant", "batch", "seq", "threads", "conc", "samples", "p50 ms", "p90 ms",
    "p99 ms", "items/s", "cores", "peak MB", "load ms", "max abs", "cosine", "parity",
];

fn table_rows(r: &Results) -> Vec<Vec<String>> {
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

fn footnotes(r: &Results) -> Vec<String> {
    let mut notes = Vec::new();
    if r.interrupted {
        notes.push(format!(
            "interrupted (Ctrl-C): the {} scenarios above finished and are saved; the rest did not run",
            r.scenarios.len()
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
                notes.push(format!(
                    "{}: unstable: the median's 95% CI ({:.4}-{:.4} ms) did not reach the --target-ci before --max-time",
                    s.id, m.latency.median_ci95_low_ms, m.latency.median_ci95_high_ms
                ));
            }
            if m.failures > 0 {
                notes.push(format!(
                    "{}: {} failed inferences {:?}",
                    s.id, m.failures, m.failure_kinds
                ));
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

/// The terminal table: aligned columns, then notes (errors, low-sample marks, overhead).
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
    let _ = writeln!(out, "{}", line(TABLE_HEAD.to_vec()));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row.iter().map(|s| s.as_str()).collect()));
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
    for n in footnotes(r) {
        let _ = writeln!(out, "{n}");
    }
    out
}

/// One in-process row beside the same scenario served by `harness serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tax {
    pub scenario: String,
    pub in_process_p50_ms: f64,
    pub served_p50_ms: f64,
    pub in_process_p99_ms: f64,
    pub served_p99_ms: f64,
    pub in_process_per_s: f64,
    pub served_per_s: f64,
}

impl Tax {
    pub fn line(&self) -> String {
        format!(
            "{}: p50 {:.3} -> {:.3} ms (+{:.3} ms, {:+.1}%), p99 {:.3} -> {:.3} ms, {:.1} -> {:.1} items/s",
            self.scenario,
            self.in_process_p50_ms,
            self.served_p50_ms,
            self.served_p50_ms - self.in_process_p50_ms,
            (self.served_p50_ms / self.in_process_p50_ms - 1.0) * 100.0,
            self.in_process_p99_ms,
            self.served_p99_ms,
            self.in_process_per_s,
            self.served_per_s
        )
    }
}

/// Pairs each served row (`compare --served`) with its fp32 in-process twin.
pub fn serving_tax(r: &Results) -> Vec<Tax> {
    r.scenarios
        .iter()
        .filter(|s| s.variant == "served" && s.served.is_some())
        .filter_map(|s| {
            let twin = r.scenarios.iter().find(|t| {
                t.variant == "fp32"
                    && t.served.is_none()
                    && t.runtime == s.runtime
                    && t.batch == s.batch
                    && t.seq == s.seq
                    && t.threads == s.threads
                    && t.concurrency == s.concurrency
                    && t.mode == s.mode
                    && t.rate == s.rate
            })?;
            let (a, b) = (twin.measurement.as_ref()?, s.measurement.as_ref()?);
            Some(Tax {
                scenario: twin.id.clone(),
                in_process_p50_ms: a.latency.p50_ms,
                served_p50_ms: b.latency.p50_ms,
                in_process_p99_ms: a.latency.p99_ms,
                served_p99_ms: b.latency.p99_ms,
                in_process_per_s: twin.throughput_per_s.unwrap_or(0.0),
                served_per_s: s.throughput_per_s.unwrap_or(0.0),
            })
        })
        .collect()
}

pub fn to_markdown(r: &Results) -> String {
    let e = &r.environment;
    let mut out = String::new();
    let _ = writeln!(out, "# {} — runtime comparison\n", r.model.name);
    let _ = writeln!(
        out,
        "{} · {} logical CPUs · {} · {} · started {}\n",
        e.cpu_model, e.logical_cpus, e.os, e.kernel, r.started_at
    );
    let _ = writeln!(
        out,
        "{}; latency per inference, nearest-rank percentiles; items/s = batch x inferences / window. Seed {}.\n",
        r.settings.mode, r.settings.seed
    );
    let _ = writeln!(out, "| {} |", TABLE_HEAD.join(" | "));
    let _ = writeln!(
        out,
        "|{}|",
        TABLE_HEAD
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 || i == TABLE_HEAD.len() - 1 {
                "---"
            } else {
                "---:"
            })
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in table_rows(r) {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    let notes = footnotes(r);
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            let _ = writeln!(out, "- {}", n.replace('|', "\\|"));
        }
    }
    let tax = serving_tax(r);
    if !tax.is_empty() {
        let _ = writeln!(
            out,
            "\n## Serving tax\n\nThe same runtime behind `harness serve` (KServe v2 over HTTP, binary tensors, loopback), same inputs and load.\n\n| scenario | in-process p50 ms | served p50 ms | tax ms | in-process p99 ms | served p99 ms | in-process items/s | served items/s |\n|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for t in &tax {
            let _ = writeln!(
                out,
                "| {} | {:.3} | {:.3} | {:+.3} | {:.3} | {:.3} | {:.1} | {:.1} |",
                t.scenario,
                t.in_process_p50_ms,
                t.served_p50_ms,
                t.served_p50_ms - t.in_process_p50_ms,
                t.in_process_p99_ms,
                t.served_p99_ms,
                t.in_process_per_s,
                t.served_per_s
            );
        }
    }
    let _ = writeln!(out, "\n## Runtimes\n");
    for rt in &r.runtimes {
        let _ = writeln!(
            out,
            "- **{}**: {} — {}",
            rt.name,
            if rt.ready { "ready" } else { "not available" },
            rt.detail
        );
    }
    out
}

fn write_atomic(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Writes results.json, results.csv, summary.md and report.html into `dir`. Called after every scenario, so an interrupted run
/// keeps what it measured.
pub fn write_all(dir: &Path, r: &Results) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(r).map_err(std::io::Error::other)?;
    write_atomic(&dir.join("results.json"), &json)?;
    write_atomic(&dir.join("results.csv"), &to_csv(r))?;
    write_atomic(&dir.join("summary.md"), &to_markdown(r))?;
    write_atomic(&dir.join("report.html"), &crate::report::to_html(r))
}
