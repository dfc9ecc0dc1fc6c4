//! The conformance suite every runtime and engine passes. On the committed tiny BERT fixture:
//! it loads, reproduces PyTorch's reference outputs (from the exporter's manifest, including a
//! padded row), runs at several batch/sequence shapes and thread counts, and is deterministic
//! and batch-consistent (one macro generates the same tests for each runtime). On every
//! committed fixture (BERT, a ResNet-style CNN, a ViT): PyTorch's outputs reproduced by each
//! runtime and engine, or a skip where an engine cannot run that model.

use std::path::{Path, PathBuf};

use runtimes::{HostTensor, LoadOptions, Loaded, ModelFiles, ModelInfo, TensorData, Variant};

const HIDDEN: usize = 32;
const VOCAB: i64 = 128;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/tiny-bert")
}

fn load(runtime: &str, threads: usize) -> (Box<dyn Loaded>, ModelInfo) {
    load_variant(runtime, threads, Variant::Fp32)
}

fn load_variant(runtime: &str, threads: usize, variant: Variant) -> (Box<dyn Loaded>, ModelInfo) {
    let files = ModelFiles::resolve(&fixture()).expect("fixture files");
    let info = ModelInfo::read(&files).expect("fixture info");
    let rt = runtimes::by_name(runtime).expect("runtime compiled in");
    let opts = LoadOptions {
        threads,
        variant,
        ..LoadOptions::default()
    };
    let loaded = rt
        .load(&files, &info, &opts)
        .unwrap_or_else(|e| panic!("{runtime} failed to load the fixture: {e}"));
    (loaded, info)
}

/// Deterministic BERT inputs: ids spread over the vocabulary, mask of ones, types of zeros.
fn inputs(batch: usize, seq: usize) -> Vec<HostTensor> {
    runtimes::tensor::bert_inputs(batch, seq, |i| (i as i64 * 37 + 11) % VOCAB)
}

fn f32s(t: &HostTensor) -> &[f32] {
    match &t.data {
        TensorData::F32(v) => v,
        other => panic!("expected f32 output, got {:?}", other.dtype()),
    }
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn matches_pytorch_reference(runtime: &str, threads: usize) {
    fixture_matches_pytorch("tiny-bert", runtime, threads);
}

fn runs_at_several_shapes(runtime: &str) {
    let (mut m, _) = load(runtime, 1);
    for (b, s) in [(1, 1), (1, 7), (3, 16), (2, 64)] {
        m.prepare(&inputs(b, s))
            .unwrap_or_else(|e| panic!("{runtime} {b}x{s}: {e}"));
        m.run().unwrap_or_else(|e| panic!("{runtime} {b}x{s}: {e}"));
        let out = m.infer().unwrap();
        assert_eq!(out[0].shape, vec![b, s, HIDDEN], "{runtime} {b}x{s}");
        assert!(
            f32s(&out[0]).iter().all(|x| x.is_finite()),
            "{runtime} {b}x{s}"
        );
    }
}

fn is_deterministic_and_batch_consistent(runtime: &str) {
    let (mut m, _) = load(runtime, 2);
    let batch = inputs(3, 12);
    m.prepare(&batch).unwrap();
    let a = m.infer().unwrap();
    let b = m.infer().unwrap();
    assert_eq!(f32s(&a[0]), f32s(&b[0]), "{runtime}: two runs differ");
    // Each row of the batch equals the same row run alone.
    let per_row = 12 * HIDDEN;
    for row in 0..3 {
        let single: Vec<HostTensor> = batch
            .iter()
            .map(|t| {
                let TensorData::I64(v) = &t.data else {
                    unreachable!()
                };
                HostTensor::new(
                    t.name.clone(),
                    vec![1, 12],
                    TensorData::I64(v[row * 12..(row + 1) * 12].to_vec()),
                )
            })
            .collect();
        m.prepare(&single).unwrap();
        let one = m.infer().unwrap();
        let d = max_abs(
            f32s(&one[0]),
            &f32s(&a[0])[row * per_row..(row + 1) * per_row],
        );
        assert!(d < 1e-5, "{runtime}: row {row} alone differs by {d}");
    }
}

fn rejects_a_missing_input(runtime: &str) {
    let (mut m, _) = load(runtime, 1);
    let only_mask: Vec<HostTensor> = inputs(1, 4).into_iter().skip(1).collect();
    let e = m.prepare(&only_mask).map(|_| ()).and_then(|_| m.run());
    assert!(e.is_err(), "{runtime} ran without input_ids");
}

/// A lower-precision variant stays close to PyTorch's fp32 outputs (and is finite: a NaN
/// anywhere fails the cosine).
fn variant_keeps_accuracy(runtime: &str, variant: Variant, min_cosine: f64) {
    let (mut m, info) = load_variant(runtime, 1, variant);
    let r = info.reference.unwrap();
    m.prepare(&r.inputs).unwrap();
    let out = m.infer().unwrap();
    let (a, b) = (f32s(&out[0]), f32s(&r.outputs[0]));
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let cos = dot / (na * nb);
    assert!(cos >= min_cosine, "{runtime} {variant:?}: cosine {cos}");
    assert!(
        max_abs(a, b) > 0.0,
        "{runtime} {variant:?} is bit-identical to fp32: not the variant"
    );
}

#[test]
fn variants_keep_accuracy() {
    for (rt, v, min) in [
        ("ort", Variant::Fp16, 0.999),
        ("tract", Variant::Fp16, 0.999),
        ("candle", Variant::Fp16, 0.999),
        ("candle-native", Variant::Fp16, 0.999),
        ("candle-native", Variant::Bf16, 0.99),
        ("ort", Variant::Int8, 0.95),
        ("tract", Variant::Int8, 0.95),
    ] {
        variant_keeps_accuracy(rt, v, min);
    }
}

macro_rules! conformance {
    ($($rt:ident => $name:literal),*) => {$(
        mod $rt {
            #[test]
            fn matches_pytorch_reference_1_thread() {
                super::matches_pytorch_reference($name, 1);
            }
            #[test]
            fn matches_pytorch_reference_2_threads() {
                super::matches_pytorch_reference($name, 2);
            }
            #[test]
            fn runs_at_several_shapes() {
                super::runs_at_several_shapes($name);
            }
            #[test]
            fn is_deterministic_and_batch_consistent() {
                super::is_deterministic_and_batch_consistent($name);
            }
            #[test]
            fn rejects_a_missing_input() {
                super::rejects_a_missing_input($name);
            }
        }
    )*};
}

conformance!(ort => "ort", tract => "tract", candle => "candle", candle_native => "candle-native");

/// A runtime added to the registry (`runtimes::all`) must join the suite above: the macro's
/// list is the one place a new runtime adds its name to the tests.
#[test]
fn every_registered_runtime_that_computes_is_in_the_suite() {
    let suite = ["ort", "tract", "candle", "candle-native"];
    for rt in runtimes::all() {
        if rt.capabilities().computes {
            assert!(
                suite.contains(&rt.name()),
                "{} is registered but not in conformance!(...)",
                rt.name()
            );
        }
    }
}

/// Handles that share weights compute what the original does, from two threads at once.
#[test]
fn shared_handles_agree_and_run_concurrently() {
    for (rt, shareable) in [
        ("ort", false),
        ("tract", true),
        ("candle", true),
        ("candle-native", true),
    ] {
        let (mut a, _) = load(rt, 1);
        let Some(b) = a.share() else {
            assert!(!shareable, "{rt} should share its weights");
            continue;
        };
        assert!(shareable, "{rt} shares but is not expected to");
        let mut b = b.unwrap();
        let x = inputs(2, 9);
        a.prepare(&x).unwrap();
        b.prepare(&x).unwrap();
        let (oa, ob) = std::thread::scope(|s| {
            let ha = s.spawn(|| {
                (0..20).for_each(|_| a.run().unwrap());
                a.infer().unwrap()
            });
            let hb = s.spawn(|| {
                (0..20).for_each(|_| b.run().unwrap());
                b.infer().unwrap()
            });
            (ha.join().unwrap(), hb.join().unwrap())
        });
        assert_eq!(f32s(&oa[0]), f32s(&ob[0]), "{rt}");
    }
}

/// Every committed fixture (a BERT, a CNN, a ViT) on every runtime and engine (tiny-bert's
/// through the suite above, the others through `fixture_conformance!`): its PyTorch
/// reference outputs (recorded by the exporter) reproduced, each row of the reference batch
/// equal to the same row run alone. An engine that cannot run a fixture must say so as a
/// skip (unsupported), never fail: which ones may is listed here.
fn fixture_matches_pytorch(fixture: &str, runtime: &str, threads: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/fixtures")
        .join(fixture);
    let files = ModelFiles::resolve(&dir).expect("fixture files");
    let info = ModelInfo::read(&files).expect("fixture info");
    let rt = runtimes::by_name(runtime).expect("runtime compiled in");
    let opts = LoadOptions {
        threads,
        ..LoadOptions::default()
    };
    let may_skip = runtime == "candle-native" && fixture != "tiny-bert";
    let mut m = match rt.load(&files, &info, &opts) {
        Ok(m) => m,
        Err(e) if may_skip && e.is_skip() => return,
        Err(e) => panic!("{runtime} could not load {fixture}: {e}"),
    };
    assert!(
        !may_skip,
        "{runtime} loaded {fixture}: update the expected skips"
    );
    let r = info
        .reference
        .expect("the fixture's manifest has reference outputs");
    m.prepare(&r.inputs).unwrap();
    let out = m.infer().unwrap();
    for want in &r.outputs {
        let got = out
            .iter()
            .find(|o| o.name == want.name)
            .unwrap_or_else(|| panic!("{runtime} produced no '{}' for {fixture}", want.name));
        assert_eq!(got.shape, want.shape, "{runtime} {fixture}");
        let d = max_abs(f32s(got), f32s(want));
        assert!(
            d < 1e-4,
            "{runtime} ({threads} threads) differs from PyTorch by {d} on {fixture}"
        );
    }
    // Row 0 of the reference batch, alone.
    let row: Vec<HostTensor> = r
        .inputs
        .iter()
        .map(|t| {
            let per = t.data.len() / t.shape[0];
            let data = match &t.data {
                TensorData::F32(v) => TensorData::F32(v[..per].to_vec()),
                TensorData::I64(v) => TensorData::I64(v[..per].to_vec()),
                TensorData::I32(v) => TensorData::I32(v[..per].to_vec()),
                TensorData::Bool(v) => TensorData::Bool(v[..per].to_vec()),
            };
            let mut shape = t.shape.clone();
            shape[0] = 1;
            HostTensor::new(t.name.clone(), shape, data)
        })
        .collect();
    m.prepare(&row).unwrap();
    let alone = m.infer().unwrap();
    let per = f32s(&alone[0]).len();
    let d = max_abs(f32s(&alone[0]), &f32s(&out[0])[..per]);
    assert!(d < 1e-5, "{runtime} {fixture}: row 0 alone differs by {d}");
}

macro_rules! fixture_conformance {
    ($($test:ident => $fixture:literal, $runtime:literal;)*) => {$(
        #[test]
        fn $test() {
            fixture_matches_pytorch($fixture, $runtime, 1);
            fixture_matches_pytorch($fixture, $runtime, 2);
        }
    )*};
}

fixture_conformance! {
    tiny_cnn_ort => "tiny-cnn", "ort";
    tiny_cnn_tract => "tiny-cnn", "tract";
    tiny_cnn_candle => "tiny-cnn", "candle";
    tiny_cnn_candle_native => "tiny-cnn", "candle-native";
    tiny_vit_ort => "tiny-vit", "ort";
    tiny_vit_tract => "tiny-vit", "tract";
    tiny_vit_candle => "tiny-vit", "candle";
    tiny_vit_candle_native => "tiny-vit", "candle-native";
}
