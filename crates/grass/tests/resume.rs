//! Both stages through the shared Trainer on a small synthetic Dubai-format data set: a run
//! stopped part-way and resumed ends bit-identical on CPU to an uninterrupted one (weights,
//! optimiser state, metrics lines); the pre-training crosses from the SimCLR warm-up into the
//! gradient-guided stage, and the fine-tune evaluates the same mIoU.

use contrast_core::tensors::Named;
use contrast_core::testing::global_rng_lock;
use contrast_core::train::{
    Checkpoint, Checkpointer, Method, MetricsLog, RunOptions, RunReport, Trainer,
};
use grass::config::GrassConfig;
use grass::method::{Finetune, Pretrain};
use std::path::Path;

mod common;
use common::{config, dubai_like};

fn opts(root: &Path, name: &str, resume: bool) -> RunOptions {
    let mut o = RunOptions::new("grass", name);
    o.runs_root = root.to_path_buf();
    o.resume = resume;
    o
}

fn last_checkpoint(run: &Path) -> Checkpoint {
    let ck = Checkpointer::new(run.join("checkpoints"), usize::MAX);
    Checkpointer::load(ck.latest().unwrap().unwrap()).unwrap()
}

fn assert_same(a: &Named, b: &Named, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: tensor count");
    for ((n1, t1), (n2, t2)) in a.iter().zip(b) {
        assert_eq!(n1, n2, "{what}");
        assert!(t1.equal(t2), "{what}: {n1} differs after resume");
    }
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    let mut lines = MetricsLog::read(run.join("metrics.jsonl")).unwrap();
    for l in &mut lines {
        l.as_object_mut().unwrap().remove("elapsed_s");
    }
    lines
}

/// Run `M` uninterrupted as `<name>` and as `<name>-split` stopped at `stop` and resumed; both
/// end bit-identical. Returns the two reports.
fn full_vs_resumed<M: Method<Config = GrassConfig>>(
    c: &GrassConfig,
    runs: &Path,
    name: &str,
    stop: u64,
    groups: &[&str],
) -> (RunReport, RunReport) {
    let full = Trainer::<M>::new(c.clone(), opts(runs, name, false))
        .run(None)
        .unwrap();
    let split = format!("{name}-split");
    let half = Trainer::<M>::new(c.clone(), opts(runs, &split, false))
        .run(Some(stop))
        .unwrap();
    assert_eq!(half.step, stop);
    assert!(half.report.is_none());
    let rest = Trainer::<M>::new(c.clone(), opts(runs, &split, true))
        .run(None)
        .unwrap();
    assert_eq!(
        rest.losses.first().unwrap().0,
        stop + 1,
        "{name}: resume continues at step {}",
        stop + 1
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
    let (a, b) = (
        last_checkpoint(&full.dir),
        last_checkpoint(&runs.join("grass").join(&split)),
    );
    assert_eq!(a.state.step, b.state.step);
    for g in groups.iter().chain(&["optim"]) {
        assert_same(
            a.group(g).unwrap(),
            b.group(g).unwrap(),
            &format!("{name}/{g}"),
        );
    }
    let (m1, m2) = (metrics(&full.dir), metrics(&rest.dir));
    assert_eq!(
        m1.len() as u64,
        full.step,
        "{name}: one metrics line per step"
    );
    assert_eq!(m1, m2, "{name}: metrics.jsonl");
    (full.report.unwrap(), rest.report.unwrap())
}

#[test]
fn pretrain_and_finetune_resume_bit_exact() {
    let _rng = global_rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    dubai_like(&data);
    let runs = tmp.path().join("runs");
    let mut c = config(&data);

    // pre-training: 4 steps, stopped at 3 (inside the gradient-guided epoch)
    let (p1, p2) = full_vs_resumed::<Pretrain>(&c, &runs, "pre", 3, &["model"]);
    assert_eq!(p1.steps, 4);
    assert_eq!(p1.epochs, Some(2));
    assert_eq!(p1.variant, "grass");
    assert_eq!(p1.detail("gs_steps"), &serde_json::json!(2));
    assert_eq!(p1.detail("overlays"), p2.detail("overlays"));
    assert_eq!(p1.detail("overlays").as_array().map(Vec::len), Some(2));
    let lines = metrics(&runs.join("grass/pre"));
    let stage: Vec<&str> = lines.iter().map(|l| l["stage"].as_str().unwrap()).collect();
    assert_eq!(stage, ["id", "id", "gs", "gs"]);
    assert!(lines[2]["box_area_frac"].as_f64().unwrap() > 0.0);
    assert!(runs.join("grass/pre/figures/overlay_00.png").is_file());
    // `grass export`: the trunk as a headless torchvision ResNet-18
    let (pre, _, _) = Trainer::<Pretrain>::new(c.clone(), opts(&runs, "pre", false))
        .restore_latest(&runs.join("grass/pre"))
        .unwrap();
    let e = pre.export().unwrap();
    let names: Vec<&str> = e.tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"conv1.weight") && names.contains(&"layer4.1.bn2.num_batches_tracked"));
    assert!(!names
        .iter()
        .any(|n| n.starts_with("trunk.") || n.starts_with("head")));
    assert_eq!(e.meta["arch"], "resnet18");

    // fine-tune on that encoder: 4 steps, stopped at 2
    c.finetune.encoder = runs.join("grass/pre").display().to_string();
    let (f1, f2) = full_vs_resumed::<Finetune>(&c, &runs, "ft", 2, &["decoder"]);
    assert_eq!(f1.variant, "grass-ft");
    assert_eq!(f1.metric, "mIoU (%)");
    assert!(f1.value.is_some());
    assert_eq!(f1.value, f2.value);
    assert_eq!(f1.detail("encoder_step"), &serde_json::json!(4));
    assert_eq!(f1.detail("per_class_iou"), f2.detail("per_class_iou"));
    // the fine-tune's encoder exports at its output stride (32 here: no dilation)
    let (ft, _, _) = Trainer::<Finetune>::new(c.clone(), opts(&runs, "ft", false))
        .restore_latest(&runs.join("grass/ft"))
        .unwrap();
    let e = ft.export().unwrap();
    assert_eq!(e.meta["replace_stride_with_dilation"], "None");
    assert!(!e.tensors.iter().any(|(n, _)| n.starts_with("decode_head")));

    // an unfrozen encoder is checkpointed and resumed too
    c.finetune.mode = "finetune".into();
    full_vs_resumed::<Finetune>(&c, &runs, "ft-unfrozen", 3, &["decoder", "encoder"]);
}
