//! Our LARS in `scale_step` mode against the OFFICIAL LARS of MNCLGLF's linear probe
//! (`optimizer/lars.py` of liweiquan39/MNCLGLF, `implementation='PyTorch'`, checked out by
//! `cargo xtask official fetch multinet` into the git-ignored `.official/multinet`): a linear
//! classifier on the same weights and batches, six steps with the lr changing every step (a
//! cosine, so the form of the rate matters), momentum 0.9, η 1e-3, weight decay 1e-4 (the probe
//! runs with 0; 1e-4 also exercises the decay terms). Compared: every step's loss, the last
//! step's gradients and the weights after the steps.
//!
//! Without the checkout (or Python) the test says so in one line and compares with the official
//! numbers committed in `official/fixtures/multinet_lars_steps.json`.
//!
//! A second test runs the same probe for N steps (default 50) with the derived N-step bound.

use contrast_core::optim::lars::{Lars, LarsConfig, LarsMode};
use contrast_core::optim::{Optimizer, ParamGroup};
use contrast_core::testing::official::{
    check_steps, checkout, checkout_commit, compare_with_fixture, curves_json, fixture, l2,
    official_steps, perturb_rounding, read_curves, read_fixture, run_official, write_fixture,
    writing_fixtures, FixtureTolerance,
};
use contrast_core::testing::{assert_close, get, global_rng_lock};
use tch::{Device, Kind, Tensor};

#[test]
fn six_steps_equal_the_official_mnclglf_lars() {
    let _rng = global_rng_lock();
    let (checkout, fixture) = (checkout("multinet"), fixture("multinet_lars_steps.json"));
    let (c, d, b, steps) = (10i64, 32i64, 16i64, 6usize);
    let (momentum, wd, eta) = (0.9, 1e-4, 1e-3);
    let opts = (Kind::Float, Device::Cpu);
    tch::manual_seed(11);
    let weight = (Tensor::randn([c, d], opts) * 0.1).set_requires_grad(true);
    let bias = (Tensor::randn([c], opts) * 0.1).set_requires_grad(true);
    let lrs: Vec<f64> = (0..steps)
        .map(|k| 0.8 * 0.5 * (1.0 + (std::f64::consts::PI * k as f64 / steps as f64).cos()))
        .collect();
    let batches: Vec<(Tensor, Tensor)> = (0..steps)
        .map(|_| {
            (
                Tensor::randn([b, d], opts),
                Tensor::randint(c, [b], (Kind::Int64, Device::Cpu)),
            )
        })
        .collect();
    let mut inputs: Vec<(String, Tensor)> = vec![
        ("w.weight".into(), weight.detach().copy()),
        ("w.bias".into(), bias.detach().copy()),
        ("lr".into(), Tensor::from_slice(&lrs).to_kind(Kind::Float)),
    ];
    for (k, (x, y)) in batches.iter().enumerate() {
        inputs.push((format!("x_{k}"), x.copy()));
        inputs.push((format!("y_{k}"), y.copy()));
    }

    // ours
    let group = ParamGroup {
        name: "probe".into(),
        params: vec![
            ("weight".into(), weight.shallow_clone()),
            ("bias".into(), bias.shallow_clone()),
        ],
        weight_decay: wd,
        lr_scale: 1.0,
    };
    let mut opt = Lars::new(
        vec![group],
        LarsConfig {
            lr: lrs[0],
            momentum,
            trust_coefficient: eta,
            mode: LarsMode::ScaleStep,
            ..LarsConfig::default()
        },
    )
    .unwrap();
    let mut losses = Vec::new();
    for (k, (x, y)) in batches.iter().enumerate() {
        opt.set_lr(lrs[k]);
        let loss = x
            .matmul(&weight.tr())
            .g_add(&bias)
            .cross_entropy_for_logits(y);
        opt.zero_grad();
        loss.backward();
        losses.push(loss.double_value(&[]));
        opt.step().unwrap();
    }
    let ours = vec![
        ("weight".to_string(), weight.shallow_clone()),
        ("bias".to_string(), bias.shallow_clone()),
    ];

    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_lars.py");
    let args = [momentum, wd, eta, steps as f64].map(|v| v.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_official(&checkout, script, &refs, &args);
    let Some(out) = out else {
        let f = read_fixture(&fixture);
        let names: Vec<String> = (0..steps).map(|k| format!("loss_{k}")).collect();
        let terms: Vec<(&str, f64)> = names
            .iter()
            .map(String::as_str)
            .zip(losses.iter().copied())
            .collect();
        let tolerance = FixtureTolerance {
            term: 1e-6,
            grad_rtol: 1e-4,
            grad_noise: 1e-6,
            after_rtol: 1e-5,
            after_atol_sqrt_n: 0.0,
            after_atol: 1e-7,
        };
        compare_with_fixture(&f, &terms, &ours, &tolerance);
        println!(
            "official_lars: no official checkout or no Python with torch (`cargo xtask official fetch multinet`); our steps match the committed official numbers (official commit {})",
            f["official_commit"].as_str().unwrap_or("?")
        );
        return;
    };
    for (k, l) in losses.iter().enumerate() {
        let o = get(&out, &format!("loss_{k}")).double_value(&[]);
        assert!(
            (l - o).abs() <= 1e-6 * o.abs().max(1.0),
            "loss {k}: ours {l} vs official {o}"
        );
    }
    for (n, t) in &ours {
        assert_close(&t.grad(), get(&out, &format!("g.{n}")), 1e-7, 1e-5, n);
        assert_close(t, get(&out, &format!("w.{n}")), 1e-7, 1e-5, n);
    }
    println!("official_lars: losses {losses:?} and the weights after {steps} steps equal the official LARS");
    if writing_fixtures() {
        let terms: Vec<String> = (0..steps).map(|k| format!("loss_{k}")).collect();
        let terms: Vec<&str> = terms.iter().map(String::as_str).collect();
        write_fixture(
            &fixture,
            &out,
            &checkout,
            "official MNCLGLF LARS (optimizer/lars.py, implementation='PyTorch') on the probe weights and batches of crates/contrast-core/tests/official_lars.rs",
            &terms,
        );
    }
}

/// Our LARS (`scale_step`) on the probe of [`six_steps_equal_the_official_mnclglf_lars`] for
/// `lrs.len()` steps from `(weight, bias)`, optionally perturbed by one fp32 rounding: the loss of
/// every step and the variables after the steps.
fn lars_run(
    init: &(Tensor, Tensor),
    batches: &[(Tensor, Tensor)],
    lrs: &[f64],
    perturb: Option<u64>,
) -> (Vec<Vec<f64>>, Vec<Tensor>) {
    let weight = init.0.copy().set_requires_grad(true);
    let bias = init.1.copy().set_requires_grad(true);
    if let Some(seed) = perturb {
        perturb_rounding(&[weight.shallow_clone(), bias.shallow_clone()], seed);
    }
    let group = ParamGroup {
        name: "probe".into(),
        params: vec![
            ("weight".into(), weight.shallow_clone()),
            ("bias".into(), bias.shallow_clone()),
        ],
        weight_decay: 1e-4,
        lr_scale: 1.0,
    };
    let mut opt = Lars::new(
        vec![group],
        LarsConfig {
            lr: lrs[0],
            momentum: 0.9,
            trust_coefficient: 1e-3,
            mode: LarsMode::ScaleStep,
            ..LarsConfig::default()
        },
    )
    .unwrap();
    let mut losses = Vec::new();
    for ((x, y), lr) in batches.iter().zip(lrs) {
        opt.set_lr(*lr);
        let loss = x
            .matmul(&weight.tr())
            .g_add(&bias)
            .cross_entropy_for_logits(y);
        opt.zero_grad();
        loss.backward();
        losses.push(vec![loss.double_value(&[])]);
        opt.step().unwrap();
    }
    (losses, vec![weight.detach(), bias.detach()])
}

/// The same probe for N steps (default 50, `cargo xtask official compare multinet --steps N`),
/// the lr a cosine over the N steps: every step's loss within the derived N-step bound
/// (`check_steps`: ours vs ours from weights perturbed by one fp32 rounding), and the weights
/// after the steps within `8·N·‖ours − perturbed‖` (floored at 8 fp32 roundings of the official
/// norm). Without the checkout: against `official/fixtures/multinet_lars_n_steps.json` (the
/// official loss curve and final norms; skipped with a line when N is not the fixture's).
#[test]
fn n_steps_stay_with_the_official_mnclglf_lars() {
    let _rng = global_rng_lock();
    const DEFAULT: usize = 50;
    let steps = official_steps(DEFAULT);
    let (checkout, fixture) = (checkout("multinet"), fixture("multinet_lars_n_steps.json"));
    if checkout_commit(&checkout).is_none() && steps != DEFAULT {
        println!("official_lars: no official checkout and {steps} steps ≠ the fixture's {DEFAULT}: skipped");
        return;
    }
    let (c, d, b) = (10i64, 32i64, 16i64);
    let opts = (Kind::Float, Device::Cpu);
    tch::manual_seed(12);
    let init = (
        Tensor::randn([c, d], opts) * 0.1,
        Tensor::randn([c], opts) * 0.1,
    );
    let lrs: Vec<f64> = (0..steps)
        .map(|k| 0.8 * 0.5 * (1.0 + (std::f64::consts::PI * k as f64 / steps as f64).cos()))
        .collect();
    let batches: Vec<(Tensor, Tensor)> = (0..steps)
        .map(|_| {
            (
                Tensor::randn([b, d], opts),
                Tensor::randint(c, [b], (Kind::Int64, Device::Cpu)),
            )
        })
        .collect();
    let (ours, after) = lars_run(&init, &batches, &lrs, None);
    let (perturbed, after_p) = lars_run(&init, &batches, &lrs, Some(1));
    let mut inputs: Vec<(String, Tensor)> = vec![
        ("w.weight".into(), init.0.copy()),
        ("w.bias".into(), init.1.copy()),
        ("lr".into(), Tensor::from_slice(&lrs).to_kind(Kind::Float)),
    ];
    for (k, (x, y)) in batches.iter().enumerate() {
        inputs.push((format!("x_{k}"), x.copy()));
        inputs.push((format!("y_{k}"), y.copy()));
    }
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_lars.py");
    let args = [0.9, 1e-4, 1e-3, steps as f64].map(|v| v.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let names = ["weight", "bias"];
    let out = run_official(&checkout, script, &refs, &args);
    let (official, official_after): (Vec<Vec<f64>>, Vec<Result<Tensor, f64>>) = match &out {
        Some(out) => {
            let curve = (0..steps)
                .map(|k| vec![get(out, &format!("loss_{k}")).double_value(&[])])
                .collect();
            let w = names
                .iter()
                .map(|n| Ok(get(out, &format!("w.{n}")).shallow_clone()))
                .collect();
            (curve, w)
        }
        None => {
            let f = read_fixture(&fixture);
            println!(
                    "official_lars: no official checkout or no Python with torch: ours against the committed official curve ({}, official commit {})",
                    fixture.display(),
                    f["official_commit"].as_str().unwrap_or("?")
                );
            let w = names
                .iter()
                .map(|n| Err(f["after_l2"][n].as_f64().expect("a norm in the fixture")))
                .collect();
            (read_curves(&f, "curves", &["loss"]), w)
        }
    };
    check_steps("official_lars", &["loss"], &ours, &official, &perturbed);
    for (((name, o), p), f) in names.iter().zip(&after).zip(&after_p).zip(&official_after) {
        let drift = l2(&(o - p));
        let (diff, norm) = match f {
            Ok(f) => (l2(&(o - f)), l2(f)),
            Err(norm) => ((l2(o) - norm).abs(), *norm),
        };
        let bound = (8.0 * steps as f64 * drift).max(8.0 * 2f64.powi(-23) * norm);
        println!("official_lars: {name} after {steps} steps: |ours − official| {diff:.3e} (relative {:.3e}), fp32 drift {drift:.3e}, bound {bound:.3e}", diff / norm);
        assert!(
            diff <= bound,
            "{name}: |ours − official| {diff:.3e} > bound {bound:.3e}"
        );
    }
    if let Some(out) = &out {
        if steps == DEFAULT && (writing_fixtures() || !fixture.is_file()) {
            let curve: Vec<Vec<f64>> = (0..steps)
                .map(|k| vec![get(out, &format!("loss_{k}")).double_value(&[])])
                .collect();
            let v = serde_json::json!({
                "what": "official MNCLGLF LARS (optimizer/lars.py, implementation='PyTorch') for 50 steps on the probe of crates/contrast-core/tests/official_lars.rs: per-step loss, L2 norm of the weights after the steps",
                "official_commit": checkout_commit(&checkout),
                "steps": steps,
                "curves": curves_json(&["loss"], &curve),
                "after_l2": {
                    "weight": l2(get(out, "w.weight")),
                    "bias": l2(get(out, "w.bias")),
                },
            });
            std::fs::write(&fixture, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
            println!("official: wrote {}", fixture.display());
        }
    }
}
