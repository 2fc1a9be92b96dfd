//! Vision Transformer (Dosovitskiy et al. 2021, <https://arxiv.org/abs/2010.11929>) as timm's
//! `VisionTransformer` (`timm/models/vision_transformer.py`, class token, `global_pool='token'`,
//! `qkv_bias=True`, LayerNorm eps 1e-6, MLP ratio 4, GELU), with the MoCo-v3 initialisation
//! used by PatchMix (`visresearch/patchmix` `module/vits.py`, `facebookresearch/moco-v3` `vits.py`).
//!
//! Parameter names are timm's: `cls_token`, `pos_embed`, `patch_embed.proj.{weight,bias}`,
//! `blocks.{i}.norm1.*`, `blocks.{i}.attn.qkv.*`, `blocks.{i}.attn.proj.*`, `blocks.{i}.norm2.*`,
//! `blocks.{i}.mlp.fc1.*`, `blocks.{i}.mlp.fc2.*`, `norm.*` and, with a classifier, `head.*`.
//!
//! Departures from timm, all no-ops for the papers' settings: no dropout layers (PatchMix and
//! MoCo-v3 use rate 0 for `pos_drop`, `attn_drop`, `proj_drop`), no LayerScale, no register
//! tokens, and inputs of any size divisible by the patch size are accepted (timm's
//! `dynamic_img_size=True` behaviour: the position embedding is resampled to the input grid).
//!
//! PatchMix mixes images at the patch level. Because the patch embedding is a per-patch linear
//! map and the position embedding is added afterwards, mixing raw patches and mixing embedded
//! patches give the same sequence: a method may call [`VisionTransformer::embed_patches`], mix the
//! `[B, N, D]` tokens (keeping each token at its spatial index) and continue with
//! [`VisionTransformer::forward_tokens`].

use super::drop_path;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Init, Module, ModuleT};
use tch::{Kind, Tensor};

/// How the position embedding is made (config value `"learnable"` / `"sincos"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PosEmbed {
    /// A learnable `[1, 1 + N, D]` parameter, timm's `trunc_normal_(std=0.02)` (the truncation at
    /// ±2 is ±100σ and never binds, so a plain normal is drawn). PatchMix's choice.
    Learnable,
    /// MoCo-v3's fixed 2-D sin-cos table (`build_2d_sincos_position_embedding`, temperature
    /// 10000, a zero row for the class token), stored as a non-trainable `pos_embed`.
    #[serde(rename = "sincos")]
    SinCos,
}

/// How the position embedding follows an input of another size (config `"timm"` / `"dino"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PosResample {
    /// timm's `resample_abs_pos_embed`: bicubic to the new grid, anti-aliased.
    #[default]
    Timm,
    /// DINO's `interpolate_pos_encoding`, as PatchMix's `module/vits.py` does it:
    /// `F.interpolate(mode='bicubic', scale_factor=((gh + 0.1)/h₀, (gw + 0.1)/w₀))`, no
    /// anti-aliasing; the scale factor, not the output size, sets where the samples fall.
    Dino,
}

/// Architecture and regularisation of a [`VisionTransformer`]. Default: PatchMix's CIFAR
/// encoder, [`vit_tiny`]`(32, 2)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VitConfig {
    /// Side of the (square) training image; fixes the stored position-embedding grid.
    pub img_size: i64,
    /// Side of a (square) patch: 16 on ImageNet, 2 or 4 on CIFAR's 32×32.
    pub patch_size: i64,
    /// Input channels (3).
    pub in_chans: i64,
    /// Token width D.
    pub embed_dim: i64,
    /// Number of transformer blocks.
    pub depth: i64,
    /// Attention heads; must divide `embed_dim`.
    pub num_heads: i64,
    /// Hidden width of the MLP as a multiple of D (4).
    pub mlp_ratio: f64,
    /// Bias on the qkv projection (timm default `True`; PatchMix/MoCo-v3 `True`).
    pub qkv_bias: bool,
    /// LayerNorm epsilon (1e-6 in MoCo-v3/PatchMix and timm's presets).
    pub norm_eps: f64,
    /// Stochastic-depth rate of the last block; block `i` uses `rate·i/(depth−1)` (timm's
    /// `torch.linspace(0, drop_path_rate, depth)`). PatchMix: 0.1 for the online encoder.
    pub drop_path_rate: f64,
    /// Learnable or fixed sin-cos position embedding.
    pub pos_embed: PosEmbed,
    /// A linear classifier `head` on the class token (`None`: the model returns the feature,
    /// timm's `num_classes=0`).
    pub num_classes: Option<i64>,
    /// MoCo-v3's `stop_grad_conv1`: freeze the (randomly initialised) patch projection, which
    /// MoCo-v3 reports stabilises ViT training. PatchMix: `false`.
    pub stop_grad_patch_embed: bool,
    /// How the position embedding is resampled for inputs of another size (multi-crop).
    pub pos_resample: PosResample,
}

impl Default for VitConfig {
    fn default() -> Self {
        vit_tiny(32, 2)
    }
}

fn vit_preset(img_size: i64, patch_size: i64, embed_dim: i64, num_heads: i64) -> VitConfig {
    VitConfig {
        img_size,
        patch_size,
        in_chans: 3,
        embed_dim,
        depth: 12,
        num_heads,
        mlp_ratio: 4.0,
        qkv_bias: true,
        norm_eps: 1e-6,
        drop_path_rate: 0.0,
        pos_embed: PosEmbed::Learnable,
        num_classes: None,
        stop_grad_patch_embed: false,
        pos_resample: PosResample::Timm,
    }
}

/// ViT-Tiny: D 192, 12 blocks, 3 heads (PatchMix CIFAR: `vit_tiny(32, 2)`).
pub fn vit_tiny(img_size: i64, patch_size: i64) -> VitConfig {
    vit_preset(img_size, patch_size, 192, 3)
}

/// ViT-Small as MoCo-v3 and PatchMix define it: D 384, 12 blocks, **12** heads (timm's
/// `vit_small_patch16_224` has 6; parameter count is identical, attention differs).
pub fn vit_small(img_size: i64, patch_size: i64) -> VitConfig {
    vit_preset(img_size, patch_size, 384, 12)
}

/// ViT-Base: D 768, 12 blocks, 12 heads.
pub fn vit_base(img_size: i64, patch_size: i64) -> VitConfig {
    vit_preset(img_size, patch_size, 768, 12)
}

/// `U(−b, b)` with `b = √(6 / (fan_in + fan_out))`: Xavier-uniform.
fn xavier(fan_in: i64, fan_out: i64) -> Init {
    let b = (6.0 / (fan_in + fan_out) as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// A linear layer with MoCo-v3's initialisation: Xavier-uniform weight, zero bias.
fn xavier_linear(p: nn::Path, in_dim: i64, out_dim: i64, bias: bool) -> nn::Linear {
    nn::linear(
        p,
        in_dim,
        out_dim,
        nn::LinearConfig {
            ws_init: xavier(in_dim, out_dim),
            bs_init: Some(Init::Const(0.0)),
            bias,
        },
    )
}

/// timm's `PatchEmbed`: a `patch×patch` convolution with stride `patch`, flattened to tokens.
#[derive(Debug)]
pub struct PatchEmbed {
    proj: nn::Conv2D,
    patch_size: i64,
    in_chans: i64,
}

impl PatchEmbed {
    /// `p` is the `patch_embed` path; the variables are `proj.weight` `[D, C, P, P]` and
    /// `proj.bias` `[D]`. MoCo-v3 initialisation: `U(±√(6 / (C·P·P + D)))` (MoCo-v3 writes
    /// `3·P·P`, i.e. C = 3), zero bias.
    pub fn new(p: nn::Path, in_chans: i64, patch_size: i64, embed_dim: i64) -> Self {
        let fan_in = in_chans * patch_size * patch_size;
        let b = (6.0 / (fan_in + embed_dim) as f64).sqrt();
        let proj = nn::conv2d(
            p / "proj",
            in_chans,
            embed_dim,
            patch_size,
            nn::ConvConfig {
                stride: patch_size,
                ws_init: Init::Uniform { lo: -b, up: b },
                bs_init: Init::Const(0.0),
                ..Default::default()
            },
        );
        Self {
            proj,
            patch_size,
            in_chans,
        }
    }

    /// Images `[B, C, H, W]` → tokens `[B, N, D]` (row-major over the `H/P × W/P` grid) and
    /// the grid `(H/P, W/P)`.
    pub fn forward(&self, xs: &Tensor) -> Result<(Tensor, (i64, i64))> {
        let &[_, c, h, w] = xs.size().as_slice() else {
            bail!(
                "patch embedding expects [B, C, H, W] images, got {:?}",
                xs.size()
            );
        };
        let p = self.patch_size;
        ensure!(
            c == self.in_chans,
            "image has {c} channels but the patch embedding expects {}",
            self.in_chans
        );
        ensure!(
            h % p == 0,
            "image height {h} is not a multiple of patch height {p}"
        );
        ensure!(
            w % p == 0,
            "image width {w} is not a multiple of patch width {p}"
        );
        let x = self.proj.forward(xs); // [B, D, H/P, W/P]
        Ok((x.flatten(2, 3).transpose(1, 2), (h / p, w / p))) // [B, N, D]
    }

    /// Side of a patch in pixels.
    pub fn patch_size(&self) -> i64 {
        self.patch_size
    }
}

/// timm's `Attention`: fused qkv projection, scaled dot-product attention, output projection.
#[derive(Debug)]
pub struct Attention {
    qkv: nn::Linear,
    proj: nn::Linear,
    num_heads: i64,
}

impl Attention {
    /// Variables `qkv.{weight,bias}` `[3D, D]` and `proj.{weight,bias}` `[D, D]`. MoCo-v3 treats
    /// q, k and v as three separate Xavier matrices: `U(±√(6 / (D + D)))` for qkv.
    pub fn new(p: nn::Path, dim: i64, num_heads: i64, qkv_bias: bool) -> Self {
        let qkv = nn::linear(
            &p / "qkv",
            dim,
            3 * dim,
            nn::LinearConfig {
                ws_init: xavier(dim, dim),
                bs_init: Some(Init::Const(0.0)),
                bias: qkv_bias,
            },
        );
        let proj = xavier_linear(&p / "proj", dim, dim, true);
        Self {
            qkv,
            proj,
            num_heads,
        }
    }

    /// `[B, N, D]` → `[B, N, D]`.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let (b, n, d) = xs.size3().expect("attention input is [B, N, D]");
        let h = self.num_heads;
        let qkv = self
            .qkv
            .forward(xs) // [B, N, 3D]
            .reshape([b, n, 3, h, d / h])
            .permute([2, 0, 3, 1, 4]); // [3, B, h, N, D/h]
                                       // `unbind` as timm: one backward node that stacks the three gradients (three `select`s
                                       // would each scatter into a zero tensor of the full qkv size)
        let [q, k, v]: [Tensor; 3] = qkv
            .unbind(0)
            .try_into()
            .expect("qkv has 3 entries on dim 0");
        let x = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        ); // [B, h, N, D/h]
        self.proj.forward(&x.transpose(1, 2).reshape([b, n, d]))
    }
}

/// timm's `Mlp`: `fc1` → GELU (exact erf form) → `fc2`.
#[derive(Debug)]
pub struct Mlp {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Mlp {
    /// Variables `fc1.*` `[H, D]`, `fc2.*` `[D, H]`, Xavier-uniform weights, zero biases.
    pub fn new(p: nn::Path, dim: i64, hidden: i64) -> Self {
        Self {
            fc1: xavier_linear(&p / "fc1", dim, hidden, true),
            fc2: xavier_linear(&p / "fc2", hidden, dim, true),
        }
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.fc2.forward(&self.fc1.forward(xs).gelu("none"))
    }
}

/// A pre-norm transformer block:
/// `x + drop_path(attn(norm1(x)))`, then `x + drop_path(mlp(norm2(x)))`.
#[derive(Debug)]
pub struct Block {
    norm1: nn::LayerNorm,
    attn: Attention,
    norm2: nn::LayerNorm,
    mlp: Mlp,
    drop_path: f64,
}

impl Block {
    /// Variables under `p` = `blocks.{i}`: `norm1`, `attn`, `norm2`, `mlp`.
    pub fn new(p: nn::Path, cfg: &VitConfig, drop_path: f64) -> Self {
        let d = cfg.embed_dim;
        let ln = nn::LayerNormConfig {
            eps: cfg.norm_eps,
            ..Default::default()
        };
        Self {
            norm1: nn::layer_norm(&p / "norm1", vec![d], ln),
            attn: Attention::new(&p / "attn", d, cfg.num_heads, cfg.qkv_bias),
            norm2: nn::layer_norm(&p / "norm2", vec![d], ln),
            mlp: Mlp::new(&p / "mlp", d, (d as f64 * cfg.mlp_ratio) as i64),
            drop_path,
        }
    }
}

impl ModuleT for Block {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let x = xs
            + drop_path(
                &self.attn.forward(&self.norm1.forward(xs)),
                self.drop_path,
                train,
            );
        &x + drop_path(
            &self.mlp.forward(&self.norm2.forward(&x)),
            self.drop_path,
            train,
        )
    }
}

/// The Vision Transformer. See the module documentation for names and departures from timm.
#[derive(Debug)]
pub struct VisionTransformer {
    patch_embed: PatchEmbed,
    cls_token: Tensor,
    pos_embed: Tensor,
    grid: (i64, i64),
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    head: Option<nn::Linear>,
    cfg: VitConfig,
}

impl VisionTransformer {
    /// Build under `p` (the model root: variables are `p / "cls_token"`, …).
    ///
    /// Initialisation (PatchMix `module/vits.py` = MoCo-v3 `vits.py` on top of timm's):
    /// every linear layer Xavier-uniform with zero bias (qkv: fan split by three), patch
    /// embedding `U(±√(6/(3·P²+D)))` with zero bias, `cls_token ~ N(0, 1e-6)`, learnable
    /// `pos_embed ~ N(0, 0.02)` (timm's trunc-normal), LayerNorm weight 1 / bias 0.
    pub fn new(p: nn::Path, cfg: &VitConfig) -> Result<Self> {
        let d = cfg.embed_dim;
        ensure!(
            cfg.img_size % cfg.patch_size == 0,
            "image size {} is not a multiple of patch size {}",
            cfg.img_size,
            cfg.patch_size
        );
        ensure!(
            d % cfg.num_heads == 0,
            "embedding width {d} is not a multiple of the number of heads {}",
            cfg.num_heads
        );
        ensure!(
            (0.0..1.0).contains(&cfg.drop_path_rate),
            "Illegal drop-path rate {} (must be in [0, 1))",
            cfg.drop_path_rate
        );
        let g = cfg.img_size / cfg.patch_size;
        let patch_embed = PatchEmbed::new(&p / "patch_embed", cfg.in_chans, cfg.patch_size, d);
        if cfg.stop_grad_patch_embed {
            // Like MoCo-v3, the variables stay parameters (saved, counted) without gradient.
            let _ = patch_embed.proj.ws.set_requires_grad(false);
            if let Some(b) = &patch_embed.proj.bs {
                let _ = b.set_requires_grad(false);
            }
        }
        let cls_token = p.var(
            "cls_token",
            &[1, 1, d],
            Init::Randn {
                mean: 0.0,
                stdev: 1e-6,
            },
        );
        let pos_embed = match cfg.pos_embed {
            PosEmbed::Learnable => p.var(
                "pos_embed",
                &[1, 1 + g * g, d],
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            ),
            PosEmbed::SinCos => {
                let t = sincos_pos_embed_2d(g, g, d, 10000.0)?.to_device(p.device());
                p.add("pos_embed", t, false)
            }
        };
        let blocks = (0..cfg.depth)
            .map(|i| {
                // timm: torch.linspace(0, drop_path_rate, depth)[i]
                let rate = if cfg.depth > 1 {
                    cfg.drop_path_rate * i as f64 / (cfg.depth - 1) as f64
                } else {
                    0.0
                };
                Block::new(&p / "blocks" / i, cfg, rate)
            })
            .collect();
        let norm = nn::layer_norm(
            &p / "norm",
            vec![d],
            nn::LayerNormConfig {
                eps: cfg.norm_eps,
                ..Default::default()
            },
        );
        let head = cfg
            .num_classes
            .map(|c| xavier_linear(&p / "head", d, c, true));
        Ok(Self {
            patch_embed,
            cls_token,
            pos_embed,
            grid: (g, g),
            blocks,
            norm,
            head,
            cfg: cfg.clone(),
        })
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// Token width D.
    pub fn embed_dim(&self) -> i64 {
        self.cfg.embed_dim
    }

    /// The stochastic-depth rate of each block, `drop_path_rate·i/(depth−1)`.
    pub fn drop_path_rates(&self) -> Vec<f64> {
        self.blocks.iter().map(|b| b.drop_path).collect()
    }

    /// The patch embedding, for methods that patchify themselves.
    pub fn patch_embed(&self) -> &PatchEmbed {
        &self.patch_embed
    }

    /// Images `[B, C, H, W]` → patch tokens `[B, N, D]` (no class token, no position embedding)
    /// and their grid `(H/P, W/P)`.
    pub fn embed_patches(&self, xs: &Tensor) -> Result<(Tensor, (i64, i64))> {
        self.patch_embed.forward(xs)
    }

    /// The position embedding for a `grid` of patches, `[1, 1 + gh·gw, D]`: the stored one, or
    /// bicubically resampled per [`VitConfig::pos_resample`].
    pub fn pos_embed_for(&self, grid: (i64, i64)) -> Result<Tensor> {
        if grid == self.grid {
            return Ok(self.pos_embed.shallow_clone());
        }
        match self.cfg.pos_resample {
            PosResample::Timm => {
                resample_abs_pos_embed(&self.pos_embed, grid, Some(self.grid), 1, true)
            }
            PosResample::Dino => dino_pos_embed(&self.pos_embed, grid, self.grid),
        }
    }

    /// Patch tokens `[B, N, D]` on a `grid` (N = gh·gw) → all output tokens after the final
    /// norm, `[B, 1 + N, D]` (index 0 is the class token). Prepends the class token and adds
    /// the position embedding; the tokens must sit at their spatial indices.
    pub fn forward_tokens(&self, tokens: &Tensor, grid: (i64, i64), train: bool) -> Result<Tensor> {
        let (b, n, d) = tokens
            .size3()
            .with_context(|| format!("tokens must be [B, N, D], got {:?}", tokens.size()))?;
        ensure!(
            d == self.cfg.embed_dim,
            "token width {d} differs from the model's {}",
            self.cfg.embed_dim
        );
        ensure!(
            n == grid.0 * grid.1,
            "{n} tokens do not fill a {}×{} grid",
            grid.0,
            grid.1
        );
        let cls = self.cls_token.expand([b, 1, d], true);
        let mut x = Tensor::cat(&[cls, tokens.shallow_clone()], 1) + self.pos_embed_for(grid)?; // [B, 1+N, D]
        for blk in &self.blocks {
            x = blk.forward_t(&x, train);
        }
        Ok(self.norm.forward(&x))
    }

    /// Images → all output tokens `[B, 1 + N, D]` (timm's `forward_features`).
    pub fn forward_features(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let (tokens, grid) = self.embed_patches(xs)?;
        self.forward_tokens(&tokens, grid, train)
    }

    /// Images → class-token feature `[B, D]` (timm's `forward_head(pre_logits=True)`).
    pub fn forward_cls(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.forward_features(xs, train)?.select(1, 0))
    }

    /// Images → `head(cls)` `[B, classes]` when the model has a head, else the class-token
    /// feature `[B, D]` (timm's `forward`).
    pub fn f_forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let cls = self.forward_cls(xs, train)?;
        Ok(match &self.head {
            Some(h) => h.forward(&cls),
            None => cls,
        })
    }
}

impl ModuleT for VisionTransformer {
    /// [`VisionTransformer::f_forward_t`]; panics with the shape error on malformed input.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.f_forward_t(xs, train)
            .unwrap_or_else(|e| panic!("vision transformer: {e:#}"))
    }
}

/// MoCo-v3's fixed 2-D sin-cos position embedding (`build_2d_sincos_position_embedding`) for a
/// `gh × gw` grid: `[1, 1 + gh·gw, D]`, a zero row for the class token, then for each token
/// `[sin(a·ω), cos(a·ω), sin(b·ω), cos(b·ω)]` with `ω_i = 1/temperature^(i/(D/4))`.
///
/// MoCo-v3 builds `a, b` with `torch.meshgrid(arange(gw), arange(gh))` (`'ij'` indexing) and
/// flattens, so token `m` gets `a = m div gh`, `b = m mod gh`: on a square grid `a` is the row
/// and `b` the column, despite the names `grid_w`, `grid_h`. Reproduced as is.
pub fn sincos_pos_embed_2d(gh: i64, gw: i64, dim: i64, temperature: f64) -> Result<Tensor> {
    ensure!(
        dim % 4 == 0,
        "embedding width {dim} must be divisible by 4 for the 2-D sin-cos position embedding"
    );
    let opts = (Kind::Float, tch::Device::Cpu);
    let m = Tensor::arange(gh * gw, opts);
    let a = m.divide_scalar_mode(gh, "floor"); // grid_w.flatten()
    let b = m.remainder(gh); // grid_h.flatten()
    let pos_dim = dim / 4;
    let omega = (Tensor::arange(pos_dim, opts) / pos_dim as f64 * -(temperature.ln())).exp(); // [D/4]
    let out_a = a.unsqueeze(1) * omega.unsqueeze(0); // [N, D/4]
    let out_b = b.unsqueeze(1) * omega.unsqueeze(0);
    let pe = Tensor::cat(&[out_a.sin(), out_a.cos(), out_b.sin(), out_b.cos()], 1); // [N, D]
    let cls = Tensor::zeros([1, dim], opts);
    Ok(Tensor::cat(&[cls, pe], 0).unsqueeze(0)) // [1, 1+N, D]
}

/// DINO's `interpolate_pos_encoding` (PatchMix `module/vits.py`): the patch part of `posemb`
/// (`[1, 1 + h₀·w₀, D]`, class token first) through `F.interpolate(mode='bicubic',
/// scale_factor=((gh + 0.1)/h₀, (gw + 0.1)/w₀), align_corners=False)`: output size
/// `⌊h₀·s⌋ = gh`, sample positions from the scale factor itself.
pub fn dino_pos_embed(posemb: &Tensor, grid: (i64, i64), old: (i64, i64)) -> Result<Tensor> {
    let (_, n, d) = posemb.size3()?;
    ensure!(
        n == 1 + old.0 * old.1,
        "position embedding has {n} tokens, not 1 + {}×{}",
        old.0,
        old.1
    );
    let (sh, sw) = (
        (grid.0 as f64 + 0.1) / old.0 as f64,
        (grid.1 as f64 + 0.1) / old.1 as f64,
    );
    let kind = posemb.kind();
    let patch = posemb
        .narrow(1, 1, n - 1)
        .to_kind(Kind::Float)
        .reshape([1, old.0, old.1, d])
        .permute([0, 3, 1, 2]);
    let out = patch.upsample_bicubic2d(
        [
            (old.0 as f64 * sh).floor() as i64,
            (old.1 as f64 * sw).floor() as i64,
        ],
        false,
        Some(sh),
        Some(sw),
    );
    ensure!(
        out.size()[2..] == [grid.0, grid.1],
        "interpolated position grid {:?}, expected {grid:?}",
        &out.size()[2..]
    );
    let out = out
        .permute([0, 2, 3, 1])
        .reshape([1, grid.0 * grid.1, d])
        .to_kind(kind);
    Ok(Tensor::cat(&[posemb.narrow(1, 0, 1), out], 1))
}

/// Resample an absolute position embedding `[1, P + gh·gw, D]` (P prefix tokens kept as they
/// are) to `new_grid`, as timm's `resample_abs_pos_embed(posemb, new_size, old_size,
/// num_prefix_tokens, interpolation='bicubic', antialias)`. `old_grid = None` assumes a square
/// grid. With `antialias` (timm's default) PyTorch's anti-aliased bicubic kernel is used (PIL's
/// `a = −0.5`), otherwise `F.interpolate(mode='bicubic', align_corners=False)` (`a = −0.75`).
/// Computed in float32 and cast back, as timm does.
pub fn resample_abs_pos_embed(
    posemb: &Tensor,
    new_grid: (i64, i64),
    old_grid: Option<(i64, i64)>,
    num_prefix_tokens: i64,
    antialias: bool,
) -> Result<Tensor> {
    let (one, n, d) = posemb.size3().with_context(|| {
        format!(
            "position embedding must be [1, N, D], got {:?}",
            posemb.size()
        )
    })?;
    ensure!(one == 1, "position embedding batch is {one}, expected 1");
    let np = n - num_prefix_tokens;
    let (oh, ow) = match old_grid {
        Some(g) => g,
        None => {
            let s = (np as f64).sqrt().round() as i64;
            (s, s)
        }
    };
    ensure!(
        oh * ow == np,
        "position embedding has {np} patch positions, not a {oh}×{ow} grid"
    );
    if (oh, ow) == new_grid {
        return Ok(posemb.shallow_clone());
    }
    let kind = posemb.kind();
    let prefix = posemb.narrow(1, 0, num_prefix_tokens);
    let grid = posemb
        .narrow(1, num_prefix_tokens, np)
        .to_kind(Kind::Float)
        .reshape([1, oh, ow, d])
        .permute([0, 3, 1, 2]); // [1, D, oh, ow]
    let size = [new_grid.0, new_grid.1];
    let out = if antialias {
        grid.internal_upsample_bicubic2d_aa(size, false, None, None)
    } else {
        grid.upsample_bicubic2d(size, false, None, None)
    }; // [1, D, gh, gw]
    let out = out
        .permute([0, 2, 3, 1])
        .reshape([1, new_grid.0 * new_grid.1, d])
        .to_kind(kind);
    Ok(Tensor::cat(&[prefix, out], 1))
}
