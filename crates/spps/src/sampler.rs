//! The semantic sampler: exact cosine nearest neighbours over the whole (un-augmented) training
//! set, from embeddings of a frozen pretrained model, and the rule that keeps pairs (similarity
//! threshold and/or top-k, optionally mutual). The kept pairs are saved with their settings.
//!
//! Memory: the `[N, D]` float embeddings plus one `[B, N]` similarity block at a time
//! (`B = sampler.block_size` query rows) and its sort, see [`memory_bytes`]. Exact: every query row is compared with every image (one matmul per block).

use crate::config::SamplerConfig;
use anyhow::{bail, ensure, Context, Result};
use contrast_core::loss::normalize;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// One kept pair: image `j` is a semantic positive of anchor `i` with cosine similarity `sim`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub i: usize,
    pub j: usize,
    pub sim: f32,
}

/// A pair set with the settings that produced it (the on-disk JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairSet {
    /// Images in the set the indices refer to (the training split, in loader order).
    pub n: usize,
    /// Embedding width.
    pub dim: usize,
    /// Where the embeddings came from (run folder / checkpoint).
    pub source: String,
    pub settings: SamplerConfig,
    /// Directed pairs `i → j`, sorted by anchor, then by decreasing similarity.
    pub pairs: Vec<Pair>,
    /// Fraction of pairs with equal labels (report only; `None` when unlabelled).
    pub precision: Option<f64>,
}

impl PairSet {
    /// Partners of every anchor: `partners()[i]` = `[(j, sim)]`.
    pub fn partners(&self) -> Vec<Vec<(usize, f32)>> {
        let mut p = vec![Vec::new(); self.n];
        for pr in &self.pairs {
            if pr.i < self.n {
                p[pr.i].push((pr.j, pr.sim));
            }
        }
        p
    }

    /// Mean number of partners per image.
    pub fn pairs_per_image(&self) -> f64 {
        self.pairs.len() as f64 / self.n.max(1) as f64
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let s = serde_json::to_string(self)?;
        contrast_core::train::checkpoint::write_atomic(path, s.as_bytes())
            .with_context(|| format!("writing the pair file {}", path.display()))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path)
            .with_context(|| format!("reading the pair file {}", path.display()))?;
        let p: PairSet = serde_json::from_str(&s)
            .with_context(|| format!("parsing the pair file {}", path.display()))?;
        for pr in &p.pairs {
            ensure!(
                pr.i < p.n && pr.j < p.n && pr.i != pr.j,
                "pair file {}: pair ({}, {}) is out of range for {} images",
                path.display(),
                pr.i,
                pr.j,
                p.n
            );
        }
        Ok(p)
    }

    /// Fraction of pairs whose two images have the same label (`labels[i] ≥ 0`).
    pub fn label_precision(pairs: &[Pair], labels: &[i64]) -> Option<f64> {
        let (mut same, mut tot) = (0usize, 0usize);
        for p in pairs {
            let (a, b) = (labels.get(p.i)?, labels.get(p.j)?);
            if *a < 0 || *b < 0 {
                return None;
            }
            tot += 1;
            same += usize::from(a == b);
        }
        (tot > 0).then(|| same as f64 / tot as f64)
    }
}

/// Peak bytes of the exact search for `n` images of width `d` with `block` query rows: the
/// input and the L2-normalised embeddings (`2·n·d·4`, float32) plus one similarity block and
/// its stable descending sort (`block·n·(4 + 4 + 8)`: float32 similarities, sorted float32
/// values, int64 indices). The kept pairs themselves are small (`≤ n·top_k` entries).
pub fn memory_bytes(n: u64, d: u64, block: u64) -> u64 {
    2 * n * d * 4 + block * n * 16
}

/// Exact cosine kNN pair selection over `emb [N, D]` (rows need not be normalised).
///
/// For each anchor `i`: candidates = all `j ≠ i`, ranked by cosine similarity; keep the first
/// `top_k` (all when 0) whose similarity is `≥ threshold` (when set); with `mutual`, keep
/// `i → j` only if `j → i` was kept too. Ties in similarity go to the lower index.
pub fn select_pairs(emb: &Tensor, cfg: &SamplerConfig) -> Result<Vec<Pair>> {
    ensure!(
        emb.dim() == 2,
        "sampler embeddings must be [N, D], got {:?}",
        emb.size()
    );
    if cfg.top_k == 0 && cfg.threshold.is_none() {
        bail!(
            "sampler: set sampler.top_k > 0 and/or sampler.threshold (both unset keeps every pair)"
        );
    }
    if let Some(t) = cfg.threshold {
        ensure!(
            (-1.0..=1.0).contains(&t),
            "sampler.threshold must be a cosine in [-1, 1], got {t}"
        );
    }
    ensure!(cfg.block_size > 0, "sampler.block_size must be positive");
    let n = emb.size()[0];
    let e = normalize(&emb.to_kind(Kind::Float).to_device(Device::Cpu)); // [N, D]
    let et = e.transpose(0, 1); // [D, N] view, no copy
    let k = if cfg.top_k == 0 {
        n - 1
    } else {
        (cfg.top_k as i64).min(n - 1)
    };
    let mut pairs = Vec::new();
    if k <= 0 {
        return Ok(pairs);
    }
    let thr = cfg.threshold.unwrap_or(f64::NEG_INFINITY) as f32;
    let mut r0 = 0i64;
    while r0 < n {
        let b = (cfg.block_size as i64).min(n - r0);
        let mut sims = e.narrow(0, r0, b).matmul(&et); // [b, N]
        let rows = Tensor::arange(b, (Kind::Int64, Device::Cpu));
        let cols = &rows + r0;
        let sims = sims.index_put_(
            &[Some(rows), Some(cols)],
            &Tensor::from(f32::NEG_INFINITY),
            false,
        ); // self excluded
           // stable descending sort keeps the lower index first among equal similarities
        let (vals, idx) = sims.sort_stable(true, 1, true);
        let vals = vals.narrow(1, 0, k).contiguous();
        let idx = idx.narrow(1, 0, k).contiguous();
        let v: Vec<f32> = Vec::try_from(vals.view([-1]))?;
        let ix: Vec<i64> = Vec::try_from(idx.view([-1]))?;
        for r in 0..b as usize {
            for c in 0..k as usize {
                let s = v[r * k as usize + c];
                if s < thr {
                    break; // sorted: the rest are lower
                }
                pairs.push(Pair {
                    i: r0 as usize + r,
                    j: ix[r * k as usize + c] as usize,
                    sim: s,
                });
            }
        }
        r0 += b;
    }
    if cfg.mutual {
        let set: HashSet<(usize, usize)> = pairs.iter().map(|p| (p.i, p.j)).collect();
        pairs.retain(|p| set.contains(&(p.j, p.i)));
    }
    Ok(pairs)
}

/// Histogram of similarities over `[-1, 1]` in `bins` equal bins (counts).
pub fn histogram(sims: &[f32], bins: usize) -> Vec<u64> {
    let mut h = vec![0u64; bins.max(1)];
    let nb = h.len();
    for &s in sims {
        let x = ((s as f64 + 1.0) / 2.0 * nb as f64).floor();
        let b = (x.max(0.0) as usize).min(nb - 1);
        h[b] += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_formula() {
        // 50k CIFAR images, ResNet-18 features (512), blocks of 1024 rows: 1.024 GB
        assert_eq!(memory_bytes(50_000, 512, 1024), 204_800_000 + 819_200_000);
        // 1.28M ImageNet images, ResNet-50 features (2048), blocks of 256 rows: 26.2 GB
        assert_eq!(
            memory_bytes(1_281_167, 2048, 256),
            2 * 1_281_167 * 2048 * 4 + 256 * 1_281_167 * 16
        );
    }

    #[test]
    fn histogram_bins() {
        assert_eq!(
            histogram(&[-1.0, -0.1, 0.0, 0.99, 1.0], 4),
            vec![1, 1, 1, 2]
        );
    }
}
