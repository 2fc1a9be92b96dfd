//! The comparison table `reproduce` prints: MNCLGLF and the plain-SimCLR baseline (ours, same
//! harness) beside the paper's README numbers for the preset.

use serde_json::Value;

fn num(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |x| format!("{x:.2}"))
}

/// A Markdown table from the `report.json` values of the method and (optionally) the baseline.
pub fn table(method: &Value, base: Option<&Value>) -> String {
    let null = Value::Null;
    let base = base.unwrap_or(&null);
    let paper = &method["paper"];
    let mut s = String::new();
    s.push_str(&format!(
        "data: {} | model: {} | epochs {} | batch {} | device {} ({} threads)\n\n",
        method["data"].as_str().unwrap_or("?"),
        method["model"].as_str().unwrap_or("?"),
        method["epochs"],
        method["batch_size"],
        method["device"].as_str().unwrap_or("?"),
        method["threads"]
    ));
    s.push_str("| metric | MNCLGLF (ours) | SimCLR (ours) | MNCLGLF (paper) | SimCLR (paper) |\n|---|---|---|---|---|\n");
    let lin = |r: &Value, k: &str| num(&r["linear"][k]);
    s.push_str(&format!(
        "| linear top-1 (last epoch) | {} | {} | {} | {} |\n",
        lin(method, "last_top1"),
        lin(base, "last_top1"),
        num(&paper["mnclglf_top1"]),
        num(&paper["simclr_top1"])
    ));
    s.push_str(&format!(
        "| linear top-5 (last epoch) | {} | {} | {} | {} |\n",
        lin(method, "last_top5"),
        lin(base, "last_top5"),
        num(&paper["mnclglf_top5"]),
        num(&paper["simclr_top5"])
    ));
    s.push_str(&format!(
        "| linear top-1 (best epoch) | {} | {} | | |\n",
        lin(method, "best_top1"),
        lin(base, "best_top1")
    ));
    let knn = |r: &Value| -> Vec<(i64, String)> {
        r["knn"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| (e["k"].as_i64().unwrap_or(0), num(&e["top1"])))
                    .collect()
            })
            .unwrap_or_default()
    };
    let bk = knn(base);
    for (i, (k, v)) in knn(method).iter().enumerate() {
        let b = bk.get(i).map_or("–".to_string(), |x| x.1.clone());
        s.push_str(&format!("| kNN top-1, k={k} | {v} | {b} | | |\n"));
    }
    s.push_str(&format!(
        "| pretraining wall time (s) | {} | {} | | |\n",
        num(&method["train_wall_s"]),
        num(&base["train_wall_s"])
    ));
    s.push_str(&format!(
        "\npaper numbers: {} (README of liweiquan39/MNCLGLF; linear top-1 / top-5, ResNet-18, 200 epochs)\n",
        paper["dataset"].as_str().unwrap_or("?")
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_puts_ours_beside_the_paper() {
        let m = json!({
            "data": "d", "model": "m", "epochs": 2, "batch_size": 32, "device": "Cpu", "threads": 2,
            "linear": {"last_top1": 41.5, "last_top5": 88.25, "best_top1": 42.0},
            "knn": [{"k": 20, "top1": 35.0}],
            "train_wall_s": 10.0,
            "paper": {"dataset": "CIFAR-10", "mnclglf_top1": 90.18, "mnclglf_top5": 99.78,
                      "simclr_top1": 87.11, "simclr_top5": 99.64},
        });
        let b = json!({"linear": {"last_top1": 39.0, "last_top5": 87.0, "best_top1": 40.0},
                       "knn": [{"k": 20, "top1": 33.5}], "train_wall_s": 5.0});
        let t = table(&m, Some(&b));
        assert!(
            t.contains("| linear top-1 (last epoch) | 41.50 | 39.00 | 90.18 | 87.11 |"),
            "{t}"
        );
        assert!(
            t.contains("| linear top-5 (last epoch) | 88.25 | 87.00 | 99.78 | 99.64 |"),
            "{t}"
        );
        assert!(t.contains("| kNN top-1, k=20 | 35.00 | 33.50 | | |"), "{t}");
        // without a baseline its column is empty
        assert!(
            table(&m, None).contains("| linear top-1 (last epoch) | 41.50 | – | 90.18 | 87.11 |")
        );
    }
}
