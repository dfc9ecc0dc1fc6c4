//! Streamed completions: vLLM's benchmark metrics (TTFT, TPOT, ITL, goodput) from each
//! request's token timings, and the objectives (`--slo`) goodput counts against.

use crate::measure::StepRecord;
use crate::results::{LatencyStats, Slo, StreamingStats};

impl Slo {
    /// `ttft:200ms,tpot:50ms,e2e:2s` (a bare number is milliseconds).
    pub fn parse(s: &str) -> Result<Slo, String> {
        let mut slo = Slo::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once([':', '='])
                .ok_or_else(|| format!("'{part}': write METRIC:LIMIT, e.g. ttft:200ms"))?;
            let ms = match v.trim().parse::<f64>() {
                Ok(x) => x,
                Err(_) => {
                    humantime::parse_duration(v.trim())
                        .map_err(|e| format!("'{v}': {e}"))?
                        .as_secs_f64()
                        * 1e3
                }
            };
            if !(ms > 0.0 && ms.is_finite()) {
                return Err(format!("'{part}': the limit must be positive"));
            }
            match k.trim() {
                "ttft" => slo.ttft_ms = Some(ms),
                "tpot" => slo.tpot_ms = Some(ms),
                "e2e" | "e2el" => slo.e2e_ms = Some(ms),
                other => return Err(format!("unknown objective '{other}' (ttft, tpot, e2e)")),
            }
        }
        Ok(slo)
    }

    pub fn met(&self, ttft_ms: f64, tpot_ms: Option<f64>, e2e_ms: f64) -> bool {
        self.ttft_ms.is_none_or(|l| ttft_ms <= l)
            && self.tpot_ms.is_none_or(|l| tpot_ms.is_none_or(|t| t <= l))
            && self.e2e_ms.is_none_or(|l| e2e_ms <= l)
    }
}

fn stats_ns(v: &[u64]) -> LatencyStats {
    LatencyStats::from_samples(v)
}

pub fn streaming_stats(steps: &[StepRecord], window_s: f64, slo: &Option<Slo>) -> StreamingStats {
    let ttft: Vec<u64> = steps.iter().map(|s| s.info.ttft_ns).collect();
    let e2e: Vec<u64> = steps.iter().map(|s| s.e2e_ns).collect();
    let itl: Vec<u64> = steps
        .iter()
        .flat_map(|s| s.info.token_gaps_ns.iter().copied())
        .collect();
    let tpot_of = |s: &StepRecord| -> Option<u64> {
        (s.info.output_tokens > 1)
            .then(|| s.e2e_ns.saturating_sub(s.info.ttft_ns) / (s.info.output_tokens - 1))
    };
    let tpot: Vec<u64> = steps.iter().filter_map(tpot_of).collect();
    let tokens: u64 = steps.iter().map(|s| s.info.output_tokens).sum();
    let met = slo.as_ref().map(|slo| {
        steps
            .iter()
            .filter(|s| {
                slo.met(
                    s.info.ttft_ns as f64 / 1e6,
                    tpot_of(s).map(|t| t as f64 / 1e6),
                    s.e2e_ns as f64 / 1e6,
                )
            })
            .count() as u64
    });
    StreamingStats {
        ttft: stats_ns(&ttft),
        tpot: stats_ns(&tpot),
        itl: stats_ns(&itl),
        e2e: stats_ns(&e2e),
        output_tokens_mean: if steps.is_empty() {
            0.0
        } else {
            tokens as f64 / steps.len() as f64
        },
        output_tokens_per_s: if window_s > 0.0 {
            tokens as f64 / window_s
        } else {
            0.0
        },
        slo: slo.clone(),
        goodput_per_s: met.map(|m| {
            if window_s > 0.0 {
                m as f64 / window_s
            } else {
                0.0
            }
        }),
        slo_met: met,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::StepInfo;

    #[test]
    fn slo_parses_units_and_rejects_nonsense() {
        let s = Slo::parse("ttft:200ms, tpot=50,e2e:2s").unwrap();
        assert_eq!(
            s,
            Slo {
                ttft_ms: Some(200.0),
                tpot_ms: Some(50.0),
                e2e_ms: Some(2000.0)
            }
        );
        assert!(Slo::parse("ttft").is_err());
        assert!(Slo::parse("foo:1")
            .unwrap_err()
            .contains("unknown objective"));
        assert!(Slo::parse("ttft:-1").is_err());
        assert!(s.met(100.0, Some(50.0), 2000.0));
        assert!(!s.met(201.0, Some(1.0), 1.0));
        assert!(!s.met(1.0, Some(51.0), 1.0));
    }

    #[test]
    fn streaming_stats_follow_vllms_definitions() {
        // Two requests: TTFT 10 ms, 5 tokens over 50 ms; TTFT 30 ms, 2 tokens over 40 ms.
        let ms = 1_000_000;
        let steps = vec![
            StepRecord {
                e2e_ns: 50 * ms,
                info: StepInfo {
                    ttft_ns: 10 * ms,
                    token_gaps_ns: vec![10 * ms; 4],
                    output_tokens: 5,
                },
            },
            StepRecord {
                e2e_ns: 40 * ms,
                info: StepInfo {
                    ttft_ns: 30 * ms,
                    token_gaps_ns: vec![10 * ms],
                    output_tokens: 2,
                },
            },
        ];
        let slo = Some(Slo {
            ttft_ms: Some(20.0),
            tpot_ms: None,
            e2e_ms: None,
        });
        let s = streaming_stats(&steps, 2.0, &slo);
        assert_eq!(s.tpot.samples, 2);
        assert_eq!(s.tpot.min_ms, 10.0);
        assert_eq!(s.itl.samples, 5);
        assert_eq!(s.ttft.max_ms, 30.0);
        assert_eq!(s.output_tokens_mean, 3.5);
        assert_eq!(s.output_tokens_per_s, 3.5);
        assert_eq!(s.slo_met, Some(1));
        assert_eq!(s.goodput_per_s, Some(0.5));
    }
}
