//! Hostile clients against one `harness serve`, over raw TCP: garbage, malformed heads,
//! header floods, bad framing, bad bodies, slowloris, idle floods, garbage on the gRPC port.
//!
//! Seeded (`HOSTILE_SEED`, default below) and sized (`HOSTILE_REQUESTS`, default 2,000; run
//! `HOSTILE_REQUESTS=10000 cargo test --release -p harness --test serve_hostile -- --nocapture`
//! for the long run). Asserts, per class: every answer to a client error is a 4xx (never a
//! 5xx) with a JSON body holding a non-empty reason and a true Content-Length; a request gets
//! no answer only where none is possible (the client closed mid-head, a stalled head, an idle
//! socket, an HTTP/2 stall), and then the server closes the connection within the idle
//! timeout plus [`GRACE`] (HTTP/2: twice the idle timeout, a keep-alive ping and its wait,
//! plus [`GRACE`]); well-behaved requests interleaved with the hostile ones keep succeeding;
//! the server stays up and its RSS grows by a bounded amount. Prints a table of outcomes per
//! class and the RSS before and after.

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fixture, Server};
use harness::net::kserve;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// The server's `--idle-timeout`.
const IDLE: Duration = Duration::from_secs(2);
/// How long past its deadline the server may take to close a connection it must close.
const GRACE: Duration = Duration::from_millis(1500);
/// The longest wait for an answer (a stalled body is answered after [`IDLE`]).
const ANSWER_WAIT: Duration = Duration::from_secs(8);
/// The server's `--max-body`.
const MAX_BODY: usize = 64 * 1024;
/// hyper's limit on a request head (the server answers 431 above it).
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// The most the server's RSS may grow over the run.
const RSS_GROWTH_KB: u64 = 40_000;
/// The HTTP/2 client preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Port {
    Http,
    Grpc,
}

#[derive(Clone, Debug)]
enum How {
    /// Send everything, keep the connection open, read the answers.
    Send,
    /// Send everything, then close the sending side, read what comes.
    SendThenHalfClose,
    /// One byte every `every`: `prefix`, then `filler` forever (or nothing more).
    Trickle { every: Duration, filler: Option<u8> },
}

#[derive(Clone, Debug)]
enum Expect {
    /// These final answers, in order (`true`: the answer to a HEAD, without body); every
    /// 4xx among them with a JSON reason.
    Answers(Vec<(u16, bool)>),
    /// No answer (on the gRPC port, no HTTP/1 answer; HTTP/2 frames are fine), and the
    /// server closes the connection within this long.
    Closed(Duration),
}

#[derive(Clone, Debug)]
struct Case {
    class: &'static str,
    port: Port,
    send: Vec<u8>,
    how: How,
    expect: Expect,
}

impl Case {
    fn answers(class: &'static str, send: Vec<u8>, statuses: &[u16]) -> Case {
        Case {
            class,
            port: Port::Http,
            send,
            how: How::Send,
            expect: Expect::Answers(statuses.iter().map(|&s| (s, false)).collect()),
        }
    }

    fn closed(class: &'static str, port: Port, send: Vec<u8>, how: How, within: Duration) -> Case {
        Case {
            class,
            port,
            send,
            how,
            expect: Expect::Closed(within),
        }
    }

    /// Takes long (waits for a timeout): run among the slow workers.
    fn slow(&self) -> bool {
        matches!(self.how, How::Trickle { .. })
            || matches!(self.expect, Expect::Closed(d) if d > GRACE)
            || matches!(&self.expect, Expect::Answers(a) if a.iter().any(|x| x.0 == 408))
    }
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, xs: &[T]) -> T {
    xs[rng.random_range(0..xs.len())]
}

fn word(rng: &mut ChaCha8Rng, len: std::ops::Range<usize>) -> String {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOQRSTUVWXYZ0123456789";
    let n = rng.random_range(len);
    (0..n).map(|_| pick(rng, ALNUM) as char).collect()
}

fn request(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    request(
        "POST",
        path,
        &[
            "Content-Type: application/json",
            &format!("Content-Length: {}", body.len()),
        ],
        body,
    )
}

const INFER: &str = "/v2/models/tiny-bert/infer";

fn good_infer_body() -> Vec<u8> {
    kserve::encode_request(&runtimes::tensor::bert_inputs(1, 4, |_| 7), false).0
}

/// The classes: name, weight, generator.
type Gen = fn(&mut ChaCha8Rng) -> Case;

fn classes() -> Vec<(&'static str, u32, Gen)> {
    vec![
        ("garbage-line", 8, garbage_line),
        ("random-bytes", 8, random_bytes),
        ("bad-method", 8, bad_method),
        ("bad-version", 6, bad_version),
        ("bad-header-line", 8, bad_header_line),
        ("header-flood", 4, header_flood),
        ("bad-content-length", 6, bad_content_length),
        ("bad-chunked/te", 6, bad_chunked),
        ("short-body-close", 4, short_body_close),
        ("body-level", 10, body_level),
        ("oversized-body", 3, oversized_body),
        ("unknown-path", 6, unknown_path),
        ("wrong-method", 6, wrong_method),
        ("pipelined", 5, pipelined),
        ("mid-head-close", 5, mid_head_close),
        ("grpc-garbage", 5, grpc_garbage),
        ("grpc-bad-frame", 3, grpc_bad_frame),
        ("body-stall", 1, body_stall),
        ("slowloris", 2, slowloris),
        ("grpc-partial-preface", 1, grpc_partial_preface),
        ("grpc-truncated-frame", 1, grpc_truncated_frame),
    ]
}

fn garbage_line(rng: &mut ChaCha8Rng) -> Case {
    // One to three words, none of them an HTTP version: never a request line.
    let words = rng.random_range(1..4);
    let mut line: Vec<String> = (0..words).map(|_| word(rng, 1..12)).collect();
    if line[0].starts_with("PRI") {
        line[0] = "GARBAGE".into();
    }
    let mut send = line.join(" ").into_bytes();
    // Ended by a blank line: after a first partial parse, hyper parses again only once the
    // head looks complete, so a line ending alone is an unfinished head (closed at the idle
    // timeout, like a slowloris), not a 400.
    send.extend_from_slice(pick(rng, &[&b"\r\n\r\n"[..], b"\n\n"]));
    Case::answers("garbage-line", send, &[400])
}

fn random_bytes(rng: &mut ChaCha8Rng) -> Case {
    // The first byte can start no method (a control or non-ASCII byte): hyper refuses at once.
    let first: Vec<u8> = (0u8..=8).chain(14..=31).chain(127..=255).collect();
    let mut send = vec![pick(rng, &first)];
    let n = rng.random_range(0..512);
    send.extend((0..n).map(|_| rng.random::<u8>()));
    Case::answers("random-bytes", send, &[400])
}

fn bad_method(rng: &mut ChaCha8Rng) -> Case {
    if rng.random_bool(0.5) {
        let m = pick(
            rng,
            &[
                "G@T", "GE(T", "G\u{c9}T", "<script>", "\"GET\"", "GE\x01T", "[GET]", "G{}",
            ],
        );
        return Case::answers(
            "bad-method",
            request(m, "/v2/health/live", &[], b""),
            &[400],
        );
    }
    // Methods that are tokens but not served on the path.
    let m = pick(
        rng,
        &[
            "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO", "get", "BREW", "PROPFIND",
        ],
    );
    let path = pick(
        rng,
        &[
            "/v2/health/live",
            INFER,
            "/v2",
            "/metrics",
            "/v1/embeddings",
        ],
    );
    Case::answers("bad-method", request(m, path, &[], b""), &[405])
}

fn bad_version(rng: &mut ChaCha8Rng) -> Case {
    let v = pick(
        rng,
        &[
            " HTTP/1.2",
            " HTTP/2.0",
            " HTTP/0.9",
            " HTTP/1",
            " HTTPS/1.1",
            " http/1.1",
            " HTTP/11",
            " HTTP/1.1x",
            " HTTP/",
            "",
            " ",
            " HTTP/1.1 HTTP/1.1",
        ],
    );
    let send = format!("GET /v2/health/live{v}\r\nHost: x\r\n\r\n").into_bytes();
    Case::answers("bad-version", send, &[400])
}

fn bad_header_line(rng: &mut ChaCha8Rng) -> Case {
    let line: &[u8] = pick(
        rng,
        &[
            &b"NoColonHere"[..],
            b": no-name",
            b"Bad Name: x",
            b"X-A\x01: y",
            b"X-B: a\x00b",
            b"X-C: \x7f",
            b"Name : value",
            b"X-D\x80: y",
            b"(X): y",
            b"X-E: y\rZ: w",
            b"{\"json\": 1}",
        ],
    );
    let mut send = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n".to_vec();
    let ok = rng.random_range(0..4);
    for i in 0..ok {
        send.extend_from_slice(format!("X-Ok-{i}: fine\r\n").as_bytes());
    }
    send.extend_from_slice(line);
    send.extend_from_slice(b"\r\n\r\n");
    Case::answers("bad-header-line", send, &[400])
}

fn header_flood(rng: &mut ChaCha8Rng) -> Case {
    match rng.random_range(0..3) {
        0 => {
            // More header lines than hyper takes (100).
            let n = rng.random_range(101..400);
            let headers: Vec<String> = (0..n).map(|i| format!("X-Flood-{i}: {i}")).collect();
            let h: Vec<&str> = headers.iter().map(String::as_str).collect();
            Case::answers(
                "header-flood",
                request("GET", "/v2/health/live", &h, b""),
                &[431],
            )
        }
        1 => {
            // One header larger than the whole head may be. hyper checks its limit when a
            // read leaves the head unfinished, and a read can take it up to twice the limit:
            // past that, always a 431.
            let n = 2 * MAX_HEAD + rng.random_range(1..64 * 1024);
            let big = format!("X-Big: {}", "a".repeat(n));
            Case::answers(
                "header-flood",
                request("GET", "/v2/health/live", &[&big], b""),
                &[431],
            )
        }
        _ => {
            // A request target over hyper's 65534 bytes.
            let path = format!("/{}", "a".repeat(65_535 + rng.random_range(0..4096)));
            Case::answers("header-flood", request("GET", &path, &[], b""), &[414])
        }
    }
}

fn bad_content_length(rng: &mut ChaCha8Rng) -> Case {
    let cl: &[&str] = pick(
        rng,
        &[
            &["Content-Length: -1"][..],
            &["Content-Length: abc"],
            &["Content-Length: 1e3"],
            &["Content-Length: 0x10"],
            &["Content-Length: +5"],
            &["Content-Length: "],
            &["Content-Length: 18446744073709551616"],
            &["Content-Length: 5, 6"],
            &["Content-Length: 5", "Content-Length: 6"],
            &["Content-Length: 3", "Content-Length: 30"],
        ],
    );
    Case::answers(
        "bad-content-length",
        request("POST", INFER, cl, b"abcde"),
        &[400],
    )
}

fn bad_chunked(rng: &mut ChaCha8Rng) -> Case {
    if rng.random_bool(0.4) {
        // Transfer-Encodings hyper refuses in the head.
        let (version, te) = pick(
            rng,
            &[
                ("1.1", "gzip"),
                ("1.1", "chunked, gzip"),
                ("1.1", "identity"),
                ("1.1", "chunked;q=1"),
                ("1.0", "chunked"),
            ],
        );
        let send = format!(
            "POST {INFER} HTTP/{version}\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        );
        return Case::answers("bad-chunked/te", send.into_bytes(), &[400]);
    }
    // Chunked bodies that break the chunk framing: the handler reading the body says so.
    let body: &[u8] = pick(
        rng,
        &[
            &b"ZZ\r\nabc\r\n0\r\n\r\n"[..],
            b"5\r\nabc\r\n0\r\n\r\n",
            b"-1\r\nabc\r\n0\r\n\r\n",
            b"FFFFFFFFFFFFFFFFFF\r\nabc\r\n",
            b"3\r\nabcXY\r\n0\r\n\r\n",
            b"3 x\r\nabc\r\n0\r\n\r\n",
            b"\r\n\r\n",
        ],
    );
    let mut send =
        format!("POST {INFER} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    send.extend_from_slice(body);
    Case::answers("bad-chunked/te", send, &[400])
}

fn short_body_close(rng: &mut ChaCha8Rng) -> Case {
    let body = good_infer_body();
    let declared = body.len() + rng.random_range(1..1000);
    let cut = rng.random_range(0..body.len());
    let mut c = Case::answers(
        "short-body-close",
        request(
            "POST",
            INFER,
            &[&format!("Content-Length: {declared}")],
            &body[..cut],
        ),
        &[400],
    );
    c.how = How::SendThenHalfClose;
    c
}

fn body_stall(rng: &mut ChaCha8Rng) -> Case {
    // Fewer bytes than declared, and the connection left open: the body times out.
    let body = good_infer_body();
    let cut = rng.random_range(0..body.len());
    Case::answers(
        "body-stall",
        request(
            "POST",
            INFER,
            &[&format!("Content-Length: {}", body.len())],
            &body[..cut],
        ),
        &[408],
    )
}

fn body_level(rng: &mut ChaCha8Rng) -> Case {
    let good = good_infer_body();
    let text = String::from_utf8(good.clone()).unwrap();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (INFER, b"{not json".to_vec(), 400),
        (INFER, b"".to_vec(), 400),
        (INFER, b"[]".to_vec(), 400),
        (INFER, b"null".to_vec(), 400),
        (
            INFER,
            text.replace("\"INT64\"", "\"FP32\"").into_bytes(),
            400,
        ),
        (INFER, text.replace("[1,4]", "[2,4]").into_bytes(), 400),
        (INFER, text.replace("[1,4]", "[1,-4]").into_bytes(), 400),
        (
            INFER,
            text.replace("input_ids", "input_idz").into_bytes(),
            400,
        ),
        (INFER, text.replace("[1,4]", "[1,4,1]").into_bytes(), 400),
        (INFER, text.replacen('7', "99999", 1).into_bytes(), 400),
        (INFER, good[..good.len() / 2].to_vec(), 400),
        ("/v2/models/other/infer", good.clone(), 404),
        ("/v2/models/tiny-bert/versions/9/infer", good.clone(), 404),
        ("/v1/embeddings", b"{\"model\": 3}".to_vec(), 400),
        (
            "/v1/embeddings",
            b"{\"model\": \"nope\", \"input\": \"x\"}".to_vec(),
            404,
        ),
        (
            "/v1/embeddings",
            b"{\"model\": \"tiny-bert\", \"input\": []}".to_vec(),
            400,
        ),
        (
            "/v1/embeddings",
            b"{\"model\": \"tiny-bert\", \"input\": [[1, -5]]}".to_vec(),
            400,
        ),
        ("/v1/embeddings", b"\xff\xfe".to_vec(), 400),
    ];
    let (path, body, status) = &cases[rng.random_range(0..cases.len())];
    Case::answers("body-level", post(path, body), &[*status])
}

fn oversized_body(rng: &mut ChaCha8Rng) -> Case {
    match rng.random_range(0..3) {
        0 => {
            let n = MAX_BODY + rng.random_range(1..16 * 1024);
            Case::answers("oversized-body", post(INFER, &vec![b'['; n]), &[413])
        }
        1 => {
            // Declared far too large, and never sent.
            let n = rng.random_range(MAX_BODY as u64 + 1..1 << 40);
            let send = request("POST", INFER, &[&format!("Content-Length: {n}")], b"");
            Case::answers("oversized-body", send, &[413])
        }
        _ => {
            // Chunked, past the limit.
            let mut send =
                format!("POST {INFER} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .into_bytes();
            for _ in 0..(MAX_BODY / 4096 + 2) {
                send.extend_from_slice(b"1000\r\n");
                send.extend_from_slice(&[b' '; 4096]);
                send.extend_from_slice(b"\r\n");
            }
            send.extend_from_slice(b"0\r\n\r\n");
            Case::answers("oversized-body", send, &[413])
        }
    }
}

fn unknown_path(rng: &mut ChaCha8Rng) -> Case {
    let (path, status) = match rng.random_range(0..8) {
        0 => ("/v2/models/%FF/ready".to_string(), 400),
        1 => ("/v2/models/%C3%28/infer".to_string(), 400),
        2 => ("/v2/models/tiny-bert/infer/extra".to_string(), 404),
        3 => ("/%2e%2e/%2e%2e/etc/passwd".to_string(), 404),
        4 => ("/v2/models/x%00y".to_string(), 404),
        _ => {
            let parts = rng.random_range(1..5);
            let p: Vec<String> = (0..parts).map(|_| word(rng, 1..10)).collect();
            (format!("/{}", p.join("/")), 404)
        }
    };
    let method = if path.ends_with("/infer") {
        "POST"
    } else {
        "GET"
    };
    Case::answers(
        "unknown-path",
        request(method, &path, &["Content-Length: 0"], b""),
        &[status],
    )
}

fn wrong_method(rng: &mut ChaCha8Rng) -> Case {
    let (m, path) = pick(
        rng,
        &[
            ("GET", INFER),
            ("POST", "/v2/health/live"),
            ("POST", "/v2/health/ready"),
            ("DELETE", "/v2/models/tiny-bert"),
            ("PUT", "/metrics"),
            ("POST", "/v1/models"),
            ("GET", "/v1/embeddings"),
            ("PUT", "/v2/models/tiny-bert/ready"),
        ],
    );
    Case::answers(
        "wrong-method",
        request(m, path, &["Content-Length: 0"], b""),
        &[405],
    )
}

fn pipelined(rng: &mut ChaCha8Rng) -> Case {
    // Good requests, then a malformed one on the same connection: the good answers go out
    // unchanged, the last is hyper's 400 with its JSON reason.
    let garbage: &[u8] = pick(
        rng,
        &[
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"\x01\x02\x03",
        ],
    );
    let mut send = Vec::new();
    let mut expect = Vec::new();
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..5) {
            0 => {
                send.extend(request("GET", "/v2/health/live", &[], b""));
                expect.push((200, false));
            }
            1 => {
                send.extend(request("HEAD", "/v2/models/tiny-bert", &[], b""));
                expect.push((200, true));
            }
            2 => {
                send.extend(post(INFER, &good_infer_body()));
                expect.push((200, false));
            }
            3 => {
                send.extend(request("GET", "/nowhere", &[], b""));
                expect.push((404, false));
            }
            _ => {
                send.extend(request("GET", "/v2/models/tiny-bert", &[], b""));
                expect.push((200, false));
            }
        }
    }
    send.extend_from_slice(garbage);
    expect.push((400, false));
    Case {
        class: "pipelined",
        port: Port::Http,
        send,
        how: How::Send,
        expect: Expect::Answers(expect),
    }
}

fn mid_head_close(rng: &mut ChaCha8Rng) -> Case {
    // Part of a good head, then the client closes its side: no answer is possible.
    let head = request("GET", "/v2/health/live", &["Accept: */*"], b"");
    let cut = rng.random_range(1..head.len() - 4);
    Case::closed(
        "mid-head-close",
        Port::Http,
        head[..cut].to_vec(),
        How::SendThenHalfClose,
        GRACE,
    )
}

fn slowloris(rng: &mut ChaCha8Rng) -> Case {
    let every = Duration::from_millis(rng.random_range(150..400));
    if rng.random_bool(0.25) {
        // The start of an HTTP/2 preface, trickled (what hyper reads before its HTTP/1 header
        // timeout starts).
        let n = rng.random_range(1..PREFACE.len());
        return Case::closed(
            "slowloris",
            Port::Http,
            PREFACE[..n].to_vec(),
            How::Trickle {
                every,
                filler: None,
            },
            IDLE + GRACE,
        );
    }
    Case::closed(
        "slowloris",
        Port::Http,
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec(),
        How::Trickle {
            every,
            filler: Some(b'a'),
        },
        IDLE + GRACE,
    )
}

fn grpc_garbage(rng: &mut ChaCha8Rng) -> Case {
    let send = if rng.random_bool(0.5) {
        let n = rng.random_range(1..512);
        let mut b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        if b[0] == b'P' {
            b[0] = 0;
        }
        b
    } else {
        request(
            "POST",
            "/inference.GRPCInferenceService/ModelInfer",
            &[],
            b"",
        )
    };
    Case::closed("grpc-garbage", Port::Grpc, send, How::Send, GRACE)
}

/// An HTTP/2 frame header.
fn frame(len: u32, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f
}

fn grpc_bad_frame(rng: &mut ChaCha8Rng) -> Case {
    let mut send = PREFACE.to_vec();
    send.extend(frame(0, 4, 0, 0)); // empty SETTINGS
    match rng.random_range(0..4) {
        // DATA on stream 0.
        0 => {
            send.extend(frame(3, 0, 0, 0));
            send.extend_from_slice(b"abc");
        }
        // SETTINGS whose length is not a multiple of 6.
        1 => {
            send.extend(frame(5, 4, 0, 0));
            send.extend_from_slice(&[0; 5]);
        }
        // HEADERS with an undecodable header block.
        2 => {
            send.extend(frame(4, 1, 4 | 1, 1));
            send.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        }
        // WINDOW_UPDATE of 0 on the connection.
        _ => {
            send.extend(frame(4, 8, 0, 0));
            send.extend_from_slice(&[0; 4]);
        }
    }
    Case::closed("grpc-bad-frame", Port::Grpc, send, How::Send, GRACE)
}

fn grpc_partial_preface(rng: &mut ChaCha8Rng) -> Case {
    let n = rng.random_range(1..PREFACE.len());
    Case::closed(
        "grpc-partial-preface",
        Port::Grpc,
        PREFACE[..n].to_vec(),
        How::Send,
        IDLE + GRACE,
    )
}

fn grpc_truncated_frame(rng: &mut ChaCha8Rng) -> Case {
    let mut send = PREFACE.to_vec();
    send.extend(frame(0, 4, 0, 0));
    // A HEADERS frame that announces more than it sends.
    let len = rng.random_range(20..200);
    send.extend(frame(len, 1, 4, 1));
    let sent = rng.random_range(0..len as usize);
    send.extend((0..sent).map(|_| rng.random::<u8>()));
    // A stall after the preface is the HTTP/2 keep-alive's: a ping after IDLE, closed when
    // unanswered for IDLE more.
    Case::closed(
        "grpc-truncated-frame",
        Port::Grpc,
        send,
        How::Send,
        IDLE * 2 + GRACE,
    )
}

/// One answer read off the wire.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// The complete answers at the start of `buf` (1xx skipped), and the bytes they took.
fn parse_answers(buf: &[u8], bodiless: &[bool]) -> Result<(Vec<Answer>, usize), String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(end) = buf[at..].windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&buf[at..at + end]).into_owned();
        let status: u16 = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP/1.1 answer: {head:?}"))?;
        let body_at = at + end + 4;
        if (100..200).contains(&status) {
            at = body_at;
            continue;
        }
        let len = header(&head, "content-length")
            .ok_or_else(|| format!("an answer without Content-Length: {head:?}"))?
            .parse::<usize>()
            .map_err(|e| format!("Content-Length: {e}"))?;
        let len = if bodiless.get(out.len()).copied().unwrap_or(false) {
            0
        } else {
            len
        };
        if buf.len() < body_at + len {
            break;
        }
        out.push(Answer {
            status,
            head,
            body: buf[body_at..body_at + len].to_vec(),
        });
        at = body_at + len;
    }
    Ok((out, at))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Why an answer to a client error breaks the promise, if it does.
fn check_error_answer(a: &Answer) -> Result<(), String> {
    if a.status >= 500 {
        return Err(format!("a {} for a client error", a.status));
    }
    let ct = header(&a.head, "content-type").unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(format!("content-type {ct:?}, not JSON"));
    }
    let v: Value = serde_json::from_slice(&a.body).map_err(|e| {
        format!(
            "body not JSON ({e}): {:?}",
            String::from_utf8_lossy(&a.body)
        )
    })?;
    let reason = v["error"].as_str().or(v["message"].as_str()).unwrap_or("");
    if reason.trim().is_empty() {
        return Err(format!("no reason in {v}"));
    }
    Ok(())
}

fn connect(port: u16) -> Result<TcpStream, String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    Ok(s)
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// The outcome's label for the table, and what broke the class's promise, if anything.
fn run_case(c: &Case, http: u16, grpc: u16) -> (String, Result<(), String>) {
    let port = if c.port == Port::Http { http } else { grpc };
    let mut s = match connect(port) {
        Ok(s) => s,
        Err(e) => return ("connect-failed".into(), Err(e)),
    };
    let t = Instant::now();
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // Ok(closed at), Err(still open at the deadline).
    let mut closed: Option<Duration> = None;
    match &c.how {
        How::Send | How::SendThenHalfClose => {
            // The server may close before taking it all (an answer to a head too large).
            let _ = s.write_all(&c.send);
            if matches!(c.how, How::SendThenHalfClose) {
                let _ = s.shutdown(Shutdown::Write);
            }
        }
        How::Trickle { every, filler } => {
            s.set_read_timeout(Some(*every)).unwrap();
            let mut i = 0;
            let limit = match c.expect {
                Expect::Closed(d) => d,
                _ => ANSWER_WAIT,
            };
            while t.elapsed() < limit {
                let b = c.send.get(i).copied().or(*filler);
                i += 1;
                if let Some(b) = b {
                    if s.write_all(&[b]).is_err() {
                        closed = Some(t.elapsed());
                        break;
                    }
                }
                match s.read(&mut chunk) {
                    Ok(0) => {
                        closed = Some(t.elapsed());
                        break;
                    }
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                    Err(e) if timed_out(&e) => {}
                    Err(_) => {
                        closed = Some(t.elapsed());
                        break;
                    }
                }
            }
        }
    }
    match &c.expect {
        Expect::Answers(want) => {
            let bodiless: Vec<bool> = want.iter().map(|w| w.1).collect();
            let mut reset = false;
            let mut eof = false;
            let mut answers = Vec::new();
            let mut used = 0;
            while t.elapsed() < ANSWER_WAIT {
                match s.read(&mut chunk) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        got.extend_from_slice(&chunk[..n]);
                        match parse_answers(&got, &bodiless) {
                            Ok((a, at)) => {
                                answers = a;
                                used = at;
                            }
                            Err(e) => return ("bad-answer".into(), Err(e)),
                        }
                        if answers.len() >= want.len() {
                            break;
                        }
                    }
                    Err(e) if timed_out(&e) => {}
                    Err(_) => {
                        reset = true;
                        break;
                    }
                }
            }
            if answers.is_empty() {
                let label = if reset {
                    "reset-no-answer"
                } else if eof {
                    "closed-no-answer"
                } else {
                    "no-answer-left-open"
                };
                return (
                    label.into(),
                    Err(format!(
                        "no answer ({label}; got {:?})",
                        String::from_utf8_lossy(&got[..got.len().min(200)])
                    )),
                );
            }
            // `k+S`: k earlier answers on the connection (pipelined), then S.
            let last = answers.last().map_or(0, |a| a.status);
            let label = match answers.len() {
                1 => last.to_string(),
                n => format!("{}+{last}", n - 1),
            };
            if answers.len() != want.len() {
                return (
                    label,
                    Err(format!("{} answers, wanted {want:?}", answers.len())),
                );
            }
            for (a, w) in answers.iter().zip(want) {
                if a.status != w.0 {
                    return (
                        label,
                        Err(format!(
                            "status {} (wanted {}): {}",
                            a.status,
                            w.0,
                            String::from_utf8_lossy(&a.body)
                        )),
                    );
                }
                if a.status >= 400 {
                    if let Err(e) = check_error_answer(a) {
                        return (label, Err(e));
                    }
                }
            }
            // The connection closed after the last answer: nothing may follow it (a
            // Content-Length that undercounts would leave bytes here).
            if eof && used != got.len() {
                return (
                    label,
                    Err(format!("{} bytes after the answers", got.len() - used)),
                );
            }
            (label, Ok(()))
        }
        Expect::Closed(within) => {
            while closed.is_none() && t.elapsed() < *within + Duration::from_millis(500) {
                match s.read(&mut chunk) {
                    Ok(0) => closed = Some(t.elapsed()),
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                    Err(e) if timed_out(&e) => {}
                    Err(_) => closed = Some(t.elapsed()),
                }
            }
            let Some(at) = closed else {
                return (
                    "left-open".into(),
                    Err(format!("still open after {:?}", t.elapsed())),
                );
            };
            let label = if at < IDLE / 2 {
                "closed-no-answer"
            } else {
                "closed-by-timeout"
            };
            if at > *within {
                return (
                    label.into(),
                    Err(format!("closed only after {at:?} (> {within:?})")),
                );
            }
            let http_answer = got.starts_with(b"HTTP/");
            if (c.port == Port::Http && !got.is_empty()) || http_answer {
                return (
                    label.into(),
                    Err(format!(
                        "an answer where none was expected: {:?}",
                        String::from_utf8_lossy(&got[..got.len().min(200)])
                    )),
                );
            }
            (label.into(), Ok(()))
        }
    }
}

/// A well-behaved client: health and a real infer, each on a fresh connection.
fn well_behaved(http: u16) -> Result<(), String> {
    let live = Case::answers(
        "well-behaved",
        request("GET", "/v2/health/live", &["Connection: close"], b""),
        &[200],
    );
    let infer = Case::answers("well-behaved", post(INFER, &good_infer_body()), &[200]);
    for c in [live, infer] {
        let (label, r) = run_case(&c, http, 0);
        r.map_err(|e| format!("{label}: {e}"))?;
    }
    // The infer answer's content, once in a while, through the shared client code.
    let (status, _, body) = common::http(http, "POST", INFER, &[], &good_infer_body());
    let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    if status != 200 || v["outputs"][0]["shape"] != serde_json::json!([1, 4, 32]) {
        return Err(format!("infer answered {status}: {v}"));
    }
    Ok(())
}

fn well_behaved_grpc(grpc: u16) -> Result<(), String> {
    let o = harness::net::load::LoadOptions {
        vocab: Some(128),
        ..harness::net::load::LoadOptions::new(
            &format!("127.0.0.1:{grpc}"),
            harness::net::load::KSERVE_GRPC,
            Some("tiny-bert"),
        )
    };
    let t = harness::net::client::Target::parse(&o.target, 8001)?;
    let out =
        harness::net::load::fetch_outputs(&o, &t, &runtimes::tensor::bert_inputs(1, 4, |_| 7))?;
    if out[0].shape != [1, 4, 32] {
        return Err(format!("gRPC infer answered shape {:?}", out[0].shape));
    }
    Ok(())
}

/// Outcomes per class and label, and the broken promises.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<&'static str, BTreeMap<String, u64>>,
    failures: Vec<String>,
}

impl Tally {
    fn add(&mut self, class: &'static str, label: String, r: Result<(), String>, what: &[u8]) {
        *self
            .counts
            .entry(class)
            .or_default()
            .entry(label.clone())
            .or_default() += 1;
        if let Err(e) = r {
            self.failures.push(format!(
                "[{class}] {label}: {e}\n    sent: {:?}",
                String::from_utf8_lossy(&what[..what.len().min(160)])
            ));
        }
    }

    fn print(&self) {
        let mut labels: Vec<&String> = self.counts.values().flat_map(|m| m.keys()).collect();
        labels.sort_by_key(|l| (l.parse::<u32>().is_err(), l.len(), l.to_string()));
        labels.dedup();
        let width = 22;
        let mut line = format!("{:<width$} {:>6}", "class", "total");
        for l in &labels {
            line.push_str(&format!(" {:>w$}", l, w = l.len().max(5)));
        }
        println!("{line}");
        let mut totals: BTreeMap<&String, u64> = BTreeMap::new();
        for (class, m) in &self.counts {
            let n: u64 = m.values().sum();
            let mut line = format!("{class:<width$} {n:>6}");
            for l in &labels {
                let k = m.get(*l).copied().unwrap_or(0);
                *totals.entry(l).or_default() += k;
                let cell = if k == 0 {
                    "-".to_string()
                } else {
                    k.to_string()
                };
                line.push_str(&format!(" {:>w$}", cell, w = l.len().max(5)));
            }
            println!("{line}");
        }
        let all: u64 = totals.values().sum();
        let mut line = format!("{:<width$} {all:>6}", "all");
        for l in &labels {
            line.push_str(&format!(" {:>w$}", totals[l], w = l.len().max(5)));
        }
        println!("{line}");
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Idle sockets, `n` per port at once, each of which the server must close within `within`.
fn idle_flood(http: u16, grpc: u16, n_http: usize, n_grpc: usize, tally: &Mutex<Tally>) {
    let mut socks: Vec<(Port, TcpStream, Instant)> = Vec::new();
    for i in 0..n_http + n_grpc {
        let port = if i < n_http { Port::Http } else { Port::Grpc };
        let s = connect(if port == Port::Http { http } else { grpc }).expect("connect");
        s.set_nonblocking(true).unwrap();
        socks.push((port, s, Instant::now()));
    }
    let deadline = IDLE + GRACE;
    let mut buf = [0u8; 4096];
    let mut open: Vec<usize> = (0..socks.len()).collect();
    let mut got = vec![0usize; socks.len()];
    while !open.is_empty() {
        std::thread::sleep(Duration::from_millis(50));
        open.retain(|&i| {
            let (port, s, t) = &mut socks[i];
            let class = if *port == Port::Http {
                "idle-flood"
            } else {
                "grpc-idle-flood"
            };
            let closed = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => got[i] += n,
                    Err(e) if timed_out(&e) => break false,
                    Err(_) => break true,
                }
            };
            let at = t.elapsed();
            if closed {
                let label = if at < IDLE / 2 {
                    "closed-no-answer"
                } else {
                    "closed-by-timeout"
                };
                let r = if at > deadline {
                    Err(format!("an idle socket closed only after {at:?}"))
                } else if *port == Port::Http && got[i] > 0 {
                    Err(format!("{} bytes sent to an idle HTTP socket", got[i]))
                } else {
                    Ok(())
                };
                tally.lock().unwrap().add(class, label.into(), r, b"");
                false
            } else if at > deadline + Duration::from_millis(500) {
                tally.lock().unwrap().add(
                    class,
                    "left-open".into(),
                    Err(format!("an idle socket still open after {at:?}")),
                    b"",
                );
                false
            } else {
                true
            }
        });
    }
}

#[test]
fn hostile_clients_get_json_4xx_or_a_timely_close_and_the_server_keeps_serving() {
    let seed: u64 = env_or("HOSTILE_SEED", 0x5eed_2026);
    let total: usize = env_or("HOSTILE_REQUESTS", 2_000);
    let mut s = Server::start(
        "hostile",
        &fixture(),
        &["--idle-timeout", "2s", "--max-body", "64KiB"],
    );
    let (http, grpc) = (s.http, s.grpc.expect("a gRPC port"));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let classes = classes();
    let weights: u32 = classes.iter().map(|c| c.1).sum();
    // Every class at least once, then drawn by weight.
    let cases: Vec<Case> = (0..total.max(classes.len()))
        .map(|i| {
            let gen = if i < classes.len() {
                classes[i].2
            } else {
                let mut w = rng.random_range(0..weights);
                classes
                    .iter()
                    .find(|c| {
                        if w < c.1 {
                            true
                        } else {
                            w -= c.1;
                            false
                        }
                    })
                    .unwrap()
                    .2
            };
            gen(&mut rng)
        })
        .collect();
    let (slow, fast): (Vec<Case>, Vec<Case>) = cases.into_iter().partition(Case::slow);

    // Warm up: the allocator and every code path, before the first RSS reading.
    well_behaved(http).unwrap();
    well_behaved_grpc(grpc).unwrap();
    let mut warm = ChaCha8Rng::seed_from_u64(seed ^ 1);
    for (_, _, gen) in &classes {
        let c = gen(&mut warm);
        if !c.slow() {
            let _ = run_case(&c, http, grpc);
        }
    }
    let rss0 = s.rss_kb();
    let started = Instant::now();

    // Idle sockets (kept under the usual 1024 file descriptors of a test process, with room
    // for the slow workers), slow clients on their own threads, the fast ones here.
    let fd_limit = unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur as usize
    };
    let flood = (fd_limit.saturating_sub(200) / 2).clamp(16, 400);
    let (n_http, n_grpc) = (flood * 3 / 4, flood / 4);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let slow = Arc::new(Mutex::new(slow));
    let workers = 24;
    let n_slow = slow.lock().unwrap().len();
    let mut threads = Vec::new();
    {
        let tally = tally.clone();
        threads.push(std::thread::spawn(move || {
            idle_flood(http, grpc, n_http, n_grpc, &tally)
        }));
    }
    for _ in 0..workers {
        let (tally, slow) = (tally.clone(), slow.clone());
        threads.push(std::thread::spawn(move || loop {
            let Some(c) = slow.lock().unwrap().pop() else {
                break;
            };
            let (label, r) = run_case(&c, http, grpc);
            tally.lock().unwrap().add(c.class, label, r, &c.send);
        }));
    }
    let n_fast = fast.len();
    for (i, c) in fast.iter().enumerate() {
        let (label, r) = run_case(c, http, grpc);
        tally.lock().unwrap().add(c.class, label, r, &c.send);
        if i % 25 == 0 {
            let r = well_behaved(http);
            let label = if r.is_ok() { "200" } else { "failed" };
            tally
                .lock()
                .unwrap()
                .add("well-behaved", label.into(), r, b"");
        }
        if i % 250 == 0 {
            let r = well_behaved_grpc(grpc);
            let label = if r.is_ok() { "ok" } else { "failed" };
            tally
                .lock()
                .unwrap()
                .add("well-behaved-grpc", label.into(), r, b"");
            assert!(s.alive(), "the server died: {}", s.log_text());
        }
    }
    // Well-behaved clients are served while the slow ones are still at it.
    while slow.lock().map(|q| !q.is_empty()).unwrap() {
        let r = well_behaved(http);
        let label = if r.is_ok() { "200" } else { "failed" };
        tally
            .lock()
            .unwrap()
            .add("well-behaved", label.into(), r, b"");
        std::thread::sleep(Duration::from_millis(100));
    }
    for t in threads {
        t.join().unwrap();
    }
    let r = well_behaved(http).and_then(|()| well_behaved_grpc(grpc));
    let label = if r.is_ok() { "200" } else { "failed" };
    tally
        .lock()
        .unwrap()
        .add("well-behaved", label.into(), r, b"");
    let alive = s.alive();
    let rss1 = s.rss_kb();
    let took = started.elapsed();

    let tally = tally.lock().unwrap();
    println!(
        "\nhostile clients: seed {seed:#x}, {} cases ({n_fast} fast, {n_slow} slow on {workers} threads) \
         + {} idle sockets ({n_http} HTTP, {n_grpc} gRPC), idle timeout {IDLE:?}, grace {GRACE:?}, {:.1} s",
        n_fast + n_slow,
        n_http + n_grpc,
        took.as_secs_f64()
    );
    tally.print();
    println!(
        "(a status: the answer; k+S: k good answers on the connection, then S; closed-no-answer: \
         closed by the server within {:?} without an answer; closed-by-timeout: closed after \
         waiting for the client; ok: a gRPC infer)",
        IDLE / 2
    );
    println!(
        "server RSS: {rss0} kB before, {rss1} kB after ({:+} kB); alive: {alive}",
        rss1 as i64 - rss0 as i64
    );
    for f in tally.failures.iter().take(20) {
        println!("FAILED {f}");
    }
    assert!(alive, "the server died: {}", s.log_text());
    assert!(
        tally.failures.is_empty(),
        "{} broken promises, the first: {}",
        tally.failures.len(),
        tally.failures[0]
    );
    let grown = rss1.saturating_sub(rss0);
    assert!(
        grown < RSS_GROWTH_KB,
        "the server grew by {grown} kB over the run"
    );
}
