//! The UA-MT baseline objective of the `baseline-uamt-*` presets (`loss.ce_weight = 0.5`,
//! `loss.lambda_seg = 0.5`, `loss.dice = "ua-mt"`) against the OFFICIAL UA-MT code
//! (`code/utils/losses.py` `dice_loss` + the loss lines of `code/train_LA.py`, checked out by
//! `cargo xtask official fetch ua-mt` into the git-ignored `.official/ua-mt`): the loss, its CE
//! and Dice parts and the gradient on the logits. Without the checkout the test says so in one
//! line and compares with `official/fixtures/ua_mt_loss.json`.

use contrast_core::testing::official::{
    checkout, compare_scalars, fixture, run_official, write_scalars, writing_fixtures,
};
use contrast_core::testing::{assert_close, get, global_rng_lock};
use fba_net::loss::{fba_loss, DecoderOutputs, DiceForm, LossWeights};
use tch::{Device, Kind, Tensor};

#[test]
fn uamt_objective_equals_the_official_lines() {
    let _rng = global_rng_lock();
    let (checkout, fixture) = (checkout("ua-mt"), fixture("ua_mt_loss.json"));
    tch::manual_seed(4);
    let logits = Tensor::randn([2, 2, 6, 5, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let labels = Tensor::randint(2, [2, 6, 5, 4], (Kind::Int64, Device::Cpu));
    let w = LossWeights {
        lambda_seg: 0.5,
        ce: 0.5,
        dice: DiceForm::UaMt,
        consistency: 0.0,
        contrast: 0.0,
        temperature: 0.1,
        alpha_max: 0.25,
        alpha_min: 2.5,
    };
    let outs = [DecoderOutputs {
        logits: &logits,
        fg: None,
        bg: None,
    }];
    let terms = fba_loss(&outs, &labels, &w).unwrap();
    terms.total.backward();
    let ours = [
        ("total", terms.total.double_value(&[])),
        ("ce", terms.seg_ce.as_ref().unwrap().double_value(&[])),
        ("dice", terms.seg_dice.double_value(&[])),
        ("grad_l2", logits.grad().norm().double_value(&[])),
    ];
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/py/official_uamt_loss.py"
    );
    let inputs = [("logits", &logits.detach()), ("labels", &labels)];
    let Some(out) = run_official(&checkout, script, &inputs, &[]) else {
        compare_scalars(&fixture, "official_uamt", &ours, 1e-6);
        return;
    };
    let official = [
        ("total", get(&out, "total").double_value(&[])),
        ("ce", get(&out, "ce").double_value(&[])),
        ("dice", get(&out, "dice").double_value(&[])),
        ("grad_l2", get(&out, "g.logits").norm().double_value(&[])),
    ];
    for ((name, v), (_, o)) in ours.iter().zip(&official) {
        assert!(
            (v - o).abs() <= 1e-6 * o.abs().max(1.0),
            "{name}: ours {v} vs official {o}"
        );
    }
    assert_close(
        &logits.grad(),
        get(&out, "g.logits"),
        1e-8,
        1e-5,
        "dL/dlogits",
    );
    println!("official_uamt: {ours:?} and the gradient equal UA-MT's");
    if writing_fixtures() {
        let what = "UA-MT supervised objective (code/utils/losses.py dice_loss + train_LA.py loss lines) on the logits of crates/fba-net/tests/official_uamt.rs";
        write_scalars(&fixture, &checkout, what, &official);
    }
}
