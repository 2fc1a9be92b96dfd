//! FBA-Net objective (official `code/utils/losses.py` and `code/train_3d.py`; notes §1c).
//!
//! ```text
//! L = λ · Σ_d Dice(softmax(o_d)[:L, 1], y[:L])                      (labelled half, λ = 0.5)
//!   + w(t) · Σ_{i≠j} mean((P_i − sharpen(P_j))²)                    (mutual consistency, all samples)
//!   + Σ_d [SimMax(fg_d) + SimMax(bg_d) + SimMin(fg_d, bg_d)]         (contrast, all samples)
//! ```
//! with `sharpen(P) = P^{1/T} / (P^{1/T} + (1 − P)^{1/T})`, T = 0.1, and
//! `w(t) = exp(−5 (1 − clip(⌊t/150⌋, 0, 40)/40)²)` (sigmoid ramp-up, `t` = 1-based iteration).

use anyhow::{bail, Context, Result};
use contrast_core::dist;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// `cos_simi(a, b) = clamp(normalize(a) · normalize(b)ᵀ, 0.0005, 0.9995)` → `[N, M]`.
pub fn cos_simi(a: &Tensor, b: &Tensor) -> Tensor {
    let n = |x: &Tensor| {
        let norm = x
            .norm_scalaropt_dim(2.0, [1i64].as_slice(), true)
            .clamp_min(1e-12);
        x / norm
    };
    n(a).matmul(&n(b).tr()).clamp(0.0005, 0.9995)
}

/// Rank weights `exp(−α·(rank − 1))` where `rank` is the position of each entry in its row
/// sorted in descending order (the largest gets rank −1 → weight `e^α`). Computed without
/// gradient (the reference's weights come from integer ranks). Ties are ordered by a stable
/// sort (the reference's `sort` does not specify tie order).
pub fn rank_weights(sim: &Tensor, alpha: f64) -> Tensor {
    tch::no_grad(|| {
        let (_, idx) = sim.sort_stable(true, 1, true);
        let (_, rank) = idx.sort_stable(true, 1, false);
        ((rank.to_kind(Kind::Float) - 1.0) * (-alpha)).exp()
    })
}

/// `SimMaxLoss(z)` (α = 0.25): pulls embeddings of the same kind together,
/// `mean_{ij} w_ij · (−log S_ij)` over `S = cos_simi(z, z)` (diagonal included).
pub fn sim_max(z: &Tensor, alpha: f64) -> Tensor {
    let s = cos_simi(z, z);
    let loss = -s.log();
    (loss * rank_weights(&s, alpha)).mean(Kind::Float)
}

/// `SimMinLoss(fg, bg)` (α = 2.5): pushes foreground from background,
/// `mean_{ij} w_ij · (−log(1 − S_ij))` over `S = cos_simi(fg, bg)` (all pairs).
pub fn sim_min(fg: &Tensor, bg: &Tensor, alpha: f64) -> Tensor {
    let s = cos_simi(fg, bg);
    let loss = -(s.ones_like() - &s).log();
    (loss * rank_weights(&s, alpha)).mean(Kind::Float)
}

/// The Dice loss of the labelled term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiceForm {
    /// FBA-Net / MC-Net+ `Binary_dice_loss`: `1 − (2Σpg + 1e-8)/(Σp + Σg + 1e-8)`.
    #[default]
    FbaNet,
    /// UA-MT `utils/losses.py` `dice_loss`: `1 − (2Σpg + 1e-5)/(Σp² + Σg² + 1e-5)`.
    UaMt,
}

impl DiceForm {
    /// The three sums the loss is made of, `[Σpg, Σp, Σg]` (UA-MT: `[Σpg, Σp², Σg²]`), as one
    /// tensor `[3]`: over several ranks they add up.
    pub fn sums(self, prob: &Tensor, target: &Tensor) -> Tensor {
        let t = target.to_kind(prob.kind());
        let (a, b) = match self {
            DiceForm::FbaNet => (prob.sum(Kind::Float), t.sum(Kind::Float)),
            DiceForm::UaMt => ((prob * prob).sum(Kind::Float), (&t * &t).sum(Kind::Float)),
        };
        Tensor::stack(&[(prob * &t).sum(Kind::Float), a, b], 0)
    }

    /// The loss from [`DiceForm::sums`].
    pub fn loss(self, sums: &Tensor) -> Tensor {
        let eps = match self {
            DiceForm::FbaNet => 1e-8,
            DiceForm::UaMt => 1e-5,
        };
        let inter = sums.get(0) * 2.0 + eps;
        let union = sums.get(1) + sums.get(2) + eps;
        inter.ones_like() - inter / union
    }
}

/// UA-MT's `dice_loss(score, target)`: `1 − (2Σpg + 1e-5)/(Σp² + Σg² + 1e-5)` over the whole
/// tensor.
pub fn uamt_dice_loss(prob: &Tensor, target: &Tensor) -> Tensor {
    DiceForm::UaMt.loss(&DiceForm::UaMt.sums(prob, target))
}

/// `Binary_dice_loss(p, g) = 1 − (2Σpg + ε)/(Σp + Σg + ε)`, ε = 1e-8, over the whole tensor.
pub fn binary_dice_loss(prob: &Tensor, target: &Tensor) -> Tensor {
    DiceForm::FbaNet.loss(&DiceForm::FbaNet.sums(prob, target))
}

/// `sharpening(P) = P^{1/T} / (P^{1/T} + (1 − P)^{1/T})`.
pub fn sharpen(p: &Tensor, temperature: f64) -> Tensor {
    let e = 1.0 / temperature;
    let a = p.pow_tensor_scalar(e);
    let b = (p.ones_like() - p).pow_tensor_scalar(e);
    &a / (&a + b)
}

/// `Σ_{i≠j} mean((P_i − sharpen(P_j))²)` over decoder probabilities `P_d` (softmax, `[N, C, …]`).
/// Gradients flow through both sides, as in the reference (no stop-gradient).
pub fn mutual_consistency(probs: &[Tensor], temperature: f64) -> Tensor {
    let sharp: Vec<Tensor> = probs.iter().map(|p| sharpen(p, temperature)).collect();
    let mut total = Tensor::zeros([], (Kind::Float, probs[0].device()));
    for (i, p) in probs.iter().enumerate() {
        for (j, s) in sharp.iter().enumerate() {
            if i != j {
                total += (p - s).square().mean(Kind::Float);
            }
        }
    }
    total
}

/// `sigmoid_rampup(current, length) = exp(−5 (1 − clip(current, 0, length)/length)²)` (1 when
/// `length == 0`).
pub fn sigmoid_rampup(current: f64, length: f64) -> f64 {
    if length == 0.0 {
        return 1.0;
    }
    let c = current.clamp(0.0, length);
    let phase = 1.0 - c / length;
    (-5.0 * phase * phase).exp()
}

/// Consistency weight at 1-based iteration `iter`: `consistency · sigmoid_rampup(⌊iter/every⌋,
/// rampup)` (reference: `every` = 150, `rampup` = 40, `consistency` = 1).
pub fn consistency_weight(iter: u64, every: u64, rampup: f64, consistency: f64) -> f64 {
    consistency * sigmoid_rampup((iter / every.max(1)) as f64, rampup)
}

/// Weights and constants of the objective.
#[derive(Debug, Clone, Copy)]
pub struct LossWeights {
    /// λ on the Dice term (0.5).
    pub lambda_seg: f64,
    /// Which Dice loss.
    pub dice: DiceForm,
    /// Weight on a cross-entropy term over the labelled voxels (0: FBA-Net's objective has
    /// none; UA-MT's supervised baseline uses 0.5·(CE + Dice)).
    pub ce: f64,
    /// w(t) on the consistency term.
    pub consistency: f64,
    /// Weight on the contrastive term (1; 0 disables it — the MC-Net+ / baseline case).
    pub contrast: f64,
    /// Sharpening temperature T (0.1).
    pub temperature: f64,
    /// SimMax rank α (0.25).
    pub alpha_max: f64,
    /// SimMin rank α (2.5).
    pub alpha_min: f64,
}

/// One decoder's outputs.
pub struct DecoderOutputs<'a> {
    /// Logits `[N, 2, X, Y, Z]`.
    pub logits: &'a Tensor,
    /// Foreground / background embeddings `[N, D]` (`None` without the contrastive head).
    pub fg: Option<&'a Tensor>,
    pub bg: Option<&'a Tensor>,
}

/// The loss terms of one step.
pub struct Terms {
    pub total: Tensor,
    pub seg_dice: Tensor,
    pub consistency: Tensor,
    pub contrast: Tensor,
    /// Cross entropy on the labelled voxels (summed over decoders), when its weight is set.
    pub seg_ce: Option<Tensor>,
}

impl Terms {
    /// `(name, value)` pairs read with one host copy.
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        let mut names = vec!["total", "seg_dice", "consistency", "contrast"];
        let mut t = vec![
            self.total.detach(),
            self.seg_dice.detach(),
            self.consistency.detach(),
            self.contrast.detach(),
        ];
        if let Some(ce) = &self.seg_ce {
            names.push("seg_ce");
            t.push(ce.detach());
        }
        let all = Tensor::stack(&t, 0)
            .to_kind(Kind::Double)
            .to_device(tch::Device::Cpu);
        let v = Vec::<f64>::try_from(&all).unwrap_or_default();
        names.into_iter().zip(v).collect()
    }
}

/// The full objective. `labels` `[L, X, Y, Z]` are the first `L` samples' labels.
///
/// On several ranks (each holding its share of the labelled and of the unlabelled rows) every
/// rank's loss is the global batch's: the Dice sums are added over the ranks and the
/// contrastive terms run over every rank's embeddings, both gathered with gradient; the
/// consistency and cross-entropy are this rank's means (the ranks' mean is the global one, the
/// rows being split evenly).
pub fn fba_loss(outs: &[DecoderOutputs], labels: &Tensor, w: &LossWeights) -> Result<Terms> {
    if outs.is_empty() {
        bail!("fba_loss: no decoder output");
    }
    let l = labels.size()[0];
    let dev = outs[0].logits.device();
    let zero = || Tensor::zeros([], (Kind::Float, dev));
    let mut seg = zero();
    let mut ce = zero();
    let mut contrast = zero();
    let mut probs = vec![];
    for o in outs {
        let p = o.logits.softmax(1, Kind::Float);
        let fg_prob = p.narrow(0, 0, l).select(1, 1);
        let sums = w.dice.sums(&fg_prob, &labels.eq(1));
        let sums = if dist::world() > 1 {
            dist::gather_with_grad(&sums.unsqueeze(0))?.sum_dim_intlist(0, false, Kind::Float)
        } else {
            sums
        };
        seg += w.dice.loss(&sums);
        if w.ce != 0.0 {
            // F.cross_entropy(outputs, label) over every labelled voxel (mean)
            ce += o.logits.narrow(0, 0, l).cross_entropy_loss::<Tensor>(
                &labels.to_kind(Kind::Int64),
                None,
                tch::Reduction::Mean,
                -100,
                0.0,
            );
        }
        if w.contrast != 0.0 {
            let (Some(fg), Some(bg)) = (o.fg, o.bg) else {
                bail!("fba_loss: the contrastive term needs fg/bg embeddings");
            };
            let (fg, bg) = if dist::world() > 1 {
                let mut g = dist::gather_columns_with_grad(&[fg, bg])?;
                let bg = g.pop().context("the gathered background embeddings")?;
                (g.pop().context("the gathered foreground embeddings")?, bg)
            } else {
                (fg.shallow_clone(), bg.shallow_clone())
            };
            contrast += sim_max(&fg, w.alpha_max)
                + sim_max(&bg, w.alpha_max)
                + sim_min(&fg, &bg, w.alpha_min);
        }
        probs.push(p);
    }
    let cons = if probs.len() > 1 {
        mutual_consistency(&probs, w.temperature)
    } else {
        zero()
    };
    let mut total = &seg * w.lambda_seg + &cons * w.consistency + &contrast * w.contrast;
    if w.ce != 0.0 {
        total += &ce * w.ce;
    }
    Ok(Terms {
        total,
        seg_dice: seg,
        consistency: cons,
        contrast,
        seg_ce: (w.ce != 0.0).then_some(ce),
    })
}
