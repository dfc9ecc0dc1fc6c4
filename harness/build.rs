//! Records the compiler and the source revision the binary was built from, for the
//! environment section of every result, and compiles the KServe v2 gRPC protocol.
use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = run(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HARNESS_RUSTC={version}");
    let commit = run("git", &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"])
        .map(|s| (!s.is_empty()).to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HARNESS_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=HARNESS_GIT_DIRTY={dirty}");
    if let Some(git_dir) = run("git", &["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/index");
    }
    println!("cargo:rerun-if-changed=build.rs");

    // With candle on CUDA the binary resolves the driver's symbols when it starts: record
    // libcuda.so.1 as needed even though nothing at link time resolves from it (a stub there,
    // scripts/build-gpu.sh).
    if std::env::var_os("CARGO_FEATURE_CANDLE_CUDA").is_some() {
        println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg-bins=-lcuda");
        println!("cargo:rustc-link-arg-bins=-Wl,--as-needed");
    }
    // The KServe v2 gRPC service, compiled with a vendored protoc (no system protoc needed).
    println!("cargo:rerun-if-changed=proto/kserve.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc for this platform");
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .compile_protos(&["proto/kserve.proto"], &["proto"])
        .expect("compiling proto/kserve.proto");
}
