//! The data pipeline's hot loops run as an AVX2 build where the processor has it
//! (`contrast_core::data::simd`): it must give the same bits as the baseline build, and the
//! hue's fast path for pixels in [0, 1] the same bits as its general path.

use contrast_core::data::augment::{
    adjust_contrast, adjust_hue, adjust_saturation, normalize, sample_rng, to_unit_range, Recipe,
};
use contrast_core::data::dataset::ImageRef;
use contrast_core::data::pil_blur::gaussian_blur_unit;
use contrast_core::data::simd;
use rand::Rng;
use std::borrow::Cow;

/// Every view of several recipes on RGB, grey and RGBA images of assorted sizes, plus the
/// colour operations on values outside [0, 1] and NaN, as bits.
fn outputs() -> Vec<u32> {
    let recipes = [
        Recipe::byol(64, 0.08).unwrap(),
        Recipe::simclr(48, 0.5).unwrap(),
        Recipe::simclr_pil_blur(48, 0.5).unwrap(),
        Recipe::mocov2(56, 2).unwrap(),
        Recipe::eval(40).unwrap(),
    ];
    let mut rng = sample_rng(1, 2, 3);
    let mut bits = Vec::new();
    for r in &recipes {
        for i in 0..12u64 {
            let ch = [3usize, 1, 4][i as usize % 3];
            let (h, w) = (20 + rng.gen_range(0..100), 20 + rng.gen_range(0..100));
            let px: Vec<u8> = (0..h * w * ch).map(|_| rng.gen()).collect();
            let img = ImageRef {
                pixels: Cow::Owned(px),
                height: h,
                width: w,
                channels: ch,
            };
            let mut bufs: Vec<Vec<f32>> = r
                .views
                .iter()
                .map(|v| vec![0f32; 3 * v.size() * v.size()])
                .collect();
            let mut outs: Vec<&mut [f32]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            r.apply(&img, &mut sample_rng(7, 0, i), &mut outs).unwrap();
            bits.extend(bufs.iter().flatten().map(|v| v.to_bits()));
        }
    }
    // out of range, and NaN
    let (h, w) = (17, 23);
    let wild = |rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
        let mut b: Vec<f32> = (0..3 * h * w).map(|_| rng.gen_range(-2.0..3.0)).collect();
        b[5] = f32::NAN;
        b
    };
    for op in 0..5 {
        let mut b = wild(&mut rng);
        match op {
            0 => adjust_hue(&mut b, h, w, 0.3),
            1 => adjust_saturation(&mut b, h, w, 1.4),
            2 => adjust_contrast(&mut b, h, w, 0.6),
            3 => to_unit_range(&mut b),
            _ => normalize(&mut b, h, w, [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]),
        }
        bits.extend(b.iter().map(|v| v.to_bits()));
    }
    let mut b: Vec<f32> = (0..3 * h * w).map(|_| rng.gen_range(0.0..1.0)).collect();
    gaussian_blur_unit(&mut b, h, w, 1.3);
    bits.extend(b.iter().map(|v| v.to_bits()));
    bits
}

#[test]
fn avx2_and_baseline_builds_give_the_same_bits() {
    simd::force_baseline(false);
    if !simd::avx2() {
        eprintln!(
            "skipped: AVX2 against baseline (this processor has no AVX2, or CONTRAST_NO_AVX2=1)"
        );
        return;
    }
    let fast = outputs();
    simd::force_baseline(true);
    let base = outputs();
    simd::force_baseline(false);
    assert_eq!(fast.len(), base.len());
    let differ = fast.iter().zip(&base).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} of {} values differ", fast.len());
}

#[test]
fn the_hue_of_unit_pixels_takes_the_general_path_bits() {
    let (h, w) = (31, 29);
    let mut rng = sample_rng(4, 5, 6);
    // pixels in [0, 1], with greys (max = min), pure primaries and both ends among them
    let mut unit: Vec<f32> = (0..3 * h * w).map(|_| rng.gen_range(0.0..=1.0)).collect();
    for (i, v) in [0.0, 1.0, 0.5].into_iter().enumerate() {
        for c in 0..3 {
            unit[c * h * w + i] = v;
        }
    }
    unit[3] = 1.0;
    unit[h * w + 3] = 0.0;
    unit[2 * h * w + 3] = 0.0;
    for factor in [-0.5f32, -0.1, 0.0, 0.25, 0.5] {
        // the same pixels, plus one row with a pixel outside [0, 1]: the general path
        let mut general = Vec::with_capacity(3 * (h + 1) * w);
        for c in 0..3 {
            general.extend_from_slice(&unit[c * h * w..(c + 1) * h * w]);
            general.extend(std::iter::repeat_n(0.5f32, w));
        }
        general[h * w] = 1.5;
        let mut fast = unit.clone();
        adjust_hue(&mut fast, h, w, factor);
        adjust_hue(&mut general, h + 1, w, factor);
        for c in 0..3 {
            let a = &fast[c * h * w..(c + 1) * h * w];
            let b = &general[c * (h + 1) * w..c * (h + 1) * w + h * w];
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_eq!(
                    x.to_bits(),
                    y.to_bits(),
                    "factor {factor}, channel {c}, pixel {i}"
                );
            }
        }
    }
}
