//! The PatchMix training step (official `main_pretrain.py::train_epoch`): the network of a
//! config, its training data, the soft targets, one step's forward passes and loss terms, and
//! the momentum schedule. [`crate::method::PatchMix`] runs them through the shared Trainer.

use crate::config::PatchMixConfig;
use crate::loss::{patchmix_loss, LossInputs};
use crate::mix::PatchMixer;
use crate::model::{HeadConfig, PatchMixNet};
use anyhow::{bail, ensure, Result};
use contrast_core::data::augment::Recipe;
use contrast_core::data::dataset::Dataset;
use contrast_core::data::splits::{load_splits, SplitSpec};
use contrast_core::data::StreamPolicy;
use contrast_core::dist::Shard;
use contrast_core::loss::InfoNce;
use contrast_core::nn::vit::{vit_base, vit_small, vit_tiny, VitConfig};
use contrast_core::optim::adamw::{AdamW, AdamWConfig};
use contrast_core::optim::decay_groups;
use contrast_core::optim::schedule::{scaled_lr, Schedule};
use contrast_core::train::Optimization;
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
        stream: StreamPolicy::new(
            cfg.data.stream,
            cfg.data.stream_above_mib,
            cfg.data.scaled_decode,
        )
        .with_on_corrupt(cfg.data.on_corrupt),
    })
}

/// BYOL asymmetric global views (+ local crops for ImageNet multi-crop).
pub fn train_recipe(cfg: &PatchMixConfig) -> Result<Recipe> {
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

/// The optimiser and schedules of a run of `total` steps, `per_epoch` per epoch (official
/// `main_worker`): AdamW (no weight decay on 1-D parameters), lr = base·batch/256 with linear
/// warm-up and cosine decay per step, weight decay cosine-increasing from `wd_start` to
/// `wd_end`. [`crate::method::PatchMix`] trains with it; the official-code tests step with it.
pub fn optimization(
    cfg: &PatchMixConfig,
    net: &PatchMixNet,
    total: u64,
    per_epoch: u64,
) -> Result<Optimization> {
    let o = &cfg.optim;
    let mut groups = decay_groups(&net.encoder_vs, o.wd_start);
    groups.extend(decay_groups(&net.predictor_vs, o.wd_start));
    let lr = scaled_lr(o.base_lr, o.batch_size);
    let optimizer = AdamW::new(
        groups,
        AdamWConfig {
            lr,
            beta1: o.beta1,
            beta2: o.beta2,
            ..AdamWConfig::default()
        },
    )?;
    Ok(Optimization {
        optimizer: Box::new(optimizer),
        lr: Schedule::WarmupCosine {
            base: lr,
            final_value: o.min_lr,
            total_steps: total,
            warmup_steps: per_epoch * o.warmup_epochs,
            warmup_start: 0.0,
        },
        weight_decay: Some(Schedule::Cosine {
            start: o.wd_start,
            end: o.wd_end,
            steps: total,
        }),
        clip: None,
    })
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
        Self::sharded(mixer, b, Shard::default(), src_smoothing, device)
            .expect("one shard takes the whole batch")
    }

    /// The targets of one rank's rows of a global batch of `global` (official multi-GPU
    /// `PatchMixer`: one column per sample of the global batch, this rank's at
    /// `rank · local batch`, the keys being gathered over the ranks).
    pub fn sharded(
        mixer: &PatchMixer,
        global: i64,
        shard: Shard,
        src_smoothing: f64,
        device: Device,
    ) -> Result<Self> {
        let b = shard.local_batch(global as usize)? as i64;
        let offset = shard.rank as i64 * b;
        Ok(Self {
            soft: mixer.targets(b, global, offset, device),
            unmixed: mixer.unmixed_targets(b, global, offset, device),
            source: crate::mix::source_targets(b, global, offset, src_smoothing, device),
        })
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
    let (xm1, p1) = mixer.mix_images(x1, apply)?;
    let (xm2, p2) = mixer.mix_images(x2, apply)?;
    let mut perms: Vec<(String, Option<Tensor>)> = vec![("perm1".into(), p1), ("perm2".into(), p2)];
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
            .enumerate()
            .map(|(j, lc)| {
                let (m, p) = mixer.mix_images(lc, apply)?;
                perms.push((format!("permL{j}"), p));
                Ok(m)
            })
            .collect::<Result<Vec<Tensor>>>()?;
        let n = locals.len() as i64;
        local_q = net.query(&Tensor::cat(locals, 0), true)?.0.split(b, 0);
        local_mq = net.query(&Tensor::cat(&mixed, 0), true)?.0.split(b, 0);
        ensure!(
            local_q.len() as i64 == n,
            "the {n} local crops must share one batch size"
        );
    }
    let mut terms = patchmix_loss(
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
    )?;
    terms.perms = perms
        .into_iter()
        .filter_map(|(n, p)| Some((n, p?)))
        .collect();
    Ok(terms)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// One rank's unmixed and source targets are its rows of the one-process targets of the
    /// global batch (column offset rank · local batch, as the official `PatchMixer` under DDP);
    /// the mixed ones have the same row sums and sit in the rank's own columns.
    #[test]
    fn a_rank_s_targets_are_its_rows_of_the_global_batch() {
        let mixer = PatchMixer::new(2, 1.0, 4, 0.1).unwrap();
        let whole = StepTargets::new(&mixer, 8, 0.1, Device::Cpu);
        for rank in 0..2 {
            let shard = Shard { rank, world: 2 };
            let t = StepTargets::sharded(&mixer, 8, shard, 0.1, Device::Cpu).unwrap();
            let rows = |x: &Tensor| x.narrow(0, rank as i64 * 4, 4);
            assert_eq!(t.unmixed.size(), vec![4, 8]);
            assert!(t.unmixed.equal(&rows(&whole.unmixed)));
            assert!(t.source.equal(&rows(&whole.source)));
            // mixed targets: mass 1 − s inside the rank's columns, s/8 everywhere else
            let own = t.soft.0.narrow(1, rank as i64 * 4, 4).sum(Kind::Float);
            let expect = 4.0 * (0.9 + 0.1 * 4.0 / 8.0);
            assert!((own.double_value(&[]) - expect).abs() < 1e-5);
        }
        assert!(
            StepTargets::sharded(&mixer, 9, Shard { rank: 0, world: 2 }, 0.1, Device::Cpu).is_err()
        );
    }
}
