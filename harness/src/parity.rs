//! Parity: each runtime's outputs against a reference on the same inputs. Max abs diff, max
//! rel diff and cosine similarity per output; a runtime passes when every element satisfies
//! |x - ref| <= atol + rtol * |ref| (numpy's allclose) for every output it shares with the
//! reference.

use crate::results::{OutputDiff, Parity, ParityStatus, Tolerance};
use runtimes::HostTensor;

impl Parity {
    pub fn reference(tol: Tolerance) -> Parity {
        Parity {
            status: ParityStatus::Reference,
            reference: None,
            reference_variant: None,
            min_cosine_required: None,
            tolerance: tol,
            max_abs_diff: Some(0.0),
            max_rel_diff: Some(0.0),
            min_cosine: Some(1.0),
            outputs: vec![],
            note: None,
        }
    }

    pub fn skipped(tol: Tolerance, note: impl Into<String>) -> Parity {
        Parity {
            status: ParityStatus::Skipped,
            reference: None,
            reference_variant: None,
            min_cosine_required: None,
            tolerance: tol,
            max_abs_diff: None,
            max_rel_diff: None,
            min_cosine: None,
            outputs: vec![],
            note: Some(note.into()),
        }
    }
}

/// Compares one output with its reference. Shapes must match.
pub fn diff(
    name: &str,
    got: &HostTensor,
    want: &HostTensor,
    tol: Tolerance,
) -> Result<OutputDiff, String> {
    if got.shape != want.shape {
        return Err(format!(
            "output '{name}' has shape {}, the reference {}",
            got.shape_string(),
            want.shape_string()
        ));
    }
    let a = got.data.to_f64();
    let b = want.data.to_f64();
    let (mut max_abs, mut max_rel, mut dot, mut na, mut nb) = (0f64, 0f64, 0f64, 0f64, 0f64);
    let mut mismatched = 0u64;
    let mut nan = false;
    for (&x, &y) in a.iter().zip(&b) {
        if x.is_nan() != y.is_nan() {
            nan = true;
            mismatched += 1;
            continue;
        }
        let d = (x - y).abs();
        if d.is_nan() {
            continue; // both NaN: equal
        }
        max_abs = max_abs.max(d);
        if y != 0.0 {
            max_rel = max_rel.max(d / y.abs());
        } else if d > 0.0 {
            max_rel = f64::INFINITY;
        }
        if d > tol.atol + tol.rtol * y.abs() {
            mismatched += 1;
        }
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    let cosine = if nan {
        f64::NAN
    } else if na == 0.0 && nb == 0.0 {
        1.0
    } else if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    };
    Ok(OutputDiff {
        name: name.to_string(),
        max_abs_diff: if nan { f64::NAN } else { max_abs },
        max_rel_diff: max_rel,
        cosine,
        within_tolerance: mismatched == 0,
        mismatched,
        elements: a.len() as u64,
    })
}

/// Compares every output the reference has. Outputs are matched by name; when both sides
/// have exactly one output they are matched whatever their names.
pub fn compare(got: &[HostTensor], want: &[HostTensor], reference: &str, tol: Tolerance) -> Parity {
    if got.is_empty() {
        return Parity::skipped(tol, "the runtime produced no outputs");
    }
    let mut outputs = Vec::new();
    let mut problems = Vec::new();
    for w in want {
        let g = got
            .iter()
            .find(|g| g.name == w.name)
            .or_else(|| (got.len() == 1 && want.len() == 1).then(|| &got[0]));
        match g {
            Some(g) => match diff(&w.name, g, w, tol) {
                Ok(d) => outputs.push(d),
                Err(e) => problems.push(e),
            },
            None => problems.push(format!("no output named '{}'", w.name)),
        }
    }
    let all_ok =
        problems.is_empty() && !outputs.is_empty() && outputs.iter().all(|o| o.within_tolerance);
    // NaN wins: f64::max and f64::min would silently drop it.
    let fold = |f: fn(&OutputDiff) -> f64, init: f64, pick: fn(f64, f64) -> f64| {
        (!outputs.is_empty()).then(|| {
            outputs.iter().map(f).fold(init, |a, b| {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    pick(a, b)
                }
            })
        })
    };
    let max_abs_diff = fold(|o| o.max_abs_diff, 0.0, f64::max);
    let max_rel_diff = fold(|o| o.max_rel_diff, 0.0, f64::max);
    let min_cosine = fold(|o| o.cosine, 1.0, f64::min);
    let mut note = problems;
    for o in outputs.iter().filter(|o| !o.within_tolerance) {
        note.push(format!(
            "{}: {} of {} elements outside atol {:e} + rtol {:e}",
            o.name, o.mismatched, o.elements, tol.atol, tol.rtol
        ));
    }
    Parity {
        status: if all_ok {
            ParityStatus::Pass
        } else {
            ParityStatus::Fail
        },
        reference: Some(reference.to_string()),
        reference_variant: None,
        min_cosine_required: None,
        tolerance: tol,
        max_abs_diff,
        max_rel_diff,
        min_cosine,
        outputs,
        note: (!note.is_empty()).then(|| note.join("; ")),
    }
}

/// The cosine a precision variant must keep against fp32 on these outputs: fp16 and bf16
/// change rounding only; int8 dynamic quantization changes the weights.
pub fn default_min_cosine(variant: runtimes::Variant) -> f64 {
    match variant {
        runtimes::Variant::Fp32 => 0.999_999,
        runtimes::Variant::Fp16 => 0.999,
        runtimes::Variant::Bf16 => 0.99,
        runtimes::Variant::Int8 => 0.95,
    }
}

/// A lower-precision variant against a reference of another precision: the same diffs,
/// judged by the lowest cosine similarity over the outputs.
pub fn accuracy(
    got: &[HostTensor],
    want: &[HostTensor],
    reference: &str,
    reference_variant: runtimes::Variant,
    tol: Tolerance,
    min_cosine: f64,
) -> Parity {
    let mut p = compare(got, want, reference, tol);
    p.reference_variant = Some(reference_variant.as_str().to_string());
    p.min_cosine_required = Some(min_cosine);
    let structural = p.outputs.is_empty() || p.outputs.len() < want.len();
    // NaN compares false: a NaN anywhere fails.
    let ok = !structural && p.min_cosine.is_some_and(|c| c >= min_cosine);
    p.status = if ok {
        ParityStatus::Pass
    } else {
        ParityStatus::Fail
    };
    p.note = if ok {
        None
    } else if structural {
        p.note.take()
    } else if p.min_cosine.is_some_and(f64::is_nan) {
        Some(format!(
            "the outputs hold NaN where {reference} {} has numbers",
            reference_variant.as_str()
        ))
    } else {
        Some(format!(
            "cosine {:.6} against {reference} {} is below the {min_cosine} this variant must keep",
            p.min_cosine.unwrap_or(f64::NAN),
            reference_variant.as_str()
        ))
    };
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtimes::TensorData;

    fn t(name: &str, v: Vec<f32>) -> HostTensor {
        HostTensor::new(name, vec![v.len()], TensorData::F32(v))
    }

    #[test]
    fn identical_outputs_pass_with_zero_diff() {
        let p = compare(
            &[t("y", vec![1.0, -2.0, 3.0])],
            &[t("y", vec![1.0, -2.0, 3.0])],
            "ort",
            Tolerance::default(),
        );
        assert_eq!(p.status, ParityStatus::Pass);
        assert_eq!(p.max_abs_diff, Some(0.0));
        assert!((p.min_cosine.unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_difference_beyond_tolerance_fails_and_says_so() {
        let tol = Tolerance {
            atol: 1e-3,
            rtol: 0.0,
        };
        let p = compare(
            &[t("y", vec![1.0, 2.0, 3.01])],
            &[t("y", vec![1.0, 2.0, 3.0])],
            "ort",
            tol,
        );
        assert_eq!(p.status, ParityStatus::Fail);
        assert!((p.max_abs_diff.unwrap() - 0.01).abs() < 1e-6);
        assert!((p.max_rel_diff.unwrap() - 0.01 / 3.0).abs() < 1e-6);
        assert!(p.note.unwrap().contains("1 of 3 elements"));
        let p = compare(
            &[t("y", vec![1.0, 2.0, 3.0005])],
            &[t("y", vec![1.0, 2.0, 3.0])],
            "ort",
            tol,
        );
        assert_eq!(p.status, ParityStatus::Pass);
    }

    #[test]
    fn shape_and_name_mismatches_fail() {
        let p = compare(
            &[t("y", vec![1.0, 2.0])],
            &[t("y", vec![1.0, 2.0, 3.0])],
            "ort",
            Tolerance::default(),
        );
        assert_eq!(p.status, ParityStatus::Fail);
        assert!(p.note.unwrap().contains("shape 2"));
        let p = compare(
            &[t("a", vec![1.0]), t("b", vec![1.0])],
            &[t("c", vec![1.0])],
            "ort",
            Tolerance::default(),
        );
        assert_eq!(p.status, ParityStatus::Fail);
        // A single output on each side is matched whatever its name.
        let p = compare(
            &[t("a", vec![1.0])],
            &[t("c", vec![1.0])],
            "ort",
            Tolerance::default(),
        );
        assert_eq!(p.status, ParityStatus::Pass);
    }

    #[test]
    fn nan_where_the_reference_has_a_number_fails() {
        let p = compare(
            &[t("y", vec![f32::NAN, 1.0])],
            &[t("y", vec![0.0, 1.0])],
            "ort",
            Tolerance::default(),
        );
        assert_eq!(p.status, ParityStatus::Fail);
    }

    #[test]
    fn variants_are_judged_by_cosine() {
        use runtimes::Variant;
        let want = [t("y", vec![1.0, 2.0, 3.0, 4.0])];
        let close = [t("y", vec![1.01, 1.98, 3.02, 3.99])];
        let p = accuracy(
            &close,
            &want,
            "ort",
            Variant::Fp32,
            Tolerance::default(),
            0.999,
        );
        assert_eq!(p.status, ParityStatus::Pass);
        assert_eq!(p.reference_variant.as_deref(), Some("fp32"));
        assert!(p.max_abs_diff.unwrap() > 0.009);
        let far = [t("y", vec![4.0, 3.0, 2.0, 1.0])];
        let p = accuracy(
            &far,
            &want,
            "ort",
            Variant::Fp32,
            Tolerance::default(),
            0.95,
        );
        assert_eq!(p.status, ParityStatus::Fail);
        assert!(p.note.unwrap().contains("below the 0.95"));
    }

    #[test]
    fn cosine_of_orthogonal_vectors_is_zero() {
        let d = diff(
            "y",
            &t("y", vec![1.0, 0.0]),
            &t("y", vec![0.0, 1.0]),
            Tolerance::default(),
        )
        .unwrap();
        assert!(d.cosine.abs() < 1e-12);
    }
}
