//! SimCLR — *A Simple Framework for Contrastive Learning of Visual Representations*, Chen et al.
//! 2020, <https://arxiv.org/abs/2002.05709>: `z = g(f(x))` for two augmented views of each
//! image, NT-Xent over the `2N` projections (Eq. 1, the other `2N − 2` as negatives).
//!
//! Composition: `f` = a torchvision-named ResNet from [`crate::nn::resnet`] (CIFAR or ImageNet
//! stem), `g` = [`crate::nn::heads::simclr_head`] (`Linear → (BN) → ReLU → Linear`, the
//! solo-learn / lightly layout), the loss = [`crate::loss::NtXent`]. Each view goes through the
//! network separately (BatchNorm statistics per view, as solo-learn; the original TF code
//! concatenated the views, `joint_forward = true`).
//!
//! ```no_run
//! use contrast_core::frameworks::{SimClr, SimClrConfig};
//! use tch::{nn, Device, Kind, Tensor};
//! # fn main() -> anyhow::Result<()> {
//! let vs = nn::VarStore::new(Device::Cpu);
//! let model = SimClr::new(vs.root(), &SimClrConfig::default())?; // ResNet-18, CIFAR stem
//! let x1 = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
//! let x2 = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
//! let loss = model.loss(&x1, &x2, true)?; // scalar NT-Xent
//! loss.backward();
//! # Ok(()) }
//! ```

use crate::loss::NtXent;
use crate::nn::heads::{simclr_head, MlpHead};
use crate::nn::resnet::{resnet18, resnet34, resnet50, ResNet, ResNetConfig, ResNetFeatures, Stem};
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// SimCLR settings (defaults: the CIFAR recipe of the SimCLR paper / solo-learn: ResNet-18 with
/// the CIFAR stem, head 512 → 2048 → 128 with BN, τ 0.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimClrConfig {
    /// `resnet18`, `resnet34` or `resnet50`.
    pub arch: String,
    /// `cifar` (3×3 conv, no max-pool), `cifar_pad2` or `imagenet` (7×7/2 + max-pool).
    pub stem: Stem,
    /// Hidden width of the projection head.
    pub hidden_dim: i64,
    /// Output width of the projection head.
    pub out_dim: i64,
    /// BatchNorm after the head's hidden layer (solo-learn: yes; SimCLR v1: no).
    pub head_bn: bool,
    /// NT-Xent temperature (SimCLR CIFAR: 0.5; solo-learn CIFAR: 0.2; GraSS: 0.5).
    pub temperature: f64,
    /// Both views through the network as one batch (BatchNorm statistics over `2N`, as the
    /// original TF code) instead of one view at a time.
    pub joint_forward: bool,
}

impl Default for SimClrConfig {
    fn default() -> Self {
        Self {
            arch: "resnet18".into(),
            stem: Stem::Cifar,
            hidden_dim: 2048,
            out_dim: 128,
            head_bn: true,
            temperature: 0.5,
            joint_forward: false,
        }
    }
}

/// The ResNet of an architecture name and stem (no classifier).
pub fn resnet_config(arch: &str, stem: Stem) -> Result<ResNetConfig> {
    let mut c = match arch {
        "resnet18" => resnet18(),
        "resnet34" => resnet34(),
        "resnet50" => resnet50(),
        other => bail!("unknown backbone `{other}` (known: resnet18, resnet34, resnet50)"),
    };
    c.stem = stem;
    c.num_classes = None;
    Ok(c)
}

/// A SimCLR network: backbone `f` (variables under `backbone.`), projection head `g` (under
/// `projector.`), NT-Xent.
#[derive(Debug)]
pub struct SimClr {
    pub backbone: ResNet,
    pub projector: MlpHead,
    pub loss_fn: NtXent,
    pub cfg: SimClrConfig,
}

impl SimClr {
    /// Build under `p` (e.g. `vs.root()`); validates the config.
    pub fn new(p: nn::Path, cfg: &SimClrConfig) -> Result<Self> {
        Self::with_backbone(p, &resnet_config(&cfg.arch, cfg.stem)?, cfg)
    }

    /// Build with an explicit ResNet (any depth / stem; `cfg.arch` and `cfg.stem` are ignored),
    /// e.g. a method's own backbone settings for its SimCLR baseline.
    pub fn with_backbone(p: nn::Path, backbone: &ResNetConfig, cfg: &SimClrConfig) -> Result<Self> {
        ensure!(
            cfg.hidden_dim > 0 && cfg.out_dim > 0,
            "SimCLR head widths must be positive, got hidden {} out {}",
            cfg.hidden_dim,
            cfg.out_dim
        );
        let backbone = ResNet::new(&p / "backbone", backbone)?;
        let projector = simclr_head(
            &p / "projector",
            backbone.num_features(),
            cfg.hidden_dim,
            cfg.out_dim,
            cfg.head_bn,
        )?;
        Ok(Self {
            backbone,
            projector,
            loss_fn: NtXent::new(cfg.temperature)?,
            cfg: cfg.clone(),
        })
    }

    /// Backbone output (`layer4` map and pooled features `[B, F]`).
    pub fn backbone_features(&self, x: &Tensor, train: bool) -> Result<ResNetFeatures> {
        self.backbone.forward_features(x, train)
    }

    /// Pooled representation `h = f(x)` `[B, F]` (what kNN / linear probes evaluate).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.backbone.forward_features(x, train)?.pooled)
    }

    /// Projection `z = g(f(x))` `[B, out_dim]` (not normalised; NT-Xent normalises).
    pub fn project(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.projector.forward_t(&self.features(x, train)?, train))
    }

    /// Projections of two views `(z1, z2)`, each `[N, out_dim]` (per view, or jointly with
    /// `joint_forward`).
    pub fn project_pair(&self, x1: &Tensor, x2: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        ensure!(
            x1.size() == x2.size(),
            "SimCLR views differ in shape: {:?} vs {:?}",
            x1.size(),
            x2.size()
        );
        if self.cfg.joint_forward {
            let z = self.project(&Tensor::cat(&[x1, x2], 0), train)?; // [2N, D]
            let n = x1.size()[0];
            Ok((z.narrow(0, 0, n), z.narrow(0, n, n)))
        } else {
            Ok((self.project(x1, train)?, self.project(x2, train)?))
        }
    }

    /// The SimCLR loss of one batch of view pairs: NT-Xent over `[z1; z2]` (scalar).
    pub fn loss(&self, x1: &Tensor, x2: &Tensor, train: bool) -> Result<Tensor> {
        let (z1, z2) = self.project_pair(x1, x2, train)?;
        self.loss_fn.forward_pair(&z1, &z2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{single_group, Optimizer, Sgd};
    use tch::{nn::VarStore, Device, Kind};

    fn small() -> SimClrConfig {
        SimClrConfig {
            hidden_dim: 64,
            out_dim: 16,
            ..SimClrConfig::default()
        }
    }

    #[test]
    fn composes_backbone_head_and_nt_xent() {
        let _g = crate::testing::global_rng_lock();
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let m = SimClr::new(vs.root(), &small()).unwrap();
        // parameter names: torchvision ResNet under backbone., nn.Sequential indices under projector.
        let names: Vec<String> = vs.variables().into_keys().collect();
        for n in [
            "backbone.conv1.weight",
            "backbone.layer4.1.bn2.running_var",
            "projector.0.weight",
            "projector.1.weight",
            "projector.3.bias",
        ] {
            assert!(names.contains(&n.to_string()), "missing {n}");
        }
        let x1 = Tensor::randn([6, 3, 16, 16], (Kind::Float, Device::Cpu));
        let x2 = Tensor::randn([6, 3, 16, 16], (Kind::Float, Device::Cpu));
        assert_eq!(m.features(&x1, false).unwrap().size(), [6, 512]);
        let (z1, z2) = m.project_pair(&x1, &x2, false).unwrap();
        assert_eq!(z1.size(), [6, 16]);
        // the loss is exactly NT-Xent of the two projections
        let l = m.loss(&x1, &x2, false).unwrap();
        let r = NtXent::new(0.5).unwrap().forward_pair(&z1, &z2).unwrap();
        assert_eq!(l.double_value(&[]), r.double_value(&[]));
        // joint forward in eval mode (running statistics) gives the same projections
        let joint = SimClr {
            cfg: SimClrConfig {
                joint_forward: true,
                ..small()
            },
            ..m
        };
        let (j1, j2) = joint.project_pair(&x1, &x2, false).unwrap();
        assert!((j1 - z1).abs().max().double_value(&[]) < 1e-5);
        assert!((j2 - z2).abs().max().double_value(&[]) < 1e-5);
        assert!(joint.loss(&x1, &x1.narrow(0, 0, 3), true).is_err());
    }

    #[test]
    fn training_pulls_the_views_of_an_image_together() {
        let _g = crate::testing::global_rng_lock();
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let m = SimClr::new(vs.root(), &small()).unwrap();
        let mut opt = Sgd::new(single_group(&vs, 0.0), 0.05, 0.9, 0.0, false).unwrap();
        let base = Tensor::randn([8, 3, 8, 8], (Kind::Float, Device::Cpu));
        let view = |s: f64| &base + Tensor::randn([8, 3, 8, 8], (Kind::Float, Device::Cpu)) * s;
        let (v1, v2) = (view(0.1), view(0.1));
        let first = m.loss(&v1, &v2, true).unwrap().double_value(&[]);
        for _ in 0..8 {
            let l = m.loss(&v1, &v2, true).unwrap();
            opt.zero_grad();
            l.backward();
            opt.step().unwrap();
        }
        let last = m.loss(&v1, &v2, true).unwrap().double_value(&[]);
        // chance level of NT-Xent with 2N = 16 is ln(15) ≈ 2.71
        assert!(first > 2.0 && last < first - 0.5, "loss {first} → {last}");
    }

    #[test]
    fn bad_settings_are_errors() {
        let vs = VarStore::new(Device::Cpu);
        let e = SimClr::new(
            vs.root(),
            &SimClrConfig {
                arch: "vgg".into(),
                ..small()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown backbone `vgg`"), "{e}");
        assert!(SimClr::new(
            vs.root(),
            &SimClrConfig {
                temperature: 0.0,
                ..small()
            }
        )
        .is_err());
        assert!(SimClr::new(
            vs.root(),
            &SimClrConfig {
                out_dim: 0,
                ..small()
            }
        )
        .is_err());
    }
}
