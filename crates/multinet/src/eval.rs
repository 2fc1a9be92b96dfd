//! Evaluation on frozen features (official `linear.py`): data sets, embeddings, the kNN monitor
//! and the linear probe; and the SGD optimiser both variants train with.

use crate::config::MultinetConfig;
use crate::method::Net;
use anyhow::Result;
use contrast_core::data::augment::Recipe;
use contrast_core::data::dataset::Dataset;
use contrast_core::data::splits::{load_splits, SplitSpec};
use contrast_core::eval::features::{embed_dataset, EvalLoader};
use contrast_core::eval::knn::knn_top1;
use contrast_core::eval::linear::{linear_probe, linear_probe_with, LinearProbeConfig};
use contrast_core::optim::fixed_lr::FixedLr;
use contrast_core::optim::{single_group, Optimizer, ParamGroup, Sgd};
use serde_json::{json, Value};
use std::sync::Arc;
use tch::nn::VarStore;
use tch::{Device, Tensor};

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
    })
}

/// Frozen features `[N, D]` and labels `[N]` of a data set.
pub fn embed(
    net: &Net,
    ds: Arc<dyn Dataset>,
    cfg: &MultinetConfig,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    embed_with(net, ds, eval_recipe(cfg)?, cfg, 0, device)
}

/// The evaluation view: `Resize(eval_resize) + CenterCrop(eval_size)` (the released probe's
/// ONECROP, 256 → 224), or a plain resize when `eval.eval_resize` is 0.
pub fn eval_recipe(cfg: &MultinetConfig) -> Result<Recipe> {
    match cfg.eval.eval_resize {
        0 => Recipe::eval(cfg.data.eval_size),
        r => Recipe::eval_center_crop(cfg.data.eval_size, r),
    }
}

/// Embeddings of every image of `ds` in index order through `recipe` (its random stream of
/// `epoch`), frozen network in eval mode.
pub fn embed_with(
    net: &Net,
    ds: Arc<dyn Dataset>,
    recipe: Recipe,
    cfg: &MultinetConfig,
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
        |x| net.embed(x),
    )
}

/// kNN top-1 for every configured k (cosine, weights `exp(s/T)`).
pub fn knn_eval(
    cfg: &MultinetConfig,
    bank: &(Tensor, Tensor),
    query: &(Tensor, Tensor),
    classes: i64,
) -> Result<Vec<(i64, f64)>> {
    knn_top1(bank, query, classes, &cfg.eval.knn_k, cfg.eval.knn_t)
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

/// The evaluation of a trained network.
pub struct Eval {
    /// `[{k, top1}]` for every `eval.knn_k`.
    pub knn: Vec<Value>,
    /// The linear probe's last / best top-1 and top-5 (when `eval.linear_epochs > 0`).
    pub linear: Option<Value>,
    /// Test embeddings and labels.
    pub query: (Tensor, Tensor),
}

/// kNN and the linear probe on frozen backbone features (BN eval mode).
pub fn evaluate(
    net: &Net,
    train_ds: &Arc<dyn Dataset>,
    test_ds: &Arc<dyn Dataset>,
    cfg: &MultinetConfig,
    device: Device,
) -> Result<Eval> {
    let classes = train_ds.classes().len().max(1) as i64;
    let bank = embed(net, Arc::clone(train_ds), cfg, device)?;
    let query = embed(net, Arc::clone(test_ds), cfg, device)?;
    let knn = knn_eval(cfg, &bank, &query, classes)?;
    let linear = if cfg.eval.linear_epochs > 0 {
        // released config_finetune.yaml: LARS (implementation PyTorch, η 1e-3), momentum 0.9,
        // wd 0, cosine per epoch from 0.8, 90 epochs, batch 256
        let lp = LinearProbeConfig {
            epochs: cfg.eval.linear_epochs,
            batch_size: cfg.eval.linear_batch_size,
            lr: cfg.eval.linear_lr,
            weight_decay: cfg.eval.linear_weight_decay,
            seed: cfg.runtime.seed,
            optimizer: cfg.eval.linear_optimizer,
            ..LinearProbeConfig::default()
        };
        let r = if cfg.eval.linear_augment {
            // the released LINEAR transform: RandomResizedCrop(size) + flip, every epoch
            let recipe = Recipe::linear_train(cfg.data.image_size, (0.08, 1.0))?;
            linear_probe_with(
                &mut |epoch| {
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
            )?
        } else {
            linear_probe(&bank.0, &bank.1, &query.0, &query.1, classes, &lp)?
        };
        Some(json!({
            "last_top1": r.last_top1 * 100.0, "last_top5": r.last_top5 * 100.0,
            "best_top1": r.best_top1 * 100.0, "best_top5": r.best_top5 * 100.0,
            "best_epoch": r.best_epoch, "epochs": cfg.eval.linear_epochs, "topk": r.topk,
        }))
    } else {
        None
    };
    Ok(Eval {
        knn: knn
            .iter()
            .map(|(k, a)| json!({"k": k, "top1": a}))
            .collect(),
        linear,
        query,
    })
}
