//! MNCLGLF on the shared [`Trainer`](contrast_core::train::Trainer): one training step
//! (official `FastMoCo.forward` + `InfoNCE.forward`) in [`Mnclglf`], the plain-SimCLR baseline
//! beside it, and [`Multinet`], the `Method` that drives either with the same data, optimiser,
//! schedule, clipping, checkpoints and evaluation, so the comparison differs only in the method.

use crate::baseline::SimclrBaseline;
use crate::config::{self, MultinetConfig};
use crate::eval;
use crate::loss::{mnclglf_loss, LossInputs};
use crate::model::MultiNet;
use anyhow::{ensure, Context, Result};
use contrast_core::data::augment::Recipe;
use contrast_core::data::dataset::Dataset;
use contrast_core::data::pipeline::{Batch, Loader, LoaderConfig};
use contrast_core::memory::MemoryBank;
use contrast_core::optim::schedule::Schedule;
use contrast_core::tensors::{load_into, named_variables, Named};
use contrast_core::train::{
    derive_seed, Batches, Checkpoint, Evaluation, Length, LogConfig, Losses, Method, Optimization,
    Preset, RunCtx, RunReport, RuntimeConfig, StepCtx,
};
use std::path::Path;
use std::sync::Arc;
use tch::nn::VarStore;
use tch::{Device, Tensor};

/// MNCLGLF: networks + nearest-neighbour bank + loss settings.
pub struct Mnclglf {
    pub net: MultiNet,
    pub bank: MemoryBank,
    cfg: MultinetConfig,
}

impl Mnclglf {
    pub fn new(cfg: &MultinetConfig, device: Device) -> Result<Self> {
        Ok(Self {
            net: MultiNet::new(cfg, device)?,
            bank: MemoryBank::new(
                cfg.model.bank_size,
                cfg.model.proj_out,
                derive_seed(cfg.runtime.seed, "memory-bank", 0),
                device,
            )?,
            cfg: cfg.clone(),
        })
    }
}

impl Mnclglf {
    pub fn before_step(&mut self) -> Result<()> {
        // official: `_momentum_update_target_encoder()` at the start of the no-grad block, before
        // the EMA encoder runs
        self.net.update_ema(self.cfg.model.ema_momentum)
    }

    pub fn loss(&mut self, views: &[Tensor]) -> Result<(Tensor, Vec<(&'static str, f64)>)> {
        ensure!(
            views.len() >= 3,
            "MNCLGLF needs 3 views, got {}",
            views.len()
        );
        let f = self.net.forward(&views[0], &views[1], &views[2], true)?;
        // j1 = NN(e1) without update; j3 = NN(e3), then enqueue e3 (`memory_bank(j3, update=True)`)
        let j1 = self.bank.nearest(&f.e1)?;
        let j3 = self.bank.nearest(&f.e3)?;
        // several ranks: every rank's projections, in rank order (one process's order), so
        // that every rank holds the same bank
        self.bank.push(&contrast_core::dist::gather(&f.e3)?)?;
        let terms = mnclglf_loss(
            &self.cfg.loss,
            &LossInputs {
                p1: &f.p[0],
                p2: &f.p[1],
                p3: &f.p[2],
                k1: &f.k1,
                k2: &f.k2,
                j1: &j1,
                j3: &j3,
            },
        )?;
        let values = terms.values();
        Ok((terms.total, values))
    }

    pub fn scheduled_vs(&self) -> Vec<&VarStore> {
        if self.cfg.optim.constant_predictor_lr {
            vec![&self.net.encoder_vs]
        } else {
            vec![&self.net.encoder_vs, &self.net.predictor_vs]
        }
    }

    pub fn fixed_vs(&self) -> Vec<&VarStore> {
        if self.cfg.optim.constant_predictor_lr {
            vec![&self.net.predictor_vs]
        } else {
            vec![]
        }
    }

    pub fn state(&self) -> Vec<(&'static str, Named)> {
        vec![
            ("encoder", named_variables(&self.net.encoder_vs)),
            ("predictor", named_variables(&self.net.predictor_vs)),
            ("ema", named_variables(&self.net.ema_vs)),
            ("bank", self.bank.state()),
        ]
    }

    pub fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        load_into(&self.net.encoder_vs, ck.group("encoder")?, true)
            .context("restoring the encoder")?;
        load_into(&self.net.predictor_vs, ck.group("predictor")?, true)
            .context("restoring the predictor")?;
        load_into(&self.net.ema_vs, ck.group("ema")?, true).context("restoring the EMA encoder")?;
        self.bank
            .load_state(ck.group("bank")?)
            .context("restoring the memory bank")
    }

    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        self.net.embed(x)
    }

    pub fn describe(&self) -> String {
        format!(
            "ResNet(layers {:?}, stem {:?}) + projector 512→{}→{}→{} + predictor →{}→; EMA {}; bank {}",
            self.cfg.model.layers,
            self.cfg.model.stem,
            self.cfg.model.proj_hidden,
            self.cfg.model.proj_hidden,
            self.cfg.model.proj_out,
            self.cfg.model.pred_hidden,
            self.cfg.model.ema_momentum,
            self.cfg.model.bank_size
        )
    }
}

/// The network a config trains: MNCLGLF or the plain-SimCLR baseline (`method`).
pub enum Net {
    Mnclglf(Box<Mnclglf>),
    Simclr(Box<SimclrBaseline>),
}

impl Net {
    pub fn new(cfg: &MultinetConfig, device: Device) -> Result<Self> {
        Ok(match cfg.method {
            config::Method::Mnclglf => Net::Mnclglf(Box::new(Mnclglf::new(cfg, device)?)),
            config::Method::Simclr => Net::Simclr(Box::new(SimclrBaseline::new(cfg, device)?)),
        })
    }
    /// Augmented views per image the step consumes.
    pub fn views(&self) -> usize {
        match self {
            Net::Mnclglf(_) => 3,
            Net::Simclr(_) => 2,
        }
    }
    /// The loss of one batch (`views` on the device) and its logged terms (first = total).
    pub fn loss(&mut self, views: &[Tensor]) -> Result<(Tensor, Vec<(&'static str, f64)>)> {
        match self {
            Net::Mnclglf(m) => m.loss(views),
            Net::Simclr(b) => b.loss(views),
        }
    }
    /// VarStores trained with the scheduled lr, and those at a constant lr.
    pub fn scheduled_vs(&self) -> Vec<&VarStore> {
        match self {
            Net::Mnclglf(m) => m.scheduled_vs(),
            Net::Simclr(b) => b.scheduled_vs(),
        }
    }
    pub fn fixed_vs(&self) -> Vec<&VarStore> {
        match self {
            Net::Mnclglf(m) => m.fixed_vs(),
            Net::Simclr(b) => b.fixed_vs(),
        }
    }
    /// Frozen features for evaluation (BN eval mode, no gradient).
    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Net::Mnclglf(m) => m.embed(x),
            Net::Simclr(b) => b.embed(x),
        }
    }
    pub fn describe(&self) -> String {
        match self {
            Net::Mnclglf(m) => m.describe(),
            Net::Simclr(b) => b.describe(),
        }
    }
    /// Every trainable tensor (what the gradient-norm clip sees).
    pub fn trainable(&self) -> Vec<Tensor> {
        self.scheduled_vs()
            .into_iter()
            .chain(self.fixed_vs())
            .flat_map(|vs| vs.trainable_variables())
            .collect()
    }
}

/// MNCLGLF (or its SimCLR baseline) as a [`Method`] of the shared Trainer.
pub struct Multinet {
    pub cfg: MultinetConfig,
    pub net: Net,
    device: Device,
    /// Train / test sets, loaded on first use (`data`, `evaluate`).
    sets: Option<(Arc<dyn Dataset>, Arc<dyn Dataset>)>,
    /// Test embeddings of the last evaluation (for the PCA figure).
    query: Option<(Tensor, Tensor)>,
}

impl Multinet {
    fn sets(&mut self) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
        if self.sets.is_none() {
            self.sets = Some(eval::datasets(&self.cfg)?);
        }
        let (a, b) = self.sets.as_ref().expect("loaded above");
        Ok((Arc::clone(a), Arc::clone(b)))
    }
}

/// The headline metric of every run.
const METRIC: &str = "linear top-1 (frozen backbone, best epoch: the released linear.py reports its best evaluation)";

/// `mnclglf` or its `simclr` baseline.
fn variant(cfg: &MultinetConfig) -> String {
    match cfg.method {
        config::Method::Mnclglf => "mnclglf",
        config::Method::Simclr => "simclr",
    }
    .into()
}

impl Method for Multinet {
    type Config = MultinetConfig;
    type Batch = Batch;
    const NAME: &'static str = "multinet";

    fn runtime(cfg: &MultinetConfig) -> &RuntimeConfig {
        &cfg.runtime
    }
    fn log(cfg: &MultinetConfig) -> &LogConfig {
        &cfg.log
    }
    fn length(cfg: &MultinetConfig) -> Length {
        Length::Epochs(cfg.optim.epochs)
    }

    fn build(cfg: &MultinetConfig, device: Device) -> Result<Self> {
        Ok(Self {
            cfg: cfg.clone(),
            net: Net::new(cfg, device)?,
            device,
            sets: None,
            query: None,
        })
    }

    fn data(&mut self) -> Result<Box<dyn Batches<Batch = Batch>>> {
        let (train, _) = self.sets()?;
        let c = &self.cfg;
        let loader = Loader::new(
            Arc::clone(&train),
            Recipe::mocov2(c.data.image_size, self.net.views())?,
            LoaderConfig {
                batch_size: c.optim.batch_size,
                shuffle: true,
                drop_last: true,
                seed: c.runtime.seed,
                prefetch: c.data.prefetch.max(1),
                threads: c.data.threads,
                shard: contrast_core::dist::Shard::current(),
            },
        )?;
        ensure!(
            loader.batches_per_epoch() > 0,
            "the training set ({} images) is smaller than one batch ({})",
            train.len(),
            c.optim.batch_size
        );
        Ok(Box::new(loader))
    }

    /// SGD with the cosine schedule; the predictor at a constant lr (`WCosCon`) when
    /// `optim.constant_predictor_lr`; the global gradient norm clipped (`optim.clip_grad_norm`).
    fn optimization(&self, total: u64, _per_epoch: u64) -> Result<Optimization> {
        let o = &self.cfg.optim;
        Ok(Optimization {
            optimizer: eval::build_optimizer(&self.cfg, &self.net)?,
            lr: Schedule::Cosine {
                start: o.lr,
                end: o.final_lr,
                steps: total,
            },
            weight_decay: None,
            clip: (o.clip_grad_norm > 0.0).then(|| (o.clip_grad_norm, self.net.trainable())),
        })
    }

    fn variant(&self) -> String {
        variant(&self.cfg)
    }
    fn preset(cfg: &MultinetConfig) -> Option<Preset> {
        Some(Preset {
            variant: variant(cfg),
            metric: METRIC.into(),
        })
    }
    fn samples_per_step(&self) -> u64 {
        self.cfg.optim.batch_size as u64
    }
    fn describe_data(&self) -> String {
        let c = &self.cfg;
        match &self.sets {
            Some((tr, te)) => format!(
                "{} ({} train / {} test images, {} px)",
                c.data.format,
                tr.len(),
                te.len(),
                c.data.image_size
            ),
            None => format!("{} ({} px)", c.data.format, c.data.image_size),
        }
    }
    fn describe_model(&self) -> String {
        self.net.describe()
    }
    fn paper(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg.paper).unwrap_or_default()
    }

    /// Official: `_momentum_update_target_encoder()` at the start of the no-grad block, before
    /// the EMA encoder runs.
    fn before_step(&mut self, _ctx: &StepCtx) -> Result<()> {
        match &mut self.net {
            Net::Mnclglf(m) => m.before_step(),
            Net::Simclr(_) => Ok(()),
        }
    }

    fn step(&mut self, batch: Batch, ctx: &StepCtx) -> Result<Losses> {
        let views: Vec<Tensor> = batch
            .views
            .iter()
            .map(|v| v.to_device(ctx.device))
            .collect();
        let (loss, terms) = self.net.loss(&views)?;
        Ok(Losses::new(loss, terms))
    }

    /// N ranks train what one process trains on the global batch: the released code trains on
    /// one GPU (its `dist.py` starts a group of one), so the global batch's losses and
    /// statistics are what it computes. Each rank's loss is the global batch's (keys and
    /// predictions gathered, see `loss`), the bank takes every rank's projections.
    fn distributed(_cfg: &MultinetConfig) -> contrast_core::train::Distributed {
        contrast_core::train::Distributed::GlobalBatch
    }

    /// On: the released code trains on one GPU, whose BatchNorms see the whole batch.
    fn official_sync_batch_norm(_cfg: &MultinetConfig) -> bool {
        true
    }

    /// On several ranks the final kNN and linear probe embed their share of the training and
    /// test sets on every rank (`contrast_core::dist::eval_shard`); rank 0 reports.
    fn evaluates_on_every_rank(_cfg: &MultinetConfig) -> bool {
        true
    }

    /// `--record`: the augmented views, labels and data-set indices of the step.
    fn batch_tensors(batch: &Batch) -> Named {
        batch.named()
    }

    fn state(&self) -> Vec<(String, Named)> {
        let groups = match &self.net {
            Net::Mnclglf(m) => m.state(),
            Net::Simclr(b) => b.state(),
        };
        groups
            .into_iter()
            .map(|(n, t)| (n.to_string(), t))
            .collect()
    }
    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        match &mut self.net {
            Net::Mnclglf(m) => m.restore(ck),
            Net::Simclr(b) => b.restore(ck),
        }
    }

    /// Frozen backbone features (BN eval mode): the kNN monitor at k ∈ `eval.knn_k` and the
    /// linear probe of the released `linear.py` (headline: its best epoch, as it reports).
    fn evaluate(&mut self, _run: &RunCtx) -> Result<Evaluation> {
        let (train, test) = self.sets()?;
        let net = &self.net;
        let e = eval::protocol(&self.cfg, &train, &test)?.run(self.device, &|x| net.embed(x))?;
        let (knn, linear) = (e.knn_json(), e.linear_json());
        let headline = linear.as_ref().map(|l| l["best_top1"].clone());
        self.query = Some(e.query);
        Ok(Evaluation::new(METRIC, headline.and_then(|v| v.as_f64()))
            .with("released_code_l1", self.cfg.loss.released_code_l1)
            .with("knn", &knn)
            .with("linear", &linear))
    }

    /// What the model learned: the test embeddings, PCA, coloured by class.
    fn figures(&mut self, dir: &Path) -> Result<()> {
        let (Some((x, y)), Some((_, test))) = (&self.query, &self.sets) else {
            return Ok(());
        };
        contrast_core::eval::projection::pca_figure(
            x,
            y,
            test.classes(),
            &format!("{}: test embeddings, PCA", self.net.describe()),
            &dir.join("pca"),
            2000,
        )
        .map(|_| ())
    }

    /// The online encoder's ResNet (MNCLGLF) or the SimCLR backbone, as a torchvision state dict.
    fn export(&self) -> Result<contrast_core::nn::export::Export> {
        use contrast_core::nn::export::{backbone_state, resnet_meta, Export};
        let vs = match &self.net {
            Net::Mnclglf(m) => &m.net.encoder_vs,
            Net::Simclr(b) => &b.vs,
        };
        Ok(Export {
            tensors: backbone_state(&named_variables(vs), "backbone"),
            meta: resnet_meta(&crate::model::resnet_config(&self.cfg)),
        })
    }

    /// The plain-SimCLR baseline of the same settings (run name suffix `simclr`).
    fn baseline(cfg: &MultinetConfig) -> Option<(String, MultinetConfig)> {
        (cfg.method == config::Method::Mnclglf).then(|| {
            let mut b = cfg.clone();
            b.method = config::Method::Simclr;
            ("simclr".into(), b)
        })
    }
    fn table(ours: &RunReport, baseline: Option<&RunReport>) -> String {
        let v = |r: &RunReport| serde_json::to_value(r).unwrap_or_default();
        crate::report::table(&v(ours), baseline.map(v).as_ref())
    }
}
