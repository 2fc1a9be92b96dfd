//! FBA-Net+ training iterations of ours against the same iterations of the OFFICIAL code
//! (`cys1102/FBA-Net`, checked out by `cargo xtask official fetch fba-net` into the git-ignored
//! `.official/fba-net`): same weights (ours, loaded by name into the official `FBAnet`), same
//! batches (2 labelled + 2 unlabelled patches). The official side (tests/py/official_step.py) uses
//! the official network, losses and ramp-up with the loop body of `train_3d.py`. Dropout is off
//! on both sides (`has_dropout=False`; our network built without it), so each iteration is
//! deterministic.
//!
//! * one iteration: the loss terms, every gradient, every variable after the SGD step (BN
//!   statistics included), then the network's outputs in eval mode (running statistics), within
//!   1e-5 relative; and the consistency weight across the whole ramp-up;
//! * fifty iterations (`cargo xtask official compare fba-net --steps N` changes the number):
//!   every loss term per iteration within the fp32-drift bound of
//!   [`contrast_core::testing::official::check_steps`], the consistency weight of every
//!   iteration, and every variable after the last within the same derived bound.
//!
//! Without the official checkout (or Python) ours is compared with the official numbers
//! committed in `official/fixtures/fba_net_step.json` and `fba_net_steps.json`, with one line
//! saying so.

use contrast_core::optim::Optimizer;
use contrast_core::tensors::{load_into, named_variables};
use contrast_core::testing::official::{
    self, check_steps, checkout, checkout_commit, curves_json, fixture, grad_max, l2,
    official_steps, perturb_rounding, read_curves, read_fixture, write_fixture, writing_fixtures,
    WeightRow,
};
use contrast_core::testing::{assert_close, get, global_rng_lock, python, run_reference};
use contrast_core::train::runtime::seed_step;
use fba_net::config::FbaNetConfig;
use fba_net::loss::consistency_weight;
use fba_net::method::{
    build_model, iteration_weights, loss_weights, lr_schedule, optimizer, step_terms,
};
use fba_net::model::FbaNet;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The official names of the loss terms, in our order.
const TERMS: [&str; 4] = ["seg_dice", "consistency", "contrast", "loss"];

/// The reduced FBA-Net+ of both comparisons: width 4 (official 16), contrastive embeddings of
/// 16 (official 64), 32×32×16 patches (the N-iteration case: 16×16×16), batch 2 labelled + 2
/// unlabelled; everything else the
/// official `train_3d.py` values (SGD lr 0.01, momentum 0.9, wd 1e-4, λ 0.5, sharpening T 0.1,
/// consistency 1 ramped over 40 × 150 iterations).
fn reduced_config() -> FbaNetConfig {
    let mut cfg = FbaNetConfig::default();
    cfg.model.variant = "fba-net+".into();
    cfg.model.n_filters = 4;
    cfg.model.dim = 16;
    cfg.data.patch = [32, 32, 16];
    cfg
}

const LABELED: i64 = 2;
const BATCH: i64 = 4;

/// The network without dropout, its contrastive MLPs spread. At initialisation the contrastive
/// MLPs see A / (HWD), a map of ≈ 0.5 / 2048: every embedding is ≈ its bias, every cosine
/// similarity hits the 0.9995 clamp and SimMax / SimMin carry no gradient. Spreading the MLP
/// weights exercises the contrastive terms.
fn reduced_net(cfg: &FbaNetConfig) -> FbaNet {
    // dropout off (train = false builds without it); the steps themselves run in train mode
    let net = build_model(cfg, Device::Cpu, false).unwrap();
    tch::no_grad(|| {
        // in name order: the draws must not depend on a hash map's order
        for (name, mut t) in named_variables(&net.vs) {
            if name.contains("_mlp.0.weight") {
                let spread = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 4.0;
                t.copy_(&spread);
            }
        }
    });
    net
}

/// Label volumes `[n, X, Y, Z]` (`dims`): a ball of radius `r` around each centre.
fn balls(dims: [i64; 3], centres: &[[f64; 3]], r: f64) -> Tensor {
    let grid = |len: i64| Tensor::arange(len, (Kind::Float, Device::Cpu));
    let (gx, gy, gz) = (
        grid(dims[0]).view([dims[0], 1, 1]),
        grid(dims[1]).view([1, dims[1], 1]),
        grid(dims[2]).view([1, 1, dims[2]]),
    );
    Tensor::stack(
        &centres
            .iter()
            .map(|c| {
                ((&gx - c[0]).square() + (&gy - c[1]).square() + (&gz - c[2]).square())
                    .lt(r * r)
                    .to_kind(Kind::Int64)
            })
            .collect::<Vec<_>>(),
        0,
    )
}

/// The adapter's arguments: checkout, network, lr, the official `iter_num` before the first
/// iteration, loss settings, number of iterations.
fn adapter_args(official: &Path, cfg: &FbaNetConfig, start: u64, steps: usize) -> Vec<String> {
    vec![
        official.display().to_string(),
        cfg.model.n_filters.to_string(),
        cfg.model.dim.to_string(),
        LABELED.to_string(),
        cfg.optim.lr.to_string(),
        start.to_string(),
        cfg.loss.consistency.to_string(),
        cfg.loss.consistency_rampup.to_string(),
        cfg.loss.temperature.to_string(),
        cfg.loss.lambda_seg.to_string(),
        steps.to_string(),
    ]
}

#[test]
fn one_iteration_equals_the_official_train_3d_iteration() {
    let _rng = global_rng_lock();
    let official = checkout("fba-net");
    let cfg = reduced_config();
    tch::manual_seed(21);
    let net = reduced_net(&cfg);
    let x = Tensor::randn([BATCH, 1, 32, 32, 16], (Kind::Float, Device::Cpu));
    // labelled masks: a ball around a centre per image
    let y = balls([32, 32, 16], &[[10.0, 16.0, 8.0], [16.0, 16.0, 8.0]], 7.0);
    let mut inputs: Vec<(String, Tensor)> = vec![
        ("x_0".into(), x.copy()),
        ("y_0".into(), y.to_kind(Kind::Float)),
    ];
    for (k, v) in named_variables(&net.vs) {
        inputs.push((format!("w.{k}"), v.detach().copy()));
    }

    // the same network, its weights perturbed by one float32 rounding: how far fp32 arithmetic
    // alone moves this iteration (the bar of the fixture comparison)
    let perturbed = reduced_net(&cfg);
    tch::no_grad(|| {
        for ((_, mut p), (_, t)) in named_variables(&perturbed.vs)
            .into_iter()
            .zip(named_variables(&net.vs))
        {
            p.copy_(&t);
        }
    });
    let pv: Vec<Tensor> = named_variables(&perturbed.vs)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    perturb_rounding(&pv, 23);

    // our iteration 1, as `train` runs it
    let iter = 1u64;
    let cw = consistency_weight(
        iter,
        cfg.loss.rampup_every,
        cfg.loss.consistency_rampup,
        cfg.loss.consistency,
    );
    let iterate = |net: &FbaNet| {
        let mut opt = optimizer(&cfg, net).unwrap();
        let terms = step_terms(net, &x, &y, &loss_weights(&cfg, cw)).unwrap();
        opt.zero_grad();
        terms.total.backward();
        opt.step().unwrap();
        // after the step, in eval mode (running statistics): the network as the evaluation
        // runs it
        let eval: Vec<(String, Tensor)> = tch::no_grad(|| net.forward_t(&x, false, true))
            .unwrap()
            .into_iter()
            .enumerate()
            .flat_map(|(d, o)| {
                [
                    (format!("logits{d}"), o.logits),
                    (
                        format!("fg{d}"),
                        o.fg.expect("FBA-Net+ has contrastive heads"),
                    ),
                    (
                        format!("bg{d}"),
                        o.bg.expect("FBA-Net+ has contrastive heads"),
                    ),
                ]
            })
            .collect();
        let t = [
            ("seg_dice", terms.seg_dice.double_value(&[])),
            ("consistency", terms.consistency.double_value(&[])),
            ("contrast", terms.contrast.double_value(&[])),
            ("loss", terms.total.double_value(&[])),
        ];
        (t, eval)
    };
    let (ours_terms, eval) = iterate(&net);
    let ours: Vec<(String, Tensor)> = named_variables(&net.vs);
    let drift = iterate(&perturbed);
    let drift = Drift {
        terms: drift.0.to_vec(),
        eval: drift.1,
        vars: named_variables(&perturbed.vs),
    };
    let ramp: Vec<f64> = RAMP_ITERATIONS
        .iter()
        .map(|&i| {
            consistency_weight(
                i,
                cfg.loss.rampup_every,
                cfg.loss.consistency_rampup,
                cfg.loss.consistency,
            )
        })
        .collect();

    let have_checkout = checkout_commit(&official).is_some();
    let out = if have_checkout {
        let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_step.py");
        let args = adapter_args(&official, &cfg, iter - 1, 1);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_reference(script, &refs, &args).unwrap()
    } else {
        None
    };
    let Some(out) = out else {
        compare_fixture(&ours_terms, &ours, &eval, &ramp, &drift, have_checkout);
        return;
    };
    let official_ramp = Vec::<f64>::try_from(get(&out, "ramp")).unwrap();
    check_ramp(&ramp, &official_ramp);
    // eval outputs within 1e-5 of their largest entry (the step-1 bar)
    let mut worst = 0.0f64;
    for (name, t) in &eval {
        let w = get(&out, &format!("eval.{name}"));
        let scale = w.abs().max().double_value(&[]);
        let diff = (t - w).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-5 * scale,
            "{name} in eval mode after the step: max |ours − official| {diff:e}, largest entry {scale:e}"
        );
        worst = worst.max(diff / scale);
    }
    println!(
        "official_step: eval-mode outputs after the step equal (largest difference {worst:.1e} of the largest entry); consistency ramp-up equal at iterations {RAMP_ITERATIONS:?}"
    );

    for (name, v) in ours_terms {
        let o = get(&out, name).double_value(&[]);
        assert!(
            (v - o).abs() <= 1e-5 * o.abs().max(1.0),
            "{name}: ours {v} vs official {o}"
        );
    }
    let global = grad_max(&out);
    let mut checked = 0;
    for (name, t) in &ours {
        if t.requires_grad() {
            let g = get(&out, &format!("g.{name}"));
            assert_close(&t.grad(), g, 1e-5 * global, 1e-3, &format!("dL/d{name}"));
        }
        // SGD's first step is −lr·(g + wd·w): the variables agree as the gradients do
        let w = get(&out, &format!("w.{name}"));
        assert_close(
            t,
            w,
            1e-5 * global * cfg.optim.lr + 1e-7,
            1e-5,
            &format!("{name} after the step"),
        );
        checked += 1;
    }
    assert!(checked > 100, "only {checked} variables compared");
    println!(
        "official_step: loss {:.7} (official {:.7}); {checked} variables equal after one iteration",
        ours_terms[3].1,
        get(&out, "loss").double_value(&[])
    );
    let path = fixture("fba_net_step.json");
    if writing_fixtures() || !path.exists() {
        write_fixture(
            &path,
            &out,
            &official,
            "one FBA-Net+ iteration of the official network, losses and train_3d.py loop on the weights and batch of crates/fba-net/tests/official_step.rs; the L2 norms of the eval-mode outputs after it; the consistency weight at the ramp iterations",
            &TERMS,
        );
        // with the eval-mode outputs' norms and the ramp-up
        let mut f = read_fixture(&path);
        let eval_l2: serde_json::Map<String, serde_json::Value> = eval
            .iter()
            .map(|(name, _)| (name.clone(), l2(get(&out, &format!("eval.{name}"))).into()))
            .collect();
        f["eval_l2"] = eval_l2.into();
        f["ramp"] = serde_json::json!({ "iterations": RAMP_ITERATIONS, "weights": official_ramp });
        std::fs::write(&path, serde_json::to_string_pretty(&f).unwrap() + "\n").unwrap();
    } else if std::env::var_os("CONTRAST_FIXTURE_ADD_CPU").is_some() {
        // this CPU's official numbers beside the committed ones (see `compare_fixture`)
        let mut f = read_fixture(&path);
        let l2s = |prefix: &str, names: &mut dyn Iterator<Item = &String>| {
            names
                .map(|n| (n.clone(), l2(get(&out, &format!("{prefix}{n}"))).into()))
                .collect::<serde_json::Map<String, serde_json::Value>>()
        };
        let section = serde_json::json!({
            "cpu": cpu_name(),
            "terms": TERMS.iter().map(|t| (t.to_string(), get(&out, t).double_value(&[]).into())).collect::<serde_json::Map<_, _>>(),
            "eval_l2": l2s("eval.", &mut eval.iter().map(|e| &e.0)),
            "grad_l2": l2s("g.", &mut ours.iter().filter(|v| v.1.requires_grad()).map(|v| &v.0)),
            "after_l2": l2s("w.", &mut ours.iter().map(|v| &v.0)),
        });
        let mut others: Vec<serde_json::Value> = f["other_cpus"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["cpu"] != section["cpu"])
            .collect();
        others.push(section);
        f["other_cpus"] = others.into();
        std::fs::write(&path, serde_json::to_string_pretty(&f).unwrap() + "\n").unwrap();
        println!(
            "official_step: added the official numbers of {} to {}",
            cpu_name(),
            path.display()
        );
    }
}

/// This machine's CPU model and vector width (the kernels libtorch picks depend on both).
fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|x| x.1.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let avx512 = info
        .lines()
        .any(|l| l.starts_with("flags") && l.contains(" avx512f"));
    format!("{model} ({})", if avx512 { "AVX-512" } else { "AVX2" })
}

/// Iterations (`iter_num` after its increment) at which the consistency weight is compared: the
/// first, both sides of the first ramp-up step, mid-ramp, both sides of its end (40 × 150), and
/// the plateau.
const RAMP_ITERATIONS: [u64; 7] = [1, 149, 150, 3000, 5999, 6000, 15000];

/// Our consistency weights at [`RAMP_ITERATIONS`] equal the official ones: both in float64 from
/// the same formula.
fn check_ramp(ours: &[f64], official: &[f64]) {
    assert_eq!(ours.len(), official.len());
    for ((i, o), f) in RAMP_ITERATIONS.iter().zip(ours).zip(official) {
        assert!(
            (o - f).abs() <= 1e-12 * f.abs(),
            "consistency weight after iteration {i}: ours {o} vs official {f}"
        );
    }
}

/// The same iteration of ours from rounding-perturbed weights: its terms, eval outputs and
/// variables (the fp32 drift each compared quantity is measured against).
struct Drift {
    terms: Vec<(&'static str, f64)>,
    eval: Vec<(String, Tensor)>,
    vars: Vec<(String, Tensor)>,
}

/// Against the committed official numbers: the loss terms, the eval-mode outputs, every
/// gradient and every variable after the iteration, each within the bar of every N-step
/// comparison (eight times our own fp32 drift for that quantity, floored at 1e-5), against the
/// nearest of the official numbers of every CPU kind the fixture holds. libtorch's kernels
/// differ between CPUs by more than a rounding: on an AMD EPYC (AVX2) the official code's own
/// gradients of the third decoder differ from its numbers on the Xeon that wrote the fixture by
/// up to 1e-4 relative (its eval logits by 4.5e-4), while ours agree with the official code run
/// on the same EPYC to 1e-6; so a CPU kind is added to the fixture by running the official code
/// on it (`CONTRAST_FIXTURE_ADD_CPU=1` with the checkout).
fn compare_fixture(
    terms: &[(&str, f64)],
    vars: &[(String, Tensor)],
    eval: &[(String, Tensor)],
    ramp: &[f64],
    drift: &Drift,
    have_checkout: bool,
) {
    let test = "official_step";
    let f = read_fixture(&fixture("fba_net_step.json"));
    let official_ramp: Vec<f64> = f["ramp"]["weights"]
        .as_array()
        .expect("the fixture has the ramp-up")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect();
    check_ramp(ramp, &official_ramp);
    // the official numbers of every CPU they were computed on (the committed run, then
    // `other_cpus`); each quantity is compared with the nearest of them
    let mut cpus = vec![&f];
    if let Some(others) = f["other_cpus"].as_array() {
        cpus.extend(others.iter());
    }
    let nearest = |section: &str, name: &str, ours: f64| -> f64 {
        cpus.iter()
            .filter_map(|c| c[section][name].as_f64())
            .min_by(|a, b| (a - ours).abs().total_cmp(&(b - ours).abs()))
            .unwrap_or_else(|| panic!("{name} not in the fixture's {section}"))
    };
    let names: Vec<&str> = terms.iter().map(|t| t.0).collect();
    let row = |v: &[(&str, f64)]| vec![v.iter().map(|t| t.1).collect::<Vec<f64>>()];
    let official_terms: Vec<f64> = terms.iter().map(|(n, v)| nearest("terms", n, *v)).collect();
    check_steps(
        test,
        &names,
        &row(terms),
        &[official_terms],
        &row(&drift.terms),
    );
    let norm = |section: &str, name: &str, t: &Tensor| nearest(section, name, l2(t));
    let mut rows = Vec::new();
    for ((name, t), (_, p)) in eval.iter().zip(&drift.eval) {
        rows.push(WeightRow::new(
            name,
            "eval outputs",
            t,
            p,
            Err(norm("eval_l2", name, t)),
        ));
    }
    for ((name, t), (_, p)) in vars.iter().zip(&drift.vars) {
        let group = name.split('.').next().unwrap_or(name).to_string();
        if t.requires_grad() {
            rows.push(WeightRow::new(
                &format!("dL/d{name}"),
                "gradients",
                &t.grad(),
                &p.grad(),
                Err(norm("grad_l2", name, &t.grad())),
            ));
        }
        rows.push(WeightRow::new(
            name,
            group,
            t,
            p,
            Err(norm("after_l2", name, t)),
        ));
    }
    official::check_weights(test, 1, &rows, 1e-5);
    println!(
        "official_step: {} (`cargo xtask official fetch fba-net`); our iteration matches the committed official numbers ({} variables, official commit {}, computed on {} CPU kinds)",
        if have_checkout { "no Python with torch" } else { "no official checkout" },
        vars.len(),
        f["official_commit"].as_str().unwrap_or("?"),
        cpus.len()
    );
}

/// The N-step comparison's default length (the fixture holds this many).
const DEFAULT_STEPS: usize = 50;

/// The official `iter_num` before the first compared iteration: 125, as after a resume, so that
/// the consistency ramp-up's step at iteration 150 (`iter_num // 150` becomes 1) falls inside the
/// fifty iterations; our iteration counter (the Trainer's step) starts at the same place.
const START: u64 = 125;

/// `N` iterations of ours (and of ours from weights perturbed by one float32 rounding) against
/// `N` iterations of the official loop, from the same initial weights on the same batches:
/// every loss term per iteration within the derived drift bound ([`check_steps`]), the
/// consistency weight each iteration used, and every variable after the last iteration. The
/// batches: random volumes (σ 0.5) plus a ball of intensity 1 per image, labelled by that ball
/// for the two labelled images, so that the segmentation has something to learn. 16×16×16
/// patches (the V-Net's deepest map is then 1×1×1): a hundred of our iterations and fifty
/// official ones stay under a minute on two shared cores.
#[test]
fn fifty_iterations_stay_with_the_official_train_3d_loop() {
    let n = official_steps(DEFAULT_STEPS);
    let test = "official_step (train_3d loop)";
    let official = checkout("fba-net");
    let fixture = fixture("fba_net_steps.json");
    let have_checkout = checkout_commit(&official).is_some() && python().is_some();
    if !have_checkout && n != DEFAULT_STEPS {
        println!(
            "{test}: skipped: no official checkout (or no Python for it), and {} holds {DEFAULT_STEPS} iterations",
            fixture.display()
        );
        return;
    }
    let _rng = global_rng_lock();
    // one intra-op thread: with the two cores shared, libtorch's spinning workers slow the
    // steps several times over; both of our runs use the same setting
    tch::set_num_threads(1);
    let mut cfg = reduced_config();
    cfg.data.patch = [16, 16, 16];
    let dims = cfg.data.patch.map(|p| p as i64);
    tch::manual_seed(cfg.runtime.seed as i64);
    let net = reduced_net(&cfg);
    let initial: Vec<(String, Tensor)> = named_variables(&net.vs)
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect();
    tch::manual_seed(5);
    let opts = (Kind::Float, Device::Cpu);
    let mut batches = Vec::new();
    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    for k in 0..n {
        let c = Tensor::rand([BATCH, 3], (Kind::Double, Device::Cpu));
        let c = Vec::<f64>::try_from(c.view(-1)).unwrap();
        let centres: Vec<[f64; 3]> = c
            .chunks(3)
            .map(|u| {
                [
                    dims[0] as f64 / 4.0 * (1.0 + 2.0 * u[0]),
                    dims[1] as f64 / 4.0 * (1.0 + 2.0 * u[1]),
                    4.0 + 8.0 * u[2],
                ]
            })
            .collect();
        let ball = balls(dims, &centres, dims[0] as f64 / 4.0);
        let x = (Tensor::randn([BATCH, 1, dims[0], dims[1], dims[2]], opts) * 0.5
            + ball.unsqueeze(1).to_kind(Kind::Float))
        .contiguous();
        let y = ball.narrow(0, 0, LABELED).contiguous();
        inputs.push((format!("x_{k}"), x.copy()));
        inputs.push((format!("y_{k}"), y.to_kind(Kind::Float)));
        batches.push((x, y));
    }
    let t0 = std::time::Instant::now();
    let (ours, ours_weights) = train_ours(&cfg, &net, &batches);
    let perturbed_net = build_model(&cfg, Device::Cpu, false).unwrap();
    load_into(&perturbed_net.vs, &initial, true).unwrap();
    let vars: Vec<Tensor> = named_variables(&perturbed_net.vs)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    perturb_rounding(&vars, 17);
    let (perturbed, _) = train_ours(&cfg, &perturbed_net, &batches);
    println!(
        "{test}: ours and ours-perturbed, {n} iterations each: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let ours_vars = named_variables(&net.vs);
    let perturbed_vars = named_variables(&perturbed_net.vs);

    let out = if have_checkout {
        for (name, t) in initial {
            inputs.push((format!("w.{name}"), t));
        }
        let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_step.py");
        let args = adapter_args(&official, &cfg, START, n);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let t0 = std::time::Instant::now();
        let out = run_reference(script, &refs, &args).unwrap();
        println!(
            "{test}: the official loop, {n} iterations: {:.1} s (with Python's start)",
            t0.elapsed().as_secs_f64()
        );
        out
    } else {
        None
    };

    let (official_curves, official_weights, weights) = match &out {
        Some(out) => {
            let curve = get(out, "curve").to_kind(Kind::Double).contiguous();
            let cols = curve.size()[1] as usize;
            let flat = Vec::<f64>::try_from(curve.view(-1)).unwrap();
            let curves: Vec<Vec<f64>> = flat.chunks(cols).map(<[f64]>::to_vec).collect();
            let cw = Vec::<f64>::try_from(get(out, "weights").to_kind(Kind::Double)).unwrap();
            let weights: Vec<WeightRow> = ours_vars
                .iter()
                .zip(&perturbed_vars)
                .map(|((name, t), (_, p))| {
                    let w = get(out, &format!("w.{name}"));
                    WeightRow::new(name, group(name), t, p, Ok(w))
                })
                .collect();
            (curves, cw, weights)
        }
        None => {
            let f = read_fixture(&fixture);
            assert_eq!(f["steps"].as_u64(), Some(n as u64), "{}", fixture.display());
            let after = |name: &str| {
                f["after_l2"][name]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{name} not in the fixture's after_l2"))
            };
            // without the official tensors: their L2 norms
            let weights: Vec<WeightRow> = ours_vars
                .iter()
                .zip(&perturbed_vars)
                .map(|((name, t), (_, p))| {
                    WeightRow::new(name, group(name), t, p, Err(after(name)))
                })
                .collect();
            println!(
                "{test}: no official checkout (or no Python for it): ours against the committed official curves and final weights in {} (official commit {})",
                fixture.display(),
                f["official_commit"].as_str().unwrap_or("?")
            );
            let cw = read_curves(&f, "consistency_weight", &["consistency_weight"])
                .into_iter()
                .map(|r| r[0])
                .collect();
            (read_curves(&f, "curves", &TERMS), cw, weights)
        }
    };

    // the consistency weight: both sides compute it in float64 from the same formula; an
    // off-by-one iteration count moves its step at iteration 150 by one iteration
    for (k, (o, f)) in ours_weights.iter().zip(&official_weights).enumerate() {
        assert!(
            (o - f).abs() <= 1e-12 * f.abs(),
            "{test}: iteration {} consistency weight: ours {o} vs official {f}",
            START + k as u64 + 1
        );
    }
    println!(
        "{test}: the consistency weight of every iteration equals the official one ({:.6} → {:.6})",
        official_weights.first().copied().unwrap_or(f64::NAN),
        official_weights.last().copied().unwrap_or(f64::NAN)
    );
    check_steps(test, &TERMS, &ours, &official_curves, &perturbed);
    // every variable within 8·N·its own fp32 drift, floored at eight float32 roundings
    official::check_weights(test, n, &weights, 8.0 * 2f64.powi(-23));

    if let Some(out) = &out {
        if n == DEFAULT_STEPS && (writing_fixtures() || !fixture.exists()) {
            let after: serde_json::Map<String, serde_json::Value> = out
                .iter()
                .filter_map(|(k, t)| Some((k.strip_prefix("w.")?.to_string(), l2(t).into())))
                .collect();
            let cw: Vec<Vec<f64>> = official_weights.iter().map(|w| vec![*w]).collect();
            let v = serde_json::json!({
                "what": format!(
                    "{n} FBA-Net+ iterations (iter_num {} to {}) of the official network, losses and train_3d.py loop on the weights and batches of crates/fba-net/tests/official_step.rs: per-iteration loss terms and consistency weight, the L2 norm of every variable after the last iteration",
                    START + 1,
                    START + n as u64
                ),
                "official_commit": checkout_commit(&official),
                "steps": n,
                "curves": curves_json(&TERMS, &official_curves),
                "consistency_weight": curves_json(&["consistency_weight"], &cw),
                "after_l2": after,
            });
            std::fs::write(&fixture, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
            println!("{test}: wrote {}", fixture.display());
        }
    }
}

/// The iterations of `batches` as the Trainer runs `FbaNetMethod` (src/method.rs), from step
/// [`START`]: seed the step, lr from the Method's [`lr_schedule`], the weights of iteration
/// `step + 1` ([`iteration_weights`] of `ctx.done()`), [`step_terms`], backward, the Method's
/// SGD ([`optimizer`]). Returns each iteration's terms ([`TERMS`] order) and consistency weight.
fn train_ours(
    cfg: &FbaNetConfig,
    net: &FbaNet,
    batches: &[(Tensor, Tensor)],
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let total = START + batches.len() as u64;
    let mut opt = optimizer(cfg, net).unwrap();
    let lr = lr_schedule(cfg, total).unwrap();
    let (mut curves, mut weights) = (Vec::new(), Vec::new());
    for (k, (x, y)) in batches.iter().enumerate() {
        let step = START + k as u64;
        seed_step(cfg.runtime.seed, step);
        opt.set_lr(lr.value(step));
        let w = iteration_weights(cfg, step + 1);
        let terms = step_terms(net, x, y, &w).unwrap();
        opt.zero_grad();
        terms.total.backward();
        opt.step().unwrap();
        curves.push(vec![
            terms.seg_dice.double_value(&[]),
            terms.consistency.double_value(&[]),
            terms.contrast.double_value(&[]),
            terms.total.double_value(&[]),
        ]);
        weights.push(w.consistency);
    }
    (curves, weights)
}

/// The parameter group of a variable: the shared encoder or one of the three decoders (each
/// with its contrastive MLPs).
fn group(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// Perturbed runs of the recorded replay (each from one float32 rounding in another direction).
const RECORD_PERTURBATIONS: u64 = 4;

/// A run of the `fba-net` binary recorded with `--record`: `n` iterations of the reduced FBA-Net+
/// (dropout off) on a synthetic LA-layout data set (the Trainer, the two-stream sampler, the
/// rot/flip/crop augmentation), from weights perturbed by one float32 rounding when `perturb`.
fn record_fba(dir: &Path, n: usize, perturb: Option<u64>) -> official::Recorded {
    let data = dir.join("la");
    if !data.exists() {
        contrast_core::testing::write_synthetic_la(&data, 6); // 2 labelled + 2 unlabelled, 2 test
    }
    let mut cfg = reduced_config();
    cfg.data.root = data.display().to_string();
    cfg.data.labeled = LABELED as usize;
    cfg.data.patch = [16, 16, 16];
    cfg.model.dropout = 0.0;
    cfg.optim.iterations = n as u64;
    cfg.eval.every = 0;
    cfg.log.log_every = 1;
    cfg.runtime.device = "cpu".into();
    cfg.runtime.threads = 1;
    cfg.runtime.seed = 7;
    let preset = dir.join("reduced.toml");
    std::fs::write(
        &preset,
        contrast_core::train::config::to_toml(&cfg).unwrap(),
    )
    .unwrap();
    let name = match perturb {
        Some(s) => format!("perturbed-{s}"),
        None => "ours".into(),
    };
    let bin = env!("CARGO_BIN_EXE_fba-net");
    official::record_run(bin, "fba-net", &preset, dir, &name, n, perturb)
}

/// A real training run of ours replayed by the official code: `n` iterations (default 50) of
/// the `fba-net` binary recorded with `--record` (its own initial weights, the Trainer, the
/// sampler's batches and the augmentation), replayed by the official network, losses and
/// `train_3d.py` loop body (`tests/py/official_step.py`) from `iter_num` 0. Dropout is off on
/// both sides. The binary's own initialisation leaves every contrastive embedding at its bias
/// (see `reduced_net`), so the contrastive terms sit at their clamp here: this run checks the
/// Dice, consistency and ramp-up of real training; the contrastive terms' gradients are the
/// other tests' (spread MLP weights). Checked: every loss term per iteration within the
/// derived drift bound (the widest over four perturbation directions), the consistency weight
/// of every iteration, every variable after the last iteration. Without the checkout: against
/// `official/fixtures/fba_net_record_steps.json`.
#[test]
fn a_recorded_training_run_replays_through_the_official_train_3d_loop() {
    let n = official_steps(DEFAULT_STEPS);
    let test = "official_step_recorded (train_3d loop)";
    let checkout_dir = checkout("fba-net");
    let fixture = fixture("fba_net_record_steps.json");
    let have_checkout = checkout_commit(&checkout_dir).is_some() && python().is_some();
    if !have_checkout && (n != DEFAULT_STEPS || !fixture.is_file()) {
        println!("{test}: no official checkout and no fixture for {n} iterations: skipped (`cargo xtask official fetch fba-net`)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    let ours = record_fba(dir.path(), n, None);
    let perturbed: Vec<_> = (1..=RECORD_PERTURBATIONS)
        .map(|s| record_fba(dir.path(), n, Some(s)))
        .collect();
    println!(
        "{test}: {} recorded runs of {n} iterations in {:.1} s",
        1 + RECORD_PERTURBATIONS,
        t0.elapsed().as_secs_f64()
    );
    let curves = |r: &official::Recorded| -> Vec<Vec<f64>> {
        r.lines
            .iter()
            .map(|l| {
                ["seg_dice", "consistency", "contrast", "total"]
                    .iter()
                    .map(|t| l["terms"][t].as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    let ours_curves = curves(&ours);
    let mut cfg = reduced_config();
    cfg.data.patch = [16, 16, 16];
    cfg.optim.iterations = n as u64;
    let ours_weights: Vec<f64> = (0..n as u64)
        .map(|k| iteration_weights(&cfg, k + 1).consistency)
        .collect();
    let after = ours.vars("model");
    let afters: Vec<_> = perturbed.iter().map(|p| p.vars("model")).collect();
    let afters: Vec<&[(String, Tensor)]> = afters.iter().map(Vec::as_slice).collect();
    let rows = |official: &dyn Fn(&str) -> Result<Tensor, f64>| {
        official::widest_rows(&after, &afters, official, &|n| group(n).to_string())
    };

    let out = if have_checkout {
        let mut inputs: Vec<(String, Tensor)> = ours
            .initial
            .iter()
            .filter_map(|(name, t)| {
                Some((
                    format!("w.{}", name.strip_prefix("model/")?),
                    t.shallow_clone(),
                ))
            })
            .collect();
        for k in 0..n {
            inputs.push((format!("x_{k}"), ours.get(k, "images")));
            inputs.push((format!("y_{k}"), ours.get(k, "labels").to_kind(Kind::Float)));
        }
        let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_step.py");
        let args = adapter_args(&checkout_dir, &cfg, 0, n);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_reference(script, &refs, &args).unwrap()
    } else {
        None
    };
    let (official_curves, official_weights, weights) = match &out {
        Some(out) => {
            let curve = get(out, "curve").to_kind(Kind::Double).contiguous();
            let cols = curve.size()[1] as usize;
            let flat = Vec::<f64>::try_from(curve.view(-1)).unwrap();
            let c: Vec<Vec<f64>> = flat.chunks(cols).map(<[f64]>::to_vec).collect();
            let cw = Vec::<f64>::try_from(get(out, "weights").to_kind(Kind::Double)).unwrap();
            let w = rows(&|name| Ok(get(out, &format!("w.{name}")).shallow_clone()));
            (c, cw, w)
        }
        None => {
            let f = read_fixture(&fixture);
            let w = rows(&official::fixture_l2(&f));
            println!(
                "{test}: no official checkout (or no Python for it): the recording against the committed official numbers in {} (official commit {})",
                fixture.display(),
                f["official_commit"].as_str().unwrap_or("?")
            );
            let cw = read_curves(&f, "consistency_weight", &["consistency_weight"])
                .into_iter()
                .map(|r| r[0])
                .collect();
            (read_curves(&f, "curves", &TERMS), cw, w)
        }
    };
    for (k, (o, f)) in ours_weights.iter().zip(&official_weights).enumerate() {
        assert!(
            (o - f).abs() <= 1e-12 * f.abs().max(1e-300),
            "{test}: iteration {} consistency weight: ours {o} vs official {f}",
            k + 1
        );
    }
    // the nearest-run statement on the total (term 3)
    let pert: Vec<_> = perturbed.iter().map(&curves).collect();
    official::check_replay(
        test,
        &TERMS,
        n,
        &ours_curves,
        &pert,
        &official_curves,
        &[3],
        &weights,
    );
    if let Some(out) = &out {
        if n == DEFAULT_STEPS && (writing_fixtures() || !fixture.exists()) {
            let cw: Vec<Vec<f64>> = official_weights.iter().map(|w| vec![*w]).collect();
            official::write_steps_fixture(
                &fixture,
                &checkout_dir,
                &format!("{n} iterations of the official FBA-Net+ network, losses and train_3d.py loop body (from iter_num 0) replaying a recorded run of ours (`fba-net train --record`, synthetic LA data, reduced model, dropout off; crates/fba-net/tests/official_step.rs: a_recorded_training_run_replays_through_the_official_train_3d_loop): per-iteration loss terms and consistency weight, the L2 norm of every variable after the last iteration"),
                n,
                curves_json(&TERMS, &official_curves),
                &[("consistency_weight", curves_json(&["consistency_weight"], &cw))],
                official::after_l2(out, &[]),
            );
        }
    }
}
