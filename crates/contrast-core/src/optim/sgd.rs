//! SGD with momentum, dampening, Nesterov and L2 weight decay, exactly as `torch.optim.SGD`:
//!
//! ```text
//! d = g + wd·p
//! b = d                          (first step)
//! b = μ·b + (1 − dampening)·d    (later steps)
//! d = d + μ·b  (nesterov)  or  d = b
//! p = p − lr·d
//! ```

use super::fused::{for_ranges, fusable, F32Ptr};
use super::{
    grad_of, load_momentum_state, momentum_state, set_group_decay, zero_grads, Optimizer,
    ParamGroup,
};
use crate::tensors::Named;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use tch::Tensor;

pub struct Sgd {
    groups: Vec<ParamGroup>,
    lr: f64,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    /// momentum buffer per parameter name (absent until the first step that sees a gradient)
    buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// Validates its arguments like PyTorch does.
    pub fn new(
        groups: Vec<ParamGroup>,
        lr: f64,
        momentum: f64,
        dampening: f64,
        nesterov: bool,
    ) -> Result<Self> {
        if lr.is_nan() || lr < 0.0 {
            bail!("Illegal learning rate {lr}");
        }
        if momentum.is_nan() || momentum < 0.0 {
            bail!("Illegal momentum {momentum}");
        }
        if nesterov && (momentum <= 0.0 || dampening != 0.0) {
            bail!("Nesterov momentum requires a momentum and zero dampening");
        }
        Ok(Self {
            groups,
            lr,
            momentum,
            dampening,
            nesterov,
            buffers: BTreeMap::new(),
        })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        tch::no_grad(|| {
            for g in &self.groups {
                let lr = self.lr * g.lr_scale;
                for (name, p) in &g.params {
                    let Some(grad) = grad_of(p) else { continue };
                    if self.momentum != 0.0 {
                        if let Some(buf) = self.buffers.get(name) {
                            if fusable(&[p, &grad, buf]) {
                                fused_momentum_step(
                                    p,
                                    &grad,
                                    buf,
                                    FusedSgd {
                                        neg_lr: -lr as f32,
                                        wd: g.weight_decay as f32,
                                        momentum: self.momentum as f32,
                                        damp: (1.0 - self.dampening) as f32,
                                        nesterov: self.nesterov,
                                    },
                                );
                                continue;
                            }
                        }
                    }
                    // one temporary per step where values allow (wd·p + g = g + wd·p exactly;
                    // ×(1 − 0) and −(d·lr) added = p − d·lr exactly): PyTorch's single-tensor
                    // SGD makes one too, and the optimiser was a visible part of the MNCLGLF step
                    let d = if g.weight_decay != 0.0 {
                        let mut d = p * g.weight_decay;
                        let _ = d.g_add_(&grad);
                        d
                    } else {
                        grad.shallow_clone()
                    };
                    let d = momentum_direction(
                        &mut self.buffers,
                        name,
                        d,
                        self.momentum,
                        self.dampening,
                        self.nesterov,
                    );
                    let mut p = p.shallow_clone();
                    let neg_lr = Tensor::scalar_tensor(-lr, (p.kind(), p.device()));
                    let _ = p.addcmul_(&d, &neg_lr);
                }
            }
        });
        Ok(())
    }

    fn zero_grad(&mut self) {
        zero_grads(&self.groups);
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn set_weight_decay(&mut self, wd: f64) {
        set_group_decay(&mut self.groups, wd);
    }

    fn state(&self) -> Named {
        momentum_state(&self.buffers)
    }

    fn load_state(&mut self, state: &Named) -> Result<()> {
        self.buffers = load_momentum_state(&self.groups, state, "SGD")?;
        Ok(())
    }
}

/// Scalars of a fused SGD step (fp32, PyTorch's CPU `opmath` type).
#[derive(Clone, Copy)]
struct FusedSgd {
    neg_lr: f32,
    wd: f32,
    momentum: f32,
    damp: f32,
    nesterov: bool,
}

/// A momentum step after the first (the buffer exists) in one pass, per element the float
/// operations of the per-op path: `d = g + wd·p`, `b = b·μ + (1 − dampening)·d`,
/// `d = d + μ·b` (Nesterov) or `b`, `p = p + (−lr)·d`.
fn fused_momentum_step(p: &Tensor, g: &Tensor, buf: &Tensor, s: FusedSgd) {
    let (pp, gp, bp) = (F32Ptr::of(p), F32Ptr::of(g), F32Ptr::of(buf));
    for_ranges(p.numel(), |r| {
        // SAFETY: checked with `fusable`; p, g and the buffer are distinct allocations (the
        // buffer is a copy), and each thread gets a disjoint range.
        let (p, g, b) = unsafe { (pp.slice(&r), gp.slice(&r), bp.slice(&r)) };
        for i in 0..p.len() {
            let d = if s.wd != 0.0 {
                g[i] + s.wd * p[i]
            } else {
                g[i]
            };
            let bi = b[i] * s.momentum + s.damp * d;
            b[i] = bi;
            let d = if s.nesterov { d + s.momentum * bi } else { bi };
            p[i] += s.neg_lr * d;
        }
    });
}

/// The SGD momentum rule shared by [`Sgd`] and [`super::Lars`] (`torch.optim.SGD`):
/// `b = d` on the first step, then `b = μ·b + (1 − dampening)·d`; returns `d + μ·b` (Nesterov)
/// or `b`. With `μ = 0` returns `d` unchanged.
pub(crate) fn momentum_direction(
    buffers: &mut BTreeMap<String, Tensor>,
    name: &str,
    d: Tensor,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
) -> Tensor {
    if momentum == 0.0 {
        return d;
    }
    let buf = match buffers.get_mut(name) {
        Some(b) => {
            let _ = b.g_mul_scalar_(momentum);
            if dampening == 0.0 {
                let _ = b.g_add_(&d);
            } else {
                let _ = b.g_add_(&(&d * (1.0 - dampening)));
            }
            b.shallow_clone()
        }
        None => {
            let b = d.detach().copy();
            buffers.insert(name.to_string(), b.shallow_clone());
            b
        }
    };
    if nesterov {
        &d + &buf * momentum
    } else {
        buf
    }
}
