//! Sliding-window inference with a **voxel stride** (UA-MT / MC-Net+ / FBA-Net
//! `test_single_case_first_output`, `code/utils/test_patch.py`).
//!
//! * If an axis is smaller than the patch, the volume is zero-padded centrally (`pad // 2` before,
//!   the rest after) and the result is cropped back.
//! * Window starts along an axis of size `S` with patch `P` and stride `s`: `min(s·i, S − P)` for
//!   `i` in `0..=⌈(S − P)/s⌉` ([`window_starts`]) — e.g. 194×142×88 with 112×112×80 and
//!   (18, 18, 4) gives 6×3×3 = 54 windows. (MONAI's `sliding_window_inference` builds the same
//!   lattice but from an overlap fraction; the stride is given in voxels here.)
//! * The predictor returns per-class **probabilities** `[B, C, P…]` (e.g. a softmax); they are
//!   summed into a score map and divided by the per-voxel window count (constant weighting).

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// Start offsets of the windows along one axis (`size ≥ patch`).
pub fn window_starts(size: usize, patch: usize, stride: usize) -> Vec<usize> {
    assert!(stride > 0 && patch > 0 && size >= patch);
    let n = (size - patch).div_ceil(stride) + 1;
    (0..n).map(|i| (stride * i).min(size - patch)).collect()
}

/// Window start corners `(x, y, z)` over a (padded) volume, in the reference's loop order
/// (x outermost, z innermost).
pub fn window_grid(shape: [usize; 3], patch: [usize; 3], stride: [usize; 3]) -> Vec<[usize; 3]> {
    let sx = window_starts(shape[0], patch[0], stride[0]);
    let sy = window_starts(shape[1], patch[1], stride[1]);
    let sz = window_starts(shape[2], patch[2], stride[2]);
    let mut out = Vec::with_capacity(sx.len() * sy.len() * sz.len());
    for &x in &sx {
        for &y in &sy {
            for &z in &sz {
                out.push([x, y, z]);
            }
        }
    }
    out
}

/// Sliding-window settings.
#[derive(Debug, Clone, Copy)]
pub struct SlidingWindow {
    /// Window size `(x, y, z)`.
    pub patch: [usize; 3],
    /// Voxel stride `(x, y, z)`.
    pub stride: [usize; 3],
    /// Windows per predictor call (1 in the reference; larger is the same result in eval mode).
    pub batch: usize,
}

impl SlidingWindow {
    /// Averaged probabilities `[C, X, Y, Z]` (float, on the image's device) of a `[X, Y, Z]`
    /// image; `predict` maps `[B, 1, px, py, pz]` to probabilities `[B, C, px, py, pz]`.
    pub fn run(
        &self,
        image: &Tensor,
        mut predict: impl FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let size = image.size();
        if size.len() != 3 {
            bail!("sliding window: image must be [X, Y, Z], got {size:?}");
        }
        if self.stride.contains(&0) || self.patch.contains(&0) || self.batch == 0 {
            bail!(
                "sliding window: patch {:?}, stride {:?} and batch {} must be positive",
                self.patch,
                self.stride,
                self.batch
            );
        }
        let shape = [size[0] as usize, size[1] as usize, size[2] as usize];
        let pad = [0, 1, 2].map(|i| self.patch[i].saturating_sub(shape[i]));
        let before = pad.map(|p| p / 2);
        let image = if pad.iter().any(|&p| p > 0) {
            // F.pad order: last axis first.
            let spec = [
                before[2] as i64,
                (pad[2] - before[2]) as i64,
                before[1] as i64,
                (pad[1] - before[1]) as i64,
                before[0] as i64,
                (pad[0] - before[0]) as i64,
            ];
            image.to_kind(Kind::Float).constant_pad_nd(spec)
        } else {
            image.to_kind(Kind::Float)
        };
        let padded = [0, 1, 2].map(|i| shape[i] + pad[i]);
        let grid = window_grid(padded, self.patch, self.stride);
        let p = self.patch.map(|v| v as i64);
        let dev = image.device();
        let mut score: Option<Tensor> = None;
        let cnt = Tensor::zeros(padded.map(|v| v as i64), (Kind::Float, dev));
        for chunk in grid.chunks(self.batch) {
            let patches: Vec<Tensor> = chunk
                .iter()
                .map(|s| {
                    image
                        .narrow(0, s[0] as i64, p[0])
                        .narrow(1, s[1] as i64, p[1])
                        .narrow(2, s[2] as i64, p[2])
                        .unsqueeze(0)
                })
                .collect();
            let input = Tensor::stack(&patches, 0);
            let probs = tch::no_grad(|| predict(&input))?;
            let ps = probs.size();
            if ps.len() != 5 || ps[0] != chunk.len() as i64 || ps[2..] != p[..] {
                bail!(
                    "sliding window: predictor returned {ps:?} for input {:?} (expected [B, C, {}, {}, {}])",
                    input.size(),
                    p[0],
                    p[1],
                    p[2]
                );
            }
            let sm = score.get_or_insert_with(|| {
                Tensor::zeros(
                    [ps[1], padded[0] as i64, padded[1] as i64, padded[2] as i64],
                    (Kind::Float, dev),
                )
            });
            tch::no_grad(|| {
                for (b, s) in chunk.iter().enumerate() {
                    let mut dst = sm
                        .narrow(1, s[0] as i64, p[0])
                        .narrow(2, s[1] as i64, p[1])
                        .narrow(3, s[2] as i64, p[2]);
                    let _ = dst.g_add_(&probs.get(b as i64).to_kind(Kind::Float));
                    let mut c = cnt
                        .narrow(0, s[0] as i64, p[0])
                        .narrow(1, s[1] as i64, p[1])
                        .narrow(2, s[2] as i64, p[2]);
                    let _ = c.g_add_scalar_(1.0);
                }
            });
        }
        let score = score.expect("at least one window") / cnt.unsqueeze(0);
        Ok(score
            .narrow(1, before[0] as i64, shape[0] as i64)
            .narrow(2, before[1] as i64, shape[1] as i64)
            .narrow(3, before[2] as i64, shape[2] as i64)
            .contiguous())
    }
}
