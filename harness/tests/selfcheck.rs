//! `harness selfcheck` on the fixture: every runtime with a documented loop is timed both
//! ways and the report holds both figures and their ratio (a correctness check: no timing
//! bound on these shared machines).

use serde_json::Value;

mod common;
use common::{fixture, harness, tmp};

fn quick(out: &std::path::Path, model: &std::path::Path, extra: &[&str]) -> common::Run {
    quick_at(out, model, "1", extra)
}

fn quick_at(
    out: &std::path::Path,
    model: &std::path::Path,
    threads: &str,
    extra: &[&str],
) -> common::Run {
    let mut args = vec![
        "selfcheck",
        "--model",
        model.to_str().unwrap(),
        "--threads",
        threads,
        "--rounds",
        "4",
        "--block",
        "50ms",
        "--warmup-time",
        "0s",
        "--seq",
        "16",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    harness(&args)
}

#[test]
fn selfcheck_times_every_runtime_both_ways() {
    let out = tmp("selfcheck");
    let run = quick(&out, &fixture(), &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("selfcheck.json")).unwrap())
            .unwrap();
    assert_eq!(r["schema"], "harness-selfcheck");
    let checks = r["checks"].as_array().unwrap();
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c["runtime"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ort", "tract", "candle-native"]);
    for c in checks {
        // At 1 thread there is no advice to check: the documented loops only.
        assert_eq!(c["user_loop"], "documented", "{c}");
        assert!(c["error"].is_null(), "{c}");
        for side in ["harness", "bare"] {
            assert!(c[side]["samples"].as_u64().unwrap() >= 6, "{c}");
            assert!(c[side]["p50_ms"].as_f64().unwrap() > 0.0, "{c}");
        }
        let ratio = c["ratio"].as_f64().unwrap();
        // The geometric mean of the rounds' ratios, one a round.
        let rounds: Vec<f64> = c["round_ratios"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_f64().unwrap())
            .collect();
        assert_eq!(rounds.len(), 4, "{c}");
        let gm = (rounds.iter().map(|r| r.ln()).sum::<f64>() / 4.0).exp();
        assert!((ratio - gm).abs() < 1e-9, "{c}");
        let (lo, hi) = (
            c["ratio_ci95"][0].as_f64().unwrap(),
            c["ratio_ci95"][1].as_f64().unwrap(),
        );
        assert!(lo <= ratio && ratio <= hi, "{c}");
        assert!(!c["recipe"].as_str().unwrap().is_empty());
        let v = c["verdict"].as_str().unwrap();
        assert!(["agrees", "differs", "inconclusive"].contains(&v), "{c}");
    }
    // The table names each runtime and says what the ratio means.
    for n in names {
        assert!(run.stdout.contains(n), "{}", run.stdout);
    }
    assert!(
        run.stdout.contains("ratio = harness / user"),
        "{}",
        run.stdout
    );
}

#[test]
fn candle_native_is_also_checked_with_the_advice_applied_at_two_threads() {
    let out = tmp("selfcheck-advised");
    let run = quick_at(&out, &fixture(), "2", &["--runtimes", "candle-native"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("selfcheck.json")).unwrap())
            .unwrap();
    let c = r["checks"].as_array().unwrap();
    let loops: Vec<(&str, &str)> = c
        .iter()
        .map(|c| {
            (
                c["runtime"].as_str().unwrap(),
                c["user_loop"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        loops,
        [
            ("candle-native", "documented"),
            ("candle-native", "advised")
        ]
    );
    for c in c {
        assert!(c["error"].is_null(), "{c}");
        assert!(c["ratio"].as_f64().unwrap() > 0.0, "{c}");
    }
    assert!(
        c[1]["recipe"].as_str().unwrap().contains("install"),
        "{}",
        c[1]
    );
    assert!(
        run.stdout.contains("candle-native (advised)"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_runtime_without_a_documented_loop_or_its_files_is_an_error_row() {
    let dir = tmp("selfcheck-bad");
    // A bare .onnx: candle-native has no checkpoint beside it; null has no user loop.
    let model = dir.join("m.onnx");
    std::fs::copy(fixture().join("model.onnx"), &model).unwrap();
    let out = dir.join("res");
    let run = quick(&out, &model, &["--runtimes", "ort,candle-native,null"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("selfcheck.json")).unwrap())
            .unwrap();
    let c = r["checks"].as_array().unwrap();
    assert!(c[0]["error"].is_null(), "{}", c[0]);
    let e = c[1]["error"].as_str().unwrap();
    assert!(e.contains("model.safetensors"), "{e}");
    let e = c[2]["error"].as_str().unwrap();
    assert!(e.contains("no documented loop for null"), "{e}");
}
