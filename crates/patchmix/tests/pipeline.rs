//! End to end on a tiny synthetic CIFAR-10 binary set, through the shared Trainer: pretraining
//! with mixing writes a report with kNN and linear results and the figures; `eval --run`
//! re-evaluates a checkpoint; an interrupted run resumes bit-exactly (weights, optimiser state,
//! metrics lines), with and without the momentum encoder; gradients reach only the online
//! encoder and predictor.

use contrast_core::testing::{global_rng_lock, write_synthetic_cifar10};
use contrast_core::train::cli::{run_verb, Verb};
use contrast_core::train::{
    Checkpointer, EvalArgs, Method, MetricsLog, RunOptions, RunReport, Trainer,
};
use patchmix::config::PatchMixConfig;
use patchmix::model::{HeadConfig, PatchMixNet};
use patchmix::train::vit_config;
use patchmix::PatchMix;
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

fn train(cfg: &PatchMixConfig, o: &RunOptions, stop_at: Option<u64>) -> (u64, Option<RunReport>) {
    let out = Trainer::<PatchMix>::new(cfg.clone(), o.clone())
        .run(stop_at)
        .unwrap();
    (out.step, out.report)
}

/// `metrics.jsonl` without the wall-clock field.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    MetricsLog::read(run.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .map(|mut r| {
            r.as_object_mut().unwrap().remove("elapsed_s");
            r
        })
        .collect()
}

/// The newest checkpoints of two runs hold the same step and bit-identical tensors in every
/// group (weights, momentum encoder, optimiser state).
fn assert_same_final_checkpoints(a: &Path, b: &Path, groups: &[&str]) {
    let load = |run: &Path| {
        let ck = Checkpointer::new(run.join("checkpoints"), usize::MAX);
        Checkpointer::load(ck.latest().unwrap().unwrap()).unwrap()
    };
    let (ca, cb) = (load(a), load(b));
    assert_eq!(ca.state.step, cb.state.step);
    let names: Vec<&String> = ca.groups.keys().collect();
    assert_eq!(names, cb.groups.keys().collect::<Vec<_>>());
    assert_eq!(names, groups, "checkpoint groups");
    for (g, ta) in &ca.groups {
        let tb = &cb.groups[g];
        assert_eq!(ta.len(), tb.len(), "group {g}");
        assert!(!ta.is_empty(), "group {g} is empty");
        for ((na, a), (nb, b)) in ta.iter().zip(tb) {
            assert_eq!(na, nb);
            assert!(a.equal(b), "{g}/{na} differs after resume");
        }
    }
}

#[test]
fn pretrain_reports_evaluates_and_resumes_bit_exactly() {
    let _rng = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar");
    write_synthetic_cifar10(&data, 8); // 40 train, 8 test images → 5 steps per epoch
    let cfg = tiny_config(&data);
    let runs = dir.path().join("runs");
    let (step, report) = train(&cfg, &opts(&runs, "full", false), None);
    let report = report.unwrap();
    assert_eq!(step, 10);
    assert_eq!(report.steps, 10);
    assert_eq!(report.epochs, Some(2));
    assert_eq!(report.variant, "patchmix");
    assert_eq!(report.metric, "kNN top-1 (k=3, T=0.07)");
    let r = serde_json::to_value(&report).unwrap();
    assert_eq!(r["knn"].as_array().unwrap().len(), 2);
    let top1 = report.value.unwrap();
    assert_eq!(r["knn"][0]["top1"].as_f64(), Some(top1));
    assert!((0.0..=100.0).contains(&top1));
    assert!(
        r["linear"]["best_top1"].as_f64().unwrap() >= r["linear"]["last_top1"].as_f64().unwrap()
    );
    assert_eq!(r["paper"]["knn"], serde_json::Value::Null);

    // official evaluation protocol by default, stated in the report
    assert_eq!(
        r["eval_protocol"]["test_transform"],
        "Resize(36, bicubic) + CenterCrop(32)"
    );
    assert!(r["eval_protocol"]["linear_train_transform"]
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
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    run_verb::<PatchMix>(
        crate_dir,
        Verb::Eval(EvalArgs {
            run: run_dir.clone(),
            overrides: vec!["eval.linear_augment=false".into()],
            out: "eval.json".into(),
            ..Default::default()
        }),
    )
    .unwrap();
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("eval.json")).unwrap()).unwrap();
    assert_eq!(again["knn"], r["knn"]);
    assert_eq!(again["value"], r["value"]);
    assert!(
        again["checkpoint"]
            .as_str()
            .unwrap()
            .ends_with("step-00000010"),
        "{}",
        again["checkpoint"]
    );
    assert_eq!(again["checkpoint_step"], 10);
    assert_eq!(again["overrides"][0], "eval.linear_augment=false");
    assert!(again["wall_s"].as_f64().unwrap() > 0.0);
    assert_eq!(
        again["eval_protocol"]["linear_train_transform"],
        "evaluation transform, features computed once"
    );
    let e = run_verb::<PatchMix>(
        crate_dir,
        Verb::Eval(EvalArgs {
            run: dir.path().join("nowhere"),
            ..Default::default()
        }),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("is not a run folder"), "{e:#}");

    // stopped mid-epoch, resumed: bit-identical to the uninterrupted run
    let (half, none) = train(&cfg, &opts(&runs, "split", false), Some(4));
    assert_eq!(half, 4);
    assert!(none.is_none());
    let (_, r2) = train(&cfg, &opts(&runs, "split", true), None);
    let r2 = serde_json::to_value(r2.unwrap()).unwrap();
    assert_eq!(r["knn"], r2["knn"], "resumed run evaluates differently");
    assert_eq!(r["linear"], r2["linear"]);
    assert_same_final_checkpoints(
        &run_dir,
        &runs.join("patchmix/split"),
        &["encoder", "optim", "predictor"],
    );
    let a = metrics(&run_dir);
    let b = metrics(&runs.join("patchmix/split"));
    assert_eq!(a.len(), 10);
    assert_eq!(a, b, "metrics differ after resume");
    assert!(a.iter().all(|r| r["mix_orig"].as_f64().unwrap() > 0.0));
    // weight decay rises on its cosine from wd_start (0.02) towards wd_end (0.2)
    let wd: Vec<f64> = a.iter().map(|r| r["wd"].as_f64().unwrap()).collect();
    assert!((wd[0] - 0.02).abs() < 1e-12, "{wd:?}");
    assert!(wd.windows(2).all(|w| w[1] > w[0]) && wd[9] < 0.2, "{wd:?}");

    // the trained ViT exports as a timm VisionTransformer state dict (no projector)
    let (m, _, _) = Trainer::<PatchMix>::new(cfg.clone(), opts(&runs, "full", false))
        .restore_latest(&run_dir)
        .unwrap();
    let e = m.export().unwrap();
    assert!(e.tensors.iter().any(|(n, _)| n == "cls_token"));
    assert!(e.tensors.iter().all(|(n, _)| !n.starts_with("head.")));
    assert_eq!(e.meta["library"], "timm");

    // the no-mix baseline: identity targets, so both mixed terms equal the unmixed CE and the
    // objective is the symmetric MoCo-v3 loss
    let (suffix, base) = PatchMix::baseline(&cfg).unwrap();
    assert_eq!(suffix, "nomix");
    assert!(!base.mix.enabled);
    let (_, b) = train(&base, &opts(&runs, "full-nomix", false), None);
    let b = b.unwrap();
    assert_eq!(b.variant, "no-mix baseline");
    assert!(
        !runs.join("patchmix/full-nomix/figures/mixing.png").exists(),
        "no mixing figure for the baseline"
    );
    let table = PatchMix::table(&report, Some(&b));
    assert!(
        table.contains("| kNN top-1, k=3 |") && table.contains("| kNN top-1, k=5 |"),
        "{table}"
    );
    assert!(table.contains(&format!("| {top1:.2} |")), "{table}");
}

/// The ViT-S/B recipe: momentum encoder (moved in `before_step`), mixing with p = 0.5 (a random
/// decision per step) and the kNN monitor after every epoch. Stopped after 3 of 10 steps and
/// resumed, it ends bit-identical to the uninterrupted run.
#[test]
fn momentum_run_with_knn_monitor_resumes_bit_exactly() {
    let _rng = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar");
    write_synthetic_cifar10(&data, 8);
    let mut cfg = tiny_config(&data);
    cfg.model.use_momentum = true;
    cfg.model.momentum_start = 0.9;
    cfg.mix.p = 0.5;
    cfg.eval.knn_every = 1;
    cfg.eval.linear_epochs = 0;
    let runs = dir.path().join("runs");
    let (_, full) = train(&cfg, &opts(&runs, "full", false), None);
    let (stop, _) = train(&cfg, &opts(&runs, "split", false), Some(3));
    assert_eq!(stop, 3);
    let (_, split) = train(&cfg, &opts(&runs, "split", true), None);
    let (full, split) = (full.unwrap(), split.unwrap());
    assert_eq!(full.value, split.value);
    assert_eq!(full.detail("knn"), split.detail("knn"));
    assert_eq!(full.detail("linear"), &serde_json::Value::Null);
    let (a_dir, b_dir) = (runs.join("patchmix/full"), runs.join("patchmix/split"));
    assert_same_final_checkpoints(
        &a_dir,
        &b_dir,
        &["encoder", "momentum", "optim", "predictor"],
    );
    let (a, b) = (metrics(&a_dir), metrics(&b_dir));
    assert_eq!(a, b, "metrics differ after resume");
    // one kNN line after epoch 1 (not after the last: the evaluation does it)
    let knn: Vec<&serde_json::Value> = a
        .iter()
        .filter(|r| r.get("knn_top1_k3").is_some())
        .collect();
    assert_eq!(knn.len(), 1);
    assert_eq!(knn[0]["step"], 5);
    // the momentum follows the official per-epoch cosine, m(e + 1/I) (JSON keeps ~16 digits)
    let m: Vec<f64> = a
        .iter()
        .filter_map(|r| r.get("ema_momentum").and_then(|v| v.as_f64()))
        .collect();
    assert_eq!(m.len(), 10);
    let expect = |step: u64| patchmix::train::momentum_at(&cfg, step, 5).unwrap();
    assert!((m[0] - expect(0)).abs() < 1e-12 && (m[9] - expect(9)).abs() < 1e-12);
    assert!(m[0] == m[4] && m[5] > m[4], "{m:?}");
    // p = 0.5: some steps mixed and some not (the mixed terms then equal the unmixed ones)
    let unmixed = a
        .iter()
        .filter(|r| r.get("mix_orig").is_some())
        .filter(|r| r["mix_orig"] == r["mix_mix"])
        .count();
    assert!(unmixed > 0 && unmixed < 10, "{unmixed} unmixed steps of 10");
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
