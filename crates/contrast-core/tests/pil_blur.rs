//! `data::pil_blur` against Pillow's `ImageFilter.GaussianBlur` (tests/py/pil_blur.py) on the
//! same 8-bit images: equal to the grey level, for small and large σ (a box wider than the image
//! included), square and non-square, RGB and single-channel.

use contrast_core::data::pil_blur::gaussian_blur_u8;
use contrast_core::testing::{get, run_reference};
use tch::{Device, Kind, Tensor};

#[test]
fn equals_pillow_gaussian_blur() {
    let sigmas = ["0.1", "0.35", "0.8", "1.0", "1.5", "2.0", "3.7", "12.0"];
    for (c, h, w, seed) in [
        (3usize, 32usize, 32usize, 1i64),
        (3, 23, 37, 2),
        (1, 6, 5, 3),
    ] {
        tch::manual_seed(seed);
        let img = Tensor::randint(
            256,
            [c as i64, h as i64, w as i64],
            (Kind::Float, Device::Cpu),
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/pil_blur.py");
        let Some(out) = run_reference(script, &[("img", &img)], &sigmas).unwrap() else {
            return;
        };
        let bytes: Vec<u8> = Vec::<f32>::try_from(img.flatten(0, -1))
            .unwrap()
            .into_iter()
            .map(|v| v as u8)
            .collect();
        for (i, s) in sigmas.iter().enumerate() {
            let mut ours = bytes.clone();
            gaussian_blur_u8(&mut ours, c, h, w, s.parse().unwrap());
            let pil: Vec<f32> =
                Vec::<f32>::try_from(get(&out, &format!("out_{i}")).flatten(0, -1)).unwrap();
            let worst = ours
                .iter()
                .zip(&pil)
                .map(|(a, b)| (*a as f32 - b).abs())
                .fold(0.0f32, f32::max);
            let changed = ours.iter().zip(&bytes).filter(|(a, b)| a != b).count();
            assert!(changed > 0 || *s == "0.1", "σ {s}: nothing blurred");
            assert_eq!(
                worst, 0.0,
                "{c}×{h}×{w}, σ {s}: max |ours − Pillow| = {worst}"
            );
        }
    }
}
