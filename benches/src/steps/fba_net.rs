//! FBA-Net+: V-Net with three decoders, Dice + consistency + contrast, SGD.

use super::{scalar, weights, StepCase, SEED};
use anyhow::Result;
use contrast_core::optim::{Optimizer, Sgd};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

pub struct FbaStep {
    cfg: fba_net::config::FbaNetConfig,
    net: fba_net::model::FbaNet,
    opt: Sgd,
    x: Tensor,
    y: Tensor,
    w: fba_net::loss::LossWeights,
}

impl FbaStep {
    pub fn new(batch: i64, device: Device) -> Result<Self> {
        let mut cfg = fba_net::config::FbaNetConfig::default();
        cfg.data.patch = [32, 32, 32];
        cfg.data.batch_size = batch as usize;
        cfg.data.labeled_bs = (batch as usize / 2).max(1);
        cfg.model.variant = "fba-net+".into();
        cfg.model.n_filters = 8;
        cfg.model.dim = 128;
        // `train = false`: no dropout, so the loss check is deterministic; the PyTorch peer's
        // network has none either.
        let net = fba_net::method::build_model(&cfg, device, false)?;
        let opt = fba_net::method::optimizer(&cfg, &net)?;
        let p = cfg.data.patch.map(|v| v as i64);
        let l = cfg.data.labeled_bs as i64;
        let x = Tensor::randn([batch, 1, p[0], p[1], p[2]], (Kind::Float, device));
        let y = Tensor::randint(2, [l, p[0], p[1], p[2]], (Kind::Int64, device));
        let w = fba_net::method::loss_weights(&cfg, 1.0);
        Ok(Self {
            cfg,
            net,
            opt,
            x,
            y,
            w,
        })
    }
}

impl StepCase for FbaStep {
    fn name(&self) -> String {
        let p = self.cfg.data.patch;
        format!(
            "fba-net_vnet{}_p{}_b{}",
            self.cfg.model.n_filters,
            p[0],
            self.batch()
        )
    }

    fn batch(&self) -> i64 {
        self.cfg.data.batch_size as i64
    }

    fn loss(&mut self) -> Result<Tensor> {
        Ok(fba_net::method::step_terms(&self.net, &self.x, &self.y, &self.w)?.total)
    }

    fn optimizer(&mut self) -> &mut dyn Optimizer {
        &mut self.opt
    }

    fn spec(&self) -> Value {
        let c = &self.cfg;
        json!({
            "case": "fba-net",
            "patch": c.data.patch,
            "labeled": c.data.labeled_bs,
            "n_filters": c.model.n_filters,
            "dim": c.model.dim,
            "lambda_seg": self.w.lambda_seg,
            "consistency": self.w.consistency,
            "temperature": self.w.temperature,
            "lr": c.optim.lr,
            "momentum": c.optim.momentum,
            "weight_decay": c.optim.weight_decay,
        })
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = weights(&self.net.vs, "");
        out.push(("in:x".into(), self.x.shallow_clone()));
        out.push(("in:y".into(), self.y.shallow_clone()));
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        tch::manual_seed(SEED);
        let terms =
            tch::no_grad(|| fba_net::method::step_terms(&self.net, &self.x, &self.y, &self.w))?;
        scalar(&terms.total)
    }
}
