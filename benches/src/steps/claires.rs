//! Dental CLAIRES: ResNet-18 image encoder + pretrained MiniLM-L6 text encoder (mean pooling),
//! the tutorial's projection heads (256 d), soft-target CLIP loss, AdamW with per-part rates —
//! through the crate's `Method` (`claires::method::ClairesMethod`), the step the Trainer runs:
//! it tokenizes the batch's captions (MiniLM's word pieces, at most 32 tokens here) inside the
//! step, then encodes images and texts.

use super::{weights, StepCase, Through, SEED};
use anyhow::Result;
use claires::config::ClairesConfig;
use claires::method::{ClairesMethod, Split};
use contrast_core::optim::Optimizer;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

/// Image side (px) and the longest caption (tokens) of the case.
pub const CLAIRES_IMAGE: i64 = 128;
pub const CLAIRES_TOKENS: i64 = 32;

/// Words of the synthetic captions (radiology-report words, all in MiniLM's vocabulary or split
/// into a few word pieces).
const WORDS: &[&str] = &[
    "the",
    "image",
    "shows",
    "a",
    "left",
    "right",
    "upper",
    "lower",
    "molar",
    "premolar",
    "incisor",
    "canine",
    "root",
    "crown",
    "periapical",
    "lesion",
    "radiolucency",
    "with",
    "bone",
    "loss",
    "around",
    "filling",
    "restoration",
    "caries",
    "in",
    "of",
    "and",
    "no",
    "visible",
    "fracture",
    "canal",
    "treatment",
    "impacted",
    "third",
    "mandibular",
    "maxillary",
    "panoramic",
    "view",
    "axial",
    "plane",
    "mild",
    "severe",
    "normal",
    "finding",
];

pub struct ClairesStep {
    cfg: ClairesConfig,
    run: Through<ClairesMethod>,
}

impl ClairesStep {
    /// `deterministic`: no dropout in the heads and the text encoder (the loss check).
    pub fn new(batch: i64, deterministic: bool, device: Device) -> Result<Self> {
        let mut cfg = ClairesConfig::default();
        cfg.model.image_arch = "resnet18".into();
        cfg.model.max_tokens = CLAIRES_TOKENS as usize;
        if deterministic {
            cfg.model.head_dropout = 0.0;
            cfg.model.text_dropout = Some(0.0);
        }
        cfg.data.image_size = CLAIRES_IMAGE as u32;
        cfg.optim.batch_size = batch as usize;
        let x = Tensor::randn(
            [batch, 3, CLAIRES_IMAGE, CLAIRES_IMAGE],
            (Kind::Float, Device::Cpu),
        );
        // captions of 6..=28 words (about 8–32 tokens with [CLS] and [SEP])
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED as u64);
        let texts = (0..batch)
            .map(|_| {
                let n = rng.gen_range(6..=28);
                (0..n)
                    .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let none = Split::unrecorded(Tensor::zeros([0], (Kind::Float, Device::Cpu)), vec![]);
        let method = ClairesMethod::with_data(&cfg, device, Split::unrecorded(x, texts), none)?;
        let run = Through::new(method, device)?;
        Ok(Self { cfg, run })
    }

    /// The batch: every training record, in order.
    fn indices(&self) -> Vec<i64> {
        (0..self.batch()).collect()
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
        let batch = self.indices();
        self.run.loss(batch)
    }

    fn optimizer(&mut self) -> &mut dyn Optimizer {
        self.run.optimizer()
    }

    fn update(&mut self) -> Result<()> {
        self.run.update()
    }

    fn spec(&self) -> Value {
        let c = &self.cfg;
        let m = &self.run.method.model;
        let a = claires::method::adamw_config(c);
        json!({
            "case": "claires",
            "layers": [2, 2, 2, 2],
            "image": CLAIRES_IMAGE,
            "tokens": CLAIRES_TOKENS,
            "bert": m.text.bert.config(),
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
        let m = &self.run.method;
        let mut out = weights(&m.model.vs, "");
        out.push(("in:x".into(), m.images(&self.indices())));
        // the word pieces the step encodes (padded to the longest caption)
        let (ids, mask) = m
            .model
            .text
            .tokenizer
            .batch(&m.texts(&self.indices()), Device::Cpu)
            .expect("tokenizing the captions");
        out.push(("in:ids".into(), ids));
        out.push(("in:mask".into(), mask));
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        let batch = self.indices();
        self.run.checked_loss(batch)
    }
}
