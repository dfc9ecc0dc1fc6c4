//! The environment recorded with every result: machine, OS, compiler, source revision,
//! runtime versions and the exact command line.

use crate::results::{Environment, RuntimeVersion};

const INTERESTING_FLAGS: &[&str] = &[
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "neon",
    "asimd",
];

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The machine's memory (MemTotal in /proc/meminfo), when it can be read.
pub fn memory_total_bytes() -> Option<u64> {
    read("/proc/meminfo").and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    })
}

/// The environment of this process, now.
pub fn capture(runtime_versions: Vec<RuntimeVersion>) -> Environment {
    let nvml = crate::monitor::gpu_inventory();
    let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let flags: Vec<String> = field("flags")
        .or_else(|| field("Features"))
        .map(|f| {
            f.split_whitespace()
                .filter(|x| INTERESTING_FLAGS.contains(x))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let memory_total_bytes = memory_total_bytes();
    let os = read("/etc/os-release")
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    Environment {
        hostname: read("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into()),
        cpu_model: field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        logical_cpus: runtimes::online_cpus(),
        cpu_flags: flags,
        memory_total_bytes,
        os,
        kernel: read("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
        cpu_governor: read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
            .unwrap_or_else(|| "unavailable (no cpufreq)".into()),
        gpus: gpus(),
        nvml_gpus: nvml.as_ref().ok().cloned(),
        nvml_unavailable: nvml.err(),
        rustc: env!("HARNESS_RUSTC").to_string(),
        harness_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: env!("HARNESS_GIT_COMMIT").to_string(),
        git_dirty: env!("HARNESS_GIT_DIRTY").to_string(),
        command_line: std::env::args().collect(),
        runtime_versions,
    }
}

/// `nvidia-smi`'s view of the GPUs, when there is a driver.
fn gpus() -> String {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let list = String::from_utf8_lossy(&o.stdout)
                .trim()
                .replace('\n', "; ");
            let cuda = std::process::Command::new("nvidia-smi")
                .output()
                .ok()
                .and_then(|o| {
                    let t = String::from_utf8_lossy(&o.stdout).into_owned();
                    t.split("CUDA Version:")
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next().map(str::to_string))
                });
            match cuda {
                Some(c) => format!("{list} (CUDA {c})"),
                None => list,
            }
        }
        Ok(_) => "none: nvidia-smi found no usable GPU".into(),
        Err(_) => "none detected (no nvidia-smi)".into(),
    }
}
