//! Image-folder data sets, as `torchvision.datasets.ImageFolder`: `<root>/<class>/<file>` with
//! `.jpg`, `.jpeg` or `.png` files; the class index is the position of the class folder in the
//! sorted list of folder names, and samples are ordered by class, then by file name. Images are
//! decoded in parallel (rayon) to RGB and kept in one contiguous buffer. Folders too large for
//! memory are streamed instead: [`super::stream`].

use super::augment::Source;
use super::dataset::{InMemoryDataset, OnCorrupt, Skipped};
use anyhow::{anyhow, bail, ensure, Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// `(file, class index)` per sample, and the class names by index.
pub type FolderIndex = (Vec<(PathBuf, i64)>, Vec<String>);

/// The `(path, class index)` list and class names of an image folder, without decoding.
pub fn scan_image_folder(root: &Path) -> Result<FolderIndex> {
    let mut classes: Vec<String> = Vec::new();
    for e in std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
        let e = e.with_context(|| format!("listing {}", root.display()))?;
        if e.file_type()?.is_dir() {
            classes.push(
                e.file_name()
                    .into_string()
                    .map_err(|n| anyhow!("{}: folder name {n:?} is not UTF-8", root.display()))?,
            );
        }
    }
    classes.sort();
    if classes.is_empty() {
        bail!("{}: no class folders", root.display());
    }
    let mut samples = Vec::new();
    for (ci, c) in classes.iter().enumerate() {
        let dir = root.join(c);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
            })
            .collect();
        files.sort();
        samples.extend(files.into_iter().map(|p| (p, ci as i64)));
    }
    Ok((samples, classes))
}

/// The most pixels an image file may have: 2²⁶ (67 million, e.g. 8192 × 8192; 192 MiB as RGB8).
/// A header claiming more is refused before decoding: a few hundred kilobytes of PNG can
/// declare a 20000 × 20000 image, and converting it to RGB8 would take 1.2 GB. The decoder's own
/// buffer is further bounded by the `image` crate's default limit (512 MiB).
pub const MAX_PIXELS: u64 = 1 << 26;

/// Decode one image file to RGB8: `(pixels [H, W, 3], height, width)`. Errors name the file;
/// images above [`MAX_PIXELS`] are refused from their header.
pub fn decode_rgb(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    decode_rgb_bytes(&bytes, path)
}

/// [`decode_rgb`] of a file's `bytes` (`path` names it in errors).
fn decode_rgb_bytes(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    let what = || format!("decoding {} (truncated or corrupt image?)", path.display());
    let decoder = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .with_context(what)?
        .into_decoder()
        .with_context(what)?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    refuse_pixels(path, w as u64, h as u64)?;
    let img = image::DynamicImage::from_decoder(decoder)
        .with_context(what)?
        .into_rgb8();
    let (w, h) = img.dimensions();
    Ok((img.into_raw(), h as usize, w as usize))
}

/// `(height, width)` of an image file from its header (no pixel is decoded).
pub fn image_size(path: &Path) -> Result<(usize, usize)> {
    let (w, h) = image::image_dimensions(path)
        .with_context(|| format!("reading the image header of {}", path.display()))?;
    Ok((h as usize, w as usize))
}

fn refuse_pixels(path: &Path, w: u64, h: u64) -> Result<()> {
    if w * h > MAX_PIXELS {
        bail!(
            "{}: {w} × {h} pixels, more than {MAX_PIXELS} (corrupt header, or an image too large \
             for the loader)",
            path.display()
        );
    }
    Ok(())
}

/// Decode one image file to RGB8 at the scale `denom` asks for: `denom(height, width)` is
/// called once with the full size and returns `d` (1, 2, 4 or 8). A JPEG with `d > 1` is
/// decoded at `1/d` in the DCT domain (`jpeg-decoder`'s scaled IDCT: `⌈h/d⌉ × ⌈w/d⌉` pixels,
/// each the reconstruction of a `d × d` block from its low frequencies); everything else
/// (`d = 1`, PNG, CMYK JPEG) exactly as [`decode_rgb`]. Returns the pixels, their size and the
/// [`Source`] (full size, `d` used).
pub fn decode_rgb_scaled(
    path: &Path,
    denom: &mut dyn FnMut(usize, usize) -> usize,
) -> Result<(Vec<u8>, usize, usize, Source)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    // the full size from a JPEG header, before decoding
    let mut header = None;
    if bytes.starts_with(&[0xFF, 0xD8]) {
        let mut dec = jpeg_decoder::Decoder::new(std::io::Cursor::new(&bytes[..]));
        if let Some(info) = dec.read_info().ok().and_then(|_| dec.info()) {
            let (w, h) = (info.width as usize, info.height as usize);
            refuse_pixels(path, w as u64, h as u64)?;
            header = Some((h, w));
            let d = denom(h, w);
            let (sw, sh) = (w.div_ceil(d.max(1)), h.div_ceil(d.max(1)));
            let gray = info.pixel_format == jpeg_decoder::PixelFormat::L8;
            if d > 1
                && (gray || info.pixel_format == jpeg_decoder::PixelFormat::RGB24)
                && dec.scale(sw as u16, sh as u16).ok() == Some((sw as u16, sh as u16))
            {
                let px = dec.decode().with_context(|| {
                    format!("decoding {} (truncated or corrupt image?)", path.display())
                })?;
                let px = if gray {
                    px.iter().flat_map(|&v| [v, v, v]).collect()
                } else {
                    px
                };
                ensure!(
                    px.len() == sh * sw * 3,
                    "{}: scaled decode gave {} bytes for {sw} × {sh} pixels",
                    path.display(),
                    px.len()
                );
                let source = Source {
                    height: h,
                    width: w,
                    denom: d,
                };
                return Ok((px, sh, sw, source));
            }
        }
    }
    let (px, h, w) = decode_rgb_bytes(&bytes, path)?;
    match header {
        Some(hw) => ensure!(
            hw == (h, w),
            "{}: header says {} × {} pixels, decoded {w} × {h}",
            path.display(),
            hw.1,
            hw.0
        ),
        None => {
            denom(h, w);
        }
    }
    let source = Source {
        height: h,
        width: w,
        denom: 1,
    };
    Ok((px, h, w, source))
}

/// Load `<root>/<class>/*.{jpg,jpeg,png}` into memory, decoding on the current rayon pool.
/// Errors name the file (and its sample index) that failed.
pub fn load_image_folder(root: impl AsRef<Path>) -> Result<InMemoryDataset> {
    let root = root.as_ref();
    let (samples, classes) = scan_image_folder(root)?;
    decode_all(root, samples, classes, OnCorrupt::Stop)
}

/// Decode the `(path, class index)` list of [`scan_image_folder`] into memory (the second half
/// of [`load_image_folder`]; `root` names the folder in errors). A file that fails to read or
/// decode stops the load naming it ([`OnCorrupt::Stop`]), or is left out and noted in the data
/// set's [`Skipped`] list ([`OnCorrupt::Skip`]; an error if no file is left).
pub fn decode_all(
    root: &Path,
    samples: Vec<(PathBuf, i64)>,
    classes: Vec<String>,
    on_corrupt: OnCorrupt,
) -> Result<InMemoryDataset> {
    if samples.is_empty() {
        bail!(
            "{}: no .jpg/.jpeg/.png files in the class folders",
            root.display()
        );
    }
    let decoded: Vec<Result<(Vec<u8>, usize, usize)>> = samples
        .par_iter()
        .enumerate()
        .map(|(i, (p, _))| decode_rgb(p).with_context(|| format!("sample {i}")))
        .collect();
    let skipped = Skipped::default();
    let mut images = Vec::with_capacity(decoded.len());
    let mut labels = Vec::with_capacity(decoded.len());
    for (d, (p, l)) in decoded.into_iter().zip(&samples) {
        match (d, on_corrupt) {
            (Ok(img), _) => {
                images.push(img);
                labels.push(*l);
            }
            (Err(e), OnCorrupt::Stop) => return Err(e),
            (Err(e), OnCorrupt::Skip) => {
                skipped.record(&p.display().to_string(), &e);
            }
        }
    }
    ensure!(
        !images.is_empty(),
        "{}: every one of its {} files failed to decode",
        root.display(),
        samples.len()
    );
    let done = |d: InMemoryDataset| match on_corrupt {
        OnCorrupt::Skip => d.with_skipped(skipped.clone()),
        OnCorrupt::Stop => d,
    };
    // Same-size images (the common case) are concatenated as [N, H, W, 3].
    let (h0, w0) = (images[0].1, images[0].2);
    if images.iter().all(|(_, h, w)| (*h, *w) == (h0, w0)) {
        let mut pixels = Vec::with_capacity(images.len() * h0 * w0 * 3);
        for (p, _, _) in &images {
            pixels.extend_from_slice(p);
        }
        InMemoryDataset::from_nhwc(pixels, h0, w0, 3, labels, classes).map(done)
    } else {
        InMemoryDataset::from_images(images, 3, labels, classes).map(done)
    }
}
