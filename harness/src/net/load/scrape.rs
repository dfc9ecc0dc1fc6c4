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
pub fn per_request(m: &BTreeMap<String, f64>) -> (Option<f64>, Option<f64>, Option<f64>) {
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
