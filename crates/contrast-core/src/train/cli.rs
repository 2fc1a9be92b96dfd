//! Command-line arguments every method binary shares (`pretrain` and friends).

use super::checkpoint::{Checkpoint, Checkpointer};
use super::config::{load_config, preset_path, ConfigSource};
use super::run::{default_runs_root, RunOptions};
use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// A preset name (`configs/<name>.toml` of the method crate) or a path to a TOML file.
    #[arg(long, short = 'p')]
    pub preset: Option<String>,
    /// Override a config value: `--set optim.lr=0.1` (repeatable; TOML syntax for the value).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Run name (folder under runs/<method>/); defaults to the preset name.
    #[arg(long)]
    pub name: Option<String>,
    /// Parent folder of runs (default: $CONTRAST_RUNS or ./runs).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// Continue the run from its newest checkpoint that verifies (a corrupt newer one is set
    /// aside with a message).
    #[arg(long)]
    pub resume: bool,
    /// Continue the run from the checkpoint of exactly this step.
    #[arg(long, value_name = "STEP")]
    pub resume_from: Option<u64>,
    /// Stop after this many optimisation steps in total (the run stays resumable).
    #[arg(long)]
    pub stop_at: Option<u64>,
    /// Train the method's baseline instead (the paper's idea switched off, everything else as
    /// configured; the same switch for every method, see `<method> describe`). The run name gets
    /// the baseline's suffix, as in `reproduce`.
    #[arg(long)]
    pub baseline: bool,
    /// Write every input of each step into DIR (initial weights, batches, the step's random
    /// draws, seeds, lr and loss terms) for the official code to replay.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// Shorthand for `--set runtime.device=...` (auto, cpu, cuda, cuda:N).
    #[arg(long)]
    pub device: Option<String>,
    /// Shorthand for `--set runtime.threads=...`.
    #[arg(long)]
    pub threads: Option<usize>,
}

impl RunArgs {
    /// Resolve the config: defaults ⊕ preset file ⊕ overrides (device/threads shorthands last).
    pub fn config<C>(&self, crate_dir: &Path) -> Result<C>
    where
        C: Serialize + DeserializeOwned + Default,
    {
        let src = match &self.preset {
            Some(p) => Some(ConfigSource::file(preset_path(crate_dir, p))?),
            None => None,
        };
        let mut ov = self.overrides.clone();
        if let Some(d) = &self.device {
            ov.push(format!("runtime.device=\"{d}\""));
        }
        if let Some(t) = self.threads {
            ov.push(format!("runtime.threads={t}"));
        }
        load_config(src, &ov)
    }

    /// The run folder options for `method`.
    pub fn run_options(&self, method: &str) -> RunOptions {
        let name = self
            .name
            .clone()
            .or_else(|| {
                self.preset.as_ref().map(|p| {
                    Path::new(p)
                        .file_stem()
                        .map_or(p.clone(), |s| s.to_string_lossy().to_string())
                })
            })
            .unwrap_or_else(|| "default".into());
        let mut o = RunOptions::new(method, &name);
        o.runs_root = self.runs_dir.clone().unwrap_or_else(default_runs_root);
        o.resume = self.resume || self.resume_from.is_some();
        o.resume_from = self.resume_from;
        o
    }
}

/// Arguments of a method binary's `eval` subcommand: evaluate a finished (or interrupted) run
/// again from its newest checkpoint, e.g. with other evaluation settings, without retraining.
/// The run's own `config.toml` is the base; `--set` changes it for this evaluation only (the run
/// folder's config and checkpoints are left untouched).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EvalArgs {
    /// The run folder (`runs/<method>/<name>`), holding `config.toml` and `checkpoints/`.
    #[arg(long)]
    pub run: PathBuf,
    /// Override a config value for this evaluation: `--set eval.linear_epochs=10` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Shorthand for `--set runtime.device=...`.
    #[arg(long)]
    pub device: Option<String>,
    /// Shorthand for `--set runtime.threads=...`.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Name of the evaluation report written into the run folder.
    #[arg(long, default_value = "eval.json")]
    pub out: String,
}

impl EvalArgs {
    /// The run's config ⊕ overrides.
    pub fn config<C>(&self) -> Result<C>
    where
        C: Serialize + DeserializeOwned + Default,
    {
        let path = self.run.join("config.toml");
        let src = ConfigSource::file(&path)
            .with_context(|| format!("{} is not a run folder", self.run.display()))?;
        let mut ov = self.overrides.clone();
        if let Some(d) = &self.device {
            ov.push(format!("runtime.device=\"{d}\""));
        }
        if let Some(t) = self.threads {
            ov.push(format!("runtime.threads={t}"));
        }
        load_config(Some(src), &ov)
    }

    /// The run's newest checkpoint, loaded (an error naming the folder when there is none).
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let dir = self.run.join("checkpoints");
        let latest = Checkpointer::new(&dir, usize::MAX)
            .latest()?
            .with_context(|| format!("no checkpoint in {}", dir.display()))?;
        Checkpointer::load(&latest)
    }

    /// Where the evaluation report goes (`<run>/<out>`).
    pub fn report_path(&self) -> PathBuf {
        self.run.join(&self.out)
    }
}

/// The verbs every method binary shares.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Verb {
    /// Train one run (resumable) and evaluate it; prints the report.
    #[command(alias = "train")]
    Pretrain(RunArgs),
    /// Evaluate a run folder again from its newest checkpoint (writes `<run>/eval.json`).
    Eval(EvalArgs),
    /// Train the method and its baseline with the same settings, then print both beside the
    /// paper's numbers.
    Reproduce(RunArgs),
    /// Write a run's trained backbone as a timm / torchvision state dict
    /// (`<run>/export/backbone.safetensors` + `backbone.json` saying how to load it).
    Export {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
        /// Output folder (default `<run>/export`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// What this binary trains: presets, baseline, metric (`--json` for tools).
    Describe {
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Parser, Debug)]
struct MethodCli {
    #[command(subcommand)]
    verb: Verb,
}

/// The presets of a crate (`configs/*.toml`, by name).
pub fn presets(crate_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(crate_dir.join("configs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "toml").then_some(())?;
            Some(p.file_stem()?.to_string_lossy().to_string())
        })
        .collect();
    v.sort();
    v
}

/// A method binary's whole `main`: parse the shared verbs and run them through the
/// [`super::Trainer`]. `crate_dir` is the method crate's `CARGO_MANIFEST_DIR` (its presets).
pub fn main<M: super::Method>(crate_dir: &str) {
    use clap::Parser;
    let cli = MethodCli::parse();
    if let Err(e) = run_verb::<M>(Path::new(crate_dir), cli.verb) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Run one verb for method `M`.
pub fn run_verb<M: super::Method>(crate_dir: &Path, verb: Verb) -> Result<()> {
    use super::Trainer;
    match verb {
        Verb::Pretrain(args) => {
            let mut cfg: M::Config = args.config(crate_dir)?;
            let mut opts = args.run_options(M::NAME);
            if args.baseline {
                let (suffix, base) = M::baseline(&cfg)
                    .with_context(|| format!("{} has no baseline for this config", M::NAME))?;
                cfg = base;
                opts.name = format!("{}-{suffix}", opts.name);
            }
            let out = Trainer::<M>::new(cfg, opts)
                .with_record(args.record.clone())
                .run(args.stop_at)?;
            match out.report {
                Some(r) => println!("{}", serde_json::to_string_pretty(&r)?),
                None => println!("stopped at step {} (continue with --resume)", out.step),
            }
        }
        Verb::Eval(args) => {
            let cfg: M::Config = args.config()?;
            let ev = Trainer::<M>::new(cfg, RunOptions::new(M::NAME, "eval")).evaluate_checkpoint(
                &args.run,
                &args.report_path(),
                &[
                    ("run", serde_json::json!(args.run.display().to_string())),
                    ("overrides", serde_json::json!(args.overrides)),
                ],
            )?;
            println!(
                "{}: {} (written to {})",
                ev.headline.metric,
                ev.headline.value.map_or("—".into(), |v| format!("{v:.4}")),
                args.report_path().display()
            );
        }
        Verb::Reproduce(args) => {
            let cfg: M::Config = args.config(crate_dir)?;
            let opts = args.run_options(M::NAME);
            let ours = Trainer::<M>::new(cfg.clone(), opts.clone()).run(args.stop_at)?;
            let base = match M::baseline(&cfg) {
                Some((name, base_cfg)) => {
                    let mut o = opts.clone();
                    o.name = format!("{}-{name}", opts.name);
                    Some(Trainer::<M>::new(base_cfg, o).run(args.stop_at)?)
                }
                None => None,
            };
            let Some(m) = ours.report else {
                println!("stopped early (continue with --resume)");
                return Ok(());
            };
            let b = base.and_then(|b| b.report);
            println!("{}", M::table(&m, b.as_ref()));
        }
        Verb::Export { run, out } => {
            let args = EvalArgs {
                run: run.clone(),
                ..EvalArgs::default()
            };
            let cfg: M::Config = args.config()?;
            let (method, latest, _) =
                Trainer::<M>::new(cfg, RunOptions::new(M::NAME, "export")).restore_latest(&run)?;
            let e = method.export()?;
            let dir = out.unwrap_or_else(|| run.join("export"));
            let [st, js] = crate::nn::export::write_export(&e, &dir, "backbone")?;
            println!(
                "exported {} tensors from {} to {} (how to load: {})",
                e.tensors.len(),
                latest.display(),
                st.display(),
                js.display()
            );
        }
        Verb::Describe { json } => {
            let d = describe::<M>(crate_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                println!(
                    "{}: {}",
                    M::NAME,
                    d["registration"]["summary"].as_str().unwrap_or("")
                );
                for r in d["presets"].as_array().into_iter().flatten() {
                    println!(
                        "  preset {:<24} {} trains {} baseline {}",
                        r["preset"].as_str().unwrap_or("?"),
                        r["length"].as_str().unwrap_or("?"),
                        r["trains"]["variant"],
                        r["baseline"]
                    );
                }
            }
        }
    }
    Ok(())
}

/// What `describe --json` prints: the method's registration (summary, default preset, data
/// kind, run pair), its verbs, and per preset the variant and headline metric it trains
/// ([`super::Method::preset`]), its baseline's, its length, runtime and the paper's numbers it
/// carries.
pub fn describe<M: super::Method>(crate_dir: &Path) -> Result<Value> {
    let mut rows = Vec::new();
    for p in presets(crate_dir) {
        let src = ConfigSource::file(preset_path(crate_dir, &p))?;
        let row = match load_config::<M::Config>(Some(src), &[]) {
            Ok(cfg) => serde_json::json!({
                "preset": p,
                // the variant and headline metric of the preset, and of its baseline
                "trains": M::preset(&cfg),
                "baseline": M::baseline(&cfg).map(|(n, _)| n),
                "baseline_trains": M::baseline(&cfg).and_then(|(_, b)| M::preset(&b)),
                "length": format!("{:?}", M::length(&cfg)),
                "runtime": M::runtime(&cfg),
                // the paper's numbers the preset carries (its `[paper]` table)
                "paper": serde_json::to_value(&cfg)?.get("paper").cloned(),
            }),
            Err(e) => serde_json::json!({"preset": p, "error": format!("{e:#}")}),
        };
        rows.push(row);
    }
    Ok(serde_json::json!({
        "method": M::NAME,
        "registration": registration(crate_dir),
        "verbs": ["pretrain", "eval", "reproduce", "export", "describe"],
        "baseline_switch": "--baseline (runs the config that `reproduce` runs beside the method)",
        "presets": rows,
    }))
}

/// The crate's `[package.metadata.contrast]` table (summary, default preset, data kind, run
/// pair), as `cargo xtask` reads it; `null` when absent or unreadable.
fn registration(crate_dir: &Path) -> Value {
    std::fs::read_to_string(crate_dir.join("Cargo.toml"))
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
        .and_then(|t| {
            let r = t.get("package")?.get("metadata")?.get("contrast")?.clone();
            serde_json::to_value(r).ok()
        })
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::example::Toy;

    #[test]
    fn baseline_switch_names_a_method_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let args = RunArgs {
            baseline: true,
            runs_dir: Some(dir.path().to_path_buf()),
            ..RunArgs::default()
        };
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let e = run_verb::<Toy>(crate_dir, Verb::Pretrain(args)).unwrap_err();
        assert!(format!("{e:#}").contains("toy has no baseline"), "{e:#}");
        assert!(!dir.path().join("toy").exists(), "nothing was written");
    }

    #[test]
    fn presets_are_listed_by_name() {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(presets(crate_dir), ["toy"]);
        run_verb::<Toy>(crate_dir, Verb::Describe { json: true }).unwrap();
        let d = describe::<Toy>(crate_dir).unwrap();
        assert_eq!(d["registration"]["method"], "toy");
        assert_eq!(d["registration"]["binary"], "contrast-toy");
        assert_eq!(d["presets"][0]["preset"], "toy");
        assert_eq!(d["presets"][0]["trains"]["variant"], "toy");
        assert_eq!(
            d["presets"][0]["trains"]["metric"],
            "nearest-class-mean accuracy"
        );
        assert_eq!(d["presets"][0]["length"], "Steps(300)");
    }
}
