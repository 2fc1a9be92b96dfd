//! Our MNCLGLF objective as the presets train it (`released_code_l1 = true`) against the
//! OFFICIAL `InfoNCE.forward` of `loss_functions/infoNCE.py` (liweiquan39/MNCLGLF, checked out by
//! `cargo xtask official fetch multinet` into the git-ignored `.official/multinet`, run through
//! `tests/py/official_loss.py`, which supplies the missing `core` package: one-process
//! `dist`, lightly's `NTXentLoss`). Same predictions, six local keys per view and memory-bank
//! neighbours: the total and its gradient on the three predictions (none on p2, whose only term
//! is detached in the released code).
//!
//! Without the checkout (or Python with lightly) the test says so in one line and compares with
//! `official/fixtures/multinet_loss.json`.

use contrast_core::testing::{assert_close, get, global_rng_lock, run_reference};
use multinet::loss::{mnclglf_loss, LossConfig, LossInputs};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn objective_equals_the_released_info_nce() {
    let _rng = global_rng_lock();
    let checkout = repo_root().join(".official/multinet");
    let fixture = repo_root().join("official/fixtures/multinet_loss.json");
    let (n, d, c) = (8i64, 16i64, 6i64);
    let o = (Kind::Float, Device::Cpu);
    tch::manual_seed(13);
    let p1 = Tensor::randn([n, d], o).set_requires_grad(true);
    let p2 = Tensor::randn([n, d], o).set_requires_grad(true);
    let p3 = Tensor::randn([n, d], o).set_requires_grad(true);
    let k1 = Tensor::randn([c * n, d], o);
    let k2 = Tensor::randn([c * n, d], o);
    let j1 = Tensor::randn([n, d], o);
    let j3 = Tensor::randn([n, d], o);
    let cfg = LossConfig {
        released_code_l1: true,
        ..LossConfig::default()
    };
    let terms = mnclglf_loss(
        &cfg,
        &LossInputs {
            p1: &p1,
            p2: &p2,
            p3: &p3,
            k1: &k1,
            k2: &k2,
            j1: &j1,
            j3: &j3,
        },
    )
    .unwrap();
    terms.total.backward();
    let total = terms.total.double_value(&[]);
    let grad = |p: &Tensor| {
        let g = p.grad();
        if g.defined() {
            g
        } else {
            p.zeros_like()
        }
    };
    let (g1, g2, g3) = (grad(&p1), grad(&p2), grad(&p3));
    assert_eq!(
        g2.abs().sum(Kind::Float).double_value(&[]),
        0.0,
        "p2 is only in the detached term"
    );

    let (p1d, p2d, p3d) = (p1.detach(), p2.detach(), p3.detach());
    let inputs = [
        ("p1", &p1d),
        ("p2", &p2d),
        ("p3", &p3d),
        ("k1", &k1),
        ("k2", &k2),
        ("j1", &j1),
        ("j3", &j3),
    ];
    let have = checkout.join(".contrast-commit").exists();
    let out = if have {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_loss.py");
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
            ("grad_p1_l2", g1.norm().double_value(&[])),
            ("grad_p3_l2", g3.norm().double_value(&[])),
        ] {
            let w = f[name].as_f64().unwrap();
            assert!(
                (v - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{name}: ours {v} vs official {w}"
            );
        }
        println!(
            "official_loss: no official checkout (`cargo xtask official fetch multinet`) or no lightly; our objective matches the committed official numbers"
        );
        return;
    };
    let w = get(&out, "total").double_value(&[]);
    assert!(
        (total - w).abs() <= 1e-5 * w.abs(),
        "total: ours {total} vs official {w}"
    );
    assert_close(&g1, get(&out, "g.p1"), 1e-6, 1e-4, "dL/dp1");
    assert_close(&g2, get(&out, "g.p2"), 0.0, 0.0, "dL/dp2");
    assert_close(&g3, get(&out, "g.p3"), 1e-6, 1e-4, "dL/dp3");
    println!("official_loss: total {total} and the gradients equal the released InfoNCE");
    if std::env::var_os("CONTRAST_WRITE_FIXTURES").is_some() {
        let f = serde_json::json!({
            "what": "released MNCLGLF InfoNCE.forward (loss_functions/infoNCE.py, core stubbed, lightly NTXentLoss) on the inputs of crates/multinet/tests/official_loss.rs",
            "official_commit": std::fs::read_to_string(checkout.join(".contrast-commit")).unwrap_or_default().trim(),
            "total": w,
            "grad_p1_l2": get(&out, "g.p1").norm().double_value(&[]),
            "grad_p3_l2": get(&out, "g.p3").norm().double_value(&[]),
        });
        std::fs::write(&fixture, serde_json::to_string_pretty(&f).unwrap() + "\n").unwrap();
        println!("official_loss: wrote {}", fixture.display());
    }
}
