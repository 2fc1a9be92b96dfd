//! Image loading: decode (JPEG/PNG), convert to RGB, resize to a square (Triangle filter, no
//! crop, as the tutorial's `A.Resize`), scale to [0, 1] and normalise with ImageNet statistics.

use anyhow::{Context, Result};
use std::path::Path;
use tch::{Kind, Tensor};

const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const STD: [f64; 3] = [0.229, 0.224, 0.225];

/// One image as `[3, size, size]` float, normalised.
pub fn load_image(path: &Path, size: u32) -> Result<Tensor> {
    // the core decoder: errors name the file, headers above its pixel bound are refused
    let (px, h, w) = contrast_core::data::folder::decode_rgb(path)?;
    let img = image::RgbImage::from_raw(w as u32, h as u32, px)
        .with_context(|| format!("decoding the image {}", path.display()))?;
    let img = image::imageops::resize(&img, size, size, image::imageops::FilterType::Triangle);
    let s = size as i64;
    let t = Tensor::from_slice(img.as_raw())
        .view([s, s, 3])
        .permute([2, 0, 1])
        .to_kind(Kind::Float)
        / 255.0;
    let mean = Tensor::from_slice(&MEAN)
        .to_kind(Kind::Float)
        .view([3, 1, 1]);
    let std = Tensor::from_slice(&STD)
        .to_kind(Kind::Float)
        .view([3, 1, 1]);
    Ok((t - mean) / std)
}

/// Many images stacked `[N, 3, size, size]` (decoded on the rayon pool).
pub fn load_images(paths: &[&Path], size: u32) -> Result<Tensor> {
    use rayon::prelude::*;
    anyhow::ensure!(!paths.is_empty(), "no images to load");
    let v: Vec<Tensor> = paths
        .par_iter()
        .map(|p| load_image(p, size))
        .collect::<Result<_>>()?;
    Ok(Tensor::stack(&v, 0))
}
