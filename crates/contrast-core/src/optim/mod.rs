//! Optimisers whose whole state can be checkpointed and restored bit-exactly.
//!
//! tch's built-in optimisers keep their state (momentum buffers, Adam moments) inside libtorch,
//! out of reach of a checkpoint, so the workspace implements its own on tensors, following
//! PyTorch's update rules exactly.
//!
//! * [`Sgd`] (`torch.optim.SGD`), [`AdamW`] (`torch.optim.AdamW`), [`Lars`] (LARS / LARC as in
//!   apex `LARC`, VISSL and solo-learn);
//! * parameter groups ([`decay_groups`], [`single_group`], [`split_groups`]) carrying weight decay
//!   and a learning-rate scale;
//! * per-iteration [`schedule`]s (data, deserialisable from TOML);
//! * [`ema`]: momentum (EMA) encoders.
//!
//! Every optimiser's whole state round-trips through [`Optimizer::state`] /
//! [`Optimizer::load_state`] (tensors are moved to each parameter's device on load).

pub mod adamw;
pub mod clip;
pub mod ema;
pub mod fixed_lr;
mod fused;
pub mod lars;
pub mod schedule;
pub mod sgd;

use crate::tensors::Named;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{nn::VarStore, Tensor};

pub use adamw::{AdamW, AdamWConfig};
pub use ema::{BufferPolicy, Ema};
pub use lars::{Lars, LarsConfig, LarsMode};
pub use schedule::Schedule;
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

/// Move the parameters whose name satisfies `pred` out of every group into a new group named
/// `<group>.<suffix>` with the same weight decay and learning-rate scale `lr_scale` (e.g. a
/// predictor at 10× the lr). Empty groups are dropped.
pub fn split_groups(
    groups: Vec<ParamGroup>,
    pred: impl Fn(&str) -> bool,
    suffix: &str,
    lr_scale: f64,
) -> Vec<ParamGroup> {
    let mut out = Vec::new();
    for g in groups {
        let (moved, kept): (Named, Named) = g.params.into_iter().partition(|(n, _)| pred(n));
        let (name, weight_decay, scale) = (g.name, g.weight_decay, g.lr_scale);
        if !moved.is_empty() {
            out.push(ParamGroup {
                name: format!("{name}.{suffix}"),
                params: moved,
                weight_decay,
                lr_scale,
            });
        }
        if !kept.is_empty() {
            out.push(ParamGroup {
                name,
                params: kept,
                weight_decay,
                lr_scale: scale,
            });
        }
    }
    out
}

/// Which optimiser a config asks for (`kind = "sgd" | "adamw" | "lars"` in TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    Sgd {
        lr: f64,
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        dampening: f64,
        #[serde(default)]
        nesterov: bool,
    },
    #[serde(rename = "adamw")]
    AdamW(AdamWConfig),
    Lars(LarsConfig),
}

impl OptimizerConfig {
    /// Build the optimiser over `groups` (validating the hyper-parameters).
    pub fn build(&self, groups: Vec<ParamGroup>) -> Result<Box<dyn Optimizer>> {
        Ok(match self {
            OptimizerConfig::Sgd {
                lr,
                momentum,
                dampening,
                nesterov,
            } => Box::new(Sgd::new(groups, *lr, *momentum, *dampening, *nesterov)?),
            OptimizerConfig::AdamW(c) => Box::new(AdamW::new(groups, c.clone())?),
            OptimizerConfig::Lars(c) => Box::new(Lars::new(groups, c.clone())?),
        })
    }
}

/// Parameters of all groups by name (for state loading).
pub(crate) fn param_index(groups: &[ParamGroup]) -> BTreeMap<&str, &Tensor> {
    groups
        .iter()
        .flat_map(|g| g.params.iter().map(|(n, t)| (n.as_str(), t)))
        .collect()
}

/// A state tensor for parameter `name`, checked against the parameter's shape and moved to its
/// device and kind; errors name the state `key`.
pub(crate) fn state_like(
    params: &BTreeMap<&str, &Tensor>,
    name: &str,
    key: &str,
    t: &Tensor,
) -> Result<Tensor> {
    let Some(p) = params.get(name) else {
        bail!("optimiser state `{key}` is for an unknown parameter `{name}`");
    };
    ensure!(
        t.size() == p.size(),
        "optimiser state `{key}` has shape {:?} but the parameter has {:?}",
        t.size(),
        p.size()
    );
    Ok(t.to_device(p.device()).to_kind(p.kind()).copy())
}

/// Set the weight decay of every group whose decay is non-zero (the `set_weight_decay` of every
/// optimiser here: groups created without decay, e.g. biases and norms, stay at zero).
pub(crate) fn set_group_decay(groups: &mut [ParamGroup], wd: f64) {
    for g in groups {
        if g.weight_decay != 0.0 {
            g.weight_decay = wd;
        }
    }
}

/// Momentum buffers as checkpoint entries `momentum_buffer.<param>` (SGD and LARS).
pub(crate) fn momentum_state(buffers: &BTreeMap<String, Tensor>) -> Named {
    buffers
        .iter()
        .map(|(n, b)| (format!("momentum_buffer.{n}"), b.shallow_clone()))
        .collect()
}

/// Inverse of [`momentum_state`], checked against the parameters of `groups` (shape, and moved
/// to each parameter's device); `who` names the optimiser in errors.
pub(crate) fn load_momentum_state(
    groups: &[ParamGroup],
    state: &Named,
    who: &str,
) -> Result<BTreeMap<String, Tensor>> {
    let params = param_index(groups);
    let mut buffers = BTreeMap::new();
    for (key, t) in state {
        let Some(name) = key.strip_prefix("momentum_buffer.") else {
            anyhow::bail!("unexpected {who} state entry `{key}`");
        };
        let buf =
            state_like(&params, name, key, t).with_context(|| format!("loading {who} state"))?;
        buffers.insert(name.to_string(), buf);
    }
    Ok(buffers)
}
