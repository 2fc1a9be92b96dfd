//! Spatially debiased contrastive losses for 3-D crops (the design the Spade abstract describes:
//! "spatial correspondences … select more effective positive & negative samples", separate
//! strategies for a global and a local scope). The paper body is not available, so the exact
//! forms below are our inference, each knob a parameter (see `crates/spade` once it lands and
//! `../shared/papers/medical-3d.md` §2).
//!
//! **Global scope** ([`global_loss`]): `N` crop embeddings, each with a twin (its other
//! augmented view), a volume id and a normalised centre. Positives of crop `i`: its twin, plus —
//! when `cross_volume_radius > 0` — crops of *other* volumes whose normalised centres lie within
//! that radius ("friends": the same anatomy elsewhere). Negatives: every other crop, except that
//! crops within `negative_radius` of `i` (in the normalised frame, any volume) are dropped
//! ("false negatives"), and with `weight_power > 0` the remaining negatives are down-weighted by
//! `min(1, d / far_radius)^weight_power`. The loss is the multi-positive (SupCon-style) form
//! `−1/|P_i| Σ_{p∈P_i} log( e^{s_ip} / (Σ_{p'∈P_i} e^{s_ip'} + Σ_{n∈N_i} w_in e^{s_in}) )` with
//! `s = cos / τ`, averaged over crops.
//!
//! **Local scope** ([`local_loss`]): dense feature maps of two overlapping crops of one volume,
//! `M` sampled voxel pairs at the same physical location (from
//! [`crate::volume::crops::correspondences`]): InfoNCE of each query feature in map A against all
//! sampled features of map B, the positive being its corresponding voxel, and negatives closer
//! than `negative_radius` voxels (volume coordinates) to it dropped.

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

/// Global-scope settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlobalConfig {
    pub temperature: f64,
    /// Crops of other volumes within this normalised distance are extra positives (0 = off).
    pub cross_volume_radius: f64,
    /// Negatives within this normalised distance are removed (0 = none removed).
    pub negative_radius: f64,
    /// Down-weighting exponent for the remaining negatives (0 = all weight 1).
    pub weight_power: f64,
    /// Distance at which a negative reaches full weight.
    pub far_radius: f64,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            temperature: 0.1,
            cross_volume_radius: 0.0,
            negative_radius: 0.0,
            weight_power: 0.0,
            far_radius: 0.5,
        }
    }
}

/// Pairwise Euclidean distances `[N, N]` of points `[N, K]` (double).
fn distances(c: &Tensor) -> Tensor {
    let c = c.to_kind(Kind::Double);
    (c.unsqueeze(1) - c.unsqueeze(0))
        .square()
        .sum_dim_intlist(2, false, Kind::Double)
        .sqrt()
}

/// Multi-positive InfoNCE of `logits [N, M]` with boolean positives / negatives `[N, M]` and
/// negative weights `[N, M]`: rows without a positive are skipped (mean over the others).
fn weighted_multi_positive(
    logits: &Tensor,
    pos: &Tensor,
    neg: &Tensor,
    w: &Tensor,
) -> Result<Tensor> {
    let posf = pos.to_kind(Kind::Float);
    let negw = neg.to_kind(Kind::Float) * w.to_kind(Kind::Float);
    // a stable log-sum-exp over the kept entries: subtract the row max of the logits
    let m = logits.detach().amax(1, true);
    let e = (logits - &m).exp();
    let denom = (&e * (&posf + &negw)).sum_dim_intlist(1, true, Kind::Float); // [N, 1]
    let log_prob = logits - &m - denom.log(); // [N, M]
    let npos = posf.sum_dim_intlist(1, false, Kind::Float); // [N]
    let has = npos.gt(0.0);
    ensure!(
        has.any().int64_value(&[]) == 1,
        "no crop has a positive: every twin index is missing"
    );
    let per = -(log_prob * &posf).sum_dim_intlist(1, false, Kind::Float) / npos.clamp_min(1.0);
    Ok(per.masked_select(&has).mean(Kind::Float))
}

/// Global loss over `z [N, D]`; `twin[i]` = index of crop `i`'s other view; `volume[i]` = its
/// volume id; `centres [N, 3]` normalised crop centres.
pub fn global_loss(
    z: &Tensor,
    twin: &Tensor,
    volume: &Tensor,
    centres: &Tensor,
    cfg: &GlobalConfig,
) -> Result<Tensor> {
    let n = z.size()[0];
    ensure!(
        z.dim() == 2 && twin.size() == [n] && volume.size() == [n] && centres.size() == [n, 3],
        "global_loss: z {:?}, twin {:?}, volume {:?}, centres {:?} (want [N, D], [N], [N], [N, 3])",
        z.size(),
        twin.size(),
        volume.size(),
        centres.size()
    );
    ensure!(cfg.temperature > 0.0, "temperature must be positive");
    let dev = z.device();
    let zn = crate::loss::normalize(z);
    let logits = zn.matmul(&zn.transpose(0, 1)) / cfg.temperature;
    let eye = Tensor::eye(n, (Kind::Bool, dev));
    let not_self = eye.logical_not();
    let twin_mask = Tensor::zeros([n, n], (Kind::Bool, dev)).scatter_value(
        1,
        &twin.to_kind(Kind::Int64).unsqueeze(1),
        1,
    );
    let d = distances(centres).to_device(dev);
    let other_volume = volume.unsqueeze(1).ne_tensor(&volume.unsqueeze(0));
    let mut pos = twin_mask.logical_and(&not_self);
    if cfg.cross_volume_radius > 0.0 {
        pos = pos.logical_or(&d.lt(cfg.cross_volume_radius).logical_and(&other_volume));
    }
    let mut neg = not_self.logical_and(&pos.logical_not());
    if cfg.negative_radius > 0.0 {
        neg = neg.logical_and(&d.ge(cfg.negative_radius));
    }
    let w = if cfg.weight_power > 0.0 {
        (&d / cfg.far_radius.max(1e-12))
            .clamp_max(1.0)
            .pow_tensor_scalar(cfg.weight_power)
    } else {
        Tensor::ones([n, n], (Kind::Double, dev))
    };
    weighted_multi_positive(&logits, &pos, &neg, &w)
}

/// Local loss: `fa`, `fb` `[M, C]` features of `M` sampled voxel pairs (row `i` of both at the
/// same physical location), `pos_b [M, 3]` the volume coordinates of the sampled B voxels;
/// negatives of query `i` are the B features at least `negative_radius` voxels from its
/// location (0 = every other sample).
pub fn local_loss(
    fa: &Tensor,
    fb: &Tensor,
    pos_b: &Tensor,
    temperature: f64,
    negative_radius: f64,
) -> Result<Tensor> {
    let m = fa.size()[0];
    ensure!(
        fa.dim() == 2 && fb.size() == fa.size() && pos_b.size() == [m, 3],
        "local_loss: fa {:?}, fb {:?}, positions {:?} (want [M, C], [M, C], [M, 3])",
        fa.size(),
        fb.size(),
        pos_b.size()
    );
    ensure!(temperature > 0.0, "temperature must be positive");
    let dev = fa.device();
    let a = crate::loss::normalize(fa);
    let b = crate::loss::normalize(fb);
    let logits = a.matmul(&b.transpose(0, 1)) / temperature;
    let eye = Tensor::eye(m, (Kind::Bool, dev));
    let mut neg = eye.logical_not();
    if negative_radius > 0.0 {
        neg = neg.logical_and(&distances(pos_b).to_device(dev).ge(negative_radius));
    }
    let w = Tensor::ones([m, m], (Kind::Float, dev));
    weighted_multi_positive(&logits, &eye, &neg, &w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_settings_reduce_to_nt_xent() {
        // twins (i, i+N/2), no spatial terms: the SimCLR NT-Xent loss
        let _rng = crate::testing::global_rng_lock();
        tch::manual_seed(3);
        let z = Tensor::randn([8, 5], (Kind::Float, tch::Device::Cpu));
        let twin = Tensor::from_slice(&[4i64, 5, 6, 7, 0, 1, 2, 3]);
        let vol = Tensor::arange(8, (Kind::Int64, tch::Device::Cpu));
        let c = Tensor::rand([8, 3], (Kind::Float, tch::Device::Cpu));
        let cfg = GlobalConfig {
            temperature: 0.5,
            ..GlobalConfig::default()
        };
        let ours = global_loss(&z, &twin, &vol, &c, &cfg).unwrap();
        let nt = crate::loss::NtXent::new(0.5)
            .unwrap()
            .forward_pair(&z.narrow(0, 0, 4), &z.narrow(0, 4, 4))
            .unwrap();
        assert!((ours.double_value(&[]) - nt.double_value(&[])).abs() < 1e-5);
    }
}
