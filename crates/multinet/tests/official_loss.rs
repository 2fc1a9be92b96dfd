//! Our MNCLGLF objective as the presets train it (`released_code_l1 = true`) against the
//! OFFICIAL `InfoNCE.forward` of `loss_functions/infoNCE.py` (liweiquan39/MNCLGLF, checked out by
//! `cargo xtask official fetch multinet` into the git-ignored `.official/multinet`, run through
//! `tests/py/official_loss.py`, which maps the imported `core` package onto the checkout, whose
//! `utils/` folder is `core.utils`: the NT-Xent is the repository's own `utils/ntx_ent_loss.py`;
//! only `core.utils.dist2` and the one-process gather are glue). Same predictions, six local keys per view and memory-bank
//! neighbours: the total and its gradient on the three predictions (none on p2, whose only term
//! is detached in the released code).
//!
//! Without the checkout (or Python) the test says so in one line and compares with
//! `official/fixtures/multinet_loss.json`.

use contrast_core::testing::official::{
    checkout, compare_scalars, fixture, run_official, write_scalars, writing_fixtures,
};
use contrast_core::testing::{assert_close, get, global_rng_lock};
use multinet::loss::{mnclglf_loss, LossConfig, LossInputs};
use tch::{Device, Kind, Tensor};

#[test]
fn objective_equals_the_released_info_nce() {
    let _rng = global_rng_lock();
    let (checkout, fixture) = (checkout("multinet"), fixture("multinet_loss.json"));
    let (n, d, c) = (8i64, 16i64, 6i64);
    let o = (Kind::Float, Device::Cpu);
    tch::manual_seed(13);
    let p: Vec<Tensor> = (0..3)
        .map(|_| Tensor::randn([n, d], o).set_requires_grad(true))
        .collect();
    let (k1, k2) = (Tensor::randn([c * n, d], o), Tensor::randn([c * n, d], o));
    let (j1, j3) = (Tensor::randn([n, d], o), Tensor::randn([n, d], o));
    let cfg = LossConfig {
        released_code_l1: true,
        ..LossConfig::default()
    };
    let x = LossInputs {
        p1: &p[0],
        p2: &p[1],
        p3: &p[2],
        k1: &k1,
        k2: &k2,
        j1: &j1,
        j3: &j3,
    };
    let terms = mnclglf_loss(&cfg, &x).unwrap();
    terms.total.backward();
    // p2 is only in the detached term: no gradient reaches it
    assert!(!p[1].grad().defined() || p[1].grad().abs().sum(Kind::Float).double_value(&[]) == 0.0);
    let ours = [
        ("total", terms.total.double_value(&[])),
        ("grad_p1_l2", p[0].grad().norm().double_value(&[])),
        ("grad_p3_l2", p[2].grad().norm().double_value(&[])),
    ];
    let pd: Vec<Tensor> = p.iter().map(Tensor::detach).collect();
    let inputs = [
        ("p1", &pd[0]),
        ("p2", &pd[1]),
        ("p3", &pd[2]),
        ("k1", &k1),
        ("k2", &k2),
        ("j1", &j1),
        ("j3", &j3),
    ];
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_loss.py");
    let Some(out) = run_official(&checkout, script, &inputs, &[]) else {
        compare_scalars(&fixture, "official_loss", &ours, 1e-5);
        return;
    };
    let w = get(&out, "total").double_value(&[]);
    assert!(
        (ours[0].1 - w).abs() <= 1e-5 * w.abs(),
        "total: ours {} vs official {w}",
        ours[0].1
    );
    assert_close(&p[0].grad(), get(&out, "g.p1"), 1e-6, 1e-4, "dL/dp1");
    assert_eq!(
        get(&out, "g.p2").abs().sum(Kind::Float).double_value(&[]),
        0.0,
        "official dL/dp2"
    );
    assert_close(&p[2].grad(), get(&out, "g.p3"), 1e-6, 1e-4, "dL/dp3");
    println!("official_loss: total {w} and the gradients equal the released InfoNCE");
    if writing_fixtures() {
        let what = "released MNCLGLF InfoNCE.forward (loss_functions/infoNCE.py with the repository's utils/ntx_ent_loss.py as core.utils; core.utils.dist2 stubbed) on the inputs of crates/multinet/tests/official_loss.rs";
        let official = [
            ("total", w),
            ("grad_p1_l2", get(&out, "g.p1").norm().double_value(&[])),
            ("grad_p3_l2", get(&out, "g.p3").norm().double_value(&[])),
        ];
        write_scalars(&fixture, &checkout, what, &official);
    }
}
