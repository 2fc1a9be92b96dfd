//! Throughput of the two-view BYOL/PatchMix asymmetric augmentation pipeline
//! (`Recipe::byol`, notes §1d), in images per second (one image = both views), at 32×32 (the
//! CIFAR-10 JPEG test split when `../shared/data` is present, else synthetic images), at
//! 224×224 from synthetic 256×256 images in memory, and at 224×224 from real JPEGs read and
//! decoded per sample through the streaming image-folder path: `224px_jpeg_batch64` (256
//! re-encoded scikit-image photographs of ImageNet-like size, mean 401×351 px) and
//! `224px_jpeg_large_batch16` (64 of 1200–2000 px width), each also as `_scaled` (JPEGs decoded
//! at 1/2–1/8 where every crop allows it, `data.scaled_decode`). The sets are written by
//! `python benches/py/augment_torchvision.py --make-jpegs`, which this bench runs with the venv's
//! Python when they are absent. `CONTRAST_BENCH_ONLY=<part of a case name>` runs those cases.
//! Real-JPEG numbers, per core and on both cores, with peak RSS: `benches/RESULTS.md`
//! (ImageNet-size JPEGs 3.6× torchvision + DataLoader per core with the AVX2 build of the hot
//! loops, 2.4× with `CONTRAST_NO_AVX2=1`; large photographs 1.8×, 3.2× with `_scaled`).
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

/// A real-JPEG set written by `benches/py/augment_torchvision.py --make-jpegs` (with the venv's
/// Python when absent): `imagenet-like-jpeg-v1` (256 ImageNet-size re-encoded photographs) or
/// `large-photo-jpeg-v1` (64 of 1200–2000 px width); streamed (read + decoded per sample in the
/// loader's threads), as ImageNet is.
fn jpeg_set(name: &str) -> Option<StreamingFolder> {
    let base = std::env::temp_dir().join("contrast-cache");
    let sets = ["imagenet-like-jpeg-v1", "large-photo-jpeg-v1"];
    if !sets
        .iter()
        .all(|s| base.join(s).join("train/.done").exists())
    {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let ok = std::process::Command::new(repo.join(".contrast/venv/bin/python"))
            .arg(repo.join("benches/py/augment_torchvision.py"))
            .arg("--make-jpegs")
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("augment bench: skipped the 224 px JPEG cases (could not write the JPEG sets with the venv's Python)");
            return None;
        }
    }
    let dir = base.join(name).join("train");
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
            eprintln!("augment bench: skipped the {name} cases ({e:#})");
            None
        }
    }
}

/// How many samples of one epoch the recipe lets a scaled decode read at 1/2, 1/4, 1/8.
fn scaled_share(ds: &StreamingFolder, recipe: &Recipe) -> String {
    let mut counts = [0usize; 4];
    for i in 0..ds.len() {
        let mut rng = contrast_core::data::augment::sample_rng(0, 0, i as u64);
        let p = ds.list().path(i);
        let (h, w) = contrast_core::data::folder::image_size(&p).expect("image header");
        let draws = recipe.draw(h, w, &mut rng);
        counts[recipe.decode_denom(h, w, &draws).trailing_zeros() as usize] += 1;
    }
    format!(
        "{} of {} samples at full size, {} at 1/2, {} at 1/4, {} at 1/8",
        counts[0],
        ds.len(),
        counts[1],
        counts[2],
        counts[3]
    )
}

fn bench(c: &mut Criterion) {
    let threads = std::env::var("CONTRAST_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut g = c.benchmark_group("byol_two_view");
    let only = std::env::var("CONTRAST_BENCH_ONLY").unwrap_or_default();
    let mut cases: Vec<(String, Arc<dyn Dataset>, usize, usize)> = Vec::new();
    if "32px_batch256".contains(&only) {
        cases.push((
            "32px_batch256".into(),
            Arc::new(cifar_or_synthetic()),
            32,
            256,
        ));
    }
    if "224px_from256_batch64".contains(&only) {
        cases.push((
            "224px_from256_batch64".into(),
            Arc::new(synthetic(512, 256)),
            224,
            64,
        ));
    }
    // real JPEGs, decoded in full and (`_scaled`) at a reduced scale where the crops allow it
    for (name, set, batch) in [
        ("224px_jpeg_batch64", "imagenet-like-jpeg-v1", 64),
        ("224px_jpeg_large_batch16", "large-photo-jpeg-v1", 16),
    ] {
        let scaled = name.replace("_batch", "_scaled_batch");
        if !name.contains(&only) && !scaled.contains(&only) {
            continue;
        }
        let Some(ds) = jpeg_set(set) else { continue };
        let recipe = Recipe::byol(224, 0.08).expect("recipe");
        eprintln!("augment bench: {scaled}: {}", scaled_share(&ds, &recipe));
        if name.contains(&only) {
            cases.push((name.into(), Arc::new(ds.clone()), 224, batch));
        }
        if scaled.contains(&only) {
            cases.push((scaled, Arc::new(ds.with_scaled_decode(true)), 224, batch));
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
