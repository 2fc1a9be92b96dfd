//! `multinet`: pretrain + evaluate MNCLGLF, or reproduce a preset (MNCLGLF and the plain-SimCLR
//! baseline with the same harness, beside the paper's numbers). Thin: all logic is in the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use contrast_core::train::RunArgs;
use multinet::config::{Method, MultinetConfig};
use multinet::train::pretrain;

#[derive(Parser)]
#[command(
    about = "MNCLGLF: multi-network contrastive learning with global and local representations"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pretrain one run and evaluate it (`--set method="simclr"` for the baseline).
    Pretrain(RunArgs),
    /// Pretrain MNCLGLF and the SimCLR baseline with the same settings, then print both beside
    /// the paper's numbers.
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
            let cfg: MultinetConfig = args.config(crate_dir())?;
            let out = pretrain(&cfg, &args.run_options("multinet"), args.stop_at)?;
            match out.report {
                Some(r) => println!("{}", serde_json::to_string_pretty(&r)?),
                None => println!("stopped at step {} (continue with --resume)", out.step),
            }
            Ok(())
        }
        Cmd::Reproduce(args) => {
            let cfg: MultinetConfig = args.config(crate_dir())?;
            let opts = args.run_options("multinet");
            let mut base_cfg = cfg.clone();
            base_cfg.method = Method::Simclr;
            let mut base_opts = opts.clone();
            base_opts.name = format!("{}-simclr", opts.name);
            let method = pretrain(&cfg, &opts, args.stop_at)?;
            let base = pretrain(&base_cfg, &base_opts, args.stop_at)?;
            let (Some(m), Some(b)) = (method.report, base.report) else {
                println!("stopped early (continue with --resume)");
                return Ok(());
            };
            println!("{}", multinet::report::table(&m, Some(&b)));
            Ok(())
        }
    }
}
