//! FBA-Net / FBA-Net+ network (official `code/networks/VNet.py`, notes §1b): the UA-MT V-Net
//! encoder, one (FBA-Net) or three (FBA-Net+) decoders with transposed-conv / trilinear / nearest
//! up-sampling, and on each decoder's logits the contrastive module:
//!
//! ```text
//! A  = sigmoid(BN3d(1)(Conv3d(2→1, k3, s2, pad 1, no bias)(logits)))   [N, 1, X/2, Y/2, Z/2]
//! fg = A.flatten / (X/2·Y/2·Z/2),  bg = (1 − A).flatten / (X/2·Y/2·Z/2)
//! z_fg = ReLU(Linear(X/2·Y/2·Z/2 → dim)(fg)),  z_bg = ReLU(Linear(…)(bg))   (separate MLPs)
//! ```
//! Parameter names mirror the state dict (`encoder.block_one.conv.0.weight`,
//! `decoder1.cm.activation_head.weight`, `decoder1.f_mlp.0.weight`, …; the single-decoder model
//! names its decoder `decoder`, as in the official `FBAnet` of commit 274054f).

use anyhow::{bail, Result};
use contrast_core::nn::vnet::{torch_conv3d, UpMode, VNetConfig, VNetDecoder, VNetEncoder};
use tch::nn::{self, Init};
use tch::{Device, Tensor};

/// The contrastive module + fg/bg projections of one decoder.
#[derive(Debug)]
pub struct ContraHead {
    activation_head: nn::Conv3D,
    bn_head: nn::BatchNorm,
    f_mlp: nn::Linear,
    b_mlp: nn::Linear,
}

fn torch_linear(p: nn::Path, i: i64, o: i64) -> nn::Linear {
    let b = 1.0 / (i as f64).sqrt();
    nn::linear(
        p,
        i,
        o,
        nn::LinearConfig {
            ws_init: Init::Uniform { lo: -b, up: b },
            bs_init: Some(Init::Uniform { lo: -b, up: b }),
            bias: true,
        },
    )
}

impl ContraHead {
    /// `map_voxels` = voxels of the stride-2 map (`⌈X/2⌉·⌈Y/2⌉·⌈Z/2⌉` of the training patch).
    pub fn new(p: &nn::Path, n_classes: i64, map_voxels: i64, dim: i64) -> Self {
        Self {
            activation_head: torch_conv3d(
                p / "cm" / "activation_head",
                n_classes,
                1,
                3,
                2,
                1,
                false,
            ),
            bn_head: nn::batch_norm3d(p / "cm" / "bn_head", 1, Default::default()),
            f_mlp: torch_linear(p / "f_mlp" / "0", map_voxels, dim),
            b_mlp: torch_linear(p / "b_mlp" / "0", map_voxels, dim),
        }
    }

    /// A = sigmoid(BN(conv(logits))) `[N, 1, X/2, Y/2, Z/2]`, values in (0, 1).
    pub fn activation_map(&self, logits: &Tensor, train: bool) -> Tensor {
        let a = logits.apply(&self.activation_head);
        contrast_core::dist::batch_norm(&self.bn_head, &a, train).sigmoid()
    }

    /// The scaled maps `(fg, bg)` `[N, H·W·D]` (the module's `ContraModule.forward`).
    pub fn maps(&self, logits: &Tensor, train: bool) -> (Tensor, Tensor) {
        let a = self.activation_map(logits, train);
        let n = a.size()[0];
        let hwd: i64 = a.size()[2..].iter().product();
        let flat = a.reshape([n, hwd]);
        let fg = &flat / hwd as f64;
        let bg = (flat.ones_like() - &flat) / hwd as f64;
        (fg, bg)
    }

    /// Projected embeddings `(z_fg, z_bg)` `[N, dim]`.
    pub fn forward_t(&self, logits: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let (fg, bg) = self.maps(logits, train);
        let want = self.f_mlp.ws.size()[1];
        if fg.size()[1] != want {
            bail!(
                "contrastive head: the map has {} voxels but the MLP was built for {want} \
                 (the training patch size fixes it; inference must use the same patch)",
                fg.size()[1]
            );
        }
        Ok((fg.apply(&self.f_mlp).relu(), bg.apply(&self.b_mlp).relu()))
    }
}

/// Network options.
#[derive(Debug, Clone)]
pub struct FbaConfig {
    pub vnet: VNetConfig,
    /// Up-sampling of each decoder: `[Transpose]` (FBA-Net) or `[Transpose, Trilinear, Nearest]`
    /// (FBA-Net+).
    pub decoders: Vec<UpMode>,
    /// Training patch `(x, y, z)` (fixes the MLP input size).
    pub patch: [i64; 3],
    /// MLP output width (128).
    pub dim: i64,
    /// Build the contrastive heads (false for the supervised baseline / MC-Net+).
    pub contrast_head: bool,
}

/// One decoder's outputs.
pub struct Outputs {
    pub logits: Tensor,
    pub fg: Option<Tensor>,
    pub bg: Option<Tensor>,
}

/// Encoder + decoders (+ heads).
pub struct FbaNet {
    pub vs: nn::VarStore,
    encoder: VNetEncoder,
    decoders: Vec<(VNetDecoder, Option<ContraHead>)>,
    pub config: FbaConfig,
}

impl FbaNet {
    pub fn new(device: Device, cfg: &FbaConfig) -> Result<Self> {
        if cfg.decoders.is_empty() {
            bail!("model.decoders: at least one decoder");
        }
        if cfg.patch.iter().any(|p| p % 16 != 0) {
            bail!(
                "patch {:?}: every side must be divisible by 16 (four ×2 down-samplings)",
                cfg.patch
            );
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let encoder = VNetEncoder::new(&(&root / "encoder"), &cfg.vnet);
        let map_voxels: i64 = cfg.patch.iter().map(|p| (p + 1) / 2).product();
        let decoders = cfg
            .decoders
            .iter()
            .enumerate()
            .map(|(i, &up)| {
                let name = if cfg.decoders.len() == 1 {
                    "decoder".to_string()
                } else {
                    format!("decoder{}", i + 1)
                };
                let p = &root / name.as_str();
                let dec = VNetDecoder::new(&p, &cfg.vnet, up);
                let head = cfg
                    .contrast_head
                    .then(|| ContraHead::new(&p, cfg.vnet.n_classes, map_voxels, cfg.dim));
                (dec, head)
            })
            .collect();
        Ok(Self {
            vs,
            encoder,
            decoders,
            config: cfg.clone(),
        })
    }

    /// All decoders' outputs; the heads run only when `heads` (training).
    pub fn forward_t(&self, x: &Tensor, train: bool, heads: bool) -> Result<Vec<Outputs>> {
        let feats = self.encoder.forward_t(x, train)?;
        self.decoders
            .iter()
            .map(|(d, h)| {
                let logits = d.forward_t(&feats, train);
                let (fg, bg) = match (h, heads) {
                    (Some(h), true) => {
                        let (f, b) = h.forward_t(&logits, train)?;
                        (Some(f), Some(b))
                    }
                    _ => (None, None),
                };
                Ok(Outputs { logits, fg, bg })
            })
            .collect()
    }

    /// Decoder 1's foreground map A `[X/2, Y/2, Z/2]` (eval mode) for one patch `[1, 1, X, Y, Z]`;
    /// `None` without the contrastive module (supervised baseline).
    pub fn foreground_map(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(head) = &self.decoders[0].1 else {
            return Ok(None);
        };
        tch::no_grad(|| {
            let feats = self.encoder.forward_t(x, false)?;
            let logits = self.decoders[0].0.forward_t(&feats, false);
            Ok(Some(
                head.activation_map(&logits, false)
                    .squeeze_dim(0)
                    .squeeze_dim(0),
            ))
        })
    }

    /// Decoder-1 softmax probabilities (inference, eval mode): what the reference's
    /// `test_single_case_first_output` averages.
    pub fn predict_probs(&self, x: &Tensor) -> Result<Tensor> {
        let feats = self.encoder.forward_t(x, false)?;
        Ok(self.decoders[0]
            .0
            .forward_t(&feats, false)
            .softmax(1, tch::Kind::Float))
    }
}
