//! `summary.md`: the table and its notes as Markdown, the serving tax, the runtimes.

use std::fmt::Write as _;

use super::table::{footnotes, table_rows, TABLE_HEAD};
use crate::analysis::serving_tax;
use crate::results::Results;

pub fn to_markdown(r: &Results) -> String {
    let e = &r.environment;
    let mut out = String::new();
    let _ = writeln!(out, "# {} — runtime comparison\n", r.model.name);
    let _ = writeln!(
        out,
        "{} · {} logical CPUs · {} · {} · started {}\n",
        e.cpu_model, e.logical_cpus, e.os, e.kernel, r.started_at
    );
    let _ = writeln!(
        out,
        "{}; latency per inference, nearest-rank percentiles; items/s = batch x inferences / window. Seed {}.\n",
        r.settings.mode, r.settings.seed
    );
    let headline = super::headline::headline(r);
    if !headline.is_empty() {
        let _ = writeln!(out, "## Headline\n\n{}.\n", super::headline::INTRO);
        for h in &headline {
            let _ = writeln!(out, "- {}", h.replace('|', "\\|"));
        }
        let _ = writeln!(out, "\n## Scenarios\n");
    }
    let _ = writeln!(out, "| {} |", TABLE_HEAD.join(" | "));
    let _ = writeln!(
        out,
        "|{}|",
        TABLE_HEAD
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 || i == TABLE_HEAD.len() - 1 {
                "---"
            } else {
                "---:"
            })
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in table_rows(r) {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    let notes = footnotes(r);
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            let _ = writeln!(out, "- {}", n.replace('|', "\\|"));
        }
    }
    let variants = super::headline::variant_lines(&super::headline::variant_gains(r));
    if !variants.is_empty() {
        let _ = writeln!(
            out,
            "\n## Variants against fp32\n\nSpeed-up of each lower-precision variant over fp32 of the same runtime and settings (ratio of medians, 95% interval), beside its lowest cosine to the parity reference.\n"
        );
        for v in &variants {
            let _ = writeln!(out, "- {}", v.replace('|', "\\|"));
        }
    }
    let tax = serving_tax(r);
    if !tax.is_empty() {
        let _ = writeln!(
            out,
            "\n## Serving tax\n\nThe same runtime behind `harness serve` (KServe v2 over HTTP, binary tensors, loopback), same inputs and load.\n\n| scenario | in-process p50 ms | served p50 ms | tax ms | in-process p99 ms | served p99 ms | in-process items/s | served items/s |\n|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for t in &tax {
            let _ = writeln!(
                out,
                "| {} | {:.3} | {:.3} | {:+.3} | {:.3} | {:.3} | {:.1} | {:.1} |",
                t.scenario,
                t.in_process_p50_ms,
                t.served_p50_ms,
                t.served_p50_ms - t.in_process_p50_ms,
                t.in_process_p99_ms,
                t.served_p99_ms,
                t.in_process_per_s,
                t.served_per_s
            );
        }
    }
    let _ = writeln!(out, "\n## Runtimes\n");
    for rt in &r.runtimes {
        let _ = writeln!(
            out,
            "- **{}**: {} — {}",
            rt.name,
            if rt.ready { "ready" } else { "not available" },
            rt.detail
        );
    }
    out
}
