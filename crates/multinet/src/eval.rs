//! Evaluation on frozen features (official `linear.py`): data sets, the evaluation view and the
//! protocol's settings; and the SGD optimiser both variants train with.

use crate::config::MultinetConfig;
use crate::method::Net;
use anyhow::Result;
use contrast_core::data::augment::Recipe;
use contrast_core::data::dataset::Dataset;
use contrast_core::data::splits::{load_splits, SplitSpec};
use contrast_core::data::StreamPolicy;
use contrast_core::eval::features::EvalLoader;
use contrast_core::eval::linear::LinearProbeConfig;
use contrast_core::eval::protocol::FrozenEval;
use contrast_core::optim::fixed_lr::FixedLr;
use contrast_core::optim::{single_group, Optimizer, ParamGroup, Sgd};
use std::sync::Arc;
use tch::nn::VarStore;

/// Train and test sets of a config (class-balanced subsets when asked).
pub fn datasets(cfg: &MultinetConfig) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    load_splits(&SplitSpec {
        format: &cfg.data.format,
        root: &cfg.data.root,
        test_split: &cfg.data.test_split,
        train_subset: cfg.data.train_subset,
        test_subset: cfg.data.test_subset,
        seed: cfg.runtime.seed,
        method: "multinet",
        stream: StreamPolicy::new(
            cfg.data.stream,
            cfg.data.stream_above_mib,
            cfg.data.scaled_decode,
        )
        .with_on_corrupt(cfg.data.on_corrupt),
    })
}

/// The evaluation view: `Resize(eval_resize) + CenterCrop(eval_size)` (the released probe's
/// ONECROP, 256 → 224), or a plain resize when `eval.eval_resize` is 0.
pub fn eval_recipe(cfg: &MultinetConfig) -> Result<Recipe> {
    match cfg.eval.eval_resize {
        0 => Recipe::eval(cfg.data.eval_size),
        r => Recipe::eval_center_crop(cfg.data.eval_size, r),
    }
}

fn groups_of(vss: &[&VarStore], wd: f64) -> Vec<ParamGroup> {
    vss.iter().flat_map(|vs| single_group(vs, wd)).collect()
}

/// SGD over the network's parameters; the fixed-lr VarStores (the predictor) in a second SGD
/// that the cosine never touches (`WCosCon`).
pub fn build_optimizer(cfg: &MultinetConfig, net: &Net) -> Result<Box<dyn Optimizer>> {
    let o = &cfg.optim;
    let sgd = |groups| -> Result<Box<dyn Optimizer>> {
        Ok(Box::new(Sgd::new(groups, o.lr, o.momentum, 0.0, false)?))
    };
    let fixed = net.fixed_vs();
    let main = sgd(groups_of(&net.scheduled_vs(), o.weight_decay))?;
    if fixed.is_empty() {
        Ok(main)
    } else {
        Ok(Box::new(FixedLr::new(
            main,
            sgd(groups_of(&fixed, o.weight_decay))?,
        )))
    }
}

/// The frozen-feature protocol of the released `linear.py` (core `eval::protocol`): kNN on
/// the evaluation view, then the probe — LARS (implementation PyTorch, η 1e-3), momentum 0.9,
/// wd 0, cosine per epoch from 0.8, 90 epochs, batch 256 in `config_finetune.yaml` — on fixed
/// features, or with `eval.linear_augment` on the released LINEAR transform
/// (RandomResizedCrop(size) + flip) re-drawn every epoch.
pub fn protocol(
    cfg: &MultinetConfig,
    train: &Arc<dyn Dataset>,
    test: &Arc<dyn Dataset>,
) -> Result<FrozenEval> {
    let e = &cfg.eval;
    let probe = (e.linear_epochs > 0).then(|| LinearProbeConfig {
        epochs: e.linear_epochs,
        batch_size: e.linear_batch_size,
        lr: e.linear_lr,
        weight_decay: e.linear_weight_decay,
        seed: cfg.runtime.seed,
        optimizer: e.linear_optimizer,
        ..LinearProbeConfig::default()
    });
    let probe_views = if e.linear_augment {
        Some(Recipe::linear_train(cfg.data.image_size, (0.08, 1.0))?)
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
