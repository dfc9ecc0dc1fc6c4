//! The scenario engine: one way to turn a planned scenario into a row, whatever feeds the
//! load. A workload source — model instances in this process ([`group`], in a worker process
//! through [`worker`]) or a served endpoint (`net::load`, and `compare --served` through
//! [`served`]) — supplies workers; [`measure`](crate::measure) warms, measures and monitors
//! them with the same stop rule; [`Row`] completes every row the same way. [`compare`]
//! orchestrates `harness compare` over these pieces.

pub mod compare;
pub mod group;
pub mod interleaved;
pub mod pinning;
pub mod reference;
pub mod runlog;
pub mod served;
pub mod worker;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::measure::{self, LoadMode, MeasureConfig, MonotonicClock};
use crate::results::{
    Measurement, OpenLoopStats, Overhead, Parity, ResourceReport, ScenarioId, ScenarioResult,
    ScenarioStatus, Tolerance,
};

pub use pinning::Pinning;

/// What the harness tells people while it works; the binary shows it on stderr (a progress
/// bar on a terminal, plain lines otherwise), the library only emits it.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// How many scenarios the run will report.
    Plan(usize),
    /// What is happening now (loading, preparing, measuring).
    Status(&'a str),
    /// One scenario finished: its one-line summary.
    Finished(&'a str),
    /// Something the user should read.
    Warning(&'a str),
    /// A phase of a group begins (loading, preparing a shape, measuring it, finishing) and
    /// must end within the duration: the watchdog that stops a runtime that hangs reads it.
    Phase(&'a str, Duration),
}

pub type Progress<'a> = &'a (dyn Fn(Event) + Sync);

/// The phase a group is in and how long it may last: a runtime that hangs (tract on a
/// mutated graph spins for minutes) is stopped when its phase passes the deadline.
#[derive(Debug)]
pub struct Watch {
    phase: String,
    within: Duration,
    started: std::time::Instant,
}

/// A phase that passed its deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct Overrun {
    pub phase: String,
    pub within: Duration,
}

impl std::fmt::Display for Overrun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "did not finish {} within its deadline of {} (--phase-timeout bounds each phase)",
            self.phase,
            humantime::format_duration(Duration::from_millis(self.within.as_millis() as u64))
        )
    }
}

impl Watch {
    /// The first phase: a group (or its worker process) starting.
    pub fn start(within: Duration) -> Watch {
        Watch {
            phase: "starting".into(),
            within,
            started: std::time::Instant::now(),
        }
    }

    /// A new phase begins now.
    pub fn enter(&mut self, phase: &str, within: Duration) {
        self.phase = phase.to_string();
        self.within = within;
        self.started = std::time::Instant::now();
    }

    /// The phase, when it has passed its deadline.
    pub fn overrun(&self) -> Option<Overrun> {
        (self.started.elapsed() > self.within).then(|| Overrun {
            phase: self.phase.clone(),
            within: self.within,
        })
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Builds rows: every row starts here, from its typed id and load mode, and is completed by
/// the same steps whether the load ran in-process or over the network.
pub struct Row;

impl Row {
    /// A row before anything is known of it: an error until measured, nothing measured,
    /// parity not checked. The columns the id names (runtime, device, variant, batch, seq,
    /// threads) are filled from it.
    pub fn blank(id: &ScenarioId, mode: &LoadMode, tol: Tolerance) -> ScenarioResult {
        let (runtime, device, variant, batch, seq, threads) = match id {
            ScenarioId::InProcess {
                runtime,
                device,
                variant,
                batch,
                seq,
                threads,
                ..
            } => (
                runtime.clone(),
                device.clone(),
                variant.clone(),
                *batch,
                *seq,
                *threads,
            ),
            ScenarioId::Served {
                runtime,
                batch,
                seq,
                threads,
                ..
            } => (
                runtime.clone(),
                "cpu".to_string(),
                "served".to_string(),
                *batch,
                *seq,
                *threads,
            ),
            ScenarioId::Network { label, shape, .. } => (
                label.clone(),
                String::new(),
                "served".to_string(),
                shape.map_or(1, |s| s.0),
                shape.map(|s| s.1),
                0,
            ),
        };
        ScenarioResult {
            id: id.to_string(),
            runtime,
            device,
            variant,
            batch,
            seq,
            shapes: BTreeMap::new(),
            threads,
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
            profile: None,
            machine: None,
        }
    }

    /// Records why a scenario did not run: `kind` is the stable label; `skip` marks what
    /// cannot run here (unsupported, variant or device missing) rather than an error.
    pub fn fail(r: &mut ScenarioResult, message: String, kind: &str, skip: bool) {
        r.error = Some(message);
        r.error_kind = Some(kind.to_string());
        if skip {
            r.status = ScenarioStatus::Skipped;
        }
    }

    /// [`Row::fail`] for a runtime's error.
    pub fn runtime_error(r: &mut ScenarioResult, e: &runtimes::RuntimeError) {
        Row::fail(r, e.to_string(), e.kind(), e.is_skip());
    }

    /// Completes a measured row: the measurement, items per second, the monitors' report,
    /// the open-loop figures, and the status (failed when any inference or request failed,
    /// with the failures named: `what` failed, "inferences" or "requests").
    pub fn complete(
        r: &mut ScenarioResult,
        m: Measurement,
        open: Option<OpenLoopStats>,
        resources: Option<ResourceReport>,
        what: &str,
    ) {
        r.throughput_per_s = Some(measure::throughput(&m, r.batch));
        r.resources = resources;
        if m.failures > 0 {
            r.status = ScenarioStatus::Failed;
            let kinds: Vec<String> = m
                .failure_kinds
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            r.error = Some(format!(
                "{} {what} failed: {}",
                m.failures,
                kinds.join(", ")
            ));
        } else {
            r.status = ScenarioStatus::Ok;
        }
        r.measurement = Some(m);
        r.open_loop = open;
    }
}

/// Measures the harness's own cost per iteration: the null runtime in the same loop.
pub fn measure_overhead(pin: Option<usize>) -> Overhead {
    std::thread::scope(|s| {
        s.spawn(|| {
            pinning::pin_current(pin);
            let mut null = runtimes::null::NullLoaded;
            let cfg = MeasureConfig {
                warmup_iters: 10_000,
                warmup_time: Duration::from_millis(50),
                min_time: Duration::from_millis(300),
                min_samples: 100_000,
                max_time: Duration::from_secs(2),
                max_consecutive_failures: 1,
                target_ci: None,
                warmup_max: Duration::ZERO,
                ..MeasureConfig::default()
            };
            let clock = MonotonicClock::new();
            let m =
                measure::measure(&mut null, &clock, &cfg).expect("the null runtime cannot fail");
            let l = &m.latency;
            Overhead {
                samples: l.samples,
                p50_ns: l.p50_ms * 1e6,
                mean_ns: l.mean_ms * 1e6,
                p99_ns: l.p99_ms * 1e6,
            }
        })
        .join()
        .expect("overhead thread")
    })
}
