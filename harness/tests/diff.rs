//! `harness diff` on real results folders: a run against itself is the same everywhere, a
//! slowed copy trips `--fail-above`, and bad folders are clear errors.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{compare_fixture, harness, in_process, results, tmp};

fn measured(out: &Path) {
    compare_fixture(
        out,
        &[
            "--runtimes",
            "ort,tract",
            "--threads",
            "1,2",
            "--min-time",
            "100ms",
        ],
    );
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
    } = harness(&[
        "diff",
        base.to_str().unwrap(),
        base.to_str().unwrap(),
        "--fail-above",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("idle CPUs"), "{err}");
    // The headline first, then the table.
    assert!(
        out.starts_with("NEW against BASE: 0 slower, 0 faster, 4 the same (of 4 scenarios)\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "\n  by runtime (geometric mean of the median ratios, 95% interval): ort 1.000x ["
        ) && out.contains("] over 2; tract 1.000x ["),
        "{out}"
    );
    let table = &out[out.find("\nscenario ").expect("the table") + 1..];
    let lines: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines
            .iter()
            // A short run may add "(p99 has too few samples in one run)" after the verdict.
            .all(|l| l.contains("1.000x") && l.contains("same (within noise)")),
        "{out}"
    );

    // NEW: every latency 50% higher: clear of the noise of a short run on a busy machine
    // (a 20% change could fall inside a noisy row's interval and be called the same).
    let mut r: Value = results(&base);
    for s in r["scenarios"].as_array_mut().unwrap() {
        let l = &mut s["measurement"]["latency"];
        for k in [
            "p50_ms",
            "p99_ms",
            "median_ci95_low_ms",
            "median_ci95_high_ms",
        ] {
            l[k] = Value::from(l[k].as_f64().unwrap() * 1.5);
        }
    }
    // ... measured with idle CPUs left to sleep (and BASE with them polling): said, since
    // served rows differ by that.
    r["environment"]["cpu_idle"] = "os (cpuidle driver haltpoll, governor haltpoll)".into();
    let mut b: Value = results(&base);
    b["environment"]["cpu_idle"] = "shallow: CPU latency QoS held at 0 us".into();
    std::fs::write(
        base.join("results.json"),
        serde_json::to_string(&b).unwrap(),
    )
    .unwrap();
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
    assert!(out.starts_with("### Latency: `"), "{out}");
    assert!(
        err.contains("warning: idle CPUs were handled differently (shallow / os, --cpu-idle)"),
        "{err}"
    );
    assert!(
        out.contains("**4 slower, 0 faster, 0 the same (of 4 scenarios)**"),
        "{out}"
    );
    assert!(out.contains("\n- slower: "), "{out}");
    assert!(
        out.contains("<details><summary>Every scenario (4)</summary>"),
        "{out}"
    );
    // What each run was: its CPU, commit and start.
    for side in ["\nBASE `", "\nNEW `"] {
        let line = out[out.find(side).unwrap_or_else(|| panic!("{out}"))..]
            .lines()
            .nth(1)
            .unwrap();
        assert!(
            line.contains("logical CPUs, harness ") && line.contains("started 20"),
            "{line}"
        );
    }
    assert!(
        out.contains("| 1.500x |") && out.contains("| slower |"),
        "{out}"
    );
    assert!(
        err.contains("regression: ort/cpu/fp32/b1/s8/t1 is 50.0% slower"),
        "{err}"
    );
    // Below the gate: reported, not failed.
    let common::Run { code, .. } = in_process(&[
        "diff",
        base.to_str().unwrap(),
        slow.to_str().unwrap(),
        "--fail-above",
        "60",
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

/// The tail verdicts on the earlier version's folder (from its histograms): every p90 and
/// every p99 with enough samples is the same as itself, and a p99 from fewer than 368
/// samples is `too few samples`, with the count.
#[test]
fn tail_verdicts_on_an_earlier_results_folder() {
    let old = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/results-v1");
    let old = old.to_str().unwrap();
    let run = in_process(&["diff", old, old, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows: Value = serde_json::from_str(&run.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let measured: Vec<&Value> = rows.iter().filter(|r| r["verdict"] == "same").collect();
    assert_eq!(measured.len(), 32);
    for r in &measured {
        assert_eq!(r["p90"]["verdict"], "same", "{r}");
        let p99 = &r["p99"];
        let n = p99["base_samples"].as_u64().unwrap();
        if n >= 368 {
            assert_eq!(p99["verdict"], "same", "{r}");
            assert!(p99["base_ci95_low_ms"].as_f64().unwrap() <= p99["base_ms"].as_f64().unwrap());
            assert!(p99.get("samples_needed").is_none());
        } else {
            assert_eq!(p99["verdict"], "too few samples", "{r}");
            assert_eq!(p99["samples_needed"], 368);
            let note = format!(
                "p99 needs at least 368 samples per run for a 95% interval; base has {n}, new has {n}"
            );
            assert_eq!(p99["note"], note.as_str());
        }
    }
    // tract/cpu/int8/b2/s16/t1 has 129 samples.
    assert!(
        measured
            .iter()
            .any(|r| r["id"] == "tract/cpu/int8/b2/s16/t1"
                && r["p99"]["verdict"] == "too few samples")
    );
    // Rows not measured in both runs (the 4 candle int8 rows) have no tail verdicts.
    let unmatched: Vec<&Value> = rows
        .iter()
        .filter(|r| r["verdict"] == "unmatched")
        .collect();
    assert_eq!(unmatched.len(), 4);
    assert!(unmatched
        .iter()
        .all(|r| r["p90"].is_null() && r["p99"].is_null()));
    let table = in_process(&["diff", old, old]).stdout;
    assert!(
        table.starts_with(
            "NEW against BASE: 0 slower, 0 faster, 32 the same, 4 not comparable (4 not measured in both) (of 36 scenarios)\n"
        ),
        "{table}"
    );
    let head = table.lines().find(|l| l.starts_with("scenario ")).unwrap();
    let head: Vec<&str> = head.split_whitespace().collect();
    assert!(
        head.ends_with(&["verdict", "p90", "verdict", "p99", "verdict"]),
        "{head:?}"
    );
    assert!(table.contains("too few samples (needs 368/run; base has 129, new has 129)"));
}

/// A results folder whose histograms are a synthetic distribution and a copy with only its
/// top 5% 10% longer: `harness diff` calls p99 slower, the median the same, and does not fail
/// the `--fail-above` gate, which judges the median.
#[test]
fn a_slower_tail_alone_is_reported_and_does_not_fail_the_gate() {
    use harness::results::LatencyStats;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/results-v1");
    let mut r = results(&fixture);
    // Keep one measured scenario; drop the rest.
    r["scenarios"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["id"] == "ort/cpu/fp32/b1/s16/t1");
    // A +-5% sawtooth around 2 ms, 5,000 samples.
    let base: Vec<u64> = (0..5000)
        .map(|i| (2e6 * (1.0 + 0.05 * ((i % 101) as f64 / 50.0 - 1.0))) as u64)
        .collect();
    let mut sorted = base.clone();
    sorted.sort_unstable();
    let p95 = sorted[4749];
    let slow: Vec<u64> = base
        .iter()
        .map(|&x| if x > p95 { x * 11 / 10 } else { x })
        .collect();
    let d = tmp("diff-tail");
    let write = |name: &str, samples: &[u64]| {
        let mut r = r.clone();
        r["scenarios"][0]["measurement"]["latency"] =
            serde_json::to_value(LatencyStats::from_samples(samples)).unwrap();
        let dir = d.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("results.json"), r.to_string()).unwrap();
        dir.to_str().unwrap().to_string()
    };
    let (a, b) = (write("base", &base), write("slow", &slow));

    // By default a tail moves 10% before it counts (separate runs of one build move it by
    // up to 7.7%): this 10% shift is just short of it.
    let run = in_process(&["diff", &a, &b, "--json"]);
    let rows: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(rows[0]["p99"]["verdict"], "same", "{}", rows[0]);

    let run = in_process(&[
        "diff",
        &a,
        &b,
        "--json",
        "--fail-above",
        "1",
        "--tail-min-change",
        "5",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows: Value = serde_json::from_str(&run.stdout).unwrap();
    let row = &rows[0];
    assert_eq!(row["verdict"], "same");
    assert_eq!(row["p90"]["verdict"], "same");
    let p99 = &row["p99"];
    assert_eq!(p99["verdict"], "slower", "{row}");
    assert!(
        (p99["change_pct"].as_f64().unwrap() - 10.0).abs() < 0.5,
        "{row}"
    );
    assert!(p99["new_ci95_low_ms"].as_f64().unwrap() > p99["base_ci95_high_ms"].as_f64().unwrap());

    let run = in_process(&["diff", &b, &a, "--markdown", "--tail-min-change", "5"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("| same (within noise) | same | faster (-9.1%) |"),
        "{}",
        run.stdout
    );
}
