//! 2D augmentations with torchvision semantics, on one sample at a time.
//!
//! A view starts from a `uint8` HWC image ([`ImageRef`]) and ends as a planar `float32` buffer
//! `[3, S, S]` (CHW), the layout of one item of a batch tensor `[B, 3, S, S]`.
//!
//! What exactly is matched (checked against torchvision 0.26 in `tests/data_augment.rs`):
//! * **Crop + resize**: `RandomResizedCrop.get_params` (scale / log-uniform ratio, 10 tries, then
//!   the centre-crop fallback; Python's round-half-to-even) and `F.resized_crop` on a **`uint8`
//!   tensor** with `antialias=True` (bilinear or bicubic, PyTorch's separable antialiased kernels,
//!   bicubic a = −0.5): computed in `float32`, clamped to [0, 255] and rounded half to even back
//!   to `uint8`, exactly as torchvision's tensor path does for `uint8` input. The value is then
//!   divided by 255 (`ToTensor` / `ToDtype(float32, scale=True)`).
//! * Everything after the crop works on `float32` in [0, 1] and matches
//!   `torchvision.transforms.functional` on **float tensors** (so no rounding to `uint8` between
//!   steps, unlike a PIL pipeline): `adjust_brightness`, `adjust_contrast` (blend with the mean
//!   of the ITU-R 601-2 grayscale image), `adjust_saturation`, `adjust_hue` (torchvision's
//!   RGB→HSV→RGB), `ColorJitter` (factors uniform in `[max(0, 1 − s), 1 + s]`, hue in
//!   `[−h, h]`, the four in a random order), `rgb_to_grayscale` (0.2989 R + 0.587 G + 0.114 B,
//!   3 output channels), `gaussian_blur` (torchvision's kernel, reflect padding), `solarize`
//!   (`x ≥ threshold → 1 − x`), `hflip`, `normalize`.
//! * Random draws follow the torchvision transforms' logic (`RandomApply`: apply when
//!   `u < p`), but from our own ChaCha stream, so individual draws differ from torch's RNG.

use super::dataset::ImageRef;
use super::simd::avx2_dispatch;
use anyhow::{bail, ensure, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// ImageNet channel means (RGB), used by the papers even on CIFAR.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Resampling filter of a resize (torchvision `InterpolationMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

/// `torchvision.transforms.ColorJitter(brightness, contrast, saturation, hue)` strengths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorJitter {
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub hue: f64,
}

impl ColorJitter {
    pub fn new(brightness: f64, contrast: f64, saturation: f64, hue: f64) -> Self {
        Self {
            brightness,
            contrast,
            saturation,
            hue,
        }
    }
}

/// One step of a view. The first op of a view must be geometric ([`Op::RandomResizedCrop`] or
/// [`Op::Resize`]): it turns the `uint8` image into the float `[3, S, S]` buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `RandomResizedCrop(size, scale, ratio, interpolation, antialias=True)`.
    RandomResizedCrop {
        size: usize,
        scale: (f64, f64),
        ratio: (f64, f64),
        interpolation: Interpolation,
    },
    /// `Resize((size, size), interpolation, antialias=True)` of the whole image (no crop).
    Resize {
        size: usize,
        interpolation: Interpolation,
    },
    /// `Resize(resize, interpolation, antialias=True)` (shorter side to `resize`, aspect ratio
    /// kept, longer side `int(resize·long/short)`) then `CenterCrop(size)` with torchvision's
    /// offsets `int(round((side − size) / 2))`; the standard evaluation transform
    /// (`Resize(⌊size·256/224⌋) + CenterCrop(size)`). Requires `resize ≥ size`.
    ResizeCenterCrop {
        resize: usize,
        size: usize,
        interpolation: Interpolation,
    },
    /// `RandomHorizontalFlip(p)`.
    HorizontalFlip { p: f64 },
    /// `RandomApply([ColorJitter(..)], p)`.
    ColorJitter { p: f64, jitter: ColorJitter },
    /// `RandomGrayscale(p)` (3 output channels).
    Grayscale { p: f64 },
    /// `RandomApply([GaussianBlur(kernel_size, sigma)], p)`; σ uniform in `sigma`.
    GaussianBlur {
        p: f64,
        kernel_size: usize,
        sigma: (f64, f64),
    },
    /// `RandomApply([PIL GaussianBlur(radius=σ)], p)`, σ uniform in `sigma`: Pillow's
    /// `ImageFilter.GaussianBlur` bit for bit on the image quantised to 8 bits
    /// ([`super::pil_blur`]); what the official MoCo-v2 / BYOL-style / PatchMix pipelines call.
    PilGaussianBlur { p: f64, sigma: (f64, f64) },
    /// `RandomSolarize(threshold, p)` on [0, 1] values.
    Solarize { p: f64, threshold: f32 },
    /// `Normalize(mean, std)`.
    Normalize { mean: [f32; 3], std: [f32; 3] },
}

/// The ops of one view, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewSpec {
    pub ops: Vec<Op>,
}

impl ViewSpec {
    /// Validates the ops (ranges as torchvision checks them).
    pub fn new(ops: Vec<Op>) -> Result<Self> {
        let Some(first) = ops.first() else {
            bail!("a view needs at least a crop or resize op")
        };
        ensure!(
            is_geometric(first),
            "the first op of a view must be RandomResizedCrop, Resize or ResizeCenterCrop, got {first:?}"
        );
        for (k, op) in ops.iter().enumerate() {
            if k > 0 && is_geometric(op) {
                bail!("op {k}: only the first op of a view may crop or resize");
            }
            let p_ok = |p: f64| (0.0..=1.0).contains(&p);
            match op {
                Op::RandomResizedCrop {
                    size, scale, ratio, ..
                } => {
                    ensure!(*size > 0, "RandomResizedCrop: size must be positive");
                    ensure!(
                        0.0 < scale.0 && scale.0 <= scale.1 && scale.1 <= 1.0,
                        "RandomResizedCrop: scale {scale:?} must satisfy 0 < min ≤ max ≤ 1"
                    );
                    ensure!(
                        0.0 < ratio.0 && ratio.0 <= ratio.1,
                        "RandomResizedCrop: ratio {ratio:?} must satisfy 0 < min ≤ max"
                    );
                }
                Op::Resize { size, .. } => ensure!(*size > 0, "Resize: size must be positive"),
                Op::ResizeCenterCrop { resize, size, .. } => ensure!(
                    *size > 0 && resize >= size,
                    "ResizeCenterCrop: need 0 < size ≤ resize, got size {size}, resize {resize}"
                ),
                Op::HorizontalFlip { p } | Op::Grayscale { p } | Op::Solarize { p, .. } => {
                    ensure!(p_ok(*p), "op {k}: probability {p} not in [0, 1]")
                }
                Op::ColorJitter { p, jitter } => {
                    ensure!(p_ok(*p), "op {k}: probability {p} not in [0, 1]");
                    ensure!(
                        jitter.brightness >= 0.0
                            && jitter.contrast >= 0.0
                            && jitter.saturation >= 0.0,
                        "ColorJitter: strengths must be non-negative"
                    );
                    ensure!(
                        (0.0..=0.5).contains(&jitter.hue),
                        "ColorJitter: hue {} not in [0, 0.5]",
                        jitter.hue
                    );
                }
                Op::GaussianBlur {
                    p,
                    kernel_size,
                    sigma,
                } => {
                    ensure!(p_ok(*p), "op {k}: probability {p} not in [0, 1]");
                    ensure!(
                        *kernel_size > 0 && kernel_size % 2 == 1,
                        "GaussianBlur: kernel size {kernel_size} must be odd and positive"
                    );
                    ensure!(
                        0.0 < sigma.0 && sigma.0 <= sigma.1,
                        "GaussianBlur: sigma {sigma:?} must satisfy 0 < min ≤ max"
                    );
                }
                Op::PilGaussianBlur { p, sigma } => {
                    ensure!(p_ok(*p), "op {k}: probability {p} not in [0, 1]");
                    ensure!(
                        0.0 < sigma.0 && sigma.0 <= sigma.1,
                        "PilGaussianBlur: sigma {sigma:?} must satisfy 0 < min ≤ max"
                    );
                }
                Op::Normalize { std, .. } => {
                    ensure!(
                        std.iter().all(|s| *s > 0.0),
                        "Normalize: std must be positive"
                    )
                }
            }
        }
        Ok(Self { ops })
    }

    /// Output side `S` of this view.
    pub fn size(&self) -> usize {
        match self.ops[0] {
            Op::RandomResizedCrop { size, .. }
            | Op::Resize { size, .. }
            | Op::ResizeCenterCrop { size, .. } => size,
            _ => unreachable!("validated in ViewSpec::new"),
        }
    }

    /// Apply the view to `img`, writing `[3, S, S]` into `out` (`3·S·S` floats):
    /// [`ViewSpec::draw`] then [`ViewSpec::render`].
    pub fn apply(&self, img: &ImageRef<'_>, rng: &mut ChaCha8Rng, out: &mut [f32]) -> Result<()> {
        let draws = self.draw(img.height, img.width, rng);
        self.render(img, Source::full(img), &draws, out)
    }

    /// Every random draw of the view, one per op, for an image of `height × width`: the draws
    /// depend on the image size only, never on its pixels, so they can be taken before the
    /// image is decoded (and decide the scale it is decoded at: [`Recipe::decode_denom`]).
    pub fn draw(&self, height: usize, width: usize, rng: &mut ChaCha8Rng) -> Vec<Draw> {
        let flip = |p: f64, rng: &mut ChaCha8Rng| Draw::Apply(rng.gen::<f64>() < p);
        self.ops
            .iter()
            .map(|op| match *op {
                Op::RandomResizedCrop { scale, ratio, .. } => {
                    let (top, left, h, w) = rrc_params(height, width, scale, ratio, rng);
                    Draw::Crop { top, left, h, w }
                }
                Op::Resize { .. } | Op::ResizeCenterCrop { .. } | Op::Normalize { .. } => {
                    Draw::Fixed
                }
                Op::HorizontalFlip { p } | Op::Grayscale { p } | Op::Solarize { p, .. } => {
                    flip(p, rng)
                }
                Op::ColorJitter { p, jitter } => {
                    Draw::Jitter((rng.gen::<f64>() < p).then(|| draw_jitter(&jitter, rng)))
                }
                Op::GaussianBlur { p, sigma, .. } | Op::PilGaussianBlur { p, sigma } => Draw::Blur(
                    (rng.gen::<f64>() < p).then(|| uniform(rng, sigma.0, sigma.1) as f32),
                ),
            })
            .collect()
    }

    /// Render the view from its `draws` ([`ViewSpec::draw`], taken for the size of `source`)
    /// into `out`. `img` is the image `source` describes, decoded at `1/source.denom` of its
    /// size: crop boxes are mapped into it (fractional when `denom > 1`).
    pub fn render(
        &self,
        img: &ImageRef<'_>,
        source: Source,
        draws: &[Draw],
        out: &mut [f32],
    ) -> Result<()> {
        let s = self.size();
        ensure!(
            out.len() == 3 * s * s,
            "output buffer has {} floats, view needs 3×{s}×{s}",
            out.len()
        );
        ensure!(
            img.height > 0 && img.width > 0 && matches!(img.channels, 1 | 3 | 4),
            "unsupported image {}×{}×{}",
            img.height,
            img.width,
            img.channels
        );
        ensure!(
            draws.len() == self.ops.len(),
            "{} draws for {} ops",
            draws.len(),
            self.ops.len()
        );
        let d = source.denom as f64;
        let whole = Window {
            top: 0.0,
            left: 0.0,
            height: source.height as f64 / d,
            width: source.width as f64 / d,
        };
        for (op, draw) in self.ops.iter().zip(draws) {
            match (op, draw) {
                (Op::RandomResizedCrop { interpolation, .. }, &Draw::Crop { top, left, h, w }) => {
                    let win = Window {
                        top: top as f64 / d,
                        left: left as f64 / d,
                        height: h as f64 / d,
                        width: w as f64 / d,
                    };
                    resample_window(img, win, s, s, *interpolation, out);
                    to_unit_range(out);
                }
                (Op::Resize { interpolation, .. }, _) => {
                    resample_window(img, whole, s, s, *interpolation, out);
                    to_unit_range(out);
                }
                (
                    Op::ResizeCenterCrop {
                        resize,
                        interpolation,
                        ..
                    },
                    _,
                ) => {
                    let (rh, rw) = resize_shorter_side(source.height, source.width, *resize);
                    resize_window_center_crop(img, whole, (rh, rw), s, *interpolation, out)
                }
                (Op::HorizontalFlip { .. }, Draw::Apply(true)) => hflip(out, s, s),
                (Op::ColorJitter { .. }, Draw::Jitter(Some(j))) => apply_jitter(out, s, s, j),
                (Op::Grayscale { .. }, Draw::Apply(true)) => grayscale(out, s, s),
                (Op::GaussianBlur { kernel_size, .. }, &Draw::Blur(Some(sg))) => {
                    gaussian_blur(out, s, s, *kernel_size, sg)
                }
                (Op::PilGaussianBlur { .. }, &Draw::Blur(Some(sg))) => {
                    super::pil_blur::gaussian_blur_unit(out, s, s, sg)
                }
                (Op::Solarize { threshold, .. }, Draw::Apply(true)) => solarize(out, *threshold),
                (Op::Normalize { mean, std }, _) => normalize(out, s, s, *mean, *std),
                (Op::RandomResizedCrop { .. }, other) => {
                    bail!("RandomResizedCrop needs a crop draw, got {other:?}")
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The largest `d` of 1, 2, 4, 8 at which this view, drawn as `draws` on a `height ×
    /// width` image, still downsamples (or keeps) every pixel it reads: its crop (or the whole
    /// image) is at least the output size in both directions after dividing by `d`.
    pub fn max_denom(&self, height: usize, width: usize, draws: &[Draw]) -> usize {
        let s = self.size();
        // the pixels read, and the size they are resampled to
        let (h, w, need_h, need_w) = match (&self.ops[0], draws.first()) {
            (Op::RandomResizedCrop { .. }, Some(&Draw::Crop { h, w, .. })) => (h, w, s, s),
            (Op::ResizeCenterCrop { resize, .. }, _) => {
                // the resized image, not the crop, is what is sampled
                let (rh, rw) = resize_shorter_side(height, width, *resize);
                (height, width, rh, rw)
            }
            _ => (height, width, s, s),
        };
        [8, 4, 2]
            .into_iter()
            .find(|&d| h / d >= need_h && w / d >= need_w)
            .unwrap_or(1)
    }
}

/// One op's random draws ([`ViewSpec::draw`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Draw {
    /// The crop box of a `RandomResizedCrop`, in pixels of the full-size image.
    Crop {
        top: usize,
        left: usize,
        h: usize,
        w: usize,
    },
    /// Whether a random op (flip, grayscale, solarize) applies.
    Apply(bool),
    /// A colour jitter, when it applies.
    Jitter(Option<JitterDraw>),
    /// A blur's σ, when it applies.
    Blur(Option<f32>),
    /// An op without randomness.
    Fixed,
}

/// The image a view is rendered from: its full size, and the factor `1/denom` it was decoded
/// at (`denom` 1, 2, 4 or 8; a scaled JPEG decode gives `⌈height/denom⌉ × ⌈width/denom⌉`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub height: usize,
    pub width: usize,
    pub denom: usize,
}

impl Source {
    /// `img` at its full size.
    pub fn full(img: &ImageRef<'_>) -> Self {
        Self {
            height: img.height,
            width: img.width,
            denom: 1,
        }
    }
}

/// A region of an image in (possibly fractional) pixels: rows `top .. top + height`, columns
/// `left .. left + width`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub top: f64,
    pub left: f64,
    pub height: f64,
    pub width: f64,
}

fn is_geometric(op: &Op) -> bool {
    matches!(
        op,
        Op::RandomResizedCrop { .. } | Op::Resize { .. } | Op::ResizeCenterCrop { .. }
    )
}

/// torchvision's `Resize(int)` output size `(h, w)`: the shorter side becomes `resize`, the
/// longer `int(resize · long / short)` (truncation, as `_compute_resized_output_size`).
pub fn resize_shorter_side(height: usize, width: usize, resize: usize) -> (usize, usize) {
    let (short, long) = if height <= width {
        (height, width)
    } else {
        (width, height)
    };
    let new_long = (resize as f64 * long as f64 / short as f64) as usize;
    if height <= width {
        (resize, new_long)
    } else {
        (new_long, resize)
    }
}

/// `CenterCrop(size)(Resize(resize)(img))` of the window `win` of the `uint8` image, resized
/// to `(rh, rw)`, as values in [0, 1] (`[3, size, size]` into `out`): the resize is rounded to
/// `uint8` before the crop, exactly as torchvision's `uint8` tensor path.
fn resize_window_center_crop(
    img: &ImageRef<'_>,
    win: Window,
    (rh, rw): (usize, usize),
    size: usize,
    interp: Interpolation,
    out: &mut [f32],
) {
    let mut full = vec![0f32; 3 * rh * rw];
    resample_window(img, win, rh, rw, interp, &mut full);
    to_unit_range(&mut full);
    // torchvision: crop_top = int(round((h − size) / 2.0)) (Python rounds half to even)
    let top = ((rh - size) as f64 / 2.0).round_ties_even() as usize;
    let left = ((rw - size) as f64 / 2.0).round_ties_even() as usize;
    for c in 0..3 {
        for y in 0..size {
            let src = &full[(c * rh + top + y) * rw + left..][..size];
            out[(c * size + y) * size..][..size].copy_from_slice(src);
        }
    }
}

/// The views of one sample (e.g. two global views, plus local crops).
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub views: Vec<ViewSpec>,
}

/// SimCLR's blur kernel convention (10% of the image side, odd): 23 at 224 px, 3 at 32 px.
pub fn default_blur_kernel(size: usize) -> usize {
    let k = (size as f64 * 0.1).round() as usize;
    (k.max(3)) | 1
}

impl Recipe {
    /// Two asymmetric global views as in BYOL and PatchMix (`module/augmentation.py`, notes §1d):
    /// `RandomResizedCrop(size, scale=(min_scale, 1), bicubic)` →
    /// `RandomApply(ColorJitter(0.4, 0.4, 0.2, 0.1), 0.8)` → `RandomGrayscale(0.2)` →
    /// `GaussianBlur(σ ∈ [0.1, 2])` with p = 1.0 (view 1) / 0.1 (view 2) → `Solarize` with
    /// p = 0 / 0.2 (threshold 128/255, PIL's `ImageOps.solarize` default) → `HorizontalFlip` →
    /// `Normalize(ImageNet)`. The blur is PIL's radius-σ `GaussianBlur`, as the official
    /// `module/augmentation.py` applies it ([`Op::PilGaussianBlur`]).
    pub fn byol(size: usize, min_scale: f64) -> Result<Self> {
        let view = |blur_p: f64, solarize_p: f64| {
            ViewSpec::new(vec![
                Op::RandomResizedCrop {
                    size,
                    scale: (min_scale, 1.0),
                    ratio: (3.0 / 4.0, 4.0 / 3.0),
                    interpolation: Interpolation::Bicubic,
                },
                Op::ColorJitter {
                    p: 0.8,
                    jitter: ColorJitter::new(0.4, 0.4, 0.2, 0.1),
                },
                Op::Grayscale { p: 0.2 },
                Op::PilGaussianBlur {
                    p: blur_p,
                    sigma: (0.1, 2.0),
                },
                Op::Solarize {
                    p: solarize_p,
                    threshold: 128.0 / 255.0,
                },
                Op::HorizontalFlip { p: 0.5 },
                Op::Normalize {
                    mean: IMAGENET_MEAN,
                    std: IMAGENET_STD,
                },
            ])
        };
        Ok(Self {
            views: vec![view(1.0, 0.0)?, view(0.1, 0.2)?],
        })
    }

    /// Two symmetric SimCLR views (solo-learn's CIFAR recipe, notes §4.1):
    /// `RandomResizedCrop(size, (0.08, 1), bicubic)` → `RandomApply(ColorJitter(0.8, 0.8, 0.8,
    /// 0.2), 0.8)` → `RandomGrayscale(0.2)` → `GaussianBlur` with p = `blur_p` (0.5 in the
    /// ImageNet recipe; SimCLR's own CIFAR runs use 0) → `HorizontalFlip` → `Normalize`. The blur
    /// is SimCLR's own (`google-research/simclr`: a kernel of 10 % of the side, σ ∈ [0.1, 2]).
    pub fn simclr(size: usize, blur_p: f64) -> Result<Self> {
        Self::simclr_strength(size, 1.0, blur_p, 2)
    }

    /// SimCLR's own views as `google-research/simclr` builds them (`data_util.py`:
    /// `random_crop_with_resize` area (0.08, 1), aspect (3/4, 4/3); `random_color_jitter` with p
    /// 0.8 and brightness / contrast / saturation `0.8·strength`, hue `0.2·strength`; grayscale
    /// p 0.2; flip; blur with p = `blur_p`, kernel 10 % of the side, σ ∈ [0.1, 2]), `views` of
    /// them. Its README runs CIFAR-10 with `--color_jitter_strength=0.5 --use_blur=False` and
    /// ImageNet with strength 1.0 and blur p 0.5. (The TF code draws the four jitter factors in
    /// a random order, as torchvision's ColorJitter does.)
    pub fn simclr_strength(size: usize, strength: f64, blur_p: f64, views: usize) -> Result<Self> {
        if !(strength > 0.0 && strength.is_finite()) {
            bail!("SimCLR colour-jitter strength must be > 0, got {strength}");
        }
        let s = strength;
        let v = Self::simclr_view(
            size,
            ColorJitter::new(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s),
            Op::GaussianBlur {
                p: blur_p,
                kernel_size: default_blur_kernel(size),
                sigma: (0.1, 2.0),
            },
        )?;
        Ok(Self {
            views: vec![v; views],
        })
    }

    /// [`Recipe::simclr`] with PIL's radius-σ blur ([`Op::PilGaussianBlur`]), as VISSL's
    /// `ImgPilGaussianBlur` (GraSS's official pipeline) applies it.
    pub fn simclr_pil_blur(size: usize, blur_p: f64) -> Result<Self> {
        Self::simclr_views(
            size,
            Op::PilGaussianBlur {
                p: blur_p,
                sigma: (0.1, 2.0),
            },
        )
    }

    fn simclr_views(size: usize, blur: Op) -> Result<Self> {
        let v = Self::simclr_view(size, ColorJitter::new(0.8, 0.8, 0.8, 0.2), blur)?;
        Ok(Self {
            views: vec![v.clone(), v],
        })
    }

    fn simclr_view(size: usize, jitter: ColorJitter, blur: Op) -> Result<ViewSpec> {
        ViewSpec::new(vec![
            Op::RandomResizedCrop {
                size,
                scale: (0.08, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
                interpolation: Interpolation::Bicubic,
            },
            Op::ColorJitter { p: 0.8, jitter },
            Op::Grayscale { p: 0.2 },
            blur,
            Op::HorizontalFlip { p: 0.5 },
            Op::Normalize {
                mean: IMAGENET_MEAN,
                std: IMAGENET_STD,
            },
        ])
    }

    /// `views` MoCo-v2 views as MNCLGLF uses them (notes §3d): `RandomResizedCrop(size, (0.2, 1),
    /// bicubic)` → `RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), 0.8)` → `RandomGrayscale(0.2)`
    /// → `RandomApply(GaussianBlur(σ ∈ [0.1, 2]), 0.5)` → `HorizontalFlip` → `Normalize`. The
    /// blur is PIL's radius-σ filter ([`Op::PilGaussianBlur`]), as `moco/loader.py` and
    /// MNCLGLF's `data/transforms.py` apply it.
    pub fn mocov2(size: usize, views: usize) -> Result<Self> {
        let v = ViewSpec::new(vec![
            Op::RandomResizedCrop {
                size,
                scale: (0.2, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
                interpolation: Interpolation::Bicubic,
            },
            Op::ColorJitter {
                p: 0.8,
                jitter: ColorJitter::new(0.4, 0.4, 0.4, 0.1),
            },
            Op::Grayscale { p: 0.2 },
            Op::PilGaussianBlur {
                p: 0.5,
                sigma: (0.1, 2.0),
            },
            Op::HorizontalFlip { p: 0.5 },
            Op::Normalize {
                mean: IMAGENET_MEAN,
                std: IMAGENET_STD,
            },
        ])?;
        Ok(Self {
            views: vec![v; views],
        })
    }

    /// One deterministic evaluation view (kNN / linear probe): `Resize((size, size),
    /// bicubic)` → `Normalize(ImageNet)`. On CIFAR at `size = 32` the resize is the identity,
    /// i.e. `ToTensor` + `Normalize`. (torchvision's `Resize(int)` keeps the aspect ratio and is
    /// usually followed by `CenterCrop`; for square images the two agree.)
    pub fn eval(size: usize) -> Result<Self> {
        Ok(Self {
            views: vec![ViewSpec::new(vec![
                Op::Resize {
                    size,
                    interpolation: Interpolation::Bicubic,
                },
                Op::Normalize {
                    mean: IMAGENET_MEAN,
                    std: IMAGENET_STD,
                },
            ])?],
        })
    }

    /// The standard evaluation view: `Resize(resize, bicubic)` (shorter side) →
    /// `CenterCrop(size)` → `Normalize(ImageNet)`; e.g. PatchMix's CIFAR test transform
    /// `Resize(36) + CenterCrop(32)` (`resize = ⌊size·256/224⌋`). `resize == size` on square
    /// images equals [`Recipe::eval`].
    pub fn eval_center_crop(size: usize, resize: usize) -> Result<Self> {
        Ok(Self {
            views: vec![ViewSpec::new(vec![
                Op::ResizeCenterCrop {
                    resize,
                    size,
                    interpolation: Interpolation::Bicubic,
                },
                Op::Normalize {
                    mean: IMAGENET_MEAN,
                    std: IMAGENET_STD,
                },
            ])?],
        })
    }

    /// The linear-probe training view of PatchMix / MoCo-v3 `main_linear.py`:
    /// `RandomResizedCrop(size, scale, bicubic)` → `RandomHorizontalFlip()` → `Normalize`.
    pub fn linear_train(size: usize, scale: (f64, f64)) -> Result<Self> {
        Ok(Self {
            views: vec![ViewSpec::new(vec![
                Op::RandomResizedCrop {
                    size,
                    scale,
                    ratio: (3.0 / 4.0, 4.0 / 3.0),
                    interpolation: Interpolation::Bicubic,
                },
                Op::HorizontalFlip { p: 0.5 },
                Op::Normalize {
                    mean: IMAGENET_MEAN,
                    std: IMAGENET_STD,
                },
            ])?],
        })
    }

    /// Append `n` local crops (PatchMix §1d: like the global views but with blur p = 0.5 and no
    /// solarize) of side `size` with crop scale `scale` (e.g. `(0.05, min_scale)`).
    pub fn with_local_crops(mut self, n: usize, size: usize, scale: (f64, f64)) -> Result<Self> {
        let v = ViewSpec::new(vec![
            Op::RandomResizedCrop {
                size,
                scale,
                ratio: (3.0 / 4.0, 4.0 / 3.0),
                interpolation: Interpolation::Bicubic,
            },
            Op::ColorJitter {
                p: 0.8,
                jitter: ColorJitter::new(0.4, 0.4, 0.2, 0.1),
            },
            Op::Grayscale { p: 0.2 },
            Op::PilGaussianBlur {
                p: 0.5,
                sigma: (0.1, 2.0),
            },
            Op::HorizontalFlip { p: 0.5 },
            Op::Normalize {
                mean: IMAGENET_MEAN,
                std: IMAGENET_STD,
            },
        ])?;
        self.views.extend(std::iter::repeat_n(v, n));
        Ok(self)
    }

    /// Apply every view to `img` with the sample's own random stream; `outs[v]` is view `v`'s
    /// `[3, S_v, S_v]` buffer.
    pub fn apply(
        &self,
        img: &ImageRef<'_>,
        rng: &mut ChaCha8Rng,
        outs: &mut [&mut [f32]],
    ) -> Result<()> {
        ensure!(
            outs.len() == self.views.len(),
            "{} output buffers for {} views",
            outs.len(),
            self.views.len()
        );
        let draws = self.draw(img.height, img.width, rng);
        self.render(img, Source::full(img), &draws, outs)
    }

    /// Every view's draws ([`ViewSpec::draw`]) for an image of `height × width`, in the order
    /// [`Recipe::apply`] takes them.
    pub fn draw(&self, height: usize, width: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<Draw>> {
        self.views
            .iter()
            .map(|v| v.draw(height, width, rng))
            .collect()
    }

    /// Render every view from its draws ([`ViewSpec::render`]).
    pub fn render(
        &self,
        img: &ImageRef<'_>,
        source: Source,
        draws: &[Vec<Draw>],
        outs: &mut [&mut [f32]],
    ) -> Result<()> {
        ensure!(
            outs.len() == self.views.len() && draws.len() == self.views.len(),
            "{} output buffers and {} draws for {} views",
            outs.len(),
            draws.len(),
            self.views.len()
        );
        for ((v, d), out) in self.views.iter().zip(draws).zip(outs.iter_mut()) {
            v.render(img, source, d, out)?;
        }
        Ok(())
    }

    /// The largest JPEG decode scale `1/d` (`d` of 1, 2, 4, 8) at which every view, drawn as
    /// `draws` on a `height × width` image, still reads at least as many pixels as it writes
    /// ([`ViewSpec::max_denom`]): decoding at `1/d` then replaces part of the antialiased
    /// downsampling by the DCT's own.
    pub fn decode_denom(&self, height: usize, width: usize, draws: &[Vec<Draw>]) -> usize {
        self.views
            .iter()
            .zip(draws)
            .map(|(v, d)| v.max_denom(height, width, d))
            .min()
            .unwrap_or(1)
    }
}

/// The random stream of one sample: ChaCha8 seeded from a SplitMix64 hash of
/// `(seed, epoch, index)`. Counter-based: the result does not depend on which thread or batch
/// processes the sample.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut h = splitmix(seed ^ 0x6a09_e667_f3bc_c908);
    h = splitmix(h ^ epoch);
    h = splitmix(h ^ index);
    ChaCha8Rng::seed_from_u64(h)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform in `[a, b)` (`a` when `a == b`), like `torch.empty(1).uniform_(a, b)`.
#[inline]
pub fn uniform(rng: &mut ChaCha8Rng, a: f64, b: f64) -> f64 {
    a + (b - a) * rng.gen::<f64>()
}

/// `RandomResizedCrop.get_params(img, scale, ratio)`: the crop box `(top, left, height, width)`
/// of an image of `height × width`. Ten tries of area fraction `U(scale)` and aspect ratio
/// `exp(U(log ratio))`, `w = round(√(A·r))`, `h = round(√(A/r))` (half to even, as Python's
/// `round`), accepted when `0 < w ≤ W` and `0 < h ≤ H`, position uniform; otherwise the centre
/// crop with the ratio clamped to the range.
pub fn rrc_params(
    height: usize,
    width: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut ChaCha8Rng,
) -> (usize, usize, usize, usize) {
    let area = (height * width) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, lr0, lr1).exp();
        let w = (target_area * aspect).sqrt().round_ties_even() as i64;
        let h = (target_area / aspect).sqrt().round_ties_even() as i64;
        if 0 < w && w as usize <= width && 0 < h && h as usize <= height {
            let (h, w) = (h as usize, w as usize);
            let i = rng.gen_range(0..=height - h);
            let j = rng.gen_range(0..=width - w);
            return (i, j, h, w);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < ratio.0.min(ratio.1) {
        (
            (width as f64 / ratio.0.min(ratio.1)).round_ties_even() as usize,
            width,
        )
    } else if in_ratio > ratio.0.max(ratio.1) {
        (
            height,
            (height as f64 * ratio.0.max(ratio.1)).round_ties_even() as usize,
        )
    } else {
        (height, width)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// Per output index: first input index and normalised weights of PyTorch's antialiased
/// separable kernel (`_compute_weights_aa` in `UpSampleKernel.cpp`, `align_corners=False`).
struct AxisWeights {
    start: Vec<usize>,
    len: Vec<usize>,
    /// `taps` weights per output index.
    weights: Vec<f32>,
    taps: usize,
}

fn filter(interp: Interpolation, x: f32) -> f32 {
    let x = x.abs();
    match interp {
        Interpolation::Bilinear => {
            if x < 1.0 {
                1.0 - x
            } else {
                0.0
            }
        }
        Interpolation::Bicubic => {
            const A: f32 = -0.5;
            if x < 1.0 {
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                (((x - 5.0) * x + 8.0) * x - 4.0) * A
            } else {
                0.0
            }
        }
    }
}

/// The weights of resampling `extent` input pixels, starting `offset` (in `[0, 1)`) after the
/// first of `input` available ones, to `output` pixels. With `offset = 0` and `extent = input`
/// this is PyTorch's kernel on a crop; otherwise the taps stay within the `input` pixels.
fn axis_weights(
    offset: f32,
    extent: f32,
    input: usize,
    output: usize,
    interp: Interpolation,
) -> AxisWeights {
    let interp_size = match interp {
        Interpolation::Bilinear => 2.0f32,
        Interpolation::Bicubic => 4.0,
    };
    let scale = extent / output as f32;
    let support = if scale >= 1.0 {
        interp_size * 0.5 * scale
    } else {
        interp_size * 0.5
    };
    let taps = support.ceil() as usize * 2 + 1;
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut w = AxisWeights {
        start: Vec::with_capacity(output),
        len: Vec::with_capacity(output),
        weights: vec![0.0; output * taps],
        taps,
    };
    for i in 0..output {
        let center = offset + scale * (i as f32 + 0.5);
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(input as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(taps);
        let ws = &mut w.weights[i * taps..i * taps + n];
        let mut total = 0.0f32;
        for (j, wj) in ws.iter_mut().enumerate() {
            *wj = filter(interp, (j as f32 + xmin as f32 - center + 0.5) * invscale);
            total += *wj;
        }
        if total != 0.0 {
            for wj in ws.iter_mut() {
                *wj /= total;
            }
        }
        w.start.push(xmin);
        w.len.push(n);
    }
    w
}

/// `F.resized_crop(img, top, left, h, w, [out_h, out_w], interpolation, antialias=True)` on the
/// image as a float tensor, written planar `[3, out_h, out_w]` in the 0…255 range (no rounding).
/// Grayscale input is replicated to 3 channels; a 4th (alpha) channel is ignored.
#[allow(clippy::too_many_arguments)]
pub fn resized_crop_into(
    img: &ImageRef<'_>,
    top: usize,
    left: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    interp: Interpolation,
    out: &mut [f32],
) {
    let win = Window {
        top: top as f64,
        left: left as f64,
        height: h as f64,
        width: w as f64,
    };
    resample_window(img, win, out_h, out_w, interp, out)
}

avx2_dispatch! {
/// Resample the (possibly fractional) window `win` of `img` to `[3, out_h, out_w]` with
/// PyTorch's antialiased kernels (0…255, no rounding). An integer window is exactly
/// [`resized_crop_into`]; a fractional one (a crop box mapped into an image decoded at a reduced
/// scale) reads the pixels that overlap it.
pub fn resample_window(
    img: &ImageRef<'_>,
    win: Window,
    out_h: usize,
    out_w: usize,
    interp: Interpolation,
    out: &mut [f32],
) {
    // The whole pixels the window overlaps: rows top..top + h, columns left..left + w.
    let span = |start: f64, extent: f64, limit: usize| {
        let lo = (start.floor() as usize).min(limit - 1);
        let hi = ((start + extent).ceil() as usize).clamp(lo + 1, limit);
        (lo, hi - lo, (start - lo as f64) as f32, extent as f32)
    };
    let (top, h, off_y, ext_y) = span(win.top, win.height, img.height);
    let (left, w, off_x, ext_x) = span(win.left, win.width, img.width);
    let wx = axis_weights(off_x, ext_x, w, out_w, interp);
    let wy = axis_weights(off_y, ext_y, h, out_h, interp);
    let ch = img.channels;
    let src = &img.pixels[..];
    // Horizontal pass: rows top..top+h → tmp [3, h, out_w]. Each source row is converted to
    // float RGB once (grey replicated), then every output pixel sums its taps in order.
    let mut tmp = vec![0.0f32; 3 * h * out_w];
    let (t0, rest) = tmp.split_at_mut(h * out_w);
    let (t1, t2) = rest.split_at_mut(h * out_w);
    let mut rowf = vec![0.0f32; 3 * w];
    for y in 0..h {
        let row =
            &src[((top + y) * img.width + left) * ch..((top + y) * img.width + left + w) * ch];
        if ch == 1 {
            for (d, &v) in rowf.chunks_exact_mut(3).zip(row) {
                d.fill(v as f32);
            }
        } else {
            for (d, p) in rowf.chunks_exact_mut(3).zip(row.chunks_exact(ch)) {
                d[0] = p[0] as f32;
                d[1] = p[1] as f32;
                d[2] = p[2] as f32;
            }
        }
        for ox in 0..out_w {
            let (s0, n) = (wx.start[ox], wx.len[ox]);
            let ws = &wx.weights[ox * wx.taps..ox * wx.taps + n];
            let (mut a0, mut a1, mut a2) = (0.0f32, 0.0f32, 0.0f32);
            for (p, &wk) in rowf[s0 * 3..(s0 + n) * 3].chunks_exact(3).zip(ws) {
                a0 += p[0] * wk;
                a1 += p[1] * wk;
                a2 += p[2] * wk;
            }
            let i = y * out_w + ox;
            t0[i] = a0;
            t1[i] = a1;
            t2[i] = a2;
        }
    }
    // Vertical pass: tmp → out [3, out_h, out_w].
    for c in 0..3 {
        let plane = &tmp[c * h * out_w..(c + 1) * h * out_w];
        let dst = &mut out[c * out_h * out_w..(c + 1) * out_h * out_w];
        for oy in 0..out_h {
            let (s0, n) = (wy.start[oy], wy.len[oy]);
            let ws = &wy.weights[oy * wy.taps..oy * wy.taps + n];
            let drow = &mut dst[oy * out_w..(oy + 1) * out_w];
            drow.fill(0.0);
            for (k, &wk) in ws.iter().enumerate() {
                let srow = &plane[(s0 + k) * out_w..(s0 + k + 1) * out_w];
                for (d, &s) in drow.iter_mut().zip(srow) {
                    *d += s * wk;
                }
            }
        }
    }
}
}

/// `x.round_ties_even()` for `|x| < 2²²` without a libm call (the baseline x86-64 target has no
/// rounding instruction): adding and subtracting 1.5 · 2²³ rounds to an integer, half to even,
/// under IEEE round-to-nearest. Exact in that range (`-0.0` becomes `0.0`).
#[inline]
pub(crate) fn rint_small(x: f32) -> f32 {
    const M: f32 = 12_582_912.0;
    (x + M) - M
}

/// `x.floor()` from `to_int`, a conversion toward zero that is exact for `x` (`x as i32` for
/// `|x| < 2³¹`), without a libm call.
#[inline(always)]
fn floor_by(x: f32, to_int: impl Fn(f32) -> i32) -> f32 {
    let t = to_int(x) as f32;
    if t > x {
        t - 1.0
    } else {
        t
    }
}

avx2_dispatch! {
/// torchvision's `uint8` output of a resize (clamp to [0, 255], `torch.round` half to even),
/// then `/ 255` as `ToTensor` does.
pub fn to_unit_range(buf: &mut [f32]) {
    for v in buf.iter_mut() {
        *v = rint_small(v.clamp(0.0, 255.0)) / 255.0;
    }
}
}

avx2_dispatch! {
/// `F.hflip` of a planar `[3, h, w]` buffer.
pub fn hflip(buf: &mut [f32], h: usize, w: usize) {
    for row in buf[..3 * h * w].chunks_exact_mut(w) {
        row.reverse();
    }
}
}

#[inline]
fn gray(r: f32, g: f32, b: f32) -> f32 {
    0.2989 * r + 0.587 * g + 0.114 * b
}

avx2_dispatch! {
/// `F.rgb_to_grayscale(img, num_output_channels=3)` on `[3, h, w]` float.
pub fn grayscale(buf: &mut [f32], h: usize, w: usize) {
    let n = h * w;
    let (r, rest) = buf.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for i in 0..n {
        let l = gray(r[i], g[i], b[i]);
        r[i] = l;
        g[i] = l;
        b[i] = l;
    }
}
}

avx2_dispatch! {
/// `F.adjust_brightness` (float): `clamp(f·x, 0, 1)`.
pub fn adjust_brightness(buf: &mut [f32], f: f32) {
    for v in buf.iter_mut() {
        *v = (f * *v).clamp(0.0, 1.0);
    }
}
}

avx2_dispatch! {
/// `F.adjust_contrast` (float): blend with the mean of the grayscale image,
/// `clamp(f·x + (1 − f)·mean, 0, 1)`.
pub fn adjust_contrast(buf: &mut [f32], h: usize, w: usize, f: f32) {
    let n = h * w;
    let mut sum = 0.0f64;
    for i in 0..n {
        sum += gray(buf[i], buf[n + i], buf[2 * n + i]) as f64;
    }
    let mean = (sum / n as f64) as f32;
    let m = (1.0 - f) * mean;
    for v in buf[..3 * n].iter_mut() {
        *v = (f * *v + m).clamp(0.0, 1.0);
    }
}
}

avx2_dispatch! {
/// `F.adjust_saturation` (float): blend with the per-pixel grayscale value.
pub fn adjust_saturation(buf: &mut [f32], h: usize, w: usize, f: f32) {
    let n = h * w;
    let (r, rest) = buf.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    let g1 = 1.0 - f;
    for i in 0..n {
        let l = g1 * gray(r[i], g[i], b[i]);
        r[i] = (f * r[i] + l).clamp(0.0, 1.0);
        g[i] = (f * g[i] + l).clamp(0.0, 1.0);
        b[i] = (f * b[i] + l).clamp(0.0, 1.0);
    }
}
}

/// `F.adjust_hue` (float, `hue_factor ∈ [−0.5, 0.5]`): torchvision's `_rgb2hsv`, hue shift
/// modulo 1, `_hsv2rgb`.
pub fn adjust_hue(buf: &mut [f32], h: usize, w: usize, hue_factor: f32) {
    let n = h * w;
    // Pixels in [0, 1] (what the pipeline hands over) bound every intermediate (the hue before
    // its shift is in [5/6, 11/6]), so its integer conversions need no saturation and the loop
    // vectorises; other input takes the same arithmetic with saturating conversions.
    if hue_factor.abs() <= 1.0 && buf[..3 * n].iter().all(|v| (0.0..=1.0).contains(v)) {
        hue_of_unit_pixels(buf, n, hue_factor);
    } else {
        hue_of_any_pixels(buf, n, hue_factor);
    }
}

avx2_dispatch! {
/// [`adjust_hue`] of pixels in [0, 1] with `|hue_factor| ≤ 1`.
fn hue_of_unit_pixels(buf: &mut [f32], n: usize, hue_factor: f32) {
    // SAFETY: with such input every value truncated here is finite and in [−2, 7]
    hue_pixels(buf, n, hue_factor, |x| unsafe { x.to_int_unchecked::<i32>() });
}
}

avx2_dispatch! {
/// [`adjust_hue`] of any pixels.
fn hue_of_any_pixels(buf: &mut [f32], n: usize, hue_factor: f32) {
    hue_pixels(buf, n, hue_factor, |x| x as i32);
}
}

/// The hue loop of [`adjust_hue`], with `to_int` converting toward zero (both callers' give
/// the same value wherever the first is defined).
#[inline(always)]
fn hue_pixels(buf: &mut [f32], n: usize, hue_factor: f32, to_int: impl Fn(f32) -> i32) {
    let trunc = |x: f32| to_int(x) as f32;
    let floor = |x: f32| floor_by(x, &to_int);
    let (rr, rest) = buf.split_at_mut(n);
    let (gg, bb) = rest[..2 * n].split_at_mut(n);
    for i in 0..n {
        let (r, g, b) = (rr[i], gg[i], bb[i]);
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        let eqc = maxc == minc;
        let cr = maxc - minc;
        let s = cr / if eqc { 1.0 } else { maxc };
        let crd = if eqc { 1.0 } else { cr };
        let rc = (maxc - r) / crd;
        let gc = (maxc - g) / crd;
        let bc = (maxc - b) / crd;
        let hh = if maxc == r {
            bc - gc
        } else if maxc == g {
            2.0 + rc - bc
        } else {
            4.0 + gc - rc
        };
        let hue = hh / 6.0 + 1.0;
        let hue = hue - trunc(hue); // torch.fmod(·, 1.0)
        let hue = hue + hue_factor;
        let hue = hue - floor(hue); // Python-style `% 1.0`
        let v = maxc;
        let i6 = floor(hue * 6.0);
        let f = hue * 6.0 - i6;
        let p = (v * (1.0 - s)).clamp(0.0, 1.0);
        let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
        let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
        // `i % 6`: hue ∈ [0, 1] (x − floor(x) can round up to 1), so i6 ∈ [0, 6]
        let k = to_int(i6);
        let k = if k >= 6 { k - 6 } else { k };
        // torchvision's sector table (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q), as
        // selects so that the loop vectorises
        rr[i] = if k == 0 || k == 5 {
            v
        } else if k == 1 {
            q
        } else if k == 4 {
            t
        } else {
            p
        };
        gg[i] = if k == 1 || k == 2 {
            v
        } else if k == 0 {
            t
        } else if k == 3 {
            q
        } else {
            p
        };
        bb[i] = if k == 3 || k == 4 {
            v
        } else if k == 2 {
            t
        } else if k == 5 {
            q
        } else {
            p
        };
    }
}

/// The draws of one `ColorJitter.forward`: the order of the four adjustments
/// (`torch.randperm(4)`) and each factor (`None`: that strength is zero).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterDraw {
    pub order: [usize; 4],
    pub brightness: Option<f32>,
    pub contrast: Option<f32>,
    pub saturation: Option<f32>,
    pub hue: Option<f32>,
}

/// Draw a [`JitterDraw`]: a random order, then each factor uniform in its range
/// (`[max(0, 1 − s), 1 + s]`, hue in `[−h, h]`); a zero strength draws nothing.
pub fn draw_jitter(cj: &ColorJitter, rng: &mut ChaCha8Rng) -> JitterDraw {
    let mut order = [0usize, 1, 2, 3];
    for i in (1..4).rev() {
        let j = rng.gen_range(0..=i);
        order.swap(i, j);
    }
    let range = |s: f64| ((1.0 - s).max(0.0), 1.0 + s);
    let mut factor = |s: f64| {
        (s > 0.0).then(|| {
            let (a, z) = range(s);
            uniform(rng, a, z) as f32
        })
    };
    let brightness = factor(cj.brightness);
    let contrast = factor(cj.contrast);
    let saturation = factor(cj.saturation);
    let hue = (cj.hue > 0.0).then(|| uniform(rng, -cj.hue, cj.hue) as f32);
    JitterDraw {
        order,
        brightness,
        contrast,
        saturation,
        hue,
    }
}

/// Apply a drawn colour jitter to `[3, h, w]`.
pub fn apply_jitter(buf: &mut [f32], h: usize, w: usize, d: &JitterDraw) {
    for k in d.order {
        match (k, d.brightness, d.contrast, d.saturation, d.hue) {
            (0, Some(f), ..) => adjust_brightness(&mut buf[..3 * h * w], f),
            (1, _, Some(f), ..) => adjust_contrast(buf, h, w, f),
            (2, _, _, Some(f), _) => adjust_saturation(buf, h, w, f),
            (3, .., Some(f)) => adjust_hue(buf, h, w, f),
            _ => {}
        }
    }
}

/// torchvision's `_get_gaussian_kernel1d(kernel_size, sigma)`.
pub fn gaussian_kernel1d(kernel_size: usize, sigma: f32) -> Vec<f32> {
    let half = (kernel_size as f32 - 1.0) * 0.5;
    let step = if kernel_size > 1 {
        2.0 * half / (kernel_size as f32 - 1.0)
    } else {
        0.0
    };
    let pdf: Vec<f32> = (0..kernel_size)
        .map(|i| {
            let x = -half + step * i as f32;
            (-0.5 * (x / sigma).powi(2)).exp()
        })
        .collect();
    let sum: f32 = pdf.iter().sum();
    pdf.into_iter().map(|p| p / sum).collect()
}

#[inline]
fn reflect(i: isize, n: usize) -> usize {
    // `torch.nn.functional.pad(mode="reflect")`: edge not repeated; iterate for tiny images.
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let mut i = i;
    loop {
        if i < 0 {
            i = -i;
        } else if i >= n {
            i = 2 * (n - 1) - i;
        } else {
            return i as usize;
        }
    }
}

/// `F.gaussian_blur(img, [k, k], [σ, σ])` on `[3, h, w]` float: the separable form of
/// torchvision's 2D kernel (the outer product of the 1D kernel), reflect padding.
pub fn gaussian_blur(buf: &mut [f32], h: usize, w: usize, kernel_size: usize, sigma: f32) {
    let k = gaussian_kernel1d(kernel_size, sigma);
    let r = (kernel_size / 2) as isize;
    let mut tmp = vec![0.0f32; h * w];
    for c in 0..3 {
        let plane = &mut buf[c * h * w..(c + 1) * h * w];
        // Horizontal.
        for y in 0..h {
            let row = &plane[y * w..(y + 1) * w];
            let trow = &mut tmp[y * w..(y + 1) * w];
            for (x, t) in trow.iter_mut().enumerate() {
                let mut acc = 0.0f32;
                let xi = x as isize;
                if xi - r >= 0 && xi + r < w as isize {
                    let s = &row[(xi - r) as usize..(xi + r + 1) as usize];
                    for (a, b) in s.iter().zip(&k) {
                        acc += a * b;
                    }
                } else {
                    for (j, kj) in k.iter().enumerate() {
                        acc += row[reflect(xi + j as isize - r, w)] * kj;
                    }
                }
                *t = acc;
            }
        }
        // Vertical.
        for y in 0..h {
            let drow = &mut plane[y * w..(y + 1) * w];
            drow.fill(0.0);
            for (j, kj) in k.iter().enumerate() {
                let sy = reflect(y as isize + j as isize - r, h);
                let srow = &tmp[sy * w..(sy + 1) * w];
                for (d, s) in drow.iter_mut().zip(srow) {
                    *d += s * kj;
                }
            }
        }
    }
}

avx2_dispatch! {
/// `F.solarize` (float): `x ≥ threshold → 1 − x`.
pub fn solarize(buf: &mut [f32], threshold: f32) {
    for v in buf.iter_mut() {
        if *v >= threshold {
            *v = 1.0 - *v;
        }
    }
}
}

avx2_dispatch! {
/// `F.normalize(img, mean, std)`: `(x − mean_c) / std_c`.
pub fn normalize(buf: &mut [f32], h: usize, w: usize, mean: [f32; 3], std: [f32; 3]) {
    for (c, plane) in buf[..3 * h * w].chunks_exact_mut(h * w).enumerate() {
        for v in plane.iter_mut() {
            *v = (*v - mean[c]) / std[c];
        }
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_rounding_equals_the_library_functions() {
        // every multiple of 1/64 in [-300, 300] (all the halves and quarters), plus values next
        // to the halves and an even spread of arbitrary ones
        let mut xs: Vec<f32> = (-19_200..=19_200).map(|k| k as f32 / 64.0).collect();
        for k in -600..=600 {
            let half = k as f32 * 0.5;
            xs.extend([half.next_up(), half.next_down()]);
        }
        xs.extend((0..100_000).map(|k| (k as f32 * 0.7377).sin() * 1000.0));
        xs.extend([0.49999997, -0.49999997, 254.5, 255.5, 1e6, -1e6]);
        let to_int = |x: f32| x as i32;
        for &x in &xs {
            assert_eq!(floor_by(x, to_int), x.floor(), "floor {x}");
            assert_eq!(to_int(x) as f32, x.trunc(), "trunc {x}");
            // the hue's `torch.fmod(·, 1.0)`
            assert_eq!(x - to_int(x) as f32, x % 1.0, "fmod {x}");
            if x.abs() < 4_194_304.0 {
                assert_eq!(rint_small(x), x.round_ties_even(), "rint {x}");
            }
        }
        assert!((f32::NAN - to_int(f32::NAN) as f32).is_nan());
    }
}
