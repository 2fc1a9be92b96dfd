//! A FIFO memory bank of past embeddings: MoCo's negative queue
//! (<https://arxiv.org/abs/1911.05722>, `moco/builder.py::_dequeue_and_enqueue`) and NNCLR's
//! support set for nearest-neighbour positives (<https://arxiv.org/abs/2104.14548>; lightly
//! `NNMemoryBankModule`, copied by MNCLGLF as `utils/nn_memory_bank.py`).
//!
//! * Initialisation: rows of i.i.d. standard normals, each row L2-normalised (MoCo's
//!   `randn(dim, K)` normalised along `dim`; lightly's `MemoryBankModule`). The draw comes from
//!   a ChaCha stream seeded with `seed`, so it does not touch (or depend on) libtorch's global RNG.
//! * [`MemoryBank::push`] writes detached rows at the pointer and advances it modulo `size`.
//!   A batch that runs past the end wraps around to the start (true FIFO: the oldest rows are
//!   always the ones overwritten). *Difference*: MoCo asserts that `size` is a multiple of the
//!   batch, and lightly writes only the rows that fit and drops the rest of that batch when it
//!   reaches the end; for batches that divide `size` all three agree exactly. A batch larger
//!   than the bank keeps its last `size` rows.
//! * [`MemoryBank::nearest`]: for every query the stored row with the highest cosine similarity
//!   (`argmax(normalize(q) · normalize(bank)ᵀ)`), returned as stored (not re-normalised) and
//!   detached, as lightly's `NNMemoryBankModule.forward(update=False)`. Ties go to the lowest
//!   index (`argmax`).
//! * [`MemoryBank::state`] / [`MemoryBank::load_state`] round-trip the rows and the pointer
//!   through a checkpoint group, so a resumed run continues with the same bank.
//!
//! ```
//! use contrast_core::memory::MemoryBank;
//! use tch::{Device, Kind, Tensor};
//! # fn main() -> anyhow::Result<()> {
//! let mut bank = MemoryBank::new(8, 4, 0, Device::Cpu)?;
//! let keys = Tensor::eye(4, (Kind::Float, Device::Cpu)) * 2.0;
//! bank.push(&keys)?; // rows 0..4 = keys, pointer = 4
//! let nn = bank.nearest(&Tensor::from_slice(&[0.1f32, 3.0, 0.0, 0.0]).view([1, 4]))?;
//! assert_eq!(Vec::<f32>::try_from(nn.view([-1]))?, vec![0.0, 2.0, 0.0, 0.0]);
//! assert_eq!(bank.pointer(), 4);
//! # Ok(())
//! # }
//! ```

use crate::tensors::Named;
use anyhow::{bail, ensure, Context, Result};
use rand::{Rng, SeedableRng};
use tch::{Device, Tensor};

/// A FIFO bank of `size` embeddings of width `dim` (see the module docs).
pub struct MemoryBank {
    /// `[size, dim]`, float, no gradient.
    bank: Tensor,
    /// Next row to overwrite.
    ptr: i64,
}

impl MemoryBank {
    /// A bank of `size` rows of width `dim` on `device`, rows drawn from N(0, I) with the ChaCha
    /// stream of `seed` and L2-normalised.
    pub fn new(size: i64, dim: i64, seed: u64, device: Device) -> Result<Self> {
        ensure!(
            size > 0,
            "Illegal memory bank size {size}: it must be positive"
        );
        ensure!(
            dim > 0,
            "Illegal memory bank width {dim}: it must be positive"
        );
        let n = (size * dim) as usize;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut v = Vec::with_capacity(n);
        // Box–Muller: two uniforms → two independent standard normals
        while v.len() < n {
            let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]
            let u2: f64 = rng.gen::<f64>();
            let r = (-2.0 * u1.ln()).sqrt();
            let t = 2.0 * std::f64::consts::PI * u2;
            v.push((r * t.cos()) as f32);
            if v.len() < n {
                v.push((r * t.sin()) as f32);
            }
        }
        let raw = Tensor::from_slice(&v).view([size, dim]);
        let bank = crate::loss::normalize(&raw).to_device(device);
        Ok(Self { bank, ptr: 0 })
    }

    /// Number of rows.
    pub fn size(&self) -> i64 {
        self.bank.size()[0]
    }

    /// Row width.
    pub fn dim(&self) -> i64 {
        self.bank.size()[1]
    }

    /// The next row [`MemoryBank::push`] overwrites.
    pub fn pointer(&self) -> i64 {
        self.ptr
    }

    /// All rows, `[size, dim]` (no gradient). MoCo's negatives are `features()` (its queue
    /// transposed).
    pub fn features(&self) -> &Tensor {
        &self.bank
    }

    /// FIFO enqueue of the rows of `keys` (`[B, dim]`, detached and cast to the bank's kind and
    /// device), wrapping around the end of the bank.
    pub fn push(&mut self, keys: &Tensor) -> Result<()> {
        let s = keys.size();
        ensure!(
            s.len() == 2 && s[1] == self.dim(),
            "memory bank push: keys have shape {s:?}, expected [B, {}]",
            self.dim()
        );
        let size = self.size();
        let mut keys = keys
            .detach()
            .to_device(self.bank.device())
            .to_kind(self.bank.kind());
        let mut b = s[0];
        if b == 0 {
            return Ok(());
        }
        if b > size {
            // only the newest `size` rows survive a full cycle; the pointer advances by b mod size
            let skip = b - size;
            keys = keys.narrow(0, skip, size);
            self.ptr = (self.ptr + skip) % size;
            b = size;
        }
        tch::no_grad(|| {
            let first = b.min(size - self.ptr);
            self.bank
                .narrow(0, self.ptr, first)
                .copy_(&keys.narrow(0, 0, first));
            if first < b {
                self.bank
                    .narrow(0, 0, b - first)
                    .copy_(&keys.narrow(0, first, b - first));
            }
        });
        self.ptr = (self.ptr + b) % size;
        Ok(())
    }

    /// Indices of the rows with the highest cosine similarity to each row of `q` (`[B, dim]` →
    /// `[B]`, int64).
    pub fn nearest_index(&self, q: &Tensor) -> Result<Tensor> {
        let s = q.size();
        ensure!(
            s.len() == 2 && s[1] == self.dim(),
            "memory bank lookup: queries have shape {s:?}, expected [B, {}]",
            self.dim()
        );
        Ok(tch::no_grad(|| {
            let qn = crate::loss::normalize(&q.detach().to_kind(self.bank.kind())); // [B, D]
            let bn = crate::loss::normalize(&self.bank); // [K, D]
            qn.matmul(&bn.tr()).argmax(1, false) // [B]
        }))
    }

    /// For each row of `q` (`[B, dim]`), the stored row with the highest cosine similarity,
    /// as stored (`[B, dim]`, detached).
    pub fn nearest(&self, q: &Tensor) -> Result<Tensor> {
        let idx = self.nearest_index(q)?;
        Ok(self.bank.index_select(0, &idx).detach())
    }

    /// The bank as a checkpoint group: `bank` (`[size, dim]`) and `ptr` (`[1]`, int64).
    pub fn state(&self) -> Named {
        vec![
            ("bank".into(), self.bank.shallow_clone()),
            ("ptr".into(), Tensor::from_slice(&[self.ptr])),
        ]
    }

    /// Restore what [`MemoryBank::state`] returned (shapes must match this bank's).
    pub fn load_state(&mut self, state: &Named) -> Result<()> {
        let get = |k: &str| {
            state
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, t)| t)
                .with_context(|| format!("memory bank state has no `{k}`"))
        };
        let bank = get("bank")?;
        ensure!(
            bank.size() == self.bank.size(),
            "memory bank state `bank` has shape {:?}, this bank is {:?}",
            bank.size(),
            self.bank.size()
        );
        let ptr = get("ptr")?;
        ensure!(
            ptr.numel() == 1,
            "memory bank state `ptr` has {} elements",
            ptr.numel()
        );
        let p = ptr.int64_value(&[0]);
        if !(0..self.size()).contains(&p) {
            bail!(
                "memory bank state `ptr` = {p} is outside [0, {})",
                self.size()
            );
        }
        tch::no_grad(|| {
            self.bank
                .copy_(&bank.to_device(self.bank.device()).to_kind(self.bank.kind()))
        });
        self.ptr = p;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        (0..t.size()[0])
            .map(|i| Vec::<f32>::try_from(t.get(i)).unwrap())
            .collect()
    }

    #[test]
    fn init_is_seeded_and_unit_norm() {
        let a = MemoryBank::new(16, 8, 3, Device::Cpu).unwrap();
        let b = MemoryBank::new(16, 8, 3, Device::Cpu).unwrap();
        let c = MemoryBank::new(16, 8, 4, Device::Cpu).unwrap();
        assert!(a.features().equal(b.features()));
        assert!(!a.features().equal(c.features()));
        let norms = Vec::<f32>::try_from(a.features().norm_scalaropt_dim(2, [1], false)).unwrap();
        for n in norms {
            assert!((n - 1.0).abs() < 1e-5, "{n}");
        }
        assert!(MemoryBank::new(0, 8, 0, Device::Cpu).is_err());
    }

    #[test]
    fn fifo_eviction_with_wrap_around() {
        // size 5, batches of 2 (not dividing 5): rows carry their insertion number
        let mut bank = MemoryBank::new(5, 2, 0, Device::Cpu).unwrap();
        let batch = |start: i64| {
            Tensor::arange_start(start, start + 2, (Kind::Float, Device::Cpu))
                .view([2, 1])
                .repeat([1, 2])
        };
        bank.push(&batch(1)).unwrap(); // 1 2 . . .
        bank.push(&batch(3)).unwrap(); // 1 2 3 4 .
        assert_eq!(bank.pointer(), 4);
        bank.push(&batch(5)).unwrap(); // 6 2 3 4 5 (wraps: 1, the oldest, is evicted)
        assert_eq!(bank.pointer(), 1);
        let got: Vec<f32> = rows(bank.features()).iter().map(|r| r[0]).collect();
        assert_eq!(got, vec![6.0, 2.0, 3.0, 4.0, 5.0]);
        bank.push(&batch(7)).unwrap(); // 6 7 8 4 5 (2 and 3 evicted next)
        let got: Vec<f32> = rows(bank.features()).iter().map(|r| r[0]).collect();
        assert_eq!(got, vec![6.0, 7.0, 8.0, 4.0, 5.0]);
        assert_eq!(bank.pointer(), 3);
        // a batch bigger than the bank keeps its newest 5 rows, in FIFO position
        let big = Tensor::arange_start(10, 17, (Kind::Float, Device::Cpu))
            .view([7, 1])
            .repeat([1, 2]); // 10..=16
        bank.push(&big).unwrap();
        // as if pushed one by one from ptr 3: 10→3 11→4 12→0 13→1 14→2 15→3 16→4
        let got: Vec<f32> = rows(bank.features()).iter().map(|r| r[0]).collect();
        assert_eq!(got, vec![12.0, 13.0, 14.0, 15.0, 16.0]);
        assert_eq!(bank.pointer(), 0);
        // pushed rows are detached
        let g = Tensor::ones([1, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        bank.push(&(&g * 2.0)).unwrap();
        assert!(!bank.features().requires_grad());
        assert!(bank
            .push(&Tensor::ones([1, 3], (Kind::Float, Device::Cpu)))
            .is_err());
    }

    #[test]
    fn nearest_is_the_true_cosine_neighbour() {
        let _g = crate::testing::global_rng_lock();
        tch::manual_seed(11);
        let mut bank = MemoryBank::new(64, 6, 1, Device::Cpu).unwrap();
        // non-unit rows: cosine, not dot product, must decide
        let keys = Tensor::randn([64, 6], (Kind::Float, Device::Cpu))
            * Tensor::rand([64, 1], (Kind::Float, Device::Cpu)).g_mul_scalar(5.0);
        bank.push(&keys).unwrap();
        let q = Tensor::randn([9, 6], (Kind::Float, Device::Cpu));
        let nn = bank.nearest(&q).unwrap();
        let idx = Vec::<i64>::try_from(bank.nearest_index(&q).unwrap()).unwrap();
        // brute force in f64
        let k = rows(&keys);
        for (i, qi) in rows(&q).iter().enumerate() {
            let cos = |r: &Vec<f32>| {
                let dot: f64 = r.iter().zip(qi).map(|(a, b)| *a as f64 * *b as f64).sum();
                let nr: f64 = r.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
                dot / nr
            };
            let best = (0..64)
                .max_by(|a, b| cos(&k[*a]).partial_cmp(&cos(&k[*b])).unwrap())
                .unwrap();
            assert_eq!(idx[i], best as i64, "query {i}");
            assert_eq!(Vec::<f32>::try_from(nn.get(i as i64)).unwrap(), k[best]);
        }
        assert!(!nn.requires_grad());
    }

    #[test]
    fn state_round_trip() {
        let mut a = MemoryBank::new(6, 3, 0, Device::Cpu).unwrap();
        a.push(&Tensor::ones([4, 3], (Kind::Float, Device::Cpu)))
            .unwrap();
        let mut b = MemoryBank::new(6, 3, 9, Device::Cpu).unwrap();
        b.load_state(&a.state()).unwrap();
        assert!(a.features().equal(b.features()));
        assert_eq!(b.pointer(), 4);
        let mut c = MemoryBank::new(5, 3, 0, Device::Cpu).unwrap();
        let e = c.load_state(&a.state()).unwrap_err().to_string();
        assert!(e.contains("shape"), "{e}");
    }
}
