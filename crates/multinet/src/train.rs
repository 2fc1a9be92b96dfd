//! Pretraining and evaluation on the shared run harness (official `train.py`, `linear.py`).
//! One loop drives any [`Learner`]: MNCLGLF ([`crate::method::Mnclglf`]) and the plain-SimCLR
//! baseline ([`crate::baseline`]) share data, optimiser, schedule, clipping, checkpoints and
//! evaluation, so the comparison differs only in the method.

use crate::config::{Method, MultinetConfig};
use crate::method::{Learner, Mnclglf};
use anyhow::{bail, Context, Result};
use contrast_core::data::augment::Recipe;
use contrast_core::data::dataset::Dataset;
use contrast_core::data::pipeline::{Loader, LoaderConfig};
use contrast_core::data::splits::{load_splits, SplitSpec};
use contrast_core::eval::knn::knn_top1;
use contrast_core::eval::linear::{linear_probe, linear_probe_with, LinearProbeConfig};
use contrast_core::optim::clip::clip_grad_norm_tensors;
use contrast_core::optim::fixed_lr::FixedLr;
use contrast_core::optim::schedule::Schedule;
use contrast_core::optim::{single_group, Optimizer, ParamGroup, Sgd};
use contrast_core::tensors::Named;
use contrast_core::train::runtime::seed_step;
use contrast_core::train::{config::to_toml, Progress, Run, RunOptions};
use serde_json::json;
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
    learner: &dyn Learner,
    ds: Arc<dyn Dataset>,
    cfg: &MultinetConfig,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    embed_with(learner, ds, eval_recipe(cfg)?, cfg, 0, device)
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
    learner: &dyn Learner,
    ds: Arc<dyn Dataset>,
    recipe: Recipe,
    cfg: &MultinetConfig,
    epoch: u64,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    let loader = Loader::new(
        ds,
        recipe,
        LoaderConfig {
            batch_size: 256,
            shuffle: false,
            drop_last: false,
            seed: cfg.runtime.seed,
            prefetch: cfg.data.prefetch.max(1),
            threads: cfg.data.threads,
        },
    )?;
    let mut feats = Vec::new();
    let mut labels = Vec::new();
    for batch in loader.epoch_from(epoch, 0) {
        let batch = batch?;
        feats.push(
            learner
                .embed(&batch.views[0].to_device(device))?
                .to_device(Device::Cpu),
        );
        labels.push(batch.labels);
    }
    Ok((Tensor::cat(&feats, 0), Tensor::cat(&labels, 0)))
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

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: Option<serde_json::Value>,
    pub step: u64,
}

fn groups_of(vss: &[&VarStore], wd: f64) -> Vec<ParamGroup> {
    vss.iter().flat_map(|vs| single_group(vs, wd)).collect()
}

/// SGD over the learner's parameters; the fixed-lr VarStores (the predictor) in a second SGD
/// that the cosine never touches (`WCosCon`).
pub fn build_optimizer(cfg: &MultinetConfig, learner: &dyn Learner) -> Result<Box<dyn Optimizer>> {
    let o = &cfg.optim;
    let sgd = |groups| -> Result<Box<dyn Optimizer>> {
        Ok(Box::new(Sgd::new(groups, o.lr, o.momentum, 0.0, false)?))
    };
    let fixed = learner.fixed_vs();
    let main = sgd(groups_of(&learner.scheduled_vs(), o.weight_decay))?;
    if fixed.is_empty() {
        Ok(main)
    } else {
        Ok(Box::new(FixedLr::new(
            main,
            sgd(groups_of(&fixed, o.weight_decay))?,
        )))
    }
}

/// Every trainable tensor of the learner (what the gradient-norm clip sees).
pub fn trainable(learner: &dyn Learner) -> Vec<Tensor> {
    learner
        .scheduled_vs()
        .into_iter()
        .chain(learner.fixed_vs())
        .flat_map(|vs| vs.trainable_variables())
        .collect()
}

/// The learner of a config.
pub fn build_learner(cfg: &MultinetConfig, device: Device) -> Result<Box<dyn Learner>> {
    Ok(match cfg.method {
        Method::Mnclglf => Box::new(Mnclglf::new(cfg, device)?),
        Method::Simclr => Box::new(crate::baseline::SimclrBaseline::new(cfg, device)?),
    })
}

/// Pretrain (or resume) and evaluate. `stop_at` ends this invocation after that many steps.
pub fn pretrain(cfg: &MultinetConfig, opts: &RunOptions, stop_at: Option<u64>) -> Result<Outcome> {
    let device = cfg.runtime.init_without_autocast("multinet")?;
    let mut opts = opts.clone();
    opts.keep_checkpoints = cfg.log.keep_checkpoints;
    let mut run = Run::open(&opts, &to_toml(cfg)?)?;
    let t0 = std::time::Instant::now();
    let (train_ds, test_ds) = datasets(cfg)?;
    let classes = train_ds.classes().len().max(1) as i64;

    tch::manual_seed(cfg.runtime.seed as i64);
    let mut learner = build_learner(cfg, device)?;
    let loader = Loader::new(
        Arc::clone(&train_ds),
        Recipe::mocov2(cfg.data.image_size, learner.views())?,
        LoaderConfig {
            batch_size: cfg.optim.batch_size,
            shuffle: true,
            drop_last: true,
            seed: cfg.runtime.seed,
            prefetch: cfg.data.prefetch.max(1),
            threads: cfg.data.threads,
        },
    )?;
    let iters = loader.batches_per_epoch() as u64;
    if iters == 0 {
        bail!(
            "the training set ({} images) is smaller than one batch ({})",
            train_ds.len(),
            cfg.optim.batch_size
        );
    }
    let total = iters * cfg.optim.epochs;
    let mut opt = build_optimizer(cfg, learner.as_ref())?;
    let params = trainable(learner.as_ref());
    let param_refs: Vec<&Tensor> = params.iter().collect();
    let lr_s = Schedule::Cosine {
        start: cfg.optim.lr,
        end: cfg.optim.final_lr,
        steps: total,
    };

    let start = run.start_step();
    if let Some(ck) = &run.resumed {
        learner.restore(ck)?;
        opt.load_state(ck.group("optim")?)
            .context("restoring the optimiser")?;
        eprintln!("resumed {} at step {start}/{total}", run.dir.display());
    }
    let end = stop_at.map_or(total, |s| s.min(total));
    let label = match cfg.method {
        Method::Mnclglf => "mnclglf",
        Method::Simclr => "simclr",
    };
    let progress = Progress::new(total, start, label);
    let save = |run: &Run, step: u64, learner: &dyn Learner, opt: &dyn Optimizer| -> Result<()> {
        let state = learner.state();
        let optim = opt.state();
        let mut groups: Vec<(&str, &Named)> = state.iter().map(|(n, t)| (*n, t)).collect();
        groups.push(("optim", &optim));
        run.checkpoints.save(
            step,
            cfg.runtime.seed,
            &groups,
            json!({"epoch": step / iters}),
        )?;
        Ok(())
    };
    let mut step = start;
    while step < end {
        let epoch = step / iters;
        let first = (step % iters) as usize;
        for batch in loader.epoch_from(epoch, first) {
            if step >= end {
                break;
            }
            let batch = batch?;
            seed_step(cfg.runtime.seed, step);
            opt.set_lr(lr_s.value(step));
            learner.before_step(step)?;
            let views: Vec<Tensor> = batch.views.iter().map(|v| v.to_device(device)).collect();
            let (loss, values) = learner.loss(&views)?;
            let done = step + 1;
            run.check_finite(done, &values)?;
            opt.zero_grad();
            loss.backward();
            let grad_norm = if cfg.optim.clip_grad_norm > 0.0 {
                Some(clip_grad_norm_tensors(
                    &param_refs,
                    cfg.optim.clip_grad_norm,
                )?)
            } else {
                None
            };
            opt.step()?;
            step = done;
            let total_loss = values.first().map_or(0.0, |v| v.1);
            if done % cfg.log.log_every == 0 || done == end {
                let mut fields: Vec<(&str, serde_json::Value)> =
                    values.iter().map(|(n, v)| (*n, json!(v))).collect();
                fields.push(("lr", json!(opt.lr())));
                if let Some(g) = grad_norm {
                    fields.push(("grad_norm", json!(g)));
                }
                fields.push(("epoch", json!(epoch)));
                fields.push(("elapsed_s", json!(t0.elapsed().as_secs_f64())));
                run.metrics.log(done, &fields)?;
            }
            progress.update(done, &format!("ep {epoch} loss {total_loss:.4}"));
            let epoch_end = done % iters == 0;
            if (epoch_end && (done / iters).is_multiple_of(cfg.log.checkpoint_every_epochs.max(1)))
                || done == end
            {
                save(&run, done, learner.as_ref(), opt.as_ref())?;
            }
        }
    }
    progress.finish();
    if end < total {
        return Ok(Outcome {
            report: None,
            step: end,
        });
    }
    let train_wall = t0.elapsed().as_secs_f64();

    // evaluation on frozen backbone features (BN eval mode): kNN monitor + linear probe
    let bank = embed(learner.as_ref(), Arc::clone(&train_ds), cfg, device)?;
    let query = embed(learner.as_ref(), Arc::clone(&test_ds), cfg, device)?;
    let knn = knn_eval(cfg, &bank, &query, classes)?;
    // what the model learned: test embeddings, PCA, coloured by class
    contrast_core::eval::projection::pca_figure(
        &query.0,
        &query.1,
        test_ds.classes(),
        &format!("{}: test embeddings, PCA", learner.describe()),
        &run.figures_dir()?.join("pca"),
        2000,
    )?;
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
                        learner.as_ref(),
                        Arc::clone(&train_ds),
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
    let wall = t0.elapsed().as_secs_f64();
    let ran = end - start;
    let report = json!({
        "method": "multinet",
        "variant": label,
        "released_code_l1": cfg.loss.released_code_l1,
        "metric": "linear top-1 (frozen backbone, best epoch: the released linear.py reports its best evaluation)",
        "value": linear.as_ref().map(|l| l["best_top1"].clone()),
        "knn": knn.iter().map(|(k, a)| json!({"k": k, "top1": a})).collect::<Vec<_>>(),
        "linear": linear,
        "paper": cfg.paper,
        "data": format!("{} ({} train / {} test images, {} px)", cfg.data.format, train_ds.len(), test_ds.len(), cfg.data.image_size),
        "model": learner.describe(),
        "epochs": cfg.optim.epochs,
        "batch_size": cfg.optim.batch_size,
        "steps": total,
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "train_wall_s": train_wall,
        "wall_s": wall,
        "samples_per_s": ran as f64 * cfg.optim.batch_size as f64 / train_wall.max(1e-9),
    });
    run.write_report(&report)?;
    Ok(Outcome {
        report: Some(report),
        step: end,
    })
}
