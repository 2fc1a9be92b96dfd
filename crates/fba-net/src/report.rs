//! The comparison table `reproduce` prints: our FBA-Net(+) and supervised baseline (last
//! iteration and best on test, clearly labelled) beside the paper's LA rows.

use contrast_core::train::RunReport;
use serde_json::Value;

fn num(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |x| format!("{x:.2}"))
}

fn row(label: &str, summary: &Value) -> String {
    let m = &summary["mean"];
    format!(
        "| {label} | {} | {} | {} | {} |\n",
        num(&m["dice"]),
        num(&m["jaccard"]),
        num(&m["hd95"]),
        num(&m["asd"])
    )
}

/// Per-case table of one report section (`last_iteration` / `best_on_test`).
pub fn per_case(title: &str, summary: &Value) -> String {
    let mut s = format!(
        "{title}\n\n| case | Dice % | Jaccard % | 95HD vox | ASD vox |\n|---|---|---|---|---|\n"
    );
    for c in summary["cases"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            c["id"].as_str().unwrap_or("?"),
            c["dice"].as_f64().unwrap_or(f64::NAN) * 100.0,
            c["jaccard"].as_f64().unwrap_or(f64::NAN) * 100.0,
            c["hd95"].as_f64().unwrap_or(f64::NAN),
            c["asd"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    s.push_str(&row("**mean**", summary));
    s
}

/// What `reproduce` prints: the per-case tables of each run (last iteration, and best on test
/// when the selection ran), then [`table`].
pub fn comparison(ours: &RunReport, baseline: Option<&RunReport>) -> String {
    let reports: Vec<Value> = std::iter::once(ours)
        .chain(baseline)
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect();
    let mut s = String::new();
    for r in &reports {
        let name = r["variant"].as_str().unwrap_or("?");
        s.push_str(&per_case(
            &format!("{name}: last iteration"),
            &r["last_iteration"],
        ));
        s.push('\n');
        if !r["best_on_test"].is_null() {
            s.push_str(&per_case(
                &format!("{name}: best on test (selected on the test set)"),
                &r["best_on_test"],
            ));
            s.push('\n');
        }
    }
    let refs: Vec<&Value> = reports.iter().collect();
    s.push_str(&table(&refs));
    s
}

/// Markdown table of our runs (each `report.json`) and the paper's rows of the preset.
pub fn table(reports: &[&Value]) -> String {
    let mut s = String::new();
    if let Some(r) = reports.first() {
        s.push_str(&format!(
            "data: {} | patch {} | stride {} | {} iterations | n_filters {} | device {} ({} threads)\n\n",
            r["data"].as_str().unwrap_or("?"),
            r["patch"],
            r["stride"],
            r["iterations"],
            r["n_filters"],
            r["device"].as_str().unwrap_or("?"),
            r["threads"]
        ));
    }
    s.push_str("| method | Dice % | Jaccard % | 95HD vox | ASD vox |\n|---|---|---|---|---|\n");
    for r in reports {
        let v = r["variant"].as_str().unwrap_or("?");
        s.push_str(&row(
            &format!("{v} (ours, last iteration)"),
            &r["last_iteration"],
        ));
        if !r["best_on_test"].is_null() {
            let step = r["best_on_test"]["step"].as_u64().unwrap_or(0);
            s.push_str(&row(
                &format!("{v} (ours, best on test @ {step}: selected on the test set)"),
                &r["best_on_test"],
            ));
        }
    }
    if let Some(r) = reports.first() {
        let p = &r["paper"];
        for pr in p["rows"].as_array().into_iter().flatten() {
            s.push_str(&format!(
                "| {} (paper) | {} | {} | {} | {} |\n",
                pr["method"].as_str().unwrap_or("?"),
                num(&pr["dice"]),
                num(&pr["jaccard"]),
                num(&pr["hd95"]),
                num(&pr["asd"])
            ));
        }
        s.push_str(&format!(
            "\npaper rows: {} (README of cys1102/FBA-Net @ 8aaf916; best-on-test selection as in MC-Net+)\n",
            p["setting"].as_str().unwrap_or("?")
        ));
    }
    for r in reports {
        // seconds per iteration of training step time: samples per step / samples per second
        let s_per_iter = match (r["batch_size"].as_f64(), r["samples_per_s"].as_f64()) {
            (Some(b), Some(v)) if v > 0.0 => b / v,
            _ => f64::NAN,
        };
        s.push_str(&format!(
            "\n{} (batch {}): {:.2} s/iteration, training wall {:.0} s\n",
            r["variant"].as_str().unwrap_or("?"),
            r["batch"].as_str().unwrap_or("?"),
            s_per_iter,
            r["train_wall_s"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    s
}
