//! Shared set-up for the criterion benches in `benches/`: the models to measure and their
//! inputs, loaded and prepared outside any measured closure.

use std::path::{Path, PathBuf};

use runtimes::{HostTensor, LoadOptions, Loaded, ModelFiles, ModelInfo};

/// The committed tiny fixture, and MiniLM when `scripts/setup.sh minilm` has exported it.
pub fn models() -> Vec<(&'static str, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut m = vec![("tiny-bert", root.join("models/fixtures/tiny-bert"))];
    let minilm = root.join("models/out/all-MiniLM-L6-v2");
    if minilm.join("model.onnx").is_file() {
        m.push(("minilm", minilm));
    }
    m
}

/// BERT inputs of `batch` x `seq`: ids spread over the vocabulary, mask ones, types zeros.
pub fn inputs(info: &ModelInfo, batch: usize, seq: usize) -> Vec<HostTensor> {
    let vocab = info.vocab_size.unwrap_or(100) as i64;
    runtimes::tensor::bert_inputs(batch, seq, |i| (i as i64 * 7919 + 101) % vocab)
}

/// `runtime` loaded with `threads` and prepared for `batch` x `seq`, ready for `run`.
pub fn prepared(
    runtime: &str,
    dir: &Path,
    threads: usize,
    batch: usize,
    seq: usize,
) -> Box<dyn Loaded> {
    let files = ModelFiles::resolve(dir).expect("model files");
    let info = ModelInfo::read(&files).expect("model info");
    let opts = LoadOptions {
        threads,
        ..LoadOptions::default()
    };
    let mut m = runtimes::by_name(runtime)
        .expect("runtime")
        .load(&files, &info, &opts)
        .unwrap_or_else(|e| panic!("{runtime}: {e}"));
    m.prepare(&inputs(&info, batch, seq)).expect("prepare");
    m.run().expect("first inference");
    m
}

/// The shapes benched: (batch, seq) per model.
pub fn shapes(model: &str) -> &'static [(usize, usize)] {
    if model == "minilm" {
        &[(1, 128), (8, 128)]
    } else {
        &[(1, 16), (8, 16)]
    }
}
