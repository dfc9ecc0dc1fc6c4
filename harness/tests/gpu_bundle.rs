//! The GPU run on a machine with no Rust: `scripts/gpu-bundle.sh` packs the binary, ONNX
//! Runtime's library and a model's weights (in float16) into parts small enough to carry, and
//! `scripts/gpu-run.sh --bundle` unpacks them, rebuilds the model folder with the exporter and
//! runs the comparison, with cargo off the PATH. On this machine's devices: GPU rows measured
//! with their device time where there is a GPU, skipped with the reason where not.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn python() -> PathBuf {
    root().join(".venv/bin/python")
}

/// PATH without cargo and rustc: the folders of the tools the scripts use.
fn path_without_rust() -> String {
    let dirs: Vec<String> = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !Path::new(d).join("cargo").exists() && !Path::new(d).join("rustc").exists())
        .map(str::to_string)
        .collect();
    dirs.join(":")
}

fn script(name: &str, args: &[&str], env: &[(&str, &str)]) -> common::Run {
    common::output_of(
        Command::new("bash")
            .arg(root().join("scripts").join(name))
            .args(args)
            .envs(env.iter().copied()),
    )
}

#[test]
fn a_bundle_runs_the_gpu_comparison_without_rust() {
    if !python().is_file() {
        panic!("this test needs the project's .venv (scripts/setup.sh)");
    }
    let dir = common::tmp("gpu-bundle");
    let bundle = dir.join("bundle");
    let fixture = common::fixture().canonicalize().unwrap();
    let made = script(
        "gpu-bundle.sh",
        &[bundle.to_str().unwrap()],
        &[
            ("MODEL", fixture.to_str().unwrap()),
            ("HARNESS", env!("CARGO_BIN_EXE_harness")),
        ],
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    // Every piece listed with its checksum, no part over 56 MiB.
    let manifest = std::fs::read_to_string(bundle.join("MANIFEST")).unwrap();
    let components: Vec<&str> = manifest
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert!(
        components.contains(&"base") && components.contains(&"model"),
        "{manifest}"
    );
    for part in std::fs::read_dir(&bundle).unwrap().flatten() {
        if part.path().is_dir() {
            let size: u64 = std::fs::read_dir(part.path())
                .unwrap()
                .flatten()
                .map(|f| f.metadata().unwrap().len())
                .sum();
            assert!(size <= 56 << 20, "{}: {size} bytes", part.path().display());
        }
    }

    // A rebuilt model and results go to folders of the test's own.
    let models = dir.join("models");
    let out = dir.join("out");
    let rebuilt = models.join("tiny-bert");
    let path = path_without_rust();
    let py = python();
    let env = [
        ("PATH", path.as_str()),
        ("PYTHON", py.to_str().unwrap()),
        ("MODELS_OUT", models.to_str().unwrap()),
        ("MIN_TIME", "200ms"),
        ("TIME_LIMIT", "400"),
    ];
    let run = script(
        "gpu-run.sh",
        &[
            "--bundle",
            bundle.to_str().unwrap(),
            out.to_str().unwrap(),
            rebuilt.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("unpacked base") && run.stderr.contains("unpacked model"),
        "{}",
        run.stderr
    );
    // The model folder was rebuilt from the float16 weights by the exporter.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rebuilt.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["name"], "tiny-bert");
    assert!(rebuilt.join("model.fp16.onnx").is_file());
    // ONNX Runtime came from the bundle.
    let list = std::fs::read_to_string(out.join("list.txt")).unwrap();
    assert!(
        list.contains("unpacked/ort/cpu/libonnxruntime.so.1.31.1"),
        "{list}"
    );

    let gpu = Path::new("/proc/driver/nvidia/version").exists();
    let r = common::results(&out.join("tiny-bert"));
    let rows = r["scenarios"].as_array().unwrap();
    for s in rows {
        let id = s["id"].as_str().unwrap();
        let device = s["device"].as_str().unwrap();
        if device == "cpu" {
            assert_eq!(s["status"], "ok", "{s}");
            if s["runtime"] == "candle-native" {
                assert_eq!(s["parity"]["status"], "pass", "{id}: {}", s["parity"]);
            }
            assert!(s["measurement"].get("device").is_none(), "{id}");
        } else if !gpu {
            assert_eq!(s["status"], "skipped", "{s}");
            assert!(!s["error"].as_str().unwrap().is_empty(), "{id}");
        } else if s["status"] == "ok" {
            let d = &s["measurement"]["device"];
            assert!(
                d["status"].is_string(),
                "{id}: a GPU row says how its device time went"
            );
        }
    }
    // PyTorch eager ran on what the machine has: fp32 and fp16 at batch 1, 8 and 32.
    let torch: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tiny-bert-torch.json")).unwrap())
            .unwrap();
    let torch = torch.as_array().unwrap();
    assert_eq!(torch.len(), 6, "{torch:?}");
    let device = if gpu { "cuda" } else { "cpu" };
    for t in torch {
        assert!(t["device"].as_str().unwrap().starts_with(device), "{t}");
        assert!(t["p50_ms"].as_f64().unwrap() > 0.0, "{t}");
    }

    // One table of it all: every harness row and PyTorch's.
    let table = std::fs::read_to_string(out.join("gpu-run.md")).unwrap();
    assert!(
        table.contains("## tiny-bert") && table.contains("| ort | cpu | fp32 | 1 | - | "),
        "{table}"
    );
    assert_eq!(table.matches("| pytorch-eager |").count(), 6, "{table}");
    // With a GPU the end-to-end run's rows are in it too.
    let e2e = out.join("tiny-bert-e2e");
    let e2e_rows = if e2e.join("results.json").is_file() {
        common::results(&e2e)["scenarios"].as_array().unwrap().len()
    } else {
        0
    };
    assert_eq!(
        table.matches("\n| ort |").count() + table.matches("\n| candle-native |").count(),
        rows.len() + e2e_rows,
        "{table}"
    );

    // A damaged piece is refused by name, and nothing runs.
    let piece = manifest_piece(&bundle, "model");
    let mut bytes = std::fs::read(&piece).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&piece, bytes).unwrap();
    let bad = script(
        "gpu-run.sh",
        &[
            "--bundle",
            bundle.to_str().unwrap(),
            dir.join("out2").to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("does not match MANIFEST"),
        "{}",
        bad.stderr
    );

    // No binary, no cargo, no bundle: the fix is named.
    let none = script(
        "gpu-run.sh",
        &[dir.join("out3").to_str().unwrap()],
        &[("PATH", path.as_str()), ("HARNESS", "/nonexistent/harness")],
    );
    assert_eq!(none.code, 2);
    assert!(
        none.stderr.contains("scripts/gpu-bundle.sh"),
        "{}",
        none.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn manifest_piece(bundle: &Path, component: &str) -> PathBuf {
    let manifest = std::fs::read_to_string(bundle.join("MANIFEST")).unwrap();
    let line = manifest.lines().find(|l| l.ends_with(component)).unwrap();
    bundle.join(line.split_whitespace().nth(1).unwrap())
}
