//! Reports render and open: metrics parsing (also mid-write), chart families, PNG decoding
//! (size, not blank), image tools, the comparison table, and the HTML page loaded in headless
//! Chromium with every image decoded (skipped with a message when Chromium is absent).

use contrast_report::images::{self, ink_fraction};
use contrast_report::metrics::{charts, family, read_metrics, series, Family};
use contrast_report::page::{collect_reports, comparison_markdown, write_page};
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

#[test]
fn comparison_page_embeds_everything_and_loads_in_chromium() {
    let root = tempfile::tempdir().unwrap();
    let runs = root.path().join("runs");
    for (method, run, value) in [
        ("patchmix", "smoke", 31.4),
        ("patchmix", "smoke-nomix", 30.5),
        ("spps", "smoke", 40.0),
    ] {
        let dir = runs.join(method).join(run);
        write_metrics(&dir, 20, false);
        let report = serde_json::json!({
            "schema": 1, "method": method, "variant": run, "metric": "kNN top-1", "value": value,
            "paper": {"knn": 92.9, "linear": 94.4}, "data": "CIFAR-10 <subset>", "epochs": 3,
            "model": "ViT-T/4", "steps": 30, "batch_size": 32, "precision": "fp32", "seed": 0,
            "train_wall_s": 100.0, "wall_s": 123.456, "samples_per_s": 9.6, "commit": null,
            "device": "cpu", "threads": 2,
            "knn": [{"k": 10, "top1": value}, {"k": 20, "top1": value}]
        });
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string(&report).unwrap(),
        )
        .unwrap();
    }
    // a method figure
    let fig = runs.join("patchmix/smoke/figures");
    std::fs::create_dir_all(&fig).unwrap();
    images::save_png(
        &RgbImage::from_pixel(8, 8, Rgb([10, 200, 30])),
        &fig.join("mixed.png"),
    )
    .unwrap();
    // a run without report.json is not listed, nor one of an older layout (with a warning)
    std::fs::create_dir_all(runs.join("spps/unfinished")).unwrap();
    std::fs::create_dir_all(runs.join("spps/old-layout")).unwrap();
    std::fs::write(
        runs.join("spps/old-layout/report.json"),
        r#"{"method": "spps", "metric": "kNN top-1", "value": 1.0}"#,
    )
    .unwrap();
    // two `--seeds 3` summaries: one clearly better, one within noise
    let pair = |seed, ours, baseline| contrast_report::seeds::SeedPair {
        seed,
        ours,
        baseline,
        runs: ["a".into(), "b".into()],
    };
    for (method, pairs) in [
        (
            "patchmix",
            vec![
                pair(7, 31.4, 30.5),
                pair(8, 31.9, 30.9),
                pair(9, 31.6, 30.8),
            ],
        ),
        (
            "spps",
            vec![
                pair(7, 40.0, 39.0),
                pair(8, 38.0, 39.5),
                pair(9, 39.9, 38.8),
            ],
        ),
    ] {
        contrast_report::seeds::SeedSummary::new(method, "smoke", "kNN top-1", true, pairs)
            .unwrap()
            .write(&runs.join(method).join("smoke-seeds.json"))
            .unwrap();
    }

    let reports = collect_reports(&runs).unwrap();
    assert_eq!(reports.len(), 3);
    let md = comparison_markdown(&reports);
    assert!(
        md.contains("| patchmix | smoke | smoke | kNN top-1 | 31.40 | knn 92.90, linear 94.40 |"),
        "{md}"
    );
    assert_eq!(md.lines().count(), 5);

    let out = root.path().join("report.html");
    let bench = root.path().join("RESULTS.md");
    std::fs::write(&bench, "| bench | ratio |\n|---|---|\n| augment | 20.6 |\n").unwrap();
    let s = write_page(&runs, &out, Some(&bench)).unwrap();
    // 3 runs × 4 charts (loss, lr, schedules, eval) + 1 figure
    assert_eq!((s.methods, s.runs, s.images), (2, 3, 13));
    let html = std::fs::read_to_string(&out).unwrap();
    assert_eq!(html.matches("<img ").count(), 13);
    assert!(html.contains("CIFAR-10 &lt;subset&gt;"), "text is escaped");
    assert!(html.contains("augment | 20.6"));
    // the seed table comes first, its verdicts match the numbers (computed, not written)
    let seeds_at = html.find("Method vs baseline over seeds").unwrap();
    assert!(seeds_at < html.find("All runs").unwrap());
    assert!(
        html.contains("data-verdict=\"better\"") && html.contains("data-verdict=\"within noise\"")
    );
    assert!(
        html.contains("+0.90 ± 0.25"),
        "patchmix: Δ = 0.9, 1.0, 0.8 → 0.90 ± 4.3027·0.1/√3"
    );
    // no table cell holds raw JSON
    assert!(
        !html.contains("<td>{") && !html.contains("<td>["),
        "raw JSON in a cell"
    );
    // the nested `knn` list shows as text, its JSON folded away
    assert!(
        html.contains("<td>k 10, top1 31.40, k 20, top1 31.40<details><summary>JSON</summary>"),
        "nested values are not folded"
    );
    assert!(
        !html.contains("src=\"/") && !html.contains("http"),
        "self-contained"
    );

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
            "--virtual-time-budget=5000",
            "--dump-dom",
            &url,
        ])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    assert!(
        dom.contains("data-total=\"13\" data-broken=\"0\""),
        "chromium did not load every image: {}",
        dom.lines()
            .find(|l| l.contains("image-check"))
            .unwrap_or("no image-check line")
    );
    assert!(
        dom.contains("data-verdict=\"better\"") && dom.contains("data-verdict=\"within noise\""),
        "the rendered page lost the verdicts"
    );
    // a screenshot for a reader to look at
    let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-page.png");
    let shot = std::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,1200",
            &format!("--screenshot={}", png.display()),
            &url,
        ])
        .output()
        .unwrap();
    assert!(shot.status.success() && png.is_file(), "no screenshot");
    println!(
        "chromium {browser}: 13 of 13 images loaded, verdicts rendered; screenshot {}",
        png.display()
    );
}
