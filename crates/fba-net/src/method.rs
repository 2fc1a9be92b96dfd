//! FBA-Net on the shared [`Trainer`](contrast_core::train::Trainer) (official
//! `code/train_3d.py`): [`FbaNetMethod`] is the `impl Method`, the functions above it are the
//! pieces it is made of (network, optimiser, lr schedule, loss weights, one step's terms), which
//! the benches, the official-code tests and Spade's fine-tune use too.
//!
//! Per iteration: a batch of `labeled_bs` labelled + unlabelled patches from the two-stream
//! sampler (one permutation stream, replayed up to the resume point), the loss of
//! [`crate::loss::fba_loss`], SGD (momentum 0.9, wd 1e-4, constant lr 0.01, or UA-MT's step
//! decay). From `eval.start`, every `eval.every` iterations the monitor computes the mean test
//! Dice of decoder 1 and keeps the best weights in `<run>/best.safetensors` (the reference's
//! test-set model selection; the best Dice and its iteration travel in the checkpoints). The
//! evaluation scores both the last-iteration weights and the best-on-test weights on the test
//! cases (Dice, Jaccard, 95HD, ASD per case), reported separately.

use crate::config::FbaNetConfig;
use crate::data::{make_batch, LaData};
use crate::eval::{evaluate, mean_dice, CaseResult};
use crate::loss::{consistency_weight, fba_loss, DecoderOutputs, LossWeights, Terms};
use crate::model::{FbaConfig, FbaNet};
use anyhow::{anyhow, bail, Context, Result};
use contrast_core::dist::Shard;
use contrast_core::eval::segmentation::SegMetrics;
use contrast_core::nn::vnet::{Norm, UpMode, VNetConfig};
use contrast_core::optim::schedule::Schedule;
use contrast_core::optim::{single_group, Optimizer, Sgd};
use contrast_core::tensors::{load_into, named_variables, Named};
use contrast_core::train::runtime::derive_seed;
use contrast_core::train::{
    Batches, Checkpoint, Evaluation, Length, LogConfig, Losses, Method, Monitor, Optimization,
    Preset, RunCtx, RunReport, RuntimeConfig, StepCtx,
};
use contrast_core::volume::augment3d::TwoStreamSampler;
use contrast_core::volume::sliding::SlidingWindow;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Tensor};

/// The network of a config (`train` = with dropout).
pub fn build_model(cfg: &FbaNetConfig, device: Device, train: bool) -> Result<FbaNet> {
    let (decoders, head) = match cfg.model.variant.as_str() {
        "fba-net+" => (
            vec![UpMode::Transpose, UpMode::Trilinear, UpMode::Nearest],
            true,
        ),
        "fba-net" => (vec![UpMode::Transpose], true),
        "supervised" => (vec![UpMode::Transpose], false),
        other => bail!("unknown model.variant `{other}`: use fba-net+, fba-net or supervised"),
    };
    FbaNet::new(
        device,
        &FbaConfig {
            vnet: VNetConfig {
                in_channels: 1,
                n_classes: 2,
                n_filters: cfg.model.n_filters,
                norm: Norm::BatchNorm,
                dropout: if train { cfg.model.dropout } else { 0.0 },
            },
            decoders,
            patch: cfg.data.patch.map(|p| p as i64),
            dim: cfg.model.dim,
            contrast_head: head && cfg.loss.contrast != 0.0,
        },
    )
}

/// The sliding window of a config (window = training patch).
pub fn sliding_window(cfg: &FbaNetConfig) -> SlidingWindow {
    SlidingWindow {
        patch: cfg.data.patch,
        stride: cfg.eval.stride,
        batch: cfg.eval.sw_batch.max(1),
    }
}

/// Writes `named` as safetensors at `path`, atomically (the file is either the old one or the
/// complete new one). libtorch writes safetensors only to a path: it writes a scratch file
/// beside `path`, whose bytes then go through [`write_atomic`].
pub fn save_weights(path: &Path, named: &Named) -> Result<()> {
    contrast_core::tensors::write_safetensors_atomic(path, named)
}

/// Loads weights saved by [`save_weights`] (or a checkpoint's `model` group) into `net`.
pub fn load_weights(net: &FbaNet, path: &Path) -> Result<()> {
    let t =
        Tensor::read_safetensors(path).map_err(|e| anyhow!("reading {}: {e}", path.display()))?;
    load_into(&net.vs, &t, true).with_context(|| format!("loading {}", path.display()))
}

fn summarize(results: &[CaseResult]) -> Value {
    let all: Vec<SegMetrics> = results.iter().map(|r| r.metrics).collect();
    let m = SegMetrics::mean(&all);
    json!({
        "mean": {"dice": m.dice * 100.0, "jaccard": m.jaccard * 100.0, "hd95": m.hd95, "asd": m.asd},
        "cases": results,
    })
}

/// Load the variables of `path` (safetensors) that the network has, by name and shape; returns
/// how many. Errors when none matches (a wrong file would otherwise train from scratch silently).
pub fn init_from(net: &FbaNet, path: &Path) -> Result<usize> {
    let tensors = Tensor::read_safetensors(path)
        .with_context(|| format!("reading initial weights {}", path.display()))?;
    let vars = net.vs.variables();
    let matched: Vec<(String, Tensor)> = tensors
        .into_iter()
        .filter(|(n, _)| vars.contains_key(n))
        .collect();
    if matched.is_empty() {
        bail!(
            "model.init {}: none of its tensors names a variable of this network",
            path.display()
        );
    }
    load_into(&net.vs, &matched, false).with_context(|| format!("loading {}", path.display()))?;
    Ok(matched.len())
}

/// The lr of every iteration (0-based): constant (`train_3d.py`), or UA-MT's step decay,
/// `base·γ^⌊i / lr_step⌋` (`train_LA.py` lowers it after iterations 2500, 5000).
pub fn lr_schedule(cfg: &FbaNetConfig, total: u64) -> Result<Schedule> {
    let o = &cfg.optim;
    let s = if o.lr_step == 0 {
        Schedule::Constant { value: o.lr }
    } else {
        Schedule::Step {
            base: o.lr,
            milestones: (1..)
                .map(|k| k * o.lr_step)
                .take_while(|&m| m < total.max(1))
                .collect(),
            gamma: o.lr_gamma,
        }
    };
    s.validate()?;
    Ok(s)
}

/// The reference optimiser: SGD with momentum, weight decay on every parameter.
pub fn optimizer(cfg: &FbaNetConfig, net: &FbaNet) -> Result<Sgd> {
    Sgd::new(
        single_group(&net.vs, cfg.optim.weight_decay),
        cfg.optim.lr,
        cfg.optim.momentum,
        0.0,
        false,
    )
}

/// The objective's weights of a config at consistency weight `consistency` (the contrastive
/// term is off for the supervised baseline).
pub fn loss_weights(cfg: &FbaNetConfig, consistency: f64) -> LossWeights {
    LossWeights {
        lambda_seg: cfg.loss.lambda_seg,
        ce: cfg.loss.ce_weight,
        dice: cfg.loss.dice,
        consistency,
        contrast: if cfg.model.variant == "supervised" {
            0.0
        } else {
            cfg.loss.contrast
        },
        temperature: cfg.loss.temperature,
        alpha_max: cfg.loss.alpha_max,
        alpha_min: cfg.loss.alpha_min,
    }
}

/// The loss weights of iteration `done` (1-based: `iter_num` after its increment, as the
/// consistency ramp-up of `train_3d.py` reads it).
pub fn iteration_weights(cfg: &FbaNetConfig, done: u64) -> LossWeights {
    loss_weights(
        cfg,
        consistency_weight(
            done,
            cfg.loss.rampup_every,
            cfg.loss.consistency_rampup,
            cfg.loss.consistency,
        ),
    )
}

/// Forward pass (train mode) and loss terms of one training iteration on a batch whose first
/// `y.size()[0]` images are the labelled ones; the caller owns zero-grad / backward / step, so
/// training, `time_iterations` and the benches run exactly this code.
pub fn step_terms(net: &FbaNet, x: &Tensor, y: &Tensor, w: &LossWeights) -> Result<Terms> {
    let outs = net.forward_t(x, true, true)?;
    let dec: Vec<DecoderOutputs> = outs
        .iter()
        .map(|o| DecoderOutputs {
            logits: &o.logits,
            fg: o.fg.as_ref(),
            bg: o.bg.as_ref(),
        })
        .collect();
    fba_loss(&dec, y, w)
}

/// The training batches of a run: the two-stream sampler draws its permutations from one
/// stream (seeded by `derive_seed(seed, "sampler", 0)`), so the batches of step `s` are those
/// after replaying the sampler `s` times; each batch's patches are then augmented with the
/// per-step stream of [`make_batch`]. Items are `(images [B,1,X,Y,Z], labels [L,X,Y,Z])` on
/// the CPU.
pub struct LaBatches {
    data: Arc<LaData>,
    sampler: TwoStreamSampler,
    patch: [usize; 3],
    seed: u64,
}

impl LaBatches {
    pub fn new(data: Arc<LaData>, cfg: &FbaNetConfig) -> Result<Self> {
        let sampler = data.sampler(cfg)?;
        Ok(Self {
            data,
            sampler,
            patch: cfg.data.patch,
            seed: cfg.runtime.seed,
        })
    }
}

impl Batches for LaBatches {
    type Batch = (Tensor, Tensor);
    fn per_epoch(&self) -> u64 {
        self.sampler.epoch_len() as u64
    }
    fn iter_from(&mut self, step: u64) -> Box<dyn Iterator<Item = Result<Self::Batch>> + '_> {
        let mut sampler = self.sampler.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(self.seed, "sampler", 0));
        for _ in 0..step {
            sampler.next_batch(&mut rng);
        }
        let (data, patch, seed) = (&self.data, self.patch, self.seed);
        Box::new((step..).map(move |s| {
            let (lab, unl) = sampler.next_batch(&mut rng);
            // several ranks: this rank's rows of the global batch
            let b = make_batch(data, &lab, &unl, patch, seed, s)?.shard(Shard::current())?;
            Ok((b.images, b.labels))
        }))
    }
}

/// FBA-Net(+) or its supervised V-Net baseline (`model.variant`), trained by the shared
/// Trainer.
pub struct FbaNetMethod {
    cfg: FbaNetConfig,
    device: Device,
    /// The network being trained (with dropout).
    pub net: FbaNet,
    data: Arc<LaData>,
    /// Best test Dice (fraction) at a selection point so far, and its iteration.
    best_dice: f64,
    best_step: u64,
}

impl FbaNetMethod {
    /// The best-on-test selection so far: `(Dice fraction, iteration)`, `(-1, 0)` before any.
    pub fn best(&self) -> (f64, u64) {
        (self.best_dice, self.best_step)
    }

    /// The trained weights in a network without dropout (the evaluation model).
    fn eval_net(&self) -> Result<FbaNet> {
        let eval_net = build_model(&self.cfg, self.device, false)?;
        load_into(&eval_net.vs, &named_variables(&self.net.vs), true)?;
        Ok(eval_net)
    }

    fn batch_text(&self) -> String {
        let d = &self.cfg.data;
        if self.cfg.model.variant == "supervised" {
            format!("{} labelled", d.batch_size.min(self.data.labeled.len()))
        } else {
            format!(
                "{} labelled + {} unlabelled",
                d.labeled_bs,
                d.batch_size - d.labeled_bs
            )
        }
    }
}

/// `<run>/best.safetensors`: the weights of the best test Dice at a selection point.
pub fn best_path(run_dir: &Path) -> std::path::PathBuf {
    run_dir.join("best.safetensors")
}

/// The headline metric of every run.
const METRIC: &str = "Dice % (decoder 1, sliding window, last iteration)";

impl FbaNetMethod {
    /// A run on cases that are already loaded (the benches pass none: their step takes its
    /// batch directly): what [`Method::build`] does after loading `data.*`.
    pub fn with_data(cfg: &FbaNetConfig, device: Device, data: LaData) -> Result<Self> {
        let net = build_model(cfg, device, true)?;
        if !cfg.model.init.is_empty() {
            let n = init_from(&net, Path::new(&cfg.model.init))?;
            eprintln!("initialised {n} variables from {}", cfg.model.init);
        }
        Ok(Self {
            cfg: cfg.clone(),
            device,
            net,
            data: Arc::new(data),
            best_dice: -1.0,
            best_step: 0,
        })
    }
}

impl Method for FbaNetMethod {
    type Config = FbaNetConfig;
    type Batch = (Tensor, Tensor);
    const NAME: &'static str = "fba-net";

    fn runtime(cfg: &FbaNetConfig) -> &RuntimeConfig {
        &cfg.runtime
    }
    fn log(cfg: &FbaNetConfig) -> &LogConfig {
        &cfg.log
    }
    fn length(cfg: &FbaNetConfig) -> Length {
        Length::Steps(cfg.optim.iterations)
    }

    fn build(cfg: &FbaNetConfig, device: Device) -> Result<Self> {
        let data = LaData::load(cfg)?;
        // the sampler's settings are checked before anything trains
        data.sampler(cfg)?;
        Self::with_data(cfg, device, data)
    }

    fn data(&mut self) -> Result<Box<dyn Batches<Batch = Self::Batch>>> {
        Ok(Box::new(LaBatches::new(self.data.clone(), &self.cfg)?))
    }

    fn optimization(&self, total: u64, _per_epoch: u64) -> Result<Optimization> {
        Ok(Optimization {
            optimizer: Box::new(optimizer(&self.cfg, &self.net)?),
            lr: lr_schedule(&self.cfg, total)?,
            weight_decay: None,
            clip: None,
        })
    }

    fn variant(&self) -> String {
        self.cfg.model.variant.clone()
    }
    fn preset(cfg: &FbaNetConfig) -> Option<Preset> {
        Some(Preset {
            variant: cfg.model.variant.clone(),
            metric: METRIC.into(),
        })
    }
    fn samples_per_step(&self) -> u64 {
        let d = &self.cfg.data;
        if self.cfg.model.variant == "supervised" {
            d.batch_size.min(self.data.labeled.len()) as u64
        } else {
            d.batch_size as u64
        }
    }
    fn describe_data(&self) -> String {
        let d = &self.data;
        format!(
            "LA h5 ({} train: {} labelled + {} unlabelled; {} test)",
            d.train.len(),
            d.labeled.len(),
            d.unlabeled.len(),
            d.test.len()
        )
    }
    fn describe_model(&self) -> String {
        format!(
            "{} V-Net, width {}, {} parameters; batch {}",
            self.cfg.model.variant,
            self.cfg.model.n_filters,
            contrast_core::nn::count_parameters(&self.net.vs),
            self.batch_text()
        )
    }
    fn paper(&self) -> Value {
        serde_json::to_value(&self.cfg.paper).unwrap_or(Value::Null)
    }

    fn step(&mut self, (images, labels): Self::Batch, ctx: &StepCtx) -> Result<Losses> {
        let x = images.to_device(self.device);
        let y = labels.to_device(self.device);
        let w = iteration_weights(&self.cfg, ctx.done());
        let terms = step_terms(&self.net, &x, &y, &w)?;
        let values = terms.values();
        Ok(Losses::new(terms.total, values).with("consistency_weight", w.consistency))
    }

    /// `--record`: the step's patches (`images` `[B, 1, X, Y, Z]`, labelled first) and the
    /// labelled patches' labels (`labels` `[L, X, Y, Z]`).
    fn batch_tensors((images, labels): &Self::Batch) -> Named {
        vec![
            ("images".into(), images.shallow_clone()),
            ("labels".into(), labels.shallow_clone()),
        ]
    }

    /// N ranks train what one process trains on the global batch: the official `train_3d.py`
    /// trains on one GPU. Each rank takes its share of the labelled and of the unlabelled rows;
    /// the Dice term takes its sums over every rank's labelled rows and the contrastive term
    /// every rank's embeddings (both gathered with gradient, see `loss::fba_loss`); the
    /// consistency and cross-entropy means are the ranks' mean.
    fn distributed(_cfg: &FbaNetConfig) -> contrast_core::train::Distributed {
        contrast_core::train::Distributed::GlobalBatch
    }

    /// On: the official code trains on one GPU, whose BatchNorms see the whole batch.
    fn official_sync_batch_norm(_cfg: &FbaNetConfig) -> bool {
        true
    }

    fn state(&self) -> Vec<(String, Named)> {
        vec![("model".into(), named_variables(&self.net.vs))]
    }
    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        load_into(&self.net.vs, ck.group("model")?, true).context("restoring the model")?;
        self.best_dice = ck.state.extra["best_dice"].as_f64().unwrap_or(-1.0);
        self.best_step = ck.state.extra["best_step"].as_u64().unwrap_or(0);
        Ok(())
    }
    fn extra_state(&self) -> Value {
        json!({"best_dice": self.best_dice, "best_step": self.best_step})
    }

    /// The reference's model selection on the test set: every `eval.every` iterations from
    /// `eval.start`, the mean test Dice of decoder 1; the best weights go to `best.safetensors`.
    fn monitor(&mut self, ctx: &StepCtx, run: &RunCtx) -> Result<Monitor> {
        let e = &self.cfg.eval;
        let done = ctx.done();
        if e.every == 0 || done < e.start || !done.is_multiple_of(e.every) {
            return Ok(Monitor::default());
        }
        let sw = sliding_window(&self.cfg);
        let d = tch::no_grad(|| mean_dice(&self.net, &self.data.test, &sw, self.device))?;
        if d > self.best_dice {
            self.best_dice = d;
            self.best_step = done;
            save_weights(&best_path(&run.dir), &named_variables(&self.net.vs))?;
        }
        Ok(Monitor {
            fields: vec![("test_dice".into(), json!(d * 100.0))],
            message: Some(format!(
                "iteration {done}: test Dice {:.2} (best {:.2} @ {})",
                d * 100.0,
                self.best_dice * 100.0,
                self.best_step
            )),
        })
    }

    /// Last-iteration weights (the model as trained, eval mode) and, when the reference's
    /// selection ran, the best-on-test weights, each on every test case.
    fn evaluate(&mut self, run: &RunCtx) -> Result<Evaluation> {
        let sw = sliding_window(&self.cfg);
        let eval_net = self.eval_net()?;
        let save_dir = self
            .cfg
            .eval
            .save_predictions
            .then(|| run.dir.join("predictions"));
        let last = evaluate(
            &eval_net,
            &self.data.test,
            &sw,
            self.device,
            save_dir.as_deref(),
        )?;
        let best_file = best_path(&run.dir);
        let best = if best_file.is_file() {
            load_weights(&eval_net, &best_file)?;
            Some(evaluate(
                &eval_net,
                &self.data.test,
                &sw,
                self.device,
                None,
            )?)
        } else {
            None
        };
        let value =
            SegMetrics::mean(&last.iter().map(|r| r.metrics).collect::<Vec<_>>()).dice * 100.0;
        Ok(Evaluation::new(METRIC, Some(value))
            .with("last_iteration", summarize(&last))
            .with(
                "best_on_test",
                best.as_ref().map(|b| {
                    let mut v = summarize(b);
                    v["step"] = json!(self.best_step);
                    v["selection_dice"] = json!(self.best_dice * 100.0);
                    v
                }),
            )
            .with("patch", self.cfg.data.patch)
            .with("stride", self.cfg.eval.stride)
            .with("n_filters", self.cfg.model.n_filters)
            .with(
                "parameters",
                contrast_core::nn::count_parameters(&self.net.vs),
            )
            .with("iterations", self.cfg.optim.iterations)
            .with("batch", self.batch_text()))
    }

    /// `slices_<case>.png` of the first test case (last-iteration weights): slices with GT /
    /// prediction and decoder 1's A / 1 − A maps.
    fn figures(&mut self, dir: &Path) -> Result<()> {
        let Some(case) = self.data.test.first() else {
            return Ok(());
        };
        let fig = dir.join(format!("slices_{}.png", case.id));
        let eval_net = self.eval_net()?;
        crate::figures::slice_figure(
            &eval_net,
            case,
            &sliding_window(&self.cfg),
            self.device,
            &fig,
        )
        .with_context(|| format!("drawing {}", fig.display()))?;
        Ok(())
    }

    /// The supervised V-Net with the same settings: one decoder, no contrast, no unlabelled
    /// cases, Dice weight 1 (the labelled term alone), `batch_size` labelled patches per step.
    fn baseline(cfg: &FbaNetConfig) -> Option<(String, FbaNetConfig)> {
        let mut b = cfg.clone();
        b.model.variant = "supervised".into();
        b.loss.lambda_seg = 1.0;
        Some(("supervised".into(), b))
    }

    fn table(ours: &RunReport, baseline: Option<&RunReport>) -> String {
        crate::report::comparison(ours, baseline)
    }
}

/// Evaluates saved weights (`best.safetensors`, or a checkpoint folder's `model` group) on the
/// test list; returns the per-case results. `figure`: also draw the slices / A-map figure of
/// the first test case there.
pub fn eval_weights(
    cfg: &FbaNetConfig,
    weights: &Path,
    save_dir: Option<&Path>,
    figure: Option<&Path>,
) -> Result<Vec<CaseResult>> {
    let device = cfg.runtime.init()?;
    let data = LaData::load(cfg)?;
    let net = build_model(cfg, device, false)?;
    if weights.is_dir() {
        let ck = contrast_core::train::Checkpointer::load(weights)?;
        load_into(&net.vs, ck.group("model")?, true)
            .with_context(|| format!("loading {}", weights.display()))?;
    } else {
        load_weights(&net, weights)?;
    }
    let sw = sliding_window(cfg);
    if let (Some(fig), Some(case)) = (figure, data.test.first()) {
        crate::figures::slice_figure(&net, case, &sw, device, fig)
            .with_context(|| format!("drawing {}", fig.display()))?;
    }
    evaluate(&net, &data.test, &sw, device, save_dir)
}

/// Seconds per training iteration at the config's patch and batch (forward + backward + SGD
/// step on random data; the first `warmup` iterations are not timed). fp32 (no autocast).
pub fn time_iterations(cfg: &FbaNetConfig, iters: usize, warmup: usize) -> Result<f64> {
    let device = cfg.runtime.init()?;
    let net = build_model(cfg, device, true)?;
    let mut opt = optimizer(cfg, &net)?;
    let p = cfg.data.patch.map(|v| v as i64);
    let b = cfg.data.batch_size as i64;
    let l = cfg.data.labeled_bs as i64;
    let x = Tensor::randn([b, 1, p[0], p[1], p[2]], (tch::Kind::Float, device));
    let y = Tensor::randint(2, [l, p[0], p[1], p[2]], (tch::Kind::Int64, device));
    let w = loss_weights(cfg, 1.0);
    let mut timed = 0.0;
    for i in 0..warmup + iters {
        let t = std::time::Instant::now();
        let terms = step_terms(&net, &x, &y, &w)?;
        opt.zero_grad();
        terms.total.backward();
        opt.step()?;
        let _ = terms.values();
        if i >= warmup {
            timed += t.elapsed().as_secs_f64();
        }
        eprintln!("iteration {i}: {:.2} s", t.elapsed().as_secs_f64());
    }
    Ok(timed / iters.max(1) as f64)
}
