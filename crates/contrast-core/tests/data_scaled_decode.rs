//! Scaled JPEG decoding (`data.scaled_decode`): a crop decoded at 1/2, 1/4 or 1/8 in the DCT
//! domain, against the full decode, and both against torchvision (PIL decode + `F.resized_crop`,
//! antialiased bicubic) on the same file and the same crop boxes
//! (`tests/py/scaled_decode_reference.py`).
//!
//! What is asserted, and why:
//! * The draws are taken from the header's size alone, so the scaled path renders the same crop
//!   boxes as the full path (same flips, jitter, …).
//! * With the flag on but no view allowing a reduced scale (`d = 1`), the output is bit-identical
//!   to the full path.
//! * With `d ≥ 2` the pixels differ: the DCT's reduction replaces part of the antialiased
//!   downsampling. The test prints the measured differences per scale and asserts the mean
//!   absolute difference against torchvision stays within 1.5 grey levels of 255 and the 99.9th
//!   percentile within 16 (sharp edges, where the two low-pass filters differ most).

use contrast_core::data::augment::{Draw, Interpolation, Op, Source, ViewSpec};
use contrast_core::data::folder::{decode_rgb, decode_rgb_scaled};
use contrast_core::data::{Dataset, ImageRef, Recipe, StreamingFolder};
use contrast_core::testing::{get, run_reference};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::borrow::Cow;
use std::path::Path;
use tch::Tensor;

const SIZE: usize = 224;

/// A photograph-like test image: smooth shading, hard-edged shapes, fine texture and noise.
fn photo(w: usize, h: usize) -> Vec<u8> {
    let mut s = 7u64;
    let mut px = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f64 / w as f64, y as f64 / h as f64);
            let disc = ((fx - 0.4).powi(2) + (fy - 0.5).powi(2)).sqrt() < 0.22;
            let stripes = ((x / 9 + y / 13) % 2) as f64;
            for c in 0..3 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = ((s >> 58) as f64) - 32.0;
                let shade = 120.0 + 80.0 * (6.0 * fx + c as f64).sin() * (4.0 * fy).cos();
                let v = if disc {
                    200.0 - 60.0 * c as f64
                } else if fx > 0.7 {
                    shade + 40.0 * stripes
                } else {
                    shade
                };
                px.push((v + noise * 0.5).clamp(0.0, 255.0) as u8);
            }
        }
    }
    px
}

fn write_jpeg(path: &Path, w: usize, h: usize) {
    let px = photo(w, h);
    let f = std::fs::File::create(path).unwrap();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(f, 90);
    enc.encode(&px, w as u32, h as u32, image::ExtendedColorType::Rgb8)
        .unwrap();
}

fn crop_view(scale: (f64, f64)) -> ViewSpec {
    ViewSpec::new(vec![Op::RandomResizedCrop {
        size: SIZE,
        scale,
        ratio: (3.0 / 4.0, 4.0 / 3.0),
        interpolation: Interpolation::Bicubic,
    }])
    .unwrap()
}

/// The view rendered from the full decode and from the scaled decode, with the same draws.
fn both(path: &Path, view: &ViewSpec, seed: u64) -> (Vec<f32>, Vec<f32>, Source, Vec<Draw>) {
    let recipe = Recipe {
        views: vec![view.clone()],
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draws = Vec::new();
    let (px, h, w, source) = decode_rgb_scaled(path, &mut |h, w| {
        draws = recipe.draw(h, w, &mut rng);
        recipe.decode_denom(h, w, &draws)
    })
    .unwrap();
    let img = ImageRef {
        pixels: Cow::Owned(px),
        height: h,
        width: w,
        channels: 3,
    };
    let mut scaled = vec![0f32; 3 * SIZE * SIZE];
    view.render(&img, source, &draws[0], &mut scaled).unwrap();
    let (fpx, fh, fw) = decode_rgb(path).unwrap();
    let full_img = ImageRef {
        pixels: Cow::Owned(fpx),
        height: fh,
        width: fw,
        channels: 3,
    };
    let mut full = vec![0f32; 3 * SIZE * SIZE];
    view.render(&full_img, Source::full(&full_img), &draws[0], &mut full)
        .unwrap();
    (full, scaled, source, draws.remove(0))
}

/// Mean and 99.9th percentile of |a − b| in grey levels (values in [0, 1]).
fn diff(a: &[f32], b: &[f32]) -> (f64, f64) {
    let mut d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y).abs() * 255.0) as f64)
        .collect();
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    d.sort_by(f64::total_cmp);
    (mean, d[d.len() * 999 / 1000])
}

#[test]
fn scaled_decode_draws_the_same_boxes_and_stays_close_to_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photo.jpg");
    let (w, h) = (1600usize, 1200usize);
    write_jpeg(&path, w, h);

    // Small crops keep the full decode; larger crops of this 1600 × 1200 image allow 1/2 or 1/4.
    let mut cases = Vec::new();
    for (k, scale) in [(0.02, 0.05), (0.15, 0.3), (0.5, 1.0)].iter().enumerate() {
        for seed in 0..4u64 {
            cases.push(both(&path, &crop_view(*scale), 100 * k as u64 + seed));
        }
    }
    let denoms: Vec<usize> = cases.iter().map(|c| c.2.denom).collect();
    assert!(
        denoms.contains(&1) && denoms.iter().any(|&d| d >= 2),
        "{denoms:?}"
    );
    for (full, scaled, source, _) in &cases {
        assert_eq!((source.height, source.width), (h, w));
        if source.denom == 1 {
            assert_eq!(full, scaled, "d = 1 must be the full decode, bit for bit");
        }
    }

    // torchvision on the same file and boxes
    let bytes = std::fs::read(&path).unwrap();
    let boxes: Vec<i64> = cases
        .iter()
        .flat_map(|c| match c.3[0] {
            Draw::Crop { top, left, h, w } => [top as i64, left as i64, h as i64, w as i64],
            ref other => panic!("not a crop: {other:?}"),
        })
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/scaled_decode_reference.py");
    let Some(r) = run_reference(
        script,
        &[
            ("jpeg", &Tensor::from_slice(&bytes)),
            (
                "boxes",
                &Tensor::from_slice(&boxes).view([cases.len() as i64, 4]),
            ),
            ("size", &Tensor::from_slice(&[SIZE as i64])),
        ],
        &[],
    )
    .unwrap() else {
        return;
    };
    for (k, (full, scaled, source, _)) in cases.iter().enumerate() {
        let tv: Vec<f32> = Vec::try_from(
            get(&r, &format!("crop_{k}"))
                .to_kind(tch::Kind::Float)
                .flatten(0, -1)
                / 255.0,
        )
        .unwrap();
        let (fm, fp) = diff(full, &tv);
        let (sm, sp) = diff(scaled, &tv);
        println!(
            "case {k:2}: decoded at 1/{}: full decode vs torchvision mean {fm:.3} p99.9 {fp:.1}; \
             scaled vs torchvision mean {sm:.3} p99.9 {sp:.1} (grey levels)",
            source.denom
        );
        // The full path differs from PIL only by the JPEG decoder (max 4 levels, mean ≈ 0.3).
        assert!(fm < 1.0 && fp <= 6.0, "full decode: mean {fm}, p99.9 {fp}");
        assert!(
            sm < 1.5 && sp <= 16.0,
            "scaled decode 1/{}: mean {sm}, p99.9 {sp}",
            source.denom
        );
    }
}

#[test]
fn streamed_folder_decodes_at_a_reduced_scale_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("train");
    std::fs::create_dir_all(root.join("a")).unwrap();
    write_jpeg(&root.join("a/big.jpg"), 1200, 900);
    let recipe = Recipe {
        views: vec![crop_view((0.5, 1.0)), crop_view((0.5, 1.0))],
    };
    for on in [false, true] {
        let ds = StreamingFolder::open(&root).unwrap().with_scaled_decode(on);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut asked = 0;
        let (img, _, source) = ds
            .get_scaled(0, &mut |h, w| {
                let draws = recipe.draw(h, w, &mut rng);
                asked = recipe.decode_denom(h, w, &draws);
                asked
            })
            .unwrap();
        assert!(
            asked >= 2,
            "a 1200 × 900 image, crops ≥ half of it: 1/{asked}"
        );
        let want = if on { asked } else { 1 };
        assert_eq!(source.denom, want);
        assert_eq!(
            (img.height, img.width),
            (900usize.div_ceil(want), 1200usize.div_ceil(want))
        );
    }
}
