//! `grass`: the shared verbs (`pretrain` with `--baseline`, `eval`, `export`, `describe`) over
//! the pre-training [`Pretrain`], plus `finetune` (the [`Finetune`] stage) and this crate's
//! `reproduce` (both pre-trainings, both fine-tunes, the mIoU table). `eval` and `export` take
//! either kind of run folder.

use anyhow::Result;
use clap::{Parser, Subcommand};
use contrast_core::train::cli::{run_verb, Verb};
use contrast_core::train::{EvalArgs, RunArgs};
use grass::method::{reproduce, Finetune, Pretrain};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(about = "GraSS: gradient-guided sampling for remote-sensing segmentation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pre-train one run (GraSS, or the SimCLR baseline with `--baseline`, i.e.
    /// `--set pretrain.method=simclr` and the run name suffixed `-simclr`).
    #[command(alias = "train")]
    Pretrain(RunArgs),
    /// Fine-tune DeepLabV3+ on a pre-trained encoder (`--set finetune.encoder=<run folder>`)
    /// and report mIoU.
    Finetune(RunArgs),
    /// Evaluate a run folder again from its newest checkpoint (a fine-tune run: mIoU; a
    /// pre-training run: the heat-map overlays).
    Eval(EvalArgs),
    /// Pre-train GraSS and the SimCLR baseline with the same settings, fine-tune both, and
    /// print the mIoU comparison.
    Reproduce(RunArgs),
    /// Write a run's trained ResNet as a torchvision state dict (`<run>/export/`): the trunk of a
    /// pre-training run, the encoder of a fine-tune run.
    Export {
        #[arg(long)]
        run: PathBuf,
        /// Output folder (default `<run>/export`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// What this binary trains: presets, baseline (`--json` for tools).
    Describe {
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse().command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Whether a run folder is a fine-tune (its newest checkpoint holds the decoder).
fn is_finetune(run: &Path) -> Result<bool> {
    let args = EvalArgs {
        run: run.to_path_buf(),
        ..EvalArgs::default()
    };
    Ok(args.checkpoint()?.group("decoder").is_ok())
}

fn run(cmd: Cmd) -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    match cmd {
        Cmd::Pretrain(a) => run_verb::<Pretrain>(dir, Verb::Pretrain(a)),
        Cmd::Finetune(a) => run_verb::<Finetune>(dir, Verb::Pretrain(a)),
        Cmd::Eval(a) => {
            if is_finetune(&a.run)? {
                run_verb::<Finetune>(dir, Verb::Eval(a))
            } else {
                run_verb::<Pretrain>(dir, Verb::Eval(a))
            }
        }
        Cmd::Export { run, out } => {
            if is_finetune(&run)? {
                run_verb::<Finetune>(dir, Verb::Export { run, out })
            } else {
                run_verb::<Pretrain>(dir, Verb::Export { run, out })
            }
        }
        Cmd::Reproduce(a) => {
            match reproduce(&a.config(dir)?, &a.run_options("grass"), a.stop_at)? {
                Some(t) => println!("{t}"),
                None => println!("stopped early (continue with --resume)"),
            }
            Ok(())
        }
        Cmd::Describe { json } => run_verb::<Pretrain>(dir, Verb::Describe { json }),
    }
}
