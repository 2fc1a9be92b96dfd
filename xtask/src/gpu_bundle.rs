//! `cargo xtask gpu-bundle <method>`: one folder to copy to a GPU machine that has PyTorch but no
//! Rust and no network, holding our stripped binary, a data subset in the method's format, the
//! official code (from `.official/<method>/`) with our adapter, and `run.sh`, which runs ours,
//! our baseline and the official code for the same epochs and writes `verify-<method>.json` plus a
//! PNG of the curves (see `xtask/bundle/run.py`). `--check` builds a small bundle and runs
//! `run.sh --tiny` here on the CPU, so the bundle cannot rot between GPU runs.

use crate::official::{self, Manifest};
use crate::util::{cargo, repo_root, run_output, run_status, step};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The methods with a bundle recipe.
pub const METHODS: &[&str] = &["patchmix", "fba-net"];

/// The most a bundle may weigh: it travels to the GPU machine with the working tree.
pub const MAX_BUNDLE_BYTES: u64 = 60 * 1024 * 1024;

#[derive(Args, Debug, Clone)]
pub struct GpuBundleArgs {
    /// The method (`patchmix`; see `official/` for the manifests).
    pub method: String,
    /// Wall-clock budget of the whole `run.sh` (all three runs), in minutes.
    #[arg(long, default_value_t = 9.0)]
    pub minutes: f64,
    /// Output folder (default `.device/bundle-<method>`, git-ignored).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Training images in the subset (class-balanced).
    #[arg(long, default_value_t = 20_000)]
    pub train: usize,
    /// Test images in the subset (class-balanced).
    #[arg(long, default_value_t = 10_000)]
    pub test: usize,
    /// Read the images from this image folder (`train/<class>/*`, `test/<class>/*`) instead of the
    /// data root's CIFAR-10 (JPEG folder, else the official binary batches).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Random-colour images instead of CIFAR-10 (only for `--check` on a machine without data).
    #[arg(long)]
    pub synthetic: bool,
    /// Cargo profile of the binary (`release` for GPU runs; `dev` builds faster for checks).
    #[arg(long, default_value = "release")]
    pub profile: String,
    /// Fetch the official code from this local clone when `.official/<method>` is missing.
    #[arg(long)]
    pub official_from: Option<String>,
    /// Build a small bundle and run `run.sh --tiny` in it on this machine.
    #[arg(long)]
    pub check: bool,
}

impl GpuBundleArgs {
    /// What CI runs: a small bundle from the dev build, checked with `run.sh --tiny`; CIFAR-10
    /// when this machine has it, else synthetic images (the check is about the bundle working,
    /// not about its numbers).
    pub fn ci_check(method: &str) -> Self {
        Self {
            method: method.into(),
            minutes: 9.0,
            out: None,
            train: 640,
            test: 200,
            data_dir: None,
            synthetic: method == "patchmix" && cifar10_source(None).is_err(),
            profile: "dev".into(),
            official_from: None,
            check: true,
        }
    }
}

pub fn gpu_bundle(a: &GpuBundleArgs) -> Result<()> {
    let (package, preset) = match a.method.as_str() {
        "patchmix" => ("patchmix", "paper-cifar10-vit-t"),
        "fba-net" => ("fba-net", "paper-la-16"),
        other => bail!(
            "gpu-bundle knows patchmix and fba-net so far; `{other}` has no bundle recipe yet"
        ),
    };
    let manifest = Manifest::load(&a.method)?;
    let root = repo_root();
    let out = a.out.clone().unwrap_or_else(|| {
        root.join(".device").join(if a.check {
            format!("bundle-{}-check", a.method)
        } else {
            format!("bundle-{}", a.method)
        })
    });
    let (n_train, n_test) = if a.check {
        (a.train.min(640), a.test.min(200))
    } else {
        (a.train, a.test)
    };

    step(&format!("gpu-bundle {}: {}", a.method, out.display()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("bin"))?;

    // 1. the binary, stripped (libtorch is the GPU machine's: run.py points LD_LIBRARY_PATH at it)
    // the data first: a check on a machine without it stops here, before building anything
    let source = match a.method.as_str() {
        "patchmix" if a.synthetic => {
            synthetic_folder(&out.join("data"), n_train, n_test)?;
            "synthetic random-colour images (check only)".to_string()
        }
        "patchmix" => match cifar10_source(a.data_dir.as_deref()) {
            Ok(src) => {
                let s = src.describe();
                src.write_subset(&out.join("data"), n_train, n_test)?;
                s
            }
            Err(e) if a.check => {
                println!("no CIFAR-10 here ({e:#}): the check runs on synthetic images");
                synthetic_folder(&out.join("data"), n_train, n_test)?;
                "synthetic random-colour images (check only)".to_string()
            }
            Err(e) => return Err(e),
        },
        _ => {
            let root = match &a.data_dir {
                Some(d) => d.clone(),
                None => match crate::data::la_heart_root(None) {
                    Ok(d) => d,
                    Err(e) if a.check => {
                        println!(
                            "gpu-bundle {} --check: skipped (no LA cases here: {e:#})",
                            a.method
                        );
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                },
            };
            let (tr, te) = copy_la_cases(&root, &out.join("data"), 12, 4)?;
            format!(
                "LA heart h5 cases ({tr} train, {te} test) from {}",
                root.display()
            )
        }
    };

    let mut build = vec!["build", "-p", package, "--bin", package];
    if a.profile != "dev" {
        build.extend(["--profile", a.profile.as_str()]);
    }
    cargo(&build)?;
    let dir = if a.profile == "dev" {
        "debug"
    } else {
        &a.profile
    };
    let bin = root.join("target").join(dir).join(package);
    run_status(
        Command::new("strip")
            .arg("-o")
            .arg(out.join("bin").join(package))
            .arg(&bin),
    )
    .with_context(|| format!("stripping {}", bin.display()))?;
    std::fs::create_dir_all(out.join("cfg"))?;
    std::fs::copy(
        root.join(format!("crates/{package}/configs/{preset}.toml")),
        out.join(format!("cfg/{package}.toml")),
    )?;

    // 2. the official code and our adapter
    std::fs::create_dir_all(out.join("official"))?;
    std::fs::copy(
        root.join(&manifest.adapter),
        out.join("official/adapter.py"),
    )?;
    let checkout = match manifest.checkout() {
        Some(d) => Some(d),
        None => match official::fetch(&manifest, a.official_from.as_deref()) {
            Ok(d) => Some(d),
            Err(e) if a.check => {
                println!(
                    "official code not available ({e:#}): the check runs ours and our baseline only"
                );
                None
            }
            Err(e) => return Err(e.context("the bundle needs the official code")),
        },
    };
    if let Some(d) = &checkout {
        official::copy_files(&manifest, d, &out.join("official/src"))?;
    }

    // 4. the runner
    for f in ["run.sh", "run.py"] {
        std::fs::copy(root.join("xtask/bundle").join(f), out.join(f))?;
    }
    let commit = run_output(
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["rev-parse", "HEAD"]),
    )
    .unwrap_or_else(|_| "unknown".into());
    let dirty = run_output(Command::new("git").arg("-C").arg(&root).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .map(|s| !s.is_empty())
    .unwrap_or(false);
    let commit = if dirty {
        format!("{commit}+uncommitted")
    } else {
        commit
    };
    let official_json = json!({
        "repository": manifest.repository,
        "commit": manifest.commit,
        "licence": manifest.licence,
        "present": checkout.is_some(),
    });
    let bundle = match a.method.as_str() {
        "patchmix" => json!({
            "method": a.method, "commit": commit, "minutes": a.minutes, "official": official_json,
            "data": source,
            // the paper's CIFAR-10 ViT-T/2 recipe (configs/paper-cifar10-vit-t.toml) at the GPU's
            // scale: same batch, model, heads, optimiser, schedules' shape, τ, m, p, augmentation
            "settings": {
                "batch": 512, "depth": 12, "patch": 2, "mlp_dim": 4096, "seed": 7,
                "workers": 12, "torch_threads": 4, "knn_k": [10, 20, 100, 200],
                "warmup_fraction": 0.125, "calibrate_steps": 12, "max_epochs": 800,
            },
            "tiny": {
                "batch": 32, "depth": 1, "patch": 4, "mlp_dim": 64, "epochs": 2, "workers": 1,
                "torch_threads": 2, "train_per_class": 16, "test_per_class": 10, "knn_k": [10, 20, 100],
            },
            "precision": {
                "ours": "bf16 autocast (runtime.autocast_bf16), fp32 weights and optimiser",
                "official": "fp16 autocast + GradScaler (main_pretrain.py, torch.cuda.amp)",
            },
            "paper": {"setting": "CIFAR-10, ViT-T/2, 800 epochs, batch 512, full 50k train", "knn": 92.9, "linear": 94.4},
        }),
        _ => json!({
            "method": a.method, "commit": commit, "minutes": a.minutes, "official": official_json,
            "data": source,
            // the official train_3d.py recipe (configs/paper-la-16.toml) on the development cases:
            // 4 labelled + 8 unlabelled training cases, 4 test cases, fewer iterations
            "settings": {
                "iterations": 1000, "labeled": 4, "batch": 4, "labeled_bs": 2,
                "patch": [112, 112, 80], "n_filters": 16, "stride": [18, 18, 4],
                "eval_every": 200, "eval_start": 800, "seed": 1337, "torch_threads": 4,
            },
            "tiny": {
                "iterations": 1, "patch": [32, 32, 32], "n_filters": 8, "stride": [32, 32, 28],
                "eval_start": 1_000_000, "torch_threads": 2,
            },
            "precision": {"ours": "fp32", "official": "fp32 (train_3d.py has no AMP)"},
            "paper": {"setting": "LA, 16 labelled / 64 unlabelled, 15 000 iterations, 20 test cases", "numbers": "FBA-Net+ Dice 91.31, supervised V-Net (16 labelled) 86.96"},
        }),
    };
    std::fs::write(
        out.join("bundle.json"),
        serde_json::to_string_pretty(&bundle)?,
    )?;
    std::fs::write(out.join("README.txt"), readme(&a.method))?;

    let total = check_size(bundle_parts(&out)?)?;
    if a.check {
        step("gpu-bundle --check: run.sh --tiny");
        run_status(
            Command::new("bash")
                .arg(out.join("run.sh"))
                .arg("--tiny")
                .env("PYTHON", python()?)
                .env("OUT", out.join("out")),
        )?;
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("out/verify-{}.json", a.method)))
                .context("run.sh --tiny wrote no verify JSON")?,
        )?;
        let runs = v["runs"]
            .as_object()
            .context("no runs in the verify JSON")?;
        for (name, r) in runs {
            println!(
                "  {name}: {} ({} epochs)",
                r["status"],
                r["epochs"].as_array().map_or(0, |e| e.len())
            );
        }
    } else {
        println!(
            "\nbundle ready ({:.1} MiB). On the GPU machine, from the repository root:\n  bash {}/run.sh   # writes $OUT/verify-{}.json and .png\nwith the device tool: carry [\"{}\"]",
            total as f64 / 1048576.0,
            out.strip_prefix(&root).unwrap_or(&out).display(),
            a.method,
            out.strip_prefix(&root).unwrap_or(&out).display()
        );
    }
    Ok(())
}

fn readme(method: &str) -> String {
    format!(
        "GPU verification bundle for `{method}` (made by `cargo xtask gpu-bundle {method}`).\n\
         Needs python3 with torch 2.11 (+ torchvision, timm, einops, matplotlib), no Rust, no network.\n\
         \n  bash run.sh            # calibrate, then ours / our baseline / the official code, same epochs\n  \
         bash run.sh --tiny     # a few steps of each on a few images (CPU is fine)\n\n\
         Writes $OUT (default ./out): verify-{method}.json, verify-{method}.png, log-*.txt.\n\
         Bring the JSON back and run `cargo xtask verify-report <json>` in the repository.\n\
         official/src holds the official code at the pinned commit under its own licence\n\
         (official/src/LICENSE); it is for this comparison only and is never committed.\n"
    )
}

fn python() -> Result<PathBuf> {
    let venv = repo_root().join(".contrast/venv/bin/python");
    if venv.exists() {
        return Ok(venv);
    }
    Ok(PathBuf::from("python3"))
}

fn folder_size(d: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(d)? {
        let e = e?;
        let m = std::fs::symlink_metadata(e.path())?;
        total += if m.is_dir() {
            folder_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

/// `(bytes, name)` of each top-level entry of the bundle.
fn bundle_parts(out: &Path) -> Result<Vec<(u64, String)>> {
    let mut parts = Vec::new();
    for e in std::fs::read_dir(out)? {
        let p = e?.path();
        let m = std::fs::metadata(&p)?;
        let n = if m.is_dir() {
            folder_size(&p)?
        } else {
            m.len()
        };
        parts.push((n, p.file_name().unwrap().to_string_lossy().to_string()));
    }
    Ok(parts)
}

/// Prints the bundle's size by part and returns the total; an error naming the largest part when
/// the bundle is over [`MAX_BUNDLE_BYTES`].
fn check_size(mut parts: Vec<(u64, String)>) -> Result<u64> {
    let total: u64 = parts.iter().map(|p| p.0).sum();
    parts.sort_by(|a, b| b.cmp(a));
    let list: Vec<String> = parts
        .iter()
        .map(|(n, f)| format!("{f} {:.1} MiB", *n as f64 / 1048576.0))
        .collect();
    println!(
        "bundle size {:.1} MiB: {}",
        total as f64 / 1048576.0,
        list.join(", ")
    );
    if total > MAX_BUNDLE_BYTES {
        bail!(
            "the bundle is {:.1} MiB, over the {} MiB limit; largest: {} (use --train / --test for fewer images)",
            total as f64 / 1048576.0,
            MAX_BUNDLE_BYTES / 1048576,
            list.first().cloned().unwrap_or_default()
        );
    }
    Ok(total)
}

/// Where the CIFAR-10 images come from.
enum Cifar10Source {
    /// An image folder (`train/<class>/*`, `test/<class>/*`): files are copied as they are.
    Folder(PathBuf),
    /// The official binary batches (`data_batch_*.bin`, `test_batch.bin`): re-encoded as PNG.
    Binary(PathBuf),
}

// the class folder names of `contrast_core::data::cifar` (xtask does not link libtorch, so it
// cannot import them)
const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

fn cifar10_source(flag: Option<&Path>) -> Result<Cifar10Source> {
    if let Some(d) = flag {
        if !d.join("train").is_dir() || !d.join("test").is_dir() {
            bail!("{} has no train/ and test/ class folders", d.display());
        }
        return Ok(Cifar10Source::Folder(d.to_path_buf()));
    }
    let base = crate::download::data_root(None);
    let bin = base.join("cifar10/cifar-10-batches-bin");
    if let Some(folder) = crate::data::cifar10_jpeg(&base)? {
        return Ok(Cifar10Source::Folder(folder));
    }
    if bin.join("test_batch.bin").exists() {
        return Ok(Cifar10Source::Binary(bin));
    }
    bail!(
        "no CIFAR-10 in {}: run `cargo xtask download cifar10` (or pass --data-dir <image folder>)",
        base.display()
    )
}

impl Cifar10Source {
    fn describe(&self) -> String {
        match self {
            Self::Folder(d) => format!("CIFAR-10 image folder {}", d.display()),
            Self::Binary(d) => format!("CIFAR-10 binary batches {} (as PNG)", d.display()),
        }
    }

    /// The first `n/10` images of every class (file-name order, or record order), per split.
    fn write_subset(&self, dest: &Path, n_train: usize, n_test: usize) -> Result<()> {
        for (split, n) in [("train", n_train), ("test", n_test)] {
            let per_class = n / 10;
            match self {
                Self::Folder(src) => {
                    let mut classes: Vec<_> = std::fs::read_dir(src.join(split))?
                        .filter_map(|e| e.ok())
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.file_name())
                        .collect();
                    classes.sort();
                    for c in classes {
                        let mut files: Vec<_> = std::fs::read_dir(src.join(split).join(&c))?
                            .filter_map(|e| e.ok().map(|e| e.path()))
                            .collect();
                        files.sort();
                        if files.len() < per_class {
                            bail!(
                                "{}/{split}/{} has {} images, fewer than the {per_class} asked for",
                                src.display(),
                                c.to_string_lossy(),
                                files.len()
                            );
                        }
                        let to = dest.join(split).join(&c);
                        std::fs::create_dir_all(&to)?;
                        for f in &files[..per_class] {
                            std::fs::copy(f, to.join(f.file_name().unwrap()))?;
                        }
                    }
                }
                Self::Binary(src) => {
                    let files: Vec<PathBuf> = if split == "train" {
                        (1..=5)
                            .map(|i| src.join(format!("data_batch_{i}.bin")))
                            .collect()
                    } else {
                        vec![src.join("test_batch.bin")]
                    };
                    let mut count = [0usize; 10];
                    'files: for f in files {
                        let bytes = std::fs::read(&f)
                            .with_context(|| format!("reading {}", f.display()))?;
                        for (i, rec) in bytes.chunks_exact(3073).enumerate() {
                            let label = rec[0] as usize;
                            if label >= 10 {
                                bail!("{}: record {i} has label {label}", f.display());
                            }
                            if count[label] >= per_class {
                                if count.iter().all(|&c| c >= per_class) {
                                    break 'files;
                                }
                                continue;
                            }
                            let mut img = image::RgbImage::new(32, 32);
                            for (p, px) in img.pixels_mut().enumerate() {
                                *px =
                                    image::Rgb([rec[1 + p], rec[1 + 1024 + p], rec[1 + 2048 + p]]);
                            }
                            let to = dest.join(split).join(CIFAR10_CLASSES[label]);
                            std::fs::create_dir_all(&to)?;
                            img.save(to.join(format!("{:05}.png", count[label])))?;
                            count[label] += 1;
                        }
                    }
                    if count.iter().any(|&c| c < per_class) {
                        bail!("{}: only {count:?} {split} images per class", src.display());
                    }
                }
            }
        }
        Ok(())
    }
}

/// The first `n_train` / `n_test` cases of an LA root's `train.list` / `test.list`
/// (`2018LA_Seg_Training Set/<id>/mri_norm2.h5`, the official layout) copied into `dest` with
/// their lists; returns how many of each.
fn copy_la_cases(
    root: &Path,
    dest: &Path,
    n_train: usize,
    n_test: usize,
) -> Result<(usize, usize)> {
    let mut counts = [0usize; 2];
    for (k, (list, n)) in [("train.list", n_train), ("test.list", n_test)]
        .into_iter()
        .enumerate()
    {
        let text = std::fs::read_to_string(root.join(list))
            .with_context(|| format!("{}: no {list}", root.display()))?;
        let ids: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(n)
            .collect();
        for id in &ids {
            let rel = Path::new("2018LA_Seg_Training Set")
                .join(id)
                .join("mri_norm2.h5");
            let to = dest.join(&rel);
            std::fs::create_dir_all(to.parent().unwrap())?;
            std::fs::copy(root.join(&rel), &to)
                .with_context(|| format!("copying case {id} from {}", root.display()))?;
        }
        std::fs::write(dest.join(list), ids.join("\n") + "\n")?;
        counts[k] = ids.len();
    }
    Ok((counts[0], counts[1]))
}

/// Random-colour 32×32 PNGs in 10 classes (the class sets the mean colour), for `--check`
/// on a machine without CIFAR-10.
fn synthetic_folder(dest: &Path, n_train: usize, n_test: usize) -> Result<()> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    };
    for (split, n) in [("train", n_train), ("test", n_test)] {
        for c in 0..10u8 {
            let to = dest.join(split).join(format!("class{c}"));
            std::fs::create_dir_all(&to)?;
            for i in 0..n / 10 {
                let mut img = image::RgbImage::new(32, 32);
                for px in img.pixels_mut() {
                    let base = c.wrapping_mul(25);
                    *px = image::Rgb([
                        base.wrapping_add(next() / 4),
                        next(),
                        (255 - base / 2).saturating_sub(next() / 8),
                    ]);
                }
                img.save(to.join(format!("{i:05}.png")))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_batches_become_a_class_balanced_png_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("bin");
        std::fs::create_dir_all(&src).unwrap();
        // 30 records, labels 0..9 cycling, pixel value = record index
        let mut batch = Vec::new();
        for i in 0..30u8 {
            batch.push(i % 10);
            batch.extend(std::iter::repeat_n(i, 3072));
        }
        for f in ["data_batch_1.bin", "test_batch.bin"] {
            std::fs::write(src.join(f), &batch).unwrap();
        }
        for i in 2..=5 {
            std::fs::write(src.join(format!("data_batch_{i}.bin")), []).unwrap();
        }
        let dest = tmp.path().join("out");
        Cifar10Source::Binary(src)
            .write_subset(&dest, 20, 10)
            .unwrap();
        let img = image::open(dest.join("train/cat/00001.png"))
            .unwrap()
            .to_rgb8();
        assert_eq!(img.dimensions(), (32, 32));
        assert_eq!(
            img.get_pixel(5, 7).0,
            [13, 13, 13],
            "second cat = record 13"
        );
        assert_eq!(
            std::fs::read_dir(dest.join("test/truck")).unwrap().count(),
            1
        );
        // asking for more than there is names the split
        let e = Cifar10Source::Binary(tmp.path().join("bin"))
            .write_subset(&tmp.path().join("o2"), 50, 10)
            .unwrap_err();
        assert!(format!("{e:#}").contains("train"), "{e:#}");
    }

    #[test]
    fn synthetic_images_fill_every_class_and_decode() {
        let tmp = tempfile::tempdir().unwrap();
        synthetic_folder(tmp.path(), 30, 10).unwrap();
        for c in 0..10 {
            let d = tmp.path().join(format!("train/class{c}"));
            assert_eq!(std::fs::read_dir(&d).unwrap().count(), 3);
            let img = image::open(d.join("00002.png")).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (32, 32));
        }
        assert_eq!(
            std::fs::read_dir(tmp.path().join("test/class9"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn an_oversized_bundle_is_an_error_naming_the_largest_part() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("data")).unwrap();
        std::fs::write(tmp.path().join("data/x"), [0u8; 10]).unwrap();
        std::fs::write(tmp.path().join("run.sh"), [0u8; 3]).unwrap();
        let parts = bundle_parts(tmp.path()).unwrap();
        assert_eq!(check_size(parts).unwrap(), 13);
        let big = vec![(MAX_BUNDLE_BYTES, "data".into()), (1, "bin".into())];
        let e = check_size(big).unwrap_err();
        assert!(format!("{e}").contains("largest: data"), "{e}");
    }
}
