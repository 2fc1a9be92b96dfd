//! C++ shim over the libtorch that `tch` links, for what tch does not bind: torch.distributed's
//! c10d. A [`ProcessGroup`] is a TCPStore rendezvous plus a `c10d::ProcessGroupGloo` (the CPU
//! backend compiled into the PyPI wheel's `libtorch_cpu.so`) or, in builds that found the CUDA
//! and NCCL headers, a `c10d::ProcessGroupNCCL`; its collectives work in place on `tch`
//! tensors. Every C++ exception comes back as an `Err` naming the collective.
//!
//! The wheel ships libtorch without Gloo's headers, so `csrc/gloo-decls/` declares the few Gloo
//! names that `ProcessGroupGloo.hpp` mentions (declarations only; definitions come from
//! libtorch at link time).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::time::Duration;
use tch::Tensor;

type CTensor = *mut c_void;

mod ffi {
    use super::*;
    extern "C" {
        #[allow(clippy::too_many_arguments)]
        pub fn contrast_dist_has_nccl() -> c_int;
        pub fn contrast_dist_new(
            backend: c_int,
            addr: *const c_char,
            port: c_int,
            rank: c_int,
            world: c_int,
            timeout_ms: i64,
            client_only: c_int,
            prefix: *const c_char,
            iface: *const c_char,
            err: *mut *mut c_char,
        ) -> *mut c_void;
        pub fn contrast_dist_free(g: *mut c_void);
        pub fn contrast_dist_free_str(s: *mut c_char);
        pub fn contrast_dist_all_reduce(
            g: *mut c_void,
            ts: *const CTensor,
            n: c_int,
            op: c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn contrast_dist_broadcast(
            g: *mut c_void,
            ts: *const CTensor,
            n: c_int,
            root: c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn contrast_dist_all_gather(
            g: *mut c_void,
            input: CTensor,
            outs: *const CTensor,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn contrast_dist_barrier(g: *mut c_void, err: *mut *mut c_char) -> c_int;
        #[allow(clippy::too_many_arguments)]
        pub fn contrast_dist_sync_batch_norm(
            g: *mut c_void,
            x: CTensor,
            weight: CTensor,
            bias: CTensor,
            running_mean: CTensor,
            running_var: CTensor,
            momentum: f64,
            eps: f64,
            err: *mut *mut c_char,
        ) -> CTensor;
        pub fn contrast_dist_store_set(
            g: *mut c_void,
            key: *const c_char,
            data: *const u8,
            n: usize,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn contrast_dist_store_get(
            g: *mut c_void,
            key: *const c_char,
            out: *mut *mut u8,
            n: *mut usize,
            err: *mut *mut c_char,
        ) -> c_int;
    }
}

/// A failed c10d call: the operation and libtorch's message.
#[derive(Debug, Clone)]
pub struct DistError {
    pub op: &'static str,
    pub message: String,
}

impl std::fmt::Display for DistError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "torch.distributed {}: {}", self.op, self.message)
    }
}

impl std::error::Error for DistError {}

/// Turns the shim's (rc, message) into a Result, freeing the message.
fn check(op: &'static str, rc: c_int, err: *mut c_char) -> Result<(), DistError> {
    if rc == 0 {
        return Ok(());
    }
    Err(DistError {
        op,
        message: take(err),
    })
}

fn take(err: *mut c_char) -> String {
    if err.is_null() {
        return "failed without a message".into();
    }
    // SAFETY: the shim returns a NUL-terminated malloc'ed string; freed once, here.
    unsafe {
        let s = CStr::from_ptr(err).to_string_lossy().into_owned();
        ffi::contrast_dist_free_str(err);
        s
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', "")).expect("no NUL left")
}

/// Reduction of [`ProcessGroup::all_reduce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// Sum, then divided by the world size.
    Mean,
    Max,
    Min,
}

/// Which c10d backend a group runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `ProcessGroupGloo`: CPU tensors (callers stage CUDA tensors through host memory).
    Gloo,
    /// `ProcessGroupNCCL`: CUDA tensors, one device per rank (only in builds where
    /// [`nccl_available`]).
    Nccl,
}

/// Whether this build carries the NCCL backend (see the crate README).
pub fn nccl_available() -> bool {
    // SAFETY: a constant query.
    unsafe { ffi::contrast_dist_has_nccl() != 0 }
}

/// How to reach the other ranks.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    /// The TCPStore's host (`MASTER_ADDR`).
    pub addr: String,
    /// The TCPStore's port (`MASTER_PORT`).
    pub port: u16,
    pub rank: usize,
    pub world: usize,
    /// Every collective (and the rendezvous) fails after this long instead of waiting forever.
    pub timeout: Duration,
    /// True when the store is already served (torchrun's elastic agent): rank 0 connects as a
    /// client instead of opening it.
    pub client_only: bool,
    /// Namespace of this group's keys in the store.
    pub prefix: String,
    /// Network interface for Gloo (`GLOO_SOCKET_IFNAME`); empty: this host's address.
    pub interface: String,
    pub backend: Backend,
}

/// A process group: Gloo (CPU tensors) or NCCL (CUDA tensors).
pub struct ProcessGroup {
    raw: *mut c_void,
    rank: usize,
    world: usize,
    backend: Backend,
}

// SAFETY: c10d backends are thread-safe for issuing collectives; the group is used from one
// thread at a time by its owner anyway (`&self` methods only touch C++ state).
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

fn ptrs(ts: &[&Tensor]) -> Vec<CTensor> {
    ts.iter().map(|t| t.as_ptr() as CTensor).collect()
}

impl ProcessGroup {
    /// Rendezvous and create the group on `r.backend` (blocks until every rank has joined, at
    /// most `timeout`).
    pub fn new(r: &Rendezvous) -> Result<Self, DistError> {
        let (addr, prefix, iface) = (cstr(&r.addr), cstr(&r.prefix), cstr(&r.interface));
        let mut err = std::ptr::null_mut();
        // SAFETY: valid C strings for the call's duration; the shim owns nothing of ours.
        let raw = unsafe {
            ffi::contrast_dist_new(
                (r.backend == Backend::Nccl) as c_int,
                addr.as_ptr(),
                r.port as c_int,
                r.rank as c_int,
                r.world as c_int,
                r.timeout.as_millis() as i64,
                r.client_only as c_int,
                prefix.as_ptr(),
                iface.as_ptr(),
                &mut err,
            )
        };
        if raw.is_null() {
            return Err(DistError {
                op: match r.backend {
                    Backend::Gloo => "init (TCPStore rendezvous + ProcessGroupGloo)",
                    Backend::Nccl => "init (TCPStore rendezvous + ProcessGroupNCCL)",
                },
                message: take(err),
            });
        }
        Ok(Self {
            raw,
            rank: r.rank,
            world: r.world,
            backend: r.backend,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Reduces `t` in place across ranks (a contiguous CPU tensor, the same shape and kind on
    /// every rank). One tensor per call: c10d reads a list as one tensor per device and would
    /// reduce the list's tensors together; gradient buckets are flattened first
    /// (`contrast_core::dist`).
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<(), DistError> {
        let p = ptrs(&[t]);
        let code = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Mean => 1,
            ReduceOp::Max => 2,
            ReduceOp::Min => 3,
        };
        let mut err = std::ptr::null_mut();
        // SAFETY: the tensors outlive the (blocking) call.
        let rc = unsafe {
            ffi::contrast_dist_all_reduce(self.raw, p.as_ptr(), p.len() as c_int, code, &mut err)
        };
        check("all_reduce", rc, err)
    }

    /// Overwrites `t` on every rank with rank `root`'s (one tensor per call, as in
    /// [`all_reduce`](Self::all_reduce)).
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<(), DistError> {
        let p = ptrs(&[t]);
        let mut err = std::ptr::null_mut();
        // SAFETY: as in all_reduce.
        let rc = unsafe {
            ffi::contrast_dist_broadcast(
                self.raw,
                p.as_ptr(),
                p.len() as c_int,
                root as c_int,
                &mut err,
            )
        };
        check("broadcast", rc, err)
    }

    /// Every rank's `input`, in rank order (same shape and kind on every rank). The result does
    /// not carry gradient.
    pub fn all_gather(&self, input: &Tensor) -> Result<Vec<Tensor>, DistError> {
        let input = input.detach().contiguous();
        let outs: Vec<Tensor> = (0..self.world).map(|_| input.empty_like()).collect();
        let refs: Vec<&Tensor> = outs.iter().collect();
        let p = ptrs(&refs);
        let mut err = std::ptr::null_mut();
        // SAFETY: as in all_reduce; `outs` has world entries, as the shim reads.
        let rc = unsafe {
            ffi::contrast_dist_all_gather(self.raw, input.as_ptr() as CTensor, p.as_ptr(), &mut err)
        };
        check("all_gather", rc, err)?;
        Ok(outs)
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<(), DistError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: plain call on a live group.
        let rc = unsafe { ffi::contrast_dist_barrier(self.raw, &mut err) };
        check("barrier", rc, err)
    }

    /// BatchNorm of `x` `[N, C, …]` in training mode with statistics over the rows of every
    /// rank (SyncBatchNorm): the running statistics are updated in place as
    /// `torch.nn.BatchNorm` does; the backward pass all-reduces `Σ dy` and `Σ dy·x̂` per channel,
    /// as `torch.nn.SyncBatchNorm`. Every rank must call it for the same layers in the same
    /// order.
    #[allow(clippy::too_many_arguments)]
    pub fn sync_batch_norm(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        running_mean: Option<&Tensor>,
        running_var: Option<&Tensor>,
        momentum: f64,
        eps: f64,
    ) -> Result<Tensor, DistError> {
        let p = |t: Option<&Tensor>| t.map_or(std::ptr::null_mut(), |t| t.as_ptr() as CTensor);
        let mut err = std::ptr::null_mut();
        // SAFETY: the tensors outlive the call; on success the shim returns a new tensor
        // allocated as tch allocates its own, which `from_ptr` takes ownership of.
        unsafe {
            let out = ffi::contrast_dist_sync_batch_norm(
                self.raw,
                x.as_ptr() as CTensor,
                p(weight),
                p(bias),
                p(running_mean),
                p(running_var),
                momentum,
                eps,
                &mut err,
            );
            if out.is_null() {
                return Err(DistError {
                    op: "sync_batch_norm",
                    message: take(err),
                });
            }
            Ok(Tensor::from_ptr(out as *mut _))
        }
    }

    /// Sets `key` in the group's store.
    pub fn store_set(&self, key: &str, value: &[u8]) -> Result<(), DistError> {
        let k = cstr(key);
        let mut err = std::ptr::null_mut();
        // SAFETY: valid pointers for the call.
        let rc = unsafe {
            ffi::contrast_dist_store_set(
                self.raw,
                k.as_ptr(),
                value.as_ptr(),
                value.len(),
                &mut err,
            )
        };
        check("store set", rc, err)
    }

    /// Reads `key` from the group's store, waiting for it (at most the timeout).
    pub fn store_get(&self, key: &str) -> Result<Vec<u8>, DistError> {
        let k = cstr(key);
        let (mut out, mut n, mut err) = (std::ptr::null_mut(), 0usize, std::ptr::null_mut());
        // SAFETY: on success `out` is a malloc'ed buffer of n bytes, freed here.
        let rc = unsafe {
            ffi::contrast_dist_store_get(self.raw, k.as_ptr(), &mut out, &mut n, &mut err)
        };
        check("store get", rc, err)?;
        // SAFETY: see above.
        unsafe {
            let v = std::slice::from_raw_parts(out, n).to_vec();
            ffi::contrast_dist_free_str(out as *mut c_char);
            Ok(v)
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by contrast_dist_new_gloo, freed once.
        unsafe { ffi::contrast_dist_free(self.raw) }
    }
}
