//! `grass`: pre-train (GraSS or the SimCLR baseline), fine-tune DeepLabV3+ and report mIoU, or
//! reproduce a preset (both pre-trainings and both fine-tunes, then the comparison table).

use anyhow::Result;
use clap::{Parser, Subcommand};
use contrast_core::train::RunArgs;
use grass::config::GrassConfig;
use grass::train::{finetune, pretrain};

#[derive(Parser)]
#[command(about = "GraSS: gradient-guided sampling for remote-sensing segmentation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pre-train one run (GraSS, or the baseline with `--set pretrain.method=simclr`).
    Pretrain(RunArgs),
    /// Fine-tune DeepLabV3+ on a pre-trained encoder (`--set finetune.encoder=<run folder>`).
    Finetune(RunArgs),
    /// Pre-train GraSS and the SimCLR baseline with the same settings, fine-tune both, and
    /// print the mIoU comparison.
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

fn show(r: &Option<serde_json::Value>, step: u64) -> Result<()> {
    match r {
        Some(r) => println!("{}", serde_json::to_string_pretty(r)?),
        None => println!("stopped at step {step} (continue with --resume)"),
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Pretrain(args) => {
            let cfg: GrassConfig = args.config(crate_dir())?;
            let out = pretrain(&cfg, &args.run_options("grass"), args.stop_at)?;
            show(&out.report, out.step)
        }
        Cmd::Finetune(args) => {
            let cfg: GrassConfig = args.config(crate_dir())?;
            let out = finetune(&cfg, &args.run_options("grass"), args.stop_at)?;
            show(&out.report, out.step)
        }
        Cmd::Reproduce(args) => {
            let cfg: GrassConfig = args.config(crate_dir())?;
            let opts = args.run_options("grass");
            let mut reports = Vec::new();
            for method in ["grass", "simclr"] {
                let mut c = cfg.clone();
                c.pretrain.method = method.into();
                let mut o = opts.clone();
                o.name = format!("{}-{method}", opts.name);
                // with --resume, a stage that already finished (report.json) is reused
                let done =
                    |o: &contrast_core::train::RunOptions| -> Result<Option<serde_json::Value>> {
                        let p = o.runs_root.join("grass").join(&o.name).join("report.json");
                        if !args.resume || !p.is_file() {
                            return Ok(None);
                        }
                        eprintln!("reusing the finished run {}", p.display());
                        Ok(Some(serde_json::from_str(&std::fs::read_to_string(&p)?)?))
                    };
                let pre = match done(&o)? {
                    Some(r) => grass::train::Outcome {
                        report: Some(r),
                        step: 0,
                        dir: o.runs_root.join("grass").join(&o.name),
                    },
                    None => pretrain(&c, &o, args.stop_at)?,
                };
                let Some(pr) = pre.report else {
                    println!("stopped early (continue with --resume)");
                    return Ok(());
                };
                c.finetune.encoder = pre.dir.display().to_string();
                o.name = format!("{}-{method}-ft", opts.name);
                let ft = match done(&o)? {
                    Some(r) => grass::train::Outcome {
                        report: Some(r),
                        step: 0,
                        dir: o.runs_root.join("grass").join(&o.name),
                    },
                    None => finetune(&c, &o, None)?,
                };
                let Some(fr) = ft.report else {
                    println!("stopped early (continue with --resume)");
                    return Ok(());
                };
                reports.push((pr, fr));
            }
            let t = grass::report::table(
                (&reports[0].0, &reports[0].1),
                (&reports[1].0, &reports[1].1),
            );
            println!("{t}");
            let path = opts
                .runs_root
                .join("grass")
                .join(format!("{}-table.md", opts.name));
            std::fs::write(&path, &t)?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
    }
}
