//! One FBA-Net+ training iteration of ours against one iteration of the OFFICIAL code
//! (`cys1102/FBA-Net`, checked out by `cargo xtask official fetch fba-net` into the git-ignored
//! `.official/fba-net`): same weights (ours, loaded by name into the official `FBAnet`), same
//! batch (2 labelled + 2 unlabelled patches). The official side (tests/py/official_step.py) uses
//! the official network, losses and ramp-up with the loop body of `train_3d.py`. Compared: the
//! loss terms, every gradient, every variable after the SGD step (BN statistics included).
//!
//! Without the official checkout (or Python) our iteration is compared with the official
//! numbers committed in `official/fixtures/fba_net_step.json`, with one line saying so.

use contrast_core::tensors::named_variables;
use contrast_core::testing::official::{
    compare_with_fixture, grad_max, read_fixture, repo_root, write_fixture, FixtureTolerance,
};
use contrast_core::testing::{assert_close, get, global_rng_lock, run_reference};
use fba_net::config::FbaNetConfig;
use fba_net::loss::consistency_weight;
use fba_net::method::{build_model, loss_weights, optimizer, step_terms};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn fixture_path() -> PathBuf {
    repo_root().join("official/fixtures/fba_net_step.json")
}

#[test]
fn one_iteration_equals_the_official_train_3d_iteration() {
    let _rng = global_rng_lock();
    let official = repo_root().join(".official/fba-net");
    let mut cfg = FbaNetConfig::default();
    cfg.model.variant = "fba-net+".into();
    cfg.model.n_filters = 4;
    cfg.model.dim = 16;
    cfg.data.patch = [32, 32, 16];
    let (n, lb) = (4i64, 2i64);
    tch::manual_seed(21);
    // dropout off (train = false builds without it); the step itself runs in train mode
    let net = build_model(&cfg, Device::Cpu, false).unwrap();
    // At initialisation the contrastive MLPs see A / (HWD), a map of ≈ 0.5 / 2048: every
    // embedding is ≈ its bias, every cosine similarity hits the 0.9995 clamp and SimMax / SimMin
    // carry no gradient. Spread the MLP weights so the contrastive terms are exercised.
    tch::no_grad(|| {
        // in name order: the draws must not depend on a hash map's order
        for (name, mut t) in named_variables(&net.vs) {
            if name.contains("_mlp.0.weight") {
                let spread = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 4.0;
                t.copy_(&spread);
            }
        }
    });
    let opts = (Kind::Float, Device::Cpu);
    let x = Tensor::randn([n, 1, 32, 32, 16], opts);
    // labelled masks: a ball around a random centre per image
    let grid = |len: i64| Tensor::arange(len, (Kind::Float, Device::Cpu));
    let (gx, gy, gz) = (
        grid(32).view([32, 1, 1]),
        grid(32).view([1, 32, 1]),
        grid(16).view([1, 1, 16]),
    );
    let y = Tensor::stack(
        &(0..lb)
            .map(|i| {
                let c = 10.0 + 6.0 * i as f64;
                ((&gx - c).square() + (&gy - 16.0).square() + (&gz - 8.0).square())
                    .lt(49.0)
                    .to_kind(Kind::Int64)
            })
            .collect::<Vec<_>>(),
        0,
    );
    let mut inputs: Vec<(String, Tensor)> =
        vec![("x".into(), x.copy()), ("y".into(), y.to_kind(Kind::Float))];
    for (k, v) in named_variables(&net.vs) {
        inputs.push((format!("w.{k}"), v.detach().copy()));
    }

    // our iteration 1, as `train` runs it
    let iter = 1u64;
    let cw = consistency_weight(
        iter,
        cfg.loss.rampup_every,
        cfg.loss.consistency_rampup,
        cfg.loss.consistency,
    );
    let mut opt = optimizer(&cfg, &net).unwrap();
    let terms = step_terms(&net, &x, &y, &loss_weights(&cfg, cw)).unwrap();
    contrast_core::optim::Optimizer::zero_grad(&mut opt);
    terms.total.backward();
    contrast_core::optim::Optimizer::step(&mut opt).unwrap();
    let ours: Vec<(String, Tensor)> = named_variables(&net.vs);
    let ours_terms = [
        ("seg_dice", terms.seg_dice.double_value(&[])),
        ("consistency", terms.consistency.double_value(&[])),
        ("contrast", terms.contrast.double_value(&[])),
        ("loss", terms.total.double_value(&[])),
    ];

    let have_checkout = official.join(".contrast-commit").exists();
    let out = if have_checkout {
        let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_step.py");
        let args = [
            official.display().to_string(),
            cfg.model.n_filters.to_string(),
            cfg.model.dim.to_string(),
            lb.to_string(),
            cfg.optim.lr.to_string(),
            iter.to_string(),
            cfg.loss.consistency.to_string(),
            cfg.loss.consistency_rampup.to_string(),
            cfg.loss.temperature.to_string(),
            cfg.loss.lambda_seg.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_reference(script, &refs, &args).unwrap()
    } else {
        None
    };
    let Some(out) = out else {
        compare_fixture(&ours_terms, &ours, cfg.optim.lr, have_checkout);
        return;
    };

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
        terms.total.double_value(&[]),
        get(&out, "loss").double_value(&[])
    );
    if std::env::var_os("CONTRAST_WRITE_FIXTURES").is_some() {
        write_fixture(
            &fixture_path(),
            &out,
            &official,
            "one FBA-Net+ iteration of the official network, losses and train_3d.py loop on the weights and batch of crates/fba-net/tests/official_step.rs",
            &["seg_dice", "consistency", "contrast", "loss"],
        );
    }
}

fn compare_fixture(terms: &[(&str, f64)], vars: &[(String, Tensor)], lr: f64, have_checkout: bool) {
    let f = read_fixture(&fixture_path());
    let global = f["grad_max_abs"].as_f64().unwrap_or(0.0);
    let tolerance = FixtureTolerance {
        term: 1e-5,
        grad_rtol: 1e-3,
        grad_noise: 1e-5,
        after_rtol: 1e-5,
        // SGD's first step is −lr·(g + wd·w): the variables agree as the gradients do
        after_atol_sqrt_n: lr * 1e-5 * global,
        after_atol: 1e-6,
    };
    compare_with_fixture(&f, terms, vars, &tolerance);
    println!(
        "official_step: {} (`cargo xtask official fetch fba-net`); our iteration matches the committed official numbers ({} variables, official commit {})",
        if have_checkout { "no Python with torch" } else { "no official checkout" },
        vars.len(),
        f["official_commit"].as_str().unwrap_or("?")
    );
}
