//! # spade
//!
//! Spade — "Keep Your Friends Close & Enemies Farther: Debiasing Contrastive Learning with
//! Spatial Priors in 3D Radiology Images" (Zhang et al., arXiv 2211.08643, 2022). Only the
//! abstract is public and there is no official code, so this crate implements the design the
//! abstract describes with every unknown a config value (README: "what is inferred").
//!
//! * [`pretrain`]: crop-based 3-D contrastive pretraining of a V-Net encoder with crop geometry
//!   (`contrast_core::volume::crops`) and the spatially debiased global / local losses
//!   (`contrast_core::spatial_contrast`); `simclr` is the plain 3-D SimCLR baseline in the same
//!   harness.
//! * [`reproduce`]: the four-way comparison — fine-tune a V-Net (FBA-Net's supervised training,
//!   `fba_net::train::train`) from scratch, from 3-D SimCLR, from Spade global and from Spade
//!   global + local, and report test Dice.

pub mod config;
pub mod pretrain;
pub mod reproduce;
