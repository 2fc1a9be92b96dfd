//! FBA-Net configuration (the official `code/train_3d.py` arguments as data: `configs/*.toml`).
//! Defaults are the official LA recipe (notes §1c–§1e); presets override them.

use contrast_core::train::{LogConfig, RuntimeConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FbaNetConfig {
    pub runtime: RuntimeConfig,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub loss: LossConfig,
    pub optim: OptimConfig,
    pub eval: EvalConfig,
    /// Logging and checkpoint cadence in iterations (no epoch cadence: the two-stream sampler's
    /// "epoch" is only the labelled set over its batch share).
    pub log: LogConfig,
    /// The paper's numbers for this preset (printed beside ours; never used in training).
    pub paper: PaperNumbers,
}

impl Default for FbaNetConfig {
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            data: DataConfig::default(),
            model: ModelConfig::default(),
            loss: LossConfig::default(),
            optim: OptimConfig::default(),
            eval: EvalConfig::default(),
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
    /// LA root holding `train.list`, `test.list` and `2018LA_Seg_Training Set/`; empty = filled
    /// in by `cargo xtask reproduce fba-net` (the development cases or `datasets/la-heart`).
    pub root: String,
    pub train_list: String,
    pub test_list: String,
    /// Labelled cases = the first `labeled` ids of the train list (`labeled_idxs = range(labelnum)`).
    pub labeled: usize,
    /// Train cases used (0 = the whole list; the official `max_samples` = 80).
    pub max_samples: usize,
    /// Test cases evaluated (0 = the whole list).
    pub max_test: usize,
    /// Training patch `(x, y, z)` (LA 112×112×80).
    pub patch: [usize; 3],
    /// Labelled samples per batch (2).
    pub labeled_bs: usize,
    /// Samples per batch (4 = 2 labelled + 2 unlabelled).
    pub batch_size: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            root: String::new(),
            train_list: "train.list".into(),
            test_list: "test.list".into(),
            labeled: 16,
            max_samples: 0,
            max_test: 0,
            patch: [112, 112, 80],
            labeled_bs: 2,
            batch_size: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// `fba-net+` (3 decoders: transposed conv / trilinear / nearest, consistency + contrast),
    /// `fba-net` (1 decoder, Dice + contrast, no consistency: the deleted `train_fba.py`), or
    /// `supervised` (1 decoder, Dice on labelled cases only: the V-Net baseline).
    pub variant: String,
    /// Width of the first V-Net stage (16).
    pub n_filters: i64,
    /// MLP width of the fg/bg projections (`--dim 128`).
    pub dim: i64,
    /// `Dropout3d` rate on x5 and x9 in training (0.5; `has_dropout=True`).
    pub dropout: f64,
    /// Initial weights (safetensors) for the variables whose names they contain, e.g. an
    /// `encoder.*` set from a self-supervised pretraining (Spade); empty = random init.
    pub init: String,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            variant: "fba-net+".into(),
            n_filters: 16,
            dim: 128,
            dropout: 0.5,
            init: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// λ on the Dice term (`--lamda 0.5`). The deleted single-decoder `train_fba.py` used 1:
    /// pass `--set loss.lambda_seg=1` with `model.variant="fba-net"`; `reproduce` sets 1 for the
    /// supervised baseline.
    pub lambda_seg: f64,
    /// Weight on cross entropy over the labelled voxels (0 in FBA-Net; 0.5 with `lambda_seg`
    /// 0.5 is UA-MT's supervised baseline, `loss = 0.5·(CE + Dice)` in its `train_LA.py`).
    pub ce_weight: f64,
    /// `fba-net` (FBA-Net's `Binary_dice_loss`) or `ua-mt` (UA-MT's `dice_loss`: squared sums).
    pub dice: crate::loss::DiceForm,
    /// Maximum consistency weight (`--consistency 1`).
    pub consistency: f64,
    /// Ramp-up length in "epochs" of `rampup_every` iterations (`--consistency_rampup 40`).
    pub consistency_rampup: f64,
    /// Iterations per ramp-up "epoch" (`iter_num // 150`).
    pub rampup_every: u64,
    /// Sharpening temperature (`--temperature 0.1`).
    pub temperature: f64,
    /// Weight on the contrastive term (1).
    pub contrast: f64,
    /// SimMax rank α (0.25) and SimMin rank α (2.5).
    pub alpha_max: f64,
    pub alpha_min: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            lambda_seg: 0.5,
            ce_weight: 0.0,
            dice: crate::loss::DiceForm::FbaNet,
            consistency: 1.0,
            consistency_rampup: 40.0,
            rampup_every: 150,
            temperature: 0.1,
            contrast: 1.0,
            alpha_max: 0.25,
            alpha_min: 2.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Iterations (`--max_iteration 15000`).
    pub iterations: u64,
    /// Learning rate (`--base_lr 0.01`, constant in `train_3d.py`).
    pub lr: f64,
    /// Step decay: the lr is multiplied by `lr_gamma` every `lr_step` iterations (0 = constant;
    /// UA-MT's `train_LA.py`: 2500 and 0.1).
    pub lr_step: u64,
    pub lr_gamma: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            iterations: 15_000,
            lr: 0.01,
            lr_step: 0,
            lr_gamma: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Sliding-window stride in voxels (LA: 18, 18, 4).
    pub stride: [usize; 3],
    /// Windows per forward pass (1 in the reference; same result in eval mode).
    pub sw_batch: usize,
    /// Test-set Dice every `every` iterations from `start` on, keeping the best weights
    /// ("best on test", the reference's model selection); 0 = never (last iteration only).
    pub every: u64,
    pub start: u64,
    /// Write `<run>/predictions/<id>_pred.nii.gz` for the final evaluation.
    pub save_predictions: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            stride: [18, 18, 4],
            sw_batch: 1,
            every: 200,
            start: 800,
            save_predictions: false,
        }
    }
}

/// Rows of the paper's LA table (README @ 8aaf916): Dice %, Jaccard %, 95HD vox, ASD vox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PaperNumbers {
    pub setting: String,
    pub rows: Vec<PaperRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PaperRow {
    pub method: String,
    pub dice: f64,
    pub jaccard: f64,
    pub hd95: f64,
    pub asd: f64,
}
