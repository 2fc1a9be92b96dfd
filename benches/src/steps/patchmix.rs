//! PatchMix: ViT-T/4 + MoCo-v3 heads, two mixes, soft InfoNCE, AdamW — through the crate's
//! `Method` (`patchmix::method::PatchMix`), the step the Trainer runs.

use super::{batch_of, random_images, weights, StepCase, Through};
use anyhow::Result;
use contrast_core::optim::Optimizer;
use patchmix::method::PatchMix;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

/// The paper's drop-path rate, used when timing (the loss check builds the step without it).
pub const PATCHMIX_DROP_PATH: f64 = 0.1;

pub struct PatchMixStep {
    cfg: patchmix::config::PatchMixConfig,
    run: Through<PatchMix>,
    views: Vec<Tensor>,
}

impl PatchMixStep {
    pub fn new(batch: i64, deterministic: bool, device: Device) -> Result<Self> {
        let mut cfg = patchmix::config::PatchMixConfig::default();
        cfg.data.image_size = 32;
        cfg.model.arch = "vit_tiny".into();
        cfg.model.patch_size = 4;
        cfg.model.drop_path = if deterministic {
            0.0
        } else {
            PATCHMIX_DROP_PATH
        };
        cfg.model.use_momentum = false;
        cfg.mix.enabled = true;
        cfg.mix.m = 2;
        // every step mixes (the paper's p = 1 on CIFAR and ImageNet)
        cfg.mix.p = 1.0;
        cfg.mix.smoothing = 0.0;
        cfg.optim.batch_size = batch as usize;
        let s = cfg.data.image_size as i64;
        // the data sets serve the loader and the evaluation only: the step takes the views
        let ds = random_images(batch as usize, s as usize)?;
        let method = PatchMix::with_data(&cfg, device, ds.clone(), ds)?;
        let run = Through::new(method, device)?;
        let views = (0..2)
            .map(|_| Tensor::randn([batch, 3, s, s], (Kind::Float, device)))
            .collect();
        Ok(Self { cfg, run, views })
    }
}

impl StepCase for PatchMixStep {
    fn name(&self) -> String {
        format!(
            "patchmix_vit_t{}_b{}",
            self.cfg.model.patch_size,
            self.batch()
        )
    }

    fn batch(&self) -> i64 {
        self.cfg.optim.batch_size as i64
    }

    fn loss(&mut self) -> Result<Tensor> {
        self.run.loss(batch_of(&self.views))
    }

    fn update(&mut self) -> Result<()> {
        self.run.update()
    }

    fn optimizer(&mut self) -> &mut dyn Optimizer {
        self.run.optimizer()
    }

    fn spec(&self) -> Value {
        let c = &self.cfg;
        let vit = patchmix::train::vit_config(c).ok();
        json!({
            "case": "patchmix",
            "image": c.data.image_size,
            "patch": c.model.patch_size,
            "embed_dim": vit.as_ref().map(|v| v.embed_dim),
            "depth": vit.as_ref().map(|v| v.depth),
            "heads": vit.as_ref().map(|v| v.num_heads),
            "drop_path": c.model.drop_path,
            "drop_path_timing": PATCHMIX_DROP_PATH,
            "proj_layers": c.model.proj_layers,
            "pred_layers": c.model.pred_layers,
            "mlp_dim": c.model.mlp_dim,
            "out_dim": c.model.out_dim,
            "m": c.mix.m,
            "src_smoothing": c.mix.src_smoothing,
            "tau": c.optim.temperature,
            // as the Trainer sets them at step 0 of a one-step run
            "lr": self.run.opt.lr.value(0),
            "weight_decay": self.run.opt.weight_decay.as_ref().map_or(c.optim.wd_start, |w| w.value(0)),
            "betas": [c.optim.beta1, c.optim.beta2],
        })
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let net = &self.run.method.net;
        let mut out = weights(&net.encoder_vs, "");
        out.extend(weights(&net.predictor_vs, ""));
        out.push(("in:x1".into(), self.views[0].shallow_clone()));
        out.push(("in:x2".into(), self.views[1].shallow_clone()));
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        self.run.checked_loss(batch_of(&self.views))
    }
}
