//! The profiling recipes in profiles/: each one checks its tools and prints its commands in
//! --dry-run; the ONNX Runtime trace recipe runs for real on the fixture.

use std::path::Path;
use std::process::Command;

mod common;
use common::fixture;

fn recipe(name: &str, args: &[&str]) -> (i32, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles")
        .join(name);
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn every_recipe_runs_dry() {
    let model = fixture();
    let m = model.to_str().unwrap();
    for (name, expect) in [
        ("perf.sh", "perf"),
        ("ort-trace.sh", "--ort-profile"),
        ("nsys.sh", "nsys profile"),
    ] {
        let (code, text) = recipe(name, &["--dry-run", "--model", m, "--seq", "8"]);
        assert_eq!(code, 0, "{name}: {text}");
        assert!(text.contains(expect), "{name}: {text}");
        assert!(
            text.contains(m) || name == "perf.sh" && text.contains("not installed"),
            "{name}: {text}"
        );
    }
}

#[test]
fn the_onnx_runtime_trace_recipe_lists_operators() {
    let (code, text) = recipe(
        "ort-trace.sh",
        &[
            "--model",
            fixture().to_str().unwrap(),
            "--seq",
            "8",
            "--threads",
            "1",
            "--target-ci",
            "off",
            "--min-time",
            "100ms",
            "--warmup-time",
            "10ms",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(".json:") && text.contains(" runs"), "{text}");
    assert!(text.contains("MatMul"), "{text}");
}
