//! Parameter groups that keep a constant learning rate while the rest follow a schedule
//! (SimSiam's fixed-lr predictor, `fix_pred_lr`; Fast-MoCo / MNCLGLF's `WCosCon` schedule: cosine
//! for backbone and projector, constant for the predictor; solo-learn's `static_lr`).
//!
//! [`FixedLr`] pairs two optimisers of the same kind: `scheduled` (its lr follows
//! [`Optimizer::set_lr`]) and `fixed` (its lr is set once at construction and never changed by
//! `set_lr`). For per-parameter update rules (SGD, AdamW, LARS) this is exactly one optimiser
//! over the union of the groups with a constant lr on the fixed ones. State entries are prefixed
//! `scheduled.` / `fixed.`.

use super::Optimizer;
use crate::tensors::Named;
use anyhow::{bail, Result};

/// Two optimisers, one of which ignores learning-rate schedules (see the module docs).
pub struct FixedLr {
    pub scheduled: Box<dyn Optimizer>,
    pub fixed: Box<dyn Optimizer>,
}

impl FixedLr {
    pub fn new(scheduled: Box<dyn Optimizer>, fixed: Box<dyn Optimizer>) -> Self {
        Self { scheduled, fixed }
    }
}

impl Optimizer for FixedLr {
    fn step(&mut self) -> Result<()> {
        self.scheduled.step()?;
        self.fixed.step()
    }

    fn zero_grad(&mut self) {
        self.scheduled.zero_grad();
        self.fixed.zero_grad();
    }

    /// The scheduled optimiser's lr.
    fn lr(&self) -> f64 {
        self.scheduled.lr()
    }

    /// Sets the scheduled optimiser's lr only.
    fn set_lr(&mut self, lr: f64) {
        self.scheduled.set_lr(lr);
    }

    fn set_weight_decay(&mut self, wd: f64) {
        self.scheduled.set_weight_decay(wd);
        self.fixed.set_weight_decay(wd);
    }

    fn state(&self) -> Named {
        let mut out: Named = self
            .scheduled
            .state()
            .into_iter()
            .map(|(n, t)| (format!("scheduled.{n}"), t))
            .collect();
        out.extend(
            self.fixed
                .state()
                .into_iter()
                .map(|(n, t)| (format!("fixed.{n}"), t)),
        );
        out
    }

    fn load_state(&mut self, state: &Named) -> Result<()> {
        let mut s = Named::new();
        let mut f = Named::new();
        for (n, t) in state {
            if let Some(r) = n.strip_prefix("scheduled.") {
                s.push((r.to_string(), t.shallow_clone()));
            } else if let Some(r) = n.strip_prefix("fixed.") {
                f.push((r.to_string(), t.shallow_clone()));
            } else {
                bail!(
                    "unexpected fixed-lr optimiser state entry `{n}` (want scheduled.* or fixed.*)"
                );
            }
        }
        self.scheduled.load_state(&s)?;
        self.fixed.load_state(&f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{ParamGroup, Sgd};
    use tch::{Device, Kind, Tensor};

    fn group(name: &str, p: &Tensor) -> Vec<ParamGroup> {
        vec![ParamGroup {
            name: name.into(),
            params: vec![(name.into(), p.shallow_clone())],
            weight_decay: 0.0,
            lr_scale: 1.0,
        }]
    }

    #[test]
    fn fixed_group_ignores_set_lr_and_state_round_trips() {
        let a = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let b = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mk = |a: &Tensor, b: &Tensor| {
            FixedLr::new(
                Box::new(Sgd::new(group("a", a), 0.1, 0.9, 0.0, false).unwrap()),
                Box::new(Sgd::new(group("b", b), 0.1, 0.9, 0.0, false).unwrap()),
            )
        };
        let mut opt = mk(&a, &b);
        opt.set_lr(0.0); // the cosine has reached 0: only the fixed group moves
        assert_eq!(opt.lr(), 0.0);
        let l = (&a * 2.0).sum(Kind::Float) + (&b * 2.0).sum(Kind::Float);
        opt.zero_grad();
        l.backward();
        opt.step().unwrap();
        assert_eq!(Vec::<f32>::try_from(&a).unwrap(), vec![1.0, 1.0]);
        // b = 1 − 0.1·2 = 0.8 (first SGD step: buffer = grad)
        for v in Vec::<f32>::try_from(&b).unwrap() {
            assert!((v - 0.8).abs() < 1e-6, "{v}");
        }
        let st = opt.state();
        let names: Vec<&str> = st.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec!["scheduled.momentum_buffer.a", "fixed.momentum_buffer.b"]
        );
        let mut opt2 = mk(&a, &b);
        opt2.load_state(&st).unwrap();
        assert_eq!(opt2.state().len(), 2);
        let bad = vec![(
            "x".to_string(),
            Tensor::zeros([2], (Kind::Float, Device::Cpu)),
        )];
        assert!(opt2.load_state(&bad).is_err());
    }
}
