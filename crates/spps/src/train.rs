//! What the SPPS runs share besides the loop (the [`crate::method::Spps`] `Method` impl runs
//! them through core's `Trainer`): data sets and views, embedding a data set, the partner
//! picker, the optimiser and lr schedule, and the sampler pass over a finished run.

use crate::config::{Framework, SppsConfig};
use crate::model::{Model, Partners};
use crate::sampler::{memory_bytes, select_pairs, Pair, PairSet};
use anyhow::{bail, ensure, Context, Result};
use contrast_core::data::augment::{sample_rng, Recipe};
use contrast_core::data::dataset::Dataset;
use contrast_core::data::splits::{load_splits, SplitSpec};
use contrast_core::data::StreamPolicy;
use contrast_core::eval::features::{embed_dataset, EvalLoader};
use contrast_core::eval::linear::LinearProbeConfig;
use contrast_core::eval::protocol::FrozenEval;
use contrast_core::optim::lars::{Lars, LarsConfig, LarsMode};
use contrast_core::optim::schedule::{Piece, Schedule};
use contrast_core::optim::{single_group, Optimizer, Sgd};
use contrast_core::train::{derive_seed, load_config, ConfigSource};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;
use tch::nn::VarStore;
use tch::{Device, Tensor};

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
        stream: StreamPolicy::new(
            cfg.data.stream,
            cfg.data.stream_above_mib,
            cfg.data.scaled_decode,
        )
        .with_on_corrupt(cfg.data.on_corrupt),
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
    embed_dataset(ds, eval_recipe(cfg)?, eval_loader(cfg), 0, device, f)
}

/// The frozen-feature protocol (core `eval::protocol`): kNN (k 20 / 200, T 0.1) and the linear
/// probe on the pooled backbone — on fixed features, or SimCLR's way with `eval.linear_augment`:
/// random crops (area 0.08–1) + flips re-embedded every epoch, without colour distortion
/// (`preprocess_for_train(color_distort=False)`).
pub fn protocol(
    cfg: &SppsConfig,
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
        ..LinearProbeConfig::default()
    });
    let probe_views = if e.linear_augment {
        Some(Recipe::linear_train(cfg.data.eval_size, (0.08, 1.0))?)
    } else {
        None
    };
    Ok(FrozenEval {
        train: Arc::clone(train),
        test: Arc::clone(test),
        view: eval_recipe(cfg)?,
        loader: eval_loader(cfg),
        knn_k: e.knn_k.clone(),
        knn_t: e.knn_t,
        probe,
        probe_views,
    })
}

fn eval_loader(cfg: &SppsConfig) -> EvalLoader {
    EvalLoader {
        seed: cfg.runtime.seed,
        prefetch: cfg.data.prefetch,
        threads: cfg.data.threads,
    }
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
    /// (none at all when the batch would get a single one: see the code) drawn uniformly (stream `derive_seed(seed, "spps-partner-choice", step)`), augmented with
    /// the training recipe (stream of `(derive_seed(seed, "spps-partner-views", 0), step,
    /// partner index)`).
    pub fn pick(&self, ds: &dyn Dataset, indices: &[i64], step: u64) -> Result<Picked> {
        self.pick_rows(ds, indices, step, 0..indices.len())
    }

    /// [`Self::pick`] over the global batch `indices` (every rank's rows, so that the choice is
    /// the one-process choice), with the partner views of the anchors in `rows` only (this
    /// rank's rows) and their anchors counted from `rows.start`. `chosen` is the global choice.
    /// When some row of the global batch has a partner, `partners` is `Some`, with no row when
    /// none of them is in `rows`.
    pub fn pick_rows(
        &self,
        ds: &dyn Dataset,
        indices: &[i64],
        step: u64,
        rows: std::ops::Range<usize>,
    ) -> Result<Picked> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(derive_seed(self.seed, "spps-partner-choice", step));
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
        // one partner alone is not used: its projection would be a BatchNorm batch of one
        // sample, whose unbiased variance is NaN (PyTorch refuses such a batch in training
        // mode; libtorch through tch wrote NaN into the running variance)
        if chosen.len() < 2 {
            return Ok(Picked {
                chosen: Vec::new(),
                partners: None,
            });
        }
        let side = self.recipe.views[0].size();
        let mine: Vec<&(usize, usize, f32)> =
            chosen.iter().filter(|c| rows.contains(&c.0)).collect();
        let m = mine.len();
        let views_seed = derive_seed(self.seed, "spps-partner-views", 0);
        let mut buf = vec![0f32; m * 3 * side * side];
        for (c, out) in mine.iter().zip(buf.chunks_exact_mut(3 * side * side)) {
            let (img, _) = ds.get(c.1)?;
            let mut r = sample_rng(views_seed, step, c.1 as u64);
            self.recipe
                .apply(&img, &mut r, &mut [out])
                .with_context(|| format!("augmenting partner image {}", c.1))?;
        }
        let x = Tensor::from_slice(&buf).view([m as i64, 3, side as i64, side as i64]);
        let anchor = Tensor::from_slice(
            &mine
                .iter()
                .map(|c| (c.0 - rows.start) as i64)
                .collect::<Vec<_>>(),
        );
        Ok(Picked {
            partners: Some(Partners {
                x,
                anchor,
                first_row: rows.start as i64,
            }),
            chosen,
        })
    }
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

/// The pretraining optimiser over every trained variable of `vs` (the model's
/// [`Model::trained_vs`]), one weight decay: SGD with momentum or SimCLR's LARS (the step bench
/// builds the same).
pub fn build_optimizer(cfg: &SppsConfig, vs: &VarStore) -> Result<Box<dyn Optimizer>> {
    let o = &cfg.optim;
    let (lr, wd) = o.lr_and_decay(cfg.framework);
    let groups = single_group(vs, wd);
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

/// The lr schedule of a run of `total` steps with `iters` steps per epoch, the framework's own:
///
/// * SimCLR, `google-research/simclr` `tf2/model.py` `WarmUpAndCosineDecay`: `lr·s/W` for
///   `s < W = optim.warmup_epochs · iters`, then `CosineDecay(lr, T′ − W)(s − W)` to
///   `optim.final_lr` (SimCLR: 0) with `T′ = get_train_steps = examples·epochs // batch + 1`,
///   which is `total + 1` here (the loader drops the last partial batch);
/// * MoCo v2, `facebookresearch/moco` `main_moco.py` `adjust_learning_rate` with `--cos`:
///   `lr·½(1 + cos(π·e/E))`, set once at the start of each epoch `e` of `E`, no warm-up
///   (`optim.warmup_epochs` and `optim.final_lr` are SimCLR's).
pub fn lr_schedule(cfg: &SppsConfig, iters: u64, total: u64) -> Result<Schedule> {
    let o = &cfg.optim;
    let (lr, _) = o.lr_and_decay(cfg.framework);
    ensure!(
        iters > 0 && total > 0,
        "an lr schedule needs steps: {iters} per epoch, {total} in all"
    );
    let s = match cfg.framework {
        Framework::Simclr => {
            let w = o.warmup_epochs * iters;
            ensure!(
                w < total,
                "optim.warmup_epochs {} spans the whole run ({total} steps of {iters} per epoch)",
                o.warmup_epochs
            );
            let cosine = Schedule::Cosine {
                start: lr,
                end: o.final_lr,
                steps: total + 1 - w,
            };
            if w == 0 {
                cosine
            } else {
                Schedule::Composite {
                    pieces: vec![
                        Piece {
                            until: w,
                            schedule: Schedule::Linear {
                                start: 0.0,
                                end: lr,
                                steps: w as f64,
                            },
                        },
                        Piece {
                            until: total,
                            schedule: cosine,
                        },
                    ],
                }
            }
        }
        Framework::Mocov2 => {
            let epochs = total.div_ceil(iters);
            Schedule::Composite {
                pieces: (0..epochs)
                    .map(|e| Piece {
                        until: (e + 1) * iters,
                        schedule: Schedule::constant(
                            lr * 0.5
                                * (1.0 + (std::f64::consts::PI * e as f64 / epochs as f64).cos()),
                        ),
                    })
                    .collect(),
            }
        }
    };
    s.validate()?;
    Ok(s)
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
    let device = cfg.runtime.init()?;
    let ck_path = contrast_core::train::Checkpointer::new(run_dir.join("checkpoints"), 1)
        .latest()?
        .with_context(|| format!("no checkpoint in {}/checkpoints", run_dir.display()))?;
    let ck = contrast_core::train::Checkpointer::load(&ck_path)?;
    let mut model = Model::new(&cfg, device)?;
    model.restore_encoder(&ck)?;
    let (train_ds, _) = datasets(&cfg)?;
    let t0 = std::time::Instant::now();
    let (emb, labels) = match sampler.embedding.as_str() {
        "backbone" => embed(train_ds, &cfg, device, &|x| model.embed(x))?,
        "projector" => embed(train_ds, &cfg, device, &|x| model.embed_projector(x))?,
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
