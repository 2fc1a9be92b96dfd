//! Small helpers shared by the xtask commands: paths and running commands.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root: the parent of this crate's folder, or, for an xtask binary carried to
/// another machine (where that folder does not exist), the current directory.
pub fn repo_root() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf();
    if built.join("Cargo.toml").exists() {
        built
    } else {
        std::env::current_dir().unwrap_or(built)
    }
}

/// The cache folder for installed tools: `$CONTRAST_CACHE`, else `$XDG_CACHE_HOME/contrast`,
/// else `~/.cache/contrast`. It lives outside the repository.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("CONTRAST_CACHE").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d).join("contrast"));
    }
    let home = std::env::var_os("HOME").context(
        "neither CONTRAST_CACHE, XDG_CACHE_HOME nor HOME is set: cannot place the cache",
    )?;
    Ok(PathBuf::from(home).join(".cache").join("contrast"))
}

/// The generated, git-ignored folder in the repository with links into the cache.
pub fn link_dir() -> PathBuf {
    repo_root().join(".contrast")
}

/// Print a visible step header.
pub fn step(what: &str) {
    println!("\n==> {what}");
}

/// Run `cargo <args>` in the repository root, inheriting stdio; fail if it fails.
pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(repo_root());
    run_status(&mut cmd)
}

/// Run a command with inherited stdio; an error names the command and its exit status.
pub fn run_status(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Run a command and capture stdout (trimmed); an error carries stderr.
pub fn run_output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// "N-core <CPU model> VM", read from the machine (for tables that name their hardware).
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|x| x.1.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores}-core {model} VM")
}
