//! CLAIRES as 2 ranks (the `claires` binary, started as torchrun starts it) against one process
//! on the global batch: each rank embeds its rows, and the CLIP loss runs over the image and
//! text features of every rank, gathered with gradient (open_clip's `ClipLoss` with
//! `--gather-with-grad`), so the encoders, heads and logit scale get the global batch's
//! gradient. The heads' dropout is off (the MiniLM is frozen in the tiny config), so the two runs
//! must agree: the loss curve within the derived fp32 drift bound, every tensor within its
//! measured drift. Two cases: the heads alone (image tower frozen), and the image tower training
//! with its BatchNorms synchronised (`runtime.sync_batch_norm = true`; per rank by default, as
//! open_clip). A loss left per rank fails (the heads' tensors ~300× their bound). Rank 0 alone runs the per-epoch retrieval
//! monitor and the final evaluation.

use claires::text::minilm_dir;
use contrast_core::testing::ranks::{against_one, binary, curve};
use contrast_core::train::config::to_toml;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_claires");

/// Train `c` as one process, from weights perturbed by one fp32 rounding, and as 2 ranks; the
/// loss curve within the derived drift bound, every tensor within its own (9 steps).
fn two_ranks_against_one(tmp: &std::path::Path, c: &claires::config::ClairesConfig, what: &str) {
    let preset = tmp.join(format!("{what}.toml"));
    std::fs::write(&preset, to_toml(c).unwrap()).unwrap();
    let runs = tmp.join("runs");
    let r = against_one(
        &runs.join("claires"),
        what,
        binary(BIN, "train", &preset, &runs, env!("CARGO_MANIFEST_DIR")),
    );
    // the retrieval monitor of every epoch, on rank 0
    assert_eq!(
        curve(&r.two, "paired_mrr").len(),
        3,
        "one retrieval line per epoch"
    );
    r.check(&format!("CLAIRES ({what})"), 9, "loss");
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
