//! The networks: SimCLR (core [`SimClr`]) or MoCo-v2 (core [`MocoV2`]) on a ResNet, each
//! taking optional semantic partner views (SPPS) in its loss. The training hooks (momentum
//! update, checkpoint groups) are the [`crate::method::Spps`] `Method` impl's.

use crate::config::{Framework, SppsConfig};
use crate::loss::spps_nt_xent;
use anyhow::{Context, Result};
use contrast_core::dist;
use contrast_core::frameworks::mocov2::MocoV2;
use contrast_core::frameworks::{resnet_config, SimClr, SimClrConfig};
use contrast_core::nn::resnet::ResNetConfig;
use contrast_core::tensors::load_into;
use contrast_core::train::Checkpoint;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

/// The backbone of a config (arch, stem, optional per-stage block override).
pub fn backbone_config(cfg: &SppsConfig) -> Result<ResNetConfig> {
    let mut rc = resnet_config(&cfg.model.arch, cfg.model.stem)?;
    if !cfg.model.layers.is_empty() {
        rc.layers = cfg.model.layers.as_slice().try_into().with_context(|| {
            format!(
                "model.layers must have 4 entries, got {:?}",
                cfg.model.layers
            )
        })?;
    }
    rc.zero_init_residual = cfg.model.zero_init_residual;
    Ok(rc)
}

/// Partner views of a step: `x [M, 3, S, S]` and the batch row of each partner's anchor `[M]`.
pub struct Partners {
    /// The augmented partner views `[M, 3, S, S]` (this rank's anchors' partners).
    pub x: Tensor,
    /// Each partner's anchor: its row in this rank's batch `[M]`.
    pub anchor: Tensor,
    /// This rank's first row in the global batch (0 in one process).
    pub first_row: i64,
}

impl Partners {
    pub fn to_device(&self, device: Device) -> Self {
        Self {
            x: self.x.to_device(device),
            anchor: self.anchor.to_device(device),
            first_row: self.first_row,
        }
    }
}

/// The network of the configured framework.
pub enum Model {
    /// `loss_scale`: `simclr.loss_scale` (2 = the official SimCLR's sum of the two views' losses).
    Simclr {
        vs: VarStore,
        net: Box<SimClr>,
        loss_scale: f64,
    },
    Mocov2(Box<MocoV2>),
}

impl Model {
    pub fn new(cfg: &SppsConfig, device: Device) -> Result<Self> {
        let rc = backbone_config(cfg)?;
        Ok(match cfg.framework {
            Framework::Simclr => {
                let vs = VarStore::new(device);
                let net = SimClr::with_backbone(
                    vs.root(),
                    &rc,
                    &SimClrConfig {
                        hidden_dim: cfg.simclr.hidden,
                        out_dim: cfg.simclr.out_dim,
                        head_bn: cfg.simclr.head_bn,
                        temperature: cfg.simclr.temperature,
                        joint_forward: cfg.simclr.joint_forward,
                        ..SimClrConfig::default()
                    },
                )?;
                anyhow::ensure!(
                    cfg.simclr.loss_scale > 0.0 && cfg.simclr.loss_scale.is_finite(),
                    "simclr.loss_scale must be positive, got {}",
                    cfg.simclr.loss_scale
                );
                Model::Simclr {
                    vs,
                    net: Box::new(net),
                    loss_scale: cfg.simclr.loss_scale,
                }
            }
            Framework::Mocov2 => Model::Mocov2(Box::new(MocoV2::new(
                &rc,
                &cfg.mocov2,
                cfg.runtime.seed,
                device,
            )?)),
        })
    }

    /// The trained variables.
    pub fn trained_vs(&self) -> &VarStore {
        match self {
            Model::Simclr { vs, .. } => vs,
            Model::Mocov2(m) => &m.query_vs,
        }
    }

    /// The step's loss for views `x1`, `x2` of the batch and optional partner views.
    pub fn loss(
        &mut self,
        x1: &Tensor,
        x2: &Tensor,
        partners: Option<&Partners>,
    ) -> Result<Tensor> {
        match self {
            Model::Simclr {
                net, loss_scale, ..
            } => {
                let (z1, z2) = net.project_pair(x1, x2, true)?;
                let extra = match partners {
                    // a rank without partner rows of its own: no forward, unless its
                    // BatchNorms must join the others' synchronised statistics
                    Some(p) if p.x.size()[0] == 0 && !dist::sync_batch_norm() => Some((
                        Tensor::zeros([0, z1.size()[1]], (z1.kind(), z1.device())),
                        &p.anchor + p.first_row,
                    )),
                    Some(p) => Some((net.project(&p.x, true)?, &p.anchor + p.first_row)),
                    None => None,
                };
                // several ranks: NT-Xent over every rank's projections (the official SimCLR's
                // cross-replica concat), the extra positives' anchors as global rows
                let (z1, z2, extra) = if dist::world() > 1 {
                    let extra = match extra {
                        Some((zs, a)) => {
                            Some((dist::gather_rows_with_grad(&zs)?, dist::gather_rows(&a)?))
                        }
                        None => None,
                    };
                    let mut z = dist::gather_columns_with_grad(&[&z1, &z2])?;
                    let z2 = z.pop().context("the gathered second views")?;
                    (z.pop().context("the gathered first views")?, z2, extra)
                } else {
                    (z1, z2, extra)
                };
                let extra = extra.as_ref().map(|(zs, a)| (zs, a));
                let l = spps_nt_xent(&z1, &z2, extra, net.cfg.temperature)?;
                Ok(if *loss_scale == 1.0 {
                    l
                } else {
                    l * *loss_scale
                })
            }
            // several ranks: a rank without partner rows of its own passes none (its key encoder
            // still runs them when its BatchNorms join synchronised statistics)
            Model::Mocov2(m) => m.loss(
                x1,
                x2,
                partners
                    .filter(|p| p.x.size()[0] > 0 || dist::sync_batch_norm())
                    .map(|p| (&p.x, &p.anchor)),
                true,
            ),
        }
    }

    /// Frozen pooled backbone features `[B, F]` (BN eval mode, no gradient).
    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| match self {
            Model::Simclr { net, .. } => net.features(x, false),
            Model::Mocov2(m) => m.query.features(x, false),
        })
    }

    /// Frozen projector output `[B, out]` (eval mode, no gradient).
    pub fn embed_projector(&self, x: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| match self {
            Model::Simclr { net, .. } => net.project(x, false),
            Model::Mocov2(m) => Ok(m
                .query
                .projector
                .forward_t(&m.query.features(x, false)?, false)),
        })
    }

    /// Only the encoder group (the sampler needs nothing else).
    pub fn restore_encoder(&mut self, ck: &Checkpoint) -> Result<()> {
        load_into(self.trained_vs(), ck.group("encoder")?, true)
            .context("loading the frozen encoder for the sampler")
    }

    pub fn describe(&self, cfg: &SppsConfig) -> String {
        let rc = format!(
            "{} (layers {:?}, stem {:?})",
            cfg.model.arch, cfg.model.layers, cfg.model.stem
        );
        match cfg.framework {
            Framework::Simclr => format!(
                "SimCLR: {rc} + head →{}→{} (BN {}), τ {}, loss ×{}{}",
                cfg.simclr.hidden,
                cfg.simclr.out_dim,
                cfg.simclr.head_bn,
                cfg.simclr.temperature,
                cfg.simclr.loss_scale,
                if cfg.simclr.joint_forward {
                    ", views as one batch"
                } else {
                    ""
                }
            ),
            Framework::Mocov2 => format!(
                "MoCo-v2: {rc} + head →{}→{}, queue {}, m {}, τ {}",
                cfg.mocov2.hidden_dim,
                cfg.mocov2.out_dim,
                cfg.mocov2.queue_size,
                cfg.mocov2.momentum,
                cfg.mocov2.temperature
            ),
        }
    }
}
