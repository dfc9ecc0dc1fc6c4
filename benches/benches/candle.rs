//! candle, both engines (the ONNX graph, `candle`; the hand-written BERT, `candle-native`):
//! one inference (`Loaded::run`) on a model loaded and prepared outside the measured closure,
//! per model, shape and thread count. The figure is the latency of one inference on
//! one stream; `harness compare` adds percentiles, parity and resources.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn bench(c: &mut Criterion) {
    for engine in ["candle", "candle-native"] {
        let mut g = c.benchmark_group(engine);
        g.sample_size(20);
        for (model, dir) in harness_benches::models() {
            for &(batch, seq) in harness_benches::shapes(model) {
                for threads in [1, 2] {
                    let mut m = harness_benches::prepared(engine, &dir, threads, batch, seq);
                    let id = BenchmarkId::new(model, format!("b{batch}-s{seq}-t{threads}"));
                    g.bench_function(id, |b| b.iter(|| m.run().expect("inference")));
                }
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
