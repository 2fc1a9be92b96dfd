//! A small, complete contrastive method on synthetic data: the minimal [`Method`], the core
//! example behind `cargo xtask reproduce toy`, and the subject of the harness tests.
//!
//! Data: `clusters` Gaussian blobs in `dim` dimensions (centres fixed by the seed); each step
//! draws `batch` points and two noisy views of each. Model: a two-layer MLP. Objective: InfoNCE
//! between the views' embeddings. In a distributed run (`torchrun`, see [`crate::dist`]) each
//! rank embeds its rows of the global batch and the loss is InfoNCE over the gathered global
//! batch, so that the run computes what one process computes on the whole batch. Evaluation: nearest-class-mean accuracy (cosine) of held-out
//! points in embedding space, which rises from chance as the embedding separates the blobs.
//!
//! Everything else (run folder, seeding, optimiser schedule, NaN guard, logging, checkpoints,
//! resume, report) is the [`super::Trainer`]'s.

use super::checkpoint::Checkpoint;
use super::log::LogConfig;
use super::runtime::{seed_step, RuntimeConfig};
use super::trainer::{
    Batches, Evaluation, Length, Losses, Method, Optimization, PerStep, Preset, RunCtx, StepCtx,
};
use crate::loss::{info_nce, normalize};
use crate::optim::schedule::Schedule;
use crate::optim::{single_group, Sgd};
use crate::tensors::{load_into, named_variables, Named};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToyConfig {
    pub runtime: RuntimeConfig,
    pub log: LogConfig,
    pub steps: u64,
    pub batch: i64,
    pub dim: i64,
    pub hidden: i64,
    pub out_dim: i64,
    pub clusters: i64,
    /// Spread of the points around their centre.
    pub noise: f64,
    /// Noise added independently to each view.
    pub view_noise: f64,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub temperature: f64,
    /// A BatchNorm1d between the two layers (the harness's SyncBatchNorm test subject).
    pub batch_norm: bool,
}

impl Default for ToyConfig {
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
            log: LogConfig {
                checkpoint_every: 50,
                checkpoint_every_epochs: 0,
                keep_checkpoints: 3,
                ..LogConfig::default()
            },
            steps: 300,
            batch: 128,
            dim: 16,
            hidden: 64,
            out_dim: 16,
            clusters: 8,
            noise: 3.0,
            view_noise: 0.5,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            temperature: 0.2,
            batch_norm: false,
        }
    }
}

/// The toy method: an MLP (`fc1`, `fc2`) trained with InfoNCE on two noisy views.
pub struct Toy {
    cfg: ToyConfig,
    pub vs: nn::VarStore,
    fc1: nn::Linear,
    bn: Option<nn::BatchNorm>,
    fc2: nn::Linear,
    centres: Tensor,
    /// The dtype of the last step's embeddings (`BFloat16` under autocast on CUDA).
    pub step_kind: Option<Kind>,
}

fn sample(c: &ToyConfig, centres: &Tensor, n: i64) -> (Tensor, Tensor) {
    let dev = centres.device();
    let labels = Tensor::randint(c.clusters, [n], (Kind::Int64, dev));
    let x =
        centres.index_select(0, &labels) + Tensor::randn([n, c.dim], (Kind::Float, dev)) * c.noise;
    (x, labels)
}

impl Toy {
    /// `fc2(relu(bn(fc1(x))))`; the BatchNorm (when configured) goes through
    /// [`crate::dist::batch_norm`], synchronised over the ranks when asked.
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.fc1.forward(x);
        let h = match &self.bn {
            Some(bn) => crate::dist::batch_norm(bn, &h, train),
            None => h,
        };
        self.fc2.forward(&h.relu())
    }
}

/// The toy's headline metric.
const METRIC: &str = "nearest-class-mean accuracy";

impl Method for Toy {
    type Config = ToyConfig;
    /// The two views of the step's points.
    type Batch = (Tensor, Tensor);
    const NAME: &'static str = "toy";

    fn runtime(cfg: &ToyConfig) -> &RuntimeConfig {
        &cfg.runtime
    }
    fn log(cfg: &ToyConfig) -> &LogConfig {
        &cfg.log
    }
    fn length(cfg: &ToyConfig) -> Length {
        Length::Steps(cfg.steps)
    }

    fn build(c: &ToyConfig, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let p = vs.root();
        let fc1 = nn::linear(&p / "fc1", c.dim, c.hidden, Default::default());
        let bn = c
            .batch_norm
            .then(|| nn::batch_norm1d(&p / "bn", c.hidden, Default::default()));
        let fc2 = nn::linear(&p / "fc2", c.hidden, c.out_dim, Default::default());
        // fixed by the seed alone, independent of the step
        seed_step(c.runtime.seed, u64::MAX);
        let centres = Tensor::randn([c.clusters, c.dim], (Kind::Float, device)) * 3.0;
        Ok(Self {
            cfg: c.clone(),
            vs,
            fc1,
            bn,
            fc2,
            centres,
            step_kind: None,
        })
    }

    fn data(&mut self) -> Result<Box<dyn Batches<Batch = Self::Batch>>> {
        let (cfg, centres) = (self.cfg.clone(), self.centres.shallow_clone());
        // libtorch is reseeded for the step before its batch is drawn
        Ok(Box::new(PerStep {
            per_epoch: 0,
            draw: move |_step| {
                // every rank draws the global batch (same step seed) and keeps its rows
                let (x, _) = sample(&cfg, &centres, cfg.batch);
                let v1 = &x + Tensor::randn_like(&x) * cfg.view_noise;
                let v2 = &x + Tensor::randn_like(&x) * cfg.view_noise;
                let shard = crate::dist::Shard::current();
                shard.local_batch(cfg.batch as usize)?;
                Ok((shard.rows(&v1), shard.rows(&v2)))
            },
        }))
    }

    fn optimization(&self, _total: u64, _per_epoch: u64) -> Result<Optimization> {
        let c = &self.cfg;
        Ok(Optimization {
            optimizer: Box::new(Sgd::new(
                single_group(&self.vs, c.weight_decay),
                c.lr,
                c.momentum,
                0.0,
                false,
            )?),
            lr: Schedule::Constant { value: c.lr },
            weight_decay: None,
            clip: None,
        })
    }

    fn variant(&self) -> String {
        "toy".into()
    }
    fn preset(_cfg: &ToyConfig) -> Option<Preset> {
        Some(Preset {
            variant: "toy".into(),
            metric: METRIC.into(),
        })
    }
    fn samples_per_step(&self) -> u64 {
        self.cfg.batch as u64
    }
    fn describe_data(&self) -> String {
        format!(
            "synthetic: {} Gaussian blobs in {} dims",
            self.cfg.clusters, self.cfg.dim
        )
    }
    fn describe_model(&self) -> String {
        format!(
            "MLP {}→{}→{}",
            self.cfg.dim, self.cfg.hidden, self.cfg.out_dim
        )
    }

    fn step(&mut self, (v1, v2): Self::Batch, _ctx: &StepCtx) -> Result<Losses> {
        let (z1, z2) = (self.forward(&v1, true), self.forward(&v2, true));
        self.step_kind = Some(z1.kind());
        // the global batch's embeddings (only `z1` and `z2` themselves without a group)
        let (z1, z2) = (
            crate::dist::gather_with_grad(&z1)?,
            crate::dist::gather_with_grad(&z2)?,
        );
        let loss = info_nce(&z1, &z2, self.cfg.temperature);
        Ok(Losses::single("info_nce", loss))
    }

    fn distributed(_cfg: &ToyConfig) -> super::trainer::Distributed {
        super::trainer::Distributed::GlobalBatch
    }

    fn batch_tensors((v1, v2): &Self::Batch) -> Named {
        vec![
            ("view1".into(), v1.shallow_clone()),
            ("view2".into(), v2.shallow_clone()),
        ]
    }

    fn state(&self) -> Vec<(String, Named)> {
        vec![("model".into(), named_variables(&self.vs))]
    }
    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        load_into(&self.vs, ck.group("model")?, true).context("restoring the model")
    }

    /// Nearest class mean (cosine) on held-out points.
    fn evaluate(&mut self, _run: &RunCtx) -> Result<Evaluation> {
        let c = &self.cfg;
        let acc = tch::no_grad(|| {
            seed_step(c.runtime.seed, u64::MAX - 1);
            let (xb, yb) = sample(c, &self.centres, 1024);
            let (xq, yq) = sample(c, &self.centres, 1024);
            let eb = normalize(&self.forward(&xb, false));
            let eq = normalize(&self.forward(&xq, false));
            let means = Tensor::zeros([c.clusters, c.out_dim], (Kind::Float, eb.device()))
                .index_add(0, &yb, &eb);
            let pred = eq
                .matmul(&normalize(&means).transpose(0, 1))
                .argmax(1, false);
            pred.eq_tensor(&yq)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        });
        Ok(Evaluation::new(METRIC, Some(acc)).with("chance", 1.0 / c.clusters as f64))
    }
}
