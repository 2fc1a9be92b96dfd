//! The plain-SimCLR baseline (Chen et al. 2020, <https://arxiv.org/abs/2002.05709>) on the same
//! harness as MNCLGLF: same backbone, data, optimiser (SGD, cosine, clip), epochs and evaluation;
//! two MoCo-v2 views per image, SimCLR projection head `Linear–BN–ReLU–Linear`
//! (`simclr.hidden`, `simclr.out_dim`) and NT-Xent with τ = `simclr.temperature`.
//!
//! The network and loss are core's [`contrast_core::frameworks::SimClr`] (the same SimCLR that
//! the SPPS and GraSS baselines use); only the harness glue is here.

use crate::config::MultinetConfig;
use crate::model::resnet_config;
use anyhow::{ensure, Context, Result};
use contrast_core::frameworks::{SimClr, SimClrConfig};
use contrast_core::tensors::{load_into, named_variables, Named};
use contrast_core::train::Checkpoint;
use tch::nn::VarStore;
use tch::{Device, Tensor};

pub struct SimclrBaseline {
    pub vs: VarStore,
    net: SimClr,
    cfg: MultinetConfig,
}

impl SimclrBaseline {
    pub fn new(cfg: &MultinetConfig, device: Device) -> Result<Self> {
        let vs = VarStore::new(device);
        let net = SimClr::with_backbone(
            vs.root(),
            &resnet_config(cfg),
            &SimClrConfig {
                hidden_dim: cfg.simclr.hidden,
                out_dim: cfg.simclr.out_dim,
                head_bn: true,
                temperature: cfg.simclr.temperature,
                joint_forward: false,
                ..SimClrConfig::default()
            },
        )?;
        Ok(Self {
            vs,
            net,
            cfg: cfg.clone(),
        })
    }
}

impl SimclrBaseline {
    pub fn loss(&mut self, views: &[Tensor]) -> Result<(Tensor, Vec<(&'static str, f64)>)> {
        ensure!(
            views.len() >= 2,
            "SimCLR needs 2 views, got {}",
            views.len()
        );
        let l = self.net.loss(&views[0], &views[1], true)?;
        let v = l.double_value(&[]);
        Ok((l, vec![("total", v), ("nt_xent", v)]))
    }

    pub fn scheduled_vs(&self) -> Vec<&VarStore> {
        vec![&self.vs]
    }

    pub fn fixed_vs(&self) -> Vec<&VarStore> {
        vec![]
    }

    pub fn state(&self) -> Vec<(&'static str, Named)> {
        vec![("encoder", named_variables(&self.vs))]
    }

    pub fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        load_into(&self.vs, ck.group("encoder")?, true).context("restoring the SimCLR encoder")
    }

    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| self.net.features(x, false))
    }

    pub fn describe(&self) -> String {
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
