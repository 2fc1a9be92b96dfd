//! Gradient-guided sampling (official `GraSS_train_step.py::getHeadMapCut` / `DACrop`,
//! `control_ratio = 0.5`; `shared/papers/grass-claires.md` §1.4):
//!
//! ```text
//! G   = dL/dF                              (F = layer-4 map [2N, C, h, w])
//! w   = mean_hw(G)                         [2N, C, 1, 1]
//! cam = mean_c(F · w)                      [2N, h, w]   (no ReLU, no sign flip)
//! cam = cam / max_hw(cam)                  per view (sign flips if max < 0, NaN if max = 0)
//! H   = bilinear(cam → S×S, align_corners = False)
//! B   = H > min(H) + 0.5·(max(H) − min(H))
//! box = bbox of the 8-connected component of B whose bbox window holds the largest H
//!       (ties: the later label in raster order); no component (flat map) → view unchanged
//!       (flat = range ≤ 1e-5 relative: float noise of the up-sampling is not a blob)
//! x'  = nearest(x[:, r0:r1, c0:c1] → S×S)  each view independently
//! ```

use anyhow::{ensure, Context, Result};
use tch::{Kind, Tensor};

/// A box `[r0, r1) × [c0, c1)` (rows, columns; skimage `regionprops.bbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxRect {
    pub r0: usize,
    pub r1: usize,
    pub c0: usize,
    pub c1: usize,
}

impl BoxRect {
    pub fn height(&self) -> usize {
        self.r1 - self.r0
    }
    pub fn width(&self) -> usize {
        self.c1 - self.c0
    }
}

/// `dL/dF` of `loss` with respect to `feat` only, via `run_backward` (libtorch is called with
/// `accumulate_grad = false`: parameter `.grad` fields are not touched).
pub fn feature_gradient(loss: &Tensor, feat: &Tensor) -> Result<Tensor> {
    let g = Tensor::run_backward(&[loss], &[feat], false, false);
    g.into_iter()
        .next()
        .context("run_backward returned no gradient for the layer-4 map")
}

/// Grad-CAM-like heat map `[B, h, w]` of the official code: channel weights = spatial mean of
/// the gradient, channel MEAN of `F · w`, divided by its per-view maximum.
pub fn heat_map(feat: &Tensor, grad: &Tensor) -> Result<Tensor> {
    ensure!(
        feat.dim() == 4 && feat.size() == grad.size(),
        "heat map needs F and dL/dF of the same [B, C, h, w] shape, got {:?} and {:?}",
        feat.size(),
        grad.size()
    );
    let w = grad.mean_dim(&[2i64, 3][..], true, Kind::Float); // [B, C, 1, 1]
    let cam = (feat.detach() * w).mean_dim(&[1i64][..], false, Kind::Float); // [B, h, w]
    let max = cam.amax(&[1i64, 2][..], true); // [B, 1, 1]
    Ok(cam / max)
}

/// Bilinear up-sampling `[B, h, w]` → `[B, size, size]` (`align_corners = False`, the
/// half-pixel centres of `cv2.resize(INTER_LINEAR)`).
pub fn upsample(cam: &Tensor, size: i64) -> Tensor {
    cam.unsqueeze(1)
        .upsample_bilinear2d([size, size], false, None, None)
        .squeeze_dim(1)
}

/// Relative range below which a heat map counts as flat (float noise of the up-sampling).
pub const FLAT_TOL: f32 = 1e-5;

/// The box of one up-sampled heat map `h` (`rows × cols`, row-major); `None` when no pixel is
/// above the threshold (a flat or NaN map).
pub fn box_from_heat(h: &[f32], rows: usize, cols: usize, ratio: f32) -> Option<BoxRect> {
    assert_eq!(
        h.len(),
        rows * cols,
        "heat map of {rows}×{cols} has {} values",
        h.len()
    );
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in h {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    // a flat map: the up-sampling of a constant map is constant up to float rounding (≈1e-7
    // relative), which must not create a one-pixel "blob"
    let tol = FLAT_TOL * hi.abs().max(lo.abs()).max(1.0);
    if (hi - lo).partial_cmp(&tol) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let thr = lo + ratio * (hi - lo);
    let on: Vec<bool> = h.iter().map(|&v| v > thr).collect();
    // 8-connected labelling, labels in raster order of each component's first pixel (skimage)
    let mut label = vec![0u32; rows * cols];
    let mut best: Option<(f32, BoxRect)> = None;
    let mut next = 0u32;
    let mut stack = Vec::new();
    for start in 0..rows * cols {
        if !on[start] || label[start] != 0 {
            continue;
        }
        next += 1;
        label[start] = next;
        stack.push(start);
        let mut b = BoxRect {
            r0: start / cols,
            r1: start / cols + 1,
            c0: start % cols,
            c1: start % cols + 1,
        };
        while let Some(p) = stack.pop() {
            let (r, c) = (p / cols, p % cols);
            b.r0 = b.r0.min(r);
            b.r1 = b.r1.max(r + 1);
            b.c0 = b.c0.min(c);
            b.c1 = b.c1.max(c + 1);
            for dr in -1i64..=1 {
                for dc in -1i64..=1 {
                    let (rr, cc) = (r as i64 + dr, c as i64 + dc);
                    if rr < 0 || cc < 0 || rr >= rows as i64 || cc >= cols as i64 {
                        continue;
                    }
                    let q = rr as usize * cols + cc as usize;
                    if on[q] && label[q] == 0 {
                        label[q] = next;
                        stack.push(q);
                    }
                }
            }
        }
        // the official score: max of H over the component's bbox window
        let mut score = f32::NEG_INFINITY;
        for r in b.r0..b.r1 {
            for &v in &h[r * cols + b.c0..r * cols + b.c1] {
                score = score.max(v);
            }
        }
        // ">=": a later component wins ties
        if best.as_ref().is_none_or(|(s, _)| score >= *s) {
            best = Some((score, b));
        }
    }
    best.map(|(_, b)| b)
}

/// Boxes of a batch of heat maps `[B, h, w]` up-sampled to `size`.
pub fn boxes(cam: &Tensor, size: i64, ratio: f32) -> Result<Vec<Option<BoxRect>>> {
    let up = upsample(&cam.to_kind(Kind::Float), size).to_device(tch::Device::Cpu);
    let b = up.size()[0];
    let flat: Vec<f32> = Vec::<f32>::try_from(up.contiguous().view([-1]))
        .context("copying the heat maps to the host")?;
    let n = (size * size) as usize;
    Ok((0..b as usize)
        .map(|i| {
            box_from_heat(
                &flat[i * n..(i + 1) * n],
                size as usize,
                size as usize,
                ratio,
            )
        })
        .collect())
}

/// Crop every view `x [B, C, S, S]` to its box and resize back to `S × S` with (legacy)
/// nearest interpolation; views without a box are kept unchanged.
pub fn crop_views(x: &Tensor, boxes: &[Option<BoxRect>]) -> Result<Tensor> {
    let size = x.size();
    ensure!(
        size.len() == 4 && size[0] as usize == boxes.len(),
        "crop_views: {} boxes for views of shape {size:?}",
        boxes.len()
    );
    let (h, w) = (size[2], size[3]);
    let views: Vec<Tensor> = boxes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let v = x.narrow(0, i as i64, 1);
            match b {
                None => v,
                Some(b) => v
                    .narrow(2, b.r0 as i64, b.height() as i64)
                    .narrow(3, b.c0 as i64, b.width() as i64)
                    .upsample_nearest2d([h, w], None, None),
            }
        })
        .collect();
    Ok(Tensor::cat(&views, 0))
}

/// The whole sampling step on a batch: heat maps from `(F, dL/dF)`, boxes, crops.
pub fn gradient_guided_crops(
    x: &Tensor,
    feat: &Tensor,
    grad: &Tensor,
    ratio: f32,
) -> Result<(Tensor, Vec<Option<BoxRect>>, Tensor)> {
    let cam = heat_map(feat, grad)?;
    let size = x.size()[2];
    ensure!(
        x.size()[3] == size,
        "gradient-guided sampling expects square views, got {:?}",
        x.size()
    );
    let bx = boxes(&cam, size, ratio)?;
    let crops = crop_views(x, &bx)?;
    Ok((crops, bx, cam))
}
