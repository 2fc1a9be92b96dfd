//! `cargo xtask reproduce <method> [--preset P] [-- args…]`: ensure libtorch, then run the
//! method's binary (release build) with `configs/<P>.toml`; the run lands in
//! `runs/<method>/<run-name>/` with its config, metrics, checkpoints and `report.json`.

use crate::methods::{find, methods, Method};
use crate::setup::{setup, SetupArgs};
use crate::util::{repo_root, run_status, step};
use anyhow::{bail, Context, Result};
use clap::Args;
use contrast_report::run_report::RunReport;
use std::process::Command;

#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// Method to run (`cargo xtask reproduce --list` shows them).
    pub method: Option<String>,
    /// Preset name (configs/<preset>.toml of the method crate).
    #[arg(long, short = 'p')]
    pub preset: Option<String>,
    /// List the methods and exit.
    #[arg(long)]
    pub list: bool,
    /// Build in debug mode instead of release (faster to build, slower to run).
    #[arg(long)]
    pub debug: bool,
    /// Data root (default: $CONTRAST_DATA, else datasets/ in the repository).
    #[arg(long, alias = "dir")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Only make the preset's data available (download, verify, extract), then stop.
    #[arg(long)]
    pub prepare_only: bool,
    /// Run the method and its baseline on N seeds (the preset's seed, +1, …) and summarise the
    /// headline metric: mean ± sd per side, the paired difference with a 95 % t interval and a
    /// computed verdict (`<runs>/<method>/<preset>-seeds.json`, shown by `cargo xtask report`).
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// With `--seeds N`: train nothing, summarise the N seeds' runs already in the runs folder
    /// (after an interruption, or to refresh a summary written by an older contrast).
    #[arg(long, requires = "seeds")]
    pub summary_only: bool,
    /// Extra arguments for the method binary (e.g. `-- --resume --set optim.lr=0.1`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn reproduce(a: &ReproduceArgs) -> Result<()> {
    if a.list || a.method.is_none() {
        println!("methods:");
        for m in methods() {
            println!(
                "  {:<10} {} (default preset `{}`)",
                m.name, m.what, m.default_preset
            );
        }
        return Ok(());
    }
    let name = a.method.as_deref().unwrap_or_default();
    let m = find(name)?;
    if !a.prepare_only {
        setup(&SetupArgs::default())?;
    }
    let preset = a.preset.as_deref().unwrap_or(&m.default_preset);
    step(&format!("reproduce {} --preset {preset}", m.name));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args(["run", "--quiet"]);
    if !a.debug {
        cmd.arg("--release");
    }
    cmd.args(["-p", &m.package, "--bin", &m.binary, "--"]);
    cmd.args(["reproduce", "--preset", preset]);
    if let Some(plan) = crate::data::plan(m, preset, a.data_dir.as_deref())? {
        for (k, v) in crate::data::prepare(&plan)? {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
    }
    if a.prepare_only {
        println!(
            "data ready; the run would be: {:?}",
            cmd.get_args().collect::<Vec<_>>()
        );
        return Ok(());
    }
    if a.seeds <= 1 {
        cmd.args(&a.args);
        return run_status(&mut cmd);
    }
    seeds(m, preset, a, &cmd)
}

/// `--seeds N`: the same command N times with `--set runtime.seed=s --name <preset>-seed<s>`,
/// then the paired summary of the headline metric.
fn seeds(m: &Method, preset: &str, a: &ReproduceArgs, cmd: &Command) -> Result<()> {
    let Some((ours_sfx, base_sfx)) = &m.pair else {
        bail!(
            "{} has no single baseline run: --seeds needs a method/baseline pair",
            m.name
        );
    };
    let base_seed = preset_seed(m, preset)?;
    let runs_root = runs_root(&a.args);
    let mut pairs = Vec::new();
    let mut reports = Vec::new();
    let mut metric = String::new();
    for k in 0..a.seeds {
        let seed = base_seed + k;
        let name = format!("{preset}-seed{seed}");
        step(&format!(
            "reproduce {} --preset {preset}: seed {seed} ({}/{})",
            m.name,
            k + 1,
            a.seeds
        ));
        let mut c = Command::new(cmd.get_program());
        c.current_dir(repo_root()).args(cmd.get_args());
        c.args(["--name", &name, "--set", &format!("runtime.seed={seed}")]);
        c.args(&a.args);
        if !a.summary_only {
            run_status(&mut c)?;
        }
        let read = |sfx: &str| -> Result<(f64, RunReport, String)> {
            let run = format!("{}/{name}{sfx}", m.name);
            let p = runs_root.join(&run).join("report.json");
            let r = RunReport::read(&p)?;
            let value = r
                .value
                .with_context(|| format!("{} has no headline `value`", p.display()))?;
            Ok((value, r, run))
        };
        let (ours, ro, r1) = read(ours_sfx)?;
        let (base, rb, r2) = read(base_sfx)?;
        metric = ro.metric.clone();
        reports.push((ro, rb));
        pairs.push(contrast_report::seeds::SeedPair {
            seed,
            ours,
            baseline: base,
            runs: [r1, r2],
        });
    }
    // the headline and every other result both sides report (kNN per k, the probe, …)
    let s = contrast_report::seeds::SeedSummary::new(&m.name, preset, &metric, true, pairs)?
        .with_metrics(&reports);
    let out = runs_root.join(&m.name).join(format!("{preset}-seeds.json"));
    s.write(&out)?;
    let u = contrast_report::format::Unit::of(&metric);
    println!(
        "\n{} --preset {preset}, {} seeds, {metric}:\n  ours {}, baseline {} (mean ± sd), \
         difference {} (95 % t interval) → {}\n  per seed (ours / baseline): {}\n  {}",
        m.name,
        s.pairs.len(),
        u.fmt_pm(s.ours_mean, s.ours_sd),
        u.fmt_pm(s.baseline_mean, s.baseline_sd),
        s.delta_text(),
        s.verdict.text(),
        s.pairs
            .iter()
            .map(|p| format!("{}: {} / {}", p.seed, u.fmt(p.ours), u.fmt(p.baseline)))
            .collect::<Vec<_>>()
            .join(", "),
        s.method_note,
    );
    for x in &s.metrics {
        let u = contrast_report::format::Unit::of(&x.name);
        println!(
            "  {}: ours {}, baseline {}, difference {} → {}",
            x.name,
            u.fmt_pm(x.ours_mean, x.ours_sd),
            u.fmt_pm(x.baseline_mean, x.baseline_sd),
            u.fmt_delta(x.delta_mean, x.delta_ci95, x.ours_mean),
            x.verdict.text()
        );
    }
    println!(
        "wrote {} (`cargo xtask report` shows it on runs/report.html)",
        out.display()
    );
    Ok(())
}

/// `runtime.seed` of a preset (0 when it sets none).
fn preset_seed(m: &Method, preset: &str) -> Result<u64> {
    let path = repo_root()
        .join("crates")
        .join(&m.package)
        .join("configs")
        .join(format!("{preset}.toml"));
    let t: toml::Table = toml::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    Ok(t.get("runtime")
        .and_then(|r| r.get("seed"))
        .and_then(|s| s.as_integer())
        .unwrap_or(0) as u64)
}

/// The runs root the binary will use: `--runs-dir` among the extra arguments, else
/// `$CONTRAST_RUNS`, else `runs/` in the repository (the binary runs there).
fn runs_root(args: &[String]) -> std::path::PathBuf {
    if let Some(i) = args.iter().position(|a| a == "--runs-dir") {
        if let Some(d) = args.get(i + 1) {
            return repo_root().join(d);
        }
    }
    if let Some(d) = std::env::var_os("CONTRAST_RUNS").filter(|v| !v.is_empty()) {
        return repo_root().join(d);
    }
    repo_root().join("runs")
}
