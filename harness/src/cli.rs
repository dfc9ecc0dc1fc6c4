//! Command-line arguments, turned into typed options before any work starts.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "harness",
    version,
    about = "Load one model into several inference runtimes, check they agree, measure them fairly"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure a model in every selected runtime and compare them
    Compare(Box<CompareArgs>),
    /// Show every runtime and whether it can run here
    List(ListArgs),
    /// Compare two results folders scenario by scenario, with a noise-aware verdict
    Diff(DiffArgs),
    /// Rebuild the reports of one results folder, or merge several into one
    Report(ReportArgs),
    /// Attach a CPU profile of each measured window to a results folder (after
    /// profiles/perf.sh): flame graphs, time per group of frames, top frames
    Profile(ProfileArgs),
    /// Serve a model over KServe v2 (HTTP and gRPC) and OpenAI /v1/embeddings
    Serve(Box<ServeArgs>),
    /// Measure a server (ours, Triton, vLLM) under closed- or open-loop load
    Load(Box<LoadArgs>),
    /// Time each runtime as the harness measures it beside the loop a user writes from the
    /// runtime's own documentation, alternating in one process: the ratio and its interval
    Selfcheck(SelfcheckArgs),
    /// Run one group of scenarios for `compare` (reads its spec on stdin)
    #[command(hide = true)]
    Worker,
}

/// `--arrivals`: poisson, constant, or gamma:CV.
fn arrivals(s: &str) -> Result<crate::results::Arrivals, String> {
    use crate::results::Arrivals;
    match s.trim() {
        "poisson" => Ok(Arrivals::Poisson),
        "constant" => Ok(Arrivals::Constant),
        g if g.to_ascii_lowercase().starts_with("gamma") => {
            crate::traffic::parse_gamma(g).map(|cv| Arrivals::Gamma { cv })
        }
        other => Err(format!(
            "'{other}': poisson, constant, or gamma:CV (e.g. gamma:2 for bursts, gamma:0.5 for smoother than Poisson)"
        )),
    }
}

/// `--ramp`: a duration above zero, in seconds.
fn ramp(s: &str) -> Result<f64, String> {
    crate::traffic::parse_ramp(s)
}

/// `--trace-speed`: a positive time scale.
fn speed(s: &str) -> Result<f64, String> {
    crate::traffic::parse_speed(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IsolateMode {
    /// Each runtime and thread count in a worker process: an abort loses only its rows
    Process,
    /// Everything in this process
    None,
}

/// The runtime names and their help, from the runtimes' registry.
fn runtime_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        runtimes::all()
            .iter()
            .map(|r| clap::builder::PossibleValue::new(r.name()).help(r.about()))
            .collect::<Vec<_>>(),
    )
}

/// The load protocols and their help, from the load generator's registry.
fn protocol_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        crate::net::load::PROTOCOLS
            .iter()
            .map(|p| clap::builder::PossibleValue::new(p.name()).help(p.about()))
            .collect::<Vec<_>>(),
    )
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 3s, 2m)"))
}

fn device(s: &str) -> Result<runtimes::Device, String> {
    runtimes::Device::parse(s)
        .ok_or_else(|| format!("unknown device '{s}' (cpu, cuda, cuda:N, tensorrt, tensorrt:N)"))
}

fn variant(s: &str) -> Result<runtimes::Variant, String> {
    runtimes::Variant::parse(s.trim())
        .ok_or_else(|| format!("unknown variant '{s}' (fp32, fp16, bf16, int8)"))
}

fn percent(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(p) if p > 0.0 && p < 100.0 => Ok(p / 100.0),
        Ok(_) => Err("a percentage between 0 and 100".into()),
        Err(e) => Err(format!("{e}")),
    }
}

/// The highest open-loop rate: far above what one client machine sends (about 100,000
/// requests/s here), low enough that the arrival schedule stays small.
const MAX_RATE: f64 = 1e6;

fn rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r > 0.0 && r <= MAX_RATE => Ok(r),
        Ok(_) => Err(format!(
            "a rate must be a positive number of requests per second, at most {MAX_RATE:e}"
        )),
        Err(e) => Err(format!("{e}")),
    }
}

/// A duration above zero (`--max-time`, `--timeout`).
fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be longer than 0s (examples: 500ms, 3s, 2m)".into()),
        d => Ok(d),
    }
}

/// A tolerance: a finite number, 0 or more.
fn tolerance(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        Ok(_) => Err("a tolerance must be a finite number, 0 or more".into()),
        Err(e) => Err(format!("{e}")),
    }
}

/// A cosine similarity a variant must keep: above 0, at most 1.
fn cosine(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(c) if c > 0.0 && c <= 1.0 => Ok(c),
        Ok(_) => Err("a cosine similarity to keep is above 0 and at most 1".into()),
        Err(e) => Err(format!("{e}")),
    }
}

/// Compute threads: at least 1, at most four per logical CPU (more only oversubscribes).
fn threads(s: &str) -> Result<usize, String> {
    let n = positive(s)?;
    let cpus = runtimes::online_cpus();
    if n > 4 * cpus {
        return Err(format!(
            "{n} threads on {cpus} logical CPUs: at most {} (four per CPU) are accepted",
            4 * cpus
        ));
    }
    Ok(n)
}

fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}")),
    }
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Model folder (model.onnx; model.safetensors + config.json for candle) or a .onnx file
    #[arg(long)]
    pub model: PathBuf,
    /// Runtimes to measure, comma-separated [default: every registered runtime that computes
    /// outputs, the null runtime aside]
    #[arg(long, value_delimiter = ',', value_parser = runtime_names())]
    pub runtimes: Vec<String>,
    /// Batch sizes (the symbolic batch dim), comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = positive)]
    pub batch: Vec<usize>,
    /// Sequence lengths (the symbolic sequence dim), comma-separated [default: 128, or the
    /// model's own limit (max_position_embeddings) when it is smaller]
    #[arg(long, value_delimiter = ',', value_parser = positive)]
    pub seq: Vec<usize>,
    /// Exact shape of one input, NAME=D0xD1... (repeatable); overrides --batch/--seq for it
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    pub shapes: Vec<String>,
    /// Devices, comma-separated: cpu, cuda[:N], tensorrt[:N] (ONNX Runtime's TensorRT
    /// execution provider). A runtime that cannot use a GPU here gets skipped rows saying why
    #[arg(long = "device", value_delimiter = ',', default_value = "cpu", value_parser = device)]
    pub devices: Vec<runtimes::Device>,
    /// GPU: include host<->device copies of inputs and outputs in every timed inference
    /// (end to end); by default ONNX Runtime binds inputs on the device and leaves outputs
    /// there (IO binding), so the timed region holds inference only
    #[arg(long)]
    pub gpu_copies: bool,
    /// TensorRT: build fp16 engines
    #[arg(long)]
    pub trt_fp16: bool,
    /// TensorRT: engine and timing cache folder [default: OUT/trt-cache]
    #[arg(long)]
    pub trt_cache: Option<PathBuf>,
    /// TensorRT: builder workspace, e.g. 4GiB
    #[arg(long, value_parser = bytes)]
    pub trt_workspace: Option<usize>,
    /// Precision variants, comma-separated: fp32, fp16, bf16 (candle), int8 (ONNX)
    #[arg(long = "variant", value_delimiter = ',', default_value = "fp32", value_parser = variant)]
    pub variants: Vec<runtimes::Variant>,
    /// Cosine against fp32 a lower-precision variant must keep [default: fp16 0.999, bf16 0.99, int8 0.95]
    #[arg(long, value_parser = cosine)]
    pub min_cosine: Option<f64>,
    /// Compute threads per runtime, comma-separated, at most four per logical CPU [default:
    /// all logical CPUs]
    #[arg(long, value_delimiter = ',', value_parser = threads)]
    pub threads: Vec<usize>,
    #[command(flatten)]
    pub traffic: TrafficArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
    /// Seed for the generated inputs
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Parity: absolute tolerance
    #[arg(long, default_value_t = 1e-4, value_parser = tolerance)]
    pub atol: f64,
    /// Parity: relative tolerance
    #[arg(long, default_value_t = 1e-4, value_parser = tolerance)]
    pub rtol: f64,
    /// ONNX Runtime shared library (else ORT_DYLIB_PATH, the onnxruntime Python package, system folders)
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Results folder [default: results/<UTC timestamp>]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Pinning: measuring (the measuring thread on CPU 0), none, compact (every thread of
    /// the runtime too, CPUs 0, 1, ...), or a CPU list like 0,2-3
    #[arg(long, default_value = "measuring")]
    pub pin: String,
    /// Skip measuring the harness's own overhead
    #[arg(long)]
    pub no_overhead: bool,
    /// Write ONNX Runtime's own profile (Chrome-trace JSON, for chrome://tracing or
    /// Perfetto) of each ort run into OUT/ort-profile/; the profiler's cost is in the figures
    #[arg(long)]
    pub ort_profile: bool,
    /// Where each runtime runs
    #[arg(long, value_enum, default_value = "process")]
    pub isolate: IsolateMode,
    /// How long a runtime may spend loading, preparing a shape (with its first inference)
    /// or finishing, and how much longer than --warmup-time plus --max-time measuring: past
    /// it the runtime's worker is stopped and its row says so (with --isolate none the run
    /// ends there, rows kept: a thread cannot be stopped)
    #[arg(long, default_value = "10m", value_parser = positive_duration)]
    pub phase_timeout: Duration,
    /// Print results.json on stdout, and nothing else there
    #[arg(long)]
    pub json: bool,
    /// Also measure each runtime behind `harness serve` on loopback (KServe v2 HTTP, binary
    /// tensors, same inputs and load), compare its answers, and show the serving tax
    #[arg(long)]
    pub served: bool,
    /// After each closed-loop row (and its served twin with --served), find the highest
    /// open-loop rate over the same workers that meets every --slo objective: probes long
    /// enough for their percentile, bisected to 5%, the edge repeated. With --served the
    /// serving tax is also stated as capacity lost
    #[arg(long, conflicts_with = "rate")]
    pub find_max_rate: bool,
    /// Objectives for --find-max-rate: latency percentiles and an error rate, e.g.
    /// p99:20ms,p50:5ms,errors:1%
    #[arg(long, requires = "find_max_rate")]
    pub slo: Option<String>,
    /// Run part K of N of the sweep (K from 0): each (shape, load) with every runtime at
    /// it, balanced by expected cost, the same split on every machine given the same flags.
    /// Merge the shards' folders with `harness report`
    #[arg(long, value_name = "K/N")]
    pub shard: Option<crate::shard::Shard>,
    /// Continue the run in this results folder (after Ctrl-C, a crash, a lost shard): with
    /// the same flags, only its scenarios that are missing, failed or were interrupted run;
    /// the rest is kept untouched. The folder is the output
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SelfcheckArgs {
    /// Model folder (model.onnx; model.safetensors + config.json for candle-native)
    #[arg(long)]
    pub model: PathBuf,
    /// Runtimes to check, comma-separated [default: those with a documented loop: ort,
    /// tract, candle-native]
    #[arg(long, value_delimiter = ',', value_parser = runtime_names())]
    pub runtimes: Vec<String>,
    #[arg(long, default_value = "1", value_parser = positive)]
    pub batch: usize,
    /// Sequence length [default: 128, or the model's own limit when it is smaller]
    #[arg(long, value_parser = positive)]
    pub seq: Option<usize>,
    /// Compute threads (one count: candle's documented control, RAYON_NUM_THREADS, is
    /// process-wide) [default: all logical CPUs]
    #[arg(long, value_parser = threads)]
    pub threads: Option<usize>,
    /// Alternations: each runs a block of the harness's loop and a block of the user's
    /// (their order swapped every round)
    #[arg(long, default_value = "12", value_parser = positive)]
    pub rounds: usize,
    /// Length of one block
    #[arg(long, default_value = "400ms", value_parser = positive_duration)]
    pub block: Duration,
    /// Warm-up of each loop before the first round
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub warmup_time: Duration,
    /// How far from 1 a ratio may be and still agree, in percent
    #[arg(long, default_value = "3", value_parser = percent)]
    pub agree_within: f64,
    /// Time the harness's wrapper against a second instance of itself instead of the user's
    /// loop: the check's own noise floor
    #[arg(long)]
    pub control: bool,
    /// Seed for the generated inputs and the bootstrap
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// ONNX Runtime shared library (else ORT_DYLIB_PATH, the onnxruntime Python package, system folders)
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Where to write selfcheck.json [default: results/selfcheck-<UTC timestamp>]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print selfcheck.json on stdout, and nothing else there
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Results folders (or results.json files); scenarios in several are merged exactly
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where to write results.json, results.csv, summary.md and report.html
    #[arg(long)]
    pub out: PathBuf,
    /// Merge a scenario measured on different machines into one population (by default
    /// that is refused: runs from different machines are kept apart, each row labelled
    /// with its machine)
    #[arg(long)]
    pub pool_machines: bool,
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// The results folder of the profiled run
    pub dir: PathBuf,
    /// `perf script -F comm,pid,tid,time,period,ip,sym,dso` output of a `perf record -k
    /// CLOCK_MONOTONIC` of that run [default: DIR/profile/perf.script]
    #[arg(long)]
    pub script: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The baseline results folder (or its results.json)
    pub base: PathBuf,
    /// The results folder to judge against it
    pub new: PathBuf,
    /// Exit with status 1 when a scenario's median is slower by more than this many percent
    /// (and the verdict is "slower"): a CI gate
    #[arg(long, value_name = "PCT", value_parser = percent)]
    pub fail_above: Option<f64>,
    /// Changes of the median smaller than this many percent are "same" even when significant
    /// within each run: separate runs of the same build differ by a few percent (1.5-1.8%
    /// between two identical MiniLM runs on a shared 2-vCPU VM)
    #[arg(long, value_name = "PCT", default_value = "3", value_parser = percent)]
    pub min_change: f64,
    /// The same for the p90 and p99 verdicts: separate runs of one build moved the tail by up
    /// to 7.7% (tiny BERT, 39,000 samples a run, same 2-vCPU VM), where each run's own
    /// interval is under 4% wide
    #[arg(long, value_name = "PCT", default_value = "10", value_parser = percent)]
    pub tail_min_change: f64,
    /// Pair scenarios ignoring these settings (runtime, variant, batch, threads,
    /// concurrency): `--ignore threads` compares a 1-thread run with a 2-thread run
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(["runtime", "variant", "batch", "threads", "concurrency"]))]
    pub ignore: Vec<String>,
    /// Print a Markdown table (for a pull request)
    #[arg(long, conflicts_with = "json")]
    pub markdown: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// ONNX Runtime shared library to check
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Devices to check each runtime on
    #[arg(long = "device", value_delimiter = ',', default_value = "cpu,cuda,tensorrt", value_parser = device)]
    pub devices: Vec<runtimes::Device>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// How requests arrive: closed loop at each concurrency, or open loop at each rate.
#[derive(Debug, Clone, Args)]
pub struct TrafficArgs {
    /// Closed loop: concurrent workers (in-process: one model instance each; load: one connection each), comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = positive)]
    pub concurrency: Vec<usize>,
    /// Open loop instead: target arrival rates in requests/s, comma-separated (served by
    /// --concurrency workers; latency counted from each request's scheduled time)
    #[arg(long, value_delimiter = ',', value_parser = rate)]
    pub rate: Vec<f64>,
    /// Open loop: arrival process: poisson (exponential gaps, seeded by --seed), constant
    /// (equal gaps), or gamma:CV (gamma gaps with that coefficient of variation: above 1
    /// bursts, below 1 smoother than Poisson)
    #[arg(long, default_value = "poisson", value_parser = arrivals)]
    pub arrivals: crate::results::Arrivals,
    /// Open loop: the rate rises linearly from 0 over this long, then holds (e.g. 30s)
    #[arg(long, value_parser = ramp)]
    pub ramp: Option<f64>,
}

/// When warm-up and measurement end (the same rules in-process and over the network).
#[derive(Debug, Clone, Args)]
pub struct TimingArgs {
    /// Warm-up iterations (warm-up lasts until both these and --warmup-time are done)
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub warmup_time: Duration,
    /// Past those, the warm-up goes on while the latency still moves (the medians of the
    /// last samples' two halves differ by 3% or more), up to this; at most --warmup-time:
    /// no detection
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub warmup_max: Duration,
    /// A scenario runs at least this long...
    #[arg(long, default_value = "3s", value_parser = duration)]
    pub min_time: Duration,
    /// ...and collects at least this many samples...
    #[arg(long, default_value_t = 30)]
    pub min_samples: u64,
    /// ...unless this much time has passed
    #[arg(long, default_value = "60s", value_parser = positive_duration)]
    pub max_time: Duration,
    /// Past the minima, a scenario goes on until the 95% confidence interval of its median
    /// is within +-P percent (else to its share of --budget or --max-time, marked unstable);
    /// `off`: stop as soon as the minima hold
    #[arg(long, value_name = "P|off", default_value = "2", value_parser = target_ci)]
    pub target_ci: TargetCi,
    /// Total time for the run, loading and warm-ups included: each scenario may take an
    /// equal share of what is left when it starts (what a stable scenario does not need goes
    /// to the ones after it; the minima still hold). auto: 15 s per planned scenario; off:
    /// only --max-time bounds a scenario
    #[arg(long, value_name = "TIME|auto|off", default_value = "auto", value_parser = budget)]
    pub budget: BudgetArg,
    /// Idle CPUs while measuring: shallow holds the kernel's CPU latency QoS at 0 us for the
    /// run (idle CPUs poll, so a woken thread, such as a served request's server and client,
    /// does not first wait for its CPU to leave a deep idle state; needs root, else the run
    /// goes on under the machine's policy and says so), os leaves the machine's policy
    #[arg(long, value_enum, default_value = "shallow")]
    pub cpu_idle: crate::cpu_idle::CpuIdle,
}

/// `--budget`: a total, 15 s per scenario, or none.
#[derive(Debug, Clone, Copy)]
pub enum BudgetArg {
    Auto,
    Off,
    Total(Duration),
}

fn budget(s: &str) -> Result<BudgetArg, String> {
    match s.trim() {
        "auto" => Ok(BudgetArg::Auto),
        "off" | "none" => Ok(BudgetArg::Off),
        t => positive_duration(t)
            .map(BudgetArg::Total)
            .map_err(|e| format!("{e} (or auto, or off)")),
    }
}

/// `--target-ci`: a percentage, or off.
#[derive(Debug, Clone, Copy)]
pub struct TargetCi(pub Option<f64>);

fn target_ci(s: &str) -> Result<TargetCi, String> {
    match s.trim() {
        "off" | "none" => Ok(TargetCi(None)),
        p => percent(p)
            .map(|f| TargetCi(Some(f)))
            .map_err(|e| format!("{e} (or off)")),
    }
}

impl TimingArgs {
    pub fn config(&self) -> crate::measure::MeasureConfig {
        crate::measure::MeasureConfig {
            warmup_iters: self.warmup,
            warmup_time: self.warmup_time,
            min_time: self.min_time,
            min_samples: self.min_samples,
            max_time: self.max_time.max(self.min_time),
            target_ci: self.target_ci.0,
            budget: match self.budget {
                BudgetArg::Total(d) => Some(d),
                BudgetArg::Auto | BudgetArg::Off => None,
            },
            budget_per_scenario: match self.budget {
                BudgetArg::Auto => Some(crate::measure::DEFAULT_BUDGET_PER_SCENARIO),
                BudgetArg::Total(_) | BudgetArg::Off => None,
            },
            share: None,
            warmup_max: self.warmup_max,
            ..Default::default()
        }
    }
}

fn bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (
            &t[..i],
            match t[i..].trim().to_ascii_lowercase().as_str() {
                "b" => 1,
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                u => return Err(format!("unknown unit '{u}' (examples: 512KiB, 16MiB)")),
            },
        ),
        None => (t, 1),
    };
    let n: usize = num.parse().map_err(|e| format!("{e}"))?;
    n.checked_mul(mult)
        .filter(|&b| b > 0)
        .ok_or_else(|| "must be a positive size".into())
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Model folder (as for compare): model.onnx, or model.safetensors + config.json for
    /// candle; tokenizer.json and the sentence-transformers files enable /v1/embeddings
    #[arg(long)]
    pub model: PathBuf,
    /// Runtime that runs the model
    #[arg(long, default_value = "ort", value_parser = runtime_names())]
    pub runtime: String,
    /// Model name in URLs and answers [default: the model folder's name]
    #[arg(long)]
    pub name: Option<String>,
    /// Compute threads per model instance [default: all logical CPUs / instances]
    #[arg(long, value_parser = threads)]
    pub threads: Option<usize>,
    /// Model instances, each running one batch at a time
    #[arg(long, default_value_t = 1, value_parser = positive)]
    pub instances: usize,
    /// Precision variant: fp32, fp16, bf16 (candle), int8 (ONNX)
    #[arg(long, default_value = "fp32", value_parser = variant)]
    pub variant: runtimes::Variant,
    /// Dynamic batching: most rows in one batch (1 = off)
    #[arg(long, default_value_t = 1, value_parser = positive)]
    pub max_batch: usize,
    /// Dynamic batching: how long a batch's first request may wait for others
    #[arg(long, default_value = "0ms", value_parser = duration)]
    pub max_queue_delay: Duration,
    /// Requests that may wait; beyond that the server answers 503 at once
    #[arg(long, default_value_t = 256, value_parser = positive)]
    pub max_queue: usize,
    /// Largest request body (413 beyond it)
    #[arg(long, default_value = "16MiB", value_parser = bytes)]
    pub max_body: usize,
    /// A connection that sends no complete request head for this long is closed: idle
    /// keep-alive connections and slow (slowloris) clients alike
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub idle_timeout: Duration,
    /// A request not answered by then gets 504 (and is dropped if it has not started)
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub request_timeout: Duration,
    /// Address to bind; 127.0.0.1 keeps the server on this machine
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// HTTP port (KServe v2, OpenAI, /metrics); 0 picks a free one
    #[arg(long, default_value_t = 8000)]
    pub http_port: u16,
    /// gRPC port (KServe v2); 0 picks a free one
    #[arg(long, default_value_t = 8001)]
    pub grpc_port: u16,
    /// No gRPC listener
    #[arg(long)]
    pub no_grpc: bool,
    /// Threads for network I/O and request handling (one keeps them off the model's cores:
    /// on 2 vCPUs a second one made p90 at 1 connection 2.7x worse with 2 ONNX Runtime threads)
    #[arg(long, default_value_t = 1, value_parser = positive)]
    pub io_threads: usize,
    /// Run the one model instance on the I/O thread that read each request, with no hand-off
    /// to an instance thread and back: the lowest latency at one connection, but that I/O
    /// thread does nothing else while it computes (other connections and health checks wait;
    /// with one I/O thread, requests wait unread, so --max-queue applies from --io-threads 2;
    /// a run that has started is answered when it ends, even past --request-timeout).
    /// Needs --instances 1 and --max-batch 1
    #[arg(long)]
    pub inline: bool,
    /// Write {"http": PORT, "grpc": PORT} here once listening (for scripts using port 0)
    #[arg(long)]
    pub port_file: Option<PathBuf>,
    /// Stop by itself after this long (as after SIGTERM)
    #[arg(long, value_parser = duration)]
    pub shutdown_after: Option<Duration>,
    /// ONNX Runtime shared library
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// ONNX Runtime's intra-op threads spin for work after each run (`on`, its own default)
    /// or sleep (`off`): spinning holds cores the server's I/O thread and its clients need
    #[arg(long, value_enum, default_value = "on")]
    pub ort_spinning: Switch,
}

/// A setting turned on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Server URL: http://127.0.0.1:8000 (HTTP protocols; for http-get the exact URL to GET),
    /// 127.0.0.1:8001 (gRPC)
    #[arg(long)]
    pub target: String,
    #[arg(long, default_value = "kserve-http", value_parser = protocol_names())]
    pub protocol: String,
    /// Model name on the server (not needed for http-get)
    #[arg(long)]
    pub model: Option<String>,
    /// Rows per request (KServe), sentences per request (embeddings)
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = positive)]
    pub batch: Vec<usize>,
    /// Sequence length (KServe: the symbolic sequence dim; embeddings and completions:
    /// words per sentence, each one token in BERT-style vocabularies) [default: 128, or the
    /// model's own limit when the server declares a smaller one]
    #[arg(long, value_delimiter = ',', value_parser = positive)]
    pub seq: Vec<usize>,
    #[command(flatten)]
    pub traffic: TrafficArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
    /// Seed for inputs, sentences and arrivals
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// KServe: token ids are drawn from 0..N [default: the vocabulary in the server's model
    /// metadata (ours gives it), else 1000]
    #[arg(long, value_parser = positive)]
    pub vocab: Option<usize>,
    /// KServe over HTTP: tensor encoding (binary = the binary tensor data extension, as
    /// Triton's perf_analyzer sends)
    #[arg(long, value_parser = ["binary", "json"], default_value = "binary")]
    pub encoding: String,
    /// Prometheus endpoint to scrape at the window's edges (ours: TARGET/metrics; Triton:
    /// http://127.0.0.1:8002/metrics; vLLM: TARGET/metrics)
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// Name for these rows' runtime column [default: the protocol]
    #[arg(long)]
    pub label: Option<String>,
    /// Server compute threads, when known (recorded in the threads column)
    #[arg(long, default_value_t = 0)]
    pub server_threads: usize,
    /// The server's process id, when it runs on this machine: its process tree's CPU and
    /// peak memory over each window go into the row (resources.server)
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Per-request timeout, for sending and the whole answer (counted as a "timeout" error)
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// Replay recorded traffic instead of --rate: a CSV (header row; a time column offset_s,
    /// offset_ms or timestamp; optional batch and seq (or tokens, words) per request) or
    /// JSONL file with the same keys. Each request is sent at its recorded time with its own
    /// shape, over --concurrency connections; latency counts from the recorded time
    #[arg(long, conflicts_with_all = ["rate", "find_max_rate"])]
    pub trace: Option<PathBuf>,
    /// Replay: time scale (2 replays twice as fast, 0.5 at half speed)
    #[arg(long, default_value = "1", value_parser = speed, requires = "trace")]
    pub trace_speed: f64,
    /// Find the highest open-loop rate that meets every --slo objective (latency percentiles
    /// such as p99:20ms, an error rate such as errors:1%) at each --concurrency: probes long
    /// enough for their percentile, bisected to 5%, the edge repeated
    #[arg(long, conflicts_with = "rate")]
    pub find_max_rate: bool,
    /// How the load is driven: `events` (a few threads, each an event loop over many
    /// keep-alive connections, like wrk; HTTP/1.1 protocols without streaming) or `threads`
    /// (one blocking thread per connection; every protocol). Protocols the event engine
    /// does not speak use threads
    #[arg(long, value_enum, default_value = "events")]
    pub engine: crate::net::load::Engine,
    /// Event engine: client threads [default: one per CPU, or one per two CPUs when the
    /// target is on this machine (the server needs the others); at most one per connection]
    #[arg(long, value_parser = positive)]
    pub client_threads: Option<usize>,
    /// Event engine: busy-poll this long before sleeping (catches answers without a context
    /// switch, at the cost of CPU; longer for a client on cores the server does not use; 0s:
    /// never)
    #[arg(long, default_value = "10us", value_parser = duration)]
    pub client_spin: Duration,
    /// Event engine, gRPC: requests in flight that share one HTTP/2 connection (16
    /// connections at --concurrency 64 --streams 4)
    #[arg(long, default_value_t = 1, value_parser = positive)]
    pub streams: usize,
    /// Completions: tokens to generate per request
    #[arg(long, default_value_t = 64, value_parser = positive)]
    pub max_tokens: usize,
    /// Objectives: for --find-max-rate, latency percentiles and an error rate
    /// (p99:20ms,p50:5ms,errors:1%); for completions' goodput, ttft:200ms,tpot:50ms,e2e:2s
    #[arg(long)]
    pub slo: Option<String>,
    /// Results folder [default: results/<UTC timestamp>]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print results.json on stdout, and nothing else there
    #[arg(long)]
    pub json: bool,
}
