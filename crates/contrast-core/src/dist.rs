//! Data-parallel training on torch.distributed's c10d, launched by `torchrun`.
//!
//! One process per device. Each process reads the variables `torchrun` sets (`RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`; under torchrun's elastic agent
//! also `TORCHELASTIC_USE_AGENT_STORE` and `TORCHELASTIC_RESTART_COUNT`), meets the others at a
//! TCPStore and joins a c10d process group through the `contrast-shim` crate: Gloo (the one
//! the PyPI wheel's `libtorch_cpu.so` ships) on CPU, NCCL (`libtorch_cuda.so`'s) on CUDA where
//! the build found the CUDA and NCCL headers, else Gloo staging through host memory. Without
//! those variables (or with `WORLD_SIZE=1` and no `CONTRAST_DIST=1`) there is no group and
//! every function here is the identity.
//!
//! What the [`Trainer`](crate::train::Trainer) does with a group:
//! * the config's batch size is the **global** batch; rank `r` of `W` trains on rows
//!   `[r·B/W, (r+1)·B/W)` of every global batch ([`Shard`]), so the data a step consumes,
//!   and its position in samples, do not depend on `W` (a run resumes with another world size
//!   in the same data order);
//! * rank 0 alone opens the run folder, logs, checkpoints and evaluates (the others wait at a
//!   barrier until each checkpoint is complete); it reads a checkpoint
//!   to resume from and sends it to the others ([`Dist::share_checkpoint`]), so no shared file
//!   system is needed; at a fresh start every rank takes rank 0's weights
//!   ([`Dist::broadcast`]);
//! * after each backward pass the gradients are averaged over the ranks ([`Dist::all_reduce_grads`]):
//!   flattened into buckets of [`Dist::bucket_bytes`] (one all-reduce each), after the backward
//!   pass (tch exposes no autograd hooks to overlap them with it);
//! * the logged loss terms are the mean over the ranks (the global batch's).
//!
//! What a contrastive method adds: [`gather_with_grad`] (the whole global batch with gradient,
//! for losses over it, as SimCLR's official code concatenates its replicas), [`gather`] (without
//! gradient: the official `concat_all_gather` of PatchMix's and MoCo's keys) and
//! [`batch_norm`] (SyncBatchNorm, when `runtime.sync_batch_norm` asks for it).
//!
//! Settings (environment, not config keys: they change how a run is executed, never what it
//! computes): `CONTRAST_DIST_TIMEOUT_S` (default 1800: a collective or the rendezvous fails
//! after this long instead of hanging; a peer that dies is usually noticed at once, as a closed
//! connection), `CONTRAST_DIST_BUCKET_MIB` (default 25, as PyTorch DDP's `bucket_cap_mb`),
//! `GLOO_SOCKET_IFNAME` (the network interface, as in PyTorch).

use crate::tensors::Named;
use anyhow::{bail, ensure, Context, Result};
use contrast_shim::{Backend, ProcessGroup, ReduceOp, Rendezvous};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// Where this process stands, as `torchrun` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub addr: String,
    pub port: u16,
    /// torchrun's agent serves the store: every rank (0 too) connects as a client.
    pub agent_store: bool,
    /// torchrun's restart count (keys of a restarted group do not meet a dead one's).
    pub restart: u64,
}

impl Env {
    /// The torchrun variables of this process; `None` when `WORLD_SIZE` is unset, or 1 without
    /// `CONTRAST_DIST=1`.
    pub fn read() -> Result<Option<Env>> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`Env::read`] over any lookup (tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Env>> {
        let num = |k: &str| -> Result<Option<u64>> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .map(Some)
                    .with_context(|| format!("{k}={v:?} is not a number")),
            }
        };
        let Some(world) = num("WORLD_SIZE")? else {
            return Ok(None);
        };
        // one rank forms a group only when asked (`CONTRAST_DIST=1`: e.g. to time NCCL's
        // overhead against a plain run on one GPU)
        if world == 0 || (world == 1 && get("CONTRAST_DIST").as_deref() != Some("1")) {
            return Ok(None);
        }
        let need = |k: &str| -> Result<String> {
            get(k).with_context(|| {
                format!("WORLD_SIZE={world} is set but {k} is not: start the ranks with torchrun, or set RANK, MASTER_ADDR and MASTER_PORT yourself")
            })
        };
        let rank: u64 = need("RANK")?
            .trim()
            .parse()
            .context("RANK is not a number")?;
        ensure!(rank < world, "RANK={rank} is not below WORLD_SIZE={world}");
        let port: u16 = need("MASTER_PORT")?
            .trim()
            .parse()
            .context("MASTER_PORT is not a port number")?;
        Ok(Some(Env {
            rank: rank as usize,
            world: world as usize,
            local_rank: num("LOCAL_RANK")?.unwrap_or(rank) as usize,
            addr: need("MASTER_ADDR")?,
            port,
            agent_store: get("TORCHELASTIC_USE_AGENT_STORE")
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
            restart: num("TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0),
        }))
    }
}

fn env_num(k: &str, default: f64) -> Result<f64> {
    match std::env::var(k) {
        Err(_) => Ok(default),
        Ok(v) => {
            let x: f64 = v
                .trim()
                .parse()
                .with_context(|| format!("{k}={v:?} is not a number"))?;
            ensure!(x > 0.0, "{k} must be positive, got {v}");
            Ok(x)
        }
    }
}

/// A process group and what the Trainer measures of it.
pub struct Dist {
    pg: ProcessGroup,
    pub env: Env,
    /// Gradients are all-reduced in flat buckets of at most this many bytes.
    pub bucket_bytes: usize,
    /// Time spent in gradient all-reduces (ns), for the report's `allreduce_s`.
    allreduce_ns: AtomicU64,
    /// Store keys used so far (each exchange takes a fresh one).
    keys: AtomicU64,
}

static CURRENT: OnceLock<Option<Dist>> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// The process group of this process, created on the first call from the torchrun variables
/// (see the module docs); `None` when there are none. `cuda`: the run trains on CUDA, so the
/// group is NCCL's when this build has it (else Gloo's, staging through host memory). A failed
/// rendezvous is an error naming the address, and later calls try again.
pub fn init(cuda: bool) -> Result<Option<&'static Dist>> {
    if let Some(d) = CURRENT.get() {
        return Ok(d.as_ref());
    }
    let _one = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = CURRENT.get() {
        return Ok(d.as_ref());
    }
    let dist = match Env::read()? {
        None => None,
        Some(env) => {
            let backend = match cuda && contrast_shim::nccl_available() {
                true => Backend::Nccl,
                false => Backend::Gloo,
            };
            if cuda && backend == Backend::Gloo && env.rank == 0 {
                eprintln!("note: this build has no NCCL; the ranks communicate through Gloo, staging CUDA tensors in host memory");
            }
            Some(Dist::new(env, backend)?)
        }
    };
    Ok(CURRENT.get_or_init(|| dist).as_ref())
}

/// The group created by [`init`], if any (no rendezvous here: `None` before `init`).
pub fn current() -> Option<&'static Dist> {
    CURRENT.get().and_then(|d| d.as_ref())
}

/// This process's rank (0 without a group).
pub fn rank() -> usize {
    current().map_or(0, |d| d.env.rank)
}

/// The number of processes (1 without a group).
pub fn world() -> usize {
    current().map_or(1, |d| d.env.world)
}

/// Whether this process writes the run folder (rank 0, or no group).
pub fn is_main() -> bool {
    rank() == 0
}

impl Dist {
    /// Rendezvous at `env.addr:env.port` and create the group on `backend`.
    pub fn new(env: Env, backend: Backend) -> Result<Self> {
        let timeout = Duration::from_secs_f64(env_num("CONTRAST_DIST_TIMEOUT_S", 1800.0)?);
        let bucket_mib = env_num("CONTRAST_DIST_BUCKET_MIB", 25.0)?;
        let r = Rendezvous {
            addr: env.addr.clone(),
            port: env.port,
            rank: env.rank,
            world: env.world,
            timeout,
            client_only: env.agent_store,
            prefix: format!("contrast/{}/", env.restart),
            interface: std::env::var("GLOO_SOCKET_IFNAME").unwrap_or_default(),
            backend,
        };
        let pg = ProcessGroup::new(&r).with_context(|| {
            format!(
                "rank {} of {} could not join the group at {}:{} (timeout {:.0} s)",
                env.rank,
                env.world,
                env.addr,
                env.port,
                timeout.as_secs_f64()
            )
        })?;
        Ok(Self {
            pg,
            env,
            bucket_bytes: ((bucket_mib * (1 << 20) as f64) as usize).max(1),
            allreduce_ns: AtomicU64::new(0),
            keys: AtomicU64::new(0),
        })
    }

    pub fn rank(&self) -> usize {
        self.env.rank
    }

    pub fn world(&self) -> usize {
        self.env.world
    }

    /// The underlying group (collectives on single contiguous CPU tensors).
    pub fn group(&self) -> &ProcessGroup {
        &self.pg
    }

    /// Where this group's collectives take their tensors: the CPU for Gloo, this rank's GPU
    /// (`cuda:LOCAL_RANK`) for NCCL.
    pub fn comm_device(&self) -> Device {
        match self.pg.backend() {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => Device::Cuda(self.env.local_rank),
        }
    }

    /// `t`, detached and contiguous on [`Dist::comm_device`].
    fn comm(&self, t: &Tensor) -> Tensor {
        t.detach().to_device(self.comm_device()).contiguous()
    }

    /// Seconds spent in [`Dist::all_reduce_grads`] so far.
    pub fn allreduce_s(&self) -> f64 {
        self.allreduce_ns.load(Relaxed) as f64 * 1e-9
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        Ok(self.pg.barrier()?)
    }

    /// Runs `op` on `tensors` packed into flat buffers (one per kind, at most
    /// [`Dist::bucket_bytes`] each), then copies the results back into the tensors.
    fn bucketed(
        &self,
        tensors: &[Tensor],
        mut op: impl FnMut(&Tensor) -> Result<()>,
    ) -> Result<()> {
        let mut kinds: Vec<Kind> = tensors.iter().map(|t| t.kind()).collect();
        kinds.sort_by_key(|k| format!("{k:?}"));
        kinds.dedup();
        let nbytes = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        for kind in kinds {
            let of_kind: Vec<&Tensor> = tensors.iter().filter(|t| t.kind() == kind).collect();
            let mut i = 0;
            while i < of_kind.len() {
                let (mut j, mut bytes) = (i, 0usize);
                while j < of_kind.len()
                    && (j == i || bytes + nbytes(of_kind[j]) <= self.bucket_bytes)
                {
                    bytes += nbytes(of_kind[j]);
                    j += 1;
                }
                let bucket = &of_kind[i..j];
                let flat = Tensor::cat(
                    &bucket
                        .iter()
                        .map(|t| self.comm(t).reshape([-1]))
                        .collect::<Vec<_>>(),
                    0,
                );
                op(&flat)?;
                tch::no_grad(|| {
                    let mut at = 0i64;
                    for t in bucket {
                        let n = t.numel() as i64;
                        let mut dst = t.shallow_clone();
                        dst.copy_(&flat.narrow(0, at, n).view(t.size().as_slice()));
                        at += n;
                    }
                });
                i = j;
            }
        }
        Ok(())
    }

    /// Overwrites `tensors` (the same names, shapes and kinds on every rank) with rank
    /// `root`'s, in place.
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        self.bucketed(tensors, |flat| Ok(self.pg.broadcast(flat, root)?))
    }

    /// Averages the gradients of `params` over the ranks, in place, in buckets. A parameter
    /// that has a gradient on some rank and none on another gets zeros there first (so every
    /// rank reduces the same buckets); one without a gradient anywhere is left without one.
    pub fn all_reduce_grads(&self, params: &[Tensor]) -> Result<()> {
        let t0 = Instant::now();
        let has: Vec<f32> = params
            .iter()
            .map(|p| p.grad().defined() as u8 as f32)
            .collect();
        let any = self.comm(&Tensor::from_slice(&has));
        self.pg.all_reduce(&any, ReduceOp::Max)?;
        let any: Vec<f32> = Vec::try_from(&any.to_device(Device::Cpu))?;
        let mut grads = Vec::new();
        for (p, (&mine, &anyone)) in params.iter().zip(has.iter().zip(&any)) {
            if anyone == 0.0 {
                continue;
            }
            if mine == 0.0 {
                // a gradient of zeros, created by autograd (tch cannot assign `.grad`)
                (p.sum(p.kind()) * 0.0).backward();
            }
            grads.push(p.grad());
        }
        let world = self.world() as f64;
        self.bucketed(&grads, |flat| {
            self.pg.all_reduce(flat, ReduceOp::Sum)?;
            let _ = flat.shallow_clone().g_div_scalar_(world);
            Ok(())
        })?;
        self.allreduce_ns
            .fetch_add(t0.elapsed().as_nanos() as u64, Relaxed);
        Ok(())
    }

    /// The mean of `values` over the ranks.
    pub fn mean_f64(&self, values: &[f64]) -> Result<Vec<f64>> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let t = self.comm(&Tensor::from_slice(values));
        self.pg.all_reduce(&t, ReduceOp::Mean)?;
        Ok(Vec::try_from(&t.to_device(Device::Cpu))?)
    }

    /// Rank `root`'s bytes on every rank (through the store: small values only).
    pub fn share_bytes(&self, root: usize, bytes: &[u8]) -> Result<Vec<u8>> {
        let key = format!("share/{}", self.keys.fetch_add(1, Relaxed));
        if self.rank() == root {
            self.pg.store_set(&key, bytes)?;
            Ok(bytes.to_vec())
        } else {
            Ok(self.pg.store_get(&key)?)
        }
    }

    /// Rank 0's named tensors on every rank: their names, kinds and shapes go through the
    /// store, their values through one bucketed broadcast. The other ranks' `named` is ignored
    /// (pass an empty list).
    pub fn share_named(&self, named: &Named) -> Result<Named> {
        let meta: Vec<(String, String, Vec<i64>)> = named
            .iter()
            .map(|(n, t)| (n.clone(), kind_name(t.kind()).to_string(), t.size()))
            .collect();
        let meta: Vec<(String, String, Vec<i64>)> =
            serde_json::from_slice(&self.share_bytes(0, &serde_json::to_vec(&meta)?)?)?;
        let out: Named = if self.rank() == 0 {
            named
                .iter()
                .map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous()))
                .collect()
        } else {
            meta.iter()
                .map(|(n, k, s)| {
                    Ok((
                        n.clone(),
                        Tensor::zeros(s.as_slice(), (parse_kind(k)?, Device::Cpu)),
                    ))
                })
                .collect::<Result<_>>()?
        };
        let ts: Vec<Tensor> = out.iter().map(|(_, t)| t.shallow_clone()).collect();
        self.broadcast(&ts, 0)?;
        Ok(out)
    }

    /// The tensor of every rank concatenated along dim 0 in rank order, with gradient flowing
    /// into this rank's own part (see [`gather_with_grad`]).
    pub fn gather_with_grad(&self, t: &Tensor) -> Result<Tensor> {
        let parts = self.pg.all_gather(&self.comm(t))?;
        let w = (self.world() - 1) as f64;
        // value: exactly `t`; gradient into `t`: world × the incoming one (see the fn docs)
        let scaled = t * w;
        let live = t + (&scaled - scaled.detach());
        let parts: Vec<Tensor> = parts
            .into_iter()
            .enumerate()
            .map(|(r, p)| {
                if r == self.rank() {
                    live.shallow_clone()
                } else {
                    p.to_device(t.device())
                }
            })
            .collect();
        Ok(Tensor::cat(&parts, 0))
    }

    /// Every rank's row count of `t` (dim 0), in rank order.
    fn row_counts(&self, t: &Tensor) -> Result<Vec<i64>> {
        let n = Tensor::from_slice(&[t.size()[0]]);
        let parts = self.pg.all_gather(&self.comm(&n))?;
        Ok(parts.iter().map(|p| p.int64_value(&[0])).collect())
    }

    /// [`Dist::gather_with_grad`] for tensors whose row count differs between the ranks: each
    /// is padded to the largest count, gathered, and the padding dropped.
    pub fn gather_rows_with_grad(&self, t: &Tensor) -> Result<Tensor> {
        let (counts, padded) = self.padded(t)?;
        let Some(padded) = padded else {
            return Ok(t.shallow_clone());
        };
        let all = self.gather_with_grad(&padded)?;
        Ok(all.index_select(0, &unpad(&counts, all.device())))
    }

    /// [`gather`] for row counts that differ between the ranks.
    pub fn gather_rows(&self, t: &Tensor) -> Result<Tensor> {
        let (counts, padded) = self.padded(t)?;
        let Some(padded) = padded else {
            return Ok(t.detach());
        };
        let parts = self.pg.all_gather(&self.comm(&padded))?;
        let all = Tensor::cat(&parts, 0).to_device(t.device());
        Ok(all.index_select(0, &unpad(&counts, all.device())))
    }

    /// The row counts and `t` padded with zero rows to the largest (`None` when every rank has
    /// no row: nothing to gather).
    fn padded(&self, t: &Tensor) -> Result<(Vec<i64>, Option<Tensor>)> {
        let counts = self.row_counts(t)?;
        let max = counts.iter().copied().max().unwrap_or(0);
        if max == 0 {
            return Ok((counts, None));
        }
        let n = t.size()[0];
        let padded = if n < max {
            let mut shape = t.size();
            shape[0] = max - n;
            Tensor::cat(&[t, &Tensor::zeros(shape, (t.kind(), t.device()))], 0)
        } else {
            t.shallow_clone()
        };
        Ok((counts, Some(padded)))
    }
}

/// The rows of a gather of tensors padded to `max(counts)` rows that hold data, in rank order.
fn unpad(counts: &[i64], device: Device) -> Tensor {
    let max = counts.iter().copied().max().unwrap_or(0);
    let idx: Vec<i64> = counts
        .iter()
        .enumerate()
        .flat_map(|(r, &c)| (0..c).map(move |k| r as i64 * max + k))
        .collect();
    Tensor::from_slice(&idx).to_device(device)
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Float => "f32",
        Kind::Double => "f64",
        Kind::Half => "f16",
        Kind::BFloat16 => "bf16",
        Kind::Int64 => "i64",
        Kind::Int => "i32",
        Kind::Int16 => "i16",
        Kind::Int8 => "i8",
        Kind::Uint8 => "u8",
        Kind::Bool => "bool",
        _ => "other",
    }
}

fn parse_kind(s: &str) -> Result<Kind> {
    Ok(match s {
        "f32" => Kind::Float,
        "f64" => Kind::Double,
        "f16" => Kind::Half,
        "bf16" => Kind::BFloat16,
        "i64" => Kind::Int64,
        "i32" => Kind::Int,
        "i16" => Kind::Int16,
        "i8" => Kind::Int8,
        "u8" => Kind::Uint8,
        "bool" => Kind::Bool,
        _ => bail!("a tensor kind the process group does not carry: {s}"),
    })
}

/// [`gather_with_grad`] of several `[N, D_i]` tensors with the same rows in one collective:
/// they travel side by side (`[N, ΣD_i]`) and come back split, each `[W·N, D_i]`.
pub fn gather_columns_with_grad(parts: &[&Tensor]) -> Result<Vec<Tensor>> {
    let widths: Vec<i64> = parts.iter().map(|t| t.size()[1]).collect();
    let all = gather_with_grad(&Tensor::cat(parts, 1))?;
    Ok(all.split_with_sizes(&widths, 1))
}

/// Every rank's `t` concatenated along dim 0 in rank order (`t` itself without a group).
///
/// Gradient: the loss computed from the result on every rank is the **global** loss (every
/// row of the global batch, same value on each rank). Rank `r`'s backward reaches only its own
/// rows, so rank `r`'s parameter gradient is the part of the global gradient that flows through
/// its rows; the global gradient is the *sum* of those over the ranks. The Trainer *averages*
/// gradients over the ranks (right for every per-sample loss), so the own part is scaled by the
/// world size in the backward pass only: its value is `t + (t·(W−1) − stop_grad(t·(W−1)))`,
/// exactly `t` forward, `W ×` the gradient backward. Average of `W × own part` = the global
/// gradient, which a one-process run on the global batch computes.
pub fn gather_with_grad(t: &Tensor) -> Result<Tensor> {
    match current() {
        Some(d) => d.gather_with_grad(t),
        None => Ok(t.shallow_clone()),
    }
}

/// [`gather_with_grad`] where the ranks' row counts may differ (e.g. a variable number of extra
/// positives per rank); `t` itself without a group.
pub fn gather_rows_with_grad(t: &Tensor) -> Result<Tensor> {
    match current() {
        Some(d) => d.gather_rows_with_grad(t),
        None => Ok(t.shallow_clone()),
    }
}

/// [`gather`] where the ranks' row counts may differ; `t` itself, detached, without a group.
pub fn gather_rows(t: &Tensor) -> Result<Tensor> {
    match current() {
        Some(d) => d.gather_rows(t),
        None => Ok(t.detach()),
    }
}

static SYNC_BN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`batch_norm`] synchronises the statistics over the ranks (the Trainer sets it from
/// `runtime.sync_batch_norm`, else the method's official choice).
pub fn set_sync_batch_norm(on: bool) {
    SYNC_BN.store(on, Relaxed);
}

static EVERY_RANK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `f` run by every rank together (the Trainer's end-of-training evaluation of a method that
/// shards it, [`crate::train::Method::evaluates_on_every_rank`]): inside it, [`eval_shard`] is
/// this rank's shard, so the frozen-feature passes split their batches over the ranks and
/// gather the features.
pub fn on_every_rank<R>(f: impl FnOnce() -> R) -> R {
    let was = EVERY_RANK.swap(true, Relaxed);
    let out = f();
    EVERY_RANK.store(was, Relaxed);
    out
}

/// The rows of each evaluation batch this rank embeds: its shard inside [`on_every_rank`] (with
/// a group), else every row (rank 0 evaluating alone, or one process).
pub fn eval_shard() -> Shard {
    if EVERY_RANK.load(Relaxed) && current().is_some() {
        Shard::current()
    } else {
        Shard::default()
    }
}

/// `f` with every BatchNorm on this rank's rows alone: what rank 0 runs by itself (monitors,
/// evaluation) must not wait for the other ranks' statistics. The setting is restored after.
pub fn unsynchronised<R>(f: impl FnOnce() -> R) -> R {
    let was = SYNC_BN.swap(false, Relaxed);
    let out = f();
    SYNC_BN.store(was, Relaxed);
    out
}

/// Whether BatchNorm layers synchronise their statistics over the ranks now.
pub fn sync_batch_norm() -> bool {
    SYNC_BN.load(Relaxed) && current().is_some()
}

/// A BatchNorm layer's forward pass: SyncBatchNorm in training mode when a group exists and
/// [`set_sync_batch_norm`] is on (statistics over every rank's rows; see
/// [`contrast_shim::ProcessGroup::sync_batch_norm`]), else the layer itself. The workspace's
/// BatchNorms all use PyTorch's defaults (momentum 0.1, eps 1e-5), which the synchronised path
/// applies (tch keeps a layer's own settings private).
///
/// Panics when a collective fails (a layer's forward pass cannot return an error): the message
/// names the collective, and the other ranks stop as for any dead peer.
pub fn batch_norm(bn: &tch::nn::BatchNorm, x: &Tensor, train: bool) -> Tensor {
    use tch::nn::ModuleT;
    match current() {
        Some(d) if train && SYNC_BN.load(Relaxed) => {
            d.pg.sync_batch_norm(
                x,
                bn.ws.as_ref(),
                bn.bs.as_ref(),
                Some(&bn.running_mean),
                Some(&bn.running_var),
                0.1,
                1e-5,
            )
            .unwrap_or_else(|e| panic!("{e}"))
        }
        _ => bn.forward_t(x, train),
    }
}

/// Every rank's `t` concatenated along dim 0 in rank order, without gradient (the official
/// codes' `concat_all_gather`); `t` itself, detached, without a group.
pub fn gather(t: &Tensor) -> Result<Tensor> {
    match current() {
        Some(d) => {
            let parts = d.pg.all_gather(&d.comm(t))?;
            Ok(Tensor::cat(&parts, 0).to_device(t.device()))
        }
        None => Ok(t.detach()),
    }
}

/// Which rows of each global batch this rank trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self { rank: 0, world: 1 }
    }
}

impl Shard {
    /// This process's shard (the whole batch without a group).
    pub fn current() -> Self {
        Self {
            rank: rank(),
            world: world(),
        }
    }

    /// The local batch of a global batch of `global` samples (error unless it divides).
    pub fn local_batch(&self, global: usize) -> Result<usize> {
        ensure!(
            global.is_multiple_of(self.world),
            "the batch size {global} is the global batch and must divide by the {} processes",
            self.world
        );
        Ok(global / self.world)
    }

    /// The range of this rank's rows in a global batch of `n` rows (`n` need not divide: the
    /// first `n mod W` ranks take one more row, as a short last batch splits).
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        let (q, r) = (n / self.world, n % self.world);
        let lo = self.rank * q + self.rank.min(r);
        lo..lo + q + usize::from(self.rank < r)
    }

    /// This rank's rows of a global-batch tensor (dim 0).
    pub fn rows(&self, t: &Tensor) -> Tensor {
        if self.world == 1 {
            return t.shallow_clone();
        }
        let r = self.range(t.size()[0] as usize);
        t.narrow(0, r.start as i64, r.len() as i64)
    }
}

/// Exchange of a resume checkpoint: see [`Dist::share_checkpoint`].
impl Dist {
    /// Rank 0's resume checkpoint (or none) on every rank: its state and every group's tensors.
    pub fn share_checkpoint(
        &self,
        ck: Option<&crate::train::Checkpoint>,
    ) -> Result<Option<crate::train::Checkpoint>> {
        use crate::train::checkpoint::{Checkpoint, CheckpointState};
        let head = ck.map(|c| {
            (
                c.path.clone(),
                c.state.clone(),
                c.groups.keys().cloned().collect::<Vec<_>>(),
            )
        });
        let head: Option<(std::path::PathBuf, CheckpointState, Vec<String>)> =
            serde_json::from_slice(&self.share_bytes(0, &serde_json::to_vec(&head)?)?)?;
        let Some((path, state, names)) = head else {
            return Ok(None);
        };
        let mut groups = std::collections::BTreeMap::new();
        for g in names {
            let mine = match ck {
                Some(c) if self.rank() == 0 => c
                    .group(&g)?
                    .iter()
                    .map(|(n, t)| (n.clone(), t.shallow_clone()))
                    .collect(),
                _ => Vec::new(),
            };
            groups.insert(g, self.share_named(&mine)?);
        }
        Ok(Some(Checkpoint {
            path,
            state,
            groups,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchrun_variables() {
        let vars = |kv: &[(&str, &str)]| {
            let m: std::collections::HashMap<String, String> = kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |k: &str| m.get(k).cloned()
        };
        assert_eq!(Env::from_lookup(vars(&[])).unwrap(), None);
        assert_eq!(
            Env::from_lookup(vars(&[("WORLD_SIZE", "1")])).unwrap(),
            None
        );
        let e = Env::from_lookup(vars(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((e.rank, e.world, e.local_rank, e.port), (3, 4, 1, 29500));
        assert!(e.agent_store);
        assert_eq!(e.restart, 2);
        let err = Env::from_lookup(vars(&[("WORLD_SIZE", "2"), ("RANK", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MASTER_PORT"), "{err}");
        let err = Env::from_lookup(vars(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "2"),
            ("MASTER_ADDR", "a"),
            ("MASTER_PORT", "1"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("RANK=2"), "{err}");
    }

    #[test]
    fn shards_cover_the_global_batch_in_order() {
        for world in 1..5 {
            for n in [0, 1, 7, 8, 12] {
                let mut next = 0;
                for rank in 0..world {
                    let r = Shard { rank, world }.range(n);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
        assert!(Shard { rank: 0, world: 3 }.local_batch(8).is_err());
        assert_eq!(Shard { rank: 1, world: 4 }.local_batch(8).unwrap(), 2);
    }
}
