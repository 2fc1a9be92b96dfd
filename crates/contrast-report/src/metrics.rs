//! `metrics.jsonl` → chart series. Every line is one JSON object with a `step` and numeric
//! fields (the run harness's `MetricsLog`); non-numeric fields are ignored.

use crate::plot::LineChart;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// One line of `metrics.jsonl`: the step and its numeric fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub step: f64,
    pub values: BTreeMap<String, f64>,
}

/// Read a metrics file. A run still writing may leave a half-written *last* line: it is
/// skipped. A malformed line elsewhere is an error naming the file and line.
pub fn read_metrics(path: &Path) -> Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break, // being written
            Err(e) => bail!("{} line {}: not JSON ({e})", path.display(), i + 1),
        };
        let Some(obj) = v.as_object() else {
            bail!("{} line {}: not a JSON object", path.display(), i + 1)
        };
        let Some(step) = obj.get("step").and_then(|s| s.as_f64()) else {
            bail!("{} line {}: no numeric `step`", path.display(), i + 1)
        };
        let values = obj
            .iter()
            .filter(|(k, _)| k.as_str() != "step")
            .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
            .filter(|(_, x)| x.is_finite())
            .collect();
        out.push(Record { step, values });
    }
    Ok(out)
}

/// Which chart a metrics field belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// Loss terms (everything not otherwise classified).
    Loss,
    /// Learning rate(s).
    LearningRate,
    /// Other schedules: weight decay, EMA momentum, logit scale, ramp-up weights.
    Schedule,
    /// Evaluation during training: kNN / linear accuracy, Dice, mIoU, hit@k, precision.
    Evaluation,
    /// What the step measured besides its loss: gradient norm, semantic pairs per batch.
    Diagnostic,
    /// Bookkeeping, not plotted (epoch, elapsed time).
    Ignored,
}

/// The family of a field name (conventions of the method crates' metrics).
pub fn family(key: &str) -> Family {
    let k = key.to_ascii_lowercase();
    const IGNORED: &[&str] = &[
        "epoch",
        "elapsed_s",
        "iter",
        "samples_per_s",
        "time_s",
        "s_per_iter",
        "s_per_step",
    ];
    const DIAGNOSTIC: &[&str] = &["grad_norm", "semantic_pairs"];
    const SCHEDULE: &[&str] = &[
        "wd",
        "weight_decay",
        "ema_momentum",
        "momentum",
        "logit_scale",
        "temperature",
        "consistency_weight",
        "rampup",
    ];
    const EVAL_PREFIX: &[&str] = &[
        "knn",
        "linear",
        "val_",
        "test_",
        "dice",
        "jaccard",
        "miou",
        "iou",
        "hit",
        "mrr",
        "acc",
        "top1",
        "top5",
        "precision",
        "hd95",
        "asd",
    ];
    if IGNORED.contains(&k.as_str()) {
        Family::Ignored
    } else if k == "lr" || k.starts_with("lr_") || k.ends_with("_lr") {
        Family::LearningRate
    } else if SCHEDULE.contains(&k.as_str()) {
        Family::Schedule
    } else if DIAGNOSTIC.contains(&k.as_str()) || k.ends_with("grad_norm") {
        Family::Diagnostic
    } else if EVAL_PREFIX.iter().any(|p| k.starts_with(p)) {
        Family::Evaluation
    } else {
        Family::Loss
    }
}

/// The series of a family, by field name: `(step, value)` in file order. Series that are zero
/// at every step (terms switched off in this run) are dropped.
pub fn series(records: &[Record], fam: Family) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in records {
        for (k, v) in &r.values {
            if family(k) == fam {
                out.entry(k.clone()).or_default().push((r.step, *v));
            }
        }
    }
    out.retain(|_, pts| pts.iter().any(|p| p.1 != 0.0));
    out
}

/// The charts of a run: `(file stem, chart)` for each family that has data.
pub fn charts(records: &[Record], title: &str) -> Vec<(String, LineChart)> {
    let spec = [
        (Family::Loss, "loss", "training loss", "loss"),
        (Family::LearningRate, "lr", "learning rate", "lr"),
        (Family::Schedule, "schedules", "schedules", "value"),
        (
            Family::Evaluation,
            "eval",
            "evaluation during training",
            "metric",
        ),
        (Family::Diagnostic, "diagnostics", "diagnostics", "value"),
    ];
    spec.iter()
        .filter_map(|(fam, stem, what, y)| {
            let s = series(records, *fam);
            (!s.is_empty()).then(|| {
                (
                    stem.to_string(),
                    LineChart {
                        title: format!("{title}: {what}"),
                        x_label: "step".into(),
                        y_label: y.to_string(),
                        series: s.into_iter().collect(),
                    },
                )
            })
        })
        .collect()
}

/// The median of `v` (sorted in place; the mean of the two middle values for an even count,
/// NaN for none): the statistic the benches report over rounds and steps.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
