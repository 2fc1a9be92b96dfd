//! The batch pipeline: shuffle, augment every sample in parallel (rayon, per sample), and
//! prefetch the next batches on a background thread while the model trains.
//!
//! Determinism: sample `i` of epoch `e` is augmented with [`sample_rng`]`(seed, e, i)` and the
//! epoch's order is a Fisher–Yates shuffle seeded from `(seed, e)`, so a batch's tensors depend
//! only on `(seed, epoch, batch position)`: not on the number of threads, the prefetch depth or
//! whether the epoch was resumed half-way ([`Loader::batch`]).

use super::augment::{sample_rng, Recipe};
use super::dataset::Dataset;
use crate::dist::Shard;
use anyhow::{ensure, Context, Result};
use rand::Rng;
use rayon::prelude::*;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use tch::{Device, Kind, Tensor};

/// Loader settings.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Reshuffle every epoch (else dataset order).
    pub shuffle: bool,
    /// Drop the last incomplete batch (usual for contrastive pretraining).
    pub drop_last: bool,
    /// Base seed of the shuffles and augmentations.
    pub seed: u64,
    /// Batches prepared ahead of the consumer (bounded queue capacity, ≥ 1).
    pub prefetch: usize,
    /// Rayon threads of the loader's own pool (0 = all cores). See the module docs of
    /// [`crate::data`] for the split with libtorch's threads.
    pub threads: usize,
    /// The rows of every (global) batch this process takes: [`Shard::current`] for a training
    /// loader (the rank's slice in a distributed run), the default (everything) for evaluation.
    /// `batch_size` stays the global batch; augmentations are seeded per sample, so a sample's
    /// views do not depend on the shard.
    pub shard: Shard,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            shuffle: true,
            drop_last: true,
            seed: 0,
            prefetch: 2,
            threads: 0,
            shard: Shard::default(),
        }
    }
}

/// One batch: a `float32` tensor `[B, 3, S_v, S_v]` per view (on the CPU; move it with
/// `to_device`), the labels `[B]` (`int64`) and the dataset indices `[B]` (`int64`).
#[derive(Debug)]
pub struct Batch {
    pub views: Vec<Tensor>,
    pub labels: Tensor,
    pub indices: Tensor,
}

impl Batch {
    /// The batch by name (`view0`, `view1`, …, `labels`, `indices`), e.g. for `--record`.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .views
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("view{i}"), t.shallow_clone()))
            .collect();
        v.push(("labels".into(), self.labels.shallow_clone()));
        v.push(("indices".into(), self.indices.shallow_clone()));
        v
    }
}

/// A data set + a recipe + a thread pool: produces augmented batches.
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    recipe: Arc<Recipe>,
    cfg: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
}

impl Loader {
    /// The files its data set skipped as corrupt (`data.on_corrupt = "skip"`), if it skips.
    pub fn skipped(&self) -> Option<super::dataset::Skipped> {
        self.dataset.skipped()
    }

    pub fn new(dataset: Arc<dyn Dataset>, recipe: Recipe, cfg: LoaderConfig) -> Result<Self> {
        ensure!(cfg.batch_size > 0, "batch_size must be positive");
        cfg.shard.local_batch(cfg.batch_size)?;
        ensure!(cfg.prefetch > 0, "prefetch must be at least 1");
        ensure!(!recipe.views.is_empty(), "the recipe has no views");
        ensure!(!dataset.is_empty(), "the data set is empty");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .thread_name(|i| format!("contrast-data-{i}"))
            .build()
            .context("building the loader's thread pool")?;
        Ok(Self {
            dataset,
            recipe: Arc::new(recipe),
            cfg,
            pool: Arc::new(pool),
        })
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.dataset.len();
        if self.cfg.drop_last {
            n / self.cfg.batch_size
        } else {
            n.div_ceil(self.cfg.batch_size)
        }
    }

    /// The sample order of `epoch` (a permutation of `0..len` when shuffling).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        order(self.dataset.len(), self.cfg.shuffle, self.cfg.seed, epoch)
    }

    /// Batch `b` of `epoch`, computed now on the loader's pool (the background iterator calls
    /// this; use it directly to resume mid-epoch or in benches).
    pub fn batch(&self, epoch: u64, b: usize) -> Result<Batch> {
        let order = self.order(epoch);
        make_batch(
            &*self.dataset,
            &self.recipe,
            &self.pool,
            self.cfg.seed,
            epoch,
            &order,
            b,
            self.cfg.batch_size,
            self.cfg.shard,
        )
    }

    /// Iterate over the batches of `epoch`, starting at batch `start` (0 for a full epoch),
    /// produced on a worker thread at most `prefetch` batches ahead.
    pub fn epoch_from(&self, epoch: u64, start: usize) -> EpochIter {
        let (tx, rx) = sync_channel(self.cfg.prefetch);
        let dataset = Arc::clone(&self.dataset);
        let recipe = Arc::clone(&self.recipe);
        let pool = Arc::clone(&self.pool);
        let cfg = self.cfg.clone();
        let nb = self.batches_per_epoch();
        let handle = std::thread::Builder::new()
            .name("contrast-prefetch".into())
            .spawn(move || {
                let order = order(dataset.len(), cfg.shuffle, cfg.seed, epoch);
                for b in start..nb {
                    let r = make_batch(
                        &*dataset,
                        &recipe,
                        &pool,
                        cfg.seed,
                        epoch,
                        &order,
                        b,
                        cfg.batch_size,
                        cfg.shard,
                    );
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        break; // consumer gone, or error delivered
                    }
                }
            })
            .expect("spawning the prefetch thread");
        EpochIter {
            rx: Some(rx),
            handle: Some(handle),
        }
    }

    /// Iterate over all batches of `epoch` (see [`Loader::epoch_from`]).
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        self.epoch_from(epoch, 0)
    }
}

/// Batches of one epoch, prefetched by a background thread. Dropping it stops the thread.
pub struct EpochIter {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        // Closing the receiver makes the producer's next `send` fail, so it stops.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn order(n: usize, shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = sample_rng(seed, epoch, u64::MAX);
        for i in (1..n).rev() {
            let j = rng.gen_range(0..=i);
            idx.swap(i, j);
        }
    }
    idx
}

/// The elements of a CPU `float32` tensor created by [`make_batch`], mutably, for as long as
/// the tensor is borrowed.
fn float_slice_mut(t: &mut Tensor) -> &mut [f32] {
    assert!(
        t.kind() == Kind::Float && t.device() == Device::Cpu && t.is_contiguous(),
        "float_slice_mut needs a contiguous CPU float32 tensor"
    );
    let n = t.numel();
    // SAFETY: `t` is a contiguous CPU float32 tensor of `n` elements (checked above) that
    // `make_batch` allocated itself, so no other tensor shares its storage; the slice borrows
    // `t` mutably, so the storage outlives it and nothing else touches it meanwhile.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, n) }
}

#[allow(clippy::too_many_arguments)]
fn make_batch(
    dataset: &dyn Dataset,
    recipe: &Recipe,
    pool: &rayon::ThreadPool,
    seed: u64,
    epoch: u64,
    order: &[usize],
    b: usize,
    batch_size: usize,
    shard: Shard,
) -> Result<Batch> {
    let lo = b * batch_size;
    ensure!(lo < order.len(), "batch {b} is past the end of the epoch");
    let global = &order[lo..(lo + batch_size).min(order.len())];
    let idx = &global[shard.range(global.len())];
    let bs = idx.len();
    // One [B, 3, S_v, S_v] tensor per view, filled in place.
    let mut tensors: Vec<Tensor> = recipe
        .views
        .iter()
        .map(|v| {
            let s = v.size() as i64;
            Tensor::empty([bs as i64, 3, s, s], (Kind::Float, Device::Cpu))
        })
        .collect();
    // per_sample[i][v]: sample i's slot in view v's tensor.
    let mut per_sample: Vec<Vec<&mut [f32]>> = (0..bs).map(|_| Vec::new()).collect();
    for (t, v) in tensors.iter_mut().zip(&recipe.views) {
        let s = v.size();
        for (slot, chunk) in per_sample
            .iter_mut()
            .zip(float_slice_mut(t).chunks_exact_mut(3 * s * s))
        {
            slot.push(chunk);
        }
    }
    let labels: Vec<i64> = pool.install(|| {
        per_sample
            .into_par_iter()
            .zip(idx.par_iter())
            .map(|(mut outs, &i)| {
                // The draws depend on the image size only: taken from the header, they pick
                // the scale a streamed JPEG is decoded at (full size unless scaled decoding
                // is on), then the views are rendered from the decoded image.
                let mut rng = sample_rng(seed, epoch, i as u64);
                let mut draws = Vec::new();
                let (img, label, source) = dataset.get_scaled(i, &mut |h, w| {
                    draws = recipe.draw(h, w, &mut rng);
                    recipe.decode_denom(h, w, &draws)
                })?;
                recipe
                    .render(&img, source, &draws, &mut outs)
                    .with_context(|| format!("augmenting sample {i}"))?;
                Ok(label)
            })
            .collect::<Result<Vec<i64>>>()
    })?;
    let indices: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    Ok(Batch {
        views: tensors,
        labels: Tensor::from_slice(&labels),
        indices: Tensor::from_slice(&indices),
    })
}
