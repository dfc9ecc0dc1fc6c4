//! The server's Prometheus metrics. The inference counters use NVIDIA Triton's names
//! (`nv_inference_*`), so one scrape-and-diff in `harness load` reads our server and Triton
//! alike: average batch = count / exec_count, queue and compute time per request.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Batch-size buckets of the executed batches (rows).
const BATCH_BUCKETS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256];

/// Triton's execution count (batches) and inference count (rows), with the histogram.
#[derive(Default, Clone, Copy)]
struct BatchCounts {
    exec: u64,
    rows: u64,
    hist: [u64; 10],
}

#[derive(Default)]
pub struct Metrics {
    pub model: String,
    pub request_success: AtomicU64,
    pub request_failure: AtomicU64,
    /// Batches executed, rows inferred and the batch-size histogram, updated and read
    /// together: a scrape never sees a batch counted in one and not the other.
    batches: Mutex<BatchCounts>,
    pub request_duration_us: AtomicU64,
    pub queue_duration_us: AtomicU64,
    pub compute_infer_duration_us: AtomicU64,
    pub pending: AtomicU64,
    pub rejected_queue_full: AtomicU64,
    pub timed_out: AtomicU64,
    /// Answers by protocol and status code.
    responses: Mutex<std::collections::BTreeMap<(String, u16), u64>>,
}

impl Metrics {
    pub fn new(model: &str) -> Metrics {
        Metrics {
            model: model.to_string(),
            ..Default::default()
        }
    }

    pub fn batch_executed(&self, rows: usize) {
        let i = BATCH_BUCKETS
            .iter()
            .position(|&b| rows as u64 <= b)
            .unwrap_or(BATCH_BUCKETS.len());
        let mut b = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        b.exec += 1;
        b.rows += rows as u64;
        b.hist[i] += 1;
    }

    pub fn response(&self, protocol: &str, code: u16) {
        let mut m = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((protocol.to_string(), code)).or_default() += 1;
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let m = escape(&self.model);
        let batches = *self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(s, "{name}{{model=\"{m}\",version=\"1\"}} {v}");
        };
        counter(
            "nv_inference_request_success",
            "Successful inference requests",
            self.request_success.load(Relaxed),
        );
        counter(
            "nv_inference_request_failure",
            "Failed inference requests",
            self.request_failure.load(Relaxed),
        );
        counter(
            "nv_inference_count",
            "Inferences (rows) performed",
            batches.rows,
        );
        counter(
            "nv_inference_exec_count",
            "Model executions (batches) performed",
            batches.exec,
        );
        counter(
            "nv_inference_request_duration_us",
            "Cumulative request duration from arrival to answer, microseconds",
            self.request_duration_us.load(Relaxed),
        );
        counter(
            "nv_inference_queue_duration_us",
            "Cumulative time requests waited in the queue, microseconds",
            self.queue_duration_us.load(Relaxed),
        );
        counter(
            "nv_inference_compute_infer_duration_us",
            "Cumulative model execution time per request, microseconds",
            self.compute_infer_duration_us.load(Relaxed),
        );
        counter(
            "harness_queue_rejections",
            "Requests answered 503 because the queue was full",
            self.rejected_queue_full.load(Relaxed),
        );
        counter(
            "harness_request_timeouts",
            "Requests that ran past --request-timeout",
            self.timed_out.load(Relaxed),
        );
        let _ = writeln!(
            s,
            "# HELP nv_inference_pending_request_count Requests queued or running\n# TYPE nv_inference_pending_request_count gauge\nnv_inference_pending_request_count{{model=\"{m}\",version=\"1\"}} {}",
            self.pending.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP harness_batch_rows Rows per executed batch\n# TYPE harness_batch_rows histogram"
        );
        let mut cum = 0;
        for (i, b) in BATCH_BUCKETS.iter().enumerate() {
            cum += batches.hist[i];
            let _ = writeln!(
                s,
                "harness_batch_rows_bucket{{model=\"{m}\",le=\"{b}\"}} {cum}"
            );
        }
        cum += batches.hist[BATCH_BUCKETS.len()];
        let _ = writeln!(
            s,
            "harness_batch_rows_bucket{{model=\"{m}\",le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            s,
            "harness_batch_rows_sum{{model=\"{m}\"}} {}",
            batches.rows
        );
        let _ = writeln!(s, "harness_batch_rows_count{{model=\"{m}\"}} {cum}");
        let _ = writeln!(
            s,
            "# HELP harness_responses Answers by protocol and status\n# TYPE harness_responses counter"
        );
        for ((p, c), v) in self
            .responses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(s, "harness_responses{{protocol=\"{p}\",code=\"{c}\"}} {v}");
        }
        s
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One scrape: every sample `name{labels}` with its value. Comments, blank lines and lines
/// that do not parse are ignored (exposition formats vary; nothing here may fail a run).
pub fn parse_prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The value follows the series (which may hold spaces inside its label values).
        let series_end = match line.find('}') {
            Some(i) => i + 1,
            None => line.find(char::is_whitespace).unwrap_or(line.len()),
        };
        let (series, rest) = line.split_at(series_end);
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        if let Ok(v) = value.parse::<f64>() {
            out.insert(series.trim().to_string(), v);
        }
    }
    out
}

/// What changed between two scrapes: every series whose value differs (counters' deltas,
/// gauges' moves), keyed by series.
pub fn delta(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> std::collections::BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, &v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d != 0.0 && d.is_finite()).then(|| (k.clone(), d))
        })
        .collect()
}

/// Sums a metric's series over all labels (`nv_inference_count{...}` for every model).
pub fn sum_metric(m: &std::collections::BTreeMap<String, f64>, name: &str) -> Option<f64> {
    let mut found = false;
    let mut total = 0.0;
    for (k, v) in m {
        let base = k.split('{').next().unwrap_or(k);
        if base == name {
            found = true;
            total += v;
        }
    }
    found.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_parses_back_and_deltas_work() {
        let m = Metrics::new("tiny \"bert\"");
        let before = parse_prometheus(&m.render());
        m.batch_executed(3);
        m.batch_executed(1);
        m.request_success.fetch_add(4, Relaxed);
        m.response("kserve-http", 200);
        let after = parse_prometheus(&m.render());
        let d = delta(&before, &after);
        assert_eq!(sum_metric(&d, "nv_inference_count"), Some(4.0));
        assert_eq!(sum_metric(&d, "nv_inference_exec_count"), Some(2.0));
        assert_eq!(sum_metric(&d, "nv_inference_request_success"), Some(4.0));
        assert_eq!(
            after.get("harness_batch_rows_bucket{model=\"tiny \\\"bert\\\"\",le=\"4\"}"),
            Some(&2.0)
        );
        assert_eq!(sum_metric(&d, "nv_inference_queue_duration_us"), None);
    }

    #[test]
    fn parses_triton_and_vllm_lines() {
        let text = "# HELP x\nnv_inference_count{model=\"m\",version=\"1\"} 12\nvllm:num_requests_running{model_name=\"a b\"} 3.0\nprocess_cpu_seconds_total 1.5e2\ngarbage\n";
        let p = parse_prometheus(text);
        assert_eq!(p["nv_inference_count{model=\"m\",version=\"1\"}"], 12.0);
        assert_eq!(p["vllm:num_requests_running{model_name=\"a b\"}"], 3.0);
        assert_eq!(p["process_cpu_seconds_total"], 150.0);
        assert_eq!(p.len(), 3);
    }
}
