//! The training pipeline end to end on a synthetic LA-layout data set (h5 files written with the
//! core writer), through the shared `Trainer<FbaNetMethod>`: training writes metrics,
//! checkpoints and a report with last-iteration and best-on-test results; an interrupted run
//! resumes bit-exactly (weights, optimiser state, metrics lines, best-on-test selection); the
//! supervised baseline runs in the same harness; `eval-weights` of the saved best weights and
//! `eval --run` of the run folder reproduce the report's numbers.

use contrast_core::tensors::named_variables;
use contrast_core::testing::{global_rng_lock, write_synthetic_la};
use contrast_core::train::{Checkpointer, MetricsLog, Outcome, RunOptions, Trainer};
use fba_net::config::FbaNetConfig;
use fba_net::method::eval_weights;
use fba_net::FbaNetMethod;
use serde_json::Value;
use std::path::Path;

/// Train (or resume) `cfg`; the outcome, the report as JSON (when the run completed) and the
/// trained method.
fn train(
    cfg: &FbaNetConfig,
    o: &RunOptions,
    stop_at: Option<u64>,
) -> (Outcome, Option<Value>, FbaNetMethod) {
    let (out, m) = Trainer::<FbaNetMethod>::new(cfg.clone(), o.clone())
        .run_with_method(stop_at)
        .unwrap();
    let r = out
        .report
        .as_ref()
        .map(|r| serde_json::to_value(r).unwrap());
    (out, r, m)
}

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
fn trains_resumes_bit_exact_and_evaluates() {
    let _g = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("la");
    write_synthetic_la(&data, 6); // 4 train (2 labelled + 2 unlabelled), 2 test
    let cfg = tiny(&data);
    let runs = dir.path().join("runs");
    let (full, r, full_m) = train(&cfg, &opts(&runs, "full", false), None);
    let r = r.unwrap();
    assert_eq!(full.step, 6);
    assert_eq!(r["method"], "fba-net");
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

    let (half, r_half, _) = train(&cfg, &opts(&runs, "split", false), Some(3));
    assert!(half.report.is_none() && r_half.is_none());
    assert_eq!(half.step, 3);
    let (rest, r2, rest_m) = train(&cfg, &opts(&runs, "split", true), None);
    let r2 = r2.unwrap();
    assert_eq!(
        rest.losses.first().unwrap().0,
        4,
        "resume continues at step 4"
    );
    // the losses of every step, bit for bit
    let joined: Vec<(u64, f64)> = half.losses.iter().chain(&rest.losses).cloned().collect();
    assert_eq!(joined.len(), full.losses.len());
    for ((s1, a), (s2, b)) in full.losses.iter().zip(&joined) {
        assert_eq!(s1, s2);
        assert_eq!(a.to_bits(), b.to_bits(), "loss at step {s1}: {a} vs {b}");
    }
    // the weights (and BN buffers) and the optimiser state of the final checkpoints
    let (w1, w2) = (
        named_variables(&full_m.net.vs),
        named_variables(&rest_m.net.vs),
    );
    assert_eq!(w1.len(), w2.len());
    for ((n1, a), (n2, b)) in w1.iter().zip(&w2) {
        assert_eq!(n1, n2);
        assert!(a.equal(b), "weight {n1} differs after resume");
    }
    let last_ck = |name: &str| {
        let ck = Checkpointer::new(runs.join("fba-net").join(name).join("checkpoints"), 9);
        Checkpointer::load(ck.latest().unwrap().unwrap()).unwrap()
    };
    let (c1, c2) = (last_ck("full"), last_ck("split"));
    assert_eq!((c1.state.step, c2.state.step), (6, 6));
    assert_eq!(c1.state.extra, c2.state.extra, "best-on-test state differs");
    for g in ["model", "optim"] {
        let (a, b) = (c1.group(g).unwrap(), c2.group(g).unwrap());
        assert!(!a.is_empty() && a.len() == b.len(), "{g}");
        for ((n1, t1), (n2, t2)) in a.iter().zip(b) {
            assert_eq!(n1, n2);
            assert!(t1.equal(t2), "{g}: {n1} differs after resume");
        }
    }
    assert_eq!(full_m.best(), rest_m.best());
    assert_eq!(
        r["last_iteration"], r2["last_iteration"],
        "resumed run evaluates differently"
    );
    assert_eq!(r["best_on_test"], r2["best_on_test"]);
    assert_eq!(r["value"], r2["value"]);
    let strip = |p: &Path| -> Vec<Value> {
        MetricsLog::read(p)
            .unwrap()
            .into_iter()
            .map(|mut v| {
                v.as_object_mut().unwrap().remove("elapsed_s");
                v
            })
            .collect()
    };
    let a = strip(&runs.join("fba-net/full/metrics.jsonl"));
    let b = strip(&runs.join("fba-net/split/metrics.jsonl"));
    assert_eq!(
        a.len(),
        6 + 2,
        "a line per iteration and per selection point"
    );
    assert_eq!(a, b, "metrics lines differ after resume");
    assert!(a
        .iter()
        .any(|v| v["contrast"].as_f64().is_some_and(|c| c > 0.0)));
    assert!(a.iter().any(|v| v["test_dice"].is_number()));
    assert!(a
        .iter()
        .all(|v| v["test_dice"].is_number() || v["consistency_weight"].is_number()));

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

    // `eval --run`: the run folder's newest checkpoint (last weights) and best.safetensors
    // evaluated again give the report's numbers
    let ev = Trainer::<FbaNetMethod>::new(cfg.clone(), opts(&runs, "eval", false))
        .evaluate_checkpoint(
            &runs.join("fba-net/full"),
            &runs.join("fba-net/full/eval.json"),
            &[],
        )
        .unwrap();
    assert_eq!(ev.headline.value, r["value"].as_f64());
    assert_eq!(ev.details["last_iteration"], r["last_iteration"]);
    assert_eq!(ev.details["best_on_test"], r["best_on_test"]);

    // Supervised baseline and single-decoder FBA-Net in the same harness.
    for variant in ["supervised", "fba-net"] {
        let mut c = cfg.clone();
        c.model.variant = variant.into();
        c.optim.iterations = 2;
        c.eval.every = 0;
        let (_, rep, _) = train(&c, &opts(&runs, variant, false), None);
        let rep = rep.unwrap();
        assert_eq!(rep["variant"], variant);
        assert!(rep["best_on_test"].is_null());
        let m = MetricsLog::read(runs.join(format!("fba-net/{variant}/metrics.jsonl"))).unwrap();
        assert!(m.iter().all(|v| v["consistency"].as_f64() == Some(0.0)));
        if variant == "supervised" {
            assert!(m.iter().all(|v| v["contrast"].as_f64() == Some(0.0)));
        }
    }
}
