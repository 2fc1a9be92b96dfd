//! Patch-level mixing and soft targets (official code: `module/mix.py`, `PatchMixer.__call__`,
//! `soft_target`, `soft_mix_target`).
//!
//! For a batch `X ∈ ℝ^{B×C×H×W}` patchified at the ViT patch size `P` into `T = (H/P)(W/P)`
//! positions, and `m` sources per mixed image:
//!
//! 1. draw one permutation `π` of the `T` positions, **shared by the whole batch**;
//! 2. with `S = ⌊T/m⌋`, the first `S·m` permuted positions form `m` chunks `C_0 … C_{m−1}`;
//!    mixed image `g` takes the patches at the positions of chunk `C_j` from image
//!    `(g + j) mod B`; the `T − S·m` leftover positions keep image `g`'s own patches;
//! 3. every patch stays at its **original spatial position**; only its source image changes.
//!
//! Mixing happens in pixel space at the patch size, which is the same as mixing the patch
//! tokens before the ViT's patch embedding (position embeddings are per position).
//!
//! Soft targets (rows index mixed queries, columns the global batch of keys, `N` columns with the
//! local batch at column offset `offset`, smoothing `s`):
//! * mixed vs original keys: `t[g, offset + (g+j) mod B] = (1−s)/m + s/N` for `j = 0…m−1`;
//! * mixed vs mixed keys: `t[g, offset + (g+d) mod B] = (1−s)·(m−|d|)/m² + s/N` for
//!   `d = −(m−1)…(m−1)` (the weight is the share of source images two mixed images have in
//!   common);
//! * every other entry `s/N`. With `m = 1` (or when mixing is skipped) both are the identity.
//!
//! Where `B < 2m − 1` the wrapped indices coincide; the contributions are then added, so rows
//! still sum to one (the official code assumes `B ≫ m`).

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// The patch mixer. Defaults follow every official config: `m = 2`, `p = 1.0`, no smoothing.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchMixer {
    /// Sources per mixed image (`mix_n`), ≥ 1.
    pub m: i64,
    /// Probability of mixing a batch (`mix_p`); otherwise the batch is returned unchanged with
    /// identity targets.
    pub p: f64,
    /// Patch size in pixels (`mix_size`, equal to the ViT patch size).
    pub patch: i64,
    /// Label smoothing `s` of the soft targets.
    pub smoothing: f64,
}

/// A mixed batch and its targets.
#[derive(Debug)]
pub struct MixOutput {
    /// `[B, C, H, W]` mixed images (or the input when not mixed).
    pub images: Tensor,
    /// `[B, N]` targets of mixed queries against original keys.
    pub mix_target: Tensor,
    /// `[B, N]` targets of mixed queries against mixed keys.
    pub mixmix_target: Tensor,
    /// `[T]` the shared permutation of patch positions (`None` when not mixed).
    pub permutation: Option<Tensor>,
    /// Whether this batch was mixed.
    pub mixed: bool,
}

impl PatchMixer {
    /// Validates the arguments.
    pub fn new(m: i64, p: f64, patch: i64, smoothing: f64) -> Result<Self> {
        if m < 1 {
            bail!("Illegal number of mixed sources m = {m} (must be ≥ 1)");
        }
        if !(0.0..=1.0).contains(&p) {
            bail!("Illegal mixing probability {p} (must be in [0, 1])");
        }
        if patch < 1 {
            bail!("Illegal patch size {patch}");
        }
        if !(0.0..1.0).contains(&smoothing) {
            bail!("Illegal label smoothing {smoothing} (must be in [0, 1))");
        }
        Ok(Self {
            m,
            p,
            patch,
            smoothing,
        })
    }

    /// Mix a local batch `x` (`[B, C, H, W]`, already normalised) and return its targets.
    /// `global_batch` is the number of key columns `N` and `offset` the column of this batch's
    /// first sample (`rank·B` with several devices; `N = B`, `offset = 0` on one device).
    /// Randomness comes from libtorch's generator (one draw for `p`, one permutation).
    /// A training loop can call [`PatchMixer::should_mix`] and [`PatchMixer::mix_images`] and
    /// build the (constant) targets once instead.
    pub fn mix(&self, x: &Tensor, global_batch: i64, offset: i64) -> Result<MixOutput> {
        let b = x.size4()?.0;
        if offset < 0 || offset + b > global_batch {
            bail!(
                "local batch {b} at offset {offset} does not fit a global batch of {global_batch}"
            );
        }
        let (images, permutation) = self.mix_images(x, self.should_mix())?;
        let (mix_target, mixmix_target) = match permutation {
            Some(_) => self.targets(b, global_batch, offset, x.device()),
            None => {
                let eye = self.unmixed_targets(b, global_batch, offset, x.device());
                (eye.shallow_clone(), eye)
            }
        };
        Ok(MixOutput {
            images,
            mixed: permutation.is_some(),
            mix_target,
            mixmix_target,
            permutation,
        })
    }

    /// Whether to mix this batch: `m > 1` and a draw below `p` (no draw when `p` is 0 or 1).
    pub fn should_mix(&self) -> bool {
        self.m > 1
            && self.p > 0.0
            && (self.p >= 1.0
                || Tensor::rand([1], (Kind::Double, Device::Cpu)).double_value(&[0]) < self.p)
    }

    /// The mixed images `[B, C, H, W]` and the shared permutation `[T]` of patch positions; with
    /// `apply = false` the input itself and `None`.
    pub fn mix_images(&self, x: &Tensor, apply: bool) -> Result<(Tensor, Option<Tensor>)> {
        let (b, _c, h, w) = x.size4()?;
        let p = self.patch;
        if h % p != 0 || w % p != 0 {
            bail!("image size {h}×{w} is not a multiple of the patch size {p}");
        }
        if !apply || self.m < 2 {
            return Ok((x.shallow_clone(), None));
        }
        let dev = x.device();
        let tokens = patchify(x, p)?; // [B, T, C·P·P]
        let t = tokens.size()[1];
        let perm = Tensor::randperm(t, (Kind::Int64, dev)); // [T], shared by the batch
        let s = t / self.m;
        let out = tokens.copy(); // leftover positions keep their own patches
        let g = Tensor::arange(b, (Kind::Int64, dev));
        for j in 1..self.m {
            // chunk C_j: positions π[j·S .. (j+1)·S], taken from image (g + j) mod B
            let pos = perm.narrow(0, j * s, s); // [S]
            let src = (&g + j).remainder(b); // [B]
            let patches = tokens.index_select(0, &src).index_select(1, &pos); // [B, S, D]
            let mut o = out.shallow_clone();
            let _ = o.index_copy_(1, &pos, &patches);
        }
        Ok((unpatchify(&out, x.size4()?, p), Some(perm)))
    }

    /// Targets of an unmixed batch: the (smoothed) identity at column `offset + i`.
    pub fn unmixed_targets(&self, b: i64, n: i64, offset: i64, dev: Device) -> Tensor {
        self.smoothed(&identity_rows(b, n, offset, dev), n)
    }

    /// The two soft-target matrices for a mixed local batch of `b` (see the module docs).
    pub fn targets(&self, b: i64, n: i64, offset: i64, dev: Device) -> (Tensor, Tensor) {
        let m = self.m;
        let g = Tensor::arange(b, (Kind::Int64, dev));
        let mix = Tensor::zeros([b, n], (Kind::Float, dev));
        for j in 0..m {
            let cols = (&g + j).remainder(b) + offset;
            let vals = Tensor::full([b, 1], 1.0 / m as f64, (Kind::Float, dev));
            let _ = mix
                .shallow_clone()
                .scatter_add_(1, &cols.unsqueeze(1), &vals);
        }
        let mixmix = Tensor::zeros([b, n], (Kind::Float, dev));
        for d in -(m - 1)..m {
            let cols = (&g + d).remainder(b) + offset; // remainder follows the divisor's sign: ≥ 0
            let wgt = (m - d.abs()) as f64 / (m * m) as f64;
            let vals = Tensor::full([b, 1], wgt, (Kind::Float, dev));
            let _ = mixmix
                .shallow_clone()
                .scatter_add_(1, &cols.unsqueeze(1), &vals);
        }
        (self.smoothed(&mix, n), self.smoothed(&mixmix, n))
    }

    fn smoothed(&self, t: &Tensor, n: i64) -> Tensor {
        smooth(t, self.smoothing, n)
    }
}

/// Label smoothing as the official `PatchMixer._one_hot` applies it: every entry gets `s / n`,
/// the true columns share `1 − s` (`t` is row-stochastic).
fn smooth(t: &Tensor, s: f64, n: i64) -> Tensor {
    if s == 0.0 {
        t.shallow_clone()
    } else {
        t * (1.0 - s) + s / n as f64
    }
}

/// The target of the unmixed source term (and of the unmixed local crops): the identity at
/// column `offset + i`, smoothed by `s`. The official code builds it with a second
/// `PatchMixer(mix_p=0.0, mix_n=1)` (`no_mixer`, `main_pretrain.py`) that keeps the class's
/// default `smoothing=0.1`, whatever the mixer's own smoothing is.
pub fn source_targets(b: i64, n: i64, offset: i64, s: f64, dev: Device) -> Tensor {
    smooth(&identity_rows(b, n, offset, dev), s, n)
}

fn identity_rows(b: i64, n: i64, offset: i64, dev: Device) -> Tensor {
    let t = Tensor::zeros([b, n], (Kind::Float, dev));
    let cols = Tensor::arange(b, (Kind::Int64, dev)) + offset;
    let ones = Tensor::ones([b, 1], (Kind::Float, dev));
    t.scatter(1, &cols.unsqueeze(1), &ones)
}

/// `[B, C, H, W]` → `[B, T, C·P·P]` with positions in row-major order (`t = row·(W/P) + col`).
pub fn patchify(x: &Tensor, p: i64) -> Result<Tensor> {
    let (b, c, h, w) = x.size4()?;
    if h % p != 0 || w % p != 0 {
        bail!("image size {h}×{w} is not a multiple of the patch size {p}");
    }
    let (hp, wp) = (h / p, w / p);
    Ok(x.view([b, c, hp, p, wp, p])
        .permute([0, 2, 4, 1, 3, 5]) // [B, Hp, Wp, C, P, P]
        .reshape([b, hp * wp, c * p * p]))
}

/// Inverse of [`patchify`].
pub fn unpatchify(tokens: &Tensor, (b, c, h, w): (i64, i64, i64, i64), p: i64) -> Tensor {
    let (hp, wp) = (h / p, w / p);
    tokens
        .view([b, hp, wp, c, p, p])
        .permute([0, 3, 1, 4, 2, 5]) // [B, C, Hp, P, Wp, P]
        .reshape([b, c, h, w])
}
