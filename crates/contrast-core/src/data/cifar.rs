//! CIFAR-10 / CIFAR-100 in their official binary format
//! (<https://www.cs.toronto.edu/~kriz/cifar.html>, "binary version").
//!
//! Every record is `label bytes` + 3072 pixel bytes: the 1024 red values of the 32×32 image in
//! row-major order, then the 1024 green, then the 1024 blue. CIFAR-10 records have one label
//! byte (3073 bytes; files `data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin` in
//! `cifar-10-batches-bin/`); CIFAR-100 records have the coarse then the fine label (3074 bytes;
//! `train.bin`, `test.bin` in `cifar-100-binary/`). Pixels are converted to HWC on load.

use super::dataset::InMemoryDataset;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Side of a CIFAR image.
pub const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;
const PIXELS: usize = 3 * PLANE;

/// CIFAR-10 class names, in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
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

/// Which CIFAR-100 label to use as the sample label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cifar100Label {
    /// The 20 superclasses (first label byte).
    Coarse,
    /// The 100 classes (second label byte).
    Fine,
}

/// Read one binary file of `label_bytes + 3072`-byte records. Returns the pixels `[N, 32, 32, 3]`
/// (HWC) and, per record, the label byte at `label_index`. Every label must be `< num_classes`.
/// A size that is not a whole number of records is an error naming the file and the record
/// index that is cut short.
pub fn read_records(
    path: &Path,
    label_bytes: usize,
    label_index: usize,
    num_classes: usize,
) -> Result<(Vec<u8>, Vec<i64>)> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let rec = label_bytes + PIXELS;
    if raw.is_empty() {
        bail!("{}: empty file (no {rec}-byte records)", path.display());
    }
    if raw.len() % rec != 0 {
        bail!(
            "{}: truncated or not a CIFAR binary file: record {} has {} of {rec} bytes",
            path.display(),
            raw.len() / rec,
            raw.len() % rec
        );
    }
    let n = raw.len() / rec;
    let mut pixels = vec![0u8; n * PIXELS];
    let mut labels = Vec::with_capacity(n);
    for (i, (r, out)) in raw
        .chunks_exact(rec)
        .zip(pixels.chunks_exact_mut(PIXELS))
        .enumerate()
    {
        if label_bytes == 2 && r[0] >= 20 {
            bail!(
                "{}: record {i}: coarse label {} is not below 20 (corrupt file?)",
                path.display(),
                r[0]
            );
        }
        let label = r[label_index] as usize;
        if label >= num_classes {
            bail!(
                "{}: record {i}: label {label} is not below {num_classes} (corrupt file?)",
                path.display()
            );
        }
        labels.push(label as i64);
        let planes = &r[label_bytes..];
        // CHW planes → HWC.
        for p in 0..PLANE {
            out[3 * p] = planes[p];
            out[3 * p + 1] = planes[PLANE + p];
            out[3 * p + 2] = planes[2 * PLANE + p];
        }
    }
    Ok((pixels, labels))
}

fn load(
    files: &[std::path::PathBuf],
    label_bytes: usize,
    label_index: usize,
    classes: Vec<String>,
) -> Result<InMemoryDataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let (p, l) = read_records(f, label_bytes, label_index, classes.len())?;
        pixels.extend_from_slice(&p);
        labels.extend_from_slice(&l);
    }
    InMemoryDataset::from_nhwc(pixels, SIDE, SIDE, 3, labels, classes)
}

fn names_or(dir: &Path, file: &str, n: usize) -> Vec<String> {
    let from_file: Vec<String> = std::fs::read_to_string(dir.join(file))
        .map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if from_file.len() == n {
        from_file
    } else {
        (0..n).map(|i| i.to_string()).collect()
    }
}

/// CIFAR-10 from `dir` (the `cifar-10-batches-bin` folder): the 50,000 training images
/// (`data_batch_1..5.bin`, in file order) or the 10,000 test images (`test_batch.bin`).
pub fn load_cifar10(dir: impl AsRef<Path>, train: bool) -> Result<InMemoryDataset> {
    let dir = dir.as_ref();
    let files: Vec<_> = if train {
        (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .collect()
    } else {
        vec![dir.join("test_batch.bin")]
    };
    let classes = CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
    load(&files, 1, 0, classes).with_context(|| format!("loading CIFAR-10 from {}", dir.display()))
}

/// CIFAR-100 from `dir` (the `cifar-100-binary` folder): `train.bin` (50,000) or `test.bin`
/// (10,000), labelled with the fine (100) or coarse (20) label. Class names come from
/// `fine_label_names.txt` / `coarse_label_names.txt` when present, else they are the indices.
pub fn load_cifar100(
    dir: impl AsRef<Path>,
    train: bool,
    label: Cifar100Label,
) -> Result<InMemoryDataset> {
    let dir = dir.as_ref();
    let file = dir.join(if train { "train.bin" } else { "test.bin" });
    let (index, n, names) = match label {
        Cifar100Label::Coarse => (0, 20, "coarse_label_names.txt"),
        Cifar100Label::Fine => (1, 100, "fine_label_names.txt"),
    };
    load(&[file], 2, index, names_or(dir, names, n))
        .with_context(|| format!("loading CIFAR-100 from {}", dir.display()))
}
