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
    /// Run one group of scenarios for `compare` (reads its spec on stdin)
    #[command(hide = true)]
    Worker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
    Tensorrt,
}

impl DeviceArg {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeviceArg::Cpu => "cpu",
            DeviceArg::Cuda => "cuda",
            DeviceArg::Tensorrt => "tensorrt",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArrivalsArg {
    /// Exponential gaps, seeded by --seed
    Poisson,
    /// Equal gaps
    Constant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IsolateMode {
    /// Each runtime and thread count in a worker process: an abort loses only its rows
    Process,
    /// Everything in this process
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeName {
    Ort,
    Tract,
    Candle,
    Null,
}

impl RuntimeName {
    pub fn as_str(&self) -> &'static str {
        match self {
            RuntimeName::Ort => "ort",
            RuntimeName::Tract => "tract",
            RuntimeName::Candle => "candle",
            RuntimeName::Null => "null",
        }
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 3s, 2m)"))
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

fn rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        Ok(_) => Err("a rate must be a positive number of requests per second".into()),
        Err(e) => Err(format!("{e}")),
    }
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
    /// Runtimes to measure, comma-separated
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ort,tract,candle"
    )]
    pub runtimes: Vec<RuntimeName>,
    /// Batch sizes (the symbolic batch dim), comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = positive)]
    pub batch: Vec<usize>,
    /// Sequence lengths (the symbolic sequence dim), comma-separated
    #[arg(long, value_delimiter = ',', default_value = "128", value_parser = positive)]
    pub seq: Vec<usize>,
    /// Exact shape of one input, NAME=D0xD1... (repeatable); overrides --batch/--seq for it
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    pub shapes: Vec<String>,
    /// Devices, comma-separated: cpu; cuda and tensorrt need a build with GPU support
    #[arg(
        long = "device",
        value_enum,
        value_delimiter = ',',
        default_value = "cpu"
    )]
    pub devices: Vec<DeviceArg>,
    /// Precision variants, comma-separated: fp32, fp16, bf16 (candle), int8 (ONNX)
    #[arg(long = "variant", value_delimiter = ',', default_value = "fp32", value_parser = variant)]
    pub variants: Vec<runtimes::Variant>,
    /// Cosine against fp32 a lower-precision variant must keep [default: fp16 0.999, bf16 0.99, int8 0.95]
    #[arg(long)]
    pub min_cosine: Option<f64>,
    /// Compute threads per runtime, comma-separated [default: all logical CPUs]
    #[arg(long, value_delimiter = ',', value_parser = positive)]
    pub threads: Vec<usize>,
    /// Closed loop: concurrent workers (one model instance each), comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = positive)]
    pub concurrency: Vec<usize>,
    /// Open loop instead: target arrival rates in requests/s, comma-separated (served by
    /// --concurrency workers; latency counted from each request's scheduled time)
    #[arg(long, value_delimiter = ',', value_parser = rate)]
    pub rate: Vec<f64>,
    /// Open loop: arrival process
    #[arg(long, value_enum, default_value = "poisson")]
    pub arrivals: ArrivalsArg,
    /// Warm-up iterations (warm-up lasts until both these and --warmup-time are done)
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub warmup_time: Duration,
    /// A scenario runs at least this long...
    #[arg(long, default_value = "3s", value_parser = duration)]
    pub min_time: Duration,
    /// ...and collects at least this many samples...
    #[arg(long, default_value_t = 30)]
    pub min_samples: u64,
    /// ...unless this much time has passed
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub max_time: Duration,
    /// Stop a scenario once the 95% confidence interval of its median is within +-P percent
    /// (after --min-time and the 500 samples p99 needs); else run to --max-time, marked unstable
    #[arg(long, value_name = "P", value_parser = percent)]
    pub target_ci: Option<f64>,
    /// Seed for the generated inputs
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Parity: absolute tolerance
    #[arg(long, default_value_t = 1e-4)]
    pub atol: f64,
    /// Parity: relative tolerance
    #[arg(long, default_value_t = 1e-4)]
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
    /// Print results.json on stdout, and nothing else there
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
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}
