//! Throughput of the two-view BYOL/PatchMix asymmetric augmentation pipeline
//! (`Recipe::byol`, notes §1d), in images per second (one image = both views), at 32×32 (the
//! CIFAR-10 JPEG test split when `../shared/data` is present, else synthetic images), at
//! 224×224 from synthetic 256×256 images in memory, and at 224×224 from real JPEGs of
//! ImageNet-like size read and decoded per sample through the streaming image-folder path
//! (`224px_jpeg_batch64`: 256 re-encoded scikit-image photographs, mean 401×351 px, written by
//! `python benches/py/augment_torchvision.py --make-jpegs`, which this bench runs with the
//! venv's Python when the set is absent). `CONTRAST_BENCH_ONLY=<part of a case name>` runs one
//! case. Real-JPEG numbers: `benches/RESULTS.md` (73–78 images/s, 1.5–2.0× torchvision +
//! DataLoader(2 workers) at load average 7 on the 2-core VM).
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
use contrast_core::data::{
    Dataset, InMemoryDataset, Loader, LoaderConfig, Recipe, StreamingFolder,
};
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

/// The real-JPEG set (256 ImageNet-size re-encoded photographs, see `make_jpegs` in
/// `benches/py/augment_torchvision.py`), written by the venv's Python when absent; streamed
/// (read + decoded per sample in the loader's threads), as ImageNet is.
fn jpeg_set() -> Option<StreamingFolder> {
    let dir = std::env::temp_dir().join("contrast-cache/imagenet-like-jpeg-v1/train");
    if !dir.join(".done").exists() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let ok = std::process::Command::new(repo.join(".contrast/venv/bin/python"))
            .arg(repo.join("benches/py/augment_torchvision.py"))
            .arg("--make-jpegs")
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("augment bench: skipped the 224 px JPEG case (could not write the JPEG set with the venv's Python)");
            return None;
        }
    }
    match StreamingFolder::open(&dir) {
        Ok(ds) => {
            eprintln!(
                "augment bench: {} real JPEGs streamed from {}",
                ds.len(),
                dir.display()
            );
            Some(ds)
        }
        Err(e) => {
            eprintln!("augment bench: skipped the 224 px JPEG case ({e:#})");
            None
        }
    }
}

fn bench(c: &mut Criterion) {
    let threads = std::env::var("CONTRAST_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut g = c.benchmark_group("byol_two_view");
    let only = std::env::var("CONTRAST_BENCH_ONLY").unwrap_or_default();
    let mut cases: Vec<(&str, Arc<dyn Dataset>, usize, usize)> = Vec::new();
    if "32px_batch256".contains(&only) {
        cases.push(("32px_batch256", Arc::new(cifar_or_synthetic()), 32, 256));
    }
    if "224px_from256_batch64".contains(&only) {
        cases.push((
            "224px_from256_batch64",
            Arc::new(synthetic(512, 256)),
            224,
            64,
        ));
    }
    if "224px_jpeg_batch64".contains(&only) {
        if let Some(ds) = jpeg_set() {
            cases.push(("224px_jpeg_batch64", Arc::new(ds), 224, 64));
        }
    }
    for (name, ds, size, batch) in cases {
        let cfg = LoaderConfig {
            batch_size: batch,
            threads,
            ..LoaderConfig::default()
        };
        let loader =
            Loader::new(ds, Recipe::byol(size, 0.08).expect("recipe"), cfg).expect("loader");
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
