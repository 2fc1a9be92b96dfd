//! # fba-net
//!
//! FBA-Net (Chung, Lim, Huang, Marrouche, Hamm; "Foreground and background aware contrastive
//! learning for semi-supervised 3D medical image segmentation", arXiv 2306.15189, MILLanD @
//! MICCAI 2023), following the official code `cys1102/FBA-Net` (built on MC-Net+): the
//! three-decoder **FBA-Net+** of the paper's headline (91.31 Dice on LA with 16 labels), the
//! single-decoder FBA-Net as an option, and a supervised-only V-Net baseline in the same
//! harness.
//!
//! * [`model`]: V-Net encoder + decoders (contrast-core `nn::vnet`) + the contrastive module.
//! * [`loss`]: Dice, mutual consistency with sharpening and ramp-up, SimMax / SimMin.
//! * [`data`]: LA cases, two-stream batches, 3D augmentation (contrast-core `volume`).
//! * [`eval`]: sliding-window inference and Dice / Jaccard / 95HD / ASD per case.
//! * [`method`]: the `impl Method` the shared Trainer runs (step, model selection on the test
//!   set, "last iteration" and "best on test" evaluation, figure) and the step's pieces.
//! * [`report`]: ours beside the paper's LA table.

pub mod config;
pub mod data;
pub mod eval;
pub mod figures;
pub mod loss;
pub mod method;
pub mod model;
pub mod report;

pub use method::FbaNetMethod;
