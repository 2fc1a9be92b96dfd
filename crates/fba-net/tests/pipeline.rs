//! The training pipeline end to end on a synthetic LA-layout data set (h5 files written with the
//! core writer): training writes metrics, checkpoints and a report with last-iteration and
//! best-on-test results; an interrupted run resumes bit-exactly; the supervised baseline runs in
//! the same harness; `eval` of the saved best weights reproduces the report's numbers.

use contrast_core::testing::{global_rng_lock, write_synthetic_la};
use contrast_core::train::{MetricsLog, RunOptions};
use fba_net::config::FbaNetConfig;
use fba_net::train::{eval_weights, train};
use std::path::Path;

fn tiny(root: &Path) -> FbaNetConfig {
    let mut c = FbaNetConfig::default();
    c.data.root = root.display().to_string();
    c.data.labeled = 2;
    c.data.patch = [16, 16, 16];
    c.model.n_filters = 2;
    c.model.dim = 8;
    c.optim.iterations = 6;
    c.eval.stride = [9, 8, 6];
    c.eval.sw_batch = 4;
    c.eval.every = 3;
    c.eval.start = 3;
    c.log.log_every = 1;
    c.log.checkpoint_every = 3;
    c.runtime.device = "cpu".into();
    c.runtime.threads = 1;
    c.runtime.seed = 11;
    c
}

fn opts(root: &Path, name: &str, resume: bool) -> RunOptions {
    let mut o = RunOptions::new("fba-net", name);
    o.runs_root = root.to_path_buf();
    o.resume = resume;
    o
}

#[test]
fn trains_reports_resumes_and_evaluates() {
    let _g = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("la");
    write_synthetic_la(&data, 6); // 4 train (2 labelled + 2 unlabelled), 2 test
    let cfg = tiny(&data);
    let runs = dir.path().join("runs");
    let full = train(&cfg, &opts(&runs, "full", false), None).unwrap();
    let r = full.report.unwrap();
    assert_eq!(full.step, 6);
    assert_eq!(r["variant"], "fba-net+");
    assert_eq!(r["last_iteration"]["cases"].as_array().unwrap().len(), 2);
    let best = &r["best_on_test"];
    assert!(best["step"] == 3 || best["step"] == 6, "{best}");
    for s in [&r["last_iteration"]["mean"], &best["mean"]] {
        let d = s["dice"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&d));
    }
    // The selection Dice (Dice-only pass) equals the full evaluation's mean Dice of the same weights.
    assert!(
        (best["selection_dice"].as_f64().unwrap() - best["mean"]["dice"].as_f64().unwrap()).abs()
            < 1e-9
    );

    // What the model does: slices of the first test case with GT / prediction and A / 1 − A.
    let fig = runs.join("fba-net/full/figures/slices_CASE04.png");
    let img = image::open(&fig).unwrap().to_rgb8();
    // 2 planes × 4 panels of 16 px × 3, with captions: wider than 4 tiles, taller than 2
    assert!(
        img.width() > 4 * 48 && img.height() > 2 * 48,
        "{:?}",
        img.dimensions()
    );
    let ink = contrast_report::images::ink_fraction(&img);
    assert!(ink > 0.05, "blank figure ({ink})");
    // the A / 1 − A panels are colour (the heat ramp), the image panel grey
    let coloured = img
        .pixels()
        .filter(|p| p[0] != p[1] || p[1] != p[2])
        .count();
    assert!(coloured > 1000, "{coloured} coloured pixels");

    let half = train(&cfg, &opts(&runs, "split", false), Some(3)).unwrap();
    assert!(half.report.is_none());
    let rest = train(&cfg, &opts(&runs, "split", true), None).unwrap();
    let r2 = rest.report.unwrap();
    assert_eq!(
        r["last_iteration"], r2["last_iteration"],
        "resumed run evaluates differently"
    );
    assert_eq!(r["best_on_test"], r2["best_on_test"]);
    let strip = |p: &Path| -> Vec<serde_json::Value> {
        MetricsLog::read(p)
            .unwrap()
            .into_iter()
            .map(|mut v| {
                let o = v.as_object_mut().unwrap();
                o.remove("elapsed_s");
                o.remove("s_per_iter");
                v
            })
            .collect()
    };
    let a = strip(&runs.join("fba-net/full/metrics.jsonl"));
    let b = strip(&runs.join("fba-net/split/metrics.jsonl"));
    assert_eq!(a, b, "losses differ after resume");
    assert!(a
        .iter()
        .any(|v| v["contrast"].as_f64().is_some_and(|c| c > 0.0)));
    assert!(a.iter().any(|v| v["test_dice"].is_number()));

    // The best weights re-evaluated by `eval` give the report's numbers.
    let res = eval_weights(
        &cfg,
        &runs.join("fba-net/full/best.safetensors"),
        None,
        None,
    )
    .unwrap();
    for (c, rep) in res.iter().zip(best["cases"].as_array().unwrap()) {
        assert_eq!(c.metrics.dice, rep["dice"].as_f64().unwrap());
    }

    // Supervised baseline and single-decoder FBA-Net in the same harness.
    for variant in ["supervised", "fba-net"] {
        let mut c = cfg.clone();
        c.model.variant = variant.into();
        c.optim.iterations = 2;
        c.eval.every = 0;
        let out = train(&c, &opts(&runs, variant, false), None).unwrap();
        let rep = out.report.unwrap();
        assert!(rep["best_on_test"].is_null());
        let m = MetricsLog::read(runs.join(format!("fba-net/{variant}/metrics.jsonl"))).unwrap();
        assert!(m.iter().all(|v| v["consistency"].as_f64() == Some(0.0)));
        if variant == "supervised" {
            assert!(m.iter().all(|v| v["contrast"].as_f64() == Some(0.0)));
        }
    }
}
