//! The UA-MT baseline objective of the `baseline-uamt-*` presets (`loss.ce_weight = 0.5`,
//! `loss.lambda_seg = 0.5`, `loss.dice = "ua-mt"`) against the OFFICIAL UA-MT code
//! (`code/utils/losses.py` `dice_loss` + the loss lines of `code/train_LA.py`, checked out by
//! `cargo xtask official fetch ua-mt` into the git-ignored `.official/ua-mt`): the loss, its CE
//! and Dice parts and the gradient on the logits. Without the checkout the test says so in one
//! line and compares with `official/fixtures/ua_mt_loss.json`.

use contrast_core::testing::{assert_close, get, global_rng_lock, run_reference};
use fba_net::loss::{fba_loss, DecoderOutputs, DiceForm, LossWeights};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn uamt_objective_equals_the_official_lines() {
    let _rng = global_rng_lock();
    let checkout = repo_root().join(".official/ua-mt");
    let fixture = repo_root().join("official/fixtures/ua_mt_loss.json");
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
    let total = terms.total.double_value(&[]);
    let dice = terms.seg_dice.double_value(&[]);
    let ce = terms.seg_ce.as_ref().unwrap().double_value(&[]);
    let gnorm = logits.grad().norm().double_value(&[]);

    let inputs = [("logits", &logits.detach()), ("labels", &labels)];
    let have = checkout.join(".contrast-commit").exists();
    let out = if have {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/official_uamt_loss.py"
        );
        let c = checkout.display().to_string();
        run_reference(script, &inputs, &[c.as_str()]).unwrap()
    } else {
        None
    };
    let Some(out) = out else {
        let text = std::fs::read_to_string(&fixture).unwrap_or_else(|e| {
            panic!(
                "no official checkout and no fixture {}: {e}",
                fixture.display()
            )
        });
        let f: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (name, v) in [
            ("total", total),
            ("ce", ce),
            ("dice", dice),
            ("grad_l2", gnorm),
        ] {
            let o = f[name].as_f64().unwrap();
            assert!(
                (v - o).abs() <= 1e-6 * o.abs().max(1.0),
                "{name}: ours {v} vs official {o}"
            );
        }
        println!(
            "official_uamt: no official checkout (`cargo xtask official fetch ua-mt`); our objective matches the committed official numbers"
        );
        return;
    };
    for (name, v) in [("total", total), ("ce", ce), ("dice", dice)] {
        let o = get(&out, name).double_value(&[]);
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
    println!("official_uamt: total {total}, CE {ce}, Dice {dice} and the gradient equal UA-MT's");
    if std::env::var_os("CONTRAST_WRITE_FIXTURES").is_some() {
        let f = serde_json::json!({
            "what": "UA-MT supervised objective (code/utils/losses.py dice_loss + train_LA.py loss lines) on the logits of crates/fba-net/tests/official_uamt.rs",
            "official_commit": std::fs::read_to_string(checkout.join(".contrast-commit")).unwrap_or_default().trim(),
            "total": get(&out, "total").double_value(&[]),
            "ce": get(&out, "ce").double_value(&[]),
            "dice": get(&out, "dice").double_value(&[]),
            "grad_l2": get(&out, "g.logits").norm().double_value(&[]),
        });
        std::fs::write(&fixture, serde_json::to_string_pretty(&f).unwrap() + "\n").unwrap();
        println!("official_uamt: wrote {}", fixture.display());
    }
}
