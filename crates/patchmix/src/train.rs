//! Pretraining and evaluation (official `main_pretrain.py`, `main_knn.py`, `main_linear.py`),
//! on the shared run harness.

use crate::config::PatchMixConfig;
use crate::loss::{patchmix_loss, LossInputs};
use crate::mix::PatchMixer;
use crate::model::{HeadConfig, PatchMixNet};
use anyhow::{bail, ensure, Context, Result};
use contrast_core::data::augment::Recipe;
use contrast_core::data::dataset::Dataset;
use contrast_core::data::pipeline::{Loader, LoaderConfig};
use contrast_core::data::splits::{load_splits, SplitSpec};
use contrast_core::eval::knn::knn_top1;
use contrast_core::eval::linear::{
    linear_probe, linear_probe_with, LinearProbeConfig, LinearProbeReport,
};
use contrast_core::loss::InfoNce;
use contrast_core::nn::vit::{vit_base, vit_small, vit_tiny, VitConfig};
use contrast_core::optim::adamw::{AdamW, AdamWConfig};
use contrast_core::optim::schedule::{scaled_lr, Schedule};
use contrast_core::optim::{decay_groups, Optimizer};
use contrast_core::tensors::{load_into, named_variables, Named};
use contrast_core::train::checkpoint::write_atomic;
use contrast_core::train::runtime::seed_step;
use contrast_core::train::{config::to_toml, Checkpoint, EvalArgs, Progress, Run, RunOptions};
use serde_json::json;
use std::sync::Arc;
use tch::{Device, Tensor};

/// The ViT of a config.
pub fn vit_config(cfg: &PatchMixConfig) -> Result<VitConfig> {
    let size = cfg.data.image_size as i64;
    let p = cfg.model.patch_size;
    let mut v = match cfg.model.arch.as_str() {
        "vit_tiny" => vit_tiny(size, p),
        "vit_small" => vit_small(size, p),
        "vit_base" => vit_base(size, p),
        other => bail!("unknown model.arch `{other}`: use vit_tiny, vit_small or vit_base"),
    };
    if cfg.model.depth > 0 {
        v.depth = cfg.model.depth;
    }
    v.drop_path_rate = cfg.model.drop_path;
    // local crops: the position embedding resampled as the official module/vits.py does
    v.pos_resample = contrast_core::nn::vit::PosResample::Dino;
    Ok(v)
}

/// Train and test sets of a config (class-balanced subsets when asked).
pub fn datasets(cfg: &PatchMixConfig) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    load_splits(&SplitSpec {
        format: &cfg.data.format,
        root: &cfg.data.root,
        test_split: &cfg.data.test_split,
        train_subset: cfg.data.train_subset,
        test_subset: cfg.data.test_subset,
        seed: cfg.runtime.seed,
        method: "patchmix",
    })
}

/// BYOL asymmetric global views (+ local crops for ImageNet multi-crop).
fn train_recipe(cfg: &PatchMixConfig) -> Result<Recipe> {
    let r = Recipe::byol(cfg.data.image_size, cfg.data.min_scale)?;
    if cfg.data.local_crops > 0 {
        r.with_local_crops(
            cfg.data.local_crops,
            cfg.data.local_size,
            cfg.data.local_scale,
        )
    } else {
        Ok(r)
    }
}

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
            net.features(&batch.views[0].to_device(device))?
                .to_device(Device::Cpu),
        );
        labels.push(batch.labels);
    }
    Ok((Tensor::cat(&feats, 0), Tensor::cat(&labels, 0)))
}

/// kNN and linear-probe results of a trained network.
#[derive(Debug)]
pub struct Evaluation {
    /// `(k, top-1 %)` for every configured k.
    pub knn: Vec<(i64, f64)>,
    pub linear: Option<LinearProbeReport>,
    /// Test-set class tokens and labels (evaluation transform), for figures.
    pub query: (Tensor, Tensor),
}

impl Evaluation {
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
) -> Result<Evaluation> {
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
    Ok(Evaluation { knn, linear, query })
}

/// Evaluate a run folder's newest checkpoint again (`patchmix eval --run DIR [--set eval.*]`)
/// and write the result into the run folder (`EvalArgs::out`, default `eval.json`).
pub fn evaluate_run(args: &EvalArgs) -> Result<serde_json::Value> {
    let cfg: PatchMixConfig = args.config()?;
    let device = cfg.runtime.init()?;
    let ck = args.checkpoint()?;
    let (train_ds, test_ds) = datasets(&cfg)?;
    tch::manual_seed(cfg.runtime.seed as i64);
    let net = build_net(&cfg, device)?;
    restore_weights(&net, &ck)?;
    let t0 = std::time::Instant::now();
    let ev = evaluate(&net, &train_ds, &test_ds, &cfg, device)?;
    write_figures_or_warn(&cfg, &test_ds, &ev, &args.run.join("figures"));
    let mut report = ev.to_json(&cfg)?;
    report["run"] = json!(args.run.display().to_string());
    report["checkpoint_step"] = json!(ck.state.step);
    report["overrides"] = json!(args.overrides);
    report["wall_s"] = json!(t0.elapsed().as_secs_f64());
    let path = args.report_path();
    write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    eprintln!("wrote {}", path.display());
    Ok(report)
}

/// Figures are a view of the result: failing to draw them is reported, never fatal.
fn write_figures_or_warn(
    cfg: &PatchMixConfig,
    test_ds: &Arc<dyn Dataset>,
    ev: &Evaluation,
    dir: &std::path::Path,
) {
    let r = std::fs::create_dir_all(dir)
        .map_err(anyhow::Error::from)
        .and_then(|_| crate::figures::write_figures(cfg, test_ds, &ev.query, dir));
    if let Err(e) = r {
        eprintln!("warning: figures not written to {}: {e:#}", dir.display());
    }
}

/// The network of a config (random initialisation from the global libtorch seed).
pub fn build_net(cfg: &PatchMixConfig, device: Device) -> Result<PatchMixNet> {
    let heads = HeadConfig {
        proj_layers: cfg.model.proj_layers,
        pred_layers: cfg.model.pred_layers,
        mlp_dim: cfg.model.mlp_dim,
        out_dim: cfg.model.out_dim,
    };
    PatchMixNet::new(device, &vit_config(cfg)?, &heads, cfg.model.use_momentum)
}

/// The targets of a training step at batch `b`; they depend only on (B, m, smoothing), so a
/// run builds them once.
pub struct StepTargets {
    /// (mixed-vs-original, mixed-vs-mixed) soft targets.
    pub soft: (Tensor, Tensor),
    /// What both become when a step does not mix (identity, label-smoothed like the mixer's).
    pub unmixed: Tensor,
    /// The source term's target: the identity smoothed by `mix.src_smoothing`
    /// ([`crate::mix::source_targets`]).
    pub source: Tensor,
}

impl StepTargets {
    /// `src_smoothing`: `mix.src_smoothing` (official 0.1).
    pub fn new(mixer: &PatchMixer, b: i64, src_smoothing: f64, device: Device) -> Self {
        Self {
            soft: mixer.targets(b, b, 0, device),
            unmixed: mixer.unmixed_targets(b, b, 0, device),
            source: crate::mix::source_targets(b, b, 0, src_smoothing, device),
        }
    }
}

/// Forward pass and loss terms of one training step (official `main_pretrain.py` step):
/// `views` = two global views, then any local crops, on the network's device; `apply` = whether
/// this step mixes (one decision per step, [`PatchMixer::should_mix`]). The caller owns
/// zero-grad / backward / optimiser / momentum update, so benches time exactly this code.
pub fn step_terms(
    net: &PatchMixNet,
    mixer: &PatchMixer,
    nce: &InfoNce,
    t: &StepTargets,
    views: &[Tensor],
    apply: bool,
) -> Result<crate::loss::Terms> {
    if views.len() < 2 {
        bail!(
            "a PatchMix step needs two global views, got {}",
            views.len()
        );
    }
    let (x1, x2) = (&views[0], &views[1]);
    let (xm1, _) = mixer.mix_images(x1, apply)?;
    let (xm2, _) = mixer.mix_images(x2, apply)?;
    let (mix_target, mixmix_target) = if apply && mixer.m > 1 {
        (&t.soft.0, &t.soft.1)
    } else {
        (&t.unmixed, &t.unmixed)
    };
    let (q1, z1) = net.query(x1, true)?;
    let k1 = net.key_from_query(x1, &z1, true)?;
    let k2 = net.key(x2, true)?;
    let mk1 = net.key(&xm1, true)?;
    let (mq2, _) = net.query(&xm2, true)?;
    // local crops: each (unmixed and mixed) is a query against k1 and k2. As the official
    // loop, every crop is mixed on its own, then all crops go through the network as one batch
    // (its BatchNorms see n·B samples) and the queries are split back per crop.
    let locals = &views[2..];
    let (mut local_q, mut local_mq) = (Vec::new(), Vec::new());
    if !locals.is_empty() {
        let b = locals[0].size()[0];
        // with mixing off (or skipped) a mixed crop is the crop itself, with identity targets
        let mixed = locals
            .iter()
            .map(|lc| Ok(mixer.mix_images(lc, apply)?.0))
            .collect::<Result<Vec<Tensor>>>()?;
        let n = locals.len() as i64;
        local_q = net.query(&Tensor::cat(locals, 0), true)?.0.split(b, 0);
        local_mq = net.query(&Tensor::cat(&mixed, 0), true)?.0.split(b, 0);
        ensure!(
            local_q.len() as i64 == n,
            "the {n} local crops must share one batch size"
        );
    }
    patchmix_loss(
        nce,
        &LossInputs {
            q1: &q1,
            k1: &k1,
            k2: &k2,
            mq2: &mq2,
            mk1: &mk1,
            mix_target,
            mixmix_target,
            source: &t.source,
            local_q: &local_q,
            local_mq: &local_mq,
        },
    )
}

/// The EMA momentum applied before step `step` (global, `iters` steps per epoch):
/// `m(x) = 1 − ½(1 + cos(π·x / E))(1 − m₀)` at `x = epoch + 1/iters` (`model.momentum_schedule =
/// "official"`, see its doc) or `x = step / iters` (`"per-step"`).
pub fn momentum_at(cfg: &PatchMixConfig, step: u64, iters: u64) -> Result<f64> {
    let iters = iters.max(1) as f64;
    let x = match cfg.model.momentum_schedule.as_str() {
        "official" => (step as f64 / iters).floor() + 1.0 / iters,
        "per-step" => step as f64 / iters,
        other => bail!("unknown model.momentum_schedule `{other}`: use official or per-step"),
    };
    let e = cfg.optim.epochs.max(1) as f64;
    Ok(1.0 - 0.5 * (1.0 + (std::f64::consts::PI * x / e).cos()) * (1.0 - cfg.model.momentum_start))
}

/// Load encoder, predictor and (when present) momentum-encoder weights from a checkpoint.
fn restore_weights(net: &PatchMixNet, ck: &Checkpoint) -> Result<()> {
    load_into(&net.encoder_vs, ck.group("encoder")?, true).context("restoring the encoder")?;
    load_into(&net.predictor_vs, ck.group("predictor")?, true)
        .context("restoring the predictor")?;
    if let Some(m) = &net.momentum {
        load_into(&m.vs, ck.group("momentum")?, true).context("restoring the momentum encoder")?;
    }
    Ok(())
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

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: Option<serde_json::Value>,
    pub step: u64,
}

/// Pretrain (or resume) and evaluate. `stop_at` ends this invocation after that many steps.
pub fn pretrain(cfg: &PatchMixConfig, opts: &RunOptions, stop_at: Option<u64>) -> Result<Outcome> {
    let device = cfg.runtime.init()?;
    let mut opts = opts.clone();
    opts.keep_checkpoints = cfg.log.keep_checkpoints;
    let mut run = Run::open(&opts, &to_toml(cfg)?)?;
    let t0 = std::time::Instant::now();
    let (train_ds, test_ds) = datasets(cfg)?;
    let classes = train_ds.classes().len().max(1) as i64;
    let loader = Loader::new(
        Arc::clone(&train_ds),
        train_recipe(cfg)?,
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

    tch::manual_seed(cfg.runtime.seed as i64);
    let mut net = build_net(cfg, device)?;
    let mut groups = decay_groups(&net.encoder_vs, cfg.optim.wd_start);
    groups.extend(decay_groups(&net.predictor_vs, cfg.optim.wd_start));
    let lr = scaled_lr(cfg.optim.base_lr, cfg.optim.batch_size);
    let mut opt = AdamW::new(
        groups,
        AdamWConfig {
            lr,
            beta1: cfg.optim.beta1,
            beta2: cfg.optim.beta2,
            ..AdamWConfig::default()
        },
    )?;
    let lr_s = Schedule::WarmupCosine {
        base: lr,
        final_value: cfg.optim.min_lr,
        total_steps: total,
        warmup_steps: iters * cfg.optim.warmup_epochs,
        warmup_start: 0.0,
    };
    let wd_s = Schedule::Cosine {
        start: cfg.optim.wd_start,
        end: cfg.optim.wd_end,
        steps: total,
    };
    momentum_at(cfg, 0, iters)?; // an unknown schedule name fails before training
    let mixer = PatchMixer::new(
        cfg.mix.m,
        if cfg.mix.enabled { cfg.mix.p } else { 0.0 },
        cfg.model.patch_size,
        cfg.mix.smoothing,
    )?;
    let mut nce = InfoNce::new(cfg.optim.temperature)?;
    // the mixer's targets are row-stochastic by construction (tested): skip the per-call check
    nce.check_targets = false;

    let start = run.start_step();
    if let Some(ck) = &run.resumed {
        restore_weights(&net, ck)?;
        opt.load_state(ck.group("optim")?)
            .context("restoring the optimiser")?;
        eprintln!("resumed {} at step {start}/{total}", run.dir.display());
    }
    let end = stop_at.map_or(total, |s| s.min(total));
    let targets = StepTargets::new(
        &mixer,
        cfg.optim.batch_size as i64,
        cfg.mix.src_smoothing,
        device,
    );
    let progress = Progress::new(
        total,
        start,
        if cfg.mix.enabled {
            "patchmix"
        } else {
            "no-mix"
        },
    );
    let save = |run: &Run, step: u64, net: &PatchMixNet, opt: &AdamW| -> Result<()> {
        let enc = named_variables(&net.encoder_vs);
        let pred = named_variables(&net.predictor_vs);
        let optim = opt.state();
        let mut groups: Vec<(&str, &Named)> =
            vec![("encoder", &enc), ("predictor", &pred), ("optim", &optim)];
        let mom = net.momentum.as_ref().map(|m| named_variables(&m.vs));
        if let Some(m) = &mom {
            groups.push(("momentum", m));
        }
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
            opt.set_weight_decay(wd_s.value(step));
            // the momentum encoder moves before the step's forwards (official train_epoch)
            let momentum = momentum_at(cfg, step, iters)?;
            net.update_momentum(momentum)?;
            let views: Vec<Tensor> = batch.views.iter().map(|v| v.to_device(device)).collect();
            // one decision per step for every mixed view; the targets depend on it only
            let apply = mixer.should_mix();
            // forward passes and loss under bf16 autocast when `runtime.autocast_bf16` (CUDA only)
            let terms = contrast_core::autocast::autocast_bf16(
                cfg.runtime.autocast(device),
                device,
                || step_terms(&net, &mixer, &nce, &targets, &views, apply),
            )?;
            let values = terms.values();
            let done = step + 1;
            run.check_finite(done, &values)?;
            opt.zero_grad();
            terms.total.backward();
            opt.step()?;
            step = done;
            let total_loss = values.iter().find(|v| v.0 == "total").map_or(0.0, |v| v.1);
            if done % cfg.log.log_every == 0 || done == end {
                let mut fields: Vec<(&str, serde_json::Value)> =
                    values.iter().map(|(n, v)| (*n, json!(v))).collect();
                fields.push(("lr", json!(opt.lr())));
                fields.push(("wd", json!(wd_s.value(step - 1))));
                fields.push(("epoch", json!(epoch)));
                fields.push(("elapsed_s", json!(t0.elapsed().as_secs_f64())));
                if cfg.model.use_momentum {
                    fields.push(("ema_momentum", json!(momentum)));
                }
                run.metrics.log(done, &fields)?;
            }
            progress.update(done, &format!("ep {epoch} loss {total_loss:.4}"));
            let epoch_end = done % iters == 0;
            if epoch_end
                && cfg.eval.knn_every > 0
                && (done / iters).is_multiple_of(cfg.eval.knn_every)
                && done < total
            {
                let bank = embed(&net, Arc::clone(&train_ds), cfg, device)?;
                let query = embed(&net, Arc::clone(&test_ds), cfg, device)?;
                let acc = knn_eval(cfg, &bank, &query, classes)?;
                let fields: Vec<(String, serde_json::Value)> = acc
                    .iter()
                    .map(|(k, a)| (format!("knn_top1_k{k}"), json!(a)))
                    .collect();
                let refs: Vec<(&str, serde_json::Value)> = fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                run.metrics.log(done, &refs)?;
                progress.println(&format!("epoch {}: kNN {acc:?}", done / iters));
            }
            if (epoch_end && (done / iters).is_multiple_of(cfg.log.checkpoint_every_epochs.max(1)))
                || done == end
            {
                save(&run, done, &net, &opt)?;
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

    // evaluation: kNN and linear probe on the class token of frozen features
    let ev = evaluate(&net, &train_ds, &test_ds, cfg, device)?;
    let knn = &ev.knn;
    write_figures_or_warn(cfg, &test_ds, &ev, &run.figures_dir()?);
    let evj = ev.to_json(cfg)?;
    let wall = t0.elapsed().as_secs_f64();
    let ran = end - start;
    let report = json!({
        "method": "patchmix",
        "variant": if cfg.mix.enabled { "patchmix" } else { "no-mix baseline" },
        "metric": format!("kNN top-1 (k={}, T={})", cfg.eval.knn_k.first().copied().unwrap_or(0), cfg.eval.knn_t),
        "value": knn.first().map(|a| a.1),
        "knn": evj["knn"],
        "linear": evj["linear"],
        "eval_protocol": evj["eval_protocol"],
        "paper": cfg.paper,
        "data": format!("{} ({} train / {} test images)", cfg.data.format, train_ds.len(), test_ds.len()),
        "model": format!("{} patch {} depth {}", cfg.model.arch, cfg.model.patch_size, vit_config(cfg)?.depth),
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
