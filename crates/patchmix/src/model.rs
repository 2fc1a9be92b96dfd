//! Encoder and heads wiring (official `module/frame/contrast_no_momentum.py`,
//! `contrast_momentum.py`, MoCo-v3 style).
//!
//! * online encoder: ViT (class token, `global_pool='token'`) whose `head` is replaced by the
//!   MoCo-v3 projector `Linear(d,4096,no bias)–BN–ReLU–Linear(4096,4096)–BN–ReLU–Linear(4096,256)–BN(affine=False)`;
//!   variable names `base_encoder.*`, projector `base_encoder.head.*` as in the official code;
//! * predictor `Linear(256,4096)–BN–ReLU–Linear(4096,256)–BN(affine=False)`, names `predictor.*`;
//! * key branch: either the online encoder itself without gradient (ViT-T configs,
//!   `use_moco=False`), or a momentum encoder (ViT-S/B, `use_moco=True`) updated by EMA with the
//!   cosine 0.996 → 1 schedule; the momentum encoder has no drop-path.
//!
//! The online encoder and the predictor live in two VarStores so that the momentum encoder's
//! VarStore has exactly the online encoder's variable names (the EMA pairs them by name).

use anyhow::Result;
use contrast_core::nn::heads::{moco_v3_predictor, moco_v3_projector, MlpHead};
use contrast_core::nn::vit::{VisionTransformer, VitConfig};
use contrast_core::optim::ema::{BufferPolicy, Ema};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

/// Head sizes (official: 3-layer projector, 2-layer predictor, 4096 hidden, 256 out).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadConfig {
    pub proj_layers: usize,
    pub pred_layers: usize,
    pub mlp_dim: i64,
    pub out_dim: i64,
}

/// A ViT with its projector: `projector(cls(x))`.
pub struct Encoder {
    pub vit: VisionTransformer,
    pub projector: MlpHead,
}

impl Encoder {
    fn new(vs: &VarStore, vit: &VitConfig, heads: &HeadConfig) -> Result<Self> {
        let root = vs.root() / "base_encoder";
        let vit_model = VisionTransformer::new(root.clone(), vit)?;
        let projector = moco_v3_projector(
            root / "head",
            heads.proj_layers,
            vit.embed_dim,
            heads.mlp_dim,
            heads.out_dim,
        )?;
        Ok(Self {
            vit: vit_model,
            projector,
        })
    }

    /// `[B, 3, H, W]` → `[B, out_dim]` projection.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let cls = self.vit.forward_cls(x, train)?; // [B, D]
        Ok(self.projector.forward_t(&cls, train)) // [B, out]
    }
}

/// The PatchMix network: online encoder + predictor, optional momentum encoder.
pub struct PatchMixNet {
    pub encoder_vs: VarStore,
    pub predictor_vs: VarStore,
    pub encoder: Encoder,
    pub predictor: MlpHead,
    pub momentum: Option<Momentum>,
}

/// The momentum key encoder and its EMA.
pub struct Momentum {
    pub vs: VarStore,
    pub encoder: Encoder,
    pub ema: Ema,
}

impl PatchMixNet {
    /// Build the network. `use_momentum` adds the EMA key encoder (its ViT without drop-path),
    /// initialised as a copy of the online encoder.
    pub fn new(
        device: Device,
        vit: &VitConfig,
        heads: &HeadConfig,
        use_momentum: bool,
    ) -> Result<Self> {
        let encoder_vs = VarStore::new(device);
        let encoder = Encoder::new(&encoder_vs, vit, heads)?;
        let predictor_vs = VarStore::new(device);
        let predictor = moco_v3_predictor(
            predictor_vs.root() / "predictor",
            heads.pred_layers,
            heads.out_dim,
            heads.mlp_dim,
            heads.out_dim,
            true,
        )?;
        let momentum = if use_momentum {
            let vs = VarStore::new(device);
            let mut no_drop = vit.clone();
            no_drop.drop_path_rate = 0.0;
            let enc = Encoder::new(&vs, &no_drop, heads)?;
            let mut ema = Ema::new(&vs, &encoder_vs, BufferPolicy::Keep)?;
            ema.init_copy();
            Some(Momentum {
                vs,
                encoder: enc,
                ema,
            })
        } else {
            None
        };
        Ok(Self {
            encoder_vs,
            predictor_vs,
            encoder,
            predictor,
            momentum,
        })
    }

    /// Query and (detached) online projection of `x`: `(predictor(z), z)`.
    pub fn query(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let z = self.encoder.forward(x, train)?;
        let q = self.predictor.forward_t(&z, train);
        Ok((q, z))
    }

    /// Keys of `x` without gradient: the momentum encoder when there is one, else the online
    /// encoder (train mode, drop-path active, as the official `forward(x, q=False)`).
    pub fn key(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        tch::no_grad(|| match &self.momentum {
            Some(m) => m.encoder.forward(x, train),
            None => self.encoder.forward(x, train),
        })
    }

    /// Keys for the original view `x1` whose query forward produced `z1`: with a momentum
    /// encoder a separate forward, otherwise `z1` itself, detached (official
    /// `q1, k1 = model(x1)`; the loss all-gathers keys without gradient).
    pub fn key_from_query(&self, x1: &Tensor, z1: &Tensor, train: bool) -> Result<Tensor> {
        match &self.momentum {
            Some(_) => self.key(x1, train),
            None => Ok(z1.detach()),
        }
    }

    /// EMA step of the momentum encoder (no-op without one).
    pub fn update_momentum(&mut self, m: f64) -> Result<()> {
        if let Some(mo) = &mut self.momentum {
            mo.ema.update(m)?;
        }
        Ok(())
    }

    /// The evaluation encoder: the momentum ViT when present (official kNN uses
    /// `momentum_encoder`), else the online ViT. Returns the class token, eval mode, no grad.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| match &self.momentum {
            Some(m) => m.encoder.vit.forward_cls(x, false),
            None => self.encoder.vit.forward_cls(x, false),
        })
    }
}
