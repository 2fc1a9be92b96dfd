//! Numbers as a reader should see them: rounded to what the metric supports, devices spelled
//! the way `--device` takes them.
//!
//! * percentages (accuracy, Dice, IoU, mIoU): one decimal — a kNN accuracy on 1,000 test images
//!   moves in steps of 0.1 %, and the seed-to-seed spread at smoke scale is a point or more;
//! * fractions in [0, 1] (MRR, hit@k): three decimals;
//! * surface distances (HD95, ASD, in voxels or mm): two decimals;
//! * anything else (losses, rates): four significant digits.

/// What kind of number a metric is, which fixes its rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// 0–100.
    Percent,
    /// 0–1.
    Fraction,
    /// HD95 / ASD.
    Distance,
    /// Losses and everything else: significant digits.
    Plain,
}

impl Unit {
    /// The unit of a metric from its name (`report.json` `metric`, or a name of
    /// [`crate::seeds::report_metrics`]).
    pub fn of(metric: &str) -> Unit {
        let m = metric.to_ascii_lowercase();
        let has = |w: &[&str]| w.iter().any(|w| m.contains(w));
        if has(&["hd95", "asd", "distance"]) {
            Unit::Distance
        } else if has(&["mrr", "hit@", "hit3", "recall@", "fraction"]) {
            Unit::Fraction
        } else if has(&[
            "%", "top-1", "top1", "top-5", "top5", "accuracy", "dice", "iou", "jaccard", "knn",
        ]) {
            Unit::Percent
        } else {
            Unit::Plain
        }
    }

    /// Decimals for a value of this unit (`Plain`: chosen from the magnitude).
    fn decimals(self, x: f64) -> usize {
        match self {
            Unit::Percent => 1,
            Unit::Fraction => 3,
            Unit::Distance => 2,
            Unit::Plain => sig_decimals(x, 4),
        }
    }

    /// `x` rounded for this unit.
    pub fn fmt(self, x: f64) -> String {
        if !x.is_finite() {
            return "–".into();
        }
        let d = self.decimals(x);
        minus(format!("{x:.d$}"))
    }

    /// `mean ± sd` (the spread with the mean's decimals).
    pub fn fmt_pm(self, mean: f64, sd: f64) -> String {
        let d = self.decimals(mean);
        minus(format!("{mean:.d$} ± {sd:.d$}"))
    }

    /// A signed difference, with its 95 % half-width when there is one.
    pub fn fmt_delta(self, delta: f64, half: Option<f64>, reference: f64) -> String {
        let d = self.decimals(reference.abs().max(delta.abs()));
        match half {
            Some(h) => minus(format!("{delta:+.d$} ± {h:.d$}")),
            None => minus(format!("{delta:+.d$}")),
        }
    }
}

/// Decimals that show `x` with `sig` significant digits (at least 0, at most 8).
pub fn sig_decimals(x: f64, sig: i32) -> usize {
    if x == 0.0 || !x.is_finite() {
        return (sig - 1).max(0) as usize;
    }
    let mag = x.abs().log10().floor() as i32;
    (sig - 1 - mag).clamp(0, 8) as usize
}

/// `x` with `sig` significant digits.
pub fn sig(x: f64, sig: i32) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let d = sig_decimals(x, sig);
    minus(format!("{x:.d$}"))
}

/// A typographic minus sign.
fn minus(s: String) -> String {
    s.replace('-', "−")
}

/// A device as `--device` takes it: `cpu`, `cuda:0`. Reports of older binaries wrote tch's
/// Debug spelling (`Cpu`, `Cuda(0)`).
pub fn device(s: &str) -> String {
    let t = s.trim();
    let l = t.to_ascii_lowercase();
    if l == "cpu" {
        return "cpu".into();
    }
    if let Some(rest) = l.strip_prefix("cuda(").and_then(|r| r.strip_suffix(')')) {
        return format!("cuda:{rest}");
    }
    if l == "cuda" {
        return "cuda:0".into();
    }
    if l.starts_with("cuda:") || l.starts_with("mps") {
        return l;
    }
    t.to_string()
}

/// Seconds as `12 s`, `3 min 05 s` or `1 h 02 min`.
pub fn duration(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "–".into();
    }
    let t = s.round() as u64;
    if t < 60 {
        format!("{t} s")
    } else if t < 3600 {
        format!("{} min {:02} s", t / 60, t % 60)
    } else {
        format!("{} h {:02} min", t / 3600, (t % 3600) / 60)
    }
}

/// The part of a metric's name before its first parenthesis (`linear top-1 (frozen …)` →
/// `linear top-1`), for table headers; the whole name goes into a tooltip.
pub fn short_metric(metric: &str) -> String {
    metric
        .split(" (")
        .next()
        .unwrap_or(metric)
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_follows_the_metric() {
        assert_eq!(Unit::of("kNN top-1 (k=10, T=0.07)"), Unit::Percent);
        assert_eq!(Unit::of("Dice % (decoder 1)"), Unit::Percent);
        assert_eq!(Unit::of("mIoU (%)"), Unit::Percent);
        assert_eq!(Unit::of("MRR (paired, whole test gallery)"), Unit::Fraction);
        assert_eq!(Unit::of("HD95"), Unit::Distance);
        assert_eq!(Unit::of("loss"), Unit::Plain);
        assert_eq!(Unit::Percent.fmt(19.166666666666668), "19.2");
        assert_eq!(Unit::Percent.fmt_pm(33.4, 0.6321), "33.4 ± 0.6");
        assert_eq!(
            Unit::Percent.fmt_delta(-1.26, Some(2.0), 30.0),
            "−1.3 ± 2.0"
        );
        assert_eq!(Unit::Percent.fmt_delta(0.9, None, 30.0), "+0.9");
        assert_eq!(Unit::Fraction.fmt(0.16833804641017108), "0.168");
        assert_eq!(Unit::Plain.fmt(4.533349990844727), "4.533");
        assert_eq!(Unit::Plain.fmt(0.000025974), "0.00002597");
        assert_eq!(Unit::Plain.fmt(1234.4), "1234");
        assert_eq!(sig(12.001944272946089, 4), "12.00");
    }

    #[test]
    fn devices_are_spelled_as_the_flag() {
        assert_eq!(device("Cpu"), "cpu");
        assert_eq!(device("Cuda(0)"), "cuda:0");
        assert_eq!(device("cuda:1"), "cuda:1");
        assert_eq!(device("cuda"), "cuda:0");
        assert_eq!(duration(5.4), "5 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(3725.0), "1 h 02 min");
        assert_eq!(
            short_metric("linear top-1 (frozen backbone, best epoch)"),
            "linear top-1"
        );
    }
}
