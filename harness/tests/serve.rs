//! `harness serve` on loopback: every protocol, dynamic batching, limits, bad input, shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{fixture, http, json_body, Server};
use harness::net::kserve;
use runtimes::{HostTensor, ModelFiles, ModelInfo, TensorData};
use serde_json::{json, Value};

fn reference() -> (Vec<HostTensor>, Vec<HostTensor>) {
    let info = ModelInfo::read(&ModelFiles::resolve(&fixture()).unwrap()).unwrap();
    let r = info
        .reference
        .expect("the fixture's manifest holds PyTorch reference outputs");
    (r.inputs, r.outputs)
}

fn max_abs_diff(a: &HostTensor, b: &HostTensor) -> f64 {
    assert_eq!(a.shape, b.shape, "{} vs {}", a.name, b.name);
    a.data
        .to_f64()
        .iter()
        .zip(b.data.to_f64())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn infer_json(port: u16, inputs: &[HostTensor]) -> (u16, Value) {
    let (body, _) = kserve::encode_request(inputs, false);
    let (status, _, b) = http(
        port,
        "POST",
        "/v2/models/tiny-bert/infer",
        &[("Content-Type", "application/json")],
        &body,
    );
    (status, json_body(&b))
}

/// An infer request with binary tensors: the status, the body and its JSON header's length.
fn infer_binary(port: u16, inputs: &[HostTensor]) -> (u16, Vec<u8>, usize) {
    let (body, n) = kserve::encode_request(inputs, true);
    let n = n.unwrap().to_string();
    let hdr = [("Inference-Header-Content-Length", n.as_str())];
    let (st, head, b) = http(port, "POST", "/v2/models/tiny-bert/infer", &hdr, &body);
    let hl: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("inference-header-content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a binary answer names its JSON header's length");
    // Framed by a true Content-Length, not chunked.
    let length = format!("content-length: {}", b.len());
    let head = head.to_ascii_lowercase();
    assert!(head.lines().any(|l| l.trim() == length), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    (st, b, hl)
}

#[test]
fn kserve_http_json_and_binary_answer_like_pytorch() {
    let s = Server::start("kserve", &fixture(), &[]);
    let p = s.http;
    assert_eq!(http(p, "GET", "/v2/health/live", &[], b"").0, 200);
    assert_eq!(http(p, "GET", "/v2/health/ready", &[], b"").0, 200);
    assert_eq!(
        http(p, "GET", "/v2/models/tiny-bert/ready", &[], b"").0,
        200
    );
    let (st, _, b) = http(p, "GET", "/v2/models/tiny-bert", &[], b"");
    assert_eq!(st, 200);
    let md = json_body(&b);
    assert_eq!(md["name"], "tiny-bert");
    assert_eq!(
        md["inputs"][0],
        json!({"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]})
    );
    assert_eq!(md["outputs"][0]["shape"], json!([-1, -1, 32]));
    let (st, _, b) = http(p, "GET", "/v2", &[], b"");
    assert_eq!(
        (st, json_body(&b)["extensions"][0].clone()),
        (200, json!("binary_tensor_data"))
    );

    let (inputs, want) = reference();
    // JSON, flat data.
    let (st, v) = infer_json(p, &inputs);
    assert_eq!(st, 200, "{v}");
    let got = kserve::decode_response(&serde_json::to_vec(&v).unwrap(), None).unwrap();
    assert!(max_abs_diff(&got[0], &want[0]) < 1e-4);
    // A hand-written request with nested data and an id, asking for one output.
    let ids = inputs[0].data.to_i64().unwrap();
    let seq = inputs[0].shape[1];
    let row: Vec<i64> = ids[..seq].to_vec();
    let body = json!({
        "id": "r-1",
        "inputs": [
            {"name": "input_ids", "shape": [1, seq], "datatype": "INT64", "data": [row]},
            {"name": "attention_mask", "shape": [1, seq], "datatype": "INT64", "data": vec![vec![1; seq]]},
            {"name": "token_type_ids", "shape": [1, seq], "datatype": "INT64", "data": vec![0; seq]},
        ],
        "outputs": [{"name": "last_hidden_state"}],
    });
    let (st, _, b) = http(
        p,
        "POST",
        "/v2/models/tiny-bert/versions/1/infer",
        &[],
        body.to_string().as_bytes(),
    );
    let v = json_body(&b);
    assert_eq!(
        (st, v["id"].clone(), v["model_name"].clone()),
        (200, json!("r-1"), json!("tiny-bert"))
    );
    assert_eq!(v["outputs"][0]["shape"], json!([1, seq, 32]));

    // Binary tensor extension both ways.
    let (st, b, hl) = infer_binary(p, &inputs);
    assert_eq!(st, 200);
    let got = kserve::decode_response(&b, Some(hl)).unwrap();
    assert!(max_abs_diff(&got[0], &want[0]) < 1e-4);
}

#[test]
fn kserve_grpc_answers_like_pytorch() {
    let s = Server::start("grpc", &fixture(), &["--runtime", "tract"]);
    let (inputs, want) = reference();
    let o = load_opts(
        &format!("127.0.0.1:{}", s.grpc.unwrap()),
        harness::net::load::KSERVE_GRPC,
    );
    let t = harness::net::client::Target::parse(&o.target, 8001).unwrap();
    let got = harness::net::load::fetch_outputs(&o, &t, &inputs).unwrap();
    assert!(max_abs_diff(&got[0], &want[0]) < 1e-4);
    // A wrong model name is NOT_FOUND, the server stays up.
    let mut bad = o.clone();
    bad.model = Some("nope".into());
    let e = harness::net::load::fetch_outputs(&bad, &t, &inputs).unwrap_err();
    assert!(e.contains("unknown model 'nope'"), "{e}");
    assert!(harness::net::load::fetch_outputs(&o, &t, &inputs).is_ok());
}

/// Inputs that disagree on the sequence length are the client's error: 400 over HTTP and
/// INVALID_ARGUMENT over gRPC, with the reason, never a 500 from the runtime.
#[test]
fn inputs_that_disagree_on_a_dimension_are_a_client_error() {
    let s = Server::start("disagree", &fixture(), &[]);
    let mut inputs = runtimes::tensor::bert_inputs(1, 4, |_| 7);
    let mask = inputs
        .iter_mut()
        .find(|t| t.name == "attention_mask")
        .unwrap();
    *mask = HostTensor::new("attention_mask", vec![1, 2], TensorData::I64(vec![1, 1]));
    let (status, body) = infer_json(s.http, &inputs);
    assert_eq!(status, 400, "{body}");
    // A wrong method is a 405 with a JSON reason too, not the HTTP library's empty answer.
    let (st, _, b) = http(s.http, "GET", "/v2/models/tiny-bert/infer", &[], &[]);
    assert_eq!(st, 405);
    assert!(
        json_body(&b)["error"]
            .as_str()
            .unwrap()
            .contains("GET is not allowed here"),
        "{}",
        String::from_utf8_lossy(&b)
    );
    let reason = body["error"].as_str().unwrap();
    assert!(
        reason.contains("'attention_mask' dimension 1") && reason.contains("must agree"),
        "{reason}"
    );
    let o = load_opts(
        &format!("127.0.0.1:{}", s.grpc.unwrap()),
        harness::net::load::KSERVE_GRPC,
    );
    let t = harness::net::client::Target::parse(&o.target, 8001).unwrap();
    let e = harness::net::load::fetch_outputs(&o, &t, &inputs).unwrap_err();
    assert!(
        e.contains("invalid-argument") && e.contains("must agree"),
        "{e}"
    );
}

/// Idle connections and a slowloris client are closed after `--idle-timeout`, and
/// well-behaved clients are served meanwhile.
#[test]
fn idle_and_slow_connections_are_closed_after_the_idle_timeout() {
    use std::io::{Read, Write};
    let s = Server::start("idle", &fixture(), &["--idle-timeout", "1s"]);
    let addr = format!("127.0.0.1:{}", s.http);
    let idle: Vec<std::net::TcpStream> = (0..50)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    // A kept-alive connection that answered once, then sits idle.
    let mut kept = std::net::TcpStream::connect(&addr).unwrap();
    kept.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    let t = Instant::now();
    let head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut i = 0;
    let mut slow_closed = false;
    while t.elapsed() < Duration::from_secs(4) {
        // One byte every 100 ms, never finishing the head.
        if slow.write_all(&[head[i % head.len()]]).is_err() {
            slow_closed = true;
            break;
        }
        i += 1;
        // Well-behaved clients are still served.
        let (st, _, _) = http(s.http, "GET", "/v2/health/live", &[], &[]);
        assert_eq!(st, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed = |mut c: &std::net::TcpStream| {
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) => return true,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
                // The one answer the kept-alive connection got.
                Ok(_) => continue,
            }
        }
    };
    assert!(
        slow_closed || closed(&slow),
        "the slowloris connection is still open"
    );
    assert!(t.elapsed() < Duration::from_secs(6));
    assert!(
        closed(&kept),
        "the idle kept-alive connection is still open"
    );
    for c in &idle {
        assert!(closed(c), "an idle connection is still open");
    }
}

fn load_opts(
    target: &str,
    protocol: &'static dyn harness::net::load::Protocol,
) -> harness::net::load::LoadOptions {
    harness::net::load::LoadOptions {
        vocab: Some(128),
        ..harness::net::load::LoadOptions::new(target, protocol, Some("tiny-bert"))
    }
}

fn metric(port: u16, name: &str) -> f64 {
    let (_, _, b) = http(port, "GET", "/metrics", &[], b"");
    let m = harness::net::metrics::parse_prometheus(&String::from_utf8_lossy(&b));
    harness::net::metrics::sum_metric(&m, name).unwrap_or(0.0)
}

#[test]
fn dynamic_batching_merges_concurrent_requests_and_answers_each_its_own_rows() {
    let s = Server::start(
        "batching",
        &fixture(),
        &["--max-batch", "16", "--max-queue-delay", "200ms"],
    );
    let p = s.http;
    // Eight different single-row requests, sent at once, of different lengths (KServe
    // requests batch only with equal shapes: two groups of four).
    let reqs: Vec<Vec<HostTensor>> = (0..8)
        .map(|k| {
            let seq = if k % 2 == 0 { 6 } else { 9 };
            runtimes::tensor::bert_inputs(1, seq, |i| ((i * 7 + k * 13) % 120) as i64 + 5)
        })
        .collect();
    // Alone first (each in its own batch: sequential requests never wait for company).
    let alone: Vec<Value> = reqs.iter().map(|r| infer_json(p, r).1).collect();
    let exec0 = metric(p, "nv_inference_exec_count");
    let together: Vec<Value> = std::thread::scope(|sc| {
        let hs: Vec<_> = reqs
            .iter()
            .map(|r| sc.spawn(move || infer_json(p, r)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().1).collect()
    });
    let execs = metric(p, "nv_inference_exec_count") - exec0;
    assert!(execs <= 4.0, "8 concurrent requests ran in {execs} batches");
    for (a, b) in alone.iter().zip(&together) {
        let a = kserve::decode_response(&serde_json::to_vec(a).unwrap(), None).unwrap();
        let b = kserve::decode_response(&serde_json::to_vec(b).unwrap(), None).unwrap();
        assert!(max_abs_diff(&a[0], &b[0]) < 1e-5);
    }
}

#[test]
fn a_full_queue_answers_503_at_once_and_the_server_recovers() {
    let s = Server::start("queue", &fixture(), &["--max-queue", "1", "--threads", "1"]);
    queue_overflows_then_recovers(s.http);
}

/// Twelve large requests at once against a server whose queue holds one: some are refused
/// with 503 "queue is full" (counted in /metrics), none fails otherwise, nothing stays pending,
/// and the server answers again afterwards.
fn queue_overflows_then_recovers(p: u16) {
    // Large requests keep the one instance busy while others arrive.
    let big = runtimes::tensor::bert_inputs(256, 64, |i| (i % 100) as i64 + 5);
    let (body, _) = kserve::encode_request(&big, false);
    let codes: Vec<(u16, Vec<u8>)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..12)
            .map(|_| {
                let body = &body;
                sc.spawn(move || {
                    let (st, _, b) = http(p, "POST", "/v2/models/tiny-bert/infer", &[], body);
                    (st, b)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refused: Vec<_> = codes.iter().filter(|c| c.0 == 503).collect();
    assert!(
        !refused.is_empty(),
        "no 503 among {:?}",
        codes.iter().map(|c| c.0).collect::<Vec<_>>()
    );
    assert!(codes.iter().all(|c| c.0 == 200 || c.0 == 503));
    assert!(String::from_utf8_lossy(&refused[0].1).contains("queue is full"));
    assert!(metric(p, "harness_queue_rejections") >= refused.len() as f64);
    assert_eq!(metric(p, "nv_inference_pending_request_count"), 0.0);
    let (st, _) = infer_json(p, &runtimes::tensor::bert_inputs(1, 4, |_| 7));
    assert_eq!(st, 200);
}

#[test]
fn inline_serving_answers_as_an_instance_thread_does_and_keeps_its_queue_limit() {
    let threaded = Server::start("threaded", &fixture(), &["--threads", "1"]);
    let inline = Server::start(
        "inline",
        &fixture(),
        &[
            "--threads",
            "1",
            "--inline",
            "--max-queue",
            "1",
            "--io-threads",
            "2",
        ],
    );
    assert!(
        inline
            .log_text()
            .contains("1 instance(s) run inline on the I/O thread"),
        "{}",
        inline.log_text()
    );
    let (inputs, want) = reference();
    // Binary: the same bytes from both (the JSON header, then the tensor in its own piece),
    // framed by a true Content-Length.
    let (a, a_body, _) = infer_binary(threaded.http, &inputs);
    let (b, b_body, hl) = infer_binary(inline.http, &inputs);
    assert_eq!((a, b), (200, 200));
    assert_eq!(a_body, b_body);
    let got = kserve::decode_response(&b_body, Some(hl)).unwrap();
    assert!(max_abs_diff(&got[0], &want[0]) < 1e-4);
    // JSON too.
    let (st, v) = infer_json(inline.http, &inputs);
    assert_eq!(st, 200, "{v}");
    let got = kserve::decode_response(&serde_json::to_vec(&v).unwrap(), None).unwrap();
    assert!(max_abs_diff(&got[0], &want[0]) < 1e-4);
    // Requests that find the instance busy wait, one at most; the rest get 503 at once (with
    // two I/O threads: with one, the others wait unread while it computes).
    queue_overflows_then_recovers(inline.http);
}

#[test]
fn ten_thousand_malformed_requests_get_4xx_and_the_server_stays_up_with_bounded_memory() {
    let mut s = Server::start("malformed", &fixture(), &["--max-body", "64KiB"]);
    let t = harness::net::client::Target::parse(&s.url(), 80).unwrap();
    let mut c = harness::net::client::Http1::new(&t, Duration::from_secs(10));
    let good = kserve::encode_request(&runtimes::tensor::bert_inputs(1, 4, |_| 7), false).0;
    let good_text = String::from_utf8(good.clone()).unwrap();
    let oversized = vec![b'['; 70 * 1024];
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("/v2/models/tiny-bert/infer", b"{not json".to_vec()),
        ("/v2/models/tiny-bert/infer", b"".to_vec()),
        ("/v2/models/tiny-bert/infer", b"[]".to_vec()),
        (
            "/v2/models/tiny-bert/infer",
            good_text.replace("\"INT64\"", "\"FP32\"").into_bytes(),
        ),
        (
            "/v2/models/tiny-bert/infer",
            good_text.replace("[1,4]", "[2,4]").into_bytes(),
        ),
        (
            "/v2/models/tiny-bert/infer",
            good_text.replace("[1,4]", "[1,-4]").into_bytes(),
        ),
        (
            "/v2/models/tiny-bert/infer",
            good_text.replace("input_ids", "input_idz").into_bytes(),
        ),
        (
            "/v2/models/tiny-bert/infer",
            good_text.replace("[1,4]", "[1,4,1]").into_bytes(),
        ),
        (
            "/v2/models/tiny-bert/infer",
            good_text.replacen("7", "99999", 1).into_bytes(),
        ),
        ("/v2/models/other/infer", good.clone()),
        ("/v2/models/tiny-bert/versions/9/infer", good.clone()),
        ("/v2/models/tiny-bert/infer", oversized),
        ("/v1/embeddings", b"{\"model\": 3}".to_vec()),
        (
            "/v1/embeddings",
            b"{\"model\": \"nope\", \"input\": \"x\"}".to_vec(),
        ),
        (
            "/v1/embeddings",
            b"{\"model\": \"tiny-bert\", \"input\": []}".to_vec(),
        ),
        (
            "/v1/embeddings",
            b"{\"model\": \"tiny-bert\", \"input\": [[1, -5]]}".to_vec(),
        ),
        ("/nowhere", b"x".to_vec()),
    ];
    let requests: Vec<Vec<u8>> = bodies
        .iter()
        .map(|(path, b)| {
            harness::net::client::request_bytes(
                &t,
                "POST",
                path,
                &[("Content-Type", "application/json".into())],
                b,
            )
        })
        .collect();
    // Warm the allocator, then measure.
    for r in &requests {
        let _ = c.call(r);
    }
    let rss0 = s.rss_kb();
    let mut by_status = std::collections::BTreeMap::new();
    for i in 0..10_000 {
        let r = c.call(&requests[i % requests.len()]).unwrap();
        assert!(
            (400..500).contains(&r.status),
            "{} -> {} {}",
            bodies[i % bodies.len()].0,
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(json!({}));
        let reason = v["error"].as_str().or(v["message"].as_str()).unwrap_or("");
        assert!(
            !reason.is_empty(),
            "a 4xx without a reason: {}",
            String::from_utf8_lossy(&r.body)
        );
        *by_status.entry(r.status).or_insert(0) += 1;
    }
    assert!(s.alive());
    let grown = s.rss_kb().saturating_sub(rss0);
    assert!(
        grown < 30_000,
        "the server grew by {grown} kB over 10,000 bad requests"
    );
    assert!(
        by_status.contains_key(&400)
            && by_status.contains_key(&404)
            && by_status.contains_key(&413),
        "{by_status:?}"
    );
    // And it still serves.
    let r = c.call(&requests[0].clone()).unwrap();
    assert_eq!(r.status, 400);
    let (st, _) = infer_json(s.http, &runtimes::tensor::bert_inputs(1, 4, |_| 7));
    assert_eq!(st, 200);
}

#[test]
fn sigterm_finishes_requests_in_flight_and_exits_zero() {
    let mut s = Server::start("shutdown", &fixture(), &["--threads", "1"]);
    let p = s.http;
    let big = runtimes::tensor::bert_inputs(256, 64, |i| (i % 100) as i64 + 5);
    let (body, _) = kserve::encode_request(&big, false);
    let inflight =
        std::thread::spawn(move || http(p, "POST", "/v2/models/tiny-bert/infer", &[], &body).0);
    std::thread::sleep(Duration::from_millis(30));
    let status = s.terminate();
    assert!(status.success(), "{status}: {}", s.log_text());
    assert_eq!(inflight.join().unwrap(), 200);
    assert!(s.log_text().contains("stopped after"), "{}", s.log_text());
}

#[test]
fn bad_serve_arguments_are_clear_errors() {
    let r = common::harness(&[
        "serve",
        "--model",
        "/nonexistent/model",
        "--http-port",
        "0",
        "--no-grpc",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("/nonexistent/model"), "{}", r.stderr);
    let r = common::harness(&[
        "serve",
        "--model",
        fixture().to_str().unwrap(),
        "--max-body",
        "12XB",
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown unit"), "{}", r.stderr);
    // A port in use.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let r = common::harness(&[
        "serve",
        "--model",
        fixture().to_str().unwrap(),
        "--http-port",
        &port,
        "--no-grpc",
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("cannot listen"), "{}", r.stderr);
    // --inline runs one instance without batching.
    let model = fixture();
    for extra in [["--instances", "2"], ["--max-batch", "8"]] {
        let mut args = vec!["serve", "--model", model.to_str().unwrap(), "--inline"];
        args.extend(extra);
        let r = common::harness(&args);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr
                .contains("--inline runs one instance without batching")
                && r.stderr.contains("use --instances 1 --max-batch 1"),
            "{}",
            r.stderr
        );
    }
    let _ = TensorData::I64(vec![]);
}

#[test]
fn requests_past_the_timeout_get_504_and_the_server_goes_on() {
    let s = Server::start(
        "timeout",
        &fixture(),
        &["--threads", "1", "--request-timeout", "5ms"],
    );
    let p = s.http;
    let big = runtimes::tensor::bert_inputs(256, 64, |i| (i % 100) as i64 + 5);
    let (body, _) = kserve::encode_request(&big, false);
    let codes: Vec<(u16, Vec<u8>)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                sc.spawn(|| {
                    let (st, _, b) = http(p, "POST", "/v2/models/tiny-bert/infer", &[], &body);
                    (st, b)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let late: Vec<_> = codes.iter().filter(|c| c.0 == 504).collect();
    assert!(
        !late.is_empty(),
        "{:?}",
        codes.iter().map(|c| c.0).collect::<Vec<_>>()
    );
    assert!(String::from_utf8_lossy(&late[0].1).contains("--request-timeout"));
    assert!(metric(p, "harness_request_timeouts") >= 1.0);
    // Once the batch that was already running finishes, small requests fit the timeout.
    let small = runtimes::tensor::bert_inputs(1, 4, |_| 7);
    let deadline = Instant::now() + Duration::from_secs(10);
    while infer_json(p, &small).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the server never answered in time again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn embeddings_reference() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture().join("embeddings_reference.json")).unwrap(),
    )
    .unwrap()
}

fn vec_f64(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn embeddings_tokenize_pool_and_normalise_like_sentence_transformers() {
    let s = Server::start(
        "embeddings",
        &fixture(),
        &["--max-batch", "16", "--max-queue-delay", "20ms"],
    );
    let p = s.http;
    let reference = embeddings_reference();
    let sentences = reference["sentences"].as_array().unwrap();
    let want: Vec<Vec<f64>> = reference["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(vec_f64)
        .collect();
    let close = |got: &Value, want: &[f64]| {
        let g = vec_f64(got);
        assert_eq!(g.len(), want.len());
        let d = g
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(d < 1e-5, "max abs diff {d}");
        let norm: f64 = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    };
    // All sentences in one request (padded to the longest, one truncated at 64 tokens).
    let body = json!({"model": "tiny-bert", "input": sentences});
    let (st, _, b) = http(
        p,
        "POST",
        "/v1/embeddings",
        &[],
        body.to_string().as_bytes(),
    );
    let v = json_body(&b);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["object"], "list");
    let tokens: u64 = reference["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_array().unwrap().len() as u64)
        .sum();
    assert_eq!(v["usage"]["prompt_tokens"].as_u64().unwrap(), tokens);
    for (i, w) in want.iter().enumerate() {
        assert_eq!(v["data"][i]["index"], i);
        close(&v["data"][i]["embedding"], w);
    }
    // One sentence per request, concurrently: the batcher pads them together; answers agree.
    let answers: Vec<Value> = std::thread::scope(|sc| {
        let hs: Vec<_> = sentences
            .iter()
            .map(|t| {
                let body = json!({"model": "tiny-bert", "input": t}).to_string();
                sc.spawn(move || {
                    json_body(&http(p, "POST", "/v1/embeddings", &[], body.as_bytes()).2)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, w) in answers.iter().zip(&want) {
        close(&a["data"][0]["embedding"], w);
    }
    // Token ids instead of text, and base64 floats.
    let ids = &reference["token_ids"][1];
    let body = json!({"model": "tiny-bert", "input": [ids], "encoding_format": "base64"});
    let (st, _, b) = http(
        p,
        "POST",
        "/v1/embeddings",
        &[],
        body.to_string().as_bytes(),
    );
    assert_eq!(st, 200);
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(json_body(&b)["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f64> = raw
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    close(&json!(floats), &want[1]);
    // The model list, and clear refusals.
    let (st, _, b) = http(p, "GET", "/v1/models", &[], b"");
    let v = json_body(&b);
    assert_eq!(
        (
            st,
            v["data"][0]["id"].clone(),
            v["data"][0]["max_model_len"].clone()
        ),
        (200, json!("tiny-bert"), json!(64))
    );
    for (body, code, want) in [
        (
            json!({"model": "tiny-bert", "input": [vec![5; 65]]}),
            400,
            "at most 64",
        ),
        (
            json!({"model": "tiny-bert", "input": "x", "encoding_format": "hex"}),
            400,
            "encoding_format",
        ),
        (
            json!({"model": "tiny-bert", "input": "x", "dimensions": 8}),
            400,
            "dimensions",
        ),
        (
            json!({"model": "tiny-bert", "input": [1.5]}),
            400,
            "'input' must be",
        ),
        (
            json!({"model": "other", "input": "x"}),
            404,
            "does not exist",
        ),
    ] {
        let (st, _, b) = http(
            p,
            "POST",
            "/v1/embeddings",
            &[],
            body.to_string().as_bytes(),
        );
        let v = json_body(&b);
        assert_eq!(st, code, "{v}");
        assert!(v["message"].as_str().unwrap().contains(want), "{v}");
    }
}

#[test]
fn load_drives_embeddings_with_sentences_of_known_length() {
    let s = Server::start("embed-load", &fixture(), &[]);
    let out = common::tmp("embed-load");
    let r = common::harness(&[
        "load",
        "--target",
        &s.url(),
        "--protocol",
        "openai-embeddings",
        "--model",
        "tiny-bert",
        "--batch",
        "4",
        "--seq",
        "10",
        "--concurrency",
        "2",
        "--warmup-time",
        "0.2s",
        "--target-ci",
        "off",
        "--min-time",
        "0.5s",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v = common::results(&out);
    let row = &v["scenarios"][0];
    assert_eq!(row["status"], "ok");
    // Four sentences of ten words, each with [CLS] and [SEP]: 48 tokens where every word is
    // one token (MiniLM's vocabulary); the fixture's 128-entry vocabulary splits words.
    assert!(row["served"]["prompt_tokens_per_request"].as_f64().unwrap() >= 48.0);
    let thr = row["throughput_per_s"].as_f64().unwrap();
    let req = row["measurement"]["iterations"].as_f64().unwrap()
        / row["measurement"]["window_s"].as_f64().unwrap();
    assert!((thr / req - 4.0).abs() < 1e-6, "items/s counts sentences");
}

/// A model that counts its inferences: which instance a request ran on.
struct Counting {
    inner: Box<dyn runtimes::Loaded>,
    infers: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl runtimes::Loaded for Counting {
    fn applied(&self) -> Vec<(String, String)> {
        self.inner.applied()
    }
    fn prepare(&mut self, inputs: &[HostTensor]) -> Result<(), runtimes::RuntimeError> {
        self.inner.prepare(inputs)
    }
    fn run(&mut self) -> Result<(), runtimes::RuntimeError> {
        self.inner.run()
    }
    fn infer(&mut self) -> Result<Vec<HostTensor>, runtimes::RuntimeError> {
        self.infers
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.infer()
    }
}

#[test]
fn a_server_inside_the_process_answers_from_the_instance_its_owner_also_calls() {
    let files = ModelFiles::resolve(&fixture()).unwrap();
    let info = ModelInfo::read(&files).unwrap();
    let rt = runtimes::by_name("ort").unwrap();
    let opts = runtimes::LoadOptions {
        threads: 1,
        ..runtimes::LoadOptions::default()
    };
    let (mut models, _) =
        harness::engine::group::load_or_share(rt.as_ref(), &files, &info, &opts, 1).unwrap();
    let infers = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = || infers.load(std::sync::atomic::Ordering::SeqCst);
    let model = Counting {
        inner: models.pop().unwrap(),
        infers: infers.clone(),
    };
    let local =
        harness::net::serve::Local::start(Box::new(model), &info, "tiny-bert", "ort").unwrap();
    let port = local.addr.port();
    assert!(local.addr.ip().is_loopback());
    let (inputs, want) = reference();
    let direct = local
        .with_model(|m| m.prepare(&inputs).and_then(|()| m.infer()))
        .unwrap();
    assert_eq!(count(), 1);
    assert!(max_abs_diff(&direct[0], &want[0]) < 1e-4);
    // Served: on that very instance, with the very numbers of the direct call.
    let (st, body, hl) = infer_binary(port, &inputs);
    assert_eq!(st, 200);
    assert_eq!(count(), 2, "the served request ran on the owner's instance");
    let served = kserve::decode_response(&body, Some(hl)).unwrap();
    assert_eq!(served[0].shape, direct[0].shape);
    assert_eq!(served[0].data.to_f64(), direct[0].data.to_f64());
    // The owner calls it again between requests; a bad request is the client's error and
    // leaves the instance usable.
    local.with_model(|m| m.run()).unwrap();
    let (st, _, _) = http(port, "POST", "/v2/models/tiny-bert/infer", &[], b"{");
    assert_eq!(st, 400);
    assert_eq!(count(), 2);
    assert_eq!(infer_binary(port, &inputs).0, 200);
    assert_eq!(count(), 3);
    // Dropped: the port is closed.
    drop(local);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
