//! The scenario id: one type, one `Display`, for every kind of row. The rendered string is
//! what `results.json` stores and what `harness report` and `harness diff` pair rows by, so
//! its formats are part of the schema:
//!
//! - in-process: `ort/cpu/fp32/b1/s128/t2`, then `/c4` or `/open-poisson-100/s-c1` unless the
//!   load is one closed-loop worker;
//! - served by `compare --served`: the in-process id of the same scenario (fp32), then
//!   `/served/` and the load tag (always);
//! - `harness load`: `LABEL/PROTOCOL/b1/s128/` (no shape for a plain GET) and the load tag.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScenarioId {
    InProcess {
        runtime: String,
        /// `cpu`, `cuda:0`, `tensorrt:0`.
        device: String,
        variant: String,
        batch: usize,
        seq: Option<usize>,
        threads: usize,
        /// The load tag (`c4`, `open-poisson-100/s-c1`); None for one closed-loop worker.
        load: Option<String>,
    },
    Served {
        runtime: String,
        batch: usize,
        seq: Option<usize>,
        threads: usize,
        load: String,
    },
    Network {
        label: String,
        protocol: String,
        /// Batch and sequence; None when the protocol has no shape (a plain GET).
        shape: Option<(usize, usize)>,
        load: String,
    },
}

impl fmt::Display for ScenarioId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = |f: &mut fmt::Formatter<'_>, batch: usize, seq: Option<usize>| match seq {
            Some(s) => write!(f, "b{batch}/s{s}"),
            None => write!(f, "b{batch}"),
        };
        match self {
            ScenarioId::InProcess {
                runtime,
                device,
                variant,
                batch,
                seq,
                threads,
                load,
            } => {
                write!(f, "{runtime}/{device}/{variant}/")?;
                shape(f, *batch, *seq)?;
                write!(f, "/t{threads}")?;
                match load {
                    Some(l) => write!(f, "/{l}"),
                    None => Ok(()),
                }
            }
            ScenarioId::Served {
                runtime,
                batch,
                seq,
                threads,
                load,
            } => {
                write!(f, "{runtime}/cpu/fp32/")?;
                shape(f, *batch, *seq)?;
                write!(f, "/t{threads}/served/{load}")
            }
            ScenarioId::Network {
                label,
                protocol,
                shape,
                load,
            } => match shape {
                Some((b, s)) => write!(f, "{label}/{protocol}/b{b}/s{s}/{load}"),
                None => write!(f, "{label}/{protocol}/{load}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_the_formats_earlier_results_hold() {
        let ip = ScenarioId::InProcess {
            runtime: "ort".into(),
            device: "cpu".into(),
            variant: "fp32".into(),
            batch: 8,
            seq: Some(128),
            threads: 2,
            load: None,
        };
        assert_eq!(ip.to_string(), "ort/cpu/fp32/b8/s128/t2");
        let ip = ScenarioId::InProcess {
            runtime: "ort".into(),
            device: "cuda:0".into(),
            variant: "fp32".into(),
            batch: 8,
            seq: None,
            threads: 2,
            load: Some("open-poisson-100/s-c1".into()),
        };
        assert_eq!(
            ip.to_string(),
            "ort/cuda:0/fp32/b8/t2/open-poisson-100/s-c1"
        );
        let sv = ScenarioId::Served {
            runtime: "tract".into(),
            batch: 1,
            seq: Some(16),
            threads: 1,
            load: "c1".into(),
        };
        assert_eq!(sv.to_string(), "tract/cpu/fp32/b1/s16/t1/served/c1");
        let net = ScenarioId::Network {
            label: "triton".into(),
            protocol: "kserve-grpc".into(),
            shape: Some((4, 32)),
            load: "c16".into(),
        };
        assert_eq!(net.to_string(), "triton/kserve-grpc/b4/s32/c16");
        let get = ScenarioId::Network {
            label: "http-get".into(),
            protocol: "http-get".into(),
            shape: None,
            load: "c2".into(),
        };
        assert_eq!(get.to_string(), "http-get/http-get/c2");
    }
}
