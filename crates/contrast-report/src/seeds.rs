//! Method vs baseline over several seeds: mean ± standard deviation per side, the paired
//! difference with a 95 % confidence interval (Student's t over the seeds), and a verdict that is
//! computed from the interval, never written by hand: `better` (the interval lies above 0),
//! `worse` (below 0) or `within noise` (it contains 0; also with a single seed, where no
//! interval exists).
//!
//! `cargo xtask reproduce <method> --seeds N` writes one `<runs>/<method>/<preset>-seeds.json`
//! ([`SeedSummary`]); the report page shows them first, one row per method.

use crate::run_report::RunReport;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Two-sided 97.5 % quantiles of Student's t for 1–30 degrees of freedom (scipy
/// `t.ppf(0.975, df)`), then the normal value for larger samples.
const T975: [f64; 30] = [
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157,
    2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922,
    2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831,
    2.048407, 2.045230, 2.042272,
];

/// `t.ppf(0.975, df)` (df ≥ 1).
pub fn t975(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T975[df - 1],
        _ => 1.959964,
    }
}

/// Mean and sample standard deviation (n − 1; 0 for one value).
pub fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (m, 0.0);
    }
    let v = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, v.sqrt())
}

/// The verdict of a paired comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Better,
    Worse,
    WithinNoise,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::WithinNoise => "within noise",
        }
    }
}

/// One seed's pair of headline values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedPair {
    pub seed: u64,
    pub ours: f64,
    pub baseline: f64,
    /// The two run folders (relative to the runs root).
    pub runs: [String; 2],
}

/// Mean ± sd per side, the paired difference with its 95 % interval and the verdict, for one
/// metric over the seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    pub name: String,
    pub higher_is_better: bool,
    /// Seeds (pairs) it was computed over.
    pub n: usize,
    pub ours_mean: f64,
    pub ours_sd: f64,
    pub baseline_mean: f64,
    pub baseline_sd: f64,
    /// Mean paired difference ours − baseline and the half-width of its 95 % interval
    /// (`None` with one seed).
    pub delta_mean: f64,
    pub delta_ci95: Option<f64>,
    pub verdict: Verdict,
}

impl MetricSummary {
    /// Summarise `(ours, baseline)` pairs, one per seed (at least one).
    pub fn new(name: &str, higher_is_better: bool, pairs: &[(f64, f64)]) -> Result<Self> {
        ensure!(!pairs.is_empty(), "no seed finished: nothing to summarise");
        let ours: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        let base: Vec<f64> = pairs.iter().map(|p| p.1).collect();
        let d: Vec<f64> = pairs.iter().map(|p| p.0 - p.1).collect();
        let (om, osd) = mean_sd(&ours);
        let (bm, bsd) = mean_sd(&base);
        let (dm, dsd) = mean_sd(&d);
        let n = d.len();
        let ci = (n >= 2).then(|| t975(n - 1) * dsd / (n as f64).sqrt());
        Ok(Self {
            name: name.into(),
            higher_is_better,
            n,
            ours_mean: om,
            ours_sd: osd,
            baseline_mean: bm,
            baseline_sd: bsd,
            delta_mean: dm,
            delta_ci95: ci,
            verdict: verdict(dm, ci, higher_is_better),
        })
    }
}

/// The verdict of a mean difference `delta` with 95 % half-width `half`: better / worse when
/// the interval excludes 0 (in the metric's good direction / the other), within noise when it
/// contains 0 or does not exist (one seed).
pub fn verdict(delta: f64, half: Option<f64>, higher_is_better: bool) -> Verdict {
    match half {
        Some(h) if delta - h > 0.0 => {
            if higher_is_better {
                Verdict::Better
            } else {
                Verdict::Worse
            }
        }
        Some(h) if delta + h < 0.0 => {
            if higher_is_better {
                Verdict::Worse
            } else {
                Verdict::Better
            }
        }
        _ => Verdict::WithinNoise,
    }
}

/// What `--seeds N` measured for one method and preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedSummary {
    pub method: String,
    pub preset: String,
    /// The headline metric (`report.json` `metric` of the method's run).
    pub metric: String,
    /// Higher is better for this metric (all headline metrics here: accuracy, Dice, mIoU).
    pub higher_is_better: bool,
    pub pairs: Vec<SeedPair>,
    pub ours_mean: f64,
    pub ours_sd: f64,
    pub baseline_mean: f64,
    pub baseline_sd: f64,
    /// Mean paired difference ours − baseline and the half-width of its 95 % interval
    /// (`None` with one seed).
    pub delta_mean: f64,
    pub delta_ci95: Option<f64>,
    pub verdict: Verdict,
    /// How the interval was computed (shown on the page).
    pub method_note: String,
    /// The same summary for the other results the runs report (kNN per k, the linear probe's
    /// last and best epoch, Dice / HD95 means, per-class IoU…; see [`report_metrics`]). Empty
    /// in summaries written before it existed.
    #[serde(default)]
    pub metrics: Vec<MetricSummary>,
}

impl SeedSummary {
    /// Summarise the pairs (at least one).
    pub fn new(
        method: &str,
        preset: &str,
        metric: &str,
        higher_is_better: bool,
        pairs: Vec<SeedPair>,
    ) -> Result<Self> {
        let values: Vec<(f64, f64)> = pairs.iter().map(|p| (p.ours, p.baseline)).collect();
        let m = MetricSummary::new(metric, higher_is_better, &values)?;
        let n = m.n;
        Ok(Self {
            method: method.into(),
            preset: preset.into(),
            metric: metric.into(),
            higher_is_better,
            pairs,
            ours_mean: m.ours_mean,
            ours_sd: m.ours_sd,
            baseline_mean: m.baseline_mean,
            baseline_sd: m.baseline_sd,
            delta_mean: m.delta_mean,
            delta_ci95: m.delta_ci95,
            verdict: m.verdict,
            method_note: format!(
                "paired over {n} seed(s): mean difference ± t(0.975, {}) · sd / √{n}{}",
                n.saturating_sub(1),
                if n < 2 {
                    " (one seed: no interval, no verdict)"
                } else {
                    ""
                }
            ),
            metrics: Vec::new(),
        })
    }

    /// The headline as a [`MetricSummary`].
    pub fn headline(&self) -> MetricSummary {
        MetricSummary {
            name: self.metric.clone(),
            higher_is_better: self.higher_is_better,
            n: self.pairs.len(),
            ours_mean: self.ours_mean,
            ours_sd: self.ours_sd,
            baseline_mean: self.baseline_mean,
            baseline_sd: self.baseline_sd,
            delta_mean: self.delta_mean,
            delta_ci95: self.delta_ci95,
            verdict: self.verdict,
        }
    }

    /// Fill [`SeedSummary::metrics`] from the runs' reports, `(ours, baseline)` per seed in the
    /// order of `pairs`.
    pub fn with_metrics(mut self, runs: &[(RunReport, RunReport)]) -> Self {
        self.metrics = secondary_summaries(runs);
        self
    }

    /// `Δ ± h` as text, rounded for the metric ([`crate::format::Unit`]).
    pub fn delta_text(&self) -> String {
        let u = crate::format::Unit::of(&self.metric);
        let t = u.fmt_delta(self.delta_mean, self.delta_ci95, self.ours_mean);
        match self.delta_ci95 {
            Some(_) => t,
            None => t + " (one seed)",
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a seed summary", path.display()))
    }
}

/// Every `<runs_root>/<method>/*-seeds.json`, sorted by path.
pub fn collect(runs_root: &Path) -> Result<Vec<SeedSummary>> {
    let mut paths = Vec::new();
    let Ok(methods) = std::fs::read_dir(runs_root) else {
        return Ok(vec![]);
    };
    for m in methods.flatten() {
        let Ok(files) = std::fs::read_dir(m.path()) else {
            continue;
        };
        for f in files.flatten() {
            let p = f.path();
            if p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with("-seeds.json"))
            {
                paths.push(p);
            }
        }
    }
    paths.sort();
    paths.iter().map(|p| SeedSummary::read(p)).collect()
}

/// One result of a run, as the page and `--seeds` read it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    pub name: String,
    pub value: f64,
    pub higher_is_better: bool,
}

/// A run's results: the headline (`metric`, `value`) first, then what the page recognises among
/// the method's own fields — `knn` (`[{k, top1}]`), `linear` (`{last,best}_top{1,5}`),
/// `last_iteration.mean` (Dice, Jaccard, HD95, ASD), `overall_accuracy`, `per_class_iou`
/// (`[{class, iou}]`) and `results` (`[{mode, metrics: {mrr, hits: [[k, v]]}}]`). A method
/// that reports something else has only its headline summarised (a typed map of results in
/// `report.json` would end this list).
pub fn report_metrics(r: &RunReport) -> Vec<MetricValue> {
    let mut out = Vec::new();
    let mut push = |name: String, v: Option<f64>, hib: bool| {
        if let Some(value) = v.filter(|x| x.is_finite()) {
            out.push(MetricValue {
                name,
                value,
                higher_is_better: hib,
            });
        }
    };
    push(r.metric.clone(), r.value, true);
    for e in r.detail("knn").as_array().into_iter().flatten() {
        if let Some(k) = e["k"].as_i64() {
            push(format!("kNN top-1 %, k = {k}"), e["top1"].as_f64(), true);
        }
    }
    let lin = r.detail("linear");
    for (key, name) in [
        ("last_top1", "linear top-1 %, last epoch"),
        ("best_top1", "linear top-1 %, best epoch"),
        ("last_top5", "linear top-5 %, last epoch"),
        ("best_top5", "linear top-5 %, best epoch"),
    ] {
        push(name.into(), lin[key].as_f64(), true);
    }
    let mean = &r.detail("last_iteration")["mean"];
    for (key, name, hib) in [
        ("dice", "Dice % (mean over cases)", true),
        ("jaccard", "Jaccard % (mean over cases)", true),
        ("hd95", "HD95 (mean over cases; lower is better)", false),
        ("asd", "ASD (mean over cases; lower is better)", false),
    ] {
        push(name.into(), mean[key].as_f64(), hib);
    }
    push(
        "overall accuracy %".into(),
        r.detail("overall_accuracy").as_f64(),
        true,
    );
    for e in r.detail("per_class_iou").as_array().into_iter().flatten() {
        if let Some(c) = e["class"].as_str() {
            push(format!("IoU % {c}"), e["iou"].as_f64(), true);
        }
    }
    for e in r.detail("results").as_array().into_iter().flatten() {
        let mode = e["mode"].as_str().unwrap_or("?");
        let m = &e["metrics"];
        push(format!("MRR ({mode})"), m["mrr"].as_f64(), true);
        for h in m["hits"].as_array().into_iter().flatten() {
            if let (Some(k), Some(v)) = (h[0].as_i64(), h[1].as_f64()) {
                push(format!("hit@{k} ({mode})"), Some(v), true);
            }
        }
    }
    out
}

/// [`MetricSummary`] of every non-headline result that every run on both sides reports, in
/// the order of the first run; a result equal to the headline in every run (the headline under
/// another name) is left out.
pub fn secondary_summaries(runs: &[(RunReport, RunReport)]) -> Vec<MetricSummary> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    let per_run: Vec<(Vec<MetricValue>, Vec<MetricValue>)> = runs
        .iter()
        .map(|(o, b)| (report_metrics(o), report_metrics(b)))
        .collect();
    let find = |v: &[MetricValue], name: &str| v.iter().find(|m| m.name == name).map(|m| m.value);
    let mut out = Vec::new();
    for m in report_metrics(&first.0).iter().skip(1) {
        let pairs: Option<Vec<(f64, f64)>> = per_run
            .iter()
            .map(|(o, b)| Some((find(o, &m.name)?, find(b, &m.name)?)))
            .collect();
        let Some(pairs) = pairs else { continue };
        let is_headline = runs
            .iter()
            .zip(&pairs)
            .all(|((o, b), p)| o.value == Some(p.0) && b.value == Some(p.1));
        if is_headline {
            continue;
        }
        if let Ok(s) = MetricSummary::new(&m.name, m.higher_is_better, &pairs) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(d: &[(f64, f64)]) -> Vec<SeedPair> {
        d.iter()
            .enumerate()
            .map(|(i, &(o, b))| SeedPair {
                seed: i as u64,
                ours: o,
                baseline: b,
                runs: ["a".into(), "b".into()],
            })
            .collect()
    }

    /// Reference values from scipy: `stats.t.interval(0.95, 2, loc=2, scale=1/sqrt(3))` =
    /// (−0.484138, 4.484138) for the differences [1, 2, 3].
    #[test]
    fn paired_interval_matches_scipy() {
        let s = SeedSummary::new(
            "m",
            "smoke",
            "kNN top-1",
            true,
            pairs(&[(11.0, 10.0), (12.0, 10.0), (13.0, 10.0)]),
        )
        .unwrap();
        assert!((s.delta_mean - 2.0).abs() < 1e-12);
        assert!((s.delta_ci95.unwrap() - 2.484138).abs() < 1e-5);
        assert_eq!(s.verdict, Verdict::WithinNoise); // the interval contains 0
        assert!((s.ours_mean - 12.0).abs() < 1e-12 && (s.ours_sd - 1.0).abs() < 1e-12);
        assert_eq!(s.delta_text(), "+2.0 ± 2.5");
    }

    #[test]
    fn verdicts_follow_the_interval() {
        let better = SeedSummary::new(
            "m",
            "p",
            "acc",
            true,
            pairs(&[(12.0, 10.0), (12.1, 10.0), (11.9, 10.0)]),
        )
        .unwrap();
        assert_eq!(better.verdict, Verdict::Better);
        let worse = SeedSummary::new(
            "m",
            "p",
            "acc",
            true,
            pairs(&[(8.0, 10.0), (8.1, 10.0), (7.9, 10.0)]),
        )
        .unwrap();
        assert_eq!(worse.verdict, Verdict::Worse);
        // lower is better (e.g. a distance): the same numbers flip
        let lower = SeedSummary::new(
            "m",
            "p",
            "hd95",
            false,
            pairs(&[(8.0, 10.0), (8.1, 10.0), (7.9, 10.0)]),
        )
        .unwrap();
        assert_eq!(lower.verdict, Verdict::Better);
        let one = SeedSummary::new("m", "p", "acc", true, pairs(&[(20.0, 10.0)])).unwrap();
        assert_eq!((one.verdict, one.delta_ci95), (Verdict::WithinNoise, None));
        assert!(SeedSummary::new("m", "p", "acc", true, vec![]).is_err());
        assert_eq!(t975(2), 4.302653);
        assert_eq!(t975(100), 1.959964);
    }

    fn report(value: f64, knn20: f64, hd95: f64, best: f64) -> RunReport {
        let v = serde_json::json!({
            "schema": 1, "method": "m", "variant": "v", "metric": "linear top-1 (best epoch)",
            "value": value, "data": "d", "model": "m", "epochs": 1, "steps": 1, "batch_size": 1,
            "device": "cpu", "precision": "fp32", "threads": 1, "seed": 0, "train_wall_s": 1.0,
            "wall_s": 1.0, "samples_per_s": 1.0, "commit": null,
            "knn": [{"k": 20, "top1": knn20}],
            "linear": {"best_top1": best, "last_top1": best - 1.0},
            "last_iteration": {"mean": {"dice": 40.0, "hd95": hd95}}
        });
        RunReport::from_value(v).unwrap()
    }

    #[test]
    fn every_result_both_sides_report_is_summarised() {
        let names: Vec<String> = report_metrics(&report(30.0, 25.0, 20.0, 30.0))
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            [
                "linear top-1 (best epoch)",
                "kNN top-1 %, k = 20",
                "linear top-1 %, last epoch",
                "linear top-1 %, best epoch",
                "Dice % (mean over cases)",
                "HD95 (mean over cases; lower is better)"
            ]
        );
        // three seeds: HD95 falls clearly (lower is better: "better"), kNN within noise, and
        // the probe's best epoch, which is the headline itself, is not repeated
        let runs = vec![
            (
                report(31.0, 25.0, 10.0, 31.0),
                report(30.0, 26.0, 20.0, 30.0),
            ),
            (
                report(32.0, 27.0, 11.0, 32.0),
                report(30.5, 25.0, 21.0, 30.5),
            ),
            (
                report(31.5, 26.0, 10.5, 31.5),
                report(30.2, 26.5, 20.4, 30.2),
            ),
        ];
        let m = secondary_summaries(&runs);
        let by = |n: &str| m.iter().find(|x| x.name == n).unwrap();
        assert!(m.iter().all(|x| x.name != "linear top-1 %, best epoch"));
        assert_eq!(
            by("HD95 (mean over cases; lower is better)").verdict,
            Verdict::Better
        );
        assert_eq!(by("kNN top-1 %, k = 20").verdict, Verdict::WithinNoise);
        assert_eq!(by("Dice % (mean over cases)").delta_mean, 0.0);
        assert_eq!(by("linear top-1 %, last epoch").n, 3);
        // the summary file keeps them
        let s = SeedSummary::new("m", "p", "linear top-1", true, pairs(&[(31.0, 30.0)]))
            .unwrap()
            .with_metrics(&runs[..1]);
        assert_eq!(s.metrics.len(), 4);
        let back: SeedSummary = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
