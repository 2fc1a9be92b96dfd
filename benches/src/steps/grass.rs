//! GraSS, gradient-guided sampling stage: ResNet-18 (torchvision layout) + head 512→512→128,
//! NT-Xent, dL/dF of the layer-4 map, heat-map boxes, crops, second forward, LARS.

use super::{scalar, weights, StepCase, SEED};
use anyhow::Result;
use contrast_core::loss::NtXent;
use contrast_core::optim::lars::Lars;
use contrast_core::optim::Optimizer;
use grass::config::PretrainConfig;
use grass::model::GrassNet;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

/// View size (px): layer 4 is 3×3, the heat map is up-sampled to 96×96.
pub const GRASS_CROP: i64 = 96;

pub struct GrassStep {
    p: PretrainConfig,
    batch: i64,
    net: GrassNet,
    loss_fn: NtXent,
    opt: Lars,
    lr: f64,
    /// `[x₁…x_N, x'₁…x'_N]`, `[2N, 3, S, S]`.
    x: Tensor,
}

impl GrassStep {
    pub fn new(batch: i64, device: Device) -> Result<Self> {
        let p = PretrainConfig::default();
        let net = GrassNet::new(device, "resnet18", 128, true)?;
        // the official schedule's value where the GS stage starts in the paper presets (200 of
        // 350 epochs); the value only scales the update
        let lr = contrast_core::optim::schedule::Schedule::grass_vissl(350)?.value(200);
        let opt = grass::method::build_optimizer(&p, &net, lr)?;
        let loss_fn = NtXent::new(p.temperature)?;
        let x = Tensor::randn(
            [2 * batch, 3, GRASS_CROP, GRASS_CROP],
            (Kind::Float, device),
        );
        Ok(Self {
            p,
            batch,
            net,
            loss_fn,
            opt,
            lr,
            x,
        })
    }
}

impl StepCase for GrassStep {
    fn name(&self) -> String {
        format!("grass_gs_r18_p{GRASS_CROP}_b{}", self.batch)
    }

    fn batch(&self) -> i64 {
        self.batch
    }

    fn loss(&mut self) -> Result<Tensor> {
        let (loss, _) = grass::method::step_loss(
            &self.net,
            &self.loss_fn,
            &self.x,
            true,
            self.p.threshold_ratio,
        )?;
        Ok(loss)
    }

    fn optimizer(&mut self) -> &mut dyn Optimizer {
        &mut self.opt
    }

    fn spec(&self) -> Value {
        let p = &self.p;
        json!({
            "case": "grass",
            "layers": [2, 2, 2, 2],
            "out_dim": 128,
            "crop": GRASS_CROP,
            "tau": p.temperature,
            "threshold_ratio": p.threshold_ratio,
            "lr": self.lr,
            "momentum": p.momentum,
            "weight_decay": p.weight_decay,
            "trust_coefficient": p.trust_coefficient,
        })
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = weights(&self.net.vs, "");
        out.push(("in:x".into(), self.x.shallow_clone()));
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        tch::manual_seed(SEED);
        // not under no_grad: the sampling needs dL/dF of the first forward
        let loss = self.loss()?;
        scalar(&loss)
    }
}
