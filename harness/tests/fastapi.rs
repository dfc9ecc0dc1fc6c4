//! The load generator's KServe and embeddings clients against the custom Python baseline
//! (models/fastapi_serve.py: FastAPI, uvicorn, ONNX Runtime), the same checks as against
//! Triton: answers like PyTorch's reference over binary and JSON, embeddings like ours,
//! closed-loop load with the server's own metrics and its process tree watched.
//! `scripts/test.sh` installs it (`scripts/setup.sh fastapi`); without it this test fails,
//! unless HARNESS_SKIP_FASTAPI=1.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{embeddings, fixture, harness, results, tmp, Peer, Server};

struct FastApi {
    peer: Peer,
    port: u16,
}

fn start(root: &Path) -> Option<FastApi> {
    let python = common::peer_python(".venv-fastapi", "fastapi", "HARNESS_SKIP_FASTAPI")?;
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(root.join("models/fastapi_serve.py"))
        .arg("--model")
        .arg(fixture())
        .args(["--name", "tiny-bert", "--threads", "1", "--http-port", "0"])
        .args(["--shutdown-after", "300"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut peer = Peer::spawn(cmd, false, Duration::from_secs(10));
    let ready = peer.first_line(Duration::from_secs(60));
    let port = ready
        .as_deref()
        .filter(|l| l.starts_with("ready"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("http=")))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the FastAPI server did not become ready: {ready:?}"));
    Some(FastApi { peer, port })
}

#[test]
fn kserve_and_embeddings_clients_work_against_the_fastapi_baseline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let Some(fa) = start(&root) else {
        return;
    };
    let url = format!("http://127.0.0.1:{}", fa.port);

    // Answers match PyTorch's reference outputs, binary and JSON.
    for binary in [true, false] {
        let o = harness::net::load::LoadOptions {
            binary,
            ..harness::net::load::LoadOptions::new(
                &url,
                harness::net::load::KSERVE_HTTP,
                Some("tiny-bert"),
            )
        };
        common::assert_answers_like_reference(&o, &format!("binary={binary}"));
    }

    // Embeddings like ours, from the same folder.
    let ours = Server::start("fastapi-ours", &fixture(), &["--runtime", "ort"]);
    for text in ["A man is eating food.", "the old man and the sea"] {
        let (a, b) = (
            embeddings(fa.port, "tiny-bert", &[text]).remove(0),
            embeddings(ours.http, "tiny-bert", &[text]).remove(0),
        );
        assert_eq!(a.len(), b.len());
        let d = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(d < 1e-5, "{text}: max abs diff {d}");
    }

    // Closed-loop load over KServe (binary, JSON) and embeddings, the server's metrics
    // scraped and its process watched.
    let pid = fa.peer.child.id().to_string();
    let metrics = format!("{url}/metrics");
    for (proto, encoding) in [
        ("kserve-http", "binary"),
        ("kserve-http", "json"),
        ("openai-embeddings", "binary"),
    ] {
        let out = tmp(&format!("fastapi-{proto}-{encoding}"));
        let r = harness(&[
            "load",
            "--target",
            &url,
            "--protocol",
            proto,
            "--model",
            "tiny-bert",
            "--encoding",
            encoding,
            "--seq",
            "8",
            "--concurrency",
            "1,4",
            "--warmup-time",
            "0.3s",
            "--target-ci",
            "off",
            "--min-time",
            "1s",
            "--metrics-url",
            &metrics,
            "--server-pid",
            &pid,
            "--label",
            "fastapi",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(r.code, 0, "{proto}: {}\n{}", r.stdout, r.stderr);
        let v = results(&out);
        for row in v["scenarios"].as_array().unwrap() {
            assert_eq!(row["status"], "ok", "{row}");
            assert_eq!(row["measurement"]["failures"], 0);
            let n = row["measurement"]["iterations"].as_f64().unwrap();
            let success = common::server_successes(row);
            assert!(
                (success - n).abs() <= 0.05 * n + 8.0,
                "{proto}: the server counted {success}, we {n}"
            );
            let sv = &row["served"];
            assert!(sv["server_compute_ms_per_request"].as_f64().unwrap() > 0.0);
            // The server's process: it did the work, it holds a model in memory.
            let srv = &row["resources"]["server"];
            assert_eq!(
                srv["pid"].as_u64(),
                Some(fa.peer.child.id() as u64),
                "{srv}"
            );
            assert!(srv["cores_busy"].as_f64().unwrap() > 0.05, "{srv}");
            assert!(
                srv["peak_rss_bytes"].as_u64().unwrap() > 20_000_000,
                "{srv}"
            );
            assert_eq!(srv["alive"], true);
        }
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        assert!(md.contains("## Servers"), "{md}");
        // Where its time goes: the client's side, and its own metrics for the server's.
        assert!(
            md.contains("## Where the time goes") && md.contains("(its metrics)"),
            "{md}"
        );
    }
    let bad = harness(&[
        "load",
        "--target",
        &url,
        "--model",
        "tiny-bert",
        "--server-pid",
        "4294967294",
        "--out",
        tmp("fastapi-bad-pid").to_str().unwrap(),
    ]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad
        .stderr
        .contains("--server-pid 4294967294: no such process"));
}
