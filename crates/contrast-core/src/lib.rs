//! # contrast-core
//!
//! The shared floor of the `contrast` workspace: what two or more of the seven re-implemented
//! contrastive-learning methods share. A method crate composes these blocks; it never
//! re-implements one.
//!
//! * [`train`]: the one training harness — the [`train::Method`] trait (what a paper adds) and
//!   the [`train::Trainer`] that runs every method (device and threads, seeding, TOML configs with
//!   command-line overrides, run directories, schedules, bf16 autocast on CUDA, the NaN/Inf
//!   guard, metrics logging with a progress bar, atomic checkpoints with bit-exact resume,
//!   evaluation, figures and the typed [`train::RunReport`]), and the shared command line
//!   ([`train::cli`]); [`train::example`] is a complete minimal method.
//! * [`optim`]: optimisers whose state can be checkpointed.
//! * [`loss`]: contrastive objectives.
//! * [`nn`]: backbones (ViT, ResNet) and MLP heads with PyTorch parameter names.
//! * [`eval`]: feature extraction, the weighted kNN classifier and the linear probe.
//! * [`data`]: data sets, loaders and the parallel augmentation pipeline.

pub mod autocast;
pub mod data;
pub mod dist;
pub mod eval;
pub mod frameworks;
pub mod loss;
pub mod memory;
pub mod nn;
pub mod optim;
pub mod spatial_contrast;
pub mod tensors;
pub mod testing;
pub mod train;
pub mod volume;
