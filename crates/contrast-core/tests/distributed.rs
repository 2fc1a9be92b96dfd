//! Data-parallel training on torch.distributed (c10d, Gloo on CPU) with the real training
//! binary of the core example (`contrast-toy`: the same Trainer as every method), its ranks
//! started as `torchrun` starts them (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
//! `MASTER_PORT`), and once through `torchrun` itself when the Python environment has it.
//!
//! The toy embeds each rank's rows of the global batch and takes InfoNCE over the gathered
//! global batch (`dist::gather_with_grad`), so N ranks must train what one process trains on
//! the whole batch.

use contrast_core::testing::ranks::{self, assert_ok, free_port, launch, stderr, wait_all};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tch::Tensor;

const TOY: &str = env!("CARGO_BIN_EXE_contrast-toy");
const BATCH: u64 = 32;

fn toy(runs: &Path, name: &str, steps: u64, extra: &[&str]) -> Command {
    let mut c = Command::new(TOY);
    c.args(["pretrain", "--preset", "toy", "--runs-dir"])
        .arg(runs)
        .args(["--name", name, "--threads", "1", "--device", "cpu"])
        .args(["--set", &format!("steps={steps}")])
        .args(["--set", &format!("batch={BATCH}")])
        .args([
            "--set",
            "log.checkpoint_every=5",
            "--set",
            "log.log_every=1",
        ])
        .args(["--set", "log.keep_checkpoints=10"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// The model tensors of the run's checkpoint at `step`.
fn weights(run: &Path, step: u64) -> BTreeMap<String, Tensor> {
    let p = run
        .join("checkpoints")
        .join(format!("step-{step:08}"))
        .join("model.safetensors");
    Tensor::read_safetensors(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .into_iter()
        .collect()
}

/// `(step, info_nce)` of every line of the run's metrics.jsonl.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some((v["step"].as_u64()?, v["info_nce"].as_f64()?))
        })
        .collect()
}

/// Largest relative difference `‖a − b‖ / ‖b‖` of any tensor.
fn max_rel(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> f64 {
    ranks::max_rel(a, b).0
}

fn compare_curves(a: &[(u64, f64)], b: &[(u64, f64)], tol: f64, what: &str) -> f64 {
    assert_eq!(
        a.iter().map(|x| x.0).collect::<Vec<_>>(),
        b.iter().map(|x| x.0).collect::<Vec<_>>(),
        "{what}: the same logged steps"
    );
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x.1 - y.1).abs() / y.1.abs().max(1.0))
        .fold(0.0, f64::max);
    assert!(worst <= tol, "{what}: loss curves differ by {worst:.3e}");
    worst
}

/// The tolerance of N ranks against one process, and why: both compute the same global loss
/// and gradient in fp32, but in another order (each rank's half-batch sums, scaled by N and
/// averaged by the all-reduce, against one sum over the batch), which changes the last bits of
/// every gradient (≈ 1e-7 relative); 20 SGD steps with momentum carry that to a few 1e-7 in
/// the weights. 1e-6 is that, with room; a wrong shard, a missing rank's gradient or a mis-scaled
/// gather differ by 1e-2 or more.
const TOL: f64 = 1e-6;

#[test]
fn two_ranks_train_what_one_process_trains_on_the_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_path_buf();
    let steps = 20;
    let one = toy(&runs, "one", steps, &[]).output().unwrap();
    assert!(one.status.success(), "{}", stderr(&one));
    for world in [2, 4] {
        let name = format!("ranks{world}");
        let outs = launch(world, || toy(&runs, &name, steps, &[]), &[]);
        assert_ok(&outs, &name);
        let (a, b) = (runs.join("toy").join(&name), runs.join("toy/one"));
        let w = max_rel(&weights(&a, steps), &weights(&b, steps));
        let l = compare_curves(&losses(&a), &losses(&b), TOL, &name);
        println!(
            "{world} ranks vs 1 process, {steps} steps of a global batch of {BATCH}: weights max relative difference {w:.2e}, loss curve {l:.2e} (tolerance {TOL:.0e})"
        );
        assert!(w <= TOL, "{world} ranks: weights differ by {w:.3e}");
        // rank 0 alone wrote the run folder, with the world size in the report
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(a.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["world_size"], world);
        assert!(report["allreduce_s"].as_f64().unwrap() > 0.0);
    }
}

/// SyncBatchNorm (`runtime.sync_batch_norm`): the toy with a BatchNorm between its layers,
/// 2 ranks against one process on the global batch; without synchronisation each rank's
/// statistics cover its own rows and the runs part (the test would notice a missing sync).
#[test]
fn sync_batch_norm_trains_what_one_process_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_path_buf();
    let steps = 20;
    let bn = ["--set", "batch_norm=true"];
    let one = toy(&runs, "one", steps, &bn).output().unwrap();
    assert!(one.status.success(), "{}", stderr(&one));
    let b = runs.join("toy/one");
    let mut worst = Vec::new();
    for sync in [true, false] {
        let name = format!("sync-{sync}");
        let set = format!("runtime.sync_batch_norm={sync}");
        let outs = launch(
            2,
            || toy(&runs, &name, steps, &[bn[0], bn[1], "--set", &set]),
            &[],
        );
        assert_ok(&outs, &name);
        let a = runs.join("toy").join(&name);
        worst.push(max_rel(&weights(&a, steps), &weights(&b, steps)));
    }
    println!(
        "2 ranks with a BatchNorm, {steps} steps: SyncBatchNorm within {:.2e} of one process (running statistics included); unsynchronised {:.2e}",
        worst[0], worst[1]
    );
    assert!(
        worst[0] <= TOL,
        "SyncBatchNorm: weights differ by {:.3e}",
        worst[0]
    );
    assert!(
        worst[1] > 100.0 * TOL,
        "without sync the runs should part: {:.3e}",
        worst[1]
    );
}

#[test]
fn a_killed_rank_stops_the_others_and_the_run_resumes_with_another_world_size() {
    let tmp = tempfile::tempdir().unwrap();
    let runs: PathBuf = tmp.path().to_path_buf();
    let steps = 30;
    let t0 = Instant::now();
    // rank 1 dies after step 12; the last checkpoint is step 10
    let outs = launch(
        2,
        || toy(&runs, "killed", steps, &[]),
        &[
            ("CONTRAST_FAULT_ABORT_STEP", "12"),
            ("CONTRAST_FAULT_ABORT_RANK", "1"),
        ],
    );
    let waited = t0.elapsed();
    assert!(!outs[1].status.success(), "rank 1 was aborted");
    let e0 = stderr(&outs[0]);
    assert!(
        !outs[0].status.success(),
        "rank 0 must fail, not finish:\n{e0}"
    );
    assert!(
        e0.contains("torch.distributed") && e0.contains("step 13"),
        "rank 0 names the collective and the step:\n{e0}"
    );
    assert!(waited < Duration::from_secs(60), "{waited:?}");
    let dir = runs.join("toy/killed");
    assert!(dir.join("checkpoints/step-00000010").exists());
    println!(
        "rank 1 aborted after step 12: rank 0 stopped in {:.1} s with: {}",
        waited.as_secs_f64(),
        e0.lines()
            .find(|l| l.contains("torch.distributed"))
            .unwrap_or("")
            .trim()
    );

    // resume with one process: the data of steps 11.. is the same global batches
    let resumed = toy(&runs, "killed", steps, &["--resume"]).output().unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let one = toy(&runs, "one", steps, &[]).output().unwrap();
    assert!(one.status.success(), "{}", stderr(&one));
    let w = max_rel(
        &weights(&dir, steps),
        &weights(&runs.join("toy/one"), steps),
    );
    let l = compare_curves(
        &losses(&dir),
        &losses(&runs.join("toy/one")),
        TOL,
        "resumed",
    );
    println!(
        "2 ranks to step 10, killed, resumed with 1 process to step {steps}: weights within {w:.2e}, loss curve within {l:.2e} of an uninterrupted 1-process run"
    );
    assert!(
        w <= TOL,
        "resumed with 1 process: weights differ by {w:.3e}"
    );

    // and the other way: one process to step 10, resumed with 2 ranks
    let outs = launch(
        1,
        || toy(&runs, "grown", steps, &["--stop-at", "10"]),
        &[("WORLD_SIZE", "1")],
    );
    assert_ok(&outs, "grown, first part");
    let outs = launch(2, || toy(&runs, "grown", steps, &["--resume"]), &[]);
    assert_ok(&outs, "grown, resumed with 2 ranks");
    let grown = runs.join("toy/grown");
    let w = max_rel(
        &weights(&grown, steps),
        &weights(&runs.join("toy/one"), steps),
    );
    compare_curves(
        &losses(&grown),
        &losses(&runs.join("toy/one")),
        TOL,
        "grown",
    );
    assert!(w <= TOL, "resumed with 2 ranks: weights differ by {w:.3e}");
}

/// `torchrun --no-python --nproc-per-node 2 contrast-toy pretrain …`, as the README documents
/// (torchrun's agent serves the store: the ranks connect as clients).
#[test]
fn torchrun_starts_the_binary() {
    let venv = std::env::var_os("CONTRAST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.contrast/venv"));
    let torchrun = venv.join("bin/torchrun");
    if !torchrun.exists() {
        println!(
            "torchrun_starts_the_binary: skipped, no torchrun in {} (`cargo xtask setup` installs it)",
            venv.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path();
    let port = free_port().to_string();
    let t = toy(runs, "torchrun", 10, &[]);
    let mut c = Command::new(&torchrun);
    c.args([
        "--no-python",
        "--nproc-per-node",
        "2",
        "--master-port",
        &port,
    ])
    .arg(t.get_program())
    .args(t.get_args())
    .env("GLOO_SOCKET_IFNAME", "lo")
    .env("CONTRAST_DIST_TIMEOUT_S", "60")
    .current_dir(env!("CARGO_MANIFEST_DIR"))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let out = wait_all(vec![c.spawn().unwrap()], Duration::from_secs(300));
    assert_ok(&out, "torchrun");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs.join("toy/torchrun/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["world_size"], 2);
    println!("torchrun --no-python --nproc-per-node 2: ok");
}

/// Weak scaling on this CPU: 1, 2 and 4 ranks (one libtorch thread each), 256 samples per rank,
/// a toy MLP of 2.7 M parameters (10.5 MB of gradients), with gradient buckets of 25 MiB
/// (the default) and of one tensor each. Prints a markdown table: samples/s, the speed-up over
/// one rank, and the share of the training time spent in the gradient all-reduce.
/// `cargo test --release -p contrast-core --test distributed -- --ignored weak_scaling --nocapture`
#[test]
#[ignore]
fn weak_scaling() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().to_path_buf();
    let steps = 40;
    let per_rank = 256;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("| ranks | buckets | global batch | samples/s | × 1 rank | gradient all-reduce share of the step time |");
    println!("|---:|---|---:|---:|---:|---:|");
    let mut base = 0.0;
    for world in [1usize, 2, 4] {
        for (label, mib) in [("25 MiB", "25"), ("one per tensor", "0.000001")] {
            if world == 1 && mib != "25" {
                continue;
            }
            let name = format!("w{world}-{}", mib.len());
            let batch = (per_rank * world).to_string();
            let make = || {
                let mut c = toy(&runs, &name, steps, &[]);
                c.args(["--set", &format!("batch={batch}")])
                    .args(["--set", "dim=512", "--set", "hidden=4096"])
                    .args(["--set", "out_dim=128", "--set", "log.checkpoint_every=0"]);
                c
            };
            let outs = launch(world, make, &[("CONTRAST_DIST_BUCKET_MIB", mib)]);
            assert_ok(&outs, &name);
            let r: serde_json::Value = serde_json::from_slice(
                &std::fs::read(runs.join("toy").join(&name).join("report.json")).unwrap(),
            )
            .unwrap();
            let sps = r["samples_per_s"].as_f64().unwrap();
            // the training loop's time: steps × global batch / samples per second
            let loop_s = (steps as usize * per_rank * world) as f64 / sps;
            let share = r["allreduce_s"].as_f64().unwrap_or(0.0) / loop_s;
            if world == 1 {
                base = sps;
            }
            println!(
                "| {world} | {label} | {} | {sps:.0} | {:.2} | {:.0} % |",
                per_rank * world,
                sps / base,
                100.0 * share
            );
        }
    }
    println!("({cores} cores; {steps} steps; one libtorch thread per rank)");
}
