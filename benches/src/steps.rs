//! One training step per method at a fixed small configuration, built from the method crates'
//! own step functions (`patchmix::train::step_terms`, `fba_net::train::step_terms`), so the
//! benches time the code that trains. Each case also exports its weights, inputs, settings and
//! loss so that the PyTorch peer (`benches/py/steps.py`) can check it computes the same loss
//! before it is timed.
//!
//! | case | model | input | step |
//! |---|---|---|---|
//! | `patchmix` | ViT-T/4 (192 d, 12 blocks, 65 tokens) + MoCo-v3 projector 4096→256 + predictor, no momentum encoder (the paper's ViT-T setting) | 2 views 3×32×32, batch 32 | two mixes (m = 2), 2 query + 2 key forwards, 3-term soft InfoNCE (τ 0.2), backward, AdamW (decay groups) |
//! | `multinet` | MNCLGLF: ResNet-18 (CIFAR stem) + projector 2048 + predictor 512, separately initialised EMA encoder, memory bank 4096 | 3 views 3×32×32, batch 16 | EMA update, 3 online forwards, 2×(4 grid cells → 6 pair means) local keys, 2 EMA forwards, bank NN + enqueue, 12 global-vs-local InfoNCE + NT-Xent, backward, grad-norm clip 1.0, SGD |
//! | `fba-net` | FBA-Net+ V-Net (width 8, 3 decoders, contrastive head 128 d), no dropout | 4 volumes 1×32×32×32, 2 labelled | forward, Dice + consistency + SimMax/SimMin, backward, SGD momentum 0.9 |

use anyhow::{bail, Context, Result};
use contrast_core::loss::InfoNce;
use contrast_core::optim::adamw::{AdamW, AdamWConfig};
use contrast_core::optim::{decay_groups, Optimizer, Sgd};
use contrast_core::tensors::named_variables;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The cases, in report order.
pub const CASES: &[&str] = &["patchmix", "multinet", "fba-net"];

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
    fn zero_grad(&mut self);
    /// The optimiser update (after the backward pass).
    fn update(&mut self) -> Result<()>;
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

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.detach()
        .to_kind(Kind::Double)
        .to_device(Device::Cpu)
        .double_value(&[]))
}

// ---- PatchMix ---------------------------------------------------------------------------------

/// The paper's drop-path rate, used when timing (the loss check builds the step without it).
pub const PATCHMIX_DROP_PATH: f64 = 0.1;

pub struct PatchMixStep {
    cfg: patchmix::config::PatchMixConfig,
    net: patchmix::model::PatchMixNet,
    mixer: patchmix::mix::PatchMixer,
    nce: InfoNce,
    targets: patchmix::train::StepTargets,
    opt: AdamW,
    views: Vec<Tensor>,
}

impl PatchMixStep {
    pub fn new(batch: i64, deterministic: bool, device: Device) -> Result<Self> {
        let mut cfg = patchmix::config::PatchMixConfig::default();
        cfg.data.image_size = 32;
        cfg.model.arch = "vit_tiny".into();
        cfg.model.patch_size = 4;
        cfg.model.drop_path = if deterministic {
            0.0
        } else {
            PATCHMIX_DROP_PATH
        };
        cfg.model.use_momentum = false;
        cfg.mix.enabled = true;
        cfg.mix.m = 2;
        cfg.mix.p = 1.0;
        cfg.mix.smoothing = 0.0;
        cfg.optim.batch_size = batch as usize;
        let net = patchmix::train::build_net(&cfg, device)?;
        let mixer =
            patchmix::mix::PatchMixer::new(cfg.mix.m, cfg.mix.p, cfg.model.patch_size, 0.0)?;
        let mut nce = InfoNce::new(cfg.optim.temperature)?;
        nce.check_targets = false;
        let targets = patchmix::train::StepTargets::new(&mixer, batch, device);
        let mut groups = decay_groups(&net.encoder_vs, cfg.optim.wd_start);
        groups.extend(decay_groups(&net.predictor_vs, cfg.optim.wd_start));
        let opt = AdamW::new(
            groups,
            AdamWConfig {
                lr: cfg.optim.base_lr * batch as f64 / 256.0,
                beta1: cfg.optim.beta1,
                beta2: cfg.optim.beta2,
                ..AdamWConfig::default()
            },
        )?;
        let s = cfg.data.image_size as i64;
        let views = (0..2)
            .map(|_| Tensor::randn([batch, 3, s, s], (Kind::Float, device)))
            .collect();
        Ok(Self {
            cfg,
            net,
            mixer,
            nce,
            targets,
            opt,
            views,
        })
    }

    fn terms(&self) -> Result<patchmix::loss::Terms> {
        patchmix::train::step_terms(
            &self.net,
            &self.mixer,
            &self.nce,
            &self.targets,
            &self.views,
            true,
        )
    }
}

impl StepCase for PatchMixStep {
    fn name(&self) -> String {
        format!(
            "patchmix_vit_t{}_b{}",
            self.cfg.model.patch_size,
            self.batch()
        )
    }

    fn batch(&self) -> i64 {
        self.cfg.optim.batch_size as i64
    }

    fn loss(&mut self) -> Result<Tensor> {
        Ok(self.terms()?.total)
    }

    fn zero_grad(&mut self) {
        self.opt.zero_grad();
    }

    fn update(&mut self) -> Result<()> {
        self.opt.step()
    }

    fn spec(&self) -> Value {
        let c = &self.cfg;
        let vit = patchmix::train::vit_config(c).ok();
        json!({
            "case": "patchmix",
            "image": c.data.image_size,
            "patch": c.model.patch_size,
            "embed_dim": vit.as_ref().map(|v| v.embed_dim),
            "depth": vit.as_ref().map(|v| v.depth),
            "heads": vit.as_ref().map(|v| v.num_heads),
            "drop_path": c.model.drop_path,
            "drop_path_timing": PATCHMIX_DROP_PATH,
            "proj_layers": c.model.proj_layers,
            "pred_layers": c.model.pred_layers,
            "mlp_dim": c.model.mlp_dim,
            "out_dim": c.model.out_dim,
            "m": c.mix.m,
            "tau": c.optim.temperature,
            "lr": c.optim.base_lr * self.batch() as f64 / 256.0,
            "weight_decay": c.optim.wd_start,
            "betas": [c.optim.beta1, c.optim.beta2],
        })
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = named_variables(&self.net.encoder_vs)
            .into_iter()
            .chain(named_variables(&self.net.predictor_vs))
            .map(|(k, v)| (format!("w:{k}"), v))
            .collect();
        out.push(("in:x1".into(), self.views[0].shallow_clone()));
        out.push(("in:x2".into(), self.views[1].shallow_clone()));
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        tch::manual_seed(SEED);
        let terms = tch::no_grad(|| self.terms())?;
        scalar(&terms.total)
    }
}

// ---- MNCLGLF (multinet) ------------------------------------------------------------------------

pub struct MultinetStep {
    cfg: multinet::config::MultinetConfig,
    learner: multinet::method::Mnclglf,
    opt: Box<dyn Optimizer>,
    params: Vec<Tensor>,
    views: Vec<Tensor>,
}

impl MultinetStep {
    pub fn new(batch: i64, device: Device) -> Result<Self> {
        use multinet::method::Learner;
        let mut cfg = multinet::config::MultinetConfig::default();
        cfg.model.stem = contrast_core::nn::resnet::Stem::Cifar;
        cfg.model.bank_size = 4096;
        cfg.optim.batch_size = batch as usize;
        let learner = multinet::method::Mnclglf::new(&cfg, device)?;
        let opt = multinet::train::build_optimizer(&cfg, &learner)?;
        let params = multinet::train::trainable(&learner);
        let views = (0..learner.views())
            .map(|_| Tensor::randn([batch, 3, 32, 32], (Kind::Float, device)))
            .collect();
        Ok(Self {
            cfg,
            learner,
            opt,
            params,
            views,
        })
    }
}

impl StepCase for MultinetStep {
    fn name(&self) -> String {
        format!("multinet_r18_b{}", self.batch())
    }

    fn batch(&self) -> i64 {
        self.cfg.optim.batch_size as i64
    }

    fn loss(&mut self) -> Result<Tensor> {
        use multinet::method::Learner;
        self.learner.before_step(0)?;
        Ok(self.learner.loss(&self.views)?.0)
    }

    fn zero_grad(&mut self) {
        self.opt.zero_grad();
    }

    fn update(&mut self) -> Result<()> {
        let refs: Vec<&Tensor> = self.params.iter().collect();
        contrast_core::optim::clip::clip_grad_norm_tensors(&refs, self.cfg.optim.clip_grad_norm)?;
        self.opt.step()
    }

    fn spec(&self) -> Value {
        let c = &self.cfg;
        json!({
            "case": "multinet",
            "layers": c.model.layers,
            "proj_hidden": c.model.proj_hidden,
            "proj_out": c.model.proj_out,
            "pred_hidden": c.model.pred_hidden,
            "ema_momentum": c.model.ema_momentum,
            "bank_size": c.model.bank_size,
            "split_num": c.local.split_num,
            "combs": c.local.combs,
            "tau_global_local": c.loss.temperature_global_local,
            "tau_nn": c.loss.temperature_nn,
            "nn_weight": c.loss.nn_weight,
            "released_code_l1": c.loss.released_code_l1,
            "lr": c.optim.lr,
            "momentum": c.optim.momentum,
            "weight_decay": c.optim.weight_decay,
            "clip_grad_norm": c.optim.clip_grad_norm,
        })
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let net = &self.learner.net;
        let mut out = Vec::new();
        for (prefix, vs) in [
            ("encoder", &net.encoder_vs),
            ("predictor", &net.predictor_vs),
            ("ema", &net.ema_vs),
        ] {
            out.extend(
                named_variables(vs)
                    .into_iter()
                    .map(|(k, v)| (format!("w:{prefix}.{k}"), v)),
            );
        }
        for (k, v) in self.learner.bank.state() {
            // a copy: the checked forward enqueues into the bank in place
            out.push((format!("in:{k}"), v.copy()));
        }
        for (i, v) in self.views.iter().enumerate() {
            out.push((format!("in:x{}", i + 1), v.shallow_clone()));
        }
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        use multinet::method::Learner;
        tch::manual_seed(SEED);
        let loss = tch::no_grad(|| self.learner.loss(&self.views))?.0;
        scalar(&loss)
    }
}

// ---- FBA-Net ----------------------------------------------------------------------------------

pub struct FbaStep {
    cfg: fba_net::config::FbaNetConfig,
    net: fba_net::model::FbaNet,
    opt: Sgd,
    x: Tensor,
    y: Tensor,
    w: fba_net::loss::LossWeights,
}

impl FbaStep {
    pub fn new(batch: i64, device: Device) -> Result<Self> {
        let mut cfg = fba_net::config::FbaNetConfig::default();
        cfg.data.patch = [32, 32, 32];
        cfg.data.batch_size = batch as usize;
        cfg.data.labeled_bs = (batch as usize / 2).max(1);
        cfg.model.variant = "fba-net+".into();
        cfg.model.n_filters = 8;
        cfg.model.dim = 128;
        // `train = false`: no dropout, so the loss check is deterministic; the PyTorch peer's
        // network has none either.
        let net = fba_net::train::build_model(&cfg, device, false)?;
        let opt = fba_net::train::optimizer(&cfg, &net)?;
        let p = cfg.data.patch.map(|v| v as i64);
        let l = cfg.data.labeled_bs as i64;
        let x = Tensor::randn([batch, 1, p[0], p[1], p[2]], (Kind::Float, device));
        let y = Tensor::randint(2, [l, p[0], p[1], p[2]], (Kind::Int64, device));
        let w = fba_net::train::loss_weights(&cfg, 1.0);
        Ok(Self {
            cfg,
            net,
            opt,
            x,
            y,
            w,
        })
    }
}

impl StepCase for FbaStep {
    fn name(&self) -> String {
        let p = self.cfg.data.patch;
        format!(
            "fba-net_vnet{}_p{}_b{}",
            self.cfg.model.n_filters,
            p[0],
            self.batch()
        )
    }

    fn batch(&self) -> i64 {
        self.cfg.data.batch_size as i64
    }

    fn loss(&mut self) -> Result<Tensor> {
        Ok(fba_net::train::step_terms(&self.net, &self.x, &self.y, &self.w)?.total)
    }

    fn zero_grad(&mut self) {
        self.opt.zero_grad();
    }

    fn update(&mut self) -> Result<()> {
        self.opt.step()
    }

    fn spec(&self) -> Value {
        let c = &self.cfg;
        json!({
            "case": "fba-net",
            "patch": c.data.patch,
            "labeled": c.data.labeled_bs,
            "n_filters": c.model.n_filters,
            "dim": c.model.dim,
            "lambda_seg": self.w.lambda_seg,
            "consistency": self.w.consistency,
            "temperature": self.w.temperature,
            "lr": c.optim.lr,
            "momentum": c.optim.momentum,
            "weight_decay": c.optim.weight_decay,
        })
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = named_variables(&self.net.vs)
            .into_iter()
            .map(|(k, v)| (format!("w:{k}"), v))
            .collect();
        out.push(("in:x".into(), self.x.shallow_clone()));
        out.push(("in:y".into(), self.y.shallow_clone()));
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        tch::manual_seed(SEED);
        let terms =
            tch::no_grad(|| fba_net::train::step_terms(&self.net, &self.x, &self.y, &self.w))?;
        scalar(&terms.total)
    }
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

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
