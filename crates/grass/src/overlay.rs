//! PNG overlays of the gradient-guided boxes: the view (de-normalised), its up-sampled heat map
//! blended in (blue = low, red = high), the chosen box in yellow, and beside it the crop the
//! second forward pass sees.

use crate::model::GrassNet;
use crate::sampling::{feature_gradient, gradient_guided_crops, upsample, BoxRect};
use anyhow::{Context, Result};
use contrast_core::data::augment::{IMAGENET_MEAN, IMAGENET_STD};
use contrast_core::loss::NtXent;
use image::{Rgb, RgbImage};
use serde_json::json;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// `[3, S, S]` normalised view → RGB bytes `[S·S·3]`.
fn to_rgb(v: &Tensor) -> Result<Vec<u8>> {
    let m = Tensor::from_slice(&IMAGENET_MEAN).view([3, 1, 1]);
    let s = Tensor::from_slice(&IMAGENET_STD).view([3, 1, 1]);
    let x = ((v.to_device(Device::Cpu) * s + m) * 255.0)
        .clamp(0.0, 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .permute([1, 2, 0])
        .contiguous()
        .view([-1]);
    Ok(Vec::<u8>::try_from(x)?)
}

/// One overlay image: `[view + heat + box | crop]`, each panel scaled ×`zoom` (nearest).
pub fn overlay_png(
    view: &[u8],
    heat: &[f32],
    crop: &[u8],
    size: usize,
    b: Option<BoxRect>,
    zoom: usize,
) -> RgbImage {
    let (lo, hi) = heat
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let z = zoom.max(1);
    let mut img = RgbImage::new((2 * size * z + z) as u32, (size * z) as u32);
    for y in 0..size * z {
        for x in 0..size * z {
            let (sy, sx) = (y / z, x / z);
            let i = sy * size + sx;
            let t = ((heat[i] - lo) / span).clamp(0.0, 1.0);
            let heat_c = [255.0 * t, 0.0, 255.0 * (1.0 - t)];
            let mut c = [0u8; 3];
            for k in 0..3 {
                c[k] = (0.6 * view[i * 3 + k] as f32 + 0.4 * heat_c[k]).round() as u8;
            }
            if let Some(b) = b {
                let (y0, y1, x0, x1) = (b.r0 * z, b.r1 * z - 1, b.c0 * z, b.c1 * z - 1);
                let on_edge = ((y == y0 || y == y1) && (x0..=x1).contains(&x))
                    || ((x == x0 || x == x1) && (y0..=y1).contains(&y));
                if on_edge {
                    c = [255, 255, 0];
                }
            }
            img.put_pixel(x as u32, y as u32, Rgb(c));
            let j = i * 3;
            img.put_pixel(
                (size * z + z + x) as u32,
                y as u32,
                Rgb([crop[j], crop[j + 1], crop[j + 2]]),
            );
        }
    }
    img
}

/// Run the GS step's first pass on `x` (`[2N, 3, S, S]`, train mode as in training) and save
/// overlays of the first `k` views as `overlay_XX.png` in `dir`; returns the boxes.
pub fn save_overlays(
    net: &GrassNet,
    loss_fn: &NtXent,
    x: &Tensor,
    k: usize,
    ratio: f32,
    dir: &Path,
) -> Result<Vec<serde_json::Value>> {
    let out = net.forward(x, true)?;
    let loss = loss_fn.forward(&out.z)?;
    let g = feature_gradient(&loss, &out.layer4)?;
    let (crops, boxes, cam) = gradient_guided_crops(x, &out.layer4.detach(), &g, ratio)?;
    let size = x.size()[2];
    let up = upsample(&cam, size).to_device(Device::Cpu);
    let n = (k as i64).min(x.size()[0]);
    let zoom = (256 / size.max(1)).max(1) as usize;
    let mut rows = Vec::new();
    for i in 0..n {
        let heat = Vec::<f32>::try_from(up.get(i).contiguous().view([-1]))?;
        let view = to_rgb(&x.get(i))?;
        let crop = to_rgb(&crops.get(i))?;
        let b = boxes[i as usize];
        let png = dir.join(format!("overlay_{i:02}.png"));
        overlay_png(&view, &heat, &crop, size as usize, b, zoom)
            .save(&png)
            .with_context(|| format!("writing {}", png.display()))?;
        rows.push(json!({
            "file": png.file_name().map(|s| s.to_string_lossy().to_string()),
            "box_rows": b.map(|b| [b.r0, b.r1]),
            "box_cols": b.map(|b| [b.c0, b.c1]),
        }));
    }
    Ok(rows)
}
