//! `report.html` and `harness report`: every chart present, two runs merged exactly, and the
//! page rendered by headless Chromium (Debian's `chromium`, which scripts/test.sh installs)
//! without a console error.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::{compare_fixture, in_process, results, tmp};

fn run(out: &Path) {
    compare_fixture(
        out,
        &[
            "--runtimes",
            "ort,candle",
            "--variant",
            "fp32,fp16",
            "--batch",
            "1,2",
            "--threads",
            "1",
            "--concurrency",
            "1,2",
            "--min-time",
            "60ms",
        ],
    );
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
    // Same idle-CPU handling: kept as it was; otherwise the merged record says it is mixed.
    assert_eq!(rm["environment"]["cpu_idle"], ra["environment"]["cpu_idle"]);
    let mut other = rb.clone();
    other["environment"]["cpu_idle"] = "os (no cpuidle driver: idle CPUs halt)".into();
    let c = d.join("c");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("results.json"), other.to_string()).unwrap();
    let mixed = d.join("mixed");
    let r = in_process(&[
        "report",
        a.to_str().unwrap(),
        c.to_str().unwrap(),
        "--out",
        mixed.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let idle = results(&mixed)["environment"]["cpu_idle"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        idle.starts_with("mixed across the runs: ")
            && idle.contains(ra["environment"]["cpu_idle"].as_str().unwrap())
            && idle.contains("| os (no cpuidle driver: idle CPUs halt)"),
        "{idle}"
    );

    // Headless Chromium: a screenshot is drawn, nothing is logged to the console, and no
    // text label overlaps another or leaves its chart.
    let page = render(&merged.join("report.html"), &d);
    assert!(page.shot_bytes > 20_000, "an empty screenshot");
    assert!(page.svgs >= 5, "charts in the rendered DOM: {}", page.svgs);
    assert!(page.problems.is_empty(), "{:#?}", page.problems);
}

/// What Chromium saw in a report: its SVG charts, their text labels, and every label that
/// overlaps another label of its chart or reaches outside it.
struct Rendered {
    /// The size of the screenshot's PNG: a blank page compresses to almost nothing.
    shot_bytes: u64,
    svgs: usize,
    texts: usize,
    problems: Vec<String>,
}

/// Measures every text box of every SVG as Chromium lays it out (`getBoundingClientRect`),
/// in a copy of the page with a script appended; the script writes what it found into the
/// DOM, which `--dump-dom` returns.
const MEASURE: &str = r#"<script>(function(){
const out=[];let texts=0;const svgs=document.querySelectorAll('svg');
const hit=(a,b)=>!(a.right<=b.left+1||b.right<=a.left+1||a.bottom<=b.top+2||b.bottom<=a.top+2);
svgs.forEach(svg=>{const sb=svg.getBoundingClientRect();const name=svg.id||svg.getAttribute('aria-label');
const ts=[...svg.querySelectorAll('text')].map(t=>({s:t.textContent,r:t.getBoundingClientRect()}));texts+=ts.length;
ts.forEach(a=>{if(a.r.left<sb.left-0.5||a.r.right>sb.right+0.5||a.r.top<sb.top-0.5||a.r.bottom>sb.bottom+0.5)out.push(name+': "'+a.s+'" reaches outside the chart');});
for(let i=0;i<ts.length;i++)for(let j=i+1;j<ts.length;j++)if(hit(ts[i].r,ts[j].r))out.push(name+': "'+ts[i].s+'" overlaps "'+ts[j].s+'"');});
const pre=document.createElement('pre');pre.id='measured';pre.textContent=JSON.stringify({svgs:svgs.length,texts:texts,problems:out});document.body.appendChild(pre);})();</script>"#;

fn render(report: &Path, work: &Path) -> Rendered {
    let html = std::fs::read_to_string(report).unwrap();
    let page = format!("file://{}", report.display());
    let shot = work.join("report.png");
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
    let shot_bytes = std::fs::metadata(&shot).unwrap().len();
    assert!(!log.contains("CONSOLE"), "console messages: {log}");

    let check = work.join("measure.html");
    std::fs::write(
        &check,
        html.replace("</body>", &format!("{MEASURE}</body>")),
    )
    .unwrap();
    let dom = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1200,3000",
            "--dump-dom",
            &format!("file://{}", check.display()),
        ])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    let start = dom
        .find("<pre id=\"measured\">")
        .unwrap_or_else(|| panic!("the measuring script did not run: {dom}"))
        + "<pre id=\"measured\">".len();
    let end = start + dom[start..].find("</pre>").unwrap();
    let json = dom[start..end]
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    Rendered {
        shot_bytes,
        svgs: v["svgs"].as_u64().unwrap() as usize,
        texts: v["texts"].as_u64().unwrap() as usize,
        problems: v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect(),
    }
}

#[test]
fn the_label_check_finds_labels_that_overlap_or_leave_their_chart() {
    let d = tmp("report-overlap");
    let page = d.join("report.html");
    std::fs::write(
        &page,
        r#"<!DOCTYPE html><html><body><svg id="bad" xmlns="http://www.w3.org/2000/svg" width="200" height="60"><text x="10" y="20" font-size="11">tract t1</text><text x="14" y="24" font-size="11">tract t2</text><text x="150" y="50" font-size="11">candle-native</text></svg><svg id="good" xmlns="http://www.w3.org/2000/svg" width="200" height="60"><text x="10" y="20" font-size="11">tract t1</text><text x="10" y="40" font-size="11">tract t2</text></svg></body></html>"#,
    )
    .unwrap();
    let r = render(&page, &d);
    assert_eq!((r.svgs, r.texts), (2, 5));
    assert_eq!(
        r.problems,
        [
            "bad: \"candle-native\" reaches outside the chart",
            "bad: \"tract t1\" overlaps \"tract t2\""
        ],
        "{:#?}",
        r.problems
    );
}

/// 54 rows (3 runtimes x 3 batches x 2 thread counts x 3 concurrencies): 18 panels of
/// distributions, 6 of throughput against batch and 6 against concurrency, and a headline
/// line per group; no label overlaps; the accuracy chart is left out with its sentence.
#[test]
fn a_54_row_sweep_reads_at_a_glance() {
    let d = tmp("report-54");
    let out = d.join("sweep");
    compare_fixture(
        &out,
        &[
            "--runtimes",
            "ort,tract,candle",
            "--batch",
            "1,2,4",
            "--threads",
            "1,2",
            "--concurrency",
            "1,2,4",
            "--min-time",
            "40ms",
        ],
    );
    assert_eq!(results(&out)["scenarios"].as_array().unwrap().len(), 54);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let panels = |id: &str| {
        let start = html.find(&format!("id=\"{id}\"")).unwrap();
        let end = start + html[start..].find("</div>").unwrap();
        html[start..end].matches("<svg").count()
    };
    assert_eq!(panels("cdf"), 18);
    // A panel per variant x threads x concurrency (batch on the axis), and per variant x
    // batch x threads (concurrency on the axis); a line per runtime in each.
    assert_eq!(panels("throughput-batch"), 2 * 3);
    assert_eq!(panels("throughput-concurrency"), 3 * 2);
    assert!(!html.contains("id=\"accuracy\""));
    assert!(html.contains("Every measured row is fp32"));
    let headline = html[html.find("<h2>Headline</h2>").unwrap()..]
        .split("</ul>")
        .next()
        .unwrap()
        .matches("<li>")
        .count();
    assert_eq!(headline, 18 + 1, "a line per group and one across them");
    let page = render(&out.join("report.html"), &d);
    assert!(page.shot_bytes > 20_000, "an empty screenshot");
    assert_eq!(page.svgs, 1 + 18 + 6 + 6);
    assert!(page.texts > 400, "{}", page.texts);
    assert!(page.problems.is_empty(), "{:#?}", page.problems);
}

/// The README's main run (MiniLM, 4 engines x b1/b8 x t1/t2, results committed as a
/// fixture): rebuilt by `harness report`, its labels do not overlap either.
#[test]
fn the_readme_main_run_reads_at_a_glance() {
    let d = tmp("report-main");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm-main");
    let common::Run {
        code, stderr: err, ..
    } = in_process(&[
        "report",
        src.to_str().unwrap(),
        "--out",
        d.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(d.join("report.html")).unwrap();
    assert!(html.contains("<li>fp32 b1 s128 t1: ort fastest"), "{html}");
    let page = render(&d.join("report.html"), &d);
    // Latency bars, 4 distribution panels, 2 throughput panels (no concurrency axis, no
    // accuracy: sentences instead).
    assert!(page.shot_bytes > 20_000, "an empty screenshot");
    assert_eq!(page.svgs, 1 + 4 + 2);
    assert!(page.problems.is_empty(), "{:#?}", page.problems);
}
