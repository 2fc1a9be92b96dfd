//! The evaluation protocol (official `main_knn.py`, `main_linear.py`): weighted kNN on the class
//! token, then a linear probe on the frozen backbone.

use crate::config::PatchMixConfig;
use crate::model::PatchMixNet;
use anyhow::Result;
use contrast_core::data::augment::Recipe;
use contrast_core::data::dataset::Dataset;
use contrast_core::eval::features::{embed_dataset, EvalLoader};
use contrast_core::eval::knn::knn_top1;
use contrast_core::eval::linear::{
    linear_probe, linear_probe_with, LinearProbeConfig, LinearProbeReport,
};
use contrast_core::optim::schedule::scaled_lr;
use serde_json::json;
use std::sync::Arc;
use tch::{Device, Tensor};

/// The evaluation transform: official `Resize(⌊size·256/224⌋, bicubic) + CenterCrop(size)`
/// (`eval.resize` overrides the resize; `= size` means no crop).
pub fn eval_recipe(cfg: &PatchMixConfig) -> Result<Recipe> {
    let size = cfg.data.image_size;
    let resize = match cfg.eval.resize {
        0 => size * 256 / 224,
        r => r,
    };
    Recipe::eval_center_crop(size, resize)
}

/// Class-token features `[N, D]` and labels `[N]` of a data set (eval mode, no grad) through
/// the evaluation transform.
pub fn embed(
    net: &PatchMixNet,
    ds: Arc<dyn Dataset>,
    cfg: &PatchMixConfig,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    embed_with(net, ds, eval_recipe(cfg)?, cfg, 0, device)
}

/// Class-token features of `ds` under `recipe` (one view), in data-set order; random ops draw
/// from the per-sample stream of `(runtime.seed, epoch, index)`.
pub fn embed_with(
    net: &PatchMixNet,
    ds: Arc<dyn Dataset>,
    recipe: Recipe,
    cfg: &PatchMixConfig,
    epoch: u64,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    let d = &cfg.data;
    embed_dataset(
        ds,
        recipe,
        EvalLoader {
            seed: cfg.runtime.seed,
            prefetch: d.prefetch,
            threads: d.threads,
        },
        epoch,
        device,
        |x| net.features(x),
    )
}

/// kNN top-1 for every configured k: `[(k, accuracy %)]`.
pub fn knn_eval(
    cfg: &PatchMixConfig,
    bank: &(Tensor, Tensor),
    query: &(Tensor, Tensor),
    classes: i64,
) -> Result<Vec<(i64, f64)>> {
    knn_top1(bank, query, classes, &cfg.eval.knn_k, cfg.eval.knn_t)
}

/// kNN top-1 of the current network (train set as the bank, test set as the queries).
pub fn knn_now(
    net: &PatchMixNet,
    train_ds: &Arc<dyn Dataset>,
    test_ds: &Arc<dyn Dataset>,
    cfg: &PatchMixConfig,
    device: Device,
) -> Result<Vec<(i64, f64)>> {
    let classes = train_ds.classes().len().max(1) as i64;
    let bank = embed(net, Arc::clone(train_ds), cfg, device)?;
    let query = embed(net, Arc::clone(test_ds), cfg, device)?;
    knn_eval(cfg, &bank, &query, classes)
}

/// kNN and linear-probe results of a trained network.
#[derive(Debug)]
pub struct EvalResult {
    /// `(k, top-1 %)` for every configured k.
    pub knn: Vec<(i64, f64)>,
    pub linear: Option<LinearProbeReport>,
    /// Test-set class tokens and labels (evaluation transform), for figures.
    pub query: (Tensor, Tensor),
}

impl EvalResult {
    /// The report fields (`knn`, `linear`, `eval_protocol`); accuracies in percent.
    pub fn to_json(&self, cfg: &PatchMixConfig) -> Result<serde_json::Value> {
        let r = eval_recipe(cfg)?;
        let resize = match &r.views[0].ops[0] {
            contrast_core::data::Op::ResizeCenterCrop { resize, .. } => *resize,
            _ => cfg.data.image_size,
        };
        Ok(json!({
            "knn": self.knn.iter().map(|(k, a)| json!({"k": k, "top1": a})).collect::<Vec<_>>(),
            "linear": self.linear.as_ref().map(|r| json!({
                "last_top1": r.last_top1 * 100.0,
                "best_top1": r.best_top1 * 100.0,
                "best_epoch": r.best_epoch,
                "epochs": cfg.eval.linear_epochs,
            })),
            "eval_protocol": {
                "test_transform": format!("Resize({resize}, bicubic) + CenterCrop({})", cfg.data.image_size),
                "knn_t": cfg.eval.knn_t,
                "linear_train_transform": if cfg.eval.linear_augment {
                    format!("RandomResizedCrop({}, scale=({}, 1), bicubic) + HorizontalFlip, every epoch", cfg.data.image_size, cfg.eval.linear_min_scale)
                } else {
                    "evaluation transform, features computed once".to_string()
                },
            },
        }))
    }
}

/// kNN on the class token, then the linear probe (official settings, or precomputed features
/// with `eval.linear_augment = false`).
pub fn evaluate(
    net: &PatchMixNet,
    train_ds: &Arc<dyn Dataset>,
    test_ds: &Arc<dyn Dataset>,
    cfg: &PatchMixConfig,
    device: Device,
) -> Result<EvalResult> {
    let classes = train_ds.classes().len().max(1) as i64;
    let bank = embed(net, Arc::clone(train_ds), cfg, device)?;
    let query = embed(net, Arc::clone(test_ds), cfg, device)?;
    let knn = knn_eval(cfg, &bank, &query, classes)?;
    let linear = if cfg.eval.linear_epochs > 0 {
        let lp = LinearProbeConfig {
            epochs: cfg.eval.linear_epochs,
            batch_size: cfg.eval.linear_batch_size,
            lr: scaled_lr(cfg.eval.linear_base_lr, cfg.eval.linear_batch_size),
            seed: cfg.runtime.seed,
            // official main_linear.py: timm's opt='sgd' is SGD with Nesterov momentum, and the
            // head is a fresh nn.Linear
            nesterov: true,
            torch_default_init: true,
            ..LinearProbeConfig::default()
        };
        if cfg.eval.linear_augment {
            let recipe =
                Recipe::linear_train(cfg.data.image_size, (cfg.eval.linear_min_scale, 1.0))?;
            Some(linear_probe_with(
                &mut |epoch| {
                    // the probe's epoch e uses the augmentation stream of epoch e
                    let (x, _) = embed_with(
                        net,
                        Arc::clone(train_ds),
                        recipe.clone(),
                        cfg,
                        epoch as u64,
                        device,
                    )?;
                    Ok(x)
                },
                &bank.1,
                &query.0,
                &query.1,
                classes,
                &lp,
            )?)
        } else {
            Some(linear_probe(
                &bank.0, &bank.1, &query.0, &query.1, classes, &lp,
            )?)
        }
    } else {
        None
    };
    Ok(EvalResult { knn, linear, query })
}
