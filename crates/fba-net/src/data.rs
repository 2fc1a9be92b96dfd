//! The LA training / test data (official `code/dataloaders/dataset.py`): cases read once into
//! memory from the h5 files; training batches of `labeled_bs` labelled + the rest unlabelled
//! patches from the two-stream sampler, each `RandomRotFlip` → `RandomCrop(patch)`.

use crate::config::FbaNetConfig;
use anyhow::{bail, Context, Result};
use contrast_core::dist::Shard;
use contrast_core::train::{derive_seed, Progress};
use contrast_core::volume::augment3d::{
    random_crop, random_rot_flip, stack_images, stack_labels, TwoStreamSampler,
};
use contrast_core::volume::h5::LaHeart;
use contrast_core::volume::Case;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

/// Train and test cases of a config.
pub struct LaData {
    pub train: Vec<Case>,
    pub test: Vec<Case>,
    /// Indices of the labelled cases in `train` (the first `labeled`).
    pub labeled: Vec<usize>,
    pub unlabeled: Vec<usize>,
}

fn take(mut ids: Vec<String>, n: usize) -> Vec<String> {
    if n > 0 {
        ids.truncate(n);
    }
    ids
}

impl LaData {
    pub fn load(cfg: &FbaNetConfig) -> Result<Self> {
        if cfg.data.root.is_empty() {
            bail!("data.root is empty: pass --set data.root=<LA folder> or use `cargo xtask reproduce fba-net`");
        }
        let la = LaHeart::new(&cfg.data.root)?;
        let train_ids = take(la.list(&cfg.data.train_list)?, cfg.data.max_samples);
        let test_ids = take(la.list(&cfg.data.test_list)?, cfg.data.max_test);
        if cfg.data.labeled == 0 || cfg.data.labeled > train_ids.len() {
            bail!(
                "data.labeled = {} but the train list has {} cases",
                cfg.data.labeled,
                train_ids.len()
            );
        }
        let n = train_ids.len() + test_ids.len();
        let progress = Progress::new(n as u64, 0, "reading LA cases");
        let mut done = 0u64;
        let mut read = |ids: &[String]| -> Result<Vec<Case>> {
            ids.iter()
                .map(|id| {
                    let c = la.case(id).with_context(|| format!("LA case {id}"));
                    done += 1;
                    progress.update(done, id);
                    c
                })
                .collect()
        };
        let train = read(&train_ids)?;
        let test = read(&test_ids)?;
        progress.finish();
        let labeled = (0..cfg.data.labeled).collect();
        let unlabeled = (cfg.data.labeled..train.len()).collect();
        Ok(Self {
            train,
            test,
            labeled,
            unlabeled,
        })
    }

    /// The sampler of a variant: two streams (labelled share `labeled_bs`) for the
    /// semi-supervised variants, labelled cases only (the whole batch) for `supervised`.
    pub fn sampler(&self, cfg: &FbaNetConfig) -> Result<TwoStreamSampler> {
        let d = &cfg.data;
        if cfg.model.variant == "supervised" {
            TwoStreamSampler::new(
                self.labeled.clone(),
                vec![],
                d.batch_size.min(self.labeled.len()),
                0,
            )
        } else {
            if d.labeled_bs == 0 || d.labeled_bs >= d.batch_size {
                bail!(
                    "data.labeled_bs = {} must be in 1..batch_size ({})",
                    d.labeled_bs,
                    d.batch_size
                );
            }
            TwoStreamSampler::new(
                self.labeled.clone(),
                self.unlabeled.clone(),
                d.labeled_bs,
                d.batch_size - d.labeled_bs,
            )
        }
    }
}

/// A training batch: images `[B, 1, X, Y, Z]`, labels of the labelled part `[L, X, Y, Z]`.
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub n_labeled: usize,
}

impl Batch {
    /// This rank's rows of a global batch: its share of the labelled rows, then of the
    /// unlabelled ones (every rank draws the global batch, so the ranks together train on what
    /// one process trains on). Both streams must divide by the ranks.
    pub fn shard(self, s: Shard) -> Result<Batch> {
        if s.world == 1 {
            return Ok(self);
        }
        let (l, w, r) = (self.n_labeled as i64, s.world as i64, s.rank as i64);
        let u = self.images.size()[0] - l;
        if l % w != 0 || u % w != 0 {
            bail!(
                "a batch of {l} labelled and {u} unlabelled samples does not divide over {w} processes (data.labeled_bs and data.batch_size - data.labeled_bs must both divide by them)"
            );
        }
        let (lr, ur) = (l / w, u / w);
        Ok(Batch {
            images: Tensor::cat(
                &[
                    self.images.narrow(0, r * lr, lr),
                    self.images.narrow(0, l + r * ur, ur),
                ],
                0,
            ),
            labels: self.labels.narrow(0, r * lr, lr),
            n_labeled: lr as usize,
        })
    }
}

/// Augments the cases of one batch (`RandomRotFlip` + `RandomCrop`) with a per-step RNG
/// seeded with `derive_seed(seed, "augment", step)`, so a resumed run draws the same patches.
pub fn make_batch(
    data: &LaData,
    labeled: &[usize],
    unlabeled: &[usize],
    patch: [usize; 3],
    seed: u64,
    step: u64,
) -> Result<Batch> {
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, "augment", step));
    let mut cases = Vec::with_capacity(labeled.len() + unlabeled.len());
    for &i in labeled.iter().chain(unlabeled) {
        let c = random_rot_flip(&data.train[i], &mut rng);
        cases.push(random_crop(&c, patch, &mut rng)?);
    }
    let imgs: Vec<_> = cases.iter().map(|c| &c.image).collect();
    let labs: Vec<_> = cases[..labeled.len()].iter().map(|c| &c.label).collect();
    Ok(Batch {
        images: stack_images(&imgs)?,
        labels: stack_labels(&labs)?,
        n_labeled: labeled.len(),
    })
}
