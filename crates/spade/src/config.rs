//! Spade configuration. Only the abstract of the paper is available, so every choice below is
//! ours (defaults documented here and in the README's "deviations and unknowns").

use contrast_core::train::{LogConfig, RuntimeConfig};
use fba_net::config::FbaNetConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpadeConfig {
    pub runtime: RuntimeConfig,
    /// The pretraining's logging and checkpoint cadence, in steps (the fine-tune has its own,
    /// `finetune.log`).
    pub log: LogConfig,
    pub pretrain: PretrainConfig,
    pub global: GlobalSettings,
    pub local: LocalSettings,
    /// The downstream fine-tune: FBA-Net's supervised V-Net training on the LA data (its
    /// `data.*` also names the volumes the pretraining reads: the train list, labels unused).
    /// Its Dice weight `finetune.loss.lambda_seg` defaults to 1, as FBA-Net's supervised
    /// baseline (0.5 is FBA-Net+'s `--lamda`, which weighs Dice against its other terms).
    pub finetune: FbaNetConfig,
    pub paper: PaperNote,
}

impl Default for SpadeConfig {
    fn default() -> Self {
        let mut finetune = FbaNetConfig::default();
        finetune.loss.lambda_seg = 1.0;
        Self {
            runtime: RuntimeConfig::default(),
            log: LogConfig {
                log_every: 5,
                checkpoint_every: 50,
                checkpoint_every_epochs: 0,
                keep_checkpoints: 3,
            },
            pretrain: PretrainConfig::default(),
            global: GlobalSettings::default(),
            local: LocalSettings::default(),
            finetune,
            paper: PaperNote::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// `simclr` (twins only), `spade-global` (spatial positives / negatives), `spade`
    /// (global + local dense term).
    pub method: String,
    pub steps: u64,
    /// Volumes per batch; each gives two overlapping crops (2·volumes crops).
    pub volumes: usize,
    /// Crop size (x, y, z); odd quarter turns only when x = y.
    pub crop: [i64; 3],
    /// Largest shift of the second crop against the first, as a fraction of the crop (< 1 keeps
    /// them overlapping).
    pub max_shift: f64,
    /// Normalised frame of the crop positions: `volume` or `body` (bounding box of voxels above
    /// `body_threshold`).
    pub frame: String,
    pub body_threshold: f64,
    /// Additive Gaussian noise σ and multiplicative intensity jitter (±) per crop.
    pub noise: f64,
    pub intensity: f64,
    /// Projection head width (global scope).
    pub proj_dim: i64,
    /// AdamW learning rate (constant) and weight decay (not on biases and norms).
    pub lr: f64,
    pub weight_decay: f64,
    /// Extra unlabelled NIfTI volumes for the pretraining pool (z-scored per volume), besides
    /// the LA training cases, e.g. the MNI152 templates (`*.nii.gz`).
    pub extra_nifti: Vec<String>,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            method: "spade".into(),
            steps: 200,
            volumes: 4,
            crop: [32, 32, 32],
            max_shift: 0.5,
            frame: "body".into(),
            body_threshold: 0.0,
            noise: 0.1,
            intensity: 0.1,
            proj_dim: 64,
            lr: 1e-3,
            weight_decay: 1e-4,
            extra_nifti: vec![],
        }
    }
}

/// `contrast_core::spatial_contrast::GlobalConfig` as config values (used by `spade-global` and
/// `spade`; `simclr` keeps only the temperature).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GlobalSettings {
    pub temperature: f64,
    pub cross_volume_radius: f64,
    pub negative_radius: f64,
    pub weight_power: f64,
    pub far_radius: f64,
}

impl Default for GlobalSettings {
    fn default() -> Self {
        Self {
            temperature: 0.1,
            cross_volume_radius: 0.1,
            negative_radius: 0.15,
            weight_power: 1.0,
            far_radius: 0.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalSettings {
    /// Weight of the local term in `spade`.
    pub weight: f64,
    /// Voxel pairs sampled per crop pair.
    pub samples: usize,
    /// Feature width of the local (decoder) head.
    pub dim: i64,
    pub temperature: f64,
    /// Negatives closer than this many voxels (volume coordinates) are dropped.
    pub negative_radius: f64,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            weight: 1.0,
            samples: 64,
            dim: 16,
            temperature: 0.1,
            negative_radius: 4.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PaperNote {
    pub note: String,
}
