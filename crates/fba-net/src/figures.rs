//! "What the model does" for FBA-Net: axial and coronal slices through one test case — the
//! image, ground truth (green) and prediction (red) overlaid, and the contrastive module's
//! foreground map A and background map 1 − A (decoder 1, eval mode) — as one PNG in the run's
//! `figures/`, which the comparison page embeds.
//!
//! The module is convolutional, so its map is computed on the whole volume (it sees patches in
//! training); the map is at half resolution and is shown up-sampled ×2, on a fixed 0–1 scale.

use crate::eval::predict_case;
use crate::model::FbaNet;
use anyhow::Result;
use contrast_core::volume::sliding::SlidingWindow;
use contrast_core::volume::Case;
use contrast_report::images::{caption, grid, overlay_mask, ramp, save_png, upscale};
use image::{Rgb, RgbImage};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// A 2-D plane `[rows, cols]` of floats.
struct Plane {
    rows: usize,
    cols: usize,
    v: Vec<f32>,
}

/// Axial (fixed z: rows y, cols x) or coronal (fixed y: rows z top-down, cols x) plane of `[X, Y, Z]`.
fn plane(t: &Tensor, axial: bool, at: i64) -> Result<Plane> {
    let p = if axial {
        t.select(2, at).transpose(0, 1) // [Y, X]
    } else {
        t.select(1, at).transpose(0, 1).flip([0]) // [Z, X], superior up
    };
    let p = p.to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
    let s = p.size();
    Ok(Plane {
        rows: s[0] as usize,
        cols: s[1] as usize,
        v: Vec::<f32>::try_from(p.view(-1))?,
    })
}

fn gray(p: &Plane) -> RgbImage {
    let (lo, hi) =
        p.v.iter()
            .fold((f32::MAX, f32::MIN), |a, v| (a.0.min(*v), a.1.max(*v)));
    let s = 255.0 / (hi - lo).max(f32::EPSILON);
    RgbImage::from_fn(p.cols as u32, p.rows as u32, |x, y| {
        let g = ((p.v[y as usize * p.cols + x as usize] - lo) * s).round() as u8;
        Rgb([g, g, g])
    })
}

/// A map with values in [0, 1] on the fixed blue → yellow → red ramp (not re-scaled, so A and
/// 1 − A read on the same scale).
fn heat(p: &Plane) -> RgbImage {
    RgbImage::from_fn(p.cols as u32, p.rows as u32, |x, y| {
        Rgb(ramp(p.v[y as usize * p.cols + x as usize].clamp(0.0, 1.0)))
    })
}

/// Writes the figure for `case` to `path`: full axial and coronal slices through the label's
/// centroid. The network runs once on the whole volume (zero-padded to a multiple of 16) for
/// the maps; the segmentation is the sliding-window prediction the metrics use.
pub fn slice_figure(
    net: &FbaNet,
    case: &Case,
    sw: &SlidingWindow,
    device: Device,
    path: &Path,
) -> Result<[i64; 3]> {
    let shape = case.image.shape.map(|v| v as i64);
    let pred = predict_case(net, case, sw, device)?;
    let image = case.image.to_tensor();
    let label = case.label.to_tensor().eq(1);
    let pred_t = Tensor::from_slice(&pred.data.iter().map(|&b| b as u8).collect::<Vec<_>>())
        .reshape(shape)
        .ne(0);
    // the label's centroid (the volume centre when the label is empty)
    let idx = label.nonzero(); // [K, 3]
    let centre: Vec<i64> = if idx.size()[0] > 0 {
        Vec::<f64>::try_from(idx.to_kind(Kind::Double).mean_dim(0, false, Kind::Double))?
            .into_iter()
            .map(|v| v.round() as i64)
            .collect()
    } else {
        shape.iter().map(|s| s / 2).collect()
    };
    // A over the whole volume: pad to a multiple of 16, run, up-sample ×2, cut back
    let padded: Vec<i64> = shape.iter().map(|s| (s + 15) / 16 * 16).collect();
    let x = image
        .constant_pad_nd([
            0,
            padded[2] - shape[2],
            0,
            padded[1] - shape[1],
            0,
            padded[0] - shape[0],
        ])
        .view([1, 1, padded[0], padded[1], padded[2]])
        .to_device(device);
    let a_full = net.foreground_map(&x)?.map(|a| {
        a.repeat_interleave_self_int(2, 0, None)
            .repeat_interleave_self_int(2, 1, None)
            .repeat_interleave_self_int(2, 2, None)
            .narrow(0, 0, shape[0])
            .narrow(1, 0, shape[1])
            .narrow(2, 0, shape[2])
            .to_device(Device::Cpu)
    });
    let mut tiles = Vec::new();
    let mut cols = 0;
    for (axial, at, name) in [(true, centre[2], "axial"), (false, centre[1], "coronal")] {
        let im = plane(&image, axial, at)?;
        let g = plane(&label, axial, at)?;
        let p = plane(&pred_t, axial, at)?;
        let scale = 2;
        let base = gray(&im);
        let mut over = base.clone();
        overlay_mask(
            &mut over,
            &g.v.iter().map(|v| *v > 0.5).collect::<Vec<_>>(),
            [0, 200, 0],
            0.45,
        )?;
        overlay_mask(
            &mut over,
            &p.v.iter().map(|v| *v > 0.5).collect::<Vec<_>>(),
            [230, 0, 0],
            0.35,
        )?;
        let mut row = vec![
            caption(&upscale(&base, scale), &format!("{} {name}", case.id))?,
            caption(&upscale(&over, scale), "GT (green) / prediction (red)")?,
        ];
        if let Some(a) = &a_full {
            let ap = plane(a, axial, at)?;
            let (lo, hi) =
                ap.v.iter()
                    .fold((f32::MAX, f32::MIN), |m, v| (m.0.min(*v), m.1.max(*v)));
            let inv = Plane {
                rows: ap.rows,
                cols: ap.cols,
                v: ap.v.iter().map(|v| 1.0 - v).collect(),
            };
            row.push(caption(
                &upscale(&heat(&ap), scale),
                &format!("foreground map A ({lo:.2}–{hi:.2})"),
            )?);
            row.push(caption(
                &upscale(&heat(&inv), scale),
                &format!("background map 1 − A ({:.2}–{:.2})", 1.0 - hi, 1.0 - lo),
            )?);
        }
        cols = row.len();
        tiles.extend(row);
    }
    save_png(&grid(&tiles, cols, 6)?, path)?;
    Ok([centre[0], centre[1], centre[2]])
}
