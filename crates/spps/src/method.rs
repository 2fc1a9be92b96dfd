//! SPPS as a core [`Method`]: SimCLR or MoCo-v2 pretraining, with semantic partners when
//! `spps.enabled` (the baseline is the same config with them off), per-epoch pair diagnostics,
//! and the kNN / linear evaluation. The loop, logging, checkpoints and report are core's
//! [`contrast_core::train::Trainer`].

use crate::config::{Framework, SppsConfig};
use crate::model::{backbone_config, Model, Partners};
use crate::sampler::{histogram, PairSet};
use crate::train::{build_optimizer, datasets, lr_schedule, protocol, train_recipe, PartnerPicker};
use anyhow::{bail, ensure, Context, Result};
use contrast_core::data::dataset::Dataset;
use contrast_core::data::pipeline::{Batch, Loader, LoaderConfig};
use contrast_core::tensors::{load_into, named_variables, Named};
use contrast_core::train::{
    Batches, Checkpoint, Evaluation, Length, LogConfig, Losses, Method, Monitor, Optimization,
    Preset, RunCtx, RunReport, RuntimeConfig, StepCtx,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// The headline metric of every SPPS run.
pub const METRIC: &str = "linear top-1 (frozen backbone, last epoch)";

/// `simclr`, `mocov2`, with `+spps` when the semantic pairs are on.
fn variant(cfg: &SppsConfig) -> String {
    format!(
        "{}{}",
        cfg.framework.name(),
        if cfg.spps.enabled { "+spps" } else { "" }
    )
}

/// Diagnostics of the semantic pairs used since the last epoch end (checkpointed, so a run
/// resumed mid-epoch logs the same epoch line).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diag {
    pub anchors: u64,
    pub used: u64,
    pub same: u64,
    pub labelled: u64,
    pub sims: Vec<f32>,
}

/// A SimCLR or MoCo-v2 run, with or without semantic positive pairs.
pub struct Spps {
    cfg: SppsConfig,
    device: Device,
    pub model: Model,
    train_ds: Arc<dyn Dataset>,
    test_ds: Arc<dyn Dataset>,
    train_labels: Vec<i64>,
    pairs: Option<PairSet>,
    picker: Option<PartnerPicker>,
    diag: Diag,
    /// Test embeddings and labels of the last evaluation (the PCA figure).
    query: Option<(Tensor, Tensor)>,
}

impl Spps {
    pub fn config(&self) -> &SppsConfig {
        &self.cfg
    }

    /// A run on data sets and pairs that are already open (the benches' in-memory set): what
    /// [`Method::build`] does after loading `data.*` and, with `spps.enabled`, `spps.pairs`.
    /// The networks are initialised from `runtime.seed` alone.
    pub fn with_data(
        cfg: &SppsConfig,
        device: Device,
        train_ds: Arc<dyn Dataset>,
        test_ds: Arc<dyn Dataset>,
        pairs: Option<PairSet>,
    ) -> Result<Self> {
        if train_ds.len() < cfg.optim.batch_size {
            bail!(
                "the training set ({} images) is smaller than one batch ({})",
                train_ds.len(),
                cfg.optim.batch_size
            );
        }
        if cfg.framework == Framework::Mocov2 {
            cfg.mocov2
                .check_queue(train_ds.len(), cfg.optim.batch_size)
                .context("MoCo v2 queue")?;
        }
        ensure!(
            pairs.is_some() == cfg.spps.enabled,
            "spps.enabled = {} but pairs were {}given",
            cfg.spps.enabled,
            if pairs.is_some() { "" } else { "not " }
        );
        if let Some(p) = &pairs {
            ensure!(
                p.n == train_ds.len(),
                "pair file {} indexes {} images but the training set has {} (same data.* and seed?)",
                cfg.spps.pairs,
                p.n,
                train_ds.len()
            );
        }
        let picker = match &pairs {
            Some(p) => Some(PartnerPicker::new(
                p,
                cfg.spps.share,
                cfg.runtime.seed,
                train_recipe(cfg, 1)?,
            )?),
            None => None,
        };
        let train_labels: Vec<i64> = (0..train_ds.len())
            .map(|i| train_ds.get(i).map(|(_, l)| l))
            .collect::<Result<_>>()?;
        // the networks are initialised from the run seed alone, whatever loading the data did
        tch::manual_seed(cfg.runtime.seed as i64);
        let model = Model::new(cfg, device)?;
        Ok(Self {
            cfg: cfg.clone(),
            device,
            model,
            train_ds,
            test_ds,
            train_labels,
            pairs,
            picker,
            diag: Diag::default(),
            query: None,
        })
    }

    /// The partner views of a batch of data-set `indices` at `step`, as [`Method::step`] draws
    /// them (`None` without SPPS, or when no anchor got a partner).
    pub fn partners(&self, indices: &[i64], step: u64) -> Result<Option<Partners>> {
        let picked = self.pick(indices, step)?;
        Ok(picked
            .and_then(|(_, p)| p.partners)
            .map(|p| p.to_device(self.device)))
    }

    /// The step's partner choice (`None` without SPPS) and the data-set indices of the batch it
    /// was made over. As several ranks, the choice is made over the global batch (every rank's
    /// `local` rows, gathered in rank order), so that it is the one-process choice; each rank
    /// augments the partners of its own rows.
    fn pick(&self, local: &[i64], step: u64) -> Result<Option<(Vec<i64>, crate::train::Picked)>> {
        let Some(p) = &self.picker else {
            return Ok(None);
        };
        let ds = self.train_ds.as_ref();
        let shard = contrast_core::dist::Shard::current();
        if shard.world == 1 {
            return Ok(Some((local.to_vec(), p.pick(ds, local, step)?)));
        }
        let global: Vec<i64> = Vec::try_from(&contrast_core::dist::gather_rows(
            &Tensor::from_slice(local),
        )?)?;
        let rows = shard.range(global.len());
        ensure!(
            rows.len() == local.len(),
            "rank {} holds {} rows of a global batch of {}, expected {}",
            shard.rank,
            local.len(),
            global.len(),
            rows.len()
        );
        let picked = p.pick_rows(ds, &global, step, rows)?;
        Ok(Some((global, picked)))
    }
}

impl Method for Spps {
    type Config = SppsConfig;
    type Batch = Batch;
    const NAME: &'static str = "spps";

    fn runtime(cfg: &SppsConfig) -> &RuntimeConfig {
        &cfg.runtime
    }
    fn log(cfg: &SppsConfig) -> &LogConfig {
        &cfg.log
    }
    fn length(cfg: &SppsConfig) -> Length {
        Length::Epochs(cfg.optim.epochs)
    }

    fn build(cfg: &SppsConfig, device: Device) -> Result<Self> {
        let (train_ds, test_ds) = datasets(cfg)?;
        let pairs = if cfg.spps.enabled {
            ensure!(
                !cfg.spps.pairs.is_empty(),
                "spps.enabled needs spps.pairs (a file from `spps sample`)"
            );
            Some(PairSet::load(Path::new(&cfg.spps.pairs))?)
        } else {
            None
        };
        Self::with_data(cfg, device, train_ds, test_ds, pairs)
    }

    fn data(&mut self) -> Result<Box<dyn Batches<Batch = Batch>>> {
        let c = &self.cfg;
        Ok(Box::new(Loader::new(
            Arc::clone(&self.train_ds),
            train_recipe(c, 2)?,
            LoaderConfig {
                batch_size: c.optim.batch_size,
                shuffle: true,
                drop_last: true,
                seed: c.runtime.seed,
                prefetch: c.data.prefetch.max(1),
                threads: c.data.threads,
                shard: contrast_core::dist::Shard::current(),
            },
        )?))
    }

    fn optimization(&self, total: u64, per_epoch: u64) -> Result<Optimization> {
        let c = &self.cfg;
        let vs = self.model.trained_vs();
        Ok(Optimization {
            optimizer: build_optimizer(c, vs)?,
            lr: lr_schedule(c, per_epoch, total)?,
            weight_decay: None,
            clip: (c.optim.clip_grad_norm > 0.0)
                .then(|| (c.optim.clip_grad_norm, vs.trainable_variables())),
        })
    }

    fn variant(&self) -> String {
        variant(&self.cfg)
    }
    fn preset(cfg: &SppsConfig) -> Option<Preset> {
        Some(Preset {
            variant: variant(cfg),
            metric: METRIC.into(),
        })
    }
    fn samples_per_step(&self) -> u64 {
        self.cfg.optim.batch_size as u64
    }
    fn describe_data(&self) -> String {
        format!(
            "{} ({} train / {} test images, {} px)",
            self.cfg.data.format,
            self.train_ds.len(),
            self.test_ds.len(),
            self.cfg.data.image_size
        )
    }
    fn describe_model(&self) -> String {
        self.model.describe(&self.cfg)
    }
    fn paper(&self) -> Value {
        serde_json::to_value(&self.cfg.paper).unwrap_or(Value::Null)
    }

    /// MoCo: the momentum update of the key encoder before the step's keys.
    fn before_step(&mut self, _ctx: &StepCtx) -> Result<()> {
        match &mut self.model {
            Model::Simclr { .. } => Ok(()),
            Model::Mocov2(m) => m.update_key_encoder(),
        }
    }

    /// The batch's partners (when SPPS is on), then the framework's loss over the two views and
    /// the partner views.
    fn step(&mut self, batch: Batch, ctx: &StepCtx) -> Result<Losses> {
        let local: Vec<i64> = Vec::try_from(&batch.indices.to_kind(Kind::Int64))?;
        let picked = self.pick(&local, ctx.step)?;
        if let Some((indices, pk)) = &picked {
            let d = &mut self.diag;
            d.anchors += indices.len() as u64;
            for &(row, j, s) in &pk.chosen {
                d.used += 1;
                d.sims.push(s);
                let (a, b) = (
                    self.train_labels[indices[row] as usize],
                    self.train_labels[j],
                );
                if a >= 0 && b >= 0 {
                    d.labelled += 1;
                    d.same += u64::from(a == b);
                }
            }
        }
        let dev = self.device;
        let partners = picked
            .as_ref()
            .and_then(|(_, p)| p.partners.as_ref())
            .map(|p| p.to_device(dev));
        let x1 = batch.views[0].to_device(dev);
        let x2 = batch.views[1].to_device(dev);
        let loss = self.model.loss(&x1, &x2, partners.as_ref())?;
        let lv = loss.double_value(&[]);
        // the global batch's count, as one process logs it
        let m = picked.as_ref().map_or(0, |(_, p)| p.chosen.len());
        Ok(Losses::new(
            loss,
            [("loss", lv), ("semantic_pairs", m as f64)],
        ))
    }

    /// The official SimCLR synchronises BatchNorm over the replicas (`global_bn`, on by
    /// default in `google-research/simclr`); the official MoCo v2 does not (it shuffles the
    /// batch across the GPUs for the key encoder instead).
    fn official_sync_batch_norm(cfg: &SppsConfig) -> bool {
        cfg.framework == Framework::Simclr
    }

    fn distributed(cfg: &SppsConfig) -> contrast_core::train::Distributed {
        match cfg.framework {
            Framework::Simclr => contrast_core::train::Distributed::AsOfficial(
                "NT-Xent (with SPPS's extra positives, chosen over the global batch) over the projections gathered with gradient from every rank, as the official SimCLR's cross-replica concat; BatchNorm synchronised over the ranks as its global_bn (runtime.sync_batch_norm)",
            ),
            Framework::Mocov2 if cfg.mocov2.shuffle_bn => contrast_core::train::Distributed::AsOfficial(
                "MoCo v2 as the official moco/builder.py trains under DDP: the key encoder runs a slice of the global batch shuffled across the ranks (shuffle-BN, mocov2.shuffle_bn; nothing to shuffle with runtime.sync_batch_norm), the keys gathered over the ranks are enqueued (every rank holds the same queue), the gradients averaged; SPPS partners are chosen over the global batch, each rank's partner keys its own",
            ),
            Framework::Mocov2 => contrast_core::train::Distributed::PerRank(
                "MoCo v2 enqueues the keys gathered over the ranks as the official moco/builder.py does (every rank holds the same queue); mocov2.shuffle_bn = false: each rank's key encoder sees its own rows, where the official code shuffles them across the ranks; SPPS partners are chosen over the global batch",
            ),
        }
    }

    /// On several ranks the final kNN and linear probe embed their share of the training and
    /// test sets on every rank (`contrast_core::dist::eval_shard`); rank 0 reports.
    fn evaluates_on_every_rank(_cfg: &SppsConfig) -> bool {
        true
    }

    /// `--record`: the augmented views, labels and data-set indices of the step.
    fn batch_tensors(batch: &Batch) -> Named {
        batch.named()
    }

    /// `--record`: MoCo's shuffle-BN permutation of the global batch (`shuffle`), on several
    /// ranks; nothing else inside the step is random.
    fn step_draws(&mut self) -> Named {
        match &self.model {
            Model::Mocov2(m) => m
                .last_shuffle
                .iter()
                .map(|p| ("shuffle".to_string(), p.shallow_clone()))
                .collect(),
            Model::Simclr { .. } => Vec::new(),
        }
    }

    fn state(&self) -> Vec<(String, Named)> {
        match &self.model {
            Model::Simclr { vs, .. } => vec![("encoder".into(), named_variables(vs))],
            Model::Mocov2(m) => vec![
                ("encoder".into(), named_variables(&m.query_vs)),
                ("key_encoder".into(), named_variables(&m.key_vs)),
                ("queue".into(), m.queue.state()),
            ],
        }
    }

    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        match &mut self.model {
            Model::Simclr { vs, .. } => {
                load_into(vs, ck.group("encoder")?, true).context("restoring the SimCLR encoder")?
            }
            Model::Mocov2(m) => {
                load_into(&m.query_vs, ck.group("encoder")?, true)
                    .context("restoring the MoCo query encoder")?;
                load_into(&m.key_vs, ck.group("key_encoder")?, true)
                    .context("restoring the MoCo key encoder")?;
                m.queue
                    .load_state(ck.group("queue")?)
                    .context("restoring the MoCo queue")?;
            }
        }
        self.diag = match ck.state.extra.get("diag") {
            Some(d) => serde_json::from_value(d.clone())
                .context("restoring the semantic-pair diagnostics")?,
            None => Diag::default(),
        };
        Ok(())
    }

    fn extra_state(&self) -> Value {
        json!({ "diag": self.diag })
    }

    /// At every epoch end of an SPPS run: the diagnostics of the pairs used in that epoch.
    fn monitor(&mut self, ctx: &StepCtx, _run: &RunCtx) -> Result<Monitor> {
        let Some(pairs) = &self.pairs else {
            return Ok(Monitor::default());
        };
        if !ctx.epoch_end() {
            return Ok(Monitor::default());
        }
        let d = std::mem::take(&mut self.diag);
        let bins = self.cfg.spps.hist_bins;
        let fields = [
            ("diag_epoch", json!(ctx.epoch)),
            (
                "pair_precision",
                json!((d.labelled > 0).then(|| d.same as f64 / d.labelled as f64)),
            ),
            (
                "pairs_per_anchor",
                json!(d.used as f64 / d.anchors.max(1) as f64),
            ),
            ("pairs_per_image", json!(pairs.pairs_per_image())),
            ("pairs_used", json!(d.used)),
            ("sim_hist_bins", json!(bins)),
            ("sim_hist", json!(histogram(&d.sims, bins))),
        ];
        Ok(Monitor {
            fields: fields.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            message: None,
        })
    }

    /// kNN on the frozen pooled backbone features and the linear probe (SimCLR's augmented
    /// probe when `eval.linear_augment`).
    fn evaluate(&mut self, _run: &RunCtx) -> Result<Evaluation> {
        let cfg = &self.cfg;
        let model = &self.model;
        let e =
            protocol(cfg, &self.train_ds, &self.test_ds)?.run(self.device, &|x| model.embed(x))?;
        let (knn, linear) = (e.knn_json(), e.linear_json());
        let query = e.query;
        let value = linear.as_ref().and_then(|l| l["last_top1"].as_f64());
        let pairs = self.pairs.as_ref().map(|p| {
            json!({
                "file": cfg.spps.pairs, "count": p.pairs.len(), "per_image": p.pairs_per_image(),
                "precision": p.precision, "settings": p.settings, "share": cfg.spps.share,
            })
        });
        self.query = Some(query);
        Ok(Evaluation::new(METRIC, value)
            .with("knn", knn)
            .with("linear", linear)
            .with("pairs", pairs))
    }

    /// What the model learned: the test embeddings, PCA, coloured by class.
    fn figures(&mut self, dir: &Path) -> Result<()> {
        let Some((emb, labels)) = &self.query else {
            return Ok(());
        };
        contrast_core::eval::projection::pca_figure(
            emb,
            labels,
            self.test_ds.classes(),
            "test embeddings, PCA",
            &dir.join("pca"),
            2000,
        )?;
        Ok(())
    }

    /// The trained ResNet (SimCLR's encoder, MoCo's query encoder) as a torchvision state dict.
    fn export(&self) -> Result<contrast_core::nn::export::Export> {
        use contrast_core::nn::export::{backbone_state, resnet_meta, Export};
        Ok(Export {
            tensors: backbone_state(&named_variables(self.model.trained_vs()), "backbone"),
            meta: resnet_meta(&backbone_config(&self.cfg)?),
        })
    }

    /// The plain framework: the same config without semantic pairs.
    fn baseline(cfg: &SppsConfig) -> Option<(String, SppsConfig)> {
        let mut b = cfg.clone();
        b.spps.enabled = false;
        b.spps.pairs = String::new();
        Some(("baseline".into(), b))
    }

    /// The SPPS table (baseline vs +SPPS, our delta beside the paper's) when both runs are there.
    fn table(ours: &RunReport, baseline: Option<&RunReport>) -> String {
        let (Some(b), Ok(o)) = (baseline, serde_json::to_value(ours)) else {
            return contrast_core::train::report::table(ours, baseline);
        };
        match serde_json::to_value(b) {
            Ok(b) => crate::report::table(&o, &b),
            Err(_) => contrast_core::train::report::table(ours, baseline),
        }
    }
}
