//! The comparison `reproduce` prints: the plain framework and the framework + SPPS (ours, same
//! harness), our delta, and the paper's published delta for reference.

use serde_json::Value;

fn num(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |x| format!("{x:.2}"))
}

fn delta(a: &Value, b: &Value) -> String {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => format!("{:+.2}", a - b),
        _ => "–".into(),
    }
}

/// A Markdown table from the `report.json` values of the SPPS run and its baseline.
pub fn table(spps: &Value, base: &Value) -> String {
    let paper = &spps["paper"];
    let mut s = String::new();
    s.push_str(&format!(
        "data: {} | model: {} | epochs {} | batch {} | device {} ({} threads)\n",
        spps["data"].as_str().unwrap_or("?"),
        spps["model"].as_str().unwrap_or("?"),
        spps["epochs"],
        spps["batch_size"],
        spps["device"].as_str().unwrap_or("?"),
        spps["threads"]
    ));
    let p = &spps["pairs"];
    s.push_str(&format!(
        "semantic pairs: {} ({} per image), label precision {}, share {}\n\n",
        p["count"],
        num(&p["per_image"]),
        num(&p["precision"]),
        p["share"]
    ));
    s.push_str(
        "| metric | baseline (ours) | +SPPS (ours) | Δ ours | Δ paper |\n|---|---|---|---|---|\n",
    );
    let lin = |r: &Value, k: &str| r["linear"][k].clone();
    s.push_str(&format!(
        "| linear top-1 (last epoch) | {} | {} | {} | {} |\n",
        num(&lin(base, "last_top1")),
        num(&lin(spps, "last_top1")),
        delta(&lin(spps, "last_top1"), &lin(base, "last_top1")),
        paper["linear_delta"]
            .as_f64()
            .map_or("–".into(), |d| format!("{d:+.2}"))
    ));
    s.push_str(&format!(
        "| linear top-1 (best epoch) | {} | {} | {} | |\n",
        num(&lin(base, "best_top1")),
        num(&lin(spps, "best_top1")),
        delta(&lin(spps, "best_top1"), &lin(base, "best_top1")),
    ));
    let knn = |r: &Value| -> Vec<(i64, Value)> {
        r["knn"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| (e["k"].as_i64().unwrap_or(0), e["top1"].clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let bk = knn(base);
    for (i, (k, v)) in knn(spps).iter().enumerate() {
        let b = bk.get(i).map_or(Value::Null, |x| x.1.clone());
        s.push_str(&format!(
            "| kNN top-1, k={k} | {} | {} | {} | |\n",
            num(&b),
            num(v),
            delta(v, &b)
        ));
    }
    s.push_str(&format!(
        "| pretraining wall time (s) | {} | {} | | |\n",
        num(&base["train_wall_s"]),
        num(&spps["train_wall_s"])
    ));
    s.push_str(&format!(
        "\npaper: {}\n",
        paper["note"].as_str().unwrap_or("?")
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_shows_both_runs_and_deltas() {
        let m = json!({
            "data": "d", "model": "m", "epochs": 2, "batch_size": 32, "device": "Cpu", "threads": 1,
            "linear": {"last_top1": 41.5, "best_top1": 42.0},
            "knn": [{"k": 20, "top1": 35.0}],
            "pairs": {"count": 10, "per_image": 1.0, "precision": 0.5, "share": 1.0},
            "train_wall_s": 10.0,
            "paper": {"note": "ImageNet", "linear_delta": 4.18},
        });
        let b = json!({"linear": {"last_top1": 39.0, "best_top1": 40.0},
                       "knn": [{"k": 20, "top1": 33.5}], "train_wall_s": 5.0});
        let t = table(&m, &b);
        assert!(
            t.contains("| linear top-1 (last epoch) | 39.00 | 41.50 | +2.50 | +4.18 |"),
            "{t}"
        );
        assert!(
            t.contains("| kNN top-1, k=20 | 33.50 | 35.00 | +1.50 | |"),
            "{t}"
        );
        assert!(t.contains("label precision 0.50"), "{t}");
    }
}
