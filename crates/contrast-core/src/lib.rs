//! # contrast-core
//!
//! The shared floor of the `contrast` workspace: what two or more of the seven re-implemented
//! contrastive-learning methods share. A method crate composes these blocks; it never
//! re-implements one.
//!
//! * [`train`]: the run harness — device and threads, seeding, TOML configs with command-line
//!   overrides, run directories, atomic checkpoints with bit-exact resume, metrics logging with a
//!   progress bar, and the NaN/Inf guard.
//! * [`optim`]: optimisers whose state can be checkpointed.
//! * [`loss`]: contrastive objectives.

pub mod data;
pub mod loss;
pub mod optim;
pub mod tensors;
pub mod testing;
pub mod train;
