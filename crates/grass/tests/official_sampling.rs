//! Our gradient-guided sampling (`sampling::gradient_guided_crops`) against the OFFICIAL one
//! (`getHeadMapCut` + `DACrop` of GeoX-Lab/GraSS `GraSS_train_step.py`, checked out by
//! `cargo xtask official fetch grass` into the git-ignored `.official/grass`, run through
//! `tests/py/official_sampling.py`): the same views, layer-4 maps and gradients (the loss is
//! `Σ F·R`, so dL/dF = R), eight views with random maps and gradients. Compared: every cropped
//! and resized view, exactly (the official heat map is resized with `cv2.resize`, ours with
//! `upsample_bilinear2d`; both are half-pixel bilinear).
//!
//! Without the checkout (or Python with OpenCV and scikit-image) the test says so in one line
//! and compares with the official numbers committed in `official/fixtures/grass_sampling.json`
//! (the L2 norm of every official view).

use contrast_core::testing::{assert_close, get, global_rng_lock, run_reference};
use grass::sampling::gradient_guided_crops;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn crops_equal_the_official_gradient_guided_sampling() {
    let _rng = global_rng_lock();
    let checkout = repo_root().join(".official/grass");
    let fixture = repo_root().join("official/fixtures/grass_sampling.json");
    let (b, c, h, s) = (8i64, 16i64, 7i64, 56i64);
    let opts = (Kind::Float, Device::Cpu);
    tch::manual_seed(21);
    let x = Tensor::rand([b, 3, s, s], opts);
    // layer-4 maps are ReLU outputs; a smooth bump per view gives the heat map a structure
    let f = Tensor::randn([b, c, h, h], opts).relu();
    let r = Tensor::randn([b, c, h, h], opts);
    let (ours, boxes, _) = gradient_guided_crops(&x, &f, &r, 0.5).unwrap();
    let cropped = boxes.iter().filter(|b| b.is_some()).count();
    assert!(
        cropped >= b as usize / 2,
        "only {cropped} of {b} views cropped"
    );
    let norms: Vec<f64> = (0..b)
        .map(|i| ours.get(i).norm().double_value(&[]))
        .collect();

    let inputs = [("x", &x), ("f", &f), ("r", &r)];
    let have = checkout.join(".contrast-commit").exists();
    let out = if have {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/official_sampling.py");
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
        let fx: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (i, n) in norms.iter().enumerate() {
            let o = fx["view_l2"][i].as_f64().unwrap();
            assert!(
                (n - o).abs() <= 1e-5 * o,
                "view {i}: |ours| {n} vs |official| {o}"
            );
        }
        println!(
            "official_sampling: no official checkout (`cargo xtask official fetch grass`); our {b} views match the committed official numbers"
        );
        return;
    };
    let official = get(&out, "crops");
    for i in 0..b {
        assert_close(
            &ours.get(i),
            &official.get(i),
            0.0,
            0.0,
            &format!("view {i} (box {:?})", boxes[i as usize]),
        );
    }
    println!("official_sampling: all {b} views ({cropped} cropped) equal the official sampling");
    if std::env::var_os("CONTRAST_WRITE_FIXTURES").is_some() {
        let l2: Vec<f64> = (0..b)
            .map(|i| official.get(i).norm().double_value(&[]))
            .collect();
        let fx = serde_json::json!({
            "what": "official GraSS gradient-guided sampling (getHeadMapCut + DACrop) on the views, maps and gradients of crates/grass/tests/official_sampling.rs: L2 norm of every output view",
            "official_commit": std::fs::read_to_string(checkout.join(".contrast-commit")).unwrap_or_default().trim(),
            "view_l2": l2,
        });
        std::fs::write(&fixture, serde_json::to_string_pretty(&fx).unwrap() + "\n").unwrap();
        println!("official_sampling: wrote {}", fixture.display());
    }
}

/// Our NT-Xent (core `NtXent`, GraSS's stage-A and sampling loss) against the OFFICIAL
/// `SimclrInfoNCELoss` of the GraSS VISSL fork (`vissl/losses/simclr_info_nce_loss.py`, through
/// `tests/py/official_simclr_loss.py`, one process): the loss and its gradient on the
/// projections, τ = 0.5 as `grass_1gpu_resnet_b256.yaml`. Without the checkout: the committed
/// official numbers (`official/fixtures/grass_simclr_loss.json`).
#[test]
fn nt_xent_equals_the_official_vissl_simclr_loss() {
    let _rng = global_rng_lock();
    let checkout = repo_root().join(".official/grass");
    let fixture = repo_root().join("official/fixtures/grass_simclr_loss.json");
    let tau = 0.5;
    tch::manual_seed(31);
    let z = Tensor::randn([16, 32], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let loss = contrast_core::loss::NtXent::new(tau)
        .unwrap()
        .forward(&z)
        .unwrap();
    loss.backward();
    let ours = loss.double_value(&[]);
    let zd = z.detach();
    let have = checkout.join(".contrast-commit").exists();
    let out = if have {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/official_simclr_loss.py"
        );
        let args = [checkout.display().to_string(), tau.to_string()];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_reference(script, &[("z", &zd)], &args).unwrap()
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
        let (w, g) = (f["loss"].as_f64().unwrap(), f["grad_l2"].as_f64().unwrap());
        assert!(
            (ours - w).abs() <= 1e-5 * w,
            "loss: ours {ours} vs official {w}"
        );
        let gl2 = z.grad().norm().double_value(&[]);
        assert!(
            (gl2 - g).abs() <= 1e-4 * g,
            "|grad|: ours {gl2} vs official {g}"
        );
        println!("official_simclr_loss: no official checkout; our loss matches the committed official numbers");
        return;
    };
    let w = get(&out, "loss").double_value(&[]);
    assert!(
        (ours - w).abs() <= 1e-5 * w,
        "loss: ours {ours} vs official {w}"
    );
    assert_close(&z.grad(), get(&out, "g.z"), 1e-6, 1e-4, "dL/dz");
    println!("official_simclr_loss: loss {ours} and its gradient equal VISSL's SimclrInfoNCELoss");
    if std::env::var_os("CONTRAST_WRITE_FIXTURES").is_some() {
        let f = serde_json::json!({
            "what": "official SimclrInfoNCELoss (GraSS VISSL fork, one process) on the projections of crates/grass/tests/official_sampling.rs::nt_xent_equals_the_official_vissl_simclr_loss",
            "official_commit": std::fs::read_to_string(checkout.join(".contrast-commit")).unwrap_or_default().trim(),
            "loss": w,
            "grad_l2": get(&out, "g.z").norm().double_value(&[]),
        });
        std::fs::write(&fixture, serde_json::to_string_pretty(&f).unwrap() + "\n").unwrap();
        println!("official_simclr_loss: wrote {}", fixture.display());
    }
}
