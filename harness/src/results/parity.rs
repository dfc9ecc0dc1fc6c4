//! Parity of one row against the reference: the figures and the verdict. Data only;
//! `parity` computes them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            atol: 1e-4,
            rtol: 1e-4,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputDiff {
    pub name: String,
    pub max_abs_diff: f64,
    pub max_rel_diff: f64,
    pub cosine: f64,
    pub within_tolerance: bool,
    /// Elements outside the tolerance.
    pub mismatched: u64,
    pub elements: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParityStatus {
    Pass,
    Fail,
    /// This row is the reference.
    Reference,
    /// Nothing to compare (no reference, or no outputs).
    Skipped,
}

impl ParityStatus {
    pub fn label(&self) -> &'static str {
        match self {
            ParityStatus::Pass => "PASS",
            ParityStatus::Fail => "FAIL",
            ParityStatus::Reference => "ref",
            ParityStatus::Skipped => "n/a",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parity {
    pub status: ParityStatus,
    pub reference: Option<String>,
    /// The reference's precision variant when it differs from this row's: then the row is
    /// judged on accuracy (cosine) instead of the element-wise tolerance.
    #[serde(default)]
    pub reference_variant: Option<String>,
    #[serde(default)]
    pub min_cosine_required: Option<f64>,
    pub tolerance: Tolerance,
    pub max_abs_diff: Option<f64>,
    pub max_rel_diff: Option<f64>,
    pub min_cosine: Option<f64>,
    pub outputs: Vec<OutputDiff>,
    /// Why the comparison failed or was skipped, in words.
    pub note: Option<String>,
}
