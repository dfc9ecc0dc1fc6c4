//! Records the versions of the runtime crates, read from the workspace's Cargo.lock, so that
//! results say exactly what was measured.
use std::{fs, path::Path};

fn main() {
    // Read when the script runs, not baked in when it was compiled: a build script compiled
    // for one checkout can be reused for another that shares the target folder.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let lock = Path::new(&manifest).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = fs::read_to_string(&lock).unwrap_or_default();
    for (krate, var) in [
        ("ort", "HARNESS_DEP_ORT"),
        ("tract-onnx", "HARNESS_DEP_TRACT_ONNX"),
        ("candle-core", "HARNESS_DEP_CANDLE_CORE"),
    ] {
        println!("cargo:rustc-env={var}={}", locked_version(&text, krate));
    }
}

fn locked_version(lock: &str, krate: &str) -> String {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{krate}\"") {
            if let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
            {
                return v.trim_matches('"').to_string();
            }
        }
    }
    "unknown".to_string()
}
