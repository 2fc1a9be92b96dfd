//! FBA-Net+ as 2 ranks (the `fba-net` binary, started as torchrun starts it) against one
//! process on the global batch. The official `train_3d.py` trains on one GPU, so N ranks train
//! what one process trains on the global batch: each rank takes its share of the labelled and of
//! the unlabelled patches, the Dice sums are added over the ranks and the contrastive terms run
//! over every rank's foreground / background embeddings (both gathered with gradient), and the
//! V-Net's BatchNorms are synchronised (the default: one GPU's BatchNorm sees the whole batch).
//! The two runs must agree: the loss curve within the derived fp32 drift bound, every tensor
//! within its measured drift. Rank 0 alone evaluates on the test cases during the run.

use contrast_core::testing::ranks::{against_one, binary, curve};
use contrast_core::testing::write_synthetic_la;
use contrast_core::train::config::to_toml;
use fba_net::config::FbaNetConfig;

const BIN: &str = env!("CARGO_BIN_EXE_fba-net");

#[test]
fn two_ranks_train_what_one_process_trains_on_the_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("la");
    write_synthetic_la(&data, 6); // 4 train (2 labelled + 2 unlabelled), 2 test
    let mut c = FbaNetConfig::default();
    c.data.root = data.display().to_string();
    c.data.labeled = 2;
    c.data.patch = [16, 16, 16];
    // global batch: 2 labelled + 2 unlabelled, one of each per rank
    assert_eq!((c.data.labeled_bs, c.data.batch_size), (2, 4));
    c.model.n_filters = 2;
    c.model.dim = 8;
    // dropout off: each process draws its masks for its own rows, so 2 ranks and one process
    // draw different masks (a random draw, not an arithmetic difference)
    c.model.dropout = 0.0;
    c.optim.iterations = 8;
    c.eval.stride = [9, 8, 6];
    c.eval.sw_batch = 4;
    c.eval.every = 4;
    c.eval.start = 4;
    c.log.log_every = 1;
    c.log.checkpoint_every = 4;
    c.runtime.device = "cpu".into();
    c.runtime.threads = 1;
    c.runtime.seed = 11;
    // unset: synchronised, as one GPU's BatchNorm
    assert_eq!(c.runtime.sync_batch_norm, None);
    let preset = tmp.path().join("tiny.toml");
    std::fs::write(&preset, to_toml(&c).unwrap()).unwrap();
    let runs = tmp.path().join("runs");
    let r = against_one(
        &runs.join("fba-net"),
        "run",
        binary(BIN, "train", &preset, &runs, env!("CARGO_MANIFEST_DIR")),
    );
    for term in ["total", "seg_dice", "consistency", "contrast"] {
        assert_eq!(curve(&r.two, term).len(), 8, "{term} logged per step");
    }
    r.check(
        "FBA-Net+ (V-Net, Dice sums and contrastive embeddings gathered, SyncBatchNorm)",
        8,
        "total",
    );
}
