//! One training step per method at a fixed small configuration, run through each method
//! crate's [`Method`] (`before_step` → `step` → backward → clip → optimiser → `after_step`, as
//! the one Trainer runs it; see [`Through`]), so the benches time the code that trains. The
//! methods whose `build` reads data sets are built with `with_data` on small synthetic sets;
//! each case feeds its step a fixed batch. Each case also exports its weights, inputs, settings
//! and loss so that the PyTorch peer (`benches/py/steps.py`) can check it computes the same
//! loss before it is timed.
//!
//! | case | model | input | step |
//! |---|---|---|---|
//! | `patchmix` | ViT-T/4 (192 d, 12 blocks, 65 tokens) + MoCo-v3 projector 4096→256 + predictor, no momentum encoder (the paper's ViT-T setting) | 2 views 3×32×32, batch 32 | two mixes (m = 2), 2 query + 2 key forwards, 3-term soft InfoNCE (τ 0.2), backward, AdamW (decay groups) |
//! | `multinet` | MNCLGLF: ResNet-18 (CIFAR stem) + projector 2048 + predictor 512, separately initialised EMA encoder, memory bank 4096 | 3 views 3×32×32, batch 16 | EMA update, 3 online forwards, 2×(4 grid cells → 6 pair means) local keys, 2 EMA forwards, bank NN + enqueue, 12 global-vs-local InfoNCE + NT-Xent, backward, grad-norm clip 1.0, SGD |
//! | `spps` | SimCLR + SPPS: ResNet-18 (CIFAR stem) + head 512→2048 (BN)→128 | 2 views 3×32×32, batch 32; every fourth image has a partner | pick the partners and augment their 8 images (32 px), 3 forwards (per view, BN per batch), multi-positive NT-Xent (τ 0.5), backward, SGD momentum 0.9 |
//! | `spade` | V-Net encoder (width 8) + global head 128→128 (BN)→64 + local decoder (16-d voxel features) | 4 synthetic volumes × 2 overlapping crops 1×32³ (batch = 8 crops), 64 voxel pairs per crop pair | forward, spatial global loss (cross-volume positives, near negatives dropped, distance weights) + local voxel InfoNCE, backward, AdamW |
//! | `grass` | GraSS: ResNet-18 (torchvision layout) + head 512→512 (ReLU)→128 | 2 views 3×96×96, batch 16 | GS stage: forward, NT-Xent (τ 0.5), dL/dF of layer 4, heat maps → boxes (host) → crops, second forward, NT-Xent, backward, LARS (scale mode, trust 0.001) over SGD momentum 0.9 |
//! | `claires` | Dental CLAIRES: ResNet-18 (torchvision layout) + pretrained MiniLM-L6 (mean pooling), projection heads 512/384→256 (GELU, dropout 0.1, LayerNorm) | 32 images 3×128×128 + 32 synthetic captions (8–32 word pieces) | tokenize, image + text forwards, soft-target CLIP loss (τ 1), backward, AdamW (heads 1e-3 with decay, image 1e-4, text 1e-5) |
//! | `fba-net` | FBA-Net+ V-Net (width 8, 3 decoders, contrastive head 128 d), no dropout | 4 volumes 1×32×32×32, 2 labelled | forward, Dice + consistency + SimMax/SimMin, backward, SGD momentum 0.9 |

use anyhow::{bail, Context, Result};
use contrast_core::data::dataset::{Dataset, InMemoryDataset};
use contrast_core::data::pipeline::Batch;
use contrast_core::optim::Optimizer;
use contrast_core::train::{Method, Optimization, StepCtx};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

mod claires;
mod fba_net;
mod grass;
mod multinet;
mod patchmix;
mod spade;
mod spps;

pub use claires::{ClairesStep, CLAIRES_IMAGE, CLAIRES_TOKENS};
pub use fba_net::FbaStep;
pub use grass::{GrassStep, GRASS_CROP};
pub use multinet::MultinetStep;
pub use patchmix::{PatchMixStep, PATCHMIX_DROP_PATH};
pub use spade::SpadeStep;
pub use spps::SppsStep;

/// The cases, in report order.
pub const CASES: &[&str] = &[
    "patchmix", "multinet", "fba-net", "spps", "spade", "grass", "claires",
];

/// Seed of the weights and inputs, and of the RNG right before the checked forward pass.
pub const SEED: i64 = 20261124;

/// One method's training step.
pub trait StepCase {
    /// `<method>_<model>_b<batch>`, e.g. `patchmix_vit_t4_b32`.
    fn name(&self) -> String;
    /// Samples per step.
    fn batch(&self) -> i64;
    /// Forward pass and objective of one step.
    fn loss(&mut self) -> Result<Tensor>;
    /// The step's optimiser.
    fn optimizer(&mut self) -> &mut dyn Optimizer;
    fn zero_grad(&mut self) {
        self.optimizer().zero_grad();
    }
    /// The optimiser update (after the backward pass).
    fn update(&mut self) -> Result<()> {
        self.optimizer().step()
    }
    /// One full training step (forward, loss, backward, optimiser update); returns the loss.
    fn step(&mut self) -> Result<f64> {
        let loss = self.loss()?;
        self.zero_grad();
        loss.backward();
        self.update()?;
        scalar(&loss)
    }
    /// Seconds spent in (forward + loss, backward, optimiser) by one step.
    fn step_phases(&mut self) -> Result<[f64; 3]> {
        let t = std::time::Instant::now();
        let loss = self.loss()?;
        let _ = scalar(&loss)?;
        let f = t.elapsed().as_secs_f64();
        self.zero_grad();
        loss.backward();
        let b = t.elapsed().as_secs_f64() - f;
        self.update()?;
        let u = t.elapsed().as_secs_f64() - f - b;
        Ok([f, b, u])
    }
    /// Settings the PyTorch peer rebuilds the same step from.
    fn spec(&self) -> Value;
    /// Weights (`w:<name>`) and inputs (`in:<name>`) as named tensors.
    fn tensors(&self) -> Vec<(String, Tensor)>;
    /// The loss of one forward pass on the inputs with the RNG at `SEED` (no update; a method
    /// with a memory bank may advance it, after `tensors` was taken).
    fn checked_loss(&mut self) -> Result<f64>;
}

/// Build a case. `deterministic` turns off drop-path / dropout (for the loss check); timing
/// uses `false` where the method trains with them.
pub fn build(
    case: &str,
    batch: Option<i64>,
    deterministic: bool,
    device: Device,
) -> Result<Box<dyn StepCase>> {
    tch::manual_seed(SEED);
    match case {
        "patchmix" => Ok(Box::new(PatchMixStep::new(
            batch.unwrap_or(32),
            deterministic,
            device,
        )?)),
        "fba-net" => Ok(Box::new(FbaStep::new(batch.unwrap_or(4), device)?)),
        "multinet" => Ok(Box::new(MultinetStep::new(batch.unwrap_or(16), device)?)),
        "spps" => Ok(Box::new(SppsStep::new(batch.unwrap_or(32), device)?)),
        // `--batch` = volumes (two crops each)
        "spade" => Ok(Box::new(SpadeStep::new(batch.unwrap_or(4), device)?)),
        // `--batch` = images (two views each)
        "grass" => Ok(Box::new(GrassStep::new(batch.unwrap_or(16), device)?)),
        "claires" => Ok(Box::new(ClairesStep::new(
            batch.unwrap_or(32),
            deterministic,
            device,
        )?)),
        other => bail!("unknown step case `{other}` (known: {})", CASES.join(", ")),
    }
}

/// Write `<dir>/<case>.safetensors` and `<dir>/<case>.json` (spec + our loss); returns the JSON path.
pub fn export(case: &mut dyn StepCase, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = case.name();
    let st = dir.join(format!("{name}.safetensors"));
    let tensors = case.tensors();
    Tensor::write_safetensors(&tensors, &st)
        .with_context(|| format!("writing {}", st.display()))?;
    let loss = case.checked_loss()?;
    let mut spec = case.spec();
    spec["name"] = json!(name);
    spec["batch"] = json!(case.batch());
    spec["seed"] = json!(SEED);
    spec["tensors"] = json!(st.file_name().and_then(|f| f.to_str()));
    spec["loss_rust"] = json!(loss);
    let js = dir.join(format!("{name}.json"));
    std::fs::write(&js, serde_json::to_string_pretty(&spec)?)
        .with_context(|| format!("writing {}", js.display()))?;
    Ok(js)
}

/// A method's training step as the Trainer runs it, for the cases that time a [`Method`]:
/// its [`Optimization`] for a one-step run (lr and weight decay set from the schedules at step
/// 0, as the Trainer sets them), then per step `before_step` → `step` → backward → clip →
/// optimiser → `after_step`. What the Trainer adds around it (seeding, NaN guard, logging,
/// checkpoints) is not timed.
pub struct Through<M: Method> {
    pub method: M,
    pub opt: Optimization,
    pub ctx: StepCtx,
}

impl<M: Method> Through<M> {
    pub fn new(method: M, device: Device) -> Result<Self> {
        let mut opt = method.optimization(1, 1)?;
        opt.optimizer.set_lr(opt.lr.value(0));
        if let Some(wd) = &opt.weight_decay {
            opt.optimizer.set_weight_decay(wd.value(0));
        }
        let ctx = StepCtx {
            step: 0,
            epoch: 0,
            per_epoch: 1,
            total: 1,
            device,
            seed: 0,
        };
        Ok(Self { method, opt, ctx })
    }

    /// `before_step`, then the step's total loss.
    pub fn loss(&mut self, batch: M::Batch) -> Result<Tensor> {
        self.method.before_step(&self.ctx)?;
        Ok(self.method.step(batch, &self.ctx)?.total)
    }

    /// Clipping (when the method clips), the optimiser, `after_step`.
    pub fn update(&mut self) -> Result<()> {
        if let Some((max, params)) = &self.opt.clip {
            let refs: Vec<&Tensor> = params.iter().collect();
            contrast_core::optim::clip::clip_grad_norm_tensors(&refs, *max)?;
        }
        self.opt.optimizer.step()?;
        self.method.after_step(&self.ctx)
    }

    pub fn optimizer(&mut self) -> &mut dyn Optimizer {
        self.opt.optimizer.as_mut()
    }

    /// The loss of one forward pass without gradients, with libtorch's RNG at [`SEED`]
    /// (no `before_step`: the checked weights are the exported ones).
    pub fn checked_loss(&mut self, batch: M::Batch) -> Result<f64> {
        tch::manual_seed(SEED);
        let loss = tch::no_grad(|| self.method.step(batch, &self.ctx))?.total;
        scalar(&loss)
    }
}

/// `n` random `side × side` RGB images (uniform bytes from libtorch's RNG), labels `i % 10`:
/// the data set a case's method is built on when its step reads images itself.
pub(crate) fn random_images(n: usize, side: usize) -> Result<Arc<dyn Dataset>> {
    let px = Tensor::randint(
        256,
        [n as i64, side as i64, side as i64, 3],
        (Kind::Uint8, Device::Cpu),
    );
    let pixels = Vec::<u8>::try_from(&px.flatten(0, -1))?;
    let labels = (0..n as i64).map(|i| i % 10).collect();
    let classes = (0..10).map(|c| c.to_string()).collect();
    Ok(Arc::new(InMemoryDataset::from_nhwc(
        pixels, side, side, 3, labels, classes,
    )?))
}

/// Already augmented views as the loader's batch (labels 0, indices `0..n`).
pub(crate) fn batch_of(views: &[Tensor]) -> Batch {
    let n = views[0].size()[0];
    Batch {
        views: views.iter().map(|v| v.shallow_clone()).collect(),
        labels: Tensor::zeros([n], (Kind::Int64, Device::Cpu)),
        indices: Tensor::arange(n, (Kind::Int64, Device::Cpu)),
    }
}

/// A variable store's variables as exported weights (`w:<name>`).
pub(crate) fn weights(vs: &tch::nn::VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    contrast_core::tensors::named_variables(vs)
        .into_iter()
        .map(|(k, v)| (format!("w:{prefix}{k}"), v))
        .collect()
}

pub(crate) fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.detach()
        .to_kind(Kind::Double)
        .to_device(Device::Cpu)
        .double_value(&[]))
}

/// Peak resident memory of this process (`VmHWM` in `/proc/self/status`), MiB; `None` where
/// the file is not there (not Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// fp32 matmul throughput (GFLOP/s) of `n × n` by `n × n` products, median over `seconds`:
/// the machine's practical peak that the steps' utilisation is measured against.
pub fn matmul_gflops(n: i64, seconds: f64, device: Device) -> f64 {
    let a = Tensor::randn([n, n], (Kind::Float, device));
    let b = Tensor::randn([n, n], (Kind::Float, device));
    let _ = a.matmul(&b);
    let mut times = Vec::new();
    let start = std::time::Instant::now();
    while start.elapsed().as_secs_f64() < seconds || times.len() < 3 {
        let t = std::time::Instant::now();
        let c = a.matmul(&b);
        if device != Device::Cpu {
            let _ = c.sum(Kind::Float).double_value(&[]);
        }
        times.push(t.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / median(&mut times) / 1e9
}

pub use contrast_report::metrics::median;
