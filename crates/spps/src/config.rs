//! SPPS configuration (presets in `configs/`). The paper fixes only the frameworks (SimCLR,
//! MoCo-v2), the ImageNet batch (1024) and epochs (800); every other value is our documented
//! choice (README "deviations and unknowns").

use contrast_core::data::stream::DEFAULT_STREAM_ABOVE_MIB;
use contrast_core::data::{OnCorrupt, StreamMode};
use contrast_core::frameworks::mocov2::MocoV2Config;
use contrast_core::nn::resnet::Stem;
use contrast_core::train::{LogConfig, RuntimeConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SppsConfig {
    /// Base framework: `simclr` or `mocov2`.
    pub framework: Framework,
    pub runtime: RuntimeConfig,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub simclr: SimclrConfig,
    pub mocov2: MocoV2Config,
    pub sampler: SamplerConfig,
    pub spps: SppsOptions,
    pub optim: OptimConfig,
    pub eval: EvalConfig,
    /// Logging and checkpoint cadence (core `LogConfig`; SPPS's defaults: a line every 10 steps,
    /// a checkpoint every epoch, the newest 2 kept).
    pub log: LogConfig,
    /// The paper's numbers (shown beside ours; never used in training).
    pub paper: PaperNumbers,
}

impl Default for SppsConfig {
    fn default() -> Self {
        Self {
            framework: Framework::default(),
            runtime: RuntimeConfig::default(),
            data: DataConfig::default(),
            model: ModelConfig::default(),
            simclr: SimclrConfig::default(),
            mocov2: MocoV2Config::default(),
            sampler: SamplerConfig::default(),
            spps: SppsOptions::default(),
            optim: OptimConfig::default(),
            eval: EvalConfig::default(),
            log: LogConfig {
                log_every: 10,
                checkpoint_every: 0,
                checkpoint_every_epochs: 1,
                keep_checkpoints: 2,
            },
            paper: PaperNumbers::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Framework {
    #[default]
    Simclr,
    Mocov2,
}

impl Framework {
    pub fn name(self) -> &'static str {
        match self {
            Framework::Simclr => "simclr",
            Framework::Mocov2 => "mocov2",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// `image-folder` (`<root>/{train,test}/<class>/*`), `cifar10`, `stl10`, … (core `load_splits`).
    pub format: String,
    /// Data folder (filled in by `cargo xtask reproduce spps`).
    pub root: String,
    /// Folder of the evaluation split for `image-folder`.
    pub test_split: String,
    /// Training images used (0 = all), class-balanced.
    pub train_subset: usize,
    /// Test images used (0 = all), class-balanced.
    pub test_subset: usize,
    /// Side of the training views.
    pub image_size: usize,
    /// Side of the evaluation / sampler images (no augmentation).
    pub eval_size: usize,
    /// Shorter side before the centre crop of the evaluation / sampler view. 0 = SimCLR's rule
    /// (`google-research/simclr` `data.py` / `data_util.py`: no crop at ≤ 32 px, else a
    /// centre crop of 0.875 of the side, i.e. `Resize(⌊size·256/224⌋) + CenterCrop(size)`:
    /// 256 → 224 on ImageNet).
    pub eval_resize: usize,
    /// SimCLR views only (MoCo v2 keeps its own recipe): colour-jitter strength `s` of
    /// `google-research/simclr` (brightness / contrast / saturation 0.8·s, hue 0.2·s). Its
    /// README runs CIFAR-10 with 0.5 (the default here) and ImageNet with 1.0.
    pub jitter_strength: f64,
    /// SimCLR views only: Gaussian-blur probability (SimCLR: 0 on CIFAR-10, 0.5 on ImageNet).
    pub blur_p: f64,
    /// Rayon threads of the data pipeline (0 = all cores).
    pub threads: usize,
    pub prefetch: usize,
    /// `image-folder` splits: `auto` streams a folder whose estimated decoded size is above
    /// `stream_above_mib` (ImageNet) and decodes smaller ones into memory; `always` / `never`
    /// force either path (`CONTRAST_STREAM` overrides).
    pub stream: StreamMode,
    /// Threshold of `stream = "auto"`, MiB of decoded RGB.
    pub stream_above_mib: u64,
    /// Streamed JPEGs: decode at 1/2, 1/4 or 1/8 in the DCT domain when every view of the
    /// sample still downsamples from it (faster on large photographs; pixels differ slightly
    /// from torchvision's full decode, see `benches/RESULTS.md`). Off by default.
    pub scaled_decode: bool,
    /// A training or test image that cannot be read or decoded: `stop` (default) ends the run
    /// naming the file; `skip` leaves it out (the next file that decodes stands in for it when
    /// streamed) and counts it in the report (`corrupt_files_skipped`). Applies to the
    /// file-based formats (`image-folder`, `tiny-imagenet`).
    pub on_corrupt: OnCorrupt,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            format: "image-folder".into(),
            root: String::new(),
            test_split: "test".into(),
            train_subset: 0,
            test_subset: 0,
            image_size: 32,
            eval_size: 32,
            eval_resize: 0,
            jitter_strength: 0.5,
            blur_p: 0.0,
            threads: 0,
            prefetch: 3,
            stream: StreamMode::Auto,
            stream_above_mib: DEFAULT_STREAM_ABOVE_MIB,
            scaled_decode: false,
            on_corrupt: OnCorrupt::Stop,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// `resnet18`, `resnet34` or `resnet50`.
    pub arch: String,
    /// `cifar` (3×3 conv, no max-pool) or `imagenet`.
    pub stem: Stem,
    /// Blocks per stage override (empty = the arch's; smoke uses [1, 1, 1, 1]).
    pub layers: Vec<i64>,
    pub zero_init_residual: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: "resnet18".into(),
            stem: Stem::Cifar,
            layers: Vec::new(),
            zero_init_residual: false,
        }
    }
}

/// SimCLR head and loss (head 2048 → 128 with BN; NT-Xent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimclrConfig {
    pub hidden: i64,
    pub out_dim: i64,
    pub head_bn: bool,
    pub temperature: f64,
    /// Factor on the NT-Xent (and its SPPS multi-positive form). `2.0` is google-research/simclr's
    /// `add_contrastive_loss` (`objective.py`: `loss_a + loss_b`, the two views' mean
    /// cross-entropies summed, i.e. twice the mean over the 2N rows; the paper presets);
    /// `1.0` is the mean over the 2N rows (core `NtXent`, solo-learn, lightly; the smoke
    /// preset). With SGD it scales the step like the lr; with LARS it changes the step of the
    /// parameters excluded from adaptation (biases, BN) and the weight decay's share.
    pub loss_scale: f64,
    /// Both views through the network as one batch of 2N (batch-norm statistics over both, as
    /// google-research/simclr's `tf2/model.py` concatenates the views; the paper presets) instead
    /// of one view at a time (solo-learn; the smoke preset). Partner views go through alone.
    pub joint_forward: bool,
}

impl Default for SimclrConfig {
    fn default() -> Self {
        Self {
            hidden: 2048,
            out_dim: 128,
            head_bn: true,
            temperature: 0.5,
            loss_scale: 1.0,
            joint_forward: false,
        }
    }
}

/// The semantic sampler: frozen checkpoint → embeddings of every (un-augmented) training image
/// → exact cosine kNN → kept pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplerConfig {
    /// Which embedding of the frozen model: `backbone` (pooled features) or `projector`.
    pub embedding: String,
    /// Keep neighbour `j` of `i` only when `cos(e_i, e_j) ≥ threshold` (absent = no threshold).
    pub threshold: Option<f64>,
    /// Keep at most the `top_k` most similar neighbours of each image (0 = no cap; then a
    /// threshold is required).
    pub top_k: usize,
    /// Keep `i → j` only when `j → i` is also kept (mutual nearest neighbours).
    pub mutual: bool,
    /// Query rows per similarity block (memory `block × N` floats).
    pub block_size: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            embedding: "backbone".into(),
            threshold: None,
            top_k: 1,
            mutual: false,
            block_size: 1024,
        }
    }
}

/// Training with SPPS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SppsOptions {
    /// Use the pair file (false = the plain framework).
    pub enabled: bool,
    /// Pair file written by `spps sample` (JSON).
    pub pairs: String,
    /// Fraction of the batch's anchors that have a partner which get an extra semantic
    /// positive in a step (1.0 = all of them).
    pub share: f64,
    /// Bins of the per-epoch similarity histogram of the used semantic pairs (over [-1, 1]).
    pub hist_bins: usize,
}

impl Default for SppsOptions {
    fn default() -> Self {
        Self {
            enabled: false,
            pairs: String::new(),
            share: 1.0,
            hist_bins: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub epochs: u64,
    pub batch_size: usize,
    /// `sgd` (SGD + momentum) or `lars` (SimCLR's ImageNet optimiser: core LARS, trust
    /// `lars_trust`, biases and norm parameters excluded from adaptation and decay).
    pub optimizer: String,
    /// SimCLR's peak lr (cosine to `final_lr` after `warmup_epochs` of linear warm-up). MoCo v2
    /// runs use `moco_lr` / `moco_weight_decay` instead.
    pub lr: f64,
    pub final_lr: f64,
    /// Linear warm-up from 0 (SimCLR's ImageNet recipe: 10 epochs).
    pub warmup_epochs: u64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// LARS trust coefficient η (SimCLR: 1e-3).
    pub lars_trust: f64,
    /// MoCo v2's lr per 256 images, scaled linearly with the batch (`main_moco.py`: 0.03 at
    /// batch 256, cosine, no warm-up).
    pub moco_lr: f64,
    /// MoCo v2's weight decay (`main_moco.py`: 1e-4).
    pub moco_weight_decay: f64,
    /// Gradient-norm clip (0 = off).
    pub clip_grad_norm: f64,
}

impl OptimConfig {
    /// `(peak lr, weight decay)` of a framework: SimCLR's `lr` / `weight_decay`, or MoCo v2's
    /// `moco_lr · batch / 256` / `moco_weight_decay`.
    pub fn lr_and_decay(&self, framework: Framework) -> (f64, f64) {
        match framework {
            Framework::Simclr => (self.lr, self.weight_decay),
            Framework::Mocov2 => (
                self.moco_lr * self.batch_size as f64 / 256.0,
                self.moco_weight_decay,
            ),
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            epochs: 800,
            batch_size: 512,
            optimizer: "sgd".into(),
            lr: 0.5,
            final_lr: 0.0,
            warmup_epochs: 0,
            momentum: 0.9,
            weight_decay: 5e-4,
            lars_trust: 1e-3,
            moco_lr: 0.03,
            moco_weight_decay: 1e-4,
            clip_grad_norm: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    pub knn_k: Vec<i64>,
    pub knn_t: f64,
    /// Linear probe on frozen backbone features; 0 = skip.
    pub linear_epochs: usize,
    pub linear_lr: f64,
    pub linear_batch_size: usize,
    pub linear_weight_decay: f64,
    /// Re-encode the training images every epoch through random crops + flips (SimCLR's linear
    /// evaluation: `preprocess_for_train` without colour distortion); `false` = fixed,
    /// un-augmented features (cheap; the smoke preset).
    pub linear_augment: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            knn_k: vec![20, 200],
            knn_t: 0.1,
            linear_epochs: 100,
            linear_lr: 0.1,
            linear_batch_size: 256,
            linear_weight_decay: 0.0,
            linear_augment: false,
        }
    }
}

/// Published numbers (abstracts of arXiv 2306.16122 v1 / v3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PaperNumbers {
    pub note: String,
    /// Linear top-1 gain of SPPS over the vanilla framework (ImageNet: +4.18 SimCLR, +4.1 MoCo-v2).
    pub linear_delta: Option<f64>,
}
