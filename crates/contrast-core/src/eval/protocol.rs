//! The frozen-feature protocol of the natural-image methods (PatchMix `main_knn.py` /
//! `main_linear.py`, SimCLR's linear evaluation, MNCLGLF `linear.py`): embed the training and
//! test sets through the evaluation view, weighted kNN for every k with the training set as the
//! bank, then a linear probe — on features computed once, or on augmented views of the training
//! set re-embedded every probe epoch. The methods differ only in their settings (the view, the
//! probe's optimiser and augmentation) and in the network's embedding, which they pass in.

use super::features::{embed_dataset, EvalLoader};
use super::knn::knn_top1;
use super::linear::{linear_probe, linear_probe_with, LinearProbeConfig, LinearProbeReport};
use crate::data::augment::Recipe;
use crate::data::dataset::Dataset;
use anyhow::Result;
use serde_json::{json, Value};
use std::sync::Arc;
use tch::{Device, Tensor};

/// What one frozen evaluation runs.
pub struct FrozenEval {
    pub train: Arc<dyn Dataset>,
    pub test: Arc<dyn Dataset>,
    /// The evaluation view of the kNN bank, the queries and the un-augmented probe.
    pub view: Recipe,
    pub loader: EvalLoader,
    pub knn_k: Vec<i64>,
    pub knn_t: f64,
    /// The linear probe, when one runs.
    pub probe: Option<LinearProbeConfig>,
    /// `Some(recipe)`: the probe trains on the training set re-embedded through `recipe`
    /// every epoch (its random stream of that epoch); `None`: on the evaluation-view features.
    pub probe_views: Option<Recipe>,
}

/// kNN and probe results, and the test embeddings (for figures).
#[derive(Debug)]
pub struct FrozenResult {
    /// `(k, top-1 %)` for every k.
    pub knn: Vec<(i64, f64)>,
    pub linear: Option<LinearProbeReport>,
    /// Test-set embeddings `[N, D]` and labels `[N]` (evaluation view).
    pub query: (Tensor, Tensor),
}

impl FrozenResult {
    /// `[{k, top1}]`, accuracies in percent.
    pub fn knn_json(&self) -> Value {
        self.knn
            .iter()
            .map(|(k, a)| json!({"k": k, "top1": a}))
            .collect()
    }

    /// The probe's last / best top-1 and top-5 in percent, its best epoch and length.
    pub fn linear_json(&self) -> Option<Value> {
        self.linear.as_ref().map(|r| {
            json!({
                "last_top1": r.last_top1 * 100.0, "last_top5": r.last_top5 * 100.0,
                "best_top1": r.best_top1 * 100.0, "best_top5": r.best_top5 * 100.0,
                "best_epoch": r.best_epoch, "epochs": r.epochs.len(), "topk": r.topk,
            })
        })
    }
}

impl FrozenEval {
    /// Embeddings of `ds` through `recipe` (random stream of `epoch`), by `embed`.
    pub fn embed(
        &self,
        ds: &Arc<dyn Dataset>,
        recipe: &Recipe,
        epoch: u64,
        device: Device,
        embed: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        embed_dataset(
            Arc::clone(ds),
            recipe.clone(),
            self.loader,
            epoch,
            device,
            embed,
        )
    }

    /// kNN only (the training-time monitor).
    pub fn knn(
        &self,
        device: Device,
        embed: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Vec<(i64, f64)>> {
        let bank = self.embed(&self.train, &self.view, 0, device, embed)?;
        let query = self.embed(&self.test, &self.view, 0, device, embed)?;
        knn_top1(&bank, &query, self.classes(), &self.knn_k, self.knn_t)
    }

    fn classes(&self) -> i64 {
        self.train.classes().len().max(1) as i64
    }

    /// The whole protocol: kNN, then the probe when configured.
    pub fn run(
        &self,
        device: Device,
        embed: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<FrozenResult> {
        let classes = self.classes();
        let bank = self.embed(&self.train, &self.view, 0, device, embed)?;
        let query = self.embed(&self.test, &self.view, 0, device, embed)?;
        let knn = knn_top1(&bank, &query, classes, &self.knn_k, self.knn_t)?;
        let linear = match (&self.probe, &self.probe_views) {
            (None, _) => None,
            (Some(lp), Some(views)) => Some(linear_probe_with(
                // the probe's epoch e uses the augmentation stream of epoch e
                &mut |epoch| {
                    Ok(self
                        .embed(&self.train, views, epoch as u64, device, embed)?
                        .0)
                },
                &bank.1,
                &query.0,
                &query.1,
                classes,
                lp,
            )?),
            (Some(lp), None) => Some(linear_probe(
                &bank.0, &bank.1, &query.0, &query.1, classes, lp,
            )?),
        };
        Ok(FrozenResult { knn, linear, query })
    }
}
