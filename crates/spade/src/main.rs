//! `spade`: pretrain one variant, or reproduce the five-row comparison. Thin: all logic is in
//! the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use contrast_core::train::RunArgs;
use spade::config::SpadeConfig;

#[derive(Parser)]
#[command(
    about = "Spade: spatially debiased 3D contrastive pretraining (inferred from the abstract)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pretrain one variant (`pretrain.method`: simclr, spade-global, spade).
    Pretrain(RunArgs),
    /// Scratch vs 3-D SimCLR vs Spade global vs Spade global + local, fine-tuned on the
    /// labelled cases, test Dice side by side.
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
            let cfg: SpadeConfig = args.config(crate_dir())?;
            let out = spade::pretrain::pretrain(&cfg, &args.run_options("spade"), args.stop_at)?;
            match out.encoder {
                Some(e) => println!("encoder weights: {}", e.display()),
                None => println!("stopped at step {} (continue with --resume)", out.step),
            }
        }
        Cmd::Reproduce(args) => {
            let cfg: SpadeConfig = args.config(crate_dir())?;
            let opts = args.run_options("spade");
            match spade::reproduce::reproduce(&cfg, &opts, args.stop_at)? {
                Some(rows) => {
                    let table = spade::reproduce::table(&rows);
                    println!("{table}");
                    if !cfg.paper.note.is_empty() {
                        println!("paper: {}", cfg.paper.note);
                    }
                    let dir = opts.runs_root.join("spade");
                    std::fs::create_dir_all(&dir)?;
                    std::fs::write(dir.join(format!("{}-table.md", opts.name)), &table)?;
                    std::fs::write(
                        dir.join(format!("{}-rows.json", opts.name)),
                        serde_json::to_string_pretty(&spade::reproduce::to_json(&rows))?,
                    )?;
                }
                None => println!("stopped early (continue with --resume)"),
            }
        }
    }
    Ok(())
}
