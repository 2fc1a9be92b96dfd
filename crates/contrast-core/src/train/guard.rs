//! The NaN/Inf guard: stop a run at the first non-finite loss term, gradient or checkpointed
//! state, naming the step and the term, parameter or tensor; when the batch's inputs hold NaN or
//! Inf, the message says which.

use crate::tensors::Named;
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// Error unless every `(name, value)` is finite. The message names the step and each bad term,
/// e.g. `non-finite loss at step 57: mixed_vs_mixed = NaN`.
pub fn check_finite(step: u64, terms: &[(&str, f64)]) -> Result<()> {
    let bad: Vec<String> = terms
        .iter()
        .filter(|(_, v)| !v.is_finite())
        .map(|(n, v)| format!("{n} = {v}"))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        bail!("non-finite loss at step {step}: {}", bad.join(", "))
    }
}

/// `(name, non-finite count, element count)` of every floating-point tensor of `named` that holds
/// NaN or ±Inf, in order (one host sync for all of them).
pub fn non_finite<'a>(
    named: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
) -> Vec<(String, i64, i64)> {
    tch::no_grad(|| {
        let floats: Vec<(&str, &Tensor)> = named
            .into_iter()
            .filter(|(_, t)| t.defined() && t.is_floating_point())
            .collect();
        if floats.is_empty() {
            return Vec::new();
        }
        let dev = floats[0].1.device();
        let counts: Vec<Tensor> = floats
            .iter()
            .map(|(_, t)| t.isfinite().logical_not().sum(Kind::Int64).to_device(dev))
            .collect();
        let counts = Vec::<i64>::try_from(Tensor::stack(&counts, 0).to_device(tch::Device::Cpu))
            .unwrap_or_default();
        floats
            .iter()
            .zip(counts)
            .filter(|(_, c)| *c > 0)
            .map(|((n, t), c)| (n.to_string(), c, t.numel() as i64))
            .collect()
    })
}

/// `` `a` (3 of 64 values), `b` (1 of 8 values) `` for at most three tensors, then a count.
fn list(bad: &[(String, i64, i64)]) -> String {
    let mut s: Vec<String> = bad
        .iter()
        .take(3)
        .map(|(n, c, of)| format!("`{n}` ({c} of {of} values)"))
        .collect();
    if bad.len() > 3 {
        s.push(format!("and {} more tensors", bad.len() - 3));
    }
    s.join(", ")
}

/// The batch's inputs that hold NaN or Inf, as a sentence (`None` when all are finite).
pub fn describe_inputs(inputs: &Named) -> Option<String> {
    let bad = non_finite(inputs.iter().map(|(n, t)| (n.as_str(), t)));
    (!bad.is_empty()).then(|| format!("the batch's input holds NaN or Inf: {}", list(&bad)))
}

/// Error unless every gradient of `params` (`(name, parameter)`; parameters without a gradient
/// are passed over) is finite. `norm` is the global gradient norm when the step computed it
/// already (clipping): finite means every element is. Otherwise the norm is computed (one pass
/// over the gradients, one host sync). The error names the step and the parameters.
pub fn check_grads(step: u64, params: &[(String, Tensor)], norm: Option<f64>) -> Result<()> {
    let (names, grads): (Vec<&str>, Vec<Tensor>) = params
        .iter()
        .filter_map(|(n, p)| crate::optim::grad_of(p).map(|g| (n.as_str(), g)))
        .unzip();
    if grads.is_empty() {
        return Ok(());
    }
    let norm = match norm {
        Some(n) => n,
        None => crate::optim::clip::total_norm(&grads).double_value(&[]),
    };
    if norm.is_finite() {
        return Ok(());
    }
    let bad = non_finite(names.iter().copied().zip(&grads));
    if bad.is_empty() {
        bail!("the gradient norm at step {step} is {norm}: it overflows float32 although no element is NaN or Inf")
    }
    bail!("non-finite gradient at step {step}: {}", list(&bad))
}

/// Error unless every floating-point tensor of the state about to be checkpointed at `step` is
/// finite (`group/name` in the message), so that no checkpoint holds NaN or Inf.
pub fn check_state(step: u64, groups: &[(String, Named)]) -> Result<()> {
    let named: Vec<(String, &Tensor)> = groups
        .iter()
        .flat_map(|(g, n)| n.iter().map(move |(k, t)| (format!("{g}/{k}"), t)))
        .collect();
    let bad = non_finite(named.iter().map(|(n, t)| (n.as_str(), *t)));
    if bad.is_empty() {
        return Ok(());
    }
    bail!(
        "non-finite state after step {step}, not checkpointed: {}",
        list(&bad)
    )
}

/// Steps of history the loss-spike guard keeps per term.
pub const SPIKE_WINDOW: usize = 50;
/// Steps of history it needs before it judges.
pub const SPIKE_MIN_HISTORY: usize = 10;

/// The loss-spike guard (`runtime.loss_spike`): a term that rises above its median over the
/// last [`SPIKE_WINDOW`] steps by more than `factor` × |median| stops the run.
#[derive(Debug, Clone)]
pub struct SpikeGuard {
    factor: f64,
    history: std::collections::BTreeMap<String, std::collections::VecDeque<f64>>,
}

impl SpikeGuard {
    pub fn new(factor: f64) -> Result<Self> {
        anyhow::ensure!(
            factor.is_finite() && factor > 0.0,
            "runtime.loss_spike = {factor}: use a positive number (e.g. 1), or leave it unset"
        );
        Ok(Self {
            factor,
            history: Default::default(),
        })
    }

    /// Judge step `step`'s (finite) terms against their history, then add them to it.
    pub fn check(&mut self, step: u64, terms: &[(&str, f64)]) -> Result<()> {
        let mut bad = Vec::new();
        for (name, v) in terms {
            let Some(h) = self.history.get(*name) else {
                continue;
            };
            if h.len() < SPIKE_MIN_HISTORY {
                continue;
            }
            let mut sorted: Vec<f64> = h.iter().copied().collect();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            let median = if n % 2 == 1 {
                sorted[n / 2]
            } else {
                0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
            };
            if v - median > self.factor * median.abs().max(1e-12) {
                bad.push(format!(
                    "{name} = {v} (median of the last {n} steps {median})"
                ));
            }
        }
        if !bad.is_empty() {
            bail!(
                "loss spike at step {step}: {} rose by more than runtime.loss_spike = {} times the median",
                bad.join(", "),
                self.factor
            );
        }
        for (name, v) in terms {
            let h = self.history.entry(name.to_string()).or_default();
            if h.len() == SPIKE_WINDOW {
                h.pop_front();
            }
            h.push_back(*v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_spike_guard_waits_for_history_and_names_the_term() {
        let mut g = SpikeGuard::new(1.0).unwrap();
        // a falling loss, with noise, is never a spike; a negative term rising a little is not
        for k in 0..60 {
            let v = 4.0 - 0.05 * k as f64 + if k % 2 == 0 { 0.1 } else { -0.1 };
            g.check(k + 1, &[("loss", v), ("neg", -2.0 + 0.01 * (k % 3) as f64)])
                .unwrap();
        }
        // median of the last 50 ≈ 2.25: 4.4 is within 1 × the median above it, 4.6 is not
        assert!(g.check(61, &[("loss", 4.4), ("neg", -1.9)]).is_ok());
        let e = g
            .check(62, &[("loss", 4.6), ("neg", -2.0)])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("loss spike at step 62: loss = 4.6 (median of the last 50 steps"),
            "{e}"
        );
        // history needed first
        let mut g = SpikeGuard::new(1.0).unwrap();
        for k in 0..SPIKE_MIN_HISTORY as u64 {
            g.check(k + 1, &[("loss", if k == 5 { 100.0 } else { 1.0 })])
                .unwrap();
        }
        assert!(g.check(11, &[("loss", 2.5)]).is_err());
        assert!(SpikeGuard::new(0.0).is_err() && SpikeGuard::new(f64::NAN).is_err());
    }

    use super::*;

    #[test]
    fn names_non_finite_tensors_inputs_gradients_and_state() {
        let a = Tensor::from_slice(&[1.0f32, f32::NAN, f32::INFINITY, 2.0]);
        let b = Tensor::from_slice(&[1.0f32, 2.0]);
        let i = Tensor::from_slice(&[1i64, 2]);
        let named: Named = vec![
            ("b".into(), b.shallow_clone()),
            ("a".into(), a.shallow_clone()),
            ("i".into(), i),
        ];
        assert_eq!(
            non_finite(named.iter().map(|(n, t)| (n.as_str(), t))),
            vec![("a".to_string(), 2, 4)]
        );
        assert_eq!(
            describe_inputs(&named).unwrap(),
            "the batch's input holds NaN or Inf: `a` (2 of 4 values)"
        );
        assert!(describe_inputs(&vec![("b".into(), b.shallow_clone())]).is_none());
        let e = check_state(40, &[("model".into(), named)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "non-finite state after step 40, not checkpointed: `model/a` (2 of 4 values)"
        );

        // gradients: finite passes, a NaN is named, a finite norm given by clipping is trusted
        let w = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let v = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
        (&w * &w).sum(Kind::Float).backward();
        let params = vec![("w".to_string(), w.shallow_clone()), ("v".into(), v)];
        assert!(check_grads(7, &params, None).is_ok());
        tch::no_grad(|| {
            let _ = w.grad().get(1).fill_(f64::NAN);
        });
        let e = check_grads(7, &params, None).unwrap_err().to_string();
        assert_eq!(e, "non-finite gradient at step 7: `w` (1 of 2 values)");
        let e = check_grads(7, &params, Some(f64::NAN))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "non-finite gradient at step 7: `w` (1 of 2 values)");
        tch::no_grad(|| {
            let _ = w.grad().fill_(1e30);
        });
        let e = check_grads(7, &params, None).unwrap_err().to_string();
        assert!(e.contains("overflows float32"), "{e}");
        assert!(check_grads(7, &params, Some(3.0)).is_ok());
    }
    #[test]
    fn names_step_and_terms() {
        assert!(check_finite(3, &[("a", 1.0), ("b", -2.0)]).is_ok());
        let e = check_finite(
            57,
            &[("ok", 1.0), ("mixed", f64::NAN), ("inf", f64::INFINITY)],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "non-finite loss at step 57: mixed = NaN, inf = inf");
    }
}
