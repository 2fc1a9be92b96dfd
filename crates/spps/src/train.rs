//! Pretraining (plain framework or with SPPS), the sampler pass over a finished run, and the
//! kNN / linear evaluation — one harness for the baseline and the method, so a comparison
//! differs only in the semantic pairs.

use crate::config::{Framework, SppsConfig};
use crate::model::{Learner, Partners};
use crate::sampler::{histogram, memory_bytes, select_pairs, Pair, PairSet};
use anyhow::{bail, ensure, Context, Result};
use contrast_core::data::augment::{sample_rng, Recipe};
use contrast_core::data::dataset::Dataset;
use contrast_core::data::pipeline::{Loader, LoaderConfig};
use contrast_core::data::splits::{load_splits, SplitSpec};
use contrast_core::eval::knn::knn_top1;
use contrast_core::eval::linear::{linear_probe, linear_probe_with, LinearProbeConfig};
use contrast_core::optim::clip::clip_grad_norm_tensors;
use contrast_core::optim::lars::{Lars, LarsConfig, LarsMode};
use contrast_core::optim::schedule::Schedule;
use contrast_core::optim::{single_group, Optimizer, Sgd};
use contrast_core::tensors::Named;
use contrast_core::train::runtime::seed_step;
use contrast_core::train::{config::to_toml, load_config, ConfigSource, Progress, Run, RunOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Train and test sets of a config (class-balanced subsets when asked).
pub fn datasets(cfg: &SppsConfig) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    load_splits(&SplitSpec {
        format: &cfg.data.format,
        root: &cfg.data.root,
        test_split: &cfg.data.test_split,
        train_subset: cfg.data.train_subset,
        test_subset: cfg.data.test_subset,
        seed: cfg.runtime.seed,
        method: "spps",
    })
}

/// The evaluation / sampler view (see `data.eval_resize`): `Resize(r) + CenterCrop(size)` with
/// `r = ⌊size·256/224⌋` above 32 px, a plain resize at ≤ 32 px.
pub fn eval_recipe(cfg: &SppsConfig) -> Result<Recipe> {
    let size = cfg.data.eval_size;
    let resize = match cfg.data.eval_resize {
        0 if size <= 32 => size,
        0 => size * 256 / 224,
        r => r,
    };
    if resize == size {
        Recipe::eval(size)
    } else {
        Recipe::eval_center_crop(size, resize)
    }
}

/// Embeddings `[N, D]` and labels `[N]` of every image of `ds` in index order (eval
/// transform of [`eval_recipe`], no augmentation; BN in eval mode).
pub fn embed(
    ds: Arc<dyn Dataset>,
    cfg: &SppsConfig,
    device: Device,
    f: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    embed_with(ds, eval_recipe(cfg)?, cfg, 0, device, f)
}

/// [`embed`] through `recipe` with its random stream of `epoch` (the probe's augmented views).
pub fn embed_with(
    ds: Arc<dyn Dataset>,
    recipe: Recipe,
    cfg: &SppsConfig,
    epoch: u64,
    device: Device,
    f: &dyn Fn(&Tensor) -> Result<Tensor>,
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
        feats.push(f(&batch.views[0].to_device(device))?.to_device(Device::Cpu));
        labels.push(batch.labels);
    }
    Ok((Tensor::cat(&feats, 0), Tensor::cat(&labels, 0)))
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: Option<serde_json::Value>,
    pub step: u64,
    pub dir: PathBuf,
}

/// Chooses each step's semantic partners and augments them.
pub struct PartnerPicker {
    partners: Vec<Vec<(usize, f32)>>,
    share: f64,
    seed: u64,
    recipe: Recipe,
}

/// What a step's partner choice produced.
pub struct Picked {
    /// `(batch row of the anchor, partner index, similarity)`.
    pub chosen: Vec<(usize, usize, f32)>,
    pub partners: Option<Partners>,
}

impl PartnerPicker {
    /// `recipe`: one view, the training recipe ([`train_recipe`] with 1 view).
    pub fn new(pairs: &PairSet, share: f64, seed: u64, recipe: Recipe) -> Result<Self> {
        ensure!(
            (0.0..=1.0).contains(&share),
            "spps.share must be in [0, 1], got {share}"
        );
        Ok(Self {
            partners: pairs.partners(),
            share,
            seed,
            recipe,
        })
    }

    /// For every anchor of the batch that has partners: with probability `share`, one partner
    /// drawn uniformly (stream seeded by `(seed, step)`), augmented with the training recipe.
    pub fn pick(&self, ds: &dyn Dataset, indices: &[i64], step: u64) -> Result<Picked> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ 0x5eed_5bb5 ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let mut chosen = Vec::new();
        for (row, &i) in indices.iter().enumerate() {
            let Some(ps) = self.partners.get(i as usize) else {
                bail!(
                    "batch index {i} is outside the pair file's {} images",
                    self.partners.len()
                );
            };
            if ps.is_empty() {
                continue;
            }
            if self.share < 1.0 && rng.gen::<f64>() >= self.share {
                continue;
            }
            let (j, s) = ps[rng.gen_range(0..ps.len())];
            chosen.push((row, j, s));
        }
        if chosen.is_empty() {
            return Ok(Picked {
                chosen,
                partners: None,
            });
        }
        let side = self.recipe.views[0].size();
        let m = chosen.len();
        let mut buf = vec![0f32; m * 3 * side * side];
        for (c, out) in chosen.iter().zip(buf.chunks_exact_mut(3 * side * side)) {
            let (img, _) = ds.get(c.1)?;
            let mut r = sample_rng(self.seed ^ 0x5bb5, step, c.1 as u64);
            self.recipe
                .apply(&img, &mut r, &mut [out])
                .with_context(|| format!("augmenting partner image {}", c.1))?;
        }
        let x = Tensor::from_slice(&buf).view([m as i64, 3, side as i64, side as i64]);
        let anchor = Tensor::from_slice(&chosen.iter().map(|c| c.0 as i64).collect::<Vec<_>>());
        Ok(Picked {
            chosen,
            partners: Some(Partners { x, anchor }),
        })
    }
}

/// Per-epoch SPPS diagnostics of the pairs actually used.
#[derive(Default)]
struct Diag {
    anchors: u64,
    used: u64,
    same: u64,
    labelled: u64,
    sims: Vec<f32>,
}

/// The training views of the framework's official recipe: SimCLR's (`google-research/simclr`
/// `data_util.py`, strength `data.jitter_strength`, blur `data.blur_p`) or MoCo v2's
/// (`facebookresearch/moco` `main_moco.py --aug-plus`).
pub fn train_recipe(cfg: &SppsConfig, views: usize) -> Result<Recipe> {
    let size = cfg.data.image_size;
    match cfg.framework {
        Framework::Simclr => {
            Recipe::simclr_strength(size, cfg.data.jitter_strength, cfg.data.blur_p, views)
        }
        Framework::Mocov2 => Recipe::mocov2(size, views),
    }
}

/// Pretrain (or resume) and evaluate. `stop_at` ends this invocation after that many steps.
/// The pretraining optimiser: SGD with momentum over every trained variable, one weight decay
/// (the step bench builds the same).
pub fn build_optimizer(cfg: &SppsConfig, learner: &Learner) -> Result<Box<dyn Optimizer>> {
    let o = &cfg.optim;
    let (lr, wd) = o.lr_and_decay(cfg.framework);
    let groups = single_group(learner.trained_vs(), wd);
    Ok(match o.optimizer.as_str() {
        "sgd" => Box::new(Sgd::new(groups, lr, o.momentum, 0.0, false)?),
        // SimCLR's `lars_optimizer.py`: no adaptation and no decay for `bias` and
        // `batch_normalization` variables, trust η, plain scaling (no clipping)
        "lars" => Box::new(Lars::new(
            groups,
            LarsConfig {
                lr,
                momentum: o.momentum,
                trust_coefficient: o.lars_trust,
                mode: LarsMode::Scale,
                exclude_bias_and_norm: true,
                ..LarsConfig::default()
            },
        )?),
        other => bail!("optim.optimizer `{other}`: use sgd or lars"),
    })
}

/// The lr schedule of a run of `total` steps with `iters` steps per epoch: linear warm-up from 0
/// over `optim.warmup_epochs`, then cosine to `optim.final_lr`.
pub fn lr_schedule(cfg: &SppsConfig, iters: u64, total: u64) -> Result<Schedule> {
    let o = &cfg.optim;
    let (lr, _) = o.lr_and_decay(cfg.framework);
    let s = if o.warmup_epochs == 0 {
        Schedule::Cosine {
            start: lr,
            end: o.final_lr,
            steps: total,
        }
    } else {
        Schedule::WarmupCosine {
            base: lr,
            final_value: o.final_lr,
            total_steps: total,
            warmup_steps: o.warmup_epochs * iters,
            warmup_start: 0.0,
        }
    };
    s.validate()?;
    Ok(s)
}

pub fn pretrain(cfg: &SppsConfig, opts: &RunOptions, stop_at: Option<u64>) -> Result<Outcome> {
    let device = cfg.runtime.init_without_autocast("spps")?;
    let mut opts = opts.clone();
    opts.keep_checkpoints = cfg.log.keep_checkpoints;
    let mut run = Run::open(&opts, &to_toml(cfg)?)?;
    let t0 = std::time::Instant::now();
    let (train_ds, test_ds) = datasets(cfg)?;
    let classes = train_ds.classes().len().max(1) as i64;
    if cfg.framework == Framework::Mocov2 {
        cfg.mocov2
            .check_queue(train_ds.len(), cfg.optim.batch_size)
            .context("MoCo v2 queue")?;
    }
    let pairs = if cfg.spps.enabled {
        ensure!(
            !cfg.spps.pairs.is_empty(),
            "spps.enabled needs spps.pairs (a file from `spps sample`)"
        );
        let p = PairSet::load(Path::new(&cfg.spps.pairs))?;
        ensure!(
            p.n == train_ds.len(),
            "pair file {} indexes {} images but the training set has {} (same data.* and seed?)",
            cfg.spps.pairs,
            p.n,
            train_ds.len()
        );
        Some(p)
    } else {
        None
    };
    let picker = match &pairs {
        Some(p) => Some(PartnerPicker::new(
            p,
            cfg.spps.share,
            cfg.runtime.seed,
            train_recipe(cfg, 1)?,
        )?),
        None => None,
    };
    let train_labels: Vec<i64> = (0..train_ds.len())
        .map(|i| train_ds.get(i).map(|(_, l)| l))
        .collect::<Result<_>>()?;

    tch::manual_seed(cfg.runtime.seed as i64);
    let mut learner = Learner::new(cfg, device)?;
    let loader = Loader::new(
        Arc::clone(&train_ds),
        train_recipe(cfg, 2)?,
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
    let o = &cfg.optim;
    let mut opt = build_optimizer(cfg, &learner)?;
    let params = learner.trained_vs().trainable_variables();
    let param_refs: Vec<&Tensor> = params.iter().collect();
    let lr_s = lr_schedule(cfg, iters, total)?;
    let start = run.start_step();
    if let Some(ck) = &run.resumed {
        learner.restore(ck)?;
        opt.load_state(ck.group("optim")?)
            .context("restoring the optimiser")?;
        eprintln!("resumed {} at step {start}/{total}", run.dir.display());
    }
    let end = stop_at.map_or(total, |s| s.min(total));
    let label = format!(
        "{}{}",
        cfg.framework.name(),
        if cfg.spps.enabled { "+spps" } else { "" }
    );
    let progress = Progress::new(total, start, &label);
    let save = |run: &Run, step: u64, learner: &Learner, opt: &dyn Optimizer| -> Result<()> {
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
    let mut diag = Diag::default();
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
            learner.before_step()?;
            let indices: Vec<i64> = Vec::try_from(&batch.indices.to_kind(Kind::Int64))?;
            let picked = match &picker {
                Some(p) => Some(p.pick(train_ds.as_ref(), &indices, step)?),
                None => None,
            };
            if let Some(pk) = &picked {
                diag.anchors += indices.len() as u64;
                for &(row, j, s) in &pk.chosen {
                    diag.used += 1;
                    diag.sims.push(s);
                    let (a, b) = (train_labels[indices[row] as usize], train_labels[j]);
                    if a >= 0 && b >= 0 {
                        diag.labelled += 1;
                        diag.same += u64::from(a == b);
                    }
                }
            }
            let partners = picked.as_ref().and_then(|p| p.partners.as_ref());
            let x1 = batch.views[0].to_device(device);
            let x2 = batch.views[1].to_device(device);
            let partners = partners.map(|p| Partners {
                x: p.x.to_device(device),
                anchor: p.anchor.to_device(device),
            });
            let loss = learner.loss(&x1, &x2, partners.as_ref())?;
            let lv = loss.double_value(&[]);
            let done = step + 1;
            let m = partners.as_ref().map_or(0, |p| p.anchor.size()[0]);
            let values = [("loss", lv), ("semantic_pairs", m as f64)];
            run.check_finite(done, &values)?;
            opt.zero_grad();
            loss.backward();
            let grad_norm = if o.clip_grad_norm > 0.0 {
                Some(clip_grad_norm_tensors(&param_refs, o.clip_grad_norm)?)
            } else {
                None
            };
            opt.step()?;
            step = done;
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
            progress.update(done, &format!("ep {epoch} loss {lv:.4} pairs {m}"));
            let epoch_end = done % iters == 0;
            if epoch_end && pairs.is_some() {
                let d = std::mem::take(&mut diag);
                run.metrics.log(
                    done,
                    &[
                        ("diag_epoch", json!(epoch)),
                        (
                            "pair_precision",
                            json!((d.labelled > 0).then(|| d.same as f64 / d.labelled as f64)),
                        ),
                        (
                            "pairs_per_anchor",
                            json!(d.used as f64 / d.anchors.max(1) as f64),
                        ),
                        (
                            "pairs_per_image",
                            json!(pairs.as_ref().map(|p| p.pairs_per_image())),
                        ),
                        ("pairs_used", json!(d.used)),
                        ("sim_hist_bins", json!(cfg.log.hist_bins)),
                        ("sim_hist", json!(histogram(&d.sims, cfg.log.hist_bins))),
                    ],
                )?;
            }
            if (epoch_end && (done / iters).is_multiple_of(cfg.log.checkpoint_every_epochs.max(1)))
                || done == end
            {
                save(&run, done, &learner, opt.as_ref())?;
            }
        }
    }
    progress.finish();
    if end < total {
        return Ok(Outcome {
            report: None,
            step: end,
            dir: run.dir.clone(),
        });
    }
    let train_wall = t0.elapsed().as_secs_f64();

    let f = |x: &Tensor| learner.embed(x);
    let bank = embed(Arc::clone(&train_ds), cfg, device, &f)?;
    let query = embed(Arc::clone(&test_ds), cfg, device, &f)?;
    let knn = knn_top1(&bank, &query, classes, &cfg.eval.knn_k, cfg.eval.knn_t)?;
    // what the model learned: test embeddings, PCA, coloured by class
    contrast_core::eval::projection::pca_figure(
        &query.0,
        &query.1,
        test_ds.classes(),
        "test embeddings, PCA",
        &run.figures_dir()?.join("pca"),
        2000,
    )?;
    let linear = if cfg.eval.linear_epochs > 0 {
        let lp = LinearProbeConfig {
            epochs: cfg.eval.linear_epochs,
            batch_size: cfg.eval.linear_batch_size,
            lr: cfg.eval.linear_lr,
            weight_decay: cfg.eval.linear_weight_decay,
            seed: cfg.runtime.seed,
            ..LinearProbeConfig::default()
        };
        let r = if cfg.eval.linear_augment {
            // SimCLR's linear evaluation trains on random crops (area 0.08–1) + flips, without
            // colour distortion (`preprocess_for_train(color_distort=False)`)
            let recipe = Recipe::linear_train(cfg.data.eval_size, (0.08, 1.0))?;
            linear_probe_with(
                &mut |epoch| {
                    Ok(embed_with(
                        Arc::clone(&train_ds),
                        recipe.clone(),
                        cfg,
                        epoch as u64,
                        device,
                        &f,
                    )?
                    .0)
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
            "best_epoch": r.best_epoch, "epochs": cfg.eval.linear_epochs,
        }))
    } else {
        None
    };
    let wall = t0.elapsed().as_secs_f64();
    let ran = end - start;
    let report = json!({
        "method": "spps",
        "variant": label,
        "metric": "linear top-1 (frozen backbone, last epoch)",
        "value": linear.as_ref().map(|l| l["last_top1"].clone()),
        "knn": knn.iter().map(|(k, a)| json!({"k": k, "top1": a})).collect::<Vec<_>>(),
        "linear": linear,
        "pairs": pairs.as_ref().map(|p| json!({
            "file": cfg.spps.pairs, "count": p.pairs.len(), "per_image": p.pairs_per_image(),
            "precision": p.precision, "settings": p.settings, "share": cfg.spps.share,
        })),
        "paper": cfg.paper,
        "data": format!("{} ({} train / {} test images, {} px)", cfg.data.format, train_ds.len(), test_ds.len(), cfg.data.image_size),
        "model": learner.describe(cfg),
        "epochs": cfg.optim.epochs,
        "batch_size": cfg.optim.batch_size,
        "steps": total,
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "train_wall_s": train_wall,
        "wall_s": wall,
        "s_per_step": train_wall / ran.max(1) as f64,
    });
    run.write_report(&report)?;
    Ok(Outcome {
        report: Some(report),
        step: end,
        dir: run.dir.clone(),
    })
}

/// The sampler pass: rebuild the model of the finished run in `run_dir` (its resolved
/// `config.toml`), load its latest checkpoint frozen, embed every training image without
/// augmentation, select pairs with `sampler`, label-check them (report only) and save to `out`.
pub fn sample(
    run_dir: &Path,
    sampler: &crate::config::SamplerConfig,
    out: &Path,
) -> Result<PairSet> {
    let cfg_path = run_dir.join("config.toml");
    let cfg: SppsConfig = load_config(Some(ConfigSource::file(&cfg_path)?), &[])
        .with_context(|| format!("loading the run config {}", cfg_path.display()))?;
    let device = cfg.runtime.init_without_autocast("spps")?;
    let ck_path = contrast_core::train::Checkpointer::new(run_dir.join("checkpoints"), 1)
        .latest()?
        .with_context(|| format!("no checkpoint in {}/checkpoints", run_dir.display()))?;
    let ck = contrast_core::train::Checkpointer::load(&ck_path)?;
    let mut learner = Learner::new(&cfg, device)?;
    learner.restore_encoder(&ck)?;
    let (train_ds, _) = datasets(&cfg)?;
    let t0 = std::time::Instant::now();
    let (emb, labels) = match sampler.embedding.as_str() {
        "backbone" => embed(train_ds, &cfg, device, &|x| learner.embed(x))?,
        "projector" => embed(train_ds, &cfg, device, &|x| learner.embed_projector(x))?,
        other => bail!("sampler.embedding must be `backbone` or `projector`, got `{other}`"),
    };
    let (n, d) = (emb.size()[0] as usize, emb.size()[1] as usize);
    let pairs: Vec<Pair> = select_pairs(&emb, sampler)?;
    let labels: Vec<i64> = Vec::try_from(&labels)?;
    let precision = PairSet::label_precision(&pairs, &labels);
    let set = PairSet {
        n,
        dim: d,
        source: ck_path.display().to_string(),
        settings: sampler.clone(),
        pairs,
        precision,
    };
    set.save(out)?;
    eprintln!(
        "sampler: {n} images × {d}, {} pairs ({:.3}/image), label precision {}, peak search memory ≈ {:.1} MB, {:.1} s → {}",
        set.pairs.len(),
        set.pairs_per_image(),
        precision.map_or("n/a".into(), |p| format!("{:.3}", p)),
        memory_bytes(n as u64, d as u64, sampler.block_size.min(n) as u64) as f64 / 1e6,
        t0.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(set)
}
