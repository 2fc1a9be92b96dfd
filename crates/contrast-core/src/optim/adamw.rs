//! AdamW (Loshchilov & Hutter 2019, <https://arxiv.org/abs/1711.05101>) exactly as
//! `torch.optim.AdamW` (single-tensor path of `torch/optim/adam.py`, decoupled weight decay):
//!
//! ```text
//! t += 1                                  (per parameter, only when it has a gradient)
//! p = p · (1 − lr·wd)                      (decoupled decay, before the moment update)
//! m = lerp(m, g, 1 − β₁)                   (= β₁·m + (1 − β₁)·g)
//! v = β₂·v + (1 − β₂)·g²
//! v̂ = max(v̂, v)                           (amsgrad only)
//! denom = sqrt(v or v̂) / sqrt(1 − β₂ᵗ) + ε
//! p = p − (lr / (1 − β₁ᵗ)) · m / denom
//! ```
//! `lr` is the optimiser's lr times the group's `lr_scale`; `wd` is the group's weight decay
//! (PatchMix/DINO: a no-decay group for biases and 1-D parameters, see
//! [`super::decay_groups`]).
//!
//! On CPU, for contiguous fp32 parameters, the update runs as one fused pass over `p`, `g`, `m`,
//! `v` (the same float operations in the same order as PyTorch's per-op kernels, one read and
//! write of each array instead of eight passes and three temporaries; split across the libtorch
//! intra-op thread count for large tensors). Other devices and dtypes take the per-op path.

use super::fused::{for_ranges, fusable, F32Ptr};
use super::{grad_of, param_index, set_group_decay, state_like, zero_grads, Optimizer, ParamGroup};
use crate::tensors::Named;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Hyper-parameters of [`AdamW`] (PyTorch defaults except `lr`, which is required).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub amsgrad: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            amsgrad: false,
        }
    }
}

/// Moments of one parameter.
struct Moments {
    step: i64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Option<Tensor>,
}

pub struct AdamW {
    groups: Vec<ParamGroup>,
    cfg: AdamWConfig,
    state: BTreeMap<String, Moments>,
}

impl AdamW {
    /// Validates the hyper-parameters like PyTorch does.
    pub fn new(groups: Vec<ParamGroup>, cfg: AdamWConfig) -> Result<Self> {
        if cfg.lr.is_nan() || cfg.lr < 0.0 {
            bail!("Illegal learning rate {}", cfg.lr);
        }
        if cfg.eps.is_nan() || cfg.eps < 0.0 {
            bail!("Illegal epsilon {}", cfg.eps);
        }
        if !(0.0..1.0).contains(&cfg.beta1) {
            bail!("Illegal beta1 {}: it must be in [0, 1)", cfg.beta1);
        }
        if !(0.0..1.0).contains(&cfg.beta2) {
            bail!("Illegal beta2 {}: it must be in [0, 1)", cfg.beta2);
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
            state: BTreeMap::new(),
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }
}

/// Scalars of one fused update (fp32, like PyTorch's CPU kernels' `opmath` type).
#[derive(Clone, Copy)]
struct FusedScalars {
    decay: f32,
    w1: f32,
    beta2: f32,
    v1: f32,
    bc2_sqrt: f32,
    eps: f32,
    neg_step: f32,
}

/// One fused AdamW pass over a chunk. Per element, the float operations of the per-op path:
/// `p·decay`, `lerp(m, g, w1)` (`m + w1·(g − m)` for `w1 < ½`, else `g − (g − m)·(1 − w1)`),
/// `v·β₂ + (1 − β₂)·g·g`, `max`, `sqrt(v)/bc₂ + ε`, `p + (−step)·(m / denom)`.
fn fused_chunk(
    s: FusedScalars,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    mut vmax: Option<&mut [f32]>,
) {
    let low = s.w1 < 0.5;
    for i in 0..p.len() {
        let gi = g[i];
        let mi = m[i];
        let mi = if low {
            mi + s.w1 * (gi - mi)
        } else {
            gi - (gi - mi) * (1.0 - s.w1)
        };
        m[i] = mi;
        let vi = v[i] * s.beta2 + s.v1 * gi * gi;
        v[i] = vi;
        let second = match vmax.as_deref_mut() {
            Some(mx) => {
                let x = mx[i].max(vi);
                mx[i] = x;
                x
            }
            None => vi,
        };
        let denom = second.sqrt() / s.bc2_sqrt + s.eps;
        p[i] = p[i] * s.decay + s.neg_step * (mi / denom);
    }
}

/// The fused update of one parameter (checked with [`fusable`]).
fn fused_update(s: FusedScalars, p: &Tensor, g: &Tensor, st: &Moments) {
    let (p, g) = (F32Ptr::of(p), F32Ptr::of(g));
    let (m, v) = (F32Ptr::of(&st.exp_avg), F32Ptr::of(&st.exp_avg_sq));
    let vmax = st.max_exp_avg_sq.as_ref().map(F32Ptr::of);
    for_ranges(st.exp_avg.numel(), |r| {
        // SAFETY: `fusable` checked device, dtype, contiguity and sizes; p, g, m, v (and v̂)
        // are distinct allocations (the moments come from `zeros_like` or a loaded copy), and
        // each thread gets a disjoint range.
        unsafe {
            fused_chunk(
                s,
                p.slice(&r),
                g.slice(&r),
                m.slice(&r),
                v.slice(&r),
                vmax.as_ref().map(|x| x.slice(&r)),
            )
        }
    });
}

impl Optimizer for AdamW {
    fn step(&mut self) -> Result<()> {
        let AdamWConfig {
            lr: base_lr,
            beta1,
            beta2,
            eps,
            amsgrad,
        } = self.cfg;
        tch::no_grad(|| {
            for g in &self.groups {
                let lr = base_lr * g.lr_scale;
                for (name, p) in &g.params {
                    let Some(grad) = grad_of(p) else { continue };
                    let mut p = p.shallow_clone();
                    let st = self.state.entry(name.clone()).or_insert_with(|| Moments {
                        step: 0,
                        exp_avg: p.zeros_like(),
                        exp_avg_sq: p.zeros_like(),
                        max_exp_avg_sq: amsgrad.then(|| p.zeros_like()),
                    });
                    st.step += 1;
                    let t = st.step as f64;
                    let mut ts = vec![&p, &grad, &st.exp_avg, &st.exp_avg_sq];
                    ts.extend(st.max_exp_avg_sq.as_ref());
                    if fusable(&ts) {
                        let s = FusedScalars {
                            decay: (1.0 - lr * g.weight_decay) as f32,
                            w1: (1.0 - beta1) as f32,
                            beta2: beta2 as f32,
                            v1: (1.0 - beta2) as f32,
                            bc2_sqrt: (1.0 - beta2.powf(t)).sqrt() as f32,
                            eps: eps as f32,
                            neg_step: (-lr / (1.0 - beta1.powf(t))) as f32,
                        };
                        fused_update(s, &p, &grad, st);
                        continue;
                    }
                    if g.weight_decay != 0.0 {
                        let _ = p.g_mul_scalar_(1.0 - lr * g.weight_decay);
                    }
                    let _ = st.exp_avg.lerp_(&grad, 1.0 - beta1);
                    let _ = st.exp_avg_sq.g_mul_scalar_(beta2);
                    // in place where the values stay the same: v += (g·(1−β2))·g, p += (m·(−s))/d
                    // (the fused kernels compute exactly what the separate ops did, with fewer
                    // temporaries: the optimiser was the largest gap to PyTorch in the step bench)
                    let _ = st.exp_avg_sq.addcmul_(&(&grad * (1.0 - beta2)), &grad);
                    let bias_correction1 = 1.0 - beta1.powf(t);
                    let bias_correction2_sqrt = (1.0 - beta2.powf(t)).sqrt();
                    let step_size = lr / bias_correction1;
                    let second = match st.max_exp_avg_sq.as_mut() {
                        Some(mx) => {
                            let _ = mx.maximum_out(mx, &st.exp_avg_sq);
                            mx.shallow_clone()
                        }
                        None => st.exp_avg_sq.shallow_clone(),
                    };
                    let mut denom = second.sqrt(); // like p
                    let _ = denom.g_div_scalar_(bias_correction2_sqrt);
                    let _ = denom.g_add_scalar_(eps);
                    let _ = p.addcdiv_(&(&st.exp_avg * (-step_size)), &denom);
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

    /// `step.<p>` (int64 `[1]`), `exp_avg.<p>`, `exp_avg_sq.<p>` and, with amsgrad,
    /// `max_exp_avg_sq.<p>`.
    fn state(&self) -> Named {
        let mut out = Vec::new();
        for (n, st) in &self.state {
            out.push((format!("step.{n}"), Tensor::from_slice(&[st.step])));
            out.push((format!("exp_avg.{n}"), st.exp_avg.shallow_clone()));
            out.push((format!("exp_avg_sq.{n}"), st.exp_avg_sq.shallow_clone()));
            if let Some(m) = &st.max_exp_avg_sq {
                out.push((format!("max_exp_avg_sq.{n}"), m.shallow_clone()));
            }
        }
        out
    }

    fn load_state(&mut self, state: &Named) -> Result<()> {
        let params = param_index(&self.groups);
        let mut steps: BTreeMap<String, i64> = BTreeMap::new();
        let mut m: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut v: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut vmax: BTreeMap<String, Tensor> = BTreeMap::new();
        for (key, t) in state {
            let (kind, name) = key
                .split_once('.')
                .with_context(|| format!("unexpected AdamW state entry `{key}`"))?;
            match kind {
                "step" => {
                    if !params.contains_key(name) {
                        bail!("AdamW state `{key}` is for an unknown parameter `{name}`");
                    }
                    if t.numel() != 1 {
                        bail!(
                            "AdamW state `{key}` must hold one number, got {:?}",
                            t.size()
                        );
                    }
                    let s = t.to_kind(Kind::Int64).flatten(0, -1).int64_value(&[0]);
                    steps.insert(name.to_string(), s);
                }
                "exp_avg" => {
                    m.insert(name.into(), state_like(&params, name, key, t)?);
                }
                "exp_avg_sq" => {
                    v.insert(name.into(), state_like(&params, name, key, t)?);
                }
                "max_exp_avg_sq" => {
                    vmax.insert(name.into(), state_like(&params, name, key, t)?);
                }
                _ => bail!("unexpected AdamW state entry `{key}`"),
            }
        }
        let mut out = BTreeMap::new();
        for (name, step) in steps {
            let exp_avg = m
                .remove(&name)
                .with_context(|| format!("AdamW state lacks `exp_avg.{name}`"))?;
            let exp_avg_sq = v
                .remove(&name)
                .with_context(|| format!("AdamW state lacks `exp_avg_sq.{name}`"))?;
            let max_exp_avg_sq = vmax.remove(&name);
            if self.cfg.amsgrad && max_exp_avg_sq.is_none() {
                bail!("AdamW (amsgrad) state lacks `max_exp_avg_sq.{name}`");
            }
            out.insert(
                name,
                Moments {
                    step,
                    exp_avg,
                    exp_avg_sq,
                    max_exp_avg_sq: if self.cfg.amsgrad {
                        max_exp_avg_sq
                    } else {
                        None
                    },
                },
            );
        }
        if let Some(n) = m.keys().chain(v.keys()).chain(vmax.keys()).next() {
            bail!("AdamW state has moments but no `step.{n}`");
        }
        self.state = out;
        Ok(())
    }
}
