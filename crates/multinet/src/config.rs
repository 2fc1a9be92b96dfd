//! MNCLGLF configuration (the released settings as data: `configs/*.toml`). Defaults are the
//! official `config.yaml` (notes §3c): ResNet-18 (ImageNet stem, zero-init residual) at 224 px,
//! projector 512→2048→2048→2048 (BN), predictor 2048→512→2048, EMA 0.99, bank 16384, τ = 1,
//! SGD lr 0.1 / momentum 0.9 / wd 1e-4, cosine (constant predictor lr), clip 1.0, 200 epochs,
//! batch 256.

use crate::loss::LossConfig;
use contrast_core::data::stream::DEFAULT_STREAM_ABOVE_MIB;
use contrast_core::data::{OnCorrupt, StreamMode};
use contrast_core::eval::linear::ProbeOptimizer;
use contrast_core::nn::resnet::Stem;
use contrast_core::train::{LogConfig, RuntimeConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MultinetConfig {
    /// `mnclglf` (the method) or `simclr` (the plain-SimCLR baseline of the same harness).
    pub method: Method,
    pub runtime: RuntimeConfig,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub local: LocalConfig,
    pub loss: LossConfig,
    pub simclr: SimclrConfig,
    pub optim: OptimConfig,
    pub eval: EvalConfig,
    pub log: LogConfig,
    /// The paper's numbers for this preset (shown beside ours; never used in training).
    pub paper: PaperNumbers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    #[default]
    Mnclglf,
    Simclr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// `image-folder` (`<root>/{train,test}/<class>/*`), `cifar10` or `cifar100` (binary batches).
    pub format: String,
    /// Data folder (filled in by `cargo xtask reproduce multinet`).
    pub root: String,
    /// Folder of the evaluation split for `image-folder`.
    pub test_split: String,
    /// Training images used (0 = all), class-balanced.
    pub train_subset: usize,
    /// Test images used (0 = all), class-balanced.
    pub test_subset: usize,
    /// Side of the training views (official: 224, CIFAR/Tiny-ImageNet upsampled).
    pub image_size: usize,
    /// Side of the evaluation images (official test: Resize(256) + CenterCrop(224) → 224).
    pub eval_size: usize,
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
            image_size: 224,
            eval_size: 224,
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
    /// `imagenet` (official, 224 px), `cifar` or `cifar_pad2`.
    pub stem: Stem,
    /// Blocks per stage (ResNet-18: [2, 2, 2, 2]).
    pub layers: [i64; 4],
    pub zero_init_residual: bool,
    /// Projector widths after the 512-d backbone feature: hidden, hidden, out (2048, 2048).
    pub proj_hidden: i64,
    pub proj_out: i64,
    /// Predictor bottleneck (512).
    pub pred_hidden: i64,
    /// EMA momentum (constant; 0.99).
    pub ema_momentum: f64,
    /// Nearest-neighbour memory bank rows (16384).
    pub bank_size: i64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            stem: Stem::ImageNet,
            layers: [2, 2, 2, 2],
            zero_init_residual: true,
            proj_hidden: 2048,
            proj_out: 2048,
            pred_hidden: 512,
            ema_momentum: 0.99,
            bank_size: 16384,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// Grid side (`split_num: 2` → 2×2).
    pub split_num: i64,
    /// Cells per combination (`combs: 2` → C(4,2) = 6).
    pub combs: usize,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            split_num: 2,
            combs: 2,
        }
    }
}

/// The plain-SimCLR baseline (same backbone, data, optimiser and schedule; two views).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimclrConfig {
    /// NT-Xent temperature (MNCLGLF's SimCLR copy `other_methods/simclr-pytorch-master`: 0.5).
    pub temperature: f64,
    /// Projection head hidden and output widths (SimCLR CIFAR: 2048 → 128).
    pub hidden: i64,
    pub out_dim: i64,
}

impl Default for SimclrConfig {
    fn default() -> Self {
        Self {
            temperature: 0.5,
            hidden: 2048,
            out_dim: 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub epochs: u64,
    pub batch_size: usize,
    /// SGD lr (no batch scaling in the released config).
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Cosine end value of the backbone/projector lr.
    pub final_lr: f64,
    /// Predictor at a constant `lr` (`WCosCon`); false = predictor follows the cosine too.
    pub constant_predictor_lr: bool,
    /// Gradient-norm clip (0 = off).
    pub clip_grad_norm: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            epochs: 200,
            batch_size: 256,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            final_lr: 0.0,
            constant_predictor_lr: true,
            clip_grad_norm: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// kNN monitor (k values, temperature; cosine similarity).
    pub knn_k: Vec<i64>,
    pub knn_t: f64,
    /// Linear probe on frozen backbone features (BN in eval mode); 0 = skip.
    pub linear_epochs: usize,
    pub linear_lr: f64,
    pub linear_batch_size: usize,
    pub linear_weight_decay: f64,
    /// The probe's optimiser: `lars` (released `config_finetune.yaml`: LARS with
    /// `implementation: PyTorch`, η 1e-3 (its default), momentum 0.9, wd 0, cosine per epoch) or
    /// `sgd`.
    pub linear_optimizer: ProbeOptimizer,
    /// Re-encode the training images every epoch through RandomResizedCrop + flip (the released
    /// `linear.py` trains on augmented images through the frozen network); `false` = one pass
    /// of fixed, un-augmented features (cheap, for CPU runs).
    pub linear_augment: bool,
    /// Shorter side before the centre crop of the evaluation view (0 = no crop; the released
    /// probe tests on Resize(256) + CenterCrop(224)).
    pub eval_resize: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            knn_k: vec![20, 200],
            knn_t: 0.1,
            linear_epochs: 90,
            linear_lr: 0.8,
            linear_batch_size: 256,
            linear_weight_decay: 0.0,
            linear_optimizer: ProbeOptimizer::Lars,
            linear_augment: false,
            eval_resize: 0,
        }
    }
}

/// The README's linear top-1 / top-5 for MNCLGLF and SimCLR on this preset's data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PaperNumbers {
    pub dataset: String,
    pub mnclglf_top1: Option<f64>,
    pub mnclglf_top5: Option<f64>,
    pub simclr_top1: Option<f64>,
    pub simclr_top5: Option<f64>,
}
