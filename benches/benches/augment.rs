//! Throughput of the two-view BYOL/PatchMix asymmetric augmentation pipeline
//! (`Recipe::byol`, notes §1d), in images per second (one image = both views), at 32×32 (the
//! CIFAR-10 JPEG test split when `../shared/data` is present, else synthetic images) and at
//! 224×224 (RandomResizedCrop(224) from synthetic 256×256 images).
//!
//! Peer: `benches/py/augment_torchvision.py` (same recipe with torchvision transforms on PIL
//! images, DataLoader with 2 workers). Run both in one session:
//! `cargo bench -p contrast-benches --bench augment -- --warm-up-time 1 --measurement-time 5`
//! and `python benches/py/augment_torchvision.py`.
//! Threads: the loader's pool uses every core (`CONTRAST_BENCH_THREADS` overrides); nothing
//! else runs, as when a GPU trains.
//!
//! Measured 2026-11-23 on the 2-core development VM, shared with other jobs (load average 7–9
//! during both runs, so absolute numbers are low and noisy; the ratio is the point):
//!
//! | images/s (2 views each)       | ours (criterion, 2 rayon threads) | torchvision, PIL blur | torchvision, GaussianBlur |
//! |-------------------------------|-----------------------------------|-----------------------|---------------------------|
//! | 32 px (CIFAR-10 JPEG test)    | 5,916 (5,737–6,100)               | 136 (43×)             | 96 (62×)                  |
//! | 224 px (from 256×256)         | 55.1 (53.0–57.3)                  | 26 (2.1×)             | 16 (3.4×)                 |
//!
//! Re-measured the same day on the idle machine with `cargo xtask bench --vs-pytorch --rounds 3
//! --seconds 4` (medians; torchvision GaussianBlur): 32 px 12,632 vs 612 images/s (20.6×),
//! 224 px 180 vs 74 images/s (2.4×).

use contrast_core::data::folder::load_image_folder;
use contrast_core::data::{Dataset, InMemoryDataset, Loader, LoaderConfig, Recipe};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;

fn synthetic(n: usize, side: usize) -> InMemoryDataset {
    let mut px = Vec::with_capacity(n * side * side * 3);
    let mut s = 1u64;
    for k in 0..n {
        for y in 0..side {
            for x in 0..side {
                for c in 0..3 {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let v = (x * 255 / side + y * 3 + c * 50 + k * 7) % 200 + (s >> 58) as usize;
                    px.push(v.min(255) as u8);
                }
            }
        }
    }
    InMemoryDataset::from_nhwc(px, side, side, 3, vec![0; n], vec![]).expect("synthetic data set")
}

fn cifar_or_synthetic() -> InMemoryDataset {
    let tar = contrast_core::data::dev_data_root()
        .unwrap_or_default()
        .join("cifar10-jpeg/CIFAR-10-images.tar");
    let dest = std::env::temp_dir().join("contrast-cache/cifar10-jpeg-78a12bf9");
    if tar.exists() && !dest.join(".extracted").exists() {
        let _ = std::fs::create_dir_all(&dest);
        let ok = std::process::Command::new("tar")
            .arg("xf")
            .arg(&tar)
            .arg("-C")
            .arg(&dest)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let _ = std::fs::write(dest.join(".extracted"), "");
        }
    }
    match load_image_folder(dest.join("test")) {
        Ok(ds) => {
            eprintln!(
                "augment bench: CIFAR-10 JPEG test split, {} images",
                ds.len()
            );
            ds
        }
        Err(e) => {
            eprintln!("augment bench: synthetic 32×32 images ({e:#})");
            synthetic(10_000, 32)
        }
    }
}

fn bench(c: &mut Criterion) {
    let threads = std::env::var("CONTRAST_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut g = c.benchmark_group("byol_two_view");
    for (name, ds, size, batch) in [
        ("32px_batch256", cifar_or_synthetic(), 32usize, 256usize),
        ("224px_from256_batch64", synthetic(512, 256), 224, 64),
    ] {
        let cfg = LoaderConfig {
            batch_size: batch,
            threads,
            ..LoaderConfig::default()
        };
        let loader = Loader::new(Arc::new(ds), Recipe::byol(size, 0.08).expect("recipe"), cfg)
            .expect("loader");
        let nb = loader.batches_per_epoch();
        let mut b = 0usize;
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(name, |bencher| {
            bencher.iter(|| {
                let out = loader.batch(0, b % nb).expect("batch");
                b += 1;
                out
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // numbers only: criterion's plots need a font that plotters' ab_glyph backend (the
    // workspace's feature set) does not register, and fail once a previous run exists
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
