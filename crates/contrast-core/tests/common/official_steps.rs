//! Shared by the N-step comparisons against official code that drive a method crate's core
//! `Method` (`crates/spps/tests/official_*.rs`, `crates/claires/tests/official_clip.rs`; they
//! include this file with `#[path]`): run N training steps the way core's `Trainer` runs them,
//! and hand variables (or gradients) to core `check_weights` against the fp32-drift bound.

#![allow(dead_code)]

use contrast_core::testing::official::{check_weights, l2, WeightRow};
use contrast_core::train::runtime::seed_step;
use contrast_core::train::{Length, Method, StepCtx};
use std::collections::BTreeMap;
use tch::{Device, Tensor};

/// `n` training steps of `method` in the order of calls of core's `Trainer::run`: the step's
/// libtorch seed, the lr (and weight decay) of the method's schedules, `before_step`, `step`,
/// zero grads, backward, clipping, the optimiser update, `after_step`. The batches are the
/// method's own `data()` from step 0. `record(step, &batch)` sees every batch before the step
/// takes it, `after(step, &method)` runs after each update (the gradients are still there).
/// Returns the step's terms (or logged numbers) named `terms`, `[step][term]`.
pub fn drive<M: Method>(
    method: &mut M,
    cfg: &M::Config,
    n: u64,
    terms: &[&str],
    record: &mut dyn FnMut(u64, &M::Batch),
    after: &mut dyn FnMut(u64, &M),
) -> Vec<Vec<f64>> {
    let rt = M::runtime(cfg);
    let mut data = method.data().expect("the method's data");
    let per_epoch = data.per_epoch();
    let total = match M::length(cfg) {
        Length::Epochs(e) => e * per_epoch,
        Length::Steps(s) => s,
    };
    assert!(n <= total, "{n} steps asked of a run of {total}");
    let mut opt = method
        .optimization(total, per_epoch)
        .expect("the method's optimisation");
    let mut batches = data.iter_from(0);
    let mut out = Vec::new();
    for step in 0..n {
        seed_step(rt.seed, step);
        let batch = batches.next().expect("data ended").expect("a batch");
        let ctx = StepCtx {
            step,
            epoch: step.checked_div(per_epoch).unwrap_or(0),
            per_epoch,
            total,
            device: Device::Cpu,
            seed: rt.seed,
        };
        opt.optimizer.set_lr(opt.lr.value(step));
        if let Some(wd) = opt.weight_decay.as_ref().map(|s| s.value(step)) {
            opt.optimizer.set_weight_decay(wd);
        }
        method.before_step(&ctx).expect("before_step");
        record(step, &batch);
        let l = method.step(batch, &ctx).expect("step");
        out.push(
            terms
                .iter()
                .map(|t| {
                    l.terms
                        .iter()
                        .find(|(n, _)| n == t)
                        .map(|(_, v)| *v)
                        .or_else(|| {
                            l.logged
                                .iter()
                                .find(|(n, _)| n == t)
                                .and_then(|(_, v)| v.as_f64())
                        })
                        .unwrap_or_else(|| panic!("the step has no term or logged value {t}"))
                })
                .collect(),
        );
        opt.optimizer.zero_grad();
        l.total.backward();
        if let Some((max, params)) = &opt.clip {
            let refs: Vec<&Tensor> = params.iter().collect();
            contrast_core::optim::clip::clip_grad_norm_tensors(&refs, *max).expect("clip");
        }
        opt.optimizer.step().expect("optimiser step");
        method.after_step(&ctx).expect("after_step");
        after(step, method);
    }
    out
}

/// The parameter group of a variable: its first two dotted components (`encoder_q.layer1`,
/// `projector.0`, `queue`).
pub fn group_of(name: &str) -> String {
    name.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// The official side of [`check_vars`]: the tensors, or (from a fixture) their L2 norms.
pub enum Official<'a> {
    Tensors(&'a [(String, Tensor)]),
    Norms(&'a BTreeMap<String, f64>),
}

/// Core `check_weights` over `ours` (every variable named there) against the official
/// variables and ours started from perturbed weights, `k` steps in: each variable's relative
/// difference within `max(floor, 8·k·drift)`.
pub fn check_vars(
    test: &str,
    k: usize,
    ours: &[(String, Tensor)],
    official: Official,
    perturbed: &[(String, Tensor)],
    floor: f64,
) {
    let find = |v: &[(String, Tensor)], n: &str| -> Tensor {
        v.iter()
            .find(|(m, _)| m == n)
            .unwrap_or_else(|| panic!("{test}: {n} missing on one side"))
            .1
            .shallow_clone()
    };
    let rows: Vec<WeightRow> = ours
        .iter()
        .map(|(n, t)| {
            let p = find(perturbed, n);
            match &official {
                Official::Tensors(o) => WeightRow::new(n, group_of(n), t, &p, Ok(&find(o, n))),
                Official::Norms(norms) => {
                    let norm = *norms
                        .get(n)
                        .unwrap_or_else(|| panic!("{test}: {n} not in the fixture"));
                    WeightRow::new(n, group_of(n), t, &p, Err(norm))
                }
            }
        })
        .collect();
    check_weights(test, k, &rows, floor);
}

/// `{name: ‖t‖}` of named tensors (a fixture's `after_l2` / `grad1_l2`).
pub fn norms(named: &[(String, Tensor)]) -> serde_json::Value {
    named
        .iter()
        .map(|(n, t)| (n.clone(), serde_json::Value::from(l2(t))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A fixture's `{name: ‖t‖}` section.
pub fn read_norms(f: &serde_json::Value, field: &str) -> BTreeMap<String, f64> {
    f[field]
        .as_object()
        .unwrap_or_else(|| panic!("the fixture has no {field}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().expect("a number")))
        .collect()
}

/// The official outputs with prefix `p` (`w.`, `g1.`), prefix stripped.
pub fn with_prefix(out: &[(String, Tensor)], p: &str) -> Vec<(String, Tensor)> {
    out.iter()
        .filter_map(|(n, t)| {
            n.strip_prefix(p)
                .map(|s| (s.to_string(), t.shallow_clone()))
        })
        .collect()
}

/// Write the fixture of an N-step comparison: the official per-step curves, step-1 gradient
/// norms and final variable norms.
pub fn write_steps_fixture(
    path: &std::path::Path,
    what: &str,
    checkout: &std::path::Path,
    terms: &[&str],
    curves: &[Vec<f64>],
    grad1: &[(String, Tensor)],
    after: &[(String, Tensor)],
) {
    let v = serde_json::json!({
        "what": what,
        "official_commit": contrast_core::testing::official::checkout_commit(checkout),
        "steps": curves.len(),
        "curves": contrast_core::testing::official::curves_json(terms, curves),
        "grad1_l2": norms(grad1),
        "after_l2": norms(after),
    });
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    println!("official: wrote {}", path.display());
}
