//! The run harness every method uses (solo-learn style: one harness, method code is only the
//! step and the loss).
//!
//! A run is a folder `runs/<method>/<run-name>/` holding
//! * `config.toml` — the resolved configuration (defaults ⊕ preset file ⊕ `key.path=value`
//!   overrides), see [`config`];
//! * `metrics.jsonl` — one JSON object per logged step, see [`metrics`];
//! * `checkpoints/step-NNNNNNNN/` — weights, optimiser state, step, schedule position and RNG
//!   state, written atomically, see [`checkpoint`];
//! * `report.json` — the final result, written atomically.
//!
//! Randomness is counter-based: before every step the harness reseeds libtorch's generators from
//! `(run seed, step)` ([`runtime::step_seed`]), so a run's RNG state *is* its step counter and
//! `--resume` continues bit-exactly on CPU.

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod example;
pub mod fault;
pub mod guard;
pub mod log;
pub mod metrics;
pub mod report;
pub mod run;
pub mod runtime;
pub mod trainer;

pub use checkpoint::{Checkpoint, Checkpointer};
pub use cli::{EvalArgs, RunArgs};
pub use config::{load_config, ConfigSource};
pub use guard::check_finite;
pub use log::LogConfig;
pub use metrics::{MetricsLog, Progress};
pub use report::{Headline, RunReport};
pub use run::{Run, RunOptions};
pub use runtime::{derive_seed, keep_freed_memory, parse_device, step_seed, RuntimeConfig};
pub use trainer::{
    Batches, Distributed, Evaluation, Length, Losses, Method, Monitor, Optimization, Outcome,
    PerStep, Preset, RunCtx, StepCtx, Trainer,
};
