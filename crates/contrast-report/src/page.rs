//! Every run's `report.json` as one table (`cargo xtask compare`) and as one self-contained HTML
//! page (`cargo xtask report`) a reader takes in at a glance:
//!
//! 1. **At a glance**: one row per method — its headline metric, ours and the baseline (mean ±
//!    sd over the seeds), the paired difference with its 95 % interval, the verdict computed
//!    from it ([`crate::seeds`]), the paper's number and whether a GPU run exists.
//! 2. Per method, per comparison (a `reproduce --seeds N` summary, or one method run beside
//!    its baseline run): the headline table (ours, baseline, difference ± interval, verdict,
//!    the paper's number and its scale ([`crate::paper`]), the official-code agreement and the
//!    GPU run, each "not yet" while absent), then the settings, data, hardware and commit in a
//!    compact block, the curves overlaid (method and baseline on one chart, each seed a thin
//!    line, the mean bold; every loss term its own small chart with its own y axis), the
//!    figures, and the raw `report.json` behind a fold.
//! 3. The GPU verification runs, the benchmark table, every run as an index.
//!
//! Numbers are rounded for their metric ([`crate::format`]). Images are embedded as `data:`
//! URIs: the page needs no network and no files beside it. A small script at the end checks the
//! page as it renders (images decoded, no raw JSON in a table cell outside a fold, every
//! verdict equal to the one its numbers give) and writes the result into `#page-check`.
//!
//! Reports are read as the typed [`crate::run_report::RunReport`] (schema 1): a `report.json`
//! that does not load (an older layout, a missing field) is left off with one warning line,
//! and listed at the end of the page.

use crate::format::{self, Unit};
use crate::metrics::{read_metrics, series, Family};
use crate::paper::{paper_ref, PaperRef};
use crate::plot::{Line, OverlayChart};
use crate::seeds::{MetricSummary, SeedPair, SeedSummary, Verdict};
use anyhow::{Context, Result};
use base64::Engine;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
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
    Ok(collect_all(runs_root)?.0)
}

/// A report left off the page: `method/run` and why.
type Skipped = (String, String);

/// [`collect_reports`], and the reports left off.
fn collect_all(runs_root: &Path) -> Result<(Vec<CollectedRun>, Vec<Skipped>)> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    if !runs_root.exists() {
        return Ok((out, skipped));
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
                    skipped.push((
                        format!("{}/{}", file_name(&m), file_name(&r)),
                        format!("{e:#}"),
                    ));
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
    Ok((out, skipped))
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

/// A field as display text ("–" when absent): the headline `value` rounded for its metric,
/// `device` as `--device` spells it, other numbers with four significant digits, nested
/// values as `key value` text (never JSON).
pub fn field(v: &Value, key: &str) -> String {
    let x = v.get(key).unwrap_or(&Value::Null);
    match (key, x) {
        ("value", Value::Number(n)) => {
            Unit::of(v["metric"].as_str().unwrap_or("")).fmt(n.as_f64().unwrap_or(f64::NAN))
        }
        ("device", Value::String(s)) => format::device(s),
        _ => fmt_value(x),
    }
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
            Some(x) => trim_zeros(format::sig(x, 4)),
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
        Value::Array(a) => a.iter().map(fmt_value).collect::<Vec<_>>().join("; "),
    }
}

/// `92.90` → `92.9`, `0.8200` → `0.82` (a number of unknown precision: no trailing zeros).
fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
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
    Ok(img_tag(&bytes, mime, alt))
}

fn img_tag(bytes: &[u8], mime: &str, alt: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!(
        "<img alt=\"{}\" title=\"{}\" src=\"data:{mime};base64,{b64}\">",
        esc(alt),
        esc(alt)
    )
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
    /// Method-vs-baseline comparisons (seed summaries and single pairs).
    pub comparisons: usize,
    pub images: usize,
}

/// How a method's run and its baseline run are named in one `reproduce`: `<prefix><ours>` and
/// `<prefix><baseline>` (e.g. `smoke` / `smoke-nomix`: ours `""`, baseline `"-nomix"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPair {
    pub method: String,
    pub ours_suffix: String,
    pub baseline_suffix: String,
}

impl RunPair {
    pub fn new(method: &str, ours_suffix: &str, baseline_suffix: &str) -> Self {
        Self {
            method: method.into(),
            ours_suffix: ours_suffix.into(),
            baseline_suffix: baseline_suffix.into(),
        }
    }
}

/// What the page is built from besides the runs folder.
#[derive(Debug, Clone, Default)]
pub struct PageOptions {
    /// A Markdown file (e.g. `benches/RESULTS.md`) shown verbatim when it exists.
    pub bench_results: Option<PathBuf>,
    /// How each method names its baseline run (`xtask`'s method registry), so that a single
    /// `reproduce` (one seed) is shown as a comparison too.
    pub pairs: Vec<RunPair>,
}

/// One method-vs-baseline comparison on the page.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub method: String,
    /// The preset (seed summaries) or the runs' common name prefix (single pairs).
    pub label: String,
    /// From a `reproduce --seeds N` summary.
    pub from_seeds: bool,
    /// The headline, recomputed from the per-seed values.
    pub summary: SeedSummary,
    /// Per seed: our run and the baseline's (when their reports load).
    pub ours: Vec<Option<CollectedRun>>,
    pub baseline: Vec<Option<CollectedRun>>,
    /// Other results, summarised the same way.
    pub metrics: Vec<MetricSummary>,
    /// Other runs named like this comparison's (e.g. the pre-training stages before two
    /// fine-tunes).
    pub related: Vec<CollectedRun>,
}

impl Comparison {
    fn anchor(&self) -> String {
        anchor(&format!("{}-{}", self.method, self.label))
    }
    fn runs(&self) -> impl Iterator<Item = &CollectedRun> {
        self.ours.iter().chain(&self.baseline).flatten()
    }
    fn first_ours(&self) -> Option<&CollectedRun> {
        self.ours.iter().flatten().next()
    }
    fn first_baseline(&self) -> Option<&CollectedRun> {
        self.baseline.iter().flatten().next()
    }
    /// The paper's numbers for a metric of this comparison.
    fn paper(&self, metric: &str) -> PaperRef {
        let Some(o) = self.first_ours() else {
            return PaperRef::default();
        };
        paper_ref(
            &o.typed.paper,
            metric,
            &o.typed.variant,
            self.first_baseline().map(|b| b.typed.variant.as_str()),
        )
    }
}

fn anchor(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Group the runs into comparisons: every seed summary, then every method run beside its
/// baseline run (`pairs`) not already in a summary, then the remaining runs of the same name
/// prefix as related runs. Returns the comparisons and the runs in none of them.
pub fn comparisons(
    runs: &[CollectedRun],
    summaries: &[SeedSummary],
    pairs: &[RunPair],
) -> (Vec<Comparison>, Vec<CollectedRun>) {
    let by_path: BTreeMap<String, &CollectedRun> = runs
        .iter()
        .map(|r| (format!("{}/{}", r.method, r.run), r))
        .collect();
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for s in summaries {
        // recompute: the verdict on the page is always the one the numbers give
        let Ok(mut summary) = SeedSummary::new(
            &s.method,
            &s.preset,
            &s.metric,
            s.higher_is_better,
            s.pairs.clone(),
        ) else {
            continue;
        };
        let get = |p: &str| by_path.get(p).map(|r| (*r).clone());
        let ours: Vec<Option<CollectedRun>> = s.pairs.iter().map(|p| get(&p.runs[0])).collect();
        let baseline: Vec<Option<CollectedRun>> = s.pairs.iter().map(|p| get(&p.runs[1])).collect();
        for p in &s.pairs {
            claimed.extend(p.runs.iter().cloned());
        }
        let all: Option<Vec<_>> = ours
            .iter()
            .zip(&baseline)
            .map(|(o, b)| Some((o.as_ref()?.typed.clone(), b.as_ref()?.typed.clone())))
            .collect();
        let metrics = match all {
            Some(all) => crate::seeds::secondary_summaries(&all),
            None => s.metrics.clone(),
        };
        summary.metrics = metrics.clone();
        out.push(Comparison {
            method: s.method.clone(),
            label: s.preset.clone(),
            from_seeds: true,
            summary,
            ours,
            baseline,
            metrics,
            related: Vec::new(),
        });
    }
    for pair in pairs {
        for b in runs.iter().filter(|r| r.method == pair.method) {
            let Some(prefix) = b.run.strip_suffix(&pair.baseline_suffix) else {
                continue;
            };
            if prefix.is_empty() || pair.baseline_suffix.is_empty() {
                continue;
            }
            let ours_name = format!("{prefix}{}", pair.ours_suffix);
            let (op, bp) = (
                format!("{}/{ours_name}", pair.method),
                format!("{}/{}", b.method, b.run),
            );
            if claimed.contains(&op) || claimed.contains(&bp) || op == bp {
                continue;
            }
            let Some(o) = by_path.get(&op) else { continue };
            let (Some(ov), Some(bv)) = (o.typed.value, b.typed.value) else {
                continue;
            };
            let Ok(mut summary) = SeedSummary::new(
                &pair.method,
                prefix,
                &o.typed.metric,
                true,
                vec![SeedPair {
                    seed: o.typed.seed,
                    ours: ov,
                    baseline: bv,
                    runs: [op.clone(), bp.clone()],
                }],
            ) else {
                continue;
            };
            let metrics = crate::seeds::secondary_summaries(&[(o.typed.clone(), b.typed.clone())]);
            summary.metrics = metrics.clone();
            claimed.insert(op);
            claimed.insert(bp);
            out.push(Comparison {
                method: pair.method.clone(),
                label: prefix.to_string(),
                from_seeds: false,
                summary,
                ours: vec![Some((*o).clone())],
                baseline: vec![Some(b.clone())],
                metrics,
                related: Vec::new(),
            });
        }
    }
    // the remaining runs: related to the comparison whose name prefix they share (longest)
    let mut rest = Vec::new();
    for r in runs {
        if claimed.contains(&format!("{}/{}", r.method, r.run)) {
            continue;
        }
        let best = out
            .iter()
            .enumerate()
            .filter(|(_, c)| c.method == r.method)
            .filter_map(|(i, c)| {
                let mut prefixes: Vec<String> = vec![c.label.clone()];
                for p in &c.summary.pairs {
                    for run in &p.runs {
                        let name = run.rsplit('/').next().unwrap_or(run);
                        prefixes.push(name.to_string());
                    }
                }
                prefixes
                    .iter()
                    .filter(|p| r.run.starts_with(&format!("{p}-")) || r.run == c.label)
                    .map(|p| p.len())
                    .max()
                    .map(|l| (l, i))
            })
            .max();
        match best {
            Some((_, i)) => out[i].related.push(r.clone()),
            None => rest.push(r.clone()),
        }
    }
    out.sort_by(|a, b| {
        (&a.method, !a.from_seeds, &a.label).cmp(&(&b.method, !b.from_seeds, &b.label))
    });
    (out, rest)
}

/// The comparison a method's row at the top shows: the most seeds, then a plain preset name
/// (`smoke` before `pre-migration-smoke`), then the first.
fn primary<'a>(cs: &[&'a Comparison]) -> Option<&'a Comparison> {
    cs.iter().copied().max_by_key(|c| {
        (
            c.summary.pairs.len(),
            !c.label.contains('-'),
            std::cmp::Reverse(c.label.len()),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// cells

/// A verdict cell: the text, and the numbers it was computed from as data attributes (the
/// page's own check and the test recompute it from them).
fn verdict_cell(m: &MetricSummary) -> String {
    let text = match (m.verdict, m.delta_ci95) {
        (Verdict::WithinNoise, None) => "within noise (one seed)".to_string(),
        (v, _) => v.text().to_string(),
    };
    format!(
        "<td class=\"verdict v-{cls}\" data-verdict=\"{v}\" data-delta=\"{d}\" data-half=\"{h}\" \
         data-hib=\"{hib}\">{text}</td>",
        cls = anchor(m.verdict.text()),
        v = m.verdict.text(),
        d = m.delta_mean,
        h = m.delta_ci95.map_or(String::new(), |h| h.to_string()),
        hib = m.higher_is_better,
    )
}

fn pm(u: Unit, mean: f64, sd: f64, n: usize) -> String {
    if n < 2 {
        u.fmt(mean)
    } else {
        u.fmt_pm(mean, sd)
    }
}

/// The paper's number(s) for a metric as text, as the paper states them (no rounding):
/// `ours / baseline`, a stated gain, or "–".
fn paper_text(p: &PaperRef) -> String {
    let n = |x: f64| format!("{x}").replace('-', "−");
    let mut parts = Vec::new();
    match (p.ours, p.baseline) {
        (Some(o), Some(b)) => parts.push(format!("{} / {}", n(o), n(b))),
        (Some(o), None) => parts.push(n(o)),
        (None, Some(b)) => parts.push(format!("– / {}", n(b))),
        (None, None) => {}
    }
    if let Some((d, what)) = &p.delta {
        let sign = if *d >= 0.0 { "+" } else { "" };
        parts.push(format!("{sign}{} ({what})", n(*d)));
    }
    if parts.is_empty() {
        "–".into()
    } else {
        parts.join("; ")
    }
}

/// What a GPU verification run says for a method: the GPU cell and the official-code cell.
#[derive(Debug, Clone, Default)]
struct GpuCells {
    gpu: Option<String>,
    official: Option<String>,
}

fn gpu_cells(runs_root: &Path) -> BTreeMap<String, GpuCells> {
    let mut out = BTreeMap::new();
    for f in crate::verify::collect(runs_root) {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let Some(method) = v["method"].as_str() else {
            continue;
        };
        let cells = crate::verify::headline(&v).map_or_else(GpuCells::default, |h| {
            let u = Unit::of(&h.label);
            let at = format!("{} @ {} {}", h.label, h.x_label, h.at);
            let val = |x: Option<f64>| x.map_or("–".to_string(), |x| u.fmt(x));
            let tiny = if h.tiny {
                " — tiny check, means nothing"
            } else {
                ""
            };
            GpuCells {
                gpu: Some(format!(
                    "ours {} / baseline {}: {at}; {} ({} {}s){tiny}",
                    val(h.ours),
                    val(h.baseline),
                    h.device,
                    h.length,
                    h.x_label
                )),
                official: h.official.map(|o| {
                    format!(
                        "official code {} vs ours {} ({}): {at} on the GPU{tiny}",
                        u.fmt(o),
                        val(h.ours),
                        h.ours.map_or("–".into(), |x| u.fmt_delta(x - o, None, o)),
                    )
                }),
            }
        });
        // the last file (by name) of a method wins
        out.insert(method.to_string(), cells);
    }
    for (method, text) in official_agreement(runs_root) {
        let c: &mut GpuCells = out.entry(method).or_default();
        c.official = Some(match c.official.take() {
            Some(gpu) => format!("{text}; {gpu}"),
            None => text,
        });
    }
    out
}

/// What `cargo xtask official compare <method>` recorded (`<runs>/official/<method>/*.json`,
/// one per N-step comparison): "N steps equal within the fp32-drift bound (largest
/// |diff| / bound r)" per test, by method.
fn official_agreement(runs_root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(runs_root.join("official")) else {
        return out;
    };
    let mut dirs: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    dirs.sort();
    for d in dirs {
        let Some(method) = d.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let Ok(files) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut parts: Vec<String> = files
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
            .filter(|v| v["passed"].as_bool() == Some(true))
            .map(|v| {
                format!(
                    "{}: {} steps with the official code, within the fp32-drift bound (largest |diff| / bound {:.2})",
                    v["test"].as_str().unwrap_or("?"),
                    v["steps"].as_u64().unwrap_or(0),
                    v["worst_ratio"].as_f64().unwrap_or(f64::NAN)
                )
            })
            .collect();
        parts.sort();
        if !parts.is_empty() {
            out.insert(method, parts.join("; "));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// curves

type Series = Vec<(f64, f64)>;

/// Every run's series of every family, read once.
fn run_series(r: &CollectedRun) -> BTreeMap<String, (Family, Series)> {
    let mut out = BTreeMap::new();
    let Ok(records) = read_metrics(&r.dir.join("metrics.jsonl")) else {
        return out;
    };
    for fam in [
        Family::Loss,
        Family::LearningRate,
        Family::Schedule,
        Family::Evaluation,
        Family::Diagnostic,
    ] {
        for (k, v) in series(&records, fam) {
            out.insert(k, (fam, v));
        }
    }
    out
}

/// The mean over runs at the steps every run has.
fn mean_series(runs: &[&Series]) -> Series {
    let key = |x: f64| (x * 1000.0).round() as i64;
    let maps: Vec<BTreeMap<i64, (f64, f64)>> = runs
        .iter()
        .map(|s| s.iter().map(|&(x, y)| (key(x), (x, y))).collect())
        .collect();
    let Some(first) = maps.first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter_map(|(k, (x, _))| {
            let ys: Option<Vec<f64>> = maps.iter().map(|m| m.get(k).map(|p| p.1)).collect();
            ys.map(|ys| (*x, ys.iter().sum::<f64>() / ys.len() as f64))
        })
        .collect()
}

/// One side's lines for a key: each seed thin, the mean bold (one seed: one bold line).
fn side_lines(series: &[&Series], label: &str, color: usize, seeds: &[u64]) -> Vec<Line> {
    let mut out = Vec::new();
    if series.len() == 1 {
        out.push(Line {
            label: Some(format!(
                "{label}{}",
                seeds
                    .first()
                    .map_or(String::new(), |s| format!(", seed {s}"))
            )),
            points: series[0].clone(),
            color,
            width: 3,
            opacity: 1.0,
        });
        return out;
    }
    for s in series {
        out.push(Line {
            label: None,
            points: (*s).clone(),
            color,
            width: 1,
            opacity: 0.45,
        });
    }
    let mean = mean_series(series);
    if !mean.is_empty() {
        out.push(Line {
            label: Some(format!("{label}, mean of {} seeds", series.len())),
            points: mean,
            color,
            width: 3,
            opacity: 1.0,
        });
    }
    out
}

const BIG: (u32, u32) = (760, 380);
const SMALL: (u32, u32) = (340, 220);

fn chart_img(chart: &OverlayChart, alt: &str) -> Result<String> {
    let svg = crate::plot::svg_string(chart, chart.size)?;
    Ok(img_tag(svg.as_bytes(), "image/svg+xml", alt))
}

/// The curves of a comparison as HTML: the total loss and the evaluation overlaid, the loss
/// terms as small multiples, the schedules and diagnostics folded away. Returns (html, images).
fn curves_html(c: &Comparison) -> Result<(String, usize)> {
    let ours: Vec<_> = c.ours.iter().flatten().map(run_series).collect();
    let base: Vec<_> = c.baseline.iter().flatten().map(run_series).collect();
    let seeds_o: Vec<u64> = c.ours.iter().flatten().map(|r| r.typed.seed).collect();
    let seeds_b: Vec<u64> = c.baseline.iter().flatten().map(|r| r.typed.seed).collect();
    if ours.iter().chain(&base).all(BTreeMap::is_empty) {
        return Ok((
            "<p class=\"muted\">No curves: the runs have no metrics.jsonl here.</p>\n".into(),
            0,
        ));
    }
    let name_o = c.first_ours().map_or("ours".to_string(), |r| {
        format!("ours ({})", r.typed.variant)
    });
    let name_b = c.first_baseline().map_or("baseline".to_string(), |r| {
        format!("baseline ({})", r.typed.variant)
    });
    let keys: BTreeMap<String, Family> = ours
        .iter()
        .chain(&base)
        .flat_map(|m| m.iter().map(|(k, (f, _))| (k.clone(), *f)))
        .collect();
    let overlay = |key: &str, size: (u32, u32), title: &str| -> Option<OverlayChart> {
        let pick = |side: &[BTreeMap<String, (Family, Series)>]| -> Vec<Series> {
            side.iter()
                .filter_map(|m| m.get(key).map(|s| s.1.clone()))
                .collect()
        };
        let (so, sb) = (pick(&ours), pick(&base));
        let mut lines = side_lines(&so.iter().collect::<Vec<_>>(), &name_o, 0, &seeds_o);
        lines.extend(side_lines(
            &sb.iter().collect::<Vec<_>>(),
            &name_b,
            1,
            &seeds_b,
        ));
        (!lines.is_empty()).then(|| OverlayChart {
            title: title.to_string(),
            x_label: "step".into(),
            y_label: key.to_string(),
            lines,
            size,
        })
    };
    let mut html = String::new();
    let mut images = 0;
    // the total loss: `total`, else `loss`, else the only loss term
    let losses: Vec<&String> = keys
        .iter()
        .filter(|(_, f)| **f == Family::Loss)
        .map(|(k, _)| k)
        .collect();
    let total = ["total", "loss"]
        .iter()
        .find(|k| keys.contains_key(**k))
        .map(|k| k.to_string())
        .or_else(|| (losses.len() == 1).then(|| losses[0].clone()));
    let evals: Vec<&String> = keys
        .iter()
        .filter(|(_, f)| **f == Family::Evaluation)
        .map(|(k, _)| k)
        .collect();
    let n = c.summary.pairs.len();
    let how = if n > 1 {
        format!("each seed thin, the mean of {n} bold")
    } else {
        "one seed".to_string()
    };
    let caption = |what: &str| {
        format!(
            "<figcaption>{} — {} blue, {} orange; {how}</figcaption>",
            esc(what),
            esc(&name_o),
            esc(&name_b),
        )
    };
    html.push_str("<div class=\"curves\">\n");
    if let Some(t) = &total {
        let what = format!("training loss ({t})");
        if let Some(ch) = overlay(t, BIG, &format!("{what}: ours vs baseline")) {
            let _ = writeln!(
                html,
                "<figure class=\"plot\">{}{}</figure>",
                chart_img(&ch, &what)?,
                caption(&what)
            );
            images += 1;
        }
    }
    for k in &evals {
        let what = format!("{k} during training");
        if let Some(ch) = overlay(k, BIG, &what) {
            let _ = writeln!(
                html,
                "<figure class=\"plot\">{}{}</figure>",
                chart_img(&ch, &what)?,
                caption(&what)
            );
            images += 1;
        }
    }
    html.push_str("</div>\n");
    let terms: Vec<&&String> = losses
        .iter()
        .filter(|k| Some(k.as_str()) != total.as_deref())
        .collect();
    if !terms.is_empty() {
        let _ = writeln!(
            html,
            "<h5>Loss terms (each its own y axis)</h5>\n<div class=\"multiples\">"
        );
        for k in terms {
            if let Some(ch) = overlay(k, SMALL, k) {
                let _ = writeln!(
                    html,
                    "<figure class=\"small\">{}</figure>",
                    chart_img(&ch, k)?
                );
                images += 1;
            }
        }
        html.push_str("</div>\n");
    }
    let rest: Vec<&String> = keys
        .iter()
        .filter(|(_, f)| {
            matches!(
                f,
                Family::LearningRate | Family::Schedule | Family::Diagnostic
            )
        })
        .map(|(k, _)| k)
        .collect();
    if !rest.is_empty() {
        let _ =
            writeln!(
            html,
            "<details><summary>Schedules and diagnostics ({})</summary>\n<div class=\"multiples\">",
            esc(&rest.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
        );
        for k in rest {
            if let Some(ch) = overlay(k, SMALL, k) {
                let _ = writeln!(
                    html,
                    "<figure class=\"small\">{}</figure>",
                    chart_img(&ch, k)?
                );
                images += 1;
            }
        }
        html.push_str("</div></details>\n");
    }
    Ok((html, images))
}

/// A run's own curves (`plots/`, redrawn from its metrics) as HTML. Returns (html, images).
fn run_plots_html(r: &CollectedRun) -> Result<(String, usize)> {
    let mut html = String::new();
    if let Err(e) = crate::run_plots(&r.dir) {
        let _ = writeln!(
            html,
            "<p class=\"warn\">curves not drawn: {}</p>",
            esc(&format!("{e:#}"))
        );
    }
    let files = files_with(&r.dir.join("plots"), "svg");
    if files.is_empty() {
        return Ok((html, 0));
    }
    html.push_str("<div class=\"multiples\">");
    for f in &files {
        let _ = write!(
            html,
            "<figure class=\"small\">{}</figure>",
            embedded_img(f, &file_name(f))?
        );
    }
    html.push_str("</div>\n");
    Ok((html, files.len()))
}

fn figures_html(label: &str, r: &CollectedRun) -> Result<(String, usize)> {
    let files = files_with(&r.dir.join("figures"), "png");
    let mut html = String::new();
    for f in &files {
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let cap = format!("{label}: {name}");
        let _ = writeln!(
            html,
            "<figure class=\"figure\">{}<figcaption>{}</figcaption></figure>",
            embedded_img(f, &cap)?,
            esc(&cap)
        );
    }
    Ok((html, files.len()))
}

fn raw_json_fold(runs: &[&CollectedRun]) -> String {
    if runs.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "<details class=\"raw\"><summary>Raw report.json ({} run{})</summary>\n",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    );
    for r in runs {
        let _ = writeln!(
            s,
            "<p><code>{}/{}</code></p><pre>{}</pre>",
            esc(&r.method),
            esc(&r.run),
            esc(&serde_json::to_string_pretty(&r.report).unwrap_or_default())
        );
    }
    s.push_str("</details>\n");
    s
}

// ---------------------------------------------------------------------------------------------
// sections

/// Distinct values joined with "; " ("–" for none).
fn uniq_join(v: Vec<String>) -> String {
    let mut u: Vec<String> = Vec::new();
    for x in v {
        if !u.contains(&x) {
            u.push(x);
        }
    }
    if u.is_empty() {
        "–".into()
    } else {
        u.join("; ")
    }
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// One row of the settings block for one side's runs.
fn setting(name: &str, rs: &[&CollectedRun]) -> String {
    if rs.is_empty() {
        return "–".into();
    }
    let each = |f: &dyn Fn(&crate::run_report::RunReport) -> String| {
        uniq_join(rs.iter().map(|r| f(&r.typed)).collect())
    };
    match name {
        "data" => each(&|t| t.data.clone()),
        "model" => each(&|t| t.model.clone()),
        "schedule" => each(&|t| {
            format!(
                "{}{} steps, batch {}",
                t.epochs.map_or(String::new(), |e| format!("{e} epochs, ")),
                t.steps,
                t.batch_size
            )
        }),
        "hardware" => each(&|t| {
            format!(
                "{}, {}, {} thread{}",
                format::device(&t.device),
                t.precision,
                t.threads,
                if t.threads == 1 { "" } else { "s" }
            )
        }),
        "wall time per run (mean)" => format!(
            "{} (training {}), {} samples/s",
            format::duration(mean(rs.iter().map(|r| r.typed.wall_s))),
            format::duration(mean(rs.iter().map(|r| r.typed.train_wall_s))),
            format::sig(mean(rs.iter().map(|r| r.typed.samples_per_s)), 3)
        ),
        "seeds" => rs
            .iter()
            .map(|r| r.typed.seed.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        "commit" => each(&|t| t.commit.clone().unwrap_or_else(|| "not recorded".into())),
        _ => rs
            .iter()
            .map(|r| r.run.clone())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The settings block of a comparison: one row per setting, one column per side (merged
/// where both sides agree).
fn settings_html(c: &Comparison) -> String {
    let o: Vec<&CollectedRun> = c.ours.iter().flatten().collect();
    let b: Vec<&CollectedRun> = c.baseline.iter().flatten().collect();
    if o.is_empty() && b.is_empty() {
        return "<p class=\"muted\">The runs of this summary are not here (or are of an older \
                report layout): only the summary's numbers are shown.</p>\n"
            .into();
    }
    const ROWS: [&str; 8] = [
        "data",
        "model",
        "schedule",
        "hardware",
        "wall time per run (mean)",
        "seeds",
        "commit",
        "run folders",
    ];
    let mut s = format!(
        "<table class=\"settings\"><tr><th></th><th>ours ({})</th><th>baseline ({})</th></tr>\n",
        esc(&o.first().map_or("–".into(), |r| r.typed.variant.clone())),
        esc(&b.first().map_or("–".into(), |r| r.typed.variant.clone())),
    );
    for name in ROWS {
        let (x, y) = (setting(name, &o), setting(name, &b));
        if x == y && name != "run folders" {
            let _ = writeln!(
                s,
                "<tr><th>{}</th><td colspan=\"2\">{}</td></tr>",
                esc(name),
                esc(&x)
            );
        } else {
            let _ = writeln!(
                s,
                "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
                esc(name),
                esc(&x),
                esc(&y)
            );
        }
    }
    if !c.related.is_empty() {
        let _ = writeln!(
            s,
            "<tr><th>related runs</th><td colspan=\"2\">{}</td></tr>",
            esc(&c
                .related
                .iter()
                .map(|r| format!("{} ({})", r.run, r.typed.variant))
                .collect::<Vec<_>>()
                .join(", "))
        );
    }
    s.push_str("</table>\n");
    s
}

/// The headline table of a comparison.
fn headline_html(c: &Comparison, gpu: &GpuCells) -> String {
    let head = c.summary.headline();
    let rows: Vec<&MetricSummary> = std::iter::once(&head).chain(&c.metrics).collect();
    let n = rows.len();
    let p = c.paper(&c.summary.metric);
    let mut s =
        format!(
        "<table class=\"headline\">\n<tr><th>metric</th><th>ours ({o})</th><th>baseline ({b})</th>\
         <th>ours − baseline<br><small>mean, 95 % interval</small></th><th>verdict</th>\
         <th>paper<br><small>ours / baseline</small></th><th>paper's scale</th>\
         <th>official code</th><th>GPU run</th></tr>\n",
        o = esc(&c.first_ours().map_or("–".into(), |r| r.typed.variant.clone())),
        b = esc(&c.first_baseline().map_or("–".into(), |r| r.typed.variant.clone())),
    );
    for (i, m) in rows.iter().enumerate() {
        let u = Unit::of(&m.name);
        let _ = write!(
            s,
            "<tr class=\"{}\"><td title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td>{}",
            if i == 0 { "head" } else { "secondary" },
            esc(&m.name),
            if i == 0 {
                format!("<b>{}</b>", esc(&format::short_metric(&m.name)))
            } else {
                esc(&m.name)
            },
            pm(u, m.ours_mean, m.ours_sd, m.n),
            pm(u, m.baseline_mean, m.baseline_sd, m.n),
            u.fmt_delta(m.delta_mean, m.delta_ci95, m.ours_mean),
            verdict_cell(m),
        );
        if i == 0 {
            let _ = write!(
                s,
                "<td>{}</td><td rowspan=\"{n}\" class=\"scale\">{}</td>\
                 <td rowspan=\"{n}\">{}</td><td rowspan=\"{n}\">{}</td>",
                esc(&paper_text(&p)),
                esc(p.scale.as_deref().unwrap_or("–")),
                esc(gpu.official.as_deref().unwrap_or("not yet")),
                esc(gpu.gpu.as_deref().unwrap_or("not yet")),
            );
        } else {
            s.push_str("<td>–</td>");
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    let _ = writeln!(
        s,
        "<p class=\"note\">{}. Headline: {}. Ours and baseline: mean ± sd over the seeds; the \
         interval is Student's t over the paired per-seed differences; the verdict is computed \
         from it (better / worse when it excludes 0, within noise otherwise). The paper's \
         number is at the paper's scale, not this run's.</p>",
        esc(&c.summary.method_note),
        esc(&c.summary.metric)
    );
    s
}

/// The page's first table: one row per method.
fn glance_html(
    methods: &[String],
    cmp: &[Comparison],
    singles: &BTreeMap<String, Vec<&CollectedRun>>,
    gpu: &BTreeMap<String, GpuCells>,
) -> String {
    let mut s = String::from(
        "<h2 id=\"glance\">At a glance</h2>\n<table class=\"glance\">\n<tr><th>method</th>\
         <th>comparison</th><th>headline metric</th><th>ours</th><th>baseline</th>\
         <th>ours − baseline<br><small>95 % interval</small></th><th>verdict</th>\
         <th>paper<br><small>ours / baseline</small></th><th>GPU run</th></tr>\n",
    );
    for m in methods {
        let cs: Vec<&Comparison> = cmp.iter().filter(|c| &c.method == m).collect();
        let g = gpu
            .get(m)
            .and_then(|g| g.gpu.as_ref())
            .map_or("not yet", |_| "yes, see below");
        if let Some(c) = primary(&cs) {
            let h = c.summary.headline();
            let u = Unit::of(&h.name);
            let more = if cs.len() > 1 {
                format!(" (+{} more below)", cs.len() - 1)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "<tr><td><a href=\"#{a}\">{m}</a></td><td><a href=\"#{ca}\">{label}</a>, {n} \
                 seed{pl}{more}</td><td title=\"{full}\">{short}</td><td>{o}</td><td>{b}</td>\
                 <td>{d}</td>{v}<td>{p}</td><td>{g}</td></tr>",
                a = anchor(m),
                m = esc(m),
                ca = c.anchor(),
                label = esc(&c.label),
                n = h.n,
                pl = if h.n == 1 { "" } else { "s" },
                more = esc(&more),
                full = esc(&h.name),
                short = esc(&format::short_metric(&h.name)),
                o = pm(u, h.ours_mean, h.ours_sd, h.n),
                b = pm(u, h.baseline_mean, h.baseline_sd, h.n),
                d = u.fmt_delta(h.delta_mean, h.delta_ci95, h.ours_mean),
                v = verdict_cell(&h),
                p = esc(&paper_text(&c.paper(&h.name))),
            );
        } else if let Some(r) = singles
            .get(m)
            .and_then(|v| v.iter().find(|r| r.typed.value.is_some()))
        {
            let u = Unit::of(&r.typed.metric);
            let _ = writeln!(
                s,
                "<tr><td><a href=\"#{a}\">{mm}</a></td><td>{run}, 1 run</td><td title=\"{full}\">\
                 {short}</td><td>{o}</td><td>–</td><td>–</td><td class=\"verdict\" \
                 data-verdict=\"none\">no baseline run</td><td>{p}</td><td>{g}</td></tr>",
                a = anchor(m),
                mm = esc(m),
                run = esc(&r.run),
                full = esc(&r.typed.metric),
                short = esc(&format::short_metric(&r.typed.metric)),
                o = u.fmt(r.typed.value.unwrap_or(f64::NAN)),
                p = esc(&paper_text(&paper_ref(
                    &r.typed.paper,
                    &r.typed.metric,
                    &r.typed.variant,
                    None
                ))),
            );
        } else {
            let _ = writeln!(
                s,
                "<tr><td><a href=\"#{a}\">{mm}</a></td><td colspan=\"8\">no run with a headline \
                 value yet</td></tr>",
                a = anchor(m),
                mm = esc(m)
            );
        }
    }
    s.push_str("</table>\n");
    s
}

/// A compact table of runs (no raw JSON): run, variant, headline, device, wall time.
fn runs_table(runs: &[&CollectedRun]) -> String {
    let mut s = String::from(
        "<table class=\"runs\"><tr><th>run</th><th>variant</th><th>headline metric</th>\
         <th>value</th><th>device</th><th>seed</th><th>wall time</th><th>commit</th></tr>\n",
    );
    for r in runs {
        let t = &r.typed;
        let _ = writeln!(
            s,
            "<tr><td>{}/{}</td><td>{}</td><td title=\"{}\">{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.method),
            esc(&r.run),
            esc(&t.variant),
            esc(&t.metric),
            esc(&format::short_metric(&t.metric)),
            t.value.map_or("–".into(), |v| Unit::of(&t.metric).fmt(v)),
            esc(&format::device(&t.device)),
            t.seed,
            format::duration(t.wall_s),
            esc(t.commit.as_deref().unwrap_or("–")),
        );
    }
    s.push_str("</table>\n");
    s
}

/// Write the page for every run under `runs_root` to `out` (no method pairs: only seed
/// summaries are shown as comparisons; `cargo xtask report` passes the pairs through
/// [`write_page_with`]).
pub fn write_page(
    runs_root: &Path,
    out: &Path,
    bench_results: Option<&Path>,
) -> Result<PageSummary> {
    write_page_with(
        runs_root,
        out,
        &PageOptions {
            bench_results: bench_results.map(Path::to_path_buf),
            pairs: Vec::new(),
        },
    )
}

/// Write the page for every run under `runs_root` to `out`.
pub fn write_page_with(runs_root: &Path, out: &Path, opts: &PageOptions) -> Result<PageSummary> {
    let (reports, skipped) = collect_all(runs_root)?;
    let summaries = crate::seeds::collect(runs_root)?;
    let (cmp, rest) = comparisons(&reports, &summaries, &opts.pairs);
    let gpu = gpu_cells(runs_root);
    let mut methods: Vec<String> = reports
        .iter()
        .map(|r| r.method.clone())
        .chain(cmp.iter().map(|c| c.method.clone()))
        .collect();
    methods.sort();
    methods.dedup();
    let mut singles: BTreeMap<String, Vec<&CollectedRun>> = BTreeMap::new();
    for r in &rest {
        singles.entry(r.method.clone()).or_default().push(r);
    }
    let mut summary = PageSummary {
        methods: methods.len(),
        runs: reports.len(),
        comparisons: cmp.len(),
        images: 0,
    };
    let mut body = String::new();
    if methods.is_empty() {
        let _ = writeln!(
            body,
            "<p>No run with a report.json under <code>{}</code> yet: run e.g. \
             <code>cargo xtask reproduce patchmix --preset smoke</code>.</p>",
            esc(&runs_root.display().to_string())
        );
    } else {
        body.push_str(&glance_html(&methods, &cmp, &singles, &gpu));
        body.push_str(
            "<p class=\"note\">Verdict: computed from the 95 % interval of the paired per-seed \
             difference (Student's t over the seeds): <i>better</i> / <i>worse</i> when it \
             excludes 0, <i>within noise</i> when it contains 0 or when there is one seed (no \
             interval). A reproduce with <code>--seeds N</code> gives the interval.</p>\n",
        );
    }
    let none = GpuCells::default();
    for m in &methods {
        let _ = writeln!(body, "<h2 id=\"{}\">{}</h2>", anchor(m), esc(m));
        for c in cmp.iter().filter(|c| &c.method == m) {
            let _ = writeln!(
                body,
                "<section class=\"cmp\" id=\"{}\"><h3>{} · {} · {} seed{} ({})</h3>",
                c.anchor(),
                esc(&c.method),
                esc(&c.label),
                c.summary.pairs.len(),
                if c.summary.pairs.len() == 1 { "" } else { "s" },
                esc(&c
                    .summary
                    .pairs
                    .iter()
                    .map(|p| p.seed.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")),
            );
            body.push_str(&headline_html(c, gpu.get(m).unwrap_or(&none)));
            body.push_str(&settings_html(c));
            let (curves, n) = curves_html(c)?;
            body.push_str(&curves);
            summary.images += n;
            if !c.related.is_empty() {
                let _ = writeln!(
                    body,
                    "<details><summary>Related runs' own curves ({})</summary>",
                    esc(&c
                        .related
                        .iter()
                        .map(|r| r.run.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                );
                for r in &c.related {
                    let (h, n) = run_plots_html(r)?;
                    let _ = writeln!(body, "<p><code>{}</code></p>{h}", esc(&r.run));
                    summary.images += n;
                }
                body.push_str("</details>\n");
            }
            // figures last: the first seed of each side, then the related runs
            let mut figs = String::new();
            let mut nf = 0;
            for (label, r) in [("ours", c.first_ours()), ("baseline", c.first_baseline())] {
                if let Some(r) = r {
                    let (h, n) = figures_html(&format!("{label}, seed {}", r.typed.seed), r)?;
                    figs.push_str(&h);
                    nf += n;
                }
            }
            if nf > 0 {
                let _ = writeln!(
                    body,
                    "<h5>Figures{}</h5>\n<div class=\"figures\">{figs}</div>",
                    if c.summary.pairs.len() > 1 {
                        " (first seed; the other seeds' are in their run folders)"
                    } else {
                        ""
                    }
                );
                summary.images += nf;
            }
            for r in &c.related {
                let (h, n) = figures_html(&r.run, r)?;
                if n > 0 {
                    let _ = writeln!(
                        body,
                        "<details><summary>Figures of {} ({n})</summary><div \
                         class=\"figures\">{h}</div></details>",
                        esc(&r.run)
                    );
                    summary.images += n;
                }
            }
            let mut all: Vec<&CollectedRun> = c.runs().collect();
            all.extend(c.related.iter());
            body.push_str(&raw_json_fold(&all));
            body.push_str("</section>\n");
        }
        if let Some(rs) = singles.get(m) {
            let _ = writeln!(
                body,
                "<section class=\"cmp\" id=\"{}-other\"><h3>{} · runs without a baseline beside \
                 them</h3>",
                anchor(m),
                esc(m)
            );
            body.push_str(&runs_table(rs));
            for r in rs {
                let (h, n) = run_plots_html(r)?;
                let (f, nf) = figures_html(&r.run, r)?;
                let _ = writeln!(
                    body,
                    "<details><summary>{}: curves and figures</summary>{h}<div \
                     class=\"figures\">{f}</div></details>",
                    esc(&r.run)
                );
                summary.images += n + nf;
            }
            body.push_str(&raw_json_fold(rs));
            body.push_str("</section>\n");
        }
    }
    let (verify, verify_images) = crate::verify::html_section(runs_root)?;
    body.push_str(&verify);
    summary.images += verify_images;
    if let Some(b) = opts.bench_results.as_deref().filter(|b| b.exists()) {
        let text =
            std::fs::read_to_string(b).with_context(|| format!("cannot read {}", b.display()))?;
        let _ = writeln!(
            body,
            "<h2 id=\"benchmarks\">Benchmarks</h2>\n<details><summary>From <code>{}</code></summary>\
             <pre>{}</pre></details>",
            esc(&b.display().to_string()),
            esc(&text)
        );
    }
    if !reports.is_empty() {
        let all: Vec<&CollectedRun> = reports.iter().collect();
        let _ = writeln!(
            body,
            "<h2 id=\"runs\">Every run</h2>\n<details><summary>{} runs</summary>{}</details>",
            reports.len(),
            runs_table(&all)
        );
    }
    if !skipped.is_empty() {
        let _ = writeln!(
            body,
            "<details class=\"warn\"><summary>{} report.json of an older layout left off (rerun \
             them to include them)</summary><ul>{}</ul></details>",
            skipped.len(),
            skipped
                .iter()
                .map(|(p, e)| format!("<li><code>{}</code>: {}</li>", esc(p), esc(e)))
                .collect::<String>()
        );
    }
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>contrast: results</title>
<style>
body {{ font-family: sans-serif; margin: 1.2em auto; max-width: 1500px; color: #222; padding: 0 1em; }}
h2 {{ border-bottom: 2px solid #ddd; padding-bottom: 2px; margin-top: 1.6em; }}
h3 {{ margin: 1.2em 0 .3em; }} h5 {{ margin: .8em 0 .3em; }}
table {{ border-collapse: collapse; margin: .4em 0 .6em; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; }}
td:nth-child(n+2) {{ font-variant-numeric: tabular-nums; }}
table.headline td.scale {{ max-width: 260px; font-size: 12px; color: #444; }}
table.headline td {{ max-width: 320px; }}
table.settings td {{ max-width: 560px; }}
tr.head td {{ background: #fbfbf4; }}
tr.secondary td {{ color: #444; font-size: 12px; }}
td.verdict {{ font-weight: bold; white-space: nowrap; }}
td.v-better {{ color: #176117; background: #e7f5e7; }}
td.v-worse {{ color: #8a1c1c; background: #fae9e9; }}
td.v-within-noise {{ color: #555; }}
.curves, .multiples, .figures {{ display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }}
figure {{ margin: 0; }} figure.plot img {{ width: 620px; border: 1px solid #ddd; }}
figure.small img {{ width: 300px; border: 1px solid #eee; }}
figure.figure img {{ max-width: 480px; border: 1px solid #ddd; image-rendering: pixelated; }}
figcaption {{ font-size: 12px; color: #555; }}
.note, .muted {{ font-size: 12px; color: #555; max-width: 1100px; }}
.warn {{ color: #a40; }} pre {{ background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 12px; }}
details {{ margin: .4em 0; }} summary {{ cursor: pointer; color: #235; }}
section.cmp {{ margin-bottom: 1.5em; }}
</style></head><body>
<h1>contrast: results</h1>
<p class="note">From <code>{root}</code>, page generated on {machine}. Every number is as measured
by its run (<code>report.json</code>); the paper's numbers are at the paper's scale, usually far
larger than a CPU smoke run. <span id="page-check" data-images="" data-broken=""
data-json-cells="" data-verdicts="" data-verdict-mismatch="">page not checked yet</span></p>
{body}
<script>
window.addEventListener('load', function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) {{ return !(i.complete && i.naturalWidth > 0); }}).length;
  var cells = Array.prototype.slice.call(document.querySelectorAll('td, th'));
  var json = cells.filter(function (c) {{
    return !c.closest('details') && /[{{}}]|":|\[\{{/.test(c.textContent);
  }}).length;
  var vs = Array.prototype.slice.call(document.querySelectorAll('td[data-delta]'));
  var bad = vs.filter(function (c) {{
    var d = parseFloat(c.getAttribute('data-delta'));
    var h = c.getAttribute('data-half');
    var hib = c.getAttribute('data-hib') === 'true';
    var v = 'within noise';
    if (h !== '') {{
      h = parseFloat(h);
      if (d - h > 0) v = hib ? 'better' : 'worse';
      else if (d + h < 0) v = hib ? 'worse' : 'better';
    }}
    return v !== c.getAttribute('data-verdict') || c.textContent.indexOf(v) !== 0;
  }}).length;
  var m = document.getElementById('page-check');
  m.setAttribute('data-images', imgs.length);
  m.setAttribute('data-broken', broken);
  m.setAttribute('data-json-cells', json);
  m.setAttribute('data-verdicts', vs.length);
  m.setAttribute('data-verdict-mismatch', bad);
  m.textContent = 'Page check: ' + (imgs.length - broken) + ' of ' + imgs.length +
    ' images loaded, ' + json + ' table cells with raw JSON, ' + (vs.length - bad) + ' of ' +
    vs.length + ' verdicts match their numbers.';
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_official_cell_reads_what_official_compare_recorded() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("official/grass");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("official_steps.json"),
            r#"{"test": "official_steps", "steps": 50, "worst_ratio": 0.036, "passed": true}"#,
        )
        .unwrap();
        std::fs::write(d.join("broken.json"), "{").unwrap();
        let a = official_agreement(root.path());
        assert_eq!(
            a["grass"],
            "official_steps: 50 steps with the official code, within the fp32-drift bound (largest |diff| / bound 0.04)"
        );
        assert_eq!(a.len(), 1);
        let cells = gpu_cells(root.path());
        assert!(cells["grass"]
            .official
            .as_deref()
            .unwrap()
            .contains("50 steps"));
        assert!(cells["grass"].gpu.is_none());
    }
}
