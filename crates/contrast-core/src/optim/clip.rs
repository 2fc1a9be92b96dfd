//! Gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_(params, max_norm)` with the
//! L2 norm: `total = ‖(‖g_1‖, …, ‖g_n‖)‖₂` over every parameter that has a gradient, and every
//! gradient is multiplied by `min(max_norm / (total + 1e-6), 1)`.

use super::ParamGroup;
use anyhow::{ensure, Result};
use tch::Tensor;

/// Clip the gradients of all parameters of `groups` to a total L2 norm of `max_norm`; returns
/// the total norm before clipping (PyTorch's return value). Parameters without a gradient are
/// skipped.
pub fn clip_grad_norm(groups: &[ParamGroup], max_norm: f64) -> Result<f64> {
    let params: Vec<&Tensor> = groups
        .iter()
        .flat_map(|g| g.params.iter().map(|(_, p)| p))
        .collect();
    clip_grad_norm_tensors(&params, max_norm)
}

/// `‖(‖g_1‖, …, ‖g_n‖)‖₂` of non-empty `grads`, in float32 on the first one's device (a scalar
/// tensor: reading it is the caller's one host sync).
pub fn total_norm(grads: &[Tensor]) -> Tensor {
    tch::no_grad(|| {
        let dev = grads[0].device();
        let norms: Vec<Tensor> = grads
            .iter()
            .map(|g| g.to_kind(tch::Kind::Float).norm().to_device(dev))
            .collect();
        Tensor::stack(&norms, 0).norm()
    })
}

/// [`clip_grad_norm`] over a plain list of parameters.
pub fn clip_grad_norm_tensors(params: &[&Tensor], max_norm: f64) -> Result<f64> {
    ensure!(
        max_norm > 0.0 && max_norm.is_finite(),
        "Illegal max_norm {max_norm} for gradient clipping: it must be positive and finite"
    );
    let grads: Vec<Tensor> = params.iter().filter_map(|p| super::grad_of(p)).collect();
    if grads.is_empty() {
        return Ok(0.0);
    }
    tch::no_grad(|| {
        let total = total_norm(&grads); // scalar
        let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
        for g in &grads {
            let mut g = g.shallow_clone();
            let _ = g.g_mul_(&coef.to_device(g.device()).to_kind(g.kind()));
        }
        Ok(total.double_value(&[]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn clips_like_pytorch() {
        // two parameters with gradients (3, 4) and (12): total norm 13
        let a = Tensor::zeros([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let b = Tensor::zeros([1], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let c = Tensor::zeros([1], (Kind::Float, Device::Cpu)).set_requires_grad(true); // no grad
        let l = (&a * Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float)
            + (&b * 12.0).sum(Kind::Float);
        l.backward();
        let total = clip_grad_norm_tensors(&[&a, &b, &c], 1.0).unwrap();
        assert!((total - 13.0).abs() < 1e-5, "{total}");
        let s = 1.0 / (13.0 + 1e-6);
        let ga = Vec::<f32>::try_from(a.grad()).unwrap();
        let gb = Vec::<f32>::try_from(b.grad()).unwrap();
        assert!((ga[0] as f64 - 3.0 * s).abs() < 1e-6 && (ga[1] as f64 - 4.0 * s).abs() < 1e-6);
        assert!((gb[0] as f64 - 12.0 * s).abs() < 1e-6);
        assert!(!c.grad().defined());
        // below the threshold nothing changes
        let total = clip_grad_norm_tensors(&[&a, &b], 5.0).unwrap();
        assert!((total - 1.0).abs() < 1e-5);
        let gb2 = Vec::<f32>::try_from(b.grad()).unwrap();
        assert_eq!(gb, gb2);
        assert!(clip_grad_norm_tensors(&[&a], 0.0).is_err());
    }
}
