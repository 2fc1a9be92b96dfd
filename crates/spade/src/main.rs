//! `spade`: the shared verbs `pretrain` (alias `train`) | `eval --run DIR` | `describe` over
//! [`SpadePretrain`], and its own `reproduce`: the five-row comparison (pretrain each variant,
//! fine-tune FBA-Net's supervised V-Net from scratch and from each encoder). Thin: all logic is
//! in the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use contrast_core::train::cli::{run_verb, Verb};
use contrast_core::train::{EvalArgs, RunArgs};
use spade::config::SpadeConfig;
use spade::SpadePretrain;
use std::path::Path;

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
    /// Pretrain one variant (`pretrain.method`: simclr, spade-global, spade); writes
    /// `encoder.safetensors` (and `encoder_decoder.safetensors` for spade) into the run.
    #[command(alias = "train")]
    Pretrain(RunArgs),
    /// Write a run's weight files again from its newest checkpoint (`<run>/eval.json`).
    Eval(EvalArgs),
    /// Scratch vs 3-D SimCLR vs Spade global vs Spade global + local (encoder, and encoder +
    /// decoder), fine-tuned on the labelled cases, test Dice side by side.
    Reproduce(RunArgs),
    /// What this binary trains: presets, metric (`--json` for tools).
    Describe {
        #[arg(long)]
        json: bool,
    },
}

const CRATE_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let shared = |verb| run_verb::<SpadePretrain>(Path::new(CRATE_DIR), verb);
    match cli.command {
        Cmd::Pretrain(args) => shared(Verb::Pretrain(args)),
        Cmd::Eval(args) => shared(Verb::Eval(args)),
        Cmd::Describe { json } => shared(Verb::Describe { json }),
        Cmd::Reproduce(args) => {
            let cfg: SpadeConfig = args.config(Path::new(CRATE_DIR))?;
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
            Ok(())
        }
    }
}
