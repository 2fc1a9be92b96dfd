//! The GraSS network : a torchvision-layout ResNet trunk that exposes
//! its layer-4 map (the tensor the gradient is taken against) and the projection head
//! `C4 → C4 → 128` with bias and no BN.
//!
//! Head quirk: the official config lists two one-layer VISSL `mlp` heads, and VISSL's `MLP`
//! skips the ReLU after a module's last layer, so the code's head is Linear → Linear with no
//! non-linearity: the official head is linear (`head_relu = false`, the default). `head_relu = true`
//! (SimCLR's head, and what the paper's "MLP" suggests) puts a ReLU between them.

use anyhow::{bail, Result};
use contrast_core::nn::heads::{simclr_head, MlpConfig, MlpHead};
use contrast_core::nn::resnet::{resnet18, resnet50, ResNet, ResNetConfig};
use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

/// The trunk of `model.arch` (`resnet50`: the paper; `resnet18`: CPU smoke runs).
pub fn trunk_config(arch: &str) -> Result<ResNetConfig> {
    Ok(match arch {
        "resnet50" => resnet50(),
        "resnet18" => resnet18(),
        other => bail!("unknown model.arch `{other}`: use resnet50 or resnet18"),
    })
}

/// The trunk of a model config: `model.arch`, with `model.layers` blocks per stage when set.
pub fn model_trunk(m: &crate::config::ModelConfig) -> Result<ResNetConfig> {
    let mut t = trunk_config(&m.arch)?;
    if let Some(layers) = m.layers {
        if layers.contains(&0) {
            bail!("model.layers {layers:?}: every stage needs a block");
        }
        t.layers = layers.map(|n| n as i64);
    }
    Ok(t)
}

#[derive(Debug)]
enum Head {
    /// Linear → ReLU → Linear.
    Relu(MlpHead),
    /// Linear → Linear (two one-layer VISSL heads).
    Linear(MlpHead, MlpHead),
}

/// Trunk + projection head in one `VarStore` (`trunk.*`, `head.*`).
#[derive(Debug)]
pub struct GrassNet {
    pub vs: nn::VarStore,
    pub trunk: ResNet,
    head: Head,
}

/// What a forward returns.
#[derive(Debug)]
pub struct Forward {
    /// Layer-4 map `[B, C4, h, w]`.
    pub layer4: Tensor,
    /// Projection `[B, out_dim]` (not normalised).
    pub z: Tensor,
}

impl GrassNet {
    pub fn new(device: Device, arch: &str, out_dim: i64, head_relu: bool) -> Result<Self> {
        Self::with_output_stride(device, arch, out_dim, head_relu, 32)
    }

    /// [`GrassNet::new`] with the trunk at output stride 32, 16 or 8 (dilated stages, same
    /// weights): the segmentation fine-tune runs the pretrained trunk at stride 8, as MMSeg's
    /// `-d8` ResNets.
    pub fn with_output_stride(
        device: Device,
        arch: &str,
        out_dim: i64,
        head_relu: bool,
        output_stride: i64,
    ) -> Result<Self> {
        let trunk = ResNetConfig {
            output_stride,
            ..trunk_config(arch)?
        };
        Self::with_trunk(device, &trunk, out_dim, head_relu)
    }

    /// The network on any torchvision-layout trunk `trunk` (e.g. a one-block-per-stage
    /// Bottleneck ResNet: the reduced model of the official step comparison).
    pub fn with_trunk(
        device: Device,
        trunk: &ResNetConfig,
        out_dim: i64,
        head_relu: bool,
    ) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let trunk = ResNet::new(&root / "trunk", trunk)?;
        let c = trunk.num_features();
        let hp = &root / "head";
        let head = if head_relu {
            Head::Relu(simclr_head(hp, c, c, out_dim, false)?)
        } else {
            let one = |p: nn::Path, d: Vec<i64>| {
                MlpHead::new(
                    p,
                    &MlpConfig {
                        dims: d,
                        bias: true,
                        hidden_bn: false,
                        last_norm: contrast_core::nn::heads::LastNorm::None,
                    },
                )
            };
            Head::Linear(
                one(&hp / "0", vec![c, c])?,
                one(&hp / "1", vec![c, out_dim])?,
            )
        };
        Ok(Self { vs, trunk, head })
    }

    /// The projection of a pooled feature `[B, C4]`.
    pub fn project(&self, pooled: &Tensor, train: bool) -> Tensor {
        match &self.head {
            Head::Relu(h) => h.forward_t(pooled, train),
            Head::Linear(a, b) => b.forward_t(&a.forward_t(pooled, train), train),
        }
    }

    /// Images → layer-4 map and projection.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Forward> {
        let f = self.trunk.forward_features(x, train)?;
        let z = self.project(&f.pooled, train);
        Ok(Forward {
            layer4: f.layer4,
            z,
        })
    }
}
