//! What the model does, as images in the run's `figures/` folder (embedded in the comparison
//! page by `cargo xtask report`):
//!
//! * `mixing.png`: test images, their patch mixes (image `g` takes its `j`-th share from image
//!   `(g + j) mod B`, patches at their own positions) and the two soft-target matrices of that
//!   batch (mixed → original, mixed → mixed; blue 0 → red max).
//! * `pca.png`: the first two principal components of the test set's class tokens, coloured by
//!   class.

use crate::config::PatchMixConfig;
use crate::mix::PatchMixer;
use anyhow::{Context, Result};
use contrast_core::data::augment::{IMAGENET_MEAN, IMAGENET_STD};
use contrast_core::data::dataset::Dataset;
use contrast_core::data::pipeline::{Loader, LoaderConfig};
use contrast_core::eval::projection::pca_figure;
use contrast_report::images::{caption, from_planar, grid, ramp, save_png, upscale};
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Images shown in the mixing figure.
pub const MIX_FIGURE_IMAGES: i64 = 8;

/// `[3, H, W]` normalised tensor → RGB image (ImageNet normalisation undone).
fn to_rgb(x: &Tensor) -> Result<RgbImage> {
    let mean = Tensor::from_slice(&IMAGENET_MEAN).view([3, 1, 1]);
    let std = Tensor::from_slice(&IMAGENET_STD).view([3, 1, 1]);
    let x = (x.to_device(Device::Cpu).to_kind(Kind::Float) * std + mean).contiguous();
    let (h, w) = (x.size()[1] as usize, x.size()[2] as usize);
    let data = Vec::<f32>::try_from(x.reshape([-1]))?;
    from_planar(&data, 3, h, w, 0.0, 1.0)
}

/// A `[R, C]` matrix as a heat image, `cell` pixels per entry, scaled by its max.
fn matrix_image(m: &Tensor, cell: u32) -> Result<RgbImage> {
    let m = m.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let (r, c) = (m.size()[0] as u32, m.size()[1] as u32);
    let v = Vec::<f32>::try_from(m.reshape([-1]))?;
    let max = v.iter().cloned().fold(f32::MIN, f32::max).max(f32::EPSILON);
    Ok(RgbImage::from_fn(c * cell, r * cell, |x, y| {
        let (i, j) = (y / cell, x / cell);
        if x % cell == 0 || y % cell == 0 {
            Rgb([255, 255, 255]) // grid lines
        } else {
            Rgb(ramp(v[(i * c + j) as usize] / max))
        }
    }))
}

/// Stack images vertically, left-aligned, on white.
fn stack(parts: &[RgbImage], pad: u32) -> RgbImage {
    let w = parts.iter().map(|p| p.width()).max().unwrap_or(1);
    let h: u32 = parts.iter().map(|p| p.height() + pad).sum::<u32>() + pad;
    let mut out = RgbImage::from_pixel(w + 2 * pad, h, Rgb([255, 255, 255]));
    let mut y = pad;
    for p in parts {
        image::imageops::replace(&mut out, p, pad as i64, y as i64);
        y += p.height() + pad;
    }
    out
}

/// The mixing figure for the first [`MIX_FIGURE_IMAGES`] images of `ds` (evaluation transform),
/// mixed with the run's `m` (≥ 2 shown even for the no-mix baseline would mislead: callers
/// write it for PatchMix runs only). Deterministic for `cfg.runtime.seed`.
pub fn mixing_figure(cfg: &PatchMixConfig, ds: Arc<dyn Dataset>, path: &Path) -> Result<PathBuf> {
    let loader = Loader::new(
        ds,
        crate::eval::eval_recipe(cfg)?,
        LoaderConfig {
            batch_size: MIX_FIGURE_IMAGES as usize,
            shuffle: false,
            drop_last: false,
            seed: cfg.runtime.seed,
            prefetch: 1,
            threads: 1,
            shard: Default::default(),
        },
    )?;
    let batch = loader.batch(0, 0).context("the first test batch")?;
    let x = &batch.views[0];
    let b = x.size()[0];
    let mixer = PatchMixer::new(cfg.mix.m, 1.0, cfg.model.patch_size, cfg.mix.smoothing)?;
    tch::manual_seed(cfg.runtime.seed as i64);
    let (mixed, _perm) = mixer.mix_images(x, true)?;
    let (t_mix, t_mixmix) = mixer.targets(b, b, 0, Device::Cpu);
    let scale = (128 / x.size()[2].max(1)).max(1) as u32;
    let row = |imgs: &Tensor, label: &dyn Fn(i64) -> String| -> Result<RgbImage> {
        let tiles = (0..b)
            .map(|g| caption(&upscale(&to_rgb(&imgs.get(g))?, scale), &label(g)))
            .collect::<Result<Vec<_>>>()?;
        grid(&tiles, b as usize, 4)
    };
    let m = cfg.mix.m;
    let originals = row(x, &|g| format!("image {g}"))?;
    let mixes = row(&mixed, &|g| {
        let src: Vec<String> = (0..m).map(|j| ((g + j) % b).to_string()).collect();
        format!("mix of {}", src.join("+"))
    })?;
    let targets = grid(
        &[
            caption(&matrix_image(&t_mix, 16)?, "targets: mixed -> original")?,
            caption(&matrix_image(&t_mixmix, 16)?, "targets: mixed -> mixed")?,
        ],
        2,
        8,
    )?;
    let fig = stack(&[originals, mixes, targets], 6);
    save_png(&fig, path)?;
    Ok(path.to_path_buf())
}

/// Write the run's figures into `dir`: the mixing figure (PatchMix runs) and the PCA of the
/// test features `query = (features [N, D], labels [N])`.
pub fn write_figures(
    cfg: &PatchMixConfig,
    test_ds: &Arc<dyn Dataset>,
    query: &(Tensor, Tensor),
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if cfg.mix.enabled && cfg.mix.m > 1 {
        out.push(mixing_figure(
            cfg,
            Arc::clone(test_ds),
            &dir.join("mixing.png"),
        )?);
    }
    out.extend(pca_figure(
        &query.0,
        &query.1,
        test_ds.classes(),
        "test class tokens, PCA",
        &dir.join("pca"),
        2000,
    )?);
    Ok(out)
}
