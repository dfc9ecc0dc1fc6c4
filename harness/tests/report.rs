//! `report.html` and `harness report`: every chart present, two runs merged exactly, and the
//! page rendered by headless Chromium (Debian's `chromium`, which scripts/test.sh installs)
//! without a console error.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::{fixture, harness, in_process, results, tmp};

fn run(out: &Path) {
    let common::Run {
        code, stderr: err, ..
    } = harness(&[
        "compare",
        "--model",
        fixture().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--runtimes",
        "ort,candle",
        "--variant",
        "fp32,fp16",
        "--batch",
        "1,2",
        "--seq",
        "8",
        "--threads",
        "1",
        "--concurrency",
        "1,2",
        "--target-ci",
        "off",
        "--min-time",
        "60ms",
        "--warmup-time",
        "10ms",
        "--no-overhead",
    ]);
    assert_eq!(code, 0, "{err}");
}

const CHARTS: [&str; 5] = [
    "id=\"latency\"",
    "id=\"cdf\"",
    "id=\"throughput-batch\"",
    "id=\"throughput-concurrency\"",
    "id=\"accuracy\"",
];

#[test]
fn report_has_every_chart_merges_exactly_and_renders_in_chromium() {
    let d = tmp("report");
    let (a, b, merged) = (d.join("a"), d.join("b"), d.join("merged"));
    run(&a);
    run(&b);

    let html = std::fs::read_to_string(a.join("report.html")).unwrap();
    for c in CHARTS {
        assert!(html.contains(c), "report.html lacks {c}");
    }
    assert!(!html.contains("<script"), "the report needs no script");
    assert!(
        !html.contains("src=\"http"),
        "the report loads nothing from the network"
    );

    let common::Run {
        code, stderr: err, ..
    } = in_process(&[
        "report",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (ra, rb, rm) = (results(&a), results(&b), results(&merged));
    assert_eq!(rm["merged_from"].as_array().unwrap().len(), 2);
    let scen = |r: &Value| r["scenarios"].as_array().unwrap().clone();
    assert_eq!(scen(&rm).len(), scen(&ra).len());
    for (m, (x, y)) in scen(&rm).iter().zip(scen(&ra).iter().zip(scen(&rb).iter())) {
        let n = |s: &Value| s["measurement"]["latency"]["samples"].as_u64().unwrap();
        assert_eq!(n(m), n(x) + n(y), "{}", m["id"]);
        assert_eq!(m["merged_runs"], 2);
        let p50 = |s: &Value| s["measurement"]["latency"]["p50_ms"].as_f64().unwrap();
        let (lo, hi) = (p50(x).min(p50(y)), p50(x).max(p50(y)));
        assert!(
            p50(m) >= lo * 0.999 && p50(m) <= hi * 1.001,
            "{}: {} not within [{lo}, {hi}]",
            m["id"],
            p50(m)
        );
    }
    assert!(merged.join("report.html").is_file() && merged.join("summary.md").is_file());

    // Headless Chromium: the DOM it builds holds the five charts, a screenshot is drawn, and
    // nothing is logged to the console.
    let page = format!("file://{}", merged.join("report.html").display());
    let shot = d.join("report.png");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,3000",
            &format!("--screenshot={}", shot.display()),
            &page,
        ])
        .output()
        .expect("chromium is needed for this test: scripts/test.sh installs Debian's chromium");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 20_000,
        "an empty screenshot"
    );
    assert!(!log.contains("CONSOLE"), "console messages: {log}");
    let dom = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            &page,
        ])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches("<svg").count(), 5, "charts in the rendered DOM");
}
