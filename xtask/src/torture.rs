//! `cargo xtask torture [--quick]`: fault injection against the real training binary (the core
//! example `contrast-toy`, which runs the same `Trainer`, checkpointer and guard as every
//! method), then `RELIABILITY.md` with one row per case: what was tried, how many times, how
//! many survived, what was lost.
//!
//! Cases: `kill -9` at random moments (with the checkpoint write stretched by
//! `CONTRAST_FAULT_PAUSE_MS`, so that many kills land inside a write), each followed by
//! `--resume`, and the finished run compared bit for bit with an uninterrupted one; a full disk
//! (an injected `ENOSPC` at the n-th checkpoint write, and a real one on a small tmpfs where
//! this machine lets us mount one); NaN / Inf injected at random steps into loss terms, inputs
//! and gradients, and lr spikes; a bit-flipped newest
//! checkpoint. The hooks are in `contrast_core::train::fault`.

use crate::util::{cargo, repo_root, step};
use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args, Debug, Default)]
pub struct TortureArgs {
    /// The CI form: fewer kills (10) and a shorter run.
    #[arg(long)]
    pub quick: bool,
    /// Kills for the kill -9 case (default 60, quick 10).
    #[arg(long)]
    pub kills: Option<usize>,
    /// Write the table here (default RELIABILITY.md at the repository root; quick runs print
    /// it only unless this is given).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the kill times.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `RELIABILITY.md` from this line on belongs to `cargo xtask fuzz`; torture keeps it.
pub const FUZZ_MARKER: &str = "<!-- fuzzing -->";

/// Named byte blobs (tensor files, or a data set's files).
type Blobs = Vec<(String, Vec<u8>)>;
/// What must be bit-identical between two runs: the final checkpoint's tensor files and the
/// metrics lines without wall times.
type Fingerprint = (Blobs, Vec<String>);

/// One row of the table.
struct Row {
    case: String,
    tried: usize,
    survived: usize,
    lost: String,
    notes: String,
}

/// A small deterministic generator for the kill times (SplitMix64).
struct Mix(u64);
impl Mix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Toy {
    bin: PathBuf,
    runs: PathBuf,
    steps: u64,
}

impl Toy {
    fn cmd(&self, name: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["pretrain", "--preset", "toy", "--runs-dir"])
            .arg(&self.runs)
            .args(["--name", name, "--threads", "1", "--device", "cpu"])
            .args(["--set", &format!("steps={}", self.steps)])
            .args([
                "--set",
                "log.checkpoint_every=5",
                "--set",
                "log.log_every=5",
            ])
            .args(["--set", "log.keep_checkpoints=3"])
            .args(extra)
            .current_dir(repo_root());
        c
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.runs.join("toy").join(name)
    }

    /// Run to completion; `(success, stderr)`.
    fn run(&self, name: &str, extra: &[&str], env: &[(&str, String)]) -> Result<(bool, String)> {
        let mut c = self.cmd(name, extra);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c
            .output()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        Ok((
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ))
    }
}

/// The final checkpoint's tensor files and the metrics lines without wall times: what must be
/// bit-identical between an interrupted and an uninterrupted run.
fn fingerprint(run: &Path, steps: u64) -> Result<Fingerprint> {
    let ck = run.join("checkpoints").join(format!("step-{steps:08}"));
    let mut files = Vec::new();
    for e in std::fs::read_dir(&ck).with_context(|| format!("reading {}", ck.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            files.push((name, std::fs::read(&p)?));
        }
    }
    files.sort();
    ensure!(!files.is_empty(), "{} holds no tensors", ck.display());
    let text = std::fs::read_to_string(run.join("metrics.jsonl"))?;
    let mut lines = Vec::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut v: serde_json::Value =
            serde_json::from_str(l).with_context(|| format!("metrics line `{l}`"))?;
        if let Some(o) = v.as_object_mut() {
            o.remove("elapsed_s");
        }
        lines.push(v.to_string());
    }
    Ok((files, lines))
}

/// The interrupted writes (`.tmp-*` entries) in a run's checkpoint folder.
fn leftovers(run: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(run.join("checkpoints"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

pub fn torture(a: &TortureArgs) -> Result<()> {
    let t0 = Instant::now();
    let kills = a.kills.unwrap_or(if a.quick { 10 } else { 60 });
    let steps = if a.quick { 60 } else { 120 };
    step("torture: building contrast-toy (release)");
    cargo(&[
        "build",
        "--release",
        "-p",
        "contrast-core",
        "--bin",
        "contrast-toy",
    ])?;
    let work = repo_root().join("target/torture");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    let toy = Toy {
        bin: repo_root().join("target/release/contrast-toy"),
        runs: work.join("runs"),
        steps,
    };
    let mut rows = Vec::new();

    step(&format!(
        "torture: reference run ({steps} steps, uninterrupted)"
    ));
    let (ok, err) = toy.run("reference", &[], &[])?;
    ensure!(ok, "the reference run failed:\n{err}");
    let reference = fingerprint(&toy.dir("reference"), steps)?;

    rows.push(kill_case(&toy, &reference, kills, a.seed)?);
    rows.push(disk_full_injected(&toy, &reference)?);
    rows.push(write_error_injected(
        &toy,
        &reference,
        30,
        "erofs",
        "Read-only file system",
        "file system read-only while writing a checkpoint (EROFS injected at the 3rd write)",
    )?);
    rows.push(write_error_injected(
        &toy,
        &reference,
        13,
        "eacces",
        "Permission denied",
        "permission denied while writing a checkpoint (EACCES injected at the 3rd write)",
    )?);
    rows.push(other_write_failed(&toy, &reference, "metrics")?);
    rows.push(other_write_failed(&toy, &reference, "report")?);
    rows.push(disk_full_tmpfs(&toy, &work)?);
    rows.push(numerics_case(
        &toy,
        &reference,
        if a.quick { 7 } else { 21 },
        a.seed,
    )?);
    rows.push(corrupt_case(&toy, &reference)?);
    rows.push(download_case(&work, if a.quick { 6 } else { 30 }, a.seed)?);

    let wall = t0.elapsed().as_secs_f64();
    let md = table(&rows, a, kills, steps, wall);
    println!("\n{md}");
    let out = match (&a.out, a.quick) {
        (Some(p), _) => Some(p.clone()),
        (None, false) => Some(repo_root().join("RELIABILITY.md")),
        (None, true) => None,
    };
    if let Some(p) = out {
        // keep what other commands wrote below the marker (the fuzzing figures)
        let kept = std::fs::read_to_string(&p)
            .ok()
            .and_then(|old| old.find(FUZZ_MARKER).map(|i| old[i..].to_string()))
            .unwrap_or_default();
        let text = if kept.is_empty() {
            md.clone()
        } else {
            format!("{md}\n{kept}")
        };
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        println!("wrote {}", p.display());
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| r.survived < r.tried).collect();
    if !failed.is_empty() {
        bail!(
            "torture: {} case(s) lost something: {}",
            failed.len(),
            failed
                .iter()
                .map(|r| r.case.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("torture: every case survived ({wall:.0} s)");
    Ok(())
}

/// `kill -9` at random moments, `--resume` after each, then the finished run against the
/// uninterrupted one.
fn kill_case(toy: &Toy, reference: &Fingerprint, kills: usize, seed: u64) -> Result<Row> {
    step(&format!(
        "torture: kill -9 at random moments ({kills} kills)"
    ));
    // how long one run takes here, to spread the kill times over it
    let t = Instant::now();
    let (ok, err) = toy.run("timing", &[], &[("CONTRAST_FAULT_PAUSE_MS", "100".into())])?;
    ensure!(ok, "the timing run failed:\n{err}");
    let span = t.elapsed().as_secs_f64();
    let mut rng = Mix(seed);
    let name = "killed";
    let (mut in_write, mut killed, mut set_aside, mut finished_early, mut cleaned) =
        (0, 0, 0, 0, 0);
    let mut resume_failures = Vec::new();
    let mut attempts = 0;
    while killed < kills {
        attempts += 1;
        ensure!(
            attempts < kills * 4,
            "the kill loop made no progress after {attempts} attempts"
        );
        // up to 60 % of a whole run: each resumed piece restarts the process (library load),
        // so the run still advances between kills
        let delay = 0.05 + rng.next_f64() * 0.6 * span;
        let before = leftovers(&toy.dir(name));
        let mut c = toy.cmd(name, &["--resume"]);
        c.env("CONTRAST_FAULT_PAUSE_MS", "100")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().context("starting the toy run")?;
        let stderr = child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut e) = stderr {
                use std::io::Read;
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        // every other kill waits for a checkpoint write of this process to begin (a new
        // `.tmp-` folder) and lands 0–80 ms into its 100 ms window; the others at a random time
        let in_write_target = attempts % 2 == 0;
        let deadline = Instant::now()
            + Duration::from_secs_f64(if in_write_target { 1.5 * span } else { delay });
        let mut status = None;
        while Instant::now() < deadline {
            if let Some(s) = child.try_wait()? {
                status = Some(s);
                break;
            }
            if in_write_target && !leftovers(&toy.dir(name)).is_subset(&before) {
                std::thread::sleep(Duration::from_secs_f64(rng.next_f64() * 0.08));
                break;
            }
            std::thread::sleep(Duration::from_millis(if in_write_target { 1 } else { 5 }));
        }
        match status {
            Some(s) => {
                let text = reader.join().unwrap_or_default();
                if !s.success() {
                    resume_failures.push(text.lines().last().unwrap_or("").to_string());
                }
                if text.contains("skipping checkpoint") {
                    set_aside += 1;
                }
                finished_early += 1;
                // the run finished before the kill: start it over (same name, fresh folder)
                // so that the remaining kills still hit a run in progress
                if s.success() {
                    check_identical(toy, name, reference, "kill -9 (finished before its kill)")?;
                    std::fs::remove_dir_all(toy.dir(name))?;
                }
            }
            None => {
                child.kill()?; // SIGKILL
                child.wait()?;
                let text = reader.join().unwrap_or_default();
                if text.contains("skipping checkpoint") {
                    set_aside += 1;
                }
                if text.contains("checkpoints: removed") || text.contains("checkpoints: restored") {
                    cleaned += 1;
                }
                killed += 1;
                // a write of this process was cut: a new `.tmp-` entry
                if !leftovers(&toy.dir(name)).is_subset(&before) {
                    in_write += 1;
                }
            }
        }
    }
    // finish the run
    let (ok, err) = toy.run(name, &["--resume"], &[])?;
    if !ok {
        resume_failures.push(err.lines().last().unwrap_or("").to_string());
    }
    let identical = ok && check_identical(toy, name, reference, "kill -9").is_ok();
    ensure!(
        resume_failures.is_empty(),
        "resumes failed after a kill: {resume_failures:?}"
    );
    Ok(Row {
        case: "`kill -9` at random moments of a training run, then `--resume`".into(),
        tried: killed,
        survived: if identical { killed } else { 0 },
        lost: if identical {
            "nothing: final weights, optimiser state and metrics lines bit-identical to the uninterrupted run".into()
        } else {
            "the final state differs from the uninterrupted run".into()
        },
        notes: format!(
            "{in_write} kills landed inside a checkpoint write (a new `.tmp-` folder left behind; each write stretched by 100 ms; every other kill aims at one, the rest at a random moment); {cleaned} restarts cleaned up an interrupted write before resuming; {set_aside} resumes had to set a corrupt checkpoint aside; {finished_early} pieces finished before their kill"
        ),
    })
}

fn check_identical(toy: &Toy, name: &str, reference: &Fingerprint, what: &str) -> Result<()> {
    let got = fingerprint(&toy.dir(name), toy.steps)?;
    for ((n, a), (_, b)) in got.0.iter().zip(&reference.0) {
        ensure!(a == b, "{what}: {n} differs from the uninterrupted run");
    }
    ensure!(
        got.0.len() == reference.0.len(),
        "{what}: tensor files differ"
    );
    ensure!(
        got.1 == reference.1,
        "{what}: metrics.jsonl differs from the uninterrupted run ({} vs {} lines)",
        got.1.len(),
        reference.1.len()
    );
    Ok(())
}

/// An error injected at the third checkpoint write (`ENOSPC`, `EROFS` or `EACCES`): the error
/// names the path and the system's reason, the earlier checkpoints stay intact, and the run
/// resumes once the disk is writable again.
fn disk_full_injected(toy: &Toy, reference: &Fingerprint) -> Result<Row> {
    write_error_injected(
        toy,
        reference,
        28,
        "enospc",
        "No space left on device",
        "disk full while writing a checkpoint (ENOSPC injected at the 3rd write)",
    )
}

fn write_error_injected(
    toy: &Toy,
    reference: &Fingerprint,
    errno: u32,
    name: &str,
    reason: &str,
    case: &str,
) -> Result<Row> {
    step(&format!("torture: {case}"));
    let (ok, err) = toy.run(
        name,
        &[],
        &[
            ("CONTRAST_FAULT_FAIL_WRITE", "3".into()),
            ("CONTRAST_FAULT_FAIL_ERRNO", errno.to_string()),
        ],
    )?;
    ensure!(!ok, "the run with a failing checkpoint write succeeded");
    let named = err.contains(reason) && err.contains("step-00000015");
    let (ok2, err2) = toy.run(name, &["--resume"], &[])?;
    ensure!(
        ok2,
        "resume after the failed write ({case}) failed:\n{err2}"
    );
    let same = check_identical(toy, name, reference, case).is_ok();
    let resumed_at_10 = err2.contains("at step 10/");
    Ok(Row {
        case: case.into(),
        tried: 1,
        survived: usize::from(named && same && resumed_at_10),
        lost: if same {
            "the 5 steps after the last checkpoint (recomputed on resume)".into()
        } else {
            "final state differs".into()
        },
        notes: format!(
            "error names the path: {}; resumed from step 10: {resumed_at_10}; finished bit-identical: {same}",
            if named { "yes" } else { "NO" }
        ),
    })
}

/// A full disk while writing `metrics.jsonl` (the 5th line, step 25, torn in half; the last
/// checkpoint is step 20) or
/// `report.json` (after the last step): the error names the file, the checkpoints stay, and
/// `--resume` finishes bit-identical (dropping the torn line; for the report, from the final
/// checkpoint: evaluation and report only).
fn other_write_failed(toy: &Toy, reference: &Fingerprint, file: &str) -> Result<Row> {
    let (nth, target, resume_at, case) = match file {
        "metrics" => (
            "5",
            "metrics.jsonl",
            "20",
            "disk full while appending to `metrics.jsonl` (ENOSPC injected at the 5th line, half of it written)",
        ),
        _ => (
            "1",
            "report.json",
            "",
            "disk full while writing `report.json` after the last step (ENOSPC injected)",
        ),
    };
    step(&format!("torture: {case}"));
    let name = format!("full-{file}");
    let (ok, err) = toy.run(
        &name,
        &[],
        &[
            ("CONTRAST_FAULT_FAIL_FILE", file.into()),
            ("CONTRAST_FAULT_FAIL_WRITE", nth.into()),
        ],
    )?;
    ensure!(!ok, "the run with a failing {target} write succeeded");
    let named = err.contains("No space left on device") && err.contains(target);
    let (ok2, err2) = toy.run(&name, &["--resume"], &[])?;
    ensure!(
        ok2,
        "resume after the failed write ({case}) failed:\n{err2}"
    );
    let same = check_identical(toy, &name, reference, case).is_ok();
    let resumed = match file {
        "metrics" => format!("at step {resume_at}/"),
        _ => format!("at step {}/", toy.steps),
    };
    let resumed_ok = err2.contains(&resumed)
        && (file != "metrics" || err2.contains("dropping the last line"))
        && toy.dir(&name).join("report.json").is_file();
    Ok(Row {
        case: case.into(),
        tried: 1,
        survived: usize::from(named && same && resumed_ok),
        lost: match file {
            "metrics" => "the steps after the last checkpoint (recomputed on resume)".into(),
            _ => "nothing: the resume evaluates from the final checkpoint".into(),
        },
        notes: format!(
            "error names the path: {}; {}; finished bit-identical with its report: {same}",
            if named { "yes" } else { "NO" },
            match file {
                "metrics" => format!("resumed from step 20, dropping the torn line: {resumed_ok}"),
                _ => format!("resumed at the final step and wrote the report: {resumed_ok}"),
            }
        ),
    })
}

/// A real full disk: the run folder on a 72 KiB tmpfs (root only; skipped with a line
/// otherwise).
fn disk_full_tmpfs(toy: &Toy, work: &Path) -> Result<Row> {
    step("torture: disk full for real (run folder on a 72 KiB tmpfs)");
    let mnt = work.join("tmpfs");
    std::fs::create_dir_all(&mnt)?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=72k", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!(
            "skipped: cannot mount a tmpfs here (needs root); the injected-ENOSPC case stands in"
        );
        return Ok(Row {
            case: "disk full for real (tmpfs)".into(),
            tried: 0,
            survived: 0,
            lost: "–".into(),
            notes: "skipped: mounting a tmpfs needs root".into(),
        });
    }
    let small = Toy {
        bin: toy.bin.clone(),
        runs: mnt.clone(),
        steps: toy.steps,
    };
    let r = (|| -> Result<Row> {
        let (ok, err) = small.run("full", &[], &[])?;
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let named =
            err.contains("No space left on device") && err.contains(&mnt.display().to_string());
        let cks: Vec<String> = std::fs::read_dir(small.dir("full").join("checkpoints"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("step-"))
                    .collect()
            })
            .unwrap_or_default();
        // once space is back: the same run folder copied to a roomy disk resumes
        let roomy = work.join("runs");
        let dest = roomy.join("toy").join("full-moved");
        copy_dir(&small.dir("full"), &dest)?;
        let moved = Toy {
            bin: toy.bin.clone(),
            runs: roomy,
            steps: toy.steps,
        };
        let (ok2, err2) = moved.run("full-moved", &["--resume"], &[])?;
        Ok(Row {
            case: "disk full for real while training (run folder on a 72 KiB tmpfs)".into(),
            tried: 1,
            survived: usize::from(!ok && named && ok2),
            lost: "the steps after the last checkpoint that fit".into(),
            notes: format!(
                "stopped with: `{}`; checkpoints left intact: {}; resumed on a roomy disk: {}",
                last.chars().take(160).collect::<String>(),
                cks.len(),
                if ok2 {
                    "yes".to_string()
                } else {
                    format!("NO ({})", err2.lines().last().unwrap_or(""))
                }
            ),
        })
    })();
    let _ = Command::new("umount").arg(&mnt).status();
    r
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let p = e.path();
        let q = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &q)?;
        } else {
            std::fs::copy(&p, &q)?;
        }
    }
    Ok(())
}

/// One kind of numerical fault: `{s}` in `env` and `expect` is the injection step.
struct NumericFault {
    label: &'static str,
    /// Environment of the faulty run (`contrast_core::train::fault`).
    env: &'static [(&'static str, &'static str)],
    /// Extra arguments of the faulty run and of its resume.
    args: &'static [&'static str],
    /// What the error must contain.
    expect: &'static str,
    /// The fault surfaces in a later step's loss (an lr spike), not in its own.
    later: bool,
    /// Injection steps are drawn from `first ..= steps - last_gap`.
    first: u64,
    last_gap: u64,
}

/// The kinds of numerical fault [`numerics_case`] injects, in turn.
const NUMERIC_FAULTS: &[NumericFault] = &[
    NumericFault {
        label: "NaN loss term",
        env: &[("CONTRAST_FAULT_NAN_STEP", "{s}")],
        args: &[],
        expect: "info_nce = NaN",
        later: false,
        first: 1,
        last_gap: 0,
    },
    NumericFault {
        label: "+Inf loss term",
        env: &[
            ("CONTRAST_FAULT_NAN_STEP", "{s}"),
            ("CONTRAST_FAULT_VALUE", "inf"),
        ],
        args: &[],
        expect: "info_nce = inf",
        later: false,
        first: 1,
        last_gap: 0,
    },
    NumericFault {
        label: "NaN in the batch's input",
        env: &[("CONTRAST_FAULT_INPUT_STEP", "{s}")],
        args: &[],
        expect: "the batch's input holds NaN or Inf: `view1`",
        later: false,
        first: 1,
        last_gap: 0,
    },
    NumericFault {
        label: "NaN gradient",
        env: &[("CONTRAST_FAULT_GRAD_STEP", "{s}")],
        args: &[],
        expect: "non-finite gradient at step {s}: `model/",
        later: false,
        first: 1,
        last_gap: 0,
    },
    NumericFault {
        label: "-Inf gradient",
        env: &[
            ("CONTRAST_FAULT_GRAD_STEP", "{s}"),
            ("CONTRAST_FAULT_VALUE", "-inf"),
        ],
        args: &[],
        expect: "non-finite gradient at step {s}: `model/",
        later: false,
        first: 1,
        last_gap: 0,
    },
    // the weights overflow and the next step's loss is NaN (a spike at the last step is seen by
    // no loss, so it is not drawn)
    NumericFault {
        label: "lr spike ×1e30",
        env: &[("CONTRAST_FAULT_LR_STEP", "{s}")],
        args: &[],
        expect: "info_nce = NaN",
        later: true,
        first: 1,
        last_gap: 1,
    },
    // every value stays finite (the toy's loss jumps from about 1.2 to 4.7 and stays there):
    // only the opt-in loss-spike guard sees it, once it has 10 steps of history
    NumericFault {
        label: "lr spike ×1000 (all finite) with `runtime.loss_spike = 1`",
        env: &[
            ("CONTRAST_FAULT_LR_STEP", "{s}"),
            ("CONTRAST_FAULT_LR_FACTOR", "1000"),
        ],
        args: &["--set", "runtime.loss_spike=1"],
        expect: "loss spike at step",
        later: true,
        first: 10,
        last_gap: 1,
    },
];

/// The step a guard error names (`… at step N…`).
fn stop_step(err: &str) -> Option<u64> {
    let i = err.find(" at step ")? + " at step ".len();
    let digits: String = err[i..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The checkpoint a guard error names as the last good one (`None` when there was none yet).
fn last_good(err: &str) -> Option<PathBuf> {
    let i = err.find("the last good checkpoint is ")? + "the last good checkpoint is ".len();
    let rest = &err[i..];
    let end = rest.find([' ', ':', '\n']).unwrap_or(rest.len());
    let p = &rest[..end];
    (p != "none").then(|| PathBuf::from(p))
}

/// NaN / ±Inf injected at random steps into a loss term, the batch's input and a gradient, and
/// lr spikes: each run must stop at the fault (the spike: at the first non-finite step after
/// it), naming the step and the term, input or parameter and a last good checkpoint that is
/// older than the fault and verifies; `--resume` (fault gone) must then finish bit-identical
/// to the uninterrupted run.
fn numerics_case(toy: &Toy, reference: &Fingerprint, n: usize, seed: u64) -> Result<Row> {
    step(&format!(
        "torture: {n} numerical faults at random steps (NaN / Inf in loss, input, gradient; lr spikes)"
    ));
    let mut rng = Mix(seed ^ 0x6e75_6d65_7269_6373);
    let (mut survived, mut aside, mut failures) = (0, 0, Vec::new());
    let mut delays = Vec::new();
    let mut kinds = Vec::new();
    for i in 0..n {
        let f = &NUMERIC_FAULTS[i % NUMERIC_FAULTS.len()];
        let label = f.label;
        let span = toy.steps - f.last_gap - f.first + 1;
        let s = f.first + (rng.next_f64() * span as f64) as u64 % span;
        let env: Vec<(&str, String)> = f
            .env
            .iter()
            .map(|(k, v)| (*k, v.replace("{s}", &s.to_string())))
            .collect();
        let expect = f.expect.replace("{s}", &s.to_string());
        let name = format!("numeric-{i:02}");
        let (ok, err) = toy.run(&name, f.args, &env)?;
        let stopped = stop_step(&err).filter(|_| !ok);
        let at_fault = match stopped {
            Some(t) if f.later => t > s,
            Some(t) => t == s,
            None => false,
        };
        // the checkpoint named as the last good one is older than the fault, and the resume
        // (which verifies every file's SHA-256) starts from it
        let good = last_good(&err).map(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.strip_prefix("step-"))
                .and_then(|f| f.parse::<u64>().ok())
        });
        if err.contains("set aside as") {
            aside += 1;
        }
        let resume: Vec<&str> = f.args.iter().copied().chain(["--resume"]).collect();
        let (ok2, err2) = toy.run(&name, &resume, &[])?;
        let good_ok = match good {
            Some(Some(g)) => g < s && err2.contains(&format!("at step {g}/")),
            Some(None) => false,
            None => err.contains("the last good checkpoint is none") && !err2.contains("resumed "),
        };
        let same = ok2 && check_identical(toy, &name, reference, label).is_ok();
        let named = err.contains(&expect);
        if at_fault && named && good_ok && same {
            survived += 1;
            if let (true, Some(t)) = (f.later, stopped) {
                delays.push(t - s);
            }
        } else {
            failures.push(format!(
                "{label} at step {s}: stopped {stopped:?}, named {named}, last good {good_ok}, resumed bit-identical {same}{}",
                if ok2 { String::new() } else { format!(" ({})", err2.lines().last().unwrap_or("")) }
            ));
        }
        kinds.push(format!("{label} ({s})"));
    }
    ensure!(
        failures.is_empty() || survived > 0,
        "every numerical fault was lost: {}",
        failures.join("; ")
    );
    Ok(Row {
        case: "NaN / ±Inf injected at random steps into a loss term, the batch's input or a gradient; lr spikes ×1e30, and ×1000 under the loss-spike guard".into(),
        tried: n,
        survived,
        lost: "the steps since the last good checkpoint (recomputed on resume)".into(),
        notes: format!(
            "injected (step): {}. Each stop named the step and the term, input or parameter, and a last good checkpoint older than the fault that verifies; \
             {aside} newest checkpoints written right before the fault were set aside; lr spikes stopped {} step(s) after the spike; \
             each `--resume` finished bit-identical{}",
            kinds.join(", "),
            delays.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
            if failures.is_empty() { String::new() } else { format!(". LOST: {}", failures.join("; ")) }
        ),
    })
}

/// The newest checkpoint bit-flipped after a stop: resume sets it aside and continues from the
/// one before, bit-identical at the end.
fn corrupt_case(toy: &Toy, reference: &Fingerprint) -> Result<Row> {
    step("torture: newest checkpoint bit-flipped, then --resume");
    let name = "flipped";
    let (ok, err) = toy.run(name, &["--stop-at", "30"], &[])?;
    ensure!(ok, "the stopped run failed:\n{err}");
    let f = toy
        .dir(name)
        .join("checkpoints/step-00000030/model.safetensors");
    let mut b = std::fs::read(&f)?;
    let i = b.len() - 7;
    b[i] ^= 0x10;
    std::fs::write(&f, b)?;
    let (ok2, err2) = toy.run(name, &["--resume"], &[])?;
    let set_aside = err2.contains("is corrupt: SHA-256")
        && err2.contains("kept as")
        && err2.contains("at step 25/");
    let same = ok2 && check_identical(toy, name, reference, "bit flip").is_ok();
    Ok(Row {
        case: "one bit flipped in the newest checkpoint, then `--resume`".into(),
        tried: 1,
        survived: usize::from(set_aside && same),
        lost: "the 5 steps of the corrupt checkpoint (recomputed)".into(),
        notes: format!(
            "SHA-256 mismatch named and the checkpoint set aside, resumed from step 25: {set_aside}; bit-identical at the end: {same}"
        ),
    })
}

fn table(rows: &[Row], a: &TortureArgs, kills: usize, steps: u64, wall: f64) -> String {
    let mut s = String::from(
        "# Reliability\n\nWhat the training harness survives, measured by `cargo xtask torture` against the real\n\
         binary of the core example (`contrast-toy`: the same `Trainer`, checkpointer, resume and NaN guard\n\
         that every method runs). Faults are injected through `contrast_core::train::fault`\n\
         (environment variables, no-ops when unset) or for real (SIGKILL, a full tmpfs).\n\n",
    );
    s.push_str("| case | tried | survived | lost | notes |\n|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.case, r.tried, r.survived, r.lost, r.notes
        ));
    }
    s.push_str(&format!(
        "\nCommand: `cargo xtask torture{}{}` (seed {}; {kills} kills; toy runs of {steps} steps, a checkpoint every 5 steps, \
         1 thread, CPU), {wall:.0} s wall on a {}, {}.\n\
         `cargo xtask torture --quick` (10 kills, 60 steps) runs in CI.\n\n\
         The parsers' fuzzing is `cargo xtask fuzz` (its section follows); kills of `claires index`\n\
         and the search server's checks and load are measured by hand (the last section).\n",
        if a.quick { " --quick" } else { "" },
        a.kills.map(|k| format!(" --kills {k}")).unwrap_or_default(),
        a.seed,
        crate::util::machine(),
        today(),
    ));
    s
}

fn today() -> String {
    Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The synthetic data set of the download case: a tar.gz of many small random files (so that
/// extraction takes a while) and a plain file, as `(archive, plain, files inside the archive)`.
fn download_fixture(n: usize, seed: u64) -> Result<(Vec<u8>, Vec<u8>, Blobs)> {
    let mut rng = Mix(seed ^ 0xD0);
    let mut bytes =
        |len: usize| -> Vec<u8> { (0..len).map(|_| (rng.next_f64() * 256.0) as u8).collect() };
    let files: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| (format!("data/{:03}/{i:05}.bin", i % 37), bytes(8 << 10)))
        .collect();
    let plain = bytes(3 << 20);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (p, b) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_size(b.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, p, b.as_slice())?;
    }
    let archive = tar.into_inner()?.finish()?;
    Ok((archive, plain, files))
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(b))
}

/// `remove_dir_all`, naming the folder; an absent folder is fine.
fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Whether the data set folder holds exactly the served content.
fn download_complete(dir: &Path, plain: &[u8], files: &[(String, Vec<u8>)]) -> bool {
    std::fs::read(dir.join("plain.bin")).is_ok_and(|b| b == plain)
        && files
            .iter()
            .all(|(p, b)| std::fs::read(dir.join(p)).is_ok_and(|got| &got == b))
}

/// `kill -9` of `cargo xtask download` at random moments, during the transfers (a slow
/// 127.0.0.1 server) and during extraction; after each kill, a data set marked verified must be
/// complete; at the end a plain rerun must finish with every byte right.
fn download_case(work: &Path, kills: usize, seed: u64) -> Result<Row> {
    step(&format!(
        "torture: kill -9 of `download` during transfer and extraction ({kills} kills)"
    ));
    let (archive, plain, files) = download_fixture(1500, seed)?;
    let mut served = std::collections::HashMap::new();
    served.insert("t/archive.tar.gz".to_string(), archive.clone());
    served.insert("t/plain.bin".to_string(), plain.clone());
    let server = crate::test_server::Server::start_for(
        served,
        crate::test_server::Behaviour {
            ranges: true,
            chunk_delay: Duration::from_millis(8),
            ..Default::default()
        },
        Duration::from_secs(1800),
    );
    let manifest = work.join("torture-data.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"name = "torture-data"
title = "torture fixture"
homepage = "http://127.0.0.1/"
license = "test"
citation = "none"

[[files]]
path = "archive.tar.gz"
urls = ["{}"]
size = {}
sha256 = "{}"
extract = "tar.gz"

[[files]]
path = "plain.bin"
urls = ["{}"]
size = {}
sha256 = "{}"

[layout]
paths = ["data/", "plain.bin", "{}"]
"#,
            server.url("t/archive.tar.gz"),
            archive.len(),
            sha256_hex(&archive),
            server.url("t/plain.bin"),
            plain.len(),
            sha256_hex(&plain),
            files.last().map_or("data/", |f| f.0.as_str()),
        ),
    )?;
    let root = work.join("data");
    let dir = root.join("torture-data");
    // a copy of this very binary: `cargo` re-links `target/debug/xtask` whenever it builds (as
    // CI's test runs do while `cargo xtask ci` runs), which leaves the running process's own
    // path deleted ("No such file or directory" when spawning it); /proc/self/exe stays readable
    let exe = work.join("xtask-download");
    let me = if Path::new("/proc/self/exe").exists() {
        PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe().context("the xtask binary")?
    };
    std::fs::copy(&me, &exe)
        .with_context(|| format!("copying {} to {}", me.display(), exe.display()))?;
    let cmd = || {
        let mut c = Command::new(&exe);
        c.args(["download", "--manifest"])
            .arg(&manifest)
            .arg("--data-dir")
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    // one clean run for the time span, then start over
    let t = Instant::now();
    let o = cmd()
        .output()
        .with_context(|| format!("starting {}", exe.display()))?;
    ensure!(
        o.status.success(),
        "the download fixture failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    ensure!(
        download_complete(&dir, &plain, &files),
        "the clean download is incomplete"
    );
    let span = t.elapsed().as_secs_f64();
    remove_dir(&dir)?;
    let mut rng = Mix(seed ^ 0xD1);
    let (mut killed, mut attempts, mut false_complete, mut finished) = (0, 0, 0, 0);
    let (mut during_extraction, mut during_transfer) = (0, 0);
    while killed < kills {
        attempts += 1;
        ensure!(
            attempts < kills * 4,
            "the download kill loop made no progress"
        );
        let delay = 0.05 + rng.next_f64() * 0.9 * span;
        let mut child = cmd()
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let deadline = Instant::now() + Duration::from_secs_f64(delay);
        let mut done = None;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                done = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(status) = done {
            // finished before its kill: it must have finished the download
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            ensure!(
                status.success() && download_complete(&dir, &plain, &files),
                "a download that ended before its kill ({status}) left {} incomplete:\n{err}",
                dir.display()
            );
            finished += 1;
            remove_dir(&dir)?;
            continue;
        }
        child.kill()?;
        child.wait()?;
        killed += 1;
        if dir.join("data").exists() && !dir.join(".verified").exists() {
            during_extraction += 1;
        } else {
            during_transfer += 1;
        }
        // a data set marked verified must be whole
        if dir.join(".verified").exists() && !download_complete(&dir, &plain, &files) {
            false_complete += 1;
        }
    }
    let o = cmd()
        .output()
        .with_context(|| format!("starting {}", exe.display()))?;
    let whole = o.status.success() && download_complete(&dir, &plain, &files);
    let ok = whole && false_complete == 0;
    Ok(Row {
        case: "`kill -9` of `cargo xtask download` during transfer and extraction, then a rerun".into(),
        tried: killed,
        survived: if ok { killed } else { 0 },
        lost: if ok {
            "nothing: every file byte-identical to the served data after the rerun".into()
        } else {
            format!(
                "{false_complete} data sets marked verified while incomplete; final rerun complete: {whole}"
            )
        },
        notes: format!(
            "1500-file tar.gz ({:.1} MiB) + a 3 MiB file from a slow 127.0.0.1 server (8 ms per 64 KiB); {during_transfer} kills before extraction began, {during_extraction} during extraction or before the marker; {finished} runs finished before their kill",
            archive.len() as f64 / (1 << 20) as f64
        ),
    })
}
