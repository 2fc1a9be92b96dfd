//! GPU verification runs (`verify-<method>.json`, written by a GPU bundle's `run.sh`): ours, our
//! baseline and the official code for the same epochs. One Markdown table for the method README
//! and one HTML section for the report page, from the same rows.

use anyhow::{Context, Result};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The last epoch at which every run has a kNN result for the first k (runs cut short by the
/// time budget are compared where all of them got to), if any.
pub fn common_epoch(v: &Value) -> Option<i64> {
    let key = primary(v)?;
    v["runs"]
        .as_object()?
        .values()
        .map(|r| {
            r["epochs"].as_array().and_then(|e| {
                e.iter()
                    .filter(|x| x.get(&key).is_some_and(Value::is_number))
                    .filter_map(|x| x["epoch"].as_i64())
                    .max()
            })
        })
        .collect::<Option<Vec<i64>>>()?
        .into_iter()
        .min()
}

/// The metric the curves are about: `primary` (run.py writes it), else the first kNN k.
fn primary(v: &Value) -> Option<String> {
    match v["primary"].as_str() {
        Some(p) => Some(p.to_string()),
        None => Some(format!(
            "knn_top1_k{}",
            v["settings"]["knn_k"].get(0)?.as_i64()?
        )),
    }
}

/// `(column key, header)` of the metric columns: every kNN k (natural images), else the primary.
fn metric_columns(v: &Value) -> Vec<(String, String)> {
    let ks: Vec<i64> = v["settings"]["knn_k"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    match primary(v) {
        Some(p) if !p.starts_with("knn_top1_k") => {
            let label = v["primary_label"].as_str().unwrap_or(&p).to_string();
            vec![(p, label)]
        }
        _ => ks
            .iter()
            .map(|k| (format!("knn_top1_k{k}"), format!("kNN top-1 k={k}")))
            .collect(),
    }
}

/// One row per run: label, status, epochs run, kNN for each k and the loss at the common epoch
/// ([`common_epoch`]; else each run's last), samples/s, mean GPU utilisation, peak GPU memory.
pub fn rows(v: &Value) -> (Vec<String>, Vec<Vec<String>>) {
    let cols = metric_columns(v);
    let x = v["x_label"].as_str().unwrap_or("epoch");
    let at = common_epoch(v);
    let when = at.map_or(format!("last {x}"), |e| format!("{x} {e}"));
    let mut head = vec!["run".to_string(), "points".into()];
    head.extend(cols.iter().map(|(_, h)| format!("{h} @ {when}")));
    head.extend(
        [
            format!("loss @ {when}").as_str(),
            "samples/s (median epoch)",
            "GPU util %",
            "GPU mem peak MiB",
            "status",
        ]
        .map(String::from),
    );
    let mut out = Vec::new();
    let order = ["ours", "baseline", "official"];
    let runs = v["runs"].as_object();
    let mut names: Vec<&String> = runs.map(|r| r.keys().collect()).unwrap_or_default();
    names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(order.len()));
    for name in names {
        let r = &v["runs"][name.as_str()];
        let epochs = r["epochs"].as_array().cloned().unwrap_or_default();
        let last = match at {
            Some(e) => epochs
                .iter()
                .find(|x| x["epoch"].as_i64() == Some(e))
                .cloned(),
            None => epochs.last().cloned(),
        }
        .unwrap_or(Value::Null);
        let mut row = vec![
            r["label"].as_str().unwrap_or(name).to_string(),
            epochs.len().to_string(),
        ];
        for (key, _) in &cols {
            row.push(num(&last[key.as_str()], 1));
        }
        row.push(num(&last["loss"], 3));
        row.push(num(&r["samples_per_s"], 0));
        row.push(num(&r["gpu_util_mean_pct"], 0));
        row.push(num(&r["gpu_mem_peak_mib"], 0));
        row.push(r["status"].as_str().unwrap_or("?").to_string());
        out.push(row);
    }
    (head, out)
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or("–".to_string(), |x| format!("{x:.digits$}"))
}

/// What ran where: device, commits, data, epochs, batch, precision; the paper's setting.
pub fn settings_line(v: &Value) -> String {
    let s = &v["settings"];
    if s.get("knn_k").is_none() {
        // other methods: their settings as run.py recorded them
        return format!(
            "{device}, torch {torch}; our commit `{commit}`, official `{ocommit}`; data: {source}; \
             {n} {x}s; settings {settings}; precision: ours {pa}, official {po}{tiny}",
            device = v["device"].as_str().unwrap_or("?"),
            torch = v["torch"].as_str().unwrap_or("?"),
            commit = short(v["commit"].as_str().unwrap_or("?")),
            ocommit = short(v["official"]["commit"].as_str().unwrap_or("?")),
            source = v["data"]["source"].as_str().unwrap_or("?"),
            n = v["epochs"],
            x = v["x_label"].as_str().unwrap_or("epoch"),
            settings = settings_text(s),
            pa = v["precision"]["ours"].as_str().unwrap_or("?"),
            po = v["precision"]["official"].as_str().unwrap_or("?"),
            tiny = if v["tiny"].as_bool() == Some(true) {
                "; TINY CHECK: the numbers mean nothing"
            } else {
                ""
            },
        );
    }
    format!(
        "{device}, torch {torch}; our commit `{commit}`, official `{ocommit}`; {train} train / \
         {test} test images ({source}); {epochs} epochs ({warm} warm-up) of {spe} steps at batch \
         {batch}, ViT-T depth {depth} patch {patch}, heads {mlp}-wide, seed {seed}; precision: \
         ours {pa}, official {po}{tiny}",
        device = v["device"].as_str().unwrap_or("?"),
        torch = v["torch"].as_str().unwrap_or("?"),
        commit = short(v["commit"].as_str().unwrap_or("?")),
        ocommit = short(v["official"]["commit"].as_str().unwrap_or("?")),
        train = v["data"]["train"],
        test = v["data"]["test"],
        source = v["data"]["source"].as_str().unwrap_or("?"),
        epochs = v["epochs"],
        warm = v["warmup_epochs"],
        spe = v["steps_per_epoch"],
        batch = s["batch"],
        depth = s["depth"],
        patch = s["patch"],
        mlp = s["mlp_dim"],
        seed = s["seed"],
        pa = v["precision"]["ours"].as_str().unwrap_or("?"),
        po = v["precision"]["official"].as_str().unwrap_or("?"),
        tiny = if v["tiny"].as_bool() == Some(true) {
            "; TINY CHECK: the numbers mean nothing"
        } else {
            ""
        },
    )
}

/// Settings as `key value, …` text (no JSON on the page).
fn settings_text(s: &Value) -> String {
    match s.as_object() {
        Some(o) => o
            .iter()
            .map(|(k, v)| {
                let t = match v {
                    Value::String(x) => x.clone(),
                    Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().map_or(x.to_string(), str::to_string))
                        .collect::<Vec<_>>()
                        .join("/"),
                    x => x.to_string(),
                };
                format!("{k} {t}")
            })
            .collect::<Vec<_>>()
            .join(", "),
        None => "–".into(),
    }
}

/// What a verification run says in one line: the primary metric of ours, the baseline and the
/// official code at the epoch all of them reached.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyHeadline {
    /// The metric (`primary_label`, else `kNN top-1 k=…`).
    pub label: String,
    /// `epoch` or `iteration`.
    pub x_label: String,
    /// The common epoch ([`common_epoch`]).
    pub at: i64,
    pub ours: Option<f64>,
    pub baseline: Option<f64>,
    pub official: Option<f64>,
    /// The GPU.
    pub device: String,
    /// The schedule's length in `x_label`s.
    pub length: String,
    /// `run.sh --tiny`: the numbers mean nothing.
    pub tiny: bool,
}

/// [`VerifyHeadline`] of a `verify-<method>.json`, when every run reached a common epoch.
pub fn headline(v: &Value) -> Option<VerifyHeadline> {
    let key = primary(v)?;
    let at = common_epoch(v)?;
    let label = metric_columns(v)
        .into_iter()
        .find(|(k, _)| *k == key)
        .map_or(key.clone(), |(_, h)| h);
    let at_epoch = |run: &str| -> Option<f64> {
        v["runs"][run]["epochs"]
            .as_array()?
            .iter()
            .find(|e| e["epoch"].as_i64() == Some(at))?[key.as_str()]
        .as_f64()
    };
    Some(VerifyHeadline {
        label,
        x_label: v["x_label"].as_str().unwrap_or("epoch").to_string(),
        at,
        ours: at_epoch("ours"),
        baseline: at_epoch("baseline"),
        official: at_epoch("official"),
        device: v["device"].as_str().unwrap_or("?").to_string(),
        length: v["epochs"].to_string(),
        tiny: v["tiny"].as_bool() == Some(true),
    })
}

fn short(c: &str) -> String {
    c.chars().take(10).collect::<String>() + if c.ends_with("+uncommitted") { "+" } else { "" }
}

/// The README block: settings, the table, the paper's number marked as not comparable.
pub fn markdown(v: &Value, png: Option<&str>) -> String {
    let (head, rows) = rows(v);
    let mut s = String::new();
    let _ = writeln!(s, "{}.\n", settings_line(v));
    let _ = writeln!(s, "| {} |", head.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(head.len()));
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    for n in v["notes"].as_array().into_iter().flatten() {
        if let Some(n) = n.as_str() {
            let _ = writeln!(s, "\n* {n}");
        }
    }
    let p = &v["paper"];
    if let Some(k) = p["knn"].as_f64() {
        let _ = writeln!(
            s,
            "\nPaper ({}): kNN {k}, linear {} — **not comparable** with a run of {} epochs on a subset.",
            p["setting"].as_str().unwrap_or("?"),
            num(&p["linear"], 1),
            v["epochs"]
        );
    } else if let Some(n) = p["numbers"].as_str() {
        let _ = writeln!(
            s,
            "\nPaper ({}): {n} — **not comparable** with a run of {} {}s on the development subset.",
            p["setting"].as_str().unwrap_or("?"),
            v["epochs"],
            v["x_label"].as_str().unwrap_or("epoch")
        );
    }
    if let Some(png) = png {
        let _ = writeln!(s, "\n![curves: ours, baseline, official]({png})");
    }
    s
}

/// `runs/verify/*.json`, newest name last.
pub fn collect(runs_root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(runs_root.join("verify"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The report page's section for every verification run under `runs_root/verify/`.
pub fn html_section(runs_root: &Path) -> Result<(String, usize)> {
    let files = collect(runs_root);
    if files.is_empty() {
        return Ok((String::new(), 0));
    }
    let mut body = String::from(
        "<h2 id=\"gpu-verification\">GPU verification: ours vs baseline vs official code</h2>\n",
    );
    let mut images = 0;
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", f.display()))?;
        let (head, rows) = rows(&v);
        let esc = crate::page::esc;
        let _ = writeln!(
            body,
            "<h3>{} — {}</h3>\n<p>{}</p>\n<table>\n<tr>{}</tr>",
            esc(v["method"].as_str().unwrap_or("?")),
            esc(&f.file_name().unwrap_or_default().to_string_lossy()),
            esc(&settings_line(&v)),
            head.iter()
                .map(|h| format!("<th>{}</th>", esc(h)))
                .collect::<String>()
        );
        for r in rows {
            let _ = writeln!(
                body,
                "<tr>{}</tr>",
                r.iter()
                    .map(|c| format!("<td>{}</td>", esc(c)))
                    .collect::<String>()
            );
        }
        body.push_str("</table>\n");
        let png = f.with_extension("png");
        if png.exists() {
            let _ = writeln!(
                body,
                "<figure class=\"plot\">{}</figure>",
                crate::page::embedded_img(&png, "verification curves")?
            );
            images += 1;
        }
    }
    Ok((body, images))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "method": "patchmix", "device": "NVIDIA H100", "torch": "2.11.0", "commit": "abcdef0123456789",
            "official": {"commit": "21ace32d37"}, "tiny": false, "epochs": 2, "warmup_epochs": 1,
            "steps_per_epoch": 39, "data": {"train": 20000, "test": 5000, "source": "cifar"},
            "settings": {"batch": 512, "depth": 12, "patch": 2, "mlp_dim": 4096, "seed": 7, "knn_k": [10, 200]},
            "precision": {"ours": "bf16", "official": "fp16"},
            "paper": {"setting": "800 epochs", "knn": 92.9, "linear": 94.4},
            "runs": {
                "official": {"label": "official", "status": "ok", "samples_per_s": 9000.0,
                             "epochs": [{"epoch": 1, "knn_top1_k10": 30.0}, {"epoch": 2, "knn_top1_k10": 41.31, "knn_top1_k200": 40.0, "loss": 6.5}]},
                "ours": {"label": "ours", "status": "ok", "samples_per_s": 10000.0, "gpu_util_mean_pct": 91.0,
                         "epochs": [{"epoch": 1}, {"epoch": 2, "knn_top1_k10": 42.0, "loss": 6.4}]},
            }
        })
    }

    #[test]
    fn rows_put_ours_first_and_read_the_last_epoch() {
        let (head, rows) = rows(&sample());
        assert_eq!(common_epoch(&sample()), Some(2));
        assert_eq!(head[2], "kNN top-1 k=10 @ epoch 2");
        assert_eq!(rows[0][0], "ours");
        assert_eq!(rows[0][2], "42.0");
        assert_eq!(rows[0][3], "–", "no k=200 in our last epoch");
        assert_eq!(rows[1][0], "official");
        assert_eq!(rows[1][2], "41.3");
        assert_eq!(rows[1][4], "6.500");
        let md = markdown(&sample(), Some("x.png"));
        assert!(md.contains("| ours | 2 | 42.0 |"), "{md}");
        // another method: its primary metric, its x axis, its paper line
        let mut f = sample();
        f["settings"] = json!({"iterations": 1000});
        f["primary"] = json!("dice");
        f["primary_label"] = json!("test Dice %");
        f["x_label"] = json!("iteration");
        f["paper"] = json!({"setting": "LA", "numbers": "Dice 91.31"});
        f["runs"]["ours"]["epochs"] = json!([{"epoch": 800, "dice": 80.25}]);
        f["runs"]["official"]["epochs"] = json!([{"epoch": 800, "dice": 79.5}]);
        let (h, r) = super::rows(&f);
        assert_eq!(h[2], "test Dice % @ iteration 800");
        assert_eq!((r[0][2].as_str(), r[1][2].as_str()), ("80.2", "79.5"));
        let md = markdown(&f, None);
        assert!(md.contains("Dice 91.31") && md.contains("1000"), "{md}");
        // a run that stopped earlier moves the comparison to the epoch all runs reached
        let mut short = sample();
        short["runs"]["official"]["epochs"]
            .as_array_mut()
            .unwrap()
            .pop();
        assert_eq!(common_epoch(&short), Some(1));
        let (head1, rows1) = super::rows(&short);
        assert_eq!(head1[2], "kNN top-1 k=10 @ epoch 1");
        assert_eq!(rows1[0][2], "–", "ours has no kNN at epoch 1");
        assert_eq!(rows1[1][2], "30.0");
        assert!(md.contains("not comparable"), "{md}");
        assert!(md.contains("NVIDIA H100"), "{md}");
        assert!(
            !settings_line(&f).contains('{'),
            "no JSON in the settings line"
        );
        let h = headline(&sample()).unwrap();
        assert_eq!(
            (h.at, h.ours, h.baseline, h.official),
            (2, Some(42.0), None, Some(41.31))
        );
        assert_eq!(h.label, "kNN top-1 k=10");
    }
}
