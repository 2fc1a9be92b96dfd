//! The train / test splits of an image-classification data set by format name, optionally
//! reduced to class-balanced subsets: the one place the method crates' `data.format`,
//! `data.root`, `data.test_split`, `data.train_subset` and `data.test_subset` settings are read.

use super::cifar::{load_cifar10, load_cifar100, Cifar100Label};
use super::dataset::Dataset;
use super::stl10::{load_stl10, Stl10Split};
use super::stream::{open_image_folder, StreamPolicy};
use super::subset::Subset;
use super::tiny_imagenet::load_tiny_imagenet;
use anyhow::{bail, Result};
use std::path::Path;
use std::sync::Arc;

/// Formats [`load_splits`] understands.
pub const FORMATS: &[&str] = &[
    "image-folder",
    "cifar10",
    "cifar100",
    "stl10",
    "tiny-imagenet",
];

/// What to load.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSpec<'a> {
    /// One of [`FORMATS`]: `image-folder` (`<root>/{train,<test_split>}/<class>/*`), `cifar10` /
    /// `cifar100` (official binary batches; CIFAR-100 fine labels), `stl10` (official binary:
    /// `train` = the 5,000 labelled images, `test`), `tiny-imagenet` (CS231n layout, test split
    /// `val`).
    pub format: &'a str,
    pub root: &'a str,
    /// Evaluation split folder (`image-folder`, `tiny-imagenet`).
    pub test_split: &'a str,
    /// Training images kept (0 = all), class-balanced, the same for a given seed.
    pub train_subset: usize,
    /// Test images kept (0 = all), class-balanced.
    pub test_subset: usize,
    pub seed: u64,
    /// The method name, for the error message about an empty root.
    pub method: &'a str,
    /// In memory or streamed, for `image-folder` splits (a method's `data.stream`,
    /// `data.stream_above_mib`, `data.scaled_decode`); the environment's overrides
    /// ([`StreamPolicy::with_env`]) apply on top. Its `on_corrupt` (`data.on_corrupt`) applies
    /// to the file-based formats (`image-folder`, `tiny-imagenet`); the binary formats (CIFAR,
    /// STL-10) are read whole and stop at a bad file.
    pub stream: StreamPolicy,
}

/// Load the train and test splits of `spec`. `image-folder` splits are decoded into memory or
/// streamed as `spec.stream` decides, with the environment's overrides (by estimated decoded
/// size unless forced, default threshold [`super::stream::DEFAULT_STREAM_ABOVE_MIB`] MiB;
/// ImageNet streams).
pub fn load_splits(spec: &SplitSpec) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    let policy = &spec.stream.with_env()?;
    if spec.root.is_empty() {
        bail!(
            "data.root is empty: pass --set data.root=<folder> or use `cargo xtask reproduce {}`",
            spec.method
        );
    }
    let root = Path::new(spec.root);
    let (train, test): (Arc<dyn Dataset>, Arc<dyn Dataset>) = match spec.format {
        "image-folder" => (
            open_image_folder(root.join("train"), policy)?.into_dataset(),
            open_image_folder(root.join(spec.test_split), policy)?.into_dataset(),
        ),
        "cifar10" => (
            Arc::new(load_cifar10(root, true)?),
            Arc::new(load_cifar10(root, false)?),
        ),
        "cifar100" => (
            Arc::new(load_cifar100(root, true, Cifar100Label::Fine)?),
            Arc::new(load_cifar100(root, false, Cifar100Label::Fine)?),
        ),
        // the 5,000 labelled training images and the 8,000 test images (`stl10_binary/`)
        "stl10" => (
            Arc::new(load_stl10(root, Stl10Split::Train)?),
            Arc::new(load_stl10(root, Stl10Split::Test)?),
        ),
        "tiny-imagenet" => (
            Arc::new(load_tiny_imagenet(root, "train", policy.on_corrupt)?),
            Arc::new(load_tiny_imagenet(
                root,
                spec.test_split,
                policy.on_corrupt,
            )?),
        ),
        other => bail!("unknown data.format `{other}`: use {}", FORMATS.join(", ")),
    };
    let train: Arc<dyn Dataset> = match spec.train_subset {
        0 => train,
        n => Arc::new(Subset::balanced(train, n, spec.seed)?),
    };
    let test: Arc<dyn Dataset> = match spec.test_subset {
        0 => test,
        n => Arc::new(Subset::balanced(test, n, spec.seed ^ 0x5eed)?),
    };
    Ok((train, test))
}
