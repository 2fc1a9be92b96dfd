//! Optimisers whose whole state can be checkpointed and restored bit-exactly.
//!
//! tch's built-in optimisers keep their state (momentum buffers, Adam moments) inside libtorch,
//! out of reach of a checkpoint, so the workspace implements its own on tensors, following
//! PyTorch's update rules exactly.

pub mod sgd;

use crate::tensors::Named;
use anyhow::Result;
use tch::{nn::VarStore, Tensor};

pub use sgd::Sgd;

/// Parameters that share hyper-parameters.
pub struct ParamGroup {
    /// e.g. `decay` / `no_decay`.
    pub name: String,
    /// `(variable name, tensor)`; the tensors are the live variables (shallow clones).
    pub params: Named,
    /// Decoupled or L2 weight decay for this group (the optimiser decides which).
    pub weight_decay: f64,
    /// Multiplies the optimiser's learning rate (e.g. a constant-lr predictor group).
    pub lr_scale: f64,
}

/// Split the trainable variables of `vs` into a `decay` group (≥ 2-D weights) and a `no_decay`
/// group (biases and normalisation parameters: every 1-D tensor), the common recipe of MoCo-v3,
/// DINO and PatchMix.
pub fn decay_groups(vs: &VarStore, weight_decay: f64) -> Vec<ParamGroup> {
    let mut decay = Vec::new();
    let mut no_decay = Vec::new();
    for (name, t) in crate::tensors::named_variables(vs) {
        if !t.requires_grad() {
            continue;
        }
        if t.dim() <= 1 {
            no_decay.push((name, t));
        } else {
            decay.push((name, t));
        }
    }
    vec![
        ParamGroup {
            name: "decay".into(),
            params: decay,
            weight_decay,
            lr_scale: 1.0,
        },
        ParamGroup {
            name: "no_decay".into(),
            params: no_decay,
            weight_decay: 0.0,
            lr_scale: 1.0,
        },
    ]
}

/// One group holding every trainable variable of `vs` with the same weight decay.
pub fn single_group(vs: &VarStore, weight_decay: f64) -> Vec<ParamGroup> {
    vec![ParamGroup {
        name: "all".into(),
        params: crate::tensors::named_variables(vs)
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect(),
        weight_decay,
        lr_scale: 1.0,
    }]
}

/// The interface every optimiser of the workspace implements.
pub trait Optimizer {
    /// Apply one update from the current gradients (parameters without a gradient are skipped).
    fn step(&mut self) -> Result<()>;
    /// Zero every parameter's gradient.
    fn zero_grad(&mut self);
    /// The base learning rate (each group uses `lr * lr_scale`).
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    /// Set the weight decay of every group whose decay is non-zero (for wd schedules).
    fn set_weight_decay(&mut self, wd: f64);
    /// Every state tensor, named `<buffer>.<param name>`.
    fn state(&self) -> Named;
    /// Restore what [`Optimizer::state`] returned.
    fn load_state(&mut self, state: &Named) -> Result<()>;
}

/// Zero the gradients of all parameters of `groups`.
pub fn zero_grads(groups: &[ParamGroup]) {
    for g in groups {
        for (_, p) in &g.params {
            let mut grad = p.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
    }
}

/// `Some(grad)` when the parameter has a gradient.
pub(crate) fn grad_of(p: &Tensor) -> Option<Tensor> {
    let g = p.grad();
    g.defined().then_some(g)
}
