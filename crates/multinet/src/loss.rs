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
//!
//! **Several ranks** (torchrun; the released code trains on one GPU: its `dist.py` starts a group
//! of one, and its `InfoNCE.loss1` labels only work for one rank): each rank's loss is the
//! global batch's, so N ranks train what one process trains on the global batch. `L1` takes each
//! rank's own predictions against the keys of every rank (gathered without gradient, as `k` has
//! none), the positive of local row `i` at global row `rank·N + i`; the NN term is NT-Xent over
//! every rank's predictions (gathered with gradient) and neighbours.

use anyhow::{ensure, Context, Result};
use contrast_core::dist;
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

/// `L1`: mean over the chunks of `keys` (`[C·M, D]`, `M` the global batch: every rank's rows
/// of each chunk) of `CE(p̂ · k̂_cᵀ / τ, y)`, `y_i = offset + i` (this rank's first global row).
fn global_vs_local(
    nce: &InfoNce,
    p: &Tensor,
    keys: &Tensor,
    m: i64,
    offset: i64,
) -> Result<Vec<Tensor>> {
    let n = p.size()[0];
    ensure!(
        keys.size().len() == 2 && n > 0 && m >= offset + n && keys.size()[0] % m == 0,
        "local keys {:?} are not a multiple of the batch {m}",
        keys.size()
    );
    let labels = Tensor::arange_start(offset, offset + n, (tch::Kind::Int64, p.device()));
    keys.split(m, 0)
        .iter()
        .map(|k| nce.forward_labels(p, &k.detach(), &labels))
        .collect()
}

/// Keys `[C·N, D]` (combination-major) of every rank, each combination's rows in rank order:
/// `[C·N·world, D]` (without gradient; `k` has none). Returns them with the global batch.
fn gather_keys(keys: &Tensor, n: i64) -> Result<(Tensor, i64)> {
    let (cn, d) = (keys.size()[0], keys.size()[1]);
    ensure!(
        n > 0 && cn % n == 0,
        "local keys {:?} are not a multiple of the batch {n}",
        keys.size()
    );
    let c = cn / n;
    // [C, N, D] → [N, C, D], gathered along the rows → [N·world, C, D] → [C·N·world, D]
    let all = dist::gather(&keys.view([c, n, d]).transpose(0, 1).contiguous())?;
    let m = all.size()[0];
    Ok((all.transpose(0, 1).reshape([c * m, d]), m))
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
    let n = x.p1.size()[0];
    // p2 against the 6 combinations of view 1, p1 against those of view 2; on several ranks
    // against every rank's keys
    let ((k1, m), (k2, _)) = if dist::world() > 1 {
        (gather_keys(x.k1, n)?, gather_keys(x.k2, n)?)
    } else {
        ((x.k1.shallow_clone(), n), (x.k2.shallow_clone(), n))
    };
    ensure!(
        m == n * dist::world() as i64,
        "MNCLGLF on several ranks needs the same batch on every rank ({n} rows here, {m} in all)"
    );
    let offset = dist::rank() as i64 * n;
    let mut terms = global_vs_local(&nce, &p2, &k1, m, offset)?;
    terms.extend(global_vs_local(&nce, &p1, &k2, m, offset)?);
    let count = terms.len() as f64;
    let global_local = Tensor::stack(&terms, 0).sum(tch::Kind::Float) / count;
    // several ranks: NT-Xent over every rank's predictions (with gradient) and neighbours
    let (p1, p3, j1, j3) = if dist::world() > 1 {
        let mut p = dist::gather_columns_with_grad(&[x.p1, x.p3])?;
        let p3 = p.pop().context("the gathered third views")?;
        let p1 = p.pop().context("the gathered first views")?;
        let j = dist::gather(&Tensor::cat(&[x.j1.detach(), x.j3.detach()], 1))?;
        let d = x.j1.size()[1];
        (p1, p3, j.narrow(1, 0, d), j.narrow(1, d, d))
    } else {
        (
            x.p1.shallow_clone(),
            x.p3.shallow_clone(),
            x.j1.detach(),
            x.j3.detach(),
        )
    };
    let nn = ntx.forward_pair(&j3, &p1)? * 0.5 + ntx.forward_pair(&j1, &p3)? * 0.5;
    let total = &global_local + &nn * cfg.nn_weight;
    Ok(LossTerms {
        total,
        global_local,
        nn,
    })
}
