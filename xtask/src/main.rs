//! `cargo xtask <command>`: the project's automation, in plain Rust (no libtorch dependency, so it
//! builds in seconds). See `cargo xtask --help`.

mod bench;
mod data;
mod doctor;
mod download;
mod fresh_clone;
mod fuzz;
mod gpu_bundle;
mod methods;
mod official;
mod report;
mod reproduce;
mod setup;
mod test_server;
mod torture;
mod util;
mod verify;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "contrast project automation", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install PyTorch 2.11.0 (libtorch) into the cache and link it for cargo; idempotent.
    Setup(setup::SetupArgs),
    /// Setup, then run the whole workspace's tests (extra arguments go to `cargo test`).
    Test {
        #[command(flatten)]
        setup: setup::SetupArgs,
        /// Arguments passed through to `cargo test --workspace`.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// What CI runs: setup, `cargo fmt --check`, clippy with `-D warnings`, the tests (twice: the
    /// second time with the development data hidden), `fresh-clone`, `torture --quick`, `fuzz --quick`,
    /// the GPU bundles' checks.
    Ci {
        #[command(flatten)]
        setup: setup::SetupArgs,
    },
    /// Print the torch version, library path, CUDA availability, threads, and what is missing.
    Doctor,
    /// Run a method's reproduction preset (setup first); `--list` shows the methods.
    Reproduce(reproduce::ReproduceArgs),
    /// Run the benches; `--vs-pytorch` also runs the PyTorch peers in the same session and
    /// prints the ratio.
    Bench(bench::BenchArgs),
    /// Fetch a data set from its manifest in datasets/ (resumable, checksummed, extracted).
    Download(download::DownloadArgs),
    /// Redraw a run's curves (`report RUN_DIR`), or write the comparison page of every run
    /// (`report`, default `runs/report.html`: paper vs ours, baselines, curves, figures, benches).
    Report(report::ReportArgs),
    /// Print every run's report.json as one table (metric, preset, data, epochs, wall time).
    Compare(report::CompareArgs),
    /// The official code of a paper at its pinned commit (`official/<method>.toml`), in the
    /// git-ignored `.official/<method>/`: `official fetch <method> [--from <clone>]`, `official list`.
    Official(official::OfficialArgs),
    /// Build a folder to run on a GPU machine without Rust: our binary, a data subset, the
    /// official code + adapter and `run.sh` (ours vs baseline vs official); `--check` runs
    /// `run.sh --tiny` here.
    GpuBundle(gpu_bundle::GpuBundleArgs),
    /// What a new user gets: clone HEAD into target/fresh-clone with no development data, serve
    /// small data sets in the official formats from 127.0.0.1, run every smoke preset's data
    /// step and a few PatchMix training steps there (CI runs it).
    FreshClone(fresh_clone::FreshCloneArgs),
    /// Fault injection against the training binary (kill -9 + resume, full disk, NaN loss,
    /// corrupt checkpoint), then RELIABILITY.md; `--quick` is the CI form.
    Torture(torture::TortureArgs),
    /// Fuzz every parser we own or wrap (cargo-fuzz targets + seeded mutation tests), then the
    /// Fuzzing section of RELIABILITY.md; `--quick` is the CI form (seeded mutation tests only).
    Fuzz(fuzz::FuzzArgs),
    /// Add a GPU verification run (`verify-<method>.json` from a bundle's `run.sh`) to the
    /// method README's results and to `runs/report.html`.
    VerifyReport(verify::VerifyReportArgs),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Setup(args) => setup::setup(&args),
        Command::Report(args) => report::report(&args),
        Command::Compare(args) => report::compare(&args),
        Command::Test { setup, cargo_args } => {
            setup::setup(&setup)?;
            test(&cargo_args)
        }
        Command::Ci { setup } => {
            let t0 = std::time::Instant::now();
            setup::setup(&setup)?;
            util::step("cargo fmt --all -- --check");
            util::cargo(&["fmt", "--all", "--", "--check"])?;
            util::step("cargo clippy --workspace --all-targets -- -D warnings");
            util::cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            test(&[])?;
            // the same suite as a user's machine sees it: no development data beside the clone
            util::step("cargo test --workspace, development data hidden (CONTRAST_DEV_DATA=none)");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            util::run_status(
                std::process::Command::new(cargo)
                    .args(["test", "--workspace"])
                    .env("CONTRAST_DEV_DATA", "none")
                    .current_dir(util::repo_root()),
            )?;
            util::step("fresh-clone: a clone without development data, data from 127.0.0.1");
            fresh_clone::fresh_clone(&fresh_clone::FreshCloneArgs::default())?;
            util::step(
                "torture --quick: kill -9 + resume, full disk, NaN loss, corrupt checkpoint",
            );
            torture::torture(&torture::TortureArgs {
                quick: true,
                seed: 1,
                ..Default::default()
            })?;
            util::step("fuzz --quick: the seeded mutation tests of every parser (2 s each)");
            fuzz::fuzz(&fuzz::FuzzArgs {
                quick: true,
                seconds: None,
                only: vec![],
                no_coverage: true,
            })?;
            for method in gpu_bundle::METHODS {
                util::step(&format!(
                    "gpu-bundle {method} --check (run.sh --tiny on the CPU)"
                ));
                gpu_bundle::gpu_bundle(&gpu_bundle::GpuBundleArgs::ci_check(method))?;
            }
            println!("xtask ci: all green in {:.0} s", t0.elapsed().as_secs_f64());
            Ok(())
        }
        Command::Doctor => doctor::doctor(),
        Command::Reproduce(a) => reproduce::reproduce(&a),
        Command::Bench(a) => bench::bench(&a),
        Command::Download(args) => download::download(&args),
        Command::Official(a) => official::official(&a),
        Command::GpuBundle(a) => gpu_bundle::gpu_bundle(&a),
        Command::VerifyReport(a) => verify::verify_report(&a),
        Command::FreshClone(a) => fresh_clone::fresh_clone(&a),
        Command::Torture(a) => torture::torture(&a),
        Command::Fuzz(a) => fuzz::fuzz(&a),
    }
}

fn test(extra: &[String]) -> Result<()> {
    util::step("cargo test --workspace");
    let mut args: Vec<&str> = vec!["test", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    util::cargo(&args)
}
