//! Training (official `code/train_3d.py`) and evaluation on the shared run harness.
//!
//! Per iteration: a batch of `labeled_bs` labelled + unlabelled patches, the loss of
//! [`crate::loss::fba_loss`], SGD (momentum 0.9, wd 1e-4, constant lr 0.01). From `eval.start`,
//! every `eval.every` iterations the mean test Dice of decoder 1 is computed and the best
//! weights are kept in `<run>/best.safetensors` (the reference's test-set model selection).
//! At the end both the last-iteration weights and the best-on-test weights are evaluated on the
//! test cases (Dice, Jaccard, 95HD, ASD per case), reported separately.

use crate::config::FbaNetConfig;
use crate::data::{make_batch, LaData};
use crate::eval::{evaluate, mean_dice, CaseResult};
use crate::loss::{consistency_weight, fba_loss, DecoderOutputs, LossWeights, Terms};
use crate::model::{FbaConfig, FbaNet};
use anyhow::{anyhow, bail, Context, Result};
use contrast_core::eval::segmentation::SegMetrics;
use contrast_core::nn::vnet::{Norm, UpMode, VNetConfig};
use contrast_core::optim::schedule::Schedule;
use contrast_core::optim::{single_group, Optimizer, Sgd};
use contrast_core::tensors::{load_into, named_variables, Named};
use contrast_core::train::runtime::seed_step;
use contrast_core::train::{config::to_toml, Progress, Run, RunOptions};
use contrast_core::volume::sliding::SlidingWindow;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::Path;
use tch::{Device, Tensor};

/// The network of a config (`train` = with dropout).
pub fn build_model(cfg: &FbaNetConfig, device: Device, train: bool) -> Result<FbaNet> {
    let (decoders, head) = match cfg.model.variant.as_str() {
        "fba-net+" => (
            vec![UpMode::Transpose, UpMode::Trilinear, UpMode::Nearest],
            true,
        ),
        "fba-net" => (vec![UpMode::Transpose], true),
        "supervised" => (vec![UpMode::Transpose], false),
        other => bail!("unknown model.variant `{other}`: use fba-net+, fba-net or supervised"),
    };
    FbaNet::new(
        device,
        &FbaConfig {
            vnet: VNetConfig {
                in_channels: 1,
                n_classes: 2,
                n_filters: cfg.model.n_filters,
                norm: Norm::BatchNorm,
                dropout: if train { cfg.model.dropout } else { 0.0 },
            },
            decoders,
            patch: cfg.data.patch.map(|p| p as i64),
            dim: cfg.model.dim,
            contrast_head: head && cfg.loss.contrast != 0.0,
        },
    )
}

/// The sliding window of a config (window = training patch).
pub fn sliding_window(cfg: &FbaNetConfig) -> SlidingWindow {
    SlidingWindow {
        patch: cfg.data.patch,
        stride: cfg.eval.stride,
        batch: cfg.eval.sw_batch.max(1),
    }
}

/// What a run reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: Option<serde_json::Value>,
    pub step: u64,
}

fn write_weights(path: &Path, named: &Named) -> Result<()> {
    let tmp = path.with_extension("tmp.safetensors");
    let refs: Vec<(&str, Tensor)> = named
        .iter()
        .map(|(n, t)| (n.as_str(), t.to_device(Device::Cpu)))
        .collect();
    Tensor::write_safetensors(&refs, &tmp)
        .map_err(|e| anyhow!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Loads weights saved by [`write_weights`] (or a checkpoint's `model` group) into `net`.
pub fn load_weights(net: &FbaNet, path: &Path) -> Result<()> {
    let t =
        Tensor::read_safetensors(path).map_err(|e| anyhow!("reading {}: {e}", path.display()))?;
    load_into(&net.vs, &t, true).with_context(|| format!("loading {}", path.display()))
}

fn summarize(results: &[CaseResult]) -> serde_json::Value {
    let all: Vec<SegMetrics> = results.iter().map(|r| r.metrics).collect();
    let m = SegMetrics::mean(&all);
    json!({
        "mean": {"dice": m.dice * 100.0, "jaccard": m.jaccard * 100.0, "hd95": m.hd95, "asd": m.asd},
        "cases": results,
    })
}

/// Load the variables of `path` (safetensors) that the network has, by name and shape; returns
/// how many. Errors when none matches (a wrong file would otherwise train from scratch silently).
pub fn init_from(net: &FbaNet, path: &Path) -> Result<usize> {
    let tensors = Tensor::read_safetensors(path)
        .with_context(|| format!("reading initial weights {}", path.display()))?;
    let vars = net.vs.variables();
    let matched: Vec<(String, Tensor)> = tensors
        .into_iter()
        .filter(|(n, _)| vars.contains_key(n))
        .collect();
    if matched.is_empty() {
        bail!(
            "model.init {}: none of its tensors names a variable of this network",
            path.display()
        );
    }
    load_into(&net.vs, &matched, false).with_context(|| format!("loading {}", path.display()))?;
    Ok(matched.len())
}

/// The lr of every iteration (0-based): constant (`train_3d.py`), or UA-MT's step decay,
/// `base·γ^⌊i / lr_step⌋` (`train_LA.py` lowers it after iterations 2500, 5000).
pub fn lr_schedule(cfg: &FbaNetConfig, total: u64) -> Result<Schedule> {
    let o = &cfg.optim;
    let s = if o.lr_step == 0 {
        Schedule::Constant { value: o.lr }
    } else {
        Schedule::Step {
            base: o.lr,
            milestones: (1..)
                .map(|k| k * o.lr_step)
                .take_while(|&m| m < total.max(1))
                .collect(),
            gamma: o.lr_gamma,
        }
    };
    s.validate()?;
    Ok(s)
}

/// The reference optimiser: SGD with momentum, weight decay on every parameter.
pub fn optimizer(cfg: &FbaNetConfig, net: &FbaNet) -> Result<Sgd> {
    Sgd::new(
        single_group(&net.vs, cfg.optim.weight_decay),
        cfg.optim.lr,
        cfg.optim.momentum,
        0.0,
        false,
    )
}

/// The objective's weights of a config at consistency weight `consistency` (the contrastive
/// term is off for the supervised baseline).
pub fn loss_weights(cfg: &FbaNetConfig, consistency: f64) -> LossWeights {
    LossWeights {
        lambda_seg: cfg.loss.lambda_seg,
        ce: cfg.loss.ce_weight,
        dice: cfg.loss.dice,
        consistency,
        contrast: if cfg.model.variant == "supervised" {
            0.0
        } else {
            cfg.loss.contrast
        },
        temperature: cfg.loss.temperature,
        alpha_max: cfg.loss.alpha_max,
        alpha_min: cfg.loss.alpha_min,
    }
}

/// Forward pass (train mode) and loss terms of one training iteration on a batch whose first
/// `y.size()[0]` images are the labelled ones; the caller owns zero-grad / backward / step, so
/// training, `time_iterations` and the benches run exactly this code.
pub fn step_terms(net: &FbaNet, x: &Tensor, y: &Tensor, w: &LossWeights) -> Result<Terms> {
    let outs = net.forward_t(x, true, true)?;
    let dec: Vec<DecoderOutputs> = outs
        .iter()
        .map(|o| DecoderOutputs {
            logits: &o.logits,
            fg: o.fg.as_ref(),
            bg: o.bg.as_ref(),
        })
        .collect();
    fba_loss(&dec, y, w)
}

/// Train (or resume) and evaluate. `stop_at` ends this invocation after that many iterations.
pub fn train(cfg: &FbaNetConfig, opts: &RunOptions, stop_at: Option<u64>) -> Result<Outcome> {
    let device = cfg.runtime.init_without_autocast("fba-net")?;
    let mut opts = opts.clone();
    opts.keep_checkpoints = cfg.log.keep_checkpoints;
    let mut run = Run::open(&opts, &to_toml(cfg)?)?;
    let t0 = std::time::Instant::now();
    let data = LaData::load(cfg)?;
    let mut sampler = data.sampler(cfg)?;
    let total = cfg.optim.iterations;
    tch::manual_seed(cfg.runtime.seed as i64);
    let net = build_model(cfg, device, true)?;
    if !cfg.model.init.is_empty() {
        let n = init_from(&net, Path::new(&cfg.model.init))?;
        eprintln!("initialised {n} variables from {}", cfg.model.init);
    }
    let mut opt = optimizer(cfg, &net)?;
    let sw = sliding_window(cfg);
    let best_path = run.path("best.safetensors");
    let mut best_dice = -1.0f64;
    let mut best_step = 0u64;
    let start = run.start_step();
    if let Some(ck) = &run.resumed {
        load_into(&net.vs, ck.group("model")?, true).context("restoring the model")?;
        opt.load_state(ck.group("optim")?)
            .context("restoring the optimiser")?;
        best_dice = ck.state.extra["best_dice"].as_f64().unwrap_or(-1.0);
        best_step = ck.state.extra["best_step"].as_u64().unwrap_or(0);
        eprintln!("resumed {} at iteration {start}/{total}", run.dir.display());
    }
    // The sampler's permutations come from one stream: replay it up to `start`.
    let mut sampler_rng = ChaCha8Rng::seed_from_u64(cfg.runtime.seed);
    for _ in 0..start {
        sampler.next_batch(&mut sampler_rng);
    }
    let weights = |iter: u64| {
        loss_weights(
            cfg,
            consistency_weight(
                iter,
                cfg.loss.rampup_every,
                cfg.loss.consistency_rampup,
                cfg.loss.consistency,
            ),
        )
    };
    let end = stop_at.map_or(total, |s| s.min(total));
    let lr_schedule = lr_schedule(cfg, total)?;
    let progress = Progress::new(total, start, &cfg.model.variant);
    let save = |run: &Run, step: u64, opt: &Sgd, best_dice: f64, best_step: u64| -> Result<()> {
        let model = named_variables(&net.vs);
        let optim = opt.state();
        run.checkpoints.save(
            step,
            cfg.runtime.seed,
            &[("model", &model), ("optim", &optim)],
            json!({"best_dice": best_dice, "best_step": best_step}),
        )?;
        Ok(())
    };
    let mut step = start;
    let mut train_s = 0.0;
    while step < end {
        let ts = std::time::Instant::now();
        let (lab, unl) = sampler.next_batch(&mut sampler_rng);
        let batch = make_batch(&data, &lab, &unl, cfg.data.patch, cfg.runtime.seed, step)?;
        seed_step(cfg.runtime.seed, step);
        let x = batch.images.to_device(device);
        let y = batch.labels.to_device(device);
        let done = step + 1;
        let w = weights(done);
        opt.set_lr(lr_schedule.value(step));
        let terms = step_terms(&net, &x, &y, &w)?;
        let values = terms.values();
        run.check_finite(done, &values)?;
        opt.zero_grad();
        terms.total.backward();
        opt.step()?;
        drop(terms);
        step = done;
        train_s += ts.elapsed().as_secs_f64();
        let loss = values.first().map_or(0.0, |v| v.1);
        if done % cfg.log.log_every.max(1) == 0 || done == end {
            let mut fields: Vec<(&str, serde_json::Value)> =
                values.iter().map(|(n, v)| (*n, json!(v))).collect();
            fields.push(("consistency_weight", json!(w.consistency)));
            fields.push(("lr", json!(opt.lr())));
            fields.push(("s_per_iter", json!(train_s / (done - start) as f64)));
            fields.push(("elapsed_s", json!(t0.elapsed().as_secs_f64())));
            run.metrics.log(done, &fields)?;
        }
        progress.update(done, &format!("loss {loss:.4}"));
        if cfg.eval.every > 0 && done >= cfg.eval.start && done % cfg.eval.every == 0 {
            let d = mean_dice(&net, &data.test, &sw, device)?;
            run.metrics.log(done, &[("test_dice", json!(d * 100.0))])?;
            if d > best_dice {
                best_dice = d;
                best_step = done;
                write_weights(&best_path, &named_variables(&net.vs))?;
            }
            progress.println(&format!(
                "iteration {done}: test Dice {:.2} (best {:.2} @ {best_step})",
                d * 100.0,
                best_dice * 100.0
            ));
        }
        if done % cfg.log.checkpoint_every.max(1) == 0 || done == end {
            save(&run, done, &opt, best_dice, best_step)?;
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
    let ran = (end - start).max(1);

    // Final evaluation: last-iteration weights (the model as trained, eval mode) and, when the
    // reference's selection ran, the best-on-test weights.
    let eval_net = build_model(cfg, device, false)?;
    load_into(&eval_net.vs, &named_variables(&net.vs), true)?;
    let save_dir = cfg.eval.save_predictions.then(|| run.path("predictions"));
    let last = evaluate(&eval_net, &data.test, &sw, device, save_dir.as_deref())?;
    // what the model does: slices + A / 1 − A maps of the first test case (last weights)
    if let Some(case) = data.test.first() {
        let fig = run.figures_dir()?.join(format!("slices_{}.png", case.id));
        crate::figures::slice_figure(&eval_net, case, &sw, device, &fig)
            .with_context(|| format!("drawing {}", fig.display()))?;
    }
    let best = if best_path.is_file() {
        load_weights(&eval_net, &best_path)?;
        Some(evaluate(&eval_net, &data.test, &sw, device, None)?)
    } else {
        None
    };
    let report = json!({
        "method": "fba-net",
        "variant": cfg.model.variant,
        "metric": "Dice % (decoder 1, sliding window, last iteration)",
        "value": SegMetrics::mean(&last.iter().map(|r| r.metrics).collect::<Vec<_>>()).dice * 100.0,
        "last_iteration": summarize(&last),
        "best_on_test": best.as_ref().map(|b| {
            let mut v = summarize(b);
            v["step"] = json!(best_step);
            v["selection_dice"] = json!(best_dice * 100.0);
            v
        }),
        "paper": cfg.paper,
        "data": format!(
            "LA h5 ({} train: {} labelled + {} unlabelled; {} test)",
            data.train.len(), data.labeled.len(), data.unlabeled.len(), data.test.len()
        ),
        "patch": cfg.data.patch,
        "stride": cfg.eval.stride,
        "n_filters": cfg.model.n_filters,
        "parameters": contrast_core::nn::count_parameters(&net.vs),
        "iterations": total,
        "batch": if cfg.model.variant == "supervised" {
            format!("{} labelled", cfg.data.batch_size.min(data.labeled.len()))
        } else {
            format!("{} labelled + {} unlabelled", cfg.data.labeled_bs, cfg.data.batch_size - cfg.data.labeled_bs)
        },
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "train_wall_s": train_wall,
        "s_per_iter": train_s / ran as f64,
        "wall_s": t0.elapsed().as_secs_f64(),
    });
    run.write_report(&report)?;
    Ok(Outcome {
        report: Some(report),
        step: end,
    })
}

/// Evaluates saved weights (`best.safetensors`, or a checkpoint folder's `model` group) on the
/// test list; returns the per-case results. `figure`: also draw the slices / A-map figure of
/// the first test case there.
pub fn eval_weights(
    cfg: &FbaNetConfig,
    weights: &Path,
    save_dir: Option<&Path>,
    figure: Option<&Path>,
) -> Result<Vec<CaseResult>> {
    let device = cfg.runtime.init_without_autocast("fba-net")?;
    let data = LaData::load(cfg)?;
    let net = build_model(cfg, device, false)?;
    if weights.is_dir() {
        let ck = contrast_core::train::Checkpointer::load(weights)?;
        load_into(&net.vs, ck.group("model")?, true)
            .with_context(|| format!("loading {}", weights.display()))?;
    } else {
        load_weights(&net, weights)?;
    }
    let sw = sliding_window(cfg);
    if let (Some(fig), Some(case)) = (figure, data.test.first()) {
        crate::figures::slice_figure(&net, case, &sw, device, fig)
            .with_context(|| format!("drawing {}", fig.display()))?;
    }
    evaluate(&net, &data.test, &sw, device, save_dir)
}

/// Seconds per training iteration at the config's patch and batch (forward + backward + SGD
/// step on random data; the first `warmup` iterations are not timed).
pub fn time_iterations(cfg: &FbaNetConfig, iters: usize, warmup: usize) -> Result<f64> {
    let device = cfg.runtime.init_without_autocast("fba-net")?;
    let net = build_model(cfg, device, true)?;
    let mut opt = optimizer(cfg, &net)?;
    let p = cfg.data.patch.map(|v| v as i64);
    let b = cfg.data.batch_size as i64;
    let l = cfg.data.labeled_bs as i64;
    let x = Tensor::randn([b, 1, p[0], p[1], p[2]], (tch::Kind::Float, device));
    let y = Tensor::randint(2, [l, p[0], p[1], p[2]], (tch::Kind::Int64, device));
    let w = loss_weights(cfg, 1.0);
    let mut timed = 0.0;
    for i in 0..warmup + iters {
        let t = std::time::Instant::now();
        let terms = step_terms(&net, &x, &y, &w)?;
        opt.zero_grad();
        terms.total.backward();
        opt.step()?;
        let _ = terms.values();
        if i >= warmup {
            timed += t.elapsed().as_secs_f64();
        }
        eprintln!("iteration {i}: {:.2} s", t.elapsed().as_secs_f64());
    }
    Ok(timed / iters.max(1) as f64)
}
