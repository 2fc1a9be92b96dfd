//! GraSS against the OFFICIAL code of its VISSL fork (GeoX-Lab/GraSS, checked out by
//! `cargo xtask official fetch grass` into the git-ignored `.official/grass`), unit by unit:
//!
//! * the gradient-guided sampling (`sampling::gradient_guided_crops` vs `getHeadMapCut` +
//!   `DACrop` of `GraSS_train_step.py`, through `tests/py/official_sampling.py`): the same views,
//!   layer-4 maps and gradients (the loss is `Σ F·R`, so dL/dF = R), eight views with random
//!   maps and gradients; every cropped and resized view compared exactly (the official heat map
//!   is resized with `cv2.resize`, ours with `upsample_bilinear2d`; both half-pixel bilinear);
//! * the SimCLR loss (core `NtXent` vs the fork's `SimclrInfoNCELoss`, through
//!   `tests/py/official_simclr_loss.py`, one process, τ 0.5 as `grass_1gpu_resnet_b256.yaml`).
//!
//! Without the checkout (or Python with OpenCV and scikit-image) each test says so in one line
//! and compares with the official numbers committed in `official/fixtures/`.

use contrast_core::testing::official::{
    checkout, compare_scalars, fixture, run_official, write_scalars, writing_fixtures,
};
use contrast_core::testing::{assert_close, get, global_rng_lock};
use grass::sampling::gradient_guided_crops;
use tch::{Device, Kind, Tensor};

fn script(name: &str) -> String {
    format!("{}/tests/py/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn crops_equal_the_official_gradient_guided_sampling() {
    let _rng = global_rng_lock();
    let (checkout, fixture) = (checkout("grass"), fixture("grass_sampling.json"));
    let (b, c, h, s) = (8i64, 16i64, 7i64, 56i64);
    let opts = (Kind::Float, Device::Cpu);
    tch::manual_seed(21);
    let x = Tensor::rand([b, 3, s, s], opts);
    let f = Tensor::randn([b, c, h, h], opts).relu(); // layer-4 maps are ReLU outputs
    let r = Tensor::randn([b, c, h, h], opts);
    let (ours, boxes, _) = gradient_guided_crops(&x, &f, &r, 0.5).unwrap();
    let cropped = boxes.iter().filter(|b| b.is_some()).count();
    assert!(
        cropped >= b as usize / 2,
        "only {cropped} of {b} views cropped"
    );
    let names: Vec<String> = (0..b).map(|i| format!("view_l2_{i}")).collect();
    let l2s =
        |t: &Tensor| -> Vec<f64> { (0..b).map(|i| t.get(i).norm().double_value(&[])).collect() };
    let ours_l2 = l2s(&ours);
    let named = |v: &[f64]| -> Vec<(&str, f64)> {
        names
            .iter()
            .map(String::as_str)
            .zip(v.iter().copied())
            .collect()
    };
    let inputs = [("x", &x), ("f", &f), ("r", &r)];
    let Some(out) = run_official(&checkout, &script("official_sampling.py"), &inputs, &[]) else {
        compare_scalars(&fixture, "official_sampling", &named(&ours_l2), 1e-5);
        return;
    };
    let official = get(&out, "crops");
    for i in 0..b {
        let what = format!("view {i} (box {:?})", boxes[i as usize]);
        assert_close(&ours.get(i), &official.get(i), 0.0, 0.0, &what);
    }
    println!("official_sampling: all {b} views ({cropped} cropped) equal the official sampling");
    if writing_fixtures() {
        let what = "official GraSS gradient-guided sampling (getHeadMapCut + DACrop) on the views, maps and gradients of crates/grass/tests/official_sampling.rs: L2 norm of every output view";
        write_scalars(&fixture, &checkout, what, &named(&l2s(official)));
    }
}

#[test]
fn nt_xent_equals_the_official_vissl_simclr_loss() {
    let _rng = global_rng_lock();
    let (checkout, fixture) = (checkout("grass"), fixture("grass_simclr_loss.json"));
    let tau = 0.5;
    tch::manual_seed(31);
    let z = Tensor::randn([16, 32], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let loss = contrast_core::loss::NtXent::new(tau)
        .unwrap()
        .forward(&z)
        .unwrap();
    loss.backward();
    let ours = [
        ("loss", loss.double_value(&[])),
        ("grad_l2", z.grad().norm().double_value(&[])),
    ];
    let t = tau.to_string();
    let inputs = [("z", &z.detach())];
    let Some(out) = run_official(
        &checkout,
        &script("official_simclr_loss.py"),
        &inputs,
        &[&t],
    ) else {
        compare_scalars(&fixture, "official_simclr_loss", &ours, 1e-5);
        return;
    };
    let w = get(&out, "loss").double_value(&[]);
    assert!(
        (ours[0].1 - w).abs() <= 1e-5 * w,
        "loss: ours {} vs official {w}",
        ours[0].1
    );
    assert_close(&z.grad(), get(&out, "g.z"), 1e-6, 1e-4, "dL/dz");
    println!("official_simclr_loss: loss {w} and its gradient equal VISSL's SimclrInfoNCELoss");
    if writing_fixtures() {
        let what = "official SimclrInfoNCELoss (GraSS VISSL fork, one process) on the projections of crates/grass/tests/official_sampling.rs";
        let official = [
            ("loss", w),
            ("grad_l2", get(&out, "g.z").norm().double_value(&[])),
        ];
        write_scalars(&fixture, &checkout, what, &official);
    }
}
