//! Spade: V-Net encoder (width 8) + global head + local feature decoder on pairs of overlapping
//! 3-D crops; global loss with spatial positives / negatives and weights, local voxel InfoNCE,
//! AdamW. The crops and the local voxel samples are drawn once (data work, outside the step).

use super::{weights, StepCase, Through};
use anyhow::Result;
use contrast_core::optim::Optimizer;
use rand::SeedableRng;
use serde_json::{json, Value};
use spade::method::SpadePretrain;
use spade::pretrain::{CropBatch, LocalSamples, PoolVolume};
use tch::{Device, Kind, Tensor};

/// Side of the synthetic pool volumes the crops come from.
const VOLUME: [i64; 3] = [64, 64, 48];

pub struct SpadeStep {
    cfg: spade::config::SpadeConfig,
    run: Through<SpadePretrain>,
    batch: CropBatch,
    samples: LocalSamples,
}

impl SpadeStep {
    /// `volumes` volumes per step, two crops each.
    pub fn new(volumes: i64, device: Device) -> Result<Self> {
        let mut cfg = spade::config::SpadeConfig::default();
        cfg.pretrain.method = "spade".into();
        cfg.pretrain.volumes = volumes as usize;
        cfg.pretrain.crop = [32, 32, 32];
        cfg.finetune.model.n_filters = 8;
        let pool: Vec<PoolVolume> = (0..volumes.max(2))
            .map(|i| PoolVolume {
                id: format!("synthetic{i}"),
                image: Tensor::randn(VOLUME, (Kind::Float, Device::Cpu)),
                shape: VOLUME,
                frame: ([0; 3], VOLUME),
            })
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(super::SEED as u64);
        let batch = spade::pretrain::sample_crops(&cfg, &pool, &mut rng)?;
        let samples = spade::pretrain::sample_local(&cfg, &batch, &mut rng)?;
        let run = Through::new(SpadePretrain::with_pool(&cfg, device, pool)?, device)?;
        Ok(Self {
            cfg,
            run,
            batch,
            samples,
        })
    }

    /// The step's batch (the method consumes it; the tensors are shared, not copied).
    fn step_batch(&self) -> (CropBatch, Option<LocalSamples>) {
        let b = &self.batch;
        let s = &self.samples;
        (
            CropBatch {
                images: b.images.shallow_clone(),
                geometry: b.geometry.clone(),
                volume: b.volume.clone(),
                centres: b.centres.shallow_clone(),
            },
            Some(LocalSamples {
                pairs: s
                    .pairs
                    .iter()
                    .map(|(k, a, b)| (*k, a.shallow_clone(), b.shallow_clone()))
                    .collect(),
                pos: s.pos.shallow_clone(),
            }),
        )
    }
}

impl StepCase for SpadeStep {
    fn name(&self) -> String {
        let c = &self.cfg;
        format!(
            "spade_vnet{}_c{}_v{}",
            c.finetune.model.n_filters, c.pretrain.crop[0], c.pretrain.volumes
        )
    }

    /// Crops per step.
    fn batch(&self) -> i64 {
        2 * self.cfg.pretrain.volumes as i64
    }

    fn loss(&mut self) -> Result<Tensor> {
        let batch = self.step_batch();
        self.run.loss(batch)
    }

    fn update(&mut self) -> Result<()> {
        self.run.update()
    }

    fn optimizer(&mut self) -> &mut dyn Optimizer {
        self.run.optimizer()
    }

    fn spec(&self) -> Value {
        let c = &self.cfg;
        let g = &c.global;
        json!({
            "case": "spade",
            "crop": c.pretrain.crop,
            "n_filters": c.finetune.model.n_filters,
            "proj_dim": c.pretrain.proj_dim,
            "local_dim": c.local.dim,
            "temperature": g.temperature,
            "cross_volume_radius": g.cross_volume_radius,
            "negative_radius": g.negative_radius,
            "weight_power": g.weight_power,
            "far_radius": g.far_radius,
            "local_weight": c.local.weight,
            "local_temperature": c.local.temperature,
            "local_negative_radius": c.local.negative_radius,
            "lr": c.pretrain.lr,
            "weight_decay": c.pretrain.weight_decay,
        })
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = weights(&self.run.method.net.vs, "");
        let b = &self.batch;
        out.push(("in:images".into(), b.images.shallow_clone()));
        out.push(("in:volume".into(), Tensor::from_slice(&b.volume)));
        out.push(("in:centres".into(), b.centres.shallow_clone()));
        let s = &self.samples;
        let ks: Vec<i64> = s.pairs.iter().map(|p| p.0).collect();
        let counts: Vec<i64> = s.pairs.iter().map(|p| p.1.size()[0]).collect();
        let ia: Vec<&Tensor> = s.pairs.iter().map(|p| &p.1).collect();
        let ib: Vec<&Tensor> = s.pairs.iter().map(|p| &p.2).collect();
        out.push(("in:pair_k".into(), Tensor::from_slice(&ks)));
        out.push(("in:pair_counts".into(), Tensor::from_slice(&counts)));
        out.push(("in:ia".into(), Tensor::cat(&ia, 0)));
        out.push(("in:ib".into(), Tensor::cat(&ib, 0)));
        out.push(("in:pos".into(), s.pos.shallow_clone()));
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        let batch = self.step_batch();
        self.run.checked_loss(batch)
    }
}
