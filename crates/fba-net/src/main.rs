//! `fba-net`: the shared verbs (`train` | `eval --run DIR` | `reproduce` | `describe`) over
//! [`FbaNetMethod`], plus `eval-weights` (any weight file or checkpoint folder on the test list)
//! and `time` (seconds per iteration). Thin: all logic is in the library.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use contrast_core::train::cli::{run_verb, Verb};
use contrast_core::train::RunArgs;
use fba_net::config::FbaNetConfig;
use fba_net::method::{eval_weights, time_iterations};
use fba_net::FbaNetMethod;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    about = "FBA-Net: foreground/background-aware contrast for semi-supervised 3D segmentation"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    #[command(flatten)]
    Shared(Verb),
    /// Evaluate saved weights (`best.safetensors` or a checkpoint folder) on the test list.
    EvalWeights(EvalWeightsArgs),
    /// Seconds per training iteration at the preset's patch and batch (random data).
    Time(TimeArgs),
}

#[derive(Args)]
struct EvalWeightsArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Weights: a `.safetensors` file or a checkpoint folder.
    #[arg(long)]
    weights: PathBuf,
    /// Write `<dir>/<case>_pred.nii.gz`.
    #[arg(long)]
    save_predictions: Option<PathBuf>,
    /// Also draw the first test case's slices with GT / prediction and the A / 1 − A maps (PNG).
    #[arg(long)]
    figure: Option<PathBuf>,
}

#[derive(Args)]
struct TimeArgs {
    #[command(flatten)]
    run: RunArgs,
    #[arg(long, default_value_t = 3)]
    iters: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
}

const CRATE_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Shared(verb) => run_verb::<FbaNetMethod>(Path::new(CRATE_DIR), verb),
        Cmd::EvalWeights(a) => {
            let cfg: FbaNetConfig = a.run.config(Path::new(CRATE_DIR))?;
            let res = eval_weights(
                &cfg,
                &a.weights,
                a.save_predictions.as_deref(),
                a.figure.as_deref(),
            )?;
            println!(
                "{}",
                fba_net::eval::case_table(&a.weights.display().to_string(), &res)
            );
            Ok(())
        }
        Cmd::Time(a) => {
            let cfg: FbaNetConfig = a.run.config(Path::new(CRATE_DIR))?;
            let s = time_iterations(&cfg, a.iters, a.warmup)?;
            println!(
                "{}: {s:.2} s/iteration (patch {:?}, batch {}, n_filters {}, {} threads, {} timed iterations)",
                cfg.model.variant,
                cfg.data.patch,
                cfg.data.batch_size,
                cfg.model.n_filters,
                tch::get_num_threads(),
                a.iters
            );
            Ok(())
        }
    }
}
