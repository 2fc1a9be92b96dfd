//! Feature extraction: a frozen model, evaluation mode, no gradient, batch by batch.
//!
//! ```no_run
//! # use contrast_core::eval::features::extract_features_from_tensors;
//! # fn demo(model: &contrast_core::nn::resnet::ResNet, x: &tch::Tensor, y: &tch::Tensor) -> anyhow::Result<()> {
//! // x: [N, 3, 32, 32] images, y: [N] labels → f: [N, 512]
//! let f = extract_features_from_tensors(model, x, y, 256, tch::Device::Cpu)?;
//! # Ok(()) }
//! ```

use anyhow::{ensure, Context, Result};
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

/// Features with their labels, row `i` of one belonging to entry `i` of the other.
#[derive(Debug)]
pub struct Features {
    /// `[N, D]`, float.
    pub features: Tensor,
    /// `[N]`, int64.
    pub labels: Tensor,
}

/// Run `forward` over `batches` of `(images, labels)` under `no_grad`, moving each image batch
/// to `device` and each output to `out_device`, and concatenate: `[N, D]` features and `[N]`
/// labels. `forward` must put the model in evaluation mode itself (pass `train = false`);
/// [`extract_features`] does that for any [`ModuleT`]. Outputs with more than two dimensions
/// are flattened to `[B, D]`.
pub fn extract_with<I, F>(
    batches: I,
    device: Device,
    out_device: Device,
    mut forward: F,
) -> Result<Features>
where
    I: IntoIterator<Item = Result<(Tensor, Tensor)>>,
    F: FnMut(&Tensor) -> Result<Tensor>,
{
    let mut feats = Vec::new();
    let mut labels = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for (i, batch) in batches.into_iter().enumerate() {
            let (x, y) = batch.with_context(|| format!("loading batch {i}"))?;
            ensure!(
                x.size().first() == y.size().first(),
                "batch {i}: {:?} images but {:?} labels",
                x.size().first(),
                y.size()
            );
            let f = forward(&x.to_device(device)).with_context(|| format!("batch {i}"))?;
            ensure!(
                f.size().first() == x.size().first(),
                "batch {i}: the model returned {:?} for {:?} images",
                f.size(),
                x.size()
            );
            let f = if f.dim() > 2 { f.flatten(1, -1) } else { f };
            feats.push(f.detach().to_device(out_device));
            labels.push(y.to_kind(Kind::Int64).to_device(out_device));
        }
        Ok(())
    })?;
    ensure!(!feats.is_empty(), "no batches to extract features from");
    Ok(Features {
        features: Tensor::cat(&feats, 0),
        labels: Tensor::cat(&labels, 0),
    })
}

/// [`extract_with`] for a [`ModuleT`] run with `train = false`; features stay on `device`.
pub fn extract_features<M, I>(model: &M, batches: I, device: Device) -> Result<Features>
where
    M: ModuleT + ?Sized,
    I: IntoIterator<Item = Result<(Tensor, Tensor)>>,
{
    extract_with(batches, device, device, |x| Ok(model.forward_t(x, false)))
}

/// [`extract_features`] over in-memory `images` `[N, ...]` and `labels` `[N]`, in batches of
/// `batch_size`.
pub fn extract_features_from_tensors<M>(
    model: &M,
    images: &Tensor,
    labels: &Tensor,
    batch_size: i64,
    device: Device,
) -> Result<Features>
where
    M: ModuleT + ?Sized,
{
    ensure!(batch_size > 0, "Illegal batch size {batch_size}");
    let n = images.size().first().copied().unwrap_or(0);
    ensure!(
        labels.size() == [n],
        "{n} images but labels of shape {:?}",
        labels.size()
    );
    let batches = (0..n).step_by(batch_size as usize).map(|s| {
        let len = batch_size.min(n - s);
        Ok((images.narrow(0, s, len), labels.narrow(0, s, len)))
    });
    extract_features(model, batches, device)
}

/// Where each of `n` items (index order) sits among the rows that `world` ranks gather, rank
/// after rank, when every rank holds its [`crate::dist::Shard::range`] of each batch of `batch`:
/// `gathered.index_select(0, order)` is in index order.
pub fn gathered_order(n: usize, batch: usize, world: usize) -> Vec<i64> {
    let held: Vec<usize> = (0..world)
        .flat_map(|rank| {
            let s = crate::dist::Shard { rank, world };
            (0..n.div_ceil(batch)).flat_map(move |j| {
                let first = j * batch;
                s.range(batch.min(n - first)).map(move |i| first + i)
            })
        })
        .collect();
    let mut at = vec![0i64; n];
    for (row, &item) in held.iter().enumerate() {
        at[item] = row as i64;
    }
    at
}

/// The batch of [`embed_dataset`]'s passes.
const EVAL_BATCH: usize = 256;

/// The loader settings of [`embed_dataset`]: the run seed (the recipe's random stream) and the
/// data settings of the method's config.
#[derive(Debug, Clone, Copy)]
pub struct EvalLoader {
    pub seed: u64,
    pub prefetch: usize,
    pub threads: usize,
}

/// Embeddings of every image of `ds` in index order through `recipe` (its random stream of
/// `epoch`; one view, the first), computed by `forward` under `no_grad` in batches of 256 and
/// gathered on the CPU: `[N, D]` features and `[N]` labels. The frozen feature pass of every
/// natural-image method's kNN monitor and linear probe.
///
/// Inside [`crate::dist::on_every_rank`] each rank embeds its rows of every batch
/// ([`crate::dist::eval_shard`]) and every rank receives the whole batch's features and labels,
/// in index order: the same result, the embedding work divided by the number of ranks.
pub fn embed_dataset(
    ds: std::sync::Arc<dyn crate::data::dataset::Dataset>,
    recipe: crate::data::augment::Recipe,
    loader: EvalLoader,
    epoch: u64,
    device: Device,
    forward: impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    use crate::data::pipeline::{Loader, LoaderConfig};
    let n = ds.len();
    let loader = Loader::new(
        ds,
        recipe,
        LoaderConfig {
            batch_size: EVAL_BATCH,
            shuffle: false,
            drop_last: false,
            seed: loader.seed,
            prefetch: loader.prefetch.max(1),
            threads: loader.threads,
            shard: crate::dist::eval_shard(),
        },
    )?;
    let batches = loader.epoch_from(epoch, 0).map(|b| {
        let mut b = b?;
        Ok((b.views.swap_remove(0), b.labels))
    });
    let f = extract_with(batches, device, Device::Cpu, forward)?;
    let shard = crate::dist::eval_shard();
    if shard.world == 1 {
        return Ok((f.features, f.labels));
    }
    let order = Tensor::from_slice(&gathered_order(n, EVAL_BATCH, shard.world));
    let all = |t: &Tensor| -> Result<Tensor> {
        let t = crate::dist::gather_rows(t)?;
        anyhow::ensure!(
            t.size()[0] == n as i64,
            "the ranks embedded {} of {n} images",
            t.size()[0]
        );
        Ok(t.index_select(0, &order))
    };
    Ok((all(&f.features)?, all(&f.labels)?))
}

#[cfg(test)]
mod tests {
    use super::gathered_order;
    use crate::dist::Shard;

    /// Rows gathered rank after rank (each rank its share of every batch, short last batch
    /// included) come back in index order.
    #[test]
    fn gathered_rows_return_to_index_order() {
        let cases: [(usize, usize, usize); 5] = [
            (10, 4, 2),
            (11, 4, 3),
            (7, 256, 2),
            (600, 256, 4),
            (3, 2, 4),
        ];
        for (n, batch, world) in cases {
            let gathered: Vec<usize> = (0..world)
                .flat_map(|rank| {
                    (0..n.div_ceil(batch)).flat_map(move |j| {
                        let first = j * batch;
                        Shard { rank, world }
                            .range(batch.min(n - first))
                            .map(move |i| first + i)
                    })
                })
                .collect();
            assert_eq!(gathered.len(), n);
            let order = gathered_order(n, batch, world);
            let back: Vec<usize> = order.iter().map(|&r| gathered[r as usize]).collect();
            assert_eq!(
                back,
                (0..n).collect::<Vec<_>>(),
                "n {n}, batch {batch}, world {world}"
            );
        }
    }
}
