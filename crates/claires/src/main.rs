//! `claires`: the shared verbs (`train`/`pretrain`, `eval`, `export`, `describe`) over
//! [`ClairesMethod`], this crate's `reproduce` (train, index, sample search, the paper table), and
//! the search tools: index, search, serve (web GUI), load test, convert. Thin: all logic is in
//! the library.

use anyhow::{Context, Result};
use claires::config::ClairesConfig;
use claires::index::Index;
use claires::method::{data_root, load_records, load_run, results_lines, ClairesMethod};
use claires::records::{vqa_rad_records, write_json};
use claires::serve::{AppState, ServeConfig};
use clap::{Args, Parser, Subcommand};
use contrast_core::train::cli::{run_verb, Verb};
use contrast_core::train::{EvalArgs, Method, RunArgs, Trainer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(about = "CLAIRES: contrastive language–image retrieval search with a web GUI")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct RunDir {
    /// The training run folder (holds config.toml, model.safetensors, report.json).
    #[arg(long)]
    run: PathBuf,
    /// Index folder (default: <run>/index).
    #[arg(long)]
    index: Option<PathBuf>,
}

impl RunDir {
    fn index_dir(&self) -> PathBuf {
        self.index.clone().unwrap_or_else(|| self.run.join("index"))
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model (CLIP on record images and template sentences), evaluate it and save
    /// `model.safetensors` in the run folder.
    #[command(alias = "pretrain")]
    Train(RunArgs),
    /// Embed every record's image with a trained model into an on-disk index.
    Index {
        #[command(flatten)]
        dir: RunDir,
        /// Index the records of this CSV/JSON manifest instead of the run's data.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Text → image search over the index.
    Search {
        query: String,
        #[command(flatten)]
        dir: RunDir,
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
    /// Image → image search: the indexed images closest to an image file.
    SearchImage {
        image: PathBuf,
        #[command(flatten)]
        dir: RunDir,
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
    /// Re-evaluate a run from its newest checkpoint on its held-out records (other pools:
    /// `--set eval.pools=[0,5,10]`); writes `<run>/eval.json`.
    Eval(EvalArgs),
    /// Write a run's image encoder as a torchvision ResNet state dict (`<run>/export/`).
    Export {
        #[arg(long)]
        run: PathBuf,
        /// Output folder (default `<run>/export`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// What this binary trains: presets (`--json` for tools).
    Describe {
        #[arg(long)]
        json: bool,
    },
    /// The web GUI and JSON API (on 127.0.0.1 unless `--public`).
    Serve {
        #[command(flatten)]
        dir: RunDir,
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// Allow an address other than the loopback interface (the server has no
        /// authentication).
        #[arg(long)]
        public: bool,
    },
    /// A bounded concurrent load test of a running server's JSON search API (latency
    /// percentiles).
    Loadtest {
        /// The server, e.g. 127.0.0.1:8080.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        #[arg(long, default_value_t = 200)]
        requests: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Queries to cycle through.
        #[arg(long, default_values_t = ["CT of the abdomen".to_string(), "MRI of the head".to_string(), "X-ray of the chest".to_string(), "image of the head, findings: mass".to_string()])]
        query: Vec<String>,
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Start no request after this many seconds (0: no time limit).
        #[arg(long, default_value_t = 0.0)]
        seconds: f64,
    },
    /// Write the records built from a VQA-RAD folder as a JSON manifest.
    Convert {
        /// VQA-RAD folder (default: the shared development copy).
        #[arg(long)]
        vqa_rad: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Train a preset, evaluate both modes, build the index and run a sample search; print the
    /// metrics beside the paper's.
    Reproduce(RunArgs),
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn print_hits(index: &Index, hits: &[claires::index::Hit]) {
    for (r, h) in hits.iter().enumerate() {
        let rec = &index.meta.records[h.index];
        println!(
            "{:>2}. {:.4}  {:<18} {}",
            r + 1,
            h.score,
            rec.id,
            rec.text()
        );
    }
}

fn build_index(run_dir: &Path, out: &Path, manifest: Option<&Path>) -> Result<Index> {
    let (cfg, model) = load_run(run_dir)?;
    let records = match manifest {
        Some(m) => claires::records::load_manifest(m)?,
        None => load_records(&cfg)?,
    };
    let index = Index::build(&model, records, cfg.data.image_size)?;
    index.save(out)?;
    println!(
        "indexed {} images into {} (model checksum {}…)",
        index.len(),
        out.display(),
        &index.meta.model_checksum[..12]
    );
    Ok(index)
}

fn open(dir: &RunDir) -> Result<(ClairesConfig, claires::model::Claires, Index)> {
    let (cfg, model) = load_run(&dir.run)?;
    let index = Index::load(&dir.index_dir(), &model.checksum())?;
    Ok((cfg, model, index))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Train(args) => run_verb::<ClairesMethod>(crate_dir(), Verb::Pretrain(args)),
        Cmd::Describe { json } => run_verb::<ClairesMethod>(crate_dir(), Verb::Describe { json }),
        Cmd::Export { run, out } => {
            run_verb::<ClairesMethod>(crate_dir(), Verb::Export { run, out })
        }
        Cmd::Index { dir, manifest } => {
            build_index(&dir.run, &dir.index_dir(), manifest.as_deref())?;
            Ok(())
        }
        Cmd::Search { query, dir, top } => {
            let (_, model, index) = open(&dir)?;
            let hits = index.search_text(&model, &query, top)?;
            println!("query: {query}");
            print_hits(&index, &hits);
            Ok(())
        }
        Cmd::SearchImage { image, dir, top } => {
            let (_, model, index) = open(&dir)?;
            let hits = index.search_image_file(&model, &image, top)?;
            print_hits(&index, &hits);
            Ok(())
        }
        Cmd::Eval(args) => {
            let out = args.report_path();
            run_verb::<ClairesMethod>(crate_dir(), Verb::Eval(args))?;
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
            print!("{}", results_lines(&v));
            Ok(())
        }
        Cmd::Serve { dir, addr, public } => {
            use std::net::ToSocketAddrs;
            let sa = addr
                .to_socket_addrs()
                .with_context(|| format!("resolving {addr}"))?
                .next()
                .with_context(|| format!("{addr} resolves to nothing"))?;
            claires::serve::check_bind(sa, public)?;
            let (_, model, index) = open(&dir)?;
            let report = std::fs::read_to_string(dir.run.join("report.json"))
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok());
            let state = Arc::new(AppState::new(model, index, report, ServeConfig::default()));
            let rt = tokio::runtime::Runtime::new().context("starting tokio")?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(sa)
                    .await
                    .with_context(|| format!("binding {addr}"))?;
                println!("CLAIRES on http://{}", listener.local_addr()?);
                claires::serve::serve(listener, state).await
            })
        }
        Cmd::Loadtest {
            addr,
            requests,
            concurrency,
            query,
            top,
            seconds,
        } => {
            use std::net::ToSocketAddrs;
            anyhow::ensure!(
                requests <= 100_000,
                "at most 100000 requests (got {requests})"
            );
            anyhow::ensure!(
                concurrency <= 256,
                "at most 256 concurrent clients (got {concurrency})"
            );
            let sa = addr
                .to_socket_addrs()
                .with_context(|| format!("resolving {addr}"))?
                .next()
                .with_context(|| format!("{addr} resolves to nothing"))?;
            let paths: Vec<String> = query
                .iter()
                .map(|q| format!("/api/search?q={}&k={top}", claires::serve::url_encode(q)))
                .collect();
            let limit = (seconds > 0.0).then(|| std::time::Duration::from_secs_f64(seconds));
            let r = claires::loadtest::load_test_until(sa, &paths, requests, concurrency, limit)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Cmd::Convert { vqa_rad, out } => {
            let root = vqa_rad.unwrap_or_else(|| data_root(&ClairesConfig::default()));
            let (records, skipped) = vqa_rad_records(&root)?;
            write_json(&records, &out)?;
            let with_mod = records
                .iter()
                .filter(|r| r.fields.modality.is_some())
                .count();
            let with_find = records
                .iter()
                .filter(|r| r.fields.findings.is_some())
                .count();
            let distinct: std::collections::BTreeSet<String> =
                records.iter().map(|r| r.text()).collect();
            println!(
                "{} records ({skipped} images without questions skipped): {with_mod} with a \
                 modality, {with_find} with findings, {} distinct sentences -> {}",
                records.len(),
                distinct.len(),
                out.display()
            );
            Ok(())
        }
        Cmd::Reproduce(args) => {
            let cfg: ClairesConfig = args.config(crate_dir())?;
            let out = Trainer::<ClairesMethod>::new(cfg, args.run_options(ClairesMethod::NAME))
                .run(args.stop_at)?;
            let Some(report) = out.report else {
                println!("stopped at step {} (continue with --resume)", out.step);
                return Ok(());
            };
            let idx_dir = out.dir.join("index");
            let index = build_index(&out.dir, &idx_dir, None)?;
            let (_, model) = load_run(&out.dir)?;
            let sample = index.meta.records[0].text();
            let hits = index.search_text(&model, &sample, 5)?;
            println!("\nsample search: \"{sample}\"");
            print_hits(&index, &hits);
            println!("\n{}", ClairesMethod::table(&report, None));
            println!(
                "run: {}\nserve it: claires serve --run {}",
                out.dir.display(),
                out.dir.display()
            );
            Ok(())
        }
    }
}
