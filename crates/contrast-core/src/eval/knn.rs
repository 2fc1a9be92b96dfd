//! Weighted k-nearest-neighbour classification over a feature bank (Wu et al. 2018, InstDisc,
//! <https://arxiv.org/abs/1805.01978>; the DINO / PatchMix `knn_classifier`; solo-learn's
//! `WeightedKNNClassifier`).
//!
//! For a query `q`, let `s_j` be its similarity to bank entry `j` and `N_k(q)` the `k` entries
//! with the largest `s_j`. The score of class `c` is
//!
//! ```text
//! score_c(q) = Σ_{j ∈ N_k(q), y_j = c} w_j,
//! cosine:    s_j = q̂·b̂_j (L2-normalised),  w_j = exp(s_j / T)
//! euclidean: s_j = 1 / (‖q − b_j‖ + ε),     w_j = s_j          (solo-learn; T unused)
//! ```
//!
//! and the prediction is `argmax_c score_c` (top-5: the five best classes). Accuracies are in
//! percent, like DINO and solo-learn. Several `k` share one similarity matrix and one top-k
//! (the largest `k`; smaller `k` use its sorted prefix). Queries are processed in batches, so
//! the similarity matrix holds at most `query_batch × N` entries (256 × 50 000 floats =
//! 51 MB): a 50k bank against 10k queries runs on a CPU.
//!
//! Ties between equal class scores go to the lowest class index (argmax); DINO's
//! `sort(descending)` leaves them unspecified. Top-5 counts a hit only among classes that
//! received a vote: with fewer than five voted classes (always when k < 5) DINO's top-5 also
//! counts zero-score classes in an unspecified order, solo-learn truncates to `min(5, k)`
//! columns; both equal ours whenever at least five classes received votes.

use crate::loss::normalize;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Similarity between queries and bank entries (config value `"cosine"` / `"euclidean"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnnMetric {
    /// Cosine similarity with `exp(s/T)` weights (DINO, InstDisc, lightly).
    Cosine,
    /// Inverse Euclidean distance `1/(d + ε)` as weight (solo-learn's `euclidean`).
    Euclidean,
}

/// Settings of the weighted kNN. Default: [`KnnConfig::dino`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KnnConfig {
    /// Neighbour counts evaluated in one pass (e.g. PatchMix: 10, 20, 100, 200).
    pub ks: Vec<i64>,
    /// Temperature T of the cosine weights `exp(s/T)`.
    pub temperature: f64,
    /// Cosine or Euclidean.
    pub metric: KnnMetric,
    /// ε of the Euclidean weights `1/(d + ε)` (solo-learn: 1e-5).
    pub epsilon: f64,
    /// Queries per similarity matrix.
    pub query_batch: i64,
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self::dino()
    }
}

impl KnnConfig {
    /// DINO's / PatchMix's / solo-learn's default: cosine, k = 20, T = 0.07.
    pub fn dino() -> Self {
        Self {
            ks: vec![20],
            temperature: 0.07,
            metric: KnnMetric::Cosine,
            epsilon: 1e-5,
            query_batch: 256,
        }
    }

    /// InstDisc's / lightly's benchmark setting: cosine, k = 200, T = 0.1.
    pub fn instdisc() -> Self {
        Self {
            ks: vec![200],
            temperature: 0.1,
            ..Self::dino()
        }
    }

    /// Check the settings ("Illegal temperature …").
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.ks.is_empty(), "no k to evaluate");
        ensure!(
            self.ks.iter().all(|&k| k >= 1),
            "Illegal k in {:?} (must be ≥ 1)",
            self.ks
        );
        ensure!(
            self.temperature > 0.0 && self.temperature.is_finite(),
            "Illegal temperature {}",
            self.temperature
        );
        ensure!(
            self.epsilon >= 0.0,
            "Illegal epsilon {} (must be ≥ 0)",
            self.epsilon
        );
        ensure!(
            self.query_batch >= 1,
            "Illegal query batch {}",
            self.query_batch
        );
        Ok(())
    }
}

/// Accuracy for one `k`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnnAccuracy {
    /// Neighbours used (the requested k, capped at the bank size).
    pub k: i64,
    /// Top-1 accuracy in percent.
    pub top1: f64,
    /// Top-5 accuracy in percent (top-`C` when there are fewer than five classes; classes
    /// without a vote never count).
    pub top5: f64,
}

/// A labelled feature bank and the settings to classify queries against it.
#[derive(Debug)]
pub struct KnnClassifier {
    bank: Tensor,
    labels: Tensor,
    num_classes: i64,
    cfg: KnnConfig,
}

impl KnnClassifier {
    /// `bank`: `[N, D]` features; `labels`: `[N]` class indices in `0..num_classes`. The bank
    /// stays on its device (queries are moved there); with the cosine metric it is
    /// L2-normalised once here.
    pub fn new(bank: &Tensor, labels: &Tensor, num_classes: i64, cfg: KnnConfig) -> Result<Self> {
        cfg.validate()?;
        let (n, _d) = bank
            .size2()
            .with_context(|| format!("the bank must be [N, D], got {:?}", bank.size()))?;
        ensure!(n >= 1, "the feature bank is empty");
        ensure!(
            labels.size() == [n],
            "the bank has {n} features but labels of shape {:?}",
            labels.size()
        );
        ensure!(num_classes >= 1, "Illegal number of classes {num_classes}");
        let labels = labels.to_kind(Kind::Int64).to_device(bank.device());
        let (lo, hi) = (labels.min().int64_value(&[]), labels.max().int64_value(&[]));
        ensure!(
            lo >= 0 && hi < num_classes,
            "bank labels span {lo}..={hi}, outside 0..{num_classes}"
        );
        let bank = bank.detach().to_kind(Kind::Float);
        let bank = match cfg.metric {
            KnnMetric::Cosine => normalize(&bank),
            KnnMetric::Euclidean => bank,
        };
        Ok(Self {
            bank,
            labels,
            num_classes,
            cfg,
        })
    }

    /// Number of bank entries.
    pub fn len(&self) -> i64 {
        self.bank.size()[0]
    }

    /// Whether the bank is empty (never: [`KnnClassifier::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The settings.
    pub fn config(&self) -> &KnnConfig {
        &self.cfg
    }

    /// The `k` values actually used: the requested ones capped at the bank size.
    fn effective_ks(&self) -> Vec<i64> {
        self.cfg.ks.iter().map(|&k| k.min(self.len())).collect()
    }

    /// Class scores of one batch of queries `[B, D]` for every configured `k`: a `[B, C]`
    /// tensor per `k`, in the order of `config().ks`.
    pub fn class_scores(&self, queries: &Tensor) -> Result<Vec<Tensor>> {
        let (b, d) = queries
            .size2()
            .with_context(|| format!("queries must be [B, D], got {:?}", queries.size()))?;
        let bank_d = self.bank.size()[1];
        ensure!(
            d == bank_d,
            "query width {d} differs from the bank's {bank_d}"
        );
        let ks = self.effective_ks();
        let kmax = *ks.iter().max().unwrap_or(&1);
        Ok(tch::no_grad(|| {
            let q = queries
                .detach()
                .to_kind(Kind::Float)
                .to_device(self.bank.device());
            let sim = match self.cfg.metric {
                KnnMetric::Cosine => normalize(&q).matmul(&self.bank.tr()), // [B, N]
                KnnMetric::Euclidean => {
                    (Tensor::cdist(&q, &self.bank, 2.0, None::<i64>) + self.cfg.epsilon)
                        .reciprocal() // [B, N]
                }
            };
            let (top, idx) = sim.topk(kmax, 1, true, true); // [B, kmax], sorted
            let weights = match self.cfg.metric {
                KnnMetric::Cosine => (top / self.cfg.temperature).exp(),
                KnnMetric::Euclidean => top,
            };
            let nb_labels = self
                .labels
                .index_select(0, &idx.flatten(0, 1))
                .reshape([b, kmax]);
            ks.iter()
                .map(|&k| {
                    Tensor::zeros([b, self.num_classes], (Kind::Float, q.device())).scatter_add(
                        1,
                        &nb_labels.narrow(1, 0, k),
                        &weights.narrow(1, 0, k),
                    ) // [B, C]
                })
                .collect()
        }))
    }

    /// Top-1 predictions `[Q]` for every configured `k`, over all `queries` `[Q, D]` in batches.
    pub fn predict(&self, queries: &Tensor) -> Result<Vec<Tensor>> {
        let q = queries.size().first().copied().unwrap_or(0);
        let mut per_k: Vec<Vec<Tensor>> = (0..self.cfg.ks.len()).map(|_| Vec::new()).collect();
        for s in (0..q).step_by(self.cfg.query_batch as usize) {
            let len = self.cfg.query_batch.min(q - s);
            let scores = self.class_scores(&queries.narrow(0, s, len))?;
            for (acc, sc) in per_k.iter_mut().zip(scores) {
                acc.push(sc.argmax(1, false));
            }
        }
        ensure!(q > 0, "no queries");
        Ok(per_k.into_iter().map(|v| Tensor::cat(&v, 0)).collect())
    }

    /// Top-1 / top-5 accuracy (percent) of `queries` `[Q, D]` with `labels` `[Q]`, one entry
    /// per configured `k`.
    pub fn evaluate(&self, queries: &Tensor, labels: &Tensor) -> Result<Vec<KnnAccuracy>> {
        let q = queries.size().first().copied().unwrap_or(0);
        ensure!(q > 0, "no queries");
        ensure!(
            labels.size() == [q],
            "{q} queries but labels of shape {:?}",
            labels.size()
        );
        let labels = labels.to_kind(Kind::Int64).to_device(self.bank.device());
        let top = self.num_classes.min(5);
        let mut hits1 = vec![0i64; self.cfg.ks.len()];
        let mut hits5 = vec![0i64; self.cfg.ks.len()];
        for s in (0..q).step_by(self.cfg.query_batch as usize) {
            let len = self.cfg.query_batch.min(q - s);
            let y = labels.narrow(0, s, len).unsqueeze(1); // [B, 1]
            let scores = self.class_scores(&queries.narrow(0, s, len))?;
            for (i, sc) in scores.iter().enumerate() {
                let best = sc.argmax(1, true); // [B, 1]
                hits1[i] += best.eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
                // Classes without a vote are never predicted (see the module docs).
                let (val, top5) = sc.topk(top, 1, true, true); // [B, top]
                let hit = top5.eq_tensor(&y).logical_and(&val.gt(0.0));
                hits5[i] += hit.sum(Kind::Int64).int64_value(&[]);
            }
        }
        Ok(self
            .effective_ks()
            .into_iter()
            .zip(hits1.iter().zip(&hits5))
            .map(|(k, (&h1, &h5))| KnnAccuracy {
                k,
                top1: 100.0 * h1 as f64 / q as f64,
                top5: 100.0 * h5 as f64 / q as f64,
            })
            .collect())
    }
}

/// One-call kNN evaluation: classify `test` features against the `train` bank.
/// `num_classes = None` takes `1 + max label` over both sets.
pub fn knn_evaluate(
    train_features: &Tensor,
    train_labels: &Tensor,
    test_features: &Tensor,
    test_labels: &Tensor,
    num_classes: Option<i64>,
    cfg: KnnConfig,
) -> Result<Vec<KnnAccuracy>> {
    let c = match num_classes {
        Some(c) => c,
        None => {
            ensure!(
                train_labels.numel() > 0 && test_labels.numel() > 0,
                "no labels to infer the number of classes from"
            );
            1 + train_labels
                .max()
                .int64_value(&[])
                .max(test_labels.max().int64_value(&[]))
        }
    };
    KnnClassifier::new(train_features, train_labels, c, cfg)?.evaluate(test_features, test_labels)
}

/// Cosine weighted-kNN top-1 (percent) for every `k` of `ks` at temperature `t`: `[(k, top-1)]`,
/// with `bank = (features [N, D], labels [N])` and `query = (features [M, D], labels [M])`. The
/// one-call form the method crates use for their kNN monitor and report.
pub fn knn_top1(
    bank: &(Tensor, Tensor),
    query: &(Tensor, Tensor),
    classes: i64,
    ks: &[i64],
    t: f64,
) -> Result<Vec<(i64, f64)>> {
    let knn = KnnClassifier::new(
        &bank.0,
        &bank.1,
        classes,
        KnnConfig {
            ks: ks.to_vec(),
            temperature: t,
            metric: KnnMetric::Cosine,
            ..KnnConfig::dino()
        },
    )?;
    Ok(knn
        .evaluate(&query.0, &query.1)?
        .into_iter()
        .map(|a| (a.k, a.top1))
        .collect())
}
