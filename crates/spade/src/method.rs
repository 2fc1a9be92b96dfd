//! The pretraining on the shared [`Trainer`](contrast_core::train::Trainer): [`SpadePretrain`]
//! is the `impl Method` of `pretrain.method` = `simclr` | `spade-global` | `spade`.
//!
//! Each step's crops (and, for `spade`, its local voxel pairs) are drawn per step by a
//! [`PerStep`] source whose ChaCha stream is seeded with `derive_seed(seed, "crops", step)`
//! (the crops' noise comes from libtorch, which the Trainer reseeds per step), so a resumed run
//! draws the same batches. At the end the evaluation writes the transferable weights:
//! `encoder.safetensors` (`encoder.*`) and, for `spade`, `encoder_decoder.safetensors`
//! (`encoder.*` plus the local term's decoder as `decoder.*`, all of it but `out_conv`).

use crate::config::SpadeConfig;
use crate::pretrain::{
    optimizer, pool, sample_crops, sample_local, step_terms, CropBatch, LocalSamples, PoolVolume,
    PretrainNet,
};
use anyhow::{bail, Context, Result};
use contrast_core::optim::schedule::Schedule;
use contrast_core::tensors::{load_into, named_variables, Named};
use contrast_core::train::{
    derive_seed, Batches, Checkpoint, Evaluation, Length, LogConfig, Losses, Method, Optimization,
    PerStep, Preset, RunCtx, RuntimeConfig, StepCtx,
};
use fba_net::method::save_weights;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::rc::Rc;
use tch::Device;

/// `<run>/encoder.safetensors`: the pretrained `encoder.*` variables.
pub const ENCODER: &str = "encoder.safetensors";
/// `<run>/encoder_decoder.safetensors` (`spade` only): `encoder.*` and `decoder.*`.
pub const ENCODER_DECODER: &str = "encoder_decoder.safetensors";

/// What a pretraining run reports as its metric (it has no score of its own).
const METRIC: &str = "none (pretraining; `spade reproduce` fine-tunes and scores it)";

/// Crop-based 3-D contrastive pretraining of a V-Net encoder (`pretrain.method`).
pub struct SpadePretrain {
    cfg: SpadeConfig,
    device: Device,
    pub net: PretrainNet,
    pool: Rc<Vec<PoolVolume>>,
}

impl SpadePretrain {
    /// Pretraining on volumes that are already loaded (the benches' synthetic pool): what
    /// [`Method::build`] does after loading the LA training cases and `extra_nifti`.
    pub fn with_pool(cfg: &SpadeConfig, device: Device, pool: Vec<PoolVolume>) -> Result<Self> {
        Self::check(cfg)?;
        let net = PretrainNet::new(cfg, device)?;
        Ok(Self {
            cfg: cfg.clone(),
            device,
            net,
            pool: Rc::new(pool),
        })
    }

    fn check(cfg: &SpadeConfig) -> Result<()> {
        let method = cfg.pretrain.method.as_str();
        if !matches!(method, "simclr" | "spade-global" | "spade") {
            bail!("pretrain.method `{method}`: use simclr, spade-global or spade");
        }
        if cfg.pretrain.volumes < 2 {
            bail!("pretrain.volumes must be ≥ 2 (negatives come from other crops)");
        }
        Ok(())
    }

    fn with_local(&self) -> bool {
        self.cfg.pretrain.method == "spade"
    }
}

impl Method for SpadePretrain {
    type Config = SpadeConfig;
    /// The step's crops and, for `spade`, its corresponding voxel pairs.
    type Batch = (CropBatch, Option<LocalSamples>);
    const NAME: &'static str = "spade";

    fn runtime(cfg: &SpadeConfig) -> &RuntimeConfig {
        &cfg.runtime
    }
    fn log(cfg: &SpadeConfig) -> &LogConfig {
        &cfg.log
    }
    fn length(cfg: &SpadeConfig) -> Length {
        Length::Steps(cfg.pretrain.steps)
    }

    fn build(cfg: &SpadeConfig, device: Device) -> Result<Self> {
        // the settings first: a wrong one fails before the volumes load
        Self::check(cfg)?;
        Self::with_pool(cfg, device, pool(cfg)?)
    }

    fn data(&mut self) -> Result<Box<dyn Batches<Batch = Self::Batch>>> {
        let (cfg, pool, with_local) = (self.cfg.clone(), self.pool.clone(), self.with_local());
        let seed = cfg.runtime.seed;
        Ok(Box::new(PerStep {
            // crops are drawn with replacement: an "epoch" is the pool over the volumes per step
            per_epoch: (pool.len() / cfg.pretrain.volumes).max(1) as u64,
            draw: move |step: u64| {
                let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, "crops", step));
                let batch = sample_crops(&cfg, &pool, &mut rng)?;
                let local = if with_local {
                    Some(sample_local(&cfg, &batch, &mut rng)?)
                } else {
                    None
                };
                Ok((batch, local))
            },
        }))
    }

    fn optimization(&self, _total: u64, _per_epoch: u64) -> Result<Optimization> {
        Ok(Optimization {
            optimizer: Box::new(optimizer(&self.cfg, &self.net)?),
            lr: Schedule::Constant {
                value: self.cfg.pretrain.lr,
            },
            weight_decay: None,
            clip: None,
        })
    }

    fn variant(&self) -> String {
        self.cfg.pretrain.method.clone()
    }
    fn preset(cfg: &SpadeConfig) -> Option<Preset> {
        Some(Preset {
            variant: cfg.pretrain.method.clone(),
            metric: METRIC.into(),
        })
    }
    fn samples_per_step(&self) -> u64 {
        2 * self.cfg.pretrain.volumes as u64
    }
    fn describe_data(&self) -> String {
        let p = &self.cfg.pretrain;
        format!(
            "{} pretraining volumes (LA train cases, labels unused{}); {} volumes × 2 crops of {:?} per step",
            self.pool.len(),
            if p.extra_nifti.is_empty() {
                String::new()
            } else {
                format!(", + {} NIfTI", p.extra_nifti.len())
            },
            p.volumes,
            p.crop
        )
    }
    fn describe_model(&self) -> String {
        let f = self.cfg.finetune.model.n_filters;
        format!(
            "V-Net encoder width {f} + head {}→{}→{}{}",
            16 * f,
            16 * f,
            self.cfg.pretrain.proj_dim,
            if self.with_local() {
                format!(" + local decoder ({} channels)", self.cfg.local.dim)
            } else {
                String::new()
            }
        )
    }

    fn step(&mut self, (batch, local): Self::Batch, _ctx: &StepCtx) -> Result<Losses> {
        let (total, global, local) =
            step_terms(&self.cfg, &self.net, &batch, local.as_ref(), self.device)?;
        let mut terms = vec![
            ("total", total.double_value(&[])),
            ("global", global.double_value(&[])),
        ];
        if let Some(l) = local {
            terms.push(("local", l.double_value(&[])));
        }
        Ok(Losses::new(total, terms))
    }

    /// N ranks train what one process trains on the global batch (Spade has no code; this is
    /// our choice): every rank draws the global batch's crops and embeds those of its share of
    /// the volumes; the global loss runs over every rank's embeddings and the local loss over
    /// every rank's sampled features, both gathered with gradient.
    fn distributed(_cfg: &SpadeConfig) -> contrast_core::train::Distributed {
        contrast_core::train::Distributed::GlobalBatch
    }

    /// On, so that N ranks see one process's BatchNorm statistics (no official code).
    fn official_sync_batch_norm(_cfg: &SpadeConfig) -> bool {
        true
    }

    fn state(&self) -> Vec<(String, Named)> {
        vec![("model".into(), named_variables(&self.net.vs))]
    }
    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        load_into(&self.net.vs, ck.group("model")?, true).context("restoring the model")
    }

    /// Pretraining has no score of its own (the fine-tunes of `spade reproduce` carry the
    /// Dice): write the weights the fine-tune starts from.
    fn evaluate(&mut self, run: &RunCtx) -> Result<Evaluation> {
        let all = named_variables(&self.net.vs);
        let enc: Named = all
            .iter()
            .filter(|(n, _)| n.starts_with("encoder."))
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        let encoder = run.dir.join(ENCODER);
        save_weights(&encoder, &enc)?;
        let encoder_decoder = if self.with_local() {
            let mut both = enc;
            both.extend(all.iter().filter_map(|(n, t)| {
                let rest = n.strip_prefix("local.")?;
                (!rest.starts_with("out_conv"))
                    .then(|| (format!("decoder.{rest}"), t.shallow_clone()))
            }));
            let p = run.dir.join(ENCODER_DECODER);
            save_weights(&p, &both)?;
            Some(p)
        } else {
            None
        };
        let p = &self.cfg.pretrain;
        let show = |p: &PathBuf| p.display().to_string();
        Ok(Evaluation::new(METRIC, None)
            .with("stage", "pretraining")
            .with("crop", p.crop)
            .with("volumes_per_step", p.volumes)
            .with("pretraining_volumes", self.pool.len())
            .with("extra_nifti", &p.extra_nifti)
            .with("encoder", show(&encoder))
            .with("encoder_decoder", encoder_decoder.as_ref().map(show)))
    }
}
