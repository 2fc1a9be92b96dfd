//! Momentum (EMA) encoders: `θ_t ← m·θ_t + (1 − m)·θ_o` for every same-named variable of a
//! target and an online VarStore (BYOL, <https://arxiv.org/abs/2006.07733>; MoCo,
//! <https://arxiv.org/abs/1911.05722>; PatchMix `main_pretrain.py`).
//!
//! **Buffers.** tch keeps BatchNorm running statistics as variables without `requires_grad`
//! (`running_mean`, `running_var`). The official codes differ in what they do with them, so it is
//! a choice ([`BufferPolicy`]):
//! * MoCo v3 (`moco/builder.py::_update_momentum_encoder`), DINO and PatchMix
//!   (`module/frame/contrast_momentum.py::update_momentum_encoder`, read) update **parameters
//!   only** (`param_m.data * m + param_b.data * (1. - m)` over `.parameters()`); the target's
//!   buffers evolve through the target's own forward passes in train mode →
//!   [`BufferPolicy::Keep`] (default).
//! * timm `ModelEmaV2` (PatchMix fine-tuning's model EMA) averages the whole `state_dict`,
//!   buffers included → [`BufferPolicy::Average`].
//! * [`BufferPolicy::Copy`] copies the online buffers (e.g. when the target never runs in
//!   train mode).
//!
//! "Parameter" means: the **online** variable requires grad; everything else is a buffer.
//! Integer buffers cannot be averaged: `Average` copies them. [`Ema::init_copy`] starts the
//! target as a copy of the online network (MoCo/PatchMix `param_m.data.copy_(param_b.data)`;
//! MNCLGLF deliberately does not). It copies buffers too, which for freshly built networks
//! (BN running stats 0 / 1 on both sides) equals the parameters-only copy of the originals.

use crate::tensors::named_variables;
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Tensor};

/// What an EMA update does with buffers (variables the online network does not train).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferPolicy {
    /// Leave the target's buffers alone (MoCo v3, DINO, PatchMix).
    #[default]
    Keep,
    /// Copy the online buffers into the target.
    Copy,
    /// Average buffers like parameters (timm `ModelEmaV2`).
    Average,
}

struct Pair {
    name: String,
    target: Tensor,
    online: Tensor,
    is_param: bool,
}

/// A target ← online EMA over two VarStores with the same variable names and shapes.
pub struct Ema {
    pairs: Vec<Pair>,
    pub buffers: BufferPolicy,
}

impl Ema {
    /// Pair the variables of `target` with those of `online` by name. Every name must exist on
    /// both sides with equal shapes. The target's variables are frozen (no gradient).
    pub fn new(target: &VarStore, online: &VarStore, buffers: BufferPolicy) -> Result<Self> {
        let t = named_variables(target);
        let o = named_variables(online);
        let tn: Vec<&String> = t.iter().map(|(n, _)| n).collect();
        let on: Vec<&String> = o.iter().map(|(n, _)| n).collect();
        if tn != on {
            let missing: Vec<&&String> = on.iter().filter(|n| !tn.contains(n)).collect();
            let extra: Vec<&&String> = tn.iter().filter(|n| !on.contains(n)).collect();
            bail!(
                "EMA target and online networks differ: target lacks {missing:?}, has extra {extra:?}"
            );
        }
        let mut pairs = Vec::with_capacity(t.len());
        for ((name, tv), (_, ov)) in t.into_iter().zip(o) {
            ensure!(
                tv.size() == ov.size(),
                "EMA variable `{name}`: target shape {:?}, online shape {:?}",
                tv.size(),
                ov.size()
            );
            ensure!(
                tv.kind() == ov.kind(),
                "EMA variable `{name}`: target {:?}, online {:?}",
                tv.kind(),
                ov.kind()
            );
            let is_param = ov.requires_grad();
            let tv = if tv.requires_grad() {
                tv.set_requires_grad(false)
            } else {
                tv
            };
            pairs.push(Pair {
                name,
                target: tv,
                online: ov,
                is_param,
            });
        }
        Ok(Self { pairs, buffers })
    }

    /// Names of the averaged parameters and of the buffers, for logging.
    pub fn names(&self) -> (Vec<&str>, Vec<&str>) {
        let p = self.pairs.iter().filter(|p| p.is_param);
        let b = self.pairs.iter().filter(|p| !p.is_param);
        (
            p.map(|p| p.name.as_str()).collect(),
            b.map(|p| p.name.as_str()).collect(),
        )
    }

    /// Target = online, every variable (parameters and buffers).
    pub fn init_copy(&mut self) {
        tch::no_grad(|| {
            for p in &mut self.pairs {
                p.target.copy_(&p.online);
            }
        });
    }

    /// One update with momentum `m ∈ [0, 1]`: `t = m·t + (1 − m)·o` (MoCo's
    /// `param_k.data * m + param_q.data * (1. - m)`), buffers per [`BufferPolicy`].
    pub fn update(&mut self, m: f64) -> Result<()> {
        ensure!(
            (0.0..=1.0).contains(&m),
            "Illegal EMA momentum {m}: it must be in [0, 1]"
        );
        tch::no_grad(|| {
            for p in &mut self.pairs {
                let average = p.online.is_floating_point()
                    && (p.is_param || self.buffers == BufferPolicy::Average);
                if average {
                    let new = &p.target * m + &p.online * (1.0 - m);
                    p.target.copy_(&new);
                } else if !p.is_param && self.buffers != BufferPolicy::Keep {
                    p.target.copy_(&p.online);
                }
            }
        });
        Ok(())
    }
}
