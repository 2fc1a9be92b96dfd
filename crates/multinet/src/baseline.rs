//! The plain-SimCLR baseline (Chen et al. 2020, <https://arxiv.org/abs/2002.05709>) on the same
//! harness as MNCLGLF: same backbone, data, optimiser (SGD, cosine, clip), epochs and evaluation;
//! two MoCo-v2 views per image, SimCLR projection head `Linear–BN–ReLU–Linear`
//! (`simclr.hidden`, `simclr.out_dim`) and NT-Xent with τ = `simclr.temperature`.
//!
//! Composed only of core blocks (`nn::heads::simclr_head`, `loss::NtXent`); no optimiser or
//! schedule of its own.

use crate::config::MultinetConfig;
use crate::method::Learner;
use crate::model::resnet_config;
use anyhow::{ensure, Context, Result};
use contrast_core::loss::NtXent;
use contrast_core::nn::heads::{simclr_head, MlpHead};
use contrast_core::nn::resnet::ResNet;
use contrast_core::tensors::{load_into, named_variables, Named};
use contrast_core::train::Checkpoint;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

pub struct SimclrBaseline {
    pub vs: VarStore,
    backbone: ResNet,
    head: MlpHead,
    loss: NtXent,
    cfg: MultinetConfig,
}

impl SimclrBaseline {
    pub fn new(cfg: &MultinetConfig, device: Device) -> Result<Self> {
        let vs = VarStore::new(device);
        let root = vs.root();
        let backbone = ResNet::new(&root / "backbone", &resnet_config(cfg))?;
        let head = simclr_head(
            &root / "projector",
            backbone.num_features(),
            cfg.simclr.hidden,
            cfg.simclr.out_dim,
            true,
        )?;
        Ok(Self {
            vs,
            backbone,
            head,
            loss: NtXent::new(cfg.simclr.temperature)?,
            cfg: cfg.clone(),
        })
    }

    fn project(&self, x: &Tensor) -> Result<Tensor> {
        let f = self.backbone.forward_features(x, true)?.pooled; // [N, 512]
        Ok(self.head.forward_t(&f, true)) // [N, out]
    }
}

impl Learner for SimclrBaseline {
    fn views(&self) -> usize {
        2
    }

    fn before_step(&mut self, _step: u64) -> Result<()> {
        Ok(())
    }

    fn loss(&mut self, views: &[Tensor]) -> Result<(Tensor, Vec<(&'static str, f64)>)> {
        ensure!(
            views.len() >= 2,
            "SimCLR needs 2 views, got {}",
            views.len()
        );
        let z1 = self.project(&views[0])?;
        let z2 = self.project(&views[1])?;
        let l = self.loss.forward_pair(&z1, &z2)?;
        let v = l.double_value(&[]);
        Ok((l, vec![("total", v), ("nt_xent", v)]))
    }

    fn scheduled_vs(&self) -> Vec<&VarStore> {
        vec![&self.vs]
    }

    fn fixed_vs(&self) -> Vec<&VarStore> {
        vec![]
    }

    fn state(&self) -> Vec<(&'static str, Named)> {
        vec![("encoder", named_variables(&self.vs))]
    }

    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        load_into(&self.vs, ck.group("encoder")?, true).context("restoring the SimCLR encoder")
    }

    fn embed(&self, x: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| Ok(self.backbone.forward_features(x, false)?.pooled))
    }

    fn describe(&self) -> String {
        format!(
            "ResNet(layers {:?}, stem {:?}) + SimCLR head 512→{}→{} (τ {})",
            self.cfg.model.layers,
            self.cfg.model.stem,
            self.cfg.simclr.hidden,
            self.cfg.simclr.out_dim,
            self.cfg.simclr.temperature
        )
    }
}
