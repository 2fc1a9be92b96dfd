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
