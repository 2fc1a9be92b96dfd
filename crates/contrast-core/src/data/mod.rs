//! Data: the [`Dataset`] trait, loaders for the formats the methods read (CIFAR-10/100 and
//! STL-10 binaries, image folders), torchvision-equivalent 2D augmentations, and a parallel,
//! deterministic, prefetching batch pipeline.
//!
//! Flow: a loader decodes a whole split into one contiguous `uint8` buffer `[N, H, W, C]`
//! ([`InMemoryDataset`]), or, for image folders above a size threshold (ImageNet), lists the
//! files and decodes each sample in the loader's threads ([`stream`], memory bounded by the
//! prefetch depth); a [`Recipe`] describes the views of one sample as lists of
//! [`Op`]s; a [`Loader`] shuffles, augments every sample on a rayon pool (one ChaCha stream per
//! `(seed, epoch, sample index)`, so results do not depend on the thread count or the batch
//! split) and hands out NCHW `float32` tensors per view from a bounded background queue.
//!
//! ```no_run
//! use contrast_core::data::{folder::load_image_folder, Loader, LoaderConfig, Recipe};
//! use std::sync::Arc;
//! # fn main() -> anyhow::Result<()> {
//! let train = Arc::new(load_image_folder("data/cifar10/train")?); // [50000, 32, 32, 3] u8
//! let cfg = LoaderConfig { batch_size: 512, seed: 0, threads: 1, ..LoaderConfig::default() };
//! let loader = Loader::new(train, Recipe::byol(32, 0.08)?, cfg)?;
//! for epoch in 0..2 {
//!     for batch in loader.epoch(epoch) {
//!         let batch = batch?;
//!         let (v1, v2) = (&batch.views[0], &batch.views[1]); // [512, 3, 32, 32] f32 each
//!         # let _ = (v1, v2);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Threads on a small machine
//! Augmentation runs on the loader's own rayon pool (`LoaderConfig::threads`), libtorch uses its
//! intra-op OpenMP pool (`tch::set_num_threads`). They compete for the same cores: on a 2-core
//! CPU-only machine use 1 rayon thread + 1 libtorch thread while training (the model step and
//! the next batch then overlap without contention), and give the pool both cores for data-only
//! work (evaluation feature extraction excepted). With a GPU, the CPU does only data work: give
//! the pool every core and libtorch 1 thread. Throughput (`benches/benches/augment.rs`): the
//! two-view BYOL recipe runs at ≈ 5,900 images/s at 32 px and ≈ 55 images/s at 224 px with 2
//! threads on the (shared) development VM, 43–62× torchvision + DataLoader(2 workers) at 32 px.

pub mod augment;
pub mod cifar;
pub mod dataset;
pub mod dev;
pub mod folder;
pub mod pil_blur;
pub mod pipeline;
pub mod simd;
pub mod splits;
pub mod stl10;
pub mod stream;
pub mod subset;
pub mod tiny_imagenet;

pub use augment::{ColorJitter, Interpolation, Op, Recipe, ViewSpec};
pub use dataset::{Dataset, ImageRef, InMemoryDataset, OnCorrupt, Skipped};
pub use dev::{dev_data, dev_data_root};
pub use pipeline::{Batch, Loader, LoaderConfig};
pub use stream::{open_image_folder, StreamMode, StreamPolicy, StreamingFolder};
