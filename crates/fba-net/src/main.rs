//! `fba-net`: train + evaluate FBA-Net(+), evaluate saved weights, reproduce a preset (FBA-Net+
//! and the supervised-only baseline, beside the paper's table), or time iterations.
//! Thin: all logic is in the library.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use contrast_core::train::RunArgs;
use fba_net::config::FbaNetConfig;
use fba_net::train::{eval_weights, time_iterations, train};
use std::path::PathBuf;

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
    /// Train one run (variant from `model.variant`) and evaluate it on the test list.
    Train(RunArgs),
    /// Evaluate saved weights (`best.safetensors` or a checkpoint folder) on the test list.
    Eval(EvalArgs),
    /// Train FBA-Net(+) and the supervised baseline with the same settings, then print both
    /// beside the paper's rows.
    Reproduce(RunArgs),
    /// Seconds per training iteration at the preset's patch and batch (random data).
    Time(TimeArgs),
}

#[derive(Args)]
struct EvalArgs {
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
        Cmd::Train(args) => {
            let cfg: FbaNetConfig = args.config(crate_dir())?;
            let out = train(&cfg, &args.run_options("fba-net"), args.stop_at)?;
            match out.report {
                Some(r) => {
                    println!(
                        "{}",
                        fba_net::report::per_case("last iteration", &r["last_iteration"])
                    );
                    if !r["best_on_test"].is_null() {
                        println!(
                            "{}",
                            fba_net::report::per_case(
                                "best on test (selected on the test set)",
                                &r["best_on_test"]
                            )
                        );
                    }
                    println!("{}", fba_net::report::table(&[&r]));
                }
                None => println!("stopped at iteration {} (continue with --resume)", out.step),
            }
            Ok(())
        }
        Cmd::Eval(a) => {
            let cfg: FbaNetConfig = a.run.config(crate_dir())?;
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
        Cmd::Reproduce(args) => {
            let cfg: FbaNetConfig = args.config(crate_dir())?;
            let opts = args.run_options("fba-net");
            let mut base_cfg = cfg.clone();
            base_cfg.model.variant = "supervised".into();
            base_cfg.loss.lambda_seg = 1.0;
            let mut base_opts = opts.clone();
            base_opts.name = format!("{}-supervised", opts.name);
            let ours = train(&cfg, &opts, args.stop_at)?;
            let base = train(&base_cfg, &base_opts, args.stop_at)?;
            let (Some(m), Some(b)) = (ours.report, base.report) else {
                println!("stopped early (continue with --resume)");
                return Ok(());
            };
            for (r, name) in [(&m, cfg.model.variant.as_str()), (&b, "supervised")] {
                println!(
                    "{}",
                    fba_net::report::per_case(
                        &format!("{name}: last iteration"),
                        &r["last_iteration"]
                    )
                );
                if !r["best_on_test"].is_null() {
                    println!(
                        "{}",
                        fba_net::report::per_case(
                            &format!("{name}: best on test (selected on the test set)"),
                            &r["best_on_test"]
                        )
                    );
                }
            }
            println!("{}", fba_net::report::table(&[&m, &b]));
            Ok(())
        }
        Cmd::Time(a) => {
            let cfg: FbaNetConfig = a.run.config(crate_dir())?;
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
