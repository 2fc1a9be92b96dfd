//! Reports render and open: metrics parsing (also mid-write), chart families, PNG decoding
//! (size, not blank), image tools, and the results page — rendered from fixture reports written
//! here (synthetic `report.json` + `metrics.jsonl` in a temp dir, never real runs) and loaded in
//! headless Chromium: every image decodes, no table cell holds raw JSON, every verdict is the
//! one its numbers give; the screenshot is written for a reader (skipped with one line when
//! Chromium is absent).

use contrast_report::images::{self, ink_fraction};
use contrast_report::metrics::{charts, family, read_metrics, series, Family};
use contrast_report::page::{
    collect_reports, comparison_markdown, write_page_with, PageOptions, RunPair,
};
use contrast_report::run_plots;
use image::{Rgb, RgbImage};
use std::path::Path;

fn write_metrics(dir: &Path, steps: u64, partial_tail: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut s = String::new();
    for t in 1..=steps {
        let x = t as f64;
        s.push_str(&format!(
            "{{\"step\":{t},\"total\":{},\"orig\":{},\"unused\":0.0,\"lr\":{},\"wd\":{},\"epoch\":{},\"elapsed_s\":{}}}\n",
            8.0 / (1.0 + x / 10.0),
            4.0 / (1.0 + x / 20.0),
            1e-3 * x.min(10.0) / 10.0,
            0.02 + 0.001 * x,
            t / 10,
            x * 1.5
        ));
        if t % 10 == 0 {
            s.push_str(&format!(
                "{{\"step\":{t},\"knn_top1_k10\":{}}}\n",
                20.0 + x / 5.0
            ));
        }
    }
    if partial_tail {
        s.push_str("{\"step\":999,\"total\":1.0,\"lr\""); // a run still writing
    }
    std::fs::write(dir.join("metrics.jsonl"), s).unwrap();
}

#[test]
fn metrics_are_read_mid_write_and_grouped() {
    let dir = tempfile::tempdir().unwrap();
    write_metrics(dir.path(), 30, true);
    let recs = read_metrics(&dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(
        recs.len(),
        33,
        "30 training lines + 3 kNN lines; the partial tail is skipped"
    );
    assert_eq!(recs[0].step, 1.0);
    assert!((recs[0].values["total"] - 8.0 / 1.1).abs() < 1e-12);
    let loss = series(&recs, Family::Loss);
    assert_eq!(
        loss.keys().collect::<Vec<_>>(),
        vec!["orig", "total"],
        "all-zero `unused` dropped"
    );
    assert_eq!(loss["total"].len(), 30);
    assert_eq!(
        series(&recs, Family::Evaluation)["knn_top1_k10"],
        vec![(10.0, 22.0), (20.0, 24.0), (30.0, 26.0)]
    );
    assert_eq!(family("lr"), Family::LearningRate);
    assert_eq!(family("backbone_lr"), Family::LearningRate);
    assert_eq!(family("ema_momentum"), Family::Schedule);
    assert_eq!(family("val_dice"), Family::Evaluation);
    assert_eq!(family("hit@3"), Family::Evaluation);
    assert_eq!(family("epoch"), Family::Ignored);
    assert_eq!(family("mix_orig"), Family::Loss);
    let names: Vec<String> = charts(&recs, "t").into_iter().map(|c| c.0).collect();
    assert_eq!(names, vec!["loss", "lr", "schedules", "eval"]);

    // a malformed line that is not the last one is an error naming the file and line
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"step\":1,\"a\":1}\nnot json\n{\"step\":2,\"a\":2}\n",
    )
    .unwrap();
    let e = format!("{:#}", read_metrics(&bad).unwrap_err());
    assert!(e.contains("bad.jsonl line 2"), "{e}");
    std::fs::write(&bad, "{\"a\":1}\n").unwrap();
    let e = format!("{:#}", read_metrics(&bad).unwrap_err());
    assert!(e.contains("no numeric `step`"), "{e}");
}

#[test]
fn run_plots_write_decodable_non_blank_png_and_svg() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("toy").join("smoke");
    write_metrics(&run, 40, false);
    let files = run_plots(&run).unwrap();
    assert_eq!(files.len(), 8, "{files:?}");
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".png") {
            let img = image::open(f).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), contrast_report::plot::SIZE, "{name}");
            let ink = ink_fraction(&img);
            println!(
                "{name}: {}×{}, {:.3} of pixels drawn",
                img.width(),
                img.height(),
                ink
            );
            assert!(ink > 0.01 && ink < 0.6, "{name}: ink fraction {ink}");
            // the plot area holds coloured line pixels (Tableau blue for the first series)
            let blue = img.pixels().filter(|p| p.0 == [31, 119, 180]).count();
            assert!(
                blue > 200,
                "{name}: {blue} pixels of the first series' colour"
            );
        } else {
            let svg = std::fs::read_to_string(f).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.contains("toy / smoke"),
                "{name}"
            );
            assert!(
                svg.contains("<polyline") || svg.contains("<circle"),
                "{name}: no series"
            );
        }
    }
    // no metrics yet: nothing to draw, no error
    let empty = root.path().join("toy").join("fresh");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(run_plots(&empty).unwrap().is_empty());
}

#[test]
fn image_tools_place_pixels_where_asked() {
    let red = RgbImage::from_pixel(4, 3, Rgb([255, 0, 0]));
    let blue = RgbImage::from_pixel(2, 5, Rgb([0, 0, 255]));
    let g = images::grid(&[red.clone(), blue.clone(), red.clone()], 2, 1).unwrap();
    // cells 4×5, 2 columns, 2 rows, 1 px padding
    assert_eq!(g.dimensions(), (2 * 4 + 3, 2 * 5 + 3));
    assert_eq!(g.get_pixel(1, 1).0, [255, 0, 0]);
    assert_eq!(g.get_pixel(6, 1).0, [0, 0, 255]);
    assert_eq!(g.get_pixel(6, 5).0, [0, 0, 255]);
    assert_eq!(g.get_pixel(0, 0).0, [255, 255, 255]);
    assert_eq!(g.get_pixel(1, 7).0, [255, 0, 0]);

    let mut img = RgbImage::from_pixel(10, 8, Rgb([0, 0, 0]));
    images::draw_box(&mut img, 2, 1, 7, 5, [0, 255, 0], 1);
    for (x, y, on) in [
        (2, 1, true),
        (6, 4, true),
        (4, 1, true),
        (2, 3, true),
        (4, 3, false),
        (7, 1, false),
        (1, 1, false),
    ] {
        assert_eq!(img.get_pixel(x, y).0 == [0, 255, 0], on, "({x}, {y})");
    }
    let mut img = RgbImage::from_pixel(2, 1, Rgb([100, 100, 100]));
    images::overlay_mask(&mut img, &[true, false], [200, 0, 0], 0.5).unwrap();
    assert_eq!(img.get_pixel(0, 0).0, [150, 50, 50]);
    assert_eq!(img.get_pixel(1, 0).0, [100, 100, 100]);
    assert!(images::overlay_mask(&mut img, &[true], [0, 0, 0], 0.5).is_err());

    let planar = [0.0f32, 1.0, 0.5, 0.25]; // [1, 2, 2]
    let p = images::from_planar(&planar, 1, 2, 2, 0.0, 1.0).unwrap();
    assert_eq!(p.get_pixel(1, 0).0, [255, 255, 255]);
    assert_eq!(p.get_pixel(0, 1).0, [128, 128, 128]);
    assert_eq!(images::upscale(&p, 3).dimensions(), (6, 6));

    let c = images::caption(&p, "a caption").unwrap();
    assert_eq!(c.height(), 2 + 22);
    assert!(c.width() >= 9 * 7, "the strip is as wide as the text");
    assert!(ink_fraction(&c) > 0.0);
}

/// Metrics of a fixture run: the total loss and two terms (the second only for the method),
/// the learning rate, a gradient norm, and a kNN evaluation every 10 steps, shifted by `shift`.
fn write_run_metrics(dir: &Path, steps: u64, shift: f64, with_term_b: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut s = String::new();
    for t in 1..=steps {
        let x = t as f64;
        let a = 4.0 / (1.0 + x / 20.0) + 0.05 * shift;
        let b = if with_term_b {
            20.0 / (1.0 + x / 5.0)
        } else {
            0.0
        };
        s.push_str(&format!(
            "{{\"step\":{t},\"total\":{},\"term_a\":{a},\"term_b\":{b},\"lr\":{},\"grad_norm\":{},\"epoch\":{},\"elapsed_s\":{}}}\n",
            a + b,
            1e-3 * x.min(10.0) / 10.0,
            3.0 + (x / 7.0).sin(),
            t / 10,
            x * 1.5
        ));
        if t % 10 == 0 {
            s.push_str(&format!(
                "{{\"step\":{t},\"knn_top1_k10\":{}}}\n",
                20.0 + x / 5.0 + shift
            ));
        }
    }
    std::fs::write(dir.join("metrics.jsonl"), s).unwrap();
}

/// A schema-1 report as the Trainer writes it, with kNN and linear-probe details.
#[allow(clippy::too_many_arguments)]
fn write_report(
    dir: &Path,
    method: &str,
    variant: &str,
    metric: &str,
    value: f64,
    seed: u64,
    device: &str,
    paper: serde_json::Value,
) {
    std::fs::create_dir_all(dir).unwrap();
    let report = serde_json::json!({
        "schema": 1, "method": method, "variant": variant, "metric": metric, "value": value,
        "paper": paper, "data": "CIFAR-10 <subset> 1000 / 500", "epochs": 2,
        "model": "ResNet-18 (1 block per stage)", "steps": 30, "batch_size": 32,
        "precision": "fp32", "seed": seed, "train_wall_s": 100.0, "wall_s": 123.456,
        "samples_per_s": 9.6123, "commit": "abc1234", "device": device, "threads": 2,
        "eval_protocol": {"knn_t": 0.07, "test_transform": "Resize(36) + CenterCrop(32)"},
        "knn": [{"k": 20, "top1": value + 1.0 / 3.0}, {"k": 200, "top1": value - 0.5}],
        "linear": {"best_epoch": 24, "best_top1": value + 0.7, "last_top1": value + 0.2, "epochs": 30}
    });
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
}

/// `(ours, baseline)` headline values per seed of the fixture methods, and the verdict each
/// must get: the differences' mean and spread decide it (t(0.975, 2) = 4.30).
/// `(method, (ours, baseline) per seed, expected verdict)`.
type Fixture = (&'static str, &'static [(f64, f64)], &'static str);

const FIXTURES: &[Fixture] = &[
    // Δ = 0.9, 1.0, 0.8: mean 0.9, sd 0.1 → 0.9 ± 0.25, above 0
    (
        "alpha",
        &[(31.4, 30.5), (31.9, 30.9), (31.6, 30.8)],
        "better",
    ),
    // Δ = 1.0, −1.5, 1.1: mean 0.2, sd 1.47 → 0.2 ± 3.7, contains 0
    (
        "beta",
        &[(40.0, 39.0), (38.0, 39.5), (39.9, 38.8)],
        "within noise",
    ),
    // Δ = −2.0, −2.2, −1.8 → −2.0 ± 0.5, below 0
    (
        "gamma",
        &[(27.0, 29.0), (27.3, 29.5), (26.9, 28.7)],
        "worse",
    ),
    // one seed, no interval
    ("delta", &[(19.166666666666668, 17.5)], "within noise"),
];

/// A runs folder as `reproduce` leaves it: three methods with `--seeds 3` summaries, one
/// method run once beside its baseline, one run without a baseline, one report of an older
/// layout, one GPU verification. Returns the runs root.
fn fixture_runs(root: &Path) -> std::path::PathBuf {
    let runs = root.join("runs");
    let paper = serde_json::json!({"dataset": "CIFAR-10, full data, 800 epochs", "knn": 92.9, "linear": 94.4});
    for (method, values, _) in FIXTURES {
        let mut pairs = Vec::new();
        for (i, &(ours, base)) in values.iter().enumerate() {
            let seed = 7 + i as u64;
            let prefix = if values.len() == 1 {
                "smoke".to_string()
            } else {
                format!("smoke-seed{seed}")
            };
            let (o, b) = (prefix.clone(), format!("{prefix}-base"));
            // `delta` is from an older binary: the device as tch's Debug spelling
            let device = if *method == "delta" { "Cpu" } else { "cpu" };
            for (run, variant, v, term_b) in
                [(&o, "ours-v", ours, true), (&b, "base-v", base, false)]
            {
                let dir = runs.join(method).join(run);
                write_report(
                    &dir,
                    method,
                    variant,
                    "kNN top-1 (k=10, T=0.07)",
                    v,
                    seed,
                    device,
                    paper.clone(),
                );
                write_run_metrics(&dir, 30, v - 30.0, term_b);
            }
            pairs.push(contrast_report::seeds::SeedPair {
                seed,
                ours,
                baseline: base,
                runs: [format!("{method}/{o}"), format!("{method}/{b}")],
            });
        }
        if values.len() > 1 {
            contrast_report::seeds::SeedSummary::new(
                method,
                "smoke",
                "kNN top-1 (k=10, T=0.07)",
                true,
                pairs,
            )
            .unwrap()
            .write(&runs.join(method).join("smoke-seeds.json"))
            .unwrap();
        }
    }
    // method figures: one of ours (first seed), one of the baseline
    for (run, rgb) in [
        ("smoke-seed7", [10, 200, 30]),
        ("smoke-seed7-base", [200, 10, 30]),
    ] {
        let fig = runs.join("alpha").join(run).join("figures");
        std::fs::create_dir_all(&fig).unwrap();
        images::save_png(
            &RgbImage::from_pixel(16, 16, Rgb(rgb)),
            &fig.join("pca.png"),
        )
        .unwrap();
    }
    // a run with no baseline beside it (a retrieval method)
    let solo = runs.join("solo").join("smoke");
    std::fs::create_dir_all(&solo).unwrap();
    let mut r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(runs.join("delta/smoke/report.json")).unwrap(),
    )
    .unwrap();
    r["method"] = "solo".into();
    r["metric"] = "MRR (paired, whole test gallery)".into();
    r["value"] = 0.16833804641017108.into();
    r["paper"] = serde_json::json!({"dataset": "private radiographs", "mrr": 0.82});
    std::fs::write(solo.join("report.json"), r.to_string()).unwrap();
    write_run_metrics(&solo, 20, 0.0, false);
    // a run without report.json is not listed; one of an older layout is listed as left off
    std::fs::create_dir_all(runs.join("beta/unfinished")).unwrap();
    std::fs::create_dir_all(runs.join("beta/old-layout")).unwrap();
    std::fs::write(
        runs.join("beta/old-layout/report.json"),
        r#"{"method": "beta", "metric": "kNN top-1", "value": 1.0}"#,
    )
    .unwrap();
    // a GPU verification of alpha: ours, baseline and the official code at a common epoch
    let verify = runs.join("verify");
    std::fs::create_dir_all(&verify).unwrap();
    let v = serde_json::json!({
        "method": "alpha", "device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "commit": "abcdef0123456789",
        "official": {"commit": "21ace32d37"}, "tiny": false, "epochs": 19, "warmup_epochs": 2,
        "steps_per_epoch": 39, "data": {"train": 20000, "test": 10000, "source": "cifar"},
        "settings": {"batch": 512, "depth": 12, "patch": 2, "mlp_dim": 4096, "seed": 7, "knn_k": [10, 200]},
        "precision": {"ours": "bf16", "official": "fp16"},
        "paper": {"setting": "800 epochs", "knn": 92.9, "linear": 94.4},
        "runs": {
            "ours": {"label": "ours", "status": "ok", "epochs": [{"epoch": 18, "knn_top1_k10": 55.21, "loss": 6.4}]},
            "baseline": {"label": "baseline", "status": "ok", "epochs": [{"epoch": 18, "knn_top1_k10": 50.04}]},
            "official": {"label": "official", "status": "ok", "epochs": [{"epoch": 18, "knn_top1_k10": 54.87}]}
        }
    });
    std::fs::write(verify.join("verify-alpha-h100.json"), v.to_string()).unwrap();
    images::save_png(
        &RgbImage::from_pixel(32, 16, Rgb([90, 90, 200])),
        &verify.join("verify-alpha-h100.png"),
    )
    .unwrap();
    runs
}

/// `html` without its `<details>` folds (nested ones included).
fn outside_details(html: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    let mut rest = html;
    loop {
        let open = rest.find("<details");
        let close = rest.find("</details>");
        match (open, close) {
            (Some(o), Some(c)) if o < c => {
                if depth == 0 {
                    out.push_str(&rest[..o]);
                }
                depth += 1;
                rest = &rest[o + 8..];
            }
            (_, Some(c)) => {
                if depth == 0 {
                    out.push_str(&rest[..c]);
                }
                depth = depth.saturating_sub(1);
                rest = &rest[c + 10..];
            }
            (_, None) => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

/// The text of every `<td>` / `<th>` cell.
fn cells(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for tag in ["<td", "<th"] {
        let close = if tag == "<td" { "</td>" } else { "</th>" };
        let mut rest = html;
        while let Some(i) = rest.find(tag) {
            let after = &rest[i + 3..];
            if !(after.starts_with('>') || after.starts_with(' ')) {
                rest = after;
                continue;
            }
            let Some(gt) = after.find('>') else { break };
            let Some(end) = after.find(close) else { break };
            out.push(after[gt + 1..end.max(gt + 1)].to_string());
            rest = &after[end..];
        }
    }
    out
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let i = tag.find(&key)? + key.len();
    let j = tag[i..].find('"')?;
    Some(&tag[i..i + j])
}

/// Every verdict cell: (verdict attribute, delta, half-width, higher is better, shown text).
fn verdict_cells(html: &str) -> Vec<(String, f64, Option<f64>, bool, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<td class=\"verdict") {
        let after = &rest[i..];
        let gt = after.find('>').unwrap();
        let tag = &after[..gt];
        let end = after.find("</td>").unwrap();
        let text = after[gt + 1..end].to_string();
        if let Some(d) = attr(tag, "data-delta") {
            out.push((
                attr(tag, "data-verdict").unwrap().to_string(),
                d.parse().unwrap(),
                attr(tag, "data-half")
                    .filter(|h| !h.is_empty())
                    .map(|h| h.parse().unwrap()),
                attr(tag, "data-hib") == Some("true"),
                text,
            ));
        }
        rest = &after[end..];
    }
    out
}

/// The verdict of a difference and its half-width, written out here on its own (not the
/// crate's function) to check the page against.
fn expected_verdict(d: f64, h: Option<f64>, hib: bool) -> &'static str {
    match h {
        Some(h) if d - h > 0.0 => {
            if hib {
                "better"
            } else {
                "worse"
            }
        }
        Some(h) if d + h < 0.0 => {
            if hib {
                "worse"
            } else {
                "better"
            }
        }
        _ => "within noise",
    }
}

/// The glance table's row of `method`: its cells' text.
fn glance_row(html: &str, method: &str) -> Vec<String> {
    let table = &html[html.find("<table class=\"glance\">").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    let row = table
        .split("<tr>")
        .find(|r| r.contains(&format!(">{method}</a></td>")))
        .unwrap_or_else(|| panic!("no glance row for {method}"));
    cells(row)
        .into_iter()
        .map(|c| {
            // strip tags
            let mut t = String::new();
            let mut inside = false;
            for ch in c.chars() {
                match ch {
                    '<' => inside = true,
                    '>' => inside = false,
                    _ if !inside => t.push(ch),
                    _ => {}
                }
            }
            t
        })
        .collect()
}

#[test]
fn results_page_from_fixture_reports_reads_at_a_glance() {
    let root = tempfile::tempdir().unwrap();
    let runs = fixture_runs(root.path());
    let reports = collect_reports(&runs).unwrap();
    assert_eq!(
        reports.len(),
        3 * 2 * 3 + 2 + 1,
        "the old layout is left off"
    );
    let md = comparison_markdown(&reports);
    assert!(
        md.contains("| delta | smoke | ours-v | kNN top-1 (k=10, T=0.07) | 19.2 | dataset CIFAR-10, full data, 800 epochs, knn 92.9, linear 94.4 |"),
        "{md}"
    );
    assert!(md.contains("| cpu | 2 |") && !md.contains("Cpu"), "{md}");

    let out = root.path().join("report.html");
    let bench = root.path().join("RESULTS.md");
    std::fs::write(&bench, "| bench | ratio |\n|---|---|\n| augment | 20.6 |\n").unwrap();
    let opts = PageOptions {
        bench_results: Some(bench),
        pairs: ["alpha", "beta", "gamma", "delta"]
            .iter()
            .map(|m| RunPair::new(m, "", "-base"))
            .collect(),
    };
    let s = write_page_with(&runs, &out, &opts).unwrap();
    let html = std::fs::read_to_string(&out).unwrap();
    assert_eq!((s.methods, s.runs, s.comparisons), (5, 21, 4), "{s:?}");
    assert_eq!(html.matches("<img ").count(), s.images);
    assert!(
        !html.contains("src=\"/") && !html.contains("http"),
        "self-contained"
    );

    // the top: one row per method, each with the verdict its numbers give
    let glance = html.find("id=\"glance\"").unwrap();
    assert!(glance < html.find("<h2 id=\"alpha\"").unwrap());
    for (method, values, verdict) in FIXTURES {
        let row = glance_row(&html, method);
        println!("{method}: {row:?}");
        assert!(row[6].starts_with(verdict), "{method}: {row:?}");
        assert!(
            row[1].contains(&format!("{} seed", values.len())),
            "{row:?}"
        );
    }
    assert_eq!(
        glance_row(&html, "alpha")[5],
        "+0.9 ± 0.2",
        "Δ 0.9, 1.0, 0.8: 0.9 ± 4.303·0.1/√3"
    );
    assert_eq!(glance_row(&html, "alpha")[3], "31.6 ± 0.3");
    assert_eq!(
        glance_row(&html, "delta")[3],
        "19.2",
        "a 15-digit float rounded to 0.1 %"
    );
    assert_eq!(glance_row(&html, "delta")[6], "within noise (one seed)");
    assert_eq!(glance_row(&html, "alpha")[7], "92.9", "the paper's kNN");
    assert_eq!(glance_row(&html, "alpha")[8], "yes, see below");
    assert_eq!(glance_row(&html, "beta")[8], "not yet");
    let solo = glance_row(&html, "solo");
    assert_eq!(
        (solo[3].as_str(), solo[6].as_str(), solo[7].as_str()),
        ("0.168", "no baseline run", "0.82")
    );

    // every verdict cell (glance and headline tables, secondary metrics too) matches its numbers
    let verdicts = verdict_cells(&html);
    assert!(verdicts.len() >= 4 + 4 * 5, "{}", verdicts.len());
    for (v, d, h, hib, text) in &verdicts {
        assert_eq!(v, expected_verdict(*d, *h, *hib), "Δ {d} ± {h:?}");
        assert!(text.starts_with(v.as_str()), "{text} vs {v}");
    }
    // the headline table: secondary results summarised too, the paper's scale, official and GPU
    let alpha =
        &html[html.find("<h2 id=\"alpha\"").unwrap()..html.find("<h2 id=\"beta\"").unwrap()];
    for want in [
        "kNN top-1 %, k = 20",
        "linear top-1 %, last epoch",
        "CIFAR-10, full data, 800 epochs",
        "official code 54.9 vs ours 55.2 (+0.3): kNN top-1 k=10 @ epoch 18 on the GPU",
        "ours 55.2 / baseline 50.0: kNN top-1 k=10 @ epoch 18; NVIDIA H100 80GB HBM3 (19 epochs)",
        "Loss terms (each its own y axis)",
        "ours, seed 7: pca",
    ] {
        assert!(alpha.contains(&esc(want)), "alpha section lacks {want}");
    }
    let beta = &html[html.find("<h2 id=\"beta\"").unwrap()..html.find("<h2 id=\"delta\"").unwrap()];
    assert_eq!(
        beta.matches("<td rowspan").count(),
        3,
        "scale, official, GPU"
    );
    assert!(beta.contains(">not yet</td><td rowspan=\"") && beta.contains(">not yet</td></tr>"));
    // figures come after the curves, the raw JSON last and folded
    let (curves, figs, raw) = (
        alpha.find("training loss").unwrap(),
        alpha.find("<h5>Figures").unwrap(),
        alpha.find("Raw report.json").unwrap(),
    );
    assert!(curves < figs && figs < raw);

    // outside the folds: no raw JSON in any cell, no Debug device names, no 15-digit floats
    let visible = outside_details(&html);
    for c in cells(&visible) {
        assert!(
            !c.contains('{') && !c.contains('}') && !c.contains("\":") && !c.contains("&quot;:"),
            "raw JSON in a cell: {c}"
        );
    }
    assert!(!visible.contains("Cpu") && visible.contains(">cpu, fp32, 2 threads<"));
    assert!(!visible.contains("19.166666") && !visible.contains("0.1683380"));
    assert!(visible.contains("Every run"));
    assert!(html.contains("1 report.json of an older layout left off"));
    // …but the raw report is there, folded
    assert!(html.contains("&quot;eval_protocol&quot;: {"));

    let Some(browser) = chromium() else {
        println!("SKIPPED the browser check: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let url = format!("file://{}", out.display());
    let o = std::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
            &url,
        ])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    let check = dom
        .lines()
        .find(|l| l.contains("id=\"page-check\""))
        .unwrap_or("no page-check line");
    let tag = &dom[dom.find("id=\"page-check\"").expect("page-check rendered")..];
    let n = |name: &str| -> usize {
        attr(tag, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(usize::MAX)
    };
    assert_eq!(n("data-images"), s.images, "{check}");
    assert_eq!(
        n("data-broken"),
        0,
        "chromium did not decode every image: {check}"
    );
    assert_eq!(
        n("data-json-cells"),
        0,
        "a rendered cell holds raw JSON: {check}"
    );
    assert_eq!(n("data-verdicts"), verdicts.len(), "{check}");
    assert_eq!(n("data-verdict-mismatch"), 0, "{check}");
    // the rendered DOM still shows the verdicts where the numbers put them
    for (method, _, verdict) in FIXTURES {
        assert!(
            glance_row(&dom, method)[6].starts_with(verdict),
            "{method} in the DOM"
        );
    }
    // a screenshot for a reader to look at
    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-page.png");
    let shot = std::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
            "--window-size=1500,2600",
            &format!("--screenshot={}", png.display()),
            &url,
        ])
        .output()
        .unwrap();
    assert!(shot.status.success() && png.is_file(), "no screenshot");
    let img = image::open(&png).unwrap().to_rgb8();
    assert!(ink_fraction(&img) > 0.02, "the screenshot is blank");
    println!(
        "chromium {browser}: {} images loaded, 0 cells with raw JSON, {} verdicts match; screenshot {}",
        s.images,
        verdicts.len(),
        png.display()
    );
}

fn esc(s: &str) -> String {
    contrast_report::page::esc(s)
}

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_string)
}
