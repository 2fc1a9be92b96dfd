//! Contrastive objectives: InfoNCE (hard and soft targets), NT-Xent, multi-positive InfoNCE
//! (SupCon-style) and the CLIP losses (hard, given soft targets, and the self-similarity
//! soft-target variant).
//!
//! Every loss is computed from `log_softmax` of the logits (numerically stable: no explicit
//! `exp` of a similarity), batched on the device of its inputs, and returns a scalar tensor
//! (mean over anchors). Hyper-parameters are validated at construction ("Illegal temperature");
//! shapes come from data, so every `forward` returns `Result` and names the shapes at fault.
//!
//! Conventions shared by all losses:
//! * `normalize = true` (the default) L2-normalises the embeddings inside, like
//!   `F.normalize(x, dim=1)` (PatchMix `module/loss.py`, lightly `NTXentLoss`, SupCon);
//! * soft targets are row-stochastic `[N, M]` matrices; by default their rows are checked to
//!   sum to 1 within [`TARGET_ROW_TOLERANCE`] (this reads one scalar back from the device, i.e.
//!   one synchronisation per call; switch it off with `check_targets = false` in hot loops once a
//!   pipeline is known good).

use anyhow::{bail, ensure, Context, Result};
use tch::{nn, Kind, Tensor};

/// Largest accepted `|Σ_j t_ij − 1|` of a soft-target row.
pub const TARGET_ROW_TOLERANCE: f64 = 1e-4;

/// InfoNCE with hard (diagonal) targets: row `i` of `query` is positive with row `i` of `key`
/// and negative with every other row (van den Oord et al. 2018, <https://arxiv.org/abs/1807.03748>).
///
/// `query`, `key`: `[N, D]`, L2-normalised inside. `temperature` > 0. Returns the mean
/// cross-entropy of `query·keyᵀ / temperature` against the identity, a scalar.
///
/// Panics on a non-positive temperature; prefer [`InfoNce`], which validates at construction
/// and returns shape errors.
pub fn info_nce(query: &Tensor, key: &Tensor, temperature: f64) -> Tensor {
    assert!(temperature > 0.0, "Illegal temperature {temperature}");
    let q = normalize(query); // [N, D]
    let k = normalize(key); // [N, D]
    let logits = q.matmul(&k.transpose(0, 1)) / temperature; // [N, N]
    let n = logits.size()[0];
    let targets = Tensor::arange(n, (Kind::Int64, logits.device()));
    logits.cross_entropy_for_logits(&targets)
}

/// Row-wise L2 normalisation, `x / max(‖x‖, 1e-12)` like `F.normalize`.
pub fn normalize(x: &Tensor) -> Tensor {
    let norm = x
        .norm_scalaropt_dim(2.0, [-1].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}

fn check_temperature(temperature: f64) -> Result<()> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        bail!("Illegal temperature {temperature}: it must be finite and > 0");
    }
    Ok(())
}

/// `(rows, cols)` of a 2-D tensor, or an error naming `what`.
fn dims2(t: &Tensor, what: &str) -> Result<(i64, i64)> {
    let s = t.size();
    ensure!(s.len() == 2, "{what} must be 2-D [N, D], got shape {s:?}");
    Ok((s[0], s[1]))
}

/// Check that a query `[N, D]` and key `[M, D]` set can be compared; returns `(N, M)`.
fn check_pair(query: &Tensor, key: &Tensor, qn: &str, kn: &str) -> Result<(i64, i64)> {
    let (n, d) = dims2(query, qn)?;
    let (m, dk) = dims2(key, kn)?;
    ensure!(
        d == dk,
        "{qn} has dimension {d} but {kn} has {dk} (shapes {:?} and {:?})",
        query.size(),
        key.size()
    );
    ensure!(
        n > 0 && m > 0,
        "empty batch: {qn} {:?}, {kn} {:?}",
        query.size(),
        key.size()
    );
    Ok((n, m))
}

/// Check that `targets` is `[n, m]` (and, with `rows_sum_to_one`, row-stochastic).
fn check_targets(targets: &Tensor, n: i64, m: i64, rows_sum_to_one: bool) -> Result<()> {
    let s = targets.size();
    ensure!(
        s == [n, m],
        "soft targets have shape {s:?} but the logits are [{n}, {m}]"
    );
    ensure!(
        targets.is_floating_point(),
        "soft targets must be a floating-point tensor, got {:?}",
        targets.kind()
    );
    if rows_sum_to_one {
        // one device → host read: the largest deviation of a row sum from 1
        let dev = tch::no_grad(|| {
            (targets
                .detach()
                .sum_dim_intlist([1].as_slice(), false, Kind::Double)
                - 1.0)
                .abs()
                .max()
                .double_value(&[])
        });
        ensure!(
            dev <= TARGET_ROW_TOLERANCE,
            "soft targets are not row-stochastic: a row sums to 1 ± {dev:.3e} (tolerance {TARGET_ROW_TOLERANCE})"
        );
    }
    Ok(())
}

/// Soft cross-entropy `mean_i Σ_j −t_ij · log_softmax(logits)_ij` (timm `SoftTargetCrossEntropy`,
/// used by PatchMix `module/loss.py`). `logits`, `targets`: `[N, M]`. Targets are not checked
/// here; the losses below check them.
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    let logp = logits.log_softmax(-1, None); // [N, M]
    (-(targets * logp))
        .sum_dim_intlist([1].as_slice(), false, None)
        .mean(None)
}

/// InfoNCE, the loss of CPC / MoCo / PatchMix, with hard or soft targets
/// (van den Oord et al. 2018, <https://arxiv.org/abs/1807.03748>; PatchMix, Shen et al. 2023,
/// <https://arxiv.org/abs/2306.12243>, `module/loss.py`).
///
/// `logits = q̂·k̂ᵀ / τ` (`[N, M]`, q̂, k̂ L2-normalised when `normalize`), then
/// * hard: `L = mean_i −log softmax(logits)_{i, y_i}` with `y_i = i` ([`InfoNce::forward`]) or
///   given labels ([`InfoNce::forward_labels`], e.g. a MoCo queue with the positive at column 0);
/// * soft: `L = mean_i Σ_j −t_ij log softmax(logits)_ij` with a row-stochastic `t`
///   ([`InfoNce::forward_soft`]; PatchMix's mixed targets).
///
/// ```no_run
/// # use contrast_core::loss::InfoNce;
/// # use tch::{Kind, Device, Tensor};
/// let loss = InfoNce::new(0.2)?;
/// let q = Tensor::randn([8, 16], (Kind::Float, Device::Cpu));
/// let k = Tensor::randn([8, 16], (Kind::Float, Device::Cpu));
/// let l = loss.forward(&q, &k)?; // scalar
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct InfoNce {
    /// τ > 0 (PatchMix 0.2, MoCo-v2 0.2, MoCo-v1 0.07).
    pub temperature: f64,
    /// L2-normalise query and key inside (default true).
    pub normalize: bool,
    /// Check that soft-target rows sum to 1 (default true; costs one device sync).
    pub check_targets: bool,
}

impl InfoNce {
    pub fn new(temperature: f64) -> Result<Self> {
        check_temperature(temperature)?;
        Ok(Self {
            temperature,
            normalize: true,
            check_targets: true,
        })
    }

    /// `q̂·k̂ᵀ / τ`: `query [N, D]`, `key [M, D]` → `[N, M]`.
    pub fn logits(&self, query: &Tensor, key: &Tensor) -> Result<Tensor> {
        check_pair(query, key, "query", "key")?;
        let (q, k) = if self.normalize {
            (normalize(query), normalize(key))
        } else {
            (query.shallow_clone(), key.shallow_clone())
        };
        Ok(q.matmul(&k.transpose(0, 1)) / self.temperature) // [N, M]
    }

    /// Hard targets `y_i = i`: `query [N, D]`, `key [M, D]` with `M ≥ N` (extra keys, e.g. a
    /// memory bank appended after the batch, are negatives only).
    pub fn forward(&self, query: &Tensor, key: &Tensor) -> Result<Tensor> {
        let logits = self.logits(query, key)?;
        let (n, m) = (logits.size()[0], logits.size()[1]);
        ensure!(
            m >= n,
            "hard-target InfoNCE needs at least as many keys as queries: {n} queries, {m} keys"
        );
        let targets = Tensor::arange(n, (Kind::Int64, logits.device())); // [N]
        Ok(logits.cross_entropy_for_logits(&targets))
    }

    /// Hard targets given as class indices `labels [N]` (int64) into the `M` keys.
    pub fn forward_labels(&self, query: &Tensor, key: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let logits = self.logits(query, key)?;
        let n = logits.size()[0];
        ensure!(
            labels.size() == [n] && labels.kind() == Kind::Int64,
            "labels must be int64 [{n}], got {:?} {:?}",
            labels.kind(),
            labels.size()
        );
        Ok(logits.cross_entropy_for_logits(labels))
    }

    /// Soft targets `targets [N, M]`, row-stochastic (PatchMix `soft_target` / `soft_mix_target`).
    pub fn forward_soft(&self, query: &Tensor, key: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = self.logits(query, key)?; // [N, M]
        let (n, m) = (logits.size()[0], logits.size()[1]);
        check_targets(targets, n, m, self.check_targets)?;
        Ok(soft_cross_entropy(&logits, targets))
    }
}

/// NT-Xent, the SimCLR loss (Chen et al. 2020, <https://arxiv.org/abs/2002.05709>), in the 2N
/// layout `[x₁…x_N, x'₁…x'_N]` (VISSL `simclr_collator`; GraSS `simclr_info_nce_loss.py`):
///
/// ```text
/// s_ij = ẑ_i·ẑ_j / τ,  p(i) = (i + N) mod 2N
/// L = −1/(2N) Σ_i log( exp s_{i,p(i)} / Σ_{k≠i} exp s_ik )
/// ```
/// i.e. one positive and 2N−2 negatives per anchor; the self-similarity is masked out (set to
/// −∞ before the log-softmax). VISSL computes `exp` directly; we use `log_softmax` (same value,
/// stable for any τ).
#[derive(Debug, Clone, PartialEq)]
pub struct NtXent {
    /// τ > 0 (SimCLR 0.5 for GraSS, solo-learn 0.2, lightly default 0.5).
    pub temperature: f64,
    /// L2-normalise inside (default true).
    pub normalize: bool,
}

impl NtXent {
    pub fn new(temperature: f64) -> Result<Self> {
        check_temperature(temperature)?;
        Ok(Self {
            temperature,
            normalize: true,
        })
    }

    /// `z [2N, D]`: rows `i` and `i + N` are the two views of sample `i`.
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let (n2, _) = dims2(z, "NT-Xent embeddings")?;
        ensure!(
            n2 >= 2 && n2 % 2 == 0,
            "NT-Xent needs an even number (≥ 2) of rows in the 2N layout, got shape {:?}",
            z.size()
        );
        let n = n2 / 2;
        let z = if self.normalize {
            normalize(z)
        } else {
            z.shallow_clone()
        }; // [2N, D]
        let dev = z.device();
        let eye = Tensor::eye(n2, (Kind::Bool, dev)); // [2N, 2N]
        let logits = (z.matmul(&z.transpose(0, 1)) / self.temperature) // [2N, 2N]
            .masked_fill(&eye, f64::NEG_INFINITY);
        let idx = Tensor::arange(n2, (Kind::Int64, dev));
        let targets = (idx + n).remainder(n2); // [2N]: (i + N) mod 2N
        Ok(logits.cross_entropy_for_logits(&targets))
    }

    /// Two views `z1 [N, D]`, `z2 [N, D]` (concatenated into the 2N layout).
    pub fn forward_pair(&self, z1: &Tensor, z2: &Tensor) -> Result<Tensor> {
        let s1 = z1.size();
        ensure!(
            s1 == z2.size(),
            "NT-Xent views differ in shape: {s1:?} vs {:?}",
            z2.size()
        );
        self.forward(&Tensor::cat(&[z1, z2], 0))
    }
}

/// Multi-positive InfoNCE driven by a positive mask: the SupCon "L_out" objective (Khosla et al.
/// 2020, <https://arxiv.org/abs/2004.11362>, Eq. 2; reference code `HobbitLong/SupContrast`
/// `losses.py`), also the multi-positive loss of SPPS-style semantic pairs.
///
/// With `s = q̂·k̂ᵀ / τ` (`[N, M]`) and weights `w_ij ≥ 0` (the mask; bool → 0/1):
/// ```text
/// log p_ij = s_ij − log Σ_{a ∈ A(i)} exp s_ia        A(i) = all keys (self excluded in forward)
/// ℓ_i      = − Σ_j w_ij log p_ij / Σ_j w_ij          (mean over the positives of −log p)
/// L        = mean of ℓ_i over anchors with Σ_j w_ij > 0
/// ```
/// Departures from the SupCon code, both deliberate: no `temperature / base_temperature`
/// factor (it is 1 at SupCon's defaults); anchors without any positive are **excluded** from
/// the mean (the reference code divides by zero there, or in later versions counts them as 0).
/// If no anchor has a positive, the loss is 0 (still connected to the graph).
/// Float masks weigh positives; weights must be ≥ 0 (not checked, to avoid a device sync).
#[derive(Debug, Clone, PartialEq)]
pub struct MultiPositiveInfoNce {
    /// τ > 0 (SupCon 0.07 / 0.1, SimCLR-style 0.2–0.5).
    pub temperature: f64,
    /// L2-normalise inside (default true).
    pub normalize: bool,
}

impl MultiPositiveInfoNce {
    pub fn new(temperature: f64) -> Result<Self> {
        check_temperature(temperature)?;
        Ok(Self {
            temperature,
            normalize: true,
        })
    }

    /// SupCon layout: `features [N, D]` are both anchors and contrast set; `positives [N, N]`
    /// (bool or float). The diagonal (self) is removed from positives and denominator.
    pub fn forward(&self, features: &Tensor, positives: &Tensor) -> Result<Tensor> {
        self.compute(features, features, positives, true)
    }

    /// Queries `query [N, D]` against keys `key [M, D]` (e.g. a MoCo queue) with
    /// `positives [N, M]`; nothing is excluded from the denominator.
    pub fn forward_qk(&self, query: &Tensor, key: &Tensor, positives: &Tensor) -> Result<Tensor> {
        self.compute(query, key, positives, false)
    }

    /// Convenience: positives are the pairs with equal `labels [N]` (SupCon with class labels,
    /// or SimCLR-style sample indices as in solo-learn `simclr_loss_func(z, indexes)`).
    pub fn forward_labels(&self, features: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let (n, _) = dims2(features, "features")?;
        ensure!(
            labels.size() == [n],
            "labels must be [{n}], got {:?}",
            labels.size()
        );
        let mask = labels.unsqueeze(1).eq_tensor(&labels.unsqueeze(0)); // [N, N] bool
        self.forward(features, &mask)
    }

    fn compute(
        &self,
        query: &Tensor,
        key: &Tensor,
        positives: &Tensor,
        exclude_self: bool,
    ) -> Result<Tensor> {
        let (n, m) = check_pair(query, key, "query", "key")?;
        ensure!(
            positives.size() == [n, m],
            "positive mask has shape {:?} but the logits are [{n}, {m}]",
            positives.size()
        );
        let (q, k) = if self.normalize {
            (normalize(query), normalize(key))
        } else {
            (query.shallow_clone(), key.shallow_clone())
        };
        let dev = q.device();
        let mut logits = q.matmul(&k.transpose(0, 1)) / self.temperature; // [N, M]
        let mut w = positives.to_kind(logits.kind()); // [N, M] weights
        let self_mask = if exclude_self {
            ensure!(n == m, "self-exclusion needs a square mask, got [{n}, {m}]");
            let eye = Tensor::eye(n, (Kind::Bool, dev)); // [N, N]
            logits = logits.masked_fill(&eye, f64::NEG_INFINITY);
            w = w.masked_fill(&eye, 0.0);
            Some(eye)
        } else {
            None
        };
        let mut logp = logits.log_softmax(-1, None); // [N, M], −∞ on the diagonal
        if let Some(eye) = &self_mask {
            logp = logp.masked_fill(eye, 0.0); // 0·(−∞) would be NaN
        }
        let npos = w.sum_dim_intlist([1].as_slice(), false, None); // [N]
        let per_anchor =
            -(&w * logp).sum_dim_intlist([1].as_slice(), false, None) / npos.clamp_min(1e-12); // [N]
        let valid = npos.gt(0.0).to_kind(per_anchor.kind()); // [N]
        let count = valid.sum(None).clamp_min(1.0);
        Ok((per_anchor * valid).sum(None) / count)
    }
}

/// CLIP loss with a learnable temperature (Radford et al. 2021, <https://arxiv.org/abs/2103.00020>;
/// open_clip `loss.py::ClipLoss`, `model.py`):
///
/// ```text
/// s = exp(logit_scale)       logit_scale initialised to ln(1/0.07) ≈ 2.6593
/// logits_img = s · Î T̂ᵀ  [B, B],   logits_txt = logits_imgᵀ
/// L = ( CE(logits_img, arange B) + CE(logits_txt, arange B) ) / 2
/// ```
/// The variable is named `logit_scale` under the given path (open_clip's name). Call
/// [`ClipLoss::clamp`] after every optimiser step: it clamps the **parameter** to
/// `[0, ln max_logit_scale]` (ln 100 ≈ 4.6052), as open_clip `clamp_logit_scale`. Exclude it
/// from weight decay (open_clip's legacy script does; [`crate::optim::decay_groups`] puts 0-D
/// and 1-D tensors in the no-decay group).
#[derive(Debug)]
pub struct ClipLoss {
    /// The learnable log-scale, a 0-D variable.
    pub logit_scale: Tensor,
    /// The clamp's upper bound on `exp(logit_scale)` (default 100).
    pub max_logit_scale: f64,
    /// L2-normalise the features inside (default true; open_clip normalises in the encoders).
    pub normalize: bool,
    /// Check that soft-target rows sum to 1 (default true).
    pub check_targets: bool,
}

impl ClipLoss {
    /// `init_temperature` τ₀ > 0 (open_clip 0.07): `logit_scale = ln(1/τ₀)`.
    pub fn new(path: &nn::Path, init_temperature: f64) -> Result<Self> {
        check_temperature(init_temperature)?;
        let init = (1.0 / init_temperature).ln();
        let logit_scale = path
            .f_var("logit_scale", &[], nn::Init::Const(init))
            .context("creating the CLIP logit_scale variable")?;
        Ok(Self {
            logit_scale,
            max_logit_scale: 100.0,
            normalize: true,
            check_targets: true,
        })
    }

    /// `exp(logit_scale)` as a number (for logging).
    pub fn scale(&self) -> f64 {
        self.logit_scale.double_value(&[]).exp()
    }

    /// Clamp the parameter in place to `[0, ln max_logit_scale]` (no gradient recorded).
    pub fn clamp(&mut self) {
        let hi = self.max_logit_scale.ln();
        tch::no_grad(|| {
            let _ = self.logit_scale.clamp_(0.0, hi);
        });
    }

    /// `(logits_img [B, B], logits_txt [B, B])` for `image [B, D]`, `text [B, D]`.
    pub fn logits(&self, image: &Tensor, text: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, bt) = check_pair(image, text, "image features", "text features")?;
        ensure!(
            b == bt,
            "CLIP needs as many texts as images: {b} images, {bt} texts"
        );
        let (i, t) = if self.normalize {
            (normalize(image), normalize(text))
        } else {
            (image.shallow_clone(), text.shallow_clone())
        };
        let li = i.matmul(&t.transpose(0, 1)) * self.logit_scale.exp(); // [B, B]
        let lt = li.transpose(0, 1); // [B, B]
        Ok((li, lt))
    }

    /// Hard targets: image `i` ↔ text `i`.
    pub fn forward(&self, image: &Tensor, text: &Tensor) -> Result<Tensor> {
        let (li, lt) = self.logits(image, text)?;
        let labels = Tensor::arange(li.size()[0], (Kind::Int64, li.device())); // [B]
        Ok((li.cross_entropy_for_logits(&labels) + lt.cross_entropy_for_logits(&labels)) / 2.0)
    }

    /// Soft targets `targets [B, B]` (row i: which texts match image i; row-stochastic). The
    /// text→image direction uses `targetsᵀ` renormalised by rows, so that both directions are
    /// proper distributions even when `targets` is not symmetric.
    pub fn forward_soft(&self, image: &Tensor, text: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let (li, lt) = self.logits(image, text)?;
        let b = li.size()[0];
        check_targets(targets, b, b, self.check_targets)?;
        let tt = targets.transpose(0, 1); // [B, B]
        let tt = &tt
            / tt.sum_dim_intlist([1].as_slice(), true, None)
                .clamp_min(1e-12);
        Ok((soft_cross_entropy(&li, targets) + soft_cross_entropy(&lt, &tt)) / 2.0)
    }
}

/// Soft-target CLIP of the `moein-shariatnia/OpenAI-CLIP` tutorial (`CLIP.py`), the likely
/// template of Dental CLAIRES (see `shared/papers/grass-claires.md` §2.2). No normalisation,
/// fixed temperature τ (tutorial 1.0):
///
/// ```text
/// logits  = T Iᵀ / τ                                   [B, B]  (rows: texts)
/// targets = softmax( (I Iᵀ + T Tᵀ)/2 · τ , dim=-1 )     [B, B]
/// L = mean_b ( Σ_j −targets log_softmax(logits) + Σ_j −targetsᵀ log_softmax(logitsᵀ) ) / 2
/// ```
/// As in the tutorial, the targets are **not detached** (gradients flow through them);
/// `detach_targets = true` stops them.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftClipLoss {
    pub temperature: f64,
    pub detach_targets: bool,
}

impl SoftClipLoss {
    pub fn new(temperature: f64) -> Result<Self> {
        check_temperature(temperature)?;
        Ok(Self {
            temperature,
            detach_targets: false,
        })
    }

    /// `image [B, D]`, `text [B, D]` (projected, not normalised).
    pub fn forward(&self, image: &Tensor, text: &Tensor) -> Result<Tensor> {
        let (b, bt) = check_pair(image, text, "image embeddings", "text embeddings")?;
        ensure!(
            b == bt,
            "CLIP needs as many texts as images: {b} images, {bt} texts"
        );
        let logits = text.matmul(&image.transpose(0, 1)) / self.temperature; // [B, B]
        let sim_i = image.matmul(&image.transpose(0, 1)); // [B, B]
        let sim_t = text.matmul(&text.transpose(0, 1)); // [B, B]
        let mut targets = ((sim_i + sim_t) / 2.0 * self.temperature).softmax(-1, None); // [B, B]
        if self.detach_targets {
            targets = targets.detach();
        }
        let row = |l: &Tensor, t: &Tensor| {
            (-(t * l.log_softmax(-1, None))).sum_dim_intlist([1].as_slice(), false, None)
        }; // [B]
        let texts_loss = row(&logits, &targets);
        let images_loss = row(&logits.transpose(0, 1), &targets.transpose(0, 1));
        Ok(((images_loss + texts_loss) / 2.0).mean(None))
    }
}
