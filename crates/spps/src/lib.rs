//! # spps: semantic positive pairs
//!
//! *Semantic Positive Pairs for Enhancing Contrastive Instance Discrimination* (Alkhalefi,
//! Leontidis, Zhong; arXiv [2306.16122](https://arxiv.org/abs/2306.16122); no public code).
//! A semantic sampler — a frozen pretrained self-supervised model plus cosine similarity —
//! picks pairs of semantically similar images from the un-augmented training set before
//! training; during training an anchor with a partner gets `(aug(x_i), aug(x_j))` as an extra
//! positive in a multi-positive InfoNCE, on top of SimCLR or MoCo-v2.
//!
//! * [`sampler`]: exact blocked cosine kNN and the pair rules (threshold / top-k / mutual);
//! * [`loss`]: the multi-positive NT-Xent (MoCo-v2's lives in core `frameworks::mocov2`);
//! * [`model`]: the SimCLR / MoCo-v2 networks, their losses taking partner views;
//! * [`method`]: the core `Method` impl (pretraining with per-epoch pair diagnostics, kNN /
//!   linear evaluation; the loop is core's `Trainer`);
//! * [`train`]: data sets and views, the partner picker, optimiser and schedule, the sampler pass;
//! * [`report`]: the side-by-side table;
//! * [`config`]: the configuration (presets in `configs/`).
//!
//! ```
//! use spps::config::SamplerConfig;
//! use spps::sampler::select_pairs;
//! use tch::Tensor;
//! # fn main() -> anyhow::Result<()> {
//! let emb = Tensor::from_slice(&[1.0f32, 0.0, 0.9, 0.1, 0.0, 1.0]).view([3, 2]);
//! let cfg = SamplerConfig { top_k: 1, ..SamplerConfig::default() };
//! let pairs = select_pairs(&emb, &cfg)?;
//! assert_eq!((pairs[0].i, pairs[0].j), (0, 1));
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod loss;
pub mod method;
pub mod model;
pub mod report;
pub mod sampler;
pub mod train;
