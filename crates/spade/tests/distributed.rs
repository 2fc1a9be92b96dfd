//! Spade pretraining (`spade`: the global and the local term) as 2 ranks (the `spade` binary,
//! started as torchrun starts it) against one process on the global batch. Spade has no
//! official code; N ranks train what one process trains on the global batch: every rank draws
//! the global batch's crops, embeds the crops of its share of the volumes, and the global loss
//! runs over every rank's embeddings and the local loss over every rank's sampled voxel
//! features (both gathered with gradient, a varying number of voxel pairs per rank), the V-Net
//! encoder, decoder and head BatchNorms synchronised (the default). The two runs must agree:
//! the loss curve within the derived fp32 drift bound, every tensor within its measured drift.

use contrast_core::testing::ranks::{against_one, binary, curve};
use contrast_core::testing::write_synthetic_la;
use contrast_core::train::config::to_toml;
use spade::config::SpadeConfig;

const BIN: &str = env!("CARGO_BIN_EXE_spade");

#[test]
fn pretraining_as_two_ranks_trains_what_one_process_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("la");
    write_synthetic_la(&data, 6); // 4 training volumes in the pool
    let mut c = SpadeConfig::default();
    c.finetune.data.root = data.display().to_string();
    c.finetune.data.labeled = 2;
    c.finetune.model.n_filters = 2;
    c.pretrain.method = "spade".into();
    c.pretrain.steps = 8;
    c.pretrain.volumes = 4; // 2 per rank: 8 crops in all
    c.pretrain.crop = [16, 16, 16];
    c.pretrain.proj_dim = 8;
    c.local.dim = 4;
    c.local.samples = 16;
    c.log.checkpoint_every = 4;
    c.log.log_every = 1;
    c.runtime.device = "cpu".into();
    c.runtime.threads = 1;
    c.runtime.seed = 5;
    // unset: synchronised
    assert_eq!(c.runtime.sync_batch_norm, None);
    let preset = tmp.path().join("tiny.toml");
    std::fs::write(&preset, to_toml(&c).unwrap()).unwrap();
    let runs = tmp.path().join("runs");
    let r = against_one(
        &runs.join("spade"),
        "run",
        binary(BIN, "pretrain", &preset, &runs, env!("CARGO_MANIFEST_DIR")),
    );
    for term in ["total", "global", "local"] {
        assert_eq!(curve(&r.two, term).len(), 8, "{term} logged per step");
    }
    r.check(
        "Spade pretraining (V-Net, global and local terms gathered, SyncBatchNorm)",
        8,
        "total",
    );
}
