//! Analysis over results: merging runs exactly (adding HdrHistograms) and the serving tax
//! (a served row beside its in-process twin). Returns data; presenters format it.

use crate::results::{Results, ScenarioResult};
use crate::stats::{decode_histogram, median_ratio_ci, LatencyStats};

/// Merges results: scenarios with the same id are combined (histograms added, windows and
/// counts summed); the settings of the first run are kept, and every source is named in
/// `merged_from`. Runs from one machine keep its environment. Runs from several machines
/// (`environment::machine` differs: shards of a sweep on a cluster) keep every machine's
/// environment in `machines`, and each row says its machine; a scenario measured on two
/// machines is not one population, and is refused unless `pool` (then its `machine` names
/// both).
pub fn merge(runs: Vec<(String, Results)>, pool: bool) -> Result<Results, String> {
    let labels = machine_labels(&runs);
    let several = labels.iter().any(|l| l != &labels[0]);
    let mut machines: Vec<crate::results::Machine> = Vec::new();
    if several {
        for ((name, r), label) in runs.iter().zip(&labels) {
            match machines.iter_mut().find(|m| &m.label == label) {
                Some(m) => m.runs.push(name.clone()),
                None => machines.push(crate::results::Machine {
                    label: label.clone(),
                    runs: vec![name.clone()],
                    environment: r.environment.clone(),
                }),
            }
        }
    }
    let mut iter = runs.into_iter().zip(labels);
    let ((first_name, mut merged), first_label) = iter.next().ok_or("no results to merge")?;
    merged.merged_from = vec![first_name.clone()];
    // Which run (and machine) each merged row came from first.
    let mut origin: std::collections::BTreeMap<String, (String, String)> = Default::default();
    for s in &mut merged.scenarios {
        if several {
            s.machine = Some(first_label.clone());
        }
        origin.insert(s.id.clone(), (first_name.clone(), first_label.clone()));
    }
    // Each run's idle-CPU handling (`--cpu-idle`), once.
    let mut idle = vec![merged.environment.cpu_idle.clone()];
    for ((name, r), label) in iter {
        if !idle.contains(&r.environment.cpu_idle) {
            idle.push(r.environment.cpu_idle.clone());
        }
        merged.merged_from.push(name.clone());
        merged.interrupted |= r.interrupted;
        merged.capacity.extend(r.capacity);
        merged.interleaved_tax.extend(r.interleaved_tax);
        for mut s in r.scenarios {
            if several {
                s.machine = Some(label.clone());
            }
            match merged.scenarios.iter_mut().find(|m| m.id == s.id) {
                Some(m) => {
                    let (from, there) = origin.get(&s.id).cloned().unwrap_or_default();
                    if there != label {
                        if !pool {
                            return Err(format!(
                                "{} was measured on two machines ({there} in {from}, {label} in {name}): their samples are not one population; merge the runs of each machine apart, or pass --pool-machines to merge them anyway",
                                s.id
                            ));
                        }
                        let both = format!("{} + {label}", m.machine.clone().unwrap_or(there));
                        m.machine = Some(both);
                    }
                    combine(m, &s).map_err(|e| format!("{name}: {}: {e}", s.id))?
                }
                None => {
                    origin.insert(s.id.clone(), (name.clone(), label.clone()));
                    merged.scenarios.push(s)
                }
            }
        }
    }
    merged.machines = machines;
    // Runs with idle CPUs handled differently say so in the merged record.
    if idle.len() > 1 {
        let each: Vec<&str> = idle
            .iter()
            .map(|s| s.as_deref().unwrap_or("not recorded"))
            .collect();
        merged.environment.cpu_idle = Some(format!("mixed across the runs: {}", each.join(" | ")));
    }
    Ok(merged)
}

/// A label per run for its machine: the hostname where that names one machine, with `#2`,
/// `#3`, ... added where one hostname stands for several.
fn machine_labels(runs: &[(String, Results)]) -> Vec<String> {
    let prints: Vec<String> = runs
        .iter()
        .map(|(_, r)| crate::environment::machine(&r.environment))
        .collect();
    let mut seen: Vec<(String, String)> = Vec::new();
    runs.iter()
        .zip(&prints)
        .map(|((_, r), print)| {
            if let Some((label, _)) = seen.iter().find(|(_, p)| p == print) {
                return label.clone();
            }
            let host = &r.environment.hostname;
            let numbered = format!("{host}#");
            let taken = seen
                .iter()
                .filter(|(l, _)| l == host || l.starts_with(&numbered))
                .count();
            let label = if taken == 0 {
                host.clone()
            } else {
                format!("{host}#{}", taken + 1)
            };
            seen.push((label.clone(), print.clone()));
            label
        })
        .collect()
}

fn combine(into: &mut ScenarioResult, other: &ScenarioResult) -> Result<(), String> {
    let (Some(a), Some(b)) = (into.measurement.as_mut(), other.measurement.as_ref()) else {
        if into.measurement.is_none() && other.measurement.is_some() {
            *into = other.clone();
        }
        return Ok(());
    };
    let mut h = decode_histogram(&a.latency.histogram).ok_or("unreadable histogram")?;
    let hb = decode_histogram(&b.latency.histogram).ok_or("unreadable histogram")?;
    h.add(&hb)
        .map_err(|e| format!("histograms do not add: {e:?}"))?;
    a.latency = LatencyStats::from_histogram(&h);
    a.window_s += b.window_s;
    a.iterations += b.iterations;
    a.failures += b.failures;
    for (k, v) in &b.failure_kinds {
        *a.failure_kinds.entry(k.clone()).or_default() += v;
    }
    into.throughput_per_s =
        (a.window_s > 0.0).then(|| (a.iterations * into.batch as u64) as f64 / a.window_s);
    into.merged_runs = into.merged_runs.max(1) + 1;
    Ok(())
}

/// One in-process row beside the same scenario served by `harness serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tax {
    pub scenario: String,
    pub in_process_p50_ms: f64,
    pub served_p50_ms: f64,
    pub in_process_p99_ms: f64,
    pub served_p99_ms: f64,
    pub in_process_per_s: f64,
    pub served_per_s: f64,
    /// The served row's protocol (`kserve-http`, ...).
    pub protocol: String,
    /// Served p50 / in-process p50 with its 95% interval (see `stats::median_ratio_ci`).
    pub p50_ratio: Option<(f64, f64, f64)>,
    /// The served request's mean less the server's own compute and queue (its
    /// `Server-Timing`): what serving adds around the inference in one measurement, free of
    /// the drift between the in-process and the served run.
    pub beyond_compute_ms: Option<f64>,
    /// The same scenario's tax measured in interleaved blocks (concurrency 1), free of the
    /// drift between the two rows.
    pub interleaved: Option<crate::results::InterleavedTax>,
}

impl Tax {
    pub fn line(&self) -> String {
        format!(
            "{}: p50 {:.3} -> {:.3} ms ({:+.3} ms, {:+.1}%), p99 {:.3} -> {:.3} ms, {:.1} -> {:.1} items/s{}",
            self.scenario,
            self.in_process_p50_ms,
            self.served_p50_ms,
            self.served_p50_ms - self.in_process_p50_ms,
            (self.served_p50_ms / self.in_process_p50_ms - 1.0) * 100.0,
            self.in_process_p99_ms,
            self.served_p99_ms,
            self.in_process_per_s,
            self.served_per_s,
            self.beyond_compute_ms
                .map(|b| format!("; served beyond the server's compute and queue: {b:.3} ms"))
                .unwrap_or_default()
        ) + &self.interleaved_part()
    }

    /// "; in interleaved blocks: +0.093 ms [+0.071, +0.120] (24 pairs)", or nothing.
    pub fn interleaved_part(&self) -> String {
        let Some(t) = &self.interleaved else {
            return String::new();
        };
        format!(
            "; in interleaved blocks: {:+.3} ms p50 ({:.3} -> {:.3} ms), pairs {:+.3} ms{} ({} pairs)",
            t.tax_ms,
            t.in_process.p50_ms,
            t.served.p50_ms,
            t.pair_median_ms,
            t.pair_ci_ms
                .map(|(lo, hi)| format!(" [{lo:+.3}, {hi:+.3}]"))
                .unwrap_or_default(),
            t.pairs
        )
    }
}

/// A breakdown's mean less the server's `compute` and `queue` entries, when every request
/// carried them.
fn beyond_compute(b: &crate::results::Breakdown) -> Option<f64> {
    if b.server_requests != b.requests {
        return None;
    }
    let entry = |name: &str| b.server_ms.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    Some(b.total_ms - entry("compute")? - entry("queue").unwrap_or(0.0))
}

/// Pairs each served row (`compare --served`) with its fp32 in-process twin.
pub fn serving_tax(r: &Results) -> Vec<Tax> {
    r.scenarios
        .iter()
        .filter(|s| s.variant == "served" && s.served.is_some())
        .filter_map(|s| {
            let twin = r.scenarios.iter().find(|t| {
                t.variant == "fp32" && t.served.is_none() && t.same_settings_but_variant(s)
            })?;
            let (a, b) = (twin.measurement.as_ref()?, s.measurement.as_ref()?);
            Some(Tax {
                scenario: twin.id.clone(),
                in_process_p50_ms: a.latency.p50_ms,
                served_p50_ms: b.latency.p50_ms,
                in_process_p99_ms: a.latency.p99_ms,
                served_p99_ms: b.latency.p99_ms,
                in_process_per_s: twin.throughput_per_s.unwrap_or(0.0),
                served_per_s: s.throughput_per_s.unwrap_or(0.0),
                protocol: s
                    .served
                    .as_ref()
                    .map(|v| v.protocol.clone())
                    .unwrap_or_default(),
                p50_ratio: median_ratio_ci(&a.latency, &b.latency),
                beyond_compute_ms: s
                    .served
                    .as_ref()
                    .and_then(|v| v.breakdown.as_ref())
                    .and_then(beyond_compute),
                interleaved: r
                    .interleaved_tax
                    .iter()
                    .find(|t| t.served_scenario == s.id)
                    .cloned(),
            })
        })
        .collect()
}

/// The serving tax as capacity: a served capacity search (`compare --served
/// --find-max-rate`) beside its in-process twin's, under the same objectives.
#[derive(Debug, Clone)]
pub struct CapacityTax {
    /// The in-process scenario ("ort/cpu/fp32/b1/s128/t2").
    pub scenario: String,
    pub objectives: String,
    /// Requests/s.
    pub in_process: f64,
    pub served: f64,
    pub protocol: String,
}

impl CapacityTax {
    pub fn line(&self) -> String {
        let lost = if self.in_process > 0.0 {
            format!(
                ", {:.1}% lost",
                (1.0 - self.served / self.in_process) * 100.0
            )
        } else {
            String::new()
        };
        format!(
            "capacity served over {} of {} under {}: {:.1}/s in-process -> {:.1}/s served{lost}",
            if self.protocol.is_empty() {
                "the network"
            } else {
                &self.protocol
            },
            self.scenario,
            self.objectives,
            self.in_process,
            self.served
        )
    }
}

/// Pairs each served capacity search with the search of its fp32 in-process twin.
pub fn capacity_lost(r: &Results) -> Vec<CapacityTax> {
    let row = |id: &str| r.scenarios.iter().find(|s| s.id == id);
    let search = |id: &str| r.capacity.iter().find(|c| c.group == id);
    r.capacity
        .iter()
        .filter_map(|served| {
            let s = row(&served.group).filter(|s| s.variant == "served" && s.served.is_some())?;
            let twin = r.scenarios.iter().find(|t| {
                t.variant == "fp32" && t.served.is_none() && t.same_settings_but_variant(s)
            })?;
            let own = search(&twin.id)?;
            (own.result.objectives == served.result.objectives).then(|| CapacityTax {
                scenario: twin.id.clone(),
                objectives: crate::capacity::describe(&own.result.objectives),
                in_process: own.result.capacity,
                served: served.result.capacity,
                protocol: s
                    .served
                    .as_ref()
                    .map(|v| v.protocol.clone())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_are_the_histogram_of_all_samples() {
        let a: Vec<u64> = (0..3000)
            .map(|i| 1_000_000 + (i * 7919) % 400_000)
            .collect();
        let b: Vec<u64> = (0..1000)
            .map(|i| 1_500_000 + (i * 104_729) % 900_000)
            .collect();
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        let (sa, sb, sall) = (
            LatencyStats::from_samples(&a),
            LatencyStats::from_samples(&b),
            LatencyStats::from_samples(&all),
        );
        let mut h = decode_histogram(&sa.histogram).unwrap();
        h.add(decode_histogram(&sb.histogram).unwrap()).unwrap();
        let whole = decode_histogram(&sall.histogram).unwrap();
        assert_eq!(h.len(), whole.len());
        assert!(h.iter_recorded().zip(whole.iter_recorded()).all(|(x, y)| {
            x.value_iterated_to() == y.value_iterated_to()
                && x.count_at_value() == y.count_at_value()
        }));
        let merged = LatencyStats::from_histogram(&h);
        assert_eq!(merged.samples, 4000);
        // Exact nearest rank on the raw samples vs the same rank in the merged histogram:
        // equal within the histogram's 3 significant digits.
        for (m, e) in [
            (merged.p50_ms, sall.p50_ms),
            (merged.p90_ms, sall.p90_ms),
            (merged.p99_ms, sall.p99_ms),
        ] {
            assert!((m - e).abs() / e < 1e-3, "{m} vs {e}");
        }
        assert!((merged.mean_ms - sall.mean_ms).abs() / sall.mean_ms < 1e-3);
        assert!(
            merged.median_ci95_low_ms <= merged.p50_ms
                && merged.p50_ms <= merged.median_ci95_high_ms
        );
    }
}
