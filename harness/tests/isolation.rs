//! Isolation and interruption: a worker that aborts loses only its own unfinished rows, and
//! Ctrl-C ends a sweep with every finished scenario saved and summarised.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{fixture, results, tmp};

fn args<'a>(out: &'a Path, min_time: &'a str) -> Vec<&'a str> {
    vec![
        "compare",
        "--model",
        fixture().to_str().unwrap().to_owned().leak(),
        "--out",
        out.to_str().unwrap(),
        "--batch",
        "1,2",
        "--seq",
        "8",
        "--threads",
        "1",
        "--warmup-time",
        "10ms",
        "--target-ci",
        "off",
        "--min-time",
        min_time,
        "--min-samples",
        "10",
        "--no-overhead",
    ]
}

#[test]
fn an_aborting_worker_loses_only_its_unfinished_rows() {
    let out = tmp("abort").join("res");
    let run = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args(&out, "50ms"))
        .env("HARNESS_FAULT_ABORT", "tract:1:1")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let r = results(&out);
    let rows: Vec<&Value> = r["scenarios"].as_array().unwrap().iter().collect();
    assert_eq!(rows.len(), 8, "{stdout}");
    let get = |rt: &str, batch: u64| {
        rows.iter()
            .find(|s| s["runtime"] == rt && s["batch"] == batch)
            .unwrap_or_else(|| panic!("no {rt} b{batch}"))
    };
    // The tract worker measured batch 1, then died before batch 2.
    assert_eq!(get("tract", 1)["status"], "ok");
    assert_eq!(get("tract", 1)["parity"]["status"], "pass");
    let lost = get("tract", 2);
    assert_eq!(lost["status"], "error");
    assert_eq!(lost["error_kind"], "worker-died");
    let e = lost["error"].as_str().unwrap();
    assert!(
        e.contains("killed by signal 6 (SIGABRT) during this scenario"),
        "{e}"
    );
    // Everything else, before and after it, is intact.
    for (rt, b) in [("ort", 1), ("ort", 2), ("candle", 1), ("candle", 2)] {
        assert_eq!(get(rt, b)["status"], "ok", "{rt} b{b}");
    }
    assert_eq!(get("candle", 2)["parity"]["status"], "pass");
    assert!(stdout.contains("SIGABRT"), "{stdout}");
}

/// A runtime that panics in its worker: the row says so with the panic's message, not only
/// "exited with status 101".
#[test]
fn a_panicking_worker_says_why_in_the_row() {
    let out = tmp("panic").join("res");
    let run = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args(&out, "50ms"))
        .args(["--runtimes", "ort,tract"])
        .env("HARNESS_FAULT_PANIC", "tract:1:0")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let r = results(&out);
    let lost: Vec<&Value> = r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["runtime"] == "tract")
        .collect();
    assert_eq!(lost.len(), 2);
    let e = lost[0]["error"].as_str().unwrap();
    assert!(e.contains("exited with status 101"), "{e}");
    assert!(
        e.contains("panicked: fault injection before tract/cpu/fp32/b1/s8/t1 at"),
        "{e}"
    );
    assert_eq!(lost[0]["error_kind"], "worker-died");
}

/// The processes whose parent is `pid` (scanning /proc).
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|st| {
                    // The 4th field, after the parenthesised command name.
                    let rest = &st[st.rfind(')')? + 2..];
                    rest.split(' ').nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Whether `pid` is gone (or a zombie waiting to be reaped).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(st) => st[st.rfind(')').unwrap() + 2..].starts_with('Z'),
    }
}

/// Killing `harness compare` outright (SIGKILL, nothing can be handled) takes its worker
/// process with it: a worker never outlives its parent.
#[test]
fn a_worker_dies_with_its_parent() {
    let out = tmp("orphan").join("res");
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args(&out, "30s"))
        .args(["--runtimes", "tract"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let workers = loop {
        let w = children_of(child.id());
        if !w.is_empty() {
            break w;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no worker started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Let the worker get into its measurement, then kill the parent.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    while !workers.iter().all(|&w| gone(w)) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "worker {workers:?} outlived its parent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn interrupt_mid_sweep(isolate: &str, signal: i32) {
    let out = tmp(&format!("signal-{signal}-{isolate}")).join("res");
    let mut a = args(&out, "400ms");
    a.extend(["--isolate", isolate]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(&a)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until two scenarios are on disk, then press Ctrl-C.
    let t = Instant::now();
    common::wait_for_rows(&out, 2);
    let workers = children_of(child.id());
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(130), "{stdout}");
    assert!(t.elapsed() < Duration::from_secs(60));
    let r = results(&out);
    assert_eq!(r["interrupted"], true);
    assert!(r["finished_at"].is_string());
    let rows = r["scenarios"].as_array().unwrap();
    assert!(rows.len() >= 2 && rows.len() < 6, "{}", rows.len());
    for s in rows {
        assert!(
            s["measurement"]["latency"]["samples"].as_u64().unwrap() > 0,
            "{s}"
        );
    }
    assert!(
        stdout.contains("interrupted (Ctrl-C or SIGTERM)"),
        "{stdout}"
    );
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("interrupted (Ctrl-C or SIGTERM)"), "{md}");
    // The worker process in flight was stopped, not left behind.
    assert!(workers.iter().all(|&w| gone(w)), "{workers:?} left running");
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), rows.len() + 1);
}

#[test]
fn ctrl_c_keeps_finished_scenarios_with_worker_processes() {
    interrupt_mid_sweep("process", libc::SIGINT);
}

#[test]
fn ctrl_c_keeps_finished_scenarios_in_process() {
    interrupt_mid_sweep("none", libc::SIGINT);
}

/// SIGTERM (what `kill`, systemd and container runtimes send) stops a sweep as Ctrl-C does.
#[test]
fn sigterm_keeps_finished_scenarios_and_stops_the_worker() {
    interrupt_mid_sweep("process", libc::SIGTERM);
}
