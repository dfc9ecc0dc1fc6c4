//! The server's Prometheus metrics scraped at the window's edges, around the resource
//! monitors, and what they say per request (Triton's counter names, which ours shares).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::measure::WindowHooks;
use crate::monitor::MonitorHooks;
use crate::net::client::get;
use crate::net::metrics::{delta, parse_prometheus, sum_metric};

/// Scrapes the server's metrics at the window's edges, around the resource monitors.
pub struct ScrapeHooks<'a> {
    pub inner: MonitorHooks<'a>,
    url: Option<String>,
    before: Option<BTreeMap<String, f64>>,
    after: Option<BTreeMap<String, f64>>,
    pub error: Option<String>,
}

impl<'a> ScrapeHooks<'a> {
    pub fn new(inner: MonitorHooks<'a>, url: Option<String>) -> ScrapeHooks<'a> {
        ScrapeHooks {
            inner,
            url,
            before: None,
            after: None,
            error: None,
        }
    }

    /// The series that changed over the window (counters' deltas).
    pub fn changed(&self) -> BTreeMap<String, f64> {
        match (&self.before, &self.after) {
            (Some(b), Some(a)) => delta(b, a),
            _ => BTreeMap::new(),
        }
    }
    fn scrape(&mut self) -> Option<BTreeMap<String, f64>> {
        let url = self.url.as_ref()?;
        match get(url, Duration::from_secs(5)) {
            Ok((200, text)) => Some(parse_prometheus(&text)),
            Ok((s, _)) => {
                self.error = Some(format!("{url} answered {s}"));
                None
            }
            Err(e) => {
                self.error = Some(format!("{url}: {e}"));
                None
            }
        }
    }
}

impl WindowHooks for ScrapeHooks<'_> {
    fn window_start(&mut self) {
        self.before = self.scrape();
        self.inner.window_start();
    }
    fn window_end(&mut self) {
        self.inner.window_end();
        self.after = self.scrape();
    }
    fn interrupted(&self) -> bool {
        self.inner.interrupted()
    }
}

/// Per-request figures from the server's metrics: (average batch, queue ms, compute ms).
/// Triton's counter names (ours and the FastAPI baseline's too), else vLLM's histograms:
/// `vllm:request_queue_time_seconds` and `vllm:request_inference_time_seconds`, each sum
/// over its count.
pub fn per_request(m: &BTreeMap<String, f64>) -> (Option<f64>, Option<f64>, Option<f64>) {
    if sum_metric(m, "nv_inference_request_success").is_none() {
        let mean_ms = |name: &str| -> Option<f64> {
            let n = sum_metric(m, &format!("{name}_count"))?;
            (n > 0.0)
                .then(|| sum_metric(m, &format!("{name}_sum")).map(|s| s / n * 1e3))
                .flatten()
        };
        return (
            None,
            mean_ms("vllm:request_queue_time_seconds"),
            mean_ms("vllm:request_inference_time_seconds"),
        );
    }
    let per_req = |name: &str| -> Option<f64> {
        let n = sum_metric(m, "nv_inference_request_success")?;
        (n > 0.0)
            .then(|| sum_metric(m, name).map(|us| us / n / 1e3))
            .flatten()
    };
    let avg_batch = match (
        sum_metric(m, "nv_inference_count"),
        sum_metric(m, "nv_inference_exec_count"),
    ) {
        (Some(c), Some(e)) if e > 0.0 => Some(c / e),
        _ => None,
    };
    (
        avg_batch,
        per_req("nv_inference_queue_duration_us"),
        per_req("nv_inference_compute_infer_duration_us"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_request_figures_come_from_triton_names_else_vllm_histograms() {
        let triton: BTreeMap<String, f64> = [
            ("nv_inference_request_success{model=\"m\"}", 10.0),
            ("nv_inference_count{model=\"m\"}", 20.0),
            ("nv_inference_exec_count{model=\"m\"}", 5.0),
            ("nv_inference_queue_duration_us{model=\"m\"}", 3000.0),
            (
                "nv_inference_compute_infer_duration_us{model=\"m\"}",
                120_000.0,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(per_request(&triton), (Some(4.0), Some(0.3), Some(12.0)));
        // vLLM 0.32's names, as its /metrics changed over a window of 186 requests.
        let vllm: BTreeMap<String, f64> = [
            ("vllm:request_queue_time_seconds_count{engine=\"0\"}", 186.0),
            ("vllm:request_queue_time_seconds_sum{engine=\"0\"}", 0.00186),
            (
                "vllm:request_inference_time_seconds_count{engine=\"0\"}",
                186.0,
            ),
            (
                "vllm:request_inference_time_seconds_sum{engine=\"0\"}",
                4.65,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let (batch, queue, compute) = per_request(&vllm);
        assert_eq!(batch, None);
        assert!((queue.unwrap() - 0.01).abs() < 1e-9, "{queue:?}");
        assert!((compute.unwrap() - 25.0).abs() < 1e-9, "{compute:?}");
        // Neither: nothing to say.
        assert_eq!(per_request(&BTreeMap::new()), (None, None, None));
    }
}
