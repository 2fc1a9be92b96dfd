//! Contrastive objectives.

use tch::{Kind, Tensor};

/// InfoNCE with hard (diagonal) targets: row `i` of `query` is positive with row `i` of `key`
/// and negative with every other row (van den Oord et al. 2018, <https://arxiv.org/abs/1807.03748>).
///
/// `query`, `key`: `[N, D]`, L2-normalised inside. `temperature` > 0. Returns the mean
/// cross-entropy of `query·keyᵀ / temperature` against the identity, a scalar.
pub fn info_nce(query: &Tensor, key: &Tensor, temperature: f64) -> Tensor {
    assert!(temperature > 0.0, "Illegal temperature {temperature}");
    let q = normalize(query); // [N, D]
    let k = normalize(key); // [N, D]
    let logits = q.matmul(&k.transpose(0, 1)) / temperature; // [N, N]
    let n = logits.size()[0];
    let targets = Tensor::arange(n, (Kind::Int64, logits.device()));
    logits.cross_entropy_for_logits(&targets)
}

/// Row-wise L2 normalisation, `x / max(‖x‖, 1e-12)` like `F.normalize`.
pub fn normalize(x: &Tensor) -> Tensor {
    let norm = x
        .norm_scalaropt_dim(2.0, [-1].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}
