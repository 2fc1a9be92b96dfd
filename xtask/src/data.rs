//! Data for `reproduce`: where each preset's data comes from, and getting it there.
//!
//! In order: what is already under the data root; the development copy beside the repository
//! (`../shared/data`, this team's machines only; read in place or extracted into the data root,
//! never into tracked files; `CONTRAST_DEV_DATA=none` hides it); otherwise the official data set
//! through its manifest in `datasets/` (resumable, checksummed download). A smoke preset never
//! needs the development copy: CIFAR-10 then comes from the official binary archive (same
//! class-balanced subset), LA heart, VQA-RAD and the Dubai tiles from their manifests.

use crate::download::manifest::Manifest;
use crate::download::{data_root, ensure_named, human_bytes, is_verified, Options};
use crate::methods::Method;
use crate::util::repo_root;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The core's rule for the development copy, shared as source (xtask does not link libtorch).
#[allow(dead_code)]
#[path = "../../crates/contrast-core/src/data/dev.rs"]
mod dev;

/// The development data folder beside the repository (`../shared/data`), when present and not
/// hidden by `CONTRAST_DEV_DATA` (same rule as `contrast_core::data::dev_data_root`).
pub fn shared_data() -> Option<PathBuf> {
    dev::resolve(
        std::env::var_os("CONTRAST_DEV_DATA").as_deref(),
        &repo_root().join("../shared/data"),
    )
}

/// Where a preset's data comes from.
#[derive(Debug)]
pub enum Origin {
    /// Already there (under the data root, or the development copy read in place).
    Present { path: PathBuf, what: String },
    /// The development CIFAR-10 JPEG tar, extracted into the data root on first use.
    DevTar { tar: PathBuf, dest: PathBuf },
    /// A data set of `datasets/<name>.toml`, fetched and verified (a no-op once verified).
    Manifest { name: String, root: Option<PathBuf> },
}

/// A preset's data: its origin and the config values that point the run at it.
#[derive(Debug)]
pub struct Plan {
    pub origin: Origin,
    /// `(key, value)` pairs for `--set key=value` (values are TOML literals).
    pub sets: Vec<(String, String)>,
}

fn quoted(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// Read the `format` and `root` of a preset's data table (`data`, or `finetune.data` for
/// spade), without libtorch: plain TOML.
fn preset_data(m: &Method, preset: &str) -> Result<(String, String)> {
    let path = repo_root()
        .join("crates")
        .join(&m.package)
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
    // the registration's `data-table` (`data`, or e.g. `finetune.data`)
    let mut data = Some(&v);
    for part in m.data_table.split('.') {
        data = data.and_then(|t| t.get(part)).and_then(|d| d.as_table());
    }
    let get = |k: &str| {
        data.and_then(|d| d.get(k))
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Ok((get("format"), get("root")))
}

/// The data plan of `reproduce <m> --preset <preset>` (no side effects). `None`: the method
/// needs no data (no `data` in its registration) or the preset names its own root.
pub fn plan(m: &Method, preset: &str, flag: Option<&Path>) -> Result<Option<Plan>> {
    let Some(kind) = m.data.as_deref() else {
        return Ok(None);
    };
    let (format, root) = preset_data(m, preset)?;
    let key = format!("{}.root", m.data_table);
    let key = key.as_str();
    if !root.is_empty() {
        return Ok(None);
    }
    let base = data_root(flag);
    // the development copy is read only when no --data-dir was given
    let dev = |sub: &str| {
        flag.is_none()
            .then(shared_data)
            .flatten()
            .map(|d| d.join(sub))
            .filter(|d| d.exists())
    };
    let set = |k: &str, p: &Path| vec![(k.to_string(), quoted(p))];
    let manifest = |name: &str, key: &str, sub: &str| Plan {
        origin: Origin::Manifest {
            name: name.into(),
            root: flag.map(Path::to_path_buf),
        },
        sets: if sub.is_empty() {
            set(key, &base.join(name))
        } else {
            set(key, &base.join(name).join(sub))
        },
    };
    // the development copy `sub` read in place when present, else the manifest data set
    let dev_or = |sub: &str, what: &str, key: &str, name: &str, msub: &str| match dev(sub) {
        Some(d) => Plan {
            origin: Origin::Present {
                path: d.clone(),
                what: what.into(),
            },
            sets: set(key, &d),
        },
        None => manifest(name, key, msub),
    };
    let plan = match (kind, format.as_str()) {
        ("natural-images", "image-folder") if preset.contains("imagenet") => {
            manifest("imagenet", key, "")
        }
        ("natural-images", "stl10") => manifest("stl10", key, "stl10_binary"),
        ("natural-images", "image-folder" | "") => {
            let dest = base.join("cifar10-jpeg");
            if dest.join(".extracted").exists() {
                Plan {
                    origin: Origin::Present {
                        path: dest.clone(),
                        what: "CIFAR-10 JPEG, extracted earlier".into(),
                    },
                    sets: set(key, &dest),
                }
            } else if let Some(tar) = dev("cifar10-jpeg/CIFAR-10-images.tar") {
                Plan {
                    origin: Origin::DevTar {
                        tar,
                        dest: dest.clone(),
                    },
                    sets: set(key, &dest),
                }
            } else {
                // no JPEG copy: the official binary archive, same subset logic
                let mut p = manifest("cifar10", key, "cifar-10-batches-bin");
                p.sets.insert(
                    0,
                    (format!("{}.format", m.data_table), "\"cifar10\"".into()),
                );
                p
            }
        }
        ("natural-images", "cifar10") => manifest("cifar10", key, "cifar-10-batches-bin"),
        ("natural-images", "cifar100") => manifest("cifar100", key, "cifar-100-binary"),
        ("natural-images", "tiny-imagenet") => manifest("tiny-imagenet", key, "tiny-imagenet-200"),
        ("la-heart", _) => {
            // the smoke presets read the 16 development cases when present; the paper presets
            // need all 100 cases
            if preset == "smoke" {
                dev_or(
                    "la-heart",
                    "LA heart, development cases",
                    key,
                    "la-heart",
                    "",
                )
            } else {
                manifest("la-heart", key, "")
            }
        }
        ("vqa-rad", _) => dev_or("vqa-rad", "VQA-RAD, development copy", key, "vqa-rad", ""),
        ("aerial", "dubai" | "") => dev_or(
            "dubai-aerial/Semantic segmentation dataset",
            "Dubai aerial tiles, development copy",
            key,
            "dubai-aerial",
            "Semantic segmentation dataset",
        ),
        ("aerial", "potsdam") => manifest("potsdam", key, ""),
        ("aerial", f) if f.starts_with("loveda") => manifest("loveda", key, ""),
        (kind, other) => {
            bail!(
                "reproduce does not know how to prepare data.format `{other}` of `{kind}` data for {}",
                m.name
            )
        }
    };
    Ok(Some(plan))
}

/// Carry out a plan: extract or fetch what is missing. Returns the `--set` pairs.
pub fn prepare(plan: &Plan) -> Result<&[(String, String)]> {
    match &plan.origin {
        Origin::Present { path, what } => println!("data: {} ({what})", path.display()),
        Origin::DevTar { tar, dest } => extract_dev_tar(tar, dest)?,
        Origin::Manifest { name, root } => {
            let dir = ensure_named(name, root.as_deref(), &Options::from_env())?;
            println!("data: {} ({name})", dir.display());
        }
    }
    Ok(&plan.sets)
}

/// One line for `doctor`: what the plan finds, or what `reproduce` would do.
pub fn describe(plan: &Plan) -> String {
    match &plan.origin {
        Origin::Present { path, what } => format!("present: {what} ({})", path.display()),
        Origin::DevTar { tar, dest } => format!(
            "development copy {}: extracted into {} on first run",
            tar.display(),
            dest.display()
        ),
        Origin::Manifest { name, root } => {
            let Ok(m) = Manifest::named(name) else {
                return format!("no manifest `{name}`");
            };
            let dir = data_root(root.as_deref()).join(name);
            if m.manual {
                if crate::download::missing_paths(&dir, &m.required_paths()).is_empty() {
                    format!("present: {name} ({}, placed by hand)", dir.display())
                } else {
                    format!(
                        "MISSING: {name} needs a manual download into {} (`cargo xtask download {name}` prints the steps)",
                        dir.display()
                    )
                }
            } else if is_verified(&m, &dir) {
                format!("present: {name} ({}, verified)", dir.display())
            } else {
                format!(
                    "absent: `reproduce` downloads {name} ({}) into {}",
                    m.total_size()
                        .map(human_bytes)
                        .unwrap_or_else(|| "size unknown".into()),
                    dir.display()
                )
            }
        }
    }
}

/// Extract the development CIFAR-10 JPEG tar into `dest` (`train/<class>/*.jpg`,
/// `test/<class>/*.jpg`); a `.extracted` marker makes later runs skip it.
fn extract_dev_tar(tar_path: &Path, dest: &Path) -> Result<()> {
    println!(
        "data: extracting {} into {}",
        tar_path.display(),
        dest.display()
    );
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let f = std::fs::File::open(tar_path)
        .with_context(|| format!("cannot open {}", tar_path.display()))?;
    tar::Archive::new(f)
        .unpack(dest)
        .with_context(|| format!("extracting {} (corrupt or cut short?)", tar_path.display()))?;
    for split in ["train", "test"] {
        if !dest.join(split).is_dir() {
            bail!("{} has no {split}/ folder after extraction", dest.display());
        }
    }
    std::fs::write(dest.join(".extracted"), "ok\n")?;
    Ok(())
}

/// CIFAR-10 as an image folder for the GPU bundle: extracted earlier, or from the development
/// tar. `None` when neither exists (the bundle then uses the official binary or synthetic data).
pub fn cifar10_jpeg(base: &Path) -> Result<Option<PathBuf>> {
    let dest = base.join("cifar10-jpeg");
    if dest.join(".extracted").exists() {
        return Ok(Some(dest));
    }
    match shared_data()
        .map(|d| d.join("cifar10-jpeg/CIFAR-10-images.tar"))
        .filter(|t| t.is_file())
    {
        Some(tar) => extract_dev_tar(&tar, &dest).map(|_| Some(dest)),
        None => Ok(None),
    }
}

/// The LA heart cases of the smoke preset (the GPU bundle's source): the development cases
/// when present, else the downloaded set (fetched when missing).
pub fn la_heart_root(flag: Option<&Path>) -> Result<PathBuf> {
    let m = crate::methods::find("fba-net")?;
    let plan = plan(m, "smoke", flag)?.context("the fba-net smoke preset reads LA cases")?;
    prepare(&plan)?;
    match plan.origin {
        Origin::Present { path, .. } => Ok(path),
        _ => Ok(data_root(flag).join("la-heart")),
    }
}
