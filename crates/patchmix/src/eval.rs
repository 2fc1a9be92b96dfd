//! The evaluation protocol (official `main_knn.py`, `main_linear.py`): weighted kNN on the class
//! token, then a linear probe on the frozen backbone.

use crate::config::PatchMixConfig;
use anyhow::Result;
use contrast_core::data::augment::Recipe;
use contrast_core::data::dataset::Dataset;
use contrast_core::eval::features::EvalLoader;
use contrast_core::eval::linear::LinearProbeConfig;
use contrast_core::eval::protocol::{FrozenEval, FrozenResult};
use contrast_core::optim::schedule::scaled_lr;
use serde_json::json;
use std::sync::Arc;

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

/// The frozen-feature protocol of the official `main_knn.py` / `main_linear.py` (core
/// `eval::protocol`): weighted kNN on the class token through the evaluation transform, then the
/// linear probe — SGD with Nesterov momentum (timm's `opt='sgd'`) on a fresh `nn.Linear`, lr
/// `base·bs/256` — on RandomResizedCrop + flip views re-drawn every epoch
/// (`eval.linear_augment`, official) or on the evaluation-transform features computed once.
pub fn protocol(
    cfg: &PatchMixConfig,
    train: &Arc<dyn Dataset>,
    test: &Arc<dyn Dataset>,
) -> Result<FrozenEval> {
    let e = &cfg.eval;
    let probe = (e.linear_epochs > 0).then(|| LinearProbeConfig {
        epochs: e.linear_epochs,
        batch_size: e.linear_batch_size,
        lr: scaled_lr(e.linear_base_lr, e.linear_batch_size),
        seed: cfg.runtime.seed,
        nesterov: true,
        torch_default_init: true,
        ..LinearProbeConfig::default()
    });
    let probe_views = if e.linear_augment {
        Some(Recipe::linear_train(
            cfg.data.image_size,
            (e.linear_min_scale, 1.0),
        )?)
    } else {
        None
    };
    Ok(FrozenEval {
        train: Arc::clone(train),
        test: Arc::clone(test),
        view: eval_recipe(cfg)?,
        loader: EvalLoader {
            seed: cfg.runtime.seed,
            prefetch: cfg.data.prefetch,
            threads: cfg.data.threads,
        },
        knn_k: e.knn_k.clone(),
        knn_t: e.knn_t,
        probe,
        probe_views,
    })
}

/// The report fields of an evaluation (`knn`, `linear`, `eval_protocol`); accuracies in percent.
pub fn report_json(e: &FrozenResult, cfg: &PatchMixConfig) -> Result<serde_json::Value> {
    let r = eval_recipe(cfg)?;
    let resize = match &r.views[0].ops[0] {
        contrast_core::data::Op::ResizeCenterCrop { resize, .. } => *resize,
        _ => cfg.data.image_size,
    };
    Ok(json!({
        "knn": e.knn_json(),
        "linear": e.linear_json(),
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
