//! The typed `report.json` every run writes: [`RunReport`] (written by the Trainer of
//! `contrast-core`, read by the page, `compare` and the seed summaries here).
//!
//! The common fields are typed; a method's own results (kNN per k, the linear probe, per-case
//! Dice, retrieval tables) sit beside them at top level and land in [`RunReport::details`].
//! `schema` is the version of this layout; a report without a field that is required here fails
//! to load with a message naming the field and the file.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// A run's headline: the metric the method is compared on and its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Headline {
    pub metric: String,
    pub value: Option<f64>,
}

/// `report.json`, version [`RunReport::SCHEMA`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Layout version of this file.
    pub schema: u32,
    /// The method crate (`patchmix`, `fba-net`, …).
    pub method: String,
    /// What this config trains (the method or its baseline).
    pub variant: String,
    /// The headline metric and its value (`null` when the run has none, e.g. pretraining only).
    pub metric: String,
    pub value: Option<f64>,
    /// The paper's numbers for this preset.
    #[serde(default)]
    pub paper: Value,
    pub data: String,
    pub model: String,
    /// Epochs, for methods that train by epochs.
    pub epochs: Option<u64>,
    pub steps: u64,
    /// Samples per optimisation step.
    pub batch_size: u64,
    /// `cpu`, `cuda:0`, …
    pub device: String,
    /// `fp32` or `bf16 autocast`.
    pub precision: String,
    pub threads: i32,
    pub seed: u64,
    /// Wall time to the end of training (including the data set's loading), and in total.
    pub train_wall_s: f64,
    pub wall_s: f64,
    /// Training samples per second of step time (this invocation's steps).
    pub samples_per_s: f64,
    /// The source commit: `$CONTRAST_COMMIT` when set (the GPU bundles set it to the commit
    /// they were built from), else `git rev-parse --short HEAD` of the crate's checkout when the
    /// run started (a binary built from an older tree reports the newer HEAD).
    pub commit: Option<String>,
    /// The method's own results.
    #[serde(flatten)]
    pub details: serde_json::Map<String, Value>,
}

impl RunReport {
    pub const SCHEMA: u32 = 1;

    /// Parse a report, naming the missing or malformed field.
    pub fn from_value(v: Value) -> Result<Self> {
        serde_json::from_value(v).map_err(|e| {
            anyhow::anyhow!(
                "not a report of schema {} ({e}); it was written by an older contrast: rerun it",
                Self::SCHEMA
            )
        })
    }

    /// Read `path` (a `report.json`).
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Self::from_value(v).with_context(|| format!("loading {}", path.display()))
    }

    /// A detail field by key.
    pub fn detail(&self, key: &str) -> &Value {
        self.details.get(key).unwrap_or(&Value::Null)
    }
}

/// The comparison of a run with its baseline as a markdown table: variant, headline, the
/// paper's numbers, steps, wall time.
pub fn table(ours: &RunReport, baseline: Option<&RunReport>) -> String {
    let mut t = format!(
        "| variant | {} | paper | steps | wall s |\n|---|---|---|---|---|\n",
        ours.metric
    );
    for r in std::iter::once(ours).chain(baseline) {
        t += &format!(
            "| {} | {} | {} | {} | {:.0} |\n",
            r.variant,
            r.value.map_or("—".into(), |v| format!("{v:.2}")),
            if r.paper.is_null() {
                "—".into()
            } else {
                r.paper.to_string()
            },
            r.steps,
            r.wall_s
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> RunReport {
        let mut details = serde_json::Map::new();
        details.insert("knn".into(), json!([{"k": 20, "top1": 31.5}]));
        RunReport {
            schema: RunReport::SCHEMA,
            method: "toy".into(),
            variant: "toy".into(),
            metric: "accuracy".into(),
            value: Some(0.5),
            paper: Value::Null,
            data: "d".into(),
            model: "m".into(),
            epochs: None,
            steps: 3,
            batch_size: 4,
            device: "cpu".into(),
            precision: "fp32".into(),
            threads: 2,
            seed: 0,
            train_wall_s: 1.0,
            wall_s: 2.0,
            samples_per_s: 12.0,
            commit: None,
            details,
        }
    }

    #[test]
    fn round_trips_with_details_at_top_level() {
        let r = sample();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["knn"][0]["top1"], json!(31.5), "details sit at top level");
        assert_eq!(RunReport::from_value(v).unwrap(), r);
    }

    #[test]
    fn an_old_report_names_the_missing_field() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("schema");
        let e = format!("{:#}", RunReport::from_value(v).unwrap_err());
        assert!(e.contains("missing field `schema`"), "{e}");
    }
}
