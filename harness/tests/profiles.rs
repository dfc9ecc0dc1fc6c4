//! The profiling recipes in profiles/: each one checks its tools and prints its commands in
//! --dry-run; the ONNX Runtime trace recipe runs for real on the fixture.

use std::path::Path;
use std::process::Command;

mod common;
use common::fixture;

fn recipe(name: &str, args: &[&str]) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles")
        .join(name);
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn every_recipe_runs_dry() {
    let model = fixture();
    let m = model.to_str().unwrap();
    for (name, expect) in [
        ("perf.sh", "perf"),
        ("ort-trace.sh", "--ort-profile"),
        ("nsys.sh", "nsys profile"),
    ] {
        let (code, text) = recipe(name, &["--dry-run", "--model", m, "--seq", "8"]);
        assert_eq!(code, 0, "{name}: {text}");
        assert!(text.contains(expect), "{name}: {text}");
        assert!(
            text.contains(m) || name == "perf.sh" && text.contains("not installed"),
            "{name}: {text}"
        );
    }
}

#[test]
fn the_onnx_runtime_trace_recipe_lists_operators() {
    let (code, text) = recipe(
        "ort-trace.sh",
        &[
            "--model",
            fixture().to_str().unwrap(),
            "--seq",
            "8",
            "--threads",
            "1",
            "--target-ci",
            "off",
            "--min-time",
            "100ms",
            "--warmup-time",
            "10ms",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(".json:") && text.contains(" runs"), "{text}");
    assert!(text.contains("MatMul"), "{text}");
}

/// `profiles/perf.sh` for real on the fixture (perf from Debian's linux-perf, which
/// scripts/test.sh installs): perf records only while a window is open, so tract's profile
/// holds its kernels and the measuring loop, not the model's loading or parsing; the row
/// carries the profile's groups and counters, and the report links its flame graph.
#[test]
fn the_perf_recipe_profiles_the_measured_windows_only() {
    let out = common::tmp("perf-recipe");
    let (code, text) = recipe(
        "perf.sh",
        &[
            "--model",
            fixture().to_str().unwrap(),
            "--runtimes",
            "tract,ort",
            "--seq",
            "8",
            "--threads",
            "1",
            "--target-ci",
            "off",
            "--min-time",
            "400ms",
            "--warmup-time",
            "50ms",
            "--no-overhead",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("profile: 2 scenario(s) profiled"), "{text}");
    // perf was enabled in the windows only: next to nothing was recorded outside them (a
    // whole-process recording would hold the loading, parity and report writing too).
    let outside: u64 = text
        .split("; ")
        .find_map(|p| p.strip_suffix(" sample(s) outside every window left out"))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0);
    let r = common::results(&out);
    let row = |rt: &str| {
        r["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["runtime"] == rt)
            .unwrap()
            .clone()
    };
    let tract = row("tract");
    let p = &tract["profile"];
    assert!(p["samples"].as_u64().unwrap() >= 20, "{p}");
    let share = |g: &str| {
        p["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x[0] == g)
            .and_then(|x| x[1].as_f64())
            .unwrap_or(0.0)
    };
    assert!(share("matrix kernels") > 0.05, "{p}");
    // Counters of the window, with the reason where the machine has no PMU.
    let res = &tract["resources"];
    assert!(
        res["minor_page_faults"].is_u64() && res["cpu_migrations"].is_u64(),
        "{res}"
    );
    assert!(
        res["ipc"].is_f64() || res["hw_counters_unavailable"].is_string(),
        "{res}"
    );
    // The measured window only: every sample whose stack unwound to the harness's own
    // frames is under the measuring loop, none in loading. Some stacks stop short: at their
    // leaf in libc (memcpy, malloc, free: perf's DWARF unwinding finds no way out of them,
    // 0-22% of tract's samples from run to run), or a frame or two above it in a runtime's
    // crate (tract_data's allocation under posix_memalign, 0.8% on an AMD EPYC); those say
    // nothing of where they were called from and are counted apart.
    let folded = std::fs::read_to_string(out.join(p["folded"].as_str().unwrap())).unwrap();
    let (mut inside, mut unwound, mut total) = (0u64, 0u64, 0u64);
    for line in folded.lines() {
        let (stack, n) = line.rsplit_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        total += n;
        if stack.contains("harness::") {
            unwound += n;
        }
        if stack.contains("harness::measure::") || stack.contains("harness::monitor::") {
            inside += n;
        }
        for loading in [
            "tract_onnx::",
            "prost::",
            "::load",
            "into_optimized",
            "into_runnable",
        ] {
            assert!(
                !stack.contains(loading),
                "a loading frame in the window: {stack}"
            );
        }
    }
    assert!(
        inside as f64 >= 0.99 * unwound as f64,
        "{inside} of {unwound} unwound samples under the measuring loop"
    );
    assert!(
        unwound as f64 >= 0.5 * total as f64,
        "{unwound} of {total} samples unwound"
    );
    let samples: u64 = ["tract", "ort"]
        .iter()
        .map(|rt| row(rt)["profile"]["samples"].as_u64().unwrap())
        .sum();
    assert!(
        outside * 20 <= samples,
        "{outside} samples outside the windows, {samples} inside"
    );
    let svg = out.join(p["flamegraph"].as_str().expect("a flame graph"));
    assert!(std::fs::read_to_string(svg).unwrap().contains("<svg"));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("href=\"profile/tract_cpu_fp32_b1_s8_t1.svg\""),
        "the report links the flame graph"
    );
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("## Profiles") && md.contains("- **tract/cpu/fp32/b1/s8/t1**: `"),
        "{md}"
    );
    // The ONNX Runtime of the PyPI wheel is stripped: its time is named by its library.
    assert!(
        row("ort")["profile"]["top"][0]["frame"]
            .as_str()
            .unwrap()
            .starts_with("[libonnxruntime"),
        "{}",
        row("ort")["profile"]
    );
}
