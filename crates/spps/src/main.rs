//! `spps`: pretrain (plain or with semantic pairs), run the semantic sampler on a finished run,
//! or reproduce a preset (baseline → sampler → +SPPS → side by side). Thin: logic is in the lib.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use contrast_core::train::RunArgs;
use spps::config::SppsConfig;
use spps::train::{pretrain, sample};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "SPPS: semantic positive pairs for contrastive instance discrimination")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args)]
struct SampleArgs {
    /// Finished run whose newest checkpoint is the frozen sampler model.
    #[arg(long)]
    from_run: PathBuf,
    /// Pair file to write (default: <run>/spps_pairs.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The preset / overrides whose `sampler.*` settings are used.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pretrain one run and evaluate it (`--set spps.enabled=true --set spps.pairs=FILE` for SPPS).
    Pretrain(RunArgs),
    /// Select semantic pairs with a finished run's frozen encoder and save them.
    Sample(SampleArgs),
    /// Baseline pretrain → sampler on its checkpoint → pretrain with SPPS → compare.
    Reproduce(RunArgs),
}

fn crate_dir() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Pretrain(args) => {
            let cfg: SppsConfig = args.config(crate_dir())?;
            let out = pretrain(&cfg, &args.run_options("spps"), args.stop_at)?;
            match out.report {
                Some(r) => println!("{}", serde_json::to_string_pretty(&r)?),
                None => println!("stopped at step {} (continue with --resume)", out.step),
            }
            Ok(())
        }
        Cmd::Sample(a) => {
            let cfg: SppsConfig = a.run.config(crate_dir())?;
            let out = a.out.unwrap_or_else(|| a.from_run.join("spps_pairs.json"));
            let set = sample(&a.from_run, &cfg.sampler, &out)?;
            println!(
                "{} pairs ({:.3} per image), precision {:?} → {}",
                set.pairs.len(),
                set.pairs_per_image(),
                set.precision,
                out.display()
            );
            Ok(())
        }
        Cmd::Reproduce(args) => {
            let cfg: SppsConfig = args.config(crate_dir())?;
            let opts = args.run_options("spps");
            let mut base_cfg = cfg.clone();
            base_cfg.spps.enabled = false;
            base_cfg.spps.pairs = String::new();
            let mut base_opts = opts.clone();
            base_opts.name = format!("{}-baseline", opts.name);
            let base = pretrain(&base_cfg, &base_opts, args.stop_at)?;
            let Some(b) = base.report else {
                println!("stopped early (continue with --resume)");
                return Ok(());
            };
            let pairs_file = base.dir.join("spps_pairs.json");
            sample(&base.dir, &cfg.sampler, &pairs_file).context("semantic sampler")?;
            let mut spps_cfg = cfg.clone();
            spps_cfg.spps.enabled = true;
            spps_cfg.spps.pairs = pairs_file.display().to_string();
            let mut spps_opts = opts.clone();
            spps_opts.name = format!("{}-spps", opts.name);
            let remaining = args.stop_at.map(|s| s.saturating_sub(base.step));
            let m = pretrain(&spps_cfg, &spps_opts, remaining)?;
            let Some(m) = m.report else {
                println!("stopped early (continue with --resume)");
                return Ok(());
            };
            println!("{}", spps::report::table(&m, &b));
            Ok(())
        }
    }
}
