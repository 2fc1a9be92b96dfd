//! Forward + backward time of the contrastive losses of `contrast_core::loss` at batch 256 / 512
//! and embedding dimension 128 / 256 (fp32, CPU).
//!
//! `cargo bench -p contrast-benches --bench losses -- --warm-up-time 1 --measurement-time 3`

use contrast_core::loss::{ClipLoss, InfoNce, MultiPositiveInfoNce, NtXent, SoftClipLoss};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tch::{nn, Device, Kind, Tensor};

fn leaf(n: i64, d: i64) -> Tensor {
    Tensor::randn([n, d], (Kind::Float, Device::Cpu)).set_requires_grad(true)
}

/// Forward + backward of `loss`, then clear the gradients of `leaves`.
fn fwd_bwd(loss: Tensor, leaves: &[&Tensor]) {
    loss.backward();
    for t in leaves {
        let mut g = t.grad();
        let _ = g.zero_();
    }
}

fn losses(c: &mut Criterion) {
    tch::manual_seed(0);
    let mut group = c.benchmark_group("loss_fwd_bwd");
    for &n in &[256i64, 512] {
        for &d in &[128i64, 256] {
            let id = |name: &str| BenchmarkId::new(name, format!("b{n}_d{d}"));
            let (q, k) = (leaf(n, d), leaf(n, d));
            let info = InfoNce::new(0.2).unwrap();
            group.bench_function(id("info_nce_hard"), |b| {
                b.iter(|| fwd_bwd(info.forward(&q, &k).unwrap(), &[&q, &k]))
            });
            let soft =
                (Tensor::randn([n, n], (Kind::Float, Device::Cpu)) * 2.0).softmax(1, Kind::Float);
            let mut unchecked = info.clone();
            unchecked.check_targets = false; // the hot-loop setting (no device sync)
            group.bench_function(id("info_nce_soft"), |b| {
                b.iter(|| fwd_bwd(unchecked.forward_soft(&q, &k, &soft).unwrap(), &[&q, &k]))
            });
            let nt = NtXent::new(0.5).unwrap();
            group.bench_function(id("nt_xent_2n"), |b| {
                b.iter(|| fwd_bwd(nt.forward_pair(&q, &k).unwrap(), &[&q, &k]))
            });
            let mp = MultiPositiveInfoNce::new(0.1).unwrap();
            let labels = Tensor::randint(n / 4, [n], (Kind::Int64, Device::Cpu));
            group.bench_function(id("supcon_labels"), |b| {
                b.iter(|| fwd_bwd(mp.forward_labels(&q, &labels).unwrap(), &[&q]))
            });
            let vs = nn::VarStore::new(Device::Cpu);
            let clip = ClipLoss::new(&vs.root(), 0.07).unwrap();
            group.bench_function(id("clip"), |b| {
                b.iter(|| fwd_bwd(clip.forward(&q, &k).unwrap(), &[&q, &k, &clip.logit_scale]))
            });
            let sc = SoftClipLoss::new(1.0).unwrap();
            group.bench_function(id("soft_clip_tutorial"), |b| {
                b.iter(|| fwd_bwd(sc.forward(&q, &k).unwrap(), &[&q, &k]))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // numbers only: criterion's plots need a font that plotters' ab_glyph backend (the
    // workspace's feature set) does not register, and fail once a previous run exists
    config = Criterion::default().without_plots();
    targets = losses
}
criterion_main!(benches);
