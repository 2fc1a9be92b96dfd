//! Data for `reproduce`: find the data a preset needs in the data root, or prepare it from the
//! development copy in `../shared/data` (read in place; extracted into the data root, never into
//! the repository's tracked files).

use crate::download::{data_root, ensure_named, Options};
use crate::reproduce::Method;
use crate::util::repo_root;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The development data folder beside the repository (`../shared/data`), when present.
pub fn shared_data() -> Option<PathBuf> {
    let d = repo_root().join("../shared/data");
    d.is_dir().then_some(d)
}

/// Read the `format` and `root` of a preset's `[data]` table (without libtorch: plain TOML).
fn preset_data(m: &Method, preset: &str) -> Result<(String, String)> {
    let path = repo_root()
        .join("crates")
        .join(m.package)
        .join("configs")
        .join(format!("{preset}.toml"));
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "unknown preset `{preset}` for {}: no {}",
            m.name,
            path.display()
        )
    })?;
    let v: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let data = v.get("data").and_then(|d| d.as_table());
    let get = |k: &str, default: &str| {
        data.and_then(|d| d.get(k))
            .and_then(|x| x.as_str())
            .unwrap_or(default)
            .to_string()
    };
    Ok((get("format", "image-folder"), get("root", "")))
}

/// Make the preset's data available; returns the folder to pass as `data.root` (None when the
/// preset names its own root).
pub fn prepare_for_preset(
    m: &Method,
    preset: &str,
    flag: Option<&Path>,
) -> Result<Option<PathBuf>> {
    let (format, root) = preset_data(m, preset)?;
    if !root.is_empty() {
        return Ok(None);
    }
    let base = data_root(flag);
    match format.as_str() {
        "image-folder" if preset.contains("imagenet") => {
            let d = base.join("imagenet");
            if !d.join("train").is_dir() {
                bail!("ImageNet is not in {}: it needs a manual download (`cargo xtask download imagenet` prints the steps)", d.display());
            }
            Ok(Some(d))
        }
        "image-folder" => cifar10_jpeg(&base).map(Some),
        "cifar10" | "cifar100" => {
            // fetched (resumable, checksummed) unless already verified under the data root
            let sub = if format == "cifar10" {
                "cifar-10-batches-bin"
            } else {
                "cifar-100-binary"
            };
            Ok(Some(
                ensure_named(&format, flag, &Options::from_env())?.join(sub),
            ))
        }
        "tiny-imagenet" => Ok(Some(
            ensure_named("tiny-imagenet", flag, &Options::from_env())?.join("tiny-imagenet-200"),
        )),
        other => bail!("reproduce does not know how to prepare data.format `{other}`"),
    }
}

/// CIFAR-10 as an image folder (`train/<class>/*.jpg`, `test/<class>/*.jpg`): already in the
/// data root, or extracted there from the development tar in `../shared/data/cifar10-jpeg/`.
pub fn cifar10_jpeg(base: &Path) -> Result<PathBuf> {
    let dest = base.join("cifar10-jpeg");
    let marker = dest.join(".extracted");
    if marker.exists() {
        println!("data: {} (already extracted)", dest.display());
        return Ok(dest);
    }
    let Some(shared) = shared_data() else {
        bail!(
            "no CIFAR-10 image folder in {} and no development copy in ../shared/data; \
             use a `paper-*` preset with `cargo xtask download cifar10`, or set data.root",
            dest.display()
        );
    };
    let tar_path = shared.join("cifar10-jpeg/CIFAR-10-images.tar");
    println!(
        "data: extracting {} into {}",
        tar_path.display(),
        dest.display()
    );
    std::fs::create_dir_all(&dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let f = std::fs::File::open(&tar_path)
        .with_context(|| format!("cannot open {}", tar_path.display()))?;
    tar::Archive::new(f)
        .unpack(&dest)
        .with_context(|| format!("extracting {} (corrupt or cut short?)", tar_path.display()))?;
    for split in ["train", "test"] {
        if !dest.join(split).is_dir() {
            bail!("{} has no {split}/ folder after extraction", dest.display());
        }
    }
    std::fs::write(&marker, "ok\n")?;
    Ok(dest)
}

/// The LA heart root for FBA-Net: the smoke preset reads the 16 development cases in
/// `../shared/data/la-heart` when present (unless `--data-dir` is given); otherwise (and for
/// the paper presets, which need all 100 cases) `<data root>/la-heart`, downloaded and
/// checksummed from the manifest `datasets/la-heart.toml` when missing.
pub fn la_heart_root(preset: &str, flag: Option<&Path>) -> Result<PathBuf> {
    if preset == "smoke" && flag.is_none() {
        if let Some(d) = shared_data()
            .map(|s| s.join("la-heart"))
            .filter(|d| d.is_dir())
        {
            println!("data: {} (development cases)", d.display());
            return Ok(d);
        }
    }
    ensure_named("la-heart", flag, &Options::from_env())
}

/// GraSS: the data root of a preset (`data.format` dubai / potsdam / loveda-*). The Dubai
/// development tiles are read in place from `../shared/data/dubai-aerial` (or
/// `<data root>/dubai-aerial`); Potsdam (manual) and LoveDA (download) come from their manifests.
pub fn grass_root(m: &Method, preset: &str, flag: Option<&Path>) -> Result<PathBuf> {
    let (format, root) = preset_data(m, preset)?;
    if !root.is_empty() {
        return Ok(PathBuf::from(root));
    }
    match format.as_str() {
        "dubai" => {
            let sub = "dubai-aerial/Semantic segmentation dataset";
            let local = data_root(flag).join(sub);
            if local.is_dir() {
                return Ok(local);
            }
            match shared_data().map(|d| d.join(sub)).filter(|d| d.is_dir()) {
                Some(d) => Ok(d),
                None => bail!(
                    "no Dubai aerial tiles in {} or ../shared/data",
                    local.display()
                ),
            }
        }
        "potsdam" => ensure_named("potsdam", flag, &Options::from_env()),
        f if f.starts_with("loveda") => ensure_named("loveda", flag, &Options::from_env()),
        other => bail!("reproduce does not know how to prepare data.format `{other}` for grass"),
    }
}
