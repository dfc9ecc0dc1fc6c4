//! Helpers shared by the integration tests that run the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The committed tiny BERT fixture.
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/tiny-bert")
}

/// A fresh, empty folder for one test.
pub fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("harness-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Waits until `out`'s results.json lists `rows` scenarios (a run in progress writes it after
/// each one), for at most a minute.
pub fn wait_for_rows(out: &Path, rows: usize) {
    let t = std::time::Instant::now();
    loop {
        let done = std::fs::read_to_string(out.join("results.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .map(|r| r["scenarios"].as_array().map_or(0, |a| a.len()))
            .unwrap_or(0);
        if done >= rows {
            return;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "no {rows} scenarios finished in a minute"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A results folder's results.json.
pub fn results(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

/// Asserts that every row ran to its share of the budget, short of its target (warm-up and
/// window ending together at the share, to within an inference and a check), and returns
/// the seconds they took in all.
pub fn spent_to_budget_shares(rows: &[Value]) -> f64 {
    let mut spent = 0.0;
    for s in rows {
        let m = &s["measurement"];
        assert_eq!(m["stop_reason"], "budget", "{s}");
        assert_eq!(m["stable"], false, "{s}");
        let share = m["share_s"].as_f64().unwrap();
        let used = m["warmup_ms"].as_f64().unwrap() / 1e3 + m["window_s"].as_f64().unwrap();
        assert!(
            (used - share).abs() < 0.05,
            "used {used} s of {share} s: {s}"
        );
        spent += used;
    }
    spent
}

/// What one run of the real binary printed and returned.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to its end and keeps what it printed.
pub fn output_of(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("run the command");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the `harness` binary with `args`.
pub fn harness(args: &[&str]) -> Run {
    harness_env(args, &[])
}

/// Runs the `harness` binary with `args` and these environment variables added.
pub fn harness_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Run {
    output_of(
        Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(args)
            .envs(env.iter().copied()),
    )
}

/// `harness compare` on the committed fixture at sequence 8, quickly (fixed stopping, a 10 ms
/// warm-up, no overhead measurement), writing to `out`, with `args` for the rest; the run
/// must succeed.
pub fn compare_fixture(out: &Path, args: &[&str]) -> Run {
    compare_fixture_env(out, args, &[])
}

/// [`compare_fixture`] with these environment variables added.
pub fn compare_fixture_env(out: &Path, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Run {
    let model = fixture();
    let mut all = vec![
        "compare",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--seq",
        "8",
        "--target-ci",
        "off",
        "--warmup-time",
        "10ms",
        "--no-overhead",
    ];
    all.extend_from_slice(args);
    let run = harness_env(&all, env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run
}

/// Runs `harness ARGS` in this process through the library's `run_to` (as oha's tests call
/// `oha::run`): stdout is captured; stderr holds the error a failing command returns (or
/// clap's message), not the progress lines, which go to the process's stderr.
pub fn in_process(args: &[&str]) -> Run {
    use clap::Parser;
    let argv = std::iter::once("harness").chain(args.iter().copied());
    let cli = match harness::cli::Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            return Run {
                code: e.exit_code(),
                stdout: String::new(),
                stderr: e.to_string(),
            }
        }
    };
    let mut out = Vec::new();
    let (code, stderr) = match harness::run_to(cli, &mut out) {
        Ok(code) => (code, String::new()),
        Err(e) => (e.exit_code(), format!("error: {e}")),
    };
    Run {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr,
    }
}

/// A `harness serve` process on free loopback ports, killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    pub http: u16,
    pub grpc: Option<u16>,
    pub log: PathBuf,
}

impl Server {
    /// Starts `harness serve --model MODEL ARGS...` and waits until it listens.
    pub fn start(tag: &str, model: &Path, args: &[&str]) -> Server {
        let dir = tmp(&format!("serve-{tag}"));
        let port_file = dir.join("ports.json");
        let log = dir.join("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_harness"))
            .arg("serve")
            .arg("--model")
            .arg(model)
            .args([
                "--http-port",
                "0",
                "--grpc-port",
                "0",
                "--shutdown-after",
                "300s",
            ])
            .arg("--port-file")
            .arg(&port_file)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start harness serve");
        let mut s = Server {
            child,
            http: 0,
            grpc: None,
            log,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(t) = std::fs::read_to_string(&port_file) {
                let v: Value = serde_json::from_str(&t).unwrap();
                s.http = v["http"].as_u64().unwrap() as u16;
                s.grpc = v["grpc"].as_u64().map(|p| p as u16);
                return s;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("harness serve exited {st}: {}", s.log_text());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "serve did not start: {}",
                s.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory of the server process (kB).
    pub fn rss_kb(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange on a fresh connection (Connection: close), written by hand so the
/// server is tested by a client that shares no code with it. Returns status, headers, body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        body = out;
    }
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, body)
}

pub fn json_body(b: &[u8]) -> Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

/// A served row's count of successful requests in the server's own metrics (a counter's
/// change over the window, summed over its labels).
pub fn server_successes(row: &Value) -> f64 {
    row["served"]["server_metrics"]
        .as_object()
        .expect("server metrics were scraped")
        .iter()
        .filter(|(k, _)| k.starts_with("nv_inference_request_success"))
        .map(|(_, v)| v.as_f64().unwrap())
        .sum()
}

/// How a bounded run of the binary ended.
pub struct Bounded {
    /// The exit status, None when killed by a signal (or by the bound).
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Killed because it ran past the bound.
    pub hung: bool,
    pub elapsed: std::time::Duration,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `harness ARGS` with extra environment, killed when it runs past `limit`: a test
/// that must not hang uses this rather than [`harness`].
pub fn harness_within(args: &[&str], env: &[(&str, &str)], limit: std::time::Duration) -> Bounded {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let t = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run harness");
    // Drained on threads, so a full pipe cannot stall the child.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let mut hung = false;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > limit {
            hung = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let elapsed = t.elapsed();
    Bounded {
        code: status.code(),
        signal: status.signal(),
        hung,
        elapsed,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; a server started next takes it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A peer server started by a test (Triton, the FastAPI baseline, vLLM): SIGTERM when
/// dropped, to its process or, with `group`, to the process group it leads; killed if it
/// is still there after `grace`.
pub struct Peer {
    pub child: std::process::Child,
    pub group: bool,
    pub grace: std::time::Duration,
}

impl Peer {
    /// Starts `cmd` as a peer; with `group` it leads a process group of its own (for a
    /// server that starts processes of its own), and either way dies with the test.
    pub fn spawn(mut cmd: Command, group: bool, grace: std::time::Duration) -> Peer {
        use std::os::unix::process::CommandExt;
        // SAFETY: setpgid and prctl are async-signal-safe and touch only the child.
        unsafe {
            cmd.pre_exec(move || {
                if group {
                    libc::setpgid(0, 0);
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        Peer {
            child,
            group,
            grace,
        }
    }

    /// The first line the peer prints on stdout (piped), within `within`: its ready line.
    pub fn first_line(&mut self, within: std::time::Duration) -> Option<String> {
        use std::io::BufRead;
        let stdout = self.child.stdout.take()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        rx.recv_timeout(within).ok()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        let target = if self.group { -pid } else { pid };
        // SAFETY: signals to the process (group) this test started.
        unsafe {
            libc::kill(target, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + self.grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                if !self.group {
                    return;
                }
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        unsafe {
            libc::kill(target, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// The embeddings of `texts` from `/v1/embeddings` on `port`, asking for `model`.
pub fn embeddings(port: u16, model: &str, texts: &[&str]) -> Vec<Vec<f64>> {
    let body = serde_json::json!({ "model": model, "input": texts }).to_string();
    let (status, _, answer) = http(
        port,
        "POST",
        "/v1/embeddings",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    let v = json_body(&answer);
    assert_eq!(status, 200, "{v}");
    let data = v["data"].as_array().expect("data");
    assert_eq!(data.len(), texts.len(), "{v}");
    data.iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// The Python of a peer's environment (`ROOT/VENV/bin/python`), which the test suite sets up
/// (`scripts/setup.sh TARGET`); None, said, when it is missing and `SKIP_VAR=1` allows that;
/// else the test fails naming the set-up.
pub fn peer_python(venv: &str, target: &str, skip_var: &str) -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(venv)
        .join("bin/python");
    if python.exists() {
        return Some(python);
    }
    if std::env::var(skip_var).as_deref() == Ok("1") {
        eprintln!("{target} test skipped ({skip_var}=1)");
        return None;
    }
    panic!(
        "{} is missing: run scripts/setup.sh {target} (or set {skip_var}=1)",
        python.display()
    );
}

/// Asks a KServe server (`o`: its target, protocol, model and encoding) for the fixture's
/// reference inputs and checks its first output against PyTorch's reference answer: the
/// same shape, every element within 1e-4.
pub fn assert_answers_like_reference(o: &harness::net::load::LoadOptions, what: &str) {
    let files = runtimes::ModelFiles::resolve(&fixture()).unwrap();
    let info = runtimes::ModelInfo::read(&files).unwrap();
    let reference = info.reference.expect("the fixture's reference outputs");
    let t = harness::net::client::Target::parse(&o.target, 8000).unwrap();
    let got = harness::net::load::fetch_outputs(o, &t, &reference.inputs)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = &reference.outputs[0];
    let g = got
        .iter()
        .find(|x| x.name == want.name)
        .unwrap_or_else(|| panic!("{what}: no output {}", want.name));
    assert_eq!(g.shape, want.shape, "{what}");
    let d = g
        .data
        .to_f64()
        .iter()
        .zip(want.data.to_f64())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(d < 1e-4, "{what}: max abs diff {d}");
}
