//! The PatchMix objective (official `main_pretrain.py::train_epoch`, `module/loss.py`).
//!
//! With two augmented views `x1`, `x2`, their mixed versions `xm1 = mix(x1)`, `xm2 = mix(x2)`
//! (independent permutations, same source grouping), queries `q = predictor(projector(enc(·)))`
//! and keys `k` from the key branch (always without gradient: the official keys pass through a
//! no-grad all-gather):
//!
//! ```text
//! L = CE(q1, k2, I) + ½·CE(mq2, k1, T_mix) + ½·CE(mq2, mk1, T_mixmix)
//! ```
//!
//! where `CE(q, k, T) = mean_i Σ_j −T_ij · log_softmax_j(q̂_i·k̂_jᵀ / τ)` on L2-normalised
//! features, τ = 0.2. The loss is **not symmetrised** (only view-1 originals and view-2 mixed
//! images are queries), as in the official step. ImageNet's local crops add
//! `Σ_c [CE(lq_c, k1, I) + CE(lq_c, k2, I)] / n` and `Σ_c [CE(lmq_c, k1, T_mix) + CE(lmq_c, k2, T_mix)] / n`.

use anyhow::{ensure, Result};
use contrast_core::loss::InfoNce;
use tch::{Kind, Tensor};

/// The loss terms of one step (each a scalar tensor; `total` carries the gradient).
#[derive(Debug)]
pub struct Terms {
    /// `CE(q1, k2, I)`.
    pub orig: Tensor,
    /// `CE(mq2, k1, T_mix)` (enters the total with weight ½).
    pub mix_orig: Tensor,
    /// `CE(mq2, mk1, T_mixmix)` (weight ½).
    pub mix_mix: Tensor,
    /// Multi-crop terms (zero without local crops).
    pub multi: Tensor,
    pub multi_mix: Tensor,
    pub total: Tensor,
    /// The patch permutations the step's mixing drew (`[T]` each): view 1, view 2, then each
    /// local crop; empty when the step did not mix. What `--record` stores for the official
    /// code to replay ([`crate::train::step_terms`] fills it).
    pub perms: Vec<(String, Tensor)>,
}

impl Terms {
    /// `(name, value)` of every term, for logging and the NaN guard (one device → host copy).
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        let names = ["orig", "mix_orig", "mix_mix", "multi", "multi_mix", "total"];
        let all = Tensor::stack(
            &[
                &self.orig,
                &self.mix_orig,
                &self.mix_mix,
                &self.multi,
                &self.multi_mix,
                &self.total,
            ]
            .map(|t| t.detach().to_kind(Kind::Double)),
            0,
        )
        .to_device(tch::Device::Cpu);
        let v: Vec<f64> = Vec::try_from(&all).unwrap_or_else(|_| vec![f64::NAN; names.len()]);
        names.into_iter().zip(v).collect()
    }
}

/// Inputs of [`patchmix_loss`]; keys are detached inside.
pub struct LossInputs<'a> {
    pub q1: &'a Tensor,
    pub k1: &'a Tensor,
    pub k2: &'a Tensor,
    pub mq2: &'a Tensor,
    pub mk1: &'a Tensor,
    /// `[B, N]` mixed-vs-original targets.
    pub mix_target: &'a Tensor,
    /// `[B, N]` mixed-vs-mixed targets.
    pub mixmix_target: &'a Tensor,
    /// Targets of the unmixed terms `[B, N]`: the identity at `offset + i`, smoothed as the
    /// official `no_mixer` smooths it (`mix.src_smoothing`, see `mix::source_targets`).
    pub source: &'a Tensor,
    /// Queries of the unmixed local crops (ImageNet multi-crop), may be empty.
    pub local_q: &'a [Tensor],
    /// Queries of the mixed local crops, may be empty.
    pub local_mq: &'a [Tensor],
}

/// The full objective. `nce` holds τ.
pub fn patchmix_loss(nce: &InfoNce, x: &LossInputs) -> Result<Terms> {
    // the keys of every rank, without gradient (official `concat_all_gather`; the keys alone
    // without a process group)
    let gather = contrast_core::dist::gather;
    let (k1, k2, mk1) = (gather(x.k1)?, gather(x.k2)?, gather(x.mk1)?);
    let orig = nce.forward_soft(x.q1, &k2, x.source)?;
    let mix_orig = nce.forward_soft(x.mq2, &k1, x.mix_target)?;
    let mix_mix = nce.forward_soft(x.mq2, &mk1, x.mixmix_target)?;
    // Σ_c [CE(q_c, k1, T) + CE(q_c, k2, T)] / n over local-crop queries (zero without any)
    let local = |queries: &[Tensor], target: &Tensor| -> Result<Tensor> {
        let n = queries.len() as f64;
        let per_crop = queries
            .iter()
            .map(|q| {
                Ok((nce.forward_soft(q, &k1, target)? + nce.forward_soft(q, &k2, target)?) / n)
            })
            .collect::<Result<Vec<Tensor>>>()?;
        Ok(if per_crop.is_empty() {
            Tensor::zeros([], (Kind::Float, x.q1.device()))
        } else {
            Tensor::stack(&per_crop, 0).sum(Kind::Float)
        })
    };
    let multi = local(x.local_q, x.source)?;
    let multi_mix = local(x.local_mq, x.mix_target)?;
    let total = &orig + (&mix_orig + &mix_mix) * 0.5 + &multi + &multi_mix;
    ensure!(total.numel() == 1, "the PatchMix loss must be a scalar");
    Ok(Terms {
        orig,
        mix_orig,
        mix_mix,
        multi,
        multi_mix,
        total,
        perms: Vec::new(),
    })
}
