//! The CLAIRES model: image encoder (ResNet-18/50 from contrast-core) and text encoder
//! (BERT/MiniLM, [`crate::text`]), each followed by a projection head into a shared space
//! (the tutorial's head: `p = Linear(d, D)(x); h = LN(Dropout(Linear(D, D)(GELU(p))) + p)`),
//! and the CLIP losses of contrast-core (`ClipLoss` with a learnable logit scale, or the
//! tutorial's `SoftClipLoss`).
//!
//! Variable prefixes in the one VarStore: `image.*` (torchvision ResNet names), `text.*` (HF BERT
//! names), `image_proj.*`, `text_proj.*`, `loss.logit_scale` (CLIP loss only).

use crate::config::ClairesConfig;
use crate::text::{load_pretrained, minilm_dir, Pooling, TextEncoder};
use anyhow::{bail, Context, Result};
use contrast_core::loss::{normalize, ClipLoss, SoftClipLoss};
use contrast_core::nn::resnet::{resnet18, resnet50, ResNet};
use contrast_core::optim::ParamGroup;
use sha2::{Digest, Sha256};
use std::path::Path;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// The tutorial's projection head.
#[derive(Debug)]
pub struct ProjectionHead {
    proj: nn::Linear,
    fc: nn::Linear,
    ln: nn::LayerNorm,
    dropout: f64,
}

impl ProjectionHead {
    pub fn new(p: &nn::Path, d_in: i64, d: i64, dropout: f64) -> Self {
        Self {
            proj: nn::linear(p / "projection", d_in, d, Default::default()),
            fc: nn::linear(p / "fc", d, d, Default::default()),
            ln: nn::layer_norm(p / "layer_norm", vec![d], Default::default()),
            dropout,
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let p = self.proj.forward(x);
        let h = self
            .fc
            .forward(&p.gelu("none"))
            .dropout(self.dropout, train);
        self.ln.forward(&(h + p))
    }
}

/// Which loss the model trains with.
#[derive(Debug)]
pub enum Loss {
    Clip(ClipLoss),
    Soft(SoftClipLoss),
}

pub struct Claires {
    pub vs: nn::VarStore,
    pub image: ResNet,
    pub text: TextEncoder,
    pub image_proj: ProjectionHead,
    pub text_proj: ProjectionHead,
    pub loss: Loss,
    pub device: Device,
    pub freeze_image: bool,
    pub freeze_text: bool,
}

impl Claires {
    /// Build from a config; loads the pretrained MiniLM when `model.text_pretrained`.
    pub fn new(cfg: &ClairesConfig, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let rcfg = match cfg.model.image_arch.as_str() {
            "resnet18" => resnet18(),
            "resnet50" => resnet50(),
            other => bail!("unknown model.image_arch `{other}`: use resnet18 or resnet50"),
        };
        let image = ResNet::new(&root / "image", &rcfg)?;
        let pooling: Pooling = cfg.model.text_pooling.parse()?;
        let dir = minilm_dir()?;
        let text = TextEncoder::new(
            &(&root / "text"),
            &dir,
            pooling,
            cfg.model.max_tokens,
            cfg.model.text_dropout,
        )?;
        let d = cfg.model.embed_dim;
        let image_proj = ProjectionHead::new(
            &(&root / "image_proj"),
            image.num_features(),
            d,
            cfg.model.head_dropout,
        );
        let text_proj = ProjectionHead::new(
            &(&root / "text_proj"),
            text.dim(),
            d,
            cfg.model.head_dropout,
        );
        let loss = match cfg.loss.kind.as_str() {
            "clip" => Loss::Clip(ClipLoss::new(&(&root / "loss"), cfg.loss.init_temperature)?),
            "soft_clip" => Loss::Soft(SoftClipLoss::new(cfg.loss.temperature)?),
            other => bail!("unknown loss.kind `{other}`: use clip or soft_clip"),
        };
        if cfg.model.text_pretrained {
            load_pretrained(&vs, "text", &dir.join("model.safetensors"))
                .context("loading the pretrained MiniLM")?;
        }
        let m = Self {
            vs,
            image,
            text,
            image_proj,
            text_proj,
            loss,
            device,
            freeze_image: cfg.model.freeze_image,
            freeze_text: cfg.model.freeze_text,
        };
        m.apply_freeze();
        Ok(m)
    }

    /// Turn off gradients of frozen encoders.
    fn apply_freeze(&self) {
        for (name, mut t) in self.vs.variables() {
            let frozen = (self.freeze_image && name.starts_with("image."))
                || (self.freeze_text && name.starts_with("text."));
            if frozen {
                let _ = t.requires_grad_(false);
            }
        }
    }

    /// Parameter groups with per-group learning rates (as `lr_scale` relative to `lr_head`, the
    /// optimiser's lr): `head` (projection heads, decayed by `weight_decay`), `image`, `text`
    /// (no decay; absent when frozen or at lr 0) and `logit_scale` (head lr, no decay).
    pub fn param_groups(&self, cfg: &ClairesConfig) -> Result<Vec<ParamGroup>> {
        let o = &cfg.optim;
        if o.lr_head <= 0.0 {
            bail!("optim.lr_head must be > 0, got {}", o.lr_head);
        }
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut head = Vec::new();
        let mut image = Vec::new();
        let mut text = Vec::new();
        let mut scale = Vec::new();
        for (n, t) in vars {
            if !t.requires_grad() {
                continue;
            }
            if n.starts_with("image_proj.") || n.starts_with("text_proj.") {
                head.push((n, t));
            } else if n.starts_with("image.") {
                image.push((n, t));
            } else if n.starts_with("text.") {
                text.push((n, t));
            } else {
                scale.push((n, t));
            }
        }
        let mut groups = vec![ParamGroup {
            name: "head".into(),
            params: head,
            weight_decay: o.weight_decay,
            lr_scale: 1.0,
        }];
        if !image.is_empty() && o.lr_image > 0.0 {
            groups.push(ParamGroup {
                name: "image".into(),
                params: image,
                weight_decay: 0.0,
                lr_scale: o.lr_image / o.lr_head,
            });
        }
        if !text.is_empty() && o.lr_text > 0.0 {
            groups.push(ParamGroup {
                name: "text".into(),
                params: text,
                weight_decay: 0.0,
                lr_scale: o.lr_text / o.lr_head,
            });
        }
        if !scale.is_empty() {
            groups.push(ParamGroup {
                name: "logit_scale".into(),
                params: scale,
                weight_decay: 0.0,
                lr_scale: 1.0,
            });
        }
        Ok(groups)
    }

    /// Whether the image encoder is updated (else it runs in eval mode).
    pub fn image_trains(&self, cfg: &ClairesConfig) -> bool {
        !self.freeze_image && cfg.optim.lr_image > 0.0
    }

    pub fn text_trains(&self, cfg: &ClairesConfig) -> bool {
        !self.freeze_text && cfg.optim.lr_text > 0.0
    }

    /// Projected image embeddings `[B, D]` (not normalised).
    pub fn embed_images(&self, x: &Tensor, train: bool, encoder_train: bool) -> Result<Tensor> {
        let f = self
            .image
            .forward_features(&x.to_device(self.device), encoder_train)?
            .pooled;
        Ok(self.image_proj.forward_t(&f, train))
    }

    /// Text-encoder sentence features `[B, H]` (before the head).
    pub fn text_features(&self, texts: &[&str], encoder_train: bool) -> Result<Tensor> {
        self.text.encode(texts, self.device, encoder_train)
    }

    /// Projected text embeddings `[B, D]` from sentence features.
    pub fn project_text(&self, features: &Tensor, train: bool) -> Tensor {
        self.text_proj.forward_t(features, train)
    }

    /// L2-normalised embeddings for search (eval mode, no grad) of texts.
    pub fn search_text(&self, texts: &[&str]) -> Result<Tensor> {
        tch::no_grad(|| {
            let f = self.text_features(texts, false)?;
            Ok(normalize(&self.project_text(&f, false)).to_device(Device::Cpu))
        })
    }

    /// L2-normalised image embeddings for search, batched (eval mode, no grad).
    pub fn search_images(&self, x: &Tensor, batch: i64) -> Result<Tensor> {
        tch::no_grad(|| {
            let n = x.size()[0];
            let mut out = Vec::new();
            let mut i = 0;
            while i < n {
                let len = batch.min(n - i);
                let e = self.embed_images(&x.narrow(0, i, len), false, false)?;
                out.push(normalize(&e).to_device(Device::Cpu));
                i += len;
            }
            Ok(Tensor::cat(&out, 0))
        })
    }

    /// The training loss of a batch of projected embeddings.
    pub fn loss(&self, image: &Tensor, text: &Tensor) -> Result<Tensor> {
        match &self.loss {
            Loss::Clip(l) => l.forward(image, text),
            Loss::Soft(l) => l.forward(image, text),
        }
    }

    /// `exp(logit_scale)` for the CLIP loss, `1/τ` for the soft loss.
    pub fn logit_scale(&self) -> f64 {
        match &self.loss {
            Loss::Clip(l) => l.scale(),
            Loss::Soft(l) => 1.0 / l.temperature,
        }
    }

    /// After an optimiser step: clamp the CLIP logit scale.
    pub fn after_step(&mut self) {
        if let Loss::Clip(l) = &mut self.loss {
            l.clamp();
        }
    }

    /// Save all variables as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.vs
            .save(path)
            .map_err(|e| anyhow::anyhow!("saving the model to {}: {e}", path.display()))
    }

    /// Load all variables from a file written by [`Claires::save`].
    pub fn load(&mut self, path: &Path) -> Result<()> {
        self.vs.load(path).map_err(|e| {
            anyhow::anyhow!(
                "loading the model {} (was it trained with the same model config?): {e}",
                path.display()
            )
        })
    }

    /// SHA-256 of the model's weights (names, shapes and float values, sorted by name): what an
    /// index is tied to.
    pub fn checksum(&self) -> String {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut h = Sha256::new();
        for (n, t) in vars {
            h.update(n.as_bytes());
            h.update(format!("{:?}", t.size()).as_bytes());
            let t = t
                .detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous();
            let v: Vec<f32> = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap_or_default();
            for x in v {
                h.update(x.to_le_bytes());
            }
        }
        hex::encode(h.finalize())
    }
}
