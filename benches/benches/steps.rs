//! One full training step per method (forward, loss, backward, optimiser) at the fixed small
//! configurations of `contrast_benches::steps` (table there), in samples/s.
//!
//! ```text
//! cargo bench -p contrast-benches --bench steps -- --warm-up-time 1 --measurement-time 10
//! ```
//! Environment: `CONTRAST_BENCH_THREADS` (libtorch intra-op threads, default 1),
//! `CONTRAST_BENCH_DEVICE` (`cpu` or `cuda`). The PyTorch peers and the ratio:
//! `cargo xtask bench --vs-pytorch --method steps` (measured numbers: `benches/RESULTS.md`).

use contrast_benches::steps::{build, CASES};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tch::Device;

fn bench_steps(c: &mut Criterion) {
    let threads = std::env::var("CONTRAST_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    tch::set_num_threads(threads);
    contrast_core::train::keep_freed_memory(); // as training runs do
    let dev = match std::env::var("CONTRAST_BENCH_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        _ => Device::Cpu,
    };
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    for name in CASES {
        let mut case = build(name, None, false, dev).expect("building the step case");
        group.throughput(Throughput::Elements(case.batch() as u64));
        group.bench_function(case.name(), |b| {
            b.iter(|| case.step().expect("training step"))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // numbers only: criterion's plots need a font that plotters' ab_glyph backend (the
    // workspace's feature set) does not register, and fail once a previous run exists
    config = Criterion::default().without_plots();
    targets = bench_steps
}
criterion_main!(benches);
