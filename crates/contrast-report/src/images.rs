//! Small image tools for "what the model does" figures: grids, captions, boxes, mask and
//! heat-map overlays, PNG output. Images are `image::RgbImage` (8-bit RGB).

use anyhow::{ensure, Context, Result};
use image::{Rgb, RgbImage};
use plotters::prelude::*;
use std::path::Path;

/// Encode `img` as PNG at `path` (temporary file + rename).
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .with_context(|| format!("encoding {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::write_atomic(path, &bytes)
}

/// An image from planar float data `[3, h, w]` (or `[1, h, w]`, replicated) with values mapped
/// linearly from `[lo, hi]` to 0…255 (clamped).
pub fn from_planar(
    data: &[f32],
    channels: usize,
    h: usize,
    w: usize,
    lo: f32,
    hi: f32,
) -> Result<RgbImage> {
    ensure!(
        matches!(channels, 1 | 3) && data.len() == channels * h * w,
        "from_planar: {} values for [{channels}, {h}, {w}]",
        data.len()
    );
    let scale = 255.0 / (hi - lo).max(f32::EPSILON);
    let px = |c: usize, y: usize, x: usize| {
        let c = if channels == 1 { 0 } else { c };
        ((data[(c * h + y) * w + x] - lo) * scale)
            .clamp(0.0, 255.0)
            .round() as u8
    };
    Ok(RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        Rgb([px(0, y, x), px(1, y, x), px(2, y, x)])
    }))
}

/// Nearest-neighbour up-scaling by an integer factor (small images stay crisp).
pub fn upscale(img: &RgbImage, factor: u32) -> RgbImage {
    let f = factor.max(1);
    RgbImage::from_fn(img.width() * f, img.height() * f, |x, y| {
        *img.get_pixel(x / f, y / f)
    })
}

/// Tiles in rows of `cols`, each cell the size of the largest tile, `pad` pixels apart, on a
/// white background.
pub fn grid(tiles: &[RgbImage], cols: usize, pad: u32) -> Result<RgbImage> {
    ensure!(
        !tiles.is_empty() && cols > 0,
        "grid needs tiles and cols > 0"
    );
    let cw = tiles.iter().map(|t| t.width()).max().unwrap_or(1);
    let ch = tiles.iter().map(|t| t.height()).max().unwrap_or(1);
    let cols = cols.min(tiles.len()) as u32;
    let rows = (tiles.len() as u32).div_ceil(cols);
    let mut out = RgbImage::from_pixel(
        cols * cw + (cols + 1) * pad,
        rows * ch + (rows + 1) * pad,
        Rgb([255, 255, 255]),
    );
    for (i, t) in tiles.iter().enumerate() {
        let (r, c) = (i as u32 / cols, i as u32 % cols);
        image::imageops::replace(
            &mut out,
            t,
            (pad + c * (cw + pad)) as i64,
            (pad + r * (ch + pad)) as i64,
        );
    }
    Ok(out)
}

/// `img` with a white strip above holding `text` (one line, 14 px font).
pub fn caption(img: &RgbImage, text: &str) -> Result<RgbImage> {
    crate::font::ensure_font()?;
    let strip = 22u32;
    // wide enough for the text (DejaVu Sans at 14 px: < 8.5 px per character)
    let text_w = 6 + (text.chars().count() as f64 * 8.5) as u32;
    let (w, h) = (img.width().max(text_w), img.height() + strip);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.draw_text(text, &("sans-serif", 14).into_text_style(&root), (3, 3))
            .map_err(|e| anyhow::anyhow!("drawing a caption: {e:?}"))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("drawing a caption: {e:?}"))?;
    }
    let mut out = RgbImage::from_raw(w, h, buf).context("caption buffer")?;
    image::imageops::replace(&mut out, img, 0, strip as i64);
    Ok(out)
}

/// Draw the outline of the box `[x0, x1) × [y0, y1)` (clipped to the image).
pub fn draw_box(
    img: &mut RgbImage,
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
    color: [u8; 3],
    thickness: u32,
) {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 || x1 <= x0 || y1 <= y0 {
        return;
    }
    let (x1, y1) = (x1.min(w), y1.min(h));
    for t in 0..thickness {
        for x in x0..x1 {
            for y in [y0 + t, y1.saturating_sub(1 + t)] {
                if y < h {
                    img.put_pixel(x, y, Rgb(color));
                }
            }
        }
        for y in y0..y1 {
            for x in [x0 + t, x1.saturating_sub(1 + t)] {
                if x < w {
                    img.put_pixel(x, y, Rgb(color));
                }
            }
        }
    }
}

/// Blend `color` over `img` where `mask` (row-major, `w·h`) is true, with opacity `alpha`.
pub fn overlay_mask(img: &mut RgbImage, mask: &[bool], color: [u8; 3], alpha: f32) -> Result<()> {
    let (w, h) = img.dimensions();
    ensure!(
        mask.len() == (w * h) as usize,
        "mask has {} values for a {w}×{h} image",
        mask.len()
    );
    for (i, m) in mask.iter().enumerate() {
        if *m {
            let p = img.get_pixel_mut(i as u32 % w, i as u32 / w);
            blend(&mut p.0, color, alpha);
        }
    }
    Ok(())
}

/// A heat map (`w·h` values, row-major, scaled by their min/max) in a blue→yellow→red ramp,
/// blended over `img` with opacity `alpha`.
pub fn overlay_heat(img: &mut RgbImage, heat: &[f32], alpha: f32) -> Result<()> {
    let (w, h) = img.dimensions();
    ensure!(
        heat.len() == (w * h) as usize,
        "heat map has {} values for a {w}×{h} image",
        heat.len()
    );
    let (lo, hi) = heat
        .iter()
        .fold((f32::MAX, f32::MIN), |a, v| (a.0.min(*v), a.1.max(*v)));
    let span = (hi - lo).max(f32::EPSILON);
    for (i, v) in heat.iter().enumerate() {
        let c = ramp((v - lo) / span);
        let p = img.get_pixel_mut(i as u32 % w, i as u32 / w);
        blend(&mut p.0, c, alpha);
    }
    Ok(())
}

fn blend(px: &mut [u8; 3], color: [u8; 3], alpha: f32) {
    for (p, c) in px.iter_mut().zip(color) {
        *p = (*p as f32 * (1.0 - alpha) + c as f32 * alpha).round() as u8;
    }
}

/// Blue (0) → yellow (0.5) → red (1).
pub fn ramp(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f32, b: f32, s: f32| (a + (b - a) * s).round() as u8;
    if t < 0.5 {
        let s = t * 2.0;
        [
            lerp(40.0, 250.0, s),
            lerp(60.0, 220.0, s),
            lerp(200.0, 40.0, s),
        ]
    } else {
        let s = (t - 0.5) * 2.0;
        [
            lerp(250.0, 210.0, s),
            lerp(220.0, 30.0, s),
            lerp(40.0, 30.0, s),
        ]
    }
}

/// Fraction of pixels that differ from the most common colour: 0 for a blank image.
pub fn ink_fraction(img: &RgbImage) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for p in img.pixels() {
        *counts.entry(p.0).or_insert(0usize) += 1;
    }
    let top = counts.values().max().copied().unwrap_or(0);
    let n = (img.width() * img.height()) as f64;
    if n == 0.0 {
        0.0
    } else {
        1.0 - top as f64 / n
    }
}
