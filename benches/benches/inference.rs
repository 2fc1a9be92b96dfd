//! Inference paths: the 3-D sliding window (FBA-Net's evaluation, V-Net width 8, patch 32³,
//! stride 16 over a 64×64×48 volume = 18 windows, eval mode) in volumes/s, and CLAIRES's
//! retrieval search (cosine scores + top-10 over 10k and 100k L2-normalised 256-d embeddings,
//! one query) in queries/s.
//!
//! ```text
//! cargo bench -p contrast-benches --bench inference -- --warm-up-time 1 --measurement-time 5
//! ```
//! `CONTRAST_BENCH_THREADS` (default 1) sets libtorch's intra-op threads.

use claires::index::{Index, IndexMeta};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tch::{Device, Kind, Tensor};

fn threads() {
    let t = std::env::var("CONTRAST_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    tch::set_num_threads(t);
    contrast_core::train::keep_freed_memory(); // as training runs do
}

fn bench_sliding_window(c: &mut Criterion) {
    threads();
    tch::manual_seed(0);
    let mut cfg = fba_net::config::FbaNetConfig::default();
    cfg.data.patch = [32, 32, 32];
    cfg.model.n_filters = 8;
    cfg.eval.stride = [16, 16, 16];
    cfg.eval.sw_batch = 4;
    let net = fba_net::method::build_model(&cfg, Device::Cpu, false).expect("V-Net");
    let sw = fba_net::method::sliding_window(&cfg);
    let image = Tensor::randn([64, 64, 48], (Kind::Float, Device::Cpu));
    let mut g = c.benchmark_group("sliding_window");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("vnet8_p32_s16_64x64x48", |b| {
        b.iter(|| {
            sw.run(&image, |x| tch::no_grad(|| net.predict_probs(x)))
                .expect("sliding window")
        })
    });
    g.finish();
}

fn bench_retrieval(c: &mut Criterion) {
    threads();
    tch::manual_seed(0);
    let dim = 256;
    let q = Tensor::randn([dim], (Kind::Float, Device::Cpu));
    let q = &q / q.norm();
    let mut g = c.benchmark_group("retrieval_top10");
    g.throughput(Throughput::Elements(1));
    for n in [10_000i64, 100_000] {
        let e = Tensor::randn([n, dim], (Kind::Float, Device::Cpu));
        let norms = e.norm_scalaropt_dim(2, [1], true);
        let index = Index {
            meta: IndexMeta::new(String::new(), 0, dim, vec![]),
            embeddings: &e / norms,
        };
        g.bench_with_input(BenchmarkId::from_parameter(n), &index, |b, idx| {
            b.iter(|| idx.top_k(&q, 10, None).expect("search"))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // numbers only: criterion's plots need a font that plotters' ab_glyph backend (the
    // workspace's feature set) does not register, and fail once a previous run exists
    config = Criterion::default().without_plots();
    targets = bench_sliding_window, bench_retrieval
}
criterion_main!(benches);
