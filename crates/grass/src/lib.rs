//! # GraSS
//!
//! *Gradient-guided Sampling Strategy for self-supervised remote-sensing segmentation*
//! (Zhang, Ren, Tao, Zhang, Peng, Li; IEEE TGRS 2023, arXiv
//! [2306.15868](https://arxiv.org/abs/2306.15868); official code `GeoX-Lab/GraSS`, a VISSL fork).
//!
//! Stage A is instance discrimination (SimCLR, NT-Xent τ 0.5); stage B, gradient-guided
//! sampling, takes the gradient of the contrastive loss with respect to the layer-4 map,
//! builds a Grad-CAM-like heat map per view, crops each view to the box of the strongest blob
//! above half of the heat map's range, and trains on the crops.
//!
//! * [`raster`]: GDAL raster I/O, tiling, RGB mask → class ids;
//! * [`sampling`]: heat map, threshold, 8-connected components, box, crop;
//! * [`method`]: the two stages as `Method`s of the shared `Trainer` (`Pretrain`: GraSS or the
//!   SimCLR baseline; `Finetune`: DeepLabV3+ and mIoU) and `reproduce` (both, then the table).
pub mod config;
pub mod data;
pub mod deeplab;
pub mod method;
pub mod model;
pub mod overlay;
pub mod raster;
pub mod report;
pub mod sampling;
