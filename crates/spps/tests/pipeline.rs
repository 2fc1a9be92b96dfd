//! End to end on a tiny synthetic CIFAR-10: baseline SimCLR → sampler on its checkpoint →
//! SimCLR+SPPS with per-epoch diagnostics in metrics.jsonl → reports with kNN / linear; an
//! interrupted SPPS run resumes to the same result; MoCo-v2 (+SPPS) runs on the same harness.

use contrast_core::testing::{global_rng_lock, write_synthetic_cifar10};
use contrast_core::train::RunOptions;
use spps::config::{Framework, SppsConfig};
use spps::train::{pretrain, sample};
use std::path::Path;

fn tiny(root: &Path) -> SppsConfig {
    let mut c = SppsConfig::default();
    c.data.format = "cifar10".into();
    c.data.root = root.display().to_string();
    c.data.threads = 1;
    c.data.image_size = 16;
    c.data.eval_size = 16;
    c.model.layers = vec![1, 1, 1, 1];
    c.simclr.hidden = 32;
    c.simclr.out_dim = 16;
    c.mocov2.hidden_dim = 32;
    c.mocov2.out_dim = 16;
    c.mocov2.queue_size = 16;
    c.mocov2.momentum = 0.99;
    c.optim.epochs = 2;
    c.optim.batch_size = 8;
    c.optim.lr = 0.05;
    c.eval.knn_k = vec![3];
    c.eval.linear_epochs = 2;
    c.eval.linear_batch_size = 8;
    c.log.log_every = 1;
    c.runtime.device = "cpu".into();
    c.runtime.threads = 1;
    c.runtime.seed = 3;
    c.sampler.top_k = 2;
    c.sampler.block_size = 16;
    c
}

fn opts(root: &Path, name: &str, resume: bool) -> RunOptions {
    let mut o = RunOptions::new("spps", name);
    o.runs_root = root.to_path_buf();
    o.resume = resume;
    o
}

#[test]
fn baseline_sampler_spps_and_resume() {
    let _rng = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar");
    write_synthetic_cifar10(&data, 8); // 40 train, 8 test → 5 steps per epoch
    let runs = dir.path().join("runs");
    let base_cfg = tiny(&data);
    let base = pretrain(&base_cfg, &opts(&runs, "base", false), None).unwrap();
    assert_eq!(base.step, 10);
    assert!(base.report.unwrap()["pairs"].is_null());
    // the PCA figure of the test embeddings decodes and is not blank
    let pca = image::open(base.dir.join("figures/pca.png"))
        .unwrap()
        .to_rgb8();
    assert!(contrast_report::images::ink_fraction(&pca) > 0.01);

    let pairs_file = dir.path().join("pairs.json");
    let set = sample(&base.dir, &base_cfg.sampler, &pairs_file).unwrap();
    assert_eq!(set.n, 40);
    assert_eq!(set.pairs.len(), 80); // top-2 of every image
    let p = set.precision.unwrap();
    assert!((0.0..=1.0).contains(&p));

    let mut c = tiny(&data);
    c.spps.enabled = true;
    c.spps.pairs = pairs_file.display().to_string();
    let full = pretrain(&c, &opts(&runs, "spps", false), None).unwrap();
    let rep = full.report.unwrap();
    assert_eq!(rep["pairs"]["count"], 80);
    assert_eq!(rep["variant"], "simclr+spps");
    let metrics = std::fs::read_to_string(full.dir.join("metrics.jsonl")).unwrap();
    let diags: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("pair_precision").is_some())
        .collect();
    assert_eq!(diags.len(), 2, "one diagnostics line per epoch");
    for d in &diags {
        // every anchor has partners and share = 1 → one semantic pair per anchor
        assert_eq!(d["pairs_per_anchor"], 1.0);
        assert_eq!(d["pairs_per_image"], 2.0);
        assert_eq!(d["pairs_used"], 40);
        let h: Vec<u64> = serde_json::from_value(d["sim_hist"].clone()).unwrap();
        assert_eq!(h.iter().sum::<u64>(), 40);
    }
    // every step used 8 semantic pairs
    assert!(metrics.contains("\"semantic_pairs\":8.0"));

    // interrupted at step 3, resumed: same evaluation
    pretrain(&c, &opts(&runs, "spps-r", false), Some(3)).unwrap();
    let resumed = pretrain(&c, &opts(&runs, "spps-r", true), None).unwrap();
    let r = resumed.report.unwrap();
    assert_eq!(r["knn"], rep["knn"]);
    assert_eq!(r["linear"]["last_top1"], rep["linear"]["last_top1"]);

    // MoCo-v2 with SPPS on the same harness
    let mut m = c.clone();
    m.framework = Framework::Mocov2;
    m.eval.linear_augment = true; // the probe re-encodes augmented crops every epoch
    let mo = pretrain(&m, &opts(&runs, "moco", false), None).unwrap();
    let mr = mo.report.unwrap();
    assert_eq!(mr["variant"], "mocov2+spps");
    assert!(mr["linear"]["last_top1"].as_f64().is_some());
}
