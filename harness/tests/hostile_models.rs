//! Hostile models: a runtime that hangs is stopped at its phase deadline with a row that
//! says so, impossible declared dims are refused, and a seeded fuzz suite of mutated ONNX
//! files (byte flips, truncations, protobuf-valid graph mutations) that must never make the
//! harness panic, abort or hang, must name the cause of every failure and keep every
//! runtime's row.
//!
//! The fuzz suite runs `FUZZ_MODELS` mutants (100 by default, under a minute) from seed
//! `FUZZ_SEED`; run it longer by hand:
//! `FUZZ_MODELS=1000 cargo test --release -p harness --test hostile_models fuzz -- --nocapture`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_onnx::onnx::{self, attribute_proto::AttributeType, tensor_shape_proto};
use serde_json::Value;

mod common;
#[path = "common/onnx.rs"]
mod onnx_models;
use common::{fixture, harness_within, results, tmp, Bounded};
use onnx_models::{read_model, write_model};

fn fixture_model(name: &str) -> PathBuf {
    fixture().join("..").join(name).join("model.onnx")
}

/// A short `harness compare` of `model` on `runtimes`, each phase bounded by `phase`.
fn quick<'a>(model: &'a Path, out: &'a Path, runtimes: &'a str, phase: &'a str) -> Vec<&'a str> {
    vec![
        "compare",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--runtimes",
        runtimes,
        "--batch",
        "1",
        "--seq",
        "8",
        "--threads",
        "1",
        "--warmup",
        "1",
        "--warmup-time",
        "0s",
        "--warmup-max",
        "0s",
        "--target-ci",
        "off",
        "--min-time",
        "10ms",
        "--min-samples",
        "3",
        "--max-time",
        "1s",
        "--no-overhead",
        "--phase-timeout",
        phase,
    ]
}

fn rows(out: &Path) -> Vec<Value> {
    results(out)["scenarios"].as_array().unwrap().clone()
}

fn row<'a>(rows: &'a [Value], runtime: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["runtime"] == runtime)
        .unwrap_or_else(|| panic!("no {runtime} row in {rows:?}"))
}

/// tiny-bert with its first LayerNormalization's axis at i64::MIN: tract's analysis spins on
/// it for minutes (ONNX Runtime refuses it at load).
fn spinning_model(dir: &Path) -> PathBuf {
    let mut m = read_model(&fixture_model("tiny-bert"));
    let g = m.graph.as_mut().unwrap();
    let ln = g
        .node
        .iter_mut()
        .find(|n| n.op_type == "LayerNormalization")
        .unwrap();
    ln.attribute
        .iter_mut()
        .find(|a| a.name == "axis")
        .unwrap()
        .i = i64::MIN;
    let path = dir.join("spinning.onnx");
    write_model(&m, &path);
    path
}

#[test]
fn a_runtime_that_spins_is_stopped_at_its_deadline_and_the_other_rows_are_kept() {
    let dir = tmp("spin");
    let model = spinning_model(&dir);
    let out = dir.join("res");
    let run = harness_within(
        &quick(&model, &out, "ort,tract,null", "3s"),
        &[],
        Duration::from_secs(60),
    );
    assert!(!run.hung, "still running after 60 s: {}", run.stderr);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.elapsed < Duration::from_secs(30), "{:?}", run.elapsed);
    let rows = rows(&out);
    let tract = row(&rows, "tract");
    assert_eq!(tract["status"], "error");
    assert_eq!(tract["error_kind"], "timeout");
    let e = tract["error"].as_str().unwrap();
    assert!(
        e.contains("tract did not finish preparing") && e.contains("its worker was stopped"),
        "{e}"
    );
    assert_eq!(row(&rows, "ort")["error_kind"], "load");
    // The runtime after the one that hung still ran.
    assert_eq!(row(&rows, "null")["status"], "ok");
}

/// Every phase has a deadline: a runtime made to hang while loading, preparing, measuring
/// or finishing is stopped within it, and the other runtime is measured.
#[test]
fn each_phase_has_a_deadline() {
    let dir = tmp("phases");
    let model = fixture_model("tiny-bert");
    for phase in ["load", "prepare", "measure", "finish"] {
        let out = dir.join(phase);
        let hang = format!("ort:1:{phase}");
        let run = harness_within(
            &quick(&model, &out, "ort,tract", "2s"),
            &[("HARNESS_FAULT_HANG", &hang)],
            Duration::from_secs(60),
        );
        assert!(!run.hung, "{phase}: still running after 60 s");
        // Phase 2 s (+ 1 s of --max-time when measuring), then tract's own run.
        assert!(
            run.elapsed < Duration::from_secs(25),
            "{phase}: {:?}",
            run.elapsed
        );
        let rows = rows(&out);
        assert_eq!(row(&rows, "tract")["status"], "ok", "{phase}");
        let ort = row(&rows, "ort");
        if phase == "finish" {
            // Every row was in before the worker hung; only the worker was stopped.
            assert_eq!(ort["status"], "ok");
            assert_eq!(run.code, Some(0), "{}", run.stderr);
            assert!(
                run.stderr.contains("did not finish finishing"),
                "{}",
                run.stderr
            );
        } else {
            assert_eq!(run.code, Some(1), "{phase}: {}", run.stderr);
            assert_eq!(ort["error_kind"], "timeout", "{phase}");
            let words = match phase {
                "load" => "did not finish loading within its deadline of 2s",
                "prepare" => "did not finish preparing ort/cpu/fp32/b1/s8/t1",
                _ => "did not finish measuring ort/cpu/fp32/b1/s8/t1 within its deadline of 3s",
            };
            let e = ort["error"].as_str().unwrap();
            assert!(e.contains(words), "{phase}: {e}");
        }
    }
}

/// In this process a runtime's thread cannot be stopped: the run ends at the deadline with
/// the row written, instead of hanging.
#[test]
fn in_process_a_hang_ends_the_run_with_its_row_written() {
    let dir = tmp("phase-inproc");
    let out = dir.join("res");
    let model = fixture_model("tiny-bert");
    let mut args = quick(&model, &out, "ort,tract", "2s");
    args.extend(["--isolate", "none"]);
    let run = harness_within(
        &args,
        &[("HARNESS_FAULT_HANG", "tract:1:prepare")],
        Duration::from_secs(60),
    );
    assert!(!run.hung);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("tract cannot be stopped inside this process (--isolate none)"),
        "{}",
        run.stderr
    );
    let r = results(&out);
    assert_eq!(r["interrupted"], true);
    let rows = rows(&out);
    // ort ran first and is kept; tract's row says what happened.
    assert_eq!(row(&rows, "ort")["status"], "ok");
    let tract = row(&rows, "tract");
    assert_eq!(tract["error_kind"], "timeout");
    let e = tract["error"].as_str().unwrap();
    assert!(
        e.contains("the run ended here (a thread cannot be stopped)"),
        "{e}"
    );
}

#[test]
fn declared_input_dims_of_zero_or_below_are_refused() {
    let dir = tmp("dims");
    for (value, words) in [
        (
            0i64,
            "declares dim 1 as 0 (no elements: nothing to measure)",
        ),
        (-5, "declares dim 1 as -5, which is not a size"),
    ] {
        let mut m = read_model(&fixture_model("tiny-bert"));
        let input = &mut m.graph.as_mut().unwrap().input[0];
        let Some(onnx::type_proto::Value::TensorType(t)) =
            input.r#type.as_mut().unwrap().value.as_mut()
        else {
            panic!("not a tensor input")
        };
        t.shape.as_mut().unwrap().dim[1].value =
            Some(tensor_shape_proto::dimension::Value::DimValue(value));
        let path = dir.join(format!("dim{value}.onnx"));
        write_model(&m, &path);
        let out = dir.join(format!("res{value}"));
        let run = harness_within(
            &quick(&path, &out, "ort", "10s"),
            &[],
            Duration::from_secs(60),
        );
        assert_eq!(run.code, Some(2), "{value}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("input 'input_ids' {words}")),
            "{value}: {}",
            run.stderr
        );
    }
}

/// SplitMix64: a seeded, dependency-free stream of numbers for the mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// Integers a mutated attribute or dim takes: the extremes and the off-by-ones.
const NASTY: [i64; 10] = [
    i64::MIN,
    i64::MAX,
    -1,
    0,
    1,
    -2,
    7,
    1 << 31,
    1 << 40,
    -(1 << 33),
];

/// One protobuf-valid mutation of the graph; returns its name.
fn mutate_graph(m: &mut onnx::ModelProto, rng: &mut Rng) -> &'static str {
    let g = m.graph.as_mut().unwrap();
    let n_nodes = g.node.len();
    match rng.below(12) {
        0 => {
            let with: Vec<usize> = (0..n_nodes)
                .filter(|&i| {
                    g.node[i]
                        .attribute
                        .iter()
                        .any(|a| a.r#type == AttributeType::Int as i32)
                })
                .collect();
            if with.is_empty() {
                return "none";
            }
            let n = &mut g.node[*rng.pick(&with)];
            let ints: Vec<usize> = (0..n.attribute.len())
                .filter(|&i| n.attribute[i].r#type == AttributeType::Int as i32)
                .collect();
            n.attribute[*rng.pick(&ints)].i = *rng.pick(&NASTY);
            "int attribute"
        }
        1 => {
            let with: Vec<usize> = (0..n_nodes)
                .filter(|&i| g.node[i].attribute.iter().any(|a| !a.ints.is_empty()))
                .collect();
            if with.is_empty() {
                return "none";
            }
            let n = &mut g.node[*rng.pick(&with)];
            let a = n.attribute.iter_mut().find(|a| !a.ints.is_empty()).unwrap();
            match rng.below(3) {
                0 => a.ints.clear(),
                1 => a.ints.push(*rng.pick(&NASTY)),
                _ => {
                    let k = rng.below(a.ints.len());
                    a.ints[k] = *rng.pick(&NASTY);
                }
            }
            "ints attribute"
        }
        2 => {
            let inputs = g.input.len();
            let i = &mut g.input[rng.below(inputs)];
            if let Some(onnx::type_proto::Value::TensorType(t)) =
                i.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                match rng.below(4) {
                    0 => t.elem_type = *rng.pick(&[0, 2, 8, 9, 10, 11, 16, 99]),
                    _ => {
                        if let Some(s) = t.shape.as_mut() {
                            let k = rng.below(s.dim.len() + 1);
                            let v = tensor_shape_proto::dimension::Value::DimValue(*rng.pick(&[
                                0,
                                -5,
                                -1,
                                1,
                                3,
                                1 << 30,
                                i64::MAX,
                            ]));
                            match s.dim.get_mut(k) {
                                Some(d) => d.value = Some(v),
                                None => s.dim.push(tensor_shape_proto::Dimension {
                                    value: Some(v),
                                    ..Default::default()
                                }),
                            }
                        }
                    }
                }
            }
            "graph input type or shape"
        }
        3 => {
            if g.initializer.is_empty() {
                return "none";
            }
            let k = rng.below(g.initializer.len());
            let t = &mut g.initializer[k];
            match rng.below(4) {
                0 if !t.dims.is_empty() => {
                    let d = rng.below(t.dims.len());
                    t.dims[d] = *rng.pick(&NASTY);
                }
                1 => t.dims.push(*rng.pick(&[2, 0, -1])),
                2 => {
                    let keep = rng.below(t.raw_data.len() + 1);
                    t.raw_data.truncate(keep);
                    let keep = rng.below(t.float_data.len() + 1);
                    t.float_data.truncate(keep);
                    let keep = rng.below(t.int64_data.len() + 1);
                    t.int64_data.truncate(keep);
                }
                _ => t.data_type = *rng.pick(&[0, 2, 7, 8, 9, 10, 16, 99]),
            }
            "initializer"
        }
        4 => {
            let k = rng.below(n_nodes);
            let other = g.node[rng.below(n_nodes)].op_type.clone();
            g.node[k].op_type = rng.pick(&["NoSuchOp".to_string(), other]).clone();
            "operator type"
        }
        5 => {
            let k = rng.below(n_nodes);
            let names: Vec<String> = g.node.iter().flat_map(|n| n.output.clone()).collect();
            let n = &mut g.node[k];
            if n.input.is_empty() {
                return "none";
            }
            let j = rng.below(n.input.len());
            n.input[j] = match rng.below(3) {
                0 => "dangling".into(),
                // Its own output: a cycle.
                1 => n.output[0].clone(),
                _ => rng.pick(&names).clone(),
            };
            "edge"
        }
        6 => {
            let k = rng.below(n_nodes);
            g.node.remove(k);
            "node removed"
        }
        7 => {
            let a = rng.below(n_nodes);
            let b = rng.below(n_nodes);
            g.node[b].output = g.node[a].output.clone();
            "output written twice"
        }
        8 => {
            let k = rng.below(n_nodes);
            let n = &mut g.node[k];
            if n.attribute.is_empty() {
                return "none";
            }
            let j = rng.below(n.attribute.len());
            n.attribute[j].r#type = *rng.pick(&[0, 1, 2, 3, 4, 6, 7, 8, 99]);
            "attribute type"
        }
        9 => {
            match rng.below(3) {
                0 => m.opset_import.clear(),
                _ => {
                    for o in &mut m.opset_import {
                        o.version = *rng.pick(&[0, 1, 7, 999, -3]);
                    }
                }
            }
            "opset"
        }
        10 => {
            match rng.below(2) {
                0 => g.output.clear(),
                _ => {
                    if let Some(o) = g.output.first_mut() {
                        o.name = "nowhere".into();
                    }
                }
            }
            "graph outputs"
        }
        _ => {
            // Nodes out of topological order.
            let a = rng.below(n_nodes);
            let b = rng.below(n_nodes);
            g.node.swap(a, b);
            "node order"
        }
    }
}

/// A mutated model's bytes and what was done to it.
fn mutant(base: &[u8], rng: &mut Rng) -> (Vec<u8>, String) {
    use prost::Message;
    match rng.below(6) {
        0 => {
            let mut b = base.to_vec();
            let flips = 1 + rng.below(16);
            for _ in 0..flips {
                let k = rng.below(b.len());
                b[k] = rng.next() as u8;
            }
            (b, "byte flips".into())
        }
        1 => {
            let keep = rng.below(base.len());
            (base[..keep].to_vec(), "truncated".into())
        }
        _ => {
            let mut m = onnx::ModelProto::decode(base).unwrap();
            let n = 1 + rng.below(3);
            let what: Vec<&str> = (0..n)
                .map(|_| {
                    // A mutation that found nothing to change is drawn again.
                    (0..8)
                        .map(|_| mutate_graph(&mut m, rng))
                        .find(|w| *w != "none")
                        .unwrap_or("none")
                })
                .collect();
            (m.encode_to_vec(), what.join(" + "))
        }
    }
}

/// What one mutant did to the harness, in words (for the counts), or why it broke a rule.
fn judge(run: &Bounded, out: &Path, runtimes: &[&str]) -> Result<Vec<String>, String> {
    if run.hung {
        return Err(format!("hung past the bound ({:?})", run.elapsed));
    }
    match run.code {
        None => Err(format!("killed by signal {:?}", run.signal)),
        Some(2) => {
            let line = run.stderr.lines().find(|l| l.starts_with("error: "));
            match line {
                Some(l) if l.len() > 20 => Ok(vec!["refused before measuring".into()]),
                _ => Err(format!("exit 2 without a clear error: {}", run.stderr)),
            }
        }
        Some(0 | 1) => {
            let r: Value = std::fs::read_to_string(out.join("results.json"))
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .ok_or("no readable results.json")?;
            let rows = r["scenarios"].as_array().ok_or("no scenarios")?;
            let mut outcomes = Vec::new();
            for rt in runtimes {
                let row = rows
                    .iter()
                    .find(|s| s["runtime"] == *rt)
                    .ok_or(format!("no {rt} row: the runtime's row was lost"))?;
                let status = row["status"].as_str().unwrap_or("?");
                if status == "ok" {
                    if row["measurement"].is_null() {
                        return Err(format!("{rt}: ok without a measurement"));
                    }
                    outcomes.push(format!("{rt}: ok"));
                    continue;
                }
                let error = row["error"].as_str().unwrap_or("");
                let kind = row["error_kind"].as_str().unwrap_or("");
                if error.trim().is_empty() || kind.is_empty() {
                    return Err(format!("{rt}: {status} without a cause: {row}"));
                }
                if kind == "worker-died" && !error.contains("panicked:") {
                    // An abort (a signal) says so; only a worker that exited in silence
                    // would leave the cause unnamed.
                    if !error.contains("signal") {
                        return Err(format!("{rt}: a worker died without a cause: {error}"));
                    }
                }
                outcomes.push(format!("{rt}: {status} ({kind})"));
                if kind == "worker-died" || kind == "timeout" {
                    // Worth a look by hand: the model is kept and the cause printed.
                    let short: String = error.chars().take(240).collect();
                    outcomes.push(format!("NOTABLE {rt}: {short}"));
                }
            }
            // A row in error makes the run fail; a clean exit means no row did.
            let errors = outcomes.iter().any(|o| o.contains(": error"));
            if errors && run.code == Some(0) {
                return Err(format!("exit 0 with rows in error: {outcomes:?}"));
            }
            Ok(outcomes)
        }
        Some(c) => Err(format!("exit {c}: {}", run.stderr)),
    }
}

#[test]
fn fuzz_mutated_models_never_panic_abort_or_hang() {
    let n: usize = std::env::var("FUZZ_MODELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261130);
    let runtimes = ["ort", "tract", "candle"];
    let bases: Vec<(&str, Vec<u8>)> = ["tiny-bert", "tiny-cnn", "tiny-vit"]
        .iter()
        .map(|b| (*b, std::fs::read(fixture_model(b)).unwrap()))
        .collect();
    let dir = tmp("fuzz");
    let mut rng = Rng(seed);
    let mut by_mutation: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    let mut broken = Vec::new();
    let mut notable = Vec::new();
    let mut slowest = Duration::ZERO;
    let t = std::time::Instant::now();
    for i in 0..n {
        let (base_name, base) = &bases[i % bases.len()];
        let (bytes, what) = mutant(base, &mut rng);
        let kind = what.split(" + ").next().unwrap_or("").to_string();
        *by_mutation.entry(kind).or_default() += 1;
        let model = dir.join(format!("m{i}.onnx"));
        std::fs::write(&model, &bytes).unwrap();
        let out = dir.join(format!("r{i}"));
        // Three runtimes, each phase at most 3 s (measuring: 3 s past --max-time).
        let run = harness_within(
            &quick(&model, &out, &runtimes.join(","), "3s"),
            &[],
            Duration::from_secs(90),
        );
        slowest = slowest.max(run.elapsed);
        match judge(&run, &out, &runtimes) {
            Ok(outcomes) => {
                let mut keep = false;
                for o in outcomes {
                    if let Some(note) = o.strip_prefix("NOTABLE ") {
                        keep = true;
                        notable.push(format!(
                            "mutant {i} of {base_name} ({what}), {}: {note}",
                            model.display()
                        ));
                    } else {
                        *by_outcome.entry(o).or_default() += 1;
                    }
                }
                if !keep {
                    let _ = std::fs::remove_file(&model);
                }
                let _ = std::fs::remove_dir_all(&out);
            }
            Err(why) => {
                *by_outcome.entry("BROKE A RULE".into()).or_default() += 1;
                broken.push(format!(
                    "mutant {i} of {base_name} ({what}), kept at {}: {why}",
                    model.display()
                ));
            }
        }
    }
    eprintln!(
        "fuzz: {n} mutants from seed {seed} in {:.0} s (slowest run {:.1} s)",
        t.elapsed().as_secs_f64(),
        slowest.as_secs_f64()
    );
    eprintln!("mutations (first of each chain):");
    for (k, v) in &by_mutation {
        eprintln!("  {v:6}  {k}");
    }
    eprintln!("outcomes (per runtime row, or per model when refused):");
    for (k, v) in &by_outcome {
        eprintln!("  {v:6}  {k}");
    }
    if !notable.is_empty() {
        eprintln!("workers that died or were stopped (the models are kept):");
        for n in &notable {
            eprintln!("  {n}");
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
