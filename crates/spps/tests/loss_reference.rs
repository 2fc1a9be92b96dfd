//! Our own restatement (no official code covers SPPS's extra positives; SPPS has no code): the
//! multi-positive objectives against our PyTorch statement of their formulas
//! (tests/py/spps_ref.py, one call): SimCLR+SPPS loss and the gradients of every view's
//! embeddings, and MoCo-v2 with an extra semantic positive (core `moco_multi_positive_loss`).
//! Without partners the losses are checked against the official code instead
//! (`official_simclr.rs`, `official_mocov2_steps.rs`).

use contrast_core::frameworks::mocov2::moco_multi_positive_loss;
use contrast_core::loss::normalize;
use contrast_core::testing::{assert_close, get, run_reference};
use spps::loss::spps_nt_xent;
use tch::{Device, Kind, Tensor};

#[test]
fn multi_positive_losses_match_pytorch() {
    let _g = contrast_core::testing::global_rng_lock();
    tch::manual_seed(11);
    let o = (Kind::Float, Device::Cpu);
    let (n, d, m) = (6i64, 8i64, 3i64);
    let z1 = Tensor::randn([n, d], o).set_requires_grad(true);
    let z2 = Tensor::randn([n, d], o).set_requires_grad(true);
    let zs = Tensor::randn([m, d], o).set_requires_grad(true);
    // partners for anchors 0, 3, 3 (one anchor with two semantic partners)
    let anchor = Tensor::from_slice(&[0i64, 3, 3]);
    let tau = 0.5;
    let loss = spps_nt_xent(&z1, &z2, Some((&zs, &anchor)), tau).unwrap();
    loss.backward();

    let q = Tensor::randn([4, d], o);
    let k = Tensor::randn([4, d], o);
    let e = Tensor::randn([2, d], o);
    let e_anchor = Tensor::from_slice(&[2i64, 0]);
    let queue = Tensor::randn([7, d], o);
    let tau_m = 0.2;
    let qn = normalize(&q).detach().set_requires_grad(true);
    let ml = moco_multi_positive_loss(
        &qn,
        &normalize(&k),
        Some((&normalize(&e), &e_anchor)),
        &normalize(&queue),
        tau_m,
    )
    .unwrap();
    ml.backward();

    let inputs = [
        ("z1", &z1),
        ("z2", &z2),
        ("zs", &zs),
        ("anchor", &anchor),
        ("q", &q),
        ("k", &k),
        ("e", &e),
        ("e_anchor", &e_anchor),
        ("queue", &queue),
    ];
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/spps_ref.py");
    let Some(out) =
        run_reference(script, &inputs, &[&tau.to_string(), &tau_m.to_string()]).unwrap()
    else {
        return;
    };
    assert_close(
        &loss.view([1]),
        get(&out, "simclr_loss"),
        1e-5,
        1e-5,
        "SimCLR+SPPS loss",
    );
    assert_close(&z1.grad(), get(&out, "g_z1"), 1e-6, 1e-4, "grad z1");
    assert_close(&z2.grad(), get(&out, "g_z2"), 1e-6, 1e-4, "grad z2");
    assert_close(&zs.grad(), get(&out, "g_zs"), 1e-6, 1e-4, "grad zs");
    assert_close(
        &ml.view([1]),
        get(&out, "moco_loss"),
        1e-5,
        1e-5,
        "MoCo-v2+SPPS loss",
    );
    assert_close(&qn.grad(), get(&out, "g_q"), 1e-6, 1e-4, "grad q");
}
