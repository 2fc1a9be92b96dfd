//! ResNet (He et al. 2016, <https://arxiv.org/abs/1512.03385>) as torchvision's
//! `torchvision/models/resnet.py` (v1.5: the stride of a bottleneck sits on its 3×3 conv), with
//! the CIFAR stem used by solo-learn and lightly, and a forward that also returns the layer-4
//! feature map (GraSS takes its gradient against that map, `grass-claires.md` §1.1).
//!
//! Parameter names are torchvision's: `conv1.weight`, `bn1.{weight,bias,running_mean,running_var}`,
//! `layer{1..4}.{j}.conv{1,2,3}.weight`, `layer{1..4}.{j}.bn{1,2,3}.*`,
//! `layer{1..4}.0.downsample.{0,1}.*` and, with a classifier, `fc.{weight,bias}`. BatchNorm's
//! `num_batches_tracked` is not stored (see [`crate::nn`]).

use super::torch_linear;
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Init, Module, ModuleT};
use tch::Tensor;

/// The residual block family (config value `"basic"` / `"bottleneck"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// Two 3×3 convs, expansion 1 (ResNet-18/34).
    Basic,
    /// 1×1 → 3×3 (strided) → 1×1 convs, expansion 4 (ResNet-50/101/152).
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> i64 {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The first layer (config value `"imagenet"`, `"cifar"` or `"cifar_pad2"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stem {
    /// torchvision: 7×7 conv stride 2 padding 3, BN, ReLU, 3×3 max-pool stride 2.
    #[serde(rename = "imagenet")]
    ImageNet,
    /// CIFAR (lightly and most CIFAR code): 3×3 conv stride 1 padding 1, BN, ReLU, no max-pool.
    #[serde(rename = "cifar")]
    Cifar,
    /// solo-learn's CIFAR stem: as [`Stem::Cifar`] but `padding=2` (34×34 maps after the stem,
    /// 5×5 after layer 4 at 32 px).
    #[serde(rename = "cifar_pad2")]
    CifarPad2,
}

impl Stem {
    /// The usual CIFAR stem, [`Stem::Cifar`].
    pub fn cifar() -> Self {
        Stem::Cifar
    }
}

/// Architecture of a [`ResNet`]. Default: [`resnet18`] (torchvision's, ImageNet stem).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResNetConfig {
    /// Block family.
    pub block: BlockKind,
    /// Blocks per stage (`[2, 2, 2, 2]` for ResNet-18).
    pub layers: [i64; 4],
    /// ImageNet or CIFAR stem.
    pub stem: Stem,
    /// Input channels (3).
    pub in_chans: i64,
    /// torchvision's `zero_init_residual`: the last BN of every block starts with weight 0, so
    /// each residual branch starts as the identity (Goyal et al. 2017).
    pub zero_init_residual: bool,
    /// A linear classifier `fc` on the pooled feature (`None`: return the feature).
    pub num_classes: Option<i64>,
    /// Output stride of `layer4` with the ImageNet stem: 32 (plain), 16 (layer 4 dilated) or 8
    /// (layers 3 and 4 dilated), as torchvision's `replace_stride_with_dilation` ([F, F, T] /
    /// [F, T, T]) and MMSeg's `-d8` ResNets (`strides (1, 2, 1, 1)`, `dilations (1, 1, 2, 4)`,
    /// `contract_dilation`): a dilated stage keeps stride 1, its first block uses the previous
    /// dilation and the others the new one. The weights are the same shapes at every stride.
    pub output_stride: i64,
}

impl Default for ResNetConfig {
    fn default() -> Self {
        resnet18()
    }
}

/// ResNet-18 (`BasicBlock`, `[2, 2, 2, 2]`), ImageNet stem, no classifier.
pub fn resnet18() -> ResNetConfig {
    ResNetConfig {
        block: BlockKind::Basic,
        layers: [2, 2, 2, 2],
        stem: Stem::ImageNet,
        in_chans: 3,
        zero_init_residual: false,
        num_classes: None,
        output_stride: 32,
    }
}

/// ResNet-34 (`BasicBlock`, `[3, 4, 6, 3]`), ImageNet stem, no classifier.
pub fn resnet34() -> ResNetConfig {
    ResNetConfig {
        layers: [3, 4, 6, 3],
        ..resnet18()
    }
}

/// ResNet-50 (`Bottleneck`, `[3, 4, 6, 3]`), ImageNet stem, no classifier.
pub fn resnet50() -> ResNetConfig {
    ResNetConfig {
        block: BlockKind::Bottleneck,
        layers: [3, 4, 6, 3],
        ..resnet18()
    }
}

/// torchvision's conv init: `kaiming_normal_(mode='fan_out', nonlinearity='relu')`, no bias.
fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    conv_dilated(p, c_in, c_out, k, stride, padding, 1)
}

/// [`conv`] with a dilation.
fn conv_dilated(
    p: nn::Path,
    c_in: i64,
    c_out: i64,
    k: i64,
    stride: i64,
    padding: i64,
    dilation: i64,
) -> nn::Conv2D {
    nn::conv2d(
        p,
        c_in,
        c_out,
        k,
        nn::ConvConfig {
            stride,
            padding,
            dilation,
            bias: false,
            ws_init: Init::Kaiming {
                dist: nn::init::NormalOrUniform::Normal,
                fan: nn::init::FanInOut::FanOut,
                non_linearity: nn::init::NonLinearity::ReLU,
            },
            ..Default::default()
        },
    )
}

/// BatchNorm2d with PyTorch defaults (eps 1e-5, momentum 0.1), weight `w0`, bias 0.
fn bn(p: nn::Path, c: i64, w0: f64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        c,
        nn::BatchNormConfig {
            ws_init: Init::Const(w0),
            bs_init: Init::Const(0.0),
            ..Default::default()
        },
    )
}

/// A 3×3 conv with `dilation` (padding = dilation, so the size only changes with the stride).
fn conv3_dilated(p: nn::Path, c_in: i64, c_out: i64, stride: i64, dilation: i64) -> nn::Conv2D {
    conv_dilated(p, c_in, c_out, 3, stride, dilation, dilation)
}

/// One residual block (`BasicBlock` or `Bottleneck`), `layer{s}.{j}`.
#[derive(Debug)]
pub struct ResBlock {
    convs: Vec<(nn::Conv2D, nn::BatchNorm)>,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl ResBlock {
    /// `width` is the stage's base width (64, 128, 256, 512); the block outputs
    /// `width·expansion` channels. `stride` applies to the first 3×3 conv (v1.5) and to the
    /// 1×1 `downsample`, which exists when the shape changes.
    pub fn new(
        p: nn::Path,
        kind: BlockKind,
        c_in: i64,
        width: i64,
        stride: i64,
        zero_init_residual: bool,
    ) -> Self {
        Self::dilated(p, kind, c_in, width, stride, 1, zero_init_residual)
    }

    /// [`ResBlock::new`] with a dilated 3×3 conv: the Bottleneck's `conv2` (torchvision), the
    /// BasicBlock's `conv1` (MMSeg; torchvision refuses dilated BasicBlocks).
    pub fn dilated(
        p: nn::Path,
        kind: BlockKind,
        c_in: i64,
        width: i64,
        stride: i64,
        dilation: i64,
        zero_init_residual: bool,
    ) -> Self {
        let c_out = width * kind.expansion();
        let last_w = if zero_init_residual { 0.0 } else { 1.0 };
        let convs = match kind {
            BlockKind::Basic => vec![
                (
                    conv3_dilated(&p / "conv1", c_in, width, stride, dilation),
                    bn(&p / "bn1", width, 1.0),
                ),
                (
                    conv(&p / "conv2", width, width, 3, 1, 1),
                    bn(&p / "bn2", width, last_w),
                ),
            ],
            BlockKind::Bottleneck => vec![
                (
                    conv(&p / "conv1", c_in, width, 1, 1, 0),
                    bn(&p / "bn1", width, 1.0),
                ),
                (
                    conv3_dilated(&p / "conv2", width, width, stride, dilation),
                    bn(&p / "bn2", width, 1.0),
                ),
                (
                    conv(&p / "conv3", width, c_out, 1, 1, 0),
                    bn(&p / "bn3", c_out, last_w),
                ),
            ],
        };
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            let d = &p / "downsample";
            (
                conv(&d / "0", c_in, c_out, 1, stride, 0),
                bn(&d / "1", c_out, 1.0),
            )
        });
        Self { convs, downsample }
    }
}

impl ModuleT for ResBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let last = self.convs.len() - 1;
        let mut y = xs.shallow_clone();
        // in place where torchvision is (`relu(inplace=True)`, `out += identity`): the BN
        // outputs are not needed by any backward, and it saves two allocations per block
        for (i, (c, b)) in self.convs.iter().enumerate() {
            y = crate::dist::batch_norm(b, &c.forward(&y), train);
            if i < last {
                let _ = y.relu_();
            }
        }
        let identity = match &self.downsample {
            Some((c, b)) => crate::dist::batch_norm(b, &c.forward(xs), train),
            None => xs.shallow_clone(),
        };
        let _ = y.g_add_(&identity);
        let _ = y.relu_();
        y
    }
}

/// What a ResNet forward returns.
#[derive(Debug)]
pub struct ResNetFeatures {
    /// Output of `layer1` (stride 4 with the ImageNet stem): the low-level map DeepLabV3+'s
    /// decoder uses.
    pub layer1: Tensor,
    /// Output of `layer4` before pooling, `[B, C4, h, w]` (C4 = 512 or 2048; 7×7 at 224 px
    /// with the ImageNet stem, 4×4 at 32 px with the CIFAR stem).
    pub layer4: Tensor,
    /// Global average pool of `layer4`, flattened: `[B, C4]`.
    pub pooled: Tensor,
}

/// The ResNet trunk (+ optional `fc`).
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    maxpool: bool,
    stages: Vec<Vec<ResBlock>>,
    fc: Option<nn::Linear>,
    num_features: i64,
    cfg: ResNetConfig,
}

impl ResNet {
    /// Build under `p` (the model root). Initialisation as torchvision: convs
    /// Kaiming-normal (fan-out, ReLU), BN weight 1 / bias 0 (0 for the last BN of each block with
    /// `zero_init_residual`), `fc` PyTorch's default `U(±1/√fan_in)`.
    pub fn new(p: nn::Path, cfg: &ResNetConfig) -> Result<Self> {
        ensure!(
            cfg.layers.iter().all(|&n| n >= 1),
            "every stage needs at least one block, got {:?}",
            cfg.layers
        );
        let conv1 = match cfg.stem {
            Stem::ImageNet => conv(&p / "conv1", cfg.in_chans, 64, 7, 2, 3),
            Stem::Cifar => conv(&p / "conv1", cfg.in_chans, 64, 3, 1, 1),
            Stem::CifarPad2 => conv(&p / "conv1", cfg.in_chans, 64, 3, 1, 2),
        };
        let bn1 = bn(&p / "bn1", 64, 1.0);
        // stages replaced by dilation (torchvision `replace_stride_with_dilation`)
        let dilate: [bool; 4] = match cfg.output_stride {
            32 => [false; 4],
            16 => [false, false, false, true],
            8 => [false, false, true, true],
            o => bail!("resnet output_stride must be 32, 16 or 8, got {o}"),
        };
        let mut c_in = 64;
        let mut dilation = 1;
        let mut stages = Vec::new();
        for (s, (&n, width)) in cfg.layers.iter().zip([64i64, 128, 256, 512]).enumerate() {
            let lp = &p / format!("layer{}", s + 1);
            let mut stride = if s == 0 { 1 } else { 2 };
            let previous = dilation;
            if dilate[s] {
                dilation *= stride;
                stride = 1;
            }
            let mut blocks = Vec::new();
            for j in 0..n {
                blocks.push(ResBlock::dilated(
                    &lp / j,
                    cfg.block,
                    c_in,
                    width,
                    if j == 0 { stride } else { 1 },
                    if j == 0 { previous } else { dilation },
                    cfg.zero_init_residual,
                ));
                c_in = width * cfg.block.expansion();
            }
            stages.push(blocks);
        }
        let fc = cfg
            .num_classes
            .map(|c| torch_linear(&p / "fc", c_in, c, true));
        Ok(Self {
            conv1,
            bn1,
            maxpool: cfg.stem == Stem::ImageNet,
            stages,
            fc,
            num_features: c_in,
            cfg: cfg.clone(),
        })
    }

    /// Width of the pooled feature (512 for ResNet-18/34, 2048 for ResNet-50).
    pub fn num_features(&self) -> i64 {
        self.num_features
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    /// Images `[B, C, H, W]` → the layer-4 map and the pooled vector.
    pub fn forward_features(&self, xs: &Tensor, train: bool) -> Result<ResNetFeatures> {
        let &[_, c, h, w] = xs.size().as_slice() else {
            bail!("ResNet expects [B, C, H, W] images, got {:?}", xs.size());
        };
        ensure!(
            c == self.cfg.in_chans,
            "image has {c} channels but the ResNet expects {}",
            self.cfg.in_chans
        );
        ensure!(h > 0 && w > 0, "empty image {h}×{w}");
        let mut x = crate::dist::batch_norm(&self.bn1, &self.conv1.forward(xs), train);
        let _ = x.relu_();
        if self.maxpool {
            x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        let mut layer1 = None;
        for stage in &self.stages {
            for blk in stage {
                x = blk.forward_t(&x, train);
            }
            layer1.get_or_insert_with(|| x.shallow_clone());
        }
        let pooled = x.adaptive_avg_pool2d([1, 1]).flatten(1, -1); // [B, C4]
        Ok(ResNetFeatures {
            layer1: layer1.unwrap_or_else(|| x.shallow_clone()),
            layer4: x,
            pooled,
        })
    }

    /// Images → `fc(pooled)` when the model has a classifier, else the pooled feature `[B, C4]`.
    pub fn f_forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let f = self.forward_features(xs, train)?;
        Ok(match &self.fc {
            Some(fc) => fc.forward(&f.pooled),
            None => f.pooled,
        })
    }
}

impl ModuleT for ResNet {
    /// [`ResNet::f_forward_t`]; panics with the shape error on malformed input.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.f_forward_t(xs, train)
            .unwrap_or_else(|e| panic!("resnet: {e:#}"))
    }
}
