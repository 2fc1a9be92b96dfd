//! Method vs baseline over several seeds: mean ± standard deviation per side, the paired
//! difference with a 95 % confidence interval (Student's t over the seeds), and a verdict that is
//! computed from the interval, never written by hand: `better` (the interval lies above 0),
//! `worse` (below 0) or `within noise` (it contains 0; also with a single seed, where no
//! interval exists).
//!
//! `cargo xtask reproduce <method> --seeds N` writes one `<runs>/<method>/<preset>-seeds.json`
//! ([`SeedSummary`]); the report page shows them first, one row per method.

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
        ensure!(!pairs.is_empty(), "no seed finished: nothing to summarise");
        let ours: Vec<f64> = pairs.iter().map(|p| p.ours).collect();
        let base: Vec<f64> = pairs.iter().map(|p| p.baseline).collect();
        let d: Vec<f64> = pairs.iter().map(|p| p.ours - p.baseline).collect();
        let (om, osd) = mean_sd(&ours);
        let (bm, bsd) = mean_sd(&base);
        let (dm, dsd) = mean_sd(&d);
        let n = d.len();
        let ci = (n >= 2).then(|| t975(n - 1) * dsd / (n as f64).sqrt());
        let verdict = match ci {
            Some(h) if dm - h > 0.0 => {
                if higher_is_better {
                    Verdict::Better
                } else {
                    Verdict::Worse
                }
            }
            Some(h) if dm + h < 0.0 => {
                if higher_is_better {
                    Verdict::Worse
                } else {
                    Verdict::Better
                }
            }
            _ => Verdict::WithinNoise,
        };
        Ok(Self {
            method: method.into(),
            preset: preset.into(),
            metric: metric.into(),
            higher_is_better,
            pairs,
            ours_mean: om,
            ours_sd: osd,
            baseline_mean: bm,
            baseline_sd: bsd,
            delta_mean: dm,
            delta_ci95: ci,
            verdict,
            method_note: format!(
                "paired over {n} seed(s): mean difference ± t(0.975, {}) · sd / √{n}{}",
                n.saturating_sub(1),
                if n < 2 {
                    " (one seed: no interval, no verdict)"
                } else {
                    ""
                }
            ),
        })
    }

    /// `Δ ± h` as text, rounded to two decimals (the metrics are percentages).
    pub fn delta_text(&self) -> String {
        match self.delta_ci95 {
            Some(h) => format!("{:+.2} ± {:.2}", self.delta_mean, h),
            None => format!("{:+.2} (one seed)", self.delta_mean),
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
            "acc",
            true,
            pairs(&[(11.0, 10.0), (12.0, 10.0), (13.0, 10.0)]),
        )
        .unwrap();
        assert!((s.delta_mean - 2.0).abs() < 1e-12);
        assert!((s.delta_ci95.unwrap() - 2.484138).abs() < 1e-5);
        assert_eq!(s.verdict, Verdict::WithinNoise); // the interval contains 0
        assert!((s.ours_mean - 12.0).abs() < 1e-12 && (s.ours_sd - 1.0).abs() < 1e-12);
        assert_eq!(s.delta_text(), "+2.00 ± 2.48");
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
}
