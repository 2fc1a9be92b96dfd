//! Backbones and heads, with parameter names identical to the PyTorch originals so that their
//! checkpoints load by name.
//!
//! * [`vit`]: timm's `VisionTransformer` (MoCo-v3 / PatchMix initialisation, drop-path, learnable
//!   or fixed 2-D sin-cos position embedding resampled bicubically to other grids).
//! * [`resnet`]: torchvision's ResNet-18/34/50 (+ the CIFAR stem), returning the layer-4 map.
//! * [`heads`]: MLP projectors / predictors of MoCo-v3, SimCLR and BYOL.
//!
//! Conventions. Every module takes `train` explicitly (`forward_t`), so BatchNorm statistics,
//! drop-path and dropout never depend on hidden state. Nothing here hard-codes a device: the
//! tensors follow the [`tch::nn::Path`] they were created on.
//!
//! **BatchNorm buffers.** tch's [`tch::nn::BatchNorm`] stores `weight`, `bias`, `running_mean` and
//! `running_var` under PyTorch's names (the running statistics as non-trainable variables), but
//! has no `num_batches_tracked`: that counter only matters for `momentum=None` (cumulative
//! average), which none of the papers uses. Loading a PyTorch state dict therefore skips the
//! `*.num_batches_tracked` entries (see [`is_untracked_buffer`]); exporting to PyTorch loads with
//! those keys missing.

pub mod export;
pub mod heads;
pub mod resnet;
pub mod vit;
pub mod vnet;

use anyhow::{anyhow, Context, Result};
use std::path::Path;
use tch::nn::{self, Init, VarStore};
use tch::Tensor;

/// Number of trainable parameters (what PyTorch's `sum(p.numel() for p in m.parameters())`
/// reports when every parameter requires grad; BatchNorm running statistics are buffers and are
/// not counted).
pub fn count_parameters(vs: &VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// True for state-dict entries of PyTorch that have no counterpart here (BatchNorm's
/// `num_batches_tracked`); a loader skips them.
pub fn is_untracked_buffer(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// Load PyTorch weights saved by name into `vs`: a `.safetensors` file
/// (`safetensors.torch.save_file(model.state_dict(), …)`) or a `.npz` (`numpy.savez`).
/// Only entries starting with `strip_prefix` are used, with the prefix removed (e.g.
/// `"module.base_encoder."` for a PatchMix / MoCo-v3 checkpoint, `""` for all);
/// `num_batches_tracked` entries are skipped. With `strict`, every variable of `vs` must be
/// present and no other entry may remain; shapes must always match.
pub fn load_pytorch_weights(
    vs: &VarStore,
    path: impl AsRef<Path>,
    strip_prefix: &str,
    strict: bool,
) -> Result<()> {
    let path = path.as_ref();
    let is_npz = path.extension().is_some_and(|e| e == "npz");
    let all = if is_npz {
        Tensor::read_npz(path)
    } else {
        Tensor::read_safetensors(path)
    }
    .map_err(|e| anyhow!("reading {}: {e}", path.display()))?;
    let tensors: Vec<(String, Tensor)> = all
        .into_iter()
        .filter_map(|(n, t)| n.strip_prefix(strip_prefix).map(|s| (s.to_string(), t)))
        .filter(|(n, _)| !is_untracked_buffer(n))
        .collect();
    crate::tensors::load_into(vs, &tensors, strict)
        .with_context(|| format!("loading {} (prefix `{strip_prefix}`)", path.display()))
}

/// `nn.Linear(in_dim, out_dim, bias)` with PyTorch's default initialisation
/// (`kaiming_uniform_(a=√5)` = U(±1/√in_dim) for the weight, U(±1/√in_dim) for the bias).
/// tch's own default (`DEFAULT_KAIMING_UNIFORM`, gain √2) draws √6 times wider, so the
/// torchvision `fc` and the heads use this instead.
pub(crate) fn torch_linear(p: nn::Path, in_dim: i64, out_dim: i64, bias: bool) -> nn::Linear {
    let bound = 1.0 / (in_dim as f64).sqrt();
    nn::linear(
        p,
        in_dim,
        out_dim,
        nn::LinearConfig {
            ws_init: Init::Uniform {
                lo: -bound,
                up: bound,
            },
            bs_init: Some(Init::Uniform {
                lo: -bound,
                up: bound,
            }),
            bias,
        },
    )
}

/// Stochastic depth (Huang et al. 2016, <https://arxiv.org/abs/1603.09382>) as timm's
/// `drop_path(x, drop_prob, training, scale_by_keep=True)`: in training, each sample's residual
/// branch is zeroed with probability `rate` and the survivors are scaled by `1/(1-rate)`;
/// identity in evaluation or when `rate == 0`.
///
/// `xs`: `[B, ...]`; the mask has shape `[B, 1, ..., 1]`.
pub fn drop_path(xs: &Tensor, rate: f64, train: bool) -> Tensor {
    if !train || rate <= 0.0 {
        return xs.shallow_clone();
    }
    let keep = 1.0 - rate;
    let mut shape = vec![1i64; xs.dim()];
    shape[0] = xs.size()[0];
    let mask = Tensor::empty(shape.as_slice(), (xs.kind(), xs.device())).bernoulli_p(keep);
    if keep > 0.0 {
        xs * (mask / keep)
    } else {
        xs * mask
    }
}
