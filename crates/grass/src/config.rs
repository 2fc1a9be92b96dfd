//! GraSS configuration (`configs/*.toml`). Defaults are the official pre-training config
//! (`grass_1gpu_resnet_b256.yaml`, `grass-claires.md` §1.2–1.5) and the group's downstream
//! protocol (FALSE's MMSeg configs, §1.8); presets override them.

use contrast_core::train::{LogConfig, RuntimeConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrassConfig {
    pub runtime: RuntimeConfig,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub pretrain: PretrainConfig,
    pub finetune: FinetuneConfig,
    pub log: LogConfig,
    /// The paper's claims for this preset (shown beside ours; never used in training).
    pub paper: PaperNumbers,
}

impl Default for GrassConfig {
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            data: DataConfig::default(),
            model: ModelConfig::default(),
            pretrain: PretrainConfig::default(),
            finetune: FinetuneConfig::default(),
            // both stages log and checkpoint by steps
            log: LogConfig {
                log_every: 10,
                checkpoint_every: 1000,
                checkpoint_every_epochs: 0,
                keep_checkpoints: 2,
            },
            paper: PaperNumbers::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// `dubai`, `potsdam`, `loveda-urban` or `loveda-rural` (see [`crate::data`]).
    pub format: String,
    /// Data folder (empty: filled in by `cargo xtask reproduce grass`).
    pub root: String,
    /// Dubai only: every `test_every`-th scene (sorted by path) is a test scene.
    pub test_every: usize,
    /// Dubai only: use the first `max_scenes` scenes (sorted by path; 0 = all). The smoke preset
    /// takes 36, tiles 1–4 of the 8, which is what the development copy holds.
    pub max_scenes: usize,
    /// Patch size and stride when tiling scenes (GraSS's patch size is unknown; the sister
    /// repo's downstream crops are 256).
    pub tile_size: usize,
    pub tile_stride: usize,
    /// Pre-training view size (official 224).
    pub crop_size: usize,
    /// Gaussian-blur probability of the SimCLR views (official 0.5).
    pub blur_p: f64,
    /// Label value for ignored pixels.
    pub ignore_index: i64,
    /// Rayon threads for reading rasters and augmenting (0 = all cores).
    pub threads: usize,
    pub prefetch: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            format: "dubai".into(),
            root: String::new(),
            test_every: 4,
            max_scenes: 0,
            tile_size: 256,
            tile_stride: 256,
            crop_size: 224,
            blur_p: 0.5,
            ignore_index: 255,
            threads: 0,
            prefetch: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// `resnet50` (paper) or `resnet18` (CPU smoke).
    pub arch: String,
    /// ReLU between the two head layers. `false` (every preset) is the official head: VISSL's
    /// `MLP(dims=[2048, 2048], use_relu=True)` skips the ReLU of its last (only) layer
    /// (`skip_last_layer_relu_bn`, `vissl/models/heads/mlp.py`), so the head is linear.
    pub head_relu: bool,
    pub out_dim: i64,
    /// Blocks per stage of the trunk; unset: the arch's (`resnet50` [3, 4, 6, 3], `resnet18`
    /// [2, 2, 2, 2]). The official-code comparisons train `[1, 1, 1, 1]` (a one-block-per-stage
    /// Bottleneck ResNet at full width).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<[usize; 4]>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: "resnet50".into(),
            head_relu: false,
            out_dim: 128,
            layers: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// `grass` (warm-up then gradient-guided sampling) or `simclr` (the warm-up method for all
    /// epochs: the baseline).
    pub method: String,
    /// Total epochs (official 350).
    pub epochs: u64,
    /// Epochs of plain SimCLR before gradient-guided sampling starts. REQUIRED: the paper and
    /// code do not give it (`grass-claires.md` §1.6).
    pub warmup_epochs: Option<u64>,
    /// Images per step (2× views); official 256.
    pub batch_size: usize,
    /// NT-Xent temperature (official 0.5).
    pub temperature: f64,
    /// Threshold between min and max of the heat map (official `control_ratio` 0.5).
    pub threshold_ratio: f32,
    /// Multiplies the official absolute LR schedule (1.0 = exact).
    pub lr_scale: f64,
    pub momentum: f64,
    /// Weight decay (official 1e-6; BN parameters not decayed, biases decayed).
    pub weight_decay: f64,
    /// LARC trust coefficient (official 0.001, `clip: False`).
    pub trust_coefficient: f64,
    /// Number of images whose heat-map boxes are saved as PNG overlays at the end.
    pub overlays: usize,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            method: "grass".into(),
            epochs: 350,
            warmup_epochs: None,
            batch_size: 256,
            temperature: 0.5,
            threshold_ratio: 0.5,
            lr_scale: 1.0,
            momentum: 0.9,
            weight_decay: 1e-6,
            trust_coefficient: 0.001,
            overlays: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneConfig {
    /// Pretraining run folder whose newest checkpoint gives the encoder (empty: random init).
    pub encoder: String,
    /// `frozen` (the group's protocol: frozen_stages=4, norm_eval) or `finetune`.
    pub mode: String,
    /// Iterations (group protocol 1300).
    pub iters: u64,
    pub batch_size: usize,
    /// SGD lr (0.01), momentum 0.9, weight decay 5e-4, poly power 0.9 down to `min_lr` 1e-4.
    pub lr: f64,
    pub min_lr: f64,
    pub power: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Fraction of the training tiles with labels (seeded subset); 1.0 = all.
    pub label_fraction: f64,
    /// Output stride of the encoder in the fine-tune: 8 (MMSeg's `-d8` dilated ResNet: strides
    /// (1, 2, 1, 1), dilations (1, 1, 2, 4), the group's DeepLabV3+ configs), 16 or 32 (the
    /// trunk as pretrained; the smoke preset, for CPU cost). Same weights at every stride.
    pub output_stride: i64,
    /// DeepLabV3+ widths and ASPP rates (MMSeg 512, 48, [1, 12, 24, 36], dropout 0.1).
    pub channels: i64,
    pub c1_channels: i64,
    pub dilations: Vec<i64>,
    pub dropout: f64,
    /// Random square crop of the training tiles (0 = the whole tile; MMSeg RandomCrop).
    pub crop_size: usize,
    /// Horizontal and vertical flips of the training tiles (p = 0.5 each).
    pub flip: bool,
    /// Evaluation tile size (scenes are predicted tile by tile, each pixel counted once).
    pub eval_tile: usize,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            encoder: String::new(),
            mode: "frozen".into(),
            iters: 1300,
            batch_size: 16,
            lr: 0.01,
            min_lr: 1e-4,
            power: 0.9,
            momentum: 0.9,
            weight_decay: 5e-4,
            label_fraction: 1.0,
            channels: 512,
            c1_channels: 48,
            output_stride: 8,
            dilations: vec![1, 12, 24, 36],
            dropout: 0.1,
            crop_size: 0,
            flip: true,
            eval_tile: 512,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PaperNumbers {
    pub dataset: String,
    /// The abstract's claim: average / maximum mIoU gain of GraSS over the baselines (points).
    pub avg_gain: Option<f64>,
    pub max_gain: Option<f64>,
}
