//! GraSS pre-training as 2 ranks (the `grass` binary, started as torchrun starts it) against one
//! process on the global batch: two SimCLR warm-up epochs, then three gradient-guided ones.
//! NT-Xent runs over the projections of every rank, gathered with gradient (VISSL's
//! `SimclrInfoNCECriterion`), so the first forward's heat maps come from the global loss, and
//! the ResNet's BatchNorms are synchronised (the GraSS configuration's `CONVERT_BN_TO_SYNC_BN`).
//! Both runs must then agree: the loss curve within the derived fp32 drift bound, every tensor
//! within its measured drift. Rank 0 draws the heat-map overlays alone at the end (the network
//! in training mode, its BatchNorms not waiting for the other rank).

use contrast_core::testing::ranks::{against_one, binary, curve};
use contrast_core::train::config::to_toml;

mod common;
use common::{config, dubai_like};

const BIN: &str = env!("CARGO_BIN_EXE_grass");

#[test]
fn pretraining_as_two_ranks_trains_what_one_process_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dubai");
    dubai_like(&data);
    let mut c = config(&data);
    c.runtime.threads = 1;
    // 8 tiles, global batch 4: 2 steps an epoch, steps 5-10 gradient-guided
    c.pretrain.epochs = 5;
    c.pretrain.warmup_epochs = Some(2);
    c.log.checkpoint_every = 5;
    let preset = tmp.path().join("tiny.toml");
    std::fs::write(&preset, to_toml(&c).unwrap()).unwrap();
    let runs = tmp.path().join("runs");
    let r = against_one(
        &runs.join("grass"),
        "pretrain",
        binary(BIN, "pretrain", &preset, &runs, env!("CARGO_MANIFEST_DIR")),
    );
    // the run reached the gradient-guided stage, and rank 0 drew its overlays
    let stages = std::fs::read_to_string(r.two.join("metrics.jsonl")).unwrap();
    assert!(stages.contains("\"gs\""), "no gradient-guided step logged");
    let figures = std::fs::read_dir(r.two.join("figures")).unwrap().count();
    assert!(figures > 0, "rank 0 drew no overlays");
    assert_eq!(curve(&r.two, "loss").len(), 10);
    r.check(
        "GraSS pre-training (4 SimCLR, 6 gradient-guided steps)",
        10,
        "loss",
    );
}

/// The DeepLabV3+ fine-tune (from random initialisation, the whole network training) as 2 ranks
/// against one process on the global batch: each rank its rows of every global batch, the pixel
/// cross-entropy the global batch's mean (each rank's sum over the global count of labelled
/// pixels), the trunk's and decode head's BatchNorms synchronised (the default).
#[test]
fn finetune_as_two_ranks_trains_what_one_process_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dubai");
    dubai_like(&data);
    let mut c = config(&data);
    c.runtime.threads = 1;
    c.finetune.mode = "finetune".into();
    c.finetune.iters = 8;
    c.finetune.dropout = 0.0; // each process draws its own masks
                              // class 0 ignored: the ranks' crops hold different numbers of labelled pixels, so the mean
                              // of the ranks' own means is not the global mean
    c.data.ignore_index = 0;
    c.log.checkpoint_every = 4;
    let preset = tmp.path().join("tiny.toml");
    std::fs::write(&preset, to_toml(&c).unwrap()).unwrap();
    let runs = tmp.path().join("runs");
    let r = against_one(
        &runs.join("grass"),
        "finetune",
        binary(BIN, "finetune", &preset, &runs, env!("CARGO_MANIFEST_DIR")),
    );
    assert_eq!(curve(&r.two, "loss").len(), 8);
    r.check(
        "GraSS fine-tune (DeepLabV3+, global pixel mean, SyncBatchNorm)",
        8,
        "loss",
    );
}
