//! PatchMix: ViT-T/4 + MoCo-v3 heads, two mixes, soft InfoNCE, AdamW.

use super::{scalar, weights, StepCase, SEED};
use anyhow::Result;
use contrast_core::loss::InfoNce;
use contrast_core::optim::adamw::{AdamW, AdamWConfig};
use contrast_core::optim::{decay_groups, Optimizer};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

/// The paper's drop-path rate, used when timing (the loss check builds the step without it).
pub const PATCHMIX_DROP_PATH: f64 = 0.1;

pub struct PatchMixStep {
    cfg: patchmix::config::PatchMixConfig,
    net: patchmix::model::PatchMixNet,
    mixer: patchmix::mix::PatchMixer,
    nce: InfoNce,
    targets: patchmix::train::StepTargets,
    opt: AdamW,
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
        cfg.mix.p = 1.0;
        cfg.mix.smoothing = 0.0;
        cfg.optim.batch_size = batch as usize;
        let net = patchmix::train::build_net(&cfg, device)?;
        let mixer =
            patchmix::mix::PatchMixer::new(cfg.mix.m, cfg.mix.p, cfg.model.patch_size, 0.0)?;
        let mut nce = InfoNce::new(cfg.optim.temperature)?;
        nce.check_targets = false;
        let targets =
            patchmix::train::StepTargets::new(&mixer, batch, cfg.mix.src_smoothing, device);
        let mut groups = decay_groups(&net.encoder_vs, cfg.optim.wd_start);
        groups.extend(decay_groups(&net.predictor_vs, cfg.optim.wd_start));
        let opt = AdamW::new(
            groups,
            AdamWConfig {
                lr: cfg.optim.base_lr * batch as f64 / 256.0,
                beta1: cfg.optim.beta1,
                beta2: cfg.optim.beta2,
                ..AdamWConfig::default()
            },
        )?;
        let s = cfg.data.image_size as i64;
        let views = (0..2)
            .map(|_| Tensor::randn([batch, 3, s, s], (Kind::Float, device)))
            .collect();
        Ok(Self {
            cfg,
            net,
            mixer,
            nce,
            targets,
            opt,
            views,
        })
    }

    fn terms(&self) -> Result<patchmix::loss::Terms> {
        patchmix::train::step_terms(
            &self.net,
            &self.mixer,
            &self.nce,
            &self.targets,
            &self.views,
            true,
        )
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
        Ok(self.terms()?.total)
    }

    fn optimizer(&mut self) -> &mut dyn Optimizer {
        &mut self.opt
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
            "lr": c.optim.base_lr * self.batch() as f64 / 256.0,
            "weight_decay": c.optim.wd_start,
            "betas": [c.optim.beta1, c.optim.beta2],
        })
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = weights(&self.net.encoder_vs, "");
        out.extend(weights(&self.net.predictor_vs, ""));
        out.push(("in:x1".into(), self.views[0].shallow_clone()));
        out.push(("in:x2".into(), self.views[1].shallow_clone()));
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        tch::manual_seed(SEED);
        let terms = tch::no_grad(|| self.terms())?;
        scalar(&terms.total)
    }
}
