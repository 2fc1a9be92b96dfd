//! Test support: run a PyTorch (Python) reference script on the same inputs as a Rust test and
//! compare the numbers.
//!
//! Reference scripts are our own code, kept in the repository (e.g.
//! `crates/contrast-core/tests/py/`). Protocol: the script is called as
//! `python SCRIPT IN.npz OUT.npz [ARGS…]`; it reads the inputs with `numpy.load`, computes with
//! the torch that `cargo xtask setup` installed, and writes its outputs with `numpy.savez`.
//! The interpreter is `$CONTRAST_VENV/bin/python` (set by `.cargo/config.toml` after setup).
//! A missing interpreter fails the test with the fix, unless `CONTRAST_SKIP_PYTORCH_REFS=1`, in
//! which case the comparison is skipped with a visible message.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Kind, Tensor};

/// The Python interpreter of the setup's virtual environment, or `None` (with a printed notice)
/// when `CONTRAST_SKIP_PYTORCH_REFS=1` and it is missing.
pub fn python() -> Option<PathBuf> {
    let venv = std::env::var_os("CONTRAST_VENV").map(PathBuf::from);
    let py = venv.as_ref().map(|v| v.join("bin").join("python"));
    match py {
        Some(p) if p.exists() => Some(p),
        _ => {
            if std::env::var("CONTRAST_SKIP_PYTORCH_REFS").is_ok_and(|v| v == "1") {
                eprintln!("skipped: PyTorch reference comparison (no $CONTRAST_VENV/bin/python)");
                None
            } else {
                panic!(
                    "no PyTorch reference interpreter ($CONTRAST_VENV/bin/python): run \
                     `cargo xtask setup` (or set CONTRAST_SKIP_PYTORCH_REFS=1 to skip)"
                )
            }
        }
    }
}

/// Run `script` on `inputs`; returns its outputs by name, or `None` when skipped.
pub fn run_reference(
    script: impl AsRef<Path>,
    inputs: &[(&str, &Tensor)],
    args: &[&str],
) -> Result<Option<Vec<(String, Tensor)>>> {
    let Some(py) = python() else { return Ok(None) };
    let script = script.as_ref();
    let dir = tempdir()?;
    let inp = dir.join("in.npz");
    let out = dir.join("out.npz");
    let cpu: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(n, t)| (*n, t.detach().to_device(tch::Device::Cpu).contiguous()))
        .collect();
    Tensor::write_npz(&cpu, &inp).with_context(|| format!("writing {}", inp.display()))?;
    let o = Command::new(&py)
        .arg(script)
        .arg(&inp)
        .arg(&out)
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !o.status.success() {
        bail!(
            "reference script {} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let res = Tensor::read_npz(&out).map_err(|e| anyhow!("reading {}: {e}", out.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Some(res))
}

/// Look up an output by name.
pub fn get<'a>(outputs: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &outputs
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("the reference produced no `{name}`"))
        .1
}

/// Panic unless `|a − b| ≤ atol + rtol·|b|` elementwise (shapes must match), naming `what` and
/// the worst element.
pub fn assert_close(a: &Tensor, b: &Tensor, atol: f64, rtol: f64, what: &str) {
    assert_eq!(a.size(), b.size(), "{what}: shapes differ");
    let a = a.to_device(tch::Device::Cpu).to_kind(Kind::Double);
    let b = b.to_device(tch::Device::Cpu).to_kind(Kind::Double);
    let diff = (&a - &b).abs();
    let tol = b.abs() * rtol + atol;
    let excess = (&diff - &tol).flatten(0, -1);
    if excess.numel() == 0 {
        return;
    }
    let worst = excess.argmax(0, false).int64_value(&[]);
    let e = excess.double_value(&[worst]);
    if e > 0.0 || e.is_nan() {
        let af = a.flatten(0, -1);
        let bf = b.flatten(0, -1);
        panic!(
            "{what}: element {worst} differs: {} vs {} (|diff| {} > atol {atol} + rtol {rtol}·|ref|)",
            af.double_value(&[worst]),
            bf.double_value(&[worst]),
            diff.flatten(0, -1).double_value(&[worst])
        );
    }
}

/// A fresh temporary folder (removed by the caller when done).
pub fn tempdir() -> Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "contrast-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// libtorch's random generator is process-global, and the test harness runs tests on several
/// threads: a test that needs reproducible draws (seeded training, resume checks) holds this
/// lock for its whole body so no other test reseeds or consumes the generator meanwhile.
pub fn global_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes a synthetic CIFAR-10 in the official binary layout (`data_batch_1..5.bin`,
/// `test_batch.bin`, `per_file` records each, labels 0–3) for end-to-end tests. Class `c` images: a bright square in quadrant `c % 4` on noise, so classes are learnable.
pub fn write_synthetic_cifar10(dir: &Path, per_file: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 12345u64;
    let mut rnd = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u8
    };
    let files: Vec<String> = (1..=5)
        .map(|i| format!("data_batch_{i}.bin"))
        .chain(["test_batch.bin".to_string()])
        .collect();
    for (fi, f) in files.iter().enumerate() {
        let mut out = std::fs::File::create(dir.join(f)).unwrap();
        use std::io::Write as _;
        for r in 0..per_file {
            let label = ((r + fi) % 4) as u8;
            let mut rec = vec![label];
            for ch in 0..3 {
                for y in 0..32usize {
                    for x in 0..32usize {
                        let q = (y / 16) * 2 + x / 16;
                        let v = if q == label as usize {
                            200 + rnd() % 50
                        } else {
                            rnd() % 100
                        };
                        rec.push(if ch == (label as usize % 3) { v } else { v / 2 });
                    }
                }
            }
            out.write_all(&rec).unwrap();
        }
    }
}

/// Writes `n` synthetic cases in the LA h5 layout under `root` (`<CASES_DIR>/<id>/mri_norm2.h5`,
/// `train.list` = all but the last two, `test.list` = the last two): a bright ball (label 1) of
/// radius 6 on a flat background, its centre moving with the case index, volumes 34×30×22.
pub fn write_synthetic_la(root: &Path, n: usize) {
    use crate::volume::h5::{write_h5_case, LaHeart};
    use crate::volume::{Case, Volume};
    let dir = root.join(LaHeart::CASES_DIR);
    let shape = [34, 30, 22];
    let mut ids = vec![];
    for i in 0..n {
        let id = format!("CASE{i:02}");
        let c = [14.0 + i as f64, 15.0, 10.0 + (i % 3) as f64];
        let mut img = Volume::<f32>::zeros(shape);
        let mut lab = Volume::<u8>::zeros(shape);
        for x in 0..shape[0] {
            for y in 0..shape[1] {
                for z in 0..shape[2] {
                    let d2 = (x as f64 - c[0]).powi(2)
                        + (y as f64 - c[1]).powi(2)
                        + (z as f64 - c[2]).powi(2);
                    let k = img.idx(x, y, z);
                    let inside = d2 <= 36.0;
                    img.data[k] =
                        if inside { 2.0 } else { -0.5 } + 0.01 * ((x * 7 + y * 3 + z) % 5) as f32;
                    lab.data[k] = inside as u8;
                }
            }
        }
        std::fs::create_dir_all(dir.join(&id)).expect("case folder");
        write_h5_case(
            dir.join(&id).join("mri_norm2.h5"),
            &Case::new(&id, img, lab).expect("case"),
        )
        .expect("writing a synthetic LA case");
        ids.push(id);
    }
    std::fs::write(root.join("train.list"), ids[..n - 2].join("\n")).expect("train.list");
    std::fs::write(root.join("test.list"), ids[n - 2..].join("\n")).expect("test.list");
}

/// Helpers of the step comparisons against the papers' official code
/// (`crates/*/tests/official_*.rs`): the official side's outputs are `g.<name>` gradients and
/// `w.<name>` variables (official state-dict names) plus named scalars; a fixture keeps what a
/// machine without the official checkout needs to compare with.
/// Ranks of a distributed run started by a test as `torchrun` starts them: the variables it
/// sets (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) on loopback, one
/// child process each, and the runs' checkpoints compared.
pub mod ranks {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::{Child, Command, Output};
    use std::time::{Duration, Instant};
    use tch::Tensor;

    /// A TCP port free on 127.0.0.1 now.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Waits for every child, killing all of them after `limit` (a hang is a failure).
    pub fn wait_all(children: Vec<Child>, limit: Duration) -> Vec<Output> {
        let t0 = Instant::now();
        let mut children: Vec<Option<Child>> = children.into_iter().map(Some).collect();
        let mut outs: Vec<Option<Output>> = (0..children.len()).map(|_| None).collect();
        loop {
            for (c, o) in children.iter_mut().zip(outs.iter_mut()) {
                if let Some(ch) = c {
                    if ch.try_wait().unwrap().is_some() {
                        *o = Some(c.take().unwrap().wait_with_output().unwrap());
                    }
                }
            }
            if outs.iter().all(Option::is_some) {
                return outs.into_iter().map(Option::unwrap).collect();
            }
            if t0.elapsed() > limit {
                for c in children.iter_mut().flatten() {
                    let _ = c.kill();
                }
                panic!(
                    "ranks still running after {:.0} s (a hang)",
                    limit.as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `world` ranks of `make()` (stdout and stderr captured), with torchrun's variables plus
    /// `env`; a collective times out after 60 s, the whole launch after 300 s.
    pub fn launch(world: usize, make: impl Fn() -> Command, env: &[(&str, &str)]) -> Vec<Output> {
        let port = free_port().to_string();
        let children = (0..world)
            .map(|r| {
                let mut c = make();
                c.env("RANK", r.to_string())
                    .env("LOCAL_RANK", r.to_string())
                    .env("WORLD_SIZE", world.to_string())
                    .env("MASTER_ADDR", "127.0.0.1")
                    .env("MASTER_PORT", &port)
                    .env("GLOO_SOCKET_IFNAME", "lo")
                    .env("CONTRAST_DIST_TIMEOUT_S", "60")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                for (k, v) in env {
                    c.env(k, v);
                }
                c.spawn().unwrap()
            })
            .collect();
        wait_all(children, Duration::from_secs(300))
    }

    /// A child's stderr.
    pub fn stderr(o: &Output) -> String {
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// Panics with the failed rank's stderr unless every rank succeeded.
    pub fn assert_ok(outs: &[Output], what: &str) {
        for (r, o) in outs.iter().enumerate() {
            assert!(
                o.status.success(),
                "{what}: rank {r} failed:\n{}",
                stderr(o)
            );
        }
    }

    /// Every tensor of a run's checkpoint at `step` (`<group>/<name>`).
    pub fn checkpoint(run: &Path, step: u64) -> BTreeMap<String, Tensor> {
        let dir = run.join("checkpoints").join(format!("step-{step:08}"));
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                let group = p.file_stem().unwrap().to_string_lossy().into_owned();
                for (n, t) in Tensor::read_safetensors(&p).unwrap() {
                    out.insert(format!("{group}/{n}"), t);
                }
            }
        }
        out
    }

    /// A run of N ranks against the same run in one process: every tensor of the checkpoint at
    /// `step` within the bar of every comparison with the official code, `8·step·drift`
    /// floored at 1e-6, where `drift` is how far `perturbed` (the one-process run started from
    /// weights perturbed by one float32 rounding, `CONTRAST_PERTURB_INIT`) ends from `one`;
    /// integer tensors equal. Panics naming the tensor; returns the largest difference / bound
    /// with its tensor, and the largest plain relative difference with its tensor.
    pub fn check_within_drift(
        ranks: &Path,
        one: &Path,
        perturbed: &Path,
        step: u64,
    ) -> ((f64, String), (f64, String)) {
        check_within_widest_drift(ranks, one, &[perturbed.to_path_buf()], step)
    }

    /// [`check_within_drift`] with several perturbed runs, each tensor's drift the largest
    /// over them (a run past a branch point drifts by how far the farthest direction goes).
    pub fn check_within_widest_drift(
        ranks: &Path,
        one: &Path,
        perturbed: &[std::path::PathBuf],
        step: u64,
    ) -> ((f64, String), (f64, String)) {
        let (a, b) = (checkpoint(ranks, step), checkpoint(one, step));
        let ps: Vec<_> = perturbed.iter().map(|p| checkpoint(p, step)).collect();
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "the same tensors"
        );
        let rel = |x: &Tensor, y: &Tensor| {
            let (x, y) = (x.to_kind(tch::Kind::Double), y.to_kind(tch::Kind::Double));
            (&x - &y).norm().double_value(&[]) / y.norm().double_value(&[]).max(f64::MIN_POSITIVE)
        };
        let (mut ratio, mut plain) = ((0.0, String::new()), (0.0, String::new()));
        for (n, y) in &b {
            if !y.is_floating_point() {
                assert!(a[n].equal(y), "{n} differs");
                continue;
            }
            let d = rel(&a[n], y);
            let drift = ps.iter().map(|p| rel(&p[n], y)).fold(0.0, f64::max);
            let bound = (8.0 * step as f64 * drift).max(1e-6);
            assert!(
                d <= bound,
                "{n}: the ranks differ from one process by {d:.3e} > {bound:.3e} (fp32 drift {drift:.3e})"
            );
            if d / bound > ratio.0 {
                ratio = (d / bound, n.clone());
            }
            if d > plain.0 {
                plain = (d, n.clone());
            }
        }
        (ratio, plain)
    }

    /// The three runs of a "2 ranks train what one process trains" test (see [`against_one`]):
    /// their folders and the ranks' outputs.
    pub struct AgainstOne {
        pub one: std::path::PathBuf,
        pub perturbed: std::path::PathBuf,
        /// More perturbed one-process runs, each from another rounding direction
        /// ([`against_one_in`]); empty for [`against_one`].
        pub more: Vec<std::path::PathBuf>,
        pub two: std::path::PathBuf,
        pub ranks: Vec<Output>,
    }

    impl AgainstOne {
        /// Every tensor of the 2-rank run's checkpoint at `steps` within 8·k× its fp32 drift
        /// ([`check_within_drift`]), and the `loss` curve (one value per step) within the
        /// derived drift bound of [`super::official::check_steps`]. Prints one line with both
        /// and returns the loss curve's largest |difference| / bound.
        ///
        /// With more perturbed runs ([`against_one_in`]) the drift of each step and tensor is
        /// the widest over them, and the 2-rank loss must also lie, at every step, within the
        /// one-direction bound of the nearest of the one-process runs
        /// ([`super::official::nearest_run`]): a run that passes a branch point may take
        /// either branch, as the one-process runs from other roundings do.
        pub fn check(&self, what: &str, steps: u64, loss: &str) -> f64 {
            let perturbed: Vec<_> = std::iter::once(&self.perturbed)
                .chain(&self.more)
                .cloned()
                .collect();
            let rows = |run: &Path| -> Vec<Vec<f64>> {
                curve(run, loss).into_iter().map(|x| vec![x]).collect()
            };
            let (l1, l2) = (rows(&self.one), rows(&self.two));
            let lps: Vec<_> = perturbed.iter().map(|p| rows(p)).collect();
            assert_eq!(l1.len(), steps as usize, "{what}: one {loss} per step");
            let lp = super::official::farthest_curves(&l1, &lps);
            let r = super::official::check_steps(what, &[loss], &l1, &l2, &lp);
            if !self.more.is_empty() {
                let runs: Vec<Vec<f64>> = std::iter::once(&self.one)
                    .chain(&perturbed)
                    .map(|p| curve(p, loss))
                    .collect();
                super::official::nearest_run(what, loss, &runs, &curve(&self.two, loss));
            }
            let ((ratio, name), (worst, worst_name)) =
                check_within_widest_drift(&self.two, &self.one, &perturbed, steps);
            println!(
                "{what}, {steps} steps, 2 ranks vs one process on the global batch: the loss curve within {r:.3} of the drift bound; every tensor within 8·k× its fp32 drift (largest ratio {ratio:.3}, {name}; largest plain relative difference {worst:.2e}, {worst_name})"
            );
            r
        }
    }

    /// The `run(name)` of [`against_one`] for a workspace binary: `bin <verb> --preset <preset>
    /// --runs-dir <runs> --name <name>`, started in `dir` (the crate's folder).
    pub fn binary<'a>(
        bin: &'a str,
        verb: &'a str,
        preset: &'a Path,
        runs: &'a Path,
        dir: &'a str,
    ) -> impl Fn(&str) -> Command + 'a {
        move |name| {
            let mut c = Command::new(bin);
            c.args([verb, "--preset"])
                .arg(preset)
                .arg("--runs-dir")
                .arg(runs)
                .args(["--name", name])
                .current_dir(dir);
            c
        }
    }

    /// `run(name)` (a command training one run named `name`) three ways: as one process, as
    /// one process from initial weights perturbed by one float32 rounding
    /// (`CONTRAST_PERTURB_INIT=3`: how far fp32 arithmetic alone carries the run), and as 2
    /// ranks started as torchrun starts them. Panics with its stderr when any fails; `runs` is
    /// where the runs' folders are (`runs/<name>`).
    pub fn against_one(runs: &Path, prefix: &str, run: impl Fn(&str) -> Command) -> AgainstOne {
        against_one_in(runs, prefix, run, &[3])
    }

    /// [`against_one`] with one perturbed one-process run per seed of `perturb` (the first is
    /// the one-direction run, `perturbed`; the others are `more`): for a run that passes a
    /// branch point, where the drift depends on the direction of the rounding.
    pub fn against_one_in(
        runs: &Path,
        prefix: &str,
        run: impl Fn(&str) -> Command,
        perturb: &[u64],
    ) -> AgainstOne {
        assert!(!perturb.is_empty(), "{prefix}: no perturbation seed");
        let name = |n: &str| format!("{prefix}-{n}");
        let one = run(&name("one")).output().unwrap();
        assert!(one.status.success(), "{prefix}: {}", stderr(&one));
        let perturbed: Vec<_> = perturb
            .iter()
            .enumerate()
            .map(|(i, seed)| {
                let n = match i {
                    0 => name("perturbed"),
                    _ => name(&format!("perturbed-{seed}")),
                };
                let p = run(&n)
                    .env("CONTRAST_PERTURB_INIT", seed.to_string())
                    .output()
                    .unwrap();
                assert!(p.status.success(), "{prefix}: {}", stderr(&p));
                runs.join(n)
            })
            .collect();
        let ranks = launch(2, || run(&name("two")), &[]);
        assert_ok(&ranks, prefix);
        AgainstOne {
            one: runs.join(name("one")),
            perturbed: perturbed[0].clone(),
            more: perturbed[1..].to_vec(),
            two: runs.join(name("two")),
            ranks,
        }
    }

    /// The values of `key` in a run's metrics.jsonl, in step order.
    pub fn curve(run: &Path, key: &str) -> Vec<f64> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap_or_else(|e| panic!("{}: {e}", run.display()))
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?[key].as_f64())
            .collect()
    }

    /// The largest `|a − b| / |b|` of two curves of the same length.
    pub fn curve_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len(), "curves of different lengths");
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(f64::MIN_POSITIVE))
            .fold(0.0, f64::max)
    }

    /// The largest relative difference `‖a − b‖ / ‖b‖` (L2 over the tensor) of any floating
    /// tensor (integers must be equal), with its name.
    pub fn max_rel(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> (f64, String) {
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "the same tensors"
        );
        let mut worst = (0.0, String::new());
        for (n, x) in a {
            let y = &b[n];
            let d = if x.is_floating_point() {
                let x = x.to_kind(tch::Kind::Double);
                let y = y.to_kind(tch::Kind::Double);
                (&x - &y).norm().double_value(&[])
                    / y.norm().double_value(&[]).max(f64::MIN_POSITIVE)
            } else {
                assert!(x.equal(y), "{n} differs");
                0.0
            };
            if d > worst.0 {
                worst = (d, n.clone());
            }
        }
        worst
    }
}

pub mod official {
    use super::{get, run_reference};
    use std::path::{Path, PathBuf};
    use tch::{Kind, Tensor};

    /// The repository root.
    pub fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// A run of one of our binaries recorded with `--record` ([`record_run`]): what the
    /// official code replays, and where the run ended.
    pub struct Recorded {
        /// `initial.safetensors`: every checkpoint group's tensors as `group/name`.
        pub initial: Vec<(String, Tensor)>,
        /// `steps.jsonl`: one line per step (seed, lr, weight decay, loss terms).
        pub lines: Vec<serde_json::Value>,
        /// The recording's folder (`step-NNNNNNNN.safetensors`).
        pub dir: PathBuf,
        /// The run's checkpoint after the last recorded step.
        pub last: crate::train::Checkpoint,
    }

    impl Recorded {
        /// Tensor `name` recorded at step `k` (0-based): `viewN`, `draw/…`, ….
        pub fn get(&self, k: usize, name: &str) -> Tensor {
            let p = self.dir.join(format!("step-{:08}.safetensors", k + 1));
            Tensor::read_safetensors(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .into_iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("step {}: no `{name}` recorded", k + 1))
                .1
        }

        /// Checkpoint group `group` after the last step, by the variables' own names.
        pub fn vars(&self, group: &str) -> Vec<(String, Tensor)> {
            self.last
                .group(group)
                .unwrap_or_else(|e| panic!("{e:#}"))
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect()
        }

        /// Checkpoint groups `groups` after the last step, their tensors as `group/name`.
        pub fn after_all(&self, groups: &[&str]) -> Vec<(String, Tensor)> {
            groups.iter().flat_map(|g| self.after(g)).collect()
        }

        /// Checkpoint group `group` after the last step, its tensors as `group/name`.
        pub fn after(&self, group: &str) -> Vec<(String, Tensor)> {
            self.last
                .group(group)
                .unwrap_or_else(|e| panic!("{e:#}"))
                .iter()
                .map(|(n, t)| (format!("{group}/{n}"), t.shallow_clone()))
                .collect()
        }
    }

    /// Run `bin pretrain --preset <preset>` for `steps` steps as run `name` under
    /// `<dir>/runs`, recorded with `--record <dir>/record-<name>`, from initial weights perturbed
    /// by one float32 rounding with seed `perturb` when given (`CONTRAST_PERTURB_INIT`); panics
    /// with its stderr when it fails. `method` is the binary's run-folder name.
    pub fn record_run(
        bin: &str,
        method: &str,
        preset: &Path,
        dir: &Path,
        name: &str,
        steps: usize,
        perturb: Option<u64>,
    ) -> Recorded {
        record_ranks(bin, method, preset, dir, name, steps, perturb, 1)
            .pop()
            .unwrap()
    }

    /// [`record_run`] as `world` ranks started as torchrun starts them
    /// ([`super::ranks::launch`]): one recording per rank (rank `r > 0`'s in
    /// `record-<name>/rank-r`), each with the run's last checkpoint (rank 0's).
    #[allow(clippy::too_many_arguments)]
    pub fn record_ranks(
        bin: &str,
        method: &str,
        preset: &Path,
        dir: &Path,
        name: &str,
        steps: usize,
        perturb: Option<u64>,
        world: usize,
    ) -> Vec<Recorded> {
        let rec = dir.join(format!("record-{name}"));
        let runs = dir.join("runs");
        let command = || {
            let mut cmd = super::ranks::binary(bin, "pretrain", preset, &runs, ".")(name);
            cmd.args(["--stop-at", &steps.to_string(), "--record"])
                .arg(&rec);
            if let Some(seed) = perturb {
                cmd.env("CONTRAST_PERTURB_INIT", seed.to_string());
            }
            cmd
        };
        if world == 1 {
            let out = command().output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            let outs = super::ranks::launch(world, command, &[]);
            super::ranks::assert_ok(&outs, &format!("{method} --record, {world} ranks"));
        }
        (0..world)
            .map(|r| {
                let rec = match r {
                    0 => rec.clone(),
                    r => rec.join(format!("rank-{r}")),
                };
                let lines: Vec<serde_json::Value> =
                    std::fs::read_to_string(rec.join("steps.jsonl"))
                        .unwrap()
                        .lines()
                        .map(|l| serde_json::from_str(l).unwrap())
                        .collect();
                assert_eq!(lines.len(), steps, "one recorded line per step");
                let last = crate::train::Checkpointer::load(
                    dir.join("runs")
                        .join(method)
                        .join(name)
                        .join(format!("checkpoints/step-{steps:08}")),
                )
                .unwrap();
                Recorded {
                    initial: Tensor::read_safetensors(rec.join("initial.safetensors")).unwrap(),
                    lines,
                    dir: rec,
                    last,
                }
            })
            .collect()
    }

    /// `.official/<method>`: the git-ignored checkout of `cargo xtask official fetch <method>`.
    pub fn checkout(method: &str) -> PathBuf {
        repo_root().join(".official").join(method)
    }

    /// `official/fixtures/<name>`: the committed official numbers.
    pub fn fixture(name: &str) -> PathBuf {
        repo_root().join("official/fixtures").join(name)
    }

    /// Run an adapter script on the official checkout (its first argument after the npz paths,
    /// then `args`). `None` when there is no checkout or no Python with torch: the caller then
    /// compares with the fixture.
    pub fn run_official(
        checkout: &Path,
        script: &str,
        inputs: &[(&str, &Tensor)],
        args: &[&str],
    ) -> Option<Vec<(String, Tensor)>> {
        checkout_commit(checkout)?;
        let c = checkout.display().to_string();
        let mut all = vec![c.as_str()];
        all.extend_from_slice(args);
        run_reference(script, inputs, &all).unwrap()
    }

    /// Write a fixture of named official scalars: `{what, official_commit, <name>: value…}`.
    pub fn write_scalars(path: &Path, checkout: &Path, what: &str, values: &[(&str, f64)]) {
        let mut v = serde_json::Map::new();
        v.insert("what".into(), what.into());
        v.insert("official_commit".into(), checkout_commit(checkout).into());
        for (k, x) in values {
            v.insert(k.to_string(), (*x).into());
        }
        std::fs::write(
            path,
            serde_json::to_string_pretty(&serde_json::Value::Object(v)).unwrap() + "\n",
        )
        .unwrap();
        println!("official: wrote {}", path.display());
    }

    /// Our scalars against a fixture of [`write_scalars`], each within
    /// `rtol · max(|official|, 1)`; then one line saying the comparison used the fixture.
    pub fn compare_scalars(path: &Path, test: &str, ours: &[(&str, f64)], rtol: f64) {
        let f = read_fixture(path);
        for (name, v) in ours {
            let o = f[*name]
                .as_f64()
                .unwrap_or_else(|| panic!("{name} not in {}", path.display()));
            assert_near(*v, o, 0.0, rtol * o.abs().max(1.0), name);
        }
        println!(
            "{test}: no official checkout (or no Python for it); ours matches the committed official numbers ({}, official commit {})",
            path.display(),
            f["official_commit"].as_str().unwrap_or("?")
        );
    }

    /// `CONTRAST_WRITE_FIXTURES` is set: the tests rewrite their fixtures from the official run.
    pub fn writing_fixtures() -> bool {
        std::env::var_os("CONTRAST_WRITE_FIXTURES").is_some()
    }

    /// The L2 norm in double precision.
    pub fn l2(t: &Tensor) -> f64 {
        t.to_kind(Kind::Double).norm().double_value(&[])
    }

    /// The largest |entry| of the official gradients: the scale of float rounding noise in any
    /// of them (a gradient that is 0 in exact arithmetic is computed as noise of that scale).
    pub fn grad_max(out: &[(String, Tensor)]) -> f64 {
        out.iter()
            .filter(|(n, _)| n.starts_with("g."))
            .map(|(_, g)| g.abs().max().double_value(&[]))
            .fold(0.0, f64::max)
    }

    /// The commit of an official checkout (`cargo xtask official fetch` writes it), if present.
    pub fn checkout_commit(dir: &Path) -> Option<String> {
        std::fs::read_to_string(dir.join(".contrast-commit"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// The L2 norm of every official output named `w.<name>` (under `<name>`) and of the
    /// outputs listed in `plain` (under their own name): a fixture's `after_l2`.
    pub fn after_l2(
        out: &[(String, Tensor)],
        plain: &[&str],
    ) -> serde_json::Map<String, serde_json::Value> {
        out.iter()
            .filter_map(|(n, t)| {
                let name = match n.strip_prefix("w.") {
                    Some(v) => v,
                    None if plain.contains(&n.as_str()) => n.as_str(),
                    None => return None,
                };
                Some((name.to_string(), l2(t).into()))
            })
            .collect()
    }

    /// Write an N-step fixture `{what, official_commit, steps, curves, …extra, after_l2}`
    /// (`curves`: [`curves_json`] of the official per-step terms) and say so on stdout.
    pub fn write_steps_fixture(
        path: &Path,
        checkout: &Path,
        what: &str,
        steps: usize,
        curves: serde_json::Value,
        extra: &[(&str, serde_json::Value)],
        after_l2: serde_json::Map<String, serde_json::Value>,
    ) {
        let mut v = serde_json::json!({
            "what": what,
            "official_commit": checkout_commit(checkout),
            "steps": steps,
            "curves": curves,
        });
        for (k, x) in extra {
            v[*k] = x.clone();
        }
        v["after_l2"] = after_l2.into();
        std::fs::write(path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
        println!("official: wrote {}", path.display());
    }

    /// Write a fixture: `{what, official_commit, terms {name: value}, grad_l2 {name: ‖g‖},
    /// after_l2 {name: ‖w‖}, grad_max_abs}` from the official outputs.
    pub fn write_fixture(
        path: &Path,
        out: &[(String, Tensor)],
        checkout: &Path,
        what: &str,
        terms: &[&str],
    ) {
        let mut grad = serde_json::Map::new();
        let mut after = serde_json::Map::new();
        for (n, t) in out {
            if let Some(v) = n.strip_prefix("g.") {
                grad.insert(v.into(), l2(t).into());
            } else if let Some(v) = n.strip_prefix("w.") {
                after.insert(v.into(), l2(t).into());
            }
        }
        let terms: serde_json::Map<String, serde_json::Value> = terms
            .iter()
            .map(|k| (k.to_string(), get(out, k).double_value(&[]).into()))
            .collect();
        let v = serde_json::json!({
            "what": what,
            "official_commit": checkout_commit(checkout),
            "terms": terms, "grad_l2": grad, "after_l2": after, "grad_max_abs": grad_max(out),
        });
        std::fs::create_dir_all(path.parent().expect("a fixture path has a parent")).unwrap();
        std::fs::write(path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
        println!("official: wrote {}", path.display());
    }

    /// Read a fixture written by [`write_fixture`]; panics naming the file.
    pub fn read_fixture(path: &Path) -> serde_json::Value {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "no official checkout and no fixture {}: {e}",
                path.display()
            )
        });
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
    }

    /// How closely ours must match a fixture: loss terms within `term` (absolute and relative);
    /// ‖g‖ within `grad_rtol` plus `grad_noise · grad_max_abs · √numel` (a gradient that is 0 in
    /// exact arithmetic has a norm of rounding noise); ‖w‖ after the steps within `after_rtol`
    /// plus `after_atol_sqrt_n · √numel + after_atol`.
    #[derive(Debug, Clone, Copy)]
    pub struct FixtureTolerance {
        pub term: f64,
        pub grad_rtol: f64,
        pub grad_noise: f64,
        pub after_rtol: f64,
        pub after_atol_sqrt_n: f64,
        pub after_atol: f64,
    }

    /// Our loss terms, gradients (of trainable variables) and variables after the steps against
    /// a fixture of [`write_fixture`]; panics naming the first that differs.
    pub fn compare_with_fixture(
        f: &serde_json::Value,
        terms: &[(&str, f64)],
        vars: &[(String, Tensor)],
        tol: &FixtureTolerance,
    ) {
        let value = |section: &str, name: &str| {
            f[section][name]
                .as_f64()
                .unwrap_or_else(|| panic!("{name} not in the fixture's {section}"))
        };
        for (name, v) in terms {
            assert_near(*v, value("terms", name), tol.term, tol.term, name);
        }
        let global = f["grad_max_abs"].as_f64().unwrap_or(0.0);
        for (name, t) in vars {
            let sqrt_n = (t.numel() as f64).sqrt();
            if t.requires_grad() {
                let noise = tol.grad_noise * global * sqrt_n;
                let what = format!("|dL/d{name}|");
                assert_near(
                    l2(&t.grad()),
                    value("grad_l2", name),
                    tol.grad_rtol,
                    noise,
                    &what,
                );
            }
            let atol = tol.after_atol_sqrt_n * sqrt_n + tol.after_atol;
            let what = format!("|{name}| after the steps");
            assert_near(l2(t), value("after_l2", name), tol.after_rtol, atol, &what);
        }
    }

    /// How many steps an N-step comparison runs: `$CONTRAST_OFFICIAL_STEPS` (what
    /// `cargo xtask official compare <method> --steps N` sets), else `default`.
    pub fn official_steps(default: usize) -> usize {
        std::env::var("CONTRAST_OFFICIAL_STEPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or(default)
    }

    /// Multiply every entry of `vars` by `1 + u·2⁻²³`, `u` uniform in [−1, 1] from a generator
    /// seeded with `seed` (the global one is left alone): a perturbation of the size of one
    /// float32 rounding. Our run from perturbed weights, beside our run from the exact ones,
    /// measures how far fp32 rounding alone carries the training over N steps
    /// ([`check_steps`]).
    pub fn perturb_rounding(vars: &[Tensor], seed: u64) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        tch::no_grad(|| {
            for v in vars {
                if !v.is_floating_point() {
                    continue;
                }
                let n = v.numel();
                let u: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..=1.0)).collect();
                let f = (Tensor::from_slice(&u) * 2f64.powi(-23) + 1.0)
                    .to_kind(v.kind())
                    .to_device(v.device())
                    .reshape(v.size());
                let _ = v.shallow_clone().f_mul_(&f).expect("perturbing a variable");
            }
        });
    }

    /// The N-step bar, per step `k` (1-based) and loss term:
    /// `|ours − official| ≤ max(1e-5·max(|official|, 1), 8·k·D_k)` where
    /// `D_k = max_{j≤k} |ours_j − perturbed_j|` is how far ours moved from ours started from
    /// weights perturbed by one float32 rounding ([`perturb_rounding`]).
    ///
    /// Why this bound: the official code computes the same arithmetic in another reduction
    /// order, which adds an error of a few roundings at every step instead of one at the start.
    /// Linearised, an error `δ` injected at step `j` has grown by step `k` by the training's
    /// amplification `A(j→k)`, and `A(j→k) ≤ A(0→k)` while the run is not contracting; summing
    /// over the `k` steps gives `≤ k · A(0→k) · δ = k · D_k` per rounding, and the factor 8
    /// allows a few roundings per operation. `D_k` is measured, never chosen: a method bug
    /// (a wrong schedule, momentum, target or update) shows as a gap of the size of the
    /// learning rate, orders above it. The first step keeps the 1e-5 relative bar of the
    /// one-step comparisons.
    ///
    /// Where the run passes close to a threshold (a bifurcation: after it, runs a rounding apart
    /// continue on two different branches), the linear picture breaks down, and whether a
    /// perturbation crosses the threshold depends on its direction. A comparison whose run does
    /// this measures `D_k` over several random directions ([`farthest_curves`],
    /// [`widest_drift`]): the official code's reduction order is one more direction.
    pub fn drift_bound(k: usize, official: f64, envelope: f64) -> f64 {
        (1e-5 * official.abs().max(1.0)).max(8.0 * k as f64 * envelope)
    }

    /// Of several perturbed runs' `[step][term]` curves, per step and term the value farthest
    /// from ours: as `perturbed` of [`check_steps`], `D_k` becomes the largest drift over every
    /// perturbation direction.
    pub fn farthest_curves(ours: &[Vec<f64>], runs: &[Vec<Vec<f64>>]) -> Vec<Vec<f64>> {
        assert!(!runs.is_empty(), "no perturbed run");
        ours.iter()
            .enumerate()
            .map(|(k, o)| {
                o.iter()
                    .enumerate()
                    .map(|(t, &v)| {
                        runs.iter()
                            .map(|r| r[k][t])
                            .max_by(|a, b| (a - v).abs().total_cmp(&(b - v).abs()))
                            .unwrap()
                    })
                    .collect()
            })
            .collect()
    }

    /// The tighter statement for a run that passes branch points (see [`drift_bound`]): at every
    /// step the official value of a term lies within the one-direction drift bound of the
    /// nearest of our runs. `runs[0]` is ours, `runs[1]` the perturbed run whose distance from
    /// ours is the one-direction envelope (its running maximum), the others more perturbed runs;
    /// each is that term's curve, as is `official`. Asserts it, prints the largest ratio, and
    /// returns the distance to the nearest run per step.
    pub fn nearest_run(test: &str, term: &str, runs: &[Vec<f64>], official: &[f64]) -> Vec<f64> {
        assert!(runs.len() >= 2, "{test}: ours and a perturbed run at least");
        let mut envelope = 0.0f64;
        let mut worst = 0.0f64;
        let nearest: Vec<f64> = official
            .iter()
            .enumerate()
            .map(|(k, &f)| {
                envelope = envelope.max((runs[0][k] - runs[1][k]).abs());
                let nearest = runs
                    .iter()
                    .map(|r| (r[k] - f).abs())
                    .fold(f64::INFINITY, f64::min);
                let bound = drift_bound(k + 1, f, envelope);
                assert!(
                    nearest <= bound,
                    "{test}: step {}: the official {term} {f} is {nearest:.3e} from the nearest of our runs (bound {bound:.3e})",
                    k + 1
                );
                worst = worst.max(nearest / bound);
                nearest
            })
            .collect();
        println!(
            "{test}: the official {term} within the one-direction bound of the nearest of our {} runs at every step (largest ratio {worst:.3})",
            runs.len()
        );
        nearest
    }

    /// The checks of a recorded run replayed by the official code, which may pass branch points:
    /// every term of every step within the drift bound of the farthest of the `perturbed` runs
    /// ([`farthest_curves`], [`check_steps`]); for each term index in `nearest`, the official
    /// value within the one-direction bound of the nearest of our runs ([`nearest_run`];
    /// `perturbed[0]` is the one direction); every variable row within its bound
    /// ([`check_weights`], `k = steps`). Curves are `[step][term]`.
    #[allow(clippy::too_many_arguments)]
    pub fn check_replay(
        test: &str,
        terms: &[&str],
        steps: usize,
        ours: &[Vec<f64>],
        perturbed: &[Vec<Vec<f64>>],
        official: &[Vec<f64>],
        nearest: &[usize],
        rows: &[WeightRow],
    ) {
        check_steps(
            test,
            terms,
            ours,
            official,
            &farthest_curves(ours, perturbed),
        );
        let column = |c: &[Vec<f64>], t: usize| -> Vec<f64> { c.iter().map(|r| r[t]).collect() };
        for &t in nearest {
            let runs: Vec<Vec<f64>> = std::iter::once(ours)
                .chain(perturbed.iter().map(Vec::as_slice))
                .map(|c| column(c, t))
                .collect();
            nearest_run(test, terms[t], &runs, &column(official, t));
        }
        check_weights(test, steps, rows, 8.0 * 2f64.powi(-23));
    }

    /// A fixture's `after_l2` norm of each variable, as the official side of [`widest_rows`].
    pub fn fixture_l2(f: &serde_json::Value) -> impl Fn(&str) -> Result<Tensor, f64> + '_ {
        move |name| {
            Err(f["after_l2"][name]
                .as_f64()
                .unwrap_or_else(|| panic!("{name} not in the fixture's after_l2")))
        }
    }

    /// The weight rows of `ours` (each variable after the steps, by name) against its official
    /// value (`official(name)`: the tensor, or from a fixture its L2 norm) and the same variables
    /// of several perturbed runs, each variable's drift the widest over them ([`widest_drift`]);
    /// `group` names a variable's group in the printed summary.
    pub fn widest_rows(
        ours: &[(String, Tensor)],
        perturbed: &[&[(String, Tensor)]],
        official: &dyn Fn(&str) -> Result<Tensor, f64>,
        group: &dyn Fn(&str) -> String,
    ) -> Vec<WeightRow> {
        widest_drift(
            perturbed
                .iter()
                .map(|p| {
                    assert_eq!(p.len(), ours.len(), "perturbed runs with other variables");
                    ours.iter()
                        .zip(p.iter())
                        .map(|((n, t), (m, pt))| {
                            assert_eq!(n, m, "perturbed runs with other variables");
                            let o = official(n);
                            WeightRow::new(n, group(n), t, pt, o.as_ref().map_err(|e| *e))
                        })
                        .collect()
                })
                .collect(),
        )
    }

    /// The weight rows of several perturbed runs (`[run][variable]`, the same variables in the
    /// same order), each variable's drift the largest over the runs.
    pub fn widest_drift(runs: Vec<Vec<WeightRow>>) -> Vec<WeightRow> {
        let mut runs = runs.into_iter();
        let mut widest = runs.next().expect("no perturbed run");
        for run in runs {
            assert_eq!(
                run.len(),
                widest.len(),
                "perturbed runs with other variables"
            );
            for (w, r) in widest.iter_mut().zip(run) {
                assert_eq!(w.name, r.name, "perturbed runs with other variables");
                w.drift = w.drift.max(r.drift);
            }
        }
        widest
    }

    /// Print every step's loss terms ours / official / difference / bound, and assert each
    /// within [`drift_bound`]; `ours`, `official` and `perturbed` are `[step][term]`. Returns
    /// the largest `|difference| / bound` seen (≤ 1 when it passes).
    pub fn check_steps(
        test: &str,
        terms: &[&str],
        ours: &[Vec<f64>],
        official: &[Vec<f64>],
        perturbed: &[Vec<f64>],
    ) -> f64 {
        assert!(
            ours.len() == official.len() && ours.len() == perturbed.len(),
            "{test}: {} steps of ours, {} official, {} perturbed",
            ours.len(),
            official.len(),
            perturbed.len()
        );
        println!("{test}: {} steps, loss terms ours / official", ours.len());
        println!(
            "{:>5} {:>16} {:>16} {:>16} {:>11} {:>11} {:>11}",
            "step", "term", "ours", "official", "|diff|", "fp32 drift", "bound"
        );
        let mut envelope = vec![0.0f64; terms.len()];
        let mut worst = 0.0f64;
        let mut failures = Vec::new();
        for (k, ((o, f), p)) in ours.iter().zip(official).zip(perturbed).enumerate() {
            for (t, name) in terms.iter().enumerate() {
                envelope[t] = envelope[t].max((o[t] - p[t]).abs());
                let diff = (o[t] - f[t]).abs();
                let bound = drift_bound(k + 1, f[t], envelope[t]);
                worst = worst.max(diff / bound);
                println!(
                    "{:>5} {:>16} {:>16.9} {:>16.9} {:>11.3e} {:>11.3e} {:>11.3e}",
                    k + 1,
                    name,
                    o[t],
                    f[t],
                    diff,
                    envelope[t],
                    bound
                );
                if diff.is_nan() || diff > bound {
                    failures.push(format!(
                        "step {} {name}: ours {} vs official {} (|diff| {diff:.3e} > bound {bound:.3e})",
                        k + 1,
                        o[t],
                        f[t]
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{test}: {} of the N-step values are outside the fp32-drift bound:\n{}",
            failures.len(),
            failures.join("\n")
        );
        println!("{test}: largest |diff| / bound = {worst:.3}");
        record_agreement(test, terms, ours, official, worst);
        worst
    }

    /// When `$CONTRAST_OFFICIAL_OUT` names a folder (`cargo xtask official compare` sets it to
    /// `<runs>/official/<method>/`), write `<test>.json` there: the steps, every term's first-
    /// and last-step values ours / official and the largest |diff| / bound, for the results
    /// page's official-code column. Failing to write is a warning.
    fn record_agreement(
        test: &str,
        terms: &[&str],
        ours: &[Vec<f64>],
        official: &[Vec<f64>],
        worst: f64,
    ) {
        let Some(dir) = std::env::var_os("CONTRAST_OFFICIAL_OUT") else {
            return;
        };
        let row = |k: usize| -> serde_json::Value {
            terms
                .iter()
                .enumerate()
                .map(|(t, name)| {
                    (
                        name.to_string(),
                        serde_json::json!([ours[k][t], official[k][t]]),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let n = ours.len();
        let v = serde_json::json!({
            "test": test,
            "steps": n,
            "first": if n > 0 { row(0) } else { serde_json::Value::Null },
            "last": if n > 0 { row(n - 1) } else { serde_json::Value::Null },
            "worst_ratio": worst,
            "passed": true,
        });
        let dir = std::path::PathBuf::from(dir);
        let path = dir.join(format!("{test}.json"));
        let r = std::fs::create_dir_all(&dir)
            .map_err(anyhow::Error::from)
            .and_then(|_| {
                crate::train::checkpoint::write_atomic(
                    &path,
                    (serde_json::to_string_pretty(&v).unwrap_or_default() + "\n").as_bytes(),
                )
            });
        if let Err(e) = r {
            eprintln!(
                "warning: official agreement not recorded in {}: {e:#}",
                path.display()
            );
        }
    }

    /// One variable after the N steps of a comparison, relative to the official variable's norm:
    /// `diff` = ‖ours − official‖ / ‖official‖ (or, from a fixture that keeps only the norm,
    /// |‖ours‖ − ‖official‖| / ‖official‖, which the same bound bounds since
    /// |‖a‖ − ‖b‖| ≤ ‖a − b‖), `drift` = ‖ours − ours-perturbed‖ / ‖official‖.
    #[derive(Debug, Clone)]
    pub struct WeightRow {
        pub name: String,
        /// What the per-group summary gathers it under (e.g. `encoder.layer1`, `projector`).
        pub group: String,
        pub diff: f64,
        pub drift: f64,
    }

    impl WeightRow {
        /// The row of `name` from our tensor, our perturbed run's, and the official tensor
        /// (`Ok`) or only its L2 norm (`Err`, from a fixture).
        pub fn new(
            name: &str,
            group: impl Into<String>,
            ours: &Tensor,
            perturbed: &Tensor,
            official: Result<&Tensor, f64>,
        ) -> Self {
            let (diff, norm) = match official {
                Ok(f) => (l2(&(ours - f)), l2(f)),
                Err(norm) => ((l2(ours) - norm).abs(), norm),
            };
            let n = norm.max(f64::MIN_POSITIVE);
            WeightRow {
                name: name.to_string(),
                group: group.into(),
                diff: diff / n,
                drift: l2(&(ours - perturbed)) / n,
            }
        }
    }

    /// The weights after step `n` of an N-step comparison: every variable's relative
    /// difference within `max(floor, 8·n·drift)` — the bound of [`drift_bound`] with the
    /// variable's own measured fp32 drift, floored at `floor` for a variable the perturbation
    /// leaves (nearly) unchanged (e.g. `8·2⁻²³`, eight float32 roundings, or `1e-5`). Prints per
    /// group the largest difference, the largest drift and the largest difference / bound.
    pub fn check_weights(test: &str, n: usize, rows: &[WeightRow], floor: f64) {
        let mut groups: std::collections::BTreeMap<&str, (usize, f64, f64, f64, &str)> =
            Default::default();
        let mut failures = Vec::new();
        for r in rows {
            let bound = floor.max(8.0 * n as f64 * r.drift);
            let g = groups
                .entry(r.group.as_str())
                .or_insert((0, 0.0, 0.0, 0.0, ""));
            g.0 += 1;
            if r.diff > g.1 || g.4.is_empty() {
                g.1 = g.1.max(r.diff);
                g.4 = &r.name;
            }
            g.2 = g.2.max(r.drift);
            g.3 = g.3.max(r.diff / bound);
            if r.diff.is_nan() || r.diff > bound {
                failures.push(format!(
                    "{}: relative |ours − official| {:.3e} > bound {bound:.3e} (fp32 drift {:.3e})",
                    r.name, r.diff, r.drift
                ));
            }
        }
        println!(
            "{test}: variables after step {n}, per group: count, largest relative |ours − official| (its variable), largest fp32 drift, largest |diff| / bound"
        );
        for (g, (count, d, p, ratio, worst)) in &groups {
            println!("{g:>32} {count:>4} {d:>11.3e} ({worst}) {p:>11.3e} {ratio:>8.3}");
        }
        assert!(
            failures.is_empty(),
            "{test}: {} variables after step {n} outside the fp32-drift bound:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// `[step][term]` loss curves as JSON (`{"terms": [...], "steps": [[...], ...]}`), for a
    /// fixture's `curves` field.
    pub fn curves_json(terms: &[&str], steps: &[Vec<f64>]) -> serde_json::Value {
        serde_json::json!({ "terms": terms, "steps": steps })
    }

    /// The `[step][term]` curves of a fixture's `field` (see [`curves_json`]), in `terms`'
    /// order; panics naming what is missing.
    pub fn read_curves(f: &serde_json::Value, field: &str, terms: &[&str]) -> Vec<Vec<f64>> {
        let c = &f[field];
        let names: Vec<&str> = c["terms"]
            .as_array()
            .unwrap_or_else(|| panic!("fixture has no {field}.terms"))
            .iter()
            .map(|v| v.as_str().unwrap_or(""))
            .collect();
        let idx: Vec<usize> = terms
            .iter()
            .map(|t| {
                names
                    .iter()
                    .position(|n| n == t)
                    .unwrap_or_else(|| panic!("term {t} not in the fixture's {field}"))
            })
            .collect();
        c["steps"]
            .as_array()
            .unwrap_or_else(|| panic!("fixture has no {field}.steps"))
            .iter()
            .map(|row| {
                idx.iter()
                    .map(|&i| row[i].as_f64().expect("a number in the fixture's curve"))
                    .collect()
            })
            .collect()
    }

    /// `|a − b| ≤ atol + rtol·|b|`, else a panic naming `what`.
    pub fn assert_near(a: f64, b: f64, rtol: f64, atol: f64, what: &str) {
        assert!(
            (a - b).abs() <= atol + rtol * b.abs(),
            "{what}: ours {a} vs official {b}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::official::*;
    use tch::{Kind, Tensor};

    #[test]
    fn a_rounding_perturbation_is_one_float32_ulp_at_most() {
        let v = Tensor::linspace(1.0, 2.0, 1000, (Kind::Float, tch::Device::Cpu));
        let before = v.copy();
        perturb_rounding(&[v.shallow_clone()], 7);
        let rel = ((&v - &before) / &before).abs();
        let max = rel.max().double_value(&[]);
        // the factor and the product each round once in float32
        assert!(max > 0.0 && max <= 2f64.powi(-22), "{max}");
        // same seed, same perturbation
        let w = before.copy();
        perturb_rounding(&[w.shallow_clone()], 7);
        assert_eq!(w, v);
    }

    #[test]
    fn the_step_bar_grows_with_the_measured_drift_and_catches_a_real_gap() {
        let official: Vec<Vec<f64>> = (0..50).map(|k| vec![5.0 - 0.01 * k as f64]).collect();
        // fp32 drift of ours growing 1e-7 → 1e-5 over the steps
        let drift = |k: usize| 1e-7 * 1.1f64.powi(k as i32);
        let perturbed: Vec<Vec<f64>> = official
            .iter()
            .enumerate()
            .map(|(k, r)| vec![r[0] + drift(k)])
            .collect();
        let close: Vec<Vec<f64>> = official
            .iter()
            .enumerate()
            .map(|(k, r)| vec![r[0] - 3.0 * drift(k)])
            .collect();
        let worst = check_steps("close", &["loss"], &close, &official, &perturbed);
        assert!(worst <= 1.0);
        assert_eq!(drift_bound(1, 5.0, 0.0), 5e-5);
        // a gap of the size of a learning-rate step (1e-3) from step 10 on is outside the bar
        let gapped: Vec<Vec<f64>> = official
            .iter()
            .enumerate()
            .map(|(k, r)| vec![r[0] + if k >= 10 { 1e-3 } else { 0.0 }])
            .collect();
        let gapped_perturbed: Vec<Vec<f64>> = gapped
            .iter()
            .enumerate()
            .map(|(k, r)| vec![r[0] + drift(k)])
            .collect();
        let r = std::panic::catch_unwind(|| {
            check_steps("gapped", &["loss"], &gapped, &official, &gapped_perturbed)
        });
        assert!(r.is_err());
        let w = Tensor::from_slice(&[3.0f64, 4.0]);
        let near = &w * (1.0 + 1e-7);
        let row = WeightRow::new("w", "g", &near, &w, Ok(&w));
        assert!((row.diff - 1e-7).abs() < 1e-8 && (row.drift - 1e-7).abs() < 1e-8);
        check_weights(
            "weights",
            10,
            std::slice::from_ref(&row),
            8.0 * 2f64.powi(-23),
        );
        let far = WeightRow::new("w", "g", &(&w * 1.01), &(&w * 1.01), Err(5.0));
        assert!(std::panic::catch_unwind(|| check_weights("far", 10, &[far], 1e-5)).is_err());
        let j = curves_json(&["a", "loss"], &[vec![1.0, 2.0], vec![3.0, 4.0]]);
        let f = serde_json::json!({ "curves": j });
        assert_eq!(
            read_curves(&f, "curves", &["loss"]),
            vec![vec![2.0], vec![4.0]]
        );
    }
}
