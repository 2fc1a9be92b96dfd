//! Backbone training-step throughput: forward + backward of ViT-T/2 (PatchMix's CIFAR encoder,
//! 257 tokens) and ResNet-18 with the CIFAR stem, on 32×32 batches, in images/s.
//!
//! ```text
//! cargo bench -p contrast-benches --bench models -- --warm-up-time 1 --measurement-time 5
//! ```
//! Environment: `CONTRAST_BENCH_BATCH` (default 64), `CONTRAST_BENCH_THREADS` (libtorch
//! intra-op threads; default: libtorch's choice), `CONTRAST_BENCH_DEVICE` (`cpu` or `cuda`).
//! The PyTorch peer is `benches/py/models.py` (same models, batch, threads, loss).
//!
//! Measured 2026-11-23 on the 2-core build VM shared with other jobs (load ≈ 4), batch 16,
//! one intra-op thread, back to back: ViT-T/2 4.52 images/s (PyTorch 2.11 peer 4.5), ResNet-18
//! CIFAR 13.8 images/s (peer 12.7). With two threads under the same load OpenMP contention made
//! both 3–8× slower and noisy; compare only runs taken together.

use contrast_core::nn::resnet::{resnet18, ResNet, ResNetConfig, Stem};
use contrast_core::nn::vit::{vit_tiny, VisionTransformer};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

fn env_i64(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn device() -> Device {
    match std::env::var("CONTRAST_BENCH_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        _ => Device::Cpu,
    }
}

/// One training step without the optimiser: zero the gradients, forward in train mode,
/// `mean(out²)`, backward.
fn step(vs: &VarStore, model: &dyn ModuleT, x: &Tensor) {
    for mut t in vs.trainable_variables() {
        t.zero_grad();
    }
    let loss = model.forward_t(x, true).square().mean(Kind::Float);
    loss.backward();
}

fn bench_models(c: &mut Criterion) {
    let threads = env_i64("CONTRAST_BENCH_THREADS", 0);
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
    contrast_core::train::keep_freed_memory(); // as training runs do
    let batch = env_i64("CONTRAST_BENCH_BATCH", 64);
    let dev = device();
    tch::manual_seed(0);
    let x = Tensor::randn([batch, 3, 32, 32], (Kind::Float, dev));

    let mut group = c.benchmark_group("train_step_32px");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));

    let vs = VarStore::new(dev);
    let cfg = contrast_core::nn::vit::VitConfig {
        drop_path_rate: 0.1,
        ..vit_tiny(32, 2)
    };
    let vit = VisionTransformer::new(vs.root(), &cfg).expect("ViT-T/2");
    group.bench_function(format!("vit_tiny_p2_b{batch}"), |b| {
        b.iter(|| step(&vs, &vit, &x))
    });

    let vs = VarStore::new(dev);
    let cfg = ResNetConfig {
        stem: Stem::cifar(),
        ..resnet18()
    };
    let r18 = ResNet::new(vs.root(), &cfg).expect("ResNet-18");
    group.bench_function(format!("resnet18_cifar_b{batch}"), |b| {
        b.iter(|| step(&vs, &r18, &x))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // numbers only: criterion's plots need a font that plotters' ab_glyph backend (the
    // workspace's feature set) does not register, and fail once a previous run exists
    config = Criterion::default().without_plots();
    targets = bench_models
}
criterion_main!(benches);
