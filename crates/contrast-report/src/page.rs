//! Every run's `report.json` as one table (`cargo xtask compare`) and as one self-contained HTML
//! page (`cargo xtask report`): per method, our numbers beside the paper's and our baseline's,
//! settings, hardware, wall time, the run's curves (`plots/`) and figures (`figures/`), and the
//! benchmark table when present. Images are embedded as `data:` URIs: the page needs no network
//! and no files beside it.
//!
//! Reports are read as the typed [`crate::run_report::RunReport`] (schema 1): a `report.json`
//! that does not load (an older layout, a missing field) is left off the page with one warning
//! line naming the file and the field.

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One run's report, as found under the runs folder.
#[derive(Debug, Clone)]
pub struct CollectedRun {
    pub method: String,
    pub run: String,
    pub dir: PathBuf,
    /// The typed report.
    pub typed: crate::run_report::RunReport,
    /// The same report as JSON (for the method's own detail fields).
    pub report: Value,
}

/// All `<runs_root>/<method>/<run>/report.json` that load as a typed report, sorted by method
/// then run. A file that is not JSON is an error naming it; a report of another layout is
/// skipped with a warning naming the file and the missing or malformed field.
pub fn collect_reports(runs_root: &Path) -> Result<Vec<CollectedRun>> {
    let mut out = Vec::new();
    if !runs_root.exists() {
        return Ok(out);
    }
    for m in sorted_dirs(runs_root)? {
        for r in sorted_dirs(&m)? {
            let p = r.join("report.json");
            if !p.exists() {
                continue;
            }
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            let report: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", p.display()))?;
            anyhow::ensure!(report.is_object(), "{} is not a JSON object", p.display());
            let typed = match crate::run_report::RunReport::from_value(report.clone()) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("warning: {} left off: {e:#}", p.display());
                    continue;
                }
            };
            out.push(CollectedRun {
                method: file_name(&m),
                run: file_name(&r),
                dir: r,
                typed,
                report,
            });
        }
    }
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default()
}

fn sorted_dirs(p: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(p)
        .with_context(|| format!("cannot list {}", p.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    Ok(v)
}

/// A field as display text ("–" when absent); numbers with up to 4 significant decimals.
pub fn field(v: &Value, key: &str) -> String {
    fmt_value(v.get(key).unwrap_or(&Value::Null))
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
            Some(x) if x.abs() >= 100.0 => format!("{x:.1}"),
            Some(x) if x.abs() >= 1.0 => format!("{x:.2}"),
            Some(x) => format!("{x:.4}"),
            None => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Object(o) => o
            .iter()
            .filter(|(_, v)| !v.is_object() && !v.is_array())
            .map(|(k, v)| format!("{k} {}", fmt_value(v)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(a) => a.iter().map(fmt_value).collect::<Vec<_>>().join(", "),
    }
}

/// Columns of the comparison table: (header, report key).
pub const COLUMNS: &[(&str, &str)] = &[
    ("variant", "variant"),
    ("metric", "metric"),
    ("ours", "value"),
    ("paper", "paper"),
    ("data", "data"),
    ("model", "model"),
    ("epochs", "epochs"),
    ("wall s", "wall_s"),
    ("samples/s", "samples_per_s"),
    ("device", "device"),
    ("threads", "threads"),
];

/// The comparison table as Markdown (one row per run).
pub fn comparison_markdown(reports: &[CollectedRun]) -> String {
    let mut s = String::from("| method | run |");
    for (h, _) in COLUMNS {
        let _ = write!(s, " {h} |");
    }
    s.push_str("\n|---|---|");
    s.push_str(&"---|".repeat(COLUMNS.len()));
    s.push('\n');
    for r in reports {
        let _ = write!(s, "| {} | {} |", r.method, r.run);
        for (_, k) in COLUMNS {
            let _ = write!(s, " {} |", field(&r.report, k).replace('|', "/"));
        }
        s.push('\n');
    }
    s
}

/// HTML-escape text.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `<img>` with the file embedded as a `data:` URI (PNG, SVG or JPEG by extension).
pub fn embedded_img(path: &Path, alt: &str) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mime = match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => "image/svg+xml",
        Some("jpg") | Some("jpeg") => "image/jpeg",
        _ => "image/png",
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    Ok(format!(
        "<img alt=\"{}\" title=\"{}\" src=\"data:{mime};base64,{b64}\">",
        esc(alt),
        esc(alt)
    ))
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The machine the page is generated on (CPU model, cores, memory) from /proc.
pub fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(String::new(), |kb| {
            format!(", {:.0} GiB", kb / 1024.0 / 1024.0)
        });
    format!("{cpu}, {cores} cores{mem}")
}

/// What [`write_page`] put on the page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageSummary {
    pub methods: usize,
    pub runs: usize,
    pub images: usize,
}

/// Write the comparison page for every run under `runs_root` to `out` (regenerating each run's
/// curves first, so that runs in progress are current). `bench_results`: a Markdown file
/// (e.g. `benches/RESULTS.md`) shown verbatim when it exists.
/// The page's first table: one row per `reproduce --seeds` summary, with the computed verdict.
pub fn seeds_section(all: &[crate::seeds::SeedSummary]) -> String {
    if all.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "<h2 id=\"seeds\">Method vs baseline over seeds</h2>\n<table class=\"seeds\">\n\
         <tr><th>method</th><th>preset</th><th>metric</th><th>seeds</th><th>ours (mean ± sd)</th>\
         <th>baseline (mean ± sd)</th><th>ours − baseline (95 % interval)</th><th>verdict</th>\
         <th>per seed: ours / baseline</th></tr>\n",
    );
    for x in all {
        let per_seed = x
            .pairs
            .iter()
            .map(|p| format!("{}: {:.2} / {:.2}", p.seed, p.ours, p.baseline))
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            s,
            "<tr><td><a href=\"#{m}\">{m}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{:.2} ± {:.2}</td><td>{:.2} ± {:.2}</td><td>{}</td>\
             <td class=\"verdict\" data-verdict=\"{v}\"><b>{v}</b></td><td>{}</td></tr>",
            esc(&x.preset),
            esc(&x.metric),
            x.pairs.len(),
            x.ours_mean,
            x.ours_sd,
            x.baseline_mean,
            x.baseline_sd,
            esc(&x.delta_text()),
            esc(&per_seed),
            m = esc(&x.method),
            v = x.verdict.text(),
        );
    }
    s.push_str(
        "</table>\n<p>The interval is Student's t over the paired per-seed differences \
         (mean ± t(0.975, n − 1) · sd / √n); the verdict is computed from it: <i>better</i> or \
         <i>worse</i> when the interval excludes 0, <i>within noise</i> when it contains 0 or \
         when there is one seed.</p>\n",
    );
    s
}

pub fn write_page(
    runs_root: &Path,
    out: &Path,
    bench_results: Option<&Path>,
) -> Result<PageSummary> {
    let reports = collect_reports(runs_root)?;
    let mut body = seeds_section(&crate::seeds::collect(runs_root)?);
    let mut summary = PageSummary {
        runs: reports.len(),
        ..Default::default()
    };
    let _ = writeln!(
        body,
        "<h2>All runs</h2>\n<table>\n<tr><th>method</th><th>run</th>{}</tr>",
        COLUMNS
            .iter()
            .map(|(h, _)| format!("<th>{}</th>", esc(h)))
            .collect::<String>()
    );
    for r in &reports {
        let _ = writeln!(
            body,
            "<tr><td><a href=\"#{m}\">{m}</a></td><td><a href=\"#{m}-{r_}\">{r_}</a></td>{}</tr>",
            COLUMNS
                .iter()
                .map(|(_, k)| format!("<td>{}</td>", esc(&field(&r.report, k))))
                .collect::<String>(),
            m = esc(&r.method),
            r_ = esc(&r.run),
        );
    }
    body.push_str("</table>\n");
    if reports.is_empty() {
        let _ = writeln!(
            body,
            "<p>No run with a report.json under <code>{}</code> yet: run e.g. \
             <code>cargo xtask reproduce patchmix --preset smoke</code>.</p>",
            esc(&runs_root.display().to_string())
        );
    }

    let mut method = String::new();
    for r in &reports {
        if r.method != method {
            method = r.method.clone();
            summary.methods += 1;
            let _ = writeln!(body, "<h2 id=\"{m}\">{m}</h2>", m = esc(&method));
        }
        let _ = writeln!(
            body,
            "<h3 id=\"{}-{}\">{} / {}</h3>",
            esc(&r.method),
            esc(&r.run),
            esc(&r.method),
            esc(&r.run)
        );
        body.push_str("<table class=\"kv\">\n");
        let keys: Vec<&String> = r
            .report
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        for k in keys {
            let v = &r.report[k.as_str()];
            // nested values: the flat fields as text, the raw JSON folded away
            let cell = if v.is_array() || (v.is_object() && k != "paper") {
                format!(
                    "{}<details><summary>JSON</summary><code>{}</code></details>",
                    esc(&fmt_value(v)),
                    esc(&serde_json::to_string(v).unwrap_or_default())
                )
            } else {
                esc(&fmt_value(v))
            };
            let _ = writeln!(body, "<tr><th>{}</th><td>{cell}</td></tr>", esc(k));
        }
        body.push_str("</table>\n");
        // curves: regenerate from metrics.jsonl (a run in progress is shown as it stands)
        if let Err(e) = crate::run_plots(&r.dir) {
            let _ = writeln!(
                body,
                "<p class=\"warn\">curves not drawn: {}</p>",
                esc(&format!("{e:#}"))
            );
        }
        for (sub, ext, class) in [("plots", "svg", "plot"), ("figures", "png", "figure")] {
            let files = files_with(&r.dir.join(sub), ext);
            if files.is_empty() {
                continue;
            }
            let _ = writeln!(body, "<div class=\"{class}s\">");
            for f in files {
                let name = f
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                let _ = writeln!(
                    body,
                    "<figure class=\"{class}\">{}<figcaption>{}</figcaption></figure>",
                    embedded_img(&f, &name)?,
                    esc(&name)
                );
                summary.images += 1;
            }
            body.push_str("</div>\n");
        }
    }
    let (verify, verify_images) = crate::verify::html_section(runs_root)?;
    body.push_str(&verify);
    summary.images += verify_images;
    if let Some(b) = bench_results.filter(|b| b.exists()) {
        let text =
            std::fs::read_to_string(b).with_context(|| format!("cannot read {}", b.display()))?;
        let _ = writeln!(
            body,
            "<h2 id=\"benchmarks\">Benchmarks</h2>\n<p>From <code>{}</code>.</p>\n<pre>{}</pre>",
            esc(&b.display().to_string()),
            esc(&text)
        );
    }
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>contrast: runs and results</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1em; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }}
table.kv th {{ background: #f4f4f4; white-space: nowrap; }}
table.kv td {{ max-width: 1000px; word-break: break-word; }}
.plots, .figures {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; }} figure img {{ max-width: 680px; border: 1px solid #ddd; }}
figure.figure img {{ image-rendering: pixelated; }}
figcaption {{ font-size: 12px; color: #555; }}
.warn {{ color: #a40; }} pre {{ background: #f7f7f7; padding: 8px; overflow-x: auto; }}
</style></head><body>
<h1>contrast: runs and results</h1>
<p>Generated from <code>{root}</code> on {machine}. Numbers are as measured by each run (its
<code>report.json</code>); the paper's numbers come from the run's preset and are usually at a
far larger scale than CPU smoke runs. <span id="image-check" data-total="" data-broken="">images
not checked yet</span></p>
{body}
<script>
window.addEventListener('load', function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) {{ return !(i.complete && i.naturalWidth > 0); }}).length;
  var m = document.getElementById('image-check');
  m.setAttribute('data-total', imgs.length);
  m.setAttribute('data-broken', broken);
  m.textContent = broken ? (broken + ' of ' + imgs.length + ' images failed to load')
                         : (imgs.length + ' images loaded');
}});
</script>
</body></html>
"#,
        root = esc(&runs_root.display().to_string()),
        machine = esc(&machine_description()),
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    crate::write_atomic(out, html.as_bytes())?;
    Ok(summary)
}
