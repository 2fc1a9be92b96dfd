//! Device selection, thread count and seeding.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;

/// Where and how a run executes. Part of every method's config under `[runtime]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// `auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads; 0 = one per core.
    pub threads: usize,
    /// The run's seed: model initialisation, data order, augmentation and per-step RNG.
    pub seed: u64,
    /// bf16 autocast of every method's forward pass and loss on CUDA (the Trainer applies it);
    /// a documented no-op on CPU, where bf16 matmul is very slow.
    pub autocast_bf16: bool,
    /// Keep memory that tensors free inside the process for the next step instead of handing it
    /// back to the OS (glibc malloc settings, see [`keep_freed_memory`]). Default `true`: on CPU
    /// a training step otherwise spends 10–15 % of its time in page faults zeroing fresh pages.
    pub keep_freed_memory: bool,
    /// SyncBatchNorm when `torchrun` starts several ranks: the BatchNorms of the ResNets and
    /// MLP heads take their statistics over every rank's rows (`contrast_core::dist`). Unset:
    /// what the method's official code does (`Method::official_sync_batch_norm`). No effect in
    /// one process, where every BatchNorm already sees the whole batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_batch_norm: Option<bool>,
    /// The loss-spike guard (unset = off): stop the run when a loss term rises above its median
    /// over the last 50 steps by more than this many times the median's size (e.g. `1`: a term
    /// that more than doubles), as an lr spike does that ruins the weights without any NaN. It
    /// needs 10 steps of history, which restarts on resume; off by default because some
    /// objectives rise on purpose early in training (a MoCo queue filling, a warm-up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_spike: Option<f64>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            device: "auto".into(),
            threads: 0,
            seed: 0,
            autocast_bf16: false,
            keep_freed_memory: true,
            sync_batch_norm: None,
            loss_spike: None,
        }
    }
}

impl RuntimeConfig {
    /// Apply threads and the global seed; return the selected device.
    pub fn init(&self) -> Result<Device> {
        let device = parse_device(&self.device)?;
        let threads = if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.threads
        };
        tch::set_num_threads(threads as i32);
        tch::manual_seed(self.seed as i64);
        if self.keep_freed_memory {
            keep_freed_memory();
        }
        Ok(device)
    }

    /// Whether the step should run under bf16 autocast (only ever on CUDA).
    pub fn autocast(&self, device: Device) -> bool {
        self.autocast_bf16 && device.is_cuda()
    }
}

/// Make glibc malloc keep freed memory for reuse: blocks up to 32 MiB come from the heap (not
/// their own `mmap`), and the heap is not trimmed back to the OS below 2 GiB of free space at
/// its top (64 MiB padding per growth). libtorch's CPU allocator is plain `malloc`, so without
/// this every step's activations and gradients are fresh pages that the kernel faults in and
/// zeroes: 14 % of the cycles of the PatchMix step bench (`perf`), a 15–19 % slower step.
/// Process-wide and idempotent; returns whether every setting was accepted (always `false`
/// off glibc, where it does nothing). Memory already freed to the OS is unaffected; the cost is
/// that the process's resident size stays at its high-water mark.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                && libc::mallopt(libc::M_TOP_PAD, 64 << 20) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Parse `auto | cpu | cuda | cuda:N`. `cuda` on a machine without CUDA is an error.
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    let dev = match s.as_str() {
        "auto" => return Ok(Device::cuda_if_available()),
        "cpu" => Device::Cpu,
        "cuda" | "gpu" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:") {
            Some(n) => Device::Cuda(
                n.parse()
                    .with_context(|| format!("device `{s}`: `{n}` is not a GPU index"))?,
            ),
            None => bail!("unknown device `{s}`: use auto, cpu, cuda or cuda:N"),
        },
    };
    if let Device::Cuda(i) = dev {
        if !tch::Cuda::is_available() {
            bail!("device `{s}` requested but CUDA is not available (see `cargo xtask doctor`)");
        }
        let n = tch::Cuda::device_count() as usize;
        if i >= n {
            bail!("device `{s}` requested but only {n} CUDA device(s) exist");
        }
    }
    Ok(dev)
}

/// The seed libtorch's generators get before step `step` of a run seeded with `seed`
/// (SplitMix64 of the pair, so neighbouring steps get unrelated streams).
pub fn step_seed(seed: u64, step: u64) -> i64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// The one derivation for a run's other random streams (memory-bank init, data order, crop
/// sampling, …): `(run seed, purpose, index)` → a seed. The purpose is hashed (FNV-1a) into the
/// step slot of [`step_seed`], so streams of different purposes and indices are unrelated, and
/// none equals the per-step libtorch stream. Use a fixed purpose string per stream, e.g.
/// `derive_seed(seed, "memory-bank", 0)` or `derive_seed(seed, "crops", step)`.
pub fn derive_seed(seed: u64, purpose: &str, index: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in purpose.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    step_seed(seed ^ h, index) as u64
}

/// Reseed libtorch (CPU and every CUDA device) for `step`.
pub fn seed_step(seed: u64, step: u64) {
    tch::manual_seed(step_seed(seed, step));
}

/// The libtorch seed of rank `rank`'s own draws inside step `step` (after its batch): the step
/// seed on rank 0 (and in one process), a stream of its own on every other rank
/// (`derive_seed(seed, "rank-<r>", step)`), so that dropout masks and the like differ across
/// the ranks.
pub fn rank_step_seed(seed: u64, step: u64, rank: usize) -> i64 {
    match rank {
        0 => step_seed(seed, step),
        r => (derive_seed(seed, &format!("rank-{r}"), step) >> 1) as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device("CPU").unwrap(), Device::Cpu);
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("unknown device `tpu`"), "{e}");
        if !tch::Cuda::is_available() {
            let e = parse_device("cuda:0").unwrap_err().to_string();
            assert!(e.contains("CUDA is not available"), "{e}");
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
        }
    }

    #[test]
    fn step_seeds_differ_and_repeat() {
        assert_eq!(step_seed(7, 3), step_seed(7, 3));
        assert_ne!(step_seed(7, 3), step_seed(7, 4));
        assert_ne!(step_seed(7, 3), step_seed(8, 3));
        assert!(step_seed(u64::MAX, u64::MAX) >= 0);
        assert_eq!(derive_seed(7, "bank", 0), derive_seed(7, "bank", 0));
        assert_ne!(derive_seed(7, "bank", 0), derive_seed(7, "crops", 0));
        assert_ne!(derive_seed(7, "bank", 0), derive_seed(7, "bank", 1));
        assert_ne!(derive_seed(7, "bank", 0), derive_seed(8, "bank", 0));
    }
}
