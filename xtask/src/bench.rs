//! `cargo xtask bench [--vs-pytorch]`: run our criterion benches and, in the same session, the
//! PyTorch peers of the same work, alternately for several rounds; print per-case medians and the
//! ratio (ours / PyTorch throughput). Machines are noisy: report ratios, not single times.
//!
//! Cases:
//! * `augment`: the two-view BYOL/PatchMix augmentation pipeline at 32 px (batch 256) and 224 px
//!   (batch 64): `benches/benches/augment.rs` against `benches/py/augment_torchvision.py`
//!   (torchvision transforms on PIL images, DataLoader with 2 workers).
//! * `steps` (or one method name): one full training step per method
//!   (`benches/src/steps/mod.rs`, timed by the `contrast-steps` binary) against
//!   `benches/py/steps.py`. Before timing, each peer loads our exported weights and inputs and
//!   must compute our loss (relative difference ≤ 1e-4), else the bench stops. FLOPs per step come
//!   from PyTorch's `FlopCounterMode` on the peer; achieved FLOP/s is set against the fp32 matmul
//!   peak measured in the same run by both sides.
//!
//! Every run rewrites `benches/RESULTS.md` with the tables and the machine description.

use crate::setup::{setup, SetupArgs};
use crate::util::{repo_root, run_output, step};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::process::Command;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Also run the PyTorch peer scripts and print the ratio.
    #[arg(long)]
    pub vs_pytorch: bool,
    /// Rounds of (ours, PyTorch), alternating.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Measurement seconds per case and round.
    #[arg(long, default_value_t = 4.0)]
    pub seconds: f64,
    /// `all`, `augment`, `steps`, or methods of the steps bench (`patchmix`, `fba-net`, …),
    /// comma-separated.
    #[arg(long, default_value = "all")]
    pub method: String,
    /// libtorch intra-op threads for the step benches (both sides).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// `cpu` or `cuda` for the step benches (both sides).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Do not rewrite `benches/RESULTS.md`.
    #[arg(long)]
    pub no_results: bool,
    /// Results file to update instead of `benches/RESULTS.md`.
    #[arg(long)]
    pub results: Option<std::path::PathBuf>,
    /// A prebuilt `contrast-steps` binary: no setup, no cargo (for a machine without Rust, such
    /// as a lent GPU machine; run from the repository root).
    #[arg(long)]
    pub steps_bin: Option<std::path::PathBuf>,
    /// Python interpreter of the peers (default: the cache's venv from `cargo xtask setup`).
    #[arg(long)]
    pub python: Option<std::path::PathBuf>,
}

impl BenchArgs {
    fn python(&self) -> Result<std::path::PathBuf> {
        match &self.python {
            Some(p) => Ok(p.clone()),
            None => Ok(crate::util::cache_dir()?.join("venv/bin/python")),
        }
    }
}

/// `ns/iter` lines of criterion's `--output-format bencher` → images/s per case, using the
/// batch size in the case name (`…_batch256`).
pub fn parse_bencher(out: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, tail)) = rest.split_once(" ... bench:") else {
            continue;
        };
        let ns: String = tail
            .split("ns/iter")
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect();
        let case = name.rsplit('/').next().unwrap_or(name).trim().to_string();
        let batch = case
            .rsplit("_batch")
            .next()
            .and_then(|b| b.parse::<f64>().ok());
        if let (Ok(ns), Some(batch)) = (ns.parse::<f64>(), batch) {
            if ns > 0.0 {
                m.insert(case, batch / (ns * 1e-9));
            }
        }
    }
    m
}

/// `torchvision <case> (…): N images/s` lines of the peer.
pub fn parse_peer(out: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("torchvision ") else {
            continue;
        };
        let case = rest.split_whitespace().next().unwrap_or("").to_string();
        // the number right before the first "images/s"
        let rate = rest
            .split(" images/s")
            .next()
            .and_then(|r| r.split_whitespace().last())
            .and_then(|r| r.parse::<f64>().ok());
        if let Some(rate) = rate {
            m.insert(case, rate);
        }
    }
    m
}

use contrast_report::metrics::median;

/// `--method`: `all`, `augment`, `steps`, a step case, or a comma-separated list of those →
/// (run the augmentation bench, step cases in report order).
fn select(method: &str) -> Result<(bool, Vec<&'static str>)> {
    let (mut augment, mut steps) = (false, Vec::new());
    for m in method.split(',').map(str::trim) {
        match m {
            "all" => {
                augment = true;
                steps.extend(STEP_CASES);
            }
            "augment" => augment = true,
            "steps" => steps.extend(STEP_CASES),
            m => match STEP_CASES.iter().find(|c| **c == m) {
                Some(c) => steps.push(*c),
                None => bail!(
                    "unknown --method {m}: use all, augment, steps or one of {} (comma-separated for several)",
                    STEP_CASES.join(", ")
                ),
            },
        }
    }
    let ordered = STEP_CASES
        .iter()
        .copied()
        .filter(|c| steps.contains(c))
        .collect();
    Ok((augment, ordered))
}

pub fn bench(a: &BenchArgs) -> Result<()> {
    if a.steps_bin.is_none() {
        setup(&SetupArgs::default())?;
    }
    let (augment, steps) = select(&a.method)?;
    let mut sections = Vec::new();
    if augment {
        let rows = bench_augment(a)?;
        sections.push((
            format!(
                "### Data pipeline (two-view BYOL augmentation; PyTorch peer: torchvision + DataLoader, 2 workers; {} rounds × {} s)",
                a.rounds, a.seconds
            ),
            rows,
        ));
    }
    if !steps.is_empty() {
        let rows = bench_steps(a, &steps)?;
        sections.push((
            format!(
                "### Training steps ({} threads, {}; {} rounds × {} s alternating; PyTorch peer: benches/py/steps.py, eager)",
                a.threads, a.device, a.rounds, a.seconds
            ),
            rows,
        ));
    }
    let mut md = String::new();
    for (title, rows) in &sections {
        md.push_str(&format!("\n{title}\n\n{}\n", rows.join("\n")));
    }
    println!("{md}");
    if !a.no_results {
        let path = a
            .results
            .clone()
            .unwrap_or_else(|| repo_root().join("benches/RESULTS.md"));
        let block = format!(
            "Written by `cargo xtask bench {}` on {} (UTC).\n\nMachine: {}\n{md}",
            std::env::args().skip(2).collect::<Vec<_>>().join(" "),
            utc_now(),
            machine_description(a)
        );
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let text = results_with_block(&old, device_kind(&a.device), &block);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM` (UTC) from the system clock.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil-from-days (H. Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The head of `benches/RESULTS.md`: how to read the tables of every device block below it.
const RESULTS_HEAD: &str = "# Benchmark results\n\n\
Ratios are ours / PyTorch throughput, both measured in the same run, alternating; absolute \
numbers move with the machine's load, ratios much less. Each device has its own block, \
rewritten by the last `cargo xtask bench` on that device; the other blocks are kept.\n\n\
On CPU our step runs with `runtime.keep_freed_memory` (the default of every training run): \
glibc malloc keeps freed memory for the next step instead of returning it to the OS, which \
spares the page faults that zero fresh pages (14 % of the PatchMix step's cycles under `perf` \
without it). PyTorch's default allocator setup is the first peer column; the second runs the \
same peer with the same malloc settings (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, \
`MALLOC_TOP_PAD_`), for a like-for-like ratio. On CUDA the allocator is PyTorch's caching \
allocator on both sides, so that column is left out, and peak memory is the host's RSS.\n";

/// `cpu` or `cuda` (any `cuda:N`), the key of a results block.
fn device_kind(device: &str) -> &'static str {
    if device.starts_with("cuda") {
        "cuda"
    } else {
        "cpu"
    }
}

/// `old` results text with the block of `device` replaced by `block` (appended if absent);
/// blocks of other devices are kept, in their order, under the shared head.
pub fn results_with_block(old: &str, device: &str, block: &str) -> String {
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut rest = old;
    while let Some(i) = rest.find("<!-- bench:") {
        let after = &rest[i + "<!-- bench:".len()..];
        let Some(j) = after.find(" -->") else { break };
        let key = after[..j].to_string();
        let body_start = j + " -->".len();
        let end_marker = format!("<!-- /bench:{key} -->");
        let Some(k) = after[body_start..].find(&end_marker) else {
            break;
        };
        blocks.push((key, after[body_start..body_start + k].to_string()));
        rest = &after[body_start + k + end_marker.len()..];
    }
    let new_body = format!("\n## {}\n\n{}\n", device.to_uppercase(), block.trim());
    match blocks.iter_mut().find(|(k, _)| k == device) {
        Some(b) => b.1 = new_body,
        None => blocks.push((device.to_string(), new_body)),
    }
    let mut text = RESULTS_HEAD.to_string();
    for (k, body) in &blocks {
        text.push_str(&format!("\n<!-- bench:{k} -->{body}<!-- /bench:{k} -->\n"));
    }
    text
}

/// CPU model, logical cores, memory, load average, PyTorch version and, on CUDA, the GPU, for
/// the results file.
fn machine_description(a: &BenchArgs) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or("? GiB".into(), |kb| {
            format!("{:.0} GiB", kb / 1024.0 / 1024.0)
        });
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let python = a.python().ok();
    let ask = |code: &str| {
        python
            .as_ref()
            .and_then(|p| run_output(Command::new(p).args(["-c", code])).ok())
            .map(|v| v.trim().to_string())
    };
    let torch = ask("import torch; print(torch.__version__)").unwrap_or_else(|| "?".into());
    let gpu = if device_kind(&a.device) == "cuda" {
        ask("import torch; print(torch.cuda.get_device_name(), '(CUDA', torch.version.cuda + ')')")
            .map(|g| format!("; GPU {g}"))
            .unwrap_or_default()
    } else {
        String::new()
    };
    format!("{cpu}, {cores} logical cores, {mem}; load average at the end {load}; PyTorch {torch} (its libtorch under tch too){gpu}")
}

/// The step cases of `benches/src/steps/mod.rs` (kept in sync by a test).
pub const STEP_CASES: &[&str] = &[
    "patchmix", "multinet", "fba-net", "spps", "spade", "grass", "claires",
];

/// glibc's environment form of `contrast_core::train::keep_freed_memory` (same three values).
pub const KEEP_FREED_MEMORY_ENV: [(&str, &str); 3] = [
    ("MALLOC_MMAP_THRESHOLD_", "33554432"),
    ("MALLOC_TRIM_THRESHOLD_", "2147483647"),
    ("MALLOC_TOP_PAD_", "67108864"),
];

/// `step <name> <rate> samples/s (… peak RSS <m> MiB)` → (name, rate, peak MiB).
pub fn parse_step(out: &str) -> Option<(String, f64, f64)> {
    let line = out.lines().find(|l| l.starts_with("step "))?;
    let mut w = line.split_whitespace().skip(1);
    let name = w.next()?.to_string();
    let rate = w.next()?.parse().ok()?;
    let mib = line
        .split("peak RSS ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((name, rate, mib))
}

/// The number after `key` on the line starting with `key` (`loss <name> <v>`, `flops <name> <v>`,
/// `matmul_peak <v> GFLOP/s`).
pub fn parse_value(out: &str, key: &str, skip: usize) -> Option<f64> {
    let line = out.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1 + skip)?.parse().ok()
}

/// Relative difference used for the peers' loss check.
pub fn rel_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

/// The line of an error that says what went wrong (the last line naming an error, else the last
/// line), short enough for a table cell.
pub fn failure_summary(why: &str) -> String {
    let lines: Vec<&str> = why
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains("Error") || l.contains("error"))
        .or(lines.last())
        .copied()
        .unwrap_or("");
    let mut s: String = line.replace('|', "/").chars().take(160).collect();
    if line.chars().count() > 160 {
        s.push('…');
    }
    s
}

fn target_dir(root: &std::path::Path) -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn bench_steps(a: &BenchArgs, cases: &[&str]) -> Result<Vec<String>> {
    let root = repo_root();
    let bin = match &a.steps_bin {
        Some(b) => b.clone(),
        None => {
            step("building contrast-steps (release)");
            crate::util::cargo(&[
                "build",
                "--release",
                "-q",
                "-p",
                "contrast-benches",
                "--bin",
                "contrast-steps",
            ])?;
            target_dir(&root).join("release/contrast-steps")
        }
    };
    let target = target_dir(&root);
    let python = a.python()?;
    let dir = target.join("steps");
    let threads = a.threads.to_string();
    let secs = format!("{}", a.seconds);
    let rust = |args: &[&str]| run_output(Command::new(&bin).current_dir(&root).args(args));
    // `malloc`: the peer with glibc set up like our `keep_freed_memory`, so the table shows how
    // much of the ratio is the allocator setting and how much the step itself
    let py_with = |malloc: bool, args: &[&str]| {
        let mut cmd = Command::new(&python);
        cmd.current_dir(&root).arg("benches/py/steps.py").args(args);
        if malloc {
            cmd.envs(KEEP_FREED_MEMORY_ENV.iter().copied());
        }
        run_output(&mut cmd)
    };
    let py = |args: &[&str]| py_with(false, args);
    struct Case {
        case: String,
        batch: f64,
        spec: String,
        name: String,
        flops: Option<f64>,
        ours: Vec<(f64, f64)>,
        peer: Vec<(f64, f64)>,
        peer_malloc: Vec<f64>,
        /// why the case stopped being timed (it fails on this device, say): reported in its row
        failed: Option<String>,
    }
    let mut all = Vec::new();
    for c in cases {
        step(&format!("{c}: export + loss check"));
        // the check compares the step's arithmetic, on CPU whatever device is timed (no TF32)
        let out = rust(&[
            "export",
            "--case",
            c,
            "--dir",
            &dir.to_string_lossy(),
            "--device",
            "cpu",
        ])?;
        let spec = out
            .split_whitespace()
            .last()
            .context("contrast-steps export printed no spec path")?
            .to_string();
        let name = out.split_whitespace().nth(1).unwrap_or(c).to_string();
        let spec_json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&spec).with_context(|| format!("reading {spec}"))?,
        )?;
        let ours_loss = spec_json["loss_rust"]
            .as_f64()
            .context("spec without loss_rust")?;
        let mut flops = None;
        if a.vs_pytorch {
            let theirs = parse_value(&py(&["check", &spec])?, "loss", 1)
                .context("the peer printed no loss")?;
            let d = rel_diff(ours_loss, theirs);
            println!(
                "  loss check {name}: ours {ours_loss:.7} PyTorch {theirs:.7} (rel. diff {d:.1e})"
            );
            if d > 1e-4 {
                bail!("{name}: the PyTorch peer computes a different loss ({theirs} vs our {ours_loss}): not timing a different step");
            }
            flops = parse_value(&py(&["flops", &spec])?, "flops", 1);
        }
        all.push(Case {
            case: c.to_string(),
            batch: spec_json["batch"].as_f64().context("spec without batch")?,
            spec,
            name,
            flops,
            ours: vec![],
            peer: vec![],
            peer_malloc: vec![],
            failed: None,
        });
    }
    let cuda = device_kind(&a.device) == "cuda";
    // products large enough to reach the BLAS kernels' steady rate (a GPU needs far larger
    // ones than a CPU to leave launch overhead behind)
    let n = if cuda { "8192" } else { "2048" };
    let mut peaks_ours = Vec::new();
    let mut peaks_peer = Vec::new();
    // what both sides' `time` takes besides the case
    let timing = [
        "--threads",
        threads.as_str(),
        "--seconds",
        secs.as_str(),
        "--device",
        a.device.as_str(),
    ];
    let time_case = |c: &mut Case| -> Result<()> {
        let out = rust(&[&["time", "--case", c.case.as_str()][..], &timing].concat())?;
        let (_, r, m) = parse_step(&out).with_context(|| format!("no step line in:\n{out}"))?;
        println!("  ours  {:<28} {r:>9.3} samples/s  peak {m:.0} MiB", c.name);
        c.ours.push((r, m));
        if a.vs_pytorch {
            // on CUDA both sides use the caching allocator: no malloc column
            let mallocs: &[bool] = if cuda { &[false] } else { &[false, true] };
            for &malloc in mallocs {
                let out = py_with(malloc, &[&["time", c.spec.as_str()][..], &timing].concat())?;
                let (_, r, m) =
                    parse_step(&out).with_context(|| format!("no step line in:\n{out}"))?;
                let who = if malloc { "torch+malloc" } else { "torch" };
                println!(
                    "  {who:<12} {:<21} {r:>9.3} samples/s  peak {m:.0} MiB",
                    c.name
                );
                if malloc {
                    c.peer_malloc.push(r);
                } else {
                    c.peer.push((r, m));
                }
            }
        }
        Ok(())
    };
    for round in 1..=a.rounds {
        step(&format!("round {round}/{}: matmul peak", a.rounds));
        let peak = [
            "peak",
            "--threads",
            &threads,
            "--n",
            n,
            "--seconds",
            "3",
            "--device",
            &a.device,
        ];
        if let Some(g) = parse_value(&rust(&peak)?, "matmul_peak", 0) {
            peaks_ours.push(g);
        }
        if a.vs_pytorch {
            if let Some(g) = parse_value(&py(&peak)?, "matmul_peak", 0) {
                peaks_peer.push(g);
            }
        }
        for c in all.iter_mut().filter(|c| c.failed.is_none()) {
            step(&format!("round {round}/{}: {} ours", a.rounds, c.name));
            if let Err(e) = time_case(c) {
                // a case that fails (on a device it was never run on, say) is reported in its
                // row; the other cases are still timed
                let why = format!("{e:#}");
                println!("  FAILED {}: {why}", c.name);
                c.failed = Some(why);
            }
        }
    }
    let peak = median(&mut peaks_ours.clone());
    let mut rows = vec![
        format!(
            "fp32 matmul peak ({n}²): ours {peak:.1} GFLOP/s, PyTorch {} (medians of {} rounds)\n",
            if peaks_peer.is_empty() { "–".to_string() } else { format!("{:.1} GFLOP/s", median(&mut peaks_peer)) },
            a.rounds
        ),
        if cuda {
            "| step | ours (samples/s) | PyTorch (samples/s) | ratio | peak host RSS ours / PyTorch (MiB) | GFLOP per step | ours GFLOP/s (% of matmul peak) |"
        } else {
            "| step | ours (samples/s) | PyTorch (samples/s) | ratio | PyTorch, our malloc settings (samples/s) | ratio | peak RSS ours / PyTorch (MiB) | GFLOP per step | ours GFLOP/s (% of matmul peak) |"
        }
        .to_string(),
        if cuda { "|---|---|---|---|---|---|---|" } else { "|---|---|---|---|---|---|---|---|---|" }.to_string(),
    ];
    for c in &all {
        let o = median(&mut c.ours.iter().map(|v| v.0).collect::<Vec<_>>());
        let om = c.ours.iter().map(|v| v.1).fold(0.0, f64::max);
        let (p, pm) = if c.peer.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            (
                median(&mut c.peer.iter().map(|v| v.0).collect::<Vec<_>>()),
                c.peer.iter().map(|v| v.1).fold(0.0, f64::max),
            )
        };
        let pk = median(&mut c.peer_malloc.clone());
        let batch = c.batch;
        let util = c.flops.map(|f| {
            let g = f / 1e9 * o / batch;
            format!("{:.1} | {g:.1} ({:.0} %)", f / 1e9, 100.0 * g / peak)
        });
        let rate = |v: f64| {
            if v.is_nan() {
                ("–".to_string(), "–".to_string())
            } else {
                (format!("{v:.3}"), format!("{:.2}×", o / v))
            }
        };
        let ((pr, pq), (kr, kq)) = (rate(p), rate(pk));
        let malloc_cols = if cuda {
            String::new()
        } else {
            format!(" {kr} | {kq} |")
        };
        let name = match &c.failed {
            Some(why) => format!("{} (**failed**: {})", c.name, failure_summary(why)),
            None => c.name.clone(),
        };
        rows.push(format!(
            "| {name} | {o:.3} | {pr} | {pq} |{malloc_cols} {om:.0} / {} | {} |",
            if pm.is_nan() {
                "–".into()
            } else {
                format!("{pm:.0}")
            },
            util.unwrap_or_else(|| "– | –".into()),
        ));
    }
    Ok(rows)
}

/// The augmentation bench; returns the Markdown table rows.
fn bench_augment(a: &BenchArgs) -> Result<Vec<String>> {
    let root = repo_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    step("building the benches (release)");
    crate::util::cargo(&[
        "bench",
        "-p",
        "contrast-benches",
        "--bench",
        "augment",
        "--no-run",
    ])?;
    let python = a.python()?;
    let mut ours: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut peer: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 1..=a.rounds {
        step(&format!("round {round}/{}: ours (criterion)", a.rounds));
        let secs = format!("{}", a.seconds);
        let out = run_output(Command::new(&cargo).current_dir(&root).args([
            "bench",
            "-q",
            "-p",
            "contrast-benches",
            "--bench",
            "augment",
            "--",
            "--warm-up-time",
            "1",
            "--measurement-time",
            &secs,
            "--output-format",
            "bencher",
        ]))
        .context("running the augment bench")?;
        let r = parse_bencher(&out);
        if r.is_empty() {
            bail!("no results parsed from the criterion output:\n{out}");
        }
        for (k, v) in r {
            println!("  ours  {k:<24} {v:>10.0} images/s");
            ours.entry(k).or_default().push(v);
        }
        if a.vs_pytorch {
            step(&format!(
                "round {round}/{}: PyTorch peer (torchvision + DataLoader)",
                a.rounds
            ));
            let out = run_output(
                Command::new(&python)
                    .current_dir(&root)
                    .arg("benches/py/augment_torchvision.py")
                    .args(["--seconds", &secs]),
            )
            .context("running benches/py/augment_torchvision.py")?;
            for (k, v) in parse_peer(&out) {
                println!("  torch {k:<24} {v:>10.0} images/s");
                peer.entry(k).or_default().push(v);
            }
        }
    }
    let mut rows = vec![
        "| case | ours (images/s, median) | PyTorch (images/s, median) | ratio |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    for (k, v) in ours.iter_mut() {
        let o = median(v);
        // a `_scaled` case (scaled JPEG decoding) is compared with torchvision's full decode
        rows.push(match peer.get_mut(k.replace("_scaled", "").as_str()) {
            Some(p) => {
                let p = median(p);
                format!("| augment {k} | {o:.0} | {p:.0} | {:.1}× |", o / p)
            }
            None => format!("| augment {k} | {o:.0} | – | – |"),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_other_devices_block() {
        let cpu = results_with_block("", "cpu", "cpu table v1");
        assert!(cpu.starts_with("# Benchmark results"));
        let both = results_with_block(&cpu, "cuda", "cuda table");
        let again = results_with_block(&both, "cpu", "cpu table v2");
        assert!(again.contains("## CPU\n\ncpu table v2\n"), "{again}");
        assert!(!again.contains("cpu table v1"), "{again}");
        assert!(again.contains("## CUDA\n\ncuda table\n"), "{again}");
        // block order is kept, the head appears once
        assert!(again.find("## CPU").unwrap() < again.find("## CUDA").unwrap());
        assert_eq!(again.matches("# Benchmark results").count(), 1);
        assert_eq!(results_with_block(&again, "cuda", "cuda table"), again);
    }

    #[test]
    fn failure_summary_picks_the_error_line_and_escapes_pipes() {
        let why = "\"target/release/contrast-steps\" failed with exit status: 1:\nError: Torch(\"Expected all tensors to be on the same device | cuda:0 and cpu\")\nException raised from x";
        let s = failure_summary(why);
        assert!(s.starts_with("Error: Torch(\"Expected all tensors"), "{s}");
        assert!(!s.contains('|'));
        assert!(failure_summary(&"x".repeat(500)).chars().count() <= 161);
    }

    #[test]
    fn method_lists_select_cases_in_report_order() {
        assert_eq!(select("all").unwrap(), (true, STEP_CASES.to_vec()));
        assert_eq!(select("augment").unwrap(), (true, vec![]));
        assert_eq!(
            select("spade, patchmix").unwrap(),
            (false, vec!["patchmix", "spade"])
        );
        assert_eq!(select("augment,fba-net").unwrap(), (true, vec!["fba-net"]));
        let e = select("patchmix,nope").unwrap_err().to_string();
        assert!(e.contains("unknown --method nope"), "{e}");
    }

    #[test]
    fn parses_criterion_bencher_and_peer_lines() {
        let c = "noise\ntest byol_two_view/32px_batch256 ... bench:    43,264,000 ns/iter (+/- 1,234)\n\
                 test byol_two_view/224px_from256_batch64 ... bench:  1,000,000,000 ns/iter (+/- 9)\n";
        let m = parse_bencher(c);
        assert!((m["32px_batch256"] - 256.0 / 0.043264).abs() < 1e-6);
        assert!((m["224px_from256_batch64"] - 64.0).abs() < 1e-9);
        let p = parse_peer("torchvision 32px_batch256 (blur: torchvision): 96 images/s (960 images in 10.0 s, 2 workers)\nother\n");
        assert_eq!(p["32px_batch256"], 96.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn parses_the_step_lines_of_both_sides_and_checks_losses_relatively() {
        let ours = "step patchmix_vit_t4_b32 8.610 samples/s (median step 3716.8 ms over 3 steps, 1 threads, peak RSS 1907 MiB)\n";
        assert_eq!(
            parse_step(ours),
            Some(("patchmix_vit_t4_b32".to_string(), 8.61, 1907.0))
        );
        assert_eq!(
            parse_value("x\nloss fba 6.2742367\n", "loss", 1),
            Some(6.2742367)
        );
        assert_eq!(
            parse_value("flops fba-net_vnet8_p32_b4 26694955008\n", "flops", 1),
            Some(26694955008.0)
        );
        assert_eq!(
            parse_value(
                "matmul_peak 90.74 GFLOP/s (fp32 1024x1024, 1 threads)",
                "matmul_peak",
                0
            ),
            Some(90.74)
        );
        assert!(rel_diff(7.033056259155273, 7.0330563) < 1e-7);
        assert!(rel_diff(1.0, 1.001) > 1e-4);
        assert!(parse_step("no step here").is_none());
    }

    #[test]
    fn step_cases_match_the_benches_crate() {
        let src = std::fs::read_to_string(repo_root().join("benches/src/steps/mod.rs")).unwrap();
        let start = src
            .find("pub const CASES")
            .expect("CASES in benches/src/steps/mod.rs");
        let line = &src[start..start + src[start..].find("];").expect("end of CASES")];
        for c in STEP_CASES {
            assert!(
                line.contains(&format!("\"{c}\"")),
                "{c} missing from {line}"
            );
        }
        assert_eq!(line.matches('"').count(), 2 * STEP_CASES.len(), "{line}");
    }
}
