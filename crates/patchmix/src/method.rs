//! PatchMix as a [`Method`] of the shared [`contrast_core::train::Trainer`]: what the paper adds
//! (the network, the mixed views and soft targets, the momentum encoder, kNN monitoring, the
//! kNN + linear evaluation, the figures); the Trainer runs everything else.
//!
//! Per step (official `main_pretrain.py::train_epoch`): the Trainer sets lr (warm-up + cosine)
//! and weight decay (cosine-increasing) from the [`Optimization`] schedules, then
//! [`Method::before_step`] moves the momentum encoder (before the forwards, as officially), then
//! [`Method::step`] mixes the views and computes the loss terms ([`crate::train::step_terms`]).
//! The baseline ([`Method::baseline`]) is the same run with `mix.enabled = false`.

use crate::config::PatchMixConfig;
use crate::eval::{protocol, report_json};
use crate::mix::PatchMixer;
use crate::model::PatchMixNet;
use crate::train::{
    build_net, datasets, momentum_at, optimization, step_terms, train_recipe, vit_config,
    StepTargets,
};
use anyhow::{bail, Context, Result};
use contrast_core::data::dataset::Dataset;
use contrast_core::data::pipeline::{Batch, Loader, LoaderConfig};
use contrast_core::loss::InfoNce;
use contrast_core::tensors::{load_into, named_variables, Named};
use contrast_core::train::{
    Batches, Checkpoint, Evaluation, Length, LogConfig, Losses, Method, Monitor, Optimization,
    Preset, RunCtx, RunReport, RuntimeConfig, StepCtx,
};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Tensor};

/// A PatchMix run (or its no-mix baseline): the network, the data sets and the step's fixed
/// parts.
pub struct PatchMix {
    cfg: PatchMixConfig,
    pub net: PatchMixNet,
    train_ds: Arc<dyn Dataset>,
    test_ds: Arc<dyn Dataset>,
    mixer: PatchMixer,
    nce: InfoNce,
    targets: StepTargets,
    /// The EMA momentum applied before the current step (logged with a momentum encoder).
    momentum: f64,
    /// The test set's class tokens and labels from the last evaluation (for the figures).
    query: Option<(Tensor, Tensor)>,
    /// The last step's patch permutations ([`Method::step_draws`], for `--record`).
    last_perms: Named,
}

/// The run's variant: `patchmix`, or the `no-mix baseline`.
fn variant(cfg: &PatchMixConfig) -> String {
    if cfg.mix.enabled {
        "patchmix"
    } else {
        "no-mix baseline"
    }
    .into()
}

/// The headline metric: kNN top-1 at the first k.
fn metric(cfg: &PatchMixConfig) -> String {
    format!(
        "kNN top-1 (k={}, T={})",
        cfg.eval.knn_k.first().copied().unwrap_or(0),
        cfg.eval.knn_t
    )
}

impl PatchMix {
    /// A PatchMix run on data sets that are already open (the benches' in-memory sets):
    /// what [`Method::build`] does after loading `data.*`. libtorch's RNG initialises the
    /// network, as in `build`.
    pub fn with_data(
        cfg: &PatchMixConfig,
        device: Device,
        train_ds: Arc<dyn Dataset>,
        test_ds: Arc<dyn Dataset>,
    ) -> Result<Self> {
        Self::assemble(cfg, build_net(cfg, device)?, train_ds, test_ds, device)
    }

    fn assemble(
        cfg: &PatchMixConfig,
        net: PatchMixNet,
        train_ds: Arc<dyn Dataset>,
        test_ds: Arc<dyn Dataset>,
        device: Device,
    ) -> Result<Self> {
        momentum_at(cfg, 0, 1)?; // an unknown schedule name fails before training
        let mixer = PatchMixer::new(
            cfg.mix.m,
            if cfg.mix.enabled { cfg.mix.p } else { 0.0 },
            cfg.model.patch_size,
            cfg.mix.smoothing,
        )?;
        let mut nce = InfoNce::new(cfg.optim.temperature)?;
        // the mixer's targets are row-stochastic by construction (tested): skip the per-call check
        nce.check_targets = false;
        // one rank's rows of the global batch (all of it in one process)
        let targets = StepTargets::sharded(
            &mixer,
            cfg.optim.batch_size as i64,
            contrast_core::dist::Shard::current(),
            cfg.mix.src_smoothing,
            device,
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            net,
            train_ds,
            test_ds,
            mixer,
            nce,
            targets,
            momentum: 0.0,
            query: None,
            last_perms: Vec::new(),
        })
    }
}

impl Method for PatchMix {
    type Config = PatchMixConfig;
    type Batch = Batch;
    const NAME: &'static str = "patchmix";

    fn runtime(cfg: &PatchMixConfig) -> &RuntimeConfig {
        &cfg.runtime
    }
    fn log(cfg: &PatchMixConfig) -> &LogConfig {
        &cfg.log
    }
    fn length(cfg: &PatchMixConfig) -> Length {
        Length::Epochs(cfg.optim.epochs)
    }

    fn build(cfg: &PatchMixConfig, device: Device) -> Result<Self> {
        // the network first, from the run seed the Trainer has just set
        let net = build_net(cfg, device)?;
        let (train_ds, test_ds) = datasets(cfg)?;
        Self::assemble(cfg, net, train_ds, test_ds, device)
    }

    fn data(&mut self) -> Result<Box<dyn Batches<Batch = Batch>>> {
        let cfg = &self.cfg;
        let loader = Loader::new(
            Arc::clone(&self.train_ds),
            train_recipe(cfg)?,
            LoaderConfig {
                batch_size: cfg.optim.batch_size,
                shuffle: true,
                drop_last: true,
                seed: cfg.runtime.seed,
                prefetch: cfg.data.prefetch.max(1),
                threads: cfg.data.threads,
                shard: contrast_core::dist::Shard::current(),
            },
        )?;
        if loader.batches_per_epoch() == 0 {
            bail!(
                "the training set ({} images) is smaller than one batch ({})",
                self.train_ds.len(),
                cfg.optim.batch_size
            );
        }
        Ok(Box::new(loader))
    }

    /// [`crate::train::optimization`]: AdamW with the warm-up + cosine lr and the
    /// cosine-increasing weight decay.
    fn optimization(&self, total: u64, per_epoch: u64) -> Result<Optimization> {
        optimization(&self.cfg, &self.net, total, per_epoch)
    }

    fn variant(&self) -> String {
        variant(&self.cfg)
    }
    fn preset(cfg: &PatchMixConfig) -> Option<Preset> {
        Some(Preset {
            variant: variant(cfg),
            metric: metric(cfg),
        })
    }
    fn samples_per_step(&self) -> u64 {
        self.cfg.optim.batch_size as u64
    }
    fn describe_data(&self) -> String {
        format!(
            "{} ({} train / {} test images)",
            self.cfg.data.format,
            self.train_ds.len(),
            self.test_ds.len()
        )
    }
    fn describe_model(&self) -> String {
        let depth = vit_config(&self.cfg).map_or(self.cfg.model.depth, |v| v.depth);
        format!(
            "{} patch {} depth {depth}",
            self.cfg.model.arch, self.cfg.model.patch_size
        )
    }
    fn paper(&self) -> Value {
        serde_json::to_value(&self.cfg.paper).unwrap_or(Value::Null)
    }

    /// The momentum encoder moves before the step's forwards (official `train_epoch`).
    fn before_step(&mut self, ctx: &StepCtx) -> Result<()> {
        self.momentum = momentum_at(&self.cfg, ctx.step, ctx.per_epoch)?;
        self.net.update_momentum(self.momentum)
    }

    fn step(&mut self, batch: Batch, ctx: &StepCtx) -> Result<Losses> {
        let views: Vec<Tensor> = batch
            .views
            .iter()
            .map(|v| v.to_device(ctx.device))
            .collect();
        // one decision per step for every mixed view; the targets depend on it only
        let apply = self.mixer.should_mix();
        let mut terms = step_terms(
            &self.net,
            &self.mixer,
            &self.nce,
            &self.targets,
            &views,
            apply,
        )?;
        // the total first (the Trainer's headline term), then the parts
        let values = terms.values();
        let ordered = values
            .iter()
            .filter(|(n, _)| *n == "total")
            .chain(values.iter().filter(|(n, _)| *n != "total"))
            .copied();
        self.last_perms = std::mem::take(&mut terms.perms);
        let mut losses = Losses::new(terms.total, ordered);
        if self.cfg.model.use_momentum {
            losses = losses.with("ema_momentum", self.momentum);
        }
        Ok(losses)
    }

    /// The official `main_pretrain.py` converts the model with
    /// `nn.SyncBatchNorm.convert_sync_batchnorm` (the projector's and predictor's BatchNorms).
    fn official_sync_batch_norm(_cfg: &PatchMixConfig) -> bool {
        true
    }

    fn distributed(_cfg: &PatchMixConfig) -> contrast_core::train::Distributed {
        contrast_core::train::Distributed::AsOfficial(
            "the keys are gathered over the ranks without gradient (module/loss.py, concat_all_gather), one logit column per sample of the global batch, each rank's targets at its column offset (module/mix.py); mixing stays within each rank's rows and the heads' BatchNorms are synchronised (runtime.sync_batch_norm, on by default as the official convert_sync_batchnorm)",
        )
    }

    /// On several ranks the final kNN and linear probe embed their share of the training and
    /// test sets on every rank (`contrast_core::dist::eval_shard`); rank 0 reports.
    fn evaluates_on_every_rank(_cfg: &PatchMixConfig) -> bool {
        true
    }

    /// `--record`: the augmented views, labels and data-set indices of the step.
    fn batch_tensors(batch: &Batch) -> Named {
        batch.named()
    }

    /// `--record`: the patch permutations the step's mixing drew (`perm1`, `perm2`,
    /// `permL<j>`; none when the step did not mix). Drop-path is the other draw inside the step;
    /// the comparisons run with it off (`model.drop_path = 0`).
    fn step_draws(&mut self) -> Named {
        std::mem::take(&mut self.last_perms)
    }

    fn state(&self) -> Vec<(String, Named)> {
        let mut groups = vec![
            ("encoder".into(), named_variables(&self.net.encoder_vs)),
            ("predictor".into(), named_variables(&self.net.predictor_vs)),
        ];
        if let Some(m) = &self.net.momentum {
            groups.push(("momentum".into(), named_variables(&m.vs)));
        }
        groups
    }

    /// Encoder, predictor and (when present) momentum-encoder weights.
    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        let net = &self.net;
        load_into(&net.encoder_vs, ck.group("encoder")?, true).context("restoring the encoder")?;
        load_into(&net.predictor_vs, ck.group("predictor")?, true)
            .context("restoring the predictor")?;
        if let Some(m) = &net.momentum {
            load_into(&m.vs, ck.group("momentum")?, true)
                .context("restoring the momentum encoder")?;
        }
        Ok(())
    }

    /// kNN on the class token every `eval.knn_every` epochs (not after the last: the
    /// evaluation does it), as `knn_top1_k<k>` fields.
    fn monitor(&mut self, ctx: &StepCtx, run: &RunCtx) -> Result<Monitor> {
        let every = self.cfg.eval.knn_every;
        let done = ctx.done();
        if !(ctx.epoch_end()
            && every > 0
            && (done / ctx.per_epoch).is_multiple_of(every)
            && done < ctx.total)
        {
            return Ok(Monitor::default());
        }
        let net = &self.net;
        let acc = protocol(&self.cfg, &self.train_ds, &self.test_ds)?
            .knn(run.device, &|x| net.features(x))?;
        Ok(Monitor {
            fields: acc
                .iter()
                .map(|(k, a)| (format!("knn_top1_k{k}"), json!(a)))
                .collect(),
            message: Some(format!("epoch {}: kNN {acc:?}", done / ctx.per_epoch)),
        })
    }

    /// kNN and the linear probe on the class token of the frozen encoder (the momentum encoder
    /// when there is one). Headline: kNN top-1 at the first k.
    fn evaluate(&mut self, run: &RunCtx) -> Result<Evaluation> {
        let cfg = &self.cfg;
        let net = &self.net;
        let ev =
            protocol(cfg, &self.train_ds, &self.test_ds)?.run(run.device, &|x| net.features(x))?;
        let j = report_json(&ev, cfg)?;
        self.query = Some(ev.query);
        let mut out = Evaluation::new(metric(cfg), ev.knn.first().map(|a| a.1));
        for key in ["knn", "linear", "eval_protocol"] {
            out = out.with(key, &j[key]);
        }
        Ok(out)
    }

    /// `mixing.png` (PatchMix runs) and the PCA of the test class tokens.
    fn figures(&mut self, dir: &Path) -> Result<()> {
        let query = self
            .query
            .as_ref()
            .context("the figures need the evaluation's test features")?;
        crate::figures::write_figures(&self.cfg, &self.test_ds, query, dir)?;
        Ok(())
    }

    /// The query encoder's ViT (without the projector) as a timm `VisionTransformer` state dict.
    fn export(&self) -> Result<contrast_core::nn::export::Export> {
        use contrast_core::nn::export::{backbone_state, vit_meta, Export};
        Ok(Export {
            tensors: backbone_state(&named_variables(&self.net.encoder_vs), "base_encoder"),
            meta: vit_meta(&vit_config(&self.cfg)?),
        })
    }

    /// The identical run with mixing off: identity targets, i.e. the symmetric MoCo-v3 loss.
    fn baseline(cfg: &PatchMixConfig) -> Option<(String, PatchMixConfig)> {
        let mut base = cfg.clone();
        base.mix.enabled = false;
        Some(("nomix".into(), base))
    }

    fn table(ours: &RunReport, baseline: Option<&RunReport>) -> String {
        let v = |r: &RunReport| serde_json::to_value(r).unwrap_or(Value::Null);
        crate::report::table(&v(ours), &baseline.map_or(Value::Null, v))
    }
}
