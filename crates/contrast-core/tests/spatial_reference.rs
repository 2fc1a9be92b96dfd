//! Our own restatement (no official code covers Spade's losses; Spade has no code): the
//! spatially debiased losses (`contrast_core::spatial_contrast`) against an explicit per-row
//! PyTorch reference (`tests/py/spatial_reference.py`): values and input gradients, with
//! every spatial option switched on.

use contrast_core::spatial_contrast::{global_loss, local_loss, GlobalConfig};
use contrast_core::testing::{assert_close, get, global_rng_lock, run_reference};
use tch::{Device, Kind, Tensor};

#[test]
fn global_and_local_losses_match_pytorch() {
    let _g = global_rng_lock();
    tch::manual_seed(11);
    let opts = (Kind::Float, Device::Cpu);
    // 6 crops = 3 pairs of twins from 3 volumes; centres chosen so that some pairs are near
    let z = Tensor::randn([6, 8], opts).set_requires_grad(true);
    let twin = Tensor::from_slice(&[3i64, 4, 5, 0, 1, 2]);
    let volume = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2]);
    let centres = Tensor::from_slice(&[
        0.50f32, 0.50, 0.50, 0.52, 0.49, 0.50, 0.90, 0.10, 0.20, //
        0.48, 0.51, 0.50, 0.55, 0.50, 0.47, 0.20, 0.80, 0.30,
    ])
    .view([6, 3]);
    let cfg = GlobalConfig {
        temperature: 0.2,
        cross_volume_radius: 0.08,
        negative_radius: 0.1,
        weight_power: 2.0,
        far_radius: 0.5,
    };
    let g = global_loss(&z, &twin, &volume, &centres, &cfg).unwrap();
    g.backward();

    let fa = Tensor::randn([10, 6], opts).set_requires_grad(true);
    let fb = Tensor::randn([10, 6], opts).set_requires_grad(true);
    let pos_b = Tensor::randint(12, [10, 3], (Kind::Int64, Device::Cpu)).to_kind(Kind::Float);
    let l = local_loss(&fa, &fb, &pos_b, 0.3, 4.0).unwrap();
    l.backward();

    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/spatial_reference.py");
    let inputs = [
        ("z", &z),
        ("twin", &twin),
        ("volume", &volume),
        ("centres", &centres),
        ("fa", &fa),
        ("fb", &fb),
        ("pos_b", &pos_b),
    ];
    let args = ["0.2", "0.08", "0.1", "2.0", "0.5", "0.3", "4.0"];
    let Some(out) = run_reference(&script, &inputs, &args).unwrap() else {
        return;
    };
    let f = |t: &Tensor| t.to_kind(Kind::Double).view([-1]);
    assert_close(&f(&g), &f(get(&out, "global")), 1e-6, 1e-5, "global loss");
    assert_close(
        &f(&z.grad()),
        &f(get(&out, "grad_z")),
        1e-6,
        1e-4,
        "global dL/dz",
    );
    assert_close(&f(&l), &f(get(&out, "local")), 1e-6, 1e-5, "local loss");
    assert_close(
        &f(&fa.grad()),
        &f(get(&out, "grad_fa")),
        1e-6,
        1e-4,
        "local dL/dfa",
    );
    assert_close(
        &f(&fb.grad()),
        &f(get(&out, "grad_fb")),
        1e-6,
        1e-4,
        "local dL/dfb",
    );
}
