//! GraSS, gradient-guided sampling stage: ResNet-18 (torchvision layout) + head 512→512→128,
//! NT-Xent, dL/dF of the layer-4 map, heat-map boxes, crops, second forward, LARS — through the
//! crate's `Method` (`grass::method::Pretrain`), the step the Trainer runs.

use super::{batch_of, random_images, scalar, weights, StepCase, Through, SEED};
use anyhow::Result;
use contrast_core::optim::Optimizer;
use contrast_core::train::Method;
use grass::method::Pretrain;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

/// View size (px): layer 4 is 3×3, the heat map is up-sampled to 96×96.
pub const GRASS_CROP: i64 = 96;

pub struct GrassStep {
    cfg: grass::config::GrassConfig,
    run: Through<Pretrain>,
    /// The two views `[N, 3, S, S]` each.
    views: [Tensor; 2],
}

impl GrassStep {
    pub fn new(batch: i64, device: Device) -> Result<Self> {
        let mut cfg = grass::config::GrassConfig::default();
        cfg.model.arch = "resnet18".into();
        cfg.model.out_dim = 128;
        cfg.model.head_relu = true;
        cfg.data.crop_size = GRASS_CROP as usize;
        cfg.pretrain.method = "grass".into();
        cfg.pretrain.batch_size = batch as usize;
        // no warm-up: step 0 is in the gradient-guided stage
        cfg.pretrain.warmup_epochs = Some(0);
        // the tiles serve the loader and the overlays only: the step takes the views
        let ds = random_images(batch as usize, 32)?;
        let run = Through::new(Pretrain::with_data(&cfg, device, ds, 1)?, device)?;
        let views = [0, 1]
            .map(|_| Tensor::randn([batch, 3, GRASS_CROP, GRASS_CROP], (Kind::Float, device)));
        Ok(Self { cfg, run, views })
    }
}

impl StepCase for GrassStep {
    fn name(&self) -> String {
        format!("grass_gs_r18_p{GRASS_CROP}_b{}", self.batch())
    }

    fn batch(&self) -> i64 {
        self.cfg.pretrain.batch_size as i64
    }

    fn loss(&mut self) -> Result<Tensor> {
        self.run.loss(batch_of(&self.views))
    }

    fn update(&mut self) -> Result<()> {
        self.run.update()
    }

    fn optimizer(&mut self) -> &mut dyn Optimizer {
        self.run.optimizer()
    }

    fn spec(&self) -> Value {
        let p = &self.cfg.pretrain;
        json!({
            "case": "grass",
            "layers": [2, 2, 2, 2],
            "out_dim": 128,
            "crop": GRASS_CROP,
            "tau": p.temperature,
            "threshold_ratio": p.threshold_ratio,
            // as the Trainer sets it at step 0 of a one-step run
            "lr": self.run.opt.lr.value(0),
            "momentum": p.momentum,
            "weight_decay": p.weight_decay,
            "trust_coefficient": p.trust_coefficient,
        })
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = weights(&self.run.method.net.vs, "");
        // `[x₁…x_N, x'₁…x'_N]` (VISSL's collator), as the step concatenates them
        out.push(("in:x".into(), Tensor::cat(&self.views, 0)));
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        tch::manual_seed(SEED);
        // not under no_grad: the sampling needs dL/dF of the first forward
        let loss = self
            .run
            .method
            .step(batch_of(&self.views), &self.run.ctx)?
            .total;
        scalar(&loss)
    }
}
