//! `harness diff` on real results folders: a run against itself is the same everywhere, a
//! slowed copy trips `--fail-above`, and bad folders are clear errors.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{fixture, harness, in_process, results, tmp};

fn measured(out: &Path) {
    let common::Run {
        code, stderr: err, ..
    } = harness(&[
        "compare",
        "--model",
        fixture().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--runtimes",
        "ort,tract",
        "--seq",
        "8",
        "--threads",
        "1,2",
        "--min-time",
        "100ms",
        "--warmup-time",
        "10ms",
        "--no-overhead",
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn diff_of_a_run_with_itself_and_with_a_slowed_copy() {
    let d = tmp("diff");
    let base = d.join("base");
    measured(&base);

    let common::Run {
        code,
        stdout: out,
        stderr: err,
    } = in_process(&[
        "diff",
        base.to_str().unwrap(),
        base.to_str().unwrap(),
        "--fail-above",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines
            .iter()
            // A short run may add "(p99 has too few samples in one run)" after the verdict.
            .all(|l| l.contains("1.000x") && l.contains("same (within noise)")),
        "{out}"
    );

    // NEW: every latency 20% higher.
    let mut r: Value = results(&base);
    for s in r["scenarios"].as_array_mut().unwrap() {
        let l = &mut s["measurement"]["latency"];
        for k in [
            "p50_ms",
            "p99_ms",
            "median_ci95_low_ms",
            "median_ci95_high_ms",
        ] {
            l[k] = Value::from(l[k].as_f64().unwrap() * 1.2);
        }
    }
    let slow = d.join("slow");
    std::fs::create_dir_all(&slow).unwrap();
    std::fs::write(
        slow.join("results.json"),
        serde_json::to_string(&r).unwrap(),
    )
    .unwrap();

    let common::Run {
        code,
        stdout: out,
        stderr: err,
    } = harness(&[
        "diff",
        base.to_str().unwrap(),
        slow.to_str().unwrap(),
        "--fail-above",
        "10",
        "--markdown",
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.starts_with("Comparing `"), "{out}");
    assert!(
        out.contains("| 1.200x |") && out.contains("| slower |"),
        "{out}"
    );
    assert!(
        err.contains("regression: ort/cpu/fp32/b1/s8/t1 is 20.0% slower"),
        "{err}"
    );
    // Below the gate: reported, not failed.
    let common::Run { code, .. } = in_process(&[
        "diff",
        base.to_str().unwrap(),
        slow.to_str().unwrap(),
        "--fail-above",
        "25",
    ]);
    assert_eq!(code, 0);
    let common::Run {
        code, stdout: out, ..
    } = in_process(&[
        "diff",
        slow.to_str().unwrap(),
        base.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0);
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["verdict"] == "faster"));
}

#[test]
fn diff_of_a_folder_without_results_is_a_clear_error() {
    let d = tmp("diff-bad");
    let common::Run {
        code, stderr: err, ..
    } = in_process(&["diff", d.to_str().unwrap(), d.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("results.json") && err.contains("harness compare"),
        "{err}"
    );
    std::fs::write(d.join("results.json"), "{\"not\": 1}").unwrap();
    let common::Run {
        code, stderr: err, ..
    } = in_process(&["diff", d.to_str().unwrap(), d.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("not a harness results file"), "{err}");
}

/// A results folder written by an earlier version (`harness compare --served` before the
/// results schema became a leaf, committed): `harness diff` still pairs every row with
/// itself, and `harness report` still rebuilds it.
#[test]
fn a_results_folder_from_an_earlier_version_still_diffs_and_reports() {
    let old = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/results-v1");
    let old = old.to_str().unwrap();
    let run = in_process(&["diff", old, old, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows: Value = serde_json::from_str(&run.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 36);
    let measured = rows.iter().filter(|r| r["verdict"] == "same").count();
    assert_eq!(measured, 32, "every measured row is the same as itself");
    assert!(rows
        .iter()
        .any(|r| r["id"] == "candle/cpu/fp32/b2/s16/t1/served/c2"));

    let out = tmp("report-v1");
    let run = in_process(&["report", old, "--out", out.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let merged = results(&out);
    assert_eq!(merged["scenarios"].as_array().unwrap().len(), 36);
    assert_eq!(merged["merged_from"][0], old);
    for f in ["results.csv", "summary.md", "report.html"] {
        assert!(out.join(f).is_file(), "{f}");
    }
}
