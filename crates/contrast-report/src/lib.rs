//! Reports people look at, for every method of the workspace (no libtorch here, so `xtask` can
//! use it too):
//!
//! * [`metrics`]: read a run's `metrics.jsonl` (also while the run is still writing it) and
//!   group its fields into charts (loss terms, learning rate, schedules, evaluation).
//! * [`plot`]: line charts and 2-D scatter plots, written as SVG and PNG.
//! * [`images`]: image grids, captions, boxes, mask and heat-map overlays as PNG (what the model
//!   does: mixed images, gradient boxes, segmentation slices, retrieval results).
//! * [`run_report`]: the typed `report.json` every run writes (schema 1).
//! * [`page`]: the comparison table of every run's `report.json` and the self-contained HTML
//!   page (`cargo xtask report`), images embedded so that it opens without network or files
//!   beside it.
//!
//! A run folder's layout, as the harness writes it: `config.toml`, `metrics.jsonl`,
//! `report.json`, `plots/` (this crate, from the metrics) and `figures/` (method-specific PNGs).

pub mod font;
pub mod format;
pub mod images;
pub mod metrics;
pub mod page;
pub mod paper;
pub mod plot;
pub mod run_report;
pub mod seeds;
pub mod verify;

use anyhow::{Context, Result};
use plot::Drawable;
use std::path::{Path, PathBuf};

/// Regenerate the curves of a run folder from its `metrics.jsonl` into `<run>/plots/`
/// (`<chart>.svg` + `<chart>.png` per chart). Works on a run in progress (a half-written last
/// line is ignored). Returns the files written; an empty list when the run has no metrics yet.
pub fn run_plots(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let path = run_dir.join("metrics.jsonl");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let records = metrics::read_metrics(&path)?;
    let charts = metrics::charts(&records, &run_title(run_dir));
    let out = run_dir.join("plots");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut written = Vec::new();
    for (name, chart) in charts {
        let stem = out.join(&name);
        written.extend(chart.write(&stem)?);
    }
    Ok(written)
}

/// `method / run` from a run folder path (`runs/<method>/<run>`).
pub fn run_title(run_dir: &Path) -> String {
    let name = |p: Option<&Path>| {
        p.and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default()
    };
    let run = name(Some(run_dir));
    let method = name(run_dir.parent());
    if method.is_empty() {
        run
    } else {
        format!("{method} / {run}")
    }
}

/// Write `bytes` to `path` through a temporary file in the same folder (created if missing),
/// synced, then renamed into place: a reader never sees a half-written file, and an interrupted
/// write leaves the old file intact. The one atomic write of the workspace (`contrast-core`
/// re-exports it as `train::checkpoint::write_atomic`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        path.file_name()
            .map_or("file".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}
