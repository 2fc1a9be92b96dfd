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

use contrast_core::optim::lars::{Lars, LarsConfig, LarsMode};
use contrast_core::optim::{Optimizer, ParamGroup};
use contrast_core::testing::official::{
    checkout, compare_with_fixture, fixture, read_fixture, run_official, write_fixture,
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
