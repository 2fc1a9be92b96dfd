//! N training steps of GraSS (default 50; `cargo xtask official compare grass --steps N`)
//! against the OFFICIAL training step of its VISSL fork (GeoX-Lab/GraSS, checked out by
//! `cargo xtask official fetch grass` into the git-ignored `.official/grass`), run by
//! `tests/py/official_steps.py`: the fork's `GraSS_train_step` itself (first forward, loss,
//! `getHeadMapCut` + `DACrop` on the layer-4 gradient, second forward on the crops, loss,
//! backward, optimiser step) on the fork's model (VISSL ResNe(X)t trunk returning the layer-4 map,
//! two `MLP` heads), loss (`SimclrInfoNCELoss`, τ 0.5), parameter groups, LARC over SGD and lr
//! schedule; the adapter's docstring lists the glue (framework stubs, the task object, the
//! composite of the schedule).
//!
//! Ours runs through the functions `grass::method::Pretrain` trains with: `step_output` (what
//! `Pretrain::step` calls in the gradient-guided stage), `build_optimizer` (LARC over SGD, BN
//! without decay) and `Schedule::grass_vissl` (what `Pretrain::optimization` builds), in the
//! Trainer's order: set the lr, the step's loss, zero the gradients, backward, optimiser step.
//!
//! Reduced model (both sides): a one-block-per-stage Bottleneck ResNet at full width (heads
//! 2048 → 2048 → 128), 8 views of 64 × 64 (a 2 × 2 layer-4 map), the schedule over the N steps.
//! Same initial weights (ours, exported with the official state-dict names), same views at every
//! step; the step has no random draw of its own (no dropout; the boxes follow from the
//! gradient). Every step's lr, first-forward loss, training loss and Σ‖cropped view‖ are compared
//! with `check_steps`; after step N every weight and BN statistic, against the same derived bound
//! (ours vs ours from weights perturbed by one fp32 rounding, × 8·N).
//!
//! Without the checkout (or Python with OpenCV and scikit-image) ours replays against the
//! committed official curves and final weight norms, `official/fixtures/grass_steps.json`.

use contrast_core::loss::NtXent;
use contrast_core::nn::resnet::{resnet50, BlockKind, ResNetConfig};
use contrast_core::optim::schedule::Schedule;
use contrast_core::optim::Optimizer;
use contrast_core::tensors::{load_into, named_variables};
use contrast_core::testing::get;
use contrast_core::testing::global_rng_lock;
use contrast_core::testing::official::{
    self, check_steps, checkout, checkout_commit, curves_json, fixture, l2, official_steps,
    perturb_rounding, read_curves, read_fixture, run_official, writing_fixtures, WeightRow,
};
use grass::config::PretrainConfig;
use grass::method::{build_optimizer, step_output};
use grass::model::GrassNet;
use grass::sampling::crop_views;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const DEFAULT_STEPS: usize = 50;
const IMAGES: i64 = 4; // 2 × 4 views per step
const SIDE: i64 = 64;
const TERMS: [&str; 4] = ["lr", "loss_guide", "loss", "crop_l2"];
/// `pretrain.lr_scale` (both sides): at the schedule's own peak (4.8) LARC moves every weight by
/// up to ~5 % per step, and on a batch of 8 noise views the run is chaotic: one fp32 rounding
/// at the start grows to 6 % of the weights in 50 steps (measured), which leaves the N-step
/// bound nothing to say after step 8. A tenth of the rate keeps the run in the regime where the
/// drift bound still discriminates.
const LR_SCALE: f64 = 0.1;

fn reduced_trunk() -> ResNetConfig {
    ResNetConfig {
        block: BlockKind::Bottleneck,
        layers: [1, 1, 1, 1],
        ..resnet50()
    }
}

/// Our variable name → the official state-dict name (`BaseSSLMultiInputOutputModel`).
fn official_name(ours: &str) -> String {
    if let Some(rest) = ours.strip_prefix("trunk.") {
        format!("trunk._feature_blocks.{rest}")
    } else if let Some(rest) = ours.strip_prefix("head.") {
        // head.<i>.0.<w|b> → heads.<i>.clf.0.<w|b> (each one-layer VISSL MLP)
        let (i, rest) = rest.split_once('.').expect("head.<i>.<layer>.<name>");
        format!("heads.{i}.clf.{rest}")
    } else {
        panic!("no official name for {ours}")
    }
}

/// What a run of ours gives: `[step][TERMS]` and the variables after the steps.
struct Run {
    curves: Vec<Vec<f64>>,
    after: Vec<(String, Tensor)>,
    cropped: usize,
}

fn run_ours(init: &[(String, Tensor)], views: &[Tensor], perturb: Option<u64>) -> Run {
    let net = GrassNet::with_trunk(Device::Cpu, &reduced_trunk(), 128, false).unwrap();
    load_into(&net.vs, init, true).unwrap();
    if let Some(seed) = perturb {
        let vars: Vec<Tensor> = named_variables(&net.vs).into_iter().map(|v| v.1).collect();
        perturb_rounding(&vars, seed);
    }
    // the official values (grass_1gpu_resnet_b256.yaml), the lr scaled by LR_SCALE
    let p = PretrainConfig {
        lr_scale: LR_SCALE,
        ..PretrainConfig::default()
    };
    let lr = Schedule::grass_vissl(views.len() as u64).unwrap();
    let mut opt = build_optimizer(&p, &net, lr.value(0)).unwrap();
    let loss_fn = NtXent::new(p.temperature).unwrap();
    let (mut curves, mut cropped) = (Vec::new(), 0);
    for (k, x) in views.iter().enumerate() {
        let rate = lr.value(k as u64);
        opt.set_lr(rate);
        let rate = rate * LR_SCALE; // what the groups run at (`lr_scale`)
        let out = step_output(&net, &loss_fn, x, true, p.threshold_ratio).unwrap();
        let (boxes, guide) = out.sampling.expect("the GS stage samples");
        cropped += boxes.iter().filter(|b| b.is_some()).count();
        let crops = crop_views(x, &boxes).unwrap();
        let crop_l2 = crops
            .to_kind(Kind::Double)
            .flatten(1, -1)
            .norm_scalaropt_dim(2, [1], false)
            .sum(Kind::Double)
            .double_value(&[]);
        curves.push(vec![rate, guide, out.loss.double_value(&[]), crop_l2]);
        opt.zero_grad();
        out.loss.backward();
        opt.step().unwrap();
    }
    Run {
        curves,
        after: named_variables(&net.vs),
        cropped,
    }
}

/// After the steps, every variable: `‖ours − official‖ ≤ 8·N·‖ours − perturbed‖` (the N-step
/// drift bound of `drift_bound`, applied to the weights; floored at 8 fp32 roundings of the
/// official value, `8·2⁻²³·‖official‖`, for a variable the perturbation leaves bit-identical).
/// With only the official norms (the fixture), `|‖ours‖ − ‖official‖|`, which the same bound
/// bounds (`|‖a‖ − ‖b‖| ≤ ‖a − b‖`). Prints the largest relative difference and drift per group.
fn check_weights(
    test: &str,
    steps: usize,
    ours: &[(String, Tensor)],
    perturbed: &[(String, Tensor)],
    official: &dyn Fn(&str) -> Result<Tensor, f64>,
    group_of: &dyn Fn(&str) -> String,
) {
    let rows: Vec<WeightRow> = ours
        .iter()
        .zip(perturbed)
        .map(|((name, o), (pn, p))| {
            assert_eq!(name, pn);
            let f = official(name);
            WeightRow::new(name, group_of(name), o, p, f.as_ref().map_err(|n| *n))
        })
        .collect();
    official::check_weights(test, steps, &rows, 8.0 * 2f64.powi(-23));
}

fn group_of(name: &str) -> String {
    name.split('.').take(2).collect::<Vec<_>>().join(".")
}

#[test]
fn grass_steps_stay_with_the_official_train_step() {
    let _rng = global_rng_lock();
    tch::set_num_threads(1); // as the official side; faster on the shared 2 cores
    let steps = official_steps(DEFAULT_STEPS);
    let (checkout, fixture) = (checkout("grass"), fixture("grass_steps.json"));
    let have_checkout = checkout_commit(&checkout).is_some();
    if !have_checkout && steps != DEFAULT_STEPS {
        println!("official_steps: no official checkout and {steps} steps ≠ the fixture's {DEFAULT_STEPS}: skipped (`cargo xtask official fetch grass`)");
        return;
    }
    tch::manual_seed(41);
    let init = named_variables(
        &GrassNet::with_trunk(Device::Cpu, &reduced_trunk(), 128, false)
            .unwrap()
            .vs,
    );
    let views: Vec<Tensor> = (0..steps)
        .map(|_| Tensor::randn([2 * IMAGES, 3, SIDE, SIDE], (Kind::Float, Device::Cpu)))
        .collect();

    let t = Instant::now();
    let ours = run_ours(&init, &views, None);
    let ours_s = t.elapsed().as_secs_f64();
    let perturbed = run_ours(&init, &views, Some(1));
    println!(
        "official_steps: ours {ours_s:.1} s, ours perturbed {:.1} s; {} of {} views cropped",
        t.elapsed().as_secs_f64() - ours_s,
        ours.cropped,
        steps * 2 * IMAGES as usize
    );

    let mut inputs: Vec<(String, Tensor)> = init
        .iter()
        .map(|(n, t)| (format!("w.{}", official_name(n)), t.copy()))
        .collect();
    for (k, x) in views.iter().enumerate() {
        inputs.push((format!("x_{k}"), x.shallow_clone()));
    }
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_steps.py");
    let (n, scale) = (steps.to_string(), LR_SCALE.to_string());
    let t = Instant::now();
    let out = run_official(&checkout, script, &refs, &[&n, &scale]);
    let Some(out) = out else {
        let f = read_fixture(&fixture);
        let official = read_curves(&f, "curves", &TERMS);
        check_steps(
            "official_steps",
            &TERMS,
            &ours.curves,
            &official,
            &perturbed.curves,
        );
        let norm = |name: &str| -> Result<Tensor, f64> {
            Err(f["after_l2"][official_name(name)]
                .as_f64()
                .unwrap_or_else(|| panic!("{name} not in the fixture's after_l2")))
        };
        check_weights(
            "official_steps",
            steps,
            &ours.after,
            &perturbed.after,
            &norm,
            &group_of,
        );
        println!(
            "official_steps: no official checkout (or no Python with OpenCV / scikit-image): ours replayed against the committed official curves ({}, official commit {})",
            fixture.display(),
            f["official_commit"].as_str().unwrap_or("?")
        );
        return;
    };
    println!(
        "official_steps: official {:.1} s (with the Python start and the npz transfer)",
        t.elapsed().as_secs_f64()
    );
    let official: Vec<Vec<f64>> = (0..steps)
        .map(|k| {
            TERMS
                .iter()
                .map(|t| get(&out, t).double_value(&[k as i64]))
                .collect()
        })
        .collect();
    check_steps(
        "official_steps",
        &TERMS,
        &ours.curves,
        &official,
        &perturbed.curves,
    );
    let tensor = |name: &str| -> Result<Tensor, f64> {
        Ok(get(&out, &format!("w.{}", official_name(name))).shallow_clone())
    };
    check_weights(
        "official_steps",
        steps,
        &ours.after,
        &perturbed.after,
        &tensor,
        &group_of,
    );
    if steps == DEFAULT_STEPS && (writing_fixtures() || !fixture.is_file()) {
        let after: serde_json::Map<String, serde_json::Value> = out
            .iter()
            .filter_map(|(n, t)| Some((n.strip_prefix("w.")?.to_string(), l2(t).into())))
            .collect();
        let v = serde_json::json!({
            "what": "official GraSS train step (GraSS_train_step of the VISSL fork, reduced model) on the initial weights and views of crates/grass/tests/official_steps.rs: per-step lr, first-forward loss, training loss, sum of cropped-view L2 norms; L2 norm of every variable after the steps",
            "official_commit": checkout_commit(&checkout),
            "steps": steps,
            "curves": curves_json(&TERMS, &official),
            "after_l2": after,
        });
        std::fs::write(&fixture, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
        println!("official: wrote {}", fixture.display());
    }
}

mod common;

/// Perturbed runs of the recorded replay (one float32 rounding each, in another direction).
const RECORD_PERTURBATIONS: u64 = 2;
/// The recorded replay's terms (the official adapter's names): the lr the groups run at, the
/// first forward's loss, the training loss.
const RECORD_TERMS: [&str; 3] = ["lr", "loss_guide", "loss"];

/// A run of the `grass` binary recorded with `--record`: `n` gradient-guided steps (no SimCLR
/// warm-up) of the reduced model (`model.layers = [1, 1, 1, 1]`, ResNet-50 width, linear head
/// → 128) on the synthetic Dubai-format scenes (the data pipeline's 64-px views of 8 tiles,
/// batch 4: 8 views a step), lr scaled by [`LR_SCALE`]. Returns the recording and each step's
/// `[lr × scale, loss_guide, loss]` (the first forward's loss from the run's metrics).
fn record_grass(
    dir: &std::path::Path,
    n: usize,
    perturb: Option<u64>,
) -> (official::Recorded, Vec<Vec<f64>>) {
    let data = dir.join("dubai");
    if !data.exists() {
        common::dubai_like(&data);
    }
    let mut c = common::config(&data);
    c.runtime.threads = 1;
    c.model.arch = "resnet50".into();
    c.model.layers = Some([1, 1, 1, 1]);
    c.model.out_dim = 128;
    c.model.head_relu = false;
    c.pretrain.method = "grass".into();
    c.pretrain.batch_size = IMAGES as usize;
    c.pretrain.epochs = n.div_ceil(2) as u64; // 8 tiles, batch 4: 2 steps an epoch
    c.pretrain.warmup_epochs = Some(0);
    c.pretrain.lr_scale = LR_SCALE;
    c.pretrain.overlays = 0;
    c.log.log_every = 1;
    let preset = dir.join("reduced.toml");
    std::fs::write(&preset, contrast_core::train::config::to_toml(&c).unwrap()).unwrap();
    let name = match perturb {
        Some(s) => format!("perturbed-{s}"),
        None => "ours".into(),
    };
    let rec = official::record_run(
        env!("CARGO_BIN_EXE_grass"),
        "grass",
        &preset,
        dir,
        &name,
        n,
        perturb,
    );
    let run = dir.join("runs/grass").join(&name);
    let guide = contrast_core::testing::ranks::curve(&run, "loss_guide");
    assert_eq!(guide.len(), n, "one loss_guide per step");
    let curves = rec
        .lines
        .iter()
        .zip(guide)
        .map(|(l, g)| {
            vec![
                l["lr"].as_f64().unwrap() * LR_SCALE,
                g,
                l["terms"]["loss"].as_f64().unwrap(),
            ]
        })
        .collect();
    (rec, curves)
}

/// A real pre-training run of ours replayed by the official step: `n` steps (default 50) of the
/// `grass` binary recorded with `--record` (its own initial weights, the Trainer, the data
/// pipeline's views, the schedule) replayed by the fork's `GraSS_train_step` on the same views
/// (`tests/py/official_steps.py`, the boxes following from the gradient on both sides). Checked:
/// every step's lr, first-forward loss and training loss within the derived drift bound (the
/// widest over two perturbation directions), the official loss within the one-direction bound
/// of the nearest of our runs, every variable after the steps. Without the checkout: against
/// `official/fixtures/grass_record_steps.json`.
#[test]
fn a_recorded_training_run_replays_through_the_official_train_step() {
    let steps = official_steps(DEFAULT_STEPS);
    let test = "official_steps_recorded";
    let (checkout, fixture) = (checkout("grass"), fixture("grass_record_steps.json"));
    let have_checkout = checkout_commit(&checkout).is_some();
    if !have_checkout && (steps != DEFAULT_STEPS || !fixture.is_file()) {
        println!("{test}: no official checkout and no fixture for {steps} steps: skipped (`cargo xtask official fetch grass`)");
        return;
    }
    if steps % 2 == 1 {
        println!("{test}: {steps} steps: skipped (2 steps an epoch: the schedule spans whole epochs, so the step count must be even)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let (ours, ours_curves) = record_grass(dir.path(), steps, None);
    let perturbed: Vec<_> = (1..=RECORD_PERTURBATIONS)
        .map(|s| record_grass(dir.path(), steps, Some(s)))
        .collect();
    println!(
        "{test}: {} recorded runs of {steps} steps in {:.1} s",
        1 + RECORD_PERTURBATIONS,
        t.elapsed().as_secs_f64()
    );
    let after = ours.vars("model");
    let afters: Vec<_> = perturbed.iter().map(|(p, _)| p.vars("model")).collect();
    let afters: Vec<&[(String, Tensor)]> = afters.iter().map(Vec::as_slice).collect();
    let weights = |official: &dyn Fn(&str) -> Result<Tensor, f64>| {
        official::widest_rows(&after, &afters, official, &group_of)
    };
    let mut inputs: Vec<(String, Tensor)> = ours
        .initial
        .iter()
        .filter_map(|(n, t)| {
            let name = n.strip_prefix("model/")?;
            Some((format!("w.{}", official_name(name)), t.shallow_clone()))
        })
        .collect();
    for k in 0..steps {
        let x = Tensor::cat(&[ours.get(k, "view0"), ours.get(k, "view1")], 0);
        assert_eq!(x.size(), [2 * IMAGES, 3, SIDE, SIDE]);
        inputs.push((format!("x_{k}"), x));
    }
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_steps.py");
    let (n, scale) = (steps.to_string(), LR_SCALE.to_string());
    let out = run_official(&checkout, script, &refs, &[&n, &scale]);
    let (official_curves, rows) = match &out {
        Some(out) => {
            let c: Vec<Vec<f64>> = (0..steps)
                .map(|k| {
                    RECORD_TERMS
                        .iter()
                        .map(|t| get(out, t).double_value(&[k as i64]))
                        .collect()
                })
                .collect();
            let w =
                weights(
                    &|name| Ok(get(out, &format!("w.{}", official_name(name))).shallow_clone()),
                );
            (c, w)
        }
        None => {
            let f = read_fixture(&fixture);
            let norm = official::fixture_l2(&f);
            let w = weights(&|name| norm(&official_name(name)));
            println!(
                "{test}: no official checkout (or no Python with OpenCV / scikit-image): the recording against the committed official numbers ({}, official commit {})",
                fixture.display(),
                f["official_commit"].as_str().unwrap_or("?")
            );
            (read_curves(&f, "curves", &RECORD_TERMS), w)
        }
    };
    let pert: Vec<_> = perturbed.iter().map(|p| p.1.clone()).collect();
    // the nearest-run statement on the training loss (term 2)
    official::check_replay(
        test,
        &RECORD_TERMS,
        steps,
        &ours_curves,
        &pert,
        &official_curves,
        &[2],
        &rows,
    );
    if let Some(out) = &out {
        if steps == DEFAULT_STEPS && (writing_fixtures() || !fixture.is_file()) {
            official::write_steps_fixture(
                &fixture,
                &checkout,
                "official GraSS train step (GraSS_train_step of the VISSL fork, reduced model) replaying a recorded run of ours (`grass pretrain --record` on synthetic Dubai-format scenes, crates/grass/tests/official_steps.rs: a_recorded_training_run_replays_through_the_official_train_step): per-step lr, first-forward loss, training loss; L2 norm of every variable after the steps",
                steps,
                curves_json(&RECORD_TERMS, &official_curves),
                &[],
                official::after_l2(out, &[]),
            );
        }
    }
}
