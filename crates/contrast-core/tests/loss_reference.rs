//! Losses against their PyTorch references (tests/py/*.py), on the same random inputs.

use contrast_core::loss::info_nce;
use contrast_core::testing::{assert_close, get, run_reference};
use tch::{Kind, Tensor};

fn script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

#[test]
fn info_nce_matches_pytorch_value_and_gradients() {
    tch::manual_seed(1);
    let q = Tensor::randn([32, 16], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let k = Tensor::randn([32, 16], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let loss = info_nce(&q, &k, 0.2);
    loss.backward();
    let Some(out) =
        run_reference(script("info_nce.py"), &[("q", &q), ("k", &k)], &["0.2"]).unwrap()
    else {
        return;
    };
    assert_close(&loss, get(&out, "loss"), 1e-5, 1e-5, "info_nce loss");
    assert_close(&q.grad(), get(&out, "grad_q"), 1e-6, 1e-4, "info_nce dL/dq");
    assert_close(&k.grad(), get(&out, "grad_k"), 1e-6, 1e-4, "info_nce dL/dk");
}
