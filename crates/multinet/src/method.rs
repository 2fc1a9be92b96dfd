//! One training step of MNCLGLF (official `FastMoCo.forward` + `InfoNCE.forward`), as a
//! [`Learner`] the shared loop in [`crate::train`] drives.

use crate::config::MultinetConfig;
use crate::loss::{mnclglf_loss, LossInputs};
use crate::model::MultiNet;
use anyhow::{ensure, Context, Result};
use contrast_core::memory::MemoryBank;
use contrast_core::tensors::{load_into, named_variables, Named};
use contrast_core::train::Checkpoint;
use tch::nn::VarStore;
use tch::{Device, Tensor};

/// What the shared training loop needs from a method.
pub trait Learner {
    /// Augmented views per image the step consumes.
    fn views(&self) -> usize;
    /// Before the loss: per-step state updates (EMA).
    fn before_step(&mut self, step: u64) -> Result<()>;
    /// The loss of one batch (`views` on the device) and its logged terms (first = total).
    fn loss(&mut self, views: &[Tensor]) -> Result<(Tensor, Vec<(&'static str, f64)>)>;
    /// VarStores trained with the scheduled lr, and those at a constant lr.
    fn scheduled_vs(&self) -> Vec<&VarStore>;
    fn fixed_vs(&self) -> Vec<&VarStore>;
    /// Checkpoint groups (besides `optim`).
    fn state(&self) -> Vec<(&'static str, Named)>;
    fn restore(&mut self, ck: &Checkpoint) -> Result<()>;
    /// Frozen features for evaluation (BN eval mode, no gradient).
    fn embed(&self, x: &Tensor) -> Result<Tensor>;
    /// Human-readable model description for the report.
    fn describe(&self) -> String;
}

/// MNCLGLF: networks + nearest-neighbour bank + loss settings.
pub struct Mnclglf {
    pub net: MultiNet,
    pub bank: MemoryBank,
    cfg: MultinetConfig,
}

impl Mnclglf {
    pub fn new(cfg: &MultinetConfig, device: Device) -> Result<Self> {
        Ok(Self {
            net: MultiNet::new(cfg, device)?,
            bank: MemoryBank::new(
                cfg.model.bank_size,
                cfg.model.proj_out,
                cfg.runtime.seed ^ 0xba4c,
                device,
            )?,
            cfg: cfg.clone(),
        })
    }
}

impl Learner for Mnclglf {
    fn views(&self) -> usize {
        3
    }

    fn before_step(&mut self, _step: u64) -> Result<()> {
        // official: `_momentum_update_target_encoder()` at the start of the no-grad block, before
        // the EMA encoder runs
        self.net.update_ema(self.cfg.model.ema_momentum)
    }

    fn loss(&mut self, views: &[Tensor]) -> Result<(Tensor, Vec<(&'static str, f64)>)> {
        ensure!(
            views.len() >= 3,
            "MNCLGLF needs 3 views, got {}",
            views.len()
        );
        let f = self.net.forward(&views[0], &views[1], &views[2], true)?;
        // j1 = NN(e1) without update; j3 = NN(e3), then enqueue e3 (`memory_bank(j3, update=True)`)
        let j1 = self.bank.nearest(&f.e1)?;
        let j3 = self.bank.nearest(&f.e3)?;
        self.bank.push(&f.e3)?;
        let terms = mnclglf_loss(
            &self.cfg.loss,
            &LossInputs {
                p1: &f.p[0],
                p2: &f.p[1],
                p3: &f.p[2],
                k1: &f.k1,
                k2: &f.k2,
                j1: &j1,
                j3: &j3,
            },
        )?;
        let values = terms.values();
        Ok((terms.total, values))
    }

    fn scheduled_vs(&self) -> Vec<&VarStore> {
        if self.cfg.optim.constant_predictor_lr {
            vec![&self.net.encoder_vs]
        } else {
            vec![&self.net.encoder_vs, &self.net.predictor_vs]
        }
    }

    fn fixed_vs(&self) -> Vec<&VarStore> {
        if self.cfg.optim.constant_predictor_lr {
            vec![&self.net.predictor_vs]
        } else {
            vec![]
        }
    }

    fn state(&self) -> Vec<(&'static str, Named)> {
        vec![
            ("encoder", named_variables(&self.net.encoder_vs)),
            ("predictor", named_variables(&self.net.predictor_vs)),
            ("ema", named_variables(&self.net.ema_vs)),
            ("bank", self.bank.state()),
        ]
    }

    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        load_into(&self.net.encoder_vs, ck.group("encoder")?, true)
            .context("restoring the encoder")?;
        load_into(&self.net.predictor_vs, ck.group("predictor")?, true)
            .context("restoring the predictor")?;
        load_into(&self.net.ema_vs, ck.group("ema")?, true).context("restoring the EMA encoder")?;
        self.bank
            .load_state(ck.group("bank")?)
            .context("restoring the memory bank")
    }

    fn embed(&self, x: &Tensor) -> Result<Tensor> {
        self.net.embed(x)
    }

    fn describe(&self) -> String {
        format!(
            "ResNet(layers {:?}, stem {:?}) + projector 512→{}→{}→{} + predictor →{}→; EMA {}; bank {}",
            self.cfg.model.layers,
            self.cfg.model.stem,
            self.cfg.model.proj_hidden,
            self.cfg.model.proj_hidden,
            self.cfg.model.proj_out,
            self.cfg.model.pred_hidden,
            self.cfg.model.ema_momentum,
            self.cfg.model.bank_size
        )
    }
}
