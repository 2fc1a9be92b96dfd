//! The data sets: file pairs (image, mask), train/test split and mask coding per format.
//!
//! * `dubai` (development set, `cargo xtask download dubai-aerial`): `Tile N/images/*.jpg` with
//!   `Tile N/masks/*.png` (RGB or palette; the true colours of `ColorMap::dubai`). No official
//!   split: scenes are sorted by path and every `test_every`-th one is held out.
//! * `potsdam` (`datasets/potsdam.toml`, manual download): `4_Ortho_RGBIR/<id>_RGBIR.tif` (RGB
//!   bands read, as GraSS's PIL `convert("RGB")`) with `5_Labels_all/<id>_label.tif`; torchgeo's
//!   24 / 14 tile split.
//! * `loveda` (`datasets/loveda.toml`, download): `Train|Val/<Urban|Rural>/images_png/*.png`
//!   with `masks_png/*.png` (values 1..7, 0 = no-data); the Val split is the test set (the
//!   official Test split has no public masks).

use crate::raster::{ColorMap, MaskCoding};
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};

/// (image, mask) pairs of a split.
pub type Pairs = Vec<(PathBuf, Option<PathBuf>)>;

/// A data set's train and test scenes and its mask coding.
#[derive(Debug, Clone)]
pub struct Source {
    pub train: Pairs,
    pub test: Pairs,
    pub masks: MaskCoding,
}

/// torchgeo `Potsdam2D.splits`.
pub const POTSDAM_TRAIN: [&str; 24] = [
    "2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10", "5_11", "5_12",
    "6_10", "6_11", "6_12", "6_7", "6_8", "6_9", "7_10", "7_11", "7_12", "7_7", "7_8", "7_9",
];
pub const POTSDAM_TEST: [&str; 14] = [
    "5_15", "6_15", "6_13", "3_13", "4_14", "6_14", "5_14", "2_13", "4_15", "2_14", "5_13", "4_13",
    "3_14", "7_13",
];

fn sorted_files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext)))
        .collect();
    v.sort();
    Ok(v)
}

/// Dubai aerial tiles: every scene under `root` (the folder holding `Tile 1` … `Tile N`).
pub fn dubai_pairs(root: &Path) -> Result<Pairs> {
    let mut tiles: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("listing the Dubai data folder {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("images").is_dir())
        .collect();
    tiles.sort();
    let mut pairs = Vec::new();
    for t in tiles {
        for img in sorted_files(&t.join("images"), "jpg")? {
            let stem = img.file_stem().context("image without a name")?;
            let mask = t.join("masks").join(stem).with_extension("png");
            ensure!(
                mask.is_file(),
                "no mask {} for {}",
                mask.display(),
                img.display()
            );
            pairs.push((img, Some(mask)));
        }
    }
    ensure!(
        !pairs.is_empty(),
        "no `Tile */images/*.jpg` under {}",
        root.display()
    );
    Ok(pairs)
}

/// Open a data set. `format`: `dubai`, `potsdam`, `loveda-urban`, `loveda-rural`;
/// `max_scenes` (Dubai only): the first N scenes by path, 0 = all.
pub fn source(
    format: &str,
    root: &Path,
    test_every: usize,
    max_scenes: usize,
    ignore: i64,
) -> Result<Source> {
    ensure!(
        root.is_dir(),
        "data.root {} is not a folder (see `cargo xtask download` / the crate README)",
        root.display()
    );
    match format {
        "dubai" => {
            ensure!(
                test_every >= 2,
                "data.test_every must be ≥ 2, got {test_every}"
            );
            let mut all = dubai_pairs(root)?;
            if max_scenes > 0 {
                all.truncate(max_scenes);
            }
            let (mut train, mut test) = (Vec::new(), Vec::new());
            for (i, p) in all.into_iter().enumerate() {
                if i % test_every == test_every - 1 {
                    test.push(p);
                } else {
                    train.push(p);
                }
            }
            Ok(Source {
                train,
                test,
                masks: MaskCoding::Rgb(ColorMap::dubai(ignore)),
            })
        }
        "potsdam" => {
            let pair = |id: &str| -> Result<(PathBuf, Option<PathBuf>)> {
                let img = root.join(format!("4_Ortho_RGBIR/top_potsdam_{id}_RGBIR.tif"));
                let mask = root.join(format!("5_Labels_all/top_potsdam_{id}_label.tif"));
                ensure!(img.is_file(), "missing Potsdam image {}", img.display());
                ensure!(mask.is_file(), "missing Potsdam label {}", mask.display());
                Ok((img, Some(mask)))
            };
            Ok(Source {
                train: POTSDAM_TRAIN
                    .iter()
                    .map(|id| pair(id))
                    .collect::<Result<_>>()?,
                test: POTSDAM_TEST
                    .iter()
                    .map(|id| pair(id))
                    .collect::<Result<_>>()?,
                masks: MaskCoding::Rgb(ColorMap::potsdam(ignore)),
            })
        }
        "loveda-urban" | "loveda-rural" => {
            let domain = if format.ends_with("urban") {
                "Urban"
            } else {
                "Rural"
            };
            let split = |s: &str| -> Result<Pairs> {
                let d = root.join(s).join(domain);
                sorted_files(&d.join("images_png"), "png")?
                    .into_iter()
                    .map(|img| {
                        let mask = d
                            .join("masks_png")
                            .join(img.file_name().unwrap_or_default());
                        ensure!(mask.is_file(), "missing LoveDA mask {}", mask.display());
                        Ok((img, Some(mask)))
                    })
                    .collect()
            };
            Ok(Source {
                train: split("Train")?,
                test: split("Val")?,
                masks: MaskCoding::loveda(ignore),
            })
        }
        other => {
            bail!("unknown data.format `{other}`: use dubai, potsdam, loveda-urban or loveda-rural")
        }
    }
}
