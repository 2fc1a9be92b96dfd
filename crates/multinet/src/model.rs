//! The networks of MNCLGLF (official `utils/network_builder.py::FastMoCo`): an online encoder
//! (ResNet-18 without `fc` + projector), a predictor, and a separately initialised EMA encoder of
//! the same architecture (it is **not** copied from the online one at the start), plus the local
//! branch (online backbone on the grid cells, pair-averaged, online projector).

use crate::config::MultinetConfig;
use crate::local::{combine, local_split};
use anyhow::Result;
use contrast_core::nn::heads::{LastNorm, MlpConfig, MlpHead};
use contrast_core::nn::resnet::{resnet18, ResNet, ResNetConfig};
use contrast_core::optim::{BufferPolicy, Ema};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

/// ResNet trunk + projector under one VarStore (`backbone.*`, `projector.*`).
pub struct Encoder {
    pub backbone: ResNet,
    pub projector: MlpHead,
}

impl Encoder {
    pub fn new(vs: &VarStore, rc: &ResNetConfig, proj: &MlpConfig) -> Result<Self> {
        let root = vs.root();
        Ok(Self {
            backbone: ResNet::new(&root / "backbone", rc)?,
            projector: MlpHead::new(&root / "projector", proj)?,
        })
    }

    /// Pooled backbone features `[B, 512]`.
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.backbone.forward_features(x, train)?.pooled)
    }

    /// Projection `[B, D]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.projector.forward_t(&self.features(x, train)?, train))
    }
}

/// The backbone of a config.
pub fn resnet_config(cfg: &MultinetConfig) -> ResNetConfig {
    ResNetConfig {
        stem: cfg.model.stem,
        layers: cfg.model.layers,
        zero_init_residual: cfg.model.zero_init_residual,
        ..resnet18()
    }
}

/// `Linear(512,h)–BN–ReLU–Linear(h,h)–BN–ReLU–Linear(h,out)–BN` (biases, affine BN).
pub fn projector_config(in_dim: i64, hidden: i64, out: i64) -> MlpConfig {
    MlpConfig {
        dims: vec![in_dim, hidden, hidden, out],
        bias: true,
        hidden_bn: true,
        last_norm: LastNorm::Affine,
    }
}

/// `Linear(d,h)–BN–ReLU–Linear(h,d)` (biases).
pub fn predictor_config(dim: i64, hidden: i64) -> MlpConfig {
    MlpConfig {
        dims: vec![dim, hidden, dim],
        bias: true,
        hidden_bn: true,
        last_norm: LastNorm::None,
    }
}

/// Online encoder, predictor and EMA encoder.
pub struct MultiNet {
    pub encoder_vs: VarStore,
    pub encoder: Encoder,
    pub predictor_vs: VarStore,
    pub predictor: MlpHead,
    pub ema_vs: VarStore,
    pub ema_encoder: Encoder,
    ema: Ema,
    split_num: i64,
    combs: usize,
}

/// What one forward of the three views produces.
pub struct Forward {
    /// Online predictions `[N, D]` (with gradient).
    pub p: [Tensor; 3],
    /// Local-combination keys of views 1 and 2 `[C·N, D]` (no gradient).
    pub k1: Tensor,
    pub k2: Tensor,
    /// EMA projections of views 1 and 3 `[N, D]` (no gradient).
    pub e1: Tensor,
    pub e3: Tensor,
}

impl MultiNet {
    pub fn new(cfg: &MultinetConfig, device: Device) -> Result<Self> {
        let rc = resnet_config(cfg);
        let encoder_vs = VarStore::new(device);
        let feat = 512; // ResNet-18/34 pooled width
        let proj = projector_config(feat, cfg.model.proj_hidden, cfg.model.proj_out);
        let encoder = Encoder::new(&encoder_vs, &rc, &proj)?;
        let predictor_vs = VarStore::new(device);
        let predictor = MlpHead::new(
            predictor_vs.root(),
            &predictor_config(cfg.model.proj_out, cfg.model.pred_hidden),
        )?;
        // separately initialised (official: its own ResNet and projector, no copy)
        let ema_vs = VarStore::new(device);
        let ema_encoder = Encoder::new(&ema_vs, &rc, &proj)?;
        let ema = Ema::new(&ema_vs, &encoder_vs, BufferPolicy::Keep)?;
        Ok(Self {
            encoder_vs,
            encoder,
            predictor_vs,
            predictor,
            ema_vs,
            ema_encoder,
            ema,
            split_num: cfg.local.split_num,
            combs: cfg.local.combs,
        })
    }

    /// `θ_ema ← m θ_ema + (1 − m) θ_online` (parameters only, as `_momentum_update_target_encoder`).
    pub fn update_ema(&mut self, m: f64) -> Result<()> {
        self.ema.update(m)
    }

    /// Local keys of a view: split, online backbone on the cells, combine, online projector
    /// (no gradient; train-mode BN as in the official forward).
    pub fn local_keys(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        tch::no_grad(|| {
            let cells = local_split(x, self.split_num)?; // [s²N, C, H/s, W/s]
            let f = self.encoder.features(&cells, train)?; // [s²N, 512]
            let mixed = combine(&f, self.split_num * self.split_num, self.combs)?; // [CN, 512]
            Ok(self.encoder.projector.forward_t(&mixed, train)) // [CN, D]
        })
    }

    /// The official forward (EMA update excluded: call [`MultiNet::update_ema`] first).
    pub fn forward(&self, x1: &Tensor, x2: &Tensor, x3: &Tensor, train: bool) -> Result<Forward> {
        let mut p = Vec::with_capacity(3);
        for x in [x1, x2, x3] {
            let z = self.encoder.forward(x, train)?;
            p.push(self.predictor.forward_t(&z, train));
        }
        let k1 = self.local_keys(x1, train)?;
        let k2 = self.local_keys(x2, train)?;
        let (e1, e3) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
            Ok((
                self.ema_encoder.forward(x1, train)?,
                self.ema_encoder.forward(x3, train)?,
            ))
        })?;
        let [p1, p2, p3]: [Tensor; 3] = p
            .try_into()
            .map_err(|_| anyhow::anyhow!("three predictions expected"))?;
        Ok(Forward {
            p: [p1, p2, p3],
            k1,
            k2,
            e1,
            e3,
        })
    }

    /// Frozen backbone features for evaluation (`[B, 512]`, BN in eval mode, no gradient).
    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| self.encoder.features(x, false))
    }
}
