//! The paper's number beside ours: read from a run's `paper` field (the preset's `[paper]`
//! table, copied into `report.json` as the method wrote it).
//!
//! The field has no common layout yet; what each method writes today, and what is read from it
//! for a headline metric:
//!
//! | layout (method) | read as |
//! |---|---|
//! | `{knn, linear, finetune, dataset}` (PatchMix) | the number under the metric's key (`knn` for a kNN headline) |
//! | `{<variant>_top1, <variant>_top5, dataset}` (MNCLGLF: `mnclglf_top1`, `simclr_top1`) | ours and the baseline by their variant names |
//! | `{rows: [{method, dice, …}], setting}` (FBA-Net) | the row whose `method` names the variant |
//! | `{linear_delta, note}` (SPPS), `{avg_gain, max_gain, dataset}` (GraSS) | a gain over the baseline, not an absolute number |
//! | `{mrr, hit3, dataset}` (CLAIRES) | the number under the metric's key |
//! | `{note}` (Spade: not public) | the scale only |
//!
//! `dataset`, `setting` or `note` is the paper's scale (data, model, epochs), shown beside the
//! number because the smoke presets run at a far smaller one.

use serde_json::Value;

/// The paper's numbers for one metric of one comparison.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PaperRef {
    /// The paper's number for our variant.
    pub ours: Option<f64>,
    /// The paper's number for the baseline variant.
    pub baseline: Option<f64>,
    /// A gain over the baseline that the paper states on its own, and what it is.
    pub delta: Option<(f64, String)>,
    /// The paper's setting: data, model, epochs.
    pub scale: Option<String>,
}

impl PaperRef {
    /// Nothing to show but (maybe) the scale.
    pub fn has_number(&self) -> bool {
        self.ours.is_some() || self.baseline.is_some() || self.delta.is_some()
    }
}

/// Lower-case letters, digits and `+` (so `FBA-Net+` and `fba-net+` match, `FBA-Net` does
/// not).
fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '+')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The keys a metric is filed under in a `[paper]` table, most specific first, and its top-k
/// suffix (`top1` / `top5`) for variant-prefixed keys.
fn metric_keys(metric: &str) -> (Vec<&'static str>, &'static str) {
    let m = metric.to_ascii_lowercase();
    let mut keys = Vec::new();
    for (needle, key) in [
        ("knn", "knn"),
        ("linear", "linear"),
        ("fine-tun", "finetune"),
        ("finetun", "finetune"),
        ("dice", "dice"),
        ("jaccard", "jaccard"),
        ("hd95", "hd95"),
        ("asd", "asd"),
        ("miou", "miou"),
        ("mrr", "mrr"),
        ("hit@3", "hit3"),
    ] {
        if m.contains(needle) && !keys.contains(&key) {
            keys.push(key);
        }
    }
    let topk = if m.contains("top-5") || m.contains("top5") {
        "top5"
    } else {
        "top1"
    };
    (keys, topk)
}

/// The paper's numbers for `metric`, our `variant` and the baseline's.
pub fn paper_ref(paper: &Value, metric: &str, ours: &str, baseline: Option<&str>) -> PaperRef {
    let mut r = PaperRef {
        scale: ["dataset", "setting", "note"]
            .iter()
            .find_map(|k| paper[*k].as_str())
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string),
        ..Default::default()
    };
    let Some(obj) = paper.as_object() else {
        return r;
    };
    let (keys, topk) = metric_keys(metric);
    if keys.is_empty() {
        return r;
    }
    // 1. the number under the metric's own key: the paper's result for the method
    r.ours = keys
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_f64));
    // 2. keys prefixed with a variant name (`mnclglf_top1`, `simclr_top1`)
    let by_variant = |variant: &str| -> Option<f64> {
        let v = norm(variant);
        if v.is_empty() {
            return None;
        }
        obj.iter().find_map(|(k, x)| {
            let (pre, suf) = k.rsplit_once('_')?;
            (norm(pre) == v && (suf == topk || keys.contains(&suf)))
                .then(|| x.as_f64())
                .flatten()
        })
    };
    // 3. a `rows` table whose `method` names the variant
    let by_row = |variant: &str| -> Option<f64> {
        let v = norm(variant);
        if v.is_empty() {
            return None;
        }
        obj.get("rows")?.as_array()?.iter().find_map(|row| {
            let m = norm(row["method"].as_str()?);
            let hit = m == v || (!v.ends_with('+') && !m.ends_with('+') && m.contains(&v));
            hit.then(|| keys.iter().find_map(|k| row[*k].as_f64()))
                .flatten()
        })
    };
    if r.ours.is_none() {
        r.ours = by_variant(ours).or_else(|| by_row(ours));
    }
    if let Some(b) = baseline {
        r.baseline = by_variant(b).or_else(|| by_row(b));
    }
    // 4. a stated gain: `<key>_delta`, or `avg_gain` (with `max_gain`)
    if let Some((k, d)) = keys.iter().find_map(|k| {
        let key = format!("{k}_delta");
        obj.get(&key).and_then(Value::as_f64).map(|d| (key, d))
    }) {
        r.delta = Some((d, format!("stated gain ({k})")));
    } else if let Some(d) = obj.get("avg_gain").and_then(Value::as_f64) {
        let max = obj
            .get("max_gain")
            .and_then(Value::as_f64)
            .map_or(String::new(), |m| format!(", at most {m}"));
        r.delta = Some((d, format!("stated average gain{max}")));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // the `[paper]` tables of the method crates' smoke presets, as their report.json holds them
    #[test]
    fn each_methods_layout_gives_its_number() {
        let patchmix = json!({"dataset": "CIFAR-10, ViT-T/2, 800 epochs", "knn": 92.9, "linear": 94.4, "finetune": 97.5});
        let r = paper_ref(
            &patchmix,
            "kNN top-1 (k=10, T=0.07)",
            "patchmix",
            Some("no-mix baseline"),
        );
        assert_eq!(
            (r.ours, r.baseline, r.delta.clone()),
            (Some(92.9), None, None)
        );
        assert_eq!(r.scale.as_deref(), Some("CIFAR-10, ViT-T/2, 800 epochs"));

        let multinet = json!({"dataset": "CIFAR-10 (paper: full data)", "mnclglf_top1": 90.18,
            "mnclglf_top5": 99.78, "simclr_top1": 87.11, "simclr_top5": 99.64});
        let r = paper_ref(
            &multinet,
            "linear top-1 (frozen backbone, best epoch)",
            "mnclglf",
            Some("simclr"),
        );
        assert_eq!((r.ours, r.baseline), (Some(90.18), Some(87.11)));
        let r5 = paper_ref(&multinet, "linear top-5", "mnclglf", Some("simclr"));
        assert_eq!((r5.ours, r5.baseline), (Some(99.78), Some(99.64)));

        let fba = json!({"setting": "LA 16 labelled / 64 unlabelled", "rows": [
            {"method": "FBA-Net+", "dice": 91.31, "jaccard": 84.07, "hd95": 5.44, "asd": 1.52},
            {"method": "V-Net 16/0 (supervised)", "dice": 86.96, "jaccard": 77.31, "hd95": 11.85, "asd": 3.22}]});
        let r = paper_ref(
            &fba,
            "Dice % (decoder 1, sliding window, last iteration)",
            "fba-net+",
            Some("supervised"),
        );
        assert_eq!((r.ours, r.baseline), (Some(91.31), Some(86.96)));
        // FBA-Net (without +) is not FBA-Net+
        assert_eq!(paper_ref(&fba, "Dice %", "fba-net", None).ours, None);

        let spps = json!({"note": "arXiv 2306.16122 v1 abstract: ImageNet", "linear_delta": 4.18});
        let r = paper_ref(
            &spps,
            "linear top-1 (frozen backbone, last epoch)",
            "simclr+spps",
            Some("simclr"),
        );
        assert_eq!((r.ours, r.baseline), (None, None));
        assert_eq!(r.delta.as_ref().map(|d| d.0), Some(4.18));
        assert!(r.has_number());

        let grass = json!({"dataset": "Potsdam / LoveDA", "avg_gain": 1.57, "max_gain": 3.58});
        let r = paper_ref(&grass, "mIoU (%)", "grass-ft", Some("simclr-ft"));
        assert_eq!(
            r.delta,
            Some((1.57, "stated average gain, at most 3.58".into()))
        );

        let claires =
            json!({"dataset": "private periapical radiographs", "hit3": 0.96, "mrr": 0.82});
        assert_eq!(
            paper_ref(&claires, "MRR (paired, whole test gallery)", "clip", None).ours,
            Some(0.82)
        );

        let spade = json!({"note": "per-task numbers are not public"});
        let r = paper_ref(&spade, "Dice %", "spade", Some("scratch"));
        assert!(!r.has_number());
        assert_eq!(r.scale.as_deref(), Some("per-task numbers are not public"));
        assert_eq!(
            paper_ref(&Value::Null, "Dice %", "x", None),
            PaperRef::default()
        );
    }
}
