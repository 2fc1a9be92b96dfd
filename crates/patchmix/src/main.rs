//! `patchmix`: pretrain + evaluate PatchMix, or reproduce a preset (PatchMix and its no-mix
//! baseline in one go, with the paper's numbers beside ours). Thin: all logic is in the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use contrast_core::train::{EvalArgs, RunArgs};
use patchmix::config::PatchMixConfig;
use patchmix::train::{evaluate_run, pretrain};

#[derive(Parser)]
#[command(about = "PatchMix: inter-instance similarity modelling with patch-level mixing")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pretrain one run (PatchMix, or the baseline with `--set mix.enabled=false`) and evaluate it.
    Pretrain(RunArgs),
    /// Pretrain PatchMix and its no-mix baseline with the same settings, then print both beside
    /// the paper's numbers.
    Reproduce(RunArgs),
    /// Evaluate a run's newest checkpoint again (kNN + linear probe), e.g. with other `eval.*`
    /// settings: `patchmix eval --run runs/patchmix/smoke --set eval.linear_augment=true`.
    Eval(EvalArgs),
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
            let cfg: PatchMixConfig = args.config(crate_dir())?;
            let out = pretrain(&cfg, &args.run_options("patchmix"), args.stop_at)?;
            match out.report {
                Some(r) => println!("{}", serde_json::to_string_pretty(&r)?),
                None => println!("stopped at step {} (continue with --resume)", out.step),
            }
            Ok(())
        }
        Cmd::Eval(args) => {
            let r = evaluate_run(&args)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Cmd::Reproduce(args) => {
            let cfg: PatchMixConfig = args.config(crate_dir())?;
            let opts = args.run_options("patchmix");
            let mut base_cfg = cfg.clone();
            base_cfg.mix.enabled = false;
            let mut base_opts = opts.clone();
            base_opts.name = format!("{}-nomix", opts.name);
            let mixed = pretrain(&cfg, &opts, args.stop_at)?;
            let base = pretrain(&base_cfg, &base_opts, args.stop_at)?;
            let (Some(m), Some(b)) = (mixed.report, base.report) else {
                println!("stopped early (continue with --resume)");
                return Ok(());
            };
            println!("{}", patchmix::report::table(&m, &b));
            Ok(())
        }
    }
}
