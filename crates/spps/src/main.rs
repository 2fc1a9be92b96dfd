//! `spps`: the shared verbs (`pretrain` | `eval` | `reproduce` | `describe`) over the
//! [`Spps`] method, plus `sample` (the semantic sampler over a finished run). `reproduce` is
//! SPPS's own: the baseline must finish before its checkpoint can pick the pairs, so it runs
//! baseline (`<name>-baseline`) → sampler → +SPPS (`<name>-spps`) and prints them side by side.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use contrast_core::train::cli::{run_verb, Verb};
use contrast_core::train::{Method, RunArgs, Trainer};
use spps::config::SppsConfig;
use spps::method::Spps;
use spps::train::sample;
use std::path::{Path, PathBuf};

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
    #[command(flatten)]
    Shared(Verb),
    /// Select semantic pairs with a finished run's frozen encoder and save them.
    Sample(SampleArgs),
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Shared(Verb::Reproduce(args)) => reproduce(&args),
        Cmd::Shared(verb) => run_verb::<Spps>(crate_dir(), verb),
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
    }
}

/// Baseline pretrain → sampler on its newest checkpoint → pretrain with SPPS → compare.
fn reproduce(args: &RunArgs) -> Result<()> {
    let cfg: SppsConfig = args.config(crate_dir())?;
    let opts = args.run_options(Spps::NAME);
    let (suffix, base_cfg) = Spps::baseline(&cfg).context("SPPS has a baseline")?;
    let mut base_opts = opts.clone();
    base_opts.name = format!("{}-{suffix}", opts.name);
    let base = Trainer::<Spps>::new(base_cfg, base_opts).run(args.stop_at)?;
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
    let m = Trainer::<Spps>::new(spps_cfg, spps_opts).run(remaining)?;
    let Some(m) = m.report else {
        println!("stopped early (continue with --resume)");
        return Ok(());
    };
    println!("{}", Spps::table(&m, Some(&b)));
    Ok(())
}
