//! The comparison table `reproduce` prints: ours (PatchMix and the no-mix baseline) beside the
//! paper's numbers for the preset.

use serde_json::Value;

fn num(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |x| format!("{x:.2}"))
}

/// A Markdown table from the two `report.json` values (`PatchMix::table`; `base` is `null` when
/// the baseline did not finish).
pub fn table(mixed: &Value, base: &Value) -> String {
    let knn_rows = |r: &Value| -> Vec<(i64, String)> {
        r["knn"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| (e["k"].as_i64().unwrap_or(0), num(&e["top1"])))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut s = String::new();
    s.push_str(&format!(
        "data: {} | model: {} | epochs {} | batch {} | device {} ({} threads)\n\n",
        mixed["data"].as_str().unwrap_or("?"),
        mixed["model"].as_str().unwrap_or("?"),
        mixed["epochs"],
        mixed["batch_size"],
        mixed["device"].as_str().unwrap_or("?"),
        mixed["threads"]
    ));
    s.push_str("| metric | PatchMix (ours) | no-mix baseline (ours) | paper (PatchMix) |\n|---|---|---|---|\n");
    let paper = &mixed["paper"];
    let bk = knn_rows(base);
    for (i, (k, v)) in knn_rows(mixed).iter().enumerate() {
        let b = bk.get(i).map_or("–".to_string(), |x| x.1.clone());
        let p = if i == 0 {
            num(&paper["knn"])
        } else {
            "–".into()
        };
        s.push_str(&format!("| kNN top-1, k={k} | {v} | {b} | {p} |\n"));
    }
    let lin = |r: &Value| num(&r["linear"]["best_top1"]);
    s.push_str(&format!(
        "| linear top-1 (best epoch) | {} | {} | {} |\n",
        lin(mixed),
        lin(base),
        num(&paper["linear"])
    ));
    s.push_str(&format!(
        "| pretraining wall time (s) | {} | {} | |\n",
        num(&mixed["train_wall_s"]),
        num(&base["train_wall_s"])
    ));
    s.push_str(&format!(
        "\npaper numbers: {} (800 epochs, batch 512 on CIFAR; the paper's kNN k is not stated: shown against our first k)\n",
        paper["dataset"].as_str().unwrap_or("?")
    ));
    s
}
