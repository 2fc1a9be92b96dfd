//! `[log]`: logging and checkpoint cadence, the same keys for every method.

use serde::{Deserialize, Serialize};

/// How often a run logs and checkpoints. A checkpoint is also always written at the last step
/// of an invocation (the end of the run or `--stop-at`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Write a `metrics.jsonl` line every this many steps (0: only at the last step).
    pub log_every: u64,
    /// Checkpoint every this many steps (0: off).
    pub checkpoint_every: u64,
    /// Checkpoint at the end of every this many epochs (0: off).
    pub checkpoint_every_epochs: u64,
    /// Checkpoints to keep (older ones are pruned).
    pub keep_checkpoints: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            log_every: 10,
            checkpoint_every: 0,
            checkpoint_every_epochs: 1,
            keep_checkpoints: 2,
        }
    }
}

impl LogConfig {
    /// Whether a checkpoint is due after `done` steps (`per_epoch` steps per epoch).
    pub fn checkpoint_due(&self, done: u64, per_epoch: u64) -> bool {
        (self.checkpoint_every > 0 && done.is_multiple_of(self.checkpoint_every))
            || (self.checkpoint_every_epochs > 0
                && per_epoch > 0
                && done.is_multiple_of(per_epoch)
                && (done / per_epoch).is_multiple_of(self.checkpoint_every_epochs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn cadence_by_steps_and_epochs() {
        let by_epoch = LogConfig::default();
        assert!(!by_epoch.checkpoint_due(5, 10));
        assert!(by_epoch.checkpoint_due(10, 10));
        let by_step = LogConfig {
            checkpoint_every: 3,
            checkpoint_every_epochs: 0,
            ..LogConfig::default()
        };
        assert!(by_step.checkpoint_due(6, 10) && !by_step.checkpoint_due(10, 10));
        let every_2 = LogConfig {
            checkpoint_every_epochs: 2,
            ..LogConfig::default()
        };
        assert!(!every_2.checkpoint_due(10, 10) && every_2.checkpoint_due(20, 10));
        assert!(
            !every_2.checkpoint_due(20, 0),
            "no epochs: no epoch cadence"
        );
    }
}
