//! SPPS: SimCLR + semantic positive pairs, ResNet-18 (CIFAR stem) + head 2048 → 128 (BN),
//! multi-positive NT-Xent over two views and the partner views, SGD.

use super::{scalar, weights, StepCase, SEED};
use anyhow::Result;
use contrast_core::optim::Optimizer;
use serde_json::{json, Value};
use spps::model::{Model, Partners};
use tch::{Device, Kind, Tensor};

/// Partner views per step: a quarter of the batch (`spps.share` picks about this many).
pub const SPPS_PARTNER_SHARE: i64 = 4;

pub struct SppsStep {
    cfg: spps::config::SppsConfig,
    model: Model,
    opt: Box<dyn Optimizer>,
    x1: Tensor,
    x2: Tensor,
    partners: Partners,
}

impl SppsStep {
    pub fn new(batch: i64, device: Device) -> Result<Self> {
        let mut cfg = spps::config::SppsConfig {
            framework: spps::config::Framework::Simclr,
            ..Default::default()
        };
        cfg.model.arch = "resnet18".into();
        cfg.model.stem = contrast_core::nn::resnet::Stem::Cifar;
        cfg.model.layers = vec![];
        cfg.data.image_size = 32;
        cfg.simclr.hidden = 2048;
        cfg.simclr.out_dim = 128;
        cfg.simclr.head_bn = true;
        cfg.simclr.temperature = 0.5;
        cfg.optim.batch_size = batch as usize;
        let model = Model::new(&cfg, device)?;
        let opt = spps::train::build_optimizer(&cfg, model.trained_vs())?;
        let m = (batch / SPPS_PARTNER_SHARE).max(1);
        let x1 = Tensor::randn([batch, 3, 32, 32], (Kind::Float, device));
        let x2 = Tensor::randn([batch, 3, 32, 32], (Kind::Float, device));
        let partners = Partners {
            x: Tensor::randn([m, 3, 32, 32], (Kind::Float, device)),
            // distinct anchor rows, not in order
            anchor: Tensor::randperm(batch, (Kind::Int64, device)).narrow(0, 0, m),
        };
        Ok(Self {
            cfg,
            model,
            opt,
            x1,
            x2,
            partners,
        })
    }
}

impl StepCase for SppsStep {
    fn name(&self) -> String {
        format!("spps_simclr_r18_b{}", self.batch())
    }

    fn batch(&self) -> i64 {
        self.cfg.optim.batch_size as i64
    }

    fn loss(&mut self) -> Result<Tensor> {
        // SimCLR: no per-step update before the forward (MoCo's momentum update is the method's)
        self.model.loss(&self.x1, &self.x2, Some(&self.partners))
    }

    fn optimizer(&mut self) -> &mut dyn Optimizer {
        self.opt.as_mut()
    }

    fn spec(&self) -> Value {
        let c = &self.cfg;
        json!({
            "case": "spps",
            "layers": [2, 2, 2, 2],
            "hidden": c.simclr.hidden,
            "out_dim": c.simclr.out_dim,
            "head_bn": c.simclr.head_bn,
            "tau": c.simclr.temperature,
            "partners": self.partners.anchor.size()[0],
            "lr": c.optim.lr,
            "momentum": c.optim.momentum,
            "weight_decay": c.optim.weight_decay,
        })
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = weights(self.model.trained_vs(), "");
        out.push(("in:x1".into(), self.x1.shallow_clone()));
        out.push(("in:x2".into(), self.x2.shallow_clone()));
        out.push(("in:xs".into(), self.partners.x.shallow_clone()));
        out.push(("in:anchor".into(), self.partners.anchor.shallow_clone()));
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        tch::manual_seed(SEED);
        let loss = tch::no_grad(|| self.model.loss(&self.x1, &self.x2, Some(&self.partners)))?;
        scalar(&loss)
    }
}
