//! A small, complete contrastive run on synthetic data: the harness's reference loop, the core
//! example behind `cargo xtask reproduce toy`, and the subject of the resume tests.
//!
//! Data: `clusters` Gaussian blobs in `dim` dimensions (centres fixed by the seed); each step
//! draws `batch` points and two noisy views of each. Model: a two-layer MLP. Objective: InfoNCE
//! between the views' embeddings. Evaluation: nearest-class-mean accuracy (cosine) of held-out
//! points in embedding space, which rises from chance as the embedding separates the blobs.

use super::metrics::Progress;
use super::run::{Run, RunOptions};
use super::runtime::{seed_step, RuntimeConfig};
use crate::loss::{info_nce, normalize};
use crate::optim::{single_group, Optimizer, Sgd};
use crate::tensors::{load_into, named_variables};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToyConfig {
    pub runtime: RuntimeConfig,
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
    pub checkpoint_every: u64,
    pub log_every: u64,
    pub keep_checkpoints: usize,
}

impl Default for ToyConfig {
    fn default() -> Self {
        Self {
            runtime: RuntimeConfig::default(),
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
            checkpoint_every: 50,
            log_every: 10,
            keep_checkpoints: 3,
        }
    }
}

/// The model: Linear → ReLU → Linear, with tch parameter names `fc1.*`, `fc2.*`.
fn model(p: &nn::Path, c: &ToyConfig) -> impl Module {
    nn::seq()
        .add(nn::linear(p / "fc1", c.dim, c.hidden, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(
            p / "fc2",
            c.hidden,
            c.out_dim,
            Default::default(),
        ))
}

fn centres(c: &ToyConfig, device: Device) -> Tensor {
    // fixed by the seed alone, independent of the step
    seed_step(c.runtime.seed, u64::MAX);
    Tensor::randn([c.clusters, c.dim], (Kind::Float, device)) * 3.0
}

fn sample(c: &ToyConfig, centres: &Tensor, n: i64) -> (Tensor, Tensor) {
    let dev = centres.device();
    let labels = Tensor::randint(c.clusters, [n], (Kind::Int64, dev));
    let x =
        centres.index_select(0, &labels) + Tensor::randn([n, c.dim], (Kind::Float, dev)) * c.noise;
    (x, labels)
}

/// Outcome of [`train`].
#[derive(Debug)]
pub struct ToyOutcome {
    /// The step reached (== `steps` unless stopped early).
    pub step: u64,
    /// Loss of every step run by this invocation, `(step, loss)`.
    pub losses: Vec<(u64, f64)>,
    /// Final weights, sorted by name.
    pub weights: Vec<(String, Tensor)>,
    /// The report written (only when the run completed).
    pub report: Option<serde_json::Value>,
}

/// Train (or resume) the toy run. `stop_at` ends this invocation after that many total steps,
/// leaving a checkpoint to resume from.
pub fn train(cfg: &ToyConfig, opts: &RunOptions, stop_at: Option<u64>) -> Result<ToyOutcome> {
    let device = cfg.runtime.init_without_autocast("the example")?;
    let resolved = super::config::to_toml(cfg)?;
    let mut opts = opts.clone();
    opts.keep_checkpoints = cfg.keep_checkpoints;
    let mut run = Run::open(&opts, &resolved)?;
    let t0 = std::time::Instant::now();

    let vs = nn::VarStore::new(device);
    let net = model(&vs.root(), cfg);
    let mut opt = Sgd::new(
        single_group(&vs, cfg.weight_decay),
        cfg.lr,
        cfg.momentum,
        0.0,
        false,
    )?;
    let start = run.start_step();
    if let Some(ck) = &run.resumed {
        load_into(&vs, ck.group("model")?, true).context("restoring the model")?;
        opt.load_state(ck.group("optim")?)
            .context("restoring the optimiser")?;
        eprintln!("resumed {} at step {start}", run.dir.display());
    }
    let centres = centres(cfg, device);
    let end = stop_at.map_or(cfg.steps, |s| s.min(cfg.steps));
    let progress = Progress::new(cfg.steps, start, "toy");
    let mut losses = Vec::new();
    let save = |run: &Run, step: u64, opt: &Sgd| -> Result<()> {
        let model = named_variables(&vs);
        let optim = opt.state();
        run.checkpoints.save(
            step,
            cfg.runtime.seed,
            &[("model", &model), ("optim", &optim)],
            json!({}),
        )?;
        Ok(())
    };
    for step in start..end {
        seed_step(cfg.runtime.seed, step);
        let (x, _) = sample(cfg, &centres, cfg.batch);
        let v1 = &x + Tensor::randn_like(&x) * cfg.view_noise;
        let v2 = &x + Tensor::randn_like(&x) * cfg.view_noise;
        let loss = info_nce(&net.forward(&v1), &net.forward(&v2), cfg.temperature);
        let value = loss.double_value(&[]);
        let done = step + 1;
        run.check_finite(done, &[("info_nce", value)])?;
        opt.zero_grad();
        loss.backward();
        opt.step()?;
        losses.push((done, value));
        if done % cfg.log_every == 0 || done == end {
            run.metrics
                .log(done, &[("loss", json!(value)), ("lr", json!(opt.lr()))])?;
        }
        progress.update(done, &format!("loss {value:.4}"));
        if done % cfg.checkpoint_every == 0 || done == end {
            save(&run, done, &opt)?;
        }
    }
    progress.finish();
    let weights = named_variables(&vs);
    if end < cfg.steps {
        return Ok(ToyOutcome {
            step: end,
            losses,
            weights,
            report: None,
        });
    }
    // evaluation: nearest class mean (cosine) on held-out points
    let acc = tch::no_grad(|| {
        seed_step(cfg.runtime.seed, u64::MAX - 1);
        let (xb, yb) = sample(cfg, &centres, 1024);
        let (xq, yq) = sample(cfg, &centres, 1024);
        let eb = normalize(&net.forward(&xb));
        let eq = normalize(&net.forward(&xq));
        let means = Tensor::zeros([cfg.clusters, cfg.out_dim], (Kind::Float, device))
            .index_add(0, &yb, &eb);
        let pred = eq
            .matmul(&normalize(&means).transpose(0, 1))
            .argmax(1, false);
        pred.eq_tensor(&yq)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[])
    });
    let wall = t0.elapsed().as_secs_f64();
    let ran = (end - start) as f64;
    let report = json!({
        "method": "toy",
        "metric": "nearest-class-mean accuracy",
        "value": acc,
        "chance": 1.0 / cfg.clusters as f64,
        "final_loss": losses.last().map(|l| l.1),
        "steps": cfg.steps,
        "data": format!("synthetic: {} Gaussian blobs in {} dims", cfg.clusters, cfg.dim),
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "wall_s": wall,
        "samples_per_s": ran * cfg.batch as f64 / wall.max(1e-9),
    });
    run.write_report(&report)?;
    Ok(ToyOutcome {
        step: end,
        losses,
        weights,
        report: Some(report),
    })
}
