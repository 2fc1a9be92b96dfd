//! # multinet: MNCLGLF
//!
//! *Multi-network Contrastive Learning Based on Global and Local Representations* (Weiquan Li,
//! Xianzhong Long, Yun Li; arXiv [2306.15930](https://arxiv.org/abs/2306.15930); official code
//! `liweiquan39/MNCLGLF`, built on Fast-MoCo).
//!
//! Three views per image go through an online encoder (ResNet-18 + projector) and a predictor; a
//! separately initialised EMA encoder embeds views 1 and 3, whose nearest neighbours in a FIFO
//! memory bank are the positives of an NT-Xent on the online predictions; and the global
//! prediction of each of views 1/2 must pick out, among the batch, the local representation of
//! the other view (its 2×2 grid cells encoded separately and averaged over every pair).
//!
//! * [`local`]: the grid split and the pair averaging;
//! * [`loss`]: the objective (global-vs-local InfoNCE + weighted NN NT-Xent);
//! * [`model`]: online / EMA encoders and predictor;
//! * [`method`]: one training step (EMA update, bank lookup and enqueue, loss) and
//!   [`method::Multinet`], the `Method` the shared `Trainer` drives (`multinet pretrain`);
//! * [`baseline`]: the plain-SimCLR baseline of the same harness;
//! * [`eval`]: data sets, frozen-feature embeddings, kNN and the linear probe;
//! * [`config`]: the configuration (presets in `configs/`).
//!
//! ```
//! use multinet::local::{combine, local_split};
//! use tch::{Device, Kind, Tensor};
//! # fn main() -> anyhow::Result<()> {
//! let x = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
//! let cells = local_split(&x, 2)?; // [4·8, 3, 16, 16]
//! assert_eq!(cells.size(), vec![32, 3, 16, 16]);
//! let feats = cells.mean_dim([2i64, 3].as_slice(), false, Kind::Float); // stand-in encoder, [32, 3]
//! let pairs = combine(&feats, 4, 2)?; // C(4,2) = 6 pair means per image
//! assert_eq!(pairs.size(), vec![48, 3]);
//! # Ok(())
//! # }
//! ```

pub mod baseline;
pub mod config;
pub mod eval;
pub mod local;
pub mod loss;
pub mod method;
pub mod model;
pub mod report;
