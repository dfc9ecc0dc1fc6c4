//! A sweep split and stitched: `compare --shard K/N` on several machines merged by
//! `harness report`, `compare --resume` after Ctrl-C, merges across machines, and what the
//! environment records for a reviewer.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{fixture, harness, results, tmp};
use serde_json::Value;

/// The sweep of these tests: the fixture, ort and tract, batch 1 and 2, sequence 4 and 8,
/// one thread: four shapes, eight rows.
fn sweep_args<'a>(out: &'a str, min_time: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "compare",
        "--model",
        fixture().to_str().unwrap(),
        "--runtimes",
        "ort,tract",
        "--batch",
        "1,2",
        "--seq",
        "4,8",
        "--threads",
        "1",
        "--target-ci",
        "off",
        "--warmup-time",
        "10ms",
        "--min-time",
        min_time,
        "--min-samples",
        "5",
        "--no-overhead",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !out.is_empty() {
        a.extend(["--out".to_string(), out.to_string()]);
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run(args: &[String]) -> common::Run {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    harness(&a)
}

/// Runs the sweep (see [`sweep_args`]), which must succeed.
fn measured(out: &str, min_time: &str, extra: &[&str]) {
    let r = run(&sweep_args(out, min_time, extra));
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// `harness report DIRS... --out OUT EXTRA...`.
fn report(dirs: &[&Path], out: &Path, extra: &[&str]) -> common::Run {
    let mut a: Vec<&str> = vec!["report"];
    a.extend(dirs.iter().map(|d| d.to_str().unwrap()));
    a.extend(["--out", out.to_str().unwrap()]);
    a.extend_from_slice(extra);
    harness(&a)
}

/// Each row's (id, runtime, batch, seq, threads, variant).
fn settings_of(r: &Value) -> BTreeSet<(String, String, u64, u64, u64, String)> {
    r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["runtime"].as_str().unwrap().to_string(),
                s["batch"].as_u64().unwrap(),
                s["seq"].as_u64().unwrap(),
                s["threads"].as_u64().unwrap(),
                s["variant"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn ids(r: &Value) -> Vec<String> {
    r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn shards_merged_are_the_unsharded_sweep_each_scenario_once() {
    let dir = tmp("shards");
    let whole = dir.join("whole");
    measured(whole.to_str().unwrap(), "50ms", &[]);
    let whole = results(&whole);
    assert_eq!(ids(&whole).len(), 8);

    let mut shard_dirs = Vec::new();
    for k in 0..3 {
        let out = dir.join(format!("shard-{k}"));
        let shard = format!("{k}/3");
        measured(out.to_str().unwrap(), "50ms", &["--shard", &shard]);
        let v = results(&out);
        assert_eq!(v["settings"]["shard"], shard.as_str());
        // A shape's rows stay together, so each shard has its parity reference.
        for s in v["scenarios"].as_array().unwrap() {
            let status = s["parity"]["status"].as_str().unwrap();
            assert!(status == "pass" || status == "reference", "{s}");
        }
        shard_dirs.push(out);
    }
    let counts: Vec<usize> = shard_dirs.iter().map(|d| ids(&results(d)).len()).collect();
    // Four shapes over three shards: no shard empty, none with everything.
    assert!(counts.iter().all(|&c| c > 0 && c < 8), "{counts:?}");

    let merged = dir.join("merged");
    let dirs: Vec<&Path> = shard_dirs.iter().map(|d| d.as_path()).collect();
    let r = report(&dirs, &merged, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = results(&merged);
    let merged_ids = ids(&m);
    let unique: BTreeSet<&String> = merged_ids.iter().collect();
    assert_eq!(
        unique.len(),
        merged_ids.len(),
        "a scenario twice: {merged_ids:?}"
    );
    assert_eq!(settings_of(&m), settings_of(&whole));
    // One machine ran every shard: one environment, no labels.
    assert!(m.get("machines").is_none(), "{}", m["machines"]);
    for s in m["scenarios"].as_array().unwrap() {
        assert!(s.get("machine").is_none(), "{s}");
        assert_eq!(s["merged_runs"].as_u64().unwrap_or(0), 0, "{s}");
    }

    // A shard beyond the count is refused before anything runs.
    let out = dir.join("bad");
    let r = run(&sweep_args(
        out.to_str().unwrap(),
        "50ms",
        &["--shard", "3/3"],
    ));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("shard index 3 is out of range for 3 shards"),
        "{}",
        r.stderr
    );
    assert!(!out.join("results.json").exists());
}

/// Each row's histogram (what it measured), by id.
fn histograms(r: &Value) -> Vec<(String, String)> {
    r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "ok" && s["measurement"]["stop_reason"] != "interrupted")
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["measurement"]["latency"]["histogram"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn resume_after_ctrl_c_completes_the_sweep_and_measures_nothing_twice() {
    let dir = tmp("resume");
    let out = dir.join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(sweep_args(out.to_str().unwrap(), "400ms", &[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_rows(&out, 2);
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let before = results(&out);
    assert_eq!(before["interrupted"], true);
    let kept = histograms(&before);
    assert!(!kept.is_empty() && kept.len() < 8, "{}", kept.len());

    // Resuming with other inputs is refused, and nothing is touched.
    let r = run(&sweep_args(
        "",
        "400ms",
        &["--resume", out.to_str().unwrap(), "--seed", "7"],
    ));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--seed 42, not 7"), "{}", r.stderr);
    assert_eq!(results(&out)["scenarios"], before["scenarios"]);
    // So is resuming with idle CPUs handled otherwise.
    let r = run(&sweep_args(
        "",
        "400ms",
        &["--resume", out.to_str().unwrap(), "--cpu-idle", "os"],
    ));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("it ran with --cpu-idle shallow (")
            && r.stderr.contains("resume with --cpu-idle shallow"),
        "{}",
        r.stderr
    );
    assert_eq!(results(&out)["scenarios"], before["scenarios"]);

    measured("", "50ms", &["--resume", out.to_str().unwrap()]);
    let after = results(&out);
    assert_eq!(after["interrupted"], false);
    assert_eq!(after["resumed_at"].as_array().unwrap().len(), 1);
    let all = ids(&after);
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), 8, "{all:?}");
    assert_eq!(all.len(), 8, "a scenario twice: {all:?}");
    // The rows measured before the interrupt are untouched.
    let now = histograms(&after);
    for (id, h) in &kept {
        assert!(now.contains(&(id.clone(), h.clone())), "{id} changed");
    }
    assert_eq!(now.len(), 8);

    // Resuming a finished run measures nothing.
    measured("", "50ms", &["--resume", out.to_str().unwrap()]);
    let again = results(&out);
    assert_eq!(histograms(&again), now);
    assert_eq!(again["resumed_at"].as_array().unwrap().len(), 2);

    // A folder that holds no run is a clear error.
    let r = run(&sweep_args(
        "",
        "50ms",
        &["--resume", dir.join("none").to_str().unwrap()],
    ));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("give the folder of an earlier"),
        "{}",
        r.stderr
    );
}

/// A copy of the run in `from` as if measured on another machine.
fn as_other_machine(from: &Path, to: &Path) {
    let mut v = results(from);
    v["environment"]["hostname"] = "other-node".into();
    v["environment"]["cpu_model"] = "Another CPU @ 3.0GHz".into();
    std::fs::create_dir_all(to).unwrap();
    std::fs::write(to.join("results.json"), serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn merges_across_machines_keep_each_environment_and_label_rows() {
    let dir = tmp("machines");
    let a = dir.join("a");
    measured(a.to_str().unwrap(), "50ms", &["--shard", "0/2"]);
    let b_here = dir.join("b-here");
    measured(b_here.to_str().unwrap(), "50ms", &["--shard", "1/2"]);
    let b = dir.join("b");
    as_other_machine(&b_here, &b);

    // Shards from two machines: both environments kept, every row labelled.
    let merged = dir.join("merged");
    let r = report(&[&a, &b], &merged, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("on 2 machines"), "{}", r.stderr);
    let m = results(&merged);
    let machines = m["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 2, "{machines:?}");
    assert_eq!(machines[1]["label"], "other-node");
    assert_eq!(
        machines[1]["environment"]["cpu_model"],
        "Another CPU @ 3.0GHz"
    );
    let here = machines[0]["label"].as_str().unwrap().to_string();
    let a_ids: BTreeSet<String> = ids(&results(&a)).into_iter().collect();
    for s in m["scenarios"].as_array().unwrap() {
        let want = if a_ids.contains(s["id"].as_str().unwrap()) {
            here.as_str()
        } else {
            "other-node"
        };
        assert_eq!(s["machine"], want, "{s}");
    }
    let md = std::fs::read_to_string(merged.join("summary.md")).unwrap();
    assert!(md.contains("Merged from 2 machines"), "{md}");
    assert!(md.contains("**other-node**: Another CPU @ 3.0GHz"), "{md}");

    // The same scenarios from two machines are not one population: refused...
    let other_a = dir.join("a-other");
    as_other_machine(&a, &other_a);
    let pooled = dir.join("pooled");
    let r = report(&[&a, &other_a], &pooled, &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("was measured on two machines") && r.stderr.contains("--pool-machines"),
        "{}",
        r.stderr
    );
    // ... unless asked for.
    let r = report(&[&a, &other_a], &pooled, &["--pool-machines"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for s in results(&pooled)["scenarios"].as_array().unwrap() {
        assert_eq!(s["machine"], format!("{here} + other-node").as_str(), "{s}");
        assert_eq!(s["merged_runs"], 2, "{s}");
    }
}

#[test]
fn the_environment_holds_what_a_reviewer_needs_to_reproduce() {
    let out = tmp("environment");
    measured(
        out.to_str().unwrap(),
        "50ms",
        &["--batch", "1", "--seq", "4"],
    );
    let v = results(&out);
    let e = &v["environment"];
    // The checkout, read as the run starts (the tests run from one).
    let git = &e["run_git"];
    assert_eq!(git["commit"].as_str().unwrap().len(), 40, "{git}");
    assert!(git["dirty"].is_boolean(), "{git}");
    // CUDA's libraries: found, or where they were looked for.
    assert!(
        e["cuda_libraries"].as_str().is_some_and(|s| !s.is_empty()),
        "{e}"
    );
    // Python, when the machine has one (the exporter's).
    if Command::new("python3").arg("--version").output().is_ok() {
        let py = &e["python"];
        assert!(py["version"].as_str().unwrap().starts_with('3'), "{py}");
        assert!(py["packages"].is_object(), "{py}");
    }
    // The export's manifest: hashes, opset and the exporter's versions.
    let export = &v["model"]["export"];
    assert_eq!(
        export["sha256"]["model.onnx"].as_str().unwrap().len(),
        64,
        "{export}"
    );
    assert!(export.get("reference").is_none());
}

#[test]
fn a_row_run_again_is_judged_against_the_reference_row_kept() {
    let out = tmp("resume-reference").join("run");
    measured(out.to_str().unwrap(), "50ms", &[]);
    // tract's rows failed (as after a crash); ort's, the reference, were measured.
    let mut v = results(&out);
    for s in v["scenarios"].as_array_mut().unwrap() {
        if s["runtime"] == "tract" {
            s["status"] = "failed".into();
        }
    }
    std::fs::write(out.join("results.json"), serde_json::to_string(&v).unwrap()).unwrap();
    let kept = histograms(&results(&out));
    measured("", "50ms", &["--resume", out.to_str().unwrap()]);
    let after = results(&out);
    assert_eq!(ids(&after).len(), 8, "{:?}", ids(&after));
    for s in after["scenarios"].as_array().unwrap() {
        if s["runtime"] == "tract" {
            // Compared with ort's outputs, computed again for them, not made the reference.
            assert_eq!(s["parity"]["status"], "pass", "{s}");
            assert_eq!(s["status"], "ok", "{s}");
        }
    }
    for (id, h) in kept.iter().filter(|(id, _)| id.starts_with("ort/")) {
        assert!(
            histograms(&after).contains(&(id.clone(), h.clone())),
            "{id} changed"
        );
    }
}
