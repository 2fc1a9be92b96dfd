//! FBA-Net+: V-Net with three decoders, Dice + consistency + contrast, SGD — through the
//! crate's `Method` (`fba_net::method::FbaNetMethod`), the step the Trainer runs.

use super::{weights, StepCase, Through};
use anyhow::Result;
use contrast_core::optim::Optimizer;
use fba_net::data::LaData;
use fba_net::method::FbaNetMethod;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

pub struct FbaStep {
    cfg: fba_net::config::FbaNetConfig,
    run: Through<FbaNetMethod>,
    x: Tensor,
    y: Tensor,
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
        // no dropout (the paper's V-Net has Dropout3d 0.5), so the loss check is deterministic;
        // the PyTorch peer's network has none either
        cfg.model.dropout = 0.0;
        // the step takes its batch directly: no cases loaded
        let none = LaData {
            train: vec![],
            test: vec![],
            labeled: vec![],
            unlabeled: vec![],
        };
        let run = Through::new(FbaNetMethod::with_data(&cfg, device, none)?, device)?;
        let p = cfg.data.patch.map(|v| v as i64);
        let l = cfg.data.labeled_bs as i64;
        let x = Tensor::randn([batch, 1, p[0], p[1], p[2]], (Kind::Float, device));
        let y = Tensor::randint(2, [l, p[0], p[1], p[2]], (Kind::Int64, device));
        Ok(Self { cfg, run, x, y })
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
        let batch = (self.x.shallow_clone(), self.y.shallow_clone());
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
        // the loss weights of the step the method runs (the first: consistency ramp-up at 1)
        let w = fba_net::method::iteration_weights(c, self.run.ctx.done());
        json!({
            "case": "fba-net",
            "patch": c.data.patch,
            "labeled": c.data.labeled_bs,
            "n_filters": c.model.n_filters,
            "dim": c.model.dim,
            "lambda_seg": w.lambda_seg,
            "consistency": w.consistency,
            "temperature": w.temperature,
            "lr": c.optim.lr,
            "momentum": c.optim.momentum,
            "weight_decay": c.optim.weight_decay,
        })
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = weights(&self.run.method.net.vs, "");
        out.push(("in:x".into(), self.x.shallow_clone()));
        out.push(("in:y".into(), self.y.shallow_clone()));
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        let batch = (self.x.shallow_clone(), self.y.shallow_clone());
        self.run.checked_loss(batch)
    }
}
