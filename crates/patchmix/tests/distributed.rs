//! PatchMix as 2 ranks (the `patchmix` binary, started as torchrun starts it) against one
//! process on the global batch: the ViT, the heads' SyncBatchNorm, the keys gathered over the
//! ranks with each rank's targets at its column offset, AdamW and its schedules, the sharded
//! loader and the momentum encoder. With mixing off, the official multi-GPU objective (each
//! rank's queries against every rank's keys, averaged over the ranks) is the one-process
//! objective on the global batch, so the two runs must agree; drop-path is off because its
//! random masks are drawn per rank. With mixing on they differ by design (each rank mixes its
//! own rows, as the official code does).

use contrast_core::testing::ranks::{
    against_one, binary, check_within_drift, curve, curve_diff, stderr,
};
use contrast_core::testing::write_synthetic_cifar10;
use contrast_core::train::config::to_toml;
use patchmix::config::PatchMixConfig;
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_patchmix");

fn config(data: &Path, momentum: bool) -> PatchMixConfig {
    let mut c = PatchMixConfig::default();
    c.data.format = "cifar10".into();
    c.data.root = data.display().to_string();
    c.data.threads = 1;
    c.model.patch_size = 8;
    c.model.depth = 1;
    c.model.mlp_dim = 64;
    c.model.out_dim = 32;
    c.model.drop_path = 0.0;
    c.model.use_momentum = momentum;
    c.mix.enabled = false;
    c.optim.epochs = 2;
    c.optim.warmup_epochs = 1;
    c.optim.batch_size = 8;
    c.eval.knn_k = vec![3];
    c.eval.linear_epochs = 1;
    c.eval.linear_batch_size = 8;
    c.log.log_every = 1;
    c.runtime.device = "cpu".into();
    c.runtime.threads = 1;
    c.runtime.seed = 5;
    c
}

#[test]
fn two_ranks_without_mixing_train_what_one_process_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    write_synthetic_cifar10(&data, 8); // 40 train images: 5 steps of 8 per epoch
    let runs = tmp.path().join("runs");
    for momentum in [false, true] {
        let preset = tmp.path().join(format!("tiny-{momentum}.toml"));
        std::fs::write(&preset, to_toml(&config(&data, momentum)).unwrap()).unwrap();
        // also the same one-process run from weights perturbed by one float32 rounding: how
        // far fp32 arithmetic alone carries each tensor in these steps (AdamW turns the
        // rounding noise of a gradient that is zero in exact arithmetic, e.g. the last
        // LayerNorm's bias ahead of a BatchNorm, into full-size updates)
        let r = against_one(
            &runs.join("patchmix"),
            &format!("m{momentum}"),
            binary(BIN, "pretrain", &preset, &runs, env!("CARGO_MANIFEST_DIR")),
        );
        let e0 = stderr(&r.ranks[0]);
        assert!(
            e0.contains("as its official code does on several GPUs"),
            "rank 0 prints how PatchMix trains as several ranks:\n{e0}"
        );
        let ((ratio, name), (worst, worst_name)) =
            check_within_drift(&r.two, &r.one, &r.perturbed, 10);
        // the loss of every step (the global batch's: rank 0 logs the mean over the ranks)
        let (t1, t2) = (curve(&r.one, "total"), curve(&r.two, "total"));
        assert_eq!(t1.len(), 10);
        let loss_diff = curve_diff(&t2, &t1);
        assert!(loss_diff <= 1e-6, "loss curves differ by {loss_diff:.3e}");
        // the final kNN and linear probe: every rank embedded its share of the training and
        // test sets, rank 0 reported the same accuracies as one process
        let report = |run: &Path| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap())
                .unwrap()
        };
        let (r1, r2) = (report(&r.one), report(&r.two));
        assert_eq!(
            r2["evaluation_ranks"], 2,
            "the evaluation ran on both ranks:\n{r2:#}"
        );
        assert_eq!(r1["knn"], r2["knn"], "kNN of one process vs 2 ranks");
        let probe = |r: &serde_json::Value| r["linear"]["last_top1"].as_f64().unwrap();
        assert!(
            (probe(&r1) - probe(&r2)).abs() < 1e-9,
            "linear probe of one process vs 2 ranks: {} vs {}",
            probe(&r1),
            probe(&r2)
        );
        println!(
            "PatchMix (momentum encoder {momentum}), no mixing, 10 steps, 2 ranks vs one process on the global batch: loss curve within {loss_diff:.1e}; every tensor within 8·k× its fp32 drift (largest ratio {ratio:.3}, {name}; largest plain relative difference {worst:.2e}, {worst_name}, its fp32 drift as large)"
        );
    }
}
