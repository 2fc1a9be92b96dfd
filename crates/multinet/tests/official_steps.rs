//! N training steps of MNCLGLF (default 50; `cargo xtask official compare multinet --steps N`)
//! against the OFFICIAL training loop of the released code (liweiquan39/MNCLGLF, checked out by
//! `cargo xtask official fetch multinet` into the git-ignored `.official/multinet`), run by
//! `tests/py/official_steps.py`: `ImageNetSolver.train` of `train.py` itself on the repository's
//! `FastMoCo` network (`utils/network_builder.py`: EMA update in the forward, local split and
//! pair combinations, nearest-neighbour memory bank), ResNet (`model/resnet_official.py`),
//! `InfoNCE` loss with the repository's own `utils/ntx_ent_loss.py`, the two-group SGD of
//! `build_optimizer` and the gradient clip at 1. `train.py` imports a `core` package; the
//! repository holds most of it as `utils/` and `model/`, which the adapter maps `core` onto; the
//! adapter's docstring lists what is glue (the missing registries and base class, the data
//! loader, the missing `WCosConEpoch` schedule: the lr of each step is ours, passed in).
//!
//! Ours runs through `multinet::method::Multinet`, the `Method` the Trainer trains: its
//! `optimization` (SGD, cosine with the predictor at a constant lr, clip), `before_step` (EMA),
//! `step` (forward, bank lookups and push, loss), in the Trainer's order (set the lr,
//! before_step, step, zero the gradients, backward, clip, optimiser step).
//!
//! Reduced model (both sides): ResNet with one BasicBlock per stage (ImageNet stem, as the
//! official ResNet), projector 512 → 256 → 256 → 128, predictor 128 → 64 → 128, a 64-row bank
//! (8 rows pushed per step: it wraps at step 8, where lightly's bank and ours agree), batch 8,
//! 32-px views; `loss.released_code_l1 = true` as every preset. Same initial weights (online,
//! predictor and the separately initialised EMA encoder, exported with the official names), same
//! initial bank, same views every step; the step has no random draw of its own (no dropout).
//! Every step's loss terms are compared with `check_steps`; after step N every weight, BN
//! statistic and the bank, against the derived bound (ours vs ours from weights perturbed by one
//! fp32 rounding, × 8·N).
//!
//! Without the checkout (or Python) ours replays against the committed official curves and
//! final norms, `official/fixtures/multinet_steps.json`.
//!
//! A second test replays a real training run instead of random views: the `multinet` binary's
//! `--record` (the Trainer, the data pipeline's augmented views, the schedule's lr), through the
//! same official loop (`a_recorded_training_run_replays_through_the_released_loop`; fixture
//! `official/fixtures/multinet_record_steps.json`).

use contrast_core::data::pipeline::Batch;
use contrast_core::nn::resnet::Stem;
use contrast_core::tensors::{load_into, named_variables};
use contrast_core::testing::official::{
    self, check_steps, checkout, checkout_commit, curves_json, fixture, official_steps,
    perturb_rounding, read_curves, read_fixture, run_official, writing_fixtures, WeightRow,
};
use contrast_core::testing::{get, global_rng_lock};
use contrast_core::train::{Method, StepCtx};
use multinet::config::MultinetConfig;
use multinet::method::{Multinet, Net};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const DEFAULT_STEPS: usize = 50;
const BATCH: i64 = 8;
const SIDE: i64 = 32;
const TERMS: [&str; 3] = ["total", "global_local", "nn"];
const PROJ_HIDDEN: i64 = 256;
const PROJ_OUT: i64 = 128;
const PRED_HIDDEN: i64 = 64;
const BANK: i64 = 64;

fn config() -> MultinetConfig {
    let mut c = MultinetConfig::default();
    c.model.stem = Stem::ImageNet;
    c.model.layers = [1, 1, 1, 1];
    c.model.zero_init_residual = true;
    c.model.proj_hidden = PROJ_HIDDEN;
    c.model.proj_out = PROJ_OUT;
    c.model.pred_hidden = PRED_HIDDEN;
    c.model.bank_size = BANK;
    c.loss.released_code_l1 = true;
    c.optim.batch_size = BATCH as usize;
    c.data.image_size = SIDE as usize;
    c
}

fn mnclglf(m: &Multinet) -> &multinet::method::Mnclglf {
    match &m.net {
        Net::Mnclglf(x) => x,
        Net::Simclr(_) => unreachable!("the config's method is mnclglf"),
    }
}

/// Every variable of ours, as `<store>/<name>` (`encoder`, `predictor`, `ema`), and the bank.
fn variables(m: &Multinet) -> Vec<(String, Tensor)> {
    let n = &mnclglf(m).net;
    let mut v = Vec::new();
    for (store, vs) in [
        ("encoder", &n.encoder_vs),
        ("predictor", &n.predictor_vs),
        ("ema", &n.ema_vs),
    ] {
        v.extend(
            named_variables(vs)
                .into_iter()
                .map(|(k, t)| (format!("{store}/{k}"), t)),
        );
    }
    v
}

/// `<store>/<name>` → the official state-dict name (`FastMoCo`); `bank` stays `bank`.
fn official_name(ours: &str) -> String {
    if ours == "bank" {
        return ours.into();
    }
    let (store, name) = ours.split_once('/').expect("<store>/<name>");
    let projector = |i: &str| match i {
        "0" => "linear1",
        "1" => "bn1",
        "3" => "linear2",
        "4" => "bn2",
        "6" => "linear3",
        "7" => "bn3",
        _ => panic!("projector layer {i}"),
    };
    let encoder = |prefix: &str| -> String {
        if let Some(rest) = name.strip_prefix("backbone.") {
            // nn.Sequential(*children[:-1]): conv1 0, bn1 1, relu 2, maxpool 3, layer1..4 4..7
            let (head, tail) = rest.split_once('.').expect("backbone.<module>.<name>");
            let idx = match head {
                "conv1" => 0,
                "bn1" => 1,
                l => {
                    3 + l
                        .strip_prefix("layer")
                        .expect("layerN")
                        .parse::<usize>()
                        .unwrap()
                }
            };
            format!("{prefix}.0.{idx}.{tail}")
        } else {
            let rest = name
                .strip_prefix("projector.")
                .expect("projector.<i>.<name>");
            let (i, tail) = rest.split_once('.').unwrap();
            format!("{prefix}.1.{}.{tail}", projector(i))
        }
    };
    match store {
        "encoder" => encoder("encoder"),
        "ema" => encoder("encoder_ema"),
        "predictor" => {
            let (i, tail) = name.split_once('.').unwrap();
            let m = match i {
                "0" => "linear1",
                "1" => "bn1",
                "3" => "layer2",
                _ => panic!("predictor layer {i}"),
            };
            format!("predictor.{m}.{tail}")
        }
        _ => panic!("unknown store {store}"),
    }
}

struct Run {
    curves: Vec<Vec<f64>>,
    lrs: Vec<f64>,
    after: Vec<(String, Tensor)>,
}

fn run_ours(init: &[(String, Tensor)], views: &[[Tensor; 3]], perturb: Option<u64>) -> Run {
    let cfg = config();
    let mut m = Multinet::build(&cfg, Device::Cpu).unwrap();
    {
        let x = mnclglf(&m);
        for (store, vs) in [
            ("encoder", &x.net.encoder_vs),
            ("predictor", &x.net.predictor_vs),
            ("ema", &x.net.ema_vs),
        ] {
            let p = format!("{store}/");
            let mine: Vec<(String, Tensor)> = init
                .iter()
                .filter_map(|(n, t)| Some((n.strip_prefix(&p)?.to_string(), t.shallow_clone())))
                .collect();
            load_into(vs, &mine, true).unwrap();
        }
        if let Some(seed) = perturb {
            let vars: Vec<Tensor> = variables(&m).into_iter().map(|v| v.1).collect();
            perturb_rounding(&vars, seed);
        }
    }
    let steps = views.len() as u64;
    let opt = m.optimization(steps, steps).unwrap();
    let (mut optimizer, schedule, clip) = (opt.optimizer, opt.lr, opt.clip);
    let (mut curves, mut lrs) = (Vec::new(), Vec::new());
    for (k, v) in views.iter().enumerate() {
        let ctx = StepCtx {
            step: k as u64,
            epoch: 0,
            per_epoch: steps,
            total: steps,
            device: Device::Cpu,
            seed: cfg.runtime.seed,
        };
        let lr = schedule.value(k as u64);
        optimizer.set_lr(lr);
        lrs.push(lr);
        m.before_step(&ctx).unwrap();
        let batch = Batch {
            views: v.iter().map(Tensor::shallow_clone).collect(),
            labels: Tensor::zeros([BATCH], (Kind::Int64, Device::Cpu)),
            indices: Tensor::arange(BATCH, (Kind::Int64, Device::Cpu)),
        };
        let l = m.step(batch, &ctx).unwrap();
        curves.push(
            TERMS
                .iter()
                .map(|t| l.terms.iter().find(|(n, _)| n == t).expect("a loss term").1)
                .collect(),
        );
        optimizer.zero_grad();
        l.total.backward();
        if let Some((max, params)) = &clip {
            let refs: Vec<&Tensor> = params.iter().collect();
            contrast_core::optim::clip::clip_grad_norm_tensors(&refs, *max).unwrap();
        }
        optimizer.step().unwrap();
        m.after_step(&ctx).unwrap();
    }
    let mut after = variables(&m);
    let bank = mnclglf(&m).bank.features().shallow_clone();
    after.push(("bank".into(), bank));
    Run { curves, lrs, after }
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
) {
    let rows: Vec<WeightRow> = ours
        .iter()
        .zip(perturbed)
        .map(|((name, o), (pn, p))| {
            assert_eq!(name, pn);
            // group: the store and its first module (encoder/backbone.layer1, predictor/0, bank)
            let group = name.split('.').take(2).collect::<Vec<_>>().join(".");
            let f = official(name);
            WeightRow::new(name, group, o, p, f.as_ref().map_err(|n| *n))
        })
        .collect();
    official::check_weights(test, steps, &rows, 8.0 * 2f64.powi(-23));
}

#[test]
fn mnclglf_steps_stay_with_the_released_training_loop() {
    let _rng = global_rng_lock();
    tch::set_num_threads(1); // as the official side; faster on the shared 2 cores
    let steps = official_steps(DEFAULT_STEPS);
    let (checkout, fixture) = (checkout("multinet"), fixture("multinet_steps.json"));
    if checkout_commit(&checkout).is_none() && steps != DEFAULT_STEPS {
        println!("official_steps: no official checkout and {steps} steps ≠ the fixture's {DEFAULT_STEPS}: skipped (`cargo xtask official fetch multinet`)");
        return;
    }
    tch::manual_seed(43);
    let first = Multinet::build(&config(), Device::Cpu).unwrap();
    let init: Vec<(String, Tensor)> = variables(&first)
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    let bank0 = mnclglf(&first).bank.features().copy();
    drop(first);
    let views: Vec<[Tensor; 3]> = (0..steps)
        .map(|_| {
            std::array::from_fn(|_| {
                Tensor::randn([BATCH, 3, SIDE, SIDE], (Kind::Float, Device::Cpu))
            })
        })
        .collect();

    let t = Instant::now();
    let ours = run_ours(&init, &views, None);
    let ours_s = t.elapsed().as_secs_f64();
    let perturbed = run_ours(&init, &views, Some(1));
    println!(
        "official_steps: ours {ours_s:.1} s, ours perturbed {:.1} s",
        t.elapsed().as_secs_f64() - ours_s
    );

    let mut inputs: Vec<(String, Tensor)> = init
        .iter()
        .map(|(n, t)| (format!("w.{}", official_name(n)), t.shallow_clone()))
        .collect();
    inputs.push(("bank".into(), bank0));
    inputs.push((
        "lr".into(),
        Tensor::from_slice(&ours.lrs).to_kind(Kind::Double),
    ));
    for (k, v) in views.iter().enumerate() {
        for (i, x) in v.iter().enumerate() {
            inputs.push((format!("v{i}_{k}"), x.shallow_clone()));
        }
    }
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_steps.py");
    let args = [steps as i64, PROJ_HIDDEN, PROJ_OUT, PRED_HIDDEN].map(|v| v.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Instant::now();
    let Some(out) = run_official(&checkout, script, &refs, &args) else {
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
        );
        println!(
            "official_steps: no official checkout (or no Python for it): ours replayed against the committed official curves ({}, official commit {})",
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
        let key = match official_name(name).as_str() {
            "bank" => "bank".to_string(),
            n => format!("w.{n}"),
        };
        Ok(get(&out, &key).shallow_clone())
    };
    check_weights(
        "official_steps",
        steps,
        &ours.after,
        &perturbed.after,
        &tensor,
    );
    // the schedule: the config's `WCosConEpoch` is not in the repository; its `WCosConLR`
    // counts iterations from 1, ours steps from 0 (for the record, not asserted)
    let wcos = get(&out, "wcoscon");
    let gap = (0..steps)
        .map(|k| (ours.lrs[k] - wcos.double_value(&[k as i64])).abs())
        .fold(0.0, f64::max);
    println!("official_steps: largest |our lr − the repository's WCosConLR| over the {steps} steps: {gap:.3e} (base 0.1)");
    if steps == DEFAULT_STEPS && (writing_fixtures() || !fixture.is_file()) {
        official::write_steps_fixture(
            &fixture,
            &checkout,
            "official MNCLGLF training loop (ImageNetSolver.train of train.py on FastMoCo, InfoNCE, reduced model) on the initial weights, bank and views of crates/multinet/tests/official_steps.rs: per-step loss terms; L2 norm of every variable and of the bank after the steps",
            steps,
            curves_json(&TERMS, &official),
            &[],
            official::after_l2(&out, &["bank"]),
        );
    }
}

/// The recording of a real training run (`multinet pretrain --record`): every input the
/// official loop needs, named as it wants them, and what ours computed.
struct Recording {
    /// `w.<official name>` of every initial variable, `bank`, `lr [steps]`, `v<i>_<k>`.
    inputs: Vec<(String, Tensor)>,
    /// Our loss terms per step (`steps.jsonl`).
    curves: Vec<Vec<f64>>,
    /// Every variable after the last step (the run's final checkpoint), as `variables` names
    /// them, then `bank`.
    after: Vec<(String, Tensor)>,
}

/// Train `steps` steps of the reduced MNCLGLF (the [`config`] above) on a synthetic CIFAR-10
/// with the `multinet` binary through the Trainer and the data pipeline, recording them
/// (`--record`); `perturb`: from weights perturbed by one fp32 rounding
/// (`CONTRAST_PERTURB_INIT`).
fn record_run(dir: &std::path::Path, steps: usize, perturb: Option<u64>) -> Recording {
    let data = dir.join("cifar");
    if !data.exists() {
        contrast_core::testing::write_synthetic_cifar10(&data, 8); // 40 images: 5 steps an epoch
    }
    let mut c = config();
    c.data.format = "cifar10".into();
    c.data.root = data.display().to_string();
    c.data.threads = 1;
    c.optim.epochs = steps.div_ceil(5) as u64;
    c.log.log_every = 1;
    c.runtime.device = "cpu".into();
    c.runtime.threads = 1;
    c.runtime.seed = 43;
    let preset = dir.join("reduced.toml");
    std::fs::write(&preset, contrast_core::train::config::to_toml(&c).unwrap()).unwrap();
    let name = if perturb.is_some() {
        "perturbed"
    } else {
        "ours"
    };
    let bin = env!("CARGO_BIN_EXE_multinet");
    let rec = official::record_run(bin, "multinet", &preset, dir, name, steps, perturb);
    let mut inputs: Vec<(String, Tensor)> = rec
        .initial
        .iter()
        .filter_map(|(n, t)| match n.as_str() {
            "bank/bank" => Some(("bank".into(), t.shallow_clone())),
            n if n.starts_with("bank/") => None,
            n => Some((format!("w.{}", official_name(n)), t.shallow_clone())),
        })
        .collect();
    let lrs: Vec<f64> = rec
        .lines
        .iter()
        .map(|l| l["lr"].as_f64().unwrap())
        .collect();
    inputs.push(("lr".into(), Tensor::from_slice(&lrs).to_kind(Kind::Double)));
    let curves: Vec<Vec<f64>> = rec
        .lines
        .iter()
        .map(|l| {
            TERMS
                .iter()
                .map(|t| l["terms"][t].as_f64().unwrap())
                .collect()
        })
        .collect();
    for k in 0..steps {
        for i in 0..3 {
            let v = rec.get(k, &format!("view{i}"));
            assert_eq!(v.size(), [BATCH, 3, SIDE, SIDE]);
            inputs.push((format!("v{i}_{k}"), v));
        }
    }
    let mut after = Vec::new();
    for store in ["encoder", "predictor", "ema"] {
        let mut g = rec.after(store);
        g.sort_by(|a, b| a.0.cmp(&b.0));
        after.extend(g);
    }
    let bank = rec.last.group("bank").unwrap();
    after.push((
        "bank".into(),
        bank.iter()
            .find(|(n, _)| n == "bank")
            .unwrap()
            .1
            .shallow_clone(),
    ));
    Recording {
        inputs,
        curves,
        after,
    }
}

/// The proof on a real run: `multinet pretrain --record` (the Trainer, the data pipeline's
/// augmented views, the Method's optimiser and schedule) is replayed through the released
/// training loop (`tests/py/official_steps.py`, the same adapter as above) on the recorded
/// initial weights, bank, views and learning rates: every step's loss terms and, after the last
/// step, every variable and the bank within the derived drift bound (ours from perturbed
/// weights, recorded the same way). Without the checkout, the recording is replayed against the
/// committed official curves and norms (`official/fixtures/multinet_record_steps.json`): the
/// recording is bit-identical on every CPU (the pipeline and the initialisation are).
#[test]
fn a_recorded_training_run_replays_through_the_released_loop() {
    let steps = official_steps(DEFAULT_STEPS);
    let (checkout, fixture) = (checkout("multinet"), fixture("multinet_record_steps.json"));
    let have_checkout = checkout_commit(&checkout).is_some();
    if !have_checkout && (steps != DEFAULT_STEPS || !fixture.is_file()) {
        println!("official_steps_recorded: no official checkout and no fixture for {steps} steps: skipped (`cargo xtask official fetch multinet`)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let ours = record_run(dir.path(), steps, None);
    let perturbed = record_run(dir.path(), steps, Some(1));
    println!(
        "official_steps_recorded: two recorded runs of {steps} steps in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let what = "official_steps_recorded";
    let refs: Vec<(&str, &Tensor)> = ours.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_steps.py");
    let args = [steps as i64, PROJ_HIDDEN, PROJ_OUT, PRED_HIDDEN].map(|v| v.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(out) = run_official(&checkout, script, &refs, &args) else {
        let f = read_fixture(&fixture);
        let official = read_curves(&f, "curves", &TERMS);
        check_steps(what, &TERMS, &ours.curves, &official, &perturbed.curves);
        let norm = |name: &str| -> Result<Tensor, f64> {
            Err(f["after_l2"][official_name(name)]
                .as_f64()
                .unwrap_or_else(|| panic!("{name} not in the fixture's after_l2")))
        };
        check_weights(what, steps, &ours.after, &perturbed.after, &norm);
        println!(
            "{what}: no official checkout (or no Python for it): the recording replayed against the committed official curves ({}, official commit {})",
            fixture.display(),
            f["official_commit"].as_str().unwrap_or("?")
        );
        return;
    };
    let official: Vec<Vec<f64>> = (0..steps)
        .map(|k| {
            TERMS
                .iter()
                .map(|t| get(&out, t).double_value(&[k as i64]))
                .collect()
        })
        .collect();
    check_steps(what, &TERMS, &ours.curves, &official, &perturbed.curves);
    let tensor = |name: &str| -> Result<Tensor, f64> {
        let key = match official_name(name).as_str() {
            "bank" => "bank".to_string(),
            n => format!("w.{n}"),
        };
        Ok(get(&out, &key).shallow_clone())
    };
    check_weights(what, steps, &ours.after, &perturbed.after, &tensor);
    if steps == DEFAULT_STEPS && (writing_fixtures() || !fixture.is_file()) {
        official::write_steps_fixture(
            &fixture,
            &checkout,
            "official MNCLGLF training loop (ImageNetSolver.train of train.py on FastMoCo, InfoNCE, reduced model) replaying a recorded run of ours (`multinet pretrain --record`, crates/multinet/tests/official_steps.rs: a_recorded_training_run_replays_through_the_released_loop): per-step loss terms; L2 norm of every variable and of the bank after the steps",
            steps,
            curves_json(&TERMS, &official),
            &[],
            official::after_l2(&out, &["bank"]),
        );
    }
}
