//! # spade
//!
//! Spade — "Keep Your Friends Close & Enemies Farther: Debiasing Contrastive Learning with
//! Spatial Priors in 3D Radiology Images" (Zhang et al., arXiv 2211.08643, 2022). Only the
//! abstract is public and there is no official code, so this crate implements the design the
//! abstract describes with every unknown a config value (README: "what is inferred").
//!
//! * [`pretrain`]: the pieces of a pretraining step — crops with their geometry
//!   (`contrast_core::volume::crops`), the V-Net encoder + heads, and the spatially debiased
//!   global / local losses (`contrast_core::spatial_contrast`); `simclr` is the plain 3-D SimCLR
//!   baseline in the same harness.
//! * [`method`]: [`SpadePretrain`], the `impl Method` the shared Trainer runs (per-step crops,
//!   the step's loss, `encoder.safetensors` / `encoder_decoder.safetensors` at the end).
//! * [`reproduce`]: the five-row comparison — fine-tune a V-Net (FBA-Net's supervised training,
//!   `Trainer<fba_net::FbaNetMethod>`) from scratch, from 3-D SimCLR, from Spade global, from
//!   Spade global + local, and from Spade global + local with its decoder, and report test Dice.

pub mod config;
pub mod method;
pub mod pretrain;
pub mod reproduce;

pub use method::SpadePretrain;
