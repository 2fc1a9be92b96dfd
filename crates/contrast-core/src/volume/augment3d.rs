//! 3D augmentation of the UA-MT / MC-Net+ / FBA-Net line (`code/dataloaders/dataset.py`):
//! `RandomRotFlip`, `RandomCrop`, `CenterCrop`, and the `TwoStreamBatchSampler`.
//!
//! All functions transform an image and its label together (same geometry). Random draws come
//! from a caller-supplied [`rand::Rng`] (the reference uses numpy's global RNG; the draws are the
//! same distributions, not the same stream).

use super::{Case, Volume};
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::Rng;

/// `np.rot90(v, k, axes=(0, 1))`: rotate by `k·90°` in the x-y plane (from x towards y).
/// For odd `k` the x and y extents swap.
pub fn rot90_xy<T: Copy + Default>(v: &Volume<T>, k: usize) -> Volume<T> {
    let [a, b, z] = v.shape;
    let k = k % 4;
    let shape = if k % 2 == 1 { [b, a, z] } else { [a, b, z] };
    let mut out = Volume::zeros(shape);
    out.spacing = v
        .spacing
        .map(|s| if k % 2 == 1 { [s[1], s[0], s[2]] } else { s });
    for i in 0..shape[0] {
        for j in 0..shape[1] {
            // numpy: k=1 → r[i,j] = m[j, B-1-i]; k=2 → m[A-1-i, B-1-j]; k=3 → m[A-1-j, i].
            let (si, sj) = match k {
                0 => (i, j),
                1 => (j, b - 1 - i),
                2 => (a - 1 - i, b - 1 - j),
                _ => (a - 1 - j, i),
            };
            let src = (si * b + sj) * z;
            let dst = (i * shape[1] + j) * z;
            out.data[dst..dst + z].copy_from_slice(&v.data[src..src + z]);
        }
    }
    out
}

/// `np.flip(v, axis)` for axis 0 (x), 1 (y) or 2 (z).
pub fn flip<T: Copy + Default>(v: &Volume<T>, axis: usize) -> Volume<T> {
    let [a, b, c] = v.shape;
    let mut out = Volume::zeros(v.shape);
    out.spacing = v.spacing;
    for x in 0..a {
        for y in 0..b {
            for z in 0..c {
                let (sx, sy, sz) = match axis {
                    0 => (a - 1 - x, y, z),
                    1 => (x, b - 1 - y, z),
                    _ => (x, y, c - 1 - z),
                };
                out.data[(x * b + y) * c + z] = v.data[(sx * b + sy) * c + sz];
            }
        }
    }
    out
}

/// `RandomRotFlip`: `k = randint(0, 4)` quarter turns in the x-y plane, then **always** a flip
/// along `axis = randint(0, 2)` ∈ {x, y}.
pub fn random_rot_flip(case: &Case, rng: &mut impl Rng) -> Case {
    let k = rng.gen_range(0..4);
    let axis = rng.gen_range(0..2);
    Case {
        id: case.id.clone(),
        image: flip(&rot90_xy(&case.image, k), axis),
        label: flip(&rot90_xy(&case.label, k), axis),
    }
}

/// Zero-pads `before[i]` / `after[i]` voxels on each side of each axis.
pub fn pad<T: Copy + Default>(v: &Volume<T>, before: [usize; 3], after: [usize; 3]) -> Volume<T> {
    let s = v.shape;
    let shape = [0, 1, 2].map(|i| s[i] + before[i] + after[i]);
    let mut out = Volume::zeros(shape);
    out.spacing = v.spacing;
    for x in 0..s[0] {
        for y in 0..s[1] {
            let src = (x * s[1] + y) * s[2];
            let dst = ((x + before[0]) * shape[1] + y + before[1]) * shape[2] + before[2];
            out.data[dst..dst + s[2]].copy_from_slice(&v.data[src..src + s[2]]);
        }
    }
    out
}

/// The sub-volume `[start, start + size)` on each axis (must be inside).
pub fn crop<T: Copy + Default>(
    v: &Volume<T>,
    start: [usize; 3],
    size: [usize; 3],
) -> Result<Volume<T>> {
    for i in 0..3 {
        if start[i] + size[i] > v.shape[i] {
            bail!(
                "crop start {start:?} size {size:?} exceeds volume shape {:?}",
                v.shape
            );
        }
    }
    let s = v.shape;
    let mut out = Volume::zeros(size);
    out.spacing = v.spacing;
    for x in 0..size[0] {
        for y in 0..size[1] {
            let src = ((x + start[0]) * s[1] + y + start[1]) * s[2] + start[2];
            let dst = (x * size[1] + y) * size[2];
            out.data[dst..dst + size[2]].copy_from_slice(&v.data[src..src + size[2]]);
        }
    }
    Ok(out)
}

/// The official padding rule of `RandomCrop` / `CenterCrop`: when **any** axis is ≤ the patch,
/// every axis is padded by `max((p − s) // 2 + 3, 0)` on both sides (Python floor division, so an
/// axis up to 5 voxels larger than the patch is still padded); otherwise nothing is padded.
pub fn crop_padding(shape: [usize; 3], patch: [usize; 3]) -> [usize; 3] {
    if (0..3).any(|i| shape[i] <= patch[i]) {
        [0, 1, 2].map(|i| {
            let d = patch[i] as i64 - shape[i] as i64;
            (d.div_euclid(2) + 3).max(0) as usize
        })
    } else {
        [0; 3]
    }
}

fn pad_case(case: &Case, patch: [usize; 3]) -> Case {
    let p = crop_padding(case.label.shape, patch);
    if p == [0; 3] {
        return case.clone();
    }
    Case {
        id: case.id.clone(),
        image: pad(&case.image, p, p),
        label: pad(&case.label, p, p),
    }
}

fn crop_case(case: &Case, start: [usize; 3], patch: [usize; 3]) -> Result<Case> {
    Ok(Case {
        id: case.id.clone(),
        image: crop(&case.image, start, patch)?,
        label: crop(&case.label, start, patch)?,
    })
}

/// `RandomCrop(patch)`: pad by [`crop_padding`], then crop at offsets `randint(0, s − p)` per axis
/// (numpy's upper bound is exclusive, so the last possible offset `s − p` is never drawn; when
/// `s == p` after padding — impossible with the rule — the offset is 0).
pub fn random_crop(case: &Case, patch: [usize; 3], rng: &mut impl Rng) -> Result<Case> {
    let c = pad_case(case, patch);
    let s = c.label.shape;
    let start = [0, 1, 2].map(|i| {
        let hi = s[i] - patch[i];
        if hi == 0 {
            0
        } else {
            rng.gen_range(0..hi)
        }
    });
    crop_case(&c, start, patch)
}

/// `CenterCrop(patch)`: pad by [`crop_padding`], then crop at `round((s − p) / 2)` per axis
/// (Python's round: halves go to the even neighbour).
pub fn center_crop(case: &Case, patch: [usize; 3]) -> Result<Case> {
    let c = pad_case(case, patch);
    let s = c.label.shape;
    let start = [0, 1, 2].map(|i| {
        let d = s[i] - patch[i];
        let half = d / 2;
        if d % 2 == 1 && half % 2 == 1 {
            half + 1 // x.5 rounds to the even integer
        } else {
            half
        }
    });
    crop_case(&c, start, patch)
}

/// Stacks equally shaped volumes into a `[N, 1, X, Y, Z]` float tensor.
pub fn stack_images(vols: &[&Volume<f32>]) -> Result<tch::Tensor> {
    let Some(first) = vols.first() else {
        bail!("stack_images: no volume");
    };
    if let Some(v) = vols.iter().find(|v| v.shape != first.shape) {
        bail!(
            "stack_images: shapes differ ({:?} vs {:?})",
            first.shape,
            v.shape
        );
    }
    let ts: Vec<tch::Tensor> = vols.iter().map(|v| v.to_tensor().unsqueeze(0)).collect();
    Ok(tch::Tensor::stack(&ts, 0))
}

/// Stacks equally shaped label maps into a `[N, X, Y, Z]` int64 tensor.
pub fn stack_labels(vols: &[&Volume<u8>]) -> Result<tch::Tensor> {
    let Some(first) = vols.first() else {
        bail!("stack_labels: no volume");
    };
    if let Some(v) = vols.iter().find(|v| v.shape != first.shape) {
        bail!(
            "stack_labels: shapes differ ({:?} vs {:?})",
            first.shape,
            v.shape
        );
    }
    let ts: Vec<tch::Tensor> = vols
        .iter()
        .map(|v| v.to_tensor().to_kind(tch::Kind::Int64))
        .collect();
    Ok(tch::Tensor::stack(&ts, 0))
}

/// `TwoStreamBatchSampler` of UA-MT: each batch holds `primary_batch` indices from the primary
/// (labelled) set and `secondary_batch` from the secondary (unlabelled) set. The primary set is
/// permuted once per epoch and consumed in whole groups (an epoch = `⌊|primary| / primary_batch⌋`
/// batches, a remainder is dropped); the secondary set is an endless chain of permutations.
/// With an empty secondary set and `secondary_batch == 0` it is a plain labelled sampler.
#[derive(Debug, Clone)]
pub struct TwoStreamSampler {
    primary: Vec<usize>,
    secondary: Vec<usize>,
    primary_batch: usize,
    secondary_batch: usize,
    p_order: Vec<usize>,
    p_pos: usize,
    s_order: Vec<usize>,
    s_pos: usize,
}

impl TwoStreamSampler {
    /// Errors when a set is smaller than its batch share.
    pub fn new(
        primary: Vec<usize>,
        secondary: Vec<usize>,
        primary_batch: usize,
        secondary_batch: usize,
    ) -> Result<Self> {
        if primary_batch == 0 || primary.len() < primary_batch {
            bail!(
                "two-stream sampler: {} primary (labelled) cases for a share of {primary_batch}",
                primary.len()
            );
        }
        if secondary.len() < secondary_batch {
            bail!(
                "two-stream sampler: {} secondary (unlabelled) cases for a share of {secondary_batch}",
                secondary.len()
            );
        }
        Ok(Self {
            primary,
            secondary,
            primary_batch,
            secondary_batch,
            p_order: vec![],
            p_pos: 0,
            s_order: vec![],
            s_pos: 0,
        })
    }

    /// Batches per epoch (`len(primary) // primary_batch`).
    pub fn epoch_len(&self) -> usize {
        self.primary.len() / self.primary_batch
    }

    /// The next batch: (primary indices, secondary indices).
    pub fn next_batch(&mut self, rng: &mut impl Rng) -> (Vec<usize>, Vec<usize>) {
        if self.p_pos + self.primary_batch > self.p_order.len() {
            self.p_order = self.primary.clone();
            self.p_order.shuffle(rng);
            self.p_pos = 0;
        }
        let p = self.p_order[self.p_pos..self.p_pos + self.primary_batch].to_vec();
        self.p_pos += self.primary_batch;
        let mut s = Vec::with_capacity(self.secondary_batch);
        while s.len() < self.secondary_batch {
            if self.s_pos >= self.s_order.len() {
                self.s_order = self.secondary.clone();
                self.s_order.shuffle(rng);
                self.s_pos = 0;
            }
            s.push(self.s_order[self.s_pos]);
            self.s_pos += 1;
        }
        (p, s)
    }
}
