//! Base self-supervised frameworks that several methods build on or use as their baseline, as
//! thin compositions of the core blocks (backbone, head, loss).
//!
//! * [`simclr`]: SimCLR (Chen et al. 2020): a ResNet, an MLP projection head and NT-Xent over two
//!   augmented views. Baseline of SPPS, MNCLGLF (multinet) and GraSS; GraSS's warm-up stage.

pub mod mocov2;
pub mod simclr;

pub use simclr::{resnet_config, SimClr, SimClrConfig};
