//! The measurement loops, the same for every workload (an inference in-process, a request
//! over the network): first step, warm-up, then timed steps until both the minimum time and
//! the minimum sample count hold (or the CI target), capped by the maximum time. One stream
//! runs on the calling thread with only `Loaded::run` between the two clock reads; several
//! workers, closed or open loop (a seeded arrival schedule, latency from the scheduled time),
//! run one thread each under a coordinator. Returns data; never prints.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use runtimes::{Loaded, RuntimeError};
use serde::{Deserialize, Serialize};

use crate::results::{Arrivals, LatencyStats, Measurement, OpenLoopStats, StopReason};

/// A monotonic nanosecond clock. Tests substitute one that a fake runtime advances, so the
/// statistics can be checked against exact truth.
pub trait Clock {
    fn now_ns(&self) -> u64;
}

pub struct MonotonicClock {
    start: Instant,
}

impl MonotonicClock {
    pub fn new() -> MonotonicClock {
        MonotonicClock {
            start: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeasureConfig {
    /// Warm-up ends when both the iteration count and the time are reached.
    pub warmup_iters: u64,
    #[serde(with = "secs")]
    pub warmup_time: Duration,
    #[serde(with = "secs")]
    pub min_time: Duration,
    pub min_samples: u64,
    #[serde(with = "secs")]
    pub max_time: Duration,
    /// A scenario stops, marked failed, after this many failed inferences in a row.
    pub max_consecutive_failures: u64,
    /// Stop once the median's 95% CI is within +- this fraction (0.02 = 2%, the default),
    /// after the minimum time and samples; else run to the scenario's share of the budget or
    /// `max_time`, marked unstable. None: stop as soon as the minima hold.
    #[serde(default)]
    pub target_ci: Option<f64>,
    /// The whole run's time (`--budget`), load and warm-ups included: each scenario may take
    /// an equal share of what is left when it starts, so the time a stable scenario did not
    /// need goes to those after it.
    #[serde(default, with = "opt_secs", skip_serializing_if = "Option::is_none")]
    pub budget: Option<Duration>,
    /// Without a total: this much per planned scenario makes it (`--budget auto`).
    #[serde(default, with = "opt_secs", skip_serializing_if = "Option::is_none")]
    pub budget_per_scenario: Option<Duration>,
    /// This scenario's share of the budget, warm-up included (set per scenario, see
    /// [`Budget`]): past it the window ends once the minima hold, marked unstable.
    #[serde(default, with = "opt_secs", skip_serializing_if = "Option::is_none")]
    pub share: Option<Duration>,
    /// The longest warm-up: past the minimum iterations and `warmup_time`, the warm-up goes
    /// on while the latency still moves, up to this (no longer than `warmup_time`: no
    /// detection).
    #[serde(default, with = "secs")]
    pub warmup_max: Duration,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        MeasureConfig {
            warmup_iters: 3,
            warmup_time: Duration::from_secs(1),
            min_time: Duration::from_secs(3),
            min_samples: 30,
            max_time: Duration::from_secs(60),
            max_consecutive_failures: 10,
            target_ci: Some(DEFAULT_TARGET_CI),
            budget: None,
            budget_per_scenario: Some(DEFAULT_BUDGET_PER_SCENARIO),
            share: None,
            warmup_max: Duration::from_secs(10),
        }
    }
}

/// The default stopping target: the median known to +-2% (95% confidence).
pub const DEFAULT_TARGET_CI: f64 = 0.02;

/// The default budget (`--budget auto`): this much per planned scenario, in total.
pub const DEFAULT_BUDGET_PER_SCENARIO: Duration = Duration::from_secs(15);

/// What is left of a `--budget` when a group of scenarios starts, and how many scenarios of
/// the run are left to share it (this group's included).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    #[serde(with = "secs")]
    pub left: Duration,
    pub scenarios: usize,
}

impl Budget {
    /// The share of the `done`-th scenario from here, `spent` after this budget was taken:
    /// what is left divided equally among the scenarios still to run.
    pub fn share(&self, spent: Duration, done: usize) -> Duration {
        let left = self.left.saturating_sub(spent);
        left / (self.scenarios.saturating_sub(done).max(1) as u32)
    }

    /// `cfg` for the `done`-th scenario from here.
    pub fn apply(
        this: Option<&Budget>,
        cfg: &MeasureConfig,
        spent: Duration,
        done: usize,
    ) -> MeasureConfig {
        MeasureConfig {
            share: this.map(|b| b.share(spent, done)),
            ..cfg.clone()
        }
    }
}

/// Warm-up by detection: the latencies of the warm-up, and whether they have stopped
/// moving. The test is Mann-Kendall's on the latest `WINDOW` samples (is there a monotone
/// trend, at 95%?) with Sen's slope for its size: the warm-up is steady unless the trend is
/// significant *and* it moves the latency by `STEADY_CHANGE` or more over `WINDOW` samples. A
/// runtime still warming (caches, allocator, lazy initialisation, frequency) gets steadily
/// faster; noise alone is rarely a significant trend, and a trend too small to matter is
/// not one the window must avoid.
pub struct Warmup {
    /// The latest warm-up latencies, at most `WINDOW`.
    samples: Vec<u64>,
    /// The minimum time, and the cap (no detection when it is not longer).
    time_ns: u64,
    cap_ns: u64,
    steady: bool,
}

/// The samples the test looks at: the latest this many (fewer at first, at least 10).
pub const WINDOW: usize = 30;
/// A trend smaller than this across the window (a fraction of its median) is steady.
pub const STEADY_CHANGE: f64 = 0.02;

impl Warmup {
    pub fn new(cfg: &MeasureConfig) -> Warmup {
        Warmup {
            samples: Vec::new(),
            time_ns: cfg.warmup_time.as_nanos() as u64,
            cap_ns: cfg.warmup_cap().as_nanos() as u64,
            steady: false,
        }
    }

    /// Whether the warm-up is over after `elapsed_ns`: its minimum done (`iterations_done`
    /// and the minimum time) and the latency steady, or the cap passed.
    pub fn over(&mut self, iterations_done: bool, elapsed_ns: u64) -> bool {
        if !iterations_done || elapsed_ns < self.time_ns {
            return false;
        }
        if !self.steady {
            self.steady = self.cap_ns <= self.time_ns || self.steady_now();
        }
        self.steady || elapsed_ns >= self.cap_ns
    }

    /// How it ended: `minimum` (no detection), `steady`, or `cap`.
    pub fn end(&self) -> &'static str {
        if self.cap_ns <= self.time_ns {
            "minimum"
        } else if self.steady {
            "steady"
        } else {
            "cap"
        }
    }

    /// Adds a warm-up latency; only the latest `WINDOW` are kept (a fast model warms up
    /// for thousands of inferences).
    pub fn push(&mut self, ns: u64) {
        if self.samples.len() == WINDOW {
            self.samples.remove(0);
        }
        self.samples.push(ns);
    }

    /// Whether the latest window is steady (false until there are 10 samples).
    fn steady_now(&self) -> bool {
        if self.samples.len() < 10 {
            return false;
        }
        let w = &self.samples;
        let k = w.len();
        let mut s = 0i64;
        let mut slopes = Vec::with_capacity(k * (k - 1) / 2);
        for i in 0..k {
            for j in i + 1..k {
                s += (w[j] as i64 - w[i] as i64).signum();
                slopes.push((w[j] as f64 - w[i] as f64) / (j - i) as f64);
            }
        }
        let kf = k as f64;
        let var = kf * (kf - 1.0) * (2.0 * kf + 5.0) / 18.0;
        // Continuity-corrected z.
        let z = (s.abs() as f64 - 1.0).max(0.0) / var.sqrt();
        if z < 1.96 {
            return true;
        }
        slopes.sort_by(f64::total_cmp);
        let slope = slopes[slopes.len() / 2];
        let mut sorted = w.to_vec();
        sorted.sort_unstable();
        let median = sorted[k / 2] as f64;
        // Its size over a whole window, however few samples there are yet.
        median <= 0.0 || (slope * WINDOW as f64).abs() / median < STEADY_CHANGE
    }
}

impl MeasureConfig {
    /// The run's total budget once its scenario count is known: the one given, or the
    /// per-scenario default times the count.
    pub fn for_scenarios(&self, scenarios: usize) -> MeasureConfig {
        MeasureConfig {
            budget: self.budget.or_else(|| {
                self.budget_per_scenario
                    .map(|d| d.saturating_mul(scenarios.min(u32::MAX as usize) as u32))
            }),
            ..self.clone()
        }
    }

    /// A capacity probe's window: exactly `seconds` long (2 s of slack for the stop rule's
    /// tick), whatever the run's sample, CI and budget rules say.
    pub fn probe(&self, seconds: f64) -> MeasureConfig {
        let span = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO);
        MeasureConfig {
            min_time: span,
            max_time: span + Duration::from_secs(2),
            min_samples: 0,
            target_ci: None,
            budget: None,
            share: None,
            ..self.clone()
        }
    }

    /// The longest warm-up: `--warmup-max` (at least `--warmup-time`), and with a budget
    /// share no more of it than leaves the minimum time for the window.
    pub fn warmup_cap(&self) -> Duration {
        let cap = self.warmup_max.max(self.warmup_time);
        match self.share {
            Some(share) => cap.min(share.saturating_sub(self.min_time).max(self.warmup_time)),
            None => cap,
        }
    }
}

/// When a measured window ends, the same for every load mode: both minima met, and with a
/// CI target the target met too, or the scenario's budget share spent (measured from the
/// start of its warm-up); else the maximum time, else an interrupt.
struct StopRule<'a> {
    cfg: &'a MeasureConfig,
    next_check: u64,
    /// The window's part of the budget share: the share less the warm-up.
    share_ns: Option<u64>,
}

impl<'a> StopRule<'a> {
    fn new(cfg: &'a MeasureConfig, warm_ns: u64) -> StopRule<'a> {
        StopRule {
            cfg,
            next_check: 0,
            share_ns: cfg
                .share
                .map(|s| (s.as_nanos() as u64).saturating_sub(warm_ns)),
        }
    }

    fn decide(
        &mut self,
        elapsed_ns: u64,
        samples: u64,
        interrupted: bool,
        ci_met: &dyn Fn(f64) -> bool,
    ) -> Option<StopReason> {
        if elapsed_ns >= self.cfg.min_time.as_nanos() as u64 && samples >= self.cfg.min_samples {
            match self.cfg.target_ci {
                None => return Some(StopReason::MinimaMet),
                // Checked as the sample count grows by a tenth (at every sample while there
                // are fewer than 20): O(n log n) each time, so O(n log n) in all.
                Some(t) if samples >= self.next_check => {
                    if ci_met(t) {
                        return Some(StopReason::TargetCi);
                    }
                    self.next_check = samples + (samples / 10).max(1);
                }
                Some(_) => {}
            }
            if self.share_ns.is_some_and(|s| elapsed_ns >= s) {
                return Some(StopReason::Budget);
            }
        }
        if elapsed_ns >= self.cfg.max_time.as_nanos() as u64 {
            return Some(StopReason::MaxTime);
        }
        interrupted.then_some(StopReason::Interrupted)
    }
}

/// Whether `samples` (unsorted) meet the CI target.
fn ci_met(samples: &[u64], target: f64) -> bool {
    let mut s = samples.to_vec();
    s.sort_unstable();
    crate::stats::median_ci_relative(&s) <= target
}

/// Durations as seconds (f64) in JSON.
mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v: f64 = serde::Deserialize::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// Optional durations as seconds (f64) in JSON.
mod opt_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::secs::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let v: Option<f64> = serde::Deserialize::deserialize(d)?;
        v.map(|v| Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom))
            .transpose()
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Called at the edges of the measured window (after warm-up, after the last sample), so
/// that resource monitors cover exactly what the latencies cover.
pub trait WindowHooks {
    fn window_start(&mut self) {}
    fn window_end(&mut self) {}
    /// Polled every iteration: true ends the scenario early (Ctrl-C).
    fn interrupted(&self) -> bool {
        false
    }
}

impl WindowHooks for () {}

/// Measures `model`, which must already be prepared. The first inference failing is an
/// error (nothing can be measured); later failures are counted and shown.
pub fn measure(
    model: &mut dyn Loaded,
    clock: &dyn Clock,
    cfg: &MeasureConfig,
) -> Result<Measurement, RuntimeError> {
    measure_with(model, clock, cfg, &mut ())
}

/// [`measure`], calling `hooks` at the window's edges.
pub fn measure_with(
    model: &mut dyn Loaded,
    clock: &dyn Clock,
    cfg: &MeasureConfig,
    hooks: &mut dyn WindowHooks,
) -> Result<Measurement, RuntimeError> {
    let t0 = clock.now_ns();
    model.run()?;
    let first_ns = clock.now_ns() - t0;
    // GPU rows: the device's time of each measured inference, where the runtime takes it.
    let device_timing = model.device_timing();
    let timed_on_device = matches!(device_timing, Some(Ok(())));
    let mut device: Vec<runtimes::DeviceTime> = Vec::new();

    let mut failure_kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = 0u64;
    let mut consecutive = 0u64;
    let mut fail = |e: RuntimeError, consecutive: &mut u64| {
        failures += 1;
        *consecutive += 1;
        *failure_kinds.entry(e.kind().to_string()).or_default() += 1;
    };

    let warm_range = crate::nvtx::range(c"warm-up");
    let warm_start = clock.now_ns();
    let max_ns = cfg.max_time.as_nanos() as u64;
    let mut warm_iters = 0u64;
    let mut warmup = Warmup::new(cfg);
    loop {
        let elapsed = clock.now_ns() - warm_start;
        if warmup.over(warm_iters >= cfg.warmup_iters, elapsed)
            || elapsed >= max_ns
            || hooks.interrupted()
        {
            break;
        }
        let span = crate::nvtx::range(c"inference");
        let a = clock.now_ns();
        let r = model.run();
        let b = clock.now_ns();
        drop(span);
        match r {
            Ok(()) => {
                consecutive = 0;
                warmup.push(b - a);
            }
            Err(e) => {
                fail(e, &mut consecutive);
                if consecutive >= cfg.max_consecutive_failures {
                    break;
                }
            }
        }
        warm_iters += 1;
    }
    let warm_ns = clock.now_ns() - warm_start;
    drop(warm_range);

    hooks.window_start();
    let window_range = crate::nvtx::range(c"window");
    let mut samples: Vec<u64> = Vec::with_capacity(cfg.min_samples.min(1 << 20) as usize);
    let mut rule = StopRule::new(cfg, warm_ns);
    let start = clock.now_ns();
    let mut end = start;
    let stop_reason = if consecutive >= cfg.max_consecutive_failures {
        StopReason::Failures
    } else {
        loop {
            let span = crate::nvtx::range(c"inference");
            let a = clock.now_ns();
            let r = model.run();
            let b = clock.now_ns();
            drop(span);
            end = b;
            match r {
                Ok(()) => {
                    samples.push(b - a);
                    consecutive = 0;
                    if timed_on_device {
                        device.extend(model.last_device_time());
                    }
                }
                Err(e) => {
                    fail(e, &mut consecutive);
                    if consecutive >= cfg.max_consecutive_failures {
                        break StopReason::Failures;
                    }
                }
            }
            let n = samples.len() as u64;
            if let Some(r) =
                rule.decide(b - start, n, hooks.interrupted(), &|t| ci_met(&samples, t))
            {
                break r;
            }
        }
    };
    drop(window_range);
    hooks.window_end();
    let stable = cfg.target_ci.map(|_| stop_reason == StopReason::TargetCi);
    let latency = LatencyStats::from_samples(&samples);
    let device = device_timing.map(|t| match t {
        Ok(()) => crate::stats::device_timing(&device, latency.p50_ms),
        Err(why) => crate::results::DeviceTiming::unavailable(why),
    });
    Ok(Measurement {
        device,
        warmup_end: Some(warmup.end().into()),
        stable,
        first_inference_ms: ms(first_ns),
        warmup_iterations: warm_iters,
        warmup_ms: ms(warm_ns),
        iterations: samples.len() as u64,
        latency,
        window_s: (end - start) as f64 / 1e9,
        failures,
        in_flight_at_end: 0,
        failure_kinds,
        stop_reason,
        share_s: cfg.share.map(|d| d.as_secs_f64()),
    })
}

/// Items per second: completed inferences times the batch, over the measured window.
pub fn throughput(m: &Measurement, batch: usize) -> f64 {
    if m.window_s > 0.0 {
        (m.iterations * batch as u64) as f64 / m.window_s
    } else {
        0.0
    }
}

/// Closed loop (N workers, each waits for its answer before the next), open loop (a seeded
/// arrival schedule, served by N workers; latency counted from the scheduled time), or the
/// replay of a recorded trace (its offsets and shapes; latency from the recorded time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum LoadMode {
    ClosedLoop {
        concurrency: usize,
    },
    OpenLoop {
        rate: f64,
        arrivals: Arrivals,
        concurrency: usize,
        seed: u64,
        /// The rate rises linearly from 0 over this many seconds, then holds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ramp_s: Option<f64>,
    },
    Replay {
        /// The trace file, as given.
        file: String,
        /// Time scale: 2 replays twice as fast.
        speed: f64,
        requests: u64,
        /// From the first request to the last, after scaling.
        duration_s: f64,
        concurrency: usize,
    },
}

/// The load tag in scenario ids: `c4` for closed loop with 4 workers,
/// `open-poisson-100/s-c1` for an open loop (`open-gamma2-100/s-ramp30s-c1`),
/// `replay-trace.csv-x1-c16` for a replayed trace.
impl std::fmt::Display for LoadMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadMode::ClosedLoop { concurrency } => write!(f, "c{concurrency}"),
            LoadMode::OpenLoop {
                rate,
                arrivals,
                concurrency,
                ramp_s,
                ..
            } => {
                write!(f, "open-{}-{rate}/s", arrivals.tag())?;
                if let Some(r) = ramp_s {
                    write!(f, "-ramp{r}s")?;
                }
                write!(f, "-c{concurrency}")
            }
            LoadMode::Replay {
                file,
                speed,
                concurrency,
                ..
            } => {
                let name = std::path::Path::new(file)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| file.clone());
                write!(f, "replay-{name}-x{speed}-c{concurrency}")
            }
        }
    }
}

impl Arrivals {
    /// The arrivals' name in scenario ids.
    pub fn tag(&self) -> String {
        match self {
            Arrivals::Poisson => "poisson".into(),
            Arrivals::Constant => "constant".into(),
            Arrivals::Gamma { cv } => format!("gamma{cv}"),
            Arrivals::Trace => "trace".into(),
        }
    }
}

impl LoadMode {
    /// The modes in words, for the results' settings; `unit` names what serves the load
    /// ("worker", "connection").
    pub fn describe_all(modes: &[LoadMode], unit: &str) -> String {
        modes
            .iter()
            .map(|m| match m {
                LoadMode::ClosedLoop { concurrency } => {
                    format!("closed loop, {concurrency} {unit}(s)")
                }
                LoadMode::OpenLoop {
                    rate,
                    arrivals,
                    concurrency,
                    ramp_s,
                    ..
                } => format!(
                    "open loop, {rate}/s {} arrivals{} over {concurrency} {unit}(s); latency from the scheduled send",
                    arrivals.tag(),
                    ramp_s.map(|r| format!(" (rising from 0 over {r} s)")).unwrap_or_default()
                ),
                LoadMode::Replay {
                    file,
                    speed,
                    requests,
                    duration_s,
                    concurrency,
                } => format!(
                    "replay of {file} ({requests} requests over {duration_s:.1} s at x{speed}) over {concurrency} {unit}(s); latency from each request's recorded time"
                ),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn concurrency(&self) -> usize {
        match self {
            LoadMode::ClosedLoop { concurrency }
            | LoadMode::OpenLoop { concurrency, .. }
            | LoadMode::Replay { concurrency, .. } => *concurrency,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            LoadMode::ClosedLoop { .. } => "closed-loop",
            LoadMode::OpenLoop { .. } => "open-loop",
            LoadMode::Replay { .. } => "replay",
        }
    }

    /// The intended mean rate (requests/s) of an open loop or a replay.
    pub fn rate(&self) -> Option<f64> {
        match self {
            LoadMode::OpenLoop { rate, .. } => Some(*rate),
            LoadMode::Replay {
                requests,
                duration_s,
                ..
            } => Some(if *duration_s > 0.0 {
                *requests as f64 / duration_s
            } else {
                0.0
            }),
            LoadMode::ClosedLoop { .. } => None,
        }
    }
}

/// A send later than this after its scheduled time counts as late.
pub const LATE_NS: u64 = 1_000_000;

/// One measured step as the driver saw it: when it was due (its start in closed loop), sent
/// and answered (ns on the scenario's clock).
pub(crate) struct Record {
    pub scheduled: u64,
    pub start: u64,
    pub end: u64,
    pub info: Option<StepInfo>,
    /// Which prepared request was sent (a replayed trace's shapes); 0 with one request.
    pub tag: u32,
    /// Open loop: sent late although a worker (connection) was free when it was due: the
    /// client, not the server, was behind.
    pub client_late: bool,
}

/// A step as it was sent: in the warm-up or the window, when it was due (its start in
/// closed loop) and sent, which request, and whether the client was late for it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sent {
    pub warm: bool,
    pub scheduled: u64,
    pub start: u64,
    pub tag: u32,
    pub client_late: bool,
}

impl Sent {
    /// A step sent at `start`: due at `scheduled` in open loop (late for the client's sake
    /// when it was taken before that time, `free_before_due`, and left more than
    /// [`LATE_NS`] after it), else due when sent.
    pub fn at(warm: bool, scheduled: Option<u64>, start: u64, free_before_due: bool) -> Sent {
        let due = scheduled.unwrap_or(start);
        Sent {
            warm,
            scheduled: due,
            start,
            tag: 0,
            client_late: free_before_due && start - due > LATE_NS,
        }
    }
}

/// What a unit does next ([`Shared::next`]).
pub(crate) enum Next {
    /// Its part of the run is over.
    Stop,
    /// Nothing to send yet: look again shortly.
    Idle,
    /// Send, now or at `due` (open loop), the arrival having been taken before its time or
    /// not (`free_before_due`).
    Send {
        warm: bool,
        due: Option<u64>,
        free_before_due: bool,
    },
}

/// What one worker (or one event loop, for all its connections) returns.
#[derive(Default)]
pub(crate) struct WorkerOut {
    pub records: Vec<Record>,
    pub failures: BTreeMap<String, u64>,
    /// Drivers that time each request's phases (the event engine) add them up here.
    pub phases: Option<PhaseSums>,
}

/// The phases of a driver's answered measured requests, summed (ns; the server's
/// `Server-Timing` entries in ms, by name in the order first seen).
#[derive(Debug, Clone, Default)]
pub(crate) struct PhaseSums {
    pub requests: u64,
    pub connects: u64,
    pub connect_ns: u64,
    pub write_ns: u64,
    pub wait_ns: u64,
    pub read_ns: u64,
    pub server_requests: u64,
    pub server_ms: Vec<(String, f64)>,
}

impl PhaseSums {
    /// Adds a `Server-Timing` value (`name;dur=1.5, name2;desc="x";dur=2`); false when it
    /// holds no entry with a duration.
    pub fn add_server_timing(&mut self, value: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(value) else {
            return false;
        };
        let mut any = false;
        for entry in text.split(',') {
            let mut params = entry.split(';');
            let name = params.next().unwrap_or("").trim();
            let dur = params.find_map(|p| {
                let (k, v) = p.split_once('=')?;
                (k.trim().eq_ignore_ascii_case("dur"))
                    .then(|| v.trim().trim_matches('"').parse::<f64>().ok())
                    .flatten()
            });
            let (Some(dur), false) = (dur, name.is_empty()) else {
                continue;
            };
            if !dur.is_finite() || dur < 0.0 {
                continue;
            }
            any = true;
            match self.server_ms.iter_mut().find(|(n, _)| n == name) {
                Some((_, sum)) => *sum += dur,
                None => self.server_ms.push((name.to_string(), dur)),
            }
        }
        self.server_requests += any as u64;
        any
    }

    pub fn merge(&mut self, o: &PhaseSums) {
        self.requests += o.requests;
        self.connects += o.connects;
        self.connect_ns += o.connect_ns;
        self.write_ns += o.write_ns;
        self.wait_ns += o.wait_ns;
        self.read_ns += o.read_ns;
        self.server_requests += o.server_requests;
        for (name, ms) in &o.server_ms {
            match self.server_ms.iter_mut().find(|(n, _)| n == name) {
                Some((_, sum)) => *sum += ms,
                None => self.server_ms.push((name.clone(), *ms)),
            }
        }
    }

    /// The means, or None without an answered request.
    pub fn breakdown(&self) -> Option<crate::results::Breakdown> {
        if self.requests == 0 {
            return None;
        }
        let n = self.requests as f64;
        let ms = |ns: u64| ns as f64 / 1e6 / n;
        let total_ns = self.connect_ns + self.write_ns + self.wait_ns + self.read_ns;
        let server_ms: Vec<(String, f64)> = self
            .server_ms
            .iter()
            .map(|(name, sum)| (name.clone(), sum / self.server_requests.max(1) as f64))
            .collect();
        let server_total_ms = (self.server_requests > 0).then(|| {
            server_ms
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("total"))
                .map(|(_, v)| *v)
                .unwrap_or_else(|| server_ms.iter().map(|(_, v)| v).sum())
        });
        Some(crate::results::Breakdown {
            requests: self.requests,
            connects: self.connects,
            connect_ms: ms(self.connect_ns),
            write_ms: ms(self.write_ns),
            wait_ms: ms(self.wait_ns),
            read_ms: ms(self.read_ns),
            total_ms: ms(total_ns),
            server_requests: self.server_requests,
            server_total_ms,
            // Only where every answer said: a mean over some requests against one over all
            // would not subtract.
            outside_server_ms: server_total_ms
                .filter(|_| self.server_requests == self.requests)
                .map(|s| ms(total_ns) - s),
            server_ms,
        })
    }
}

pub(crate) const WARM: u8 = 0;
pub(crate) const MEASURE: u8 = 1;
pub(crate) const STOP: u8 = 2;

/// Arrival offsets (ns from the window start) for up to `max_time` at `rate` (rising from 0
/// over `ramp_s` first, when given).
fn schedule(
    rate: f64,
    arrivals: Arrivals,
    seed: u64,
    max_time: Duration,
    ramp_s: Option<f64>,
) -> Vec<u64> {
    use crate::traffic;
    let expected = traffic::cumulative_intensity(rate, ramp_s, max_time.as_secs_f64());
    let n = ((expected * 1.5) as usize).clamp(16, 50_000_000);
    let unit = match arrivals {
        Arrivals::Constant | Arrivals::Trace => traffic::unit_constant(n),
        Arrivals::Poisson => traffic::unit_poisson(seed, n),
        Arrivals::Gamma { cv } => traffic::unit_gamma(cv, seed, n),
    };
    traffic::timed(&unit, rate, ramp_s)
}

/// Sleeps until `deadline` (ns on `clock`), finishing with a short spin; returns false if the
/// phase moved to STOP meanwhile.
fn wait_until(clock: &MonotonicClock, deadline: u64, phase: &std::sync::atomic::AtomicU8) -> bool {
    use std::sync::atomic::Ordering;
    loop {
        if phase.load(Ordering::Relaxed) == STOP {
            return false;
        }
        let now = clock.now_ns();
        if now >= deadline {
            return true;
        }
        let left = deadline - now;
        if left > 300_000 {
            std::thread::sleep(Duration::from_nanos((left - 200_000).min(5_000_000)));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Measures `models` (one prepared instance per worker) under `mode`. Closed loop with one
/// worker is [`measure_with`] on the calling thread; everything else runs one thread per
/// worker, with this thread coordinating the phases and the window.
///
/// `place_worker(i)` runs first on worker thread i (pinning); threads inherit the affinity
/// of the thread that starts them, so workers must set their own.
pub fn measure_load(
    models: &mut [Box<dyn Loaded>],
    mode: &LoadMode,
    cfg: &MeasureConfig,
    hooks: &mut dyn WindowHooks,
    place_worker: &(dyn Fn(usize) + Sync),
) -> Result<(Measurement, Option<OpenLoopStats>), RuntimeError> {
    let n = mode.concurrency().max(1).min(models.len());
    if n == 1 && matches!(mode, LoadMode::ClosedLoop { .. }) {
        let clock = MonotonicClock::new();
        return measure_with(models[0].as_mut(), &clock, cfg, hooks).map(|m| (m, None));
    }
    measure_workers(models, mode, cfg, hooks, place_worker).map(|(m, o, _)| (m, o))
}

/// What one step of a workload reports beyond its start and end: streamed answers' token
/// timings.
#[derive(Debug, Clone, Default)]
pub struct StepInfo {
    /// Send to the first token.
    pub ttft_ns: u64,
    /// Gaps between consecutive tokens (chunks) after the first.
    pub token_gaps_ns: Vec<u64>,
    pub output_tokens: u64,
}

/// One unit of load a worker repeats: an inference in-process, a request over the network.
pub trait Workload: Send {
    type Error: std::fmt::Display;
    fn step(&mut self) -> Result<Option<StepInfo>, Self::Error>;
    /// A short stable label for counting failures by kind.
    fn error_kind(e: &Self::Error) -> String;
}

impl Workload for Box<dyn Loaded> {
    type Error = RuntimeError;
    fn step(&mut self) -> Result<Option<StepInfo>, RuntimeError> {
        self.run().map(|()| None)
    }
    fn error_kind(e: &RuntimeError) -> String {
        e.kind().to_string()
    }
}

/// A measured step's record, for workloads that report [`StepInfo`]: end-to-end latency
/// from the send (not the schedule) and the step's own timings.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub e2e_ns: u64,
    pub info: StepInfo,
}

/// A value alone on its cache line (128 bytes: adjacent-line prefetch pairs 64-byte lines).
#[repr(align(128))]
pub(crate) struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What the coordinator and the drivers of one scenario (worker threads, event loops)
/// share: the phase, the counters the stop rule reads, the open-loop schedule.
pub(crate) struct Shared<'a> {
    pub phase: std::sync::atomic::AtomicU8,
    pub warm_done: std::sync::atomic::AtomicU64,
    /// On a cache line of its own: every driver thread adds to it on each step, and the
    /// phase beside it is read as often.
    pub completed: Padded<std::sync::atomic::AtomicU64>,
    /// Units (workers, connections) that stopped after too many failures in a row.
    pub gave_up: std::sync::atomic::AtomicUsize,
    /// The next open-loop arrival to serve.
    pub next: std::sync::atomic::AtomicU64,
    pub window_start: std::sync::atomic::AtomicU64,
    /// Set with STOP when the run was interrupted: drivers drop what is in flight instead of
    /// waiting for it.
    pub abandon: std::sync::atomic::AtomicBool,
    /// Open loop: arrival offsets from the window start; empty for closed loop.
    pub offsets: Vec<u64>,
    /// The units that warm up: all in closed loop; one in open loop, so that the window's
    /// first arrivals do not queue behind a closed-loop burst from every connection.
    pub warm_units: usize,
    pub clock: MonotonicClock,
    /// With a CI target the coordinator needs the latencies while the window runs.
    pub latencies: Option<std::sync::Mutex<Vec<u64>>>,
    /// The warm-up's latencies, for the coordinator's steadiness test.
    pub warmup: std::sync::Mutex<Warmup>,
    pub cfg: &'a MeasureConfig,
}

impl Shared<'_> {
    /// A warm-up step's latency.
    pub fn warm_step(&self, ns: u64) {
        use std::sync::atomic::Ordering;
        self.warm_done.fetch_add(1, Ordering::Relaxed);
        self.warmup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ns);
    }

    /// A measured step answered: counted for the stop rule (and its latency for the CI).
    pub fn measured_step(&self, scheduled: u64, end: u64) {
        use std::sync::atomic::Ordering;
        self.completed.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = &self.latencies {
            l.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(end - scheduled);
        }
    }

    /// Books one finished step of a unit, the same for every driver: a warm-up latency, or
    /// the measured record into `out`; a failure counted by its kind, with `consecutive`
    /// the unit's failures in a row. False when the unit gives up (the limit reached; it is
    /// counted in `gave_up`).
    pub fn book(
        &self,
        out: &mut WorkerOut,
        consecutive: &mut u64,
        sent: &Sent,
        end: u64,
        result: Result<Option<StepInfo>, String>,
    ) -> bool {
        use std::sync::atomic::Ordering;
        match result {
            Ok(info) => {
                *consecutive = 0;
                if sent.warm {
                    self.warm_step(end - sent.start);
                } else {
                    self.measured_step(sent.scheduled, end);
                    out.records.push(Record {
                        scheduled: sent.scheduled,
                        start: sent.start,
                        end,
                        info,
                        tag: sent.tag,
                        client_late: sent.client_late,
                    });
                }
                true
            }
            Err(kind) => {
                *consecutive += 1;
                *out.failures.entry(kind).or_default() += 1;
                let gives_up = *consecutive >= self.cfg.max_consecutive_failures;
                if gives_up {
                    self.gave_up.fetch_add(1, Ordering::Relaxed);
                }
                !gives_up
            }
        }
    }

    /// What unit `unit` does next, the same for every driver: stop, wait (an open loop warms
    /// up on `warm_units` only), or send: now (warm-up, closed loop) or at the due time of
    /// the open-loop arrival it takes.
    pub fn next(&self, unit: usize) -> Next {
        use std::sync::atomic::Ordering;
        let p = self.phase.load(Ordering::Acquire);
        let open = !self.offsets.is_empty();
        if p == STOP {
            return Next::Stop;
        }
        if p == WARM && open && unit >= self.warm_units {
            return Next::Idle;
        }
        if p == MEASURE && open {
            return match self.take_arrival() {
                Some((_, due)) => Next::Send {
                    warm: false,
                    due: Some(due),
                    free_before_due: self.clock.now_ns() < due,
                },
                None => Next::Stop,
            };
        }
        Next::Send {
            warm: p == WARM,
            due: None,
            free_before_due: false,
        }
    }

    /// Open loop: takes the next arrival, its due time on the clock; None when the schedule
    /// is spent.
    pub fn take_arrival(&self) -> Option<(usize, u64)> {
        use std::sync::atomic::Ordering;
        let k = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        let off = self.offsets.get(k)?;
        Some((k, self.window_start.load(Ordering::Acquire) + off))
    }
}

/// One worker's loop: warm-up steps, then measured steps (each at its scheduled time in
/// open loop) until the coordinator says stop or the failures in a row reach the limit.
fn worker_loop<W: Workload>(model: &mut W, sh: &Shared, worker: usize) -> WorkerOut {
    let mut out = WorkerOut::default();
    let mut consecutive = 0u64;
    loop {
        let (warm, scheduled, free_before_due) = match sh.next(worker) {
            Next::Stop => break,
            Next::Idle => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Next::Send {
                warm,
                due,
                free_before_due,
            } => (warm, due, free_before_due),
        };
        if let Some(due) = scheduled {
            if !wait_until(&sh.clock, due, &sh.phase) {
                break;
            }
        }
        let span = crate::nvtx::range(if warm { c"warm-up step" } else { c"step" });
        let a = sh.clock.now_ns();
        let r = model.step().map_err(|e| W::error_kind(&e));
        let b = sh.clock.now_ns();
        drop(span);
        let sent = Sent::at(warm, scheduled, a, free_before_due);
        if !sh.book(&mut out, &mut consecutive, &sent, b, r) {
            break;
        }
    }
    out
}

/// The edges the coordinator saw: warm-up length and end, window start and end, why it
/// stopped.
struct Window {
    warm_ns: u64,
    warm_end: &'static str,
    start: u64,
    end: u64,
    reason: StopReason,
}

/// The coordinator, on the calling thread: ends the warm-up when every worker has done its
/// iterations and the warm-up time has passed, opens the window (monitors first), and ends
/// it by the stop rule.
fn coordinate(sh: &Shared, n: usize, hooks: &mut dyn WindowHooks) -> Window {
    use std::sync::atomic::Ordering;
    let cfg = sh.cfg;
    // Each tick wakes this thread on cores the workers (and a local server) use. Until a
    // phase's minimum time nothing but an interrupt or every unit giving up can end it, so
    // it sleeps up to 50 ms at a time then; past the minimum, 2 ms ticks end a phase within
    // 2 ms of its rule (the window's length is measured exactly either way).
    let tick = Duration::from_millis(2);
    let nap = |el: u64, min: Duration| {
        let left = (min.as_nanos() as u64).saturating_sub(el);
        if left > tick.as_nanos() as u64 {
            Duration::from_nanos(left).min(Duration::from_millis(50))
        } else {
            tick
        }
    };
    let t0 = sh.clock.now_ns();
    let max_ns = cfg.max_time.as_nanos() as u64;
    let warmup = || sh.warmup.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let el = sh.clock.now_ns() - t0;
        let warmed =
            sh.warm_done.load(Ordering::Relaxed) >= cfg.warmup_iters * sh.warm_units as u64;
        if warmup().over(warmed, el)
            || el >= max_ns
            || hooks.interrupted()
            || sh.gave_up.load(Ordering::Relaxed) == n
        {
            break;
        }
        std::thread::sleep(nap(el, cfg.warmup_time));
    }
    let warm_ns = sh.clock.now_ns() - t0;
    hooks.window_start();
    let ws = sh.clock.now_ns();
    sh.window_start.store(ws, Ordering::Release);
    sh.phase.store(MEASURE, Ordering::Release);
    let mut rule = StopRule::new(cfg, warm_ns);
    let reason = loop {
        std::thread::sleep(nap(sh.clock.now_ns() - ws, cfg.min_time));
        let el = sh.clock.now_ns() - ws;
        if sh.gave_up.load(Ordering::Relaxed) == n {
            break StopReason::Failures;
        }
        let done = sh.completed.load(Ordering::Relaxed);
        let ci = |t| match &sh.latencies {
            Some(l) => ci_met(&l.lock().unwrap_or_else(|p| p.into_inner()), t),
            None => false,
        };
        if let Some(r) = rule.decide(el, done, hooks.interrupted(), &ci) {
            break r;
        }
    };
    let we = sh.clock.now_ns();
    if reason == StopReason::Interrupted {
        sh.abandon.store(true, Ordering::Release);
    }
    sh.phase.store(STOP, Ordering::Release);
    hooks.window_end();
    Window {
        warm_ns,
        warm_end: warmup().end(),
        start: ws,
        end: we,
        reason,
    }
}

/// The open-loop figures: the schedule kept or not, late sends (and those the client was
/// late for), the send lag, backlog, and the service times alone (what a
/// coordinated-omission-blind tool reports).
/// `counted` are the requests in the latencies (answered in the window or in flight when it
/// closed); `sent` those answered in the window (the achieved rate).
fn open_loop_stats(
    mode: &LoadMode,
    counted: &[&Record],
    sent: u64,
    offsets: &[u64],
    window_ns: u64,
) -> Option<OpenLoopStats> {
    let (rate, arrivals, seed) = match mode {
        LoadMode::OpenLoop {
            rate,
            arrivals,
            seed,
            ..
        } => (*rate, *arrivals, *seed),
        LoadMode::Replay { .. } => (mode.rate().unwrap_or(0.0), Arrivals::Trace, 0),
        LoadMode::ClosedLoop { .. } => return None,
    };
    let lags: Vec<u64> = counted.iter().map(|r| r.start - r.scheduled).collect();
    let due = offsets.iter().filter(|&&o| o <= window_ns).count() as u64;
    Some(OpenLoopStats {
        target_rate: rate,
        achieved_rate: if window_ns > 0 {
            sent as f64 / (window_ns as f64 / 1e9)
        } else {
            0.0
        },
        arrivals,
        seed,
        late_sends: lags.iter().filter(|&&l| l > LATE_NS).count() as u64,
        late_threshold_ms: ms(LATE_NS),
        max_send_lag_ms: ms(lags.iter().copied().max().unwrap_or(0)),
        backlog_at_end: due.saturating_sub(sent),
        uncorrected: LatencyStats::from_samples(
            &counted.iter().map(|r| r.end - r.start).collect::<Vec<_>>(),
        ),
        send_lag: Some(LatencyStats::from_samples(&lags)),
        late_client: counted.iter().filter(|r| r.client_late).count() as u64,
    })
}

/// [`measure_load`] for any workload, one thread per worker, always (the calling thread
/// coordinates). Also returns the [`StepInfo`] of every measured step that had one.
pub fn measure_workers<W: Workload>(
    models: &mut [W],
    mode: &LoadMode,
    cfg: &MeasureConfig,
    hooks: &mut dyn WindowHooks,
    place_worker: &(dyn Fn(usize) + Sync),
) -> Result<(Measurement, Option<OpenLoopStats>, Vec<StepRecord>), W::Error> {
    measure_workers_driven(models, mode, cfg, hooks, place_worker)
        .map(|d| (d.measurement, d.open, d.steps))
}

/// [`measure_workers`], with everything a driven measurement returns.
pub(crate) fn measure_workers_driven<W: Workload>(
    models: &mut [W],
    mode: &LoadMode,
    cfg: &MeasureConfig,
    hooks: &mut dyn WindowHooks,
    place_worker: &(dyn Fn(usize) + Sync),
) -> Result<Driven, W::Error> {
    let n = mode.concurrency().max(1).min(models.len());
    // First inference of each instance, outside any window; the first one is reported.
    let t = Instant::now();
    models[0].step()?;
    let first_ns = t.elapsed().as_nanos() as u64;
    for m in models.iter_mut().take(n).skip(1) {
        m.step()?;
    }
    let offsets = schedule_of(mode, cfg);
    let drive: Drive = Box::new(move |sh: &Shared| {
        std::thread::scope(|s| {
            let handles: Vec<_> = models
                .iter_mut()
                .take(n)
                .enumerate()
                .map(|(worker, model)| {
                    s.spawn(move || {
                        place_worker(worker);
                        worker_loop(model, sh, worker)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("measurement worker"))
                .collect()
        })
    });
    Ok(measure_driven(
        n, mode, offsets, cfg, hooks, first_ns, drive,
    ))
}

/// The open-loop arrival offsets of `mode` for up to `cfg.max_time`; empty for closed loop.
pub(crate) fn schedule_of(mode: &LoadMode, cfg: &MeasureConfig) -> Vec<u64> {
    match mode {
        LoadMode::OpenLoop {
            rate,
            arrivals,
            seed,
            ramp_s,
            ..
        } => schedule(*rate, *arrivals, *seed, cfg.max_time, *ramp_s),
        // A replay's offsets are its trace's (the caller has them).
        LoadMode::ClosedLoop { .. } | LoadMode::Replay { .. } => Vec::new(),
    }
}

/// Runs the units of one scenario until the coordinator stops them (worker threads, event
/// loops), returning every unit's records.
pub(crate) type Drive<'a> = Box<dyn FnOnce(&Shared) -> Vec<WorkerOut> + Send + 'a>;

/// What a driven scenario measured.
pub(crate) struct Driven {
    pub measurement: Measurement,
    pub open: Option<OpenLoopStats>,
    pub steps: Vec<StepRecord>,
    /// Counted requests (answered in the window or in flight at its end) per tag.
    pub tags: BTreeMap<u32, u64>,
    /// Their latencies (ns, from the scheduled time in open loop), in no order.
    pub latencies: Vec<u64>,
    /// The drivers' phases of every answered measured request, where they time them.
    pub phases: Option<PhaseSums>,
}

/// The measurement of `units` workers or connections run by `drive` on its own thread(s),
/// coordinated from this one: the same phases, window, stop rule and statistics whatever
/// drives the load. `offsets`: the open-loop schedule (empty for closed loop); `first_ns`:
/// the first step, taken by the caller outside the window.
pub(crate) fn measure_driven(
    units: usize,
    mode: &LoadMode,
    offsets: Vec<u64>,
    cfg: &MeasureConfig,
    hooks: &mut dyn WindowHooks,
    first_ns: u64,
    drive: Drive,
) -> Driven {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

    let n = units.max(1);
    let sh = Shared {
        phase: AtomicU8::new(WARM),
        warm_done: AtomicU64::new(0),
        completed: Padded(AtomicU64::new(0)),
        gave_up: AtomicUsize::new(0),
        next: AtomicU64::new(0),
        window_start: AtomicU64::new(0),
        abandon: AtomicBool::new(false),
        warm_units: if offsets.is_empty() { n } else { 1 },
        offsets,
        clock: MonotonicClock::new(),
        latencies: cfg.target_ci.map(|_| std::sync::Mutex::new(Vec::new())),
        warmup: std::sync::Mutex::new(Warmup::new(cfg)),
        cfg,
    };

    let (outs, w) = std::thread::scope(|s| {
        let sh = &sh;
        let handle = s.spawn(move || drive(sh));
        let w = coordinate(sh, n, hooks);
        let outs: Vec<WorkerOut> = handle.join().expect("load driver");
        (outs, w)
    });

    // Steps that ended inside the window make the throughput; those still running when it
    // closed count too, with their latency to the answer (dropping them would hide a stall);
    // steps begun after it closed do not count.
    let mut failure_kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut records: Vec<Record> = Vec::new();
    let mut tail: Vec<Record> = Vec::new();
    let mut phases: Option<PhaseSums> = None;
    for o in outs {
        if let Some(p) = &o.phases {
            phases.get_or_insert_with(PhaseSums::default).merge(p);
        }
        for (k, v) in o.failures {
            *failure_kinds.entry(k).or_default() += v;
        }
        for r in o.records {
            if r.end <= w.end {
                records.push(r);
            } else if r.start < w.end {
                tail.push(r);
            }
        }
    }
    let window_ns = w.end - w.start;
    let counted: Vec<&Record> = records.iter().chain(&tail).collect();
    let mut tags: BTreeMap<u32, u64> = BTreeMap::new();
    for r in &counted {
        *tags.entry(r.tag).or_default() += 1;
    }
    let corrected: Vec<u64> = counted.iter().map(|r| r.end - r.scheduled).collect();
    let measurement = Measurement {
        device: None,
        warmup_end: Some(w.warm_end.into()),
        stable: cfg.target_ci.map(|_| w.reason == StopReason::TargetCi),
        first_inference_ms: ms(first_ns),
        warmup_iterations: sh.warm_done.load(Ordering::Relaxed),
        warmup_ms: ms(w.warm_ns),
        latency: LatencyStats::from_samples(&corrected),
        window_s: window_ns as f64 / 1e9,
        iterations: records.len() as u64,
        failures: failure_kinds.values().sum(),
        in_flight_at_end: tail.len() as u64,
        failure_kinds,
        stop_reason: w.reason,
        share_s: cfg.share.map(|d| d.as_secs_f64()),
    };
    let open = open_loop_stats(mode, &counted, records.len() as u64, &sh.offsets, window_ns);
    // Streaming figures are per second of the window: the steps answered inside it.
    let steps = records
        .into_iter()
        .filter_map(|r| {
            r.info.map(|info| StepRecord {
                e2e_ns: r.end - r.start,
                info,
            })
        })
        .collect();
    Driven {
        measurement,
        open,
        steps,
        tags,
        latencies: corrected,
        phases,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_seeded_and_keep_the_rate() {
        let a = schedule(100.0, Arrivals::Poisson, 3, Duration::from_secs(100), None);
        let b = schedule(100.0, Arrivals::Poisson, 3, Duration::from_secs(100), None);
        let c = schedule(100.0, Arrivals::Poisson, 4, Duration::from_secs(100), None);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        // 15,000 arrivals at 100/s: the mean gap is 10 ms within 2%.
        let mean_gap = a[a.len() - 1] as f64 / (a.len() - 1) as f64;
        assert!((mean_gap - 1e7).abs() < 2e5, "{mean_gap}");
        // Exponential gaps: about 1/e of them exceed the mean.
        let over = a.windows(2).filter(|w| (w[1] - w[0]) as f64 > 1e7).count() as f64;
        assert!((over / (a.len() - 1) as f64 - (-1f64).exp()).abs() < 0.02);
        let k = schedule(100.0, Arrivals::Constant, 0, Duration::from_secs(1), None);
        assert_eq!(&k[..3], &[0, 10_000_000, 20_000_000]);
    }
}
