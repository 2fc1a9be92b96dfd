//! The [`Dataset`] trait and the in-memory store every loader decodes into.

use super::augment::Source;
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tch::Tensor;

/// `data.on_corrupt`: what loading does with an image file that cannot be read or decoded.
///
/// * `stop` (default): the run stops with an error naming the file (an in-memory split at load
///   time; a streamed one when the loader reaches the file).
/// * `skip`: the file is left out and counted. An in-memory split drops it at load time; a
///   streamed split hands the next file in list order that decodes (wrapping around) in its
///   place, with the corrupt sample's augmentation stream, so that a run stays deterministic.
///   The run's `report.json` holds `corrupt_files_skipped` (a count) and `corrupt_files` (the
///   paths), carried over a resume in the checkpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnCorrupt {
    #[default]
    Stop,
    Skip,
}

/// The files a data set skipped as corrupt (`data.on_corrupt = "skip"`): one list shared by
/// clones, filled from the loader's threads.
#[derive(Debug, Clone, Default)]
pub struct Skipped(Arc<Mutex<BTreeSet<String>>>);

impl Skipped {
    /// Most warnings printed for one list; later files are counted silently.
    pub const WARN_AT_MOST: usize = 10;

    /// Note `file` (with the reason it failed); `true` when it is new to the list. The first
    /// [`Self::WARN_AT_MOST`] new files are printed as one warning line each.
    pub fn record(&self, file: &str, why: &anyhow::Error) -> bool {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let new = set.insert(file.to_string());
        if new && set.len() <= Self::WARN_AT_MOST {
            eprintln!(
                "warning: skipping corrupt file {file} (data.on_corrupt = \"skip\"): {why:#}{}",
                if set.len() == Self::WARN_AT_MOST {
                    "; further corrupt files are counted in the report without a warning"
                } else {
                    ""
                }
            );
        }
        new
    }
    /// Add files skipped earlier (a resumed run's, from its checkpoint).
    pub fn extend(&self, files: impl IntoIterator<Item = String>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(files);
    }
    /// The skipped files, sorted.
    pub fn files(&self) -> Vec<String> {
        let set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.iter().cloned().collect()
    }
    /// How many files were skipped.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
    /// `true` when no file was skipped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One decoded image: `uint8` pixels in HWC order (row-major, channels interleaved), the layout
/// of a PIL image or of `torchvision.io.decode_image(...).permute(1, 2, 0)`.
#[derive(Debug, Clone)]
pub struct ImageRef<'a> {
    /// `height · width · channels` bytes, `[H, W, C]`.
    pub pixels: Cow<'a, [u8]>,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl ImageRef<'_> {
    /// The pixel value at `(y, x, c)`.
    #[inline]
    pub fn at(&self, y: usize, x: usize, c: usize) -> u8 {
        self.pixels[(y * self.width + x) * self.channels + c]
    }
}

/// A labelled image data set: random access by index, shareable between threads.
///
/// `get` returns the image (borrowed when the data set is in memory) and its label: the class
/// index, or `-1` for unlabelled data (STL-10 `unlabeled`).
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// `true` when there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sample `index` (`0 ≤ index < len`): image and label.
    fn get(&self, index: usize) -> Result<(ImageRef<'_>, i64)>;
    /// The label of sample `index` alone (streamed data sets answer without decoding).
    fn label(&self, index: usize) -> Result<i64> {
        Ok(self.get(index)?.1)
    }
    /// Sample `index`, decoded at a reduced scale where the data set can (a streamed folder with
    /// `data.scaled_decode` on, for JPEG files): `denom` is called once with the image's full
    /// `(height, width)` (from its header, before decoding) and returns the wanted factor `1/d`
    /// (`d` of 1, 2, 4, 8). The returned [`Source`] holds the full size and the `d` used; by
    /// default the image is decoded in full (`d = 1`) after `denom` has been called.
    fn get_scaled(
        &self,
        index: usize,
        denom: &mut dyn FnMut(usize, usize) -> usize,
    ) -> Result<(ImageRef<'_>, i64, Source)> {
        Ok(decoded_in_full(self.get(index)?, denom))
    }
    /// Class names by class index (empty when unknown).
    fn classes(&self) -> &[String] {
        &[]
    }
    /// The files this data set skipped as corrupt, when it was opened with
    /// [`OnCorrupt::Skip`] (`None` otherwise, and for formats without per-sample files).
    fn skipped(&self) -> Option<Skipped> {
        None
    }
}

/// A sample from [`Dataset::get`] as [`Dataset::get_scaled`] returns it: `denom` is told the
/// size (and its answer ignored), the image is at full size.
pub(crate) fn decoded_in_full<'a>(
    (img, label): (ImageRef<'a>, i64),
    denom: &mut dyn FnMut(usize, usize) -> usize,
) -> (ImageRef<'a>, i64, Source) {
    denom(img.height, img.width);
    let source = Source::full(&img);
    (img, label, source)
}

/// A decoded split held in memory: all pixels in ONE contiguous `uint8` buffer. When every image
/// has the same size the buffer is exactly `[N, H, W, C]` (see [`InMemoryDataset::to_tensor`]);
/// images of different sizes are stored back to back with per-image offsets.
#[derive(Debug, Clone)]
pub struct InMemoryDataset {
    pixels: Vec<u8>,
    /// `offsets[i]..offsets[i + 1]` are image `i`'s bytes (`N + 1` entries).
    offsets: Vec<usize>,
    /// `(height, width)` per image.
    dims: Vec<(usize, usize)>,
    channels: usize,
    labels: Vec<i64>,
    classes: Vec<String>,
    /// Files left out at load time (`data.on_corrupt = "skip"`).
    skipped: Option<Skipped>,
}

impl InMemoryDataset {
    /// This data set, noting the files that were left out of it as corrupt.
    pub fn with_skipped(mut self, skipped: Skipped) -> Self {
        self.skipped = Some(skipped);
        self
    }

    /// `pixels` is `[N, H, W, C]` with `N = labels.len()`.
    pub fn from_nhwc(
        pixels: Vec<u8>,
        height: usize,
        width: usize,
        channels: usize,
        labels: Vec<i64>,
        classes: Vec<String>,
    ) -> Result<Self> {
        let n = labels.len();
        let per = height * width * channels;
        ensure!(per > 0, "empty image shape {height}×{width}×{channels}");
        ensure!(
            pixels.len() == n * per,
            "pixel buffer holds {} bytes, but {n} images of {height}×{width}×{channels} need {}",
            pixels.len(),
            n * per
        );
        Ok(Self {
            pixels,
            offsets: (0..=n).map(|i| i * per).collect(),
            dims: vec![(height, width); n],
            channels,
            labels,
            classes,
            skipped: None,
        })
    }

    /// Images of possibly different sizes, each `(pixels [H, W, C], height, width)`, copied into
    /// one contiguous buffer.
    pub fn from_images(
        images: Vec<(Vec<u8>, usize, usize)>,
        channels: usize,
        labels: Vec<i64>,
        classes: Vec<String>,
    ) -> Result<Self> {
        ensure!(
            images.len() == labels.len(),
            "{} images but {} labels",
            images.len(),
            labels.len()
        );
        let total: usize = images.iter().map(|(p, _, _)| p.len()).sum();
        let mut pixels = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(images.len() + 1);
        let mut dims = Vec::with_capacity(images.len());
        offsets.push(0);
        for (i, (p, h, w)) in images.into_iter().enumerate() {
            if p.len() != h * w * channels {
                bail!("image {i}: {} bytes for {h}×{w}×{channels}", p.len());
            }
            pixels.extend_from_slice(&p);
            offsets.push(pixels.len());
            dims.push((h, w));
        }
        Ok(Self {
            pixels,
            offsets,
            dims,
            channels,
            labels,
            classes,
            skipped: None,
        })
    }

    /// `(H, W, C)` when every image has the same size.
    pub fn uniform_shape(&self) -> Option<(usize, usize, usize)> {
        let first = *self.dims.first()?;
        self.dims
            .iter()
            .all(|d| *d == first)
            .then_some((first.0, first.1, self.channels))
    }

    /// All pixels as a `uint8` tensor `[N, H, W, C]` (a copy). Errors when sizes differ.
    pub fn to_tensor(&self) -> Result<Tensor> {
        let Some((h, w, c)) = self.uniform_shape() else {
            bail!("images differ in size: no single [N, H, W, C] tensor");
        };
        Ok(
            Tensor::from_slice(&self.pixels).view([
                self.len() as i64,
                h as i64,
                w as i64,
                c as i64,
            ]),
        )
    }

    /// The contiguous pixel buffer.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Labels in sample order (`-1` = unlabelled).
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// Number of samples per class index `0..classes` (labels outside are not counted).
    pub fn class_counts(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &l in &self.labels {
            if l >= 0 && (l as usize) < classes {
                counts[l as usize] += 1;
            }
        }
        counts
    }
}

impl Dataset for InMemoryDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn get(&self, index: usize) -> Result<(ImageRef<'_>, i64)> {
        ensure!(
            index < self.len(),
            "sample index {index} out of range (data set has {})",
            self.len()
        );
        let (height, width) = self.dims[index];
        Ok((
            ImageRef {
                pixels: Cow::Borrowed(&self.pixels[self.offsets[index]..self.offsets[index + 1]]),
                height,
                width,
                channels: self.channels,
            },
            self.labels[index],
        ))
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn skipped(&self) -> Option<Skipped> {
        self.skipped.clone()
    }
}
