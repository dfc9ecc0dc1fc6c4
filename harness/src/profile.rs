//! `harness profile DIR`: a CPU profile of each measured window. `profiles/perf.sh` records
//! with `perf record -k CLOCK_MONOTONIC --control` (enabled only while a window is open,
//! see `monitor::perf_control`) and writes `perf script` text to `DIR/profile/perf.script`;
//! this assigns each sample to the scenario whose window (`window_monotonic_s`) holds it,
//! folds the stacks per scenario (`DIR/profile/<scenario>.folded`, and a flame graph when
//! `inferno-flamegraph` is installed), sorts the self time of each sample's leaf frame into
//! groups — matrix kernels, the rest of the runtime, threading, allocation, the OS kernel,
//! the harness — and stores the shares and the top frames in the row.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::results::{ProfileFrame, ProfileSummary, Results};

/// One sample of `perf script -F comm,pid,tid,time,period,ip,sym,dso`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub pid: u32,
    pub tid: u32,
    /// Seconds on the recording clock (CLOCK_MONOTONIC with `-k CLOCK_MONOTONIC`).
    pub time: f64,
    /// Nanoseconds of CPU time the sample stands for (cpu-clock's period).
    pub period: u64,
    /// Leaf first.
    pub frames: Vec<String>,
}

/// A frame's name: its symbol, else `[library]` (a stripped library, such as the ONNX
/// Runtime of the PyPI wheel), else nothing (an address frame-pointer unwinding made up).
fn frame_name(sym: &str, dso: &str) -> Option<String> {
    if sym != "[unknown]" && !sym.is_empty() {
        return Some(sym.to_string());
    }
    let lib = dso.rsplit('/').next().unwrap_or(dso);
    if lib == "[unknown]" || lib.is_empty() {
        None
    } else if lib.starts_with('[') {
        Some(lib.to_string())
    } else {
        Some(format!("[{lib}]"))
    }
}

/// Parses `perf script -F comm,pid,tid,time,period,ip,sym,dso` output: a header line per
/// sample (`comm pid/tid time: period`), then one line per frame (`\taddr sym (dso)`).
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut cur: Option<Sample> = None;
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            let Some(s) = cur.as_mut() else { continue };
            let t = line.trim();
            // "addr sym (dso)": the dso is the last parenthesised part.
            let Some((head, dso)) = t.rsplit_once(" (") else {
                continue;
            };
            let dso = dso.trim_end_matches(')');
            let sym = head.split_once(' ').map(|(_, s)| s).unwrap_or("").trim();
            if let Some(f) = frame_name(sym, dso) {
                s.frames.push(f);
            }
        } else if line.trim().is_empty() {
            out.extend(cur.take());
        } else {
            out.extend(cur.take());
            cur = header(line);
        }
    }
    out.extend(cur);
    out
}

/// `harness 26032/26076 40686.997247:    1001001 ` (the comm may hold spaces).
fn header(line: &str) -> Option<Sample> {
    let (before, after) = line.rsplit_once(':')?;
    let period = after.split_whitespace().next()?.parse().ok()?;
    let mut words = before.split_whitespace().rev();
    let time: f64 = words.next()?.parse().ok()?;
    let (pid, tid) = words.next()?.split_once('/')?;
    Some(Sample {
        pid: pid.parse().ok()?,
        tid: tid.parse().ok()?,
        time,
        period,
        frames: Vec::new(),
    })
}

/// The groups a sample's time falls into, in the order they are shown.
pub const GROUPS: [&str; 9] = [
    "matrix kernels",
    "runtime (other)",
    "onnxruntime (stripped)",
    "memory copies",
    "threading",
    "allocation",
    "OS kernel",
    "harness",
    "other",
];

/// A frame of the standard library that says nothing of whose work it does (a thread-local
/// access, an iterator, a closure call): its time belongs to its nearest named caller.
fn generic(frame: &str) -> bool {
    let f = frame.trim_start_matches('<');
    (f.starts_with("std::") || f.starts_with("core::") || f.starts_with("alloc::vec"))
        && group(frame) == "other"
}

/// The group of a sample: that of its leaf frame, or, when the leaf is a generic frame of the
/// standard library, of the nearest caller that is not (leaf first).
pub fn group_of(frames: &[String]) -> &'static str {
    frames
        .iter()
        .find(|f| !generic(f))
        .map(|f| group(f))
        .unwrap_or("other")
}

/// Which group a frame belongs to (see [`GROUPS`]); the groups are tried in this order:
/// allocation, threading, copies, kernels, the stripped ONNX Runtime, the runtime's other
/// code, the OS kernel, the harness.
pub fn group(frame: &str) -> &'static str {
    let f = frame;
    let any = |keys: &[&str]| keys.iter().any(|k| f.contains(k));
    if any(&[
        "unlink_chunk",
        "malloc_consolidate",
        "malloc",
        "free",
        "realloc",
        "calloc",
        "memalign",
        "__rust_alloc",
        "__rust_dealloc",
        "alloc::alloc",
        "tcache",
        "mmap",
        "munmap",
        "brk",
        "clear_page",
    ]) {
        "allocation"
    } else if any(&[
        "rayon",
        "crossbeam",
        "std::thread::park",
        "futex",
        "sched_yield",
        "pthread_",
        "lll_",
        // A thread's entry frame as the leaf: its own loop (rayon's wait loop, inlined).
        "__rust_begin_short_backtrace",
        "parking_lot",
        "nanosleep",
        "std::sync",
        "_raw_spin",
        "SpinPause",
        "ThreadPool",
        "schedule",
        "finish_task_switch",
        "try_to_wake_up",
    ]) {
        "threading"
    } else if any(&["memcpy", "memmove", "memset"]) {
        "memory copies"
    } else if any(&[
        "gemm",
        "Gemm",
        "GEMM",
        "matmul",
        "MatMul",
        "mmm",
        "Mlas",
        "sgemm",
        "dot",
        "fma",
        "kernel_",
        "matrixmultiply",
    ]) {
        "matrix kernels"
    } else if f == "[libonnxruntime.so]" || f.starts_with("[libonnxruntime") {
        "onnxruntime (stripped)"
    } else if any(&[
        "tract_",
        "candle_",
        "onnxruntime",
        "half::",
        "gelu",
        "erf",
        "exp",
        "tanh",
        "softmax",
        "layer_norm",
    ]) {
        "runtime (other)"
    } else if f == "[kernel.kallsyms]"
        || f.starts_with("__x64_sys")
        || f.starts_with("entry_SYSCALL")
        || f.starts_with("do_syscall")
        || f.starts_with("asm_")
        || f.starts_with("irqentry")
        || f.contains("exit_to_user_mode")
    {
        "OS kernel"
    } else if f.starts_with("harness::") || f.contains("harness::") {
        "harness"
    } else {
        "other"
    }
}

/// The samples of one scenario, folded and summarised.
pub fn summarise(samples: &[&Sample], top: usize) -> (ProfileSummary, String) {
    let total: u64 = samples.iter().map(|s| s.period).sum();
    let mut folded: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_group: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut by_frame: BTreeMap<&str, u64> = BTreeMap::new();
    // The group each top frame's samples were counted in (by their stacks).
    let mut leaf_group: BTreeMap<&str, &'static str> = BTreeMap::new();
    let mut threads: Vec<u32> = Vec::new();
    for s in samples {
        let stack: Vec<&str> = s.frames.iter().rev().map(String::as_str).collect();
        let key = if stack.is_empty() {
            "[unknown]".to_string()
        } else {
            stack.join(";")
        };
        *folded.entry(key).or_default() += s.period;
        let leaf = s.frames.first().map(String::as_str).unwrap_or("[unknown]");
        *by_group.entry(group_of(&s.frames)).or_default() += s.period;
        *by_frame.entry(leaf).or_default() += s.period;
        leaf_group
            .entry(leaf)
            .or_insert_with(|| group_of(&s.frames));
        if !threads.contains(&s.tid) {
            threads.push(s.tid);
        }
    }
    let share = |v: u64| {
        if total > 0 {
            v as f64 / total as f64
        } else {
            0.0
        }
    };
    let mut frames: Vec<(&str, u64)> = by_frame.into_iter().collect();
    frames.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let summary = ProfileSummary {
        samples: samples.len() as u64,
        cpu_ms: total as f64 / 1e6,
        threads: threads.len(),
        groups: GROUPS
            .iter()
            .filter_map(|g| by_group.get(g).map(|v| (g.to_string(), share(*v))))
            .collect(),
        top: frames
            .iter()
            .take(top)
            .map(|(f, v)| ProfileFrame {
                frame: f.to_string(),
                group: leaf_group.get(f).copied().unwrap_or("other").to_string(),
                share: share(*v),
            })
            .collect(),
        folded: None,
        flamegraph: None,
        note: None,
    };
    // Folded stacks in µs of CPU time (flame graphs want integers).
    let text: String = folded
        .iter()
        .map(|(k, v)| format!("{k} {}\n", (v / 1000).max(1)))
        .collect();
    (summary, text)
}

/// A scenario id as a file name.
fn file_stem(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What `harness profile` did, for its message.
pub struct Outcome {
    pub profiled: usize,
    pub samples_outside: usize,
    pub flamegraphs: bool,
}

/// Assigns the samples of `script` to `r`'s scenarios by their windows and writes each
/// scenario's folded stacks (and flame graph) next to it in `dir/profile`.
pub fn attach(r: &mut Results, dir: &Path, script: &str) -> std::io::Result<Outcome> {
    let samples = parse(script);
    let prof = dir.join("profile");
    std::fs::create_dir_all(&prof)?;
    let flame = which("inferno-flamegraph");
    let mut used = 0;
    let mut profiled = 0;
    let mut stems = std::collections::BTreeSet::new();
    for s in r.scenarios.iter_mut() {
        let Some([a, b]) = s.resources.as_ref().and_then(|x| x.window_monotonic_s) else {
            continue;
        };
        let mine: Vec<&Sample> = samples
            .iter()
            .filter(|x| x.time >= a && x.time <= b)
            .collect();
        if mine.is_empty() {
            continue;
        }
        used += mine.len();
        profiled += 1;
        let (mut summary, folded) = summarise(&mine, 12);
        // Ids that map to one file name get a number after the first.
        let mut stem = file_stem(&s.id);
        if !stems.insert(stem.clone()) {
            let mut k = 2;
            while !stems.insert(format!("{stem}-{k}")) {
                k += 1;
            }
            stem = format!("{stem}-{k}");
        }
        let folded_path = prof.join(format!("{stem}.folded"));
        std::fs::write(&folded_path, &folded)?;
        summary.folded = Some(format!("profile/{stem}.folded"));
        match &flame {
            Some(bin) => {
                let svg = prof.join(format!("{stem}.svg"));
                let ok = std::process::Command::new(bin)
                    .args(["--title", &s.id, "--countname", "us"])
                    .arg(&folded_path)
                    .stdout(std::fs::File::create(&svg)?)
                    .status()
                    .map(|st| st.success())
                    .unwrap_or(false);
                if ok {
                    summary.flamegraph = Some(format!("profile/{stem}.svg"));
                } else {
                    let _ = std::fs::remove_file(&svg);
                    summary.note = Some(format!(
                        "{} failed on {}",
                        bin.display(),
                        folded_path.display()
                    ));
                }
            }
            None => {
                summary.note = Some(
                    "no flame graph: inferno-flamegraph is not installed (cargo install inferno)"
                        .into(),
                )
            }
        }
        s.profile = Some(summary);
    }
    Ok(Outcome {
        profiled,
        samples_outside: samples.len().saturating_sub(used),
        flamegraphs: flame.is_some(),
    })
}

/// A program on PATH (or in ~/.cargo/bin, where `cargo install` puts it).
fn which(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "harness 100/100 10.500000:    1001001 \n\
\t         1283060 [unknown] (/x/libonnxruntime.so.1.31.1)\n\
\t               3 [unknown] ([unknown])\n\
\n\
harness 100/101 10.600000:    2002002 \n\
\t          abc tract_linalg::x86_64_fma::mmm::fma_mmm_f32_16x6 (/x/harness)\n\
\t          abd tract_core::plan::SimpleState::run (/x/harness)\n\
\t          abe harness::measure::run (/x/harness)\n\
\n\
rayon worker 7 100/102 10.700000:    1001001 \n\
\t          123 crossbeam_epoch::default::with_handle (/x/harness)\n\
\t          124 rayon_core::registry::WorkerThread::wait_until_cold (/x/harness)\n\
\n\
harness 100/100 20.000000:    1001001 \n\
\t          97880 _int_malloc (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\
";

    #[test]
    fn perf_script_text_parses_into_samples_with_their_stacks() {
        let s = parse(SCRIPT);
        assert_eq!(s.len(), 4);
        assert_eq!((s[0].pid, s[0].tid, s[0].period), (100, 100, 1_001_001));
        assert!((s[0].time - 10.5).abs() < 1e-9);
        // The made-up address frame is dropped; the stripped library is named.
        assert_eq!(s[0].frames, ["[libonnxruntime.so.1.31.1]"]);
        assert_eq!(
            s[1].frames,
            [
                "tract_linalg::x86_64_fma::mmm::fma_mmm_f32_16x6",
                "tract_core::plan::SimpleState::run",
                "harness::measure::run"
            ]
        );
        // A command name with spaces.
        assert_eq!(s[2].tid, 102);
        assert_eq!(s[3].frames, ["_int_malloc"]);
    }

    #[test]
    fn leaf_frames_fall_into_groups() {
        assert_eq!(
            group("tract_linalg::x86_64_fma::mmm::fma_mmm_f32_16x6"),
            "matrix kernels"
        );
        assert_eq!(
            group("gemm_f32::microkernel::x86_64::avx2::f32::matmul_4_2"),
            "matrix kernels"
        );
        assert_eq!(
            group("rayon_core::registry::WorkerThread::wait_until_cold"),
            "threading"
        );
        assert_eq!(group("_int_malloc"), "allocation");
        assert_eq!(
            group("[libonnxruntime.so.1.31.1]"),
            "onnxruntime (stripped)"
        );
        assert_eq!(
            group("tract_core::ops::nn::softmax::Softmax::eval"),
            "runtime (other)"
        );
        assert_eq!(group("[kernel.kallsyms]"), "OS kernel");
        assert_eq!(group("harness::measure::run"), "harness");
        assert_eq!(group("__memcpy_avx512_unaligned_erms"), "memory copies");
        assert_eq!(group("unlink_chunk"), "allocation");
        // A generic leaf counts for its nearest named caller.
        let stack = [
            "std::thread::local::LocalKey<T>::with".to_string(),
            "tract_linalg::frame::mmm::run_blocked".to_string(),
        ];
        assert_eq!(group_of(&stack), "matrix kernels");
        assert_eq!(group_of(&stack[..1]), "other");
    }

    #[test]
    fn a_scenario_gets_the_samples_of_its_window_only() {
        let all = parse(SCRIPT);
        let mine: Vec<&Sample> = all.iter().filter(|s| s.time < 11.0).collect();
        let (p, folded) = summarise(&mine, 5);
        assert_eq!(p.samples, 3);
        assert_eq!(p.threads, 3);
        assert!((p.cpu_ms - 4.004004).abs() < 1e-6);
        let g: BTreeMap<String, f64> = p.groups.iter().cloned().collect();
        assert!((g["matrix kernels"] - 0.5).abs() < 1e-9, "{g:?}");
        assert!((g["threading"] - 0.25).abs() < 1e-9, "{g:?}");
        assert!((g["onnxruntime (stripped)"] - 0.25).abs() < 1e-9, "{g:?}");
        assert!(
            !g.contains_key("allocation"),
            "the malloc at 20 s is outside"
        );
        assert_eq!(
            p.top[0].frame,
            "tract_linalg::x86_64_fma::mmm::fma_mmm_f32_16x6"
        );
        // Root first, in µs.
        assert!(folded.contains(
            "harness::measure::run;tract_core::plan::SimpleState::run;tract_linalg::x86_64_fma::mmm::fma_mmm_f32_16x6 2002\n"
        ));
    }
}
