//! `harness load` against servers that misbehave on purpose (loopback, each stopping by
//! itself): one that trickles its answer a byte at a time, one that stalls some requests past
//! the window, answers that never end (a body, a status line), garbage, and a server that
//! closes every connection. Every run ends within `--max-time` plus `--timeout` and a little,
//! writes its results, and never reports a stalled server as a clean "ok".

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{in_process, results, tmp};

/// How a test server answers each request on a connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// A status line one byte every 100 ms, forever.
    Trickle,
    /// Answers at once, but holds every `every`-th request for `hold`.
    Stall { every: u64, hold: Duration },
    /// A Content-Length far beyond anything, then bytes as fast as they go.
    EndlessBody,
    /// A status line that never ends.
    EndlessStatusLine,
    /// Random bytes instead of HTTP.
    Garbage,
    /// Closes each connection as soon as the request arrives.
    Close,
    /// Resets each connection (RST, SO_LINGER 0) as soon as the request arrives.
    Reset,
    /// Answers correctly, its head and body in pieces a few ms apart (split mid-header and
    /// mid-CRLF), so that the client must gather the head over several reads.
    Pieces,
    /// Answers at once, until the server dies (its `life` ends: connections closed, the port
    /// refusing).
    Healthy,
}

/// A server on a free loopback port that stops accepting after `life`.
fn server(b: Behaviour, life: Duration) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let count = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        let end = Instant::now() + life;
        while Instant::now() < end {
            match l.accept() {
                Ok((s, _)) => {
                    let count = count.clone();
                    std::thread::spawn(move || serve(s, b, &count, end));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    port
}

/// Reads one request head (these clients send GETs without bodies).
fn read_request(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

fn serve(mut s: TcpStream, b: Behaviour, count: &AtomicU64, end: Instant) {
    s.set_nodelay(true).ok();
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    while Instant::now() < end && read_request(&mut s) {
        let n = count.fetch_add(1, Ordering::Relaxed) + 1;
        let ok = match b {
            Behaviour::Trickle => {
                for &c in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".iter().cycle() {
                    if Instant::now() > end || s.write_all(&[c]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                false
            }
            Behaviour::Stall { every, hold } => {
                if n.is_multiple_of(every) {
                    std::thread::sleep(hold);
                }
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_ok()
            }
            Behaviour::EndlessBody => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n");
                let zeros = vec![0u8; 1 << 16];
                while Instant::now() < end && s.write_all(&zeros).is_ok() {}
                false
            }
            Behaviour::EndlessStatusLine => {
                let _ = s.write_all(b"HTTP/1.1 200 ");
                let a = vec![b'A'; 1 << 16];
                while Instant::now() < end && s.write_all(&a).is_ok() {}
                false
            }
            Behaviour::Garbage => {
                let bytes: Vec<u8> = (0..4096u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                    .collect();
                let _ = s.write_all(&bytes);
                false
            }
            Behaviour::Close => false,
            Behaviour::Reset => {
                use std::os::fd::AsRawFd;
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: a valid socket and a linger struct of the size given.
                unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        &linger as *const libc::linger as *const libc::c_void,
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
                false
            }
            Behaviour::Pieces => {
                let pieces: [&[u8]; 4] = [
                    b"HTTP/1.1 200 OK\r\nContent-Le",
                    b"ngth: 2\r\n\r",
                    b"\n",
                    b"ok",
                ];
                pieces.iter().all(|p| {
                    std::thread::sleep(Duration::from_millis(3));
                    s.write_all(p).is_ok() && s.flush().is_ok()
                })
            }
            Behaviour::Healthy => s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_ok(),
        };
        if !ok {
            return;
        }
    }
}

/// `harness load` on `target` with no warm-up, results in `out`: what every run here adds
/// its timing to.
fn load_args<'a>(target: &'a str, out: &'a Path) -> Vec<&'a str> {
    vec![
        "load",
        "--target",
        target,
        "--protocol",
        "http-get",
        "--warmup",
        "0",
        "--warmup-time",
        "0s",
        "--out",
        out.to_str().unwrap(),
    ]
}

/// `harness load` (in-process) on `port` with `extra` options; the row, the exit status and
/// how long the run took.
fn load(tag: &str, port: u16, extra: &[&str]) -> (Value, i32, Duration) {
    let out = tmp(tag);
    let target = format!("http://127.0.0.1:{port}/");
    let mut args = load_args(&target, &out);
    args.extend_from_slice(extra);
    let t = Instant::now();
    let run = in_process(&args);
    let took = t.elapsed();
    assert!(
        Path::new(&out).join("results.json").is_file(),
        "{tag}: no results written: {}",
        run.stderr
    );
    let r = results(&out);
    (r["scenarios"][0].clone(), run.code, took)
}

const TIMING: [&str; 10] = [
    "--target-ci",
    "off",
    "--min-time",
    "1s",
    "--max-time",
    "3s",
    "--timeout",
    "1s",
    "--concurrency",
    "2",
];

/// Within --max-time (3 s) plus --timeout (1 s) plus a second for set-up and the first step.
const BOUND: Duration = Duration::from_secs(6);

#[test]
fn a_trickling_server_times_out_within_the_bounds() {
    let port = server(Behaviour::Trickle, Duration::from_secs(20));
    let (row, code, took) = load("trickle", port, &TIMING);
    assert!(took < BOUND, "took {took:?}");
    assert_eq!(code, 1);
    assert_eq!(row["status"], "error");
    assert_eq!(row["error_kind"], "timeout", "{row}");
    assert!(
        row["error"].as_str().unwrap().contains("--timeout"),
        "{}",
        row["error"]
    );
}

#[test]
fn answers_arriving_in_pieces_are_gathered_by_both_engines() {
    let port = server(Behaviour::Pieces, Duration::from_secs(20));
    for engine in ["events", "threads"] {
        let mut extra = TIMING.to_vec();
        extra.extend_from_slice(&["--engine", engine]);
        let (row, code, took) = load(&format!("pieces-{engine}"), port, &extra);
        assert!(took < BOUND, "took {took:?}");
        assert_eq!(code, 0, "{engine}: {row}");
        let m = &row["measurement"];
        assert_eq!(m["failures"], 0, "{engine}: {m}");
        // Each answer takes at least its four 3 ms pauses.
        assert!(m["iterations"].as_u64().unwrap() >= 10, "{engine}: {m}");
        assert!(
            m["latency"]["p50_ms"].as_f64().unwrap() >= 12.0,
            "{engine}: {m}"
        );
    }
}

#[test]
fn requests_stalled_past_the_window_count_in_its_latency() {
    // Every 40th request waits 2.5 s: stalls begin inside the window (3 s, longer than a
    // stall, so that one begun in the warm-up cannot fill it) and some are still held when
    // it closes; those requests must show, not vanish.
    let hold = Duration::from_millis(2500);
    let port = server(
        Behaviour::Stall { every: 40, hold },
        Duration::from_secs(20),
    );
    let (row, code, took) = load(
        "stall",
        port,
        &[
            "--target-ci",
            "off",
            "--min-time",
            "3s",
            "--max-time",
            "3s",
            "--timeout",
            "10s",
            "--concurrency",
            "2",
        ],
    );
    // The window, a held request's 2.5 s, set-up and a busy machine's margin: bounded.
    assert!(took < Duration::from_secs(3 + 3 + 4), "took {took:?}");
    let m = &row["measurement"];
    let in_flight = m["in_flight_at_end"].as_u64().unwrap_or(0);
    let max = m["latency"]["max_ms"].as_f64().unwrap();
    assert!(
        in_flight >= 1 || m["failures"].as_u64().unwrap() >= 1,
        "a stalled request neither in flight nor failed: {m}"
    );
    assert!(
        max >= 2400.0,
        "the stall is not in the latency: max {max} ms"
    );
    assert_eq!(code, 0, "the held requests did answer in the end");
}

#[test]
fn an_endless_body_is_refused_not_buffered() {
    let port = server(Behaviour::EndlessBody, Duration::from_secs(20));
    let (row, code, took) = load("endless-body", port, &TIMING);
    assert!(took < BOUND, "took {took:?}");
    assert_eq!(code, 1);
    assert_eq!(row["error_kind"], "bad-response", "{row}");
    assert!(
        row["error"].as_str().unwrap().contains("Content-Length"),
        "{row}"
    );
}

#[test]
fn an_endless_status_line_is_refused_not_buffered() {
    let port = server(Behaviour::EndlessStatusLine, Duration::from_secs(20));
    let (row, code, took) = load("endless-line", port, &TIMING);
    assert!(took < BOUND, "took {took:?}");
    assert_eq!(code, 1);
    assert_eq!(row["error_kind"], "bad-response", "{row}");
    assert!(
        row["error"].as_str().unwrap().contains("line longer"),
        "{row}"
    );
}

#[test]
fn garbage_and_closed_connections_are_errors_with_their_kind() {
    for (tag, b, kind) in [
        ("garbage", Behaviour::Garbage, "bad-response"),
        ("close", Behaviour::Close, "io"),
        ("reset", Behaviour::Reset, "io"),
    ] {
        let port = server(b, Duration::from_secs(20));
        let (row, code, took) = load(tag, port, &TIMING);
        assert!(took < BOUND, "{tag}: took {took:?}");
        assert_eq!(code, 1, "{tag}");
        assert_eq!(row["status"], "error", "{tag}: {row}");
        assert_eq!(row["error_kind"], kind, "{tag}: {row}");
    }
}

/// A server that dies a second into the window: the requests before count, the failures
/// after are counted by kind, and the row is not "ok".
#[test]
fn a_server_that_dies_mid_run_fails_the_row() {
    let port = server(Behaviour::Healthy, Duration::from_millis(1200));
    let (row, code, took) = load(
        "death",
        port,
        &[
            "--target-ci",
            "off",
            "--min-time",
            "2s",
            "--max-time",
            "3s",
            "--timeout",
            "1s",
            "--concurrency",
            "2",
        ],
    );
    assert!(took < BOUND, "took {took:?}");
    assert_eq!(code, 1, "{row}");
    assert_ne!(row["status"], "ok", "{row}");
    let m = &row["measurement"];
    assert!(m["latency"]["samples"].as_u64().unwrap() > 10, "{m}");
    assert!(m["failures"].as_u64().unwrap() >= 1, "{m}");
}

/// Ctrl-C ends a run against a server that trickles its answers at once, with the results
/// written and the run marked interrupted.
#[test]
fn ctrl_c_ends_a_run_against_a_trickling_server() {
    let port = server(Behaviour::Trickle, Duration::from_secs(30));
    let out = tmp("trickle-sigint");
    let target = format!("http://127.0.0.1:{port}/");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(load_args(&target, &out))
        .args(["--min-time", "20s", "--max-time", "25s", "--timeout", "20s"])
        .args(["--target-ci", "off"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling a child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("harness load still running 5 s after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    let r = results(&out);
    assert_eq!(r["interrupted"], true);
}
