//! MoCo v2 — *Improved Baselines with Momentum Contrastive Learning*, Chen, Fan, Girshick, He
//! 2020, <https://arxiv.org/abs/2003.04297> (`facebookresearch/moco`, `moco/builder.py`):
//! a query encoder `f_q` (ResNet + MLP head `Linear → ReLU → Linear`), a key encoder `f_k`
//! updated as `θ_k ← m θ_k + (1 − m) θ_q` (initialised as a copy of `f_q`), a FIFO queue of
//! `K` past keys ([`crate::memory::MemoryBank`]) and InfoNCE with τ = 0.2 over
//! `[q·k⁺, q·queue]`.
//!
//! [`moco_multi_positive_loss`] optionally adds, for some queries, extra positive keys (e.g.
//! SPPS semantic partners): the extra key of query `i` is one more column of its logits and
//! the loss averages `−log p` over its positives (SupCon "out" form). With no extra keys it is
//! exactly MoCo's `CE([l_pos, l_neg], 0)`.
//!
//! *Single process*: no shuffle-BN (the official builder refuses to run without several GPUs);
//! each view goes through its encoder as one batch. *Several processes* (torchrun,
//! [`crate::dist`]): shuffle-BN as the official `_batch_shuffle_ddp` / `_batch_unshuffle_ddp`
//! ([`MocoV2Config::shuffle_bn`], on by default): the key views of every rank are gathered, a
//! permutation of the global batch drawn on every rank and rank 0's broadcast, each rank's key
//! encoder runs its slice of the shuffled batch (so its BatchNorm statistics come from other
//! rows than its queries'), and the keys are gathered and un-shuffled back to the rank's own
//! rows. The keys are gathered over the ranks before they are enqueued, as the official
//! `_dequeue_and_enqueue` does, so every rank holds the same queue. With SyncBatchNorm
//! (`runtime.sync_batch_norm`) the statistics are global anyway and nothing is shuffled.
//! Buffers (BN running stats) of the key encoder are averaged like parameters are not: MoCo
//! averages `parameters()` only, buffers stay the key encoder's own ([`BufferPolicy::Keep`]).

use crate::frameworks::simclr::resnet_config;
use crate::loss::normalize;
use crate::memory::MemoryBank;
use crate::nn::heads::{simclr_head, MlpHead};
use crate::nn::resnet::{ResNet, ResNetConfig, Stem};
use crate::optim::{BufferPolicy, Ema};
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

/// MoCo v2 settings (defaults: the paper's ImageNet values; CIFAR ports use a 4096 queue and
/// m = 0.99).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MocoV2Config {
    /// Hidden width of the MLP head (2048).
    pub hidden_dim: i64,
    /// Key / query width (128).
    pub out_dim: i64,
    /// Queue length K (65536).
    pub queue_size: i64,
    /// Key-encoder momentum m (0.999).
    pub momentum: f64,
    /// InfoNCE temperature τ (0.2).
    pub temperature: f64,
    /// Shuffle BatchNorm across the ranks for the key encoder (true, as the official builder
    /// always does). Takes effect on several ranks without SyncBatchNorm; one process has
    /// nothing to shuffle across.
    pub shuffle_bn: bool,
}

impl Default for MocoV2Config {
    fn default() -> Self {
        Self {
            hidden_dim: 2048,
            out_dim: 128,
            queue_size: 65536,
            momentum: 0.999,
            temperature: 0.2,
            shuffle_bn: true,
        }
    }
}

impl MocoV2Config {
    /// Refuse a queue that spans an epoch or more: with `K ≥ N` training images (minus one
    /// batch) every image's own key from the previous epoch is still in the queue when it comes
    /// back, so it is used as one of its own negatives. The official ImageNet setting is
    /// K = 65,536 for N = 1.28 M; CIFAR ports use 4,096 for 50,000.
    pub fn check_queue(&self, train_images: usize, batch_size: usize) -> anyhow::Result<()> {
        let limit = train_images.saturating_sub(batch_size) as i64;
        anyhow::ensure!(
            self.queue_size > 0 && self.queue_size % batch_size as i64 == 0,
            "mocov2.queue_size {} must be a positive multiple of the batch size {batch_size} \
             (the official code asserts K % batch == 0)",
            self.queue_size
        );
        anyhow::ensure!(
            self.queue_size <= limit,
            "mocov2.queue_size {} spans the whole training set ({train_images} images, batch \
             {batch_size}): every image would meet its own key from the previous epoch as a \
             negative. Use a queue well below the data set size (e.g. 4096 for CIFAR-10's \
             50,000, 1024 for a few thousand images)",
            self.queue_size
        );
        Ok(())
    }
}

/// Backbone + MLP head under one VarStore (`backbone.*`, `projector.*`).
pub struct MocoEncoder {
    pub backbone: ResNet,
    pub projector: MlpHead,
}

impl MocoEncoder {
    fn new(vs: &VarStore, rc: &ResNetConfig, cfg: &MocoV2Config) -> Result<Self> {
        let backbone = ResNet::new(vs.root() / "backbone", rc)?;
        let projector = simclr_head(
            vs.root() / "projector",
            backbone.num_features(),
            cfg.hidden_dim,
            cfg.out_dim,
            false,
        )?;
        Ok(Self {
            backbone,
            projector,
        })
    }

    /// Pooled backbone features `[B, F]`.
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.backbone.forward_features(x, train)?.pooled)
    }

    /// L2-normalised embedding `[B, out_dim]`.
    pub fn embed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(normalize(
            &self.projector.forward_t(&self.features(x, train)?, train),
        ))
    }
}

/// MoCo v2: query encoder (trained), key encoder (EMA, frozen), queue.
pub struct MocoV2 {
    pub query_vs: VarStore,
    pub query: MocoEncoder,
    pub key_vs: VarStore,
    pub key: MocoEncoder,
    pub queue: MemoryBank,
    ema: Ema,
    pub cfg: MocoV2Config,
    /// The last step's shuffle-BN permutation of the global batch (rank 0's), if one was drawn.
    pub last_shuffle: Option<Tensor>,
}

impl MocoV2 {
    /// Build on `device` with backbone `rc`; the key encoder starts as a copy of the query
    /// encoder, the queue as normalised Gaussian rows drawn from `seed`.
    pub fn new(rc: &ResNetConfig, cfg: &MocoV2Config, seed: u64, device: Device) -> Result<Self> {
        ensure!(
            cfg.temperature > 0.0,
            "MoCo temperature must be positive, got {}",
            cfg.temperature
        );
        ensure!(
            (0.0..=1.0).contains(&cfg.momentum),
            "MoCo momentum must be in [0, 1], got {}",
            cfg.momentum
        );
        let query_vs = VarStore::new(device);
        let query = MocoEncoder::new(&query_vs, rc, cfg)?;
        let key_vs = VarStore::new(device);
        let key = MocoEncoder::new(&key_vs, rc, cfg)?;
        let mut ema = Ema::new(&key_vs, &query_vs, BufferPolicy::Keep)?;
        ema.init_copy();
        let queue = MemoryBank::new(cfg.queue_size, cfg.out_dim, seed, device)?;
        Ok(Self {
            query_vs,
            query,
            key_vs,
            key,
            queue,
            ema,
            cfg: cfg.clone(),
            last_shuffle: None,
        })
    }

    /// ResNet-18 with the given stem (convenience for tests).
    pub fn resnet18(stem: Stem) -> Result<ResNetConfig> {
        resnet_config("resnet18", stem)
    }

    /// `θ_k ← m θ_k + (1 − m) θ_q` (call before computing the keys of a step, as MoCo).
    pub fn update_key_encoder(&mut self) -> Result<()> {
        self.ema.update(self.cfg.momentum)
    }

    /// Keys of a batch (key encoder, no gradient), normalised.
    pub fn keys(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        tch::no_grad(|| self.key.embed(x, train))
    }

    /// Keys of this rank's `x_k` computed with shuffle-BN across the ranks (the official
    /// `_batch_shuffle_ddp`, key encoder, `_batch_unshuffle_ddp`): every rank's views gathered
    /// in rank order, a permutation of the global batch drawn on every rank and rank 0's
    /// broadcast (as the official code), this rank's slice of the shuffled batch through the
    /// key encoder, the keys gathered and this rank's rows taken back in their own order.
    /// Every rank must hold the same number of rows (the official code assumes it too).
    fn shuffled_keys(
        &mut self,
        d: &crate::dist::Dist,
        x_k: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let b = x_k.size()[0];
        let all = crate::dist::gather(x_k)?;
        let n = all.size()[0];
        ensure!(
            n == b * d.world() as i64,
            "MoCo shuffle-BN needs the same batch on every rank: rank {} holds {b} of {n} rows",
            d.rank()
        );
        let perm = Tensor::randperm(n, (Kind::Int64, x_k.device()));
        d.broadcast(std::slice::from_ref(&perm), 0)?;
        let mine = perm.narrow(0, d.rank() as i64 * b, b);
        let k = self.keys(&all.index_select(0, &mine), train)?;
        let back = perm.argsort(0, false).narrow(0, d.rank() as i64 * b, b);
        let k = crate::dist::gather(&k)?.index_select(0, &back);
        self.last_shuffle = Some(perm);
        Ok(k)
    }

    /// The MoCo v2 loss of `x_q` against keys of `x_k`, plus optional extra positives
    /// `(x_extra [M, …], anchor [M] int64)`: the key of `x_extra[m]` is a positive of query
    /// `anchor[m]`. Enqueues the `x_k` keys (not the extra ones) afterwards. On several ranks
    /// the keys of `x_k` come with shuffle-BN ([`MocoV2Config::shuffle_bn`]); the extra keys
    /// are each rank's own (SPPS has no official code; its partners are not shuffled).
    pub fn loss(
        &mut self,
        x_q: &Tensor,
        x_k: &Tensor,
        extra: Option<(&Tensor, &Tensor)>,
        train: bool,
    ) -> Result<Tensor> {
        let q = self.query.embed(x_q, train)?;
        self.last_shuffle = None;
        let k = match crate::dist::current() {
            Some(d) if train && self.cfg.shuffle_bn && !crate::dist::sync_batch_norm() => {
                self.shuffled_keys(d, x_k, train)?
            }
            _ => self.keys(x_k, train)?,
        };
        let ek = match extra {
            Some((x, a)) => Some((self.keys(x, train)?, a.shallow_clone())),
            None => None,
        };
        // a copy: the loss saves the queue for backward and `push` below writes it in place
        let queue = self.queue.features().copy();
        let l = moco_multi_positive_loss(
            &q,
            &k,
            ek.as_ref().map(|(k, a)| (k, a)),
            &queue,
            self.cfg.temperature,
        )?;
        // the keys of every rank, as the official `_dequeue_and_enqueue` gathers them: the
        // queues of all ranks stay equal (the keys alone in one process)
        self.queue.push(&crate::dist::gather(&k)?)?;
        Ok(l)
    }
}

/// MoCo's InfoNCE with optional extra positives. `q [N, D]`, `k [N, D]`, `queue [K, D]` (all
/// L2-normalised by the caller), `extra = (keys [M, D], anchor [M])`.
///
/// ```text
/// logits_i = [q_i·k_i, q_i·e_m for every m with anchor[m] = i, q_i·queue] / τ
/// L = mean_i  −(1/P_i) Σ_{p ∈ positives(i)} log softmax(logits_i)_p
/// ```
pub fn moco_multi_positive_loss(
    q: &Tensor,
    k: &Tensor,
    extra: Option<(&Tensor, &Tensor)>,
    queue: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    ensure!(
        q.dim() == 2 && q.size() == k.size(),
        "MoCo queries {:?} and keys {:?} must both be [N, D]",
        q.size(),
        k.size()
    );
    let (n, d) = (q.size()[0], q.size()[1]);
    ensure!(
        queue.dim() == 2 && queue.size()[1] == d,
        "MoCo queue {:?} must be [K, {d}]",
        queue.size()
    );
    let dev = q.device();
    let l_pos = (q * k).sum_dim_intlist([1].as_slice(), true, None); // [N, 1]
    let l_neg = q.matmul(&queue.detach().transpose(0, 1)); // [N, K]
    let Some((ek, anchor)) = extra else {
        let logits = Tensor::cat(&[l_pos, l_neg], 1) / temperature;
        let target = Tensor::zeros([n], (Kind::Int64, dev));
        return Ok(logits.cross_entropy_for_logits(&target));
    };
    let m = ek.size()[0];
    ensure!(
        ek.size() == [m, d] && anchor.size() == [m],
        "extra keys {:?} must be [M, {d}] with anchors [M], got anchors {:?}",
        ek.size(),
        anchor.size()
    );
    let mask = anchor
        .to_kind(Kind::Int64)
        .unsqueeze(0)
        .eq_tensor(&Tensor::arange(n, (Kind::Int64, dev)).unsqueeze(1)); // [N, M]
    let l_ext = q
        .matmul(&ek.transpose(0, 1))
        .masked_fill(&mask.logical_not(), f64::NEG_INFINITY);
    let logits = Tensor::cat(&[l_pos, l_ext, l_neg], 1) / temperature; // [N, 1+M+K]
    let kind = logits.kind();
    let w = Tensor::cat(
        &[
            Tensor::ones([n, 1], (kind, dev)),
            mask.to_kind(kind),
            Tensor::zeros([n, queue.size()[0]], (kind, dev)),
        ],
        1,
    );
    let logp = logits.log_softmax(-1, None);
    let logp = logp.masked_fill(&w.eq(0.0), 0.0); // −∞ columns carry no weight
    let per = -(&w * logp).sum_dim_intlist([1].as_slice(), false, None)
        / w.sum_dim_intlist([1].as_slice(), false, None);
    Ok(per.mean(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_extra_is_plain_moco_and_extra_matches_hand_formula() {
        let _g = crate::testing::global_rng_lock();
        tch::manual_seed(1);
        let o = (Kind::Float, Device::Cpu);
        let q = normalize(&Tensor::randn([3, 4], o));
        let k = normalize(&Tensor::randn([3, 4], o));
        let queue = normalize(&Tensor::randn([5, 4], o));
        let t = 0.2;
        let plain = moco_multi_positive_loss(&q, &k, None, &queue, t).unwrap();
        let lp = (&q * &k).sum_dim_intlist([1].as_slice(), true, None);
        let ln = q.matmul(&queue.transpose(0, 1));
        let logits = Tensor::cat(&[lp.shallow_clone(), ln.shallow_clone()], 1) / t;
        let want = -logits.log_softmax(-1, None).select(1, 0).mean(None);
        assert!((plain.double_value(&[]) - want.double_value(&[])).abs() < 1e-6);
        // an empty extra set gives the same value
        let e = Tensor::zeros([0, 4], o);
        let a = Tensor::zeros([0], (Kind::Int64, Device::Cpu));
        let same = moco_multi_positive_loss(&q, &k, Some((&e, &a)), &queue, t).unwrap();
        assert!((same.double_value(&[]) - want.double_value(&[])).abs() < 1e-6);
        // one extra positive for query 1: its row averages −log p over two positives
        let e = normalize(&Tensor::randn([1, 4], o));
        let a = Tensor::from_slice(&[1i64]);
        let got = moco_multi_positive_loss(&q, &k, Some((&e, &a)), &queue, t).unwrap();
        let mut rows = Vec::new();
        for i in 0..3i64 {
            let qi = q.get(i);
            let pos = (&qi * k.get(i)).sum(None).double_value(&[]) / t;
            let neg: Vec<f64> = (0..5)
                .map(|j| (&qi * queue.get(j)).sum(None).double_value(&[]) / t)
                .collect();
            let mut all = vec![pos];
            let ext = (&qi * e.get(0)).sum(None).double_value(&[]) / t;
            if i == 1 {
                all.push(ext);
            }
            all.extend(&neg);
            let lse = all.iter().map(|x| x.exp()).sum::<f64>().ln();
            rows.push(if i == 1 {
                -((pos - lse) + (ext - lse)) / 2.0
            } else {
                -(pos - lse)
            });
        }
        let want = rows.iter().sum::<f64>() / 3.0;
        assert!(
            (got.double_value(&[]) - want).abs() < 1e-5,
            "{got:?} vs {want}"
        );
    }

    #[test]
    fn key_encoder_starts_as_copy_and_queue_advances() {
        let _g = crate::testing::global_rng_lock();
        tch::manual_seed(2);
        let mut rc = MocoV2::resnet18(Stem::Cifar).unwrap();
        rc.layers = [1, 1, 1, 1];
        let cfg = MocoV2Config {
            hidden_dim: 16,
            out_dim: 8,
            queue_size: 8,
            momentum: 0.99,
            temperature: 0.2,
            shuffle_bn: true,
        };
        let mut m = MocoV2::new(&rc, &cfg, 0, Device::Cpu).unwrap();
        let x = Tensor::randn([4, 3, 16, 16], (Kind::Float, Device::Cpu));
        let q = tch::no_grad(|| m.query.embed(&x, false)).unwrap();
        let k = m.keys(&x, false).unwrap();
        assert!(q.allclose(&k, 1e-6, 1e-6, false));
        let l = m.loss(&x, &x, None, true).unwrap();
        l.backward();
        assert_eq!(m.queue.pointer(), 4);
        assert!(l.double_value(&[]).is_finite());
    }
}

#[cfg(test)]
mod queue_tests {
    use super::MocoV2Config;

    #[test]
    fn a_queue_spanning_an_epoch_is_refused_with_the_sizes_named() {
        let c = MocoV2Config::default(); // K = 65,536
        let e = c.check_queue(50_000, 512).unwrap_err().to_string();
        assert!(e.contains("65536") && e.contains("50000"), "{e}");
        c.check_queue(1_281_167, 256).unwrap(); // ImageNet
        let small = MocoV2Config {
            queue_size: 4096,
            ..c.clone()
        };
        small.check_queue(50_000, 512).unwrap();
        // K + batch must stay below N, and K a multiple of the batch (official assert)
        assert!(small.check_queue(4_500, 512).is_err());
        assert!(small.check_queue(50_000, 500).is_err());
    }
}
