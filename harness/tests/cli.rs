//! `harness` on the committed tiny fixture: the three result files with the documented
//! columns and schema, all runtimes in parity, and each bad input a clear error that leaves
//! the other runtimes measured. Runs that measure use the real binary (its worker processes,
//! its progress on stderr); bad inputs refused before any work, and `list`, run in-process
//! through the library.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
#[path = "common/onnx.rs"]
mod onnx_models;
use common::{fixture, harness, in_process, results, tmp, Run};

const DOCUMENTED_COLUMNS: &str = "runtime,device,variant,batch,seq,threads,concurrency,samples,mean_ms,p50_ms,p90_ms,p99_ms,p999_ms,throughput_per_s,parity";

/// A copy of the fixture folder, with `edit` applied to it.
fn fixture_copy(tag: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let d = tmp(tag).join("model");
    std::fs::create_dir_all(&d).unwrap();
    for e in std::fs::read_dir(fixture()).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
        }
    }
    edit(&d);
    d
}

/// `harness compare` with short timings on `model`, results in `out`.
fn compare(model: &Path, out: &Path, extra: &[&str]) -> Run {
    harness(&compare_args(model, out, extra))
}

/// The same, in-process: for inputs refused before anything runs.
fn compare_in_process(model: &Path, out: &Path, extra: &[&str]) -> Run {
    in_process(&compare_args(model, out, extra))
}

fn compare_args<'a>(model: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "compare",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--seq",
        "8",
        "--threads",
        "1",
        "--warmup-time",
        "10ms",
        "--min-time",
        "50ms",
        "--min-samples",
        "20",
        "--no-overhead",
    ];
    args.extend_from_slice(extra);
    args
}

fn rows<'a>(r: &'a Value, runtime: &str) -> Vec<&'a Value> {
    r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["runtime"] == runtime)
        .collect()
}

#[test]
fn compare_writes_the_three_files_and_every_runtime_passes_parity() {
    let out = tmp("happy").join("res");
    let run = compare(&fixture(), &out, &["--batch", "1,2", "--threads", "1,2"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    let r = results(&out);
    assert_eq!(r["schema"], "harness-results");
    assert_eq!(r["schema_version"], 1);
    assert!(r["environment"]["cpu_model"].is_string());
    assert!(r["environment"]["command_line"].as_array().unwrap().len() > 3);
    // Idle CPUs polled for the run (the default), or the record says why they could not.
    let idle = r["environment"]["cpu_idle"].as_str().unwrap();
    assert!(
        idle.starts_with("shallow: CPU latency QoS held at 0 us")
            || idle.starts_with("os: the CPU latency QoS could not be held"),
        "{idle}"
    );
    assert_eq!(
        run.stderr.contains("warning: --cpu-idle shallow: "),
        idle.starts_with("os: "),
        "{}",
        run.stderr
    );
    assert_eq!(r["model"]["inputs"].as_array().unwrap().len(), 3);
    let scenarios = r["scenarios"].as_array().unwrap();
    assert_eq!(
        scenarios.len(),
        4 * 2 * 2,
        "4 runtimes x 2 batches x 2 thread counts"
    );
    for s in scenarios {
        let parity = s["parity"]["status"].as_str().unwrap();
        assert!(
            parity == "pass" || parity == "reference",
            "{}: {parity}",
            s["id"]
        );
        assert_eq!(s["status"], "ok");
        let l = &s["measurement"]["latency"];
        assert!(l["samples"].as_u64().unwrap() >= 20);
        assert!(l["p50_ms"].as_f64().unwrap() > 0.0);
        assert!(l["p50_ms"].as_f64() <= l["p99_ms"].as_f64());
        assert!(s["throughput_per_s"].as_f64().unwrap() > 0.0);
        assert!(!s["measurement"]["latency"]["histogram"]
            .as_str()
            .unwrap()
            .is_empty());
        assert_eq!(s["applied"]["measuring_thread_cpu"], "CPU 0");
        let res = &s["resources"];
        assert!(res["avg_cores_busy"].as_f64().unwrap() > 0.0, "{res}");
        assert!(res["peak_rss_bytes"].as_u64().unwrap() > 1 << 20, "{res}");
        assert!(
            res["monitor_cost"]["share_of_window"].as_f64().unwrap() < 0.01,
            "{res}"
        );
        assert!(
            res["energy_j"].is_number() || res["energy_unavailable"].is_string(),
            "{res}"
        );
        assert!(s["rss_after_load_bytes"].as_u64().unwrap() > 1 << 20);
        // Adaptive stopping is the default: past the minima a row stops on its target
        // (the median known to +-2%) or runs to the maximum time, marked unstable.
        let m = &s["measurement"];
        if m["stable"] == true {
            assert_eq!(m["stop_reason"], "target-ci", "{m}");
            let half = (l["median_ci95_high_ms"].as_f64().unwrap()
                - l["median_ci95_low_ms"].as_f64().unwrap())
                / 2.0
                / l["p50_ms"].as_f64().unwrap();
            assert!(half <= 0.02, "{m}");
        } else {
            assert_eq!(m["stable"], false, "{m}");
            assert!(
                m["stop_reason"] == "budget" || m["stop_reason"] == "max-time",
                "{m}"
            );
        }
    }
    assert_eq!(r["settings"]["target_ci_pct"], 2.0);
    // --budget auto: 15 s for each of the 16 scenarios.
    assert_eq!(r["settings"]["budget_s"], 240.0);
    // ort is the reference, on its first thread count.
    let ort = rows(&r, "ort");
    assert_eq!(ort[0]["parity"]["status"], "reference");
    assert_eq!(rows(&r, "candle")[0]["parity"]["reference"], "ort");
    assert_eq!(ort[2]["applied"]["intra_op_threads"], "2");

    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with(DOCUMENTED_COLUMNS));
    let body: Vec<&str> = lines.collect();
    // ort, tract, candle, candle-native x batch 1, 2 x threads 1, 2.
    assert_eq!(body.len(), 16);
    assert!(body
        .iter()
        .all(|l| l.ends_with(",") || !l.contains("ERROR")));
    assert!(body
        .iter()
        .any(|l| l.starts_with("candle,cpu,fp32,2,8,2,1,")));
    assert!(body
        .iter()
        .any(|l| l.starts_with("candle-native,cpu,fp32,2,8,2,1,")));
    // Each candle row says which engine ran.
    assert_eq!(rows(&r, "candle")[0]["applied"]["engine"], "onnx-graph");
    assert_eq!(rows(&r, "candle-native")[0]["applied"]["engine"], "native");

    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("| runtime | variant | batch | seq |"), "{md}");
    assert!(md.contains("| tract | fp32 | 2 | 8 | 2 |"), "{md}");

    // The answer first: one ranking per group of rows that differ only by runtime (2 batches
    // x 2 thread counts), each naming all four runtimes, then one line across the groups.
    assert!(
        run.stdout
            .starts_with("Medians: each runtime against the fastest of its group"),
        "{}",
        run.stdout
    );
    let headline: Vec<&str> = run
        .stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(headline.len(), 5, "{}", run.stdout);
    for (line, group) in headline
        .iter()
        .zip(["b1 s8 t1", "b2 s8 t1", "b1 s8 t2", "b2 s8 t2"])
    {
        assert!(
            line.trim_start().starts_with(&format!("fp32 {group}: ")),
            "{line}"
        );
        for rt in ["ort", "tract", "candle", "candle-native"] {
            assert!(line.contains(rt), "{line}");
        }
    }
    assert!(
        headline[4].trim_start().starts_with("across 4 groups: "),
        "{}",
        headline[4]
    );
    assert!(md.contains("## Headline"), "{md}");
    assert!(
        run.stdout.contains("\nruntime        variant  batch"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("parity reference: ort"));
}

#[test]
fn a_budget_is_shared_by_the_scenarios_and_ends_those_that_cannot_meet_the_target() {
    let out = tmp("budget").join("res");
    // A target no real latency meets: every scenario runs to its share of the budget.
    let run = compare(
        &fixture(),
        &out,
        &[
            "--runtimes",
            "ort,tract",
            "--batch",
            "1,2",
            "--target-ci",
            "0.001",
            "--budget",
            "4s",
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = results(&out);
    assert_eq!(r["settings"]["budget_s"], 4.0);
    assert_eq!(r["settings"]["target_ci_pct"], 0.001);
    let all = r["scenarios"].as_array().unwrap();
    assert_eq!(all.len(), 4);
    let spent = common::spent_to_budget_shares(all);
    // The shares come out of the budget, loading included: never more than it.
    assert!(spent <= 4.0, "{spent} s measured of a 4 s budget");
    assert!(
        run.stdout.contains("its share of --budget"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_bad_target_or_budget_is_refused_naming_the_flag() {
    let out = tmp("badtarget").join("res");
    for (args, says) in [
        (["--target-ci", "0"], "--target-ci"),
        (["--target-ci", "often"], "or off"),
        (["--budget", "0s"], "--budget"),
    ] {
        let run = compare_in_process(&fixture(), &out, &args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn json_flag_puts_the_results_and_nothing_else_on_stdout() {
    let out = tmp("json").join("res");
    let run = compare(&fixture(), &out, &["--json", "--runtimes", "tract,null"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let from_stdout: Value =
        serde_json::from_str(&run.stdout).expect("stdout is one JSON document");
    assert_eq!(from_stdout, results(&out));
    assert!(run.stderr.contains("measuring"), "progress goes to stderr");
    // The null runtime is measured and not compared.
    let null = rows(&from_stdout, "null");
    assert_eq!(null[0]["parity"]["status"], "skipped");
    assert!(
        null[0]["measurement"]["latency"]["p50_ms"]
            .as_f64()
            .unwrap()
            < 0.1
    );
}

#[test]
fn harness_overhead_is_measured_and_small() {
    let out = tmp("overhead").join("res");
    let run = harness(&[
        "compare",
        "--model",
        fixture().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--runtimes",
        "null",
        "--seq",
        "8",
        "--threads",
        "1",
        "--min-time",
        "20ms",
        "--warmup-time",
        "0s",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let o = &results(&out)["harness_overhead"];
    assert!(o["samples"].as_u64().unwrap() >= 10_000);
    // A clock read pair and a push: well under a microsecond on any machine this runs on.
    assert!(o["p50_ns"].as_f64().unwrap() < 1_000.0, "{o}");
}

#[test]
fn missing_model_is_a_clear_error() {
    let out = tmp("missing").join("res");
    let run = compare_in_process(Path::new("/no/such/model"), &out, &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("model path /no/such/model does not exist"),
        "{}",
        run.stderr
    );
}

fn assert_onnx_runtimes_fail_and_candle_measures(run: &Run, out: &Path, what: &str) {
    assert_eq!(run.code, 1, "{}", run.stderr);
    let r = results(out);
    for rt in ["ort", "tract", "candle"] {
        let row = rows(&r, rt)[0];
        assert_eq!(row["status"], "error");
        let e = row["error"].as_str().unwrap();
        assert!(
            e.contains("model.onnx") && e.contains("re-export"),
            "{rt} ({what}): {e}"
        );
    }
    let candle = rows(&r, "candle-native")[0];
    assert_eq!(candle["status"], "ok", "{what}");
    assert_eq!(candle["parity"]["status"], "reference");
    assert!(run.stdout.contains("ERROR"));
}

#[test]
fn truncated_onnx_fails_its_runtimes_only() {
    let model = fixture_copy("truncated", |d| {
        let bytes = std::fs::read(d.join("model.onnx")).unwrap();
        std::fs::write(d.join("model.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    });
    let out = model.parent().unwrap().join("res");
    let run = compare(&model, &out, &[]);
    assert_onnx_runtimes_fail_and_candle_measures(&run, &out, "truncated");
}

#[test]
fn garbage_onnx_fails_its_runtimes_only() {
    let model = fixture_copy("garbage", |d| {
        std::fs::write(d.join("model.onnx"), b"\x08\x07garbage\xff\xfe not onnx").unwrap();
    });
    let out = model.parent().unwrap().join("res");
    let run = compare(&model, &out, &[]);
    assert_onnx_runtimes_fail_and_candle_measures(&run, &out, "garbage");
    assert!(
        run.stderr.contains("not a readable ONNX model"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_wrong_shape_is_a_clear_error() {
    let out = tmp("shape").join("res");
    let run = compare_in_process(&fixture(), &out, &["--shape", "pixels=1x3x224x224"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no input 'pixels'"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("input_ids, attention_mask, token_type_ids"),
        "{}",
        run.stderr
    );

    let run = compare_in_process(&fixture(), &out, &["--shape", "input_ids=2x8x1"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("rank 3 given, 2 declared"),
        "{}",
        run.stderr
    );

    let run = compare_in_process(&fixture(), &out, &["--shape", "input_ids=2by8"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("expected NAME=D0xD1"), "{}", run.stderr);
}

#[test]
fn a_sequence_beyond_the_model_limit_skips_only_that_shape() {
    let out = tmp("seq").join("res");
    let run = compare(
        &fixture(),
        &out,
        &["--seq", "8,100", "--runtimes", "ort,tract"],
    );
    // Skipped is not a failure: everything that can run here ran and agreed.
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = results(&out);
    for s in r["scenarios"].as_array().unwrap() {
        if s["seq"] == 100 {
            assert_eq!(s["status"], "skipped");
            assert!(s["error"]
                .as_str()
                .unwrap()
                .contains("max_position_embeddings 64"));
        } else {
            assert_eq!(s["status"], "ok");
        }
    }
}

#[test]
fn a_shape_override_sets_every_input() {
    let out = tmp("override").join("res");
    let run = compare(
        &fixture(),
        &out,
        &["--shape", "input_ids=3x5", "--runtimes", "ort,candle"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = results(&out);
    let s = rows(&r, "candle")[0];
    assert_eq!(s["batch"], 3);
    assert_eq!(s["seq"], 5);
    assert_eq!(s["shapes"]["attention_mask"], serde_json::json!([3, 5]));
    assert_eq!(s["parity"]["status"], "pass");
}

#[test]
fn onnx_runtime_library_not_found_leaves_the_others_measured() {
    let out = tmp("nolib").join("res");
    let run = compare(
        &fixture(),
        &out,
        &["--ort-lib", "/nonexistent/libonnxruntime.so.1.31.1"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let r = results(&out);
    let ort = rows(&r, "ort")[0];
    assert_eq!(ort["status"], "error");
    assert_eq!(ort["error_kind"], "library-not-found");
    let e = ort["error"].as_str().unwrap();
    assert!(
        e.contains("ONNX Runtime library not found") && e.contains("/nonexistent"),
        "{e}"
    );
    assert!(e.contains("pip install onnxruntime==1.31.1"), "{e}");
    assert_eq!(rows(&r, "tract")[0]["parity"]["status"], "reference");
    assert_eq!(rows(&r, "candle")[0]["parity"]["status"], "pass");
    assert_eq!(rows(&r, "candle")[0]["parity"]["reference"], "tract");

    // A file that is not a shared library: an error from the loader, not a panic.
    let bogus = tmp("nolib-bogus").join("libonnxruntime.so");
    std::fs::write(&bogus, b"not a library").unwrap();
    let run = compare(
        &fixture(),
        &out,
        &[
            "--ort-lib",
            bogus.to_str().unwrap(),
            "--runtimes",
            "ort,tract",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let e = rows(&results(&out), "ort")[0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.contains("could not load the ONNX Runtime library"), "{e}");
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);

    let run = harness(&["list", "--ort-lib", "/nonexistent/libonnxruntime.so"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains(&format!(
            "{:<13} {:<10} unavailable  ONNX Runtime library not found",
            "ort", "cpu"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("{:<13} {:<10} ready", "tract", "cpu")),
        "{}",
        run.stdout
    );
}

#[test]
fn candle_weights_missing_skips_candle_native_alone() {
    let model = fixture_copy("noweights", |d| {
        std::fs::remove_file(d.join("model.safetensors")).unwrap()
    });
    let out = model.parent().unwrap().join("res");
    let run = compare(&model, &out, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = results(&out);
    let c = rows(&r, "candle-native")[0];
    assert_eq!(c["status"], "skipped");
    let e = c["error"].as_str().unwrap();
    assert!(
        e.contains("model.safetensors") && e.contains("models/export.py"),
        "{e}"
    );
    assert_eq!(rows(&r, "ort")[0]["status"], "ok");
    assert_eq!(rows(&r, "tract")[0]["parity"]["status"], "pass");
    assert_eq!(rows(&r, "candle")[0]["parity"]["status"], "pass");
}

/// A bare .onnx with no companion files: every runtime that reads ONNX measures it in
/// parity, the checkpoint engine is skipped with its reason, and the run exits 0.
#[test]
fn a_plain_onnx_file_is_measured_by_every_onnx_runtime_and_exits_0() {
    let d = tmp("plain");
    let onnx = d.join("encoder.onnx");
    std::fs::copy(fixture().join("model.onnx"), &onnx).unwrap();
    let out = d.join("res");
    let run = compare(&onnx, &out, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = results(&out);
    assert_eq!(r["model"]["name"], "encoder");
    assert_eq!(rows(&r, "ort")[0]["parity"]["status"], "reference");
    assert_eq!(rows(&r, "tract")[0]["parity"]["status"], "pass");
    assert_eq!(rows(&r, "candle")[0]["parity"]["status"], "pass");
    let native = rows(&r, "candle-native")[0];
    assert_eq!(native["status"], "skipped");
    let e = native["error"].as_str().unwrap().to_string();
    assert!(e.contains("config.json"), "{e}");
    assert!(
        run.stdout
            .contains("skipped: candle-native cannot run this model here"),
        "{}",
        run.stdout
    );
}

/// A bare .onnx the project has never seen, with int32, bool, float32 and float16 inputs and
/// a float and an integer output: ort, tract and candle measure it in parity, inputs of every
/// type generated, and the run exits 0.
#[test]
fn a_model_with_four_input_types_and_two_outputs_runs_everywhere() {
    let d = tmp("mixed");
    let onnx = d.join("mixed.onnx");
    onnx_models::write_mixed_model(&onnx);
    let out = d.join("res");
    let run = compare(&onnx, &out, &["--batch", "3"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = results(&out);
    assert_eq!(r["model"]["inputs"].as_array().unwrap().len(), 4);
    assert_eq!(rows(&r, "ort")[0]["parity"]["status"], "reference");
    for rt in ["tract", "candle"] {
        let row = rows(&r, rt)[0];
        assert_eq!(row["status"], "ok", "{rt}: {row}");
        assert_eq!(row["parity"]["status"], "pass", "{rt}: {row}");
        assert_eq!(row["shapes"]["h"], serde_json::json!([3, 4]), "{rt}");
        // Both outputs compared.
        assert_eq!(
            row["parity"]["outputs"].as_array().unwrap().len(),
            2,
            "{rt}: {row}"
        );
    }
    assert_eq!(rows(&r, "candle-native")[0]["status"], "skipped");
}

/// An operator candle has no implementation of (the int8 graph's integer matmuls): the
/// candle rows are skipped naming the operators, the run still exits 0.
#[test]
fn an_operator_candle_lacks_skips_its_rows_naming_it() {
    let out = tmp("int8-ops").join("res");
    let run = compare(
        &fixture(),
        &out,
        &["--variant", "int8", "--runtimes", "ort,candle"],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = results(&out);
    let c = rows(&r, "candle")[0];
    assert_eq!(c["status"], "skipped");
    let e = c["error"].as_str().unwrap();
    assert!(
        e.contains(
            "candle has no ONNX operator DequantizeLinear, DynamicQuantizeLinear, MatMulInteger"
        ),
        "{e}"
    );
    assert_eq!(rows(&r, "ort")[0]["status"], "ok");
}

/// With no --seq, the sequence is the model's own limit when it is under 128 (the tiny
/// fixture's max_position_embeddings is 64): rows are measured, not skipped.
#[test]
fn the_fixture_with_no_flags_is_measured() {
    let out = tmp("noflags").join("res");
    let run = harness(&[
        "compare",
        "--model",
        fixture().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--warmup-time",
        "10ms",
        "--min-time",
        "50ms",
        "--min-samples",
        "10",
        "--no-overhead",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = results(&out);
    let all = r["scenarios"].as_array().unwrap();
    assert_eq!(all.len(), 4, "{}", run.stdout);
    for s in all {
        assert_eq!(s["status"], "ok", "{s}");
        assert_eq!(s["seq"], 64, "{s}");
    }
}

#[test]
fn an_unsupported_architecture_is_unsupported_by_candle_not_an_error_for_the_run() {
    let model = fixture_copy("arch", |d| {
        let c = std::fs::read_to_string(d.join("config.json")).unwrap();
        std::fs::write(d.join("config.json"), c.replace("\"bert\"", "\"gpt2\"")).unwrap();
    });
    let out = model.parent().unwrap().join("res");
    let run = compare(&model, &out, &[]);
    let r = results(&out);
    let e = rows(&r, "candle-native")[0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with("unsupported by candle-native: model_type 'gpt2'"),
        "{e}"
    );
    assert_eq!(rows(&r, "candle-native")[0]["status"], "skipped");
    assert_eq!(rows(&r, "tract")[0]["parity"]["status"], "pass");
    // The graph engine does not read config.json: it runs the graph.
    assert_eq!(rows(&r, "candle")[0]["parity"]["status"], "pass");
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run
        .stdout
        .lines()
        .any(|l| l.starts_with("candle-native") && l.ends_with("SKIP")));
}

#[test]
fn list_shows_every_runtime_ready() {
    let run = in_process(&["list", "--json", "--device", "cpu"]);
    assert_eq!(run.code, 0);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let names: Vec<&str> = v["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["runtime"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ort", "tract", "candle", "candle-native", "null"]);
    for r in v["runtimes"].as_array().unwrap() {
        assert_eq!(r["status"], "ready", "{r}");
        assert_eq!(r["device"], "cpu");
    }
}

/// This machine has no GPU, no driver, and the CPU build of ONNX Runtime: each runtime says
/// exactly why it cannot use one.
#[test]
fn list_says_why_each_runtime_cannot_use_a_gpu_here() {
    let run = harness(&["list", "--json"]);
    assert_eq!(run.code, 0);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let reason = |rt: &str, dev: &str| -> String {
        let r = v["runtimes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["runtime"] == rt && r["device"] == dev)
            .unwrap_or_else(|| panic!("no {rt} {dev} row"));
        assert_eq!(r["status"], "unavailable", "{r}");
        r["reason"].as_str().unwrap().to_string()
    };
    let ort = reason("ort", "cuda:0");
    assert!(
        ort.contains("has no CUDA execution provider (it is the CPU build)")
            && ort.contains("onnxruntime-gpu==1.31.1"),
        "{ort}"
    );
    assert!(reason("ort", "tensorrt:0").contains("has no TensorRT execution provider"));
    assert!(reason("tract", "cuda:0").contains("CPU only"));
    let native = reason("candle-native", "cuda:0");
    assert!(
        native.contains("no CUDA support") && native.contains("--features candle-cuda"),
        "{native}"
    );
    assert!(reason("candle-native", "tensorrt:0").contains("candle runs on cuda"));
    assert!(reason("candle", "cuda:0").contains("graph engine runs on the CPU"));
    let text = harness(&["list"]);
    if has_nvidia_driver() {
        // What NVML reports on this machine: each GPU named, with its memory.
        let gpus = v["gpus"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", v["gpus"]));
        assert!(!gpus.is_empty(), "a driver but no GPU: {}", v["gpus"]);
        for g in gpus {
            assert!(!g["name"].as_str().unwrap().is_empty(), "{g}");
            assert!(g["memory_total_bytes"].as_u64().unwrap() > 1 << 30, "{g}");
        }
        assert!(text.stdout.contains("gpu 0: "), "{}", text.stdout);
    } else {
        assert!(
            v["gpus"]["unavailable"]
                .as_str()
                .unwrap()
                .starts_with("no NVML"),
            "{}",
            v["gpus"]
        );
        assert!(text.stdout.contains("gpus: no NVML"), "{}", text.stdout);
    }
}

/// Whether this machine has NVIDIA's driver loaded (then NVML answers).
fn has_nvidia_driver() -> bool {
    std::path::Path::new("/proc/driver/nvidia/version").exists()
}

#[test]
fn gpu_devices_give_skipped_rows_with_reasons_and_the_cpu_rows_still_run() {
    let out = tmp("gpu").join("res");
    let run = compare(
        &fixture(),
        &out,
        &["--runtimes", "ort,candle", "--device", "cpu,cuda"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = results(&out);
    let rows = v["scenarios"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        match r["device"].as_str().unwrap() {
            "cpu" => {
                assert_eq!(r["status"], "ok", "{r}");
                assert!(r["parity"]["status"] == "pass" || r["parity"]["status"] == "reference");
            }
            "cuda:0" => {
                assert_eq!(r["status"], "skipped", "{r}");
                assert_eq!(r["error_kind"], "device-unavailable");
                assert!(r["id"].as_str().unwrap().contains("/cuda:0/"));
                let e = r["error"].as_str().unwrap();
                assert!(
                    e.contains("CUDA execution provider")
                        || e.contains("no CUDA support")
                        || e.contains("graph engine runs on the CPU"),
                    "{e}"
                );
            }
            d => panic!("unexpected device {d}"),
        }
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .contains(",gpu_energy_j,gpu_energy_per_item_mj,"));
    let env = &v["environment"];
    if has_nvidia_driver() {
        assert!(!env["nvml_gpus"].as_array().unwrap().is_empty(), "{env}");
    } else {
        assert!(env["nvml_unavailable"]
            .as_str()
            .unwrap()
            .starts_with("no NVML"));
    }
    let bad = in_process(&[
        "compare",
        "--model",
        fixture().to_str().unwrap(),
        "--device",
        "tpu",
    ]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("unknown device 'tpu'"),
        "{}",
        bad.stderr
    );
}

#[test]
fn a_runtime_out_of_tolerance_is_marked_fail_in_every_output() {
    let out = tmp("fail").join("res");
    // No float runtime reproduces another bit for bit across 256 elements.
    let run = compare(
        &fixture(),
        &out,
        &["--runtimes", "ort,candle", "--atol", "1e-12", "--rtol", "0"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let candle_line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("candle"))
        .unwrap();
    assert!(candle_line.ends_with("FAIL"), "{candle_line}");
    assert!(
        run.stdout.contains("parity FAIL against ort"),
        "{}",
        run.stdout
    );
    let r = results(&out);
    assert_eq!(rows(&r, "candle")[0]["parity"]["status"], "fail");
    assert!(
        rows(&r, "candle")[0]["parity"]["max_abs_diff"]
            .as_f64()
            .unwrap()
            > 1e-12
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let row = csv.lines().find(|l| l.starts_with("candle,")).unwrap();
    assert_eq!(row.split(',').nth(14), Some("FAIL"), "{row}");
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.lines()
            .any(|l| l.starts_with("| candle |") && l.ends_with("| FAIL |")),
        "{md}"
    );
}

#[test]
fn precision_variants_show_accuracy_against_fp32_and_skip_what_cannot_run() {
    let out = tmp("variants").join("res");
    let run = compare(&fixture(), &out, &["--variant", "fp32,fp16,bf16,int8"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = results(&out);
    let get = |rt: &str, v: &str| -> Value {
        r["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["runtime"] == rt && s["variant"] == v)
            .unwrap_or_else(|| panic!("no {rt} {v}"))
            .clone()
    };
    for (rt, v) in [
        ("ort", "fp16"),
        ("tract", "fp16"),
        ("candle", "fp16"),
        ("candle-native", "fp16"),
        ("candle-native", "bf16"),
        ("ort", "int8"),
        ("tract", "int8"),
    ] {
        let s = get(rt, v);
        assert_eq!(s["status"], "ok", "{rt} {v}: {s}");
        let p = &s["parity"];
        assert_eq!(p["status"], "pass", "{rt} {v}: {p}");
        assert_eq!(p["reference"], "ort");
        assert_eq!(p["reference_variant"], "fp32");
        // Lower precision really differs from fp32, and stays close.
        let d = p["max_abs_diff"].as_f64().unwrap();
        assert!(d > 1e-5 && d < 1.0, "{rt} {v}: {d}");
        assert!(p["min_cosine"].as_f64().unwrap() >= p["min_cosine_required"].as_f64().unwrap());
    }
    assert!(get("ort", "int8")["applied"]["model_file"]
        .as_str()
        .unwrap()
        .ends_with("model.int8.onnx"));
    assert_eq!(get("candle-native", "bf16")["applied"]["dtype"], "bf16");
    for (rt, v, why) in [
        ("ort", "bf16", "no model.bf16.onnx"),
        ("tract", "bf16", "no model.bf16.onnx"),
        ("candle", "bf16", "no model.bf16.onnx"),
        ("candle", "int8", "candle has no ONNX operator"),
        (
            "candle-native",
            "int8",
            "unsupported by candle-native: int8",
        ),
    ] {
        let s = get(rt, v);
        assert_eq!(s["status"], "skipped", "{rt} {v}");
        assert!(
            s["error"].as_str().unwrap().contains(why),
            "{rt} {v}: {}",
            s["error"]
        );
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv
        .lines()
        .any(|l| l.starts_with("candle-native,cpu,bf16,1,8,1,1,")));
}

#[test]
fn an_impossible_accuracy_demand_fails_the_variant() {
    let out = tmp("variant-fail").join("res");
    let run = compare(
        &fixture(),
        &out,
        &[
            "--variant",
            "fp32,int8",
            "--runtimes",
            "ort",
            "--min-cosine",
            "0.9999999",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let r = results(&out);
    let int8 = r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["variant"] == "int8")
        .unwrap();
    assert_eq!(int8["parity"]["status"], "fail");
    assert!(int8["parity"]["note"]
        .as_str()
        .unwrap()
        .contains("below the 0.9999999"));
}

#[test]
fn concurrency_and_open_loop_rows() {
    let out = tmp("conc").join("res");
    let run = compare(
        &fixture(),
        &out,
        &["--runtimes", "ort,candle", "--concurrency", "1,2"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = results(&out);
    let rows: Vec<&Value> = r["scenarios"].as_array().unwrap().iter().collect();
    assert_eq!(rows.len(), 4);
    let c2 = rows
        .iter()
        .find(|s| s["runtime"] == "candle" && s["concurrency"] == 2)
        .unwrap();
    assert_eq!(c2["mode"], "closed-loop");
    // candle's forward takes the model by shared reference: one copy of the weights; ort's
    // run takes its session mutably: one session per worker.
    assert!(c2["applied"]["sharing"]
        .as_str()
        .unwrap()
        .starts_with("shared model"));
    let o2 = rows
        .iter()
        .find(|s| s["runtime"] == "ort" && s["concurrency"] == 2)
        .unwrap();
    assert!(o2["applied"]["sharing"]
        .as_str()
        .unwrap()
        .contains("one model instance per worker"));
    assert_eq!(c2["parity"]["status"], "pass");
    assert!(c2["id"].as_str().unwrap().ends_with("/c2"));

    let out = tmp("open").join("res");
    let run = compare(
        &fixture(),
        &out,
        &[
            "--runtimes",
            "tract",
            "--rate",
            "300",
            "--arrivals",
            "constant",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = results(&out);
    let s = &r["scenarios"][0];
    assert_eq!(s["mode"], "open-loop");
    assert_eq!(s["rate"], 300.0);
    let o = &s["open_loop"];
    assert_eq!(o["arrivals"], "constant");
    assert!(
        (o["achieved_rate"].as_f64().unwrap() - 300.0).abs() < 60.0,
        "{o}"
    );
    assert!(o["uncorrected"]["samples"].as_u64().unwrap() >= 10);
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(
        csv.lines().nth(1).unwrap().contains(",open-loop,300.000,"),
        "{csv}"
    );
    assert!(run.stdout.contains("@300/s"), "{}", run.stdout);
}

#[test]
fn pinning_every_thread_is_recorded_and_a_bad_list_is_refused() {
    let out = tmp("pin").join("res");
    let run = compare(
        &fixture(),
        &out,
        &[
            "--runtimes",
            "ort,tract",
            "--threads",
            "2",
            "--pin",
            "compact",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = results(&out);
    assert!(r["settings"]["pinning"]
        .as_str()
        .unwrap()
        .contains("round robin over CPUs"));
    // The helper already passes --threads 1: rows at 1 then 2 threads.
    let ort = rows(&r, "ort")[1];
    assert_eq!(ort["threads"], 2);
    assert_eq!(ort["applied"]["measuring_thread_cpu"], "CPU 0");
    assert!(ort["applied"]["worker_cpus"]
        .as_str()
        .unwrap()
        .contains("intra_op_thread_affinities 2"));
    let tract = rows(&r, "tract")[1];
    assert!(tract["applied"]["worker_cpus"]
        .as_str()
        .unwrap()
        .contains("[0, 1]"));

    let run = compare_in_process(&fixture(), &out, &["--pin", "0,64"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("CPU 64 is not online"),
        "{}",
        run.stderr
    );
}

/// The CLI takes its runtime names from the runtimes' registry: an unknown one is refused
/// with the list of those this build has.
#[test]
fn an_unknown_runtime_is_refused_with_the_registered_names() {
    let out = tmp("unknown-rt").join("res");
    let run = compare_in_process(&fixture(), &out, &["--runtimes", "ort,onnxruntime-web"]);
    assert_eq!(run.code, 2);
    for name in runtimes::names() {
        assert!(run.stderr.contains(name), "{name}: {}", run.stderr);
    }
    assert!(!out.exists(), "nothing is written for a refused command");
}

/// Values that cannot be right, and sizes that cannot fit, are refused before anything is
/// loaded or allocated, with exit status 2 and the reason; nothing is written.
#[test]
fn impossible_values_and_sizes_are_refused_before_any_work() {
    let out = tmp("bounds").join("res");
    let cases: [(&[&str], &str); 10] = [
        (&["--batch", "99999999"], "would need"),
        (&["--batch", "4294967297"], "would need"),
        (
            &["--shape", "input_ids=18446744073709551615x2"],
            "would need",
        ),
        (&["--shape", "input_ids=1000000000x16"], "would need"),
        (&["--threads", "10000"], "four per CPU"),
        (&["--atol", "nan"], "tolerance"),
        (&["--rtol", "inf"], "tolerance"),
        (&["--min-cosine", "2"], "at most 1"),
        (&["--max-time", "0s"], "longer than 0s"),
        (&["--rate", "1e308"], "at most"),
    ];
    for (extra, says) in cases {
        let run = compare_in_process(&fixture(), &out, extra);
        assert_eq!(run.code, 2, "{extra:?}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{extra:?}: {}", run.stderr);
        assert!(!out.exists(), "{extra:?} wrote results");
    }
    let run = in_process(&["load", "--target", "http://127.0.0.1:9", "--timeout", "0s"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("longer than 0s"), "{}", run.stderr);
}

/// A pipe named like a model is refused at once instead of blocking the first read forever.
#[test]
fn a_fifo_named_like_a_model_is_refused() {
    let d = tmp("fifo");
    let fifo = d.join("x.onnx");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path in a folder this test owns.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let run = compare_in_process(&fifo, &d.join("res"), &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("not a regular file"), "{}", run.stderr);
}

/// When every scenario is skipped nothing was measured: the run says so and exits 1.
#[test]
fn a_run_that_measures_nothing_says_so_and_fails() {
    let out = tmp("all-skipped").join("res");
    let run = harness(&[
        "compare",
        "--model",
        fixture().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--seq",
        "100",
        "--runtimes",
        "ort,tract",
        "--no-overhead",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("nothing was measured: every scenario was skipped"),
        "{}",
        run.stdout
    );
    let r = results(&out);
    assert!(r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "skipped"));
}

#[test]
fn cpu_idle_os_leaves_the_machine_s_policy_and_records_it() {
    let out = tmp("cpu-idle-os").join("res");
    let run = compare(
        &fixture(),
        &out,
        &["--runtimes", "ort", "--batch", "1", "--cpu-idle", "os"],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let idle = results(&out)["environment"]["cpu_idle"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(idle.starts_with("os (") && idle.ends_with(')'), "{idle}");
    assert!(!run.stderr.contains("--cpu-idle"), "{}", run.stderr);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("idle CPUs") && html.contains(&idle),
        "the report's environment table shows what was recorded"
    );
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains(&format!("Idle CPUs (`--cpu-idle`): {idle}.")),
        "{md}"
    );
    let bad = compare(&fixture(), &out, &["--cpu-idle", "sometimes"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("shallow") && bad.stderr.contains("os"),
        "{}",
        bad.stderr
    );
}
