//! `contrast-toy`: the core example run (synthetic blobs, MLP, InfoNCE). See
//! `contrast_core::train::example`.

use clap::Parser;
use contrast_core::train::{example, RunArgs};

#[derive(Parser)]
#[command(about = "Train the core example (contrastive MLP on synthetic blobs)")]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn main() {
    let cli = Cli::parse();
    let go = || -> anyhow::Result<()> {
        let cfg: example::ToyConfig = cli
            .run
            .config(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))?;
        let out = example::train(&cfg, &cli.run.run_options("toy"), cli.run.stop_at)?;
        match out.report {
            Some(r) => println!("{}", serde_json::to_string_pretty(&r)?),
            None => println!("stopped at step {} (resume with --resume)", out.step),
        }
        Ok(())
    };
    if let Err(e) = go() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
