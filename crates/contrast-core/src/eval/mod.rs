//! Evaluation of learned representations.
//!
//! * [`features`]: run a frozen model in evaluation mode (no gradient) over a data set and
//!   collect `[N, D]` features with their labels; always in eval mode, so BatchNorm uses its
//!   running statistics (lightly #1440 evaluated with BN in train mode).
//! * [`knn`]: the weighted k-nearest-neighbour classifier of InstDisc / DINO / solo-learn over a
//!   feature bank.
//! * [`linear`]: the linear probe on frozen features.
//! * [`protocol`]: the frozen-feature protocol (kNN + linear probe) the natural-image methods share.
//! * [`projection`]: PCA to 2-D and the scatter figure of embeddings coloured by class.
//! * [`retrieval`]: hit@k, MRR, mean / median rank (paired or label-match relevance).

pub mod features;
pub mod knn;
pub mod linear;
pub mod miou;
pub mod projection;
pub mod protocol;
pub mod retrieval;
pub mod segmentation;
