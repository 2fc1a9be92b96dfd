//! `cargo xtask report [RUN_DIR]` and `cargo xtask compare`.
//!
//! * `report RUN_DIR`: regenerate that run's curves (`RUN_DIR/plots/*.svg|png`) from its
//!   `metrics.jsonl`, also while the run is still going.
//! * `report`: write the comparison page (`runs/report.html` by default): one row per method
//!   with its verdict, then per method the headline table (ours, baseline, difference ± 95 %
//!   interval, the paper's number, official code, GPU run), settings, overlaid curves and
//!   figures, and `benches/RESULTS.md`, images embedded. A run and its baseline run are paired
//!   by the method registry's run-name suffixes.
//! * `compare`: print every run's `report.json` as one Markdown table.

use crate::util::repo_root;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Parent folder of runs: `$CONTRAST_RUNS`, else `runs/` in the repository.
fn runs_root(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("CONTRAST_RUNS").map(PathBuf::from))
        .unwrap_or_else(|| repo_root().join("runs"))
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A run folder (`runs/<method>/<run>`): redraw its curves only.
    pub run_dir: Option<PathBuf>,
    /// Parent folder of runs (default: $CONTRAST_RUNS or runs/).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// Where the comparison page goes (default: <runs>/report.html).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

pub fn report(a: &ReportArgs) -> Result<()> {
    if let Some(dir) = &a.run_dir {
        let files = contrast_report::run_plots(dir)?;
        if files.is_empty() {
            println!("{}: no metrics.jsonl yet, nothing to draw", dir.display());
        }
        for f in files {
            println!("{}", f.display());
        }
        return Ok(());
    }
    let root = runs_root(a.runs_dir.clone());
    let out = a.out.clone().unwrap_or_else(|| root.join("report.html"));
    let s = write_page(&root, &out)?;
    println!(
        "wrote {} ({} methods, {} runs, {} comparisons, {} images embedded)",
        out.display(),
        s.methods,
        s.runs,
        s.comparisons,
        s.images
    );
    Ok(())
}

/// The page options of this workspace: `benches/RESULTS.md` and how each method names its
/// baseline run (the method registry's `pair`).
pub fn page_options() -> contrast_report::page::PageOptions {
    contrast_report::page::PageOptions {
        bench_results: Some(repo_root().join("benches").join("RESULTS.md")),
        pairs: crate::methods::methods()
            .iter()
            .filter_map(|m| {
                let (o, b) = m.pair.as_ref()?;
                Some(contrast_report::page::RunPair::new(&m.name, o, b))
            })
            .collect(),
    }
}

/// Write the comparison page of `root` to `out` with [`page_options`].
pub fn write_page(
    root: &std::path::Path,
    out: &std::path::Path,
) -> Result<contrast_report::page::PageSummary> {
    contrast_report::page::write_page_with(root, out, &page_options())
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Parent folder of runs (default: $CONTRAST_RUNS or runs/).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
}

pub fn compare(a: &CompareArgs) -> Result<()> {
    let root = runs_root(a.runs_dir.clone());
    let reports = contrast_report::page::collect_reports(&root)?;
    if reports.is_empty() {
        println!("no report.json under {} yet", root.display());
        return Ok(());
    }
    print!("{}", contrast_report::page::comparison_markdown(&reports));
    Ok(())
}
