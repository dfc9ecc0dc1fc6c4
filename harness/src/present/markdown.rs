//! `summary.md`: the table and its notes as Markdown, the serving tax, the runtimes.

use std::fmt::Write as _;

use super::table::{footnotes, table_rows, TABLE_HEAD};
use crate::analysis::serving_tax;
use crate::results::Results;

pub fn to_markdown(r: &Results) -> String {
    let e = &r.environment;
    let mut out = String::new();
    let _ = writeln!(out, "# {} — runtime comparison\n", r.model.name);
    // The CPU, its count, the OS and kernel of one machine.
    let machine = |e: &crate::results::Environment| {
        format!(
            "{} · {} logical CPUs · {} · {}",
            e.cpu_model, e.logical_cpus, e.os, e.kernel
        )
    };
    if r.machines.is_empty() {
        let _ = writeln!(out, "{} · started {}\n", machine(e), r.started_at);
        if let Some(idle) = &e.cpu_idle {
            let _ = writeln!(out, "Idle CPUs (`--cpu-idle`): {idle}.\n");
        }
    } else {
        // Merged from several machines: each, and which rows it measured.
        let _ = writeln!(
            out,
            "Merged from {} machines; each row's machine is `machine` in results.json.\n",
            r.machines.len()
        );
        for m in &r.machines {
            let rows = r
                .scenarios
                .iter()
                .filter(|s| s.machine.as_deref() == Some(m.label.as_str()))
                .count();
            let _ = writeln!(
                out,
                "- **{}**: {} · {rows} rows from {}",
                m.label,
                machine(&m.environment),
                m.runs.join(", ")
            );
        }
        let _ = writeln!(out);
    }
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
        // The column of what serving adds beyond compute, where the served rows timed it.
        let beyond = tax.iter().any(|t| t.beyond_compute_ms.is_some());
        let _ = writeln!(
            out,
            "\n## Serving tax\n\nThe same runtime behind `harness serve` (KServe v2 over HTTP, binary tensors, loopback), same inputs and load{}.\n\n| scenario | in-process p50 ms | served p50 ms | tax ms |{} in-process p99 ms | served p99 ms | in-process items/s | served items/s |\n|---|---:|---:|---:|{}---:|---:|---:|---:|",
            if beyond {
                "; beyond compute: the served request's mean less the server's own compute and queue (its `Server-Timing`)"
            } else {
                ""
            },
            if beyond { " beyond compute ms |" } else { "" },
            if beyond { "---:|" } else { "" }
        );
        for t in &tax {
            let b = if beyond {
                format!(
                    " {} |",
                    t.beyond_compute_ms
                        .map_or("-".to_string(), |b| format!("{b:.3}"))
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} | {:.3} | {:.3} | {:+.3} |{b} {:.3} | {:.3} | {:.1} | {:.1} |",
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
        interleaved(&tax, &mut out);
    }
    device_time(r, &mut out);
    servers(r, &mut out);
    breakdowns(r, &mut out);
    capacity(r, &mut out);
    profiles(r, &mut out);
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

/// GPU rows: the device's time per inference next to the host's, split into copies and
/// compute where the inference copies, with a warning where the device sat idle.
fn device_time(r: &Results, out: &mut String) {
    let rows: Vec<_> = r
        .scenarios
        .iter()
        .filter_map(|s| Some((s, s.measurement.as_ref()?.device.as_ref()?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Device time\n\nCUDA events on the runtime's stream around each measured inference (medians, ms): host-to-device copy, compute and device-to-host copy where the inference copies (`--gpu-copies`), beside the host's wall time. Device share: device over wall.\n\n| scenario | wall p50 | device p50 | copy in | compute | copy out | device p99 | device share |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    let f = |x: Option<&crate::results::StageStats>| {
        x.map_or("-".into(), |x| format!("{:.4}", x.p50_ms))
    };
    let mut notes = Vec::new();
    for (s, d) in rows {
        let wall = s.measurement.as_ref().map_or(0.0, |m| m.latency.p50_ms);
        if !d.measured() {
            let _ = writeln!(
                out,
                "| {} | {wall:.4} | - | - | - | - | - | {} |",
                s.id, d.status
            );
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {wall:.4} | {} | {} | {} | {} | {} | {} |",
            s.id,
            f(d.total.as_ref()),
            f(d.h2d.as_ref()),
            f(d.compute.as_ref()),
            f(d.d2h.as_ref()),
            d.total
                .as_ref()
                .map_or("-".into(), |x| format!("{:.4}", x.p99_ms)),
            d.device_share
                .map_or("-".into(), |x| format!("{:.0}%", x * 100.0)),
        );
        if let Some(w) = &d.warning {
            notes.push(format!("- {}: {w}", s.id));
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\n{}", notes.join("\n"));
    }
}

/// The served rows whose server process was watched: its CPU and memory beside the
/// client's and the latency (the scenario table's cores and memory are the client's).
fn servers(r: &Results, out: &mut String) {
    let rows: Vec<_> = r
        .scenarios
        .iter()
        .filter_map(|s| Some((s, s.resources.as_ref()?.server.as_ref()?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Servers\n\nEach server's process tree over the window (CPU of every process under it; resident memory summed, peak of 100 ms samples), beside the load generator's own CPU.\n\n| scenario | p50 ms | p99 ms | items/s | server cores | server peak MB | processes | client cores |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (s, srv) in rows {
        let Some(m) = &s.measurement else { continue };
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.1} | {:.2} | {:.0} | {} | {} |",
            s.id,
            m.latency.p50_ms,
            m.latency.p99_ms,
            s.throughput_per_s.unwrap_or(0.0),
            srv.cores_busy,
            srv.peak_rss_bytes as f64 / 1e6,
            srv.processes,
            s.served
                .as_ref()
                .and_then(|v| v.client_cores_busy)
                .map_or("-".to_string(), |c| format!("{c:.2}"))
        );
    }
}

/// Where the mean request's time went, client side and server side, for the rows that
/// timed their requests' phases.
fn breakdowns(r: &Results, out: &mut String) {
    let rows: Vec<_> = r
        .scenarios
        .iter()
        .filter_map(|s| Some((s, s.served.as_ref()?.breakdown.as_ref()?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Where the time goes\n\nThe mean answered request, ms: on the client from its start to its last byte (connect + write + wait for the first byte + read = total), and inside the server from its `Server-Timing` header (without one, from its metrics: queue and compute per request over the window); outside the server is the client's total less the server's (network, HTTP framing on both sides, the client).\n\n| scenario | requests | connect | write | wait | read | total | server (its own parts) | server total | outside server |\n|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
    for (s, b) in rows {
        let sv = s.served.as_ref();
        let metrics = sv.and_then(|v| {
            Some((
                v.server_queue_ms_per_request.unwrap_or(0.0),
                v.server_compute_ms_per_request?,
            ))
        });
        let parts = if b.server_ms.is_empty() {
            match metrics {
                // No Server-Timing: the server's own metrics, per request over the window.
                Some((q, c)) => format!("queue {q:.3}, compute {c:.3} (its metrics)"),
                None => "no Server-Timing, no metrics".to_string(),
            }
        } else {
            b.server_ms
                .iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("total"))
                .map(|(n, v)| format!("{n} {v:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
            s.id,
            b.requests,
            b.connect_ms,
            b.write_ms,
            b.wait_ms,
            b.read_ms,
            b.total_ms,
            parts.replace('|', "\\|"),
            f(b.server_total_ms),
            f(b.outside_server_ms)
        );
    }
}

/// Context switches per inference over a row's window (voluntary and involuntary).
/// The capacity searches: each one's verdict, then its probes in the order run.
fn capacity(r: &Results, out: &mut String) {
    if r.capacity.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Capacity\n\nThe highest open-loop rate meeting every objective (`--find-max-rate`); each probe is also a row above.\n"
    );
    for (line, s) in super::capacity_lines(r).iter().zip(&r.capacity) {
        let _ = writeln!(
            out,
            "- {}\n\n| rate /s | seconds | requests | achieved /s | passed | why not; notes |\n|---:|---:|---:|---:|---|---|",
            line.replace('|', "\\|")
        );
        for p in &s.result.probes {
            let _ = writeln!(
                out,
                "| {}{} | {:.1} | {} | {:.1} | {} | {} |",
                p.rate,
                if p.repeat { " (repeat)" } else { "" },
                p.duration_s,
                p.requests,
                p.achieved_rate,
                if p.passed { "yes" } else { "no" },
                p.reasons
                    .iter()
                    .chain(&p.notes)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
                    .replace('|', "\\|")
            );
        }
        out.push('\n');
    }
}

pub fn switches_per_inference(s: &crate::results::ScenarioResult) -> Option<f64> {
    let r = s.resources.as_ref()?;
    let n = s.measurement.as_ref()?.iterations;
    let sw = r.voluntary_ctx_switches? + r.involuntary_ctx_switches?;
    (n > 0).then(|| sw as f64 / n as f64)
}

/// The profiled rows (`harness profile`): time per group of leaf frames, counters, and each
/// row's top frames by self time.
fn profiles(r: &Results, out: &mut String) {
    let rows: Vec<&crate::results::ScenarioResult> =
        r.scenarios.iter().filter(|s| s.profile.is_some()).collect();
    if rows.is_empty() {
        return;
    }
    let groups = crate::profile::GROUPS;
    let _ = writeln!(
        out,
        "\n## Profiles\n\nCPU time of each measured window by the group of each sample's leaf frame (perf cpu-clock samples of the windows only; `harness profile`), with the window's counters. Flame graphs and folded stacks in `profile/`.\n"
    );
    let _ = writeln!(
        out,
        "| scenario | samples | CPU ms | threads | {} | ctx switches / inference | migrations | minor faults / inference | IPC | flame graph |",
        groups.join(" | ")
    );
    let _ = writeln!(out, "|---|{}---|", "---:|".repeat(groups.len() + 7));
    let pct = |v: Option<f64>| {
        v.map(|v| format!("{:.1}%", v * 100.0))
            .unwrap_or_else(|| "-".into())
    };
    for s in &rows {
        let p = s.profile.as_ref().expect("filtered");
        let res = s.resources.as_ref();
        let n = s.measurement.as_ref().map(|m| m.iterations).unwrap_or(0);
        let cells: Vec<String> = groups
            .iter()
            .map(|g| {
                pct(Some(
                    p.groups
                        .iter()
                        .find(|(x, _)| x == g)
                        .map(|(_, v)| *v)
                        .unwrap_or(0.0),
                ))
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            s.id,
            p.samples,
            p.cpu_ms,
            p.threads,
            cells.join(" | "),
            switches_per_inference(s)
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "-".into()),
            res.and_then(|r| r.cpu_migrations)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            res.and_then(|r| r.minor_page_faults)
                .filter(|_| n > 0)
                .map(|v| format!("{:.1}", v as f64 / n as f64))
                .unwrap_or_else(|| "-".into()),
            res.and_then(|r| r.ipc)
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "-".into()),
            p.flamegraph
                .as_deref()
                .map(|f| format!("[svg]({f})"))
                .unwrap_or_else(|| p.note.clone().unwrap_or_else(|| "-".into())),
        );
    }
    if let Some(why) = rows
        .iter()
        .find_map(|s| s.resources.as_ref()?.hw_counters_unavailable.clone())
    {
        let _ = writeln!(out, "\nIPC: {why}.");
    }
    let _ = writeln!(out, "\nTop frames by self time:\n");
    for s in &rows {
        let p = s.profile.as_ref().expect("filtered");
        let top: Vec<String> = p
            .top
            .iter()
            .take(6)
            .map(|f| {
                format!(
                    "`{}` {:.1}% ({})",
                    f.frame.replace('|', "\\|"),
                    f.share * 100.0,
                    f.group
                )
            })
            .collect();
        let _ = writeln!(out, "- **{}**: {}", s.id, top.join(", "));
    }
}

/// The tax at concurrency 1 measured in interleaved blocks, where it was.
fn interleaved(tax: &[crate::analysis::Tax], out: &mut String) {
    let rows: Vec<_> = tax.iter().filter_map(|t| t.interleaved.as_ref()).collect();
    let Some(first) = rows.first() else {
        return;
    };
    let _ = writeln!(
        out,
        "\nThe same tax at concurrency 1 measured in interleaved blocks: one instance called directly and served take turns on the same inputs, a block of requests each, in the order in-process, served, served, in-process, ... ({}), so that the machine's drift between the two rows above falls on both alike, and two loads of the model, which differ in speed by themselves, are not compared. Pairs: the median of the per-pair differences of block medians, with its 95% interval.\n\n| scenario | pairs x requests | in-process p50 ms | served p50 ms | tax ms | pairs ms [95%] |\n|---|---:|---:|---:|---:|---|",
        first.client
    );
    for t in rows {
        let _ = writeln!(
            out,
            "| {} | {} x {} | {:.3} | {:.3} | {:+.3} | {:+.3}{} |",
            t.scenario,
            t.pairs,
            t.per_block,
            t.in_process.p50_ms,
            t.served.p50_ms,
            t.tax_ms,
            t.pair_median_ms,
            t.pair_ci_ms
                .map(|(lo, hi)| format!(" [{lo:+.3}, {hi:+.3}]"))
                .unwrap_or_default()
        );
    }
}
