//! `harness load` against servers with known behaviour: streamed tokens at known delays, a
//! server that stalls on purpose (coordinated omission), one that dies mid-run, and our own.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fixture, harness, results, tmp, Server};
use serde_json::Value;

/// Runs an axum app on a free loopback port on its own runtime thread, for the test's life.
fn spawn_app(app: axum::Router) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    port
}

/// An OpenAI completions server that streams `max_tokens` tokens: the first after 60 ms, then
/// one every 15 ms, then a usage chunk and [DONE].
fn token_server() -> u16 {
    use axum::body::Body;
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/completions",
        post(|body: axum::body::Bytes| async move {
            let req: Value = serde_json::from_slice(&body).unwrap_or_default();
            let n = req["max_tokens"].as_u64().unwrap_or(4);
            let stream = futures_util::stream::unfold(0u64, move |k| async move {
                if k > n + 1 {
                    return None;
                }
                let chunk = if k == 0 {
                    tokio::time::sleep(Duration::from_millis(60)).await;
                    format!("data: {{\"choices\":[{{\"index\":0,\"text\":\"t{k}\"}}]}}\n\n")
                } else if k < n {
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    format!("data: {{\"choices\":[{{\"index\":0,\"text\":\"t{k}\"}}]}}\n\n")
                } else if k == n {
                    format!("data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":3,\"completion_tokens\":{n}}}}}\n\n")
                } else {
                    "data: [DONE]\n\n".to_string()
                };
                Some((Ok::<_, std::io::Error>(chunk), k + 1))
            });
            ([("content-type", "text/event-stream")], Body::from_stream(stream))
        }),
    );
    spawn_app(app)
}

#[test]
fn streamed_completions_measure_ttft_tpot_and_itl_within_tight_bounds() {
    let port = token_server();
    let out = tmp("stream");
    let r = harness(&[
        "load",
        "--target",
        &format!("http://127.0.0.1:{port}"),
        "--protocol",
        "openai-completions",
        "--model",
        "m",
        "--max-tokens",
        "8",
        "--seq",
        "4",
        "--concurrency",
        "2",
        "--warmup",
        "1",
        "--warmup-time",
        "0s",
        "--target-ci",
        "off",
        "--min-time",
        "1s",
        "--min-samples",
        "10",
        "--slo",
        "ttft:70ms,tpot:30ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v = results(&out);
    let s = &v["scenarios"][0];
    let st = &s["served"]["streaming"];
    let ms = |k: &str, p: &str| st[k][p].as_f64().unwrap();
    // Known delays: TTFT 60 ms, 15 ms between tokens, 8 tokens.
    assert!(
        (60.0..70.0).contains(&ms("ttft", "p50_ms")),
        "ttft {}",
        ms("ttft", "p50_ms")
    );
    assert!(
        (15.0..19.0).contains(&ms("itl", "p50_ms")),
        "itl {}",
        ms("itl", "p50_ms")
    );
    assert!(
        (15.0..19.0).contains(&ms("tpot", "p50_ms")),
        "tpot {}",
        ms("tpot", "p50_ms")
    );
    assert_eq!(st["output_tokens_mean"].as_f64().unwrap(), 8.0);
    // End to end: 60 + 7 x 15 = 165 ms.
    assert!((165.0..185.0).contains(&s["measurement"]["latency"]["p50_ms"].as_f64().unwrap()));
    assert_eq!(
        st["itl"]["samples"].as_u64().unwrap(),
        7 * s["measurement"]["iterations"].as_u64().unwrap()
    );
    // Every request meets a 70 ms TTFT and 30 ms TPOT objective: goodput = throughput.
    let good = st["goodput_per_s"].as_f64().unwrap();
    let thr = s["throughput_per_s"].as_f64().unwrap();
    assert!((good - thr).abs() < 1e-9, "{good} vs {thr}");
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("ttft_p50_ms"));
}

/// A server that answers at once, except that every request arriving in [1.0 s, 2.0 s) after
/// it starts waits until 2.0 s.
fn stalling_server() -> u16 {
    use axum::routing::get;
    let t0 = Arc::new(Instant::now());
    let app = axum::Router::new().route(
        "/",
        get(move || {
            let t0 = t0.clone();
            async move {
                let el = t0.elapsed();
                if el >= Duration::from_millis(1000) && el < Duration::from_millis(2000) {
                    tokio::time::sleep(Duration::from_millis(2000) - el).await;
                }
                "ok"
            }
        }),
    );
    spawn_app(app)
}

#[test]
fn open_loop_latency_counts_from_the_schedule_through_a_stall() {
    let port = stalling_server();
    let out = tmp("stall");
    let r = harness(&[
        "load",
        "--target",
        &format!("http://127.0.0.1:{port}/"),
        "--protocol",
        "http-get",
        "--rate",
        "100",
        "--arrivals",
        "constant",
        "--concurrency",
        "1",
        "--warmup",
        "1",
        "--warmup-time",
        "0.2s",
        "--target-ci",
        "off",
        "--min-time",
        "3s",
        "--max-time",
        "3s",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v = results(&out);
    let s = &v["scenarios"][0];
    let lat = &s["measurement"]["latency"];
    let ol = &s["open_loop"];
    let unc = &ol["uncorrected"];
    // One request sat through the 1 s stall; about 100 more were due meanwhile. Counted from
    // their scheduled times they waited up to a second; a closed-loop view sees one slow one.
    assert!(
        lat["p90_ms"].as_f64().unwrap() > 200.0,
        "corrected p90 {}",
        lat["p90_ms"]
    );
    assert!(lat["max_ms"].as_f64().unwrap() > 700.0);
    assert!(
        unc["p90_ms"].as_f64().unwrap() < 20.0,
        "uncorrected p90 {}",
        unc["p90_ms"]
    );
    assert!(unc["max_ms"].as_f64().unwrap() > 700.0);
    assert!(
        ol["late_sends"].as_u64().unwrap() >= 50,
        "{}",
        ol["late_sends"]
    );
    assert!(ol["achieved_rate"].as_f64().unwrap() > 90.0);
}

#[test]
fn a_server_dying_mid_run_is_counted_and_the_partial_results_are_saved() {
    let mut server = Server::start("dies", &fixture(), &[]);
    let out = tmp("dies");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "load",
            "--target",
            &server.url(),
            "--model",
            "tiny-bert",
            "--vocab",
            "128",
            "--seq",
            "8",
            "--concurrency",
            "2",
            "--warmup-time",
            "0.2s",
            "--target-ci",
            "off",
            "--min-time",
            "5s",
            "--max-time",
            "20s",
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let t = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the load generator did not stop"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let v = results(&out);
    let s = &v["scenarios"][0];
    assert_eq!(s["status"], "failed");
    assert!(s["measurement"]["iterations"].as_u64().unwrap() > 10);
    let kinds = s["measurement"]["failure_kinds"].as_object().unwrap();
    assert!(
        kinds.keys().any(|k| k == "connect" || k == "io"),
        "{kinds:?}"
    );
    assert_eq!(s["measurement"]["stop_reason"], "failures");
    assert!(s["error"].as_str().unwrap().contains("requests failed"));
}

#[test]
fn load_measures_our_server_over_http_and_grpc_with_its_metrics() {
    let s = Server::start(
        "load",
        &fixture(),
        &["--max-batch", "4", "--max-queue-delay", "5ms"],
    );
    // Over HTTP the token ids' range comes from our server's metadata (no --vocab: ids of
    // the default 0..1000 would fail on this 128-token vocabulary); KServe's gRPC metadata has
    // no place for it.
    for (proto, target, vocab) in [
        ("kserve-http", s.url(), None),
        (
            "kserve-grpc",
            format!("127.0.0.1:{}", s.grpc.unwrap()),
            Some("128"),
        ),
    ] {
        let out = tmp(&format!("load-{proto}"));
        let vocab: Vec<&str> = vocab.map(|v| vec!["--vocab", v]).unwrap_or_default();
        let r = harness(
            &[
                &[
                    "load",
                    "--target",
                    &target,
                    "--protocol",
                    proto,
                    "--model",
                    "tiny-bert",
                ][..],
                &vocab,
                &[
                    "--batch",
                    "1",
                    "--seq",
                    "8",
                    "--concurrency",
                    "1,4",
                    "--warmup-time",
                    "0.2s",
                    "--target-ci",
                    "off",
                    "--min-time",
                    "0.5s",
                    "--metrics-url",
                    &format!("{}/metrics", s.url()),
                    "--label",
                    "ours",
                    "--out",
                    out.to_str().unwrap(),
                ],
            ]
            .concat(),
        );
        assert_eq!(r.code, 0, "{proto}: {}\n{}", r.stdout, r.stderr);
        let v = results(&out);
        let rows = v["scenarios"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        for row in rows {
            assert_eq!(row["status"], "ok");
            assert_eq!(row["runtime"], "ours");
            assert_eq!(row["served"]["protocol"], proto);
            assert_eq!(row["measurement"]["failures"], 0);
            let n = row["measurement"]["iterations"].as_f64().unwrap();
            let served = common::server_successes(row);
            // The server counted what the client measured, give or take the requests that
            // finished while the metrics were being scraped at the window's edges.
            assert!(
                (served - n).abs() <= 0.02 * n + 8.0,
                "{proto}: server {served}, client {n}"
            );
            assert!(row["served"]["client_cores_busy"].as_f64().is_some());
        }
        // One connection, one request at a time: no batching possible. Four: batches form.
        assert_eq!(rows[0]["served"]["server_avg_batch"].as_f64().unwrap(), 1.0);
        assert!(
            rows[1]["served"]["server_avg_batch"].as_f64().unwrap() > 1.2,
            "{}",
            rows[1]["served"]["server_avg_batch"]
        );
        assert!(out.join("report.html").is_file());
    }
}

#[test]
fn bad_load_targets_are_clear_errors() {
    let out = tmp("load-bad");
    let o = out.to_str().unwrap();
    // Nothing listens there.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let r = harness(&[
        "load",
        "--target",
        &format!("http://127.0.0.1:{port}"),
        "--model",
        "m",
        "--out",
        o,
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("cannot reach"), "{}", r.stderr);
    let r = harness(&[
        "load",
        "--target",
        "http://127.0.0.1:x",
        "--model",
        "m",
        "--out",
        o,
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not a port"), "{}", r.stderr);
    let r = harness(&["load", "--target", "http://127.0.0.1:1", "--out", o]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--model NAME is required"),
        "{}",
        r.stderr
    );
    let r = harness(&[
        "load",
        "--target",
        "http://127.0.0.1:1",
        "--protocol",
        "openai-completions",
        "--model",
        "m",
        "--slo",
        "ttft",
        "--out",
        o,
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--slo"), "{}", r.stderr);
    // A server without the model.
    let s = Server::start("load-bad", &fixture(), &[]);
    let r = harness(&["load", "--target", &s.url(), "--model", "nope", "--out", o]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown model 'nope'"), "{}", r.stderr);
}

#[test]
fn compare_served_shows_the_serving_tax_with_parity_checked() {
    let out = tmp("served");
    let r = harness(&[
        "compare",
        "--model",
        fixture().to_str().unwrap(),
        "--runtimes",
        "ort,candle",
        "--seq",
        "8",
        "--threads",
        "1",
        "--warmup-time",
        "0.1s",
        "--target-ci",
        "off",
        "--min-time",
        "0.3s",
        "--min-samples",
        "10",
        "--no-overhead",
        "--served",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("serving tax"), "{}", r.stdout);
    // What serving adds beyond the server's own compute, from the same served requests.
    assert!(
        r.stdout
            .contains("served beyond the server's compute and queue: "),
        "{}",
        r.stdout
    );
    let v = results(&out);
    let served: Vec<&Value> = v["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["variant"] == "served")
        .collect();
    assert_eq!(served.len(), 2);
    for s in &served {
        assert_eq!(s["parity"]["status"], "pass", "{}", s["parity"]);
        assert_eq!(s["served"]["protocol"], "kserve-http");
        // The server it started is watched: its CPU and memory are in the row.
        let srv = &s["resources"]["server"];
        assert!(srv["cores_busy"].as_f64().unwrap() > 0.05, "{srv}");
        assert!(
            srv["peak_rss_bytes"].as_u64().unwrap() > 10_000_000,
            "{srv}"
        );
        assert!(
            s["id"].as_str().unwrap().ends_with("/served/c1"),
            "{}",
            s["id"]
        );
    }
    // The tax at concurrency 1 again, in interleaved blocks: one per runtime, each paired
    // with its served row and its in-process twin, both sides measured on every pair.
    let interleaved = v["interleaved_tax"].as_array().expect("interleaved_tax");
    assert_eq!(interleaved.len(), 2, "{interleaved:?}");
    for t in interleaved {
        let served_id = t["served_scenario"].as_str().unwrap();
        assert!(served.iter().any(|s| s["id"] == served_id), "{t}");
        let twin = t["scenario"].as_str().unwrap();
        assert!(served_id.starts_with(&format!("{twin}/served/")), "{t}");
        // One instance on both sides: the method is named with the result.
        assert!(
            t["client"]
                .as_str()
                .unwrap()
                .starts_with("one instance, called directly and served by this process"),
            "{t}"
        );
        let pairs = t["pairs"].as_u64().unwrap();
        assert!(pairs >= 12, "{t}");
        let n = pairs * t["per_block"].as_u64().unwrap();
        assert_eq!(t["in_process"]["samples"].as_u64().unwrap(), n, "{t}");
        assert_eq!(t["served"]["samples"].as_u64().unwrap(), n, "{t}");
        let (a, b) = (
            t["in_process"]["p50_ms"].as_f64().unwrap(),
            t["served"]["p50_ms"].as_f64().unwrap(),
        );
        assert!(a > 0.0 && b > 0.0, "{t}");
        assert!(
            (t["tax_ms"].as_f64().unwrap() - (b - a)).abs() < 1e-9,
            "{t}"
        );
        let (lo, hi) = (
            t["pair_ci_ms"][0].as_f64().unwrap(),
            t["pair_ci_ms"][1].as_f64().unwrap(),
        );
        let mid = t["pair_median_ms"].as_f64().unwrap();
        assert!(lo <= mid && mid <= hi, "{t}");
    }
    assert!(r.stdout.contains("in interleaved blocks: "), "{}", r.stdout);
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("## Serving tax") && md.contains("beyond compute ms"),
        "{md}"
    );
    assert!(md.contains("measured in interleaved blocks"), "{md}");
    assert!(out.join("served-ort-t1.log").is_file());
}

/// A server whose answers take 1 ms and 4 ms in turn: a median no sample count pins down.
fn bimodal_server() -> u16 {
    use axum::routing::get;
    use std::sync::atomic::{AtomicU64, Ordering};
    let n = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/",
        get(move || {
            let k = n.fetch_add(1, Ordering::Relaxed);
            async move {
                let ms = if k.is_multiple_of(2) { 1 } else { 4 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                "ok"
            }
        }),
    );
    spawn_app(app)
}

#[test]
fn load_shares_its_budget_between_its_scenarios() {
    let port = bimodal_server();
    let out = tmp("load-budget");
    let r = harness(&[
        "load",
        "--target",
        &format!("http://127.0.0.1:{port}"),
        "--protocol",
        "http-get",
        "--concurrency",
        "1,2",
        "--warmup-time",
        "0s",
        "--min-time",
        "0.2s",
        "--budget",
        "3s",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v = results(&out);
    assert_eq!(v["settings"]["budget_s"], 3.0);
    assert_eq!(v["settings"]["target_ci_pct"], 2.0);
    let rows = v["scenarios"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let spent = common::spent_to_budget_shares(rows);
    assert!(spent <= 3.0, "{spent} s of a 3 s budget");
    // The first scenario's share is half the budget less the set-up before it; the second
    // gets what is left.
    let first = rows[0]["measurement"]["share_s"].as_f64().unwrap();
    assert!((1.3..=1.5).contains(&first), "{first}");
}

#[test]
fn compare_finds_the_capacity_in_process_and_served_and_states_the_capacity_lost() {
    let out = tmp("served-capacity");
    let r = common::compare_fixture(
        &out,
        &[
            "--runtimes",
            "ort",
            "--threads",
            "1",
            "--min-time",
            "0.3s",
            "--max-time",
            "1s",
            "--served",
            "--find-max-rate",
            "--slo",
            "p99:50ms,errors:1%",
        ],
    );
    let v = results(&out);
    let searches = v["capacity"].as_array().expect("a capacity section");
    let groups: Vec<&str> = searches
        .iter()
        .map(|s| s["group"].as_str().unwrap())
        .collect();
    assert_eq!(
        groups,
        ["ort/cpu/fp32/b1/s8/t1", "ort/cpu/fp32/b1/s8/t1/served/c1"],
        "one search after each closed-loop row, in-process (in its worker) and served"
    );
    let rows = v["scenarios"].as_array().unwrap();
    let mut capacities = Vec::new();
    for s in searches {
        let probes = s["probes"].as_array().unwrap();
        assert!(probes.len() >= 3, "{s}");
        let capacity = s["capacity"].as_f64().unwrap();
        assert!(capacity > 0.0, "{s}");
        // The capacity is a rate that passed, and a probe at it is a row of the results.
        assert!(probes
            .iter()
            .any(|p| p["rate"].as_f64() == Some(capacity) && p["passed"] == true));
        let prefix = format!(
            "{}/open-poisson-",
            s["group"].as_str().unwrap().trim_end_matches("/c1")
        );
        let probe_rows = rows
            .iter()
            .filter(|r| r["id"].as_str().unwrap().starts_with(&prefix))
            .count();
        assert_eq!(probe_rows, probes.len(), "{}", s["group"]);
        capacities.push(capacity);
    }
    // Planned rows are still one in-process and one served, each with parity checked.
    let planned: Vec<&Value> = rows
        .iter()
        .filter(|r| !r["id"].as_str().unwrap().contains("/open-"))
        .collect();
    assert_eq!(planned.len(), 2);
    assert_eq!(planned[0]["parity"]["status"], "reference");
    assert_eq!(planned[1]["parity"]["status"], "pass");
    // The serving tax as capacity, from the two searches' own figures.
    let lost = format!(
        "capacity served over kserve-http of ort/cpu/fp32/b1/s8/t1 under p99 <= 50 ms, errors <= 1%: {:.1}/s in-process -> {:.1}/s served",
        capacities[0], capacities[1]
    );
    assert!(r.stdout.contains(&lost), "{lost}\n{}", r.stdout);
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("## Capacity") && md.contains(&lost), "{md}");
}

#[test]
fn compare_find_max_rate_needs_objectives() {
    let out = tmp("capacity-bad");
    let o = out.to_str().unwrap();
    let m = fixture();
    let m = m.to_str().unwrap();
    let r = harness(&["compare", "--model", m, "--find-max-rate", "--out", o]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("--find-max-rate needs --slo"),
        "{}",
        r.stderr
    );
    let r = harness(&[
        "compare",
        "--model",
        m,
        "--find-max-rate",
        "--slo",
        "p101:2ms",
        "--out",
        o,
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("bad percentile \"p101\""), "{}", r.stderr);
    let r = harness(&["compare", "--model", m, "--slo", "p99:2ms", "--out", o]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--find-max-rate"), "{}", r.stderr);
    let r = harness(&[
        "compare",
        "--model",
        m,
        "--find-max-rate",
        "--slo",
        "p99:2ms",
        "--rate",
        "10",
        "--out",
        o,
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!out.join("results.json").exists(), "nothing ran");
}

#[test]
fn load_without_seq_fits_the_sequence_the_server_declares() {
    // The fixture takes at most 64 positions; our server says so in its metadata, and a
    // load without --seq runs at 64 instead of failing every request at 128.
    let s = Server::start("load-default-seq", &fixture(), &["--runtime", "ort"]);
    let out = tmp("load-default-seq");
    let r = harness(&[
        "load",
        "--target",
        &s.url(),
        "--protocol",
        "kserve-http",
        "--model",
        "tiny-bert",
        "--warmup-time",
        "0.1s",
        "--min-time",
        "0.3s",
        "--target-ci",
        "off",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = results(&out);
    assert_eq!(v["model"]["max_positions"], 64, "{}", v["model"]);
    let row = &v["scenarios"][0];
    assert_eq!(row["id"], "kserve-http/kserve-http/b1/s64/c1", "{row}");
    assert_eq!(row["measurement"]["failures"], 0);
    // An explicit --seq beyond it is refused before a request is sent, saying what fits.
    let out = tmp("load-long-seq");
    let r = harness(&[
        "load",
        "--target",
        &s.url(),
        "--protocol",
        "kserve-http",
        "--model",
        "tiny-bert",
        "--seq",
        "128",
        "--min-time",
        "0.3s",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("exceeds the model's max_position_embeddings 64; use --seq 64 or less"),
        "{}",
        r.stderr
    );
}

#[test]
fn compare_does_not_search_the_capacity_of_the_null_runtime() {
    // Its rate is the harness's own (tens of millions a second): a search there would only
    // schedule arrivals by the hundred million.
    let out = tmp("capacity-null");
    common::compare_fixture(
        &out,
        &[
            "--runtimes",
            "null",
            "--min-time",
            "0.3s",
            "--find-max-rate",
            "--slo",
            "p99:1ms",
        ],
    );
    let v = results(&out);
    let searches = v["capacity"].as_array().unwrap();
    assert_eq!(searches.len(), 1, "{v}");
    assert_eq!(
        searches[0]["verdict"],
        "not searched: the null runtime computes nothing"
    );
    assert_eq!(searches[0]["probes"].as_array().unwrap().len(), 0);
    assert_eq!(v["scenarios"].as_array().unwrap().len(), 1, "no probe rows");
}
