//! The MNCLGLF objective (official `loss_functions/infoNCE.py`; notes §3b):
//!
//! ```text
//! L  = L1 + a · [½ NTX(j3, p1) + ½ NTX(j1, p3)]                       a = 6
//! L1 = 1/12 · [ Σ_{c=1..6} CE(p̂2 · k̂1,cᵀ / τ1, diag) + Σ_{c=1..6} CE(p̂1 · k̂2,cᵀ / τ1, diag) ]
//! ```
//! `p_v` are the online predictions of the three views, `k1, k2 ∈ R^{6N×D}` the projected local
//! combinations of views 1 and 2 (no gradient), `j1, j3` the nearest neighbours of the EMA
//! projections of views 1 and 3 in the memory bank (no gradient). NTX is SimCLR's NT-Xent in the
//! 2N layout `[j; p]` (lightly `NTXentLoss(temperature=τ2)(j, p)`, no memory bank), so gradient
//! reaches `p` only.
//!
//! **Global-vs-local gradient.** The released code normalises `p` and then `.detach()`es it and
//! all-gathers it under `no_grad` before `L1`; with `k` also computed under `no_grad`, `L1`
//! carries **no gradient** at all and only the NN term trains the network. The paper describes
//! the global/local contrast as a training signal, so by default we keep the gradient through
//! `p` (`released_code_l1 = false`); `released_code_l1 = true` reproduces the released code
//! (`L1` is still computed and logged, but detached), and every preset sets it: the released
//! code is the only evidence of how the published numbers were produced.

use anyhow::{ensure, Result};
use contrast_core::loss::{InfoNce, NtXent};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Loss hyper-parameters (`[loss]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// τ of the global-vs-local InfoNCE (`InfoNCE.temperature: 1` in `config.yaml`).
    pub temperature_global_local: f64,
    /// τ of the NN NT-Xent (`NTXentLoss(temperature=1)`, hard-coded in `infoNCE.py`).
    pub temperature_nn: f64,
    /// Weight `a` of the NN term (6).
    pub nn_weight: f64,
    /// Reproduce the released code: `L1` carries no gradient (see the module docs).
    pub released_code_l1: bool,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            temperature_global_local: 1.0,
            temperature_nn: 1.0,
            nn_weight: 6.0,
            released_code_l1: false,
        }
    }
}

/// Inputs of [`mnclglf_loss`]; `N` samples, width `D`.
pub struct LossInputs<'a> {
    /// Online predictions of the three views, `[N, D]` each.
    pub p1: &'a Tensor,
    pub p2: &'a Tensor,
    pub p3: &'a Tensor,
    /// Local-combination keys of views 1 and 2, `[C·N, D]` (combination-major).
    pub k1: &'a Tensor,
    pub k2: &'a Tensor,
    /// Memory-bank neighbours of the EMA projections of views 1 and 3, `[N, D]`.
    pub j1: &'a Tensor,
    pub j3: &'a Tensor,
}

/// The terms (scalars): `total = global_local + nn_weight · nn`.
pub struct LossTerms {
    pub total: Tensor,
    pub global_local: Tensor,
    pub nn: Tensor,
}

impl LossTerms {
    /// `[(name, value)]` with one device-to-host copy.
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        let v = Tensor::stack(
            &[
                self.total.detach(),
                self.global_local.detach(),
                self.nn.detach(),
            ],
            0,
        );
        let v = Vec::<f64>::try_from(v.to_kind(tch::Kind::Double)).unwrap_or_default();
        ["total", "global_local", "nn"].into_iter().zip(v).collect()
    }
}

/// `L1`: mean over the chunks of `keys` (`[C·N, D]`) of `CE(p̂ · k̂_cᵀ / τ, diag)`.
fn global_vs_local(nce: &InfoNce, p: &Tensor, keys: &Tensor) -> Result<Vec<Tensor>> {
    let n = p.size()[0];
    ensure!(
        keys.size().len() == 2 && n > 0 && keys.size()[0] % n == 0,
        "local keys {:?} are not a multiple of the batch {n}",
        keys.size()
    );
    keys.split(n, 0)
        .iter()
        .map(|k| nce.forward(p, &k.detach()))
        .collect()
}

/// The full objective (see the module docs).
pub fn mnclglf_loss(cfg: &LossConfig, x: &LossInputs) -> Result<LossTerms> {
    let nce = InfoNce::new(cfg.temperature_global_local)?;
    let ntx = NtXent::new(cfg.temperature_nn)?;
    let (p1, p2) = if cfg.released_code_l1 {
        (x.p1.detach(), x.p2.detach())
    } else {
        (x.p1.shallow_clone(), x.p2.shallow_clone())
    };
    // p2 against the 6 combinations of view 1, p1 against those of view 2
    let mut terms = global_vs_local(&nce, &p2, x.k1)?;
    terms.extend(global_vs_local(&nce, &p1, x.k2)?);
    let count = terms.len() as f64;
    let global_local = Tensor::stack(&terms, 0).sum(tch::Kind::Float) / count;
    let nn = ntx.forward_pair(&x.j3.detach(), x.p1)? * 0.5
        + ntx.forward_pair(&x.j1.detach(), x.p3)? * 0.5;
    let total = &global_local + &nn * cfg.nn_weight;
    Ok(LossTerms {
        total,
        global_local,
        nn,
    })
}
