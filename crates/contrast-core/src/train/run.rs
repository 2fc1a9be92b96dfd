//! The run directory: `runs/<method>/<run-name>/` with `config.toml`, `metrics.jsonl`,
//! `checkpoints/` and `report.json`.

use super::checkpoint::{write_atomic, Checkpoint, Checkpointer};
use super::metrics::MetricsLog;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// How to open a run directory.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Parent of all runs: `--runs-dir`, else `$CONTRAST_RUNS`, else `runs/` in the working dir.
    pub runs_root: PathBuf,
    pub method: String,
    pub name: String,
    /// Continue from the newest checkpoint that verifies instead of starting afresh (a newer
    /// one that fails its SHA-256 check is set aside as `.corrupt-step-N`, with a message).
    pub resume: bool,
    /// Resume from exactly this step's checkpoint (implies `resume`; an error if it is missing
    /// or corrupt).
    pub resume_from: Option<u64>,
    /// Checkpoints to keep.
    pub keep_checkpoints: usize,
}

impl RunOptions {
    pub fn new(method: &str, name: &str) -> Self {
        Self {
            runs_root: default_runs_root(),
            method: method.into(),
            name: name.into(),
            resume: false,
            resume_from: None,
            keep_checkpoints: 3,
        }
    }
}

/// `$CONTRAST_RUNS` or `runs`.
pub fn default_runs_root() -> PathBuf {
    std::env::var_os("CONTRAST_RUNS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("runs"))
}

/// The newest checkpoint that loads and verifies. A newer one that fails is renamed
/// `.corrupt-step-N` beside the others (kept, not deleted) with a message naming it and why, so
/// that `latest()` and later saves see only good checkpoints. `Ok(None)`: there is none at all;
/// an error when checkpoints exist but none verifies.
fn newest_that_verifies(checkpoints: &Checkpointer, dir: &Path) -> Result<Option<Checkpoint>> {
    let all = checkpoints.list()?;
    if all.is_empty() {
        return Ok(None);
    }
    let mut why = Vec::new();
    for (step, p) in all.into_iter().rev() {
        match Checkpointer::load(&p) {
            Ok(c) => {
                if !why.is_empty() {
                    eprintln!(
                        "resuming {} from step {step}, the newest checkpoint that verifies",
                        dir.display()
                    );
                }
                return Ok(Some(c));
            }
            Err(e) => {
                let aside = p.with_file_name(format!(".corrupt-step-{step:08}"));
                eprintln!(
                    "skipping checkpoint {} ({e:#}); kept as {}",
                    p.display(),
                    aside.display()
                );
                std::fs::rename(&p, &aside).with_context(|| {
                    format!("setting the corrupt checkpoint {} aside", p.display())
                })?;
                why.push(format!("step {step}: {e:#}"));
            }
        }
    }
    bail!(
        "cannot resume {}: no checkpoint verifies ({})",
        dir.display(),
        why.join("; ")
    )
}

/// An open run.
pub struct Run {
    pub dir: PathBuf,
    pub metrics: MetricsLog,
    pub checkpoints: Checkpointer,
    /// The checkpoint to resume from (verified), when resuming.
    pub resumed: Option<Checkpoint>,
}

impl Run {
    /// Open the run folder and write `config_toml` (the resolved config) as `config.toml`.
    ///
    /// A new run refuses a folder that already holds checkpoints (use `resume` or another
    /// name), so nothing already written is lost. A resumed run must have the same config.
    pub fn open(opts: &RunOptions, config_toml: &str) -> Result<Self> {
        let dir = opts.runs_root.join(&opts.method).join(&opts.name);
        let checkpoints = Checkpointer::new(dir.join("checkpoints"), opts.keep_checkpoints);
        for line in checkpoints.recover()? {
            eprintln!("checkpoints: {line}");
        }
        let existing = checkpoints.latest()?;
        let cfg_path = dir.join("config.toml");
        let resumed =
            if opts.resume || opts.resume_from.is_some() {
                if existing.is_some() {
                    if let Ok(old) = std::fs::read_to_string(&cfg_path) {
                        if old != config_toml {
                            bail!(
                                "cannot resume {}: its config.toml differs from this run's \
                             resolved config ({}); resume with the same preset and overrides",
                                dir.display(),
                                first_difference(&old, config_toml)
                            );
                        }
                    }
                }
                match opts.resume_from {
                    Some(step) => {
                        let Some((_, p)) =
                            checkpoints.list()?.into_iter().find(|(s, _)| *s == step)
                        else {
                            bail!(
                            "cannot resume {} from step {step}: no such checkpoint (saved: {:?})",
                            dir.display(),
                            checkpoints.list()?.iter().map(|(s, _)| *s).collect::<Vec<_>>()
                        );
                        };
                        Some(Checkpointer::load(&p).with_context(|| {
                            format!("cannot resume {} from {}", dir.display(), p.display())
                        })?)
                    }
                    None => newest_that_verifies(&checkpoints, &dir)?, // None: start afresh
                }
            } else {
                if let Some(p) = existing {
                    bail!(
                        "run folder {} already holds checkpoint {}: pass --resume to continue it, \
                     or choose another --name",
                        dir.display(),
                        p.display()
                    );
                }
                None
            };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        write_atomic(&cfg_path, config_toml.as_bytes())?;
        let metrics = MetricsLog::open(
            dir.join("metrics.jsonl"),
            resumed.as_ref().map(|c| c.state.step),
        )?;
        Ok(Self {
            dir,
            metrics,
            checkpoints,
            resumed,
        })
    }

    /// The step to start from (0, or the resumed checkpoint's step).
    pub fn start_step(&self) -> u64 {
        self.resumed.as_ref().map_or(0, |c| c.state.step)
    }

    /// A guard's error `e` at step `step` (1-based), with the last good checkpoint named. With
    /// `suspect_newest`, a newest checkpoint written right before this step (at `step - 1`, from
    /// the weights that produced the non-finite value) is set aside as `.suspect-step-N`, kept,
    /// when an older one exists: `--resume` then starts from the older one.
    pub fn stopped(&self, step: u64, e: anyhow::Error, suspect_newest: bool) -> anyhow::Error {
        let mut list = match self.checkpoints.list() {
            Ok(l) => l,
            Err(le) => return e.context(format!("run stopped; listing its checkpoints: {le:#}")),
        };
        let mut aside_note = String::new();
        if let (true, [.., _, (n, p)]) = (suspect_newest, list.as_slice()) {
            if n + 1 == step {
                let aside = p.with_file_name(format!(".suspect-step-{n:08}"));
                let _ = std::fs::remove_dir_all(&aside);
                match std::fs::rename(p, &aside) {
                    Ok(()) => {
                        aside_note = format!(
                            " (checkpoint {} was written from the weights that gave this step: \
                             set aside as {})",
                            p.display(),
                            aside.display()
                        );
                        list.pop();
                    }
                    Err(re) => {
                        aside_note = format!(
                            " (checkpoint {} was written from the weights that gave this step; \
                             setting it aside failed: {re})",
                            p.display()
                        )
                    }
                }
            }
        }
        e.context(format!(
            "run stopped; the last good checkpoint is {}{aside_note}",
            list.last()
                .map_or("none (no checkpoint was written yet)".into(), |(_, p)| {
                    p.display().to_string()
                })
        ))
    }

    /// Write `report.json` atomically, then draw the run's curves from `metrics.jsonl` into
    /// `plots/` (SVG + PNG; `cargo xtask report <run>` redraws them at any time). A plotting
    /// failure is reported as a warning: it never costs the run its report.
    pub fn write_report(&self, report: &serde_json::Value) -> Result<PathBuf> {
        let p = self.dir.join("report.json");
        super::fault::fail_write_of(super::fault::Written::Report)
            .with_context(|| format!("writing {}", p.display()))?;
        write_atomic(&p, &serde_json::to_vec_pretty(report)?)?;
        if let Err(e) = contrast_report::run_plots(&self.dir) {
            eprintln!("warning: curves of {} not drawn: {e:#}", self.dir.display());
        }
        Ok(p)
    }
}

fn first_difference(a: &str, b: &str) -> String {
    for (la, lb) in a.lines().zip(b.lines()) {
        if la != lb {
            return format!("was `{la}`, now `{lb}`");
        }
    }
    "different length".into()
}
