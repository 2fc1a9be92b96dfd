//! End to end on a tiny synthetic CIFAR-10 through core's `Trainer`: baseline SimCLR → sampler
//! on its checkpoint → SimCLR+SPPS with per-epoch diagnostics in metrics.jsonl → reports with
//! kNN / linear; MoCo-v2 (+SPPS) runs on the same method. An SPPS run stopped mid-epoch and
//! resumed ends bit-identical to an uninterrupted one (SimCLR and MoCo-v2).

use contrast_core::tensors::Named;
use contrast_core::testing::{global_rng_lock, write_synthetic_cifar10};
use contrast_core::train::{Checkpointer, Method, MetricsLog, RunOptions, Trainer};
use spps::config::{Framework, SamplerConfig};
use spps::method::Spps;
use spps::sampler::{Pair, PairSet};
use spps::train::sample;
mod common;
use common::tiny;
use std::path::{Path, PathBuf};

fn opts(root: &Path, name: &str, resume: bool) -> RunOptions {
    let mut o = RunOptions::new("spps", name);
    o.runs_root = root.to_path_buf();
    o.resume = resume;
    o
}

#[test]
fn baseline_sampler_spps_and_mocov2() {
    let _rng = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar");
    write_synthetic_cifar10(&data, 8); // 40 train, 8 test → 5 steps per epoch
    let runs = dir.path().join("runs");
    let base_cfg = tiny(&data);
    let (base, base_method) = Trainer::<Spps>::new(base_cfg.clone(), opts(&runs, "base", false))
        .run_with_method(None)
        .unwrap();
    assert_eq!(base.step, 10);
    let br = base.report.unwrap();
    assert!(br.detail("pairs").is_null());
    assert_eq!(br.variant, "simclr");
    assert_eq!(br.value, br.detail("linear")["last_top1"].as_f64());
    // the PCA figure of the test embeddings decodes and is not blank
    let pca = image::open(base.dir.join("figures/pca.png"))
        .unwrap()
        .to_rgb8();
    assert!(contrast_report::images::ink_fraction(&pca) > 0.01);
    // the export is the ResNet alone, under torchvision's names
    let ex = base_method.export().unwrap();
    let names: Vec<&str> = ex.tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"conv1.weight") && names.contains(&"layer4.0.conv2.weight"));
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("projector") && !n.starts_with("backbone")),
        "{names:?}"
    );

    let pairs_file = dir.path().join("pairs.json");
    let set = sample(&base.dir, &base_cfg.sampler, &pairs_file).unwrap();
    assert_eq!(set.n, 40);
    assert_eq!(set.pairs.len(), 80); // top-2 of every image
    let p = set.precision.unwrap();
    assert!((0.0..=1.0).contains(&p));

    let mut c = tiny(&data);
    c.spps.enabled = true;
    c.spps.pairs = pairs_file.display().to_string();
    let full = Trainer::<Spps>::new(c.clone(), opts(&runs, "spps", false))
        .run(None)
        .unwrap();
    let rep = full.report.unwrap();
    assert_eq!(rep.detail("pairs")["count"], 80);
    assert_eq!(rep.variant, "simclr+spps");
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
    // the comparison table reads both reports
    let t = Spps::table(&rep, Some(&br));
    assert!(t.contains("| linear top-1 (last epoch) |"), "{t}");
    assert!(t.contains("semantic pairs: 80"), "{t}");

    // MoCo-v2 with SPPS on the same method
    let mut m = c.clone();
    m.framework = Framework::Mocov2;
    m.eval.linear_augment = true; // the probe re-encodes augmented crops every epoch
    let mo = Trainer::<Spps>::new(m, opts(&runs, "moco", false))
        .run(None)
        .unwrap();
    let mr = mo.report.unwrap();
    assert_eq!(mr.variant, "mocov2+spps");
    assert!(mr.detail("linear")["last_top1"].as_f64().is_some());
}

/// 40 images, partners `i → i+1` (0.9) and `i → i+2` (0.5): the picker draws between two.
fn write_pairs(path: &Path) -> PathBuf {
    let n = 40;
    let pairs = (0..n)
        .flat_map(|i| {
            [
                Pair {
                    i,
                    j: (i + 1) % n,
                    sim: 0.9,
                },
                Pair {
                    i,
                    j: (i + 2) % n,
                    sim: 0.5,
                },
            ]
        })
        .collect();
    PairSet {
        n,
        dim: 4,
        source: "test".into(),
        settings: SamplerConfig::default(),
        pairs,
        precision: None,
    }
    .save(path)
    .unwrap();
    path.to_path_buf()
}

fn assert_same(what: &str, a: &Named, b: &Named) {
    assert_eq!(a.len(), b.len(), "{what}: tensor count");
    for ((n1, t1), (n2, t2)) in a.iter().zip(b) {
        assert_eq!(n1, n2, "{what}");
        assert!(t1.equal(t2), "{what}: {n1} differs after resume");
    }
}

/// Stop an SPPS run mid-epoch (step 3 of 5 per epoch, with the picker's partner draws, the
/// epoch's pair diagnostics and, for MoCo-v2, the key encoder and queue in flight), resume it in
/// a fresh call, and compare with an uninterrupted run: losses, every state group of the
/// method, the final checkpoints' groups (`optim` included), metrics.jsonl line by line (without
/// `elapsed_s`) and the evaluation.
#[test]
fn interrupted_and_resumed_spps_run_is_bit_exact() {
    let _rng = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar");
    write_synthetic_cifar10(&data, 8);
    let runs = dir.path().join("runs");
    let pairs = write_pairs(&dir.path().join("pairs.json"));
    for fw in [Framework::Simclr, Framework::Mocov2] {
        let mut c = tiny(&data);
        c.framework = fw;
        c.spps.enabled = true;
        c.spps.share = 0.75; // the picker's draws are part of the replayed stream
        c.spps.pairs = pairs.display().to_string();
        c.eval.linear_augment = fw == Framework::Mocov2;
        let name = fw.name();
        let (full, fm) =
            Trainer::<Spps>::new(c.clone(), opts(&runs, &format!("{name}-full"), false))
                .run_with_method(None)
                .unwrap();
        assert_eq!(full.step, 10);
        let split = format!("{name}-split");
        let half = Trainer::<Spps>::new(c.clone(), opts(&runs, &split, false))
            .run(Some(3))
            .unwrap();
        assert_eq!(half.step, 3);
        assert!(half.report.is_none());
        let (rest, rm) = Trainer::<Spps>::new(c.clone(), opts(&runs, &split, true))
            .run_with_method(None)
            .unwrap();
        assert_eq!(
            rest.losses.first().unwrap().0,
            4,
            "{name}: resumes at step 4"
        );

        let joined: Vec<(u64, f64)> = half.losses.iter().chain(&rest.losses).cloned().collect();
        assert_eq!(joined.len(), full.losses.len());
        for ((s1, a), (s2, b)) in full.losses.iter().zip(&joined) {
            assert_eq!(s1, s2);
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{name}: loss at step {s1}: {a} vs {b}"
            );
        }
        let (sf, sr) = (fm.state(), rm.state());
        assert_eq!(sf.len(), if fw == Framework::Mocov2 { 3 } else { 1 });
        for ((g1, t1), (g2, t2)) in sf.iter().zip(&sr) {
            assert_eq!(g1, g2);
            assert_same(&format!("{name} {g1}"), t1, t2);
        }
        let last = |run: &str| {
            let ck = Checkpointer::new(runs.join("spps").join(run).join("checkpoints"), 2);
            Checkpointer::load(ck.latest().unwrap().unwrap()).unwrap()
        };
        let (cf, cr) = (last(&format!("{name}-full")), last(&split));
        assert_eq!((cf.state.step, cr.state.step), (10, 10));
        assert!(cf.groups.contains_key("optim"));
        assert_eq!(
            cf.groups.keys().collect::<Vec<_>>(),
            cr.groups.keys().collect::<Vec<_>>()
        );
        for (g, t) in &cf.groups {
            assert_same(&format!("{name} checkpoint {g}"), t, &cr.groups[g]);
        }
        assert_eq!(cf.state.extra, cr.state.extra);

        let read = |run: &str| {
            let mut lines =
                MetricsLog::read(runs.join("spps").join(run).join("metrics.jsonl")).unwrap();
            for l in &mut lines {
                l.as_object_mut().unwrap().remove("elapsed_s");
            }
            lines
        };
        let (m_full, m_split) = (read(&format!("{name}-full")), read(&split));
        // 10 step lines and 2 epoch diagnostics
        assert_eq!(m_full.len(), 12, "{name}");
        assert_eq!(m_full, m_split, "{name}: metrics.jsonl");
        let diag_used: Vec<u64> = m_full
            .iter()
            .filter_map(|l| l.get("pairs_used").and_then(|v| v.as_u64()))
            .collect();
        assert!(
            diag_used.iter().all(|&u| u > 0 && u < 40),
            "{name}: share 0.75 uses some, not all, anchors: {diag_used:?}"
        );

        let (r1, r2) = (full.report.unwrap(), rest.report.unwrap());
        assert_eq!(r1.value, r2.value, "{name}");
        assert_eq!(r1.detail("knn"), r2.detail("knn"), "{name}");
        assert_eq!(r1.detail("linear"), r2.detail("linear"), "{name}");
    }
}
