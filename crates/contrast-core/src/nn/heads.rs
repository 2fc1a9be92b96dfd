//! MLP heads (projectors and predictors) as `nn.Sequential` stacks of Linear / BatchNorm1d /
//! ReLU, named as PyTorch names them: by position in the sequence, ReLUs included. A 3-layer
//! MoCo-v3 projector is `0` Linear, `1` BN, `2` ReLU, `3` Linear, `4` BN, `5` ReLU, `6` Linear,
//! `7` BN(affine=False), so its variables are `0.weight`, `1.weight`, `1.bias`,
//! `1.running_mean`, …, `7.running_var`, exactly the keys of the original checkpoints (under
//! whatever prefix the caller's path gives, e.g. `base_encoder.head` or `predictor`).
//!
//! All linear layers use PyTorch's default initialisation (`U(±1/√fan_in)`): MoCo-v3 and
//! PatchMix build their heads after the backbone's custom init, so the heads keep the default.
//!
//! ```no_run
//! use contrast_core::nn::heads::{moco_v3_projector, moco_v3_predictor};
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let root = vs.root();
//! // PatchMix ViT-T: CLS 192 → 4096 → 4096 → 256, then predictor 256 → 4096 → 256.
//! let proj = moco_v3_projector(&root / "head", 3, 192, 4096, 256).unwrap();
//! let pred = moco_v3_predictor(&root / "predictor", 2, 256, 4096, 256, true).unwrap();
//! ```

use super::torch_linear;
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Init, Module, ModuleT};
use tch::Tensor;

/// Normalisation after the last linear layer (config value `"none"`, `"affine"`, `"no_affine"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastNorm {
    /// None (SimCLR, BYOL, the official MoCo-v3 predictor).
    None,
    /// BatchNorm1d with weight and bias (MNCLGLF's projector).
    Affine,
    /// BatchNorm1d(affine=False): running statistics only (MoCo-v3 projector, "following
    /// SimCLR's design"; PatchMix also on its predictor).
    NoAffine,
}

/// A generic MLP head: `dims = [in, hidden…, out]` gives `dims.len() − 1` linear layers; every
/// hidden layer is Linear → (BN) → ReLU. Default: MoCo-v3's 3-layer projector on ViT-T
/// (192 → 4096 → 4096 → 256, no bias, BN, BN(affine=False) last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpConfig {
    /// Widths, input first, output last (at least two entries).
    pub dims: Vec<i64>,
    /// Bias on the linear layers (MoCo-v3: `False`; SimCLR/BYOL/solo-learn: `True`).
    pub bias: bool,
    /// BatchNorm1d between each hidden linear layer and its ReLU.
    pub hidden_bn: bool,
    /// Normalisation after the last linear layer.
    pub last_norm: LastNorm,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            dims: vec![192, 4096, 4096, 256],
            bias: false,
            hidden_bn: true,
            last_norm: LastNorm::NoAffine,
        }
    }
}

#[derive(Debug)]
enum Layer {
    Linear(nn::Linear),
    Bn(nn::BatchNorm),
    Relu,
}

/// An MLP head built from an [`MlpConfig`]. `forward_t(xs, train)`: `[B, in]` → `[B, out]`;
/// BatchNorm uses batch statistics when `train`.
#[derive(Debug)]
pub struct MlpHead {
    layers: Vec<Layer>,
    out_dim: i64,
}

fn bn1d(p: nn::Path, c: i64, affine: bool) -> nn::BatchNorm {
    nn::batch_norm1d(
        p,
        c,
        nn::BatchNormConfig {
            affine,
            ws_init: Init::Const(1.0),
            bs_init: Init::Const(0.0),
            ..Default::default()
        },
    )
}

impl MlpHead {
    /// Build under `p`; layers are named by their `nn.Sequential` index.
    pub fn new(p: nn::Path, cfg: &MlpConfig) -> Result<Self> {
        ensure!(
            cfg.dims.len() >= 2,
            "an MLP head needs at least [in, out] widths, got {:?}",
            cfg.dims
        );
        ensure!(
            cfg.dims.iter().all(|&d| d > 0),
            "MLP widths must be positive, got {:?}",
            cfg.dims
        );
        let n = cfg.dims.len() - 1;
        let mut layers: Vec<Layer> = Vec::new();
        // The `nn.Sequential` index of the next module is the number of modules so far.
        let at = |layers: &Vec<Layer>| &p / layers.len() as i64;
        for l in 0..n {
            let (d1, d2) = (cfg.dims[l], cfg.dims[l + 1]);
            layers.push(Layer::Linear(torch_linear(at(&layers), d1, d2, cfg.bias)));
            if l + 1 < n {
                if cfg.hidden_bn {
                    layers.push(Layer::Bn(bn1d(at(&layers), d2, true)));
                }
                layers.push(Layer::Relu);
            } else {
                match cfg.last_norm {
                    LastNorm::None => {}
                    LastNorm::Affine => layers.push(Layer::Bn(bn1d(at(&layers), d2, true))),
                    LastNorm::NoAffine => layers.push(Layer::Bn(bn1d(at(&layers), d2, false))),
                }
            }
        }
        Ok(Self {
            layers,
            out_dim: *cfg.dims.last().unwrap_or(&0),
        })
    }

    /// Output width.
    pub fn out_dim(&self) -> i64 {
        self.out_dim
    }
}

impl ModuleT for MlpHead {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.shallow_clone();
        for l in &self.layers {
            x = match l {
                Layer::Linear(lin) => lin.forward(&x),
                Layer::Bn(b) => crate::dist::batch_norm(b, &x, train),
                Layer::Relu => x.relu(),
            };
        }
        x
    }
}

/// `[in, hidden × (layers − 1), out]`.
fn widths(num_layers: usize, in_dim: i64, hidden: i64, out_dim: i64) -> Result<Vec<i64>> {
    ensure!(num_layers >= 1, "an MLP head needs at least one layer");
    let mut dims = vec![in_dim];
    dims.extend(std::iter::repeat_n(hidden, num_layers - 1));
    dims.push(out_dim);
    Ok(dims)
}

/// MoCo-v3's projector (`_build_mlp(num_layers, in, mlp_dim, out, last_bn=True)`,
/// `facebookresearch/moco-v3` `moco/builder.py`; identical in PatchMix
/// `module/frame/contrast_momentum.py`): bias-free Linear layers, BN + ReLU after each hidden
/// one, BN(affine=False) at the end. ViT: 3 layers (192/384/768 → 4096 → 4096 → 256);
/// ResNet: 2 layers (2048 → 4096 → 256).
pub fn moco_v3_projector(
    p: nn::Path,
    num_layers: usize,
    in_dim: i64,
    mlp_dim: i64,
    out_dim: i64,
) -> Result<MlpHead> {
    MlpHead::new(
        p,
        &MlpConfig {
            dims: widths(num_layers, in_dim, mlp_dim, out_dim)?,
            bias: false,
            hidden_bn: true,
            last_norm: LastNorm::NoAffine,
        },
    )
}

/// MoCo-v3's predictor (`_build_mlp(2, dim, mlp_dim, dim, last_bn)`): the official MoCo-v3
/// uses `last_bn = false`; PatchMix keeps the default `last_bn = true`
/// (BN(affine=False) at the end).
pub fn moco_v3_predictor(
    p: nn::Path,
    num_layers: usize,
    in_dim: i64,
    mlp_dim: i64,
    out_dim: i64,
    last_bn: bool,
) -> Result<MlpHead> {
    MlpHead::new(
        p,
        &MlpConfig {
            dims: widths(num_layers, in_dim, mlp_dim, out_dim)?,
            bias: false,
            hidden_bn: true,
            last_norm: if last_bn {
                LastNorm::NoAffine
            } else {
                LastNorm::None
            },
        },
    )
}

/// SimCLR's projection head (Chen et al. 2020, <https://arxiv.org/abs/2002.05709>) as
/// solo-learn's `Linear → ReLU → Linear` (names `0`, `2`), with bias; `bn = true` inserts
/// BatchNorm1d after the hidden Linear (`0` Linear, `1` BN, `2` ReLU, `3` Linear; SimCLR-v2
/// style). solo-learn CIFAR: 512 → 2048 → 256; lightly: 512 → 512 → 128.
pub fn simclr_head(
    p: nn::Path,
    in_dim: i64,
    hidden: i64,
    out_dim: i64,
    bn: bool,
) -> Result<MlpHead> {
    MlpHead::new(
        p,
        &MlpConfig {
            dims: vec![in_dim, hidden, out_dim],
            bias: true,
            hidden_bn: bn,
            last_norm: LastNorm::None,
        },
    )
}

/// BYOL's projector / predictor (Grill et al. 2020, <https://arxiv.org/abs/2006.07733>) as
/// solo-learn's `Linear → BatchNorm1d → ReLU → Linear` (names `0`, `1`, `3`), with bias.
/// solo-learn CIFAR: projector 512 → 4096 → 256, predictor 256 → 4096 → 256.
pub fn byol_head(p: nn::Path, in_dim: i64, hidden: i64, out_dim: i64) -> Result<MlpHead> {
    MlpHead::new(
        p,
        &MlpConfig {
            dims: vec![in_dim, hidden, out_dim],
            bias: true,
            hidden_bn: true,
            last_norm: LastNorm::None,
        },
    )
}
