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
//! * [`mix`]: the patch-level mixer and the soft targets.

pub mod mix;

pub use mix::{MixOutput, PatchMixer};
