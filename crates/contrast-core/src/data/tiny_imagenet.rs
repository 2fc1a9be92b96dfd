//! Tiny-ImageNet as distributed for CS231n (`tiny-imagenet-200/`, see
//! `datasets/tiny-imagenet.toml`): `train/<wnid>/images/*.JPEG` and a flat `val/images/` folder
//! labelled by `val/val_annotations.txt` (`file<TAB>wnid<TAB>box…`). Class index = position of
//! the wnid among the sorted train folders (torchvision `ImageFolder`, as the official code's
//! loader on a re-arranged copy).

use super::dataset::{InMemoryDataset, OnCorrupt};
use super::folder::decode_all;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

fn classes(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("train");
    let mut c: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    c.sort();
    if c.is_empty() {
        bail!("{}: no class folders", dir.display());
    }
    Ok(c)
}

/// Load the `train` or `val` split of a `tiny-imagenet-200` folder; a file that fails to decode
/// stops the load naming it, or is left out and counted ([`OnCorrupt`]).
pub fn load_tiny_imagenet(
    root: &Path,
    split: &str,
    on_corrupt: OnCorrupt,
) -> Result<InMemoryDataset> {
    let classes = classes(root)?;
    let index = |w: &str| classes.binary_search_by(|c| c.as_str().cmp(w)).ok();
    let mut samples = Vec::new();
    match split {
        "train" => {
            for (ci, c) in classes.iter().enumerate() {
                let dir = root.join("train").join(c).join("images");
                let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .with_context(|| format!("listing {}", dir.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|x| x.eq_ignore_ascii_case("jpeg"))
                    })
                    .collect();
                files.sort();
                samples.extend(files.into_iter().map(|p| (p, ci as i64)));
            }
        }
        "val" => {
            let ann = root.join("val").join("val_annotations.txt");
            let text = std::fs::read_to_string(&ann)
                .with_context(|| format!("reading {}", ann.display()))?;
            for (ln, line) in text.lines().enumerate() {
                let mut f = line.split('\t');
                let (Some(file), Some(wnid)) = (f.next(), f.next()) else {
                    bail!("{}:{}: expected `file<TAB>wnid`", ann.display(), ln + 1);
                };
                let Some(ci) = index(wnid) else {
                    bail!("{}:{}: unknown class `{wnid}`", ann.display(), ln + 1);
                };
                samples.push((root.join("val").join("images").join(file), ci as i64));
            }
            samples.sort();
        }
        other => bail!("Tiny-ImageNet split `{other}`: use train or val"),
    }
    if samples.is_empty() {
        bail!("{}: no `{split}` images", root.display());
    }
    decode_all(&root.join(split), samples, classes, on_corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::Dataset;

    #[test]
    fn reads_the_cs231n_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let save = |p: PathBuf, v: f64| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let img = tch::Tensor::full([3, 4, 4], v, (tch::Kind::Uint8, tch::Device::Cpu));
            tch::vision::image::save(&img, &p).unwrap();
        };
        for (w, v) in [("n02", 20.0), ("n01", 10.0)] {
            for i in 0..2 {
                save(root.join(format!("train/{w}/images/{w}_{i}.JPEG")), v);
            }
        }
        save(root.join("val/images/val_0.JPEG"), 20.0);
        save(root.join("val/images/val_1.JPEG"), 10.0);
        std::fs::write(
            root.join("val/val_annotations.txt"),
            "val_0.JPEG\tn02\t0\t0\t3\t3\nval_1.JPEG\tn01\t0\t0\t3\t3\n",
        )
        .unwrap();
        let train = load_tiny_imagenet(root, "train", OnCorrupt::Stop).unwrap();
        assert_eq!(train.len(), 4);
        assert_eq!(train.classes(), &["n01".to_string(), "n02".to_string()]);
        assert_eq!(train.labels(), &[0, 0, 1, 1]);
        let val = load_tiny_imagenet(root, "val", OnCorrupt::Stop).unwrap();
        assert_eq!(val.labels(), &[1, 0]);
        assert!(load_tiny_imagenet(root, "test", OnCorrupt::Stop).is_err());
    }
}
