//! STL-10 in its official binary format (<https://cs.stanford.edu/~acoates/stl10/>,
//! `stl10_binary/`): `{train,test,unlabeled}_X.bin` hold 96×96×3 `uint8` images, each stored
//! channel by channel and, inside a channel, **column-major** (the official reader does
//! `reshape(-1, 3, 96, 96)` then `transpose(0, 3, 2, 1)`); `{train,test}_y.bin` hold one label
//! byte per image, 1…10. We convert to HWC and labels `0…9`; unlabelled images get `-1`.

use super::dataset::InMemoryDataset;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::Path;

/// Side of an STL-10 image.
pub const SIDE: usize = 96;
const PLANE: usize = SIDE * SIDE;
const RECORD: usize = 3 * PLANE;

/// STL-10 class names in label order (as `class_names.txt`).
pub const STL10_CLASSES: [&str; 10] = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
];

/// The three STL-10 splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stl10Split {
    /// 5,000 labelled images.
    Train,
    /// 8,000 labelled images.
    Test,
    /// 100,000 unlabelled images (label `-1`); 2.6 GiB decoded.
    Unlabeled,
}

/// Read an `*_X.bin` file: pixels `[N, 96, 96, 3]` (HWC). A size that is not a whole number of
/// 27,648-byte records is an error naming the file and the record cut short.
pub fn read_images(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if raw.is_empty() || raw.len() % RECORD != 0 {
        bail!(
            "{}: truncated or not an STL-10 image file: record {} has {} of {RECORD} bytes",
            path.display(),
            raw.len() / RECORD,
            raw.len() % RECORD
        );
    }
    let mut out = vec![0u8; raw.len()];
    out.par_chunks_exact_mut(RECORD)
        .zip(raw.par_chunks_exact(RECORD))
        .for_each(|(o, r)| {
            // raw[c][x][y] (column-major planes) → o[y][x][c].
            for c in 0..3 {
                for x in 0..SIDE {
                    let col = &r[c * PLANE + x * SIDE..c * PLANE + (x + 1) * SIDE];
                    for (y, &v) in col.iter().enumerate() {
                        o[(y * SIDE + x) * 3 + c] = v;
                    }
                }
            }
        });
    Ok(out)
}

/// Read a `*_y.bin` file: labels `1…10` → `0…9`.
pub fn read_labels(path: &Path) -> Result<Vec<i64>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    raw.iter()
        .enumerate()
        .map(|(i, &l)| {
            if (1..=10).contains(&l) {
                Ok(l as i64 - 1)
            } else {
                bail!(
                    "{}: record {i}: label {l} is not in 1..=10 (corrupt file?)",
                    path.display()
                )
            }
        })
        .collect()
}

/// One STL-10 split from `dir` (the `stl10_binary` folder).
pub fn load_stl10(dir: impl AsRef<Path>, split: Stl10Split) -> Result<InMemoryDataset> {
    let dir = dir.as_ref();
    let name = match split {
        Stl10Split::Train => "train",
        Stl10Split::Test => "test",
        Stl10Split::Unlabeled => "unlabeled",
    };
    let xf = dir.join(format!("{name}_X.bin"));
    let pixels = read_images(&xf)?;
    let n = pixels.len() / RECORD;
    let labels = if split == Stl10Split::Unlabeled {
        vec![-1; n]
    } else {
        let yf = dir.join(format!("{name}_y.bin"));
        let l = read_labels(&yf)?;
        if l.len() != n {
            bail!(
                "{} has {} labels but {} has {n} images",
                yf.display(),
                l.len(),
                xf.display()
            );
        }
        l
    };
    let classes = STL10_CLASSES.iter().map(|s| s.to_string()).collect();
    InMemoryDataset::from_nhwc(pixels, SIDE, SIDE, 3, labels, classes)
}
