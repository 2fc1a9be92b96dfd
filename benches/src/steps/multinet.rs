//! MNCLGLF: ResNet-18 online / EMA encoders, local keys, memory bank, SGD — through the
//! crate's `Method` (`multinet::method::Multinet`), the step the Trainer runs.

use super::{batch_of, weights, StepCase, Through};
use anyhow::Result;
use contrast_core::optim::Optimizer;
use contrast_core::train::Method;
use multinet::method::{Multinet, Net};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

pub struct MultinetStep {
    cfg: multinet::config::MultinetConfig,
    run: Through<Multinet>,
    views: Vec<Tensor>,
}

impl MultinetStep {
    pub fn new(batch: i64, device: Device) -> Result<Self> {
        let mut cfg = multinet::config::MultinetConfig::default();
        cfg.model.stem = contrast_core::nn::resnet::Stem::Cifar;
        cfg.model.bank_size = 4096;
        cfg.optim.batch_size = batch as usize;
        let method = Multinet::build(&cfg, device)?;
        let views = (0..method.net.views())
            .map(|_| Tensor::randn([batch, 3, 32, 32], (Kind::Float, device)))
            .collect();
        let run = Through::new(method, device)?;
        Ok(Self { cfg, run, views })
    }

    fn mnclglf(&self) -> &multinet::method::Mnclglf {
        match &self.run.method.net {
            Net::Mnclglf(m) => m,
            Net::Simclr(_) => unreachable!("the bench trains MNCLGLF"),
        }
    }
}

impl StepCase for MultinetStep {
    fn name(&self) -> String {
        format!("multinet_r18_b{}", self.batch())
    }

    fn batch(&self) -> i64 {
        self.cfg.optim.batch_size as i64
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
        let c = &self.cfg;
        json!({
            "case": "multinet",
            "layers": c.model.layers,
            "proj_hidden": c.model.proj_hidden,
            "proj_out": c.model.proj_out,
            "pred_hidden": c.model.pred_hidden,
            "ema_momentum": c.model.ema_momentum,
            "bank_size": c.model.bank_size,
            "split_num": c.local.split_num,
            "combs": c.local.combs,
            "tau_global_local": c.loss.temperature_global_local,
            "tau_nn": c.loss.temperature_nn,
            "nn_weight": c.loss.nn_weight,
            "released_code_l1": c.loss.released_code_l1,
            "lr": c.optim.lr,
            "momentum": c.optim.momentum,
            "weight_decay": c.optim.weight_decay,
            "clip_grad_norm": c.optim.clip_grad_norm,
        })
    }

    fn tensors(&self) -> Vec<(String, Tensor)> {
        let m = self.mnclglf();
        let net = &m.net;
        let mut out = Vec::new();
        for (prefix, vs) in [
            ("encoder", &net.encoder_vs),
            ("predictor", &net.predictor_vs),
            ("ema", &net.ema_vs),
        ] {
            out.extend(weights(vs, &format!("{prefix}.")));
        }
        for (k, v) in m.bank.state() {
            // a copy: the checked forward enqueues into the bank in place
            out.push((format!("in:{k}"), v.copy()));
        }
        for (i, v) in self.views.iter().enumerate() {
            out.push((format!("in:x{}", i + 1), v.shallow_clone()));
        }
        out
    }

    fn checked_loss(&mut self) -> Result<f64> {
        self.run.checked_loss(batch_of(&self.views))
    }
}
