//! The load generator's KServe v2 clients against real NVIDIA Triton (tritonserver 2.51 from
//! PyPI nvidia-pytriton, through models/triton_serve.py). `scripts/test.sh` installs it
//! (`scripts/setup.sh triton`); without it this test fails, unless HARNESS_SKIP_TRITON=1.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{fixture, free_port, harness, results, tmp, Peer};

struct Triton {
    _peer: Peer,
    http: u16,
    grpc: u16,
    metrics: u16,
}

fn start_triton(root: &Path) -> Option<Triton> {
    let python = common::peer_python(".venv-triton", "triton", "HARNESS_SKIP_TRITON")?;
    let (http, grpc, metrics) = (free_port(), free_port(), free_port());
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(root.join("models/triton_serve.py"))
        .arg("--model")
        .arg(fixture())
        .args([
            "--name",
            "tiny-bert",
            "--threads",
            "1",
            "--max-batch",
            "8",
            "--max-queue-delay-us",
            "500",
        ])
        .args([
            "--http-port",
            &http.to_string(),
            "--grpc-port",
            &grpc.to_string(),
        ])
        .args([
            "--metrics-port",
            &metrics.to_string(),
            "--shutdown-after",
            "300",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut peer = Peer::spawn(cmd, false, Duration::from_secs(20));
    match peer.first_line(Duration::from_secs(120)) {
        Some(line) if line.starts_with("ready") => Some(Triton {
            _peer: peer,
            http,
            grpc,
            metrics,
        }),
        other => panic!("Triton did not become ready: {other:?}"),
    }
}

#[test]
fn kserve_clients_work_against_real_triton() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let Some(tr) = start_triton(&root) else {
        return;
    };
    let http = format!("http://127.0.0.1:{}", tr.http);
    let grpc = format!("127.0.0.1:{}", tr.grpc);
    let metrics = format!("http://127.0.0.1:{}/metrics", tr.metrics);

    // Answers match PyTorch's reference outputs, over HTTP (binary and JSON) and gRPC.
    for (proto, target, binary) in [
        (harness::net::load::KSERVE_HTTP, http.clone(), true),
        (harness::net::load::KSERVE_HTTP, http.clone(), false),
        (harness::net::load::KSERVE_GRPC, grpc.clone(), true),
    ] {
        let o = harness::net::load::LoadOptions {
            vocab: Some(128),
            binary,
            ..harness::net::load::LoadOptions::new(&target, proto, Some("tiny-bert"))
        };
        common::assert_answers_like_reference(&o, &format!("{proto:?} binary={binary}"));
    }

    // Load in closed loop over both protocols, with Triton's own metrics scraped.
    for (proto, target) in [("kserve-http", &http), ("kserve-grpc", &grpc)] {
        let out = tmp(&format!("triton-{proto}"));
        let r = harness(&[
            "load",
            "--target",
            target,
            "--protocol",
            proto,
            "--model",
            "tiny-bert",
            "--vocab",
            "128",
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
            "--label",
            "triton",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(r.code, 0, "{proto}: {}\n{}", r.stdout, r.stderr);
        let v = results(&out);
        for row in v["scenarios"].as_array().unwrap() {
            assert_eq!(row["status"], "ok", "{row}");
            assert_eq!(row["measurement"]["failures"], 0);
            let n = row["measurement"]["iterations"].as_f64().unwrap();
            let sv = &row["served"];
            let success = common::server_successes(row);
            assert!(
                (success - n).abs() <= 0.05 * n + 8.0,
                "{proto}: Triton counted {success}, we {n}"
            );
            assert!(sv["server_avg_batch"].as_f64().unwrap() >= 1.0);
            assert!(sv["server_compute_ms_per_request"].as_f64().unwrap() > 0.0);
        }
    }
}
