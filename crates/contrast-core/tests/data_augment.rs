//! Augmentations against torchvision 0.26 (`tests/py/augment_reference.py`), on the same
//! decoded `uint8` pixels, in one reference invocation.
//!
//! Tolerances, and why:
//! * crop + resize, `uint8` path: max |diff| ≤ 1 (one grey level). We compute the antialiased
//!   kernels in `float32` like PyTorch but accumulate in a different order, so a value that
//!   lands within float rounding of a .5 boundary may round the other way. We also require that
//!   at most 1% of values differ at all.
//! * crop + resize, float path (0…255 scale): |diff| ≤ 2e-3 (float32 accumulation order).
//! * float ops in [0, 1]: |diff| ≤ 1e-5 (blur, hue: 2e-5), float32 rounding only; flip,
//!   grayscale, solarize and normalize are elementwise and must agree to 1e-6.
//! * a composed view (resize → grayscale → blur → solarize → flip → normalize): 1e-4, the float
//!   errors above divided by std ≈ 0.22 (no resize rounding flip occurs on this input; one would
//!   show as ≈ 0.017 and fail the test).

use contrast_core::data::augment::{self, Interpolation};
use contrast_core::data::{ImageRef, Op, ViewSpec};
use contrast_core::testing::{assert_close, get, run_reference};
use std::borrow::Cow;
use tch::{Kind, Tensor};

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/augment_reference.py")
}

/// A deterministic test image with smooth gradients, edges and noise, `[h, w, 3]`.
fn test_image(h: usize, w: usize) -> Vec<u8> {
    let mut state = 12345u64;
    let mut px = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = (state >> 59) as f64; // 0..31
                let base = match c {
                    0 => 255.0 * x as f64 / w as f64,
                    1 => 255.0 * y as f64 / h as f64,
                    _ => {
                        if (x / 7 + y / 5) % 2 == 0 {
                            230.0
                        } else {
                            20.0
                        }
                    }
                };
                px.push((base * 0.85 + noise).clamp(0.0, 255.0) as u8);
            }
        }
    }
    px
}

#[test]
fn augmentations_match_torchvision() {
    let (h, w) = (40usize, 56usize);
    let pixels = test_image(h, w);
    let img = ImageRef {
        pixels: Cow::Borrowed(&pixels),
        height: h,
        width: w,
        channels: 3,
    };
    // (top, left, h, w, out_h, out_w, interp): downscale, upscale, CIFAR→224, identity, odd.
    let boxes: Vec<[i64; 7]> = vec![
        [3, 5, 30, 40, 16, 16, 0],
        [3, 5, 30, 40, 16, 16, 1],
        [10, 20, 12, 10, 32, 32, 0],
        [10, 20, 12, 10, 32, 32, 1],
        [4, 12, 32, 32, 224, 224, 0],
        [4, 12, 32, 32, 224, 224, 1],
        [0, 0, 40, 56, 40, 56, 1],
        [1, 2, 37, 51, 29, 13, 1],
    ];
    let mut ours_u8 = Vec::new();
    let mut ours_f = Vec::new();
    for b in &boxes {
        let [t, l, bh, bw, oh, ow, m] = b.map(|v| v as usize);
        let interp = if m == 0 {
            Interpolation::Bilinear
        } else {
            Interpolation::Bicubic
        };
        let mut out = vec![0f32; 3 * oh * ow];
        augment::resized_crop_into(&img, t, l, bh, bw, oh, ow, interp, &mut out);
        ours_f.push(Tensor::from_slice(&out).view([3, oh as i64, ow as i64]));
        augment::to_unit_range(&mut out);
        ours_u8.push(Tensor::from_slice(&out).view([3, oh as i64, ow as i64]) * 255.0);
    }

    // Float input for the colour ops: a bicubic 32×32 crop in [0, 1], i.e. what they see in a
    // pipeline (ours_u8[3] / 255).
    let s = 32usize;
    let mut x = vec![0f32; 3 * s * s];
    augment::resized_crop_into(&img, 10, 20, 12, 10, s, s, Interpolation::Bicubic, &mut x);
    augment::to_unit_range(&mut x);
    let xt = Tensor::from_slice(&x).view([3, s as i64, s as i64]);

    let rrc_cfg: Vec<[f64; 6]> = vec![
        [32.0, 32.0, 0.08, 1.0, 3.0 / 4.0, 4.0 / 3.0],
        [20.0, 60.0, 0.2, 1.0, 3.0 / 4.0, 4.0 / 3.0],
        [20.0, 60.0, 0.5, 1.0, 3.0 / 4.0, 4.0 / 3.0], // always the centre-crop fallback
        [224.0, 160.0, 0.14, 0.6, 0.5, 2.0],
    ];
    let draws = 20_000i64;
    let img_t = Tensor::from_slice(&pixels).view([h as i64, w as i64, 3]);
    let boxes_t = Tensor::from_slice(&boxes.concat()).view([boxes.len() as i64, 7]);
    let rrc_t = Tensor::from_slice(&rrc_cfg.concat()).view([rrc_cfg.len() as i64, 6]);
    let draws_t = Tensor::from_slice(&[draws]);
    let Some(r) = run_reference(
        script(),
        &[
            ("img", &img_t),
            ("boxes", &boxes_t),
            ("x", &xt),
            ("rrc", &rrc_t),
            ("draws", &draws_t),
        ],
        &[],
    )
    .unwrap() else {
        return;
    };

    for (k, (u8o, fo)) in ours_u8.iter().zip(&ours_f).enumerate() {
        let refu = get(&r, &format!("crop_u8_{k}")).to_kind(Kind::Float);
        let diff = (u8o - &refu).abs();
        let maxd = diff.max().double_value(&[]);
        let frac = diff
            .gt(0.5)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        println!(
            "crop {k} {:?}: uint8 max |diff| {maxd}, fraction differing {frac:.5}",
            boxes[k]
        );
        assert!(maxd <= 1.0, "crop {k}: uint8 max |diff| {maxd} > 1");
        assert!(frac <= 0.01, "crop {k}: {frac} of values differ");
        assert_close(
            fo,
            get(&r, &format!("crop_f_{k}")),
            2e-3,
            0.0,
            &format!("crop {k} float"),
        );
    }

    let n = 3 * s * s;
    let run = |f: &dyn Fn(&mut [f32])| {
        let mut b = x.clone();
        f(&mut b);
        assert_eq!(b.len(), n);
        Tensor::from_slice(&b).view([3, s as i64, s as i64])
    };
    assert_close(
        &run(&|b| augment::hflip(b, s, s)),
        get(&r, "hflip"),
        0.0,
        0.0,
        "hflip",
    );
    assert_close(
        &run(&|b| augment::grayscale(b, s, s)),
        get(&r, "gray"),
        1e-6,
        0.0,
        "grayscale",
    );
    assert_close(
        &run(&|b| augment::solarize(b, 128.0 / 255.0)),
        get(&r, "solarize"),
        1e-6,
        0.0,
        "solarize",
    );
    assert_close(
        &run(&|b| augment::normalize(b, s, s, augment::IMAGENET_MEAN, augment::IMAGENET_STD)),
        get(&r, "normalize"),
        1e-6,
        0.0,
        "normalize",
    );
    for f in [0.6f32, 1.4] {
        assert_close(
            &run(&|b| augment::adjust_brightness(b, f)),
            get(&r, &format!("brightness_{f}")),
            1e-6,
            0.0,
            "brightness",
        );
        assert_close(
            &run(&|b| augment::adjust_contrast(b, s, s, f)),
            get(&r, &format!("contrast_{f}")),
            1e-5,
            0.0,
            "contrast",
        );
        assert_close(
            &run(&|b| augment::adjust_saturation(b, s, s, f)),
            get(&r, &format!("saturation_{f}")),
            1e-5,
            0.0,
            "saturation",
        );
    }
    for f in [-0.45f32, -0.1, 0.1, 0.25] {
        assert_close(
            &run(&|b| augment::adjust_hue(b, s, s, f)),
            get(&r, &format!("hue_{f}")),
            2e-5,
            0.0,
            &format!("hue {f}"),
        );
    }
    for (i, (k, sg)) in [(3usize, 0.7f32), (3, 2.0), (23, 1.8), (9, 0.1)]
        .into_iter()
        .enumerate()
    {
        assert_close(
            &run(&|b| augment::gaussian_blur(b, s, s, k, sg)),
            get(&r, &format!("blur_{i}")),
            2e-5,
            0.0,
            &format!("blur k={k} σ={sg}"),
        );
    }

    // Resize(int) + CenterCrop, on the wide image and on its transpose (tall).
    let transposed: Vec<u8> = (0..w)
        .flat_map(|x| (0..h).flat_map(move |y| (0..3).map(move |c| (y, x, c))))
        .map(|(y, x, c)| pixels[(y * w + x) * 3 + c])
        .collect();
    let img_tall = ImageRef {
        pixels: Cow::Borrowed(&transposed),
        height: w,
        width: h,
        channels: 3,
    };
    for (k, (rs, cs)) in [(36usize, 32usize), (44, 33), (40, 40)]
        .into_iter()
        .enumerate()
    {
        for (t, im) in [("w", &img), ("t", &img_tall)] {
            let view = ViewSpec::new(vec![Op::ResizeCenterCrop {
                resize: rs,
                size: cs,
                interpolation: Interpolation::Bicubic,
            }])
            .unwrap();
            let mut v = vec![0f32; 3 * cs * cs];
            view.apply(im, &mut augment::sample_rng(0, 0, 0), &mut v)
                .unwrap();
            let ours = Tensor::from_slice(&v).view([3, cs as i64, cs as i64]) * 255.0;
            let refv = get(&r, &format!("eval_crop_{t}_{k}")).to_kind(Kind::Float);
            let diff = (&ours - &refv).abs();
            let maxd = diff.max().double_value(&[]);
            let frac = diff
                .gt(0.5)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]);
            println!(
                "resize {rs} + centre crop {cs} ({t}): max |diff| {maxd}, differing {frac:.5}"
            );
            assert!(maxd <= 1.0, "resize+crop {k}{t}: max |diff| {maxd} > 1");
            assert!(frac <= 0.01, "resize+crop {k}{t}: {frac} of values differ");
        }
    }

    // A whole view with every random op at p = 1 (and a one-point σ range): ops compose in
    // order like a torchvision `Compose`.
    let view = ViewSpec::new(vec![
        Op::Resize {
            size: 24,
            interpolation: Interpolation::Bicubic,
        },
        Op::Grayscale { p: 1.0 },
        Op::GaussianBlur {
            p: 1.0,
            kernel_size: 3,
            sigma: (0.8, 0.8),
        },
        Op::Solarize {
            p: 1.0,
            threshold: 128.0 / 255.0,
        },
        Op::HorizontalFlip { p: 1.0 },
        Op::Normalize {
            mean: augment::IMAGENET_MEAN,
            std: augment::IMAGENET_STD,
        },
    ])
    .unwrap();
    let mut v = vec![0f32; 3 * 24 * 24];
    view.apply(&img, &mut augment::sample_rng(0, 0, 0), &mut v)
        .unwrap();
    assert_close(
        &Tensor::from_slice(&v).view([3, 24, 24]),
        get(&r, "composed"),
        1e-4,
        0.0,
        "composed view",
    );

    // RandomResizedCrop.get_params: the same distribution as torchvision's. Means of
    // (top, left, h, w) over 20k draws each must agree within 5 standard errors of the
    // difference; every box must lie in the image with area fraction and aspect ratio in range
    // (up to the rounding of h and w to whole pixels).
    let mut rng = augment::sample_rng(7, 0, 0);
    for (c, cfg) in rrc_cfg.iter().enumerate() {
        let [hh, ww, s0, s1, r0, r1] = *cfg;
        let (hh, ww) = (hh as usize, ww as usize);
        let mut sum = [0f64; 4];
        let mut sq = [0f64; 4];
        for _ in 0..draws {
            let (t, l, bh, bw) = augment::rrc_params(hh, ww, (s0, s1), (r0, r1), &mut rng);
            assert!(
                bh > 0 && bw > 0 && t + bh <= hh && l + bw <= ww,
                "box outside the image"
            );
            let area = (bh * bw) as f64 / (hh * ww) as f64;
            let ratio = bw as f64 / bh as f64;
            let slack_a = (bh + bw + 1) as f64 / (hh * ww) as f64;
            let fallback = t == (hh - bh) / 2 && l == (ww - bw) / 2;
            assert!(
                area <= 1.0 && (area >= s0 - slack_a || fallback),
                "area {area} out of range"
            );
            let slack_r = 1.0 / bh.min(bw) as f64 + 1e-9;
            assert!(
                (ratio >= r0 * (1.0 - slack_r) && ratio <= r1 * (1.0 + slack_r)) || fallback,
                "ratio {ratio} out of range"
            );
            for (k, v) in [t, l, bh, bw].into_iter().enumerate() {
                sum[k] += v as f64;
                sq[k] += (v * v) as f64;
            }
        }
        let rm = get(&r, &format!("rrc_mean_{c}"));
        let rs = get(&r, &format!("rrc_std_{c}"));
        for k in 0..4 {
            let m = sum[k] / draws as f64;
            let sd = (sq[k] / draws as f64 - m * m).max(0.0).sqrt();
            let (tm, ts) = (rm.double_value(&[k as i64]), rs.double_value(&[k as i64]));
            let se = ((sd * sd + ts * ts) / draws as f64).sqrt();
            println!("rrc cfg {c} field {k}: ours {m:.3} ± {sd:.3}, torchvision {tm:.3} ± {ts:.3}");
            assert!(
                (m - tm).abs() <= 5.0 * se + 1e-9,
                "rrc config {c}, field {k}: mean {m} vs torchvision {tm} (se {se})"
            );
            assert!(
                (sd - ts).abs() <= 0.05 * ts.max(1.0),
                "rrc config {c}, field {k}: std {sd} vs {ts}"
            );
        }
    }
}
