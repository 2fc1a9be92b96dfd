//! The SimCLR+SPPS objective: NT-Xent generalised to several positives per anchor (core
//! [`MultiPositiveInfoNce`], the SupCon / solo-learn `simclr_loss_func(z, indexes)` form).
//!
//! Rows: `z1 [N, D]` (view 1 of the batch), `z2 [N, D]` (view 2), `zs [M, D]` (an augmented
//! view of the semantic partner `x_j` of anchor `a_m`). Every row gets a group id — `i` for
//! rows `i` and `N + i`, `a_m` for row `2N + m` — and the positives of a row are the other rows
//! of its group; every other row is a negative; the row itself is excluded. With `M = 0` this
//! is exactly NT-Xent (one positive per row).
//!
//! ```text
//! L = mean over rows r with ≥ 1 positive of  −1/|P(r)| Σ_{p∈P(r)} log softmax_{c≠r}(ẑ_r·ẑ_c / τ)_p
//! ```

use anyhow::{ensure, Result};
use contrast_core::loss::MultiPositiveInfoNce;
use tch::{Kind, Tensor};

/// SimCLR with extra semantic positives (see the module docs). `extra = (zs [M, D], anchor [M])`.
pub fn spps_nt_xent(
    z1: &Tensor,
    z2: &Tensor,
    extra: Option<(&Tensor, &Tensor)>,
    temperature: f64,
) -> Result<Tensor> {
    ensure!(
        z1.dim() == 2 && z1.size() == z2.size(),
        "SPPS views must both be [N, D], got {:?} and {:?}",
        z1.size(),
        z2.size()
    );
    let n = z1.size()[0];
    let dev = z1.device();
    let ids = Tensor::arange(n, (Kind::Int64, dev));
    let (feats, groups) = match extra {
        Some((zs, anchor)) if zs.size()[0] > 0 => {
            ensure!(
                zs.dim() == 2 && zs.size()[1] == z1.size()[1] && anchor.size() == [zs.size()[0]],
                "SPPS partner views {:?} must be [M, {}] with anchors [M], got {:?}",
                zs.size(),
                z1.size()[1],
                anchor.size()
            );
            (
                Tensor::cat(&[z1, z2, zs], 0),
                Tensor::cat(&[&ids, &ids, &anchor.to_kind(Kind::Int64)], 0),
            )
        }
        _ => (Tensor::cat(&[z1, z2], 0), Tensor::cat(&[&ids, &ids], 0)),
    };
    MultiPositiveInfoNce::new(temperature)?.forward_labels(&feats, &groups)
}
