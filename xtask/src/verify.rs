//! `cargo xtask verify-report <verify-<method>.json>`: file a GPU verification run (from a
//! bundle's `run.sh`) into the repository: the JSON and its PNG go to
//! `crates/<method>/results/` (committed: numbers we measured) and `runs/verify/` (the report
//! page's input), the method README's block between `<!-- verify:begin -->` and
//! `<!-- verify:end -->` is rewritten, and `runs/report.html` is regenerated.

use crate::util::repo_root;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct VerifyReportArgs {
    /// The `verify-<method>.json` a bundle's run.sh wrote (its PNG is taken from beside it).
    pub json: PathBuf,
    /// Parent folder of runs (default: $CONTRAST_RUNS or runs/).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// Do not touch the method README (e.g. for a tiny check's JSON).
    #[arg(long)]
    pub no_readme: bool,
}

const BEGIN: &str = "<!-- verify:begin -->";
const END: &str = "<!-- verify:end -->";

pub fn verify_report(a: &VerifyReportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.json)
        .with_context(|| format!("cannot read {}", a.json.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a verify JSON", a.json.display()))?;
    let method = v["method"]
        .as_str()
        .context("the verify JSON names no method")?;
    if v["runs"].as_object().is_none_or(|r| r.is_empty()) {
        bail!("{}: no runs in it", a.json.display());
    }
    let root = repo_root();
    let crate_dir = root.join("crates").join(method);
    if !crate_dir.is_dir() {
        bail!("no crate `{method}` for {}", a.json.display());
    }
    let device = slug(v["device"].as_str().unwrap_or("device"));
    let commit: String = v["commit"]
        .as_str()
        .unwrap_or("unknown")
        .chars()
        .take(10)
        .collect();
    let stem = format!(
        "verify-{method}-{device}-{commit}{}",
        if v["tiny"].as_bool() == Some(true) {
            "-tiny"
        } else {
            ""
        }
    );
    let png = a.json.with_extension("png");
    let runs = a
        .runs_dir
        .clone()
        .or_else(|| std::env::var_os("CONTRAST_RUNS").map(PathBuf::from))
        .unwrap_or_else(|| root.join("runs"));
    let mut dests = vec![runs.join("verify")];
    if !a.no_readme {
        dests.push(crate_dir.join("results"));
    }
    file_into(&a.json, &dests, &stem)?;
    if !a.no_readme {
        let readme = crate_dir.join("README.md");
        let block = contrast_report::verify::markdown(
            &v,
            png.exists()
                .then_some(format!("results/{stem}.png"))
                .as_deref(),
        );
        update_block(&readme, &block)?;
        println!("updated {}", readme.display());
    }
    let out = runs.join("report.html");
    // the same page as `cargo xtask report` (method runs paired with their baselines)
    crate::report::write_page(&runs, &out)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Copy the JSON (and the PNG beside it) into every folder as `<stem>.json|png`. Read once, then
/// written atomically: filing a JSON from where it is already filed must not truncate it.
fn file_into(json: &Path, dests: &[PathBuf], stem: &str) -> Result<()> {
    let text = std::fs::read(json).with_context(|| format!("cannot read {}", json.display()))?;
    let png = json.with_extension("png");
    let png_bytes = if png.exists() {
        Some(std::fs::read(&png).with_context(|| format!("cannot read {}", png.display()))?)
    } else {
        None
    };
    for d in dests {
        std::fs::create_dir_all(d)?;
        contrast_report::write_atomic(&d.join(format!("{stem}.json")), &text)?;
        if let Some(b) = &png_bytes {
            contrast_report::write_atomic(&d.join(format!("{stem}.png")), b)?;
        }
        println!("filed {}", d.join(format!("{stem}.json")).display());
    }
    Ok(())
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Replace the text between the markers (appending a section with them when absent).
fn update_block(readme: &Path, block: &str) -> Result<()> {
    let text = std::fs::read_to_string(readme)
        .with_context(|| format!("cannot read {}", readme.display()))?;
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if b < e => format!(
            "{}{BEGIN}\n{block}{}",
            &text[..b],
            &text[e..]
        ),
        (None, None) => format!(
            "{}\n### GPU verification: ours vs baseline vs official code\n\n{BEGIN}\n{block}{END}\n",
            text.trim_end()
        ),
        _ => bail!("{}: unbalanced {BEGIN} / {END} markers", readme.display()),
    };
    std::fs::write(readme, new).with_context(|| format!("cannot write {}", readme.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refiling_a_filed_json_keeps_it_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        std::fs::write(d.join("v.json"), "{\"a\": 1}").unwrap();
        std::fs::write(d.join("v.png"), [1u8, 2, 3]).unwrap();
        file_into(&d.join("v.json"), &[d.clone(), d.join("other")], "v").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("v.json")).unwrap(),
            "{\"a\": 1}"
        );
        assert_eq!(std::fs::read(d.join("v.png")).unwrap(), [1, 2, 3]);
        assert_eq!(std::fs::read(d.join("other/v.png")).unwrap(), [1, 2, 3]);
    }

    #[test]
    fn the_block_is_appended_once_then_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("README.md");
        std::fs::write(&f, "# x\n\ntext\n").unwrap();
        update_block(&f, "one\n").unwrap();
        update_block(&f, "two\n").unwrap();
        let t = std::fs::read_to_string(&f).unwrap();
        assert_eq!(t.matches(BEGIN).count(), 1, "{t}");
        assert!(
            t.contains("two\n<!-- verify:end -->") && !t.contains("one"),
            "{t}"
        );
        assert!(t.starts_with("# x\n\ntext\n"), "{t}");
        assert_eq!(slug("NVIDIA H100 80GB HBM3"), "nvidia-h100-80gb-hbm3");
    }
}
