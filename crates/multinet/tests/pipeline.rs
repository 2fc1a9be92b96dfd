//! End to end on a tiny synthetic CIFAR-10 binary set: MNCLGLF pretraining writes a report with
//! kNN and linear top-1 / top-5; an interrupted run resumes bit-exactly (networks, optimiser,
//! EMA encoder and memory bank are all checkpointed); the SimCLR baseline runs on the same harness.

use contrast_core::testing::{global_rng_lock, write_synthetic_cifar10};
use contrast_core::train::{Checkpointer, Method, MetricsLog, Outcome, RunOptions, Trainer};
use multinet::config::MultinetConfig;
use multinet::method::Multinet;
use std::path::Path;

fn pretrain(cfg: &MultinetConfig, o: &RunOptions, stop_at: Option<u64>) -> anyhow::Result<Outcome> {
    Trainer::<Multinet>::new(cfg.clone(), o.clone()).run(stop_at)
}

/// The `optim` group of a run's newest checkpoint.
fn final_optim(run: &Path) -> contrast_core::tensors::Named {
    let ck = Checkpointer::new(run.join("checkpoints"), usize::MAX);
    let latest = ck.latest().unwrap().unwrap();
    let loaded = Checkpointer::load(&latest).unwrap();
    let g = loaded.group("optim").unwrap();
    g.iter().map(|(n, t)| (n.clone(), t.copy())).collect()
}

/// Class `c` images: a bright square in quadrant `c % 4` on noise, so classes are learnable.
fn tiny_config(root: &Path) -> MultinetConfig {
    let mut c = MultinetConfig::default();
    c.data.format = "cifar10".into();
    c.data.root = root.display().to_string();
    c.data.threads = 1;
    c.data.image_size = 16;
    c.data.eval_size = 16;
    c.model.stem = contrast_core::nn::resnet::Stem::Cifar;
    c.model.layers = [1, 1, 1, 1];
    c.model.proj_hidden = 32;
    c.model.proj_out = 16;
    c.model.pred_hidden = 8;
    c.model.bank_size = 20; // smaller than the 40 pushed rows: the bank wraps around
    c.optim.epochs = 2;
    c.optim.batch_size = 8;
    c.eval.knn_k = vec![3, 5];
    c.eval.linear_epochs = 3;
    c.eval.linear_batch_size = 8;
    c.eval.linear_lr = 0.1;
    c.log.log_every = 1;
    c.runtime.device = "cpu".into();
    c.runtime.threads = 1;
    c.runtime.seed = 5;
    c
}

fn opts(root: &Path, name: &str, resume: bool) -> RunOptions {
    let mut o = RunOptions::new("multinet", name);
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
    let report = serde_json::to_value(full.report.unwrap()).unwrap();
    assert_eq!(full.step, 10);
    assert_eq!(report["steps"], 10);
    assert_eq!(report["schema"], 1);
    assert_eq!(report["knn"].as_array().unwrap().len(), 2);
    // the PCA figure of the test embeddings (PNG decodes, not blank; SVG beside it)
    let pca = image::open(runs.join("multinet/full/figures/pca.png"))
        .unwrap()
        .to_rgb8();
    assert!(contrast_report::images::ink_fraction(&pca) > 0.01);
    assert!(runs.join("multinet/full/figures/pca.svg").is_file());
    let lin = &report["linear"];
    let top1 = lin["last_top1"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&top1));
    assert!(lin["last_top5"].as_f64().unwrap() >= top1);
    assert!(lin["best_top1"].as_f64().unwrap() >= top1);

    let half = pretrain(&cfg, &opts(&runs, "split", false), Some(4)).unwrap();
    assert!(half.report.is_none());
    let rest = pretrain(&cfg, &opts(&runs, "split", true), None).unwrap();
    let r2 = serde_json::to_value(rest.report.unwrap()).unwrap();
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
    let a = strip(&runs.join("multinet/full/metrics.jsonl"));
    let b = strip(&runs.join("multinet/split/metrics.jsonl"));
    assert_eq!(a.len(), 10);
    assert_eq!(a, b, "losses differ after resume");
    // the optimiser state (and so the weights it moved) ends bit-identical
    let (oa, ob) = (
        final_optim(&runs.join("multinet/full")),
        final_optim(&runs.join("multinet/split")),
    );
    assert_eq!(oa.len(), ob.len());
    for ((n1, t1), (n2, t2)) in oa.iter().zip(&ob) {
        assert_eq!(n1, n2);
        assert!(t1.equal(t2), "optimiser state {n1} differs after resume");
    }
    // both terms are live; the clip reports the pre-clip norm
    assert!(a.iter().all(|r| r["global_local"].as_f64().unwrap() > 0.0
        && r["nn"].as_f64().unwrap() > 0.0
        && r["grad_norm"].as_f64().unwrap() > 0.0));

    // the trained backbone exports as a torchvision ResNet state dict
    let (m, _, _) = Trainer::<Multinet>::new(cfg.clone(), opts(&runs, "full", false))
        .restore_latest(&runs.join("multinet/full"))
        .unwrap();
    let e = m.export().unwrap();
    assert!(e.tensors.iter().all(|(n, _)| !n.starts_with("backbone.")));
    assert!(e.tensors.iter().any(|(n, _)| n == "layer4.0.conv1.weight"));
    assert_eq!(e.meta["library"], "torchvision");

    // the plain-SimCLR baseline runs on the same harness and reports the same metrics
    let mut base = cfg.clone();
    base.method = multinet::config::Method::Simclr;
    let out = pretrain(&base, &opts(&runs, "simclr", false), None).unwrap();
    let rb = serde_json::to_value(out.report.unwrap()).unwrap();
    assert_eq!(rb["variant"], "simclr");
    assert!(rb["linear"]["last_top1"].as_f64().is_some());
}

/// The released probe protocol end to end: LARS, training views re-encoded with
/// RandomResizedCrop + flip every epoch, a Resize + CenterCrop test view; the headline value is
/// the best evaluation, as the released `linear.py` reports it.
#[test]
fn released_probe_protocol_reencodes_and_reports_the_best_epoch() {
    let _rng = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar");
    write_synthetic_cifar10(&data, 8);
    let mut cfg = tiny_config(&data);
    cfg.optim.epochs = 1;
    cfg.eval.linear_optimizer = contrast_core::eval::linear::ProbeOptimizer::Lars;
    cfg.eval.linear_lr = 0.8;
    cfg.eval.linear_augment = true;
    cfg.eval.eval_resize = 20;
    let runs = dir.path().join("runs");
    let out = pretrain(&cfg, &opts(&runs, "probe", false), None).unwrap();
    let r = serde_json::to_value(out.report.unwrap()).unwrap();
    let lin = &r["linear"];
    assert_eq!(r["value"], lin["best_top1"]);
    assert!(lin["best_top1"].as_f64().unwrap() >= lin["last_top1"].as_f64().unwrap());
    assert_eq!(lin["epochs"], 3);
    // the test view is Resize(20) + CenterCrop(16)
    let view = multinet::eval::eval_recipe(&cfg).unwrap();
    assert!(matches!(
        view.views[0].ops[0],
        contrast_core::data::Op::ResizeCenterCrop {
            resize: 20,
            size: 16,
            ..
        }
    ));
}

/// `<root>/{train,test}/c{0,1}/*.png`: 16-px images, a bright square in a class-dependent
/// corner on noise.
fn write_png_folder(root: &Path, train_per_class: usize, test_per_class: usize) {
    for (split, n) in [("train", train_per_class), ("test", test_per_class)] {
        for c in 0..2u32 {
            let d = root.join(split).join(format!("c{c}"));
            std::fs::create_dir_all(&d).unwrap();
            for k in 0..n as u32 {
                let img = image::RgbImage::from_fn(16, 16, |x, y| {
                    let inside = (x < 8) == (c == 0) && y < 8;
                    let v = if inside {
                        230
                    } else {
                        ((x * 7 + y * 13 + k * 29) % 90) as u8 as u32
                    };
                    image::Rgb([v as u8, (v / 2) as u8, (255 - v) as u8])
                });
                img.save(d.join(format!("{k:02}.png"))).unwrap();
            }
        }
    }
}

#[test]
fn corrupt_training_files_stop_the_run_or_are_skipped_and_counted_over_a_resume() {
    let _rng = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("folder");
    write_png_folder(&data, 12, 4); // 24 train images → 3 steps per epoch at batch 8
    let bad = data.join("train/c1/05.png");
    let good = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let mut cfg = tiny_config(&data);
    cfg.data.format = "image-folder".into();
    cfg.data.stream = contrast_core::data::StreamMode::Always;
    let runs = dir.path().join("runs");

    // the default stops, naming the file
    let e = format!(
        "{:#}",
        pretrain(&cfg, &opts(&runs, "stop", false), None).unwrap_err()
    );
    assert!(e.contains(&bad.display().to_string()), "{e}");

    // skipped: the run finishes and counts it
    cfg.data.on_corrupt = contrast_core::data::OnCorrupt::Skip;
    let out = pretrain(&cfg, &opts(&runs, "skip", false), None).unwrap();
    let r = serde_json::to_value(out.report.unwrap()).unwrap();
    assert_eq!(r["corrupt_files_skipped"], 1);
    assert_eq!(r["corrupt_files"][0], bad.display().to_string());

    // over a resume: the file met before the stop is still counted after it, although it was
    // repaired meanwhile (the list travels in the checkpoint)
    cfg.log.checkpoint_every = 1;
    let half = pretrain(&cfg, &opts(&runs, "resumed", false), Some(3)).unwrap();
    assert!(half.report.is_none());
    std::fs::write(&bad, &good).unwrap();
    let out = pretrain(&cfg, &opts(&runs, "resumed", true), None).unwrap();
    let r = serde_json::to_value(out.report.unwrap()).unwrap();
    assert_eq!(r["corrupt_files_skipped"], 1);
    assert_eq!(r["corrupt_files"][0], bad.display().to_string());
    // and a run over the repaired folder skips nothing
    let out = pretrain(&cfg, &opts(&runs, "clean", false), None).unwrap();
    let r = serde_json::to_value(out.report.unwrap()).unwrap();
    assert_eq!(r["corrupt_files_skipped"], 0);
}
