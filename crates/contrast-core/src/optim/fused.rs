//! Fused CPU updates: one pass over a parameter's arrays per step instead of one per op (the
//! optimisers' per-op paths make 3–8 passes and temporaries, and the update is memory-bound).
//! Used for contiguous fp32 CPU tensors only; everything else takes the per-op path.

use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// Whether every tensor is a contiguous fp32 CPU tensor of the same size.
pub(crate) fn fusable(ts: &[&Tensor]) -> bool {
    let n = ts.first().map_or(0, |t| t.numel());
    ts.iter()
        .all(|t| t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous())
        && ts.iter().all(|t| t.numel() == n)
}

/// The data of a contiguous fp32 CPU tensor, shareable across the chunk threads.
#[derive(Clone, Copy)]
pub(crate) struct F32Ptr(*mut f32);

// SAFETY: the pointer is only dereferenced through `slice`, on disjoint ranges per thread.
unsafe impl Send for F32Ptr {}
unsafe impl Sync for F32Ptr {}

impl F32Ptr {
    /// The caller checked the tensor with [`fusable`].
    pub(crate) fn of(t: &Tensor) -> Self {
        Self(t.data_ptr() as *mut f32)
    }

    /// # Safety
    /// `r` lies inside the tensor, and no other live slice overlaps it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, r: &Range<usize>) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(r.start), r.len())
    }
}

/// Run `f` over `0..len` in contiguous ranges: one range on one thread, or (for large tensors)
/// one per libtorch intra-op thread, so the update uses the cores the step uses.
pub(crate) fn for_ranges(len: usize, f: impl Fn(Range<usize>) + Sync) {
    const MIN_CHUNK: usize = 1 << 16;
    let threads = tch::get_num_threads().max(1) as usize;
    if threads == 1 || len < 2 * MIN_CHUNK {
        f(0..len);
        return;
    }
    let chunk = len.div_ceil(threads).max(MIN_CHUNK);
    std::thread::scope(|s| {
        let f = &f;
        for start in (0..len).step_by(chunk) {
            s.spawn(move || f(start..(start + chunk).min(len)));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::lars::{Lars, LarsConfig, LarsMode};
    use super::super::{AdamW, AdamWConfig, Optimizer, ParamGroup, Sgd};
    use tch::{Device, Kind, Tensor};

    type Build = fn(Vec<ParamGroup>) -> Box<dyn Optimizer>;

    /// Steps of the optimiser on one parameter `[n]` with fixed gradients: contiguous (the fused
    /// path) or the transpose `[2, n/2]` of a `[n/2, 2]` layout, whose copy keeps the strides
    /// (the per-op path). Returns the final parameter in the original order.
    fn run(p0: &Tensor, grads: &[Tensor], contiguous: bool, build: Build) -> Tensor {
        let n = p0.numel() as i64;
        let layout = |t: &Tensor| {
            if contiguous {
                t.shallow_clone()
            } else {
                t.view([n / 2, 2]).transpose(0, 1)
            }
        };
        let p = layout(p0).copy().set_requires_grad(true);
        assert_eq!(p.is_contiguous(), contiguous);
        let mut opt = build(vec![ParamGroup {
            name: "all".into(),
            params: vec![("p".into(), p.shallow_clone())],
            weight_decay: 0.05,
            lr_scale: 1.0,
        }]);
        for g in grads {
            opt.zero_grad();
            (&p * layout(g)).sum(Kind::Float).backward();
            opt.step().unwrap();
        }
        let p = p.detach();
        if contiguous {
            p
        } else {
            p.transpose(0, 1).reshape([n])
        }
    }

    #[test]
    fn fused_updates_match_the_per_op_paths() {
        // large enough for parallel chunks (≥ 2 × 65,536 elements) with two threads
        let n = 300_002;
        tch::set_num_threads(2);
        let p0 = Tensor::randn([n], (Kind::Float, Device::Cpu));
        let grads: Vec<Tensor> = (0..4)
            .map(|_| Tensor::randn([n], (Kind::Float, Device::Cpu)))
            .collect();
        fn adamw(amsgrad: bool) -> AdamWConfig {
            AdamWConfig {
                lr: 1e-2,
                amsgrad,
                ..Default::default()
            }
        }
        fn lars(mode: LarsMode, nesterov: bool) -> LarsConfig {
            LarsConfig {
                lr: 0.5,
                mode,
                nesterov,
                dampening: 0.0,
                ..LarsConfig::default()
            }
        }
        let cases: [(&str, Build); 7] = [
            ("adamw", |g| Box::new(AdamW::new(g, adamw(false)).unwrap())),
            ("adamw amsgrad", |g| {
                Box::new(AdamW::new(g, adamw(true)).unwrap())
            }),
            ("sgd dampening", |g| {
                Box::new(Sgd::new(g, 0.05, 0.9, 0.1, false).unwrap())
            }),
            ("sgd nesterov", |g| {
                Box::new(Sgd::new(g, 0.05, 0.9, 0.0, true).unwrap())
            }),
            ("lars scale", |g| {
                Box::new(Lars::new(g, lars(LarsMode::Scale, false)).unwrap())
            }),
            ("lars clip nesterov", |g| {
                Box::new(Lars::new(g, lars(LarsMode::Clip, true)).unwrap())
            }),
            ("lars dampening", |g| {
                let cfg = LarsConfig {
                    dampening: 0.1,
                    ..lars(LarsMode::Scale, false)
                };
                Box::new(Lars::new(g, cfg).unwrap())
            }),
        ];
        for (name, build) in cases {
            let fused = run(&p0, &grads, true, build);
            let per_op = run(&p0, &grads, false, build);
            let diff = (&fused - &per_op).abs().max().double_value(&[]);
            let moved = (&fused - &p0).abs().max().double_value(&[]);
            assert!(moved > 1e-3, "{name}: the parameter barely moved ({moved})");
            assert!(diff < 1e-6, "{name}: fused vs per-op max |Δ| {diff}");
        }
    }
}
