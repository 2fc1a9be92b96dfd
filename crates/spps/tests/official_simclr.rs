//! SPPS's SimCLR baseline against the OFFICIAL SimCLR (`google-research/simclr`, checked out by
//! `cargo xtask official fetch simclr` into the git-ignored `.official/simclr`). The official code
//! is TensorFlow, which this workspace does not install: the adapter `tests/py/official_simclr.py`
//! re-expresses `add_contrastive_loss` (`objective.py`) and the lr schedule (`tf2/model.py`
//! `WarmUpAndCosineDecay`) in PyTorch line by line, each line citing the official one, and
//! checks those lines against the checkout before it runs.
//!
//! * the loss (step 1 bar, 1e-5 relative): the official NT-Xent is `loss_a + loss_b`, twice
//!   the mean over the 2N rows; our SimCLR-baseline loss (`spps_nt_xent` without partners, × the
//!   paper presets' `simclr.loss_scale = 2`) and core `NtXent` × 2 equal it, value and gradient;
//! * N SGD steps (default 50) of our `Spps` method (SimCLR, no partners, the paper presets'
//!   `loss_scale = 2` and `joint_forward = true`, one warm-up epoch then cosine) through the
//!   `Method` functions the `Trainer` calls, against the same steps in PyTorch with the official
//!   loss, the official schedule and the official joint forward of both views. The network on
//!   the Python side is NOT official code (torchvision's ResNet, one BasicBlock per stage, CIFAR
//!   stem, + our head Linear–BN–ReLU–Linear, loaded with our weights) and the optimiser is
//!   PyTorch's SGD, as ours (`optim.optimizer = "sgd"`); SimCLR's own TF optimisers (LARS,
//!   Nesterov momentum with an L2 loss) are not compared. Views: our loader's SimCLR views
//!   (16 px) of a synthetic CIFAR-10 (80 images, batch 8); head 512 → 64 → 32, τ 0.5, lr 0.05
//!   (one warm-up epoch of 10 steps, cosine to 0), momentum 0.9, wd 5e-4; no dropout, nothing
//!   random inside the step.
//!   Compared: the lr and loss of every step (bound of `check_steps`), the step-1 gradients and
//!   every variable after N steps (core `check_weights`, same derived bound).
//!
//! Without the checkout: ours against `official/fixtures/spps_simclr_loss.json` and
//! `spps_simclr_steps.json`, one line saying so; other `--steps` without it: skipped, one line.

#[path = "../../contrast-core/tests/common/official_steps.rs"]
mod official_steps;

use contrast_core::data::pipeline::Batch;
use contrast_core::loss::NtXent;
use contrast_core::tensors::named_variables;
use contrast_core::testing::official::{
    self, assert_near, check_steps, checkout, checkout_commit, compare_scalars, fixture, l2,
    official_steps, perturb_rounding, read_curves, read_fixture, run_official, write_scalars,
    writing_fixtures,
};
use contrast_core::testing::{assert_close, get, global_rng_lock, write_synthetic_cifar10};
use contrast_core::train::Method;
use official_steps::{check_vars, drive, read_norms, with_prefix, write_steps_fixture, Official};
use spps::config::{Framework, SppsConfig};
use spps::loss::spps_nt_xent;
use spps::method::Spps;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_simclr.py");
const DEFAULT_STEPS: usize = 50;
/// 80 synthetic training images / batch 8.
const PER_EPOCH: usize = 10;

#[test]
fn nt_xent_equals_the_official_add_contrastive_loss() {
    let _rng = global_rng_lock();
    let t0 = Instant::now();
    const TEST: &str = "spps official_simclr loss";
    tch::manual_seed(41);
    let (n, d, tau) = (8i64, 16i64, 0.5);
    let z = Tensor::randn([2 * n, d], (Kind::Float, Device::Cpu));
    // ours as the SPPS SimCLR baseline computes it: spps_nt_xent of the two views, × loss_scale 2
    let zl = z.copy().set_requires_grad(true);
    let ours = spps_nt_xent(&zl.narrow(0, 0, n), &zl.narrow(0, n, n), None, tau).unwrap() * 2.0;
    ours.backward();
    // core NtXent (the mean over the 2N rows) is half of it
    let zc = z.copy().set_requires_grad(true);
    let core = NtXent::new(tau).unwrap().forward(&zc).unwrap();
    core.backward();
    let dir = checkout("simclr");
    let fx = fixture("spps_simclr_loss.json");
    let (lo, lc) = (ours.double_value(&[]), core.double_value(&[]));
    let (go, gc) = (zl.grad(), zc.grad());
    match run_official(&dir, SCRIPT, &[("z", &z)], &["loss", &tau.to_string()]) {
        Some(out) => {
            let lf = get(&out, "loss").double_value(&[0]);
            let gf = get(&out, "g_z");
            assert_near(
                lo,
                lf,
                1e-5,
                0.0,
                "SPPS SimCLR loss (× 2) vs add_contrastive_loss",
            );
            assert_near(
                2.0 * lc,
                lf,
                1e-5,
                0.0,
                "2 × core NtXent vs add_contrastive_loss",
            );
            let scale = gf.abs().max().double_value(&[]);
            assert_close(&go, gf, 1e-5 * scale, 1e-5, "dL/dz, SPPS SimCLR loss × 2");
            assert_close(
                &(&gc * 2.0),
                gf,
                1e-5 * scale,
                1e-5,
                "dL/dz, 2 × core NtXent",
            );
            println!(
                "{TEST}: official {lf:.9} / ours (spps_nt_xent × 2) {lo:.9} / 2 × core NtXent {:.9}; |diff| {:.2e}, {:.2e}; gradients within 1e-5",
                2.0 * lc,
                (lo - lf).abs(),
                (2.0 * lc - lf).abs()
            );
            if writing_fixtures() || !fx.exists() {
                write_scalars(
                    &fx,
                    &dir,
                    "google-research/simclr objective.py add_contrastive_loss (re-expressed in PyTorch) on z of crates/spps/tests/official_simclr.rs",
                    &[("loss", lf), ("grad_l2", l2(gf))],
                );
            }
        }
        None => {
            compare_scalars(&fx, TEST, &[("loss", lo), ("grad_l2", l2(&go))], 1e-5);
            let f = read_fixture(&fx);
            let lf = f["loss"].as_f64().unwrap();
            assert_near(2.0 * lc, lf, 1e-5, 0.0, "2 × core NtXent vs the fixture");
        }
    }
    println!("{TEST}: wall time {:.1} s", t0.elapsed().as_secs_f64());
}

fn config(root: &Path, steps: usize) -> SppsConfig {
    let mut c = SppsConfig {
        framework: Framework::Simclr,
        ..SppsConfig::default()
    };
    c.data.format = "cifar10".into();
    c.data.root = root.display().to_string();
    c.data.threads = 1;
    c.data.image_size = 16;
    c.data.eval_size = 16;
    c.model.arch = "resnet18".into();
    c.model.layers = vec![1, 1, 1, 1];
    c.simclr.hidden = 64;
    c.simclr.out_dim = 32;
    c.simclr.head_bn = true;
    c.simclr.temperature = 0.5;
    c.simclr.loss_scale = 2.0; // the official loss_a + loss_b
    c.simclr.joint_forward = true; // the official tf.concat of the views
    c.optim.epochs = (steps.div_ceil(PER_EPOCH) as u64).max(2); // the first is the warm-up
    c.optim.batch_size = 8;
    c.optim.optimizer = "sgd".into();
    c.optim.lr = 0.05;
    c.optim.final_lr = 0.0;
    c.optim.warmup_epochs = 1;
    c.optim.momentum = 0.9;
    c.optim.weight_decay = 5e-4;
    c.runtime.device = "cpu".into();
    c.runtime.threads = 1;
    c.runtime.seed = 5;
    c
}

fn vars(m: &Spps) -> Vec<(String, Tensor)> {
    named_variables(m.model.trained_vs())
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect()
}

fn grads(m: &Spps) -> Vec<(String, Tensor)> {
    named_variables(m.model.trained_vs())
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(n, t)| (n, t.grad().detach().copy()))
        .collect()
}

/// `(loss curve, step-1 gradients, variables after, initial variables, views)`.
#[allow(clippy::type_complexity)]
fn run_ours(
    cfg: &SppsConfig,
    steps: usize,
    perturb: bool,
) -> (
    Vec<Vec<f64>>,
    Vec<(String, Tensor)>,
    Vec<(String, Tensor)>,
    Vec<(String, Tensor)>,
    Vec<(String, Tensor)>,
) {
    cfg.runtime.init().unwrap(); // threads and seed, as the Trainer
    tch::manual_seed(cfg.runtime.seed as i64); // as the Trainer, just before `build`
    let mut m = Spps::build(cfg, Device::Cpu).unwrap();
    if perturb {
        for (i, (_, group)) in m.state().iter().enumerate() {
            let t: Vec<Tensor> = group.iter().map(|(_, t)| t.shallow_clone()).collect();
            perturb_rounding(&t, 29 + i as u64);
        }
    }
    let initial = vars(&m);
    let mut views = Vec::new();
    let mut grad1 = Vec::new();
    let curves = drive(
        &mut m,
        cfg,
        steps as u64,
        &["loss"],
        &mut |k, b: &Batch| {
            views.push((format!("x1_{k}"), b.views[0].copy()));
            views.push((format!("x2_{k}"), b.views[1].copy()));
        },
        &mut |k, m: &Spps| {
            if k == 0 {
                grad1 = grads(m);
            }
        },
    );
    (curves, grad1, vars(&m), initial, views)
}

#[test]
fn fifty_sgd_steps_equal_steps_on_the_official_loss_and_schedule() {
    let _rng = global_rng_lock();
    let t0 = Instant::now();
    const TEST: &str = "spps official_simclr steps";
    let steps = official_steps(DEFAULT_STEPS);
    let dir = checkout("simclr");
    let fx = fixture("spps_simclr_steps.json");
    if checkout_commit(&dir).is_none() && steps != DEFAULT_STEPS {
        println!(
            "{TEST}: skipped: {steps} steps need the official checkout (`cargo xtask official fetch simclr`); the fixture holds {DEFAULT_STEPS}"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    write_synthetic_cifar10(&data, 16); // 80 training images
    let cfg = config(&data, steps);
    let (ours, grad1, after, initial, views) = run_ours(&cfg, steps, false);
    let (pert, grad1_p, after_p, _, _) = run_ours(&cfg, steps, true);
    let total = cfg.optim.epochs * PER_EPOCH as u64;
    let schedule = spps::train::lr_schedule(&cfg, PER_EPOCH as u64, total).unwrap();
    let our_lr: Vec<f64> = (0..steps as u64).map(|k| schedule.value(k)).collect();

    let mut inputs: Vec<(String, Tensor)> = initial
        .iter()
        .map(|(n, t)| (format!("w.{n}"), t.shallow_clone()))
        .collect();
    inputs.extend(views);
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let (s, o) = (&cfg.simclr, &cfg.optim);
    let args = [
        "steps".to_string(),
        s.temperature.to_string(),
        "1,1,1,1".to_string(),
        s.hidden.to_string(),
        s.out_dim.to_string(),
        o.lr.to_string(),
        o.weight_decay.to_string(),
        o.momentum.to_string(),
        o.warmup_epochs.to_string(),
        o.epochs.to_string(),
        (PER_EPOCH * o.batch_size).to_string(),
        o.batch_size.to_string(),
        steps.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let terms = ["loss"];
    match run_official(&dir, SCRIPT, &refs, &args) {
        Some(out) => {
            let scalar = |n: String| get(&out, &n).double_value(&[0]);
            for (k, ol) in our_lr.iter().enumerate() {
                let f = scalar(format!("lr_{k}"));
                assert!(
                    (ol - f).abs() <= 1e-12 * f.abs().max(1.0),
                    "{TEST}: lr of step {}: ours {ol} vs official WarmUpAndCosineDecay {f}",
                    k + 1
                );
            }
            println!(
                "{TEST}: the lr of all {steps} steps equals the official WarmUpAndCosineDecay"
            );
            let official: Vec<Vec<f64>> = (0..steps)
                .map(|k| vec![scalar(format!("loss_{k}"))])
                .collect();
            check_steps(TEST, &terms, &ours, &official, &pert);
            let o_grad1 = with_prefix(&out, "g1.");
            let o_after = with_prefix(&out, "w.");
            check_vars(
                &format!("{TEST}, step-1 gradients"),
                1,
                &grad1,
                Official::Tensors(&o_grad1),
                &grad1_p,
                1e-5,
            );
            check_vars(
                TEST,
                steps,
                &after,
                Official::Tensors(&o_after),
                &after_p,
                8.0 * 2f64.powi(-23),
            );
            if steps == DEFAULT_STEPS && (writing_fixtures() || !fx.exists()) {
                write_steps_fixture(
                    &fx,
                    "SGD steps with google-research/simclr's objective.py add_contrastive_loss, tf2/model.py WarmUpAndCosineDecay and joint forward (re-expressed in PyTorch; torchvision ResNet + our head) for the weights and views of crates/spps/tests/official_simclr.rs",
                    &dir,
                    &terms,
                    &official,
                    &o_grad1,
                    &o_after,
                );
            }
        }
        None => {
            let f = read_fixture(&fx);
            let official = read_curves(&f, "curves", &terms);
            check_steps(TEST, &terms, &ours, &official, &pert);
            let g = read_norms(&f, "grad1_l2");
            check_vars(
                &format!("{TEST}, step-1 gradients"),
                1,
                &grad1,
                Official::Norms(&g),
                &grad1_p,
                1e-5,
            );
            let w = read_norms(&f, "after_l2");
            check_vars(
                TEST,
                steps,
                &after,
                Official::Norms(&w),
                &after_p,
                8.0 * 2f64.powi(-23),
            );
            println!(
                "{TEST}: no official checkout (`cargo xtask official fetch simclr`); compared with the committed numbers {} (official commit {})",
                fx.display(),
                f["official_commit"].as_str().unwrap_or("?")
            );
        }
    }
    println!(
        "{TEST}: {steps} steps, wall time {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// Perturbed runs of the recorded replay (one float32 rounding each, in another direction).
const RECORD_PERTURBATIONS: u64 = 2;

/// A run of the `spps` binary recorded with `--record`: `steps` steps of [`config`] on the
/// synthetic CIFAR-10 in `dir/cifar`, from weights perturbed by one float32 rounding when
/// `perturb`. Returns the recording and its loss curve.
fn record_simclr(
    dir: &Path,
    cfg: &SppsConfig,
    steps: usize,
    perturb: Option<u64>,
) -> (official::Recorded, Vec<Vec<f64>>) {
    let preset = dir.join("simclr.toml");
    std::fs::write(&preset, contrast_core::train::config::to_toml(cfg).unwrap()).unwrap();
    let name = match perturb {
        Some(s) => format!("perturbed-{s}"),
        None => "ours".into(),
    };
    let bin = env!("CARGO_BIN_EXE_spps");
    let rec = official::record_run(bin, "spps", &preset, dir, &name, steps, perturb);
    let curve = rec
        .lines
        .iter()
        .map(|l| vec![l["terms"]["loss"].as_f64().unwrap()])
        .collect();
    (rec, curve)
}

/// A real training run of ours replayed on the official objective and schedule: `steps` steps
/// (default 50) of the `spps` binary (SimCLR, no partners; its own initial weights, the
/// Trainer, the data pipeline's SimCLR views) recorded with `--record` and replayed by the same
/// Python steps as `fifty_sgd_steps_equal_steps_on_the_official_loss_and_schedule` (the
/// official `add_contrastive_loss`, `WarmUpAndCosineDecay` and joint forward, re-expressed line
/// by line). Checked: the lr of every step, every step's loss within the derived drift bound
/// (the widest over two perturbation directions), the loss within the one-direction bound of
/// the nearest of our runs, every variable after the steps. Without the checkout: against
/// `official/fixtures/spps_simclr_record_steps.json`.
#[test]
fn a_recorded_training_run_replays_on_the_official_loss_and_schedule() {
    const TEST: &str = "spps official_simclr recorded";
    let steps = official_steps(DEFAULT_STEPS);
    let dir = checkout("simclr");
    let fx = fixture("spps_simclr_record_steps.json");
    if checkout_commit(&dir).is_none() && (steps != DEFAULT_STEPS || !fx.is_file()) {
        println!("{TEST}: skipped: no official checkout (`cargo xtask official fetch simclr`) and no fixture for {steps} steps");
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    write_synthetic_cifar10(&data, 16); // 80 training images
    let mut cfg = config(&data, steps);
    cfg.log.log_every = 1;
    let (ours, ours_curve) = record_simclr(tmp.path(), &cfg, steps, None);
    let perturbed: Vec<_> = (1..=RECORD_PERTURBATIONS)
        .map(|s| record_simclr(tmp.path(), &cfg, steps, Some(s)))
        .collect();
    println!(
        "{TEST}: {} recorded runs of {steps} steps in {:.1} s",
        1 + RECORD_PERTURBATIONS,
        t0.elapsed().as_secs_f64()
    );
    let after = ours.vars("encoder");
    let afters: Vec<_> = perturbed.iter().map(|p| p.0.vars("encoder")).collect();
    let afters: Vec<&[(String, Tensor)]> = afters.iter().map(Vec::as_slice).collect();
    let weights = |o: &dyn Fn(&str) -> Result<Tensor, f64>| {
        official::widest_rows(&after, &afters, o, &official_steps::group_of)
    };
    let mut inputs: Vec<(String, Tensor)> = ours
        .initial
        .iter()
        .filter_map(|(n, t)| {
            Some((
                format!("w.{}", n.strip_prefix("encoder/")?),
                t.shallow_clone(),
            ))
        })
        .collect();
    for k in 0..steps {
        inputs.push((format!("x1_{k}"), ours.get(k, "view0")));
        inputs.push((format!("x2_{k}"), ours.get(k, "view1")));
    }
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let (s, o) = (&cfg.simclr, &cfg.optim);
    let args = [
        "steps".to_string(),
        s.temperature.to_string(),
        "1,1,1,1".to_string(),
        s.hidden.to_string(),
        s.out_dim.to_string(),
        o.lr.to_string(),
        o.weight_decay.to_string(),
        o.momentum.to_string(),
        o.warmup_epochs.to_string(),
        o.epochs.to_string(),
        (PER_EPOCH * o.batch_size).to_string(),
        o.batch_size.to_string(),
        steps.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let terms = ["loss"];
    let out = run_official(&dir, SCRIPT, &refs, &args);
    let (official_curve, rows) = match &out {
        Some(out) => {
            let scalar = |n: String| get(out, &n).double_value(&[0]);
            for (k, line) in ours.lines.iter().enumerate() {
                let (ol, f) = (line["lr"].as_f64().unwrap(), scalar(format!("lr_{k}")));
                assert!(
                    (ol - f).abs() <= 1e-12 * f.abs().max(1.0),
                    "{TEST}: lr of step {}: ours {ol} vs official WarmUpAndCosineDecay {f}",
                    k + 1
                );
            }
            let c: Vec<Vec<f64>> = (0..steps)
                .map(|k| vec![scalar(format!("loss_{k}"))])
                .collect();
            let w = weights(&|n| Ok(get(out, &format!("w.{n}")).shallow_clone()));
            (c, w)
        }
        None => {
            let f = read_fixture(&fx);
            let w = weights(&official::fixture_l2(&f));
            println!(
                "{TEST}: no official checkout (`cargo xtask official fetch simclr`); the recording against the committed numbers {} (official commit {})",
                fx.display(),
                f["official_commit"].as_str().unwrap_or("?")
            );
            (read_curves(&f, "curves", &terms), w)
        }
    };
    let pert: Vec<_> = perturbed.iter().map(|p| p.1.clone()).collect();
    official::check_replay(
        TEST,
        &terms,
        steps,
        &ours_curve,
        &pert,
        &official_curve,
        &[0],
        &rows,
    );
    if let Some(out) = &out {
        if steps == DEFAULT_STEPS && (writing_fixtures() || !fx.exists()) {
            official::write_steps_fixture(
                &fx,
                &dir,
                "SGD steps with google-research/simclr's objective.py add_contrastive_loss, tf2/model.py WarmUpAndCosineDecay and joint forward (re-expressed in PyTorch; torchvision ResNet + our head) replaying a recorded run of ours (`spps pretrain --record`, crates/spps/tests/official_simclr.rs: a_recorded_training_run_replays_on_the_official_loss_and_schedule): per-step loss; L2 norm of every variable after the steps",
                steps,
                official::curves_json(&terms, &official_curve),
                &[],
                official::after_l2(out, &[]),
            );
        }
    }
    println!(
        "{TEST}: {steps} steps, wall time {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
