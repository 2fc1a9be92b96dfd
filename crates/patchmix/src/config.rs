//! PatchMix configuration (the paper's settings as data: `configs/*.toml`).
//! Defaults are the official CIFAR-10 ViT-T/2 config (`config/pretrain/cifar10_vit_tiny.py`,
//! notes §1c); presets override them.

use contrast_core::data::stream::DEFAULT_STREAM_ABOVE_MIB;
use contrast_core::data::{OnCorrupt, StreamMode};
use contrast_core::train::{LogConfig, RuntimeConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PatchMixConfig {
    pub runtime: RuntimeConfig,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub mix: MixConfig,
    pub optim: OptimConfig,
    pub eval: EvalConfig,
    pub log: LogConfig,
    /// The paper's numbers for this preset (shown beside ours; never used in training).
    pub paper: PaperNumbers,
}

impl Default for PatchMixConfig {
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            data: DataConfig::default(),
            model: ModelConfig::default(),
            mix: MixConfig::default(),
            optim: OptimConfig::default(),
            eval: EvalConfig::default(),
            // a metrics line every 10 steps, a checkpoint at the end of every epoch (and of the
            // run), the last two kept
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// `image-folder` (`<root>/{train,test}/<class>/*.jpg`, e.g. the CIFAR-10 JPEG export, or
    /// ImageNet as `<root>/{train,val}` — see `test_split`), `cifar10` or `cifar100` (official
    /// binary batches under `<root>`).
    pub format: String,
    /// Data folder; empty = `$CONTRAST_DATA/<name>` or `datasets/<name>` (see `cargo xtask
    /// reproduce`, which fills it in).
    pub root: String,
    /// Folder of the evaluation split for `image-folder` (`test`; ImageNet: `val`).
    pub test_split: String,
    /// Training images used (0 = all): a class-balanced subset, the same for a given seed.
    pub train_subset: usize,
    /// Test images used for evaluation (0 = all), class-balanced.
    pub test_subset: usize,
    /// Side of the training crops.
    pub image_size: usize,
    /// RandomResizedCrop lower scale (CIFAR 0.1, ImageNet 0.35).
    pub min_scale: f64,
    /// Extra local crops per image (ImageNet multi-crop: 8), each a query against both keys,
    /// unmixed and mixed.
    pub local_crops: usize,
    pub local_size: usize,
    pub local_scale: (f64, f64),
    /// Rayon threads of the data pipeline (0 = all cores).
    pub threads: usize,
    /// Batches prepared ahead.
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
            min_scale: 0.1,
            local_crops: 0,
            local_size: 96,
            local_scale: (0.05, 0.35),
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
    /// `vit_tiny`, `vit_small` or `vit_base`.
    pub arch: String,
    pub patch_size: i64,
    /// Override the number of blocks (0 = the architecture's 12); smoke runs use fewer.
    pub depth: i64,
    /// Drop-path rate of the online encoder (the momentum encoder has none).
    pub drop_path: f64,
    pub proj_layers: usize,
    pub pred_layers: usize,
    pub mlp_dim: i64,
    pub out_dim: i64,
    /// Momentum key encoder (ViT-S/B configs); otherwise the stop-gradient online encoder.
    pub use_momentum: bool,
    /// Start of the cosine EMA momentum schedule (→ 1).
    pub momentum_start: f64,
    /// How the momentum follows its cosine: `"official"` = what `main_pretrain.train_epoch` does,
    /// one value per epoch, `m(e + 1/I)` (its loop variable `i` is rebound by the parameter-group
    /// loop, so `adjust_moco_momentum(epoch + i / num_iter)` always sees `i = 1`); `"per-step"` =
    /// `m(t / I)` at every step, as MoCo v3 and the paper's description. Either way the update
    /// comes before the step's forward passes, as in the official loop.
    pub momentum_schedule: String,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: "vit_tiny".into(),
            patch_size: 2,
            depth: 0,
            drop_path: 0.1,
            proj_layers: 3,
            pred_layers: 2,
            mlp_dim: 4096,
            out_dim: 256,
            use_momentum: false,
            momentum_start: 0.996,
            momentum_schedule: "official".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixConfig {
    /// Off = the no-mix baseline: identity targets, so the objective becomes the symmetric
    /// MoCo-v3 loss `CE(q1,k2) + CE(q2,k1)`.
    pub enabled: bool,
    /// Sources per mixed image (`mix_n`).
    pub m: i64,
    /// Mixing probability (`mix_p`).
    pub p: f64,
    /// Label smoothing of the soft targets.
    pub smoothing: f64,
    /// Label smoothing of the unmixed source target (`CE(q1, k2, ·)` and the unmixed local
    /// crops). Official: 0.1, the default of the `no_mixer = PatchMixer(mix_p=0.0, mix_n=1)`
    /// that `main_pretrain.py` builds for it, independent of `smoothing`.
    pub src_smoothing: f64,
}

impl Default for MixConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            m: 2,
            p: 1.0,
            smoothing: 0.0,
            src_smoothing: 0.1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub epochs: u64,
    pub warmup_epochs: u64,
    pub batch_size: usize,
    /// lr = base_lr · batch_size / 256.
    pub base_lr: f64,
    pub min_lr: f64,
    /// Cosine-increasing weight decay from `wd_start` to `wd_end` (none on 1-D parameters).
    pub wd_start: f64,
    pub wd_end: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub temperature: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            epochs: 800,
            warmup_epochs: 100,
            batch_size: 512,
            base_lr: 2e-3,
            min_lr: 1e-6,
            wd_start: 0.02,
            wd_end: 0.2,
            beta1: 0.9,
            beta2: 0.999,
            temperature: 0.2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// kNN neighbourhood sizes (official: 10, 20, 100, 200; the first is the headline).
    pub knn_k: Vec<i64>,
    pub knn_t: f64,
    /// kNN every this many epochs during training (0 = only at the end).
    pub knn_every: u64,
    /// Evaluation resize before the centre crop (official `Resize(⌊size·256/224⌋)` +
    /// `CenterCrop(size)`: 36 → 32 on CIFAR, 256 → 224 on ImageNet). 0 = that official value;
    /// `data.image_size` = no crop (resize the whole image).
    pub resize: usize,
    /// Linear probe epochs on frozen features (0 = skip).
    pub linear_epochs: usize,
    /// `true` (official `main_linear.py`): every epoch, the training images are augmented with
    /// `RandomResizedCrop(size, scale = linear_min_scale..1, bicubic)` + horizontal flip and
    /// passed through the frozen encoder. `false`: the probe trains on the evaluation-transform
    /// features, computed once (one encoder pass instead of `linear_epochs`; for CPU runs).
    pub linear_augment: bool,
    /// Lower bound of the probe's RandomResizedCrop scale (torchvision default 0.08).
    pub linear_min_scale: f64,
    /// Linear probe lr = base · batch / 256 (official ViT-T 0.05 at batch 256).
    pub linear_base_lr: f64,
    pub linear_batch_size: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            knn_k: vec![10, 20, 100, 200],
            knn_t: 0.07,
            knn_every: 0,
            resize: 0,
            linear_epochs: 100,
            linear_augment: true,
            linear_min_scale: 0.08,
            linear_base_lr: 0.05,
            linear_batch_size: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PaperNumbers {
    pub dataset: String,
    pub knn: Option<f64>,
    pub linear: Option<f64>,
    pub finetune: Option<f64>,
}
