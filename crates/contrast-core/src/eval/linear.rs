//! Linear probe on frozen, precomputed features: a `Linear(D, C)` classifier trained with SGD
//! (momentum) and a cosine learning rate, evaluated on the test features after every epoch.
//!
//! Protocol sources: PatchMix `main_linear.py` (SGD m 0.9, wd 0, cosine annealing per epoch,
//! evaluate every epoch and keep the best), MoCo/MNCLGLF (`fc` initialised `N(0, 0.01)`, bias 0),
//! MAE (`BatchNorm1d(affine=False, eps=1e-6)` before the head). Features are either precomputed
//! once ([`linear_probe`], cheap) or recomputed every epoch from augmented images through the
//! frozen backbone ([`linear_probe_with`], the official PatchMix / MoCo-v3 protocol with RRC +
//! flip). The classifier lives in plain tensors, so the probe is deterministic for a seed on a device: the
//! data order (SplitMix64 + Fisher–Yates) and the initial weights (Box–Muller) come from our own
//! generator, not libtorch's global one.
//!
//! Reported: per-epoch train loss, top-1 and top-5 (top-k with k = min(5, C)) on the test set;
//! the last epoch's numbers, the best top-1 with its epoch, and the best top-5 (max over epochs,
//! possibly another epoch).

use crate::optim::lars::{Lars, LarsConfig, LarsMode};
use crate::optim::schedule::Schedule;
use crate::optim::{Optimizer, ParamGroup, Sgd};
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Optional transformation of the features before the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureNorm {
    /// Features as given (PatchMix, MoCo).
    #[default]
    None,
    /// L2-normalise each feature vector.
    L2,
    /// MAE's `BatchNorm1d(D, affine=False, eps=1e-6)`: batch statistics while training (running
    /// averages with momentum 0.1), running statistics at evaluation.
    BatchNorm,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinearProbeConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate (PatchMix: `base·bs/256`, ViT-T 0.05).
    pub lr: f64,
    /// Learning rate at the end of the cosine (CosineAnnealingLR `eta_min`).
    pub final_lr: f64,
    /// Linear warm-up epochs (0 in PatchMix/MoCo; MAE uses 10).
    pub warmup_epochs: usize,
    /// `false`: one lr per epoch (PatchMix `CosineAnnealingLR` stepped per epoch);
    /// `true`: per iteration.
    pub per_iteration: bool,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    pub feature_norm: FeatureNorm,
    /// Std of the initial weights (MoCo `normal_(0, 0.01)`); biases start at 0.
    pub init_std: f64,
    /// Initialise as a fresh `torch.nn.Linear` instead (weight and bias `U(−1/√D, 1/√D)`:
    /// `kaiming_uniform_(a=√5)`), as the PatchMix probe does (`model.head = nn.Linear(...)`);
    /// `init_std` is then unused.
    pub torch_default_init: bool,
    pub seed: u64,
    /// Batch size for evaluation (memory only; does not change the result).
    pub eval_batch_size: usize,
    /// `sgd` (momentum, optional Nesterov) or `lars` (core LARS with `lars_trust` in
    /// `lars_mode`; MNCLGLF's probe: `scale_step`, η 1e-3, every parameter adapted).
    pub optimizer: ProbeOptimizer,
    pub lars_trust: f64,
    pub lars_mode: LarsMode,
}

/// The probe's optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeOptimizer {
    #[default]
    Sgd,
    Lars,
}

impl Default for LinearProbeConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch_size: 256,
            lr: 0.1,
            final_lr: 0.0,
            warmup_epochs: 0,
            per_iteration: false,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
            feature_norm: FeatureNorm::None,
            init_std: 0.01,
            torch_default_init: false,
            seed: 0,
            eval_batch_size: 4096,
            optimizer: ProbeOptimizer::Sgd,
            lars_trust: 1e-3,
            lars_mode: LarsMode::ScaleStep,
        }
    }
}

/// Results of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochResult {
    /// 1-based.
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub top1: f64,
    pub top5: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearProbeReport {
    pub epochs: Vec<EpochResult>,
    pub last_top1: f64,
    pub last_top5: f64,
    pub best_top1: f64,
    /// 1-based epoch of `best_top1` (the first, on ties).
    pub best_epoch: usize,
    pub best_top5: f64,
    /// The k of "top-5" (min(5, classes)).
    pub topk: i64,
}

/// SplitMix64: a small, well-mixed generator for the probe's data order and initialisation.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        // multiply-shift; the bias is < n / 2⁶⁴, negligible for data sizes
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    fn permutation(&mut self, n: usize) -> Vec<i64> {
        let mut v: Vec<i64> = (0..n as i64).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
        v
    }
    fn normals(&mut self, n: usize, std: f64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let (u1, u2) = (self.unit(), self.unit());
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
            })
            .collect()
    }
}

/// The probe's initial weight `[classes·d]` and bias `[classes]`: `normal(0, init_std)` and 0, or
/// with `torch_default_init` both `U(−1/√d, 1/√d)` as a fresh `nn.Linear(d, classes)`.
fn probe_init(
    cfg: &LinearProbeConfig,
    classes: i64,
    d: i64,
    rng: &mut SplitMix64,
) -> (Vec<f32>, Vec<f32>) {
    if cfg.torch_default_init {
        let bound = 1.0 / (d as f64).sqrt();
        let mut u = |n: i64| -> Vec<f32> {
            (0..n)
                .map(|_| ((2.0 * rng.unit() - 1.0) * bound) as f32)
                .collect()
        };
        let w = u(classes * d);
        (w, u(classes))
    } else {
        (
            rng.normals((classes * d) as usize, cfg.init_std),
            vec![0f32; classes as usize],
        )
    }
}

fn check_split(x: &Tensor, y: &Tensor, classes: i64, what: &str) -> Result<(i64, i64)> {
    let s = x.size();
    ensure!(s.len() == 2, "{what} features must be [N, D], got {s:?}");
    ensure!(
        x.is_floating_point(),
        "{what} features must be floating point, got {:?}",
        x.kind()
    );
    ensure!(
        y.size() == [s[0]],
        "{what} labels must be [{}], got {:?}",
        s[0],
        y.size()
    );
    ensure!(s[0] > 0, "{what} split is empty");
    let (lo, hi) = (y.min().int64_value(&[]), y.max().int64_value(&[]));
    ensure!(
        lo >= 0 && hi < classes,
        "{what} labels span [{lo}, {hi}] but there are {classes} classes"
    );
    Ok((s[0], s[1]))
}

/// The classifier and its feature transform.
struct Probe {
    weight: Tensor, // [C, D]
    bias: Tensor,   // [C]
    norm: FeatureNorm,
    running_mean: Tensor, // [D]
    running_var: Tensor,  // [D]
}

impl Probe {
    fn features(&self, x: &Tensor, train: bool) -> Tensor {
        match self.norm {
            FeatureNorm::None => x.shallow_clone(),
            FeatureNorm::L2 => crate::loss::normalize(x),
            FeatureNorm::BatchNorm => Tensor::batch_norm(
                x,
                None::<&Tensor>,
                None::<&Tensor>,
                Some(&self.running_mean),
                Some(&self.running_var),
                train,
                0.1,
                1e-6,
                false,
            ),
        }
    }

    fn logits(&self, x: &Tensor, train: bool) -> Tensor {
        self.features(x, train)
            .linear(&self.weight, Some(&self.bias)) // [B, C]
    }
}

/// Train a linear classifier on `train_x [N, D]` / `train_y [N]` (int64 in `[0, classes)`) and
/// evaluate it on `test_x [M, D]` / `test_y [M]` after every epoch. Inputs may live on any
/// device; the probe runs there.
pub fn linear_probe(
    train_x: &Tensor,
    train_y: &Tensor,
    test_x: &Tensor,
    test_y: &Tensor,
    classes: i64,
    cfg: &LinearProbeConfig,
) -> Result<LinearProbeReport> {
    linear_probe_with(
        &mut |_| Ok(train_x.shallow_clone()),
        train_y,
        test_x,
        test_y,
        classes,
        cfg,
    )
}

/// [`linear_probe`] with fresh training features every epoch: `train_features(epoch)` (0-based)
/// returns `[N, D]` in the order of `train_y`, e.g. the frozen backbone's features of that
/// epoch's augmented images (PatchMix / MoCo-v3 `main_linear.py`: RandomResizedCrop + flip
/// through the frozen encoder). With a frozen, eval-mode backbone this is the official protocol
/// exactly: each image is augmented once per epoch and visited once, in a random order.
pub fn linear_probe_with(
    train_features: &mut dyn FnMut(usize) -> Result<Tensor>,
    train_y: &Tensor,
    test_x: &Tensor,
    test_y: &Tensor,
    classes: i64,
    cfg: &LinearProbeConfig,
) -> Result<LinearProbeReport> {
    ensure!(
        classes >= 2,
        "a linear probe needs ≥ 2 classes, got {classes}"
    );
    ensure!(cfg.epochs > 0, "linear probe: epochs must be > 0");
    ensure!(cfg.batch_size > 0, "linear probe: batch_size must be > 0");
    ensure!(
        cfg.eval_batch_size > 0,
        "linear probe: eval_batch_size must be > 0"
    );
    ensure!(
        cfg.warmup_epochs < cfg.epochs,
        "linear probe: warmup_epochs {} must be < epochs {}",
        cfg.warmup_epochs,
        cfg.epochs
    );
    let first = train_features(0).context("linear probe: training features of epoch 1")?;
    let (n, d) = check_split(&first, train_y, classes, "train")?;
    let (_, dt) = check_split(test_x, test_y, classes, "test")?;
    ensure!(
        d == dt,
        "train features have {d} dimensions but test features have {dt}"
    );
    let dev = first.device();
    let mut first = Some(first);
    let test_x = test_x.detach().to_kind(Kind::Float).to_device(dev);
    let (train_y, test_y) = (train_y.to_device(dev), test_y.to_device(dev));

    let mut rng = SplitMix64(cfg.seed ^ 0x5EED_11AE_A4B0_0000);
    let (w0, b0) = probe_init(cfg, classes, d, &mut rng);
    let probe = Probe {
        weight: Tensor::from_slice(&w0)
            .view([classes, d])
            .to_device(dev)
            .set_requires_grad(true),
        bias: Tensor::from_slice(&b0)
            .to_device(dev)
            .set_requires_grad(true),
        norm: cfg.feature_norm,
        running_mean: Tensor::zeros([d], (Kind::Float, dev)),
        running_var: Tensor::ones([d], (Kind::Float, dev)),
    };
    let group = ParamGroup {
        name: "linear".into(),
        params: vec![
            ("weight".into(), probe.weight.shallow_clone()),
            ("bias".into(), probe.bias.shallow_clone()),
        ],
        weight_decay: cfg.weight_decay,
        lr_scale: 1.0,
    };
    let mut opt: Box<dyn Optimizer> = match cfg.optimizer {
        ProbeOptimizer::Sgd => Box::new(
            Sgd::new(vec![group], cfg.lr, cfg.momentum, 0.0, cfg.nesterov)
                .context("linear probe optimiser")?,
        ),
        ProbeOptimizer::Lars => Box::new(
            Lars::new(
                vec![group],
                LarsConfig {
                    lr: cfg.lr,
                    momentum: cfg.momentum,
                    nesterov: cfg.nesterov,
                    trust_coefficient: cfg.lars_trust,
                    mode: cfg.lars_mode,
                    ..LarsConfig::default()
                },
            )
            .context("linear probe optimiser (LARS)")?,
        ),
    };

    let bs = cfg.batch_size as i64;
    let iters = (n + bs - 1) / bs; // the last batch may be smaller (no drop_last)
    let (unit_total, unit_warm) = if cfg.per_iteration {
        (cfg.epochs as i64 * iters, cfg.warmup_epochs as i64 * iters)
    } else {
        (cfg.epochs as i64, cfg.warmup_epochs as i64)
    };
    let schedule = Schedule::WarmupCosine {
        base: cfg.lr,
        final_value: cfg.final_lr,
        total_steps: unit_total as u64,
        warmup_steps: unit_warm as u64,
        warmup_start: 0.0,
    };
    schedule.validate()?;

    let k = classes.min(5);
    let mut epochs = Vec::with_capacity(cfg.epochs);
    let progress = crate::train::Progress::new(cfg.epochs as u64, 0, "linear probe");
    for epoch in 0..cfg.epochs {
        let train_x = match first.take() {
            Some(x) => x,
            None => {
                let x = train_features(epoch).with_context(|| {
                    format!("linear probe: training features of epoch {}", epoch + 1)
                })?;
                ensure!(
                    x.size() == [n, d],
                    "linear probe: epoch {} features are {:?}, expected [{n}, {d}]",
                    epoch + 1,
                    x.size()
                );
                x
            }
        };
        let train_x = train_x.detach().to_kind(Kind::Float).to_device(dev);
        let perm = Tensor::from_slice(&rng.permutation(n as usize)).to_device(dev);
        let mut loss_sum = Tensor::zeros([], (Kind::Float, dev));
        let mut lr = cfg.lr;
        for it in 0..iters {
            let unit = if cfg.per_iteration {
                epoch as i64 * iters + it
            } else {
                epoch as i64
            };
            lr = schedule.value(unit as u64);
            opt.set_lr(lr);
            let idx = perm.narrow(0, it * bs, bs.min(n - it * bs)); // [B]
            let xb = train_x.index_select(0, &idx); // [B, D]
            let yb = train_y.index_select(0, &idx); // [B]
            let loss = probe.logits(&xb, true).cross_entropy_for_logits(&yb);
            opt.zero_grad();
            loss.backward();
            opt.step()?;
            loss_sum += loss.detach() * idx.size()[0] as f64;
        }
        let train_loss = loss_sum.double_value(&[]) / n as f64;
        let (top1, top5) = tch::no_grad(|| evaluate(&probe, &test_x, &test_y, k, cfg));
        epochs.push(EpochResult {
            epoch: epoch + 1,
            lr,
            train_loss,
            top1,
            top5,
        });
        progress.update(epoch as u64 + 1, &format!("top-1 {:.2}", top1 * 100.0));
    }
    progress.finish();
    let last = epochs.last().context("no epoch ran")?.clone();
    let best = epochs
        .iter()
        .fold(&epochs[0], |b, e| if e.top1 > b.top1 { e } else { b });
    let best_top5 = epochs.iter().map(|e| e.top5).fold(f64::MIN, f64::max);
    Ok(LinearProbeReport {
        last_top1: last.top1,
        last_top5: last.top5,
        best_top1: best.top1,
        best_epoch: best.epoch,
        best_top5,
        topk: k,
        epochs,
    })
}

/// `(top-1, top-k)` accuracy in [0, 1] over the test split.
fn evaluate(probe: &Probe, x: &Tensor, y: &Tensor, k: i64, cfg: &LinearProbeConfig) -> (f64, f64) {
    let m = x.size()[0];
    let eb = cfg.eval_batch_size as i64;
    let dev = x.device();
    let mut c1 = Tensor::zeros([], (Kind::Int64, dev));
    let mut ck = Tensor::zeros([], (Kind::Int64, dev));
    let mut s = 0;
    while s < m {
        let len = eb.min(m - s);
        let logits = probe.logits(&x.narrow(0, s, len), false); // [B, C]
        let yb = y.narrow(0, s, len).unsqueeze(1); // [B, 1]
        let (_, top) = logits.topk(k, 1, true, true); // [B, k]
        let hit = top.eq_tensor(&yb); // [B, k]
        c1 += hit.narrow(1, 0, 1).sum(Kind::Int64);
        ck += hit.sum(Kind::Int64);
        s += len;
    }
    (
        c1.int64_value(&[]) as f64 / m as f64,
        ck.int64_value(&[]) as f64 / m as f64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_default_init_is_uniform_within_one_over_sqrt_d() {
        let cfg = LinearProbeConfig {
            torch_default_init: true,
            ..LinearProbeConfig::default()
        };
        let (classes, d) = (10i64, 400i64);
        let (w, b) = probe_init(&cfg, classes, d, &mut SplitMix64(3));
        assert_eq!((w.len(), b.len()), (4000, 10));
        let bound = 1.0 / (d as f32).sqrt(); // 0.05
        assert!(w.iter().chain(&b).all(|v| v.abs() <= bound));
        // U(−a, a) has variance a²/3
        let var = w.iter().map(|v| (v * v) as f64).sum::<f64>() / w.len() as f64;
        assert!(
            (var / (bound as f64 * bound as f64 / 3.0) - 1.0).abs() < 0.1,
            "{var}"
        );
        assert!(b.iter().any(|&v| v != 0.0), "the bias is drawn too");
        // the MoCo default: normal(0, 0.01) weights, zero bias
        let (w, b) = probe_init(
            &LinearProbeConfig::default(),
            classes,
            d,
            &mut SplitMix64(3),
        );
        let std = (w.iter().map(|v| (v * v) as f64).sum::<f64>() / w.len() as f64).sqrt();
        assert!((std / 0.01 - 1.0).abs() < 0.1 && b.iter().all(|&v| v == 0.0));
    }
}
