//! Dental CLAIRES: ResNet-18 image encoder + pretrained MiniLM-L6 text encoder (mean pooling),
//! the tutorial's projection heads (256 d), soft-target CLIP loss, AdamW with per-part rates.
//! Token ids are fixed inputs (tokenisation is not part of the timed step).

use super::{scalar, weights, StepCase, SEED};
use anyhow::Result;
use claires::config::ClairesConfig;
use claires::model::Claires;
use claires::text::Pooling;
use contrast_core::optim::{AdamW, Optimizer};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

/// Image side (px) and the longest caption (tokens) of the case.
pub const CLAIRES_IMAGE: i64 = 128;
pub const CLAIRES_TOKENS: i64 = 32;

pub struct ClairesStep {
    cfg: ClairesConfig,
    model: Claires,
    opt: AdamW,
    x: Tensor,
    ids: Tensor,
    mask: Tensor,
}

impl ClairesStep {
    pub fn new(batch: i64, device: Device) -> Result<Self> {
        let mut cfg = ClairesConfig::default();
        cfg.model.image_arch = "resnet18".into();
        cfg.data.image_size = CLAIRES_IMAGE as u32;
        cfg.optim.batch_size = batch as usize;
        let model = Claires::new(&cfg, device)?;
        let opt = claires::method::build_optimizer(&cfg, &model)?;
        let x = Tensor::randn(
            [batch, 3, CLAIRES_IMAGE, CLAIRES_IMAGE],
            (Kind::Float, device),
        );
        // captions of 8..=32 tokens ([CLS] … [SEP], then padding), ids from the word-piece range
        let l = CLAIRES_TOKENS;
        let lens = Tensor::randint_low(8, l + 1, [batch, 1], (Kind::Int64, device));
        let mask = Tensor::arange(l, (Kind::Int64, device))
            .unsqueeze(0)
            .lt_tensor(&lens)
            .to_kind(Kind::Int64);
        let ids = Tensor::randint_low(1000, 30000, [batch, l], (Kind::Int64, device)) * &mask;
        Ok(Self {
            cfg,
            model,
            opt,
            x,
            ids,
            mask,
        })
    }

    /// Projected (image, text) embeddings; `dropout` off for the loss check (BN stays in
    /// training mode, as in the step).
    fn embeddings(&self, dropout: bool) -> Result<(Tensor, Tensor)> {
        let m = &self.model;
        let img = m.embed_images(&self.x, dropout, m.image_trains(&self.cfg))?;
        let text_train = dropout && m.text_trains(&self.cfg);
        let tf = m
            .text
            .bert
            .embed(&self.ids, &self.mask, Pooling::Mean, text_train)?;
        Ok((img, m.project_text(&tf, dropout)))
    }
}

impl StepCase for ClairesStep {
    fn name(&self) -> String {
        format!("claires_r18_minilm_p{CLAIRES_IMAGE}_b{}", self.batch())
    }

    fn batch(&self) -> i64 {
        self.cfg.optim.batch_size as i64
    }

    fn loss(&mut self) -> Result<Tensor> {
        let (img, txt) = self.embeddings(true)?;
        self.model.loss(&img, &txt)
    }

    fn optimizer(&mut self) -> &mut dyn Optimizer {
        &mut self.opt
    }

    fn update(&mut self) -> Result<()> {
        self.opt.step()?;
        self.model.after_step();
        Ok(())
    }

    fn spec(&self) -> Value {
        let c = &self.cfg;
        let a = self.opt.config();
        json!({
            "case": "claires",
            "layers": [2, 2, 2, 2],
            "image": CLAIRES_IMAGE,
            "tokens": CLAIRES_TOKENS,
            "bert": self.model.text.bert.config(),
            "embed_dim": c.model.embed_dim,
            "head_dropout": c.model.head_dropout,
            "loss": c.loss.kind,
            "tau": c.loss.temperature,
            "lr_head": c.optim.lr_head,
            "lr_image": c.optim.lr_image,
            "lr_text": c.optim.lr_text,
            "weight_decay": c.optim.weight_decay,
            "betas": [a.beta1, a.beta2],
            "eps": a.eps,
        })
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = weights(&self.model.vs, "");
        out.push(("in:x".into(), self.x.shallow_clone()));
        out.push(("in:ids".into(), self.ids.shallow_clone()));
        out.push(("in:mask".into(), self.mask.shallow_clone()));
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        tch::manual_seed(SEED);
        let loss = tch::no_grad(|| -> Result<Tensor> {
            let (img, txt) = self.embeddings(false)?;
            self.model.loss(&img, &txt)
        })?;
        scalar(&loss)
    }
}
