//! The UA-MT / MC-Net+ / FBA-Net "V-Net" (official `code/networks/VNet.py` of
//! `cys1102/FBA-Net`, identical in `ycwu1997/MC-Net` and `yulequan/UA-MT`): 3×3×3 convolutions
//! with BatchNorm and ReLU, strided 2×2×2 down-sampling convolutions, **additive** skip
//! connections, 16…256 channels. Not Milletari's V-Net (5×5×5, PReLU) nor MONAI's `VNet`.
//!
//! Parameter names mirror the PyTorch state dict (`block_one.conv.0.weight`,
//! `block_one.conv.1.running_mean`, `block_five_up.conv.1.weight` …) so that official
//! checkpoints load by name (see [`super::load_pytorch_weights`]). Initialisation is PyTorch's
//! default (`kaiming_uniform_(a=√5)`: U(±1/√fan_in) for weights and biases; BN weight 1, bias 0),
//! as the official code does not re-initialise.
//!
//! Input `[N, C, X, Y, Z]` with every spatial size divisible by 16.

use anyhow::{bail, Result};
use tch::nn::{self, Init, ModuleT};
use tch::Tensor;

/// Normalisation after each convolution (`normalization=` of the official blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// `nn.BatchNorm3d` (what FBA-Net / MC-Net+ use); synchronised over the ranks when
    /// [`crate::dist::sync_batch_norm`] is on ([`crate::dist::batch_norm`]).
    BatchNorm,
    /// No normalisation (`'none'`).
    None,
}

/// Up-sampling of a decoder stage (`mode_upsampling` of `Upsampling_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpMode {
    /// 0: `ConvTranspose3d(k=2, s=2)`.
    Transpose,
    /// 1: `Upsample(×2, trilinear, align_corners=True)` + `Conv3d(k=3, pad=1)`.
    Trilinear,
    /// 2: `Upsample(×2, nearest)` + `Conv3d(k=3, pad=1)`.
    Nearest,
}

fn uniform(fan_in: i64) -> Init {
    let b = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// `nn.Conv3d(i, o, k, stride, padding)` with PyTorch's default init.
pub fn torch_conv3d(
    p: nn::Path,
    i: i64,
    o: i64,
    k: i64,
    stride: i64,
    padding: i64,
    bias: bool,
) -> nn::Conv3D {
    let fan_in = i * k * k * k;
    nn::conv3d(
        p,
        i,
        o,
        k,
        nn::ConvConfig {
            stride,
            padding,
            bias,
            ws_init: uniform(fan_in),
            bs_init: uniform(fan_in),
            ..Default::default()
        },
    )
}

/// One stage element: conv (+ BN) + ReLU, at Sequential indices `conv.{3i}`, `conv.{3i+1}`.
#[derive(Debug)]
struct ConvBnRelu {
    conv: nn::Conv3D,
    bn: Option<nn::BatchNorm>,
}

impl ConvBnRelu {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let y = xs.apply(&self.conv);
        let y = match &self.bn {
            Some(bn) => crate::dist::batch_norm(bn, &y, train),
            None => y,
        };
        y.relu()
    }
}

/// `ConvBlock(n_stages, in, out, normalization)`: `n_stages` × (conv 3×3×3 pad 1 + norm + ReLU).
#[derive(Debug)]
pub struct ConvBlock {
    layers: Vec<ConvBnRelu>,
}

impl ConvBlock {
    /// Variables under `p / "conv"`.
    pub fn new(p: &nn::Path, n_stages: usize, i: i64, o: i64, norm: Norm) -> Self {
        let seq = p / "conv";
        let step = if norm == Norm::None { 2 } else { 3 };
        let layers = (0..n_stages)
            .map(|s| {
                let cin = if s == 0 { i } else { o };
                let idx = s * step;
                ConvBnRelu {
                    conv: torch_conv3d(&seq / idx.to_string(), cin, o, 3, 1, 1, true),
                    bn: (norm == Norm::BatchNorm).then(|| {
                        nn::batch_norm3d(&seq / (idx + 1).to_string(), o, Default::default())
                    }),
                }
            })
            .collect();
        Self { layers }
    }
}

impl ModuleT for ConvBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.layers
            .iter()
            .fold(xs.shallow_clone(), |x, l| l.forward_t(&x, train))
    }
}

/// `DownsamplingConvBlock`: conv k=2 s=2 pad 0 (+ norm) + ReLU.
#[derive(Debug)]
pub struct DownBlock(ConvBnRelu);

impl DownBlock {
    /// Variables under `p / "conv"`.
    pub fn new(p: &nn::Path, i: i64, o: i64, norm: Norm) -> Self {
        let seq = p / "conv";
        Self(ConvBnRelu {
            conv: torch_conv3d(&seq / "0", i, o, 2, 2, 0, true),
            bn: (norm == Norm::BatchNorm)
                .then(|| nn::batch_norm3d(&seq / "1", o, Default::default())),
        })
    }
}

impl ModuleT for DownBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.0.forward_t(xs, train)
    }
}

/// `Upsampling_function`: ×2 up-sampling by [`UpMode`] + norm + ReLU.
#[derive(Debug)]
pub struct UpBlock {
    mode: UpMode,
    transpose: Option<nn::ConvTranspose3D>,
    conv: Option<nn::Conv3D>,
    bn: Option<nn::BatchNorm>,
}

impl UpBlock {
    /// Variables under `p / "conv"`: transpose at `conv.0` (BN `conv.1`), otherwise the
    /// `Upsample` is `conv.0` (no weights), the conv `conv.1` and BN `conv.2`.
    pub fn new(p: &nn::Path, i: i64, o: i64, norm: Norm, mode: UpMode) -> Self {
        let seq = p / "conv";
        let bn_idx = if mode == UpMode::Transpose { "1" } else { "2" };
        let bn = (norm == Norm::BatchNorm)
            .then(|| nn::batch_norm3d(&seq / bn_idx, o, Default::default()));
        match mode {
            UpMode::Transpose => {
                // PyTorch computes ConvTranspose fan-in from weight.size(1) = out channels.
                let fan_in = o * 8;
                let t = nn::conv_transpose3d(
                    &seq / "0",
                    i,
                    o,
                    2,
                    nn::ConvTransposeConfig {
                        stride: 2,
                        ws_init: uniform(fan_in),
                        bs_init: uniform(fan_in),
                        ..Default::default()
                    },
                );
                Self {
                    mode,
                    transpose: Some(t),
                    conv: None,
                    bn,
                }
            }
            _ => Self {
                mode,
                transpose: None,
                conv: Some(torch_conv3d(&seq / "1", i, o, 3, 1, 1, true)),
                bn,
            },
        }
    }
}

impl ModuleT for UpBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let s = xs.size();
        let out = [s[2] * 2, s[3] * 2, s[4] * 2];
        let y = match self.mode {
            UpMode::Transpose => xs.apply(self.transpose.as_ref().expect("transpose")),
            UpMode::Trilinear => xs
                .upsample_trilinear3d(out, true, None, None, None)
                .apply(self.conv.as_ref().expect("conv")),
            UpMode::Nearest => xs
                .upsample_nearest3d(out, 2.0, 2.0, 2.0)
                .apply(self.conv.as_ref().expect("conv")),
        };
        let y = match &self.bn {
            Some(bn) => crate::dist::batch_norm(bn, &y, train),
            None => y,
        };
        y.relu()
    }
}

/// V-Net sizes and options.
#[derive(Debug, Clone, Copy)]
pub struct VNetConfig {
    /// Input channels (1 for MRI/CT).
    pub in_channels: i64,
    /// Output classes of each decoder's `out_conv`.
    pub n_classes: i64,
    /// Width of the first stage (16); the stages are ×1, ×2, ×4, ×8, ×16.
    pub n_filters: i64,
    /// Normalisation.
    pub norm: Norm,
    /// `Dropout3d(0.5)` on the bottleneck `x5` (encoder) and on `x9` (decoder) in training
    /// (`has_dropout=True` for the training model, `False` for the test model).
    pub dropout: f64,
}

impl Default for VNetConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            n_classes: 2,
            n_filters: 16,
            norm: Norm::BatchNorm,
            dropout: 0.5,
        }
    }
}

/// `Encoder`: returns `[x1, x2, x3, x4, x5]` at 1, 1/2, 1/4, 1/8, 1/16 resolution.
#[derive(Debug)]
pub struct VNetEncoder {
    blocks: Vec<ConvBlock>,
    downs: Vec<DownBlock>,
    dropout: f64,
}

impl VNetEncoder {
    /// Variables `block_one`, `block_one_dw`, … `block_five` under `p`.
    pub fn new(p: &nn::Path, c: &VNetConfig) -> Self {
        let f = c.n_filters;
        let names = [
            "block_one",
            "block_two",
            "block_three",
            "block_four",
            "block_five",
        ];
        let stages = [1, 2, 3, 3, 3];
        let widths = [f, 2 * f, 4 * f, 8 * f, 16 * f];
        let mut blocks = vec![];
        let mut downs = vec![];
        for s in 0..5 {
            let cin = if s == 0 { c.in_channels } else { widths[s] };
            blocks.push(ConvBlock::new(
                &(p / names[s]),
                stages[s],
                cin,
                widths[s],
                c.norm,
            ));
            if s < 4 {
                downs.push(DownBlock::new(
                    &(p / format!("{}_dw", names[s])),
                    widths[s],
                    widths[s + 1],
                    c.norm,
                ));
            }
        }
        Self {
            blocks,
            downs,
            dropout: c.dropout,
        }
    }

    /// The five feature maps; errors when a spatial size is not divisible by 16.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let s = xs.size();
        if s.len() != 5 || s[2..].iter().any(|d| d % 16 != 0) {
            bail!("V-Net input must be [N, C, X, Y, Z] with X, Y, Z divisible by 16, got {s:?}");
        }
        let mut feats = Vec::with_capacity(5);
        let mut x = xs.shallow_clone();
        for (i, b) in self.blocks.iter().enumerate() {
            let y = b.forward_t(&x, train);
            if i < 4 {
                x = self.downs[i].forward_t(&y, train);
                feats.push(y);
            } else if train && self.dropout > 0.0 {
                feats.push(y.feature_dropout(self.dropout, train));
            } else {
                feats.push(y);
            }
        }
        Ok(feats)
    }
}

/// `Decoder` without the method-specific heads: returns the logits `out_seg` `[N, n_classes, …]`.
#[derive(Debug)]
pub struct VNetDecoder {
    ups: Vec<UpBlock>,
    blocks: Vec<ConvBlock>,
    out_conv: nn::Conv3D,
    dropout: f64,
}

impl VNetDecoder {
    /// Variables `block_five_up`, `block_six`, … `block_nine`, `out_conv` under `p`.
    pub fn new(p: &nn::Path, c: &VNetConfig, up: UpMode) -> Self {
        let f = c.n_filters;
        let ups_names = [
            "block_five_up",
            "block_six_up",
            "block_seven_up",
            "block_eight_up",
        ];
        let names = ["block_six", "block_seven", "block_eight", "block_nine"];
        let stages = [3, 3, 2, 1];
        let widths = [8 * f, 4 * f, 2 * f, f];
        let mut ups = vec![];
        let mut blocks = vec![];
        for s in 0..4 {
            let cin = if s == 0 { 16 * f } else { widths[s - 1] };
            ups.push(UpBlock::new(
                &(p / ups_names[s]),
                cin,
                widths[s],
                c.norm,
                up,
            ));
            blocks.push(ConvBlock::new(
                &(p / names[s]),
                stages[s],
                widths[s],
                widths[s],
                c.norm,
            ));
        }
        Self {
            ups,
            blocks,
            out_conv: torch_conv3d(p / "out_conv", f, c.n_classes, 1, 1, 0, true),
            dropout: c.dropout,
        }
    }

    /// Logits from the encoder's five maps.
    pub fn forward_t(&self, feats: &[Tensor], train: bool) -> Tensor {
        let mut x = feats[4].shallow_clone();
        for s in 0..4 {
            let up = self.ups[s].forward_t(&x, train) + &feats[3 - s];
            x = self.blocks[s].forward_t(&up, train);
        }
        if train && self.dropout > 0.0 {
            x = x.feature_dropout(self.dropout, train);
        }
        x.apply(&self.out_conv)
    }
}
