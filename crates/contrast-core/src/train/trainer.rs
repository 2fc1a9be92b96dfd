//! One training harness for every method: the [`Method`] trait (what a paper adds) and the
//! [`Trainer`] (everything else, once).
//!
//! A method supplies its modules, its training data in step order, its optimiser and schedules,
//! one step's loss terms, its checkpoint groups, its monitors and its evaluation protocol. The
//! Trainer owns the run folder and resolved config, device / threads / seeding, the resume
//! position, the schedules' application, bf16 autocast on CUDA, the NaN/Inf guard, gradient
//! clipping, `metrics.jsonl`, the progress bar, checkpoint cadence and retention, evaluation,
//! figures (a figure failure is a warning) and the typed [`RunReport`].
//!
//! The step order is fixed: reseed libtorch from `(run seed, step)` → pull the batch →
//! set lr / weight decay from the schedules → [`Method::before_step`] → [`Method::step`] (forward
//! and loss, under bf16 autocast when `runtime.autocast_bf16` and the device is CUDA) → NaN/Inf
//! guard on the loss terms (and the loss-spike guard, `runtime.loss_spike`) → zero grads,
//! backward, clip → NaN/Inf guard on the gradients → optimiser update → [`Method::after_step`] →
//! log → monitor → checkpoint (refused when a state tensor is NaN/Inf). A guard's error names
//! the step, the term / parameter / tensor, the batch input that holds NaN/Inf if one does, and
//! the last good checkpoint ([`super::Run::stopped`]). A resumed run restores the checkpoint and
//! replays the data from the step after it, so that on CPU it ends bit-identical to an
//! uninterrupted one.
//!
//! The toy InfoNCE method below is a complete example, and a test of the harness:
//!
//! ```no_run
//! use contrast_core::train::example::{Toy, ToyConfig};
//! use contrast_core::train::{RunOptions, Trainer};
//! let out = Trainer::<Toy>::new(ToyConfig::default(), RunOptions::new("toy", "demo"))
//!     .run(None)
//!     .unwrap();
//! println!("{}", out.report.unwrap().value.unwrap());
//! ```

use super::checkpoint::Checkpoint;
use super::log::LogConfig;
use super::metrics::Progress;
use super::report::{Headline, RunReport};
use super::run::{Run, RunOptions};
use super::runtime::{seed_step, RuntimeConfig};
use crate::optim::clip::clip_grad_norm_tensors;
use crate::optim::schedule::Schedule;
use crate::optim::Optimizer;
use crate::tensors::Named;
use anyhow::{bail, Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Tensor};

/// The checkpoint `extra` key (and report detail) holding the files skipped as corrupt.
const CORRUPT_FILES: &str = "corrupt_files";

/// The training data of a run, in step order.
pub trait Batches {
    type Batch;
    /// Steps in one epoch (the cadence of epoch-based checkpoints and monitors; a sampler without
    /// epochs returns its own notion, e.g. the labelled set over the batch).
    fn per_epoch(&self) -> u64;
    /// The batches of steps `step, step + 1, …` (without end; the Trainer stops pulling).
    fn iter_from(&mut self, step: u64) -> Box<dyn Iterator<Item = Result<Self::Batch>> + '_>;
    /// The list of files skipped as corrupt, when the data skips them (`data.on_corrupt =
    /// "skip"`): the Trainer carries it over resumes and puts it in the report.
    fn skipped(&self) -> Option<crate::data::Skipped> {
        None
    }
}

impl Batches for crate::data::pipeline::Loader {
    type Batch = crate::data::pipeline::Batch;
    fn per_epoch(&self) -> u64 {
        self.batches_per_epoch() as u64
    }
    fn iter_from(&mut self, step: u64) -> Box<dyn Iterator<Item = Result<Self::Batch>> + '_> {
        let per = self.per_epoch().max(1);
        let (epoch, first) = (step / per, (step % per) as usize);
        let this: &Self = self;
        Box::new(
            (epoch..).flat_map(move |e| this.epoch_from(e, if e == epoch { first } else { 0 })),
        )
    }
    fn skipped(&self) -> Option<crate::data::Skipped> {
        crate::data::pipeline::Loader::skipped(self)
    }
}

/// Training data drawn per step: batch `step` is `draw(step)` (a function of the step alone, so
/// a resumed run draws the same batches).
pub struct PerStep<F> {
    pub per_epoch: u64,
    pub draw: F,
}

impl<B, F: FnMut(u64) -> Result<B>> Batches for PerStep<F> {
    type Batch = B;
    fn per_epoch(&self) -> u64 {
        self.per_epoch
    }
    fn iter_from(&mut self, step: u64) -> Box<dyn Iterator<Item = Result<B>> + '_> {
        let draw = &mut self.draw;
        Box::new((step..).map(draw))
    }
}

/// How long a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    Epochs(u64),
    Steps(u64),
}

/// Where a step stands, handed to the method's hooks.
#[derive(Debug, Clone, Copy)]
pub struct StepCtx {
    /// Steps completed before this one (0-based index of this step).
    pub step: u64,
    pub epoch: u64,
    pub per_epoch: u64,
    pub total: u64,
    pub device: Device,
    pub seed: u64,
}

impl StepCtx {
    /// Steps completed once this one is done.
    pub fn done(&self) -> u64 {
        self.step + 1
    }
    /// Whether this step ends an epoch.
    pub fn epoch_end(&self) -> bool {
        self.per_epoch > 0 && self.done().is_multiple_of(self.per_epoch)
    }
}

/// One step's result: the tensor to differentiate and the named terms (guarded against NaN/Inf
/// and logged; the first is the total by convention), plus other values to log.
pub struct Losses {
    pub total: Tensor,
    pub terms: Vec<(String, f64)>,
    pub logged: Vec<(String, Value)>,
}

impl Losses {
    pub fn new<S: Into<String>>(total: Tensor, terms: impl IntoIterator<Item = (S, f64)>) -> Self {
        Self {
            total,
            terms: terms.into_iter().map(|(n, v)| (n.into(), v)).collect(),
            logged: Vec::new(),
        }
    }
    /// The loss alone, as the term `name`.
    pub fn single(name: &str, total: Tensor) -> Self {
        let v = total.double_value(&[]);
        Self::new(total, [(name, v)])
    }
    /// Also log `name = value` for this step (not guarded).
    pub fn with(mut self, name: &str, value: impl Serialize) -> Self {
        self.logged.push((
            name.into(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        ));
        self
    }
}

/// The optimiser of a run and what the Trainer applies to it each step.
pub struct Optimization {
    pub optimizer: Box<dyn Optimizer>,
    /// The base learning rate of step `i` (0-based), set before the step.
    pub lr: Schedule,
    /// The weight decay of step `i`, when it is scheduled.
    pub weight_decay: Option<Schedule>,
    /// Clip the global gradient norm of these tensors to this value before each update (the
    /// norm is logged as `grad_norm`).
    pub clip: Option<(f64, Vec<Tensor>)>,
}

/// What a monitor returns: fields for `metrics.jsonl` at this step and a line for the console.
#[derive(Default)]
pub struct Monitor {
    pub fields: Vec<(String, Value)>,
    pub message: Option<String>,
}

/// Where evaluation and monitors may write (the run folder) and on which device.
#[derive(Debug, Clone)]
pub struct RunCtx {
    pub dir: PathBuf,
    pub device: Device,
    /// `true` in the evaluation that ends a training run; `false` in `eval --run` (a
    /// re-evaluation of a finished run from its checkpoint: a method that saves its trained
    /// model during evaluation must not overwrite it then).
    pub end_of_training: bool,
}

impl RunCtx {
    /// `<run>/figures/`, created on demand.
    pub fn figures_dir(&self) -> Result<PathBuf> {
        let d = self.dir.join("figures");
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        Ok(d)
    }
}

/// What [`Method::preset`] says of a config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preset {
    /// As [`Method::variant`] names it.
    pub variant: String,
    /// As the report's `metric` will name it.
    pub metric: String,
}

/// The evaluation of a finished run: its headline number and the method's details (merged into
/// the report at top level).
pub struct Evaluation {
    pub headline: Headline,
    pub details: serde_json::Map<String, Value>,
}

impl Evaluation {
    pub fn new(metric: impl Into<String>, value: Option<f64>) -> Self {
        Self {
            headline: Headline {
                metric: metric.into(),
                value,
            },
            details: serde_json::Map::new(),
        }
    }
    /// Add a detail field.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.details.insert(
            key.into(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }
}

/// How a method trains when `torchrun` starts it as several ranks (see [`crate::dist`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distributed {
    /// N ranks train what one process trains on the global batch: every rank's loss is the
    /// global batch's (gathered with [`crate::dist::gather_with_grad`]); tested against a
    /// one-process run.
    GlobalBatch,
    /// As the official code trains on several GPUs (the note says how: e.g. keys gathered over
    /// the ranks without gradient); printed when such a run starts.
    AsOfficial(&'static str),
    /// Plain data parallelism: each rank's loss sees only its own rows of the global batch
    /// (its own negatives), and the gradients are averaged. The note says what the official
    /// code does instead; it is printed when such a run starts.
    PerRank(&'static str),
    /// Not yet: the Trainer refuses more than one rank, giving this reason.
    No(&'static str),
}

/// What a paper adds. See the module docs for the order in which the Trainer calls the hooks.
pub trait Method: Sized {
    /// The method's typed config (`[runtime]` and `[log]` inside it).
    type Config: Serialize + DeserializeOwned + Default + Clone;
    type Batch;
    /// `runs/<NAME>/…` and the report's `method`.
    const NAME: &'static str;

    fn runtime(cfg: &Self::Config) -> &RuntimeConfig;
    fn log(cfg: &Self::Config) -> &LogConfig;
    /// How long `cfg` trains.
    fn length(cfg: &Self::Config) -> Length;

    /// Modules, buffers and data. libtorch is seeded with the run seed just before.
    fn build(cfg: &Self::Config, device: Device) -> Result<Self>;
    /// The training data (called once per invocation, after `build`).
    fn data(&mut self) -> Result<Box<dyn Batches<Batch = Self::Batch>>>;
    /// Optimiser, schedules and clipping for a run of `total` steps of `per_epoch` per epoch.
    fn optimization(&self, total: u64, per_epoch: u64) -> Result<Optimization>;

    /// The variant this config trains (`"patchmix"`, `"no-mix"`, …): progress label and report.
    fn variant(&self) -> String;
    /// What a preset trains, from its config alone (`describe --json`): the variant and the
    /// name of the headline metric its report will carry. `None`: not said.
    fn preset(_cfg: &Self::Config) -> Option<Preset> {
        None
    }
    /// Samples per step (for `samples_per_s`).
    fn samples_per_step(&self) -> u64;
    /// One line each for the report.
    fn describe_data(&self) -> String;
    fn describe_model(&self) -> String;
    /// The paper's numbers for this preset (shown beside ours).
    fn paper(&self) -> Value {
        Value::Null
    }

    /// Per-step updates before the forward pass (EMA teachers), outside autocast.
    fn before_step(&mut self, _ctx: &StepCtx) -> Result<()> {
        Ok(())
    }
    /// The forward pass and loss of one batch.
    fn step(&mut self, batch: Self::Batch, ctx: &StepCtx) -> Result<Losses>;
    /// Updates after the optimiser step (clamping a learnable temperature, memory banks).
    fn after_step(&mut self, _ctx: &StepCtx) -> Result<()> {
        Ok(())
    }

    /// Checkpoint groups (the Trainer adds `optim`).
    fn state(&self) -> Vec<(String, Named)>;
    fn restore(&mut self, ck: &Checkpoint) -> Result<()>;
    /// Extra JSON saved in the checkpoint's `state.json` (e.g. the best score so far); read it
    /// back in [`Method::restore`] from `ck.state.extra`.
    fn extra_state(&self) -> Value {
        json!({})
    }

    /// Called after every step; the method decides its own cadence (kNN every N epochs,
    /// validation Dice every N steps). Runs with gradients on; use `tch::no_grad` inside.
    fn monitor(&mut self, _ctx: &StepCtx, _run: &RunCtx) -> Result<Monitor> {
        Ok(Monitor::default())
    }
    /// The evaluation protocol of the paper on the trained model.
    fn evaluate(&mut self, run: &RunCtx) -> Result<Evaluation>;
    /// Pictures of what the model learned, into `dir` (after `evaluate`). A failure is a warning.
    fn figures(&mut self, _dir: &Path) -> Result<()> {
        Ok(())
    }

    /// The baseline of `cfg` (the paper's idea switched off, all else equal) and its run-name
    /// suffix, for `reproduce`; `None` when the method has none.
    fn baseline(_cfg: &Self::Config) -> Option<(String, Self::Config)> {
        None
    }
    /// Whether the official code of what `cfg` trains synchronises its BatchNorms over the GPUs
    /// (the default of `runtime.sync_batch_norm`).
    fn official_sync_batch_norm(_cfg: &Self::Config) -> bool {
        false
    }
    /// How this method, configured as `cfg`, trains as several ranks. Default: not yet (a
    /// method opts in once its training loader takes [`crate::dist::Shard::current`] and its
    /// loss is settled).
    fn distributed(_cfg: &Self::Config) -> Distributed {
        Distributed::No("its training data is not sharded over the ranks yet")
    }
    /// Whether the evaluation that ends a run on several ranks runs on every rank together (its
    /// frozen-feature passes sharded with [`crate::dist::eval_shard`], rank 0 reporting) instead
    /// of on rank 0 alone. Only for an evaluation that writes no files and calls the same
    /// collectives on every rank. Default: rank 0 alone.
    fn evaluates_on_every_rank(_cfg: &Self::Config) -> bool {
        false
    }
    /// The tensors of a batch, by name, for `--record` (what the official code must replay).
    /// Default: none recorded.
    fn batch_tensors(_batch: &Self::Batch) -> Named {
        Vec::new()
    }
    /// Random draws made inside the last step that are not a function of the batch and the
    /// step seed alone (mixing permutations, crop boxes…), for `--record`. Default: none.
    fn step_draws(&mut self) -> Named {
        Vec::new()
    }

    /// The trained backbone as a timm / torchvision state dict (`<method> export --run DIR`);
    /// see [`crate::nn::export`]. Methods without a natural-image backbone keep the default.
    fn export(&self) -> Result<crate::nn::export::Export> {
        bail!("{} has no backbone export", Self::NAME)
    }

    /// The comparison `reproduce` prints (markdown).
    fn table(ours: &RunReport, baseline: Option<&RunReport>) -> String {
        super::report::table(ours, baseline)
    }
}

/// The outcome of one invocation of [`Trainer::run`].
#[derive(Debug)]
pub struct Outcome {
    pub dir: PathBuf,
    /// The step reached (== the run's total unless stopped early).
    pub step: u64,
    /// `(step, first loss term)` of every step this invocation ran.
    pub losses: Vec<(u64, f64)>,
    /// The report, when the run completed.
    pub report: Option<RunReport>,
}

/// Everything that is not the paper: see the module docs.
pub struct Trainer<M: Method> {
    pub cfg: M::Config,
    pub opts: RunOptions,
    /// `--record DIR`: write every input of each step this invocation runs (see [`Recorder`]).
    pub record: Option<PathBuf>,
}

/// `--record DIR`: what a step consumed, for the official code to replay.
///
/// * `initial.safetensors`: the method's state (every checkpoint group, `group/name`) before
///   the first recorded step — our initial (or resumed) weights;
/// * `step-NNNNNNNN.safetensors` (1-based step): the batch ([`Method::batch_tensors`]) and the
///   step's own random draws ([`Method::step_draws`], `draw/…`);
/// * `steps.jsonl`: per step the libtorch seed its own draws ran under
///   (`rank_step_seed(run seed, step, rank)`: the step seed on rank 0), lr,
///   weight decay and every loss term.
///
/// On several ranks each rank records what it consumed, rank 0 into `DIR`, rank `r` into
/// `DIR/rank-r`; the loss terms are the rank's own (before they are averaged over the ranks).
pub struct Recorder {
    dir: PathBuf,
    lines: Vec<u8>,
}

impl Recorder {
    fn open(dir: &Path, initial: &[(String, Named)]) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let all: Named = initial
            .iter()
            .flat_map(|(g, t)| {
                t.iter()
                    .map(move |(n, x)| (format!("{g}/{n}"), x.shallow_clone()))
            })
            .collect();
        crate::tensors::write_safetensors_atomic(&dir.join("initial.safetensors"), &all)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            lines: Vec::new(),
        })
    }

    fn step(&mut self, done: u64, tensors: Named, line: Value) -> Result<()> {
        if !tensors.is_empty() {
            let p = self.dir.join(format!("step-{done:08}.safetensors"));
            crate::tensors::write_safetensors_atomic(&p, &tensors)?;
        }
        self.lines.extend(serde_json::to_vec(&line)?);
        self.lines.push(b'\n');
        super::checkpoint::write_atomic(&self.dir.join("steps.jsonl"), &self.lines)
    }
}

impl<M: Method> Trainer<M> {
    pub fn new(cfg: M::Config, opts: RunOptions) -> Self {
        Self {
            cfg,
            opts,
            record: None,
        }
    }

    /// Record every step's inputs into `dir` (see [`Recorder`]).
    pub fn with_record(mut self, dir: Option<PathBuf>) -> Self {
        self.record = dir;
        self
    }

    /// Train (or resume) and evaluate. `stop_at` ends this invocation after that many steps in
    /// total, with a checkpoint to resume from. Returns the method too (for callers that keep
    /// using the trained model).
    pub fn run_with_method(&self, stop_at: Option<u64>) -> Result<(Outcome, M)> {
        let cfg = &self.cfg;
        let rt = M::runtime(cfg);
        let log = M::log(cfg);
        let mut device = rt.init()?;
        // torchrun's variables, when present: this process is one rank of a group
        let dist = crate::dist::init(device.is_cuda())?;
        if let (Some(d), Device::Cuda(_)) = (dist, device) {
            // one process per GPU; collectives go through Gloo, staged in host memory
            device = Device::Cuda(d.env.local_rank);
        }
        let main = dist.is_none_or(|d| d.rank() == 0);
        crate::dist::set_sync_batch_norm(
            rt.sync_batch_norm
                .unwrap_or_else(|| M::official_sync_batch_norm(cfg)),
        );
        if let Some(d) = dist {
            match M::distributed(cfg) {
                Distributed::No(why) => bail!(
                    "{} cannot train as {} ranks yet: {why} (start it as one process)",
                    M::NAME,
                    d.world()
                ),
                Distributed::AsOfficial(note) if main => eprintln!(
                    "note: {} trains as {} ranks as its official code does on several GPUs: {note}",
                    M::NAME,
                    d.world()
                ),
                Distributed::PerRank(note) if main => eprintln!(
                    "note: {} trains as {} ranks with per-rank negatives (plain data parallelism): {note}",
                    M::NAME,
                    d.world()
                ),
                _ => {}
            }
        }
        let autocast = rt.autocast(device);
        // checked before anything is written
        let mut spike = rt
            .loss_spike
            .map(super::guard::SpikeGuard::new)
            .transpose()?;
        let mut opts = self.opts.clone();
        opts.keep_checkpoints = log.keep_checkpoints;
        let t0 = Instant::now();
        // the method is built (and its config checked) before the run folder is touched: a
        // config that `build` refuses leaves nothing behind
        tch::manual_seed(rt.seed as i64);
        let mut method = M::build(cfg, device)?;
        super::fault::perturb_init(&method.state());
        // rank 0 alone writes the run folder (the others get `None`)
        let mut run = match main {
            true => Some(Run::open(&opts, &super::config::to_toml(cfg)?)?),
            false => None,
        };
        let run_dir = opts.runs_root.join(&opts.method).join(&opts.name);
        let ctx_run = RunCtx {
            dir: run_dir.clone(),
            device,
            end_of_training: true,
        };
        let mut data = method.data()?;
        let per_epoch = data.per_epoch();
        // the files the data skips as corrupt (`data.on_corrupt = "skip"`), over resumes
        let skipped = data.skipped();
        let total = match M::length(cfg) {
            Length::Epochs(e) => {
                if per_epoch == 0 {
                    bail!(
                        "{}: the training set is smaller than one batch (0 steps per epoch)",
                        M::NAME
                    );
                }
                e * per_epoch
            }
            Length::Steps(s) => s,
        };
        let mut opt = method.optimization(total, per_epoch)?;
        let mut resumed = run.as_mut().and_then(|r| r.resumed.take());
        if let Some(d) = dist {
            // rank 0's checkpoint goes to every rank (no shared file system needed)
            resumed = d.share_checkpoint(resumed.as_ref())?;
            if resumed.is_none() {
                // a fresh start: every rank takes rank 0's initial weights, as DDP does
                let ts: Vec<Tensor> = method
                    .state()
                    .into_iter()
                    .flat_map(|(_, n)| n.into_iter().map(|(_, t)| t))
                    .collect();
                d.broadcast(&ts, 0)
                    .context("sending rank 0's initial weights")?;
            }
        }
        let start = resumed.as_ref().map_or(0, |c| c.state.step);
        if let Some(ck) = &resumed {
            if let (Some(s), Some(files)) = (&skipped, ck.state.extra.get(CORRUPT_FILES)) {
                s.extend(
                    files
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f.as_str().map(String::from)),
                );
            }
            method
                .restore(ck)
                .with_context(|| format!("restoring {} from step {start}", M::NAME))?;
            opt.optimizer
                .load_state(ck.group("optim")?)
                .context("restoring the optimiser")?;
            if main {
                eprintln!("resumed {} at step {start}/{total}", run_dir.display());
            }
        }
        drop(resumed);
        let end = stop_at.map_or(total, |s| s.min(total));
        let variant = method.variant();
        let progress = match main {
            true => Progress::new(total, start, &variant),
            false => Progress::hidden(total),
        };
        // the trained parameters (`group/name`): their gradients are checked for NaN / Inf,
        // and averaged over the ranks
        let trained: Vec<(String, Tensor)> = method
            .state()
            .into_iter()
            .flat_map(|(g, n)| n.into_iter().map(move |(k, t)| (format!("{g}/{k}"), t)))
            .filter(|(_, t)| t.requires_grad())
            .collect();
        let params: Vec<Tensor> = match dist {
            Some(_) => trained.iter().map(|(_, t)| t.shallow_clone()).collect(),
            None => Vec::new(),
        };
        let save = |run: &Run, step: u64, method: &M, opt: &dyn Optimizer| -> Result<()> {
            let state = method.state();
            // no checkpoint holds NaN / Inf
            super::guard::check_state(step, &state).map_err(|e| run.stopped(step, e, true))?;
            let optim = opt.state();
            let mut groups: Vec<(&str, &Named)> =
                state.iter().map(|(n, t)| (n.as_str(), t)).collect();
            groups.push(("optim", &optim));
            let mut extra = method.extra_state();
            if let (Some(o), true) = (extra.as_object_mut(), per_epoch > 0) {
                o.insert("epoch".into(), json!(step / per_epoch));
            }
            if let (Some(o), Some(s)) = (extra.as_object_mut(), &skipped) {
                o.insert(CORRUPT_FILES.into(), json!(s.files()));
            }
            run.checkpoints.save(step, rt.seed, &groups, extra)?;
            Ok(())
        };

        let mut recorder = match &self.record {
            Some(dir) if main => Some(Recorder::open(dir, &method.state())?),
            Some(dir) => Some(Recorder::open(
                &dir.join(format!("rank-{}", crate::dist::rank())),
                &method.state(),
            )?),
            None => None,
        };
        let mut losses = Vec::new();
        let mut train_s = 0.0;
        let mut step = start;
        if start < end {
            let mut batches = data.iter_from(start);
            while step < end {
                let ts = Instant::now();
                seed_step(rt.seed, step);
                let batch = batches
                    .next()
                    .with_context(|| format!("the training data ended at step {step}"))??;
                let ctx = StepCtx {
                    step,
                    epoch: step.checked_div(per_epoch).unwrap_or(0),
                    per_epoch,
                    total,
                    device,
                    seed: rt.seed,
                };
                opt.optimizer
                    .set_lr(opt.lr.value(step) * super::fault::lr_factor(step + 1));
                let wd = opt.weight_decay.as_ref().map(|s| s.value(step));
                if let Some(wd) = wd {
                    opt.optimizer.set_weight_decay(wd);
                }
                // several ranks: the batch above comes from the shared step seed (every rank
                // draws the global batch); the step's own draws (dropout and drop-path masks,
                // mixing permutations) differ per rank, as PyTorch DDP scripts seed each process
                // with `seed + rank`. Rank 0 keeps the step seed: one process is unchanged.
                let torch_seed = super::runtime::rank_step_seed(rt.seed, step, crate::dist::rank());
                if crate::dist::rank() > 0 {
                    tch::manual_seed(torch_seed);
                }
                method.before_step(&ctx)?;
                // the batch's tensors (shallow): named by the guard when they hold NaN / Inf
                let inputs = M::batch_tensors(&batch);
                super::fault::poison_input(ctx.done(), &inputs);
                let recorded = recorder.as_ref().map(|_| {
                    inputs
                        .iter()
                        .map(|(n, t)| (n.clone(), t.shallow_clone()))
                        .collect::<Named>()
                });
                let l =
                    crate::autocast::autocast_bf16(autocast, device, || method.step(batch, &ctx))
                        .with_context(|| format!("step {} of {}", ctx.done(), M::NAME))?;
                if let (Some(r), Some(mut tensors)) = (recorder.as_mut(), recorded) {
                    tensors.extend(
                        method
                            .step_draws()
                            .into_iter()
                            .map(|(n, t)| (format!("draw/{n}"), t)),
                    );
                    let terms: serde_json::Map<String, Value> =
                        l.terms.iter().map(|(n, v)| (n.clone(), json!(v))).collect();
                    r.step(
                        ctx.done(),
                        tensors,
                        json!({
                            "step": ctx.done(),
                            "torch_seed": torch_seed,
                            "lr": opt.lr.value(step),
                            "wd": wd,
                            "terms": terms,
                        }),
                    )?;
                }
                let done = ctx.done();
                let mut l = l;
                if let Some(d) = dist {
                    // the global batch's terms (a NaN on any rank stops every rank)
                    let v: Vec<f64> = l.terms.iter().map(|t| t.1).collect();
                    for (t, m) in l.terms.iter_mut().zip(d.mean_f64(&v)?) {
                        t.1 = m;
                    }
                }
                let mut terms: Vec<(&str, f64)> =
                    l.terms.iter().map(|(n, v)| (n.as_str(), *v)).collect();
                if let (Some(v), Some(t)) = (super::fault::loss_at(done), terms.first_mut()) {
                    t.1 = v;
                }
                // a guard's error names the step and what is non-finite; rank 0 adds the last
                // good checkpoint, setting aside one written from the weights at fault unless
                // the batch's inputs explain the fault
                let stop = |e: anyhow::Error| {
                    let bad_inputs = super::guard::describe_inputs(&inputs);
                    let e = match &bad_inputs {
                        Some(why) => e.context(why.clone()),
                        None => e,
                    };
                    match &run {
                        Some(run) => run.stopped(done, e, bad_inputs.is_none()),
                        None => e,
                    }
                };
                super::guard::check_finite(done, &terms).map_err(stop)?;
                if let Some(g) = spike.as_mut() {
                    g.check(done, &terms).map_err(stop)?;
                }
                opt.optimizer.zero_grad();
                l.total.backward();
                if let Some(d) = dist {
                    d.all_reduce_grads(&params)
                        .with_context(|| format!("averaging the gradients of step {done}"))?;
                }
                super::fault::poison_grad(done, &trained);
                let grad_norm = match &opt.clip {
                    Some((max, params)) => {
                        let refs: Vec<&Tensor> = params.iter().collect();
                        Some(clip_grad_norm_tensors(&refs, *max)?)
                    }
                    None => None,
                };
                // NaN / Inf gradients with finite loss terms (a clipped step's norm covers
                // only the clipped parameters, so every gradient is checked)
                let clipped_all = opt
                    .clip
                    .as_ref()
                    .is_some_and(|(_, p)| p.len() == trained.len());
                super::guard::check_grads(done, &trained, grad_norm.filter(|_| clipped_all))
                    .map_err(stop)?;
                drop(inputs);
                opt.optimizer.step()?;
                method.after_step(&ctx)?;
                drop(l.total);
                step = done;
                train_s += ts.elapsed().as_secs_f64();
                let first = l.terms.first().map_or(0.0, |t| t.1);
                losses.push((done, first));
                let due = log.checkpoint_due(done, per_epoch) || done == end;
                let Some(run) = run.as_mut() else {
                    // ranks other than 0: no log, monitor or checkpoint; they wait for rank 0's
                    // checkpoint to be complete (and fail with it, if its write fails)
                    if let (true, Some(d)) = (due, dist) {
                        d.barrier().with_context(|| {
                            format!("waiting for rank 0's checkpoint of step {done}")
                        })?;
                    }
                    super::fault::abort_at(done);
                    continue;
                };
                if (log.log_every > 0 && done.is_multiple_of(log.log_every)) || done == end {
                    let mut fields: Vec<(&str, Value)> = l
                        .terms
                        .iter()
                        .map(|(n, v)| (n.as_str(), json!(v)))
                        .collect();
                    fields.extend(l.logged.iter().map(|(n, v)| (n.as_str(), v.clone())));
                    fields.push(("lr", json!(opt.optimizer.lr())));
                    if let Some(wd) = wd {
                        fields.push(("wd", json!(wd)));
                    }
                    if let Some(g) = grad_norm {
                        fields.push(("grad_norm", json!(g)));
                    }
                    fields.push(("epoch", json!(ctx.epoch)));
                    fields.push(("elapsed_s", json!(t0.elapsed().as_secs_f64())));
                    run.metrics.log(done, &fields)?;
                }
                progress.update(done, &format!("ep {} loss {first:.4}", ctx.epoch));
                // rank 0 alone (as the evaluation)
                let m = crate::dist::unsynchronised(|| method.monitor(&ctx, &ctx_run))?;
                if !m.fields.is_empty() {
                    let refs: Vec<(&str, Value)> = m
                        .fields
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.clone()))
                        .collect();
                    run.metrics.log(done, &refs)?;
                }
                if let Some(line) = &m.message {
                    progress.println(line);
                }
                if due {
                    save(run, done, &method, opt.optimizer.as_ref())?;
                    if let Some(d) = dist {
                        d.barrier()?;
                    }
                }
                super::fault::abort_at(done);
            }
        }
        progress.finish();
        let outcome = |report| Outcome {
            dir: run_dir.clone(),
            step: end,
            losses: losses.clone(),
            report,
        };
        // the evaluation: rank 0 alone, or every rank together for a method that shards it
        // (each rank embeds its share; rank 0 reports); no BatchNorm waits for the other ranks'
        // statistics (e.g. GraSS's heat-map overlays run the network in training mode)
        let every_rank = dist.is_some() && M::evaluates_on_every_rank(cfg);
        let evaluate = |method: &mut M| {
            crate::dist::unsynchronised(|| match every_rank {
                true => crate::dist::on_every_rank(|| method.evaluate(&ctx_run)),
                false => method.evaluate(&ctx_run),
            })
        };
        let Some(run) = run.filter(|_| end == total) else {
            // stopped early, or a rank other than 0 (rank 0 reports)
            if end == total && every_rank {
                evaluate(&mut method).context("the evaluation's share of this rank")?;
            }
            return Ok((outcome(None), method));
        };
        let train_wall = t0.elapsed().as_secs_f64();
        let ev = evaluate(&mut method)?;
        match ctx_run.figures_dir() {
            Ok(dir) => {
                if let Err(e) = crate::dist::unsynchronised(|| method.figures(&dir)) {
                    eprintln!("warning: figures of {} not drawn: {e:#}", run.dir.display());
                }
            }
            Err(e) => eprintln!("warning: {e:#}"),
        }
        let ran = end - start;
        let mut details = ev.details;
        if let Some(d) = dist {
            // how many ranks embedded the evaluation's data
            details.insert(
                "evaluation_ranks".into(),
                json!(if every_rank { d.world() } else { 1 }),
            );
        }
        if let Some(s) = &skipped {
            let files = s.files();
            details.insert("corrupt_files_skipped".into(), json!(files.len()));
            details.insert(CORRUPT_FILES.into(), json!(files));
        }
        if let Some(d) = dist {
            details.insert("world_size".into(), json!(d.world()));
            details.insert("allreduce_s".into(), json!(d.allreduce_s()));
        }
        let report = RunReport {
            schema: RunReport::SCHEMA,
            method: M::NAME.into(),
            variant,
            metric: ev.headline.metric,
            value: ev.headline.value,
            paper: method.paper(),
            data: method.describe_data(),
            model: method.describe_model(),
            epochs: match M::length(cfg) {
                Length::Epochs(e) => Some(e),
                Length::Steps(_) => None,
            },
            steps: total,
            batch_size: method.samples_per_step(),
            device: super::report::device_name(device),
            precision: if autocast { "bf16 autocast" } else { "fp32" }.into(),
            threads: tch::get_num_threads(),
            seed: rt.seed,
            train_wall_s: train_wall,
            wall_s: t0.elapsed().as_secs_f64(),
            samples_per_s: if train_s > 0.0 {
                ran as f64 * method.samples_per_step() as f64 / train_s
            } else {
                0.0
            },
            commit: super::report::commit(),
            details,
        };
        run.write_report(&serde_json::to_value(&report)?)?;
        Ok((outcome(Some(report)), method))
    }

    /// [`Self::run_with_method`] without the method.
    pub fn run(&self, stop_at: Option<u64>) -> Result<Outcome> {
        Ok(self.run_with_method(stop_at)?.0)
    }

    /// The method of `self.cfg` restored from a run folder's newest checkpoint, with the
    /// checkpoint's path and the device.
    pub fn restore_latest(&self, run_dir: &Path) -> Result<(M, PathBuf, Device)> {
        let rt = M::runtime(&self.cfg);
        let device = rt.init()?;
        tch::manual_seed(rt.seed as i64);
        let dir = run_dir.join("checkpoints");
        let latest = super::Checkpointer::new(&dir, usize::MAX)
            .latest()?
            .with_context(|| format!("no checkpoint in {}", dir.display()))?;
        let ck = super::Checkpointer::load(&latest)?;
        let mut method = M::build(&self.cfg, device)?;
        method
            .restore(&ck)
            .with_context(|| format!("restoring {}", latest.display()))?;
        Ok((method, latest, device))
    }

    /// Evaluate a run folder again from its newest checkpoint (its `config.toml` is `self.cfg`,
    /// possibly with overrides): build the method, restore, evaluate, redraw the figures (a
    /// failure is a warning), write `out` (the evaluation's details, headline, the checkpoint and
    /// its step, wall time, and the `note` fields, e.g. the overrides used).
    pub fn evaluate_checkpoint(
        &self,
        run_dir: &Path,
        out: &Path,
        note: &[(&str, Value)],
    ) -> Result<Evaluation> {
        let t0 = Instant::now();
        let (mut method, latest, device) = self.restore_latest(run_dir)?;
        let ctx = RunCtx {
            dir: run_dir.to_path_buf(),
            device,
            end_of_training: false,
        };
        let ev = method.evaluate(&ctx)?;
        match ctx.figures_dir() {
            Ok(dir) => {
                if let Err(e) = method.figures(&dir) {
                    eprintln!("warning: figures of {} not drawn: {e:#}", run_dir.display());
                }
            }
            Err(e) => eprintln!("warning: {e:#}"),
        }
        let step = latest
            .file_name()
            .and_then(|n| n.to_str()?.strip_prefix("step-")?.parse::<u64>().ok());
        let mut v = ev.details.clone();
        v.insert("metric".into(), json!(ev.headline.metric));
        v.insert("value".into(), json!(ev.headline.value));
        v.insert("checkpoint".into(), json!(latest.display().to_string()));
        v.insert("checkpoint_step".into(), json!(step));
        for (k, x) in note {
            v.insert((*k).into(), x.clone());
        }
        v.insert("wall_s".into(), json!(t0.elapsed().as_secs_f64()));
        super::checkpoint::write_atomic(out, &serde_json::to_vec_pretty(&v)?)?;
        Ok(ev)
    }
}
