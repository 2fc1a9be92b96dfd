//! SPPS: SimCLR + semantic positive pairs, ResNet-18 (CIFAR stem) + head 2048 → 128 (BN),
//! multi-positive NT-Xent over two views and the partner views, SGD — through the crate's
//! `Method` (`spps::method::Spps`), the step the Trainer runs: it picks the batch's partners
//! and augments their images (the training recipe, 32 px) inside the step.

use super::{batch_of, random_images, weights, StepCase, Through};
use anyhow::Result;
use contrast_core::optim::Optimizer;
use serde_json::{json, Value};
use spps::method::Spps;
use spps::sampler::{Pair, PairSet};
use tch::{Device, Kind, Tensor};

/// One image in this many has a semantic partner (the next image), so a step has a quarter
/// of the batch as partner views.
pub const SPPS_PARTNER_SHARE: usize = 4;

pub struct SppsStep {
    cfg: spps::config::SppsConfig,
    run: Through<Spps>,
    x1: Tensor,
    x2: Tensor,
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
        cfg.spps.enabled = true;
        cfg.spps.share = 1.0;
        let n = batch as usize;
        let ds = random_images(n, 32)?;
        let pairs = PairSet {
            n,
            dim: 512,
            source: "synthetic: image i → i + 1 for every fourth i".into(),
            settings: Default::default(),
            pairs: (0..n - 1)
                .step_by(SPPS_PARTNER_SHARE)
                .map(|i| Pair {
                    i,
                    j: i + 1,
                    sim: 0.9,
                })
                .collect(),
            precision: None,
        };
        let method = Spps::with_data(&cfg, device, ds.clone(), ds, Some(pairs))?;
        let run = Through::new(method, device)?;
        let x1 = Tensor::randn([batch, 3, 32, 32], (Kind::Float, device));
        let x2 = Tensor::randn([batch, 3, 32, 32], (Kind::Float, device));
        Ok(Self { cfg, run, x1, x2 })
    }

    fn indices(&self) -> Vec<i64> {
        (0..self.batch()).collect()
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
        self.run.loss(batch_of(&[
            self.x1.shallow_clone(),
            self.x2.shallow_clone(),
        ]))
    }

    fn update(&mut self) -> Result<()> {
        self.run.update()
    }

    fn optimizer(&mut self) -> &mut dyn Optimizer {
        self.run.optimizer()
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
            "partners": self.batch() as usize / SPPS_PARTNER_SHARE,
            "lr": c.optim.lr,
            "momentum": c.optim.momentum,
            "weight_decay": c.optim.weight_decay,
        })
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = weights(self.run.method.model.trained_vs(), "");
        out.push(("in:x1".into(), self.x1.shallow_clone()));
        out.push(("in:x2".into(), self.x2.shallow_clone()));
        // the partner views the step draws (the same draws: seeded by the run seed and step)
        let partners = self
            .run
            .method
            .partners(&self.indices(), self.run.ctx.step)
            .expect("picking the partners")
            .expect("every fourth image has a partner");
        out.push(("in:xs".into(), partners.x));
        out.push(("in:anchor".into(), partners.anchor));
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        self.run.checked_loss(batch_of(&[
            self.x1.shallow_clone(),
            self.x2.shallow_clone(),
        ]))
    }
}
