//! DeepLabV3+ segmentation head (Chen et al. 2018) as MMSegmentation's
//! `DepthwiseSeparableASPPHead` (the FALSE/GraSS group's downstream config,
//! `grass-claires.md` §1.8): image pooling + ASPP (rate 1: 1×1 conv; rates 12/24/36:
//! depthwise-separable 3×3), 3×3 bottleneck, the low-level `layer1` map reduced to 48 channels,
//! two depthwise-separable 3×3 convs on the concatenation, dropout 0.1, 1×1 classifier; every
//! conv is conv → BN → ReLU (mmcv `ConvModule`, no bias), logits up-sampled bilinearly to the
//! input size.
//!
//! The encoder runs at `finetune.output_stride` (8 in the paper presets, as MMSeg's dilated
//! ResNet-D8; the smoke preset keeps 32 for CPU cost).

use anyhow::{ensure, Result};
use tch::nn::{self, Init, Module};
use tch::Tensor;

/// Head settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepLabConfig {
    /// Channels of the layer-4 map (2048 for ResNet-50, 512 for ResNet-18).
    pub in_channels: i64,
    /// Channels of the low-level `layer1` map (256 / 64).
    pub low_channels: i64,
    /// ASPP / decoder width (MMSeg 512).
    pub channels: i64,
    /// Reduced low-level width (MMSeg `c1_channels` 48).
    pub c1_channels: i64,
    /// ASPP dilations (MMSeg (1, 12, 24, 36)); the rate-1 branch is a 1×1 conv.
    pub dilations: Vec<i64>,
    pub dropout: f64,
    pub num_classes: i64,
}

#[derive(Debug)]
struct ConvBnRelu {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

fn kaiming() -> Init {
    Init::Kaiming {
        dist: nn::init::NormalOrUniform::Normal,
        fan: nn::init::FanInOut::FanOut,
        non_linearity: nn::init::NonLinearity::ReLU,
    }
}

impl ConvBnRelu {
    #[allow(clippy::too_many_arguments)]
    fn new(p: nn::Path, c_in: i64, c_out: i64, k: i64, dilation: i64, groups: i64) -> Self {
        let conv = nn::conv2d(
            &p / "conv",
            c_in,
            c_out,
            k,
            nn::ConvConfig {
                padding: dilation * (k / 2),
                dilation,
                groups,
                bias: false,
                ws_init: kaiming(),
                ..Default::default()
            },
        );
        let bn = nn::batch_norm2d(&p / "bn", c_out, Default::default());
        Self { conv, bn }
    }
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        // SyncBatchNorm over the ranks when `runtime.sync_batch_norm` is on
        contrast_core::dist::batch_norm(&self.bn, &self.conv.forward(x), train).relu()
    }
}

/// mmcv `DepthwiseSeparableConvModule`: depthwise k×k (dilated) + BN + ReLU, pointwise 1×1 +
/// BN + ReLU.
#[derive(Debug)]
struct SepConv {
    dw: ConvBnRelu,
    pw: ConvBnRelu,
}

impl SepConv {
    fn new(p: nn::Path, c_in: i64, c_out: i64, dilation: i64) -> Self {
        Self {
            dw: ConvBnRelu::new(&p / "depthwise_conv", c_in, c_in, 3, dilation, c_in),
            pw: ConvBnRelu::new(&p / "pointwise_conv", c_in, c_out, 1, 1, 1),
        }
    }
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.pw.forward_t(&self.dw.forward_t(x, train), train)
    }
}

#[derive(Debug)]
enum Branch {
    Plain(Box<ConvBnRelu>),
    Sep(Box<SepConv>),
}

/// The DeepLabV3+ decoder.
#[derive(Debug)]
pub struct DeepLabV3Plus {
    image_pool: ConvBnRelu,
    aspp: Vec<Branch>,
    bottleneck: ConvBnRelu,
    c1: ConvBnRelu,
    sep: [SepConv; 2],
    cls: nn::Conv2D,
    dropout: f64,
}

fn resize(x: &Tensor, h: i64, w: i64) -> Tensor {
    x.upsample_bilinear2d([h, w], false, None, None)
}

impl DeepLabV3Plus {
    pub fn new(p: nn::Path, cfg: &DeepLabConfig) -> Result<Self> {
        ensure!(
            cfg.num_classes > 0 && cfg.channels > 0 && !cfg.dilations.is_empty(),
            "DeepLabV3+ needs classes, channels and dilations, got {cfg:?}"
        );
        let ch = cfg.channels;
        let image_pool = ConvBnRelu::new(&p / "image_pool", cfg.in_channels, ch, 1, 1, 1);
        let aspp = cfg
            .dilations
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let q = &p / "aspp_modules" / i as i64;
                if d == 1 {
                    Branch::Plain(Box::new(ConvBnRelu::new(q, cfg.in_channels, ch, 1, 1, 1)))
                } else {
                    Branch::Sep(Box::new(SepConv::new(q, cfg.in_channels, ch, d)))
                }
            })
            .collect();
        let n = cfg.dilations.len() as i64 + 1;
        let bottleneck = ConvBnRelu::new(&p / "bottleneck", n * ch, ch, 3, 1, 1);
        let c1 = ConvBnRelu::new(
            &p / "c1_bottleneck",
            cfg.low_channels,
            cfg.c1_channels,
            1,
            1,
            1,
        );
        let sp = &p / "sep_bottleneck";
        let sep = [
            SepConv::new(&sp / 0, ch + cfg.c1_channels, ch, 1),
            SepConv::new(&sp / 1, ch, ch, 1),
        ];
        let cls = nn::conv2d(
            &p / "conv_seg",
            ch,
            cfg.num_classes,
            1,
            nn::ConvConfig {
                ws_init: Init::Randn {
                    mean: 0.0,
                    stdev: 0.01,
                },
                bs_init: Init::Const(0.0),
                ..Default::default()
            },
        );
        Ok(Self {
            image_pool,
            aspp,
            bottleneck,
            c1,
            sep,
            cls,
            dropout: cfg.dropout,
        })
    }

    /// `(layer1, layer4)` → logits at `out_hw` (the input size).
    pub fn forward_t(
        &self,
        layer1: &Tensor,
        layer4: &Tensor,
        out_hw: (i64, i64),
        train: bool,
    ) -> Tensor {
        let (h4, w4) = (layer4.size()[2], layer4.size()[3]);
        let pooled = self
            .image_pool
            .forward_t(&layer4.adaptive_avg_pool2d([1, 1]), train);
        let mut outs = vec![resize(&pooled, h4, w4)];
        for b in &self.aspp {
            outs.push(match b {
                Branch::Plain(c) => c.forward_t(layer4, train),
                Branch::Sep(s) => s.forward_t(layer4, train),
            });
        }
        let x = self.bottleneck.forward_t(&Tensor::cat(&outs, 1), train);
        let low = self.c1.forward_t(layer1, train);
        let (h1, w1) = (low.size()[2], low.size()[3]);
        let x = Tensor::cat(&[resize(&x, h1, w1), low], 1);
        let x = self.sep[1].forward_t(&self.sep[0].forward_t(&x, train), train);
        let x = x.feature_dropout(self.dropout, train); // nn.Dropout2d
        resize(&self.cls.forward(&x), out_hw.0, out_hw.1)
    }
}
