//! End to end on a tiny synthetic CIFAR-10 binary set: pretraining with mixing writes a report
//! with kNN and linear results; an interrupted run resumes bit-exactly; gradients reach only the
//! online encoder and predictor.

use contrast_core::testing::{global_rng_lock, write_synthetic_cifar10};
use contrast_core::train::{EvalArgs, MetricsLog, RunOptions};
use patchmix::config::PatchMixConfig;
use patchmix::model::{HeadConfig, PatchMixNet};
use patchmix::train::{evaluate_run, pretrain, vit_config};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn tiny_config(root: &Path) -> PatchMixConfig {
    let mut c = PatchMixConfig::default();
    c.data.format = "cifar10".into();
    c.data.root = root.display().to_string();
    c.data.threads = 1;
    c.model.patch_size = 8;
    c.model.depth = 1;
    c.model.mlp_dim = 64;
    c.model.out_dim = 32;
    c.optim.epochs = 2;
    c.optim.warmup_epochs = 1;
    c.optim.batch_size = 8;
    c.eval.knn_k = vec![3, 5];
    c.eval.linear_epochs = 3;
    c.eval.linear_batch_size = 8;
    c.log.log_every = 1;
    c.runtime.device = "cpu".into();
    c.runtime.threads = 1;
    c.runtime.seed = 5;
    c
}

fn opts(root: &Path, name: &str, resume: bool) -> RunOptions {
    let mut o = RunOptions::new("patchmix", name);
    o.runs_root = root.to_path_buf();
    o.resume = resume;
    o
}

#[test]
fn pretrain_reports_and_resumes_bit_exactly() {
    let _rng = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar");
    write_synthetic_cifar10(&data, 8); // 40 train, 8 test images → 5 steps per epoch
    let cfg = tiny_config(&data);
    let runs = dir.path().join("runs");
    let full = pretrain(&cfg, &opts(&runs, "full", false), None).unwrap();
    let report = full.report.unwrap();
    assert_eq!(full.step, 10);
    assert_eq!(report["steps"], 10);
    assert_eq!(report["knn"].as_array().unwrap().len(), 2);
    let top1 = report["value"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&top1));
    assert!(
        report["linear"]["best_top1"].as_f64().unwrap()
            >= report["linear"]["last_top1"].as_f64().unwrap()
    );

    // official evaluation protocol by default, stated in the report
    assert_eq!(
        report["eval_protocol"]["test_transform"],
        "Resize(36, bicubic) + CenterCrop(32)"
    );
    assert!(report["eval_protocol"]["linear_train_transform"]
        .as_str()
        .unwrap()
        .starts_with("RandomResizedCrop(32"));
    // curves and figures written beside the report, decodable and not blank
    let run_dir = runs.join("patchmix/full");
    for f in [
        "plots/loss.png",
        "plots/lr.png",
        "figures/mixing.png",
        "figures/pca.png",
    ] {
        let img = image::open(run_dir.join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .to_rgb8();
        let ink = contrast_report::images::ink_fraction(&img);
        assert!(ink > 0.01, "{f} is blank ({ink})");
    }
    // `patchmix eval --run`: the same checkpoint re-evaluated gives the same kNN numbers, and
    // the precomputed-feature probe is a different (cheaper) protocol
    let again = evaluate_run(&EvalArgs {
        run: run_dir.clone(),
        overrides: vec!["eval.linear_augment=false".into()],
        out: "eval.json".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(again["knn"], report["knn"]);
    assert_eq!(again["checkpoint_step"], 10);
    assert_eq!(
        again["eval_protocol"]["linear_train_transform"],
        "evaluation transform, features computed once"
    );
    assert!(run_dir.join("eval.json").exists());
    let e = evaluate_run(&EvalArgs {
        run: dir.path().join("nowhere"),
        ..Default::default()
    })
    .unwrap_err();
    assert!(format!("{e:#}").contains("is not a run folder"), "{e:#}");

    let half = pretrain(&cfg, &opts(&runs, "split", false), Some(4)).unwrap();
    assert!(half.report.is_none());
    let rest = pretrain(&cfg, &opts(&runs, "split", true), None).unwrap();
    let r2 = rest.report.unwrap();
    assert_eq!(
        report["knn"], r2["knn"],
        "resumed run evaluates differently"
    );
    assert_eq!(report["linear"], r2["linear"]);
    let strip = |p: &Path| -> Vec<serde_json::Value> {
        MetricsLog::read(p)
            .unwrap()
            .into_iter()
            .map(|mut r| {
                r.as_object_mut().unwrap().remove("elapsed_s");
                r
            })
            .collect()
    };
    let a = strip(&runs.join("patchmix/full/metrics.jsonl"));
    let b = strip(&runs.join("patchmix/split/metrics.jsonl"));
    assert_eq!(a.len(), 10);
    assert_eq!(a, b, "losses differ after resume");
    assert!(a.iter().all(|r| r["mix_orig"].as_f64().unwrap() > 0.0));

    // the no-mix baseline: identity targets, so both mixed terms equal the unmixed CE and the
    // objective is the symmetric MoCo-v3 loss
    let mut base = cfg.clone();
    base.mix.enabled = false;
    let out = pretrain(&base, &opts(&runs, "nomix", false), None).unwrap();
    assert!(out.report.is_some());
}

#[test]
fn gradients_reach_only_the_online_branch() {
    let _rng = global_rng_lock();
    tch::manual_seed(0);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(dir.path());
    cfg.model.use_momentum = true;
    let heads = HeadConfig {
        proj_layers: 3,
        pred_layers: 2,
        mlp_dim: 64,
        out_dim: 32,
    };
    let net = PatchMixNet::new(Device::Cpu, &vit_config(&cfg).unwrap(), &heads, true).unwrap();
    let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let (q, z) = net.query(&x, true).unwrap();
    let k = net.key(&x, true).unwrap();
    assert!(!k.requires_grad(), "keys must carry no gradient");
    let k_same = net.key_from_query(&x, &z, true).unwrap();
    assert!(!k_same.requires_grad());
    (q * &k).sum(Kind::Float).backward();
    let m = net.momentum.as_ref().unwrap();
    for (name, v) in m.vs.variables() {
        assert!(
            !v.grad().defined(),
            "momentum encoder variable {name} got a gradient"
        );
        assert!(
            !v.requires_grad(),
            "momentum encoder variable {name} is trainable"
        );
    }
    let mut reached = 0;
    for vs in [&net.encoder_vs, &net.predictor_vs] {
        for v in vs.trainable_variables().iter() {
            if v.grad().defined() && v.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0 {
                reached += 1;
            }
        }
    }
    assert!(
        reached > 10,
        "only {reached} online variables got a gradient"
    );
}
