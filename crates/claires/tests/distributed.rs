//! CLAIRES as 2 ranks (the `claires` binary, started as torchrun starts it) against one process
//! on the global batch: each rank embeds its rows, and the CLIP loss runs over the image and
//! text features of every rank, gathered with gradient (open_clip's `ClipLoss` with
//! `--gather-with-grad`), so the encoders, heads and logit scale get the global batch's
//! gradient. The heads' dropout is off (the MiniLM is frozen in the tiny config), so the two runs
//! must agree: the loss curve within the derived fp32 drift bound, every tensor within its
//! measured drift. Two cases: the heads alone (image tower frozen), and the image tower training
//! with its BatchNorms synchronised (`runtime.sync_batch_norm = true`; per rank by default, as
//! open_clip). A loss left per rank fails at step 1. Rank 0 alone runs the per-epoch retrieval
//! monitor and the final evaluation.

use claires::text::minilm_dir;
use contrast_core::testing::official::check_steps;
use contrast_core::testing::ranks::{assert_ok, check_within_drift, curve, launch, stderr};
use contrast_core::train::config::to_toml;
use std::process::Command;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_claires");

/// Train `c` as one process, from weights perturbed by one fp32 rounding, and as 2 ranks; the
/// loss curve within the derived drift bound, every tensor within its own (9 steps).
fn two_ranks_against_one(tmp: &std::path::Path, c: &claires::config::ClairesConfig, what: &str) {
    let steps = 9;
    let preset = tmp.join(format!("{what}.toml"));
    std::fs::write(&preset, to_toml(c).unwrap()).unwrap();
    let runs = tmp.join("runs");
    let cmd = |name: &str| {
        let mut c = Command::new(BIN);
        c.args(["train", "--preset"])
            .arg(&preset)
            .arg("--runs-dir")
            .arg(&runs)
            .args(["--name", &format!("{what}-{name}")])
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
    assert_ok(&outs, what);
    let run = |n: &str| runs.join("claires").join(format!("{what}-{n}"));
    let ((ratio, name), (worst, worst_name)) =
        check_within_drift(&run("two"), &run("one"), &run("perturbed"), steps);
    let rows = |v: Vec<f64>| v.into_iter().map(|x| vec![x]).collect::<Vec<_>>();
    let (l1, l2, lp) = (
        rows(curve(&run("one"), "loss")),
        rows(curve(&run("two"), "loss")),
        rows(curve(&run("perturbed"), "loss")),
    );
    assert_eq!(l1.len(), steps as usize, "one loss per step");
    let r = check_steps(what, &["loss"], &l1, &l2, &lp);
    // the retrieval monitor of every epoch, on rank 0
    assert_eq!(
        curve(&run("two"), "paired_mrr").len(),
        3,
        "one retrieval line per epoch"
    );
    println!(
        "CLAIRES ({what}), {steps} steps, 2 ranks vs one process on the global batch: loss curve within {r:.3} of the drift bound; every tensor within 8·k× its fp32 drift (largest ratio {ratio:.3}, {name}; largest plain relative difference {worst:.2e}, {worst_name})"
    );
}

#[test]
fn training_as_two_ranks_trains_what_one_process_trains() {
    if let Err(e) = minilm_dir() {
        println!("skipped: claires distributed test ({e:#})");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let manifest = common::write_records(tmp.path(), 16);
    let mut c = common::tiny_config(&manifest);
    // 12 train records, global batch 4 (2 a rank): 3 steps an epoch, 9 steps
    c.optim.batch_size = 4;
    c.optim.epochs = 3;
    c.model.head_dropout = 0.0;
    c.log.checkpoint_every = 3;
    // a tenth of the default rates: at the defaults this tiny set's loss collapses within a
    // few steps, and one fp32 rounding moves the loss by 0.03 at step 5
    c.optim.lr_head *= 0.1;
    c.optim.lr_image *= 0.1;
    // the heads and the logit scale alone
    let mut heads = c.clone();
    heads.model.freeze_image = true;
    two_ranks_against_one(tmp.path(), &heads, "heads");
    // the image tower too, its BatchNorms synchronised, at 64 px: layer 4's 2×2 maps give its
    // BatchNorms 16 values a channel (at 32 px, 1×1 maps and 4 values, statistics this
    // ill-conditioned move AdamW's moments of layer 4 by 4e-2 relative between the two runs,
    // 180× a one-rounding perturbation's effect)
    let mut tower = c;
    tower.data.image_size = 64;
    tower.runtime.sync_batch_norm = Some(true);
    two_ranks_against_one(tmp.path(), &tower, "image tower, SyncBatchNorm");
}
