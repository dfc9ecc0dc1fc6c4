//! The parity reference of a run: the first outputs of each shape (the preferred reference
//! runtime is measured first), and the judge of every later row against them.

use std::collections::BTreeMap;

use runtimes::{HostTensor, Variant};

use crate::parity;
use crate::results::{Parity, Tolerance};

/// The reference outputs per shape index (the first runtime and variant that produced
/// them), and the judge of every later row against them.
pub struct References {
    by_shape: BTreeMap<usize, (String, Variant, Vec<HostTensor>)>,
    tolerance: Tolerance,
    min_cosine: Option<f64>,
}

impl References {
    pub fn new(tolerance: Tolerance, min_cosine: Option<f64>) -> References {
        References {
            by_shape: BTreeMap::new(),
            tolerance,
            min_cosine,
        }
    }

    /// Parity of `outputs` (shape `index`, precision `variant`): the element-wise tolerance
    /// against a reference of the same precision, accuracy (cosine) against another; the
    /// first outputs of a shape become its reference.
    pub fn judge(
        &mut self,
        runtime: &str,
        variant: Variant,
        index: usize,
        outputs: Vec<HostTensor>,
    ) -> Parity {
        match self.by_shape.get(&index) {
            Some((name, v, want)) if *v == variant => {
                parity::compare(&outputs, want, name, self.tolerance)
            }
            Some((name, v, want)) => parity::accuracy(
                &outputs,
                want,
                name,
                *v,
                self.tolerance,
                self.min_cosine
                    .unwrap_or(parity::default_min_cosine(variant)),
            ),
            None => {
                self.by_shape
                    .insert(index, (runtime.to_string(), variant, outputs));
                Parity::reference(self.tolerance)
            }
        }
    }

    /// The fp32 reference of shape `index`, for served answers.
    pub fn fp32(&self, index: usize) -> Option<(&str, &[HostTensor])> {
        match self.by_shape.get(&index) {
            Some((name, Variant::Fp32, want)) => Some((name.as_str(), want.as_slice())),
            _ => None,
        }
    }
}
