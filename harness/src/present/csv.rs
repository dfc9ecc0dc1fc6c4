//! `results.csv`: one typed row per scenario. The header comes from [`CsvRow`]'s field names,
//! in declaration order, so a column cannot move or go missing without the compiler (every
//! field is set by name) or the column test below noticing. The first sixteen columns are the
//! stable core; new ones are appended.

use serde::{Serialize, Serializer};

use crate::results::{Results, ScenarioResult};

/// A number printed with `D` decimals; empty when absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fixed<const D: usize>(pub Option<f64>);

impl<const D: usize> Serialize for Fixed<D> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(v) => s.serialize_str(&format!("{v:.D$}")),
            None => s.serialize_str(""),
        }
    }
}

/// A number in scientific notation (`3.6e-6`); empty when absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sci(pub Option<f64>);

impl Serialize for Sci {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(v) => s.serialize_str(&format!("{v:e}")),
            None => s.serialize_str(""),
        }
    }
}

const MB: f64 = 1024.0 * 1024.0;

fn mb(bytes: u64) -> f64 {
    bytes as f64 / MB
}

/// One scenario as a CSV row.
#[derive(Debug, Clone, Serialize)]
pub struct CsvRow {
    pub runtime: String,
    pub device: String,
    pub variant: String,
    pub batch: usize,
    pub seq: Option<usize>,
    pub threads: usize,
    pub concurrency: usize,
    pub samples: u64,
    pub mean_ms: Fixed<4>,
    pub p50_ms: Fixed<4>,
    pub p90_ms: Fixed<4>,
    pub p99_ms: Fixed<4>,
    pub p999_ms: Fixed<4>,
    pub throughput_per_s: Fixed<3>,
    pub parity: &'static str,
    pub status: String,
    pub stddev_ms: Fixed<4>,
    pub min_ms: Fixed<4>,
    pub max_ms: Fixed<4>,
    pub load_ms: Fixed<2>,
    pub prepare_ms: Fixed<2>,
    pub first_inference_ms: Fixed<3>,
    pub max_abs_diff: Sci,
    pub max_rel_diff: Sci,
    pub cosine: Fixed<8>,
    pub failures: Option<u64>,
    pub low_sample_percentiles: String,
    pub avg_cores_busy: Fixed<3>,
    pub peak_rss_mb: Fixed<1>,
    pub model_rss_mb: Fixed<1>,
    pub voluntary_ctx_switches: Option<u64>,
    pub involuntary_ctx_switches: Option<u64>,
    pub energy_j: Fixed<3>,
    pub mode: String,
    pub target_rate: Fixed<3>,
    pub achieved_rate: Fixed<3>,
    pub late_sends: Option<u64>,
    pub uncorrected_p99_ms: Fixed<4>,
    pub median_ci95_low_ms: Fixed<4>,
    pub median_ci95_high_ms: Fixed<4>,
    pub stable: Option<bool>,
    pub error: String,
    pub protocol: String,
    pub target: String,
    pub client_saturated: Option<bool>,
    pub server_avg_batch: Fixed<3>,
    pub server_queue_ms: Fixed<4>,
    pub ttft_p50_ms: Fixed<4>,
    pub ttft_p99_ms: Fixed<4>,
    pub tpot_p50_ms: Fixed<4>,
    pub itl_p50_ms: Fixed<4>,
    pub itl_p99_ms: Fixed<4>,
    pub goodput_per_s: Fixed<3>,
    pub failure_kinds: String,
    pub gpu_util_pct: Fixed<1>,
    pub gpu_mem_peak_mb: Fixed<1>,
    pub gpu_power_w: Fixed<1>,
    pub gpu_energy_j: Fixed<3>,
    pub gpu_energy_per_item_mj: Fixed<4>,
    /// GPU rows: device time per inference (CUDA events) and its stages, medians; the
    /// device's share of the wall time; `cuda-events` or why not (empty on the CPU).
    pub device_p50_ms: Fixed<4>,
    pub device_h2d_p50_ms: Fixed<4>,
    pub device_compute_p50_ms: Fixed<4>,
    pub device_d2h_p50_ms: Fixed<4>,
    pub device_share: Fixed<3>,
    pub device_timing: String,
    pub minor_page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    pub cpu_migrations: Option<u64>,
    pub cycles: Option<u64>,
    pub instructions: Option<u64>,
    pub ipc: Fixed<3>,
    pub cache_misses: Option<u64>,
    /// A profile's share of window time in matrix kernels, threading and allocation.
    pub profile_kernels_share: Fixed<3>,
    pub profile_threading_share: Fixed<3>,
    pub profile_allocation_share: Fixed<3>,
    /// Served rows with a known server process: its tree's CPU and peak memory.
    pub server_cores: Fixed<3>,
    pub server_peak_mb: Fixed<1>,
}

impl CsvRow {
    pub fn of(s: &ScenarioResult) -> CsvRow {
        let m = s.measurement.as_ref();
        let l = m.map(|m| &m.latency);
        let res = s.resources.as_ref();
        let sv = s.served.as_ref();
        let dev = m.and_then(|m| m.device.as_ref());
        let gpu = res.and_then(|r| r.gpu.as_ref());
        let st = sv.and_then(|v| v.streaming.as_ref());
        let open = s.open_loop.as_ref();
        CsvRow {
            runtime: s.runtime.clone(),
            device: s.device.clone(),
            variant: s.variant.clone(),
            batch: s.batch,
            seq: s.seq,
            threads: s.threads,
            concurrency: s.concurrency,
            samples: l.map_or(0, |l| l.samples),
            mean_ms: Fixed(l.map(|l| l.mean_ms)),
            p50_ms: Fixed(l.map(|l| l.p50_ms)),
            p90_ms: Fixed(l.map(|l| l.p90_ms)),
            p99_ms: Fixed(l.map(|l| l.p99_ms)),
            p999_ms: Fixed(l.map(|l| l.p999_ms)),
            throughput_per_s: Fixed(s.throughput_per_s),
            parity: s.parity_label(),
            status: format!("{:?}", s.status).to_lowercase(),
            stddev_ms: Fixed(l.map(|l| l.stddev_ms)),
            min_ms: Fixed(l.map(|l| l.min_ms)),
            max_ms: Fixed(l.map(|l| l.max_ms)),
            load_ms: Fixed(s.load_ms),
            prepare_ms: Fixed(s.prepare_ms),
            first_inference_ms: Fixed(m.map(|m| m.first_inference_ms)),
            max_abs_diff: Sci(s.parity.max_abs_diff),
            max_rel_diff: Sci(s.parity.max_rel_diff),
            cosine: Fixed(s.parity.min_cosine),
            failures: m.map(|m| m.failures),
            low_sample_percentiles: l
                .map(|l| l.low_sample_percentiles.join(" "))
                .unwrap_or_default(),
            avg_cores_busy: Fixed(res.and_then(|r| r.avg_cores_busy)),
            peak_rss_mb: Fixed(res.and_then(|r| r.peak_rss_bytes).map(mb)),
            model_rss_mb: Fixed(s.load_rss_delta_bytes.map(|b| b as f64 / MB)),
            voluntary_ctx_switches: res.and_then(|r| r.voluntary_ctx_switches),
            involuntary_ctx_switches: res.and_then(|r| r.involuntary_ctx_switches),
            energy_j: Fixed(res.and_then(|r| r.energy_j)),
            mode: s.mode.clone(),
            target_rate: Fixed(s.rate),
            achieved_rate: Fixed(open.map(|o| o.achieved_rate)),
            late_sends: open.map(|o| o.late_sends),
            uncorrected_p99_ms: Fixed(open.map(|o| o.uncorrected.p99_ms)),
            median_ci95_low_ms: Fixed(l.map(|l| l.median_ci95_low_ms)),
            median_ci95_high_ms: Fixed(l.map(|l| l.median_ci95_high_ms)),
            stable: m.and_then(|m| m.stable),
            error: s.error.clone().unwrap_or_default(),
            protocol: sv.map(|v| v.protocol.clone()).unwrap_or_default(),
            target: sv.map(|v| v.target.clone()).unwrap_or_default(),
            client_saturated: sv.map(|v| v.client_saturated),
            server_avg_batch: Fixed(sv.and_then(|v| v.server_avg_batch)),
            server_queue_ms: Fixed(sv.and_then(|v| v.server_queue_ms_per_request)),
            ttft_p50_ms: Fixed(st.map(|t| t.ttft.p50_ms)),
            ttft_p99_ms: Fixed(st.map(|t| t.ttft.p99_ms)),
            tpot_p50_ms: Fixed(st.map(|t| t.tpot.p50_ms)),
            itl_p50_ms: Fixed(st.map(|t| t.itl.p50_ms)),
            itl_p99_ms: Fixed(st.map(|t| t.itl.p99_ms)),
            goodput_per_s: Fixed(st.and_then(|t| t.goodput_per_s)),
            failure_kinds: m
                .map(|m| {
                    m.failure_kinds
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default(),
            gpu_util_pct: Fixed(gpu.and_then(|g| g.utilization_pct)),
            gpu_mem_peak_mb: Fixed(gpu.and_then(|g| g.memory_used_peak_bytes).map(mb)),
            gpu_power_w: Fixed(gpu.and_then(|g| g.power_avg_w)),
            gpu_energy_j: Fixed(gpu.and_then(|g| g.energy_j)),
            gpu_energy_per_item_mj: Fixed(gpu.and_then(|g| g.energy_j).and_then(|e| {
                let items = m?.iterations as f64 * s.batch as f64;
                (items > 0.0).then(|| e / items * 1e3)
            })),
            device_p50_ms: Fixed(dev.and_then(|d| d.total.as_ref()).map(|x| x.p50_ms)),
            device_h2d_p50_ms: Fixed(dev.and_then(|d| d.h2d.as_ref()).map(|x| x.p50_ms)),
            device_compute_p50_ms: Fixed(dev.and_then(|d| d.compute.as_ref()).map(|x| x.p50_ms)),
            device_d2h_p50_ms: Fixed(dev.and_then(|d| d.d2h.as_ref()).map(|x| x.p50_ms)),
            device_share: Fixed(dev.and_then(|d| d.device_share)),
            device_timing: match dev {
                Some(d) => d.status.clone(),
                None if s.device == "cpu" && m.is_some() => "n/a (cpu)".into(),
                None => String::new(),
            },
            minor_page_faults: res.and_then(|r| r.minor_page_faults),
            major_page_faults: res.and_then(|r| r.major_page_faults),
            cpu_migrations: res.and_then(|r| r.cpu_migrations),
            cycles: res.and_then(|r| r.cycles),
            instructions: res.and_then(|r| r.instructions),
            ipc: Fixed(res.and_then(|r| r.ipc)),
            cache_misses: res.and_then(|r| r.cache_misses),
            profile_kernels_share: Fixed(profile_share(s, "matrix kernels")),
            profile_threading_share: Fixed(profile_share(s, "threading")),
            profile_allocation_share: Fixed(profile_share(s, "allocation")),
            server_cores: Fixed(res.and_then(|r| r.server.as_ref()).map(|x| x.cores_busy)),
            server_peak_mb: Fixed(
                res.and_then(|r| r.server.as_ref())
                    .map(|x| mb(x.peak_rss_bytes)),
            ),
        }
    }
}

/// The header line alone, for a run with no scenario yet.
fn header() -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(COLUMNS);
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// The column names, in order; `CsvRow` must serialize to exactly these (a test checks).
pub const COLUMNS: &[&str] = &[
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
    "device_p50_ms",
    "device_h2d_p50_ms",
    "device_compute_p50_ms",
    "device_d2h_p50_ms",
    "device_share",
    "device_timing",
    "minor_page_faults",
    "major_page_faults",
    "cpu_migrations",
    "cycles",
    "instructions",
    "ipc",
    "cache_misses",
    "profile_kernels_share",
    "profile_threading_share",
    "profile_allocation_share",
    "server_cores",
    "server_peak_mb",
];

/// A profiled row's share of window time in one group of frames (0 when the group had no
/// sample), `None` without a profile.
fn profile_share(s: &ScenarioResult, group: &str) -> Option<f64> {
    let p = s.profile.as_ref()?;
    Some(
        p.groups
            .iter()
            .find(|(g, _)| g == group)
            .map(|(_, v)| *v)
            .unwrap_or(0.0),
    )
}

/// `results.csv`: the header, then one row per scenario.
pub fn to_csv(r: &Results) -> String {
    if r.scenarios.is_empty() {
        return header();
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    for s in &r.scenarios {
        // Serializing a struct of strings and numbers into memory cannot fail.
        let _ = w.serialize(CsvRow::of(s));
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed results folder written before the schema moved (a compare run on the
    /// tiny fixture).
    fn fixture() -> Results {
        serde_json::from_str(include_str!("../../tests/fixtures/results-v1/results.json")).unwrap()
    }

    fn row() -> ScenarioResult {
        fixture()
            .scenarios
            .into_iter()
            .find(|s| s.measurement.is_some() && s.load_ms.is_some())
            .unwrap()
    }

    #[test]
    fn the_header_is_the_documented_column_list() {
        let r = Results {
            scenarios: vec![row()],
            ..fixture()
        };
        let text = to_csv(&r);
        let head = text.lines().next().unwrap();
        assert_eq!(head, COLUMNS.join(","));
        assert_eq!(header().trim_end(), head);
    }

    #[test]
    fn values_sit_under_their_own_column() {
        let s = row();
        let r = Results {
            scenarios: vec![s.clone()],
            ..fixture()
        };
        let text = to_csv(&r);
        let mut rd = csv::Reader::from_reader(text.as_bytes());
        let head = rd.headers().unwrap().clone();
        let rec = rd.records().next().unwrap().unwrap();
        let col = |name: &str| {
            rec.get(head.iter().position(|h| h == name).unwrap())
                .unwrap()
        };
        let l = &s.measurement.as_ref().unwrap().latency;
        assert_eq!(col("runtime"), s.runtime);
        assert_eq!(col("batch"), s.batch.to_string());
        assert_eq!(col("p50_ms"), format!("{:.4}", l.p50_ms));
        assert_eq!(col("p99_ms"), format!("{:.4}", l.p99_ms));
        assert_eq!(col("samples"), l.samples.to_string());
        assert_eq!(col("parity"), s.parity_label());
        assert_eq!(col("threads"), s.threads.to_string());
        assert_eq!(col("load_ms"), format!("{:.2}", s.load_ms.unwrap()));
    }

    /// A GPU row's device time in its columns, in the summary's section and the terminal's
    /// note; a CPU row leaves them empty.
    #[test]
    fn device_time_has_its_columns_section_and_note() {
        let cpu = row();
        let mut gpu = row();
        let samples: Vec<runtimes::DeviceTime> = (0..100)
            .map(|_| runtimes::DeviceTime {
                h2d_ns: Some(120_000),
                compute_ns: 400_000,
                d2h_ns: Some(80_000),
            })
            .collect();
        let wall = gpu.measurement.as_ref().unwrap().latency.p50_ms;
        gpu.measurement.as_mut().unwrap().device =
            Some(crate::stats::device_timing(&samples, wall));
        let r = Results {
            scenarios: vec![gpu.clone(), cpu],
            ..fixture()
        };
        let text = to_csv(&r);
        let mut rd = csv::Reader::from_reader(text.as_bytes());
        let head = rd.headers().unwrap().clone();
        let recs: Vec<_> = rd.records().map(|r| r.unwrap()).collect();
        let col = |i: usize, name: &str| {
            recs[i]
                .get(head.iter().position(|h| h == name).unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(col(0, "device_p50_ms"), "0.6000");
        assert_eq!(col(0, "device_h2d_p50_ms"), "0.1200");
        assert_eq!(col(0, "device_compute_p50_ms"), "0.4000");
        assert_eq!(col(0, "device_d2h_p50_ms"), "0.0800");
        assert_eq!(col(0, "device_share"), format!("{:.3}", 0.6 / wall));
        assert_eq!(col(0, "device_timing"), "cuda-events");
        for c in ["device_p50_ms", "device_share"] {
            assert_eq!(col(1, c), "", "{c}");
        }
        assert_eq!(col(1, "device_timing"), "n/a (cpu)");
        let md = super::super::markdown::to_markdown(&r);
        let section = md
            .split("## Device time")
            .nth(1)
            .expect("a Device time section");
        assert!(
            section.contains(&format!(
                "| {} | {wall:.4} | 0.6000 | 0.1200 | 0.4000 | 0.0800 |",
                gpu.id
            )),
            "{section}"
        );
        let html = super::super::html::to_html(&r);
        assert!(
            html.contains("<th>device time (CUDA events, p50 ms)</th>")
                && html.contains("<td>device time p50 0.6000 ms (copy in 0.1200 + compute 0.4000 + copy out 0.0800)"),
            "{html}"
        );
        let table = super::super::table::to_table(&r);
        assert!(
            table.contains(
                "device time p50 0.6000 ms (copy in 0.1200 + compute 0.4000 + copy out 0.0800)"
            ),
            "{table}"
        );
    }

    #[test]
    fn fields_with_commas_and_quotes_are_quoted() {
        let mut s = row();
        s.error = Some("a, \"b\"\nc".into());
        let r = Results {
            scenarios: vec![s],
            ..fixture()
        };
        let text = to_csv(&r);
        let mut rd = csv::Reader::from_reader(text.as_bytes());
        let head = rd.headers().unwrap().clone();
        let rec = rd.records().next().unwrap().unwrap();
        let i = head.iter().position(|h| h == "error").unwrap();
        assert_eq!(rec.get(i).unwrap(), "a, \"b\"\nc");
    }
}
