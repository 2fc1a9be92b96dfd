//! # PatchMix
//!
//! *Inter-Instance Similarity Modeling for Contrastive Learning* (Shen, Liu, Tang, Qu, Wang;
//! arXiv [2306.12243](https://arxiv.org/abs/2306.12243); official code `visresearch/patchmix`).
//!
//! PatchMix builds mixed images as mosaics of patches from several images of the batch and
//! trains a ViT so that the similarity between a mixed image and each original (and between two
//! mixed images) matches the share of patches they have in common — soft-target contrastive
//! learning that models inter-instance similarity.
//!
//! * [`mix`]: the patch-level mixer and the soft targets;
//! * [`loss`]: the three-term objective (+ multi-crop terms);
//! * [`model`]: ViT + MoCo-v3 projector/predictor, stop-gradient or momentum key branch;
//! * [`train`]: the network of a config, its data, and one training step's loss terms;
//! * [`eval`]: the kNN / linear-probe evaluation on the class token;
//! * [`figures`]: the mixing figure and the PCA of the test features;
//! * [`method`]: [`PatchMix`], the [`contrast_core::train::Method`] that the shared Trainer
//!   runs (`patchmix pretrain | eval | reproduce | describe`);
//! * [`config`]: the configuration (presets in `configs/`).
//!
//! Using the mixer and the loss from your own loop:
//!
//! ```
//! use contrast_core::loss::InfoNce;
//! use patchmix::loss::{patchmix_loss, LossInputs};
//! use patchmix::mix::PatchMixer;
//! use tch::{Device, Kind, Tensor};
//!
//! # fn main() -> anyhow::Result<()> {
//! let (b, d) = (8, 16);
//! let x1 = Tensor::randn([b, 3, 32, 32], (Kind::Float, Device::Cpu));
//! let x2 = Tensor::randn([b, 3, 32, 32], (Kind::Float, Device::Cpu));
//! let mixer = PatchMixer::new(2, 1.0, 4, 0.0)?; // m = 2 sources, always mix, 4-px patches
//! let m1 = mixer.mix(&x1, b, 0)?;
//! let m2 = mixer.mix(&x2, b, 0)?;
//! // stand-ins for your encoder's outputs on x1, x2, m1.images, m2.images
//! let f = |_x: &Tensor| Tensor::randn([b, d], (Kind::Float, Device::Cpu)).set_requires_grad(true);
//! let (q1, k1, k2, mk1, mq2) = (f(&x1), f(&x1), f(&x2), f(&m1.images), f(&m2.images));
//! // the official source target: the identity smoothed by 0.1
//! let source = patchmix::mix::source_targets(b, b, 0, 0.1, Device::Cpu);
//! let terms = patchmix_loss(
//!     &InfoNce::new(0.2)?,
//!     &LossInputs {
//!         q1: &q1, k1: &k1, k2: &k2, mq2: &mq2, mk1: &mk1,
//!         mix_target: &m2.mix_target, mixmix_target: &m2.mixmix_target,
//!         source: &source, local_q: &[], local_mq: &[],
//!     },
//! )?;
//! terms.total.backward();
//! assert!(q1.grad().defined() && !k1.grad().defined());
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod eval;
pub mod figures;
pub mod loss;
pub mod method;
pub mod mix;
pub mod model;
pub mod report;
pub mod train;

pub use method::PatchMix;
pub use mix::{MixOutput, PatchMixer};
