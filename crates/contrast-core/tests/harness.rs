//! Acceptance tests of the run harness (the [`Trainer`] over the core example method,
//! `train::example::Toy`): bit-exact resume, the NaN guard, corrupt checkpoints, unknown config
//! keys, and refusing to overwrite a run.

use anyhow::Result;
use contrast_core::tensors::{named_variables, Named};
use contrast_core::testing::global_rng_lock;
use contrast_core::train::config::{load_config, ConfigSource};
use contrast_core::train::example::{Toy, ToyConfig};
use contrast_core::train::{
    Checkpointer, LogConfig, MetricsLog, RunOptions, RunReport, RuntimeConfig, Trainer,
};
use std::path::Path;

#[derive(Debug)]
struct Out {
    step: u64,
    losses: Vec<(u64, f64)>,
    weights: Named,
    report: Option<RunReport>,
}

fn train(c: &ToyConfig, o: &RunOptions, stop_at: Option<u64>) -> Result<Out> {
    let (out, toy) = Trainer::<Toy>::new(c.clone(), o.clone()).run_with_method(stop_at)?;
    Ok(Out {
        step: out.step,
        losses: out.losses,
        weights: named_variables(&toy.vs),
        report: out.report,
    })
}

fn cfg() -> ToyConfig {
    ToyConfig {
        steps: 20,
        batch: 64,
        log: LogConfig {
            checkpoint_every: 5,
            checkpoint_every_epochs: 0,
            log_every: 1,
            keep_checkpoints: 3,
        },
        runtime: RuntimeConfig {
            device: "cpu".into(),
            threads: 2,
            seed: 11,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn opts(root: &Path, name: &str, resume: bool) -> RunOptions {
    let mut o = RunOptions::new("toy", name);
    o.runs_root = root.to_path_buf();
    o.resume = resume;
    o
}

#[test]
fn interrupted_and_resumed_run_is_bit_exact() {
    let _rng = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let c = cfg();
    let full = train(&c, &opts(dir.path(), "full", false), None).unwrap();
    assert_eq!(full.step, 20);
    assert_eq!(full.losses.len(), 20);

    // stop at N/2, then resume from the checkpoint in a fresh call
    let half = train(&c, &opts(dir.path(), "split", false), Some(10)).unwrap();
    assert_eq!(half.step, 10);
    assert!(half.report.is_none());
    let rest = train(&c, &opts(dir.path(), "split", true), None).unwrap();
    assert_eq!(
        rest.losses.first().unwrap().0,
        11,
        "resume must continue at step 11"
    );

    let joined: Vec<(u64, f64)> = half.losses.iter().chain(&rest.losses).cloned().collect();
    assert_eq!(joined.len(), full.losses.len());
    for ((s1, a), (s2, b)) in full.losses.iter().zip(&joined) {
        assert_eq!(s1, s2);
        assert_eq!(a.to_bits(), b.to_bits(), "loss at step {s1}: {a} vs {b}");
    }
    for ((n1, w1), (n2, w2)) in full.weights.iter().zip(&rest.weights) {
        assert_eq!(n1, n2);
        assert!(w1.equal(w2), "weight {n1} differs after resume");
    }
    // the metrics logs agree line for line, and the reports agree on the result
    // (wall-clock fields aside)
    let read = |name: &str| {
        let mut lines =
            MetricsLog::read(dir.path().join("toy").join(name).join("metrics.jsonl")).unwrap();
        for l in &mut lines {
            l.as_object_mut().unwrap().remove("elapsed_s");
        }
        lines
    };
    let (m_full, m_split) = (read("full"), read("split"));
    assert_eq!(m_full.len(), 20);
    assert_eq!(m_full, m_split);
    let (r1, r2) = (full.report.unwrap(), rest.report.unwrap());
    assert_eq!(r1.value, r2.value);
    assert_eq!(r1.steps, 20);
    assert_eq!(r1.detail("chance"), &serde_json::json!(0.125));
    for f in ["config.toml", "metrics.jsonl", "report.json", "checkpoints"] {
        assert!(dir.path().join("toy/split").join(f).exists(), "{f} missing");
    }
}

#[test]
fn nan_loss_stops_the_run_and_the_last_checkpoint_still_loads() {
    let _rng = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.log.checkpoint_every = 1;
    c.lr = 1e30; // diverges: the weights overflow fp32 within a few steps
    let err = train(&c, &opts(dir.path(), "nan", false), None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("non-finite loss at step"), "{msg}");
    assert!(
        msg.contains("info_nce = NaN") || msg.contains("info_nce = inf"),
        "{msg}"
    );
    assert!(msg.contains("last good checkpoint"), "{msg}");
    let ck = Checkpointer::new(dir.path().join("toy/nan/checkpoints"), 3);
    let latest = ck
        .latest()
        .unwrap()
        .expect("a checkpoint before the divergence");
    let loaded = Checkpointer::load(&latest).unwrap();
    // the failing step is after the last checkpoint: step numbers in the message are 1-based
    let failed: u64 = msg
        .split("non-finite loss at step ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap();
    assert_eq!(loaded.state.step, failed - 1);
    assert!(loaded.group("model").is_ok() && loaded.group("optim").is_ok());
}

fn cut_short(f: &Path) {
    let len = std::fs::metadata(f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(f)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
}

/// Checkpoints at steps 5 and 10; step 10 cut short. `--resume` falls back to step 5 (the
/// newest that verifies), sets step 10 aside as `.corrupt-step-00000010`, and the finished run
/// equals the uninterrupted one bit for bit. With every checkpoint corrupt the error names the
/// file; `--resume-from` takes exactly the step asked for.
#[test]
fn resume_falls_back_to_the_newest_checkpoint_that_verifies() {
    let _rng = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let c = cfg();
    let full = train(&c, &opts(dir.path(), "full", false), None).unwrap();
    train(&c, &opts(dir.path(), "cut", false), Some(10)).unwrap();
    let ck = Checkpointer::new(dir.path().join("toy/cut/checkpoints"), 3);
    let steps: Vec<u64> = ck.list().unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, [5, 10]);
    cut_short(&ck.latest().unwrap().unwrap().join("optim.safetensors"));
    let rest = train(&c, &opts(dir.path(), "cut", true), None).unwrap();
    assert_eq!(rest.losses.first().unwrap().0, 6, "resumed from step 5");
    for ((n1, w1), (n2, w2)) in full.weights.iter().zip(&rest.weights) {
        assert_eq!(n1, n2);
        assert!(
            w1.equal(w2),
            "weight {n1} differs after the fallback resume"
        );
    }
    let aside = dir
        .path()
        .join("toy/cut/checkpoints/.corrupt-step-00000010");
    assert!(
        aside.join("optim.safetensors").is_file(),
        "the corrupt checkpoint is kept aside"
    );

    // every checkpoint corrupt: an error naming the file, nothing deleted
    train(&c, &opts(dir.path(), "bad", false), Some(5)).unwrap();
    let ck = Checkpointer::new(dir.path().join("toy/bad/checkpoints"), 3);
    cut_short(&ck.latest().unwrap().unwrap().join("optim.safetensors"));
    let err = train(&c, &opts(dir.path(), "bad", true), None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("optim.safetensors")
            && msg.contains("corrupt")
            && msg.contains("no checkpoint verifies"),
        "{msg}"
    );
    assert!(dir
        .path()
        .join("toy/bad/checkpoints/.corrupt-step-00000005")
        .is_dir());

    // --resume-from: exactly that step, or an error naming the saved ones
    train(&c, &opts(dir.path(), "pick", false), Some(15)).unwrap();
    let mut o = opts(dir.path(), "pick", true);
    o.resume_from = Some(7);
    let msg = format!("{:#}", train(&c, &o, None).unwrap_err());
    assert!(
        msg.contains("step 7") && msg.contains("[5, 10, 15]"),
        "{msg}"
    );
    o.resume_from = Some(5);
    let from5 = train(&c, &o, None).unwrap();
    assert_eq!(from5.losses.first().unwrap().0, 6);
    for ((_, w1), (_, w2)) in full.weights.iter().zip(&from5.weights) {
        assert!(w1.equal(w2));
    }
}

#[test]
fn a_run_with_checkpoints_is_not_overwritten_without_resume() {
    let _rng = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let c = cfg();
    train(&c, &opts(dir.path(), "keep", false), Some(5)).unwrap();
    let msg = format!(
        "{:#}",
        train(&c, &opts(dir.path(), "keep", false), None).unwrap_err()
    );
    assert!(msg.contains("--resume"), "{msg}");
    // resuming with a different config is refused too
    let mut other = c.clone();
    other.lr = 0.05;
    let msg = format!(
        "{:#}",
        train(&other, &opts(dir.path(), "keep", true), None).unwrap_err()
    );
    assert!(
        msg.contains("config.toml differs") && msg.contains("lr"),
        "{msg}"
    );
}

#[test]
fn unknown_config_key_is_rejected_with_its_name_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("preset.toml");
    std::fs::write(&p, "steps = 10\n[runtime]\nsead = 3\n").unwrap();
    let err = load_config::<ToyConfig>(Some(ConfigSource::file(&p).unwrap()), &[]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`runtime.sead`"), "{msg}");
    assert!(msg.contains("preset.toml"), "{msg}");
    let err = load_config::<ToyConfig>(None, &["batchsize=3".into()]).unwrap_err();
    assert!(err.to_string().contains("`batchsize`"), "{err}");
}

/// `runtime.autocast_bf16 = true` runs the step's matmuls in bf16 on CUDA (the Trainer wraps
/// every method's forward and loss); on CPU it is the documented no-op and the step stays fp32.
#[test]
fn autocast_bf16_changes_the_step_dtype_on_cuda_only() {
    let _rng = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.steps = 2;
    c.runtime.autocast_bf16 = true;
    c.runtime.device = "auto".into();
    let (out, toy) = Trainer::<Toy>::new(c, opts(dir.path(), "amp", false))
        .run_with_method(None)
        .unwrap();
    let report = out.report.unwrap();
    if tch::Cuda::is_available() {
        assert_eq!(toy.step_kind, Some(tch::Kind::BFloat16));
        assert_eq!(report.precision, "bf16 autocast");
    } else {
        eprintln!("autocast_bf16_changes_the_step_dtype_on_cuda_only: no CUDA here, checked the CPU no-op");
        assert_eq!(toy.step_kind, Some(tch::Kind::Float));
        assert_eq!(report.precision, "fp32");
    }
}

/// `--record DIR`: the initial weights, each step's batch and a line per step (seed, lr, loss
/// terms); recording changes nothing in the run itself.
#[test]
fn record_writes_every_input_of_each_step_and_changes_nothing() {
    let _rng = global_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.steps = 3;
    let plain = train(&c, &opts(dir.path(), "plain", false), None).unwrap();
    let rec = dir.path().join("record");
    let (out, _) = Trainer::<Toy>::new(c.clone(), opts(dir.path(), "rec", false))
        .with_record(Some(rec.clone()))
        .run_with_method(None)
        .unwrap();
    assert_eq!(out.losses, plain.losses, "recording changed the run");
    let initial = tch::Tensor::read_safetensors(rec.join("initial.safetensors")).unwrap();
    let fc1 = initial
        .iter()
        .find(|(n, _)| n == "model/fc1.weight")
        .unwrap();
    // the initial weights: what a fresh build with the run seed makes
    tch::manual_seed(c.runtime.seed as i64);
    let fresh = <Toy as contrast_core::train::Method>::build(&c, tch::Device::Cpu).unwrap();
    let w = named_variables(&fresh.vs);
    assert!(w
        .iter()
        .find(|(n, _)| n == "fc1.weight")
        .unwrap()
        .1
        .equal(&fc1.1));
    for s in 1..=3u64 {
        let t =
            tch::Tensor::read_safetensors(rec.join(format!("step-{s:08}.safetensors"))).unwrap();
        let v1 = &t.iter().find(|(n, _)| n == "view1").unwrap().1;
        assert_eq!(v1.size(), [c.batch, c.dim]);
    }
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(rec.join("steps.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (l, (step, loss)) in lines.iter().zip(&plain.losses) {
        assert_eq!(l["step"], *step);
        assert_eq!(l["terms"]["info_nce"].as_f64().unwrap(), *loss);
        assert_eq!(
            l["torch_seed"].as_i64().unwrap(),
            contrast_core::train::step_seed(c.runtime.seed, step - 1)
        );
    }
}
