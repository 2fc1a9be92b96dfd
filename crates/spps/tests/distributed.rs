//! SPPS's MoCo v2 baseline (a ResNet with BatchNorm in the backbone and the heads) as 2 ranks
//! (the `spps` binary, started as torchrun starts it) with SyncBatchNorm, against one process on
//! the global batch. Each rank's queries meet its own keys and the shared queue; the queue
//! takes the keys of every rank (as the official `_dequeue_and_enqueue`), in rank order, which is
//! the one-process order; SyncBatchNorm gives every BatchNorm the global batch's statistics. So
//! the two runs must agree: the loss curve, and every tensor within its measured fp32 drift.

use contrast_core::testing::ranks::{
    assert_ok, check_within_drift, curve, curve_diff, launch, stderr,
};
use contrast_core::testing::write_synthetic_cifar10;
use contrast_core::train::config::to_toml;
use spps::config::Framework;

mod common;
use common::tiny;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_spps");

#[test]
fn mocov2_as_two_ranks_with_sync_batch_norm_trains_what_one_process_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    write_synthetic_cifar10(&data, 8); // 40 train images: 5 steps of 8 per epoch
    let mut c = tiny(&data);
    c.framework = Framework::Mocov2;
    c.eval.linear_epochs = 1;
    c.runtime.sync_batch_norm = Some(true);
    let preset = tmp.path().join("tiny.toml");
    std::fs::write(&preset, to_toml(&c).unwrap()).unwrap();
    let runs = tmp.path().join("runs");
    let cmd = |name: &str| {
        let mut c = Command::new(BIN);
        c.args(["pretrain", "--preset"])
            .arg(&preset)
            .arg("--runs-dir")
            .arg(&runs)
            .args(["--name", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        c
    };
    let one = cmd("one").output().unwrap();
    assert!(one.status.success(), "{}", stderr(&one));
    let p = cmd("perturbed")
        .env("CONTRAST_PERTURB_INIT", "3")
        .output()
        .unwrap();
    assert!(p.status.success(), "{}", stderr(&p));
    let outs = launch(2, || cmd("two"), &[]);
    assert_ok(&outs, "two");
    let run = |n: &str| runs.join("spps").join(n);
    let ((ratio, name), (worst, worst_name)) =
        check_within_drift(&run("two"), &run("one"), &run("perturbed"), 10);
    let (l1, l2) = (curve(&run("one"), "loss"), curve(&run("two"), "loss"));
    assert_eq!(l1.len(), 10, "one loss per step");
    let loss_diff = curve_diff(&l2, &l1);
    assert!(loss_diff <= 1e-6, "loss curves differ by {loss_diff:.3e}");
    println!(
        "SPPS MoCo v2 (ResNet, SyncBatchNorm), 10 steps, 2 ranks vs one process on the global batch: loss curve within {loss_diff:.1e}; every tensor within 8·k× its fp32 drift (largest ratio {ratio:.3}, {name}; largest plain relative difference {worst:.2e}, {worst_name})"
    );
}
