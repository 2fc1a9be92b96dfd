//! LARS / LARC: layer-wise adaptive rate scaling on top of SGD with momentum (You, Gitman &
//! Ginsburg 2017, <https://arxiv.org/abs/1708.03888>), in the form of NVIDIA apex
//! `apex/parallel/LARC.py` (used by VISSL and thus GraSS) and solo-learn `solo/utils/lars.py`.
//!
//! Per parameter `p` with gradient `g`, group weight decay `wd`, group lr `η = lr·lr_scale`,
//! trust coefficient `c`:
//! ```text
//! if ‖p‖ > 0 and ‖g‖ > 0:
//!     a = c·‖p‖ / (‖g‖ + wd·‖p‖ + ε)
//!     a = min(a / η, 1)              (mode = clip: LARC, apex `clip=True`, solo-learn `clip_lr`)
//!     d = (g + wd·p) · a
//! else:
//!     d = g                           (no adaptation and, as in apex, no weight decay)
//! then SGD (momentum, dampening, Nesterov) on d with lr η and no further decay.
//! ```
//! With `exclude_bias_and_norm` every 1-D (and 0-D) parameter skips adaptation **and** decay
//! (`d = g`), as solo-learn's `exclude_bias_n_norm`; apex/VISSL (GraSS) adapt every parameter
//! and leave the choice of decay to the groups (`regularize_bn: False` → a no-decay group).
//! The norms and the branch stay on the device (`where`, no host synchronisation).
//!
//! Differs from MoCo-v3's `LARS` (which adapts with ‖g + wd·p‖ and keeps zero-initialised
//! momentum `mu`): not implemented here.

use super::fused::{for_ranges, fusable, F32Ptr};
use super::sgd::momentum_direction;
use super::{
    grad_of, load_momentum_state, momentum_state, set_group_decay, zero_grads, Optimizer,
    ParamGroup,
};
use crate::tensors::Named;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::Tensor;

/// How the adaptive rate enters: `scale` (plain LARS: `d·a`) or `clip` (LARC: `d·min(a/η, 1)`)
/// before the momentum buffer, or `scale_step`: the buffer takes the unscaled `g + wd·p` and
/// the rate scales the step, `p ← p − lr·a·b` — the Fast-MoCo / MNCLGLF `optimizer/lars.py`
/// (`implementation='PyTorch'`), the optimiser of MNCLGLF's linear probe. The forms agree while
/// `a` is constant; they differ when it changes from step to step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LarsMode {
    Scale,
    Clip,
    ScaleStep,
}

/// Hyper-parameters of [`Lars`]. The default is apex `LARC` wrapping `SGD(momentum=0.9)`:
/// trust coefficient 0.02, clip mode, ε 1e-8, every parameter adapted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LarsConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    /// `c` (η in the LARS paper): apex default 0.02; GraSS 0.001; solo-learn `eta` 0.02.
    pub trust_coefficient: f64,
    pub eps: f64,
    pub mode: LarsMode,
    /// Skip adaptation and weight decay for 1-D parameters (biases, norm weights).
    pub exclude_bias_and_norm: bool,
}

impl Default for LarsConfig {
    fn default() -> Self {
        Self {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            trust_coefficient: 0.02,
            eps: 1e-8,
            mode: LarsMode::Clip,
            exclude_bias_and_norm: false,
        }
    }
}

impl LarsConfig {
    /// GraSS / VISSL (`grass_1gpu_resnet_b256.yaml`): LARC with `clip: False`, trust 0.001,
    /// ε 1e-8, SGD momentum 0.9, no Nesterov; every parameter adapted. The lr comes from the
    /// schedule ([`super::schedule::Schedule::grass_vissl`]).
    pub fn grass(lr: f64) -> Self {
        Self {
            lr,
            trust_coefficient: 0.001,
            mode: LarsMode::Scale,
            ..Self::default()
        }
    }

    /// solo-learn's CIFAR recipes: `eta` 0.02, `clip_lr`, `exclude_bias_n_norm`.
    pub fn solo_learn(lr: f64) -> Self {
        Self {
            lr,
            exclude_bias_and_norm: true,
            ..Self::default()
        }
    }
}

pub struct Lars {
    groups: Vec<ParamGroup>,
    cfg: LarsConfig,
    buffers: BTreeMap<String, Tensor>,
}

impl Lars {
    pub fn new(groups: Vec<ParamGroup>, cfg: LarsConfig) -> Result<Self> {
        if cfg.lr.is_nan() || cfg.lr < 0.0 {
            bail!("Illegal learning rate {}", cfg.lr);
        }
        if cfg.momentum.is_nan() || cfg.momentum < 0.0 {
            bail!("Illegal momentum {}", cfg.momentum);
        }
        if cfg.trust_coefficient.is_nan() || cfg.trust_coefficient <= 0.0 {
            bail!("Illegal trust coefficient {}", cfg.trust_coefficient);
        }
        if cfg.eps.is_nan() || cfg.eps < 0.0 {
            bail!("Illegal epsilon {}", cfg.eps);
        }
        if cfg.nesterov && (cfg.momentum <= 0.0 || cfg.dampening != 0.0) {
            bail!("Nesterov momentum requires a momentum and zero dampening");
        }
        for g in &groups {
            if g.weight_decay.is_nan() || g.weight_decay < 0.0 {
                bail!(
                    "Illegal weight decay {} in group `{}`",
                    g.weight_decay,
                    g.name
                );
            }
        }
        Ok(Self {
            groups,
            cfg,
            buffers: BTreeMap::new(),
        })
    }

    pub fn config(&self) -> &LarsConfig {
        &self.cfg
    }

    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }
}

/// `η‖p‖ / (‖g‖ + wd·‖p‖ + ε)` and whether both norms are non-zero (0-D tensors, no host
/// synchronisation); `None` for a parameter excluded from adaptation.
fn trust_ratio(p: &Tensor, g: &Tensor, wd: f64, cfg: &LarsConfig) -> Option<(Tensor, Tensor)> {
    if cfg.exclude_bias_and_norm && p.dim() <= 1 {
        return None;
    }
    let pn = p.norm();
    let gn = g.norm();
    let a = &pn * cfg.trust_coefficient / (&gn + &pn * wd + cfg.eps);
    let ok = pn.gt(0.0).logical_and(&gn.gt(0.0));
    Some((a, ok))
}

/// `g + wd·p` (a new tensor only when there is decay).
fn decayed(p: &Tensor, g: &Tensor, wd: f64) -> Tensor {
    if wd != 0.0 {
        g + p * wd
    } else {
        g.shallow_clone()
    }
}

/// The adapted direction `d` of the module docs for one parameter (a new tensor); for
/// [`LarsMode::ScaleStep`] the unscaled `g + wd·p` (the rate scales the step instead).
pub fn lars_direction(p: &Tensor, g: &Tensor, wd: f64, lr: f64, cfg: &LarsConfig) -> Tensor {
    if cfg.mode == LarsMode::ScaleStep {
        return decayed(p, g, wd);
    }
    let Some((mut a, ok)) = trust_ratio(p, g, wd, cfg) else {
        return g.shallow_clone();
    };
    if cfg.mode == LarsMode::Clip {
        a = (a / lr).clamp_max(1.0);
    }
    (decayed(p, g, wd) * a).where_self(&ok, g)
}

/// A LARS momentum step after the first (the buffer exists) on contiguous fp32 CPU tensors: the
/// two norms by libtorch, the rate `a` in fp32 as the 0-D tensor ops compute it, then one pass
/// with, per element, the float operations of the per-op path (`d = (g + wd·p)·a` or `g`,
/// `b = b·μ + (1 − dampening)·d`, `d = d + μ·b` (Nesterov) or `b`, `p = p − d·lr`).
fn fused_lars_step(p: &Tensor, g: &Tensor, buf: &Tensor, wd: f64, lr: f64, cfg: &LarsConfig) {
    let rate = if cfg.exclude_bias_and_norm && p.dim() <= 1 {
        None
    } else {
        let pn = p.norm().double_value(&[]) as f32;
        let gn = g.norm().double_value(&[]) as f32;
        let mut a = pn * cfg.trust_coefficient as f32 / (gn + pn * wd as f32 + cfg.eps as f32);
        if cfg.mode == LarsMode::Clip {
            a = (a / lr as f32).min(1.0);
        }
        (pn > 0.0 && gn > 0.0).then_some(a)
    };
    let (wd, lr) = (wd as f32, lr as f32);
    let (momentum, damp) = (cfg.momentum as f32, (1.0 - cfg.dampening) as f32);
    let nesterov = cfg.nesterov;
    let (pp, gp, bp) = (F32Ptr::of(p), F32Ptr::of(g), F32Ptr::of(buf));
    for_ranges(p.numel(), |r| {
        // SAFETY: checked with `fusable`; p, g and the buffer are distinct allocations (the
        // buffer is a copy), and each thread gets a disjoint range.
        let (p, g, b) = unsafe { (pp.slice(&r), gp.slice(&r), bp.slice(&r)) };
        for i in 0..p.len() {
            let d = match rate {
                Some(a) if wd != 0.0 => (g[i] + p[i] * wd) * a,
                Some(a) => g[i] * a,
                None => g[i],
            };
            let bi = b[i] * momentum + damp * d;
            b[i] = bi;
            let d = if nesterov { d + bi * momentum } else { bi };
            p[i] -= d * lr;
        }
    });
}

impl Optimizer for Lars {
    fn step(&mut self) -> Result<()> {
        let cfg = self.cfg.clone();
        tch::no_grad(|| {
            for g in &self.groups {
                let lr = cfg.lr * g.lr_scale;
                for (name, p) in &g.params {
                    let Some(grad) = grad_of(p) else { continue };
                    // scale_step: the rate scales the step, not the buffer's input (1 where
                    // a norm is 0, none for an excluded parameter)
                    let rate = (cfg.mode == LarsMode::ScaleStep)
                        .then(|| trust_ratio(p, &grad, g.weight_decay, &cfg))
                        .flatten()
                        .map(|(a, ok)| a.where_scalarother(&ok, 1.0));
                    if cfg.momentum != 0.0 && cfg.mode != LarsMode::ScaleStep {
                        if let Some(buf) = self.buffers.get(name) {
                            if fusable(&[p, &grad, buf]) {
                                fused_lars_step(p, &grad, buf, g.weight_decay, lr, &cfg);
                                continue;
                            }
                        }
                    }
                    let d = lars_direction(p, &grad, g.weight_decay, lr, &cfg);
                    let d = momentum_direction(
                        &mut self.buffers,
                        name,
                        d,
                        cfg.momentum,
                        cfg.dampening,
                        cfg.nesterov,
                    );
                    let step = match rate {
                        Some(a) => d * a * lr,
                        None => d * lr,
                    };
                    let mut p = p.shallow_clone();
                    let _ = p.g_sub_(&step);
                }
            }
        });
        Ok(())
    }

    fn zero_grad(&mut self) {
        zero_grads(&self.groups);
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    fn set_weight_decay(&mut self, wd: f64) {
        set_group_decay(&mut self.groups, wd);
    }

    fn state(&self) -> Named {
        momentum_state(&self.buffers)
    }

    fn load_state(&mut self, state: &Named) -> Result<()> {
        self.buffers = load_momentum_state(&self.groups, state, "LARS")?;
        Ok(())
    }
}
